//! Redis cache store: one cache shared by every Junction instance.
//!
//! Why it exists: several gateways behind a load balancer must see the same
//! entries and the same invalidations, or a `PUT` on one leaves stale data on the
//! others.
//!
//! Layout (all under a configurable `prefix`):
//! - `{prefix}:e:{key}` — the encoded [`Variants`] of one URI, with a `PX`
//!   expiry of their remaining retention;
//! - `{prefix}:t:{tag}` — a set of entry keys; its expiry is raised to at least
//!   that of every entry added, so the set outlives its members;
//! - `{prefix}:invalidate` — a pub/sub channel announcing each invalidation
//!   (`tag:{tag}` or `key:{key}`) for local L1 caches.
//!
//! What it promises:
//! - `put` and `invalidate_tag` are single Lua scripts and `invalidate_key` a
//!   MULTI pipeline, so each is atomic, and the announcement is published in the
//!   same step. Replacing an entry does not unlink it from its old tags, so an old
//!   tag may still drop it (an extra miss, never a stale hit).
//! - Every call, including connecting, is bounded by `timeout` (default 250 ms).
//!   An unreachable Redis answers [`CacheError::Unavailable`] within it; the store
//!   starts even when Redis is down and connects on first use, at most one attempt
//!   per `reconnect_interval`, and the connection manager reconnects by itself
//!   after a connection was established. Failures count in `degraded_total` and
//!   are logged at most once per 10 s.
//! - Scripts touch keys they compute, so this targets standalone Redis (or a
//!   proxy that pins one prefix to one node), not Redis Cluster.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};
use parking_lot::RwLock;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{RedisError, Script};

use super::{BoxError, CacheError, CacheStats, CacheStore, Invalidation};
use crate::entry::now_ms;
use crate::variants::Variants;

const BACKEND: &str = "redis";
/// Minimum gap between two degradation warnings in the log.
const WARN_EVERY_MS: u64 = 10_000;

/// Stores the entry and links it to its tags, raising each tag set's expiry to
/// at least the entry's plus a second, so a set never expires before its members.
const PUT_SCRIPT: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
local ttl = tonumber(ARGV[2]) + 1000
for i = 2, #KEYS do
  redis.call('SADD', KEYS[i], KEYS[1])
  if redis.call('PTTL', KEYS[i]) < ttl then
    redis.call('PEXPIRE', KEYS[i], ttl)
  end
end
return 1
";

/// Deletes every entry of a tag set and the set, then announces it.
const INVALIDATE_TAG_SCRIPT: &str = r"
local members = redis.call('SMEMBERS', KEYS[1])
local removed = 0
for i = 1, #members, 500 do
  removed = removed + redis.call('DEL', unpack(members, i, math.min(i + 499, #members)))
end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[1], ARGV[2])
return removed
";

/// Settings for [`RedisStore`].
#[derive(Debug, Clone)]
pub struct RedisOptions {
    /// `redis://host:port/db` URL.
    pub url: String,
    /// Key prefix shared by the instances that share the cache.
    pub prefix: String,
    /// Bound on every Redis call, connecting included.
    pub timeout: Duration,
    /// Minimum gap between connection attempts while no connection was ever made.
    pub reconnect_interval: Duration,
}

impl RedisOptions {
    /// Options with the default timeout (250 ms) and reconnect interval (1 s).
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: prefix.into(),
            timeout: Duration::from_millis(250),
            reconnect_interval: Duration::from_secs(1),
        }
    }
}

/// [`CacheStore`] backed by Redis; cheap to clone (clones share one connection).
#[derive(Clone)]
pub struct RedisStore {
    inner: Arc<Inner>,
}

struct Inner {
    client: redis::Client,
    opts: RedisOptions,
    conn: RwLock<Option<ConnectionManager>>,
    connecting: tokio::sync::Mutex<()>,
    last_attempt_ms: AtomicU64,
    degraded: AtomicU64,
    warnings: WarnLimiter,
    put_script: Script,
    invalidate_tag_script: Script,
}

impl std::fmt::Debug for RedisStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisStore")
            .field("prefix", &self.inner.opts.prefix)
            .field("timeout", &self.inner.opts.timeout)
            .field("connected", &self.inner.conn.read().is_some())
            .finish()
    }
}

// === impl RedisStore ===

impl RedisStore {
    /// Connects with default options; see [`RedisStore::connect_with`].
    pub async fn connect(url: &str, prefix: &str) -> Result<Self, CacheError> {
        Self::connect_with(RedisOptions::new(url, prefix)).await
    }

