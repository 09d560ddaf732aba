//! The RabbitMQ backend: broker-native fan-out, acks, delays and dead letters.
//!
//! Per topic a durable fanout exchange; per subscriber a durable queue bound to
//! it (quorum by default, classic configurable), so fan-out is the broker's
//! topology and several instances consuming one queue are competing consumers.
//! A publish is answered once the broker confirmed it (publisher confirms,
//! persistent messages, `mandatory` so an unroutable one is an error, not a
//! silent drop). Each consumer channel has `prefetch` = its lane's share of the
//! subscriber's concurrency and acks manually: a delivery an instance took but
//! never settled (it died) is redelivered by the broker to another. `retry(after)`
//! publishes the message (attempts + 1, history) to a delay queue whose TTL
//! dead-letters it back (see [`topology`]), then acks the original;
//! `dead_letter(reason)` publishes it to the subscriber's `.dlq` queue, then
//! acks. Both publish with confirms before the ack, so a crash in between
//! duplicates, never loses.
//!
//! Ordering keys (`ordering_per_key`): a keyed event goes through one of
//! `ordering_partitions` partitions (`ordering_partition(key, P)`, the same on
//! every instance): to the topic's direct exchange `{topic}#ordered`, which
//! routes it into the subscriber's partition queue `{topic}.{sub}#{i}`, a
//! single-active-consumer queue each subscription consumes with a prefetch
//! of one. So of all the lanes of all instances, one at a time holds a
//! partition, and one delivery of it is out at a time: a key's events are
//! delivered one at a time, in publish order, to each subscriber. The price:
//! a partition's keys wait for each other, and a retrying event (held in
//! place for `after`, unacked, rather than sent through a delay queue behind
//! the key's later events, so its delay is exact) holds up the other keys of
//! its partition.
//! RabbitMQ's `consumer_timeout` (30 min by default) closes a channel holding
//! a delivery longer, which requeues it: an ordered retry longer than that is
//! redelivered early rather than held, and the attempt recorded while held is
//! not in the requeued copy. Changing `ordering_partitions` under running
//! traffic moves keys between partitions, so order holds only for events
//! published after every instance runs the new value (an instance with fewer
//! partitions does not consume the extra queues; after a decrease, the unused
//! ones must be drained or deleted). Unkeyed events keep the fanout route and
//! its competing consumers. A replayed keyed dead letter goes back to the main
//! queue, outside its key's order.
//!
//! Why partitions of single-active-consumer queues: they need no plugin and
//! keep the broker's own redelivery when an instance dies (the next consumer
//! gets the partition, requeued delivery first). The consistent-hash exchange
//! plugin would spread keys over queues too, but each queue would still need
//! one consumer at a time, which is what single-active-consumer gives; it
//! adds a plugin to install without ordering anything more. Partition queues
//! are declared only for topics that get keyed events (by the publisher of
//! the first one; the subscriptions of other instances find out through a
//! marker queue, see [`topology`] and `ordered.rs`): they are quorum queues,
//! not free.
//!
//! The ledger reads the dead-letter queues with `basic.get` on a channel it
//! closes afterwards (what it did not settle goes back); per-message status
//! is not kept (the capability says so, and the admin API answers 501). Depth
//! is the broker's ready-message counts (a subscriber's partitions included),
//! re-read every 2 s. Idempotency keys are remembered per instance (bounded,
//! in memory), or shared in Redis with `idempotency_redis` (see
//! `idem_keys.rs`).
//!
//! Crate: `lapin` (the maintained AMQP 0-9-1 client, on tokio here through its
//! executor and reactor traits), without its TLS features.

mod fill;
mod ledger;
mod link;
mod ordered;
mod publish;
mod subscription;
pub mod topology;

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use lapin::options::BasicPublishOptions;
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::BasicProperties;
use parking_lot::RwLock;

use crate::contract::*;
use crate::envelope::{self, Envelope};
use crate::idem_keys::IdemKeys;
use crate::types::*;
use link::Link;
use topology::{QueueType, Topology};

/// How often the broker's queue counts are re-read.
const DEPTH_REFRESH: Duration = Duration::from_secs(2);

/// What the RabbitMQ queue gives (see the module doc).
pub const CAPABILITIES: Capabilities = Capabilities {
    ordering_per_key: true,
    exact_retry_delay: false,
    exact_depth: false,
    shared: true,
    message_status: false,
};

