//! In-process cache store (moka), bounded by entry count and by bytes.
//!
//! Why it exists: the embedded default for a single Junction with no Redis, and
//! the natural L1 in front of Redis later.
//!
//! What it promises:
//! - Both bounds hold at once. moka supports one capacity, so the capacity is
//!   `max_bytes` and each entry weighs `max(real size, ceil(max_bytes /
//!   max_entries))`: the sum of real sizes stays under `max_bytes`, and since no
//!   entry weighs less than `max_bytes / max_entries` at most `max_entries` fit.
//!   The cost is that many tiny entries are counted as larger than they are, so
//!   the cache may evict before `max_bytes` of real data when entries are small —
//!   which is exactly when the entry bound is the tighter one. (Checking
//!   `entry_count` after inserts would be racy and would have us pick victims
//!   ourselves instead of moka's TinyLFU.)
//! - Each entry expires at `stored_at + retention` (moka per-entry expiry).
//! - The tag index (tag -> keys) only lists keys the cache holds: the eviction
//!   listener removes a key from its tags on every removal, whatever the cause.
//!   Index slots carry the generation of the value that put them there, so a late
//!   notification about a replaced value never unlinks its successor.
//! - `stats` counts entries, real bytes and evictions (size or expiry); they are
//!   exact once moka's pending maintenance has run ([`MemoryStore::run_pending_tasks`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::Expiry;
use parking_lot::Mutex;

use super::{CacheError, CacheStats, CacheStore};
use crate::entry::now_ms;
use crate::variants::Variants;

/// An entry as held in moka, with what the index and counters need.
#[derive(Debug)]
struct Stored {
    variants: Arc<Variants>,
    tags: Box<[String]>,
    generation: u64,
    /// Real size in bytes (entry plus key).
    size: u64,
    /// Retention left when inserted; moka expires the entry after it.
    ttl: Duration,
}

/// State shared with the eviction listener.
#[derive(Debug, Default)]
struct Shared {
    /// tag -> (key -> generation of the value that linked it).
    tags: Mutex<HashMap<String, HashMap<String, u64>>>,
    next_generation: AtomicU64,
    entries: AtomicU64,
    bytes: AtomicU64,
    evictions: AtomicU64,
}

/// moka per-entry expiry: every value lives for its own `ttl`.
struct RetentionExpiry;

impl Expiry<String, Arc<Stored>> for RetentionExpiry {
    fn expire_after_create(&self, _: &String, value: &Arc<Stored>, _: Instant) -> Option<Duration> {
        Some(value.ttl)
    }

    fn expire_after_update(
        &self,
        _: &String,
        value: &Arc<Stored>,
        _: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// In-process [`CacheStore`] bounded by entries and bytes.
#[derive(Clone)]
pub struct MemoryStore {
    cache: Cache<String, Arc<Stored>>,
    shared: Arc<Shared>,
    max_bytes: u64,
}

impl std::fmt::Debug for MemoryStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStore")
            .field("max_bytes", &self.max_bytes)
            .field("stats", &self.stats())
            .finish()
    }
}

// === impl MemoryStore ===

impl MemoryStore {
    /// A store holding at most `max_entries` entries and `max_bytes` bytes
    /// (each at least 1).
    pub fn new(max_entries: u64, max_bytes: u64) -> Self {
        let max_entries = max_entries.max(1);
        let max_bytes = max_bytes.max(1);
        let floor = max_bytes.div_ceil(max_entries);
        let shared = Arc::new(Shared::default());
        let listener_shared = shared.clone();
        let cache = Cache::builder()
            .max_capacity(max_bytes)
            .weigher(move |_: &String, value: &Arc<Stored>| {
                u32::try_from(value.size.max(floor)).unwrap_or(u32::MAX)
            })
            .expire_after(RetentionExpiry)
            .eviction_listener(move |key: Arc<String>, value: Arc<Stored>, cause| {
                listener_shared.on_removal(&key, &value, cause);
            })
            .build();
        Self {
            cache,
            shared,
            max_bytes,
        }
    }

    /// Runs moka's pending maintenance (evictions, expirations, notifications)
    /// now, so `stats` is exact. moka also does this by itself over time.
    pub async fn run_pending_tasks(&self) {
        self.cache.run_pending_tasks().await;
    }

    /// Number of tags with at least one indexed key.
    pub fn indexed_tags(&self) -> usize {
        self.shared.tags.lock().len()
    }
}

#[async_trait]
impl CacheStore for MemoryStore {
    async fn get(&self, key: &str) -> Result<Option<Arc<Variants>>, CacheError> {
        Ok(self
            .cache
            .get(key)
            .await
            .map(|stored| stored.variants.clone()))
    }

