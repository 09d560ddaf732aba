//! The embedded broker: a crash-safe on-disk queue in a directory, no server needed.
//!
//! Two stores, each for what it does best:
//! - **The journal** (`journal/`, an append-only segment log written by hand) makes
//!   the common case cheap: an event with subscribers and no ordering key is
//!   appended to it (with its idempotency key, whose redb record is then committed
//!   without fsync), and the whole batch of concurrent enqueues is made durable
//!   with one `fdatasync` before anyone gets an answer. The message then waits in
//!   memory (`hot.rs`, bounded) and is delivered from there; when every subscriber has
//!   it, a small completed record goes to redb. Acks on this path are journal appends.
//! - **redb** (a well-kept pure-Rust embedded key-value store: ACID transactions on
//!   copy-on-write B-trees, checksummed commits, crash and fuzz tested upstream) holds
//!   everything that needs indexes or history: retries and their due times, dead
//!   letters, per-key ordering chains, idempotency keys, completed records, counters.
//!   Idempotency records of journaled events are committed without fsync: a restart
//!   puts back any the journal has and redb lost.
//!   A hot message that needs any of that (a failed attempt, a dead letter, an old
//!   journal segment) is *spilled* into redb as an ordinary pending message
//!   (`spill.rs`), and redb's transactions take over.
//!
//! Why not redb alone: one durable redb commit rewrites the B-tree pages of every
//! table it touches; on a 2-core machine that capped durable accepts at ~12k/s, the
//! journal path takes them past 45k/s (see BENCHMARKS.md).
//!
//! A single writer thread (`writer.rs`) makes every change, in batches (group commit):
//! `enqueue` is durable when it returns, and throughput grows with concurrency. Acks,
//! retries and completed records are committed without fsync (at-least-once tolerates
//! losing them: a redelivery) and flushed within a second or two. After a crash,
//! `recovery.rs` moves every journaled message redb lacks into redb, then deletes the
//! old journal segments.
//!
//! Memory stays bounded whatever the backlog: the hot set has a cap (past it, enqueues
//! go straight to redb); redb's messages, due index and ordering chains live on disk;
//! memory holds per-topic counters, the leased set and one notifier per subscriber.
//! Storage format: see `tables.rs` (redb) and `journal/`.

mod behind;
mod guard;
mod hot;
mod instance;
mod journal;
mod ops;
mod read;
mod recovery;
mod spill;
mod state;
mod tables;
mod writer;

/// Entry points for the fuzz targets (`fuzz/`): the parts that read bytes a
/// crash or a disk may have mangled. Not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// Decodes a journal segment's bytes as start-up recovery does; returns
    /// how many records decoded before the first torn or corrupt one.
    pub fn decode_journal_segment(raw: &[u8]) -> usize {
        super::journal::decode_segment(raw)
    }
}

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, ArcSwapOption};
use async_trait::async_trait;
use tokio::sync::{oneshot, Notify};

use self::instance::{blocking, Instance};
use self::state::{Counters, MemState};
use self::writer::Op;
use crate::store::IndexedStore;
use crate::types::{
    AttemptRecord, DepthSnapshot, DlqAction, DlqFilter, DlqPage, EnqueueOutcome, EnqueueRequest,
    Lease, MessageStatus, QueueError, StorageError,
};

pub use self::hot::{MAX_BYTES as HOT_MAX_BYTES, MAX_MESSAGES as HOT_MAX_MESSAGES};
pub use self::recovery::DB_FILE;
pub use self::state::CommitStats;

/// Dead letters replayed per write transaction by `dlq_replay_all`.
const REPLAY_CHUNK: usize = 500;

/// Settings of the embedded broker.
#[derive(Clone, Debug)]
pub struct EmbeddedConfig {
    /// Directory holding the database file (`queue.redb`); created if missing.
    pub path: PathBuf,
    /// Most events waiting for one subscriber (its backlog); `None` or 0 means unlimited.
    pub max_depth: Option<u64>,
    /// What a subscriber whose backlog is full does with a new event.
    pub on_full: crate::types::OnFull,
    /// How long a completed message's record (states and history, no body) is kept.
    pub completed_retention: Duration,
    /// Most completed records kept, whatever their age: past it the oldest are
    /// dropped, so a sustained high rate cannot fill the disk within the retention
    /// (at 25k events/s an hour is 90 million records). Default [`MAX_COMPLETED`].
    pub max_completed: u64,
    /// Most messages held in memory on the fast path (more wait in the journal).
    pub hot_max_messages: usize,
    /// Most body bytes held in memory on the fast path.
    pub hot_max_bytes: usize,
}

