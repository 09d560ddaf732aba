//! A client's own faults are the client's: malformed, oversized, abandoned or
//! too-slow request bodies get 400 / 413 / 408, count in
//! `junction_client_errors_total`, and never open a healthy upstream's breaker.

use super::{client, get, metric, start};
use junction_testkit::FakeUpstream;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(url: &str) -> String {
    format!(
        r#"
limits: {{ max_body: 1KiB }}
upstreams:
  healthy: {{ url: "{url}", timeout: 300ms, breaker: {{ min_requests: 3, error_threshold_percentage: 50, reset_timeout: 30s }} }}
routes:
  - {{ name: upload, match: {{ method: POST, path: /upload }}, upstream: healthy }}
"#
    )
}

/// Sends `head` then `body` (in `pieces`, `pause` apart) on a fresh connection;
/// returns the status line's code, or 0 when the connection closed without one.
async fn raw(addr: std::net::SocketAddr, head: &str, pieces: &[&[u8]], pause: Duration) -> u16 {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(head.as_bytes()).await.unwrap();
    for piece in pieces {
        if s.write_all(piece).await.is_err() {
            break;
        }
        tokio::time::sleep(pause).await;
    }
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap_or(Ok(0))
        .unwrap_or(0);
    let text = String::from_utf8_lossy(&buf[..n]);
    text.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

async fn breaker_state(admin: std::net::SocketAddr) -> String {
    let v: serde_json::Value = get(admin, "/admin/breakers").await.json().await.unwrap();
    v["breakers"][0]["state"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn client_body_faults_never_open_a_healthy_upstreams_breaker() {
    let up = FakeUpstream::start().await;
    let gw = start(&config(&up.url())).await;
    let chunked = "POST /upload HTTP/1.1\r\nhost: x\r\ntransfer-encoding: chunked\r\ncontent-type: text/plain\r\n\r\n";

    // Malformed chunk sizes: the client's framing error, 400.
    for _ in 0..5 {
        let code = raw(
            gw.data,
            chunked,
            &[b"5\r\nhello\r\nzz\r\nxx\r\n0\r\n\r\n"],
            Duration::ZERO,
        )
        .await;
        assert_eq!(code, 400, "malformed chunked body");
    }
    assert_eq!(breaker_state(gw.admin).await, "closed");

    // Bodies over limits.max_body, streamed without a length: 413.
    let big = vec![b'x'; 600];
    let chunk = [
        format!("{:x}\r\n", big.len()).into_bytes(),
        big,
        b"\r\n".to_vec(),
    ]
    .concat();
    for _ in 0..5 {
        let code = raw(
            gw.data,
            chunked,
            &[&chunk, &chunk, &chunk, b"0\r\n\r\n"],
            Duration::from_millis(5),
        )
        .await;
        assert_eq!(code, 413, "oversized streamed body");
    }
    assert_eq!(breaker_state(gw.admin).await, "closed");

    // Uploads that stall past the attempt timeout: 408, the client's delay.
    let slow = "POST /upload HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n";
    for _ in 0..4 {
        let code = raw(gw.data, slow, &[b"0123456789"], Duration::from_millis(600)).await;
        assert_eq!(code, 408, "stalled upload");
    }
    assert_eq!(breaker_state(gw.admin).await, "closed");

    // The upstream still serves everyone else.
    let ok = client()
        .post(format!("http://{}/upload", gw.data))
        .body("fine")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    for (reason, at_least) in [
        ("bad_body", 5.0),
        ("body_too_large", 5.0),
        ("body_timeout", 4.0),
    ] {
        let series = format!(r#"junction_client_errors_total{{route="upload",reason="{reason}"}}"#);
        assert!(metric(gw.admin, &series).await >= at_least, "{series}");
    }
    let failures = metric(
        gw.admin,
        r#"junction_upstream_requests_total{upstream="healthy",outcome="error"}"#,
    )
    .await
        + metric(
            gw.admin,
            r#"junction_upstream_requests_total{upstream="healthy",outcome="timeout"}"#,
        )
        .await;
    assert_eq!(
        failures, 0.0,
        "no client fault counted against the upstream"
    );
}
