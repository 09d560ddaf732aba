//! Shared helpers: temp-dir brokers and attempt records.

use std::sync::Arc;

use junction_queue::conformance::queue::QueueHarness;
use junction_queue::conformance::{BrokerOptions, Harness};
use junction_queue::{AttemptRecord, EmbeddedBroker, EmbeddedConfig};
use tempfile::TempDir;

/// A fresh embedded broker in its own temp dir (the dir lives as long as the harness).
pub async fn embedded(opts: BrokerOptions) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let b = open_opts(&dir, &opts, junction_queue::embedded::HOT_MAX_MESSAGES).await;
    Harness::new(b, dir)
}

/// Like [`embedded`], with room for only 3 messages in memory on the fast path, so
/// most messages overflow into the journal and are loaded back later.
pub async fn embedded_small_hot(opts: BrokerOptions) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let b = open_opts(&dir, &opts, SMALL_HOT).await;
    Harness::new(b, dir)
}

/// Fast-path memory of [`embedded_small_hot`], in messages.
pub const SMALL_HOT: usize = 3;

/// Opens the embedded broker stored in `dir`.
pub async fn open(dir: &TempDir, max_depth: Option<u64>) -> Arc<EmbeddedBroker> {
    open_with(dir, max_depth, junction_queue::embedded::HOT_MAX_MESSAGES).await
}

/// Opens the embedded broker stored in `dir`, with `hot_max` messages on the fast path.
pub async fn open_with(
    dir: &TempDir,
    max_depth: Option<u64>,
    hot_max: usize,
) -> Arc<EmbeddedBroker> {
    let opts = BrokerOptions {
        max_depth,
        ..BrokerOptions::default()
    };
    open_opts(dir, &opts, hot_max).await
}

/// Opens the embedded broker stored in `dir` with `opts`, `hot_max` messages on the fast path.
pub async fn open_opts(dir: &TempDir, opts: &BrokerOptions, hot_max: usize) -> Arc<EmbeddedBroker> {
    let mut cfg = EmbeddedConfig::new(dir.path().join("queue"));
    cfg.max_depth = opts.max_depth;
    cfg.on_full = opts.on_full;
    cfg.hot_max_messages = hot_max;
    EmbeddedBroker::open(cfg)
        .await
        .expect("open embedded broker")
}

/// An attempt record with the given outcome.
pub fn attempt(outcome: &str) -> AttemptRecord {
    AttemptRecord {
        attempt: 0,
        at_ms: junction_queue::conformance::now_ms(),
        outcome: outcome.to_owned(),
        duration_ms: 1,
        response: None,
    }
}

/// A fresh Redis broker on the real Redis at `REDIS_URL` (default
/// redis://127.0.0.1:6379), under a prefix of its own.
pub async fn redis(opts: BrokerOptions) -> Harness {
    let mut cfg = junction_queue::RedisConfig::new(redis_url(), unique_prefix());
    cfg.max_depth = opts.max_depth;
    cfg.on_full = opts.on_full;
    let b = junction_queue::RedisBroker::connect(cfg)
        .await
        .expect("redis must be running for these tests");
    Harness::new(b, ())
}

/// `REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A key prefix no other test uses.
pub fn unique_prefix() -> String {
    format!("jq-test-{}", uuid::Uuid::new_v4())
}

/// A fresh embedded queue (the contract over the store) in its own temp dir.
pub async fn embedded_queue() -> QueueHarness {
    let dir = tempfile::tempdir().expect("temp dir");
    let b = open(&dir, None).await;
    QueueHarness::new(b.into_queue(), dir)
}

/// A fresh Redis queue under a prefix of its own.
pub async fn redis_queue() -> QueueHarness {
    let cfg = junction_queue::RedisConfig::new(redis_url(), unique_prefix());
    let b = junction_queue::RedisBroker::connect(cfg)
        .await
        .expect("redis must be running for these tests");
    QueueHarness::new(b.into_queue(), ())
}

/// `POSTGRES_URL`, or the local default.
pub fn postgres_url() -> String {
    std::env::var("POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Runs a test's async cleanup to the end from a `Drop`: on a thread and
/// runtime of its own, since the test's runtime may be shutting down.
fn teardown(cleanup: impl std::future::Future<Output = ()> + Send + 'static) {
    let _ = std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(cleanup)
    })
    .join();
}

/// Drops its PostgreSQL schema when the test ends, so reruns start clean.
pub struct DropSchema(pub String);

impl Drop for DropSchema {
    fn drop(&mut self) {
        let schema = self.0.clone();
        teardown(async move {
            if let Ok((client, conn)) =
                tokio_postgres::connect(&postgres_url(), tokio_postgres::NoTls).await
            {
                tokio::spawn(conn);
                let _ = client
                    .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
                    .await;
            }
        });
    }
}

/// A schema name no other test uses.
pub fn unique_schema() -> String {
    format!("jq_test_{}", uuid::Uuid::new_v4().simple())
}

/// A fresh PostgreSQL store in a schema of its own (dropped afterwards).
pub async fn postgres(opts: BrokerOptions) -> Harness {
    let schema = unique_schema();
    let mut cfg = junction_queue::PostgresConfig::new(postgres_url(), &schema);
    cfg.max_depth = opts.max_depth;
    cfg.on_full = opts.on_full;
    let b = junction_queue::PostgresBroker::connect(cfg)
        .await
        .expect("postgres must be running for these tests");
    Harness::new(b, DropSchema(schema))
}

