//! The cache's metric families: per route hits, misses, stale serves,
//! revalidations and bypasses; for the store, degradations, bytes saved and
//! its size (gauges refreshed at scrape time).

use crate::telemetry::metrics::{MetricSet, RouteLabel};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// The cache's families.
#[derive(Clone)]
pub struct CacheMetrics {
    /// `junction_cache_hits_total{route}`.
    pub hits: Family<RouteLabel, Counter>,
    /// `junction_cache_misses_total{route}`.
    pub misses: Family<RouteLabel, Counter>,
    /// `junction_cache_stale_serves_total{route}`.
    pub stale: Family<RouteLabel, Counter>,
    /// `junction_cache_revalidations_total{route}`.
    pub revalidated: Family<RouteLabel, Counter>,
    /// `junction_cache_bypasses_total{route}`.
    pub bypassed: Family<RouteLabel, Counter>,
    /// `junction_cache_degraded_total`.
    pub degraded: Counter,
    /// `junction_cache_bytes_saved_total`.
    pub bytes_saved: Counter,
    /// `junction_cache_evictions` (mirrors the store's count).
    pub evictions: Gauge,
    /// `junction_cache_bytes`.
    pub bytes: Gauge,
    /// `junction_cache_entries`.
    pub entries: Gauge,
}

impl MetricSet for CacheMetrics {
    fn register(r: &mut Registry) -> Self {
        let m = Self {
            hits: Family::default(),
            misses: Family::default(),
            stale: Family::default(),
            revalidated: Family::default(),
            bypassed: Family::default(),
            degraded: Counter::default(),
            bytes_saved: Counter::default(),
            evictions: Gauge::default(),
            bytes: Gauge::default(),
            entries: Gauge::default(),
        };
        r.register(
            "junction_cache_hits",
            "Responses served from cache",
            m.hits.clone(),
        );
        r.register(
            "junction_cache_misses",
            "Cacheable requests that went upstream",
            m.misses.clone(),
        );
        r.register(
            "junction_cache_stale_serves",
            "Stale responses served (revalidating or upstream failing)",
            m.stale.clone(),
        );
        r.register(
            "junction_cache_revalidations",
            "Stored responses refreshed by a 304 to a conditional request",
            m.revalidated.clone(),
        );
        r.register(
            "junction_cache_bypasses",
            "Requests on cached routes the cache could not answer for privacy (credentials, no-store)",
            m.bypassed.clone(),
        );
        r.register(
            "junction_cache_degraded",
            "Cache backend errors answered by passing through",
            m.degraded.clone(),
        );
        r.register(
            "junction_cache_bytes_saved",
            "Response body bytes served from cache instead of fetched upstream",
            m.bytes_saved.clone(),
        );
        r.register(
            "junction_cache_evictions",
            "Entries evicted from the cache",
            m.evictions.clone(),
        );
        r.register(
            "junction_cache_bytes",
            "Bytes held by the cache",
            m.bytes.clone(),
        );
        r.register(
            "junction_cache_entries",
            "Entries held by the cache",
            m.entries.clone(),
        );
        m
    }
}
