//! The single writer of the embedded queue: group commit.
//!
//! Every state change is an [`Op`] sent over a bounded channel to one writer task.
//! The writer takes the first waiting op, drains whatever else is queued (up to
//! [`MAX_BATCH_OPS`] ops / [`MAX_BATCH_BYTES`] of bodies), applies them all in one
//! redb write transaction and commits once. While a batch is being fsynced, new
//! requests pile up in the channel and form the next batch, so under load the cost
//! of one fsync is shared by many enqueues; with a single caller it is one fsync per
//! enqueue, as it must be.
//!
//! Durability per batch:
//! - a batch holding an enqueue, a replay or a flush commits with
//!   `Durability::Immediate` (fsync) before any caller is answered: `Ok` means durable;
//! - a batch of only acks / retries / dead-letters commits with `Durability::None`
//!   (visible to readers at once, persisted by the next durable commit). Losing one in
//!   a crash only causes a redelivery, which at-least-once allows. A durable commit
//!   follows at the latest [`FLUSH_EVERY`] after the last one while busy, or after
//!   [`FLUSH_EVERY`] of idleness, so at most about two seconds of acks are at risk.
//!   (redb frees pages only on durable commits, which these periodic commits provide.)
//!
//! In-memory effects (counters, dropped leases, wake-ups) are applied only after the
//! commit succeeds, so memory never runs ahead of disk. If a batch fails, each op is
//! retried alone so one bad op cannot fail its neighbours.

use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Database, Durability};
use tokio::sync::{mpsc, oneshot};

use super::ops::{Batch, Finish};
use super::state::{now_ms, Counters, IdGen, MemState};
use super::tables::Res;
use crate::broker::{AttemptRecord, EnqueueOutcome, EnqueueRequest, QueueError, StorageError};

/// Most ops committed in one transaction.
pub(crate) const MAX_BATCH_OPS: usize = 1024;
/// Most body bytes committed in one transaction (a batch always takes at least one op).
pub(crate) const MAX_BATCH_BYTES: usize = 32 << 20;
/// Longest time non-fsynced commits (acks, retries) stay unflushed.
pub(crate) const FLUSH_EVERY: Duration = Duration::from_secs(1);
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
        reply: Reply<()>,
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
    /// Replays dead letters; answers how many existed.
    Replay(Vec<String>, Reply<u64>),
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
    fn needs_fsync(&self) -> bool {
        matches!(
            self,
            Op::Enqueue(..) | Op::Replay(..) | Op::Flush(_) | Op::Close(_)
        )
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
            (Op::Replay(_, r), Ok(Answer::Count(n))) => drop(r.send(Ok(n))),
            (Op::Enqueue(_, r), Err(e)) => drop(r.send(Err(e))),
            (Op::Replay(_, r), Err(e)) => drop(r.send(Err(e))),
            (
                Op::Ack { reply, .. }
                | Op::Retry { reply, .. }
                | Op::Dead { reply, .. }
                | Op::Flush(reply)
                | Op::Close(reply),
                res,
            ) => drop(reply.send(res.map(|_| ()))),
            (Op::Enqueue(_, r), Ok(_)) => drop(r.send(Err(internal("enqueue answer")))),
            (Op::Replay(_, r), Ok(_)) => drop(r.send(Err(internal("replay answer")))),
        }
    }
}

fn internal(what: &str) -> QueueError {
    QueueError::Storage(StorageError::new(
        "embedded writer",
        std::io::Error::other(format!("mismatched {what}")),
    ))
}

/// The writer's own state: the committed counters and sequence, the id source.
pub(crate) struct Core {
    pub db: Arc<Database>,
    pub mem: Arc<MemState>,
    pub counters: Counters,
    pub seq: u64,
    pub ids: IdGen,
    pub max_depth: Option<u64>,
    pub retention_ms: u64,
    dirty: bool,
    last_durable: Instant,
    last_prune: Instant,
    prune_backlog: bool,
}

impl Core {
    /// A writer starting from the recovered state.
    pub fn new(
        db: Arc<Database>,
        mem: Arc<MemState>,
        counters: Counters,
        seq: u64,
        ids: IdGen,
    ) -> Self {
        Self {
            db,
            mem,
            counters,
            seq,
            ids,
            max_depth: None,
            retention_ms: 0,
            dirty: false,
            last_durable: Instant::now(),
            last_prune: Instant::now(),
            prune_backlog: true,
        }
    }

    /// Applies ops as one batch and answers each caller.
    fn process(&mut self, ops: Vec<Op>) {
        match self.commit(&ops) {
            Ok(answers) => ops
                .into_iter()
                .zip(answers)
                .for_each(|(op, a)| op.answer(Ok(a))),
            Err(e) if ops.len() > 1 => {
                tracing::warn!(error = %e, ops = ops.len(), "queue batch failed; retrying its ops one by one");
                for op in ops {
                    let res = self.commit(std::slice::from_ref(&op));
                    op.answer(
                        res.map_err(storage)
                            .and_then(|mut a| a.pop().ok_or_else(|| internal("answer"))),
                    );
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "queue commit failed");
                let e = storage(e);
                ops.into_iter().for_each(|op| op.answer(Err(e.clone())));
            }
        }
    }

