//! Async routes on the queues several instances share (Redis, PostgreSQL,
//! RabbitMQ, NATS JetStream, SQS, Kafka):
//! delivery through the gateway, two gateways sharing one queue (one stops; the
//! other delivers what it accepted), a broker outage (503, nothing lost), and
//! ordering keys across two gateways (`order.rs`).
//! Every check runs once per backend, each in a namespace of its own.

use super::pipeline::{eventually, poll_json};
use super::{client, metric, redis_url, start};
use junction_testkit::{Behavior, FakeUpstream, PrivateKafka, TcpGate};
use std::collections::HashSet;
use std::time::Duration;

mod order;
use order::keyed_events_arrive_in_order_across_two_gateways;

/// A shared queue backend under test.
#[derive(Clone, Copy, Debug)]
enum Backend {
    Redis,
    Postgres,
    Rabbitmq,
    Nats,
    Sqs,
    Kafka,
}

/// `KAFKA_BROKERS`, or the local Kafka-protocol broker `scripts/services` starts.
fn kafka_brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

/// `SQS_ENDPOINT`, or the local moto server `scripts/services` starts.
fn sqs_endpoint() -> String {
    std::env::var("SQS_ENDPOINT").unwrap_or_else(|_| "http://127.0.0.1:4566".to_owned())
}

/// The gateway takes AWS credentials from the standard chain only, so tests
/// against the local server give it the usual placeholder ones through the
/// environment (set once, before any gateway of the test reads it; nextest
/// runs each test in a process of its own).
fn aws_test_credentials() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        for (k, v) in [
            ("AWS_ACCESS_KEY_ID", "test"),
            ("AWS_SECRET_ACCESS_KEY", "test"),
        ] {
            if std::env::var_os(k).is_none() {
                std::env::set_var(k, v);
            }
        }
    });
}

