//! `max_depth` on NATS: a subscriber whose backlog passed it sheds its oldest
//! waiting events into its dead letters.
//!
//! JetStream has no per-consumer length limit (a stream's `max_msgs` bounds the
//! topic for every subscriber at once, which is what must not happen: a dead
//! subscriber may not block a topic). So the depth refresher, after reading
//! each consumer's backlog, pulls the excess from a full subscriber's consumer
//! itself — a competing consumer, so it gets the oldest messages no dispatcher
//! holds — dead-letters them with the backlog-full reason and acks them. Only
//! `on_full: dead_letter_oldest` exists here: a publish cannot leave one
//! consumer out, so "refuse the new event for this subscriber" is not on offer
//! (the config check says so). The bound is approximate: checked every refresh
//! (2 s), at most [`MAX_PER_ROUND`] per subscriber and round, and instances
//! sharing the queue each shed what they see (together at most that many more).

use std::sync::Arc;

use async_nats::jetstream::{self, AckKind};
use futures::StreamExt;

use super::{envelope_of, now_ms, partition_consumer, storage, token, Shared};

use crate::types::*;

/// Most messages one instance sheds per subscriber per refresh.
pub const MAX_PER_ROUND: u64 = 200;

/// Sheds the excess of `sub` (of `topic`) whose backlog is `backlog`.
pub async fn shed_excess(
    s: &Arc<Shared>,
    topic: &str,
    sub: &str,
    backlog: u64,
    max: u64,
) -> Result<u64, QueueError> {
    let excess = backlog.saturating_sub(max).min(MAX_PER_ROUND);
    if excess == 0 {
        return Ok(0);
    }
    let stream =
        s.js.get_stream(s.stream_name(topic))
            .await
            .map_err(|e| storage("opening a stream", e))?;
    // The subscriber's own consumer first, then its ordering partitions (one
    // message each at most: a partition hands out one at a time).
    let mut names = vec![token(sub)];
    if s.ordered
        .lock()
        .contains(&(topic.to_owned(), sub.to_owned()))
    {
        names.extend((0..s.cfg.ordering_partitions).map(|i| partition_consumer(sub, i)));
    }
    let own = s.own_subjects(topic, sub);
    let mut shed = 0;
    for (n, name) in names.iter().enumerate() {
        if shed >= excess {
            break;
        }
        let c: jetstream::consumer::PullConsumer = stream
            .get_consumer(name)
            .await
            .map_err(|e| storage("opening a consumer", e))?;
        let partition = n > 0;
        let want = if partition { 1 } else { excess - shed };
        // A short wait rather than none: a partition consumer at its
        // `max_ack_pending` does not answer a no-wait pull at once.
        let mut batch = c
            .batch()
            .max_messages(want as usize)
            .expires(std::time::Duration::from_millis(300))
            .messages()
            .await
            .map_err(|e| storage("pulling backlog to shed", e))?;
        while let Some(Ok(m)) = batch.next().await {
            let subject = m.subject.as_str();
            let ours = partition || own.iter().any(|o| o == subject);
            if !ours {
                // Not this subscriber's to deliver (its partition consumer has
                // the keyed ones): acked unread, as its subscription would.
                let _ = m.ack().await;
                continue;
            }
            if dead_letter(s, topic, sub, &m, backlog, max).await.is_ok() {
                let _ = m.ack().await;
                shed += 1;
            } else {
                let _ = m.ack_with(AckKind::Nak(None)).await;
            }
        }
    }
    if shed > 0 {
        tracing::warn!(subscriber = %sub, topic = %topic, shed, backlog, max_depth = max, "subscriber backlog full: oldest waiting events dead-lettered");
    }
    Ok(shed)
}

/// Publishes `m` to `sub`'s dead letters with the backlog-full reason.
async fn dead_letter(
    s: &Arc<Shared>,
    topic: &str,
    sub: &str,
    m: &jetstream::Message,
    backlog: u64,
    max: u64,
) -> Result<(), QueueError> {
    let now = now_ms();
    let mut env = envelope_of(m, topic);
    env.mark_dead(
        shed_attempt(now),
        sub,
        backlog_full_reason(backlog, max, OnFull::DeadLetterOldest),
        now,
    );
    s.publish(s.dlq_subject(topic, sub), &env, m.payload.clone())
        .await
}