    async fn put(&self, key: &str, variants: Variants, tags: &[String]) -> Result<(), CacheError> {
        let size = variants.size_bytes() + key.len() as u64;
        let Some(ttl) = variants.remaining_retention(now_ms()) else {
            return Ok(()); // Already past use: nothing to keep.
        };
        if size > self.max_bytes || size > u64::from(u32::MAX) {
            tracing::debug!(key, size, "entry larger than the memory cache; not stored");
            return Ok(());
        }
        let generation = self.shared.next_generation.fetch_add(1, Ordering::Relaxed);
        let mut tags: Vec<String> = tags.to_vec();
        tags.sort_unstable();
        tags.dedup();
        {
            let mut index = self.shared.tags.lock();
            for tag in &tags {
                index
                    .entry(tag.clone())
                    .or_default()
                    .insert(key.to_owned(), generation);
            }
        }
        // Count before inserting: the listener may report this value's removal
        // (admission rejected) before `insert` returns.
        self.shared.entries.fetch_add(1, Ordering::Relaxed);
        self.shared.bytes.fetch_add(size, Ordering::Relaxed);
        let stored = Stored {
            variants: Arc::new(variants),
            tags: tags.into_boxed_slice(),
            generation,
            size,
            ttl,
        };
        self.cache.insert(key.to_owned(), Arc::new(stored)).await;
        Ok(())
    }

    async fn invalidate_tag(&self, tag: &str) -> Result<u64, CacheError> {
        // Take the set first; the listener cleans the entries' other tags.
        let keys = self.shared.tags.lock().remove(tag).unwrap_or_default();
        let mut removed = 0;
        for key in keys.into_keys() {
            if self.cache.remove(&key).await.is_some() {
                removed += 1;
            }
        }
        Ok(removed)
    }

    async fn invalidate_key(&self, key: &str) -> Result<bool, CacheError> {
        Ok(self.cache.remove(key).await.is_some())
    }

    fn stats(&self) -> CacheStats {
        CacheStats {
            entries: Some(self.shared.entries.load(Ordering::Relaxed)),
            bytes: Some(self.shared.bytes.load(Ordering::Relaxed)),
            evictions: self.shared.evictions.load(Ordering::Relaxed),
            degraded_total: 0,
        }
    }

    fn backend(&self) -> &'static str {
        "memory"
    }
}

// === impl Shared ===

impl Shared {
    fn on_removal(&self, key: &str, value: &Stored, cause: RemovalCause) {
        if cause.was_evicted() {
            self.evictions.fetch_add(1, Ordering::Relaxed);
        }
        saturating_sub(&self.entries, 1);
        saturating_sub(&self.bytes, value.size);
        let mut index = self.tags.lock();
        for tag in value.tags.iter() {
            let Some(keys) = index.get_mut(tag) else {
                continue;
            };
            if keys.get(key) == Some(&value.generation) {
                keys.remove(key);
                if keys.is_empty() {
                    index.remove(tag);
                }
            }
        }
    }
}

