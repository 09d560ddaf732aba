//! The NATS JetStream backend.
//!
//! Per topic a stream `{P}_{topic}` (file storage, interest retention: a
//! message stays until every subscriber's consumer settled it) on subjects
//! `{p}.{topic}.>`; events are published on `{p}.{topic}.all` and answered
//! once JetStream acknowledged them. Per subscriber a durable pull consumer
//! (fan-out by consumers; several instances pulling from one consumer are
//! competing consumers) with explicit acks; `retry(after)` is a `nak` with that
//! delay; a delivery an instance took and never settled is redelivered after
//! `ack_wait`. Dead letters go to the stream `{P}_dlq` (`{p}.dlq.{topic}.{sub}`),
//! which the ledger lists, replays (to `{p}.{topic}.to.{sub}`, which only that
//! subscriber's consumer keeps: the others ack and skip it) and purges.
//! Attempts are JetStream's delivery count (less this instance's own
//! releases). `max_deliver` is unlimited: the dispatcher's `max_attempts`
//! decides when to give up, and the dead-letter stream receives the message.
//!
//! Idempotency keys live in the stream `{P}_idem`, one subject per key holding
//! its latest claim (a publish with `Nats-Expected-Last-Subject-Sequence`, the
//! compare-and-set JetStream's key-value store is built on, written out here
//! because the KV API of the current client does not speak to 2.9 servers), so
//! a repeat reaching another instance gets the same id. Per-message status is not
//! kept (see [`CAPABILITIES`]).
//!
//! Ordering keys: a keyed event is published on one of the topic's
//! `ordering_partitions` subjects `{p}.{topic}.k.{i}` (`i` from the key's
//! FNV-1a hash, the same in every instance), read per subscriber by a durable
//! consumer `{sub}~{i}` with `max_ack_pending: 1`: JetStream hands out one
//! message of a partition at a time across every instance and holds the next
//! until it is acked or dead-lettered; a retry is a `nak` with delay, which
//! keeps the message pending, so it keeps its place. So one key's events reach
//! a subscriber one at a time, in the order JetStream stored them; a retrying
//! event holds up the other keys of its partition too (more partitions, less of
//! that), and a replayed dead letter goes to the subscriber outside its key's
//! order. (Pinned consumers, which would allow several in flight per partition,
//! need nats-server 2.11.) The subscriber's own consumer sees the keyed subjects
//! too and acks them unread. Changing `ordering_partitions` moves keys between
//! partitions: events published before and after may then overtake each other.
//!
//! Durability: JetStream acknowledges a publish once stored, before its
//! periodic fsync (`sync_interval`, 2 min by default) unless the server runs
//! with `sync: always` (nats-server issue #7564); the README's durability table
//! says so.
//!
//! Crate: `async-nats` (the NATS maintainers' client, tokio-native).

mod feed;
mod ledger;
mod local;
mod shed;
mod subscription;
mod topology;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, stream};
use async_trait::async_trait;
use parking_lot::{Mutex, RwLock};

use crate::contract::*;
use crate::envelope::{self, Envelope};
use crate::types::*;

/// What the NATS queue gives (see the module doc).
pub const CAPABILITIES: Capabilities = Capabilities {
    ordering_per_key: true,
    exact_retry_delay: true,
    exact_depth: false,
    shared: true,
    message_status: false,
};

/// Bound on each JetStream request (a publish included): how long a publish
/// waits for a broker that stopped answering before the event gets 503.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How often consumer backlogs are re-read.
const DEPTH_REFRESH: Duration = Duration::from_secs(2);

/// Settings of a NATS queue.
#[derive(Clone, Debug)]
pub struct NatsConfig {
    /// `nats://host:4222`.
    pub url: String,
    /// Prefix of stream names and subjects; instances sharing a queue use the same one.
    pub prefix: String,
    /// How long a taken delivery may stay unsettled before JetStream redelivers it.
    pub ack_wait: Duration,
    /// Partitions ordering keys hash into (per subscriber, one delivery in
    /// flight at a time each).
    pub ordering_partitions: u16,
    /// Per-subscriber backlog bound: past it the refresher dead-letters the
    /// subscriber's oldest waiting events (see `shed.rs`).
    pub max_depth: Option<u64>,
}

impl NatsConfig {
    /// Deliveries redelivered 30 s after an instance stopped settling them.
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            prefix: prefix.into(),
            ack_wait: Duration::from_secs(30),
            ordering_partitions: DEFAULT_ORDERING_PARTITIONS,
            max_depth: None,
        }
    }
}

