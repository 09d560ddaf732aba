//! Prometheus metrics, named as the contract says (`junction_*`).
//!
//! Handles for hot-path series are resolved once (per route, per upstream) and
//! cached, so a request touches a few atomics, not a label hash map.

use parking_lot::RwLock;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Arc;

/// Labels `{route, status}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatus {
    /// Route name (or `none` when nothing matched).
    pub route: String,
    /// HTTP status code.
    pub status: u16,
}

/// Label `{route}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabel {
    /// Route name.
    pub route: String,
}

/// Labels `{version, commit}` of `junction_build_info`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BuildLabel {
    /// Crate version.
    pub version: &'static str,
    /// Git commit (short), or `unknown`.
    pub commit: &'static str,
}

/// Labels `{route, reason}` of a client's own fault.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ClientFaultLabel {
    /// Route name.
    pub route: String,
    /// `body_too_large`, `bad_body`, `body_timeout`.
    pub reason: &'static str,
}

/// Labels `{upstream, outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamOutcome {
    /// Upstream name.
    pub upstream: String,
    /// `success`, `failure` (a failure status), `timeout`, `connect_error`, `error`, `breaker_open`, `rejected`.
    pub outcome: &'static str,
}

/// Label `{upstream}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct UpstreamLabel {
    /// Upstream name.
    pub upstream: String,
}

/// Labels `{route, outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteOutcome {
    /// Route name.
    pub route: String,
    /// What happened (metric-specific).
    pub outcome: &'static str,
}

/// Labels `{topic}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TopicLabel {
    /// Topic name.
    pub topic: String,
}

/// Labels `{subscriber, outcome}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriberOutcome {
    /// Subscriber name.
    pub subscriber: String,
    /// `delivered`, `retry`, `dead`.
    pub outcome: &'static str,
}

/// Label `{subscriber}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriberLabel {
    /// Subscriber name.
    pub subscriber: String,
}

/// Every metric family Junction exports.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<RwLock<Registry>>,
    pub requests: Family<RouteStatus, Counter>,
    pub request_duration: Family<RouteLabel, Histogram>,
    pub upstream_requests: Family<UpstreamOutcome, Counter>,
    pub upstream_retries: Family<UpstreamLabel, Counter>,
    pub breaker_state: Family<UpstreamLabel, Gauge>,
    pub cache_hits: Family<RouteLabel, Counter>,
    pub cache_misses: Family<RouteLabel, Counter>,
    pub cache_stale: Family<RouteLabel, Counter>,
    pub cache_revalidated: Family<RouteLabel, Counter>,
    pub client_errors: Family<ClientFaultLabel, Counter>,
    pub cache_bypassed: Family<RouteLabel, Counter>,
    pub cache_degraded: Counter,
    pub cache_bytes_saved: Counter,
    pub cache_evictions: Gauge,
    pub cache_bytes: Gauge,
    pub cache_entries: Gauge,
    pub bytes_in: Family<RouteLabel, Counter>,
    pub idempotency: Family<RouteOutcome, Counter>,
    pub bytes_out: Family<RouteLabel, Counter>,
    pub queue_depth: Family<TopicLabel, Gauge>,
    pub dlq_depth: Family<TopicLabel, Gauge>,
    pub events_accepted: Family<TopicLabel, Counter>,
    pub deliveries: Family<SubscriberOutcome, Counter>,
    pub delivery_latency: Family<SubscriberLabel, Histogram>,
    pub delivery_attempts: Family<SubscriberLabel, Histogram>,
}

/// `junction_requests_total{route,status}` for one route, with a per-status handle cache
/// so the hot path does no allocation.
#[derive(Clone)]
pub struct RouteRequests {
    route: String,
    family: Family<RouteStatus, Counter>,
    by_status: Arc<RwLock<HashMap<u16, Counter>>>,
}

impl RouteRequests {
    /// Counts one answered request.
    pub fn inc(&self, status: u16) {
        if let Some(c) = self.by_status.read().get(&status) {
            c.inc();
            return;
        }
        let c = self
            .family
            .get_or_create(&RouteStatus {
                route: self.route.clone(),
                status,
            })
            .clone();
        c.inc();
        self.by_status.write().insert(status, c);
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

fn delivery_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
    ])
}

