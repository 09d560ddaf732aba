//! Sync writes with `Idempotency-Key` on a route with `idempotency: { ttl }`:
//! run once, replayed after, 409 while running, 422 on reuse, shared through Redis.

use super::{client, metric, redis_url, start};
use junction_testkit::{closed_port, Behavior, FakeUpstream};
use std::time::Duration;

/// One idempotent payment route on `url`; `cache` is the cache line (backend).
fn config(url: &str, cache: &str) -> String {
    format!(
        r#"
{cache}
upstreams:
  pay: {{ url: "{url}", timeout: 2s }}
routes:
  - name: payment
    match: {{ method: POST, path: /payments }}
    upstream: pay
    idempotency: {{ ttl: 1h }}
  - name: refund
    match: {{ method: POST, path: /refunds }}
    upstream: pay
"#
    )
}

struct Answer {
    status: u16,
    replayed: bool,
    content_type: String,
    body: String,
}

async fn post(
    addr: std::net::SocketAddr,
    path: &str,
    key: Option<&str>,
    auth: Option<&str>,
    body: &str,
) -> Answer {
    let mut req = client()
        .post(format!("http://{addr}{path}"))
        .header("content-type", "application/json")
        .body(body.to_owned());
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = req.send().await.unwrap();
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    Answer {
        status: resp.status().as_u16(),
        replayed: header("idempotent-replayed") == "true",
        content_type: header("content-type"),
        body: resp.text().await.unwrap(),
    }
}

