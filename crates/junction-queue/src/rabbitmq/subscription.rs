//! One subscription per dispatcher lane, and the settling of its deliveries.
//!
//! A subscription consumes its subscriber's main queue on a channel with the
//! lane's prefetch and, once the topic gets keyed events, every partition
//! queue of its subscriber on a second channel with a prefetch of 1 per
//! consumer (see [`super::ordered`]). The partition queues are
//! single-active-consumer: of all the lanes of all instances consuming a
//! partition, the broker delivers to one, and with a prefetch of 1 only one
//! delivery of the partition is out at a time. So a key's events, which all
//! go through one partition, are delivered one at a time in publish order,
//! and a retrying one (held in place, see [`super::ordered`]) holds up the
//! other keys of its partition until it is settled. When the lane holding a
//! partition goes (its channel or connection closes), the broker requeues
//! what it held and gives the queue to another consumer, which gets the
//! requeued delivery first. Keyed events of one subscriber are thus worked
//! on by one lane per partition, whatever the lanes and instances; and a
//! partition delivery dropped without settling holds its partition until its
//! channel closes (the subscription goes, or the broker's `consumer_timeout`).
//!
//! `next` merges every consumer's deliveries and the held retries that are
//! due; a delivery taken from a consumer stays in the merged stream until
//! returned, so the idle timeout loses none. A consumer that ends (its
//! channel or connection closed) closes both channels and fails this `next`;
//! the next call reopens everything, and retries held from before are
//! dropped, the broker having requeued them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::{self, BoxStream, SelectAll};
use futures::{FutureExt, StreamExt};
use lapin::acker::Acker;
use lapin::options::{BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions};
use lapin::types::FieldTable;
use lapin::Channel;
use tokio::sync::mpsc;

use super::ordered;
use super::{now_ms, storage, Shared};
use crate::contract::*;
use crate::envelope::Envelope;
use crate::types::*;

/// Longest wait for a delivery before `next` returns an empty batch.
const IDLE: Duration = Duration::from_secs(1);
/// Pause before consuming the partitions again after that failed.
const PARTITIONS_RETRY: Duration = Duration::from_secs(2);

/// What a delivery's ack handle holds.
pub struct Token {
    acker: Acker,
    envelope: Envelope,
    /// For a delivery from a partition queue, the subscription's epoch when
    /// it was taken: its retries are held in place, and handed back only
    /// while the channel it came on is still the one consumed.
    ordered: Option<u64>,
}

/// An ordered retry (see [`super::ordered`]), handed back to its subscription once due.
pub struct Held {
    pub message: Arc<Message>,
    /// Its ack handle (still unacked) and envelope, the failed attempt recorded.
    pub token: Token,
}

/// Hands `held` back through `back` after `after`. A subscription gone by
/// then drops it: its channels closed, so the broker requeued the message.
pub fn hold(back: mpsc::UnboundedSender<Held>, held: Held, after: Duration) {
    tokio::spawn(async move {
        tokio::time::sleep(after).await;
        let _ = back.send(held);
    });
}

/// Which queue a consumer reads.
#[derive(Clone, Copy)]
enum Source {
    Main,
    Partition,
}

/// What a consumer yields, `None` once it ended (its channel or connection
/// closed, or the broker cancelled it).
type Item = (
    Source,
    Option<Result<lapin::message::Delivery, lapin::Error>>,
);

/// One consumer's deliveries, then its end.
type Feed = BoxStream<'static, Item>;

fn feed(source: Source, consumer: lapin::Consumer) -> Feed {
    consumer
        .map(move |d| (source, Some(d)))
        .chain(stream::once(async move { (source, None) }))
        .boxed()
}

/// What `next` waited for.
enum Event {
    Held(Held),
    /// From the merged consumers (`None`: there are none).
    Feed(Option<Item>),
}

pub struct RabbitSubscription {
    shared: Arc<Shared>,
    topic: String,
    subscriber: String,
    prefetch: usize,
    /// The main queue's channel, while consuming.
    main: Option<Channel>,
    /// The partition queues' channel, once the topic is known to be ordered.
    partitions: Option<Channel>,
    /// Not before this is consuming the partitions tried again.
    partitions_retry_at: Instant,
    /// Every consumer of both channels, merged.
    feeds: SelectAll<Feed>,
    /// Ordered retries handed back when due.
    held: mpsc::UnboundedReceiver<Held>,
    /// Counts reopenings: a held retry from an earlier epoch came on a
    /// channel since closed (the broker requeued it).
    epoch: u64,
    settler: Arc<dyn Settle>,
}