impl EmbeddedConfig {
    /// Defaults: unlimited depth, completed records kept one hour (at most [`MAX_COMPLETED`]).
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            max_depth: None,
            on_full: crate::types::OnFull::Reject,
            completed_retention: Duration::from_secs(3600),
            max_completed: MAX_COMPLETED,
            hot_max_messages: HOT_MAX_MESSAGES,
            hot_max_bytes: HOT_MAX_BYTES,
        }
    }
}

/// Completed records kept at most by default: about 1 GB of queue file.
pub const MAX_COMPLETED: u64 = 1_000_000;

/// What the embedded queue gives: exact scheduling and counts, one instance.
pub const CAPABILITIES: crate::Capabilities = crate::Capabilities {
    ordering_per_key: true,
    exact_retry_delay: true,
    exact_depth: true,
    shared: false,
    message_status: true,
};

/// An [`IndexedStore`] on a local redb file with group commit.
///
/// Holds the current opening of the directory ([`Instance`]); after a write the
/// disk refused, `guard.rs` replaces it once the disk takes writes again.
pub struct EmbeddedBroker {
    cfg: EmbeddedConfig,
    /// The instance in service; `None` while it is being reopened.
    live: ArcSwapOption<Instance>,
    /// The latest instance's memory, kept while reopening (depth, notifiers).
    mem: ArcSwap<MemState>,
    closed: AtomicBool,
    /// Held by a reopen while it replaces the instance, and by `close`.
    switch: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for EmbeddedBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmbeddedBroker")
            .field("depth", &self.depth())
            .finish()
    }
}

impl EmbeddedBroker {
    /// This store as the queue contract.
    pub fn into_queue(self: Arc<Self>) -> crate::Queue {
        crate::store::adapter::queue("embedded", self, CAPABILITIES)
    }

    /// Opens (or creates) the queue and recovers its state; leases start empty, so
    /// everything pending is due again. Must be called inside a Tokio runtime.
    pub async fn open(cfg: EmbeddedConfig) -> Result<Arc<Self>, QueueError> {
        let inst = Instance::open(&cfg, None).await?;
        tracing::info!(path = %cfg.path.display(), depth = inst.mem.counters.read().total(), "embedded queue opened");
        let this = Arc::new(Self {
            cfg,
            mem: ArcSwap::new(Arc::clone(&inst.mem)),
            live: ArcSwapOption::from_pointee(inst),
            closed: AtomicBool::new(false),
            switch: tokio::sync::Mutex::new(()),
        });
        guard::spawn(Arc::downgrade(&this));
        Ok(this)
    }

    /// Makes every change so far durable (acks included).
    pub async fn flush(&self) -> Result<(), QueueError> {
        self.call(Op::Flush).await
    }

    /// Flushes and stops the writer; later writes fail with `Closed`, reads still work.
    /// The file is released when the last handle is dropped.
    pub async fn close(&self) -> Result<(), QueueError> {
        let _switch = self.switch.lock().await;
        self.closed.store(true, Ordering::Release);
        match self.live.load_full() {
            Some(inst) => inst.close().await,
            None => Ok(()),
        }
    }

    /// Recomputes the depth counters from the stored records and checks every index
    /// invariant (a consistency check; reads the whole database). Equal to
    /// [`IndexedStore::depth`] when the counters are right.
    pub async fn verify(&self) -> Result<DepthSnapshot, QueueError> {
        let inst = self.instance()?;
        let db = Arc::clone(&inst.db);
        let mut counters = blocking(move || recovery::verify(&db)).await?;
        let mem = &inst.mem;
        for (topic, n) in mem.hot.lock().depth() {
            Counters::add(&mut counters.depth, topic, *n as i64);
        }
        for (sub, n) in mem.hot.lock().owed() {
            Counters::add(&mut counters.backlog, sub, *n as i64);
        }
        if let Some(o) = &*mem.overflow.lock() {
            for (topic, n) in &o.depth {
                Counters::add(&mut counters.depth, topic, *n as i64);
            }
            for (sub, n) in &o.subs {
                Counters::add(&mut counters.backlog, sub, *n as i64);
            }
        }
        // Topics the live counters still list at zero are listed at zero here too.
        let live = mem.counters.read().clone();
        for topic in live.depth.keys() {
            counters.depth.entry(topic.clone()).or_insert(0);
        }
        for topic in live.dlq.keys() {
            counters.dlq.entry(topic.clone()).or_insert(0);
        }
        for sub in live.backlog.keys() {
            counters.backlog.entry(sub.clone()).or_insert(0);
        }
        Ok(counters.snapshot())
    }