pub(crate) fn storage(context: &str, e: impl std::fmt::Display) -> QueueError {
    QueueError::Storage(StorageError::new(
        context,
        std::io::Error::other(e.to_string()),
    ))
}

/// The envelope a message carries in its header.
fn envelope_of(m: &jetstream::Message, topic: &str) -> Envelope {
    let header = m
        .headers
        .as_ref()
        .and_then(|h| h.get(envelope::HEADER))
        .map(|v| v.as_str().as_bytes());
    Envelope::parse(header, None, None, topic, now_ms())
}

/// A subject token for a name (dots and wildcards would change the subject's shape).
fn token(name: &str) -> String {
    name.chars()
        .map(|c| match c {
            '.' | '*' | '>' | ' ' | '\t' => '_',
            c => c,
        })
        .collect()
}

/// Durable name of `sub`'s consumer of ordering partition `i` (`~` keeps it
/// apart from every subscriber's own consumer name).
fn partition_consumer(sub: &str, i: u16) -> String {
    format!("{}~{i}", token(sub))
}

/// What the publisher, consumers, settlers and ledger share.
pub(crate) struct Shared {
    client: async_nats::Client,
    js: jetstream::Context,
    cfg: NatsConfig,
    keys: stream::Stream,
    /// Streams and consumers created by this instance.
    declared: Mutex<BTreeSet<String>>,
    /// (topic, subscriber) pairs with a consumer.
    pairs: Mutex<BTreeSet<(String, String)>>,
    /// (topic, subscriber) pairs with ordering-partition consumers.
    ordered: Mutex<BTreeSet<(String, String)>>,
    /// When each (topic, subscriber) pair was last looked up for partitions.
    probed: Mutex<std::collections::HashMap<(String, String), std::time::Instant>>,
    depth: RwLock<DepthSnapshot>,
    closed: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn stream_name(&self, topic: &str) -> String {
        format!("{}_{}", token(&self.cfg.prefix), token(topic))
    }

    fn dlq_stream(&self) -> String {
        format!("{}_dlq", token(&self.cfg.prefix))
    }

    fn subject(&self, topic: &str, rest: &str) -> String {
        format!("{}.{}.{rest}", token(&self.cfg.prefix), token(topic))
    }

    fn dlq_subject(&self, topic: &str, sub: &str) -> String {
        format!(
            "{}.dlq.{}.{}",
            token(&self.cfg.prefix),
            token(topic),
            token(sub)
        )
    }

    /// Publishes `env` + `body` on `subject` and waits for JetStream's ack
    /// (through this thread's connection on a data thread: `local.rs`).
    async fn publish(
        self: &Arc<Self>,
        subject: String,
        env: &Envelope,
        body: bytes::Bytes,
    ) -> Result<(), QueueError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(envelope::HEADER, env.to_json().as_str());
        local::context(self)
            .publish_with_headers(subject, headers, body)
            .await
            .map_err(|e| storage("publishing to jetstream", e))?
            .await
            .map_err(|e| storage("waiting for jetstream's ack", e))?;
        Ok(())
    }

    /// The subjects a subscriber's own consumer delivers: the topic's unkeyed
    /// events and replays addressed to it (keyed events come through its
    /// partitions; other replays are another subscriber's).
    fn own_subjects(&self, topic: &str, sub: &str) -> [String; 2] {
        [
            self.subject(topic, "all"),
            self.subject(topic, &format!("to.{}", token(sub))),
        ]
    }

    fn check_open(&self) -> Result<(), QueueError> {
        if self.closed.load(std::sync::atomic::Ordering::Acquire) {
            Err(QueueError::Closed)
        } else {
            Ok(())
        }
    }
}

/// A NATS JetStream queue; [`NatsBroker::into_queue`] gives the contract.
pub struct NatsBroker {
    shared: Arc<Shared>,
}

/// Value of an idempotency key in the bucket.
#[derive(serde::Serialize, serde::Deserialize)]
struct KeyRecord {
    id: MessageId,
    expires_at_ms: u64,
}

/// How the broker's shared connection is made: reconnecting for ever, from
/// the first attempt on.
fn connect_options() -> async_nats::ConnectOptions {
    connect_options_without_initial_retry().retry_on_initial_connect()
}