/// `NATS_URL`, or the local default.
fn nats_url() -> String {
    std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// `RABBITMQ_URL`, or the local default.
fn rabbitmq_url() -> String {
    std::env::var("RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// `POSTGRES_URL`, or the local default.
fn postgres_url() -> String {
    std::env::var("POSTGRES_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// A queue namespace (Redis key prefix, PostgreSQL schema) of one test; the
/// schema is dropped when the test ends.
struct Namespace {
    backend: Backend,
    name: String,
    /// Kafka behind a gate: the port its private broker listens on, and the broker.
    kafka: std::sync::Mutex<(u16, Option<PrivateKafka>)>,
}

impl Namespace {
    fn new(backend: Backend) -> Self {
        let name = match backend {
            Backend::Redis => format!("jt-q-{}", uuid::Uuid::new_v4()),
            Backend::Postgres => format!("jt_q_{}", uuid::Uuid::new_v4().simple()),
            Backend::Rabbitmq => format!("jt-q-{}", uuid::Uuid::new_v4().simple()),
            Backend::Nats => format!("jtq{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
            Backend::Sqs => {
                aws_test_credentials();
                format!("jtq{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
            }
            Backend::Kafka => format!("jtq{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
        };
        Self {
            backend,
            name,
            kafka: std::sync::Mutex::new((PrivateKafka::free_port(), None)),
        }
    }

    /// The server's URL (through a gate when given).
    fn url(&self, gate: Option<&TcpGate>) -> String {
        match (self.backend, gate) {
            (Backend::Redis, None) => redis_url(),
            (Backend::Redis, Some(g)) => format!("redis://{}", g.addr()),
            (Backend::Postgres, None) => postgres_url(),
            (Backend::Postgres, Some(g)) => {
                let url = postgres_url();
                let (_, path) = url.rsplit_once('/').expect("a database in the URL");
                format!("postgres://postgres@{}/{path}", g.addr())
            }
            (Backend::Rabbitmq, None) => rabbitmq_url(),
            (Backend::Rabbitmq, Some(g)) => format!("amqp://guest:guest@{}/%2f", g.addr()),
            (Backend::Nats, None) => nats_url(),
            (Backend::Nats, Some(g)) => format!("nats://{}", g.addr()),
            (Backend::Sqs, None) => sqs_endpoint(),
            (Backend::Sqs, Some(g)) => format!("http://{}", g.addr()),
            (Backend::Kafka, None) => format!("kafka://{}", kafka_brokers()),
            (Backend::Kafka, Some(g)) => {
                // The gate's target is this test's own broker, advertising the gate.
                let mut k = self.kafka.lock().unwrap();
                if k.1.is_none() {
                    k.1 = Some(PrivateKafka::start(k.0, g.addr()));
                }
                format!("kafka://{}", g.addr())
            }
        }
    }

    /// The server's address, for a gate in front of it (no credentials).
    fn server(&self) -> String {
        match self.backend {
            Backend::Redis => redis_url(),
            Backend::Postgres => {
                let url = postgres_url();
                let rest = url.split_once('@').map_or(url.as_str(), |(_, r)| r);
                format!("tcp://{rest}")
            }
            Backend::Nats => nats_url(),
            Backend::Sqs => sqs_endpoint(),
            Backend::Kafka => format!("tcp://127.0.0.1:{}", self.kafka.lock().unwrap().0),
            Backend::Rabbitmq => {
                let url = rabbitmq_url();
                let rest = url.split_once('@').map_or(url.as_str(), |(_, r)| r);
                format!("tcp://{rest}")
            }
        }
    }

    /// The `queue:` section for this namespace on the server at `url`.
    fn queue_yaml(&self, url: &str) -> String {
        match self.backend {
            Backend::Redis => format!(
                r#"{{ backend: redis, url: "{url}", prefix: {}, lease_ttl: 1s }}"#,
                self.name
            ),
            Backend::Postgres => format!(
                r#"{{ backend: postgres, url: "{url}", schema: {}, lease_ttl: 1s }}"#,
                self.name
            ),
            Backend::Rabbitmq => format!(
                r#"{{ backend: rabbitmq, url: "{url}", prefix: {} }}"#,
                self.name
            ),
            Backend::Nats => format!(
                r#"{{ backend: nats, url: "{url}", prefix: {}, ack_wait: 1s }}"#,
                self.name
            ),
            Backend::Kafka => format!(
                r#"{{ backend: kafka, url: "{url}", prefix: {}, partitions: 3, replication_factor: 1, session_timeout: 6s }}"#,
                self.name
            ),
            Backend::Sqs => format!(
                r#"{{ backend: sqs, region: us-east-1, endpoint: "{url}", prefix: {}, visibility_timeout: 1s }}"#,
                self.name
            ),
        }
    }

    /// The `backend` label of the queue metrics.
    fn label(&self) -> &'static str {
        match self.backend {
            Backend::Redis => "redis",
            Backend::Postgres => "postgres",
            Backend::Rabbitmq => "rabbitmq",
            Backend::Nats => "nats",
            Backend::Sqs => "sqs",
            Backend::Kafka => "kafka",
        }
    }

    /// Whether `/admin/messages/{id}` answers on this backend.
    fn has_status(&self) -> bool {
        !matches!(
            self.backend,
            Backend::Rabbitmq | Backend::Nats | Backend::Sqs | Backend::Kafka
        )
    }
}

/// Runs async cleanup to the end from a `Drop`, on a thread and runtime of its
/// own (the test's runtime may be shutting down).
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

impl Drop for Namespace {
    fn drop(&mut self) {
        // Kafka topics stay (the local broker keeps them in memory): deleting a
        // topic under the gateway's still-running group members can crash
        // librdkafka on tansu's answer for it. A private broker goes entirely.
        drop(self.kafka.lock().unwrap().1.take());
        if let Backend::Sqs = self.backend {
            let mut cfg =
                junction_queue::SqsConfig::new(Some("us-east-1".into()), self.name.clone());
            cfg.endpoint = Some(sqs_endpoint());
            teardown(async move {
                if let Ok(b) = junction_queue::SqsBroker::connect(cfg).await {
                    let _ = b.delete_everything().await;
                }
            });
        }
        if let Backend::Nats = self.backend {
            let p = &self.name;
            let names = vec![
                format!("{p}_orders"),
                format!("{p}_dlq"),
                format!("{p}_idem"),
            ];
            teardown(async move {
                let _ = junction_queue::NatsBroker::delete(&nats_url(), &names).await;
            });
        }
        if let Backend::Rabbitmq = self.backend {
            // The names the gateway declared for topic `orders` and its two subscribers.
            let p = &self.name;
            let mut names = vec![format!("{p}.orders")];
            for sub in ["sub-a", "sub-b"] {
                names.push(format!("{p}.orders.{sub}"));
                names.push(format!("{p}.orders.{sub}.dlq"));
                for tier in junction_queue::rabbitmq::topology::RETRY_TIERS_MS {
                    names.push(format!("{p}.orders.{sub}.retry.{tier}"));
                }
            }
            teardown(async move {
                let _ = junction_queue::RabbitBroker::delete(&rabbitmq_url(), &names).await;
            });
        }
        // JUNCTION_TEST_KEEP_SCHEMA=1 keeps it, to look at after a failure.
        if let (Backend::Postgres, Err(_)) =
            (self.backend, std::env::var("JUNCTION_TEST_KEEP_SCHEMA"))
        {
            let schema = self.name.clone();
            let _ = std::process::Command::new("psql")
                .args([
                    &postgres_url(),
                    "-qc",
                    &format!("DROP SCHEMA IF EXISTS {schema} CASCADE"),
                ])
                .output();
        }
    }
}

fn config(ns: &Namespace, a: &str, b: &str) -> String {
    config_at(&ns.queue_yaml(&ns.url(None)), a, b)
}

/// Two subscribers of `orders` on the queue `queue` (a YAML flow mapping).
fn config_at(queue: &str, a: &str, b: &str) -> String {
    format!(
        r#"
queue: {queue}
upstreams:
  a: {{ url: "{a}", timeout: 500ms, breaker: {{ min_requests: 1000 }} }}
  b: {{ url: "{b}", timeout: 500ms }}
routes:
  - name: orders
    match: {{ method: POST, path: /orders }}
    async:
      topic: orders
      subscribers:
        - {{ name: sub-a, upstream: a, path: /hook, retry: {{ backoff: 50ms, max_backoff: 100ms }}, max_attempts: 1000 }}
        - {{ name: sub-b, upstream: b, path: /events }}
"#
    )
}

/// POSTs a JSON event to `/orders`, whatever the answer.
async fn send(addr: std::net::SocketAddr, body: &str) -> reqwest::Response {
    client()
        .post(format!("http://{addr}/orders"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap()
}

/// POSTs a JSON event to `/orders`, expects 202; returns its id.
async fn post(addr: std::net::SocketAddr, body: String) -> String {
    let resp = send(addr, &body).await;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    // The problem's detail names the backend's error when it is refused.
    assert_eq!(status, 202, "{text}");
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["id"].as_str().unwrap().to_owned()
}

/// Each check once per backend.
macro_rules! on_backends {
    ($($check:ident),* $(,)?) => {
        mod redis {$(
            #[tokio::test]
            async fn $check() {
                super::$check(super::Backend::Redis).await
            }
        )*}
        mod postgres {$(
            #[tokio::test]
            async fn $check() {
                super::$check(super::Backend::Postgres).await
            }
        )*}
        mod rabbitmq {$(
            #[tokio::test]
            async fn $check() {
                super::$check(super::Backend::Rabbitmq).await
            }
        )*}
        mod nats {$(
            #[tokio::test]
            async fn $check() {
                super::$check(super::Backend::Nats).await
            }
        )*}
        mod sqs {$(
            #[tokio::test]
            async fn $check() {
                super::$check(super::Backend::Sqs).await
            }
        )*}
        mod kafka {$(
            #[tokio::test]
            async fn $check() {
                super::$check(super::Backend::Kafka).await
            }
        )*}
    };
}

on_backends!(
    a_killed_instance_leaves_its_deliveries_to_another,
    events_reach_every_subscriber_with_retries,
    two_gateways_share_one_queue_and_a_stopped_one_loses_nothing,
    an_outage_refuses_new_events_with_503_and_loses_no_accepted_one,
    keyed_events_arrive_in_order_across_two_gateways,
);

/// Two `junction` processes on one queue; the one that accepted the events is
/// SIGKILLed mid-delivery (deliveries taken, not settled): the other delivers
/// every accepted event (after `lease_ttl` / `ack_wait`, or at once where the
/// broker sees the connection drop).
async fn a_killed_instance_leaves_its_deliveries_to_another(backend: Backend) {
    use super::process::spawn_on;
    const N: usize = 60;
    let ns = Namespace::new(backend);
    let dir = tempfile::tempdir().unwrap();
    // Slow and narrow: most deliveries are still pending, some in flight, at the kill.
    let slow = FakeUpstream::with(Behavior::Slow(Duration::from_millis(30))).await;
    let routes = format!(
        r#"upstreams:
  s: {{ url: "{}", timeout: 3s, breaker: {{ min_requests: 100000 }} }}
routes:
  - name: orders
    match: {{ method: POST, path: /orders }}
    async:
      topic: orders
      subscribers:
        - {{ name: sub-a, upstream: s, path: /hook, concurrency: 2 }}
"#,
        slow.url()
    );
    let queue = ns.queue_yaml(&ns.url(None));
    let mut first = spawn_on(dir.path(), "first", &queue, &routes, &[]).await;
    let mut bodies = Vec::new();
    for i in 0..N {
        let body = format!(r#"{{"n":{i}}}"#);
        let resp = send(first.data.parse().unwrap(), &body).await;
        assert_eq!(resp.status(), 202, "accepted by the first instance");
        bodies.push(body);
    }
    // Let it take some deliveries, then kill it without a chance to settle them.
    eventually(
        "the first instance is delivering",
        Duration::from_secs(10),
        || slow.calls() >= 3,
    )
    .await;
    first.child.kill().expect("SIGKILL");
    let _ = first.child.wait();
    let second = spawn_on(dir.path(), "second", &queue, &routes, &[]).await;
    let t0 = std::time::Instant::now();
    loop {
        let seen: HashSet<String> = slow
            .seen()
            .iter()
            .map(|s| String::from_utf8_lossy(&s.body).into_owned())
            .collect();
        let missing: Vec<&String> = bodies.iter().filter(|b| !seen.contains(*b)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{} of {N} accepted events never delivered after the kill: {missing:?}\n{}",
            missing.len(),
            second.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn events_reach_every_subscriber_with_retries(backend: Backend) {
    let a = FakeUpstream::with(Behavior::FailTimes {
        status: 503,
        times: 2,
        retry_after: None,
    })
    .await;
    let b = FakeUpstream::start().await;
    let ns = Namespace::new(backend);
    let gw = start(&config(&ns, &a.url(), &b.url())).await;
    let id = post(gw.data, r#"{"orderId":"o-1"}"#.into()).await;
    eventually("both delivered", Duration::from_secs(10), || {
        a.calls() == 3 && b.calls() == 1
    })
    .await;
    let seen = &b.seen()[0];
    assert_eq!(seen.body.as_ref(), br#"{"orderId":"o-1"}"#);
    assert_eq!(seen.headers["x-junction-message-id"], id.as_str());
    assert_eq!(a.seen()[2].headers["x-junction-attempt"], "3");
    let url = format!("http://{}/admin/messages/{id}", gw.admin);
    if ns.has_status() {
        let done = |v: &serde_json::Value| !v["completed_at_ms"].is_null();
        let status = poll_json(&url, Duration::from_secs(5), done).await;
        assert!(done(&status), "{status}");
    } else {
        let resp = client().get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 501, "no per-message status on this backend");
    }
    assert_eq!(
        metric(
            gw.admin,
            r#"junction_deliveries_total{subscriber="sub-a",outcome="retry"}"#
        )
        .await,
        2.0
    );
    metric_becomes(gw.admin, r#"junction_queue_depth{topic="orders"}"#, 0.0).await;
}

async fn two_gateways_share_one_queue_and_a_stopped_one_loses_nothing(backend: Backend) {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let ns = Namespace::new(backend);
    let yaml = config(&ns, &a.url(), &b.url());
    // Subscriber a is down while the first gateway accepts: nothing is delivered to it yet.
    a.set(Behavior::Status(503));
    let first = start(&yaml).await;
    let second = start(&yaml).await;
    let mut ids = HashSet::new();
    for i in 0..30 {
        ids.insert(post(first.data, format!(r#"{{"n":{i}}}"#)).await);
    }
    first.shutdown.cancel();
    first.task.await.unwrap().unwrap();
    a.set(Behavior::Ok(r#"{"ok":true}"#.into()));
    eventually(
        "every accepted event reached b",
        Duration::from_secs(10),
        || message_ids(&b) == ids,
    )
    .await;
    // Only the second gateway can have delivered to a: it was down until the first stopped.
    let series = r#"junction_deliveries_total{subscriber="sub-a",outcome="delivered"}"#;
    metric_becomes(second.admin, series, 30.0).await;
    assert!(ids.is_subset(&message_ids(&a)));
    // The delivered counter moves just before the ack is recorded: wait for the depth.
    metric_becomes(second.admin, r#"junction_queue_depth{topic="orders"}"#, 0.0).await;
}

/// Waits (bounded, 5 s) until a metric has the value `want`, then checks it.
async fn metric_becomes(admin: std::net::SocketAddr, series: &str, want: f64) {
    for _ in 0..250 {
        if metric(admin, series).await == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(metric(admin, series).await, want, "{series}");
}

async fn an_outage_refuses_new_events_with_503_and_loses_no_accepted_one(backend: Backend) {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let ns = Namespace::new(backend);
    let gate = TcpGate::in_front_of(&ns.server()).await;
    // Subscriber a fails until the broker is back, so accepted events wait in it through the outage.
    a.set(Behavior::Status(503));
    let gw = start(&config_at(
        &ns.queue_yaml(&ns.url(Some(&gate))),
        &a.url(),
        &b.url(),
    ))
    .await;
    let mut ids = HashSet::new();
    for i in 0..5 {
        ids.insert(post(gw.data, format!(r#"{{"before":{i}}}"#)).await);
    }
    gate.cut();
    let refused = send(gw.data, r#"{"during":1}"#).await;
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    // Load balancers see it too: not ready while the queue cannot confirm.
    let readyz = client()
        .get(format!("http://{}/readyz", gw.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 503);
    // Seen on the dashboard's metrics too, until it is back.
    let connected = format!(r#"junction_queue_connected{{backend="{}"}}"#, ns.label());
    metric_becomes(gw.admin, &connected, 0.0).await;
    assert!(readyz
        .text()
        .await
        .unwrap()
        .contains("queue backend is unreachable"));
    gate.restore();
    a.set(Behavior::Ok(r#"{"ok":true}"#.into()));
    // Accepted again once Redis is reachable (the connection is re-made on demand).
    let mut back = None;
    for _ in 0..100 {
        let resp = send(gw.data, r#"{"after":1}"#).await;
        if resp.status() == 202 {
            let v: serde_json::Value = resp.json().await.unwrap();
            back = Some(v["id"].as_str().unwrap().to_owned());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    ids.insert(back.expect("accepting again within 10 s of the broker coming back"));
    let readyz = client()
        .get(format!("http://{}/readyz", gw.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200, "ready again once the broker answers");
    metric_becomes(gw.admin, &connected, 1.0).await;
    eventually("every accepted event at b", Duration::from_secs(15), || {
        ids.is_subset(&message_ids(&b))
    })
    .await;
    if !ns.has_status() {
        // a answered 503 until the broker was back: every event reached it since.
        let series = r#"junction_deliveries_total{subscriber="sub-a",outcome="delivered"}"#;
        for _ in 0..500 {
            if metric(gw.admin, series).await >= ids.len() as f64 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(metric(gw.admin, series).await >= ids.len() as f64);
        return;
    }
    // a answered 503 until the broker was back: each message's record says it reached a too.
    let done = |v: &serde_json::Value| !v["completed_at_ms"].is_null();
    for id in &ids {
        let url = format!("http://{}/admin/messages/{id}", gw.admin);
        let status = poll_json(&url, Duration::from_secs(10), done).await;
        assert!(done(&status), "{status}");
    }
}

/// The message ids a subscriber has seen (every attempt, whatever it answered).
fn message_ids(up: &FakeUpstream) -> HashSet<String> {
    up.seen()
        .iter()
        .map(|s| {
            s.headers["x-junction-message-id"]
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}
