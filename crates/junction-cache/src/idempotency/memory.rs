//! In-process idempotency records, for a single Junction.
//!
//! Why not moka (as the response cache): moka may decline to admit an entry
//! when full (TinyLFU) and evicts by its own choice, and a dropped record here
//! means a request runs twice. So this is a map with an exact expiry index:
//! records leave only when their time is up, and when the bounds are reached a
//! new claim is refused ([`CacheError::Unavailable`], which the gateway answers
//! with 503) instead of forgetting an older one.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::time::Instant;

use super::{judge, Claim, IdempotencyStore, Record, Token};
use crate::entry::CachedResponse;
use crate::store::CacheError;

/// Records held at most, by default.
pub const DEFAULT_MAX_RECORDS: usize = 1_000_000;
/// Bytes held at most (stored answers included), by default.
pub const DEFAULT_MAX_BYTES: u64 = 256 << 20;

/// In-process [`IdempotencyStore`], bounded by records and bytes.
#[derive(Debug)]
pub struct MemoryIdempotency {
    max_records: usize,
    max_bytes: u64,
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    slots: HashMap<String, Slot>,
    /// (expiry, sequence) -> key, oldest first.
    expiry: BTreeMap<(Instant, u64), String>,
    bytes: u64,
    next_seq: u64,
}

#[derive(Debug)]
struct Slot {
    record: Record,
    expires: Instant,
    seq: u64,
    size: u64,
}

impl Default for MemoryIdempotency {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_RECORDS, DEFAULT_MAX_BYTES)
    }
}

impl MemoryIdempotency {
    /// A store holding at most `max_records` records and `max_bytes` bytes.
    pub fn new(max_records: usize, max_bytes: u64) -> Self {
        Self {
            max_records: max_records.max(1),
            max_bytes,
            state: Mutex::new(State::default()),
        }
    }

    /// Records currently held (expired ones included until the next call sweeps them).
    pub fn len(&self) -> usize {
        self.state.lock().slots.len()
    }

    /// Whether no record is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl State {
    /// Drops every record whose time is up.
    fn sweep(&mut self, now: Instant) {
        while let Some(entry) = self.expiry.first_entry() {
            if entry.key().0 > now {
                break;
            }
            let key = entry.remove();
            if let Some(slot) = self.slots.remove(&key) {
                self.bytes -= slot.size;
            }
        }
    }

    /// The live record of `key`.
    fn get(&self, key: &str, now: Instant) -> Option<&Record> {
        self.slots
            .get(key)
            .filter(|s| s.expires > now)
            .map(|s| &s.record)
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.slots.remove(key) {
            self.expiry.remove(&(old.expires, old.seq));
            self.bytes -= old.size;
        }
    }

    fn put(&mut self, key: &str, record: Record, expires: Instant) {
        self.remove(key);
        let seq = self.next_seq;
        self.next_seq += 1;
        let size = record.size_bytes() + key.len() as u64;
        self.bytes += size;
        self.expiry.insert((expires, seq), key.to_owned());
        self.slots.insert(
            key.to_owned(),
            Slot {
                record,
                expires,
                seq,
                size,
            },
        );
    }

    /// Whether `token` holds `key` with `fingerprint` right now.
    fn held_by(&self, key: &str, fingerprint: u128, token: Token, now: Instant) -> bool {
        matches!(
            self.get(key, now),
            Some(Record::Pending { fingerprint: f, token: t }) if *f == fingerprint && *t == token
        )
    }
}

fn full(what: &str) -> CacheError {
    CacheError::Unavailable {
        backend: "memory",
        source: format!(
            "idempotency store is full ({what}); refusing new keys until records expire"
        )
        .into(),
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotency {
    async fn claim(
        &self,
        key: &str,
        fingerprint: u128,
        token: Token,
        lock_for: Duration,
    ) -> Result<Claim, CacheError> {
        let now = Instant::now();
        let mut state = self.state.lock();
        state.sweep(now);
        if let Some(record) = state.get(key, now) {
            return Ok(judge(record.clone(), fingerprint));
        }
        if state.slots.len() >= self.max_records {
            return Err(full("records"));
        }
        if state.bytes >= self.max_bytes {
            return Err(full("bytes"));
        }
        state.put(key, Record::Pending { fingerprint, token }, now + lock_for);
        Ok(Claim::Owner)
    }

    async fn complete(
        &self,
        key: &str,
        fingerprint: u128,
        token: Token,
        response: &CachedResponse,
        keep_for: Duration,
    ) -> Result<bool, CacheError> {
        let now = Instant::now();
        let mut state = self.state.lock();
        if !state.held_by(key, fingerprint, token, now) {
            return Ok(false);
        }
        let record = Record::Done {
            fingerprint,
            response: response.clone(),
        };
        state.put(key, record, now + keep_for);
        Ok(true)
    }

    async fn release(&self, key: &str, fingerprint: u128, token: Token) -> Result<(), CacheError> {
        let now = Instant::now();
        let mut state = self.state.lock();
        if state.held_by(key, fingerprint, token, now) {
            state.remove(key);
        }
        Ok(())
    }
}
