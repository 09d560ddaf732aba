//! The Amazon SQS backend, with SNS for fan-out.
//!
//! Per topic an SNS topic; per subscriber an SQS queue subscribed to it with
//! raw message delivery (the body as it is, the envelope as the message
//! attribute `x-junction`). A publish is one SNS `Publish`, answered once SNS
//! stored it redundantly; SNS then delivers a copy to every subscribed queue,
//! retrying on its side, so a gateway crash after the 202 cannot lose one
//! subscriber's copy (there is no second step on Junction's side to lose).
//! Several instances receiving from one queue are competing consumers.
//!
//! Per delivery: `ack` deletes the message; `retry(after)` is a
//! `ChangeMessageVisibility` to `after` (whole seconds, rounded up; SQS allows
//! at most 12 h); `release` makes it visible at once; a message no instance
//! settles comes back after the queue's visibility timeout (while one is being
//! worked on, its visibility is extended: see [`leases`]). Attempts are SQS's
//! `ApproximateReceiveCount` less this instance's own releases. Dead letters
//! are moved explicitly (sent with their reason and attempt history to the
//! subscriber's `…-dlq` queue, then deleted) rather than by a redrive policy,
//! which would count releases as failures and keep no reason; the ledger lists
//! them by receiving with a visibility timeout and giving back what it did not
//! replay or purge. Every queue keeps messages 14 days (SQS's maximum).
//!
//! With `fifo`, topics and queues are FIFO; the ordering key is the
//! `MessageGroupId` (the message id when there is none), so one key's
//! messages reach a subscriber one at a time, in order (SQS holds a group back
//! while one of its messages is in flight; a receive that returns several of a
//! group gives back all but the first).
//!
//! Bodies that are not text SQS accepts travel base64-encoded (the envelope
//! says so). Idempotency keys are remembered per instance (or shared in Redis
//! with `idempotency_redis`), message status is
//! not kept, and depth is SQS's approximate counts re-read every 2 s.
//! Credentials come from the standard AWS chain (environment, profile, web
//! identity, container or instance metadata).
//!
//! Crates: `aws-sdk-sqs`, `aws-sdk-sns` and `aws-config` (AWS's own SDK).

mod leases;
mod ledger;
pub mod names;
mod subscription;
mod topology;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_sqs::types::MessageAttributeValue;
use parking_lot::{Mutex, RwLock};

use crate::contract::*;
use crate::envelope::{self, Envelope};
use crate::idem_keys::IdemKeys;
use crate::types::*;

/// How often queue backlogs are re-read.
const DEPTH_REFRESH: Duration = Duration::from_secs(2);
/// How long SQS keeps a message (its maximum, 14 days).
const RETENTION_SECS: &str = "1209600";

/// Settings of an SQS queue.
#[derive(Clone, Debug)]
pub struct SqsConfig {
    /// AWS region (`eu-west-1`); the standard chain's (`AWS_REGION`, profile) when `None`.
    pub region: Option<String>,
    /// Endpoint of a local or compatible server; AWS's own when `None`.
    pub endpoint: Option<String>,
    /// Prefix of every queue and topic name; instances sharing a queue use the same one.
    pub prefix: String,
    /// FIFO topics and queues: per-key ordering.
    pub fifo: bool,
    /// How long a received delivery stays hidden before SQS gives it out again.
    pub visibility_timeout: Duration,
    /// Approximate backlog of a subscriber past which new events get 503.
    pub max_depth: Option<u64>,
    /// Explicit credentials (tests, embedding); the standard chain when `None`.
    pub credentials: Option<aws_sdk_sqs::config::Credentials>,
    /// Redis URL where idempotency keys of async routes are shared by every
    /// instance (`None`: each instance remembers its own).
    pub idempotency_redis: Option<String>,
}

impl SqsConfig {
    /// Standard queues, deliveries given out again 30 s after an instance stopped settling them.
    pub fn new(region: Option<String>, prefix: impl Into<String>) -> Self {
        Self {
            region,
            endpoint: None,
            prefix: prefix.into(),
            fifo: false,
            visibility_timeout: Duration::from_secs(30),
            max_depth: None,
            credentials: None,
            idempotency_redis: None,
        }
    }
}

