//! Pulls from a subscriber's durable consumer, and settles through JetStream acks.
//!
//! A subscription asks its subscriber's own consumer for messages when the
//! dispatcher does (a pull without waiting, then one that waits up to a
//! second), so nothing is pulled ahead while the subscriber is paused. Once
//! the subscriber has ordering-partition consumers (looked for every few
//! seconds, and at once when a keyed subject shows up), a [`Feed`] also pulls
//! its partitions, and the wait alternates between the two (see `pull_some`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, AckKind};
use async_trait::async_trait;
use futures::StreamExt;

use super::feed::{Feed, Released};
use super::{envelope_of, now_ms, storage, token, Shared};
use crate::contract::*;
use crate::envelope::Envelope;
use crate::types::*;

/// Longest wait for a delivery before `next` returns an empty batch.
const IDLE: Duration = Duration::from_secs(1);
/// How much longer than asked a pull may take before it counts as lost.
const PULL_SLACK: Duration = Duration::from_secs(2);
/// How often a subscription without partition consumers looks for them.
const PROBE_EVERY: Duration = Duration::from_secs(2);
/// With partitions, how long a wait for them lasts before the subscriber's
/// own consumer is asked again (the most an unkeyed event then waits).
const ORDERED_SLICE: Duration = Duration::from_millis(100);

/// What a delivery's ack handle holds.
struct Token {
    message: jetstream::Message,
    envelope: Envelope,
    stream_seq: u64,
}

pub struct NatsSubscription {
    shared: Arc<Shared>,
    topic: String,
    subscriber: String,
    consumer: Option<jetstream::consumer::PullConsumer>,
    settler: Arc<NatsSettler>,
    /// The pulls (see `feed.rs`).
    feed: Option<Feed>,
    /// When to look for partition consumers next (while `feed` is `None`).
    probe_at: Instant,
}

impl NatsSubscription {
    pub fn new(shared: Arc<Shared>, topic: &str, subscriber: &str) -> Self {
        Self {
            settler: Arc::new(NatsSettler {
                shared: shared.clone(),
                released: Released::default(),
            }),
            shared,
            topic: topic.to_owned(),
            subscriber: subscriber.to_owned(),
            consumer: None,
            feed: None,
            probe_at: Instant::now(),
        }
    }

    /// Starts the partition feed once the subscriber has partition consumers
    /// (looked for every few seconds until then).
    async fn probe(&mut self) -> Result<(), QueueError> {
        if self.feed.is_some() || Instant::now() < self.probe_at {
            return Ok(());
        }
        self.probe_at = Instant::now() + PROBE_EVERY;
        let every = PROBE_EVERY;
        if self
            .shared
            .has_ordered(&self.topic, &self.subscriber, every)
            .await
        {
            let released = self.settler.released.clone();
            let feed = Feed::start(&self.shared, &self.topic, &self.subscriber, released);
            self.feed = Some(feed.await?);
        }
        Ok(())
    }

    /// Up to `max` messages, each with whether a partition consumer gave it:
    /// what the partitions have now, then the subscriber's own consumer
    /// without waiting; if neither had any, waits up to [`IDLE`] for either.
    async fn pull_some(
        &mut self,
        max: usize,
    ) -> Result<Vec<(jetstream::Message, bool)>, QueueError> {
        if self.feed.is_none() {
            let mut raw = self.pull(max, None).await?;
            if raw.is_empty() {
                // Nothing now: wait for one, then take what else is there.
                raw = self.pull(1, Some(IDLE)).await?;
                if !raw.is_empty() && max > 1 {
                    // What else there is; an error here leaves the one taken.
                    raw.extend(self.pull(max - 1, None).await.unwrap_or_default());
                }
            }
            return Ok(raw.into_iter().map(|m| (m, false)).collect());
        }
        let end = Instant::now() + IDLE;
        loop {
            let feed = self.feed.as_mut().expect("checked above");
            let mut raw: Vec<_> = feed
                .take(max, Duration::ZERO)
                .await
                .into_iter()
                .map(|m| (m, true))
                .collect();
            if raw.len() < max {
                match self.pull(max - raw.len(), None).await {
                    Ok(own) => raw.extend(own.into_iter().map(|m| (m, false))),
                    // The partition messages taken are handed out all the
                    // same (dropped, they would hold their partitions).
                    Err(_) if !raw.is_empty() => return Ok(raw),
                    Err(e) => return Err(e),
                }
            }
            if !raw.is_empty() || Instant::now() >= end {
                return Ok(raw);
            }
            // A long pull on the own consumer cannot be given up when a
            // partition message comes (what it then received would wait for
            // `ack_wait`), so the wait is the partitions' channel, in short
            // slices between pulls without waiting.
            let feed = self.feed.as_mut().expect("checked above");
            let got = feed.take(max, ORDERED_SLICE).await;
            if !got.is_empty() {
                return Ok(got.into_iter().map(|m| (m, true)).collect());
            }
        }
    }

    async fn consumer(&mut self) -> Result<jetstream::consumer::PullConsumer, QueueError> {
        if let Some(c) = &self.consumer {
            return Ok(c.clone());
        }
        let stream = self
            .shared
            .js
            .get_stream(self.shared.stream_name(&self.topic))
            .await
            .map_err(|e| storage("opening a jetstream stream", e))?;
        let c: jetstream::consumer::PullConsumer = stream
            .get_consumer(&token(&self.subscriber))
            .await
            .map_err(|e| storage("opening a jetstream consumer", e))?;
        self.consumer = Some(c.clone());
        Ok(c)
    }

