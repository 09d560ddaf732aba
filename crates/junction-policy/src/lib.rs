//! Resilience policies for Junction, usable without the gateway.
//!
//! Each policy is a small, synchronous-to-call piece of state that the data plane
//! (sync proxy) and the dispatcher (async deliveries) share:
//!
//! - [`breaker`]: a circuit breaker fed by call outcomes over a rolling window.
//! - [`retry`]: full-jitter exponential backoff, a retry budget, and `Retry-After` parsing.
//! - [`bulkhead`]: a concurrency cap that refuses at once instead of queueing.
//! - [`adaptive`]: a concurrency limit learned from answer times (the bulkhead's, when asked).
//! - [`outcome`]: what an answer status means (success, transient, rejected).
//! - [`error`]: what a failed call means (its kind, whether a retry is safe, its cause).
//!
//! They are written by hand because they are the product's own value: their exact
//! semantics (what counts as a failure, how probes are bounded, how a budget refills)
//! are what users configure and what the admin API reports. Time comes from
//! `tokio::time::Instant`, so tests run them under paused time.

pub mod adaptive;
pub mod breaker;
pub mod bulkhead;
pub mod error;
pub mod outcome;
pub mod retry;
mod window;

pub use adaptive::{AdaptiveConfig, AdaptiveLimit};
pub use breaker::{
    BreakerConfig, BreakerOpen, BreakerPermit, BreakerSnapshot, BreakerState, CircuitBreaker,
};
pub use bulkhead::{Bulkhead, BulkheadFull, BulkheadPermit};
pub use error::{error_chain, RetrySafety, UpstreamError, UpstreamErrorKind};
pub use outcome::{classify_status, StatusClass};
pub use retry::{parse_retry_after, Backoff, RetryBudget, RetryBudgetConfig};
