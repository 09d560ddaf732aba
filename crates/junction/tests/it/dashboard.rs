//! The live views: overview, dependency graph numbers, the dashboard page (also
//! in a real headless Chromium), and `junction top`.

use super::{client, get, start};
use junction_testkit::{Behavior, FakeUpstream};
use serde_json::Value;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

fn config(inv: &str, sub: &str) -> String {
    let queue = std::env::temp_dir().join(format!("junction-it-{}", uuid::Uuid::new_v4()));
    format!(
        r#"
queue: {{ backend: embedded, path: "{}" }}
analyze: {{ enabled: true }}
upstreams:
  inventory: {{ url: "{inv}", timeout: 1s, breaker: {{ min_requests: 1000 }} }}
  vendor: {{ url: "{inv}", timeout: 1s, breaker: {{ min_requests: 3, reset_timeout: 60s }} }}
  hooks: {{ url: "{sub}", timeout: 1s, breaker: {{ min_requests: 1000 }} }}
routes:
  - {{ name: product, match: {{ method: GET, path: /products/{{id}} }}, upstream: inventory, cache: {{ ttl: 60s }} }}
  - {{ name: stock, match: {{ method: GET, path: /stock }}, upstream: inventory }}
  - {{ name: vendor, match: {{ method: GET, path: /vendor }}, upstream: vendor }}
  - name: orders
    match: {{ method: POST, path: /orders }}
    async:
      topic: orders
      subscribers:
        - {{ name: fulfillment, upstream: hooks, path: /hook, max_attempts: 1 }}
"#,
        queue.display()
    )
}

