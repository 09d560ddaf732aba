//! The cache store contract and its backends.
//!
//! Why it exists: the gateway caches through one trait whether entries live in
//! process memory (single machine) or in Redis (several Junction instances).
//!
//! What every backend promises:
//! - A key holds the [`Variants`] of one URI. They are kept for their
//!   [`Variants::remaining_retention`] at the time of `put`; `get` may return
//!   them stale, and the caller decides with
//!   [`CachedResponse::reuse`](crate::CachedResponse::reuse).
//! - `put` with tags makes the entry reachable by [`CacheStore::invalidate_tag`]
//!   for as long as the entry lives.
//! - Errors are [`CacheError`]s the gateway treats as a miss (for `get`) or as
//!   nothing stored (for `put`); no call blocks for longer than the backend's
//!   configured timeout.
//! - A store may decline to keep an entry (too large, already past retention).

mod memory;
mod redis;

use async_trait::async_trait;
use serde::Serialize;
use std::sync::Arc;

use crate::variants::Variants;

pub use self::memory::MemoryStore;
pub use self::redis::{RedisOptions, RedisStore};

/// Boxed error used as the cause inside [`CacheError`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a cache operation failed. The gateway treats each as a miss / pass-through.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// The backend could not be reached in time (connection refused, timeout,
    /// connection lost). Transient: the store recovers by itself.
    #[error("cache backend {backend} is unavailable")]
    Unavailable {
        /// Which backend.
        backend: &'static str,
        /// What went wrong.
        #[source]
        source: BoxError,
    },
    /// The backend answered with an error (for example a Redis script error).
    #[error("cache backend {backend} rejected the operation")]
    Backend {
        /// Which backend.
        backend: &'static str,
        /// The backend's error.
        #[source]
        source: BoxError,
    },
    /// The store was configured wrongly (for example an invalid Redis URL).
    #[error("invalid cache configuration")]
    Config {
        /// What is wrong.
        #[source]
        source: BoxError,
    },
}

/// Counters a store reports for the dashboard and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CacheStats {
    /// Entries held, when the backend knows it cheaply (`None` for Redis).
    pub entries: Option<u64>,
    /// Bytes held (bodies, headers, ETags), when the backend knows it cheaply.
    pub bytes: Option<u64>,
    /// Entries this process saw removed for size or expiry.
    pub evictions: u64,
    /// Operations that failed because the backend was unavailable or erred.
    pub degraded_total: u64,
}

/// An invalidation announced to other instances (see [`RedisStore::subscribe_invalidations`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Invalidation {
    /// Every entry stored with this tag was dropped.
    Tag(String),
    /// The entry with this key was dropped.
    Key(String),
}

/// A response cache backend.
#[async_trait]
pub trait CacheStore: Send + Sync {
    /// The variants stored for `key`, fresh or stale, if the store still holds
    /// them (shared: a hit on the memory store copies nothing).
    async fn get(&self, key: &str) -> Result<Option<Arc<Variants>>, CacheError>;

    /// Stores `variants` under `key`, replacing what was there, reachable by `tags`.
    async fn put(&self, key: &str, variants: Variants, tags: &[String]) -> Result<(), CacheError>;

    /// Drops every entry stored with `tag`; returns how many were dropped.
    async fn invalidate_tag(&self, tag: &str) -> Result<u64, CacheError>;

    /// Drops every variant stored for `key`; returns whether there was one.
    async fn invalidate_key(&self, key: &str) -> Result<bool, CacheError>;

    /// Whether the backend answers now (readiness); in-process stores always do.
    async fn health(&self) -> Result<(), CacheError> {
        Ok(())
    }

    /// Current counters.
    fn stats(&self) -> CacheStats;

    /// Short backend name for logs and metrics (`memory`, `redis`).
    fn backend(&self) -> &'static str;
}