/// A connection whose first attempt may fail (a data thread's own: `local.rs`),
/// reconnecting for ever once made.
fn connect_options_without_initial_retry() -> async_nats::ConnectOptions {
    async_nats::ConnectOptions::new()
        .connection_timeout(Duration::from_secs(3))
        .max_reconnects(None)
}

/// JetStream over `client`, each request bounded by [`REQUEST_TIMEOUT`].
fn context_of(client: async_nats::Client) -> jetstream::Context {
    jetstream::context::ContextBuilder::new()
        .timeout(REQUEST_TIMEOUT)
        .build(client)
}

impl NatsBroker {
    /// Connects (an unreachable server is an error), creates the dead-letter
    /// stream and the idempotency bucket, starts the depth refresher.
    pub async fn connect(cfg: NatsConfig) -> Result<Arc<Self>, QueueError> {
        let client = connect_options().connect(cfg.url.as_str());
        let client = tokio::time::timeout(Duration::from_secs(5), client)
            .await
            .map_err(|_| storage("connecting to nats", "no answer within 5s"))?
            .map_err(|e| storage("connecting to nats", e))?;
        if client.connection_state() != async_nats::connection::State::Connected {
            client
                .flush()
                .await
                .map_err(|e| storage("connecting to nats", e))?;
        }
        let js = context_of(client.clone());
        let prefix = token(&cfg.prefix);
        js.get_or_create_stream(stream::Config {
            name: format!("{prefix}_dlq"),
            subjects: vec![format!("{prefix}.dlq.>")],
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| storage("creating the dead-letter stream", e))?;
        let keys = js
            .get_or_create_stream(stream::Config {
                name: format!("{prefix}_idem"),
                subjects: vec![format!("{prefix}.idem.>")],
                max_messages_per_subject: 1,
                max_age: Duration::from_secs(7 * 24 * 3600),
                storage: stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(|e| storage("creating the idempotency stream", e))?;
        let shared = Arc::new(Shared {
            client,
            js,
            cfg,
            keys,
            declared: Mutex::default(),
            pairs: Mutex::default(),
            ordered: Mutex::default(),
            probed: Mutex::default(),
            depth: RwLock::default(),
            closed: std::sync::atomic::AtomicBool::new(false),
        });
        shared.declared.lock().insert(format!("{prefix}_dlq"));
        shared.declared.lock().insert(format!("{prefix}_idem"));
        tokio::spawn(refresh_depth_forever(Arc::downgrade(&shared)));
        Ok(Arc::new(Self { shared }))
    }

    /// This broker as the queue contract.
    pub fn into_queue(self: Arc<Self>) -> Queue {
        Queue {
            backend: "nats",
            publisher: self.clone(),
            consumer: self.clone(),
            ledger: Arc::new(ledger::NatsLedger::new(self.shared.clone())),
            capabilities: CAPABILITIES,
        }
    }

    /// Messages sent through the shared connection so far (a publish made on
    /// a data thread goes through that thread's own: `local.rs`).
    pub fn sent_through_shared_connection(&self) -> u64 {
        self.shared
            .client
            .statistics()
            .out_messages
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Streams this instance created (for test cleanup).
    pub fn declared(&self) -> Vec<String> {
        self.shared.declared.lock().iter().cloned().collect()
    }

    /// Deletes `streams` on the server at `url`.
    pub async fn delete(url: &str, streams: &[String]) -> Result<(), QueueError> {
        let client = async_nats::connect(url)
            .await
            .map_err(|e| storage("connecting to nats", e))?;
        let js = jetstream::new(client);
        for s in streams {
            let _ = js.delete_stream(s).await;
        }
        Ok(())
    }

    /// The subject of an idempotency key.
    fn key_subject(&self, topic: &str, key: &str) -> String {
        format!(
            "{}.idem.{}.{}",
            token(&self.shared.cfg.prefix),
            token(topic),
            key.bytes().map(|b| format!("{b:02x}")).collect::<String>()
        )
    }

    /// Claims `key` for `id`; the first id when a live claim exists.
    async fn claim_key(
        &self,
        topic: &str,
        key: &str,
        id: &MessageId,
        ttl: Duration,
    ) -> Result<Option<MessageId>, QueueError> {
        let subject = self.key_subject(topic, key);
        let now = now_ms();
        let record = serde_json::to_vec(&KeyRecord {
            id: id.clone(),
            expires_at_ms: now + ttl.as_millis() as u64,
        })
        .expect("serializes");
        let s = &self.shared;
        for _ in 0..3 {
            let expected = match s.keys.get_last_raw_message_by_subject(&subject).await {
                Ok(prior) => match serde_json::from_slice::<KeyRecord>(&prior.payload) {
                    Ok(k) if k.expires_at_ms > now => return Ok(Some(k.id)),
                    _ => prior.sequence, // expired: take it over
                },
                Err(e)
                    if e.kind()
                        == async_nats::jetstream::stream::LastRawMessageErrorKind::NoMessageFound =>
                {
                    0
                }
                Err(e) => return Err(storage("reading an idempotency key", e)),
            };
            let mut headers = async_nats::HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SUBJECT_SEQUENCE,
                expected.to_string().as_str(),
            );
            let ack =
                s.js.publish_with_headers(subject.clone(), headers, record.clone().into())
                    .await
                    .map_err(|e| storage("claiming an idempotency key", e))?
                    .await;
            if ack.is_ok() {
                return Ok(None);
            }
            // Another instance claimed it in between: read its claim.
        }
        Err(storage("claiming an idempotency key", "contended"))
    }
}

#[async_trait]
impl Publisher for NatsBroker {
    async fn publish(&self, req: EnqueueRequest) -> Result<EnqueueOutcome, QueueError> {
        let s = &self.shared;
        s.check_open()?;
        let id = MessageId::generate();
        if let Some(key) = &req.idempotency_key {
            if let Some(prior) = self
                .claim_key(&req.topic, key, &id, req.idempotency_ttl)
                .await?
            {
                return Ok(EnqueueOutcome::Duplicate(prior));
            }
        }
        let subs = req.distinct_subscribers();
        if !subs.is_empty() {
            let published = async {
                s.ensure(&req.topic, &subs).await?;
                let subject = match &req.ordering_key {
                    Some(key) => {
                        s.ensure_ordered(&req.topic, &subs).await?;
                        let p = ordering_partition(key, s.cfg.ordering_partitions);
                        s.subject(&req.topic, &format!("k.{p}"))
                    }
                    None => s.subject(&req.topic, "all"),
                };
                let env = Envelope::new(&id, &req, subs, now_ms());
                s.publish(subject, &env, req.body.clone()).await
            }
            .await;
            if let Err(e) = published {
                if let Some(key) = &req.idempotency_key {
                    // Not accepted: a retry of this request must not be a duplicate.
                    let _ = s
                        .keys
                        .purge()
                        .filter(self.key_subject(&req.topic, key))
                        .await;
                }
                return Err(e);
            }
        }
        Ok(EnqueueOutcome::Accepted(id))
    }

    async fn health(&self) -> Result<(), QueueError> {
        let s = &self.shared;
        s.check_open()?;
        match s.client.connection_state() {
            async_nats::connection::State::Connected => Ok(()),
            other => Err(storage(
                "nats is unreachable",
                format!("connection {other:?}"),
            )),
        }
    }

    async fn close(&self) -> Result<(), QueueError> {
        self.shared
            .closed
            .store(true, std::sync::atomic::Ordering::Release);
        let _ = self.shared.client.flush().await;
        Ok(())
    }
}

#[async_trait]
impl Consumer for NatsBroker {
    async fn subscribe(
        &self,
        topic: &str,
        subscriber: &str,
        _prefetch: usize,
    ) -> Result<Box<dyn Subscription>, QueueError> {
        self.shared.check_open()?;
        self.shared.ensure(topic, &[subscriber.to_owned()]).await?;
        Ok(Box::new(subscription::NatsSubscription::new(
            self.shared.clone(),
            topic,
            subscriber,
        )))
    }
}

async fn refresh_depth_forever(weak: std::sync::Weak<Shared>) {
    loop {
        tokio::time::sleep(DEPTH_REFRESH).await;
        let Some(s) = weak.upgrade() else { return };
        if s.closed.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        match ledger::read_depth(&s).await {
            Ok((d, pairs)) => {
                *s.depth.write() = d;
                let Some(max) = s.cfg.max_depth else { continue };
                for p in pairs.iter().filter(|p| p.backlog > max) {
                    if let Err(e) =
                        shed::shed_excess(&s, &p.topic, &p.subscriber, p.backlog, max).await
                    {
                        tracing::debug!(error = %e, subscriber = %p.subscriber, "could not shed a full backlog");
                    }
                }
            }
            Err(e) => tracing::debug!(error = %e, "could not read jetstream backlogs"),
        }
    }
}
