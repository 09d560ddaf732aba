//! The dashboard page against the fixture admin API: over HTTP always, in a
//! real browser (Chromium via `browser/run.sh`) when asked with `--ignored`.

mod fixture;

use std::path::PathBuf;
use std::time::Duration;

async fn get(url: &str, token: Option<&str>) -> reqwest::Response {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    req.send().await.expect("fixture answers")
}

#[tokio::test]
async fn fixture_serves_the_page_and_a_guarded_api() {
    let addr = fixture::start("127.0.0.1:0", Some("s3cret")).await;
    let base = format!("http://{addr}");

    let page = get(&format!("{base}/"), None).await;
    assert_eq!(page.status(), 200, "the page itself needs no token");
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.text().await.expect("body").contains("id=\"graph\""));

    assert_eq!(
        get(&format!("{base}/admin/overview"), None).await.status(),
        401
    );
    let overview: serde_json::Value = get(&format!("{base}/admin/overview"), Some("s3cret"))
        .await
        .json()
        .await
        .expect("json");
    assert_eq!(overview["upstreams"][2]["name"], "payment");

    let graph: serde_json::Value = get(&format!("{base}/admin/dependencies"), Some("s3cret"))
        .await
        .json()
        .await
        .expect("json");
    let slowest = graph["slowest_path"].as_array().expect("path");
    assert_eq!(
        slowest.first().and_then(|v| v.as_str()),
        Some("caller:order-service")
    );
    assert!(graph["edges"].as_array().is_some_and(|e| e.len() == 16));

    let replayed = reqwest::Client::new()
        .post(format!("{base}/admin/dlq/dl-0002/replay"))
        .bearer_auth("s3cret")
        .send()
        .await
        .expect("replay");
    assert_eq!(replayed.status(), 202);
    let dlq: serde_json::Value = get(&format!("{base}/admin/dlq?limit=50"), Some("s3cret"))
        .await
        .json()
        .await
        .expect("json");
    let ids: Vec<&str> = dlq["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|d| d["id"].as_str())
        .collect();
    assert_eq!(ids, ["dl-0001", "dl-0003", "dl-0004"]);
}

async fn browser(admin_url: &str, token: &str, args: &[&str]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("browser/run.sh");
    let out = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new("bash")
            .arg(&script)
            .args(args)
            .env("ADMIN_URL", admin_url)
            .env("ADMIN_TOKEN", token)
            .output(),
    )
    .await
    .expect("browser step finishes within 5 minutes")
    .expect("run.sh starts");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "browser step {args:?} failed:\n{log}");
    println!("{args:?}: {log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs Chromium (/usr/bin/chromium) and npm; run with --ignored"]
async fn dashboard_in_a_real_browser() {
    let addr = fixture::start("127.0.0.1:0", Some("browser-token")).await;
    let url = format!("http://{addr}");
    let shot = std::env::var("DASHBOARD_SCREENSHOT").unwrap_or_else(|_| {
        std::env::temp_dir()
            .join(format!("junction-dashboard-{}.png", std::process::id()))
            .display()
            .to_string()
    });
    browser(&url, "browser-token", &["screenshot", &shot]).await;
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "screenshot written"
    );
    browser(
        &url,
        "browser-token",
        &["wait-state", "inventory", "closed"],
    )
    .await;
    // The fixture's payment breaker goes open → half-open 9 s into each 15 s cycle.
    browser(
        &url,
        "browser-token",
        &["wait-state", "payment", "half-open"],
    )
    .await;
    browser(&url, "browser-token", &["replay", "dl-0003"]).await;
    let still = reqwest::Client::new()
        .get(format!("{url}/admin/dlq?limit=50"))
        .bearer_auth("browser-token")
        .send()
        .await
        .expect("dlq")
        .text()
        .await
        .expect("body");
    assert!(
        !still.contains("dl-0003"),
        "the click replayed it on the server: {still}"
    );
}
