//! The async pipeline: accept an event durably, answer 202, deliver it to every
//! subscriber on our own.
//!
//! - [`ingest`]: the data-plane side of an async route (validate, extract the
//!   ordering and idempotency keys, enqueue, 202).
//! - [`dispatcher`]: per subscriber, one lane per delivery thread leasing due
//!   deliveries from the [`Broker`] and sending them with the subscriber's retry
//!   policy, the upstream's breaker and bulkhead, and a concurrency cap.
//! - [`signing`]: Standard Webhooks signatures for subscribers with secrets.
//! - [`threads`]: the thread-per-core runtimes the dispatchers' lanes run on.
//!
//! The dispatcher is written here, not taken from a library, because its
//! semantics are the product: fan-out with independent retries per subscriber,
//! an open breaker pausing (not burning attempts of) a subscriber, and
//! at-least-once delivery across restarts.

pub mod dispatcher;
pub mod ingest;
pub mod signing;
pub mod threads;

use crate::config::{Config, KeySource, QueueConfig};
use crate::proxy::upstream::Upstream;
use crate::telemetry::metrics::TopicLabel;
use crate::telemetry::Metrics;
use anyhow::Context;
use junction_queue::{Broker, EmbeddedBroker, EmbeddedConfig, RedisBroker, RedisConfig};
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
    pub broker: Arc<dyn Broker>,
    /// `junction_events_accepted_total{topic}`.
    pub accepted: prometheus_client::metrics::counter::Counter,
}

/// Opens the configured queue backend.
pub async fn open_broker(config: &Config) -> anyhow::Result<Arc<dyn Broker>> {
    match &config.queue {
        QueueConfig::Embedded { path, max_depth } => {
            let mut cfg = EmbeddedConfig::new(path.clone());
            cfg.max_depth = *max_depth;
            cfg.completed_retention = COMPLETED_RETENTION;
            let broker = EmbeddedBroker::open(cfg)
                .await
                .with_context(|| format!("cannot open the embedded queue at {}", path.display()))?;
            Ok(broker)
        }
        QueueConfig::Redis {
            url,
            prefix,
            max_depth,
            lease_ttl,
        } => {
            let mut cfg = RedisConfig::new(url.clone(), prefix.clone());
            cfg.max_depth = *max_depth;
            cfg.lease_ttl = lease_ttl.0;
            cfg.completed_retention = COMPLETED_RETENTION;
            let broker = RedisBroker::connect(cfg).await.map_err(|e| {
                anyhow::anyhow!(
                    "cannot open the redis queue at {url}: {}",
                    crate::proxy::upstream::error_chain(&e)
                )
            })?;
            Ok(broker)
        }
    }
}

/// Builds the ingest side of every async route, keyed by route name.
pub fn async_routes(
    config: &Config,
    broker: &Arc<dyn Broker>,
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
                broker: broker.clone(),
                accepted: metrics
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

/// The running dispatchers: their lanes and the threads those run on.
pub struct Dispatchers {
    lanes: Vec<tokio::task::JoinHandle<()>>,
    /// Kept until every lane has finished, then dropped to stop the threads.
    threads: Option<threads::DeliveryThreads>,
}

impl Dispatchers {
    /// No async routes, nothing to deliver.
    pub fn none() -> Self {
        Self {
            lanes: Vec::new(),
            threads: None,
        }
    }

    /// Waits until every lane has drained and stopped (after `shutdown` was
    /// cancelled), then stops the delivery threads.
    pub async fn join(mut self) {
        for lane in self.lanes.drain(..) {
            let _ = lane.await;
        }
        self.threads.take();
    }
}

/// Starts one dispatcher per subscriber on `workers` delivery threads; they stop
/// when `shutdown` is cancelled.
pub fn start_dispatchers(
    config: &Config,
    broker: &Arc<dyn Broker>,
    upstreams: &BTreeMap<String, Arc<Upstream>>,
    metrics: &Metrics,
    live: &Arc<crate::telemetry::live::Live>,
    workers: usize,
    shutdown: tokio_util::sync::CancellationToken,
) -> anyhow::Result<Dispatchers> {
    let threads = threads::DeliveryThreads::start(workers).context("delivery threads")?;
    let mut lanes = Vec::new();
    for route in &config.routes {
        let Some(a) = &route.async_ else { continue };
        for sub in &a.subscribers {
            let upstream = upstreams.get(&sub.upstream).cloned().with_context(|| {
                format!("subscriber {}: unknown upstream {}", sub.name, sub.upstream)
            })?;
            let d = dispatcher::Dispatcher::new(
                &a.topic,
                sub,
                upstream,
                broker.clone(),
                metrics,
                live.clone(),
            )?;
            lanes.extend(d.start(&threads, shutdown.clone()));
        }
    }
    Ok(Dispatchers {
        lanes,
        threads: Some(threads),
    })
}
