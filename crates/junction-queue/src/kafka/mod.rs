//! The Apache Kafka backend.
//!
//! Per Junction topic a Kafka topic `{prefix}.{topic}` (created if missing,
//! `partitions` and `replication_factor` configurable); an event is produced
//! with the ordering key as the record key (so one key stays in one partition)
//! and the envelope as the header `x-junction`, by an idempotent producer with
//! `acks=all`: the 202 waits for the broker's acknowledgement, i.e. for the
//! topic's `min.insync.replicas`. Fan-out is **one consumer group per
//! subscriber** (`{prefix}.{topic}.{sub}`): each instance runs one group member
//! per subscriber, which feeds that subscriber's dispatcher lanes, so several
//! instances share each group's partitions and an instance joining or leaving
//! rebalances them.
//!
//! Retries never block a partition, and offsets never run ahead of the work:
//! the member tracks every offset it read and not yet settled, and stores for
//! commit only the offset below which everything was acknowledged or
//! dead-lettered (librdkafka commits stored offsets every second, and on a
//! rebalance or close). A delivery that fails waits its `retry(after)` in the
//! member's own retry schedule (memory, not a retry topic) while the partition
//! goes on; only later records **with the same ordering key** wait behind it,
//! so per-key order holds across retries, and other keys are not held up.
//! Chosen over retry topics because retry topics reorder a key (its later
//! records pass the one in retry) unless they block the partition; what the
//! memory schedule costs: when a partition moves (crash, rebalance), its
//! unsettled records are read again from the committed offset by the new owner,
//! in order, with their attempt count and backoff started afresh. To bound
//! memory a partition with more than [`member::MAX_UNSETTLED`] unsettled
//! records is paused until half of them settled.
//!
//! Dead letters are produced to the compacted topic `{prefix}.{topic}.{sub}.dlq`
//! keyed by dead-letter id; replay produces the record again to the topic
//! addressed to that subscriber alone (the other groups skip it), and replay or
//! purge writes a tombstone for the id. The ledger lists by reading the
//! dead-letter topics to their end. Idempotency keys are remembered per
//! instance, or shared in Redis with `idempotency_redis`; message status is not kept; depth is each group's lag (high
//! watermark less committed offset), re-read every 2 s.
//!
//! Crate: `rdkafka` (librdkafka, built from its bundled source): consumer
//! groups, idempotent producer and the admin API, which the pure-Rust clients
//! lack (no group membership in `rskafka`).

mod ledger;
mod member;

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::ClientConfig;

use crate::contract::*;
use crate::envelope::{self, Envelope};
use crate::idem_keys::IdemKeys;
use crate::types::*;

/// What the Kafka queue gives (see the module doc).
pub const CAPABILITIES: Capabilities = Capabilities {
    ordering_per_key: true,
    exact_retry_delay: true,
    exact_depth: false,
    shared: true,
    message_status: false,
};

/// How long a produce may wait for the broker's acknowledgement before the
/// event gets 503 (librdkafka's `message.timeout.ms`).
const PRODUCE_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound on metadata and admin requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// How often group lags are re-read.
const DEPTH_REFRESH: Duration = Duration::from_secs(2);

/// Settings of a Kafka queue.
#[derive(Clone, Debug)]
pub struct KafkaConfig {
    /// Bootstrap servers, `host:port[,host:port...]`.
    pub brokers: String,
    /// Prefix of topic and group names; instances sharing a queue use the same one.
    pub prefix: String,
    /// Partitions of a topic Junction creates.
    pub partitions: i32,
    /// Replication factor of a topic Junction creates (`None`: the broker's default).
    pub replication_factor: Option<i32>,
    /// How long a silent group member keeps its partitions (`session.timeout.ms`).
    pub session_timeout: Duration,
    /// Extra librdkafka settings (`security.protocol`, `sasl.*`, ...).
    pub client: Vec<(String, String)>,
    /// Redis URL where idempotency keys of async routes are shared by every
    /// instance (`None`: each instance remembers its own).
    pub idempotency_redis: Option<String>,
}

