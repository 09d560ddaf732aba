//! The admin API's OpenAPI document: served at `/admin/openapi.json` without
//! a token, and the running API conforms to it — schemathesis generates
//! requests for every operation (with the bearer token) and checks that none
//! gets a 5xx and that every status, content type and body is the documented
//! one. Needs schemathesis (`scripts/schemathesis` installs it; `.ci/run`
//! sets JUNCTION_SCHEMATHESIS to it, which makes its absence a failure).

use super::pipeline::{poll_json, start_in};
use super::{client, get};
use junction_testkit::{Behavior, FakeUpstream};
use std::path::PathBuf;
use std::time::Duration;

const TOKEN_ENV: &str = "JUNCTION_TEST_OPENAPI_TOKEN";

/// The schemathesis binary, or `None` (skip) when not installed and not required.
fn schemathesis() -> Option<PathBuf> {
    if let Ok(bin) = std::env::var("JUNCTION_SCHEMATHESIS") {
        let bin = PathBuf::from(bin);
        assert!(
            bin.exists(),
            "JUNCTION_SCHEMATHESIS is set but {bin:?} is missing"
        );
        return Some(bin);
    }
    let default = std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache/junction-schemathesis/bin/schemathesis"))?;
    default.exists().then_some(default)
}

#[tokio::test]
async fn the_document_is_served_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var(TOKEN_ENV, "s3cret");
    let up = FakeUpstream::start().await;
    let gw = start_in(dir.path(), &config(&up.url(), &up.url())).await;
    let r = get(gw.admin, "/admin/openapi.json").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "application/json");
    let doc: serde_json::Value = r.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    assert!(doc["paths"]["/admin/dlq"]["get"].is_object(), "{doc}");
    assert_eq!(get(gw.admin, "/admin/dlq").await.status(), 401);
}

fn config(up: &str, hooks: &str) -> String {
    format!(
        r#"
admin: {{ token_env: {TOKEN_ENV} }}
upstreams:
  inv: {{ url: "{up}", timeout: 500ms }}
  hooks: {{ url: "{hooks}", timeout: 500ms }}
routes:
  - name: product
    match: {{ method: GET, path: /products/{{id}} }}
    upstream: inv
    cache: {{ ttl: 60s }}
  - name: orders
    match: {{ method: POST, path: /orders }}
    async:
      topic: orders
      subscribers:
        - {{ name: fulfillment, upstream: hooks, path: /hook, max_attempts: 1 }}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_conforms_to_its_openapi_document() {
    let Some(bin) = schemathesis() else {
        eprintln!("skipping: schemathesis not installed (run scripts/schemathesis)");
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    std::env::set_var(TOKEN_ENV, "s3cret");
    let up = FakeUpstream::start().await;
    let hooks = FakeUpstream::with(Behavior::Status(500)).await;
    // The config file `POST /admin/reload` re-reads: the same config.
    let gw = start_in(dir.path(), &config(&up.url(), &hooks.url())).await;
    // Real state behind every endpoint: traffic, a cached entry, a dead letter.
    for path in ["/products/1", "/products/1"] {
        let r = client()
            .get(format!("http://{}{path}", gw.data))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let r = client()
        .post(format!("http://{}/orders", gw.data))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    poll_json(
        &format!("http://{}/admin/dlq", gw.admin),
        Duration::from_secs(5),
        |v| v["items"].as_array().is_some_and(|i| !i.is_empty()),
    )
    .await;

    // Bulk purges during the run empty the DLQ: keep dead-lettering a new
    // event every 100 ms, so the listings schemathesis checks hold items.
    let feeding = tokio::spawn({
        let data = gw.data;
        async move {
            loop {
                let _ = client()
                    .post(format!("http://{data}/orders"))
                    .body("{}")
                    .send()
                    .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    let report = dir.path().join("schemathesis");
    let admin = gw.admin;
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(["run", &format!("http://{admin}/admin/openapi.json")])
            .args(["--url", &format!("http://{admin}")])
            .args(["-H", "Authorization: Bearer s3cret"])
            .args([
                "--checks",
                "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance",
            ])
            .args(["--max-examples", "30", "--max-time", "45", "--seed", "1"])
            .args(["--request-timeout", "10", "--no-color"])
            .arg("--report-dir")
            .arg(&report)
            .env("SCHEMATHESIS_HOOKS", "")
            .current_dir(report.parent().unwrap())
            .output()
            .expect("run schemathesis")
    })
    .await
    .unwrap();
    feeding.abort();
    let text = format!(
        "{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(out.status.success(), "schemathesis found problems:\n{text}");
}
