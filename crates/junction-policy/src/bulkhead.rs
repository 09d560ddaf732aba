//! Bulkhead: a cap on calls in flight to one upstream that refuses at once.
//!
//! Queueing behind a slow upstream without bound turns its slowness into ours
//! (memory, sockets, latency for unrelated routes). Past the cap the caller gets
//! an immediate refusal and answers 503. The cap is fixed (`max_concurrency`)
//! or learned from the upstream's answer times under that ceiling
//! (`adaptive_concurrency`, see [`crate::adaptive`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::adaptive::{AdaptiveConfig, AdaptiveLimit};

/// Limits concurrent calls; cheap to clone.
#[derive(Debug, Clone)]
pub struct Bulkhead {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    in_flight: AtomicUsize,
    max: usize,
    adaptive: Option<AdaptiveLimit>,
}

/// Refusal: the bulkhead is full.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("concurrency limit of {max} reached")]
pub struct BulkheadFull {
    /// The limit in force when the call was refused.
    pub max: usize,
}

/// A slot in the bulkhead, freed on drop.
#[derive(Debug)]
pub struct BulkheadPermit {
    inner: Arc<Inner>,
}

impl Drop for BulkheadPermit {
    fn drop(&mut self) {
        self.inner.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl BulkheadPermit {
    /// The upstream answered after `rtt` (teaches an adaptive limit).
    pub fn answered(&self, rtt: Duration) {
        if let Some(a) = &self.inner.adaptive {
            a.answered(rtt, self.inner.in_flight.load(Ordering::Relaxed));
        }
    }

    /// The upstream gave no answer (timeout, refused connection).
    pub fn dropped(&self) {
        if let Some(a) = &self.inner.adaptive {
            a.dropped();
        }
    }
}

impl Bulkhead {
    /// A bulkhead allowing `max` calls at once.
    pub fn new(max: usize) -> Self {
        Self::with(max, None)
    }

    /// A bulkhead whose limit is learned under the ceiling `max`.
    pub fn adaptive(max: usize, cfg: AdaptiveConfig) -> Self {
        Self::with(max, Some(AdaptiveLimit::new(cfg, max)))
    }

    fn with(max: usize, adaptive: Option<AdaptiveLimit>) -> Self {
        Self {
            inner: Arc::new(Inner {
                in_flight: AtomicUsize::new(0),
                max,
                adaptive,
            }),
        }
    }

    /// Takes a slot or refuses at once.
    pub fn try_acquire(&self) -> Result<BulkheadPermit, BulkheadFull> {
        let limit = self.limit();
        let taken = self
            .inner
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Relaxed, |n| {
                (n < limit).then_some(n + 1)
            });
        match taken {
            Ok(_) => Ok(BulkheadPermit {
                inner: self.inner.clone(),
            }),
            Err(_) => Err(BulkheadFull { max: limit }),
        }
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.inner.in_flight.load(Ordering::Relaxed)
    }

    /// The limit in force now (the learned one when adaptive).
    pub fn limit(&self) -> usize {
        match &self.inner.adaptive {
            Some(a) => a.current(),
            None => self.inner.max,
        }
    }

    /// The configured ceiling (`max_concurrency`).
    pub fn max(&self) -> usize {
        self.inner.max
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_past_the_cap_and_frees_on_drop() {
        let b = Bulkhead::new(2);
        let p1 = b.try_acquire().unwrap();
        let _p2 = b.try_acquire().unwrap();
        assert_eq!(b.in_flight(), 2);
        assert_eq!(b.try_acquire().unwrap_err().max, 2);
        drop(p1);
        assert!(b.try_acquire().is_ok());
    }

    #[test]
    fn an_adaptive_bulkhead_refuses_past_the_learned_limit() {
        let cfg = AdaptiveConfig {
            min: 2,
            initial: 2,
            tolerance: 1.5,
        };
        let b = Bulkhead::adaptive(100, cfg);
        let held: Vec<_> = (0..2).map(|_| b.try_acquire().unwrap()).collect();
        assert_eq!(b.try_acquire().unwrap_err().max, 2);
        // Fast answers with the limit in use: it grows.
        for _ in 0..200 {
            held[0].answered(Duration::from_millis(5));
        }
        assert!(b.limit() > 2, "{}", b.limit());
        assert!(b.try_acquire().is_ok());
        assert_eq!(b.max(), 100);
    }
}