async fn json(url: String) -> Value {
    client()
        .get(url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

#[tokio::test]
async fn graph_edges_carry_the_numbers_of_known_traffic() {
    let up = FakeUpstream::with(Behavior::FailTimes {
        status: 500,
        times: 10,
        retry_after: None,
    })
    .await;
    let hooks = FakeUpstream::start().await;
    let gw = start(&config(&up.url(), &hooks.url())).await;
    for _ in 0..100 {
        client()
            .get(format!("http://{}/stock", gw.data))
            .header("x-junction-caller", "erp")
            .send()
            .await
            .unwrap();
    }
    let r = client()
        .post(format!("http://{}/orders", gw.data))
        .header("x-junction-caller", "erp")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    super::pipeline::eventually("delivered", Duration::from_secs(5), || hooks.calls() == 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;

    let g = json(format!("http://{}/admin/dependencies", gw.admin)).await;
    let edge = |from: &str, to: &str| -> Value {
        g["edges"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["from"] == from && e["to"] == to)
            .cloned()
            .unwrap_or_else(|| panic!("no edge {from} -> {to} in {g}"))
    };
    let e = edge("caller:erp", "route:stock");
    assert_eq!(e["calls"], 100);
    assert_eq!(e["errors"], 10);
    assert!(
        (e["error_ratio"].as_f64().unwrap() - 0.1).abs() < 1e-9,
        "{e}"
    );
    assert_eq!(e["kind"], "sync");
    let e = edge("route:stock", "upstream:inventory");
    assert!(
        (e["error_ratio"].as_f64().unwrap() - 0.1).abs() < 1e-9,
        "{e}"
    );
    assert_eq!(edge("route:orders", "topic:orders")["kind"], "async");
    let e = edge("topic:orders", "subscriber:fulfillment");
    assert_eq!(
        (e["kind"].as_str(), e["calls"].as_u64()),
        (Some("async"), Some(1))
    );
    assert!(!g["slowest_path"].as_array().unwrap().is_empty());

    let dot = get(gw.admin, "/admin/dependencies?format=dot")
        .await
        .text()
        .await
        .unwrap();
    assert!(dot.starts_with("digraph"), "{dot}");
    assert!(dot.contains("stock") && dot.contains("inventory"), "{dot}");

    let o = json(format!("http://{}/admin/overview", gw.admin)).await;
    let stock = o["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "stock")
        .unwrap();
    assert_eq!(stock["count_total"], 100);
    assert!((stock["error_ratio"].as_f64().unwrap() - 0.1).abs() < 1e-9);
    let orders = o["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "orders")
        .unwrap();
    assert_eq!(orders["kind"], "async");
    assert_eq!(o["subscribers"][0]["name"], "fulfillment");
    assert_eq!(o["subscribers"][0]["delivered"], 1);
    assert_eq!(o["queues"][0]["topic"], "orders");
    assert!(o["cache"].is_object());
}

#[tokio::test]
async fn the_dashboard_is_served_and_the_api_needs_the_token() {
    let up = FakeUpstream::start().await;
    std::env::set_var("JUNCTION_TEST_DASH_TOKEN", "s3cret");
    let cfg = format!(
        "admin: {{ token_env: JUNCTION_TEST_DASH_TOKEN }}\n{}",
        config(&up.url(), &up.url())
    );
    let gw = start(&cfg).await;
    let page = get(gw.admin, "/").await;
    assert_eq!(page.status(), 200);
    assert!(page.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(page.text().await.unwrap().contains("id=\"graph\""));
    let denied = get(gw.admin, "/admin/overview").await;
    assert_eq!(denied.status(), 401);
    assert_eq!(denied.headers()["content-type"], "application/problem+json");
    let ok = client()
        .get(format!("http://{}/admin/overview", gw.admin))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(get(gw.admin, "/healthz").await.status(), 200);
    // The scheme is case-insensitive; a wrong token (a prefix of the right one too) is refused.
    for (value, status) in [
        ("bearer s3cret", 200),
        ("BEARER s3cret", 200),
        ("Bearer s3cre", 401),
        ("Bearer s3cretx", 401),
    ] {
        let r = client()
            .get(format!("http://{}/admin/overview", gw.admin))
            .header("authorization", value)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{value}");
    }
}

#[tokio::test]
async fn top_prints_the_overview() {
    let up = FakeUpstream::start().await;
    let gw = start(&config(&up.url(), &up.url())).await;
    get(gw.data, "/stock").await;
    let admin = format!("http://{}", gw.admin);
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_junction"))
            .args(["top", "--admin", &admin, "--iterations", "1"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for needle in ["stock", "inventory", "closed", "orders"] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
}

/// The drill-down API: a route's hour at 10 s, its answers by status and
/// latency histogram; the upstream's too; a bad or unknown name is a problem.
#[tokio::test]
async fn drill_shows_a_series_hour_statuses_and_histogram() {
    let up = FakeUpstream::start().await;
    let gw = start(&config(&up.url(), &up.url())).await;
    for _ in 0..6 {
        get(gw.data, "/stock").await;
    }
    up.set(Behavior::Status(503));
    for _ in 0..2 {
        get(gw.data, "/stock").await;
    }
    let admin = format!("http://{}", gw.admin);
    let d = json(format!("{admin}/admin/drill?route=stock")).await;
    assert_eq!(
        (d["kind"].as_str(), d["name"].as_str()),
        (Some("route"), Some("stock"))
    );
    let h = &d["history"];
    assert_eq!(h["step_s"], 10);
    let points = h["points"].as_array().unwrap();
    assert_eq!(points.len(), 360);
    let calls: u64 = points.iter().map(|p| p["calls"].as_u64().unwrap()).sum();
    let errors: u64 = points.iter().map(|p| p["errors"].as_u64().unwrap()).sum();
    assert_eq!((calls, errors), (8, 2), "{h}");
    assert_eq!(
        h["statuses"],
        serde_json::json!([{"status": 200, "count": 6}, {"status": 503, "count": 2}])
    );
    let binned: u64 = h["latency"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["count"].as_u64().unwrap())
        .sum();
    assert_eq!(binned, 8);
    let u = json(format!("{admin}/admin/drill?upstream=inventory")).await;
    assert_eq!(u["history"]["calls"], 8);
    let r = client()
        .get(format!("{admin}/admin/drill"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = client()
        .get(format!("{admin}/admin/drill?route=nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client()
        .get(format!("{admin}/admin/drill?subscriber=fulfillment"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// SIGTERM ends `junction top` as `q` does (exit 0, terminal restored),
/// not by the signal's default death.
#[tokio::test]
async fn top_ends_cleanly_on_sigterm() {
    let up = FakeUpstream::start().await;
    let gw = start(&config(&up.url(), &up.url())).await;
    let admin = format!("http://{}", gw.admin);
    let status = tokio::task::spawn_blocking(move || {
        let mut child = Command::new(env!("CARGO_BIN_EXE_junction"))
            .args(["top", "--admin", &admin, "--interval", "200ms"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(800));
        let killed = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success());
        for _ in 0..100 {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        child.kill().ok();
        panic!("junction top still running 5 s after SIGTERM");
    })
    .await
    .unwrap();
    assert!(status.success(), "{status:?}");
}

/// Runs one step of the browser harness (`crates/junction-telemetry/browser`).
fn browser_step(admin: &str, args: &[&str]) -> Result<(), String> {
    let script =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../junction-telemetry/browser/run.sh");
    let out = Command::new("bash")
        .arg(script)
        .args(args)
        .env("ADMIN_URL", admin)
        .output()
        .map_err(|e| e.to_string())?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Headless Chromium against a real Junction: a breaker opening shows on the page,
/// a dead letter's Replay button redelivers it, the DLQ's reason filter finds
/// dead letters and "Purge all matching" removes them, the recommendations
/// list a cache candidate with its config, a route's row opens its
/// drill-down, the message page shows a replayed delivery, and a
/// screenshot is kept.
/// Needs /usr/bin/chromium and npm (`.ci/run` installs them and sets
/// JUNCTION_BROWSER_TESTS=1, which makes a missing browser a failure).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_headless_chromium() {
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !std::path::Path::new(&chromium).exists() {
        assert!(
            std::env::var("JUNCTION_BROWSER_TESTS").is_err(),
            "JUNCTION_BROWSER_TESTS is set but {chromium} is missing"
        );
        eprintln!(
            "skipping: {chromium} not installed (set JUNCTION_BROWSER_TESTS=1 to require it)"
        );
        return;
    }
    let up = FakeUpstream::start().await;
    let hooks = FakeUpstream::with(Behavior::Status(500)).await;
    let gw = start(&config(&up.url(), &hooks.url())).await;
    let admin = format!("http://{}", gw.admin);
    let data = format!("http://{}", gw.data);
    for _ in 0..20 {
        client()
            .get(format!("{data}/products/1"))
            .header("x-junction-caller", "web-shop")
            .send()
            .await
            .unwrap();
        client()
            .get(format!("{data}/stock"))
            .header("x-junction-caller", "erp")
            .send()
            .await
            .unwrap();
    }
    let a = admin.clone();
    tokio::task::spawn_blocking(move || browser_step(&a, &["wait-state", "vendor", "closed"]))
        .await
        .unwrap()
        .unwrap();
    // Observe mode saw /stock answer the same 20 times: a cache candidate.
    let a = admin.clone();
    tokio::task::spawn_blocking(move || browser_step(&a, &["recommendation", "cache GET /stock"]))
        .await
        .unwrap()
        .unwrap();
    // A click on the stock route opens its hour: 20 calls, all 200.
    let a = admin.clone();
    tokio::task::spawn_blocking(move || browser_step(&a, &["drill", "route", "stock", "200"]))
        .await
        .unwrap()
        .unwrap();

    // The vendor fails: its breaker opens, and the page shows it.
    up.set(Behavior::Status(503));
    for _ in 0..3 {
        client().get(format!("{data}/vendor")).send().await.unwrap();
    }
    let a = admin.clone();
    tokio::task::spawn_blocking(move || browser_step(&a, &["wait-state", "vendor", "open"]))
        .await
        .unwrap()
        .unwrap();

    // A dead letter (the subscriber answers 500, one attempt allowed), replayed by clicking.
    let r = client()
        .post(format!("{data}/orders"))
        .header("x-junction-caller", "order-service")
        .header("content-type", "application/json")
        .body(r#"{"orderId":"o-7","card_number":"4111111111111111"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let dlq =
        super::pipeline::poll_json(&format!("{admin}/admin/dlq"), Duration::from_secs(5), |v| {
            v["items"][0]["id"].is_string()
        })
        .await;
    let dl_id = dlq["items"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!dl_id.is_empty(), "no dead letter appeared");
    // Its page shows the subscriber's 500 and the payload with the card number masked.
    let msg_id = dlq["items"][0]["message_id"].as_str().unwrap().to_string();
    let (a, id) = (admin.clone(), msg_id.clone());
    tokio::task::spawn_blocking(move || {
        browser_step(&a, &["peek", &id, "fulfillment", "o-7", "4111111111111111"])
    })
    .await
    .unwrap()
    .unwrap();
    hooks.set(Behavior::Ok("{}".into()));
    let shot = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    let (a, s) = (admin.clone(), shot.display().to_string());
    tokio::task::spawn_blocking(move || browser_step(&a, &["screenshot", &s]))
        .await
        .unwrap()
        .unwrap();
    let (a, id) = (admin.clone(), dl_id.clone());
    tokio::task::spawn_blocking(move || browser_step(&a, &["replay", &id]))
        .await
        .unwrap()
        .unwrap();
    super::pipeline::eventually("replayed delivery", Duration::from_secs(10), || {
        hooks.calls() == 2
    })
    .await;
    // The message page shows the replayed delivery done, with its attempts.
    let a = admin.clone();
    tokio::task::spawn_blocking(move || {
        browser_step(&a, &["message", &msg_id, "fulfillment", "delivered"])
    })
    .await
    .unwrap()
    .unwrap();

    // Three more dead letters, found with the reason filter and purged from the page.
    hooks.set(Behavior::Status(500));
    for _ in 0..3 {
        let r = client()
            .post(format!("{data}/orders"))
            .body("{}")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202);
    }
    super::pipeline::poll_json(&format!("{admin}/admin/dlq"), Duration::from_secs(5), |v| {
        v["items"].as_array().is_some_and(|i| i.len() == 3)
    })
    .await;
    let a = admin.clone();
    tokio::task::spawn_blocking(move || browser_step(&a, &["filter-purge", "status 500", "3"]))
        .await
        .unwrap()
        .unwrap();
    let left =
        super::pipeline::poll_json(&format!("{admin}/admin/dlq"), Duration::from_secs(5), |v| {
            v["items"].as_array().is_some_and(|i| i.is_empty())
        })
        .await;
    assert_eq!(
        left["items"],
        serde_json::json!([]),
        "purged from the page: {left}"
    );
    assert!(
        std::fs::metadata(&shot).unwrap().len() > 10_000,
        "screenshot kept at {}",
        shot.display()
    );
    eprintln!("dashboard screenshot: {}", shot.display());
}

#[tokio::test]
async fn metrics_carry_the_build() {
    let up = FakeUpstream::start().await;
    let gw = start(&config(&up.url(), &up.url())).await;
    let text = get(gw.admin, "/metrics").await.text().await.unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("junction_build_info{"))
        .unwrap_or_else(|| panic!("no junction_build_info in\n{text}"));
    assert!(
        line.contains(&format!("version=\"{}\"", env!("CARGO_PKG_VERSION"))),
        "{line}"
    );
    assert!(
        line.contains(&format!("commit=\"{}\"", junction_gateway::GIT_COMMIT)),
        "{line}"
    );
    assert!(line.ends_with(" 1"), "{line}");
}

#[tokio::test]
async fn admin_errors_are_problem_json() {
    let up = FakeUpstream::start().await;
    let gw = start(&config(&up.url(), &up.url())).await;
    let bad_limit = get(gw.admin, "/admin/dlq?limit=abc").await;
    assert_eq!(bad_limit.status(), 400);
    assert_eq!(
        bad_limit.headers()["content-type"],
        "application/problem+json"
    );
    let body: serde_json::Value = bad_limit.json().await.unwrap();
    assert!(body["detail"].as_str().unwrap().contains("limit"), "{body}");
    let not_json = client()
        .post(format!("http://{}/admin/dlq/replay", gw.admin))
        .header("content-type", "text/plain")
        .body("topic=orders")
        .send()
        .await
        .unwrap();
    assert_eq!(not_json.status(), 415);
    assert_eq!(
        not_json.headers()["content-type"],
        "application/problem+json"
    );
    let unknown = get(gw.admin, "/admin/nothing-here").await;
    assert_eq!(unknown.status(), 404);
    assert_eq!(
        unknown.headers()["content-type"],
        "application/problem+json"
    );
    // Successful answers are untouched.
    assert_eq!(
        get(gw.admin, "/healthz").await.text().await.unwrap(),
        "ok\n"
    );
}
