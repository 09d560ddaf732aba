//! What Junction measures: Prometheus metrics, the access log, trace context.

pub mod analysis;
pub mod live;
pub mod logs;
pub mod metrics;
pub mod otel;
pub mod process;
pub mod trace;

pub use metrics::Metrics;