    /// What the writer has committed so far (group commit shows as `ops` > `fsyncs`).
    pub fn commit_stats(&self) -> CommitStats {
        *self.mem.load().commit_stats.lock()
    }

    fn closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// The instance in service, or why there is none.
    fn instance(&self) -> Result<Arc<Instance>, QueueError> {
        self.live.load_full().ok_or_else(|| {
            unavailable("the embedded queue is being reopened after its disk refused a write")
        })
    }

    async fn call<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, QueueError>>) -> Op,
    ) -> Result<T, QueueError> {
        self.instance()?.call(make).await
    }

    async fn read<T: Send + 'static>(
        &self,
        f: impl FnOnce(&redb::Database, &MemState) -> tables::Res<T> + Send + 'static,
    ) -> Result<T, QueueError> {
        self.instance()?.read(f).await
    }
}

fn unavailable(why: &str) -> QueueError {
    QueueError::Storage(StorageError::new(
        "embedded queue",
        std::io::Error::other(why.to_owned()),
    ))
}

#[async_trait]
impl IndexedStore for EmbeddedBroker {
    /// Fails while a write the disk refused is not recovered from (see `guard.rs`).
    async fn health(&self) -> Result<(), QueueError> {
        match self.instance()?.mem.fault() {
            Some(f) => Err(unavailable(&format!(
                "the queue's disk refused a write: {}",
                f.error
            ))),
            None => Ok(()),
        }
    }

    async fn enqueue(&self, req: EnqueueRequest) -> Result<EnqueueOutcome, QueueError> {
        let inst = self.instance()?;
        if inst.mem.refusing() {
            return Err(unavailable(
                "the queue directory was removed while in use; new events are refused until what was pending is delivered",
            ));
        }
        inst.call(|reply| Op::Enqueue(req, reply)).await
    }

    async fn lease_due(
        &self,
        subscriber: &str,
        now_ms: u64,
        max: usize,
    ) -> Result<Vec<Lease>, QueueError> {
        // redb first (older, retried and ordered messages), then the fast path.
        let inst = self.instance()?;
        let state = inst.mem.subscriber(subscriber);
        let mut out = if state.may_have_cold() {
            let sub = subscriber.to_owned();
            inst.read(move |db, mem| read::lease_due(db, mem, &sub, now_ms, max))
                .await?
        } else {
            Vec::new()
        };
        if out.len() < max {
            let mut leases = state.leases();
            let mut hot = inst.mem.hot.lock();
            hot.lease(subscriber, &mut leases, max - out.len(), &mut out);
        }
        Ok(out)
    }

    async fn next_due_at(&self, subscriber: &str) -> Result<Option<u64>, QueueError> {
        let inst = self.instance()?;
        let state = inst.mem.subscriber(subscriber);
        if inst.mem.hot.lock().has_unleased(subscriber) {
            return Ok(Some(0));
        }
        if !state.may_have_cold() {
            return Ok(None);
        }
        let sub = subscriber.to_owned();
        inst.read(move |db, mem| read::next_due_at(db, mem, &sub))
            .await
    }

    async fn ack(&self, d: &Lease, attempt: AttemptRecord) -> Result<(), QueueError> {
        let (id, sub) = (d.message.id.as_str().to_owned(), d.subscriber.clone());
        self.call(|reply| Op::Ack {
            id,
            sub,
            attempt,
            reply: Some(reply),
        })
        .await
    }

    async fn ack_queued(&self, d: &Lease, attempt: AttemptRecord) -> Result<(), QueueError> {
        let op = Op::Ack {
            id: d.message.id.as_str().to_owned(),
            sub: d.subscriber.clone(),
            attempt,
            reply: None,
        };
        self.instance()?.send(op).await
    }