#[tokio::test]
async fn a_repeat_is_replayed_and_the_upstream_runs_once() {
    let up = FakeUpstream::with(Behavior::Ok(r#"{"payment":"p-1"}"#.into())).await;
    let gw = start(&config(&up.url(), "")).await;
    let first = post(gw.data, "/payments", Some("k-1"), None, r#"{"amount":5}"#).await;
    assert_eq!((first.status, first.replayed), (200, false));
    assert_eq!(first.body, r#"{"payment":"p-1"}"#);
    let again = post(gw.data, "/payments", Some("k-1"), None, r#"{"amount":5}"#).await;
    assert_eq!((again.status, again.replayed), (200, true));
    assert_eq!(again.body, first.body);
    assert_eq!(again.content_type, "application/json");
    assert_eq!(up.calls(), 1, "the repeat never reached the upstream");

    // The same key for another request is refused, and nothing is sent.
    let reused = post(gw.data, "/payments", Some("k-1"), None, r#"{"amount":6}"#).await;
    assert_eq!(reused.status, 422);
    assert_eq!(reused.content_type, "application/problem+json");
    assert!(
        reused.body.contains("idempotency-key-mismatch"),
        "{}",
        reused.body
    );
    // Another caller (credentials) has its own keys; so do requests without a key.
    let other = post(
        gw.data,
        "/payments",
        Some("k-1"),
        Some("Bearer b"),
        r#"{"amount":5}"#,
    )
    .await;
    assert_eq!((other.status, other.replayed), (200, false));
    let unkeyed = post(gw.data, "/payments", None, None, r#"{"amount":5}"#).await;
    assert_eq!((unkeyed.status, unkeyed.replayed), (200, false));
    // Routes without `idempotency` ignore the header.
    post(gw.data, "/refunds", Some("k-1"), None, "{}").await;
    post(gw.data, "/refunds", Some("k-1"), None, "{}").await;
    assert_eq!(up.calls(), 5);
    let series =
        |o: &str| format!(r#"junction_idempotency_total{{route="payment",outcome="{o}"}}"#);
    assert_eq!(metric(gw.admin, &series("executed")).await, 2.0);
    assert_eq!(metric(gw.admin, &series("replayed")).await, 1.0);
    assert_eq!(metric(gw.admin, &series("mismatch")).await, 1.0);
}

#[tokio::test]
async fn concurrent_repeats_run_once_and_the_others_get_409() {
    let up = FakeUpstream::with(Behavior::Slow(Duration::from_millis(400))).await;
    let gw = start(&config(&up.url(), "")).await;
    let c = client();
    let url = format!("http://{}/payments", gw.data);
    let sends: Vec<_> = (0..10)
        .map(|_| {
            tokio::spawn(
                c.post(&url)
                    .header("idempotency-key", "order-77")
                    .body("{}")
                    .send(),
            )
        })
        .collect();
    let mut statuses = Vec::new();
    for s in sends {
        let resp = s.await.unwrap().unwrap();
        if resp.status() == 409 {
            assert_eq!(resp.headers()["retry-after"], "1");
        }
        statuses.push(resp.status().as_u16());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 409, 409, 409, 409, 409, 409, 409, 409, 409]);
    assert_eq!(up.calls(), 1);
    let after = post(gw.data, "/payments", Some("order-77"), None, "{}").await;
    assert_eq!((after.status, after.replayed), (200, true));
    assert_eq!(after.body, r#"{"ok":true,"slow":true}"#);
    assert_eq!(up.calls(), 1);
}

#[tokio::test]
async fn a_failure_a_retry_may_fix_gives_the_key_back() {
    let up = FakeUpstream::with(Behavior::FailTimes {
        status: 503,
        times: 1,
        retry_after: None,
    })
    .await;
    let gw = start(&config(&up.url(), "")).await;
    let failed = post(gw.data, "/payments", Some("k-9"), None, "{}").await;
    assert_eq!(failed.status, 503);
    let retried = post(gw.data, "/payments", Some("k-9"), None, "{}").await;
    assert_eq!((retried.status, retried.replayed), (200, false));
    let replayed = post(gw.data, "/payments", Some("k-9"), None, "{}").await;
    assert_eq!((replayed.status, replayed.replayed), (200, true));
    assert_eq!(up.calls(), 2);

    // A final client error is an answer: stored and replayed, not run again.
    up.set(Behavior::Status(402));
    for replay in [false, true] {
        let declined = post(gw.data, "/payments", Some("k-10"), None, "{}").await;
        assert_eq!((declined.status, declined.replayed), (402, replay));
    }
    assert_eq!(up.calls(), 3);
    // An unreachable upstream also gives the key back.
    drop(up);
    let down = post(gw.data, "/payments", Some("k-11"), None, "{}").await;
    assert_eq!(down.status, 502);
    let series = r#"junction_idempotency_total{route="payment",outcome="released"}"#;
    assert_eq!(metric(gw.admin, series).await, 2.0);
}

#[tokio::test]
async fn two_instances_on_one_redis_run_a_keyed_request_once() {
    let up = FakeUpstream::with(Behavior::Ok(r#"{"payment":"p-2"}"#.into())).await;
    let prefix = format!("jt-idem-{}", uuid::Uuid::new_v4());
    let cache = format!(
        "cache: {{ backend: redis, url: \"{}\", prefix: {prefix} }}",
        redis_url()
    );
    let a = start(&config(&up.url(), &cache)).await;
    let b = start(&config(&up.url(), &cache)).await;
    let first = post(a.data, "/payments", Some("shared-1"), None, "{}").await;
    let second = post(b.data, "/payments", Some("shared-1"), None, "{}").await;
    assert_eq!((first.status, first.replayed), (200, false));
    assert_eq!((second.status, second.replayed), (200, true));
    assert_eq!(second.body, r#"{"payment":"p-2"}"#);
    assert_eq!(up.calls(), 1);
}

#[tokio::test]
async fn an_unreachable_store_refuses_keyed_requests_instead_of_risking_a_second_run() {
    let up = FakeUpstream::start().await;
    let cache = format!(
        "cache: {{ backend: redis, url: \"redis://{}\", prefix: jt-down }}",
        closed_port().await
    );
    let gw = super::start_unready(&config(&up.url(), &cache)).await;
    // Not ready: the store the keyed route needs does not answer.
    let readyz = super::get(gw.admin, "/readyz").await;
    assert_eq!(readyz.status(), 503);
    let refused = post(gw.data, "/payments", Some("k-1"), None, "{}").await;
    assert_eq!(refused.status, 503);
    assert!(
        refused.body.contains("idempotency-unavailable"),
        "{}",
        refused.body
    );
    assert_eq!(up.calls(), 0);
    // Without a key the request is not at risk of a double run: it passes.
    assert_eq!(
        post(gw.data, "/payments", None, None, "{}").await.status,
        200
    );
    // A malformed key is the client's error.
    let bad = post(gw.data, "/payments", Some("two words"), None, "{}").await;
    assert_eq!(bad.status, 400);
    assert_eq!(up.calls(), 1);
}
