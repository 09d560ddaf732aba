//! The publishing path: declare what the event needs, then one confirmed
//! publish through the topic's exchange (or its ordered exchange for a keyed
//! event), or with `on_full: reject` and a full subscriber, around it (see
//! [`super::fill`]).

use super::{fill, ledger, RabbitBroker};
use crate::envelope::Envelope;
use crate::types::*;

impl RabbitBroker {
    /// Publishes `req` as `id` and waits for the broker's confirmation.
    pub(super) async fn publish_as(
        &self,
        req: &EnqueueRequest,
        id: &MessageId,
    ) -> Result<(), QueueError> {
        let s = &self.shared;
        let subs = req.distinct_subscribers();
        if subs.is_empty() {
            return Ok(());
        }
        let keyed = req.ordering_key.is_some();
        let ch = s.link.publisher().await?;
        if let Err(first) = self.declare(&ch, &req.topic, &subs, keyed).await {
            // Declarations are idempotent and nothing was published yet:
            // once more, on a new channel (and connection, if the broker
            // closed this one under the declaration).
            tracing::debug!(error = %first, "declaring a topic failed; trying once more");
            let ch = s.link.publisher().await?;
            self.declare(&ch, &req.topic, &subs, keyed).await?;
        }
        // Through its partition: one delivery of it in flight at a time.
        let partition = req
            .ordering_key
            .as_deref()
            .map(|key| ordering_partition(key, s.topology.partitions()));
        let env = Envelope::new(id, req, subs.clone(), now_ms());
        let max = match (s.max_depth, s.on_full) {
            (Some(max), OnFull::Reject) => max,
            _ => {
                return self
                    .publish_to_all(&req.topic, partition, &env, &req.body)
                    .await
            }
        };
        // Each subscriber's queue this event goes to, and which are full.
        let targets: Vec<String> = subs
            .iter()
            .map(|sub| match partition {
                Some(i) => s.topology.partition_queue(&req.topic, sub, i),
                None => s.topology.queue(&req.topic, sub),
            })
            .collect();
        let mut full = Vec::new();
        for (i, queue) in targets.iter().enumerate() {
            let verdict = match s.fill.verdict(queue, max) {
                fill::Verdict::Read => match ledger::count(s, queue).await {
                    Ok(_) => s.fill.verdict(queue, max),
                    Err(e) => {
                        // Advisory only: the queue's own bound still holds.
                        tracing::debug!(error = %e, queue, "cannot read a queue's count; publishing");
                        fill::Verdict::Room
                    }
                },
                v => v,
            };
            if let fill::Verdict::Full(waiting) = verdict {
                full.push((i, waiting));
            }
        }
        let published = if full.is_empty() {
            self.publish_to_all(&req.topic, partition, &env, &req.body)
                .await
        } else if full.len() == targets.len() {
            let depth = full.iter().map(|(_, n)| *n).min().unwrap_or(max);
            return Err(QueueError::Full { depth, max });
        } else {
            self.publish_around_full(&subs, &targets, &full, max, &env, &req.body)
                .await
        };
        // A refusal by the broker: its count was ahead of ours.
        if let Err(QueueError::Full { .. }) = &published {
            s.fill.stale(targets.iter().map(String::as_str));
        }
        published
    }

    /// The usual route: the topic's fanout exchange, or for a keyed event its
    /// ordered exchange with the partition as routing key.
    async fn publish_to_all(
        &self,
        topic: &str,
        partition: Option<u16>,
        env: &Envelope,
        body: &[u8],
    ) -> Result<(), QueueError> {
        let s = &self.shared;
        match partition {
            Some(i) => {
                s.publish(
                    &s.topology.ordered_exchange(topic),
                    &i.to_string(),
                    env,
                    body,
                )
                .await
            }
            None => s.publish(&s.topology.exchange(topic), "", env, body).await,
        }
    }

    /// `on_full: reject` with some subscribers full (`full`: their index in
    /// `subs`/`targets` and backlog): the event becomes a dead letter of each
    /// of those, then one publish reaches the others' queues (see [`fill`]).
    /// The dead letters go first: if the publish fails after them, the retry
    /// sheds a second copy, which is a duplicate dead letter, not a loss.
    async fn publish_around_full(
        &self,
        subs: &[String],
        targets: &[String],
        full: &[(usize, u64)],
        max: u64,
        env: &Envelope,
        body: &[u8],
    ) -> Result<(), QueueError> {
        let s = &self.shared;
        let now = now_ms();
        for (i, waiting) in full {
            let mut dead = env.clone();
            dead.mark_dead(
                shed_attempt(now),
                &subs[*i],
                backlog_full_reason(*waiting, max, OnFull::Reject),
                now,
            );
            s.publish("", &s.topology.dlq(&env.topic, &subs[*i]), &dead, body)
                .await?;
        }
        let healthy: Vec<&str> = (0..targets.len())
            .filter(|i| !full.iter().any(|(f, _)| f == i))
            .map(|i| targets[i].as_str())
            .collect();
        s.publish_routed("", healthy[0], &healthy[1..], env, body)
            .await
    }

    /// The topic's exchange and the subscribers' queues; with `keyed`, also
    /// the ordered exchange and the subscribers' partition queues.
    async fn declare(
        &self,
        ch: &lapin::Channel,
        topic: &str,
        subs: &[String],
        keyed: bool,
    ) -> Result<(), QueueError> {
        let topology = &self.shared.topology;
        topology.ensure(ch, topic, subs).await?;
        if keyed {
            topology.ensure_ordered(ch, topic, subs).await?;
        }
        Ok(())
    }
}
