//! The cache's metric families: per route hits, misses, stale serves,
//! revalidations and bypasses; for the store, degradations, bytes saved and
//! its size (refreshed at scrape time).

use crate::telemetry::metrics::{register_renamed, MetricSet, RouteLabel};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use std::sync::Arc;

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
    /// `junction_cache_saved_bytes_total`.
    pub bytes_saved: Counter,
    /// `junction_cache_evictions_total` (follows the store's count, see
    /// [`CacheMetrics::count_evictions`]).
    pub evictions: Counter,
    /// The store's eviction count at the last scrape (a lock: two scrapes
    /// at once must not both count the same evictions).
    evictions_seen: Arc<parking_lot::Mutex<u64>>,
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
            evictions: Counter::default(),
            evictions_seen: Arc::default(),
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
        register_renamed(
            r,
            "junction_cache_saved_bytes",
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

impl CacheMetrics {
    /// Advances `junction_cache_evictions_total` to the store's count
    /// `store_total` (called at scrape time). A store that started over (a
    /// reload built a new one) counts from zero again; its evictions are
    /// added, so the counter never goes back.
    pub fn count_evictions(&self, store_total: u64) {
        let mut seen = self.evictions_seen.lock();
        let new = if store_total >= *seen {
            store_total - *seen
        } else {
            store_total
        };
        *seen = store_total;
        self.evictions.inc_by(new);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn evictions_count_up_across_a_new_store() {
        let m = CacheMetrics::register(&mut Registry::default());
        m.count_evictions(5);
        m.count_evictions(8);
        assert_eq!(m.evictions.get(), 8);
        // A reload's new store starts from zero.
        m.count_evictions(2);
        assert_eq!(m.evictions.get(), 10);
        m.count_evictions(2);
        assert_eq!(m.evictions.get(), 10);
    }
}
