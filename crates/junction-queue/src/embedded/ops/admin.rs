//! The operator's side of [`Batch`]: replaying and purging dead letters
//! (admin API), and pruning completed records and expired idempotency keys
//! (housekeeping). Same transaction rules as the rest of `ops.rs`.

use redb::{ReadableTable, ReadableTableMetadata};

use super::super::tables::*;
use super::Batch;
use crate::types::DeliveryState;

impl Batch<'_> {
    /// Puts a dead delivery back to pending, due now; `false` if the dead letter is gone.
    pub fn replay(&mut self, dl_id: &str) -> Res<bool> {
        let Some(raw) = self.dlq.remove(dl_id)?.map(|g| g.value().to_vec()) else {
            return Ok(false);
        };
        self.changed = true;
        let (dead, body): (DeadLetterMeta, &[u8]) = decode_with_body(&raw)?;
        let (id, sub) = (dead.message.id.as_str(), dead.subscriber.as_str());
        self.bump("dlq", &dead.message.topic, -1);
        let existing = self.message(id, false)?.map(|(meta, _)| meta);
        let live = existing
            .as_ref()
            .is_some_and(|m| m.completed_at_ms.is_none());
        if !live {
            let mut meta = existing.unwrap_or_else(|| dead.message.clone());
            if let Some(at) = meta.completed_at_ms.take() {
                self.completed.remove((at, id))?;
            }
            self.messages
                .insert(id, encode_with_body(&meta, body)?.as_slice())?;
            self.bump("depth", &meta.topic, 1);
        }
        let rec = match self.delivery(id, sub)? {
            Some(rec) if rec.next_at().is_some() => return Ok(true),
            Some(rec) => rec,
            None => DeliveryRecord {
                history: dead.attempts.clone(),
                ..DeliveryRecord::pending(self.now)
            },
        };
        let rec = DeliveryRecord {
            state: DeliveryState::Pending {
                next_attempt_at_ms: self.now,
            },
            attempts: 0,
            ..rec
        };
        self.make_pending(id, sub, dead.message.ordering_key.as_deref(), rec)?;
        Ok(true)
    }

    /// Discards a dead letter (the delivery stays dead); `false` if it is gone.
    pub fn purge(&mut self, dl_id: &str) -> Res<bool> {
        let Some(raw) = self.dlq.remove(dl_id)?.map(|g| g.value().to_vec()) else {
            return Ok(false);
        };
        self.changed = true;
        let (dead, _): (DeadLetterMeta, &[u8]) = decode_with_body(&raw)?;
        self.bump("dlq", &dead.message.topic, -1);
        Ok(true)
    }

    // === retention ===

    /// Drops completed records older than `retention_ms`, and the oldest ones past
    /// `max_completed` whatever their age, and expired idempotency keys, at most
    /// `limit` of each; returns whether more are waiting.
    pub fn prune(&mut self, retention_ms: u64, max_completed: u64, limit: usize) -> Res<bool> {
        let cutoff = self.now.saturating_sub(retention_ms);
        // Past the cap, the oldest go first (the count is kept by redb, O(1)).
        let over = usize::try_from(self.completed.len()?.saturating_sub(max_completed))
            .unwrap_or(usize::MAX);
        let mut done: Vec<(u64, String)> = Vec::new();
        for entry in self.completed.iter()? {
            let (k, _) = entry?;
            let (at, id) = k.value();
            if (at > cutoff && done.len() >= over) || done.len() > limit {
                break;
            }
            done.push((at, id.to_owned()));
        }
        let mut more = done.len() > limit;
        done.truncate(limit);
        for (at, id) in &done {
            self.changed = true;
            self.completed.remove((*at, id.as_str()))?;
            self.messages.remove(id.as_str())?;
            let subs = self.subscribers_of(id)?;
            for sub in &subs {
                self.deliveries.remove((id.as_str(), sub.as_str()))?;
            }
        }
        let mut expired: Vec<(u64, String, String)> = Vec::new();
        for entry in self.idem_expiry.iter()? {
            let (k, _) = entry?;
            let (at, topic, key) = k.value();
            if at > self.now || expired.len() > limit {
                break;
            }
            expired.push((at, topic.to_owned(), key.to_owned()));
        }
        more |= expired.len() > limit;
        expired.truncate(limit);
        for (at, topic, key) in &expired {
            self.changed = true;
            self.idem_expiry
                .remove((*at, topic.as_str(), key.as_str()))?;
            let current = self
                .idem
                .get((topic.as_str(), key.as_str()))?
                .map(|g| decode::<IdemRecord>(g.value()));
            if current.transpose()?.is_some_and(|r| r.expires_at_ms == *at) {
                self.idem.remove((topic.as_str(), key.as_str()))?;
            }
        }
        Ok(more)
    }
}
