//! The async pipeline: accept an event durably, answer 202, deliver it to every
//! subscriber on our own.
//!
//! - [`ingest`]: the data-plane side of an async route (validate, extract the
//!   ordering and idempotency keys, enqueue, 202).
//! - [`dispatcher`]: per subscriber, one lane per delivery thread leasing due
//!   deliveries from a [`junction_queue::Subscription`] and sending them with the subscriber's retry
//!   policy, the upstream's breaker and bulkhead, and a concurrency cap.
//! - [`connection`]: the backend's reachability as a gauge and a log line per change.
//! - [`signing`]: Standard Webhooks signatures for subscribers with secrets.
//! - [`threads`]: the thread-per-core runtimes the dispatchers' lanes run on.
//!
//! The dispatcher is written here, not taken from a library, because its
//! semantics are the product: fan-out with independent retries per subscriber,
//! an open breaker pausing (not burning attempts of) a subscriber, and
//! at-least-once delivery across restarts.

pub mod connection;
pub mod dispatcher;
pub mod ingest;
pub mod metrics;
pub mod signing;
pub mod threads;

use crate::config::{Config, KeySource, QueueConfig};
use crate::proxy::upstream::Upstream;
use crate::telemetry::metrics::TopicLabel;
use crate::telemetry::Metrics;
use anyhow::Context;
use junction_queue::{
    EmbeddedBroker, EmbeddedConfig, PostgresBroker, PostgresConfig, Queue, RedisBroker, RedisConfig,
};
use metrics::PipelineMetrics;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// How long a delivered message's record stays visible in `GET /admin/messages/{id}`.
const COMPLETED_RETENTION: Duration = Duration::from_secs(3600);

/// What an async route needs at ingest time.
pub struct AsyncRoute {
    /// Topic the route publishes to.
    pub topic: String,
    /// Subscriber names, fixed into each message.
    pub subscribers: Vec<String>,
    /// Where the ordering key comes from, if any subscriber wants ordering.
    pub ordering_key: Option<KeySource>,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_window: Duration,
    /// The queue.
    pub queue: Queue,
    /// `junction_events_accepted_total{topic}`.
    pub accepted: prometheus_client::metrics::counter::Counter,
}