    /// Creates the store and tries to connect once. Only an invalid URL is an
    /// error: if Redis is unreachable the store starts degraded and keeps trying.
    pub async fn connect_with(opts: RedisOptions) -> Result<Self, CacheError> {
        let client = redis::Client::open(opts.url.as_str()).map_err(|e| CacheError::Config {
            source: Box::new(e),
        })?;
        let store = Self {
            inner: Arc::new(Inner {
                client,
                opts,
                conn: RwLock::new(None),
                connecting: tokio::sync::Mutex::new(()),
                last_attempt_ms: AtomicU64::new(0),
                degraded: AtomicU64::new(0),
                warnings: WarnLimiter::default(),
                put_script: Script::new(PUT_SCRIPT),
                invalidate_tag_script: Script::new(INVALIDATE_TAG_SCRIPT),
            }),
        };
        if let Err(error) = store.ping().await {
            tracing::warn!(
                error = %chain(&error),
                "redis cache unreachable at start; serving without cache until it is"
            );
        }
        Ok(store)
    }

    /// Round trip to Redis, for readiness checks.
    pub async fn ping(&self) -> Result<(), CacheError> {
        self.exec("ping", |mut conn| async move {
            redis::cmd("PING").query_async::<()>(&mut conn).await
        })
        .await
    }

    /// Invalidations published by every store sharing this prefix (this one
    /// included), for a local L1 to drop its copies. The stream ends if the
    /// subscription connection is lost; an L1 should then clear itself and
    /// subscribe again, since announcements may have been missed.
    pub async fn subscribe_invalidations(
        &self,
    ) -> Result<BoxStream<'static, Invalidation>, CacheError> {
        let channel = self.channel();
        let subscribe = async {
            let mut pubsub = self.inner.client.get_async_pubsub().await?;
            pubsub.subscribe(&channel).await?;
            Ok::<_, RedisError>(pubsub)
        };
        let pubsub = match tokio::time::timeout(self.inner.opts.timeout, subscribe).await {
            Ok(Ok(pubsub)) => pubsub,
            Ok(Err(e)) => return Err(self.degrade("subscribe", classify(e))),
            Err(elapsed) => return Err(self.degrade("subscribe", unavailable(elapsed))),
        };
        let stream = pubsub.into_on_message().filter_map(|msg| async move {
            let payload: String = msg.get_payload().ok()?;
            match payload.split_once(':')? {
                ("tag", tag) => Some(Invalidation::Tag(tag.to_owned())),
                ("key", key) => Some(Invalidation::Key(key.to_owned())),
                _ => None,
            }
        });
        Ok(stream.boxed())
    }

    fn entry_key(&self, key: &str) -> String {
        format!("{}:e:{key}", self.inner.opts.prefix)
    }

    fn tag_key(&self, tag: &str) -> String {
        format!("{}:t:{tag}", self.inner.opts.prefix)
    }

    fn channel(&self) -> String {
        format!("{}:invalidate", self.inner.opts.prefix)
    }

    /// The key prefix shared by the instances of one group.
    pub(crate) fn prefix(&self) -> &str {
        &self.inner.opts.prefix
    }

    /// Runs one Redis operation, connection included, within the timeout.
    pub(crate) async fn exec<T, F, Fut>(&self, op: &'static str, f: F) -> Result<T, CacheError>
    where
        F: FnOnce(ConnectionManager) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let run = async {
            let conn = self.connection().await?;
            f(conn).await.map_err(classify)
        };
        match tokio::time::timeout(self.inner.opts.timeout, run).await {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(error)) => Err(self.degrade(op, error)),
            Err(elapsed) => Err(self.degrade(op, unavailable(elapsed))),
        }
    }

    /// The shared connection, establishing it if none was ever made.
    async fn connection(&self) -> Result<ConnectionManager, CacheError> {
        if let Some(conn) = self.inner.conn.read().clone() {
            return Ok(conn);
        }
        // One caller connects; the others fail fast rather than queue up.
        let Ok(_guard) = self.inner.connecting.try_lock() else {
            return Err(unavailable("connection attempt in progress"));
        };
        if let Some(conn) = self.inner.conn.read().clone() {
            return Ok(conn);
        }
        let now = now_ms();
        let last = self.inner.last_attempt_ms.load(Ordering::Relaxed);
        let interval = self.inner.opts.reconnect_interval.as_millis() as u64;
        if last != 0 && now.saturating_sub(last) < interval {
            return Err(unavailable(
                "not connected; waiting before the next attempt",
            ));
        }
        self.inner.last_attempt_ms.store(now, Ordering::Relaxed);
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.inner.opts.timeout)
            .set_response_timeout(self.inner.opts.timeout)
            .set_number_of_retries(1)
            .set_max_delay(1_000);
        let conn = ConnectionManager::new_with_config(self.inner.client.clone(), config)
            .await
            .map_err(classify)?;
        *self.inner.conn.write() = Some(conn.clone());
        Ok(conn)
    }

    /// Counts a failure and logs it, at most once per [`WARN_EVERY_MS`].
    fn degrade(&self, op: &'static str, error: CacheError) -> CacheError {
        self.inner.degraded.fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = self.inner.warnings.admit(now_ms()) {
            tracing::warn!(
                op,
                error = %chain(&error),
                suppressed,
                "redis cache degraded; treating as miss"
            );
        }
        error
    }
}

