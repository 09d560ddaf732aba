//! Moving fast-path messages into redb, inside one write transaction: spilling a hot
//! message that needs redb's machinery, recording a completed one, and restoring
//! journaled messages after a restart. Each keeps the invariants of `tables.rs`.

use redb::ReadableTable;

use super::hot::HotMessage;
use super::journal::JournalMessage;
use super::ops::Batch;
use super::tables::*;
use crate::types::{AttemptRecord, DeliveryState, Message};

impl Batch<'_> {
    /// Stores a hot message as an ordinary pending one: subscribers that have it as
    /// delivered, the others pending and due since it was enqueued (as on the fast
    /// path: it keeps its place before newer messages, and a lease at any time since
    /// sees it).
    pub fn spill(&mut self, m: &HotMessage) -> Res<()> {
        let delivered: Vec<Option<AttemptRecord>> = m.delivered.clone();
        self.store_pending(&m.message, &delivered)
    }

    /// Stores the completed record of a hot message every subscriber received, for
    /// status look-ups until it is pruned like any completed record.
    pub fn complete_hot(&mut self, m: &HotMessage, completed_at_ms: u64) -> Res<()> {
        self.store_completed(&m.message, &m.delivered, completed_at_ms)
    }

    fn store_completed(
        &mut self,
        msg: &Message,
        delivered: &[Option<AttemptRecord>],
        completed_at_ms: u64,
    ) -> Res<()> {
        let id = msg.id.as_str();
        let mut meta = meta_of(msg);
        // What a status shows, no more: the body, content type and headers were
        // only kept for delivery (this row is written for every event).
        meta.content_type = None;
        meta.headers = Vec::new();
        meta.completed_at_ms = Some(completed_at_ms);
        meta.final_states = delivered
            .iter()
            .map(|a| delivered_record(a.clone()))
            .collect();
        self.changed = true;
        self.messages
            .insert(id, encode_with_body(&meta, &[])?.as_slice())?;
        self.completed.insert((completed_at_ms, id), ())?;
        Ok(())
    }

    /// After a restart: stores a journaled message (`acked` subscribers already have
    /// it), pending or completed. A message redb already holds is left alone.
    pub fn restore(&mut self, m: JournalMessage, acked: &[String]) -> Res<()> {
        if self.messages.get(m.id.as_str())?.is_some() {
            return Ok(());
        }
        let msg = m.into_message();
        let delivered: Vec<Option<AttemptRecord>> = msg
            .subscribers
            .iter()
            .map(|s| {
                acked.contains(s).then(|| AttemptRecord {
                    attempt: 1,
                    at_ms: msg.enqueued_at_ms,
                    outcome: "delivered (recovered from the journal)".into(),
                    duration_ms: 0,
                    response: None,
                })
            })
            .collect();
        if delivered.iter().all(Option::is_some) {
            self.store_completed(&msg, &delivered, self.now)
        } else {
            self.store_pending(&msg, &delivered)
        }
    }

    fn store_pending(&mut self, msg: &Message, delivered: &[Option<AttemptRecord>]) -> Res<()> {
        let id = msg.id.as_str();
        self.changed = true;
        self.messages
            .insert(id, encode_with_body(&meta_of(msg), &msg.body)?.as_slice())?;
        for (sub, attempt) in msg.subscribers.iter().zip(delivered) {
            match attempt {
                Some(a) => self.put_delivery(id, sub, &delivered_record(Some(a.clone())))?,
                None => {
                    let due = DeliveryRecord::pending(msg.enqueued_at_ms);
                    self.make_pending(id, sub, None, due)?;
                }
            }
        }
        self.bump("depth", &msg.topic, 1);
        Ok(())
    }
}

fn meta_of(msg: &Message) -> MessageMeta {
    MessageMeta {
        id: msg.id.as_str().to_owned(),
        topic: msg.topic.clone(),
        content_type: msg.content_type.clone(),
        headers: msg.headers.clone(),
        ordering_key: None,
        enqueued_at_ms: msg.enqueued_at_ms,
        subscribers: msg.subscribers.clone(),
        completed_at_ms: None,
        final_states: Vec::new(),
    }
}

fn delivered_record(attempt: Option<AttemptRecord>) -> DeliveryRecord {
    DeliveryRecord {
        state: DeliveryState::Delivered,
        attempts: 1,
        history: attempt.into_iter().collect(),
        order_seq: None,
    }
}
