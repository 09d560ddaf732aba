//! The writer's fast-path work (see `hot.rs` and `journal/`): journaling enqueues,
//! overflowing into the journal alone when the hot set is full and loading those
//! messages back as room frees up, spilling hot messages into redb, and storing
//! completed records in batches.
//!
//! Overflow keeps accepts at journal speed and memory bounded under any backlog:
//! while the hot set is full, eligible enqueues are journaled and counted but not
//! kept in memory. They form one contiguous stretch of the journal — every `ENQ`
//! from the overflow cursor to the head — because once overflow starts, every later
//! fast-path enqueue overflows too until the cursor catches up. After each batch the
//! writer reads the next ones from the cursor into the hot set, oldest first.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Core;
use crate::embedded::behind;
use crate::embedded::hot::HotMessage;
use crate::embedded::journal::{JournalMessage, Pos};
use crate::embedded::ops::{distinct_subscribers, idem_expiry, Batch};
use crate::embedded::state::{Counters, OverflowSummary};
use crate::embedded::tables::Res;
use crate::types::{EnqueueOutcome, EnqueueRequest, MessageId, QueueError};

/// Most hot messages spilled per batch because their journal segment is old.
const SPILL_OLD_LIMIT: usize = 1000;
/// Completed records of hot messages are stored once this many wait...
const RECORD_BATCH: usize = 4096;
/// ...or the oldest has waited this long (or with any transaction that commits anyway).
const RECORD_EVERY: Duration = Duration::from_millis(100);
/// Most overflowed messages loaded back into the hot set per batch.
const LOAD_PER_BATCH: usize = 4096;

/// Journaled messages not held in memory: every `ENQ` from `cursor` to the head.
#[derive(Debug, Default)]
pub(crate) struct Overflow {
    pub cursor: Pos,
    pub count: u64,
    /// Per topic.
    pub depth: BTreeMap<String, u64>,
    /// Per subscriber.
    pub subs: BTreeMap<String, u64>,
}

impl Overflow {
    /// What the broker handle reads (cursor and counts).
    pub fn summary(&self) -> OverflowSummary {
        OverflowSummary {
            cursor: self.cursor,
            depth: self.depth.clone(),
            subs: self.subs.clone(),
        }
    }
}

/// Fast-path enqueues of the current batch per subscriber (not in any count yet).
#[derive(Debug, Default)]
pub(crate) struct BatchOwed(HashMap<String, u64>);

impl BatchOwed {
    pub fn add(&mut self, subs: &[String]) {
        for sub in subs {
            match self.0.get_mut(sub) {
                Some(n) => *n += 1,
                None => drop(self.0.insert(sub.clone(), 1)),
            }
        }
    }

    pub fn get(&self, sub: &str) -> u64 {
        self.0.get(sub).copied().unwrap_or(0)
    }
}

/// The fast-path work of one batch, kept until the batch commits. If it fails,
/// spilled messages go back to the hot set (they are still only in the journal),
/// recorded ones wait for a later batch, and fresh ones were never acknowledged.
#[derive(Default)]
pub(crate) struct FastPath {
    /// Journaled in this batch; hot once the journal is synced.
    pub fresh: Vec<HotMessage>,
    /// Per subscriber: this batch's journaled enqueues (fresh and overflowed).
    pub owed: BatchOwed,
    /// (subscriber, id) marked leased by the limits until the batch commits
    /// (dropped after the commit as the batch's effects; here if it fails).
    pub marked: Vec<(String, String)>,
    bytes: usize,
    /// Journaled in this batch but overflowing: (topic, subscribers) of each, and the
    /// buffer offset of the first one when overflow starts in this batch.
    overflowed: Vec<(String, Vec<String>)>,
    overflow_start: Option<u64>,
    /// Taken off the hot set to go to redb.
    pub spilled: Vec<HotMessage>,
    /// Completed hot messages whose records this batch stores.
    pub recorded: Vec<(Arc<HotMessage>, u64)>,
}

impl FastPath {
    /// Whether this batch journaled an enqueue (and so synced the journal).
    pub fn journaled(&self) -> bool {
        !self.fresh.is_empty() || !self.overflowed.is_empty()
    }
}

