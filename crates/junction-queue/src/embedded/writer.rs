//! The single writer of the embedded queue: group commit.
//!
//! Every state change is an [`Op`] sent over a bounded channel to one writer thread.
//! The writer takes the first waiting op, drains whatever else is queued (up to
//! [`MAX_BATCH_OPS`] ops / [`MAX_BATCH_BYTES`] of bodies), applies them all in one
//! redb write transaction and commits once. While a batch is being fsynced, new
//! requests pile up in the channel and form the next batch, so under load the cost
//! of one fsync is shared by many enqueues; with a single caller it is one fsync per
//! enqueue, as it must be.
//!
//! Durability per batch:
//! - fast-path enqueues (see `hot.rs`) are appended to the journal, which is written
//!   and `fdatasync`ed once for the batch before any caller is answered; they become
//!   hot (visible to leasing) only after that sync;
//! - a batch holding a redb enqueue, a replay or a flush commits with
//!   `Durability::Immediate` (fsync) before any caller is answered: `Ok` means durable;
//! - a batch of only acks / retries / dead-letters commits with `Durability::None`
//!   (visible to readers at once, persisted by the next durable commit). Losing one in
//!   a crash only causes a redelivery, which at-least-once allows. A durable commit
//!   follows at the latest [`DURABLE_EVERY`] after the last one while busy, or after
//!   [`FLUSH_EVERY`] of idleness, so at most about a second of acks is at risk.
//!   (redb frees pages only on durable commits, which these periodic commits provide.)
//!
//! In-memory effects (counters, dropped leases, wake-ups) are applied only after the
//! commit succeeds, so memory never runs ahead of disk. (Exception: an ack of a hot
//! message is recorded in the hot set at once; if its batch then fails, the message is
//! delivered anyway and only its completed record is missing.) If a batch fails, each
//! op is retried alone so one bad op cannot fail its neighbours.
//!
//! Journal segments are deleted only after a durable redb commit that follows the
//! moment none of their messages was hot any more (spilled or completed records are in
//! redb by then), so a crash never finds a message in neither store.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, Durability};
use tokio::sync::{mpsc, oneshot};

pub(super) mod fastpath;
pub(super) mod limits;

use super::behind::BehindSegments;
use super::hot::{HotAck, HotMessage};
use super::journal::Journal;
use super::ops::{Batch, Finish};
use super::state::{now_ms, Counters, IdGen, MemState};
use super::tables::{DiskFault, EmbeddedError, Res};
use crate::types::{
    AttemptRecord, DlqAction, EnqueueOutcome, EnqueueRequest, QueueError, StorageError,
};
use fastpath::{FastPath, Overflow};
use limits::{Admit, BacklogLimit};

/// Most ops committed in one transaction.
pub(crate) const MAX_BATCH_OPS: usize = 1024;
/// Most body bytes committed in one transaction (a batch always takes at least one op).
pub(crate) const MAX_BATCH_BYTES: usize = 32 << 20;
/// When a batch would hold nothing but acks no one waits for, and fewer than
/// [`LINGER_BELOW`] of them, the writer first lets more gather for this long.
///
/// Why: while deliveries drain a backlog, acks arrive one by one from the delivery
/// threads and a batch held 7 to 22 of them (strace), so the per-batch work (opening
/// the tables, committing, publishing counters) cost more than the acks. Nobody
/// waits for these answers ([`ack_queued`](crate::IndexedStore::ack_queued)); the
/// messages stay leased meanwhile, so the linger delays nothing but the
/// bookkeeping. A batch holding an enqueue or an awaited op never lingers; an
/// enqueue arriving during a linger waits for it, at most this long (accept
/// latency while delivering did not grow in BENCHMARKS §2).
const LINGER: Duration = Duration::from_millis(1);
/// See [`LINGER`].
const LINGER_BELOW: usize = 256;
/// Longest time non-fsynced commits (acks, retries) stay unflushed.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// While busy, a durable commit follows the last one after this long: small and
/// frequent, because a durable commit holds the writer for as long as its fsync of
/// everything dirty takes (at 1 s it was 60 ms with idempotency keys at 45k/s).
const DURABLE_EVERY: Duration = Duration::from_millis(100);
/// How often completed records and idempotency keys are pruned.
const PRUNE_EVERY: Duration = Duration::from_secs(1);
/// Most records of each kind pruned per batch.
const PRUNE_LIMIT: usize = 1000;

