//! Junction's response cache and payload trimming, as plain types the gateway calls.
//!
//! Why it exists: the gateway must cache rarely-changing upstream data (TTLs,
//! stale-while-revalidate, stale-if-error, tag invalidation), share that cache
//! between instances through Redis, collapse concurrent misses into one upstream
//! call, and trim JSON bodies to the fields a client asked for. None of that needs
//! an HTTP server, so it lives here, testable on its own.
//!
//! What it promises:
//! - The cache is an RFC 9111 shared cache: [`policy::storable`] decides what
//!   may be stored and for how long, [`CachedResponse::reuse`] whether a stored
//!   response may answer a request, [`Variants`] which stored response does.
//! - [`CacheKey::build`] never maps two requests the upstream could answer
//!   differently onto one key (normalisation only merges equivalent spellings).
//! - [`CacheStore`] backends ([`MemoryStore`], [`RedisStore`]) are bounded and fail
//!   fast: an unreachable backend answers [`CacheError::Unavailable`] within its
//!   timeout, and the gateway treats every error as a miss.
//! - [`Coalescer::run`] runs one computation per key at a time, and a cancelled
//!   leader never leaves waiters hanging.
//! - [`IdempotencyStore`] backends (memory, Redis) let exactly one of
//!   concurrent requests with one `Idempotency-Key` run, and replay its answer.
//! - [`FieldSet`] projection keeps exactly the requested paths and is cheap on
//!   large bodies (unselected parts are skipped without being built).

pub mod cache_control;
pub mod coalesce;
pub mod codec;
pub mod entry;
pub mod idempotency;
pub mod key;
pub mod policy;
pub mod project;
pub mod store;
pub mod tags;
pub mod variants;

pub use coalesce::Coalescer;
pub use codec::DecodeError;
pub use entry::{CachedResponse, Reuse};
pub use idempotency::{Claim, IdempotencyStore, MemoryIdempotency};
pub use key::CacheKey;
pub use project::{project_json_bytes, FieldSet, InvalidJson, ProjectionError};
pub use store::{
    CacheError, CacheStats, CacheStore, Invalidation, MemoryStore, RedisOptions, RedisStore,
};
pub use tags::render_tag;
pub use variants::Variants;
