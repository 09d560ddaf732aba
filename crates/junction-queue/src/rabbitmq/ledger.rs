//! The admin side over RabbitMQ: dead letters read from each subscriber's
//! `.dlq` queue with `basic.get` on a channel of their own. What is not settled
//! is given back when that channel closes, in its place.

use std::sync::Arc;

use async_trait::async_trait;
use lapin::options::{BasicAckOptions, BasicGetOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};
use lapin::Channel;

use super::{storage, Shared};
use crate::contract::Ledger;
use crate::envelope::Envelope;
use crate::types::*;

pub struct RabbitLedger {
    shared: Arc<Shared>,
}

impl RabbitLedger {
    pub fn new(shared: Arc<Shared>) -> Self {
        Self { shared }
    }

    /// The declared (topic, subscriber) pairs `filter` selects.
    fn pairs(&self, filter: &DlqFilter) -> Vec<(String, String)> {
        self.shared
            .topology
            .pairs()
            .into_iter()
            .filter(|(t, s)| filter.matches(t, s))
            .collect()
    }

    /// Takes up to `max` dead letters of one pair (unsettled, on `ch`).
    async fn take(
        &self,
        ch: &Channel,
        topic: &str,
        sub: &str,
        max: usize,
    ) -> Result<Vec<(DeadLetter, lapin::acker::Acker, Envelope)>, QueueError> {
        let queue = self.shared.topology.dlq(topic, sub);
        let mut out = Vec::new();
        while out.len() < max {
            let got = ch
                .basic_get(&queue, BasicGetOptions::default())
                .await
                .map_err(|e| storage("reading a dead-letter queue", e))?;
            let Some(got) = got else { break };
            let d = got.delivery;
            let mut env = super::envelope_of(&d.properties, topic);
            if env.reason.is_none() {
                // Not dead-lettered by Junction: the broker dropped it off a full
                // queue's head (`on_full: dead_letter_oldest`).
                if let Some((why, at_ms)) = broker_death(&d.properties) {
                    env.reason = Some(match (why.as_str(), self.shared.max_depth) {
                        ("maxlen", Some(max)) => {
                            backlog_full_reason(max, max, OnFull::DeadLetterOldest)
                        }
                        _ => format!("dead-lettered by RabbitMQ ({why})"),
                    });
                    env.dead_at_ms = Some(at_ms);
                }
            }
            let letter = DeadLetter {
                id: dead_letter_id(env.id.as_str(), sub),
                message: env.message(d.data),
                subscriber: sub.to_owned(),
                attempts: env.history.clone(),
                reason: env.reason.clone().unwrap_or_default(),
                dead_at_ms: env.dead_at_ms.unwrap_or(0),
            };
            out.push((letter, d.acker, env));
        }
        Ok(out)
    }

    /// Replays (back into the subscriber's queue, attempts reset) or purges one taken letter.
    async fn apply(
        &self,
        letter: &DeadLetter,
        acker: &lapin::acker::Acker,
        mut env: Envelope,
        topic: &str,
        action: DlqAction,
    ) -> Result<(), QueueError> {
        if action == DlqAction::Replay {
            env.attempts = 0;
            env.subscriber = None;
            env.reason = None;
            env.dead_at_ms = None;
            let queue = self.shared.topology.queue(topic, &letter.subscriber);
            self.shared
                .publish("", &queue, &env, &letter.message.body)
                .await?;
        }
        acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(|e| storage("removing a dead letter", e))
    }
}

/// Why and when (unix ms) the broker dead-lettered a message, from its
/// first `x-death` entry (the latest death).
fn broker_death(props: &lapin::BasicProperties) -> Option<(String, u64)> {
    let headers = props.headers().as_ref()?;
    let AMQPValue::FieldArray(deaths) = headers.inner().get("x-death")? else {
        return None;
    };
    let AMQPValue::FieldTable(first) = deaths.as_slice().first()? else {
        return None;
    };
    let why = match first.inner().get("reason") {
        Some(AMQPValue::LongString(s)) => s.to_string(),
        _ => "unknown".to_owned(),
    };
    let at_ms = match first.inner().get("time") {
        Some(AMQPValue::Timestamp(secs)) => secs.saturating_mul(1000),
        _ => now_ms(),
    };
    Some((why, at_ms))
}

