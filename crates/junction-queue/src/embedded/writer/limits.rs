//! Backlog limits, per subscriber: `max_depth` bounds how many events wait for one
//! subscriber, so a dead subscriber sheds its own events (to its dead letters)
//! instead of refusing the topic's healthy ones. Decided by the writer, in order with
//! everything else it does, so the counts it reads are exact.
//!
//! A subscriber's backlog is its pending deliveries wherever they are: in redb
//! (the batch's counters), in the hot set, journaled in this batch, or overflowed
//! into the journal alone.

use super::fastpath::FastPath;
use super::Core;
use crate::embedded::ops::{distinct_subscribers, Batch, Finish};
use crate::embedded::tables::Res;
use crate::types::{
    backlog_full_reason, shed_attempt, EnqueueOutcome, EnqueueRequest, MessageId, OnFull,
    QueueError,
};

/// `max_depth` and what a full subscriber does.
#[derive(Clone, Copy, Debug)]
pub(crate) struct BacklogLimit {
    pub max: u64,
    pub on_full: OnFull,
}

/// What the limits make of an enqueue.
pub(crate) enum Admit {
    /// Answered without storing anything (a duplicate, or every subscriber full).
    Answer(Result<EnqueueOutcome, QueueError>),
    /// Store it; these (subscriber, reason) get it as a dead letter at once.
    Store(Vec<(String, String)>),
}

impl Core {
    /// Applies the backlog limit to `req` (a no-op without one).
    pub(super) fn admit(
        &mut self,
        req: &EnqueueRequest,
        fast: &mut FastPath,
        batch: &mut Batch<'_>,
    ) -> Res<Admit> {
        let Some(limit) = self.limit else {
            return Ok(Admit::Store(Vec::new()));
        };
        // A repeat is answered as such even when the subscribers are full.
        if let Some(key) = req.idempotency_key.as_deref() {
            if let Some(prior) = batch.idem_prior(&req.topic, key)? {
                return Ok(Admit::Answer(Ok(EnqueueOutcome::Duplicate(
                    MessageId::new(prior),
                ))));
            }
        }
        let subs = distinct_subscribers(req);
        let mut shed = Vec::new();
        let mut least_full = u64::MAX;
        for sub in &subs {
            let backlog = self.backlog_of(sub, fast, batch);
            if backlog < limit.max {
                continue;
            }
            least_full = least_full.min(backlog);
            let reason = backlog_full_reason(backlog, limit.max, limit.on_full);
            let made_room = limit.on_full == OnFull::DeadLetterOldest
                && self.dead_letter_oldest(sub, &reason, fast, batch)?;
            if !made_room {
                shed.push((sub.clone(), reason));
            }
        }
        if !subs.is_empty() && shed.len() == subs.len() {
            return Ok(Admit::Answer(Err(QueueError::Full {
                depth: least_full,
                max: limit.max,
            })));
        }
        Ok(Admit::Store(shed))
    }

    /// Events waiting for `sub`, wherever they are.
    fn backlog_of(&self, sub: &str, fast: &FastPath, batch: &Batch<'_>) -> u64 {
        let overflowed = self
            .overflow
            .as_ref()
            .and_then(|o| o.subs.get(sub).copied())
            .unwrap_or(0);
        batch.backlog(sub) + self.mem.hot.lock().owed_to(sub) + overflowed + fast.owed.get(sub)
    }

    /// Dead-letters the oldest of `sub`'s waiting events that no dispatcher holds:
    /// the older of the hot set's oldest and redb's next due. `false` when every
    /// one it could take is in flight or still only in the journal.
    fn dead_letter_oldest(
        &mut self,
        sub: &str,
        reason: &str,
        fast: &mut FastPath,
        batch: &mut Batch<'_>,
    ) -> Res<bool> {
        let state = self.mem.subscriber(sub);
        // Held throughout, as leasing holds it (then the hot set), and the victim
        // is marked leased until this batch commits (`finish_delivery` drops that
        // lease after the commit): no lease can take it from the state before.
        let mut leases = state.leases();
        let in_redb = batch.next_due_of(sub, &leases)?;
        let in_hot = self
            .mem
            .hot
            .lock()
            .oldest_unleased(sub, &leases)
            .map(str::to_owned);
        let (id, hot) = match (in_redb, in_hot) {
            (Some(r), Some(h)) if h < r => (h, true),
            (Some(r), _) => (r, false),
            (None, Some(h)) => (h, true),
            (None, None) => return Ok(false),
        };
        leases.insert(id.clone());
        fast.marked.push((sub.to_owned(), id.clone()));
        if hot {
            self.spill(batch, fast, &id)?;
        }
        let attempt = shed_attempt(batch.now);
        batch.finish_delivery(&id, sub, &attempt, Finish::Dead(reason))?;
        drop(leases);
        Ok(true)
    }
}
