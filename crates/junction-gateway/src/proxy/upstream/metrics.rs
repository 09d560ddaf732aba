//! An upstream's metric families: attempts by outcome, their latency,
//! retries, breaker state.

use crate::telemetry::metrics::{latency_histogram, MetricSet, UpstreamLabel, UpstreamOutcome};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// The upstreams' families.
#[derive(Clone)]
pub struct UpstreamMetrics {
    /// `junction_upstream_requests_total{upstream,outcome}`.
    pub requests: Family<UpstreamOutcome, Counter>,
    /// `junction_upstream_request_duration_seconds{upstream}`: one attempt,
    /// sent to response headers (or to the error or timeout).
    pub duration: Family<UpstreamLabel, Histogram>,
    /// `junction_upstream_retries_total{upstream}`.
    pub retries: Family<UpstreamLabel, Counter>,
    /// `junction_breaker_state{upstream}` (refreshed at scrape time).
    pub breaker_state: Family<UpstreamLabel, Gauge>,
    /// `junction_upstream_concurrency_limit{upstream}`: the bulkhead's limit
    /// in force (learned with `adaptive_concurrency`; refreshed at scrape time).
    pub concurrency_limit: Family<UpstreamLabel, Gauge>,
}

impl MetricSet for UpstreamMetrics {
    fn register(r: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            duration: Family::new_with_constructor(latency_histogram),
            retries: Family::default(),
            breaker_state: Family::default(),
            concurrency_limit: Family::default(),
        };
        r.register(
            "junction_upstream_requests",
            "Attempts sent to upstreams, by outcome",
            m.requests.clone(),
        );
        r.register(
            "junction_upstream_request_duration_seconds",
            "Time from sending an attempt to its response headers (or error, or timeout), by upstream",
            m.duration.clone(),
        );
        r.register(
            "junction_upstream_retries",
            "Retries sent to upstreams",
            m.retries.clone(),
        );
        r.register(
            "junction_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open",
            m.breaker_state.clone(),
        );
        r.register(
            "junction_upstream_concurrency_limit",
            "Calls in flight an upstream's bulkhead allows now (learned with adaptive_concurrency, else max_concurrency)",
            m.concurrency_limit.clone(),
        );
        m
    }
}
