//! The state transitions of the embedded queue, applied inside one write transaction.
//!
//! A [`Batch`] opens every table once, applies any number of operations (enqueue,
//! ack, retry, dead-letter, replay, prune) in order, and hands back the new counters
//! plus the in-memory effects (leases to drop, subscribers to wake) that the writer
//! applies only after the commit succeeds. Each operation keeps the invariants listed
//! in `tables.rs`; an operation on a delivery that is no longer pending is a no-op,
//! which makes acks and retries idempotent. The operator's operations (replay, purge,
//! prune) are in `ops/admin.rs`.

mod admin;

use std::collections::{BTreeSet, HashSet};

use redb::{ReadableTable, Table, WriteTransaction};

use super::state::{Counters, IdGen};
use super::tables::*;
use crate::types::{
    dead_letter_id, shed_attempt, AttemptRecord, DeliveryState, EnqueueOutcome, EnqueueRequest,
    MessageId, QueueError,
};

/// `req`'s subscribers, each once, in the order given.
pub(crate) fn distinct_subscribers(req: &EnqueueRequest) -> Vec<String> {
    let mut subscribers: Vec<String> = Vec::with_capacity(req.subscribers.len());
    for s in &req.subscribers {
        if !subscribers.contains(s) {
            subscribers.push(s.clone());
        }
    }
    subscribers
}

/// When an idempotency key given now with `req` stops counting.
pub(crate) fn idem_expiry(now: u64, req: &EnqueueRequest) -> u64 {
    now.saturating_add(u64::try_from(req.idempotency_ttl.as_millis()).unwrap_or(u64::MAX))
}

/// What the writer must do in memory once the batch is committed.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    /// (subscriber, message id) leases to drop.
    pub unlease: Vec<(String, String)>,
    /// Subscribers that have something newly due.
    pub wake: BTreeSet<String>,
}

/// How a delivery ends.
pub(crate) enum Finish<'r> {
    Delivered,
    Dead(&'r str),
}

/// All tables of one write transaction plus the batch's working state.
pub(crate) struct Batch<'t> {
    pub(super) messages: Table<'t, &'static str, &'static [u8]>,
    deliveries: Table<'t, (&'static str, &'static str), &'static [u8]>,
    due: Table<'t, (&'static str, u64, &'static str), ()>,
    order: Table<'t, (&'static str, &'static str, u64), &'static str>,
    dlq: Table<'t, &'static str, &'static [u8]>,
    idem: Table<'t, (&'static str, &'static str), &'static [u8]>,
    idem_expiry: Table<'t, (u64, &'static str, &'static str), ()>,
    pub(super) completed: Table<'t, (u64, &'static str), ()>,
    stats: Table<'t, (&'static str, &'static str), u64>,
    pub(super) now: u64,
    counters: Counters,
    touched: BTreeSet<(&'static str, String)>,
    seq: u64,
    pub(super) changed: bool,
    pub(super) effects: Effects,
}

/// Result of a finished batch, to publish after commit.
pub(crate) struct Finished {
    pub counters: Counters,
    pub seq: u64,
    pub effects: Effects,
    /// Whether anything was written.
    pub changed: bool,
}

impl<'t> Batch<'t> {
    /// Opens every table of `txn`, starting from the committed counters and sequence.
    pub fn open(txn: &'t WriteTransaction, now: u64, counters: Counters, seq: u64) -> Res<Self> {
        Ok(Self {
            messages: txn.open_table(MESSAGES)?,
            deliveries: txn.open_table(DELIVERIES)?,
            due: txn.open_table(DUE)?,
            order: txn.open_table(ORDER)?,
            dlq: txn.open_table(DLQ)?,
            idem: txn.open_table(IDEM)?,
            idem_expiry: txn.open_table(IDEM_EXPIRY)?,
            completed: txn.open_table(COMPLETED)?,
            stats: txn.open_table(STATS)?,
            now,
            counters,
            touched: BTreeSet::new(),
            seq,
            changed: false,
            effects: Effects::default(),
        })
    }

    /// Writes the touched counters and closes the tables.
    pub fn finish(mut self) -> Res<Finished> {
        for (kind, topic) in std::mem::take(&mut self.touched) {
            let map = if kind == "depth" {
                &self.counters.depth
            } else {
                &self.counters.dlq
            };
            match map.get(&topic).copied().unwrap_or(0) {
                0 => self.stats.remove((kind, topic.as_str()))?,
                v => self.stats.insert((kind, topic.as_str()), v)?,
            };
        }
        self.stats.insert(("seq", "order"), self.seq)?;
        Ok(Finished {
            counters: self.counters,
            seq: self.seq,
            effects: self.effects,
            changed: self.changed,
        })
    }