/// Static credentials for [`SqsConfig::credentials`].
pub fn credentials(
    access_key_id: &str,
    secret_access_key: &str,
) -> aws_sdk_sqs::config::Credentials {
    aws_sdk_sqs::config::Credentials::new(access_key_id, secret_access_key, None, None, "junction")
}

/// An SDK error with its causes, as a storage failure.
pub(crate) fn storage<E>(context: &str, e: E) -> QueueError
where
    E: std::error::Error + Send + Sync + 'static,
{
    QueueError::Storage(StorageError::new(
        context,
        std::io::Error::other(aws_sdk_sqs::error::DisplayErrorContext(e).to_string()),
    ))
}

/// Whole seconds SQS takes for a visibility change of `d` (rounded up, at most 12 h).
pub(crate) fn visibility_secs(d: Duration) -> i32 {
    let secs = d.as_millis().div_ceil(1000);
    secs.min(12 * 3600) as i32
}

/// What the publisher, consumers, settlers and ledger share.
pub(crate) struct Shared {
    sqs: aws_sdk_sqs::Client,
    sns: aws_sdk_sns::Client,
    cfg: SqsConfig,
    /// Junction topic → SNS topic ARN.
    topics: Mutex<HashMap<String, String>>,
    /// (topic, subscriber) → queue URL.
    queues: Mutex<HashMap<(String, String), String>>,
    /// (topic, subscriber) → dead-letter queue URL.
    dlqs: Mutex<HashMap<(String, String), String>>,
    keys: IdemKeys,
    /// Releases per SQS message id (SQS counts them as receives, not
    /// attempts), with when the last was; see [`Shared::released`].
    released: Mutex<HashMap<String, (u32, u64)>>,
    depth: RwLock<DepthSnapshot>,
    /// Deliveries being worked on, kept hidden (see [`leases`]).
    leases: leases::Leases,
    closed: AtomicBool,
}

impl Shared {
    /// Releases this instance made of the message `sqs_id`.
    fn released(&self, sqs_id: &str) -> u32 {
        self.released.lock().get(sqs_id).map_or(0, |(n, _)| *n)
    }

    /// Counts one more release of `sqs_id`. Entries of messages settled
    /// elsewhere (another instance, expiry) are dropped after a day.
    fn count_release(&self, sqs_id: &str) {
        let now = now_ms();
        let mut released = self.released.lock();
        if released.len() >= 100_000 {
            released.retain(|_, (_, at)| now.saturating_sub(*at) < 24 * 3600 * 1000);
        }
        let e = released.entry(sqs_id.to_owned()).or_default();
        *e = (e.0 + 1, now);
    }

    fn check_open(&self) -> Result<(), QueueError> {
        if self.closed.load(Ordering::Acquire) {
            Err(QueueError::Closed)
        } else {
            Ok(())
        }
    }

    /// `env` + `body` as SQS message text and the envelope attribute;
    /// `TooLarge` past SQS's limit.
    fn encode(
        &self,
        env: &mut Envelope,
        body: &[u8],
    ) -> Result<(String, MessageAttributeValue), QueueError> {
        let (text, base64) = names::encode_body(body);
        env.body_base64 = base64;
        let json = env.to_json();
        let size = text.len() + json.len() + envelope::HEADER.len();
        if size > names::MAX_MESSAGE_BYTES {
            return Err(QueueError::TooLarge {
                size: size as u64,
                max: names::MAX_MESSAGE_BYTES as u64,
            });
        }
        let attr = MessageAttributeValue::builder()
            .data_type("String")
            .string_value(json)
            .build()
            .expect("data type is set");
        Ok((text, attr))
    }