impl KafkaConfig {
    /// 6 partitions, the broker's replication factor, 10 s sessions.
    pub fn new(brokers: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            prefix: prefix.into(),
            partitions: 6,
            replication_factor: None,
            session_timeout: Duration::from_secs(10),
            client: Vec::new(),
            idempotency_redis: None,
        }
    }

    /// An idempotent producer waiting for every in-sync replica (`acks=all`).
    fn producer(&self) -> Result<FutureProducer, QueueError> {
        let mut pc = self.client_config();
        pc.set("enable.idempotence", "true")
            .set("acks", "all")
            .set(
                "message.timeout.ms",
                PRODUCE_TIMEOUT.as_millis().to_string(),
            )
            .set("linger.ms", "1");
        pc.create()
            .map_err(|e| storage("creating a kafka producer", e))
    }

    /// The librdkafka settings every client of this queue shares.
    fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.brokers)
            .set("reconnect.backoff.max.ms", "1000")
            .set("socket.connection.setup.timeout.ms", "3000");
        for (k, v) in &self.client {
            c.set(k, v);
        }
        c
    }
}

/// The bootstrap servers of a `kafka://host:port[,host:port...]` URL.
pub fn bootstrap_servers(url: &str) -> Option<String> {
    let hosts = url.strip_prefix("kafka://")?.trim_end_matches('/');
    let valid = hosts.split(',').all(|h| {
        h.rsplit_once(':')
            .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok())
    });
    valid.then(|| hosts.to_owned())
}

pub(crate) fn storage(context: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::Storage(StorageError::new(
        context,
        std::io::Error::other(e.to_string()),
    ))
}

/// A topic-name part: Kafka allows letters, digits, `.`, `_` and `-`; a name
/// that had to change gets a hash of the original, so two never merge.
fn part(name: &str) -> String {
    let clean: String = name
        .chars()
        .map(|c| match c {
            'a'..='z' | 'A'..='Z' | '0'..='9' | '_' | '-' => c,
            _ => '_',
        })
        .collect();
    if clean == name {
        clean
    } else {
        format!("{clean}-{:08x}", crc32fast::hash(name.as_bytes()))
    }
}

/// Runs a blocking librdkafka call off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, QueueError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| storage("a kafka call", e))
}

/// What the publisher, group members and ledger share.
pub(crate) struct Shared {
    cfg: KafkaConfig,
    /// Replaced when librdkafka declares it failed for good (an idempotent
    /// producer whose sequence it could not recover after an outage).
    producer: RwLock<FutureProducer>,
    admin: AdminClient<DefaultClientContext>,
    /// Topics known to exist.
    topics: Mutex<BTreeSet<String>>,
    /// This instance's member of each (topic, subscriber) group.
    members: Mutex<HashMap<(String, String), Arc<member::Member>>>,
    /// Clients that read metadata, watermarks and a group's committed
    /// offsets for the depth, by group id ("" for none), kept between reads.
    readers: Mutex<HashMap<String, Arc<rdkafka::consumer::BaseConsumer>>>,
    keys: IdemKeys,
    depth: RwLock<DepthSnapshot>,
    closed: AtomicBool,
}

impl Shared {
    fn topic_name(&self, topic: &str) -> String {
        format!("{}.{}", part(&self.cfg.prefix), part(topic))
    }

    fn group(&self, topic: &str, sub: &str) -> String {
        format!("{}.{}.{}", part(&self.cfg.prefix), part(topic), part(sub))
    }

    fn dlq_topic(&self, topic: &str, sub: &str) -> String {
        format!("{}.dlq", self.group(topic, sub))
    }

    fn check_open(&self) -> Result<(), QueueError> {
        if self.closed.load(Ordering::Acquire) {
            Err(QueueError::Closed)
        } else {
            Ok(())
        }
    }

    /// Creates `name` if missing (compacted for dead letters).
    async fn ensure_topic(&self, name: &str, compacted: bool) -> Result<(), QueueError> {
        if self.topics.lock().contains(name) {
            return Ok(());
        }
        let replication = TopicReplication::Fixed(self.cfg.replication_factor.unwrap_or(-1));
        let mut topic = NewTopic::new(name, self.cfg.partitions, replication);
        if compacted {
            topic = topic.set("cleanup.policy", "compact");
        }
        let opts = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        let results = tokio::time::timeout(
            REQUEST_TIMEOUT + Duration::from_secs(1),
            self.admin.create_topics([&topic], &opts),
        )
        .await
        .map_err(|_| storage("creating a kafka topic", "no answer"))?
        .map_err(|e| storage("creating a kafka topic", e))?;
        for r in results {
            match r {
                Ok(_) => {}
                Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((t, code)) => return Err(storage(&format!("creating kafka topic {t}"), code)),
            }
        }
        self.topics.lock().insert(name.to_owned());
        Ok(())
    }

