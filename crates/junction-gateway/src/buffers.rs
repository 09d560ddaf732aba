//! One budget for the bodies the gateway reads whole into memory.
//!
//! Some features need a body whole before they can act: an async route
//! stores the event, an idempotent write checks and later stores its answer,
//! a cache fill stores the response, a projection (`?fields=`) parses it. Each
//! is bounded per request (10 MiB `max_body`, 32 MiB responses), but many at
//! once could still take all the memory: ten concurrent misses of 32 MiB
//! responses were 350 MB of RSS. `limits.buffer_budget` (256 MiB) bounds them
//! together. Bytes count from the moment they are read until the feature is
//! done with them (the event stored, the answer cached or projected); the
//! response then goes to the client, where `write_timeout` bounds a slow
//! reader.
//!
//! Past the budget a read that nothing has acted on yet is refused: the client
//! gets 503 + `Retry-After: 1` (`GatewayError::BuffersFull`), which never
//! counts against an upstream. A read after the upstream already did a write
//! (an idempotent write's answer, the projection of a POST) is not refused —
//! refusing it would make the client repeat a write that happened — but its
//! bytes still count, so new reads see the pressure. The request-body replay
//! buffer for retries (at most 64 KiB per request, bounded by
//! `max_connections`) is not counted.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use http_body_util::BodyExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::body::BoxError;
use crate::telemetry::Metrics;

/// Which feature reads a body whole (the `site` label of the metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Site {
    /// An async route's event.
    Async,
    /// An idempotent write's request or answer.
    Idempotency,
    /// A cache fill.
    Cache,
    /// A `?fields=` projection.
    Projection,
}

impl Site {
    fn label(self) -> &'static str {
        match self {
            Site::Async => "async",
            Site::Idempotency => "idempotency",
            Site::Cache => "cache",
            Site::Projection => "projection",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SiteLabel {
    site: &'static str,
}

/// The process-wide budget (shared by every reload's gateway).
pub struct BufferBudget {
    used: AtomicU64,
    max: AtomicU64,
    held: Gauge,
    refused: Family<SiteLabel, Counter>,
}

impl std::fmt::Debug for BufferBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BufferBudget")
            .field("used", &self.used.load(Ordering::Relaxed))
            .field("max", &self.max.load(Ordering::Relaxed))
            .finish()
    }
}

/// Why a body was not read whole.
#[derive(Debug)]
pub enum BufferError {
    /// Larger than the per-request bound.
    TooLarge,
    /// The budget is spent (only for reads that may be refused).
    OverBudget,
    /// Reading failed.
    Body(BoxError),
}

impl BufferError {
    /// What a request whose own body failed to be read gets: 413 past
    /// `limit`, 503 past the budget, else what the read error says.
    pub fn for_request(self, limit: u64) -> crate::problem::GatewayError {
        match self {
            BufferError::TooLarge => crate::problem::GatewayError::BodyTooLarge { limit },
            BufferError::OverBudget => crate::problem::GatewayError::BuffersFull,
            BufferError::Body(e) => crate::proxy::http_util::body_error(e, limit),
        }
    }

    /// The failure as an error value (a response body that did not fit or
    /// broke off; the site names whose fault it is).
    pub fn into_box(self) -> BoxError {
        match self {
            BufferError::TooLarge => "the body exceeds the size the gateway holds whole".into(),
            BufferError::OverBudget => "limits.buffer_budget is spent".into(),
            BufferError::Body(e) => e,
        }
    }
}

/// A body read whole, counted in the budget until dropped.
#[derive(Debug)]
pub struct Held {
    /// The body.
    pub bytes: Bytes,
    _reservation: Reservation,
}

/// Bytes counted in the budget; given back on drop.
#[derive(Debug)]
struct Reservation {
    budget: Option<Arc<BufferBudget>>,
    bytes: u64,
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if let Some(b) = &self.budget {
            b.used.fetch_sub(self.bytes, Ordering::AcqRel);
            b.held.dec_by(self.bytes as i64);
        }
    }
}

impl Held {
    /// Bytes that were in memory already (nothing new to count).
    pub fn uncounted(bytes: Bytes) -> Self {
        Self {
            bytes,
            _reservation: Reservation {
                budget: None,
                bytes: 0,
            },
        }
    }
}