    /// Sends `env` + `body` straight to the queue at `url` (replays, dead letters).
    async fn send(
        &self,
        url: &str,
        env: &mut Envelope,
        body: &[u8],
        fifo: bool,
    ) -> Result<(), QueueError> {
        let (text, attr) = self.encode(env, body)?;
        let mut req = self
            .sqs
            .send_message()
            .queue_url(url)
            .message_body(text)
            .message_attributes(envelope::HEADER, attr);
        if fifo {
            req = req
                .message_group_id(group_of(env))
                // A replay of an id seen within SQS's 5-minute window must not be dropped.
                .message_deduplication_id(uuid::Uuid::now_v7().simple().to_string());
        }
        req.send()
            .await
            .map_err(|e| storage("sending to an sqs queue", e))?;
        Ok(())
    }
}

/// The FIFO message group of a message: its ordering key, else its own id.
fn group_of(env: &Envelope) -> String {
    env.ordering_key
        .clone()
        .unwrap_or_else(|| env.id.as_str().to_owned())
}

/// An SQS (+ SNS) queue; [`SqsBroker::into_queue`] gives the contract.
pub struct SqsBroker {
    shared: Arc<Shared>,
}

impl SqsBroker {
    /// Builds the clients and checks that SQS answers (an unreachable endpoint
    /// or refused credentials are errors).
    pub async fn connect(cfg: SqsConfig) -> Result<Arc<Self>, QueueError> {
        use aws_config::{retry::RetryConfig, timeout::TimeoutConfig, BehaviorVersion, Region};
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            // Bounded, so a publish to an endpoint that stopped answering gets 503 soon.
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(2))
                    .operation_attempt_timeout(Duration::from_secs(4))
                    .operation_timeout(Duration::from_secs(8))
                    .build(),
            )
            .retry_config(RetryConfig::standard().with_max_attempts(2));
        if let Some(region) = &cfg.region {
            loader = loader.region(Region::new(region.clone()));
        }
        if let Some(endpoint) = &cfg.endpoint {
            loader = loader.endpoint_url(endpoint);
        }
        if let Some(creds) = &cfg.credentials {
            loader = loader.credentials_provider(creds.clone());
        }
        let sdk = loader.load().await;
        if sdk.region().is_none() {
            return Err(QueueError::Storage(StorageError::new(
                "no AWS region: set queue.region, AWS_REGION or a profile's region",
                std::io::Error::other("no region"),
            )));
        }
        let keys = IdemKeys::open(cfg.idempotency_redis.as_deref(), &cfg.prefix).await?;
        let shared = Arc::new(Shared {
            sqs: aws_sdk_sqs::Client::new(&sdk),
            sns: aws_sdk_sns::Client::new(&sdk),
            cfg,
            topics: Mutex::default(),
            queues: Mutex::default(),
            dlqs: Mutex::default(),
            keys,
            released: Mutex::default(),
            depth: RwLock::default(),
            leases: leases::Leases::default(),
            closed: AtomicBool::new(false),
        });
        let broker = Arc::new(Self { shared });
        broker.health().await?;
        tokio::spawn(refresh_depth_forever(Arc::downgrade(&broker.shared)));
        tokio::spawn(leases::extend_forever(Arc::downgrade(&broker.shared)));
        Ok(broker)
    }

    /// This broker as the queue contract.
    pub fn into_queue(self: Arc<Self>) -> Queue {
        Queue {
            backend: "sqs",
            publisher: self.clone(),
            consumer: self.clone(),
            ledger: Arc::new(ledger::SqsLedger::new(self.shared.clone())),
            capabilities: Capabilities {
                ordering_per_key: self.shared.cfg.fifo,
                exact_retry_delay: false,
                exact_depth: false,
                shared: true,
                message_status: false,
            },
        }
    }

    /// Deletes every queue and topic under this broker's prefix (tests,
    /// decommissioning).
    pub async fn delete_everything(&self) -> Result<(), QueueError> {
        let s = &self.shared;
        for url in s.list_queues().await? {
            let _ = s.sqs.delete_queue().queue_url(url).send().await;
        }
        let mut token = None;
        loop {
            let page = s
                .sns
                .list_topics()
                .set_next_token(token)
                .send()
                .await
                .map_err(|e| storage("listing sns topics", e))?;
            for t in page.topics() {
                let Some(arn) = t.topic_arn() else { continue };
                let name = arn.rsplit(':').next().unwrap_or_default();
                if name.starts_with(&format!("{}-", s.cfg.prefix)) {
                    let _ = s.sns.delete_topic().topic_arn(arn).send().await;
                }
            }
            match page.next_token() {
                Some(t) => token = Some(t.to_owned()),
                None => return Ok(()),
            }
        }
    }

    fn over_max_depth(&self, topic: &str) -> Result<(), QueueError> {
        let Some(max) = self.shared.cfg.max_depth else {
            return Ok(());
        };
        let depth = self
            .shared
            .depth
            .read()
            .topics
            .get(topic)
            .copied()
            .unwrap_or(0);
        if depth >= max {
            return Err(QueueError::Full { depth, max });
        }
        Ok(())
    }
}