    /// Produces `env` + `body` to `topic` keyed by `key`, and waits for the
    /// broker's acknowledgement (`acks=all`).
    async fn produce(
        &self,
        topic: &str,
        key: Option<&str>,
        env: Option<&Envelope>,
        body: Option<&[u8]>,
    ) -> Result<(), QueueError> {
        let json = env.map(Envelope::to_json);
        let mut record: FutureRecord<'_, str, [u8]> = FutureRecord::to(topic);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(b) = body {
            record = record.payload(b);
        }
        if let Some(j) = &json {
            record = record.headers(OwnedHeaders::new().insert(Header {
                key: envelope::HEADER,
                value: Some(j.as_str()),
            }));
        }
        let producer = self.producer();
        let sent = producer.send(record, PRODUCE_TIMEOUT).await;
        if let Err((e, _)) = sent {
            let broken = producer.client().fatal_error().is_some()
                || matches!(
                    e.rdkafka_error_code(),
                    Some(
                        RDKafkaErrorCode::ProducerFenced
                            | RDKafkaErrorCode::InvalidProducerEpoch
                            | RDKafkaErrorCode::UnknownProducerId
                            | RDKafkaErrorCode::OutOfOrderSequenceNumber
                    )
                );
            if broken {
                self.replace_producer(producer, &e);
            }
            return Err(storage("producing to kafka", e));
        }
        Ok(())
    }

    /// Starts a new producer (a new producer id) in place of `failed`, whose
    /// idempotence state the broker no longer accepts: after an outage,
    /// librdkafka bumps the producer epoch, which some Kafka-protocol brokers
    /// (tansu 0.6) answer with `ProducerFenced` for good.
    fn replace_producer(&self, failed: FutureProducer, why: &rdkafka::error::KafkaError) {
        let mut current = self.producer.write();
        if current.client().native_ptr() != failed.client().native_ptr() {
            return; // another publish replaced it already
        }
        match self.cfg.producer() {
            Ok(fresh) => {
                tracing::warn!(error = %why, "the kafka producer cannot go on; started a new one");
                let old = std::mem::replace(&mut *current, fresh);
                // Dropping the last handle waits for librdkafka's threads.
                tokio::task::spawn_blocking(move || drop((old, failed)));
            }
            Err(e) => tracing::warn!(error = %e, "could not start a new kafka producer"),
        }
    }

    fn producer(&self) -> FutureProducer {
        self.producer.read().clone()
    }
}

/// A Kafka queue; [`KafkaBroker::into_queue`] gives the contract.
pub struct KafkaBroker {
    shared: Arc<Shared>,
}

impl KafkaBroker {
    /// Creates the clients and checks that a broker answers.
    pub async fn connect(cfg: KafkaConfig) -> Result<Arc<Self>, QueueError> {
        let producer = cfg.producer()?;
        let admin: AdminClient<DefaultClientContext> = cfg
            .client_config()
            .create()
            .map_err(|e| storage("creating a kafka admin client", e))?;
        let keys = IdemKeys::open(cfg.idempotency_redis.as_deref(), &cfg.prefix).await?;
        let shared = Arc::new(Shared {
            cfg,
            producer: RwLock::new(producer),
            admin,
            topics: Mutex::default(),
            members: Mutex::default(),
            readers: Mutex::default(),
            keys,
            depth: RwLock::default(),
            closed: AtomicBool::new(false),
        });
        let broker = Arc::new(Self { shared });
        broker.health().await?;
        tokio::spawn(refresh_depth_forever(Arc::downgrade(&broker.shared)));
        Ok(broker)
    }

    /// This broker as the queue contract.
    pub fn into_queue(self: Arc<Self>) -> Queue {
        Queue {
            backend: "kafka",
            publisher: self.clone(),
            consumer: self.clone(),
            ledger: Arc::new(ledger::KafkaLedger::new(self.shared.clone())),
            capabilities: CAPABILITIES,
        }
    }

    /// Deletes every topic under this broker's prefix (tests, decommissioning).
    pub async fn delete_everything(&self) -> Result<(), QueueError> {
        let s = &self.shared;
        let prefix = format!("{}.", part(&s.cfg.prefix));
        let names: Vec<String> = ledger::topic_names(s)
            .await?
            .into_iter()
            .filter(|t| t.starts_with(&prefix))
            .collect();
        if names.is_empty() {
            return Ok(());
        }
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let opts = AdminOptions::new().operation_timeout(Some(REQUEST_TIMEOUT));
        s.admin
            .delete_topics(&refs, &opts)
            .await
            .map_err(|e| storage("deleting kafka topics", e))?;
        Ok(())
    }
}

