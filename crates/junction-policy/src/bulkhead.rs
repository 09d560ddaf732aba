//! Bulkhead: a cap on calls in flight to one upstream that refuses at once.
//!
//! Queueing behind a slow upstream without bound turns its slowness into ours
//! (memory, sockets, latency for unrelated routes). Past the cap the caller gets
//! an immediate refusal and answers 503.

use std::sync::Arc;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Limits concurrent calls; cheap to clone.
#[derive(Debug, Clone)]
pub struct Bulkhead {
    semaphore: Arc<Semaphore>,
    max: usize,
}

/// Refusal: the bulkhead is full.
#[derive(Debug, Clone, Copy, thiserror::Error)]
#[error("concurrency limit of {max} reached")]
pub struct BulkheadFull {
    /// The configured limit.
    pub max: usize,
}

/// A slot in the bulkhead, freed on drop.
#[derive(Debug)]
pub struct BulkheadPermit {
    _permit: OwnedSemaphorePermit,
}

impl Bulkhead {
    /// A bulkhead allowing `max` calls at once.
    pub fn new(max: usize) -> Self {
        Self {
            semaphore: Arc::new(Semaphore::new(max)),
            max,
        }
    }

    /// Takes a slot or refuses at once.
    pub fn try_acquire(&self) -> Result<BulkheadPermit, BulkheadFull> {
        self.semaphore
            .clone()
            .try_acquire_owned()
            .map(|p| BulkheadPermit { _permit: p })
            .map_err(|_| BulkheadFull { max: self.max })
    }

    /// Calls in flight now.
    pub fn in_flight(&self) -> usize {
        self.max - self.semaphore.available_permits()
    }

    /// The configured limit.
    pub fn max(&self) -> usize {
        self.max
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
}