fn attempts_histogram() -> Histogram {
    Histogram::new([1.0, 2.0, 3.0, 5.0, 8.0, 13.0, 21.0])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Registers a family another module owns (it keeps the handle and updates it).
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry.write().register(name, help, metric);
    }

    /// A registry with every family registered.
    pub fn new() -> Self {
        let mut r = Registry::default();
        let m = Metrics {
            registry: Arc::new(RwLock::new(Registry::default())),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            upstream_requests: Family::default(),
            upstream_retries: Family::default(),
            breaker_state: Family::default(),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
            cache_stale: Family::default(),
            cache_revalidated: Family::default(),
            client_errors: Family::default(),
            cache_bypassed: Family::default(),
            cache_degraded: Counter::default(),
            cache_bytes_saved: Counter::default(),
            cache_evictions: Gauge::default(),
            cache_bytes: Gauge::default(),
            cache_entries: Gauge::default(),
            bytes_in: Family::default(),
            idempotency: Family::default(),
            bytes_out: Family::default(),
            queue_depth: Family::default(),
            dlq_depth: Family::default(),
            events_accepted: Family::default(),
            deliveries: Family::default(),
            delivery_latency: Family::new_with_constructor(delivery_histogram),
            delivery_attempts: Family::new_with_constructor(attempts_histogram),
        };
        // Names are registered without the `_total` suffix; the OpenMetrics
        // encoder appends it to counters.
        r.register(
            "junction_requests",
            "Requests answered, by route and status",
            m.requests.clone(),
        );
        r.register(
            "junction_request_duration_seconds",
            "Time to answer a request, by route",
            m.request_duration.clone(),
        );
        r.register(
            "junction_upstream_requests",
            "Attempts sent to upstreams, by outcome",
            m.upstream_requests.clone(),
        );
        r.register(
            "junction_upstream_retries",
            "Retries sent to upstreams",
            m.upstream_retries.clone(),
        );
        r.register(
            "junction_breaker_state",
            "Circuit breaker state: 0 closed, 1 open, 2 half-open",
            m.breaker_state.clone(),
        );
        r.register(
            "junction_cache_hits",
            "Responses served from cache",
            m.cache_hits.clone(),
        );
        r.register(
            "junction_cache_misses",
            "Cacheable requests that went upstream",
            m.cache_misses.clone(),
        );
        r.register(
            "junction_cache_stale_serves",
            "Stale responses served (revalidating or upstream failing)",
            m.cache_stale.clone(),
        );
        r.register(
            "junction_cache_revalidations",
            "Stored responses refreshed by a 304 to a conditional request",
            m.cache_revalidated.clone(),
        );
        r.register(
            "junction_client_errors",
            "Requests that failed through the client's own fault (never counted against an upstream)",
            m.client_errors.clone(),
        );
        r.register(
            "junction_cache_bypasses",
            "Requests on cached routes the cache could not answer for privacy (credentials, no-store)",
            m.cache_bypassed.clone(),
        );
        r.register(
            "junction_cache_degraded",
            "Cache backend errors answered by passing through",
            m.cache_degraded.clone(),
        );
        r.register(
            "junction_cache_bytes_saved",
            "Response body bytes served from cache instead of fetched upstream",
            m.cache_bytes_saved.clone(),
        );
        r.register(
            "junction_cache_evictions",
            "Entries evicted from the cache",
            m.cache_evictions.clone(),
        );
        r.register(
            "junction_cache_bytes",
            "Bytes held by the cache",
            m.cache_bytes.clone(),
        );
        r.register(
            "junction_cache_entries",
            "Entries held by the cache",
            m.cache_entries.clone(),
        );
        r.register(
            "junction_upstream_bytes_in",
            "Response body bytes received from upstreams, by route",
            m.bytes_in.clone(),
        );
        r.register(
            "junction_client_bytes_out",
            "Response body bytes sent to clients, by route",
            m.bytes_out.clone(),
        );
        r.register(
            "junction_idempotency",
            "Requests with an Idempotency-Key on routes that honour it, by outcome",
            m.idempotency.clone(),
        );
        r.register(
            "junction_queue_depth",
            "Undelivered messages, by topic",
            m.queue_depth.clone(),
        );
        r.register(
            "junction_dlq_depth",
            "Dead letters, by topic",
            m.dlq_depth.clone(),
        );
        r.register(
            "junction_events_accepted",
            "Events accepted (durable), by topic",
            m.events_accepted.clone(),
        );
        r.register(
            "junction_deliveries",
            "Delivery attempts, by subscriber and outcome",
            m.deliveries.clone(),
        );
        r.register(
            "junction_delivery_latency_seconds",
            "Enqueue to acknowledgement, by subscriber",
            m.delivery_latency.clone(),
        );
        r.register(
            "junction_delivery_attempts",
            "Attempts a message needed, by subscriber",
            m.delivery_attempts.clone(),
        );
        let build = Family::<BuildLabel, Gauge>::default();
        build
            .get_or_create(&BuildLabel {
                version: env!("CARGO_PKG_VERSION"),
                commit: crate::GIT_COMMIT,
            })
            .set(1);
        r.register(
            "junction_build_info",
            "The running build: version and git commit (value 1)",
            build,
        );
        *m.registry.write() = r;
        m
    }

    /// Counters of one route by status, resolved once per status.
    pub fn route_requests(&self, route: &str) -> RouteRequests {
        RouteRequests {
            route: route.to_string(),
            family: self.requests.clone(),
            by_status: Arc::default(),
        }
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry.read())
            .expect("writing to a String cannot fail");
        out
    }
}