type Reply<T> = oneshot::Sender<Result<T, QueueError>>;

/// A request to the writer.
pub(crate) enum Op {
    Enqueue(EnqueueRequest, Reply<EnqueueOutcome>),
    Ack {
        id: String,
        sub: String,
        attempt: AttemptRecord,
        /// `None` for [`ack_queued`](crate::IndexedStore::ack_queued): no one waits.
        reply: Option<Reply<()>>,
    },
    Retry {
        id: String,
        sub: String,
        attempt: AttemptRecord,
        next_at: u64,
        reply: Reply<()>,
    },
    Dead {
        id: String,
        sub: String,
        attempt: AttemptRecord,
        reason: String,
        reply: Reply<()>,
    },
    /// Replays or purges dead letters; answers how many existed.
    DeadLetters(DlqAction, Vec<String>, Reply<u64>),
    /// Durable commit of everything so far.
    Flush(Reply<()>),
    /// Durable commit, then the writer stops.
    Close(Reply<()>),
}

/// What an op produced, before it is sent back.
enum Answer {
    Enqueue(Result<EnqueueOutcome, QueueError>),
    Unit,
    Count(u64),
}

impl Op {
    /// Whether the op needs a durable redb commit (fast-path enqueues need only the
    /// journal's sync, decided per op in `commit`).
    fn needs_fsync(&self) -> bool {
        matches!(self, Op::DeadLetters(..) | Op::Flush(_) | Op::Close(_))
    }

    /// An ack whose caller does not wait for the answer.
    fn is_unawaited_ack(&self) -> bool {
        matches!(self, Op::Ack { reply: None, .. })
    }

    fn body_len(&self) -> usize {
        match self {
            Op::Enqueue(req, _) => req.body.len(),
            _ => 0,
        }
    }

    fn answer(self, result: Result<Answer, QueueError>) {
        // A caller that went away does not care about its answer.
        match (self, result) {
            (Op::Enqueue(_, r), Ok(Answer::Enqueue(res))) => drop(r.send(res)),
            (Op::DeadLetters(_, _, r), Ok(Answer::Count(n))) => drop(r.send(Ok(n))),
            (Op::Enqueue(_, r), Err(e)) => drop(r.send(Err(e))),
            (Op::DeadLetters(_, _, r), Err(e)) => drop(r.send(Err(e))),
            (Op::Ack { reply: Some(r), .. }, res) => drop(r.send(res.map(|_| ()))),
            (Op::Ack { reply: None, .. }, Ok(_)) => {}
            (
                Op::Ack {
                    reply: None,
                    id,
                    sub,
                    ..
                },
                Err(e),
            ) => {
                tracing::warn!(%id, subscriber = %sub, error = %e, "could not record an ack; the message will be delivered again");
            }
            (
                Op::Retry { reply, .. }
                | Op::Dead { reply, .. }
                | Op::Flush(reply)
                | Op::Close(reply),
                res,
            ) => drop(reply.send(res.map(|_| ()))),
            (Op::Enqueue(_, r), Ok(_)) => drop(r.send(Err(internal("enqueue answer")))),
            (Op::DeadLetters(_, _, r), Ok(_)) => drop(r.send(Err(internal("replay answer")))),
        }
    }
}

fn internal(what: &str) -> QueueError {
    QueueError::Storage(StorageError::new(
        "embedded writer",
        std::io::Error::other(format!("mismatched {what}")),
    ))
}

/// The writer's own state: the committed counters and sequence, the id source, the journal.
pub(crate) struct Core {
    pub db: Arc<Database>,
    pub mem: Arc<MemState>,
    pub counters: Counters,
    pub seq: u64,
    pub ids: IdGen,
    /// Per-subscriber backlog limit (`max_depth`), if any.
    pub limit: Option<BacklogLimit>,
    pub retention_ms: u64,
    /// Most completed records kept (the oldest go first past it).
    pub max_completed: u64,
    pub(super) journal: Journal,
    /// Journal segments no hot message uses any more: deleted after the next durable commit.
    pub(super) retiring: Vec<u64>,
    /// Completed hot messages whose records are not in redb yet (parked in the hot set).
    pub(super) unrecorded: Vec<(Arc<HotMessage>, u64)>,
    pub(super) unrecorded_since: Instant,
    /// Journaled messages not in memory because the hot set was full.
    pub overflow: Option<Overflow>,
    dirty: bool,
    last_durable: Instant,
    last_prune: Instant,
    prune_backlog: bool,
    /// Since when old journal segments have held hot messages.
    pub(super) behind: BehindSegments,
}

