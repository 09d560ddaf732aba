use super::{client, metric, start};
use junction_gateway::app::Running;
use junction_testkit::{closed_port, Behavior, FakeUpstream};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Starts Junction with an embedded queue in `dir`.
pub async fn start_in(dir: &std::path::Path, yaml: &str) -> Running {
    let queue = format!(
        "queue: {{ backend: embedded, path: {} }}\n",
        dir.join("q").display()
    );
    start(&format!("{queue}{yaml}")).await
}

/// Polls a JSON admin endpoint until `done` holds (bounded); returns the last answer.
pub async fn poll_json(
    url: &str,
    timeout: Duration,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let t0 = Instant::now();
    loop {
        let v: serde_json::Value = client()
            .get(url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if done(&v) || t0.elapsed() > timeout {
            return v;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits (bounded) until `f` holds.
pub async fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn two_subscribers(a: &str, b: &str, sub_extra: &str) -> String {
    format!(
        r#"
upstreams:
  a: {{ url: "{a}", timeout: 500ms, breaker: {{ min_requests: 1000 }} }}
  b: {{ url: "{b}", timeout: 500ms, breaker: {{ min_requests: 1000 }} }}
routes:
  - name: orders
    match: {{ method: POST, path: /orders }}
    async:
      topic: orders
      subscribers:
        - {{ name: sub-a, upstream: a, path: /hook {sub_extra} }}
        - {{ name: sub-b, upstream: b, path: /events {sub_extra} }}
"#
    )
}

#[tokio::test]
async fn accepted_events_reach_every_subscriber_with_headers() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let gw = start_in(dir.path(), &two_subscribers(&a.url(), &b.url(), "")).await;
    let resp = client()
        .post(format!("http://{}/orders", gw.data))
        .header("content-type", "application/json")
        .body(r#"{"orderId":"o-1"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    let v: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(v["topic"], "orders");
    assert_eq!(v["status"], "accepted");
    let id = v["id"].as_str().unwrap().to_string();
    eventually("both subscribers got it", Duration::from_secs(5), || {
        a.calls() == 1 && b.calls() == 1
    })
    .await;
    for (up, path) in [(&a, "/hook"), (&b, "/events")] {
        let seen = &up.seen()[0];
        assert_eq!(seen.uri, path);
        assert_eq!(seen.body.as_ref(), br#"{"orderId":"o-1"}"#);
        assert_eq!(seen.headers["content-type"], "application/json");
        assert_eq!(seen.headers["x-junction-message-id"], id.as_str());
        assert_eq!(seen.headers["x-junction-attempt"], "1");
        assert!(seen.headers.contains_key("traceparent"));
    }
    // The message record shows both delivered.
    let all_delivered = |v: &serde_json::Value| {
        v["subscribers"]
            .as_array()
            .is_some_and(|s| s.iter().all(|x| x["state"]["state"] == "delivered"))
    };
    let url = format!("http://{}/admin/messages/{id}", gw.admin);
    let status = poll_json(&url, Duration::from_secs(2), all_delivered).await;
    assert!(all_delivered(&status), "{status}");
    assert_eq!(
        metric(
            gw.admin,
            r#"junction_events_accepted_total{topic="orders"}"#
        )
        .await,
        1.0
    );
    assert_eq!(
        metric(
            gw.admin,
            r#"junction_deliveries_total{subscriber="sub-a",outcome="delivered"}"#
        )
        .await,
        1.0
    );
}

#[tokio::test]
async fn subscribers_on_http2_upstreams_get_every_event_over_http2() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let yaml = two_subscribers(&a.url(), &b.url(), "")
        .replace("timeout: 500ms,", "timeout: 500ms, http2: true,");
    let gw = start_in(dir.path(), &yaml).await;
    let posts = (0..40).map(|i| {
        client()
            .post(format!("http://{}/orders", gw.data))
            .header("content-type", "application/json")
            .body(format!(r#"{{"orderId":"o-{i}"}}"#))
            .send()
    });
    for resp in futures::future::join_all(posts).await {
        assert_eq!(resp.unwrap().status(), 202);
    }
    eventually("40 events at both", Duration::from_secs(10), || {
        a.calls() == 40 && b.calls() == 40
    })
    .await;
    for up in [&a, &b] {
        assert!(up.seen().iter().all(|s| s.version == http::Version::HTTP_2));
    }
}

#[tokio::test]
async fn bad_json_is_400_and_nothing_is_enqueued() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let gw = start_in(dir.path(), &two_subscribers(&a.url(), &b.url(), "")).await;
    let bodies: [&[u8]; 3] = [b"{not json", b"{\"a\":\"\xff\"}", b"{} {}"];
    for body in bodies {
        let resp = client()
            .post(format!("http://{}/orders", gw.data))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{body:?}");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(a.calls() + b.calls(), 0);
}

#[tokio::test]
async fn a_failing_subscriber_retries_then_dead_letters_and_replay_delivers() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        FakeUpstream::start().await,
        FakeUpstream::with(Behavior::Status(500)).await,
    );
    let extra = ", max_attempts: 3, retry: { backoff: 20ms, max_backoff: 100ms }";
    let gw = start_in(dir.path(), &two_subscribers(&a.url(), &b.url(), extra)).await;
    let resp = client()
        .post(format!("http://{}/orders", gw.data))
        .body("e1")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202);
    // The healthy subscriber is not held back by the failing one.
    eventually("sub-a delivered", Duration::from_secs(5), || a.calls() == 1).await;
    eventually("sub-b tried 3 times", Duration::from_secs(5), || {
        b.calls() == 3
    })
    .await;
    let attempts: Vec<String> = b
        .seen()
        .iter()
        .map(|s| {
            s.headers["x-junction-attempt"]
                .to_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(attempts, vec!["1", "2", "3"]);

    let url = format!("http://{}/admin/dlq?subscriber=sub-b", gw.admin);
    let dlq = poll_json(&url, Duration::from_secs(5), |v| {
        v["items"].as_array().is_some_and(|i| i.len() == 1)
    })
    .await;
    let items = dlq["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{dlq}");
    assert_eq!(items[0]["subscriber"], "sub-b");
    assert_eq!(
        metric(gw.admin, r#"junction_dlq_depth{topic="orders"}"#).await,
        1.0
    );

    b.set(Behavior::Ok("{}".into()));
    let dl_id = items[0]["id"].as_str().unwrap();
    let r = client()
        .post(format!("http://{}/admin/dlq/{dl_id}/replay", gw.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    eventually("replayed delivery arrives", Duration::from_secs(5), || {
        b.calls() == 4
    })
    .await;
    assert_eq!(b.seen()[3].body.as_ref(), b"e1");
    let r = client()
        .post(format!("http://{}/admin/dlq/{dl_id}/replay", gw.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404, "a replayed dead letter is gone");
}

#[tokio::test]
async fn idempotent_repeats_return_the_same_id_and_deliver_once() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let gw = start_in(dir.path(), &two_subscribers(&a.url(), &b.url(), "")).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let r = client()
            .post(format!("http://{}/orders", gw.data))
            .header("idempotency-key", "order-77")
            .body("x")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
        ids.push(
            r.json::<serde_json::Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    assert!(ids.iter().all(|i| *i == ids[0]), "{ids:?}");
    eventually("delivered", Duration::from_secs(5), || a.calls() == 1).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.calls(), 1);
    assert_eq!(b.calls(), 1);
}

#[tokio::test]
async fn a_subscriber_that_rejects_a_message_gets_it_once_unless_retry_on_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        FakeUpstream::with(Behavior::Status(400)).await,
        FakeUpstream::with(Behavior::Status(409)).await,
    );
    // sub-a: a 400 is dead-lettered at once; sub-b lists 409 in retry_on.
    let cfg = two_subscribers(
        &a.url(),
        &b.url(),
        ", retry: { backoff: 1ms, max_backoff: 5ms }",
    )
    .replace("path: /events", "path: /events, retry_on: [409]");
    let gw = start_in(dir.path(), &cfg).await;
    let r = client()
        .post(format!("http://{}/orders", gw.data))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    eventually("sub-b retries its 409", Duration::from_secs(10), || {
        b.calls() >= 3
    })
    .await;
    let dlq = poll_json(
        &format!("http://{}/admin/dlq?subscriber=sub-a", gw.admin),
        Duration::from_secs(5),
        |v| v["items"].as_array().is_some_and(|i| !i.is_empty()),
    )
    .await;
    let reason = dlq["items"][0]["reason"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        reason.contains("400") && reason.contains("rejected"),
        "{dlq}"
    );
    assert_eq!(a.calls(), 1, "a rejected message is not sent again");
}

#[tokio::test]
async fn a_subscriber_retry_setting_does_not_cap_attempts_at_three() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        FakeUpstream::with(Behavior::Status(500)).await,
        FakeUpstream::start().await,
    );
    let extra = ", retry: { backoff: 1ms, max_backoff: 5ms }";
    let gw = start_in(dir.path(), &two_subscribers(&a.url(), &b.url(), extra)).await;
    let r = client()
        .post(format!("http://{}/orders", gw.data))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // The documented default is 20 attempts; `retry.attempts` (3) is an upstream setting.
    eventually("more than 3 attempts", Duration::from_secs(10), || {
        a.calls() >= 6
    })
    .await;
}

#[tokio::test]
async fn malformed_idempotency_keys_are_400_and_never_merge_events() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let gw = start_in(dir.path(), &two_subscribers(&a.url(), &b.url(), "")).await;
    let long = "k".repeat(300);
    let bad: [&[u8]; 4] = [b"", b"   ", "caf\u{e9}".as_bytes(), long.as_bytes()];
    for key in bad {
        for body in ["{\"a\":1}", "{\"a\":2}"] {
            let r = client()
                .post(format!("http://{}/orders", gw.data))
                .header(
                    "idempotency-key",
                    reqwest::header::HeaderValue::from_bytes(key).unwrap(),
                )
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 400, "key {:?}", String::from_utf8_lossy(key));
            assert_eq!(r.headers()["content-type"], "application/problem+json");
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(a.calls(), 0, "nothing was accepted");
}

#[tokio::test]
async fn per_key_order_holds_under_parallel_load() {
    let dir = tempfile::tempdir().unwrap();
    // The subscriber fails now and then, which would reorder deliveries without per-key ordering.
    let a = FakeUpstream::with(Behavior::FailTimes {
        status: 503,
        times: 5,
        retry_after: None,
    })
    .await;
    let b = FakeUpstream::start().await;
    let extra = ", ordering_key: \"json:/key\", concurrency: 16, retry: { backoff: 5ms, max_backoff: 20ms }";
    let gw = start_in(dir.path(), &two_subscribers(&a.url(), &b.url(), extra)).await;
    let keys = 4;
    let per_key = 15;
    let mut tasks = Vec::new();
    for k in 0..keys {
        let url = format!("http://{}/orders", gw.data);
        tasks.push(tokio::spawn(async move {
            let c = client();
            for n in 0..per_key {
                let body = format!(r#"{{"key":"k{k}","n":{n}}}"#);
                let r = c
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let total = (keys * per_key) as u64;
    eventually("all delivered to a", Duration::from_secs(10), || {
        let acked: std::collections::HashSet<_> = a.seen().iter().map(|s| s.body.clone()).collect();
        acked.len() as u64 == total
    })
    .await;
    // Successful deliveries per key arrive in publish order.
    let mut last: HashMap<String, i64> = HashMap::new();
    let seen = a.seen();
    let mut failures_left = 5;
    for s in &seen {
        // The first 5 calls were answered 503 (not acknowledged); skip them.
        if failures_left > 0 {
            failures_left -= 1;
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(&s.body).unwrap();
        let key = v["key"].as_str().unwrap().to_string();
        let n = v["n"].as_i64().unwrap();
        let prev = last.insert(key.clone(), n).unwrap_or(-1);
        assert!(n > prev, "key {key}: {n} delivered after {prev}");
    }
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let dir = tempfile::tempdir().unwrap();
    let down = closed_port().await;
    let yaml = two_subscribers(&format!("http://{down}"), &format!("http://{down}"), "");
    let queue = format!(
        "queue: {{ backend: embedded, path: {}, max_depth: 3 }}\n",
        dir.path().join("q").display()
    );
    let gw = start(&format!("{queue}{yaml}")).await;
    let mut statuses = Vec::new();
    for i in 0..5 {
        let r = client()
            .post(format!("http://{}/orders", gw.data))
            .body(format!("m{i}"))
            .send()
            .await
            .unwrap();
        if r.status() == 503 {
            assert!(r.headers().contains_key("retry-after"));
            assert_eq!(r.headers()["content-type"], "application/problem+json");
        }
        statuses.push(r.status().as_u16());
    }
    assert_eq!(statuses, vec![202, 202, 202, 503, 503]);
}

/// `max_depth` bounds each subscriber's backlog: a subscriber whose upstream is
/// down sheds its own events to its dead letters (reason "backlog full") while the
/// topic's healthy subscriber gets every event and every producer gets 202; the
/// backlog, its age and the state are per subscriber in /metrics and the overview.
#[tokio::test]
async fn a_dead_subscriber_sheds_its_own_backlog_and_never_blocks_the_topic() {
    let dir = tempfile::tempdir().unwrap();
    let down = closed_port().await;
    let b = FakeUpstream::start().await;
    let yaml = two_subscribers(
        &format!("http://{down}"),
        &b.url(),
        ", retry: { backoff: 10s, max_backoff: 10s }",
    );
    let queue = format!(
        "queue: {{ backend: embedded, path: {}, max_depth: 3, on_full: reject }}\n",
        dir.path().join("q").display()
    );
    let gw = start(&format!("{queue}{yaml}")).await;
    for i in 0..8 {
        let r = client()
            .post(format!("http://{}/orders", gw.data))
            .body(format!("m{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "event {i}: {:?}", r.text().await);
        // One at a time, so the healthy one's own backlog stays under 3.
        eventually(
            "the healthy subscriber got it",
            Duration::from_secs(10),
            || b.calls() == i + 1,
        )
        .await;
    }
    let url = format!("http://{}/admin/dlq?subscriber=sub-a", gw.admin);
    let dlq = poll_json(&url, Duration::from_secs(5), |v| {
        v["items"].as_array().is_some_and(|i| i.len() == 5)
    })
    .await;
    for item in dlq["items"].as_array().unwrap() {
        let reason = item["reason"].as_str().unwrap();
        assert!(reason.starts_with("backlog full: 3 waiting"), "{reason}");
    }
    assert_eq!(
        metric(
            gw.admin,
            r#"junction_subscriber_backlog{subscriber="sub-a"}"#
        )
        .await,
        3.0
    );
    assert_eq!(
        metric(
            gw.admin,
            r#"junction_subscriber_backlog{subscriber="sub-b"}"#
        )
        .await,
        0.0
    );
    assert_eq!(
        metric(
            gw.admin,
            r#"junction_subscriber_state{subscriber="sub-a",state="delivering"}"#
        )
        .await,
        1.0
    );
    assert!(
        metric(
            gw.admin,
            r#"junction_subscriber_oldest_age_seconds{subscriber="sub-a"}"#
        )
        .await
            > 0.0
    );
    let ov: serde_json::Value = client()
        .get(format!("http://{}/admin/overview", gw.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let subs = ov["subscribers"].as_array().unwrap();
    let a = subs.iter().find(|s| s["name"] == "sub-a").unwrap();
    assert_eq!(a["backlog"], 3, "{a}");
    assert!(a["oldest_pending_age_ms"].as_u64().is_some(), "{a}");
    let bs = subs.iter().find(|s| s["name"] == "sub-b").unwrap();
    assert_eq!(bs["backlog"], 0, "{bs}");
}