/// Lets one warning through per [`WARN_EVERY_MS`] and counts the ones held back.
#[derive(Debug, Default)]
struct WarnLimiter {
    /// When the last warning was let through (0: never).
    last_ms: AtomicU64,
    suppressed: AtomicU64,
}

impl WarnLimiter {
    /// `Some(suppressed since the last one)` if a warning may be logged at `now_ms`.
    fn admit(&self, now_ms: u64) -> Option<u64> {
        let last = self.last_ms.load(Ordering::Relaxed);
        let due = last == 0 || now_ms.saturating_sub(last) >= WARN_EVERY_MS;
        let won = due
            && self
                .last_ms
                .compare_exchange(last, now_ms.max(1), Ordering::Relaxed, Ordering::Relaxed)
                .is_ok();
        if won {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[async_trait]
impl CacheStore for RedisStore {
    async fn get(&self, key: &str) -> Result<Option<Arc<Variants>>, CacheError> {
        let redis_key = self.entry_key(key);
        let raw: Option<Vec<u8>> = self
            .exec("get", |mut conn| async move {
                redis::cmd("GET")
                    .arg(&redis_key)
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let Some(raw) = raw else { return Ok(None) };
        match Variants::decode(Bytes::from(raw)) {
            Ok(variants) => Ok(Some(Arc::new(variants))),
            Err(error) => {
                // Another version's format, or damage: a miss; the next put overwrites it.
                tracing::debug!(key, %error, "unreadable redis cache entry; treating as miss");
                Ok(None)
            }
        }
    }

    async fn put(&self, key: &str, variants: Variants, tags: &[String]) -> Result<(), CacheError> {
        let Some(ttl) = variants.remaining_retention(now_ms()) else {
            return Ok(());
        };
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut invocation = self.inner.put_script.prepare_invoke();
        invocation.key(self.entry_key(key));
        for tag in tags {
            invocation.key(self.tag_key(tag));
        }
        invocation.arg(variants.encode().as_ref()).arg(ttl_ms);
        self.exec("put", |mut conn| async move {
            invocation.invoke_async::<()>(&mut conn).await
        })
        .await
    }

    async fn invalidate_tag(&self, tag: &str) -> Result<u64, CacheError> {
        let mut invocation = self.inner.invalidate_tag_script.prepare_invoke();
        invocation
            .key(self.tag_key(tag))
            .arg(self.channel())
            .arg(format!("tag:{tag}"));
        self.exec("invalidate_tag", |mut conn| async move {
            invocation.invoke_async::<u64>(&mut conn).await
        })
        .await
    }

    async fn invalidate_key(&self, key: &str) -> Result<bool, CacheError> {
        let mut pipe = redis::pipe();
        pipe.atomic()
            .del(self.entry_key(key))
            .publish(self.channel(), format!("key:{key}"));
        let (deleted, _receivers): (u64, u64) = self
            .exec("invalidate_key", |mut conn| async move {
                pipe.query_async(&mut conn).await
            })
            .await?;
        Ok(deleted > 0)
    }

    async fn health(&self) -> Result<(), CacheError> {
        self.ping().await
    }

    fn stats(&self) -> CacheStats {
        CacheStats {
            entries: None,
            bytes: None,
            evictions: 0,
            degraded_total: self.inner.degraded.load(Ordering::Relaxed),
        }
    }

    fn backend(&self) -> &'static str {
        BACKEND
    }
}

/// Connection-level failures are `Unavailable`; anything Redis answered is `Backend`.
fn classify(error: RedisError) -> CacheError {
    let transient = error.is_io_error()
        || error.is_timeout()
        || error.is_connection_refusal()
        || error.is_connection_dropped()
        || error.is_unrecoverable_error();
    let source = Box::new(error);
    if transient {
        CacheError::Unavailable {
            backend: BACKEND,
            source,
        }
    } else {
        CacheError::Backend {
            backend: BACKEND,
            source,
        }
    }
}

fn unavailable(source: impl Into<BoxError>) -> CacheError {
    CacheError::Unavailable {
        backend: BACKEND,
        source: source.into(),
    }
}

/// An error and its causes, joined with `: `, for one log field.
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_are_limited_to_one_per_ten_seconds() {
        let limiter = WarnLimiter::default();
        assert_eq!(limiter.admit(50_000), Some(0));
        assert_eq!(limiter.admit(50_001), None);
        assert_eq!(limiter.admit(59_999), None);
        assert_eq!(limiter.admit(60_000), Some(2));
        assert_eq!(limiter.admit(60_000), None);
    }

    #[test]
    fn connection_failures_are_unavailable_and_answers_are_backend_errors() {
        let io = RedisError::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert!(matches!(classify(io), CacheError::Unavailable { .. }));
        let answer = RedisError::from((redis::ErrorKind::ResponseError, "WRONGTYPE"));
        assert!(matches!(classify(answer), CacheError::Backend { .. }));
    }
}