/// Settings of a RabbitMQ queue.
#[derive(Clone, Debug)]
pub struct RabbitConfig {
    /// `amqp://user:pass@host:5672/vhost`.
    pub url: String,
    /// Prefix of every exchange and queue name; instances sharing a queue use the same one.
    pub prefix: String,
    /// Type of subscriber and dead-letter queues.
    pub queue_type: QueueType,
    /// Per-subscriber backlog bound (`x-max-length` on each subscriber queue).
    pub max_depth: Option<u64>,
    /// Past `max_depth`: `Reject` sheds the event into that subscriber's `.dlq`
    /// while the others get it (see `fill.rs`; refused with `Full` only when
    /// every subscriber is full), and `DeadLetterOldest` drops the queue's head
    /// into its `.dlq` (`drop-head` with a dead-letter route). Either way a
    /// dead subscriber does not refuse publishes for the healthy ones (with
    /// `Reject`, bar an instance whose count is behind meeting the broker's
    /// bound: see `fill.rs`).
    pub on_full: crate::types::OnFull,
    /// Redis URL where idempotency keys of async routes are shared by every
    /// instance (`None`: each instance remembers its own).
    pub idempotency_redis: Option<String>,
    /// Partitions ordering keys hash into: per subscriber one single-active-consumer
    /// queue each, one delivery in flight at a time.
    pub ordering_partitions: u16,
}

impl RabbitConfig {
    /// Quorum queues, no backlog bound.
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: prefix.into(),
            queue_type: QueueType::Quorum,
            max_depth: None,
            on_full: crate::types::OnFull::Reject,
            idempotency_redis: None,
            ordering_partitions: DEFAULT_ORDERING_PARTITIONS,
        }
    }
}

pub(crate) fn storage(
    context: &str,
    e: impl std::error::Error + Send + Sync + 'static,
) -> QueueError {
    QueueError::Storage(StorageError::new(context, e))
}

/// The envelope of a received message.
fn envelope_of(props: &BasicProperties, topic: &str) -> Envelope {
    let header = props
        .headers()
        .as_ref()
        .and_then(|h| h.inner().get(envelope::HEADER).cloned());
    let bytes = match &header {
        Some(AMQPValue::LongString(s)) => Some(s.as_bytes()),
        _ => None,
    };
    Envelope::parse(
        bytes,
        props.message_id().as_ref().map(|m| m.to_string()),
        props.content_type().as_ref().map(|c| c.to_string()),
        topic,
        now_ms(),
    )
}

/// What the publisher, consumers, settlers and ledger share.
pub(crate) struct Shared {
    /// Publishes (events, retries, dead letters) and declares what they need.
    link: Link,
    /// Consumes and reads (see [`link`] for why apart).
    consume: Link,
    topology: Topology,
    max_depth: Option<u64>,
    on_full: OnFull,
    /// Target queues' ready counts, for `on_full: reject` (see [`fill`]).
    fill: fill::Fill,
    depth: RwLock<DepthSnapshot>,
    /// Idempotency keys: per instance, or shared in Redis.
    keys: IdemKeys,
    closed: std::sync::atomic::AtomicBool,
}

impl Shared {
    /// Publishes `env` + `body` to `exchange`/`routing_key` and waits for the
    /// broker's confirmation.
    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        env: &Envelope,
        body: &[u8],
    ) -> Result<(), QueueError> {
        self.publish_routed(exchange, routing_key, &[], env, body)
            .await
    }

    /// [`publish`](Self::publish) with more routing keys in the `BCC` header
    /// (sender-selected distribution: routed by each, removed before delivery).
    async fn publish_routed(
        &self,
        exchange: &str,
        routing_key: &str,
        bcc: &[&str],
        env: &Envelope,
        body: &[u8],
    ) -> Result<(), QueueError> {
        let ch = self.link.publisher().await?;
        let mut headers = FieldTable::default();
        headers.insert(
            envelope::HEADER.into(),
            AMQPValue::LongString(LongString::from(env.to_json())),
        );
        if !bcc.is_empty() {
            let keys: Vec<AMQPValue> = bcc
                .iter()
                .map(|k| AMQPValue::LongString(LongString::from(*k)))
                .collect();
            headers.insert("BCC".into(), AMQPValue::FieldArray(keys.into()));
        }
        let mut props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_message_id(env.id.as_str().into())
            .with_headers(headers);
        if let Some(ct) = &env.content_type {
            props = props.with_content_type(ct.as_str().into());
        }
        let confirm = ch
            .basic_publish(
                exchange,
                routing_key,
                BasicPublishOptions {
                    mandatory: true,
                    ..Default::default()
                },
                body,
                props,
            )
            .await
            .map_err(|e| storage("publishing to rabbitmq", e))?
            .await
            .map_err(|e| storage("waiting for rabbitmq's confirmation", e))?;
        match confirm {
            Confirmation::Ack(None) | Confirmation::NotRequested => Ok(()),
            Confirmation::Ack(Some(_)) => Err(storage(
                "publishing to rabbitmq",
                std::io::Error::other(format!(
                    "unroutable: no queue bound to {exchange}/{routing_key}"
                )),
            )),
            Confirmation::Nack(_) => match self.max_depth {
                // reject-publish: a subscriber's backlog is at its bound.
                Some(max) => Err(QueueError::Full { depth: max, max }),
                None => Err(storage(
                    "publishing to rabbitmq",
                    std::io::Error::other("the broker refused the message (nack)"),
                )),
            },
        }
    }

    fn check_open(&self) -> Result<(), QueueError> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            Err(QueueError::Closed)
        } else {
            Ok(())
        }
    }
}

