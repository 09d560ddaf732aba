//! The admin side over JetStream: dead letters are messages of the `{P}_dlq`
//! stream, read by sequence, replayed to the one subscriber and deleted.

use std::sync::Arc;

use async_trait::async_trait;

use super::{now_ms, partition_consumer, storage, token, Shared};
use crate::contract::Ledger;
use crate::envelope::{self, Envelope};
use crate::types::*;

pub struct NatsLedger {
    shared: Arc<Shared>,
}

impl NatsLedger {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// Every dead letter matching `filter`, oldest first, with its sequence.
    async fn scan(&self, filter: &DlqFilter) -> Result<Vec<(u64, DeadLetter)>, QueueError> {
        let mut stream = self
            .shared
            .js
            .get_stream(self.shared.dlq_stream())
            .await
            .map_err(|e| storage("opening the dead-letter stream", e))?;
        let info = stream
            .info()
            .await
            .map_err(|e| storage("reading the dead-letter stream", e))?;
        let (first, last, count) = (
            info.state.first_sequence,
            info.state.last_sequence,
            info.state.messages,
        );
        let mut out = Vec::new();
        if count == 0 {
            return Ok(out);
        }
        for seq in first..=last {
            // Deleted sequences (replayed, purged) are gaps.
            let Ok(m) = stream.get_raw_message(seq).await else {
                continue;
            };
            let header = m
                .headers
                .get(envelope::HEADER)
                .map(|v| v.as_str().as_bytes().to_vec());
            let env = Envelope::parse(header.as_deref(), None, None, "", now_ms());
            let sub = env.subscriber.clone().unwrap_or_default();
            if !filter.matches(&env.topic, &sub) {
                continue;
            }
            out.push((
                seq,
                DeadLetter {
                    id: dead_letter_id(env.id.as_str(), &sub),
                    subscriber: sub,
                    attempts: env.history.clone(),
                    reason: env.reason.clone().unwrap_or_default(),
                    dead_at_ms: env.dead_at_ms.unwrap_or(0),
                    message: env.message(m.payload.to_vec()),
                },
            ));
        }
        Ok(out)
    }

    async fn apply(
        &self,
        seq: u64,
        letter: &DeadLetter,
        action: DlqAction,
    ) -> Result<(), QueueError> {
        let s = &self.shared;
        if action == DlqAction::Replay {
            let env = Envelope::replay_of(letter);
            s.ensure(
                &letter.message.topic,
                std::slice::from_ref(&letter.subscriber),
            )
            .await?;
            let subject = s.subject(
                &letter.message.topic,
                &format!("to.{}", token(&letter.subscriber)),
            );
            s.publish(subject, &env, letter.message.body.clone())
                .await?;
        }
        let stream =
            s.js.get_stream(s.dlq_stream())
                .await
                .map_err(|e| storage("opening the dead-letter stream", e))?;
        stream
            .delete_message(seq)
            .await
            .map_err(|e| storage("removing a dead letter", e))?;
        Ok(())
    }
}

/// Per topic: the largest subscriber backlog (pending + unacknowledged), and
/// the dead letters.
/// One subscriber's backlog on one topic.
pub struct PairBacklog {
    pub topic: String,
    pub subscriber: String,
    pub backlog: u64,
}

pub async fn read_depth(s: &Shared) -> Result<(DepthSnapshot, Vec<PairBacklog>), QueueError> {
    let mut snap = DepthSnapshot::default();
    let mut per_pair = Vec::new();
    let pairs: Vec<(String, String)> = s.pairs.lock().iter().cloned().collect();
    for (topic, sub) in pairs {
        let stream =
            s.js.get_stream(s.stream_name(&topic))
                .await
                .map_err(|e| storage("opening a stream", e))?;
        let mut c: async_nats::jetstream::consumer::PullConsumer = stream
            .get_consumer(&token(&sub))
            .await
            .map_err(|e| storage("opening a consumer", e))?;
        let info = c
            .info()
            .await
            .map_err(|e| storage("reading a consumer", e))?;
        // The subscriber's own consumer also holds the keyed events it has
        // not yet passed (it acks them unread), so adding the partitions would
        // count those twice. The larger of the two is exact while the
        // subscriber is stopped (its own consumer then holds everything) and
        // never above the truth otherwise, so `max_depth` never sheds early.
        let own = info.num_pending + info.num_ack_pending as u64;
        let mut keyed = 0;
        let ordered = s.ordered.lock().contains(&(topic.clone(), sub.clone()));
        for i in (0..s.cfg.ordering_partitions).filter(|_| ordered) {
            let mut c: async_nats::jetstream::consumer::PullConsumer = stream
                .get_consumer(&partition_consumer(&sub, i))
                .await
                .map_err(|e| storage("opening a partition consumer", e))?;
            let info = c
                .info()
                .await
                .map_err(|e| storage("reading a partition consumer", e))?;
            keyed += info.num_pending + info.num_ack_pending as u64;
        }
        let backlog = own.max(keyed);
        per_pair.push(PairBacklog {
            topic: topic.clone(),
            subscriber: sub.clone(),
            backlog,
        });
        *snap.subscribers.entry(sub).or_default() += backlog;
        let t = snap.topics.entry(topic).or_default();
        *t = (*t).max(backlog);
    }
    let mut dlq =
        s.js.get_stream(s.dlq_stream())
            .await
            .map_err(|e| storage("opening the dead-letter stream", e))?;
    let info = dlq
        .info()
        .await
        .map_err(|e| storage("reading the dead-letter stream", e))?;
    snap.dlq_total = info.state.messages;
    snap.total = snap.topics.values().sum();
    Ok((snap, per_pair))
}

#[async_trait]
impl Ledger for NatsLedger {
    async fn message_status(&self, _id: &str) -> Result<Option<MessageStatus>, QueueError> {
        Err(QueueError::Unsupported(
            "the nats backend keeps no per-message status: see /admin/dlq and the delivery metrics",
        ))
    }

    async fn dlq_list(
        &self,
        filter: DlqFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<DlqPage, QueueError> {
        let all = self.scan(&filter).await?;
        let all: Vec<&DeadLetter> = all.iter().map(|(_, d)| d).collect();
        let page = DlqPage::from_sorted(&all, after.as_deref(), limit);
        Ok(page)
    }

    async fn dlq_apply(&self, dead_letter_id: &str, action: DlqAction) -> Result<(), QueueError> {
        let (_, sub) = split_dead_letter_id(dead_letter_id).ok_or(QueueError::NotFound)?;
        let filter = DlqFilter {
            topic: None,
            subscriber: Some(sub.to_owned()),
        };
        for (seq, letter) in self.scan(&filter).await? {
            if letter.id == dead_letter_id {
                return self.apply(seq, &letter, action).await;
            }
        }
        Err(QueueError::NotFound)
    }

    async fn dlq_apply_all(&self, filter: DlqFilter, action: DlqAction) -> Result<u64, QueueError> {
        let mut done = 0;
        for (seq, letter) in self.scan(&filter).await? {
            self.apply(seq, &letter, action).await?;
            done += 1;
        }
        Ok(done)
    }

    fn depth(&self) -> DepthSnapshot {
        self.shared.depth.read().clone()
    }
}