impl BufferBudget {
    /// A budget of `max` bytes; registers `junction_buffered_bytes` and
    /// `junction_buffer_refusals_total{site}`.
    pub fn new(max: u64, metrics: &Metrics) -> Arc<Self> {
        let budget = Arc::new(Self::unregistered(max));
        metrics.register(
            "junction_buffered_bytes",
            "Bytes of bodies held whole in memory now (limits.buffer_budget bounds them)",
            budget.held.clone(),
        );
        metrics.register(
            "junction_buffer_refusals",
            "Requests answered 503 because limits.buffer_budget was spent, by what needed the body whole",
            budget.refused.clone(),
        );
        budget
    }

    fn unregistered(max: u64) -> Self {
        Self {
            used: AtomicU64::new(0),
            max: AtomicU64::new(max),
            held: Gauge::default(),
            refused: Family::default(),
        }
    }

    /// Applies a reloaded `limits.buffer_budget` once the reload took effect
    /// (what is held stays counted).
    pub fn set_max(&self, max: u64) {
        self.max.store(max, Ordering::Relaxed);
    }

    /// Counts `n` more bytes; `false` (nothing counted) past the budget
    /// when `may_refuse`.
    fn take(&self, n: u64, may_refuse: bool) -> bool {
        let max = self.max.load(Ordering::Relaxed);
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if may_refuse && used.saturating_add(n) > max {
                return false;
            }
            match self.used.compare_exchange_weak(
                used,
                used.saturating_add(n),
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => {
                    self.held.inc_by(n as i64);
                    return true;
                }
                Err(now) => used = now,
            }
        }
    }

    /// Reads `body` whole, at most `max` bytes, counting what it reads; past
    /// the budget the read stops with `OverBudget` when `may_refuse` (see the
    /// module doc for which reads may be refused).
    pub async fn collect<B>(
        self: &Arc<Self>,
        body: B,
        max: usize,
        site: Site,
        may_refuse: bool,
    ) -> Result<Held, BufferError>
    where
        B: http_body::Body<Data = Bytes>,
        B::Error: Into<BoxError>,
    {
        let mut reservation = Reservation {
            budget: Some(self.clone()),
            bytes: 0,
        };
        let mut body = std::pin::pin!(body);
        let mut buf = BytesMut::new();
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| BufferError::Body(e.into()))?;
            let Ok(data) = frame.into_data() else {
                continue;
            };
            if buf.len() + data.len() > max {
                return Err(BufferError::TooLarge);
            }
            if !self.take(data.len() as u64, may_refuse) {
                self.refused
                    .get_or_create(&SiteLabel { site: site.label() })
                    .inc();
                return Err(BufferError::OverBudget);
            }
            reservation.bytes += data.len() as u64;
            buf.extend_from_slice(&data);
        }
        Ok(Held {
            bytes: buf.freeze(),
            _reservation: reservation,
        })
    }

    /// Bytes counted now.
    #[cfg(test)]
    fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn budget(max: u64) -> Arc<BufferBudget> {
        Arc::new(BufferBudget::unregistered(max))
    }

    fn body(n: usize) -> Full<Bytes> {
        Full::new(Bytes::from(vec![b'x'; n]))
    }

    #[tokio::test]
    async fn reads_count_while_held_and_are_given_back() {
        let b = budget(100);
        let first = b.collect(body(60), 1000, Site::Cache, true).await.unwrap();
        assert_eq!((first.bytes.len(), b.used()), (60, 60));
        let refused = b.collect(body(50), 1000, Site::Cache, true).await;
        assert!(matches!(refused, Err(BufferError::OverBudget)));
        assert_eq!(b.used(), 60, "a refused read gives back what it took");
        let forced = b
            .collect(body(50), 1000, Site::Idempotency, false)
            .await
            .unwrap();
        assert_eq!(b.used(), 110, "an unrefusable read still counts");
        drop((first, forced));
        assert_eq!(b.used(), 0);
        assert!(b.collect(body(90), 1000, Site::Async, true).await.is_ok());
    }

    #[tokio::test]
    async fn the_per_request_bound_still_applies() {
        let b = budget(1 << 20);
        let r = b.collect(body(11), 10, Site::Async, true).await;
        assert!(matches!(r, Err(BufferError::TooLarge)));
        assert_eq!(b.used(), 0);
    }
}