impl Core {
    /// Journals a fast-path enqueue; `None` if it must take the redb path (an
    /// ordering key, or no subscriber). An idempotency key is checked and recorded
    /// in `batch` (redb, committed without fsync: the journal holds it too).
    pub(super) fn enqueue_hot(
        &mut self,
        req: &EnqueueRequest,
        now: u64,
        fast: &mut FastPath,
        batch: &mut Batch<'_>,
    ) -> Res<Option<Result<EnqueueOutcome, QueueError>>> {
        if req.ordering_key.is_some() || req.subscribers.is_empty() {
            return Ok(None);
        }
        if let Some(key) = req.idempotency_key.as_deref() {
            if let Some(prior) = batch.idem_prior(&req.topic, key)? {
                return Ok(Some(Ok(EnqueueOutcome::Duplicate(MessageId::new(prior)))));
            }
        }
        let room = self
            .mem
            .hot
            .lock()
            .has_room(fast.fresh.len() + 1, fast.bytes + req.body.len());
        let overflowing = self.overflow.is_some() || !fast.overflowed.is_empty();
        let id = self.ids.next(now).to_string();
        let jm = JournalMessage {
            id: id.clone(),
            topic: req.topic.clone(),
            content_type: req.content_type.clone(),
            headers: req.headers.clone(),
            subscribers: distinct_subscribers(req),
            enqueued_at_ms: now,
            // A copy: the request's bytes may be a slice of a much larger read buffer,
            // which a held message would otherwise keep alive.
            body: bytes::Bytes::copy_from_slice(&req.body),
            idempotency: req
                .idempotency_key
                .clone()
                .map(|key| (key, idem_expiry(now, req))),
        };
        if let Some((key, expires_at_ms)) = &jm.idempotency {
            batch.idem_record(&jm.topic, key, &id, *expires_at_ms)?;
        }
        let offset = self.journal.append_enq(&jm);
        if self.limit.is_some() {
            fast.owed.add(&jm.subscribers); // read only by the limits
        }
        if overflowing || !room {
            if self.overflow.is_none() && fast.overflow_start.is_none() {
                fast.overflow_start = Some(offset);
            }
            fast.overflowed.push((jm.topic, jm.subscribers));
        } else {
            fast.bytes += jm.body.len();
            fast.fresh.push(hot_message(jm, 0));
        }
        Ok(Some(Ok(EnqueueOutcome::Accepted(MessageId::new(id)))))
    }

    /// Moves a hot message into redb (no-op when it is not hot).
    pub(super) fn spill(
        &mut self,
        batch: &mut Batch<'_>,
        fast: &mut FastPath,
        id: &str,
    ) -> Res<()> {
        let Some(m) = self.mem.hot.lock().remove(id) else {
            return Ok(());
        };
        let res = batch.spill(&m);
        fast.spilled.push(m);
        res
    }

    /// Spills hot messages that hold things up:
    /// - journaled well before the oldest journal data still needed otherwise (the
    ///   overflow cursor, else the current segment) and for a while (see
    ///   [`behind`](super::behind)), so a message stuck with a paused subscriber does
    ///   not keep old segments on disk;
    /// - while messages overflow and the hot set is full, the oldest ones, when some
    ///   subscriber with overflowed messages has nothing left to do in the hot set:
    ///   a slow subscriber must not hold back the others (they get the overflowed
    ///   messages; the slow one gets the spilled ones from redb). When every
    ///   subscriber is busy, nothing is spilled: the backlog waits in the journal.
    pub(super) fn spill_stale(&mut self, batch: &mut Batch<'_>, fast: &mut FastPath) -> Res<()> {
        let oldest = self
            .overflow
            .as_ref()
            .map_or(self.journal.current(), |o| o.cursor.segment);
        let mut ids = {
            let hot = self.mem.hot.lock();
            let behind = hot.segments_before(oldest.saturating_sub(1));
            let stuck = self
                .behind
                .stuck_before(behind, Instant::now(), behind::STUCK_AFTER);
            let mut ids = hot.ids_before_segment(stuck, SPILL_OLD_LIMIT);
            if let Some(o) = &self.overflow {
                let want = load_chunk(o, &hot);
                let room = hot.room().0;
                let starving = o
                    .subs
                    .iter()
                    .any(|(sub, n)| *n > 0 && hot.unleased_for(sub) == 0);
                if room < want && starving {
                    ids.extend(hot.oldest(want - room));
                }
            }
            ids
        };
        ids.sort_unstable();
        ids.dedup();
        for id in ids {
            self.spill(batch, fast, &id)?;
        }
        Ok(())
    }

    /// Adds the waiting completed records to this batch when it commits anyway, or
    /// when enough of them wait or the oldest is old enough (few commits, little churn).
    pub(super) fn record_completed(
        &mut self,
        batch: &mut Batch<'_>,
        fast: &mut FastPath,
        force: bool,
    ) -> Res<()> {
        let record = !self.unrecorded.is_empty()
            && (force
                || batch.changed
                || self.unrecorded.len() >= RECORD_BATCH
                || self.unrecorded_since.elapsed() >= RECORD_EVERY);
        if record {
            fast.recorded = std::mem::take(&mut self.unrecorded);
            for (m, at) in &fast.recorded {
                batch.complete_hot(m, *at)?;
            }
        }
        Ok(())
    }