    // === enqueue ===

    /// Stores a new message (or finds the idempotent original). The writer has
    /// checked the backlog limits: each of `shed` (subscriber, reason) gets the
    /// message as a dead letter at once instead of a pending delivery.
    pub fn enqueue(
        &mut self,
        req: &EnqueueRequest,
        ids: &mut IdGen,
        shed: &[(String, String)],
    ) -> Res<Result<EnqueueOutcome, QueueError>> {
        let now = self.now;
        let topic = req.topic.as_str();
        if let Some(key) = req.idempotency_key.as_deref() {
            if let Some(prior) = self.idem_prior(topic, key)? {
                return Ok(Ok(EnqueueOutcome::Duplicate(MessageId::new(prior))));
            }
        }
        let subscribers = distinct_subscribers(req);
        self.changed = true;
        let id = ids.next(now).to_string();
        let mut meta = MessageMeta {
            id: id.clone(),
            topic: req.topic.clone(),
            content_type: req.content_type.clone(),
            headers: req.headers.clone(),
            ordering_key: req.ordering_key.clone(),
            enqueued_at_ms: now,
            subscribers,
            completed_at_ms: None,
            final_states: Vec::new(),
        };
        let pending = meta
            .subscribers
            .iter()
            .filter(|s| !shed.iter().any(|(f, _)| f == *s))
            .count();
        if pending == 0 {
            // Nothing to deliver: keep only the completed record for status look-ups.
            meta.completed_at_ms = Some(now);
            self.messages
                .insert(id.as_str(), encode_with_body(&meta, &[])?.as_slice())?;
            self.completed.insert((now, id.as_str()), ())?;
        } else {
            self.messages
                .insert(id.as_str(), encode_with_body(&meta, &req.body)?.as_slice())?;
            for sub in &meta.subscribers {
                if shed.iter().any(|(f, _)| f == sub) {
                    continue;
                }
                self.make_pending(
                    &id,
                    sub,
                    meta.ordering_key.as_deref(),
                    DeliveryRecord::pending(now),
                )?;
            }
            self.bump("depth", topic, 1);
        }
        for (sub, reason) in shed {
            if meta.subscribers.contains(sub) {
                self.dead_on_arrival(&meta, &req.body, sub, reason)?;
            }
        }
        if let Some(key) = req.idempotency_key.as_deref() {
            self.idem_record(topic, key, &id, idem_expiry(now, req))?;
        }
        Ok(Ok(EnqueueOutcome::Accepted(MessageId::new(id))))
    }

    /// The message an unexpired idempotency key produced (an expired record is dropped).
    pub(super) fn idem_prior(&mut self, topic: &str, key: &str) -> Res<Option<String>> {
        let prior = self
            .idem
            .get((topic, key))?
            .map(|g| decode::<IdemRecord>(g.value()))
            .transpose()?;
        match prior {
            Some(p) if p.expires_at_ms > self.now => Ok(Some(p.id)),
            Some(p) => {
                self.idem_expiry.remove((p.expires_at_ms, topic, key))?;
                Ok(None)
            }
            None => Ok(None),
        }
    }

    /// After a restart: puts back a journaled idempotency key redb lost (an unflushed
    /// commit), unless it expired or the key has a record already.
    pub(super) fn idem_restore(
        &mut self,
        topic: &str,
        key: &str,
        id: &str,
        expires_at_ms: u64,
    ) -> Res<()> {
        if expires_at_ms <= self.now || self.idem.get((topic, key))?.is_some() {
            return Ok(());
        }
        self.idem_record(topic, key, id, expires_at_ms)
    }

    /// Remembers that `key` produced message `id` until `expires_at_ms`.
    pub(super) fn idem_record(
        &mut self,
        topic: &str,
        key: &str,
        id: &str,
        expires_at_ms: u64,
    ) -> Res<()> {
        self.changed = true;
        let rec = encode(&IdemRecord {
            id: id.to_owned(),
            expires_at_ms,
        })?;
        self.idem.insert((topic, key), rec.as_slice())?;
        self.idem_expiry.insert((expires_at_ms, topic, key), ())?;
        Ok(())
    }