impl RabbitSubscription {
    pub fn new(shared: Arc<Shared>, topic: &str, subscriber: &str, prefetch: usize) -> Self {
        let (back, held) = mpsc::unbounded_channel();
        Self {
            settler: Arc::new(RabbitSettler {
                shared: shared.clone(),
                back,
            }),
            shared,
            topic: topic.to_owned(),
            subscriber: subscriber.to_owned(),
            prefetch,
            main: None,
            partitions: None,
            partitions_retry_at: Instant::now(),
            feeds: SelectAll::new(),
            held,
            epoch: 0,
        }
    }

    /// Declares the subscriber's queues and starts consuming on a channel of
    /// its own, and the partitions too if the topic is ordered.
    pub async fn open(&mut self) -> Result<(), QueueError> {
        let ch = self.shared.consume.channel().await?;
        self.shared
            .topology
            .ensure(&ch, &self.topic, std::slice::from_ref(&self.subscriber))
            .await?;
        let prefetch = u16::try_from(self.prefetch.max(1)).unwrap_or(u16::MAX);
        ch.basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(|e| storage("setting prefetch", e))?;
        let consumer = ch
            .basic_consume(
                &self.shared.topology.queue(&self.topic, &self.subscriber),
                "",
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|e| storage("starting a rabbitmq consumer", e))?;
        self.feeds.push(feed(Source::Main, consumer));
        self.main = Some(ch);
        self.partitions_retry_at = Instant::now();
        self.consume_partitions().await;
        Ok(())
    }

    /// Starts consuming the partitions if the topic is ordered and they are
    /// not consumed yet. A failure is logged and tried again later: the main
    /// queue's deliveries go on meanwhile.
    async fn consume_partitions(&mut self) {
        if self.partitions.is_some()
            || Instant::now() < self.partitions_retry_at
            || !ordered::is_ordered(&self.shared, &self.topic).await
        {
            return;
        }
        match ordered::consume_partitions(&self.shared, &self.topic, &self.subscriber).await {
            Ok((ch, consumers)) => {
                for c in consumers {
                    self.feeds.push(feed(Source::Partition, c));
                }
                self.partitions = Some(ch);
            }
            Err(e) => {
                tracing::warn!(
                    topic = %self.topic, subscriber = %self.subscriber, error = %e,
                    "consuming the ordering partitions failed; trying again shortly"
                );
                self.partitions_retry_at = Instant::now() + PARTITIONS_RETRY;
            }
        }
    }

    /// Closes both channels (the broker requeues what they held) and drops
    /// every consumer; the next `next` reopens.
    fn reset(&mut self) {
        // The channels before their consumers: see `ordered::close_now`.
        for ch in [self.main.take(), self.partitions.take()]
            .into_iter()
            .flatten()
        {
            ordered::close_now(&ch);
        }
        self.feeds = SelectAll::new();
        self.epoch += 1;
    }

    fn delivery(&self, source: Source, d: lapin::message::Delivery) -> Delivery {
        let env = super::envelope_of(&d.properties, &self.topic);
        let message = Arc::new(env.message(d.data));
        let ordered = match source {
            Source::Main => None,
            Source::Partition => Some(self.epoch),
        };
        self.hand(
            message,
            Token {
                acker: d.acker,
                envelope: env,
                ordered,
            },
        )
    }

    fn hand(&self, message: Arc<Message>, token: Token) -> Delivery {
        Delivery::new(
            message,
            self.subscriber.clone(),
            token.envelope.attempts,
            token.envelope.enqueued_at_ms,
            AckToken::Other(Box::new(token)),
            self.settler.clone(),
        )
    }

    /// The delivery an event brings, if any; an ended consumer resets and fails.
    fn take(&mut self, event: Event) -> Result<Option<Delivery>, QueueError> {
        match event {
            Event::Held(h) if h.token.ordered == Some(self.epoch) => {
                Ok(Some(self.hand(h.message, h.token)))
            }
            // Its channel was closed since: the broker requeued it.
            Event::Held(_) => Ok(None),
            Event::Feed(Some((source, Some(Ok(d))))) => Ok(Some(self.delivery(source, d))),
            Event::Feed(Some((_, Some(Err(e))))) => {
                self.reset();
                Err(storage("consuming from rabbitmq", e))
            }
            Event::Feed(_) => {
                self.reset();
                Err(storage(
                    "consuming from rabbitmq",
                    std::io::Error::other("the consumer was cancelled"),
                ))
            }
        }
    }

