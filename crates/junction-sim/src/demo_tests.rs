//! The whole demo against a stand-in gateway.
//!
//! The real gateway lives in another crate; this stand-in does just enough of
//! the contract (cached lookups with `?fields=`, a 202 async route delivering
//! to both subscribers with retries, an empty DLQ) to exercise every step of
//! `run_demo`: config hand-over, warm-up, the Junction run, the delivery wait,
//! the DLQ read and the report files.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path as UrlPath, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Map};

use super::*;

struct StandIn {
    client: reqwest::Client,
    upstream: HashMap<String, String>,
    cache: Mutex<HashMap<String, Value>>,
}

async fn lookup(st: &StandIn, upstream: &str, path: String) -> Result<Value, StatusCode> {
    if let Some(v) = st.cache.lock().get(&path) {
        return Ok(v.clone());
    }
    for _ in 0..3 {
        let url = format!("{}{path}", st.upstream[upstream]);
        if let Ok(r) = st.client.get(url).send().await {
            if r.status().is_success() {
                let v: Value = r.json().await.map_err(|_| StatusCode::BAD_GATEWAY)?;
                st.cache.lock().insert(path, v.clone());
                return Ok(v);
            }
        }
    }
    Err(StatusCode::SERVICE_UNAVAILABLE)
}

async fn inventory(
    State(st): State<Arc<StandIn>>,
    UrlPath(sku): UrlPath<String>,
) -> impl IntoResponse {
    lookup(&st, "inventory", format!("/inventory/{sku}"))
        .await
        .map(Json)
}

async fn supplier(
    State(st): State<Arc<StandIn>>,
    UrlPath(id): UrlPath<String>,
    Query(q): Query<HashMap<String, String>>,
) -> impl IntoResponse {
    let v = lookup(&st, "supplier", format!("/suppliers/{id}")).await?;
    let Some(fields) = q.get("fields") else {
        return Ok(Json(v));
    };
    let m: Map<String, Value> = fields
        .split(',')
        .filter_map(|f| Some((f.to_string(), v.get(f)?.clone())))
        .collect();
    Ok::<_, StatusCode>(Json(Value::Object(m)))
}

async fn order_synced(State(st): State<Arc<StandIn>>, body: Bytes) -> impl IntoResponse {
    for (name, path) in [("fulfillment", "/orders"), ("analytics", "/events")] {
        let url = format!("{}{path}", st.upstream[name]);
        let (client, body) = (st.client.clone(), body.clone());
        tokio::spawn(async move {
            for _ in 0..500 {
                let r = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                if r.is_ok_and(|r| r.status().is_success()) {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        });
    }
    (
        StatusCode::ACCEPTED,
        Json(json!({"id": "m", "topic": "order-synced", "status": "accepted"})),
    )
}

async fn start_stand_in(yaml: String) -> Result<GatewayHandle> {
    let cfg: serde_yaml_ng::Value = serde_yaml_ng::from_str(&yaml)?;
    let addr = |v: &serde_yaml_ng::Value| v.as_str().unwrap_or_default().parse::<SocketAddr>();
    let (data, admin) = (addr(&cfg["listen"])?, addr(&cfg["admin"]["listen"])?);
    let upstream = ["inventory", "supplier", "fulfillment", "analytics"]
        .iter()
        .map(|k| {
            (
                k.to_string(),
                cfg["upstreams"][*k]["url"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    let st = Arc::new(StandIn {
        client: reqwest::Client::new(),
        upstream,
        cache: Mutex::new(HashMap::new()),
    });
    let app = Router::new()
        .route("/inventory/{sku}", get(inventory))
        .route("/suppliers/{id}", get(supplier))
        .route("/events/order-synced", post(order_synced))
        .with_state(st);
    let admin_app = Router::new().route("/admin/dlq", get(|| async { Json(json!({"items": []})) }));
    let (l1, l2) = (
        tokio::net::TcpListener::bind(data).await?,
        tokio::net::TcpListener::bind(admin).await?,
    );
    tokio::spawn(async move { axum::serve(l1, app).await });
    tokio::spawn(async move { axum::serve(l2, admin_app).await });
    Ok(GatewayHandle { data, admin })
}

#[tokio::test]
async fn the_whole_demo_runs_and_junction_wins() {
    let scenario = Scenario::builtin("erp-peak").unwrap().with_time_scale(0.05);
    let dir = tempfile::tempdir().unwrap();
    let mut opts = DemoOptions::from_scenario(scenario, dir.path());
    opts.duration = Duration::from_secs(2);
    opts.rate = 50.0;
    let r = run_demo(opts, start_stand_in).await.unwrap();

    assert_eq!(r.before.transactions, 100);
    assert_eq!(r.after.transactions, 100);
    assert!(
        r.before.failed_pct > 20.0,
        "outage + vendor failures: {}",
        r.before.failed_pct
    );
    assert!(
        r.after.failed < r.before.failed / 4,
        "{} vs {}",
        r.after.failed,
        r.before.failed
    );
    assert!(r.speedup > 2.0, "speed-up {}", r.speedup);
    let w = r.warmup.as_ref().unwrap();
    assert_eq!(w.requests, 70);
    // Warmed: lookups of the run are cache hits (a failed warm-up key costs a miss).
    assert!(r.after.lookup_upstream_calls <= 2 * w.failures as u64 + 4);
    assert!(r.upstream_calls_saved_pct > 90.0);
    assert!(r.payload_saved_pct > 80.0, "{}", r.payload_saved_pct);
    let d = r.delivery.as_ref().unwrap();
    assert!(d.complete, "{d:?}");
    assert_eq!(d.accepted as u64, r.after.transactions - r.after.failed);
    assert!(d.backlog_cleared_after_outage.is_some());
    assert!(d.last_delivery_after_run.is_some());
    assert_eq!(r.dead_letters, Some(0));
    for f in ["demo-report.svg", "demo-report.json", "junction-demo.yaml"] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
}