/// Every declared queue's ready count: per subscriber its backlog (main queue
/// and ordering partitions), undelivered per topic (the largest subscriber
/// backlog, delay queues not counted) and dead letters per topic.
pub async fn read_depth(s: &Shared) -> Result<DepthSnapshot, QueueError> {
    let mut snap = DepthSnapshot::default();
    for (topic, sub) in s.topology.pairs() {
        let mut main = count(s, &s.topology.queue(&topic, &sub)).await?;
        if s.topology.has_partitions(&topic, &sub) {
            for queue in s.topology.partition_queues(&topic, &sub) {
                main += count(s, &queue).await?;
            }
        }
        let dead = count(s, &s.topology.dlq(&topic, &sub)).await?;
        let t = snap.topics.entry(topic.clone()).or_default();
        *t = (*t).max(main);
        *snap.subscribers.entry(sub).or_default() += main;
        *snap.dlq.entry(topic).or_default() += dead;
    }
    snap.total = snap.topics.values().sum();
    snap.dlq_total = snap.dlq.values().sum();
    Ok(snap)
}

/// `queue`'s ready count (recorded for `on_full: reject`, see `fill.rs`).
pub(super) async fn count(s: &Shared, queue: &str) -> Result<u64, QueueError> {
    // A passive declare of a missing queue closes the channel: one per queue.
    let ch = s.consume.channel().await?;
    let q = ch
        .queue_declare(
            queue,
            QueueDeclareOptions {
                passive: true,
                ..Default::default()
            },
            FieldTable::default(),
        )
        .await
        .map_err(|e| storage("reading a queue's depth", e))?;
    let _ = ch.close(200, "done").await;
    let ready = u64::from(q.message_count());
    s.fill.read(queue, ready);
    Ok(ready)
}

/// Closes a ledger channel: what it took and did not settle goes back.
async fn give_back(ch: Channel) {
    let _ = ch.close(200, "done").await;
}

#[async_trait]
impl Ledger for RabbitLedger {
    async fn message_status(&self, _id: &str) -> Result<Option<MessageStatus>, QueueError> {
        Err(QueueError::Unsupported(
            "the rabbitmq backend keeps no per-message status: see /admin/dlq and the delivery metrics",
        ))
    }

    async fn dlq_list(
        &self,
        filter: DlqFilter,
        after: Option<String>,
        limit: usize,
    ) -> Result<DlqPage, QueueError> {
        let ch = self.shared.consume.channel().await?;
        let mut items = Vec::new();
        let mut passed = after.is_none();
        let mut more = false;
        'pairs: for (topic, sub) in self.pairs(&filter) {
            // Read the whole queue: the cursor may sit anywhere in it.
            let taken = self.take(&ch, &topic, &sub, usize::MAX).await;
            let taken = match taken {
                Ok(t) => t,
                Err(e) => {
                    give_back(ch).await;
                    return Err(e);
                }
            };
            for (letter, _, _) in taken {
                if !passed {
                    passed = after.as_deref() == Some(letter.id.as_str());
                    continue;
                }
                if items.len() == limit {
                    more = true;
                    break 'pairs;
                }
                items.push(letter);
            }
        }
        give_back(ch).await;
        let next = more.then(|| items.last().map(|d| d.id.clone())).flatten();
        Ok(DlqPage { items, next })
    }

    async fn dlq_apply(&self, dead_letter_id: &str, action: DlqAction) -> Result<(), QueueError> {
        let (_, sub) = split_dead_letter_id(dead_letter_id).ok_or(QueueError::NotFound)?;
        let filter = DlqFilter {
            topic: None,
            subscriber: Some(sub.to_owned()),
        };
        for (topic, sub) in self.pairs(&filter) {
            let ch = self.shared.consume.channel().await?;
            let result = async {
                for (letter, acker, env) in self.take(&ch, &topic, &sub, usize::MAX).await? {
                    if letter.id == dead_letter_id {
                        self.apply(&letter, &acker, env, &topic, action).await?;
                        return Ok(true);
                    }
                }
                Ok::<_, QueueError>(false)
            }
            .await;
            give_back(ch).await;
            if result? {
                return Ok(());
            }
        }
        Err(QueueError::NotFound)
    }

    async fn dlq_apply_all(&self, filter: DlqFilter, action: DlqAction) -> Result<u64, QueueError> {
        let mut done = 0;
        for (topic, sub) in self.pairs(&filter) {
            // Only what is there now: letters dying meanwhile wait for the next call.
            let present = count(&self.shared, &self.shared.topology.dlq(&topic, &sub)).await?;
            let ch = self.shared.consume.channel().await?;
            let result = async {
                let taken = self
                    .take(
                        &ch,
                        &topic,
                        &sub,
                        usize::try_from(present).unwrap_or(usize::MAX),
                    )
                    .await?;
                for (letter, acker, env) in taken {
                    self.apply(&letter, &acker, env, &topic, action).await?;
                    done += 1;
                }
                Ok::<_, QueueError>(())
            }
            .await;
            give_back(ch).await;
            result?;
        }
        Ok(done)
    }

    fn depth(&self) -> DepthSnapshot {
        self.shared.depth.read().clone()
    }
}
