//! Integration tests against real servers, in one binary to keep link time down.
//! Redis tests use REDIS_URL (default redis://127.0.0.1:6379) and a unique key
//! prefix per test, so they run in parallel and rerun cleanly.

mod idempotency;
mod redis_store;