impl Core {
    /// A writer starting from the recovered state.
    pub fn new(
        db: Arc<Database>,
        mem: Arc<MemState>,
        counters: Counters,
        seq: u64,
        ids: IdGen,
        journal: Journal,
    ) -> Self {
        Self {
            db,
            mem,
            counters,
            seq,
            ids,
            limit: None,
            retention_ms: 0,
            max_completed: u64::MAX,
            journal,
            retiring: Vec::new(),
            unrecorded: Vec::new(),
            unrecorded_since: Instant::now(),
            overflow: None,
            dirty: false,
            last_durable: Instant::now(),
            last_prune: Instant::now(),
            prune_backlog: true,
            behind: BehindSegments::default(),
        }
    }

    /// Applies ops as one batch and answers each caller.
    fn process(&mut self, ops: Vec<Op>) {
        match self.commit(&ops) {
            Ok(answers) => ops
                .into_iter()
                .zip(answers)
                .for_each(|(op, a)| op.answer(Ok(a))),
            Err(e) if ops.len() > 1 && e.disk_fault() == Some(DiskFault::Database) => {
                // redb takes no write until reopened: retrying each op would only
                // repeat the error (and log it) once per op.
                self.note_fault(&e);
                let e = storage(e);
                ops.into_iter().for_each(|op| op.answer(Err(e.clone())));
            }
            Err(e) if ops.len() > 1 => {
                tracing::warn!(error = %e, ops = ops.len(), "queue batch failed; retrying its ops one by one");
                self.note_fault(&e);
                for op in ops {
                    let res = self.commit(std::slice::from_ref(&op));
                    if let Err(e) = &res {
                        self.note_fault(e);
                    }
                    op.answer(
                        res.map_err(storage)
                            .and_then(|mut a| a.pop().ok_or_else(|| internal("answer"))),
                    );
                }
            }
            Err(e) => {
                self.note_fault(&e);
                let e = storage(e);
                ops.into_iter().for_each(|op| op.answer(Err(e.clone())));
            }
        }
    }

    /// Logs a failed commit; one the disk caused marks the queue unready until
    /// `guard.rs` sees the disk take writes again (logged once per fault, not per op).
    fn note_fault(&self, e: &EmbeddedError) {
        match e.disk_fault() {
            Some(kind) => {
                if self.mem.fault().is_none() {
                    tracing::error!(error = %error_chain(e), "the queue's disk refused a write; new events get 503 until it takes writes again");
                }
                self.mem.note_fault(kind, error_chain(e));
            }
            None => tracing::error!(error = %error_chain(e), "queue commit failed"),
        }
    }

    /// One write transaction for `ops` (plus pruning and flushing when due), and one
    /// journal write for the fast-path records among them. If it fails, what it took
    /// off the hot set goes back.
    fn commit(&mut self, ops: &[Op]) -> Res<Vec<Answer>> {
        let mut fast = FastPath::default();
        let res = self.commit_with(ops, &mut fast);
        if res.is_err() {
            for (sub, id) in fast.marked.drain(..) {
                self.mem.unlease(&sub, &id, true);
            }
            let mut hot = self.mem.hot.lock();
            for m in fast.spilled.drain(..) {
                hot.insert(m);
            }
            // Still parked in the hot set: recorded by a later batch.
            fast.recorded.append(&mut self.unrecorded);
            self.unrecorded = fast.recorded;
        }
        res
    }