    /// Right after the journal sync (whatever redb does next): counts this batch's
    /// overflowed messages, which are in the journal now. `base` is where the batch's
    /// journal buffer was written.
    pub(super) fn note_journaled(&mut self, fast: &mut FastPath, base: Pos) {
        if let Some(start) = fast.overflow_start.take() {
            self.overflow = Some(Overflow {
                cursor: Pos {
                    segment: base.segment,
                    offset: base.offset + start,
                },
                ..Overflow::default()
            });
        }
        if let Some(o) = self.overflow.as_mut() {
            for (topic, subs) in fast.overflowed.drain(..) {
                o.count += 1;
                *o.depth.entry(topic).or_insert(0) += 1;
                for sub in subs {
                    *o.subs.entry(sub).or_insert(0) += 1;
                }
            }
        }
    }

    /// After a successful commit: makes fresh messages hot, loads overflowed
    /// messages into free room, marks unused journal segments for
    /// deletion, publishes the counters and wakes subscribers. `base` is where the
    /// batch's journal buffer was written.
    pub(super) fn publish_fast(&mut self, fast: &mut FastPath, base: Pos) {
        let mut wake = BTreeSet::new();
        let loaded = self.load_overflow(fast.fresh.len());
        let mut hot = self.mem.hot.lock();
        fast.spilled.clear();
        hot.unpark_done(fast.recorded.iter().map(|(m, _)| m.message.id.as_str()));
        fast.recorded.clear();
        for mut m in fast.fresh.drain(..).chain(loaded) {
            if m.segment == 0 {
                m.segment = base.segment;
            }
            wake.extend(m.message.subscribers.iter().cloned());
            hot.insert(m);
        }
        // Old segments no hot or overflowed message needs any more.
        let cursor_seg = self.overflow.as_ref().map(|o| o.cursor.segment);
        for seg in self.journal.older() {
            let needed = hot.uses_segment(*seg) || cursor_seg.is_some_and(|c| c <= *seg);
            if !needed && !self.retiring.contains(seg) {
                self.retiring.push(*seg);
            }
        }
        let mut published = self.counters.clone();
        for (topic, n) in hot.depth() {
            Counters::add(&mut published.depth, topic, *n as i64);
        }
        for (sub, n) in hot.owed() {
            Counters::add(&mut published.backlog, sub, *n as i64);
        }
        if let Some(o) = &self.overflow {
            for (topic, n) in &o.depth {
                Counters::add(&mut published.depth, topic, *n as i64);
            }
            for (sub, n) in &o.subs {
                Counters::add(&mut published.backlog, sub, *n as i64);
            }
        }
        drop(hot);
        *self.mem.counters.write() = published;
        *self.mem.overflow.lock() = self.overflow.as_ref().map(Overflow::summary);
        for sub in &wake {
            self.mem.wake(sub);
        }
    }

    /// At start-up: loads overflowed messages into the empty hot set.
    pub(crate) fn resume(&mut self) {
        let mut none = FastPath::default();
        let head = self.journal.head();
        self.publish_fast(&mut none, head);
    }

    /// Reads overflowed messages from the cursor into as much room as the hot set
    /// has once `arriving` fresh messages are in.
    fn load_overflow(&mut self, arriving: usize) -> Vec<HotMessage> {
        let Some(o) = self.overflow.as_mut() else {
            return Vec::new();
        };
        let ((room, room_bytes), want) = {
            let hot = self.mem.hot.lock();
            (hot.room(), load_chunk(o, &hot))
        };
        let room = room.saturating_sub(arriving);
        if room < want {
            return Vec::new();
        }
        let head = self.journal.head();
        let max = room.min(LOAD_PER_BATCH);
        let (read, next) = match self.journal.read_enqs(o.cursor, head, max, room_bytes) {
            Ok(r) => r,
            Err(e) => {
                // Left in the journal: retried after the next batch, restored at restart.
                tracing::error!(error = %e, "cannot load overflowed messages from the journal");
                return Vec::new();
            }
        };
        o.cursor = next;
        let mut out = Vec::with_capacity(read.len());
        for (pos, jm) in read {
            o.count = o.count.saturating_sub(1);
            if let Some(d) = o.depth.get_mut(&jm.topic) {
                *d = d.saturating_sub(1);
            }
            for sub in &jm.subscribers {
                if let Some(n) = o.subs.get_mut(sub) {
                    *n = n.saturating_sub(1);
                }
            }
            out.push(hot_message(jm, pos.segment));
        }
        if next >= head || o.count == 0 {
            self.overflow = None;
        }
        out
    }
}

/// How much room the hot set needs before overflowed messages are loaded (a chunk,
/// so that loading reads the journal in large pieces).
fn load_chunk(o: &Overflow, hot: &crate::embedded::hot::Hot) -> usize {
    LOAD_PER_BATCH
        .min(o.count as usize)
        .min(hot.capacity() / 4)
        .max(1)
}

/// A hot message for a journaled one (`segment` 0: not known yet).
pub(crate) fn hot_message(jm: JournalMessage, segment: u64) -> HotMessage {
    let delivered = vec![None; jm.subscribers.len()];
    HotMessage {
        message: Arc::new(jm.into_message()),
        segment,
        delivered,
    }
}