    async fn retry_later(
        &self,
        d: &Lease,
        attempt: AttemptRecord,
        next_attempt_at_ms: u64,
    ) -> Result<(), QueueError> {
        let (id, sub) = (d.message.id.as_str().to_owned(), d.subscriber.clone());
        self.call(|reply| Op::Retry {
            id,
            sub,
            attempt,
            next_at: next_attempt_at_ms,
            reply,
        })
        .await
    }

    async fn dead_letter(
        &self,
        d: &Lease,
        attempt: AttemptRecord,
        reason: String,
    ) -> Result<(), QueueError> {
        let (id, sub) = (d.message.id.as_str().to_owned(), d.subscriber.clone());
        self.call(|reply| Op::Dead {
            id,
            sub,
            attempt,
            reason,
            reply,
        })
        .await
    }

    async fn release(&self, d: &Lease) {
        let (id, sub) = (d.message.id.as_str(), d.subscriber.as_str());
        // In this order: out of the lease set, back in the hot set's queue, then the
        // wake-up. The other way round, a lease in between would find it queued but
        // still leased.
        let Some(inst) = self.live.load_full() else {
            return; // a reopen loads it again, unleased
        };
        inst.mem.unlease(sub, id, false);
        inst.mem.hot.lock().unlease(id, sub);
        inst.mem.wake(sub);
    }

    async fn message_status(&self, id: &str) -> Result<Option<MessageStatus>, QueueError> {
        // The hot lock is released before lease sets are looked at (lock order:
        // a lease set, then the hot set).
        let inst = self.instance()?;
        let hot = inst.mem.hot.lock().status(id);
        if let Some(mut st) = hot {
            for s in &mut st.subscribers {
                s.leased = s.next_attempt_at_ms.is_some()
                    && inst
                        .mem
                        .existing_subscriber(&s.subscriber)
                        .is_some_and(|state| state.leases().contains(id));
            }
            return Ok(Some(st));
        }
        let owned = id.to_owned();
        let stored = inst
            .read(move |db, mem| read::message_status(db, mem, &owned))
            .await?;
        if stored.is_some() {
            return Ok(stored);
        }
        // Not hot, not in redb: maybe overflowed, still only in the journal.
        let Some(cursor) = inst.mem.overflow.lock().as_ref().map(|o| o.cursor) else {
            return Ok(None);
        };
        let (dir, owned) = (self.cfg.path.clone(), id.to_owned());
        let found = blocking(move || journal::find_enq(&dir, cursor, &owned)).await?;
        Ok(found.map(|jm| hot::status_of(&writer::fastpath::hot_message(jm, 0), None)))
    }

    async fn dlq_list(
        &self,
        filter: DlqFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<DlqPage, QueueError> {
        self.read(move |db, _| read::dlq_list(db, &filter, after.as_deref(), limit))
            .await
    }

    async fn dlq_apply(&self, dead_letter_id: &str, action: DlqAction) -> Result<(), QueueError> {
        let ids = vec![dead_letter_id.to_owned()];
        match self
            .call(|reply| Op::DeadLetters(action, ids, reply))
            .await?
        {
            0 => Err(QueueError::NotFound),
            _ => Ok(()),
        }
    }

    async fn dlq_apply_all(&self, filter: DlqFilter, action: DlqAction) -> Result<u64, QueueError> {
        // Stop at the newest dead letter of now, so ones dying meanwhile are left alone.
        let Some(upto) = self.read(|db, _| read::dlq_last(db)).await? else {
            return Ok(0);
        };
        let (mut after, mut total) = (None::<String>, 0u64);
        loop {
            let (f, a, u) = (filter.clone(), after.clone(), upto.clone());
            let (ids, next) = self
                .read(move |db, _| read::dlq_ids(db, &f, a.as_deref(), &u, REPLAY_CHUNK))
                .await?;
            if ids.is_empty() {
                return Ok(total);
            }
            after = ids.last().cloned();
            total += self
                .call(|reply| Op::DeadLetters(action, ids, reply))
                .await?;
            if next.is_none() {
                return Ok(total);
            }
        }
    }

    fn depth(&self) -> DepthSnapshot {
        self.mem.load().counters.read().snapshot()
    }

    fn notifier(&self, subscriber: &str) -> Arc<Notify> {
        self.mem.load().subscriber(subscriber).notifier()
    }

    async fn close(&self) -> Result<(), QueueError> {
        EmbeddedBroker::close(self).await
    }
}