    fn commit_with(&mut self, ops: &[Op], fast: &mut FastPath) -> Res<Vec<Answer>> {
        let now = now_ms();
        let mut durable = ops.iter().any(Op::needs_fsync)
            || (self.dirty && (ops.is_empty() || self.last_durable.elapsed() >= DURABLE_EVERY));
        let prune = self.prune_backlog || self.last_prune.elapsed() >= PRUNE_EVERY;
        let mut txn = self.db.begin_write()?;
        let mut batch = Batch::open(&txn, now, self.counters.clone(), self.seq)?;
        let mut answers = Vec::with_capacity(ops.len());
        for op in ops {
            answers.push(match op {
                Op::Enqueue(..) if self.mem.refusing() => {
                    // Decided here, in order with everything else the writer does,
                    // so no enqueue slips past a reopen (see `guard.rs`).
                    Answer::Enqueue(Err(QueueError::Storage(StorageError::new(
                        "embedded queue",
                        std::io::Error::other("the queue directory was removed while in use"),
                    ))))
                }
                Op::Enqueue(req, _) => match self.admit(req, fast, &mut batch)? {
                    Admit::Answer(res) => Answer::Enqueue(res),
                    Admit::Store(shed) => {
                        let hot = if shed.is_empty() {
                            self.enqueue_hot(req, now, fast, &mut batch)?
                        } else {
                            None // a dead letter is a redb record: the redb path
                        };
                        match hot {
                            Some(res) => Answer::Enqueue(res),
                            None => {
                                durable = true;
                                Answer::Enqueue(batch.enqueue(req, &mut self.ids, &shed)?)
                            }
                        }
                    }
                },
                Op::Ack {
                    id, sub, attempt, ..
                } => {
                    let acked = self.mem.hot.lock().ack(id, sub, attempt);
                    match acked {
                        HotAck::NotHot => {
                            batch.finish_delivery(id, sub, attempt, Finish::Delivered)?
                        }
                        HotAck::Ignored => batch.effects.unlease.push((sub.clone(), id.clone())),
                        HotAck::Recorded | HotAck::Completed(_) => {
                            self.journal.append_ack(id, sub);
                            batch.effects.unlease.push((sub.clone(), id.clone()));
                        }
                    }
                    if let HotAck::Completed(m) = acked {
                        // Its completed record is stored later, many per transaction.
                        let m = Arc::new(m);
                        self.mem.hot.lock().park_done(Arc::clone(&m), now);
                        if self.unrecorded.is_empty() {
                            self.unrecorded_since = Instant::now();
                        }
                        self.unrecorded.push((m, now));
                    }
                    Answer::Unit
                }
                Op::Retry {
                    id,
                    sub,
                    attempt,
                    next_at,
                    ..
                } => {
                    self.spill(&mut batch, fast, id)?;
                    batch.retry(id, sub, attempt, *next_at)?;
                    Answer::Unit
                }
                Op::Dead {
                    id,
                    sub,
                    attempt,
                    reason,
                    ..
                } => {
                    self.spill(&mut batch, fast, id)?;
                    batch.finish_delivery(id, sub, attempt, Finish::Dead(reason))?;
                    Answer::Unit
                }
                Op::DeadLetters(action, dl_ids, _) => {
                    let mut n = 0;
                    for dl_id in dl_ids {
                        n += u64::from(match action {
                            DlqAction::Replay => batch.replay(dl_id)?,
                            DlqAction::Purge => batch.purge(dl_id)?,
                        });
                    }
                    Answer::Count(n)
                }
                Op::Flush(_) | Op::Close(_) => Answer::Unit,
            });
        }
        let more = if prune {
            Some(batch.prune(self.retention_ms, self.max_completed, PRUNE_LIMIT)?)
        } else {
            None
        };
        // After the ops: acks may have left a subscriber with nothing hot to do.
        self.spill_stale(&mut batch, fast)?;
        self.record_completed(&mut batch, fast, durable || ops.is_empty())?;
        let done = batch.finish()?;
        // Fast-path enqueues are durable once the journal is synced; then redb.
        let base = self.journal.sync()?;
        self.note_journaled(fast, base);
        let retire_now = if durable {
            std::mem::take(&mut self.retiring)
        } else {
            Vec::new()
        };
        if ops.is_empty() && !done.changed && !durable {
            // Idle tick with nothing to prune or flush: abort instead of committing
            // (but let overflowed messages into any room the hot set has).
            self.publish_fast(fast, base);
            return Ok(answers);
        }
        if done.changed || durable {
            txn.set_durability(if durable {
                Durability::Immediate
            } else {
                Durability::None
            });
            if let Err(e) = txn.commit() {
                self.retiring.extend(retire_now);
                return Err(e.into());
            }
        }
        // Committed: publish to memory, in this order, before anyone is answered.
        if let Some(more) = more {
            self.prune_backlog = more;
            self.last_prune = Instant::now();
        }
        if durable {
            self.dirty = false;
            self.last_durable = Instant::now();
            self.journal.retire(&retire_now);
        } else {
            self.dirty |= done.changed;
        }
        {
            let mut stats = self.mem.commit_stats.lock();
            stats.commits += 1;
            stats.fsyncs += u64::from(durable || fast.journaled());
            stats.ops += ops.len() as u64;
        }
        self.counters = done.counters;
        self.seq = done.seq;
        self.publish_fast(fast, base);
        for (sub, id) in &done.effects.unlease {
            self.mem.unlease(sub, id, false);
        }
        for sub in &done.effects.wake {
            let state = self.mem.subscriber(sub);
            state.mark_cold();
            state.wake();
        }
        Ok(answers)
    }
}