    /// Writes a pending delivery record and indexes it (due now, or at the tail of its
    /// ordering chain).
    pub(super) fn make_pending(
        &mut self,
        id: &str,
        sub: &str,
        key: Option<&str>,
        mut rec: DeliveryRecord,
    ) -> Res<()> {
        let at = rec.next_at().unwrap_or(self.now);
        Counters::add(&mut self.counters.backlog, sub, 1);
        match key {
            Some(key) => {
                self.seq += 1;
                rec.order_seq = Some(self.seq);
                self.order.insert((sub, key, self.seq), id)?;
                self.put_delivery(id, sub, &rec)?;
                self.ensure_head_due(sub, key)?;
            }
            None => {
                rec.order_seq = None;
                self.put_delivery(id, sub, &rec)?;
                self.due.insert((sub, at, id), ())?;
                self.effects.wake.insert(sub.to_owned());
            }
        }
        Ok(())
    }

    // === delivery outcomes ===

    /// Records the final attempt of a pending delivery (delivered or dead).
    pub fn finish_delivery(
        &mut self,
        id: &str,
        sub: &str,
        attempt: &AttemptRecord,
        how: Finish<'_>,
    ) -> Res<()> {
        self.effects.unlease.push((sub.to_owned(), id.to_owned()));
        let Some(mut rec) = self.delivery(id, sub)? else {
            return Ok(());
        };
        let Some(next_at) = rec.next_at() else {
            return Ok(());
        };
        let with_body = matches!(how, Finish::Dead(_));
        let Some((mut meta, body)) = self.message(id, with_body)? else {
            return Err(EmbeddedError::Corrupt(format!(
                "delivery of missing message {id}"
            )));
        };
        self.changed = true;
        Counters::add(&mut self.counters.backlog, sub, -1);
        rec.record(attempt.clone());
        rec.state = match how {
            Finish::Delivered => DeliveryState::Delivered,
            Finish::Dead(reason) => DeliveryState::Dead {
                reason: reason.to_owned(),
            },
        };
        self.due.remove((sub, next_at, id))?;
        let seq = rec.order_seq.take();
        self.put_delivery(id, sub, &rec)?;
        if let (Some(seq), Some(key)) = (seq, meta.ordering_key.as_deref()) {
            self.order.remove((sub, key, seq))?;
            self.ensure_head_due(sub, key)?;
        }
        if let Finish::Dead(reason) = how {
            let dead = DeadLetterMeta {
                message: meta.clone(),
                subscriber: sub.to_owned(),
                attempts: rec.history.clone(),
                reason: reason.to_owned(),
                dead_at_ms: self.now,
            };
            let dl_id = dead_letter_id(id, sub);
            self.dlq
                .insert(dl_id.as_str(), encode_with_body(&dead, &body)?.as_slice())?;
            self.bump("dlq", &meta.topic, 1);
        }
        if !self.has_pending(id)? {
            // Every subscriber is done: drop the body, keep a small completed record.
            self.bump("depth", &meta.topic, -1);
            meta.completed_at_ms = Some(self.now);
            self.messages
                .insert(id, encode_with_body(&meta, &[])?.as_slice())?;
            self.completed.insert((self.now, id), ())?;
        }
        Ok(())
    }

    /// Records a failed attempt and reschedules a pending delivery.
    pub fn retry(&mut self, id: &str, sub: &str, attempt: &AttemptRecord, next_at: u64) -> Res<()> {
        self.effects.unlease.push((sub.to_owned(), id.to_owned()));
        let Some(mut rec) = self.delivery(id, sub)? else {
            return Ok(());
        };
        let Some(old_at) = rec.next_at() else {
            return Ok(());
        };
        self.changed = true;
        rec.record(attempt.clone());
        rec.state = DeliveryState::Pending {
            next_attempt_at_ms: next_at,
        };
        self.put_delivery(id, sub, &rec)?;
        // Only deliveries that may be leased (unkeyed or chain heads) are in `due`.
        if self.due.remove((sub, old_at, id))?.is_some() {
            self.due.insert((sub, next_at, id), ())?;
        }
        self.effects.wake.insert(sub.to_owned());
        Ok(())
    }

    // === backlog limits ===

    /// `sub`'s pending deliveries in redb, counting this batch's changes.
    pub fn backlog(&self, sub: &str) -> u64 {
        self.counters.backlog.get(sub).copied().unwrap_or(0)
    }