/// Opens the configured queue backend.
pub async fn open_queue(config: &Config) -> anyhow::Result<Queue> {
    match &config.queue {
        QueueConfig::Embedded {
            path,
            max_depth,
            on_full,
        } => {
            let mut cfg = EmbeddedConfig::new(path.clone());
            cfg.max_depth = *max_depth;
            cfg.on_full = (*on_full).into();
            cfg.completed_retention = COMPLETED_RETENTION;
            let broker = EmbeddedBroker::open(cfg)
                .await
                .with_context(|| format!("cannot open the embedded queue at {}", path.display()))?;
            Ok(broker.into_queue())
        }
        QueueConfig::Redis {
            url,
            prefix,
            max_depth,
            on_full,
            lease_ttl,
        } => {
            let mut cfg = RedisConfig::new(url.clone(), prefix.clone());
            cfg.max_depth = *max_depth;
            cfg.on_full = (*on_full).into();
            cfg.lease_ttl = lease_ttl.0;
            cfg.completed_retention = COMPLETED_RETENTION;
            let broker = RedisBroker::connect(cfg).await.map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the redis queue at {url}: {}",
                    crate::proxy::upstream::error_chain(&e)
                )
            })?;
            Ok(broker.into_queue())
        }
        QueueConfig::Nats {
            url,
            prefix,
            ack_wait,
            ordering_partitions,
            max_depth,
            on_full: _, // only dead_letter_oldest passes the config check
        } => {
            let mut cfg = junction_queue::NatsConfig::new(url.clone(), prefix.clone());
            cfg.ack_wait = ack_wait.0;
            cfg.max_depth = *max_depth;
            cfg.ordering_partitions = *ordering_partitions;
            let broker = junction_queue::NatsBroker::connect(cfg)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot open the nats queue at {}: {}",
                        redact(url),
                        crate::proxy::upstream::error_chain(&e)
                    )
                })?;
            Ok(broker.into_queue())
        }
        QueueConfig::Rabbitmq {
            url,
            prefix,
            queue_type,
            max_depth,
            on_full,
            idempotency_redis,
            ordering_partitions,
        } => {
            let mut cfg = junction_queue::RabbitConfig::new(url.clone(), prefix.clone());
            cfg.idempotency_redis = idempotency_redis.clone();
            cfg.ordering_partitions = *ordering_partitions;
            cfg.max_depth = *max_depth;
            cfg.on_full = (*on_full).into();
            cfg.queue_type = match queue_type {
                crate::config::RabbitQueueType::Quorum => {
                    junction_queue::rabbitmq::topology::QueueType::Quorum
                }
                crate::config::RabbitQueueType::Classic => {
                    junction_queue::rabbitmq::topology::QueueType::Classic
                }
            };
            let broker = junction_queue::RabbitBroker::connect(cfg)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot open the rabbitmq queue at {}: {}",
                        redact(url),
                        crate::proxy::upstream::error_chain(&e)
                    )
                })?;
            Ok(broker.into_queue())
        }
        QueueConfig::Kafka {
            url,
            prefix,
            partitions,
            replication_factor,
            session_timeout,
            client,
            idempotency_redis,
        } => {
            let brokers = junction_queue::kafka::bootstrap_servers(url)
                .with_context(|| format!("invalid Kafka URL {url:?}"))?;
            let mut cfg = junction_queue::KafkaConfig::new(brokers, prefix.clone());
            cfg.partitions = *partitions;
            cfg.replication_factor = *replication_factor;
            cfg.session_timeout = session_timeout.0;
            cfg.client = client.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            cfg.idempotency_redis = idempotency_redis.clone();
            let broker = junction_queue::KafkaBroker::connect(cfg)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot open the kafka queue at {url}: {}",
                        crate::proxy::upstream::error_chain(&e)
                    )
                })?;
            Ok(broker.into_queue())
        }
        QueueConfig::Sqs {
            region,
            endpoint,
            prefix,
            fifo,
            visibility_timeout,
            max_depth,
            idempotency_redis,
        } => {
            let mut cfg = junction_queue::SqsConfig::new(region.clone(), prefix.clone());
            cfg.endpoint = endpoint.clone();
            cfg.fifo = *fifo;
            cfg.visibility_timeout = visibility_timeout.0;
            cfg.max_depth = *max_depth;
            cfg.idempotency_redis = idempotency_redis.clone();
            let broker = junction_queue::SqsBroker::connect(cfg).await.map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the sqs queue{}: {}",
                    endpoint
                        .as_deref()
                        .map(|e| format!(" at {e}"))
                        .unwrap_or_default(),
                    crate::proxy::upstream::error_chain(&e)
                )
            })?;
            Ok(broker.into_queue())
        }
        QueueConfig::Postgres {
            url,
            schema,
            max_depth,
            on_full,
            lease_ttl,
        } => {
            let mut cfg = PostgresConfig::new(url.clone(), schema.clone());
            cfg.max_depth = *max_depth;
            cfg.on_full = (*on_full).into();
            cfg.lease_ttl = lease_ttl.0;
            cfg.completed_retention = COMPLETED_RETENTION;
            let broker = PostgresBroker::connect(cfg).await.map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the postgres queue at {}: {}",
                    redact(url),
                    crate::proxy::upstream::error_chain(&e)
                )
            })?;
            Ok(broker.into_queue())
        }
    }
}