    /// Adds to `out`, up to `max`, what is ready now without waiting.
    fn fill(&mut self, out: &mut Vec<Delivery>, max: usize) -> Result<(), QueueError> {
        while out.len() < max {
            let event = match self.held.try_recv() {
                Ok(h) => Event::Held(h),
                Err(_) => match self.feeds.next().now_or_never() {
                    Some(f) => Event::Feed(f),
                    None => break,
                },
            };
            out.extend(self.take(event)?);
        }
        Ok(())
    }
}

#[async_trait]
impl Subscription for RabbitSubscription {
    async fn next(&mut self, max: usize) -> Result<Vec<Delivery>, QueueError> {
        if self.main.is_none() {
            // The connection was lost: the broker requeued what the channels held.
            self.open().await?;
        } else {
            self.consume_partitions().await;
        }
        let max = max.max(1);
        let mut out = Vec::new();
        self.fill(&mut out, max)?;
        let deadline = tokio::time::Instant::now() + IDLE;
        while out.is_empty() {
            // Both are cancel-safe: what the timeout interrupts stays queued.
            let waited = tokio::time::timeout_at(deadline, async {
                tokio::select! {
                    Some(h) = self.held.recv() => Event::Held(h),
                    f = self.feeds.next() => Event::Feed(f),
                }
            })
            .await;
            let Ok(event) = waited else { break };
            out.extend(self.take(event)?);
        }
        self.fill(&mut out, max)?;
        Ok(out)
    }
}

impl Drop for RabbitSubscription {
    fn drop(&mut self) {
        // The channels before their consumers: see `ordered::close_now`.
        for ch in self.main.iter().chain(self.partitions.iter()) {
            ordered::close_now(ch);
        }
    }
}

struct RabbitSettler {
    shared: Arc<Shared>,
    /// Where held ordered retries go back to the subscription.
    back: mpsc::UnboundedSender<Held>,
}

#[async_trait]
impl Settle for RabbitSettler {
    async fn settle(&self, d: Delivery, how: Settlement) -> Result<(), QueueError> {
        let AckToken::Other(token) = d.token else {
            return Err(storage(
                "settling",
                std::io::Error::other("not a rabbitmq delivery"),
            ));
        };
        let Ok(token) = token.downcast::<Token>() else {
            return Err(storage(
                "settling",
                std::io::Error::other("not a rabbitmq delivery"),
            ));
        };
        let Token {
            acker,
            envelope: mut env,
            ordered,
        } = *token;
        // A keyed delivery is held in place: retried after `after` (a delay
        // queue would put it behind later events of its key), or, not
        // attempted (an open breaker, shutdown), handed back at once with the
        // attempts recorded while held (a requeue would restart from the
        // broker's copy). A subscription gone by then drops it: its channel's
        // close requeued it.
        let hold_for = match (&how, ordered) {
            (Settlement::Retry { after, .. }, Some(_)) => Some(*after),
            (Settlement::Release, Some(_)) => Some(Duration::ZERO),
            _ => None,
        };
        if let Some(after) = hold_for {
            if let Settlement::Retry { attempt, .. } = how {
                env.record(attempt);
            }
            let token = Token {
                acker,
                envelope: env,
                ordered,
            };
            let held = Held {
                message: d.message,
                token,
            };
            hold(self.back.clone(), held, after);
            return Ok(());
        }
        let s = &self.shared;
        let topology = &s.topology;
        let forwarded = match how {
            Settlement::Ack { .. } => Ok(()),
            Settlement::Release => {
                return acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        ..Default::default()
                    })
                    .await
                    .map_err(|e| storage("giving a delivery back", e));
            }
            Settlement::Retry { attempt, after } => {
                env.record(attempt);
                match s.link.publisher().await {
                    Ok(ch) => match topology
                        .ensure_delay(&ch, &env.topic, &d.subscriber, after.as_millis() as u64)
                        .await
                    {
                        Ok(delay) => s.publish("", &delay, &env, &d.message.body).await,
                        Err(e) => Err(e),
                    },
                    Err(e) => Err(e),
                }
            }
            Settlement::Dead { attempt, reason } => {
                env.mark_dead(attempt, &d.subscriber, reason, now_ms());
                let dlq = topology.dlq(&env.topic, &d.subscriber);
                s.publish("", &dlq, &env, &d.message.body).await
            }
        };
        if let Err(e) = forwarded {
            // Not recorded: give it back, so it is attempted again rather than lost.
            let _ = acker
                .nack(BasicNackOptions {
                    requeue: true,
                    ..Default::default()
                })
                .await;
            return Err(e);
        }
        acker
            .ack(BasicAckOptions::default())
            .await
            .map_err(|e| storage("acknowledging a delivery", e))
    }
}