/// A fresh PostgreSQL queue in a schema of its own (dropped afterwards).
pub async fn postgres_queue() -> QueueHarness {
    let schema = unique_schema();
    let cfg = junction_queue::PostgresConfig::new(postgres_url(), &schema);
    let b = junction_queue::PostgresBroker::connect(cfg)
        .await
        .expect("postgres must be running for these tests");
    QueueHarness::new(b.into_queue(), DropSchema(schema))
}

/// `RABBITMQ_URL`, or the local default.
pub fn rabbitmq_url() -> String {
    std::env::var("RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Deletes a test's RabbitMQ queues and exchanges when it ends.
pub struct DeleteTopology(pub Arc<junction_queue::RabbitBroker>);

impl Drop for DeleteTopology {
    fn drop(&mut self) {
        let names = self.0.declared();
        teardown(async move {
            let _ = junction_queue::RabbitBroker::delete(&rabbitmq_url(), &names).await;
        });
    }
}

/// A fresh RabbitMQ queue under a name prefix of its own (deleted afterwards).
pub async fn rabbitmq_queue() -> QueueHarness {
    let cfg = junction_queue::RabbitConfig::new(rabbitmq_url(), unique_prefix());
    let b = junction_queue::RabbitBroker::connect(cfg)
        .await
        .expect("rabbitmq must be running for these tests");
    QueueHarness::new(b.clone().into_queue(), DeleteTopology(b))
}

/// `NATS_URL`, or the local default.
pub fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// Deletes a test's JetStream streams when it ends.
pub struct DeleteStreams(pub Arc<junction_queue::NatsBroker>);

impl Drop for DeleteStreams {
    fn drop(&mut self) {
        let names = self.0.declared();
        teardown(async move {
            let _ = junction_queue::NatsBroker::delete(&nats_url(), &names).await;
        });
    }
}

/// A fresh NATS JetStream queue under a prefix of its own (deleted afterwards).
pub async fn nats_queue() -> QueueHarness {
    let prefix = format!("jqt{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let cfg = junction_queue::NatsConfig::new(nats_url(), prefix);
    let b = junction_queue::NatsBroker::connect(cfg)
        .await
        .expect("nats with jetstream must be running for these tests");
    QueueHarness::new(b.clone().into_queue(), DeleteStreams(b))
}

/// `SQS_ENDPOINT`, or the local moto server `scripts/services` starts.
pub fn sqs_endpoint() -> String {
    std::env::var("SQS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4566".to_owned())
}

/// Settings of an SQS queue on the local server under a prefix of its own.
pub fn sqs_config(fifo: bool) -> junction_queue::SqsConfig {
    let prefix = format!("jqt{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut cfg = junction_queue::SqsConfig::new(Some("us-east-1".to_owned()), prefix);
    cfg.endpoint = Some(sqs_endpoint());
    cfg.fifo = fifo;
    cfg.visibility_timeout = std::time::Duration::from_secs(5);
    cfg.credentials = Some(junction_queue::sqs::credentials("test", "test"));
    cfg
}

/// Deletes a test's SQS queues and SNS topics when it ends.
pub struct DeleteSqs(pub junction_queue::SqsConfig);

impl Drop for DeleteSqs {
    fn drop(&mut self) {
        let cfg = self.0.clone();
        teardown(async move {
            if let Ok(b) = junction_queue::SqsBroker::connect(cfg).await {
                let _ = b.delete_everything().await;
            }
        });
    }
}

/// A fresh SQS (+ SNS) queue on the local server, standard queues.
pub async fn sqs_queue() -> QueueHarness {
    sqs_queue_with(false).await
}

/// A fresh SQS (+ SNS) queue on the local server, FIFO topics and queues.
pub async fn sqs_fifo_queue() -> QueueHarness {
    sqs_queue_with(true).await
}

async fn sqs_queue_with(fifo: bool) -> QueueHarness {
    let cfg = sqs_config(fifo);
    let b = junction_queue::SqsBroker::connect(cfg.clone())
        .await
        .expect(
            "an SQS server (moto, started by scripts/services) must be running for these tests",
        );
    QueueHarness::new(b.into_queue(), DeleteSqs(cfg))
}

/// `KAFKA_BROKERS`, or the local Kafka-protocol broker `scripts/services` starts.
pub fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// Settings of a Kafka queue under a prefix of its own: 3 partitions, one
/// replica (the local broker is one node), short sessions so rebalances are quick.
pub fn kafka_config() -> junction_queue::KafkaConfig {
    let prefix = format!("jqt{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut cfg = junction_queue::KafkaConfig::new(kafka_brokers(), prefix);
    cfg.partitions = 3;
    cfg.replication_factor = Some(1);
    cfg.session_timeout = std::time::Duration::from_secs(6);
    cfg
}

/// Deletes a test's Kafka topics when it ends, after closing its clients (a
/// group member still reading a topic deleted under it can crash librdkafka
/// on tansu's metadata answer).
pub struct DeleteKafka(pub Arc<junction_queue::KafkaBroker>);

impl Drop for DeleteKafka {
    fn drop(&mut self) {
        let b = self.0.clone();
        teardown(async move {
            use junction_queue::Publisher as _;
            let _ = b.close().await;
            let _ = b.delete_everything().await;
        });
    }
}

/// A fresh Kafka queue on the local broker.
pub async fn kafka_queue() -> QueueHarness {
    let cfg = kafka_config();
    let b = junction_queue::KafkaBroker::connect(cfg)
        .await
        .expect("a Kafka-protocol broker (tansu, started by scripts/services) must be running for these tests");
    QueueHarness::new(b.clone().into_queue(), DeleteKafka(b))
}