fn saturating_sub(counter: &AtomicU64, n: u64) {
    // The closure always returns Some, so this cannot fail.
    let _ = counter.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
        Some(v.saturating_sub(n))
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::CachedResponse;
    use bytes::Bytes;

    fn entry(body_len: usize, retention_ms: u64) -> Variants {
        Variants::one(CachedResponse {
            status: 200,
            headers: vec![("content-type".into(), b"text/plain".to_vec())],
            body: Bytes::from(vec![b'x'; body_len]),
            stored_at_ms: now_ms(),
            fresh_for: Duration::from_millis(retention_ms / 2),
            stale_while_revalidate: Duration::ZERO,
            stale_if_error: Duration::from_millis(retention_ms / 2),
            etag: "\"e\"".into(),
            ..CachedResponse::default()
        })
    }

    fn tags(names: &[&str]) -> Vec<String> {
        names.iter().map(|t| (*t).to_owned()).collect()
    }

    #[tokio::test]
    async fn put_get_and_invalidate_key() {
        let store = MemoryStore::new(100, 1 << 20);
        let e = entry(10, 60_000);
        store.put("k", e.clone(), &[]).await.expect("put");
        assert_eq!(store.get("k").await.expect("get").as_deref(), Some(&e));
        assert_eq!(store.get("other").await.expect("get"), None);
        assert!(store.invalidate_key("k").await.expect("invalidate"));
        assert!(!store.invalidate_key("k").await.expect("invalidate"));
        assert_eq!(store.get("k").await.expect("get"), None);
        store.run_pending_tasks().await;
        let stats = store.stats();
        assert_eq!(
            (stats.entries, stats.bytes, stats.evictions),
            (Some(0), Some(0), 0)
        );
    }

    #[tokio::test]
    async fn tag_invalidation_drops_tagged_entries_and_cleans_the_index() {
        let store = MemoryStore::new(100, 1 << 20);
        store
            .put("k1", entry(1, 60_000), &tags(&["t1", "t2"]))
            .await
            .expect("put");
        store
            .put("k2", entry(1, 60_000), &tags(&["t1"]))
            .await
            .expect("put");
        store
            .put("k3", entry(1, 60_000), &tags(&["t3"]))
            .await
            .expect("put");
        assert_eq!(store.invalidate_tag("t1").await.expect("invalidate"), 2);
        assert!(store.get("k1").await.expect("get").is_none());
        assert!(store.get("k2").await.expect("get").is_none());
        assert!(store.get("k3").await.expect("get").is_some());
        store.run_pending_tasks().await;
        assert_eq!(store.indexed_tags(), 1, "only t3 should remain indexed");
        assert_eq!(store.invalidate_tag("t1").await.expect("invalidate"), 0);
        assert_eq!(store.invalidate_tag("t2").await.expect("invalidate"), 0);
    }

    #[tokio::test]
    async fn replacing_an_entry_moves_its_tags() {
        let store = MemoryStore::new(100, 1 << 20);
        store
            .put("k", entry(1, 60_000), &tags(&["old"]))
            .await
            .expect("put");
        store
            .put("k", entry(2, 60_000), &tags(&["new"]))
            .await
            .expect("put");
        store.run_pending_tasks().await;
        assert_eq!(store.invalidate_tag("old").await.expect("invalidate"), 0);
        assert!(store.get("k").await.expect("get").is_some());
        assert_eq!(store.invalidate_tag("new").await.expect("invalidate"), 1);
        store.run_pending_tasks().await;
        assert_eq!(store.indexed_tags(), 0);
        assert_eq!(store.stats().entries, Some(0));
    }

    #[tokio::test]
    async fn entry_bound_holds() {
        let store = MemoryStore::new(10, 1 << 20);
        for i in 0..50 {
            store
                .put(&format!("k{i}"), entry(10, 60_000), &tags(&["all"]))
                .await
                .expect("put");
            store.run_pending_tasks().await;
        }
        let stats = store.stats();
        assert!(stats.entries.is_some_and(|n| n <= 10), "{stats:?}");
        assert!(stats.evictions >= 40, "{stats:?}");
        // The index never lists more keys than the cache holds.
        let indexed = store.shared.tags.lock().get("all").map_or(0, HashMap::len);
        assert!(indexed as u64 <= 10, "{indexed}");
    }

    #[tokio::test]
    async fn byte_bound_holds_and_oversized_entries_are_declined() {
        let store = MemoryStore::new(1_000, 10_000);
        for i in 0..50 {
            store
                .put(&format!("k{i}"), entry(1_000, 60_000), &[])
                .await
                .expect("put");
            store.run_pending_tasks().await;
        }
        let stats = store.stats();
        assert!(
            stats.bytes.is_some_and(|b| b > 0 && b <= 10_000),
            "{stats:?}"
        );
        assert!(stats.evictions > 0, "{stats:?}");

        store
            .put("huge", entry(20_000, 60_000), &[])
            .await
            .expect("put");
        assert!(store.get("huge").await.expect("get").is_none());
    }

    #[tokio::test]
    async fn entries_expire_after_retention_and_count_as_evictions() {
        let store = MemoryStore::new(100, 1 << 20);
        store
            .put("short", entry(1, 200), &tags(&["t"]))
            .await
            .expect("put");
        store.put("long", entry(1, 60_000), &[]).await.expect("put");
        assert!(store.get("short").await.expect("get").is_some());
        store.run_pending_tasks().await;
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(store.get("short").await.expect("get").is_none());
        assert!(store.get("long").await.expect("get").is_some());
        // Reads hide expired entries at once; moka's timer wheel (about 1 s ticks)
        // removes them, and notifies the listener, during a later maintenance run.
        for _ in 0..40 {
            store.run_pending_tasks().await;
            if store.stats().evictions > 0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let stats = store.stats();
        assert_eq!((stats.entries, stats.evictions), (Some(1), 1));
        assert_eq!(store.indexed_tags(), 0);
    }

    #[tokio::test]
    async fn entries_past_retention_are_not_stored() {
        let store = MemoryStore::new(100, 1 << 20);
        let mut old = (**entry(1, 1_000).iter().next().expect("one")).clone();
        old.stored_at_ms -= 5_000;
        store
            .put("old", Variants::one(old), &[])
            .await
            .expect("put");
        assert!(store.get("old").await.expect("get").is_none());
        assert_eq!(store.stats().entries, Some(0));
    }
}
