//! Tests of the simulated services, against the real servers on loopback.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::*;

fn scenario(yaml_services: &str) -> Scenario {
    let text = format!("name: t\nseed: 11\nservices:\n{yaml_services}");
    Scenario::from_yaml(&text).unwrap()
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

/// POSTs every body to `url` at once; each answer's status and seconds taken.
async fn post_concurrently(url: &str, bodies: Vec<serde_json::Value>) -> Vec<(u16, f64)> {
    let c = client();
    let mut set = tokio::task::JoinSet::new();
    for body in bodies {
        let (c, url) = (c.clone(), url.to_owned());
        set.spawn(async move {
            let t = Instant::now();
            let r = c.post(url).json(&body).send().await.unwrap();
            (r.status().as_u16(), t.elapsed().as_secs_f64())
        });
    }
    let mut out = Vec::new();
    while let Some(r) = set.join_next().await {
        out.push(r.unwrap());
    }
    out
}

#[tokio::test]
async fn failure_rate_is_honoured_and_counted() {
    let s = scenario("  payment:\n    latency: {mean: 1ms, p99: 3ms}\n    failure_rate: 0.2\n");
    let cluster = SimCluster::start(&s).await.unwrap();
    let url = format!("{}/charge", cluster.url(ServiceKind::Payment));
    let bodies = (0..600).map(|i| json!({"amount": i})).collect();
    let mut failed = 0;
    for (code, _) in post_concurrently(&url, bodies).await {
        assert!([200, 500, 503].contains(&code), "{code}");
        if code != 200 {
            failed += 1;
        }
    }
    let rate = failed as f64 / 600.0;
    assert!((rate - 0.2).abs() < 0.06, "failure rate {rate}");
    let st = cluster.stats().get(ServiceKind::Payment);
    assert_eq!(st.calls, 600);
    assert_eq!(st.failures, failed);
    assert_eq!(cluster.stats().get(ServiceKind::Inventory).calls, 0);
}

#[tokio::test]
async fn outage_window_answers_503_then_recovers() {
    let s = scenario(
        "  inventory:\n    latency: {mean: 1ms, p99: 3ms}\n    outages: [{start: 150ms, duration: 250ms}]\n",
    );
    let cluster = SimCluster::start(&s).await.unwrap();
    let url = format!("{}/inventory/sku-1", cluster.url(ServiceKind::Inventory));
    let c = client();
    // No run yet: no outage either.
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    let windows = cluster.begin_run(Duration::from_secs(1));
    assert_eq!(windows.len(), 1);
    let t0 = Instant::now();
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    tokio::time::sleep_until((t0 + Duration::from_millis(220)).into()).await;
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("outage"));
    tokio::time::sleep_until((t0 + Duration::from_millis(450)).into()).await;
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
    assert_eq!(cluster.stats().get(ServiceKind::Inventory).failures, 1);
    // A new run restarts the clock; ending it lifts the outage.
    cluster.begin_run(Duration::from_secs(1));
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(c.get(&url).send().await.unwrap().status(), 503);
    cluster.end_run();
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn hang_mode_holds_requests_until_the_window_ends() {
    let s = scenario(
        "  supplier:\n    latency: {mean: 1ms, p99: 3ms}\n    outages: [{start: 0%, duration: 30%, mode: hang}]\n",
    );
    let cluster = SimCluster::start(&s).await.unwrap();
    let url = format!("{}/suppliers/sup-001", cluster.url(ServiceKind::Supplier));
    let c = client();
    cluster.begin_run(Duration::from_secs(1));
    let t0 = Instant::now();
    // A caller with a short timeout gives up.
    let err = c
        .get(&url)
        .timeout(Duration::from_millis(80))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout());
    // A patient caller gets a 503 once the window closes.
    let r = c.get(&url).send().await.unwrap();
    assert_eq!(r.status(), 503);
    assert!(
        t0.elapsed() >= Duration::from_millis(280),
        "{:?}",
        t0.elapsed()
    );
    assert_eq!(c.get(&url).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn receipts_track_order_ids_per_subscriber() {
    let s = scenario(
        "  fulfillment:\n    latency: {mean: 1ms, p99: 3ms}\n  analytics:\n    latency: {mean: 1ms, p99: 3ms}\n",
    );
    let cluster = SimCluster::start(&s).await.unwrap();
    let c = client();
    let f = format!("{}/orders", cluster.url(ServiceKind::Fulfillment));
    let a = format!("{}/events", cluster.url(ServiceKind::Analytics));
    for _ in 0..2 {
        let r = c
            .post(&f)
            .json(&json!({"orderId": "o-1"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
    }
    let r = c
        .post(&a)
        .json(&json!({"orderId": "o-1", "type": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let r = c
        .post(&f)
        .json(&json!({"sku": "no id"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = c.post(&f).body("not json").send().await.unwrap();
    assert_eq!(r.status(), 400);

    assert_eq!(cluster.receipt_count(ServiceKind::Fulfillment, "o-1"), 2);
    assert_eq!(cluster.receipt_count(ServiceKind::Analytics, "o-1"), 1);
    assert_eq!(cluster.receipt_count(ServiceKind::Analytics, "o-2"), 0);
    let ids = ["o-1", "o-2", "o-3"];
    assert_eq!(cluster.missing_receipts(ServiceKind::Fulfillment, ids), 2);
    assert_eq!(cluster.receipts(ServiceKind::Fulfillment).len(), 1);
    let t = cluster
        .last_first_receipt(ServiceKind::Fulfillment, ["o-1"])
        .unwrap();
    assert!(t <= Instant::now());
    assert!(cluster
        .last_first_receipt(ServiceKind::Fulfillment, ["o-1", "o-2"])
        .is_none());
}

#[tokio::test]
async fn supplier_metadata_is_large_and_bytes_are_counted() {
    let s = scenario("  supplier:\n    latency: {mean: 1ms, p99: 3ms}\n    payload_bytes: 20000\n");
    let cluster = SimCluster::start(&s).await.unwrap();
    let url = format!("{}/suppliers/sup-007", cluster.url(ServiceKind::Supplier));
    let body = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert!((19_900..=20_100).contains(&body.len()), "{}", body.len());
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["id"], "sup-007");
    assert!(v["name"].is_string());
    assert!(v["lead_time_days"].is_u64());
    assert!(
        v.as_object().unwrap().len() > 100,
        "many fields to project away"
    );
    // Same id, same document.
    let again = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(body, again);
    assert_eq!(
        cluster.stats().get(ServiceKind::Supplier).bytes_sent,
        2 * body.len() as u64
    );
}

#[tokio::test]
async fn every_endpoint_answers() {
    let s = scenario("");
    let cluster = SimCluster::start(&s).await.unwrap();
    let c = client();
    let u = |k| cluster.url(k);
    let checks = [
        (
            c.post(format!("{}/orders", u(ServiceKind::Order)))
                .json(&json!({"orderId": "x"})),
            201,
        ),
        (c.get(format!("{}/orders/x", u(ServiceKind::Order))), 200),
        (
            c.get(format!("{}/inventory/sku-0001", u(ServiceKind::Inventory))),
            200,
        ),
        (
            c.post(format!("{}/inventory/validate", u(ServiceKind::Inventory)))
                .json(&json!({"sku": "s", "quantity": 2})),
            200,
        ),
        (
            c.post(format!("{}/charge", u(ServiceKind::Payment)))
                .json(&json!({"amount": 5})),
            200,
        ),
        (
            c.post(format!("{}/notify", u(ServiceKind::Notification)))
                .json(&json!({"to": "a"})),
            202,
        ),
        (c.get(format!("{}/charge", u(ServiceKind::Payment))), 405),
        (c.get(format!("{}/nothing", u(ServiceKind::Supplier))), 404),
    ];
    for (req, want) in checks {
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), want, "{}", r.url());
    }
    let v: Value = c
        .post(format!("{}/inventory/validate", u(ServiceKind::Inventory)))
        .json(&json!({"sku": "s", "quantity": 2}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["valid"], true);
    assert_eq!(v["quantity"], 2);
}

#[tokio::test]
async fn latency_follows_the_distribution() {
    let s = scenario("  analytics:\n    latency: {mean: 60ms, p99: 200ms}\n");
    let cluster = SimCluster::start(&s).await.unwrap();
    let url = format!("{}/events", cluster.url(ServiceKind::Analytics));
    let bodies = (0..60)
        .map(|i| json!({"orderId": format!("o{i}")}))
        .collect();
    let mut lat = Vec::new();
    for (code, secs) in post_concurrently(&url, bodies).await {
        assert!((200..300).contains(&code), "{code}");
        lat.push(secs);
    }
    let mean = lat.iter().sum::<f64>() / lat.len() as f64;
    assert!((0.035..0.2).contains(&mean), "mean {mean}");
    let spread = lat.iter().cloned().fold(0.0, f64::max) - lat.iter().cloned().fold(1.0, f64::min);
    assert!(spread > 0.02, "latencies vary, spread {spread}");
}

#[test]
fn padding_reaches_the_target_size() {
    for target in [0usize, 50, 300, 1200, 24_576] {
        let mut m = Map::new();
        m.insert("id".into(), json!("x"));
        let out = padded(m, target);
        assert!(out.len() >= target.min(out.len()));
        assert!(
            out.len() <= target.max(8) + 80,
            "{} for {target}",
            out.len()
        );
        assert!(out.len() + 80 >= target, "{} for {target}", out.len());
        let v: Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["id"], "x");
    }
}