    /// One write transaction for `ops` (plus pruning and flushing when due).
    fn commit(&mut self, ops: &[Op]) -> Res<Vec<Answer>> {
        let now = now_ms();
        let durable = ops.iter().any(Op::needs_fsync)
            || (self.dirty && (ops.is_empty() || self.last_durable.elapsed() >= FLUSH_EVERY));
        let prune = self.prune_backlog || self.last_prune.elapsed() >= PRUNE_EVERY;
        let mut txn = self.db.begin_write()?;
        txn.set_durability(if durable {
            Durability::Immediate
        } else {
            Durability::None
        });
        let mut batch = Batch::open(&txn, now, self.counters.clone(), self.seq)?;
        let mut answers = Vec::with_capacity(ops.len());
        for op in ops {
            answers.push(match op {
                Op::Enqueue(req, _) => {
                    Answer::Enqueue(batch.enqueue(req, &mut self.ids, self.max_depth)?)
                }
                Op::Ack {
                    id, sub, attempt, ..
                } => {
                    batch.finish_delivery(id, sub, attempt, Finish::Delivered)?;
                    Answer::Unit
                }
                Op::Retry {
                    id,
                    sub,
                    attempt,
                    next_at,
                    ..
                } => {
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
                    batch.finish_delivery(id, sub, attempt, Finish::Dead(reason))?;
                    Answer::Unit
                }
                Op::Replay(dl_ids, _) => {
                    let mut n = 0;
                    for dl_id in dl_ids {
                        n += u64::from(batch.replay(dl_id)?);
                    }
                    Answer::Count(n)
                }
                Op::Flush(_) | Op::Close(_) => Answer::Unit,
            });
        }
        let more = if prune {
            Some(batch.prune(self.retention_ms, PRUNE_LIMIT)?)
        } else {
            None
        };
        let done = batch.finish()?;
        if ops.is_empty() && !done.changed && !durable {
            // Idle tick with nothing to prune or flush: abort instead of committing.
            return Ok(answers);
        }
        txn.commit()?;
        // Committed: publish to memory, in this order, before anyone is answered.
        if let Some(more) = more {
            self.prune_backlog = more;
            self.last_prune = Instant::now();
        }
        if durable {
            self.dirty = false;
            self.last_durable = Instant::now();
        } else {
            self.dirty = true;
        }
        {
            let mut stats = self.mem.commit_stats.lock();
            stats.commits += 1;
            stats.fsyncs += u64::from(durable);
            stats.ops += ops.len() as u64;
        }
        self.counters = done.counters;
        self.seq = done.seq;
        *self.mem.counters.write() = self.counters.clone();
        for (sub, id) in &done.effects.unlease {
            self.mem.unlease(sub, id, false);
        }
        for sub in &done.effects.wake {
            self.mem.wake(sub);
        }
        Ok(answers)
    }
}

/// Maps an internal failure to the public error, keeping the cause.
pub(crate) fn storage(e: super::tables::EmbeddedError) -> QueueError {
    QueueError::Storage(StorageError::new("embedded queue", e))
}

/// The writer task: batches ops from `rx` until closed, then flushes durably.
pub(crate) async fn run(core: Core, mut rx: mpsc::Receiver<Op>) {
    let mut core = Some(core);
    loop {
        let mut ops = Vec::new();
        match tokio::time::timeout(FLUSH_EVERY, rx.recv()).await {
            Ok(Some(op)) => ops.push(op),
            Ok(None) => break,
            Err(_idle) => {}
        }
        let mut bytes = ops.first().map_or(0, Op::body_len);
        while ops.len() < MAX_BATCH_OPS && bytes < MAX_BATCH_BYTES {
            match rx.try_recv() {
                Ok(op) => {
                    bytes += op.body_len();
                    ops.push(op);
                }
                Err(_) => break,
            }
        }
        let closing = ops.iter().any(|op| matches!(op, Op::Close(_)));
        let Some(mut c) = core.take() else { break };
        match tokio::task::spawn_blocking(move || {
            c.process(ops);
            c
        })
        .await
        {
            Ok(c) => core = Some(c),
            Err(e) => {
                // Callers of the lost batch see `Closed`; the next open recovers from disk.
                tracing::error!(error = %e, "queue writer panicked; queue closed");
                return;
            }
        }
        if closing {
            rx.close();
            break;
        }
    }
    // Answer whatever raced with close, then make everything durable.
    let Some(mut c) = core else { return };
    let mut rest = Vec::new();
    while let Ok(op) = rx.try_recv() {
        rest.push(op);
    }
    let flushed = tokio::task::spawn_blocking(move || {
        if !rest.is_empty() || c.dirty {
            let (tx, _rx) = oneshot::channel();
            rest.push(Op::Flush(tx));
            c.process(rest);
        }
    })
    .await;
    if let Err(e) = flushed {
        tracing::error!(error = %e, "queue final flush panicked");
    }
}
