//! Idempotency records in Redis, shared by every Junction instance.
//!
//! Layout: `{prefix}:i:{key}` holds the encoded [`Record`] with a `PX` expiry
//! (the claim's lock while pending, the retention once done). Each operation is
//! one Lua script, so a claim is a single atomic "read or take", and complete
//! and release act only while the key still holds the caller's exact pending
//! record. It uses the [`RedisStore`]'s connection, timeout and degradation
//! accounting.

use std::sync::LazyLock;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use redis::Script;

use super::{judge, Claim, IdempotencyStore, Record, Token};
use crate::entry::CachedResponse;
use crate::store::{CacheError, RedisStore};

/// Returns the record held under the key, or takes the key and returns nil.
const CLAIM_SCRIPT: &str = r"
local held = redis.call('GET', KEYS[1])
if held then return held end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
";

/// Replaces the caller's pending record with ARGV[2] (expiry ARGV[3] ms), or
/// deletes it when ARGV[2] is empty; 1 if the caller still held the key.
const SETTLE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
end
return 1
";

static CLAIM: LazyLock<Script> = LazyLock::new(|| Script::new(CLAIM_SCRIPT));
static SETTLE: LazyLock<Script> = LazyLock::new(|| Script::new(SETTLE_SCRIPT));

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1)
}

impl RedisStore {
    fn idempotency_key(&self, key: &str) -> String {
        format!("{}:i:{key}", self.prefix())
    }

    /// Runs the settle script: `done` replaces the pending record, `None` deletes it.
    async fn settle(
        &self,
        key: &str,
        pending: Record,
        done: Option<(Record, Duration)>,
    ) -> Result<bool, CacheError> {
        let (replacement, ttl) = match &done {
            Some((record, ttl)) => (record.encode(), millis(*ttl)),
            None => (Bytes::new(), 1),
        };
        let mut invocation = SETTLE.prepare_invoke();
        invocation
            .key(self.idempotency_key(key))
            .arg(pending.encode().as_ref())
            .arg(replacement.as_ref())
            .arg(ttl);
        let settled: u8 = self
            .exec("idempotency_settle", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        Ok(settled == 1)
    }
}

#[async_trait]
impl IdempotencyStore for RedisStore {
    async fn claim(
        &self,
        key: &str,
        fingerprint: u128,
        token: Token,
        lock_for: Duration,
    ) -> Result<Claim, CacheError> {
        let mut invocation = CLAIM.prepare_invoke();
        invocation
            .key(self.idempotency_key(key))
            .arg(Record::Pending { fingerprint, token }.encode().as_ref())
            .arg(millis(lock_for));
        let held: Option<Vec<u8>> = self
            .exec("idempotency_claim", |mut conn| async move {
                invocation.invoke_async(&mut conn).await
            })
            .await?;
        let Some(held) = held else {
            return Ok(Claim::Owner);
        };
        match Record::decode(Bytes::from(held)) {
            Ok(record) => Ok(judge(record, fingerprint)),
            Err(error) => Err(CacheError::Backend {
                backend: "redis",
                source: format!("unreadable idempotency record for {key}: {error}").into(),
            }),
        }
    }

    async fn complete(
        &self,
        key: &str,
        fingerprint: u128,
        token: Token,
        response: &CachedResponse,
        keep_for: Duration,
    ) -> Result<bool, CacheError> {
        let done = Record::Done {
            fingerprint,
            response: response.clone(),
        };
        self.settle(
            key,
            Record::Pending { fingerprint, token },
            Some((done, keep_for)),
        )
        .await
    }

    async fn release(&self, key: &str, fingerprint: u128, token: Token) -> Result<(), CacheError> {
        self.settle(key, Record::Pending { fingerprint, token }, None)
            .await
            .map(|_| ())
    }
}
