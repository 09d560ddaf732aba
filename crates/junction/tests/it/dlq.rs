//! Finding and acting on dead letters through the admin API: filters by
//! status, reason and time, paging through filtered results, bulk purge and
//! replay of what matches or of chosen ids; what failed attempts were
//! answered, and a bounded, masked look at a dead letter's payload.

use super::client;
use super::pipeline::{eventually, poll_json, start_in, two_subscribers};
use junction_testkit::{Behavior, FakeUpstream};
use serde_json::{json, Value};
use std::time::Duration;

async fn get(url: String) -> (u16, Value) {
    let r = client().get(url).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn dlq(admin: std::net::SocketAddr, query: &str) -> (u16, Value) {
    get(format!("http://{admin}/admin/dlq{query}")).await
}

fn subscribers(v: &Value) -> Vec<String> {
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["subscriber"].as_str().unwrap().to_owned())
        .collect()
}

async fn bulk(admin: std::net::SocketAddr, action: &str, body: Value) -> (u16, Value) {
    let r = client()
        .post(format!("http://{admin}/admin/dlq/{action}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

#[tokio::test]
async fn dead_letters_are_filtered_paged_purged_and_replayed_by_what_matches() {
    let dir = tempfile::tempdir().unwrap();
    // sub-a rejects (400: dead at once), sub-b fails (500: dead after 2 attempts).
    let (a, b) = (
        FakeUpstream::with(Behavior::Status(400)).await,
        FakeUpstream::with(Behavior::Status(500)).await,
    );
    let extra = ", max_attempts: 2, retry: { backoff: 1ms, max_backoff: 5ms }";
    let gw = start_in(dir.path(), &two_subscribers(&a.url(), &b.url(), extra)).await;
    for i in 0..3 {
        let r = client()
            .post(format!("http://{}/orders", gw.data))
            .body(format!("e{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    let all = poll_json(
        &format!("http://{}/admin/dlq", gw.admin),
        Duration::from_secs(10),
        |v| v["items"].as_array().is_some_and(|i| i.len() == 6),
    )
    .await;
    assert_eq!(all["items"].as_array().unwrap().len(), 6, "{all}");
    let dead_at = all["items"][0]["dead_at"].as_str().unwrap();
    assert!(
        humantime::parse_rfc3339(dead_at).is_ok() && dead_at.ends_with('Z'),
        "{dead_at}"
    );

    let (_, v) = dlq(gw.admin, "?status=4xx").await;
    assert_eq!(subscribers(&v), vec!["sub-a"; 3], "{v}");
    let (_, v) = dlq(gw.admin, "?status=500").await;
    assert_eq!(subscribers(&v), vec!["sub-b"; 3], "{v}");
    let (_, v) = dlq(gw.admin, "?reason=REJECTED").await;
    assert_eq!(subscribers(&v), vec!["sub-a"; 3], "{v}");
    let (_, v) = dlq(gw.admin, "?since=1h").await;
    assert_eq!(v["items"].as_array().unwrap().len(), 6, "{v}");
    let (_, v) = dlq(gw.admin, "?until=1h").await;
    assert_eq!(v["items"].as_array().unwrap().len(), 0, "{v}");
    let (status, v) = dlq(gw.admin, "?since=last-tuesday").await;
    assert_eq!(status, 400, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("since"), "{v}");

    // Paging through a filtered listing: every match once, then no cursor.
    let mut seen = Vec::new();
    let mut query = "?status=5xx&limit=2".to_owned();
    for _ in 0..10 {
        let (status, v) = dlq(gw.admin, &query).await;
        assert_eq!(status, 200, "{v}");
        let items = v["items"].as_array().unwrap();
        assert!(items.len() <= 2, "{v}");
        seen.extend(items.iter().map(|i| i["id"].as_str().unwrap().to_owned()));
        match v["next"].as_str() {
            Some(next) => query = format!("?status=5xx&limit=2&after={next}"),
            None => break,
        }
    }
    seen.dedup();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(seen.iter().all(|id| id.ends_with(":sub-b")), "{seen:?}");

    // Bulk purge of what matches.
    let (status, v) = bulk(gw.admin, "purge", json!({ "status": "400" })).await;
    assert_eq!((status, &v), (200, &json!({ "purged": 3 })));
    let (_, v) = dlq(gw.admin, "").await;
    assert_eq!(subscribers(&v), vec!["sub-b"; 3], "{v}");

    // Bulk replay of chosen ids.
    b.set(Behavior::Ok("{}".into()));
    let calls = b.calls();
    let (status, v) = bulk(gw.admin, "replay", json!({ "ids": [seen[0]] })).await;
    assert_eq!((status, &v), (202, &json!({ "replayed": 1 })));
    eventually(
        "the chosen letter is delivered",
        Duration::from_secs(5),
        || b.calls() == calls + 1,
    )
    .await;
    let (_, v) = dlq(gw.admin, "").await;
    assert_eq!(v["items"].as_array().unwrap().len(), 2, "{v}");

    // A body the filters do not know is refused, not ignored.
    let (status, v) = bulk(gw.admin, "purge", json!({ "colour": "red" })).await;
    assert!(status == 400 || status == 422, "{status} {v}");
    let (_, v) = dlq(gw.admin, "").await;
    assert_eq!(
        v["items"].as_array().unwrap().len(),
        2,
        "nothing purged: {v}"
    );
}

/// Posts `body` as a JSON event to `/orders` (202) and waits for the one dead
/// letter it makes; returns that listing item.
async fn one_dead_letter(gw: &junction_gateway::app::Running, body: &str) -> Value {
    let r = client()
        .post(format!("http://{}/orders", gw.data))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let listed = poll_json(
        &format!("http://{}/admin/dlq", gw.admin),
        Duration::from_secs(10),
        |v| v["items"].as_array().is_some_and(|i| i.len() == 1),
    )
    .await;
    assert_eq!(
        listed["items"].as_array().map(Vec::len),
        Some(1),
        "{listed}"
    );
    listed["items"][0].clone()
}

/// A failed attempt keeps what the subscriber answered (status, headers with
/// credentials withheld, the body's first bytes), in the message's status and
/// in the dead letter's history; the dead letter's payload is read bounded,
/// secret fields masked, unmasked only where the config allows it.
#[tokio::test]
async fn failed_answers_are_kept_and_payloads_are_peeked_with_secrets_masked() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (
        FakeUpstream::with(Behavior::Status(500)).await,
        FakeUpstream::start().await,
    );
    a.add_response_header("x-vendor-error", "quota exceeded");
    a.add_response_header("set-cookie", "session=s3cr3t");
    let extra = ", max_attempts: 2, retry: { backoff: 1ms, max_backoff: 5ms }";
    let yaml = format!(
        "admin: {{ payload_peek: {{ mode: full, max_bytes: 1KiB }} }}\n{}",
        two_subscribers(&a.url(), &b.url(), extra)
    );
    let gw = start_in(dir.path(), &yaml).await;
    let body = r#"{"orderId":"o-9","payment":{"Card-Number":"4111111111111111","amount":5}}"#;
    let letter = &one_dead_letter(&gw, body).await;
    let (dead_id, msg_id) = (
        letter["id"].as_str().unwrap(),
        letter["message_id"].as_str().unwrap(),
    );
    // Both attempts carry the answer.
    let history = letter["history"].as_array().unwrap();
    assert_eq!(history.len(), 2, "{letter}");
    for attempt in history {
        let r = &attempt["response"];
        assert_eq!(r["status"], 500, "{attempt}");
        assert_eq!(r["body"], r#"{"error":"configured"}"#, "{attempt}");
        assert_eq!(r["body_bytes"], 22, "{attempt}");
        let headers: Vec<(String, String)> = serde_json::from_value(r["headers"].clone()).unwrap();
        assert!(headers.contains(&("x-vendor-error".into(), "quota exceeded".into())));
        assert!(headers.contains(&("set-cookie".into(), "[redacted]".into())));
    }
    // The message's status: the failing subscriber's answers, none for the one that took it.
    let (status, m) = get(format!("http://{}/admin/messages/{msg_id}", gw.admin)).await;
    assert_eq!(status, 200, "{m}");
    for s in m["subscribers"].as_array().unwrap() {
        let last = s["history"].as_array().unwrap().last().unwrap().clone();
        match s["subscriber"].as_str().unwrap() {
            "sub-a" => assert_eq!(last["response"]["status"], 500, "{m}"),
            _ => assert!(last.get("response").is_none(), "{m}"),
        }
    }

    let peek = |query: &str| {
        get(format!(
            "http://{}/admin/dlq/{dead_id}/payload{query}",
            gw.admin
        ))
    };
    let (status, p) = peek("").await;
    assert_eq!(status, 200, "{p}");
    assert_eq!(
        (p["masking"].as_str(), p["masked_fields"].as_u64()),
        (Some("json"), Some(1)),
        "{p}"
    );
    let shown = p["payload"].as_str().unwrap();
    assert!(shown.contains("o-9") && !shown.contains("4111"), "{p}");
    assert_eq!(p["body_bytes"], body.len(), "{p}");
    let (status, p) = peek("?bytes=10").await;
    assert_eq!((status, p["truncated"].as_bool()), (200, Some(true)), "{p}");
    assert!(p["payload"].as_str().unwrap().len() <= 10, "{p}");
    // mode: full lets a reader ask for the payload as stored.
    let (status, p) = peek("?redact=false").await;
    assert_eq!((status, p["payload"].as_str()), (200, Some(body)), "{p}");
    let (status, p) = get(format!(
        "http://{}/admin/dlq/{msg_id}:sub-b/payload",
        gw.admin
    ))
    .await;
    assert_eq!(status, 404, "{p}");
    drop(gw);

    // The default (redacted) refuses unmasked reads; off shows nothing.
    for (mode, query) in [("redacted", "?redact=false"), ("off", "")] {
        let dir = tempfile::tempdir().unwrap();
        let yaml = format!(
            "admin: {{ payload_peek: {{ mode: {mode} }} }}\n{}",
            two_subscribers(&a.url(), &b.url(), extra)
        );
        let gw = start_in(dir.path(), &yaml).await;
        let letter = one_dead_letter(&gw, body).await;
        let id = letter["id"].as_str().unwrap();
        let (status, p) = get(format!("http://{}/admin/dlq/{id}/payload{query}", gw.admin)).await;
        assert_eq!(status, 403, "{mode}: {p}");
        assert!(
            p["detail"].as_str().unwrap().contains("payload_peek"),
            "{p}"
        );
    }
}
