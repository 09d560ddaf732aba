//! `junction analyze` and `GET /admin/recommendations`: crafted traffic
//! through a Junction in observe mode, access logs read offline, and the
//! ERP simulator's "before" traffic.

use super::cli::junction;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use axum::Router;
use serde_json::{json, Value};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

#[derive(Default)]
struct Origin {
    /// Requests seen per item key.
    items: parking_lot::Mutex<HashMap<String, u64>>,
    searches: std::sync::atomic::AtomicU64,
}

/// An origin whose answers have known shapes: items change every tenth
/// request of a key (so 90% of answers repeat), searches never repeat,
/// events take 800 ms and are acknowledged with 202, suppliers are large.
async fn origin() -> String {
    async fn item(State(o): State<Arc<Origin>>, Path(k): Path<String>) -> axum::Json<Value> {
        let n = {
            let mut items = o.items.lock();
            let n = items.entry(k.clone()).or_default();
            *n += 1;
            *n
        };
        // Version changes on requests 11, 21, 31…: 9 in 10 answers repeat the previous one.
        axum::Json(json!({"key": k, "version": (n - 1) / 10, "pad": "x".repeat(200)}))
    }
    async fn search(State(o): State<Arc<Origin>>) -> axum::Json<Value> {
        let n = o
            .searches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        axum::Json(json!({"hits": n}))
    }
    async fn event() -> axum::http::StatusCode {
        tokio::time::sleep(Duration::from_millis(800)).await;
        axum::http::StatusCode::ACCEPTED
    }
    async fn supplier(Path(id): Path<String>) -> axum::Json<Value> {
        axum::Json(
            json!({"id": id, "name": "Acme", "lead_time_days": 3, "padding": "y".repeat(24_000)}),
        )
    }
    let app = Router::new()
        .route("/items/{k}", get(item))
        .route("/search/{q}", get(search))
        .route("/events", post(event))
        .route("/suppliers/{id}", get(supplier))
        .with_state(Arc::new(Origin::default()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}")
}

fn find<'a>(report: &'a Value, kind: &str, target: &str) -> Option<&'a Value> {
    report["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == kind && r["target"] == target)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn observe_mode_recommends_from_live_traffic() {
    let url = origin().await;
    let gw = crate::start(&format!(
        "analyze: {{ enabled: true, sample_every: 1 }}
upstreams: {{ origin: {{ url: \"{url}\" }} }}
routes:
  - {{ name: origin, match: {{ path: \"/{{*rest}}\" }}, upstream: origin }}
"
    ))
    .await;
    let base = format!("http://{}", gw.data);
    let client = reqwest::Client::new();
    for i in 0..200 {
        let r = client
            .get(format!("{base}/items/k{}", i % 4))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        let r = client
            .get(format!("{base}/search/q{i}"))
            .send()
            .await
            .unwrap();
        r.bytes().await.unwrap();
    }
    // Most callers take the whole document; some already ask for two fields
    // (Junction projects those answers).
    for i in 0..40 {
        let fields = if i % 4 == 0 { "?fields=id,name" } else { "" };
        let r = client
            .get(format!("{base}/suppliers/s{}{fields}", i % 3))
            .send()
            .await
            .unwrap();
        r.bytes().await.unwrap();
    }
    let events: Vec<_> = (0..25)
        .map(|i| {
            let (client, base) = (client.clone(), base.clone());
            tokio::spawn(async move {
                let r = client
                    .post(format!("{base}/events"))
                    .json(&json!({"n": i}))
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 202);
            })
        })
        .collect();
    for e in events {
        e.await.unwrap();
    }
    let report: Value = client
        .get(format!("http://{}/admin/recommendations", gw.admin))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cache = find(&report, "cache", "GET /items/{id}").unwrap_or_else(|| panic!("{report:#}"));
    let hit = cache["figures"]["hit_ratio"].as_f64().unwrap();
    assert!((hit - 0.9).abs() < 0.05, "hit ratio {hit}");
    assert!(cache["yaml"].as_str().unwrap().contains("cache: { ttl: "));
    assert!(
        find(&report, "cache", "GET /search/{id}").is_none(),
        "{report:#}"
    );
    let async_ = find(&report, "async", "POST /events").unwrap_or_else(|| panic!("{report:#}"));
    let p50 = async_["figures"]["p50_ms"].as_f64().unwrap();
    assert!((700.0..=950.0).contains(&p50), "p50 {p50}");
    let trim = find(&report, "trim", "GET /suppliers/{id}").unwrap_or_else(|| panic!("{report:#}"));
    assert!(
        trim["yaml"]
            .as_str()
            .unwrap()
            .contains("fields: [id, name]"),
        "{trim:#}"
    );
    assert!(trim["evidence"].as_str().unwrap().contains("padding"));
    // Fast, healthy: no breaker; a 5 min default timeout is far above its p99.9.
    assert!(find(&report, "breaker", "upstream origin").is_none());

    // The same, as the ranked table of `junction analyze --admin`.
    let admin = format!("http://{}", gw.admin);
    let out = tokio::task::spawn_blocking(move || {
        junction()
            .args(["analyze", "--admin", &admin])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("RANK") && stdout.contains("GET /items/{id}"),
        "{stdout}"
    );
    gw.shutdown.cancel();
}

#[tokio::test]
async fn recommendations_say_when_observe_mode_is_off() {
    let gw = crate::start("upstreams: { a: { url: \"http://127.0.0.1:9\" } }\nroutes: []\n").await;
    let report: Value = reqwest::get(format!("http://{}/admin/recommendations", gw.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(report["recommendations"], json!([]));
    assert!(report["limitations"][0]
        .as_str()
        .unwrap()
        .contains("analyze.enabled is false"));
    gw.shutdown.cancel();
}

fn nginx_log() -> String {
    let mut log = String::new();
    for i in 0..600u64 {
        let ts = format!("05/Dec/2026:10:{:02}:{:02} +0000", i / 60, i % 60);
        let line = match i % 5 {
            0 | 1 => format!("10.0.0.1 - - [{ts}] \"GET /suppliers/sup-{:03} HTTP/1.1\" 200 24576 \"-\" \"erp\" 1.600", i % 5),
            2 => format!("10.0.0.1 - - [{ts}] \"POST /orders HTTP/1.1\" 202 2 \"-\" \"erp\" 0.900"),
            3 => format!("10.0.0.3 - - [{ts}] \"POST /payments HTTP/1.1\" 204 0 \"-\" \"erp\" 0.700"),
            _ => format!("10.0.0.2 - - [{ts}] \"GET /orders/{i} HTTP/1.1\" 200 300 \"-\" \"erp\" 0.010"),
        };
        log.push_str(&line);
        log.push('\n');
    }
    log
}

#[test]
fn an_nginx_log_gives_recommendations_and_a_config_junction_accepts() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    std::fs::write(&log, nginx_log()).unwrap();
    let config = dir.path().join("junction.yaml");
    let out = junction()
        .args([
            "analyze",
            "--json",
            "--upstream",
            "backend=http://127.0.0.1:7001",
            "--access-log",
        ])
        .arg(&log)
        .arg("--emit-config")
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["source"], "nginx-combined");
    assert!(
        find(&report, "cache", "GET /suppliers/{id}").is_some(),
        "{report:#}"
    );
    assert!(
        find(&report, "async", "POST /orders").is_some()
            && find(&report, "async", "POST /payments").is_some(),
        "{report:#}"
    );
    assert!(
        find(&report, "trim", "GET /suppliers/{id}").is_some(),
        "{report:#}"
    );
    assert!(
        find(&report, "cache", "GET /orders/{id}").is_none(),
        "{report:#}"
    );
    let limits = report["limitations"].to_string();
    assert!(limits.contains("no response body hashes"), "{limits}");
    let yaml = std::fs::read_to_string(&config).unwrap();
    assert!(yaml.contains("url: \"http://127.0.0.1:7001\""), "{yaml}");
    assert!(
        yaml.contains("cache: { ttl: ") && yaml.contains("async:"),
        "{yaml}"
    );
    let check = junction()
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}\n{yaml}",
        String::from_utf8_lossy(&check.stderr)
    );
}

#[test]
fn node_timing_and_junction_logs_are_read_and_gaps_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let node = dir.path().join("node.log");
    let lines: String = (0..50)
        .map(|i| format!("GET /orders/{i} took {}ms\nlistening on 3000\n", 800 + i))
        .collect();
    std::fs::write(&node, lines).unwrap();
    let out = junction()
        .args(["analyze", "--access-log"])
        .arg(&node)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("from node-timing"), "{stdout}");
    assert!(
        stdout.contains("no status codes") && stdout.contains("no timestamps"),
        "{stdout}"
    );
    assert!(
        stdout.contains("Give upstream backend a timeout"),
        "{stdout}"
    );

    let json_log = dir.path().join("junction.log");
    let lines: String = (0..40)
        .map(|i| {
            format!(
                "{{\"timestamp\":\"2026-12-05T10:00:{:02}.000000Z\",\"level\":\"INFO\",\"method\":\"POST\",\"path\":\"/charges\",\"route\":\"charges\",\"status\":201,\"upstream\":\"payments\",\"duration_us\":450000,\"client\":\"10.0.0.9:5000\",\"caller\":\"shop\",\"trace_id\":\"t{i}\",\"attempts\":1,\"cache\":\"-\",\"target\":\"junction::access\"}}\n",
                i
            )
        })
        .collect();
    std::fs::write(&json_log, lines).unwrap();
    let out = junction()
        .args(["analyze", "--json", "--access-log"])
        .arg(&json_log)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["source"], "junction-json");
    let a = find(&report, "async", "POST /charges").unwrap_or_else(|| panic!("{report:#}"));
    assert_eq!(a["route"], "charges");
    assert!(report["limitations"]
        .to_string()
        .contains("no request body hashes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_erp_before_traffic_gets_the_case_studys_recommendations() {
    use junction_sim::driver::{self, DriverOptions, Path as SimPath};
    let scenario = junction_sim::scenario::Scenario::builtin("erp-peak")
        .unwrap()
        .with_time_scale(0.5);
    let cluster = junction_sim::services::SimCluster::start(&scenario)
        .await
        .unwrap();
    // `start` binds its own ports: the addresses in the text are not used.
    let any = "127.0.0.1:0".parse().unwrap();
    let yaml = junction_sim::config::observe_config_yaml(&cluster, any, any);
    let gw = crate::start(&yaml).await;
    let opts = DriverOptions {
        rate: 10.0,
        duration: Duration::from_secs(12),
        call_timeout: Duration::from_secs(10),
        progress: false,
    };
    let run = driver::run(&cluster, SimPath::Observed { gateway: gw.data }, &opts)
        .await
        .unwrap();
    assert!(run.records.len() >= 100);
    let report: Value = reqwest::get(format!("http://{}/admin/recommendations", gw.admin))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let kinds: Vec<String> = report["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            format!(
                "{} {}",
                r["kind"].as_str().unwrap(),
                r["target"].as_str().unwrap()
            )
        })
        .collect();
    for wanted in [
        "cache GET /suppliers/{id}",
        "trim GET /suppliers/{id}",
        "async POST /orders",
        "async POST /events",
        "breaker upstream fulfillment",
        "breaker upstream supplier",
    ] {
        assert!(
            kinds.iter().any(|k| k == wanted),
            "{wanted} missing from {kinds:#?}"
        );
    }
    // The order sync's four calls one after the other, broken by the async hops.
    let chain = report["recommendations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "chain")
        .unwrap_or_else(|| panic!("no chain in {kinds:#?}"));
    assert!(
        chain["target"]
            .as_str()
            .unwrap()
            .starts_with("caller order: "),
        "{chain:#}"
    );
    assert!(chain["figures"]["after_ms"].as_f64() < chain["figures"]["before_ms"].as_f64());
    // Inventory validation answers with data the order flow uses: not async.
    assert!(
        !kinds.iter().any(|k| k == "async POST /inventory/validate"),
        "{kinds:#?}"
    );
    gw.shutdown.cancel();
}