    /// Pulls up to `max`, waiting up to `wait` for the first.
    /// Pulls up to `max`, waiting up to `wait` for the first. Bounded on this
    /// side too: a pull request sent just before the connection dropped is never
    /// answered, and would otherwise hold this lane forever.
    async fn pull(
        &mut self,
        max: usize,
        wait: Option<Duration>,
    ) -> Result<Vec<jetstream::Message>, QueueError> {
        let bound = wait.unwrap_or_default() + PULL_SLACK;
        match tokio::time::timeout(bound, self.pull_unbounded(max, wait)).await {
            Ok(result) => result,
            Err(_) => {
                self.consumer = None;
                Err(storage(
                    "pulling from jetstream",
                    "no answer (connection lost?)",
                ))
            }
        }
    }

    async fn pull_unbounded(
        &mut self,
        max: usize,
        wait: Option<Duration>,
    ) -> Result<Vec<jetstream::Message>, QueueError> {
        let consumer = self.consumer().await?;
        let batch = match wait {
            Some(wait) => {
                consumer
                    .batch()
                    .max_messages(max)
                    .expires(wait)
                    .messages()
                    .await
            }
            None => consumer.fetch().max_messages(max).messages().await,
        };
        let mut batch = match batch {
            Ok(b) => b,
            Err(e) => {
                self.consumer = None;
                return Err(storage("pulling from jetstream", e));
            }
        };
        let mut out = Vec::new();
        while let Some(m) = batch.next().await {
            match m {
                Ok(m) => out.push(m),
                Err(e) if out.is_empty() => {
                    self.consumer = None;
                    return Err(storage("pulling from jetstream", e));
                }
                Err(_) => break,
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Subscription for NatsSubscription {
    async fn next(&mut self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        tracing::trace!(subscriber = %self.subscriber, max, "jetstream next");
        self.probe().await?;
        let raw = self.pull_some(max).await?;
        let own = self.shared.own_subjects(&self.topic, &self.subscriber);
        let keyed = self.shared.subject(&self.topic, "k.");
        let mut out = Vec::with_capacity(raw.len());
        for (m, from_partition) in raw {
            let subject = m.subject.as_str();
            if !from_partition && !own.iter().any(|o| o == subject) {
                // A keyed event (its partition consumer delivers it), or a
                // replay addressed to another subscriber of the topic.
                if subject.starts_with(&keyed) {
                    self.probe_at = Instant::now();
                }
                let _ = m.ack().await;
                continue;
            }
            let Ok(info) = m.info() else {
                let _ = m.ack().await;
                continue;
            };
            let (seq, delivered) = (info.stream_sequence, info.delivered.max(1) as u32);
            let env = envelope_of(&m, &self.topic);
            let released = self.settler.released.lock().get(&seq).copied().unwrap_or(0);
            let attempts = (delivered - 1).saturating_sub(released);
            let message = Arc::new(env.message(m.payload.to_vec()));
            out.push(Delivery::new(
                message,
                self.subscriber.clone(),
                attempts,
                env.enqueued_at_ms,
                AckToken::Other(Box::new(Token {
                    message: m,
                    envelope: env,
                    stream_seq: seq,
                })),
                self.settler.clone(),
            ));
        }
        Ok(out)
    }
}

struct NatsSettler {
    shared: Arc<Shared>,
    /// Releases per stream sequence (not attempts; JetStream counts them as
    /// deliveries), shared with the partition feed's give-backs.
    released: Released,
}

#[async_trait]
impl Settle for NatsSettler {
    async fn settle(&self, d: Delivery, how: Settlement) -> Result<(), QueueError> {
        let AckToken::Other(token) = d.token else {
            return Err(storage("settling", "not a jetstream delivery"));
        };
        let Ok(token) = token.downcast::<Token>() else {
            return Err(storage("settling", "not a jetstream delivery"));
        };
        let Token {
            message,
            envelope: mut env,
            stream_seq,
        } = *token;
        let kind = match how {
            Settlement::Ack { .. } => AckKind::Ack,
            Settlement::Retry { after, .. } => AckKind::Nak(Some(after)),
            Settlement::Release => {
                *self.released.lock().entry(stream_seq).or_default() += 1;
                return message
                    .ack_with(AckKind::Nak(None))
                    .await
                    .map_err(|e| storage("giving a delivery back", e));
            }
            Settlement::Dead { attempt, reason } => {
                env.attempts = d.attempts;
                env.mark_dead(attempt, &d.subscriber, reason, now_ms());
                let subject = self.shared.dlq_subject(&env.topic, &d.subscriber);
                if let Err(e) = self
                    .shared
                    .publish(subject, &env, d.message.body.clone())
                    .await
                {
                    // Not recorded: give it back, so it is attempted again rather than lost.
                    let _ = message.ack_with(AckKind::Nak(None)).await;
                    return Err(e);
                }
                AckKind::Ack
            }
        };
        self.released.lock().remove(&stream_seq);
        message
            .ack_with(kind)
            .await
            .map_err(|e| storage("acknowledging a delivery", e))
    }
}
