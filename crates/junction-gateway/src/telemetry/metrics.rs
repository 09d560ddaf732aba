//! Prometheus metrics, named as the contract says (`junction_*`).
//!
//! The registry and the label sets modules share. Each module registers its
//! own families ([`MetricSet`]: the proxy's in `proxy::meters`, the cache's in
//! `proxy::cached::metrics`, ...). Handles for hot-path series are resolved
//! once (per route, per upstream) and cached, so a request touches a few
//! atomics, not a label hash map.

use parking_lot::{Mutex, RwLock};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::Arc;

/// The `route` label of requests no route matched (a reserved route name).
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// Labels `{route, status}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteStatus {
    /// Route name (or [`UNMATCHED_ROUTE`] when nothing matched).
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
    /// `success`, `failure` (a failure status), `timeout`, `connect_error`, `error`, `breaker_open`, `rejected`, `body_timeout` (a response body cut off).
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

/// Labels `{subscriber, state}`.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriberStateLabel {
    /// Subscriber name.
    pub subscriber: String,
    /// One of `delivering`, `paused`, `disabled`, `rate_limited`.
    pub state: &'static str,
}

/// The process's metric registry. Each module defines its own families as a
/// [`MetricSet`] and registers them here (once per process, whatever the
/// number of reloads); this type knows none of them.
#[derive(Clone)]
pub struct Metrics {
    registry: Arc<RwLock<Registry>>,
    /// The registered sets, by type.
    sets: Arc<Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>>,
}

/// One module's metric families, registered together.
pub trait MetricSet: Clone + Send + Sync + 'static {
    /// Creates the families and registers them in `registry`.
    fn register(registry: &mut Registry) -> Self;
}

/// Registers `metric` as `name`, and as `old` too: a renamed family keeps
/// its old name for one release (both series share the same values), so
/// dashboards and alerts can move over before the old name goes.
pub fn register_renamed<M>(registry: &mut Registry, name: &str, old: &str, help: &str, metric: M)
where
    M: prometheus_client::registry::Metric + Clone,
{
    registry.register(name, help, metric.clone());
    registry.register(
        old,
        format!("Deprecated: renamed to {name} (the old name goes in the next release)"),
        metric,
    );
}

/// A latency histogram in seconds, from 0.5 ms to 30 s.
pub fn latency_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry holding `junction_build_info` and `process_*`; modules add their sets.
    pub fn new() -> Self {
        let mut r = Registry::default();
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
        r.register_collector(Box::new(super::process::ProcessCollector));
        Self {
            registry: Arc::new(RwLock::new(r)),
            sets: Arc::default(),
        }
    }

    /// Registers one family a module owns (it keeps the handle and updates it).
    pub fn register(
        &self,
        name: &str,
        help: &str,
        metric: impl prometheus_client::registry::Metric,
    ) {
        self.registry.write().register(name, help, metric);
    }

    /// The module set `T`, registered on first use; the same families after that.
    pub fn set<T: MetricSet>(&self) -> T {
        let mut sets = self.sets.lock();
        if let Some(set) = sets.get(&TypeId::of::<T>()) {
            return set
                .downcast_ref::<T>()
                .expect("stored under its own type id")
                .clone();
        }
        let set = T::register(&mut self.registry.write());
        sets.insert(TypeId::of::<T>(), Box::new(set.clone()));
        set
    }

    /// Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry.read())
            .expect("writing to a String cannot fail");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[derive(Clone)]
    struct Example {
        hits: Counter,
    }

    impl MetricSet for Example {
        fn register(registry: &mut Registry) -> Self {
            let hits = Counter::default();
            registry.register("junction_example_hits", "Example", hits.clone());
            Example { hits }
        }
    }

    #[test]
    fn a_renamed_family_is_exported_under_both_names() {
        let mut r = Registry::default();
        let c: Counter = Counter::default();
        register_renamed(
            &mut r,
            "junction_new_bytes",
            "junction_bytes_old",
            "Bytes",
            c.clone(),
        );
        c.inc_by(7);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        assert!(text.contains("junction_new_bytes_total 7"), "{text}");
        assert!(text.contains("junction_bytes_old_total 7"), "{text}");
        assert!(
            text.contains("Deprecated: renamed to junction_new_bytes"),
            "{text}"
        );
    }

    #[test]
    fn a_set_is_registered_once_and_shared() {
        let metrics = Metrics::new();
        metrics.set::<Example>().hits.inc();
        metrics.set::<Example>().hits.inc();
        let text = metrics.encode();
        assert_eq!(text.matches("# TYPE junction_example_hits").count(), 1);
        assert!(text.contains("junction_example_hits_total 2"), "{text}");
        assert!(text.contains("junction_build_info"), "{text}");
    }
}