    /// The first of `sub`'s leasable deliveries in redb (unkeyed, or a chain head)
    /// that `skip` does not hold (leases), by due time: the one it would get next.
    pub fn next_due_of(&self, sub: &str, skip: &HashSet<String>) -> Res<Option<String>> {
        for entry in self
            .due
            .range((sub, 0, "")..=(sub, u64::MAX, "\u{10FFFF}"))?
        {
            let (k, _) = entry?;
            let id = k.value().2;
            if !skip.contains(id) {
                return Ok(Some(id.to_owned()));
            }
        }
        Ok(None)
    }

    /// Records a message `sub` never got to hold: dead at once (a full backlog shed it).
    fn dead_on_arrival(
        &mut self,
        meta: &MessageMeta,
        body: &[u8],
        sub: &str,
        reason: &str,
    ) -> Res<()> {
        let attempt = shed_attempt(self.now);
        let rec = DeliveryRecord {
            state: DeliveryState::Dead {
                reason: reason.to_owned(),
            },
            attempts: 0,
            history: vec![attempt.clone()],
            order_seq: None,
        };
        self.put_delivery(&meta.id, sub, &rec)?;
        let dead = DeadLetterMeta {
            message: meta.clone(),
            subscriber: sub.to_owned(),
            attempts: vec![attempt],
            reason: reason.to_owned(),
            dead_at_ms: self.now,
        };
        let dl_id = dead_letter_id(&meta.id, sub);
        self.dlq
            .insert(dl_id.as_str(), encode_with_body(&dead, body)?.as_slice())?;
        self.bump("dlq", &meta.topic, 1);
        Ok(())
    }

    // (Replay, purge and prune: `ops/admin.rs`.)

    // === helpers ===

    /// Makes sure the head of a (subscriber, key) chain is in the due index.
    fn ensure_head_due(&mut self, sub: &str, key: &str) -> Res<()> {
        let head = match self
            .order
            .range((sub, key, 0)..=(sub, key, u64::MAX))?
            .next()
        {
            Some(entry) => entry?.1.value().to_owned(),
            None => return Ok(()),
        };
        let at = self.delivery(&head, sub)?.and_then(|r| r.next_at());
        let Some(at) = at else {
            return Err(EmbeddedError::Corrupt(format!(
                "ordering head {head} is not pending"
            )));
        };
        if self.due.insert((sub, at, head.as_str()), ())?.is_none() {
            self.effects.wake.insert(sub.to_owned());
        }
        Ok(())
    }

    fn delivery(&self, id: &str, sub: &str) -> Res<Option<DeliveryRecord>> {
        self.deliveries
            .get((id, sub))?
            .map(|g| decode(g.value()))
            .transpose()
    }

    pub(super) fn put_delivery(&mut self, id: &str, sub: &str, rec: &DeliveryRecord) -> Res<()> {
        self.deliveries.insert((id, sub), encode(rec)?.as_slice())?;
        Ok(())
    }

    /// A stored message's metadata, and its body when asked for.
    fn message(&self, id: &str, with_body: bool) -> Res<Option<(MessageMeta, Vec<u8>)>> {
        let Some(guard) = self.messages.get(id)? else {
            return Ok(None);
        };
        let (meta, body) = decode_with_body(guard.value())?;
        let body = if with_body { body.to_vec() } else { Vec::new() };
        Ok(Some((meta, body)))
    }

    fn subscribers_of(&self, id: &str) -> Res<Vec<String>> {
        let mut subs = Vec::new();
        for entry in self.deliveries.range((id, "")..)? {
            let (k, _) = entry?;
            let (mid, sub) = k.value();
            if mid != id {
                break;
            }
            subs.push(sub.to_owned());
        }
        Ok(subs)
    }

    fn has_pending(&self, id: &str) -> Res<bool> {
        for entry in self.deliveries.range((id, "")..)? {
            let (k, v) = entry?;
            if k.value().0 != id {
                break;
            }
            if decode::<DeliveryRecord>(v.value())?.next_at().is_some() {
                return Ok(true);
            }
        }
        Ok(false)
    }

    pub(super) fn bump(&mut self, kind: &'static str, topic: &str, delta: i64) {
        let map = if kind == "depth" {
            &mut self.counters.depth
        } else {
            &mut self.counters.dlq
        };
        Counters::add(map, topic, delta);
        self.touched.insert((kind, topic.to_owned()));
    }
}
