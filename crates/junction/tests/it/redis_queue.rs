//! Async routes on the Redis queue: delivery through the gateway, and two
//! gateways sharing one queue (one stops; the other delivers what it accepted).

use super::pipeline::{eventually, poll_json};
use super::{client, metric, redis_url, start};
use junction_testkit::{Behavior, FakeUpstream, TcpGate};
use std::collections::HashSet;
use std::time::Duration;

fn config(prefix: &str, a: &str, b: &str) -> String {
    config_at(&redis_url(), prefix, a, b)
}

/// Two subscribers of `orders` on the Redis queue at `url`.
fn config_at(url: &str, prefix: &str, a: &str, b: &str) -> String {
    format!(
        r#"
queue: {{ backend: redis, url: "{url}", prefix: {prefix}, lease_ttl: 1s }}
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
    assert_eq!(resp.status(), 202);
    let v: serde_json::Value = resp.json().await.unwrap();
    v["id"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn events_on_the_redis_queue_reach_every_subscriber_with_retries() {
    let a = FakeUpstream::with(Behavior::FailTimes {
        status: 503,
        times: 2,
        retry_after: None,
    })
    .await;
    let b = FakeUpstream::start().await;
    let prefix = format!("jt-q-{}", uuid::Uuid::new_v4());
    let gw = start(&config(&prefix, &a.url(), &b.url())).await;
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
    let done = |v: &serde_json::Value| !v["completed_at_ms"].is_null();
    let status = poll_json(&url, Duration::from_secs(5), done).await;
    assert!(done(&status), "{status}");
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

#[tokio::test]
async fn two_gateways_share_one_queue_and_a_stopped_one_loses_nothing() {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let prefix = format!("jt-q-{}", uuid::Uuid::new_v4());
    let yaml = config(&prefix, &a.url(), &b.url());
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

#[tokio::test]
async fn a_redis_outage_refuses_new_events_with_503_and_loses_no_accepted_one() {
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let gate = TcpGate::in_front_of(&redis_url()).await;
    // Subscriber a fails until Redis is back, so accepted events wait in Redis through the outage.
    a.set(Behavior::Status(503));
    let prefix = format!("jt-q-{}", uuid::Uuid::new_v4());
    let url = format!("redis://{}", gate.addr());
    let gw = start(&config_at(&url, &prefix, &a.url(), &b.url())).await;
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
    ids.insert(back.expect("accepting again within 10 s of Redis coming back"));
    let readyz = client()
        .get(format!("http://{}/readyz", gw.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(readyz.status(), 200, "ready again once Redis answers");
    eventually("every accepted event at b", Duration::from_secs(15), || {
        ids.is_subset(&message_ids(&b))
    })
    .await;
    // a answered 503 until Redis was back: each message's record says it reached a too.
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
