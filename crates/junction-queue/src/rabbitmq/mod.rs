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
//! The ledger reads the dead-letter queues with `basic.get` on a channel it
//! closes afterwards (what it did not settle goes back); per-message status
//! is not kept (the capability says so, and the admin API answers 501). Depth
//! is the broker's ready-message counts, re-read every 2 s. Ordering keys are
//! not honoured: several consumers of one queue may deliver a key's messages
//! out of order (`ordering_per_key: false`). Idempotency keys are remembered per
//! instance (bounded, in memory), or shared in Redis with `idempotency_redis`
//! (see `idem_keys.rs`).
//!
//! Crate: `lapin` (the maintained AMQP 0-9-1 client, on tokio here through its
//! executor and reactor traits), without its TLS features.

mod ledger;
mod link;
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
    ordering_per_key: false,
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
    /// Past `max_depth`: `Reject` refuses the publish (`Full`; RabbitMQ's
    /// `reject-publish`, which the other subscribers' queues still took), and
    /// `DeadLetterOldest` drops the queue's head into its `.dlq` (`drop-head`
    /// with a dead-letter route), so a dead subscriber never refuses a publish.
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
        let ch = self.link.publisher().await?;
        let mut headers = FieldTable::default();
        headers.insert(
            envelope::HEADER.into(),
            AMQPValue::LongString(LongString::from(env.to_json())),
        );
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
            topology: Topology::new(&cfg.prefix, cfg.queue_type, cfg.max_depth, cfg.on_full),
            max_depth: cfg.max_depth,
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

    /// Deletes `names` (queues, then the exchanges among them) on the broker at `url`.
    pub async fn delete(url: &str, names: &[String]) -> Result<(), QueueError> {
        let link = Link::connect(url, "junction-admin").await?;
        for name in names {
            let ch = link.channel().await?;
            if ch.queue_delete(name, Default::default()).await.is_err() {
                let ch = link.channel().await?;
                let _ = ch.exchange_delete(name, Default::default()).await;
            }
        }
        link.close().await;
        Ok(())
    }
}

impl RabbitBroker {
    /// Publishes `req` as `id` and waits for the broker's confirmation.
    async fn publish_as(&self, req: &EnqueueRequest, id: &MessageId) -> Result<(), QueueError> {
        let s = &self.shared;
        let subs = req.distinct_subscribers();
        if !subs.is_empty() {
            let ch = s.link.publisher().await?;
            if let Err(first) = s.topology.ensure(&ch, &req.topic, &subs).await {
                // Declarations are idempotent and nothing was published yet:
                // once more, on a new channel (and connection, if the broker
                // closed this one under the declaration).
                tracing::debug!(error = %first, "declaring a topic failed; trying once more");
                let ch = s.link.publisher().await?;
                s.topology.ensure(&ch, &req.topic, &subs).await?;
            }
            let env = Envelope::new(id, req, subs, now_ms());
            s.publish(&s.topology.exchange(&req.topic), "", &env, &req.body)
                .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Publisher for RabbitBroker {
    async fn publish(&self, req: EnqueueRequest) -> Result<EnqueueOutcome, QueueError> {
        let s = &self.shared;
        s.check_open()?;
        let id = MessageId::from(uuid::Uuid::now_v7().to_string());
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