/// `e` with its causes, `: `-separated.
fn error_chain(e: &EmbeddedError) -> String {
    let mut out = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Maps an internal failure to the public error, keeping the cause.
pub(crate) fn storage(e: super::tables::EmbeddedError) -> QueueError {
    QueueError::Storage(StorageError::new("embedded queue", e))
}

/// Name of the writer's thread.
const THREAD_NAME: &str = "junction-queue-writer";

/// Starts the writer on its own thread; the returned receiver resolves when it
/// has stopped (after `Close`, or once every sender is gone) and flushed.
///
/// Its own thread, not a task that hands each batch to `spawn_blocking`: a batch
/// blocks on redb and fsync anyway, and the hand-off cost two cross-thread
/// wake-ups per batch (measured: about a quarter of the writer's CPU while
/// draining deliveries). The thread runs a current-thread runtime only to wait
/// for ops with a timeout.
pub(crate) fn spawn(core: Core, rx: mpsc::Receiver<Op>) -> std::io::Result<oneshot::Receiver<()>> {
    let (done, stopped) = oneshot::channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name(THREAD_NAME.into())
        .spawn(move || {
            rt.block_on(run(core, rx));
            let _ = done.send(());
        })?;
    Ok(stopped)
}

/// Batches ops from `rx` until closed, then flushes durably.
async fn run(mut core: Core, mut rx: mpsc::Receiver<Op>) {
    loop {
        let mut ops = Vec::new();
        // The timer is set only when nothing waits (under load, never).
        match rx.try_recv() {
            Ok(op) => ops.push(op),
            Err(mpsc::error::TryRecvError::Disconnected) => break,
            Err(mpsc::error::TryRecvError::Empty) => {
                match tokio::time::timeout(FLUSH_EVERY, rx.recv()).await {
                    Ok(Some(op)) => ops.push(op),
                    Ok(None) => break,
                    Err(_idle) => {}
                }
            }
        }
        let mut bytes = ops.first().map_or(0, Op::body_len);
        drain_ready(&mut rx, &mut ops, &mut bytes);
        if !ops.is_empty() && ops.len() < LINGER_BELOW && ops.iter().all(Op::is_unawaited_ack) {
            // A plain sleep, not a wait on the channel: senders need not wake us.
            tokio::time::sleep(LINGER).await;
            drain_ready(&mut rx, &mut ops, &mut bytes);
        }
        let closing = ops.iter().any(|op| matches!(op, Op::Close(_)));
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| core.process(ops))) {
            // Callers of the lost batch see `Closed`; the next open recovers from disk.
            tracing::error!(
                panic = panic_message(&panic),
                "queue writer panicked; queue closed"
            );
            return;
        }
        if closing {
            rx.close();
            break;
        }
    }
    // Answer whatever raced with close, then make everything durable.
    let mut rest = Vec::new();
    while let Ok(op) = rx.try_recv() {
        rest.push(op);
    }
    if !rest.is_empty() || core.dirty {
        let (tx, _rx) = oneshot::channel();
        rest.push(Op::Flush(tx));
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| core.process(rest))) {
            tracing::error!(panic = panic_message(&panic), "queue final flush panicked");
        }
    }
}

/// Moves the ops already waiting in `rx` into `ops`, up to the batch limits.
fn drain_ready(rx: &mut mpsc::Receiver<Op>, ops: &mut Vec<Op>, bytes: &mut usize) {
    while ops.len() < MAX_BATCH_OPS && *bytes < MAX_BATCH_BYTES {
        match rx.try_recv() {
            Ok(op) => {
                *bytes += op.body_len();
                ops.push(op);
            }
            Err(_) => break,
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(no message)")
}
