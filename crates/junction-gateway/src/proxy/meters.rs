//! The data plane's own metric families: requests and latency per route,
//! client faults, body bytes in and out.

use crate::telemetry::metrics::{
    latency_histogram, register_renamed, ClientFaultLabel, MetricSet, RouteLabel, RouteStatus,
};
use parking_lot::RwLock;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Arc;

/// The families of the request path.
#[derive(Clone)]
pub struct ProxyMetrics {
    /// `junction_requests_total{route,status}`.
    pub requests: Family<RouteStatus, Counter>,
    /// `junction_request_duration_seconds{route}`.
    pub request_duration: Family<RouteLabel, Histogram>,
    /// `junction_client_errors_total{route,reason}`.
    pub client_errors: Family<ClientFaultLabel, Counter>,
    /// `junction_upstream_received_bytes_total{route}`.
    pub bytes_in: Family<RouteLabel, Counter>,
    /// `junction_client_sent_bytes_total{route}`.
    pub bytes_out: Family<RouteLabel, Counter>,
}

impl MetricSet for ProxyMetrics {
    fn register(r: &mut Registry) -> Self {
        let m = Self {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            client_errors: Family::default(),
            bytes_in: Family::default(),
            bytes_out: Family::default(),
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
            "junction_client_errors",
            "Requests that failed through the client's own fault (never counted against an upstream)",
            m.client_errors.clone(),
        );
        register_renamed(
            r,
            "junction_upstream_received_bytes",
            "junction_upstream_bytes_in",
            "Response body bytes received from upstreams, by route",
            m.bytes_in.clone(),
        );
        register_renamed(
            r,
            "junction_client_sent_bytes",
            "junction_client_bytes_out",
            "Response body bytes sent to clients, by route",
            m.bytes_out.clone(),
        );
        m
    }
}

/// `junction_requests_total{route,status}` for one route, with a per-status
/// handle cache so the hot path does no allocation.
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

/// A route's request count and latency handles, resolved once.
pub struct RouteMeters {
    /// The route's name, as the access log and metrics label it.
    pub route: String,
    /// Answered requests by status.
    pub requests: RouteRequests,
    /// Time to answer.
    pub duration: Histogram,
}

impl RouteMeters {
    /// The handles of `route`.
    pub fn new(m: &ProxyMetrics, route: &str) -> Self {
        Self {
            route: route.to_owned(),
            requests: RouteRequests {
                route: route.to_owned(),
                family: m.requests.clone(),
                by_status: Arc::default(),
            },
            duration: m
                .request_duration
                .get_or_create(&RouteLabel {
                    route: route.to_owned(),
                })
                .clone(),
        }
    }
}

/// Per-route byte counters (the payload saving is bytes_in − bytes_out).
pub struct Traffic {
    /// Response bytes received from the upstream.
    pub bytes_in: Counter,
    /// Response bytes sent to clients.
    pub bytes_out: Counter,
}

impl Traffic {
    /// The counters of `route`.
    pub fn new(m: &ProxyMetrics, route: &str) -> Self {
        let label = RouteLabel {
            route: route.to_owned(),
        };
        Self {
            bytes_in: m.bytes_in.get_or_create(&label).clone(),
            bytes_out: m.bytes_out.get_or_create(&label).clone(),
        }
    }
}
