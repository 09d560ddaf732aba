//! Idempotency keys for sync writes: one execution per `Idempotency-Key`.
//!
//! Why it exists: a client that timed out on `POST /payments` retries, and the
//! upstream must not charge twice. The gateway claims the key before it calls
//! the upstream, and stores the answer under it; a repeat gets the stored answer
//! back. Instances behind a load balancer share the claims through Redis, so the
//! repeat may land on any of them.
//!
//! What every backend promises:
//! - [`IdempotencyStore::claim`] is atomic: of concurrent claims of one key,
//!   exactly one gets [`Claim::Owner`].
//! - A claim is held for `lock_for` at most (a gateway that died mid-request
//!   does not lock the key for its whole retention); [`IdempotencyStore::complete`]
//!   and [`IdempotencyStore::release`] act only while the caller's token still
//!   holds the key, so a late owner never overwrites a successor's record.
//! - A key claimed or completed for one request fingerprint answers
//!   [`Claim::Mismatch`] to any other fingerprint.
//! - Errors are [`CacheError`]s; the gateway refuses the request (503) rather
//!   than risk running it twice.

mod memory;
mod record;
mod redis;

use std::time::Duration;

use async_trait::async_trait;

use crate::entry::CachedResponse;
use crate::store::CacheError;

pub use self::memory::MemoryIdempotency;
pub use self::record::Record;

/// Identifies one claim, so only its owner completes or releases it.
pub type Token = u128;

/// What a claim of a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is now held by this token: run the request, then
    /// [`complete`](IdempotencyStore::complete) or [`release`](IdempotencyStore::release).
    Owner,
    /// The same request already ran; this is its answer.
    Replay(CachedResponse),
    /// The same request is still running elsewhere.
    InFlight,
    /// The key was used for a different request (method, path or body).
    Mismatch,
}

/// Where idempotency records live.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims `key` for a request with `fingerprint`, held by `token` for at
    /// most `lock_for` unless completed or released sooner.
    async fn claim(
        &self,
        key: &str,
        fingerprint: u128,
        token: Token,
        lock_for: Duration,
    ) -> Result<Claim, CacheError>;

    /// Stores the answer of the request `token` ran, kept for `keep_for`.
    /// Returns `false` if the token no longer held the key (its claim expired).
    async fn complete(
        &self,
        key: &str,
        fingerprint: u128,
        token: Token,
        response: &CachedResponse,
        keep_for: Duration,
    ) -> Result<bool, CacheError>;

    /// Gives the key up without an answer (the request failed in a way a retry may fix).
    async fn release(&self, key: &str, fingerprint: u128, token: Token) -> Result<(), CacheError>;
}

/// The fingerprint of a request (XXH3-128 of method, target and body): a
/// repeat must match it to be answered from the record. Not a security
/// boundary: keys are scoped to the caller's credentials (see [`scope`]), so
/// only a caller can collide with itself.
pub fn fingerprint(method: &str, target: &str, body: &[u8]) -> u128 {
    let mut h = xxhash_rust::xxh3::Xxh3::new();
    h.update(method.as_bytes());
    h.update(b" ");
    h.update(target.as_bytes());
    h.update(b"\n");
    h.update(body);
    h.digest128()
}

/// A short, stable hash of a caller's credentials, to keep one caller's keys
/// apart from another's (an `Authorization` header, or nothing).
pub fn scope(credentials: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(credentials)
}

/// What a stored record means for a new claim with `fingerprint`.
fn judge(record: Record, fingerprint: u128) -> Claim {
    match record {
        Record::Pending { fingerprint: f, .. } if f == fingerprint => Claim::InFlight,
        Record::Done {
            fingerprint: f,
            response,
        } if f == fingerprint => Claim::Replay(response),
        _ => Claim::Mismatch,
    }
}

#[cfg(test)]
mod tests;