/// A RabbitMQ queue; [`RabbitBroker::into_queue`] gives the contract.
pub struct RabbitBroker {
    shared: Arc<Shared>,
}

impl RabbitBroker {
    /// Connects (an unreachable broker is an error) and starts the depth refresher.
    pub async fn connect(cfg: RabbitConfig) -> Result<Arc<Self>, QueueError> {
        let link = Link::connect(&cfg.url, "junction").await?;
        let consume = Link::connect(&cfg.url, "junction-consume").await?;
        let shared = Arc::new(Shared {
            link,
            consume,
            topology: Topology::new(
                &cfg.prefix,
                cfg.queue_type,
                cfg.max_depth,
                cfg.on_full,
                cfg.ordering_partitions,
            ),
            max_depth: cfg.max_depth,
            on_full: cfg.on_full,
            fill: fill::Fill::default(),
            depth: RwLock::default(),
            keys: IdemKeys::open(cfg.idempotency_redis.as_deref(), &cfg.prefix).await?,
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        tokio::spawn(refresh_depth_forever(Arc::downgrade(&shared)));
        Ok(Arc::new(Self { shared }))
    }

    /// This broker as the queue contract.
    pub fn into_queue(self: Arc<Self>) -> Queue {
        Queue {
            backend: "rabbitmq",
            publisher: self.clone(),
            consumer: self.clone(),
            ledger: Arc::new(ledger::RabbitLedger::new(self.shared.clone())),
            capabilities: CAPABILITIES,
        }
    }

    /// Every exchange and queue this instance declared (for test cleanup).
    pub fn declared(&self) -> Vec<String> {
        self.shared.topology.declared()
    }

    /// Deletes `names` (queues and exchanges) on the broker at `url`.
    pub async fn delete(url: &str, names: &[String]) -> Result<(), QueueError> {
        let link = Link::connect(url, "junction-admin").await?;
        for name in names {
            // Each as a queue and as an exchange: the broker answers the
            // deletion of a missing queue with success, so `queue.delete`
            // does not tell an exchange apart (the exchanges were left behind).
            let ch = link.channel().await?;
            let _ = ch.queue_delete(name, Default::default()).await;
            let ch = if ch.status().connected() {
                ch
            } else {
                link.channel().await?
            };
            let _ = ch.exchange_delete(name, Default::default()).await;
        }
        link.close().await;
        Ok(())
    }
}

#[async_trait]
impl Publisher for RabbitBroker {
    async fn publish(&self, req: EnqueueRequest) -> Result<EnqueueOutcome, QueueError> {
        let s = &self.shared;
        s.check_open()?;
        let id = MessageId::generate();
        s.keys
            .publish_once(&req, &id, self.publish_as(&req, &id))
            .await
    }

    async fn health(&self) -> Result<(), QueueError> {
        self.shared.check_open()?;
        self.shared.link.publisher().await.map(drop)
    }

    async fn close(&self) -> Result<(), QueueError> {
        self.shared
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.shared.link.close().await;
        self.shared.consume.close().await;
        Ok(())
    }
}

#[async_trait]
impl Consumer for RabbitBroker {
    async fn subscribe(
        &self,
        topic: &str,
        subscriber: &str,
        prefetch: usize,
    ) -> Result<Box<dyn Subscription>, QueueError> {
        self.shared.check_open()?;
        let mut sub =
            subscription::RabbitSubscription::new(self.shared.clone(), topic, subscriber, prefetch);
        sub.open().await?;
        Ok(Box::new(sub))
    }
}

/// Re-reads every declared queue's ready count into the depth snapshot.
async fn refresh_depth_forever(weak: std::sync::Weak<Shared>) {
    loop {
        tokio::time::sleep(DEPTH_REFRESH).await;
        let Some(s) = weak.upgrade() else { return };
        if s.closed.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        match ledger::read_depth(&s).await {
            Ok(d) => *s.depth.write() = d,
            Err(e) => tracing::debug!(error = %e, "could not read rabbitmq queue depths"),
        }
    }
}
