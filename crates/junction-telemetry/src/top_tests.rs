use super::*;
use serde_json::json;

fn overview() -> Value {
    json!({
        "uptime_s": 3725,
        "routes": [
            {"name": "product", "kind": "sync", "rps": 41.25, "p50_ms": 3.21, "p99_ms": 48.7, "error_ratio": 0.0, "count_total": 120345},
            {"name": "order-created", "kind": "async", "rps": 7.0, "p50_ms": 1.5, "p99_ms": 4.0, "error_ratio": 0.012, "count_total": 9001}
        ],
        "upstreams": [
            {"name": "inventory", "state": "closed", "error_ratio": 0.0, "calls_in_window": 812, "next_probe_in_ms": null,
             "in_flight": 3, "max_concurrency": 256, "rps": 41.0, "p99_ms": 45.0},
            {"name": "payment", "state": "open", "error_ratio": 0.62, "calls_in_window": 40, "next_probe_in_ms": 4200,
             "in_flight": 0, "max_concurrency": 64, "rps": 0.0, "p99_ms": 3000.0}
        ],
        "cache": {"hits": 9000, "misses": 1000, "hit_ratio": 0.9, "entries": 420, "bytes": 1_572_864, "bytes_saved": 48_234_496},
        "queues": [{"topic": "orders", "depth": 12, "dlq_depth": 3, "oldest_pending_age_ms": 1500}],
        "subscribers": [
            {"name": "fulfillment", "topic": "orders", "state": "paused", "backlog": 4321, "oldest_pending_age_ms": 2500, "delivered": 8990, "retrying": 2, "dead": 3, "p99_ms": 120.0}
        ]
    })
}

fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    text.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("a line with {needle:?} in:\n{text}"))
}

#[test]
fn renders_every_section() {
    let text = render_overview(&overview(), 120);
    assert!(
        text.starts_with("up 1h 02m 05s · 2 routes · 2 upstreams (1 not closed) · 1 topics"),
        "{text}"
    );
    let product = line_with(&text, "product");
    for cell in ["sync", "41.2", "3.21", "48.7", "0.0%", "120345"] {
        assert!(product.contains(cell), "{cell} in {product:?}");
    }
    assert!(line_with(&text, "order-created").contains("1.2%"));
    let payment = line_with(&text, "payment");
    for cell in ["open", "62.0%", "0/64", "3000", "in 4.2s"] {
        assert!(payment.contains(cell), "{cell} in {payment:?}");
    }
    assert!(line_with(&text, "inventory").contains("3/256"));
    let orders = text
        .lines()
        .find(|l| l.starts_with("orders "))
        .unwrap_or_default();
    assert!(
        orders.contains("12") && orders.contains("1.5s"),
        "{orders:?}"
    );
    let fulfillment = line_with(&text, "fulfillment");
    for cell in ["8990", "4321", "2.5s", "paused"] {
        assert!(fulfillment.contains(cell), "{cell} in {fulfillment:?}");
    }
    let cache = line_with(&text, "CACHE");
    assert!(
        cache.contains("hit ratio 90.0%")
            && cache.contains("1.5 MiB")
            && cache.contains("saved 46.0 MiB"),
        "{cache}"
    );
    assert!(!text.contains('\x1b'), "plain text has no escape codes");
}

#[test]
fn lines_fit_the_width() {
    let mut json = overview();
    json["routes"][0]["name"] = json!("a-route-name-that-is-much-longer-than-the-terminal-is-wide");
    for width in [40, 60, 80] {
        let text = render_overview(&json, width);
        for l in text.lines() {
            assert!(l.chars().count() <= width, "{width}: {l:?}");
        }
        assert!(text.contains('…'), "long names are shortened at {width}");
    }
}

#[test]
fn missing_parts_render_as_dashes_and_none() {
    let text = render_overview(&json!({"routes": [{"name": "bare"}], "cache": null}), 80);
    assert!(line_with(&text, "bare").contains(" -"));
    assert!(text.contains("(none)"), "no upstreams: {text}");
    assert!(text.contains("CACHE  not configured"));
    assert!(!text.contains("QUEUES") && !text.contains("SUBSCRIBERS"));
    assert!(render_overview(&json!("not an object"), 80).contains("up -"));
}

#[test]
fn terminal_frames_colour_states_without_breaking_alignment() {
    let plain = render(&overview(), 100, false);
    let ansi = render(&overview(), 100, true);
    assert!(ansi.contains("\x1b[1;31mopen"), "open is red");
    assert!(ansi.contains("\x1b[32mclosed"), "closed is green");
    let strip = |s: &str| {
        let mut out = String::new();
        let mut chars = s.chars();
        while let Some(c) = chars.next() {
            if c == '\x1b' {
                for c in chars.by_ref() {
                    if c == 'm' {
                        break;
                    }
                }
            } else {
                out.push(c);
            }
        }
        out
    };
    assert_eq!(strip(&ansi), plain);
}

#[test]
fn number_formats() {
    use table::{bytes, count, ms};
    assert_eq!(ms(Some(&json!(0.456))), "0.46");
    assert_eq!(ms(Some(&json!(45.66))), "45.7");
    assert_eq!(ms(Some(&json!(1234.4))), "1234");
    assert_eq!(bytes(Some(&json!(512))), "512 B");
    assert_eq!(bytes(Some(&json!(2048))), "2.0 KiB");
    assert_eq!(count(Some(&json!(12.0))), "12");
    assert_eq!(count(None), "-");
    assert_eq!(uptime(59), "0m 59s");
    assert_eq!(uptime(90_061), "1d 01h 01m");
}

/// An admin API stand-in answering `/admin/overview`, with an optional token.
async fn admin(token: Option<&'static str>) -> String {
    use axum::http::{HeaderMap, StatusCode};
    use axum::routing::get;
    let app = axum::Router::new().route(
        "/admin/overview",
        get(move |headers: HeaderMap| async move {
            let given = headers.get("authorization").and_then(|v| v.to_str().ok());
            match token {
                Some(t) if given != Some(format!("Bearer {t}").as_str()) => {
                    Err(StatusCode::UNAUTHORIZED)
                }
                _ => Ok(axum::Json(overview())),
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    format!("http://{addr}")
}

#[tokio::test]
async fn run_top_polls_the_given_number_of_times() {
    let url = admin(Some("s3cret")).await;
    run_top(&url, Some("s3cret"), Duration::from_millis(100), Some(2))
        .await
        .expect("two polls succeed");
}

#[tokio::test]
async fn run_top_stops_at_once_without_a_valid_token() {
    let url = admin(Some("s3cret")).await;
    let err = run_top(&url, None, Duration::from_millis(100), None)
        .await
        .expect_err("401 ends the loop even without an iteration limit");
    assert!(err.downcast_ref::<Unauthorized>().is_some(), "{err:#}");
}

#[tokio::test]
async fn run_top_reports_an_unreachable_admin() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    drop(listener);
    let err = run_top(
        &format!("http://{addr}"),
        None,
        Duration::from_millis(100),
        Some(1),
    )
    .await
    .expect_err("nothing listens there");
    assert!(err.downcast_ref::<reqwest::Error>().is_some(), "{err:#}");
}