impl KafkaBroker {
    /// Publishes `req` as `id` and waits for the broker's confirmation.
    async fn publish_as(&self, req: &EnqueueRequest, id: &MessageId) -> Result<(), QueueError> {
        let s = &self.shared;
        let subs = req.distinct_subscribers();
        if !subs.is_empty() {
            let topic = s.topic_name(&req.topic);
            s.ensure_topic(&topic, false).await?;
            let env = Envelope::new(id, req, subs, now_ms());
            s.produce(
                &topic,
                req.ordering_key.as_deref(),
                Some(&env),
                Some(&req.body),
            )
            .await?;
        }
        Ok(())
    }
}

#[async_trait]
impl Publisher for KafkaBroker {
    async fn publish(&self, req: EnqueueRequest) -> Result<EnqueueOutcome, QueueError> {
        let s = &self.shared;
        s.check_open()?;
        let id = MessageId::generate();
        s.keys
            .publish_once(&req, &id, self.publish_as(&req, &id))
            .await
    }

    async fn health(&self) -> Result<(), QueueError> {
        let s = self.shared.clone();
        s.check_open()?;
        blocking(move || {
            s.producer()
                .client()
                .fetch_metadata(None, Duration::from_secs(2))
                .map(drop)
        })
        .await?
        .map_err(|e| storage("kafka is unreachable", e))
    }

    async fn close(&self) -> Result<(), QueueError> {
        let s = self.shared.clone();
        s.closed.store(true, Ordering::Release);
        let members: Vec<Arc<member::Member>> = s.members.lock().drain().map(|(_, m)| m).collect();
        futures::future::join_all(members.iter().map(|m| m.close())).await;
        blocking(move || s.producer().flush(Duration::from_secs(5)))
            .await?
            .map_err(|e| storage("flushing the kafka producer", e))
    }
}

#[async_trait]
impl Consumer for KafkaBroker {
    async fn subscribe(
        &self,
        topic: &str,
        subscriber: &str,
        _prefetch: usize,
    ) -> Result<Box<dyn Subscription>, QueueError> {
        let s = &self.shared;
        s.check_open()?;
        let pair = (topic.to_owned(), subscriber.to_owned());
        let existing = s.members.lock().get(&pair).cloned();
        let member = match existing {
            Some(m) => m,
            None => {
                let name = s.topic_name(topic);
                s.ensure_topic(&name, false).await?;
                s.ensure_topic(&s.dlq_topic(topic, subscriber), true)
                    .await?;
                // Created under the lock: two lanes subscribing at once must
                // share one member (a second would join the group and take
                // partitions no lane reads).
                let mut members = s.members.lock();
                match members.get(&pair) {
                    Some(m) => m.clone(),
                    None => {
                        let m = member::Member::start(s.clone(), topic, subscriber, &name)?;
                        members.insert(pair, m.clone());
                        m
                    }
                }
            }
        };
        Ok(Box::new(member::Lane::new(member)))
    }
}

async fn refresh_depth_forever(weak: std::sync::Weak<Shared>) {
    let mut dlq = ledger::DlqCount::default();
    loop {
        tokio::time::sleep(DEPTH_REFRESH).await;
        let Some(s) = weak.upgrade() else { return };
        if s.closed.load(Ordering::Acquire) {
            return;
        }
        match ledger::read_depth(&s, &mut dlq).await {
            Ok(d) => *s.depth.write() = d,
            Err(e) => tracing::debug!(error = %e, "could not read kafka group lags"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::part;

    #[test]
    fn urls_give_bootstrap_servers() {
        use super::bootstrap_servers as b;
        assert_eq!(
            b("kafka://127.0.0.1:9092").as_deref(),
            Some("127.0.0.1:9092")
        );
        assert_eq!(
            b("kafka://a:9092,b:9093/").as_deref(),
            Some("a:9092,b:9093")
        );
        for bad in [
            "127.0.0.1:9092",
            "kafka://host",
            "kafka://:9092",
            "kafka://a:9092,",
        ] {
            assert_eq!(b(bad), None, "{bad}");
        }
    }

    #[test]
    fn names_keep_kafka_characters_and_never_merge() {
        assert_eq!(part("orders"), "orders");
        assert_eq!(part("sub_a-1"), "sub_a-1");
        assert_ne!(part("a/b"), part("a_b"));
        assert!(part("a/b").starts_with("a_b-"));
    }
}