impl SqsBroker {
    /// Publishes `req` as `id` and waits for the broker's confirmation.
    async fn publish_as(&self, req: &EnqueueRequest, id: &MessageId) -> Result<(), QueueError> {
        let s = &self.shared;
        self.over_max_depth(&req.topic)?;
        let subs = req.distinct_subscribers();
        if !subs.is_empty() {
            for sub in &subs {
                s.queue_url(&req.topic, sub).await?;
            }
            let arn = s.topic_arn(&req.topic).await?;
            let mut env = Envelope::new(id, req, subs, now_ms());
            let (text, attr) = s.encode(&mut env, &req.body)?;
            let mut publish = s
                .sns
                .publish()
                .topic_arn(arn)
                .message(text)
                .message_attributes(
                    envelope::HEADER,
                    aws_sdk_sns::types::MessageAttributeValue::builder()
                        .data_type("String")
                        .set_string_value(attr.string_value().map(str::to_owned))
                        .build()
                        .expect("data type is set"),
                );
            if s.cfg.fifo {
                publish = publish
                    .message_group_id(group_of(&env))
                    .message_deduplication_id(id.as_str());
            }
            publish
                .send()
                .await
                .map_err(|e| storage("publishing to sns", e))?;
        }
        Ok(())
    }
}

#[async_trait]
impl Publisher for SqsBroker {
    async fn publish(&self, req: EnqueueRequest) -> Result<EnqueueOutcome, QueueError> {
        let s = &self.shared;
        s.check_open()?;
        let id = MessageId::generate();
        s.keys
            .publish_once(&req, &id, self.publish_as(&req, &id))
            .await
    }

    async fn health(&self) -> Result<(), QueueError> {
        let s = &self.shared;
        s.check_open()?;
        s.sqs
            .list_queues()
            .queue_name_prefix(format!("{}-", s.cfg.prefix))
            .max_results(1)
            .send()
            .await
            .map_err(|e| storage("sqs is unreachable", e))?;
        Ok(())
    }

    async fn close(&self) -> Result<(), QueueError> {
        self.shared.closed.store(true, Ordering::Release);
        Ok(())
    }
}

#[async_trait]
impl Consumer for SqsBroker {
    async fn subscribe(
        &self,
        topic: &str,
        subscriber: &str,
        _prefetch: usize,
    ) -> Result<Box<dyn Subscription>, QueueError> {
        let s = &self.shared;
        s.check_open()?;
        let url = s.queue_url(topic, subscriber).await?;
        Ok(Box::new(subscription::SqsSubscription::new(
            s.clone(),
            topic,
            subscriber,
            url,
        )))
    }
}

async fn refresh_depth_forever(weak: std::sync::Weak<Shared>) {
    loop {
        tokio::time::sleep(DEPTH_REFRESH).await;
        let Some(s) = weak.upgrade() else { return };
        if s.closed.load(Ordering::Acquire) {
            return;
        }
        match ledger::read_depth(&s).await {
            Ok(d) => *s.depth.write() = d,
            Err(e) => tracing::debug!(error = %e, "could not read sqs backlogs"),
        }
    }
}