/// `url` without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, rest)), Some(at)) if rest.contains(':') && at > scheme.len() + 3 => {
            let creds = &url[scheme.len() + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{scheme}://{user}:***{}", &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Applies the configured queue's schema migrations (`junction migrate`);
/// returns a line saying what was done.
pub async fn migrate(config: &Config) -> anyhow::Result<String> {
    match &config.queue {
        QueueConfig::Postgres { url, schema, .. } => {
            let applied = junction_queue::postgres::migrate(url, schema)
                .await
                .map_err(|e| {
                    anyhow::anyhow!(
                        "cannot migrate the postgres queue at {}: {}",
                        redact(url),
                        crate::proxy::upstream::error_chain(&e)
                    )
                })?;
            Ok(match applied.as_slice() {
                [] => format!("postgres schema {schema}: up to date"),
                v => format!("postgres schema {schema}: applied migrations {v:?}"),
            })
        }
        QueueConfig::Embedded { .. }
        | QueueConfig::Redis { .. }
        | QueueConfig::Rabbitmq { .. }
        | QueueConfig::Nats { .. }
        | QueueConfig::Kafka { .. }
        | QueueConfig::Sqs { .. } => {
            Ok("the configured queue backend has no schema to migrate".into())
        }
    }
}

/// Builds the ingest side of every async route, keyed by route name.
pub fn async_routes(
    config: &Config,
    queue: &Queue,
    metrics: &Metrics,
) -> BTreeMap<String, Arc<AsyncRoute>> {
    config
        .routes
        .iter()
        .filter_map(|r| Some((r.name.clone(), r.async_.as_ref()?)))
        .map(|(name, a)| {
            let route = AsyncRoute {
                topic: a.topic.clone(),
                subscribers: a.subscribers.iter().map(|s| s.name.clone()).collect(),
                ordering_key: a.subscribers.iter().find_map(|s| s.ordering_key.clone()),
                idempotency_window: a.idempotency_window.0,
                queue: queue.clone(),
                accepted: metrics
                    .set::<PipelineMetrics>()
                    .events_accepted
                    .get_or_create(&TopicLabel {
                        topic: a.topic.clone(),
                    })
                    .clone(),
            };
            (name, Arc::new(route))
        })
        .collect()
}

/// The running dispatchers, one per subscriber, and the threads their lanes run on.
pub struct Dispatchers {
    running: BTreeMap<(String, String), RunningDispatcher>,
    /// Lanes of dispatchers a reload stopped, still draining.
    retired: Vec<tokio::task::JoinHandle<()>>,
    /// Kept until every lane has finished, then dropped to stop the threads.
    threads: Option<threads::DeliveryThreads>,
    /// Cancelled at shutdown; each dispatcher stops on a child of it.
    shutdown: tokio_util::sync::CancellationToken,
}

/// One subscriber's dispatcher: what it was started from, and how to stop it.
struct RunningDispatcher {
    config: crate::config::SubscriberConfig,
    upstream: Arc<Upstream>,
    stop: tokio_util::sync::CancellationToken,
    lanes: Vec<tokio::task::JoinHandle<()>>,
}

/// What a reload did to the dispatchers (`topic/subscriber` names).
#[derive(Debug, Default, serde::Serialize)]
pub struct DispatcherChanges {
    /// Started for subscribers the config added.
    pub started: Vec<String>,
    /// Stopped for subscribers the config removed; their pending deliveries stay queued.
    pub stopped: Vec<String>,
    /// Restarted because the subscriber's settings or upstream changed.
    pub restarted: Vec<String>,
}

/// Everything a dispatcher is built from.
pub struct DispatchContext<'a> {
    pub queue: &'a Queue,
    pub upstreams: &'a BTreeMap<String, Arc<Upstream>>,
    pub metrics: &'a Metrics,
    pub live: &'a Arc<crate::telemetry::live::Live>,
}

impl Dispatchers {
    /// No async routes, nothing to deliver.
    pub fn none() -> Self {
        Self {
            running: BTreeMap::new(),
            retired: Vec::new(),
            threads: None,
            shutdown: tokio_util::sync::CancellationToken::new(),
        }
    }

    /// Starts one dispatcher per subscriber of `config` on `workers` delivery
    /// threads; they stop when `shutdown` is cancelled.
    pub fn start(
        config: &Config,
        ctx: &DispatchContext<'_>,
        workers: usize,
        shutdown: tokio_util::sync::CancellationToken,
    ) -> anyhow::Result<Self> {
        let mut this = Self {
            running: BTreeMap::new(),
            retired: Vec::new(),
            threads: Some(threads::DeliveryThreads::start(workers).context("delivery threads")?),
            shutdown,
        };
        this.apply(config, ctx)?;
        Ok(this)
    }

    /// Brings the running dispatchers in line with `config`: starts new
    /// subscribers, stops removed ones (their deliveries stay in the queue),
    /// restarts those whose settings or upstream changed. Stopped dispatchers
    /// drain their in-flight deliveries in the background.
    pub fn apply(
        &mut self,
        config: &Config,
        ctx: &DispatchContext<'_>,
    ) -> anyhow::Result<DispatcherChanges> {
        let threads = self
            .threads
            .as_ref()
            .context("no delivery threads: the queue was not opened at start")?;
        let mut wanted = BTreeMap::new();
        for route in &config.routes {
            let Some(a) = &route.async_ else { continue };
            for sub in &a.subscribers {
                let upstream = ctx.upstreams.get(&sub.upstream).cloned().with_context(|| {
                    format!("subscriber {}: unknown upstream {}", sub.name, sub.upstream)
                })?;
                wanted.insert((a.topic.clone(), sub.name.clone()), (sub, upstream));
            }
        }
        let mut changes = DispatcherChanges::default();
        let current: Vec<(String, String)> = self.running.keys().cloned().collect();
        for key in current {
            let unchanged = wanted.get(&key).is_some_and(|(sub, upstream)| {
                let running = &self.running[&key];
                running.config == **sub && Arc::ptr_eq(&running.upstream, upstream)
            });
            if unchanged {
                continue;
            }
            let old = self.running.remove(&key).expect("listed");
            old.stop.cancel();
            self.retired.extend(old.lanes);
            let name = format!("{}/{}", key.0, key.1);
            if wanted.contains_key(&key) {
                changes.restarted.push(name);
            } else {
                tracing::warn!(topic = %key.0, subscriber = %key.1, "subscriber removed: dispatcher stopped; its pending deliveries stay in the queue");
                changes.stopped.push(name);
            }
        }
        for (key, (sub, upstream)) in wanted {
            if self.running.contains_key(&key) {
                continue;
            }
            let stop = self.shutdown.child_token();
            let d = dispatcher::Dispatcher::new(
                &key.0,
                sub,
                upstream.clone(),
                ctx.queue.clone(),
                ctx.metrics,
                ctx.live.clone(),
            )?;
            let lanes = d.start(threads, stop.clone());
            let name = format!("{}/{}", key.0, key.1);
            if !changes.restarted.contains(&name) {
                changes.started.push(name);
            }
            self.running.insert(
                key,
                RunningDispatcher {
                    config: sub.clone(),
                    upstream,
                    stop,
                    lanes,
                },
            );
        }
        let running = &self.running;
        ctx.live.retain_subscribers(|topic, name| {
            running.contains_key(&(topic.to_owned(), name.to_owned()))
        });
        Ok(changes)
    }

    /// Waits until every lane has drained and stopped (after the shutdown token
    /// was cancelled), then stops the delivery threads.
    pub async fn join(mut self) {
        for lane in self
            .running
            .values_mut()
            .flat_map(|d| d.lanes.drain(..))
            .chain(self.retired.drain(..))
            .collect::<Vec<_>>()
        {
            let _ = lane.await;
        }
        self.threads.take();
    }
}
