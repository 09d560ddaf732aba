//! Connection limits on the data port: slowloris heads and idle keep-alive
//! connections are closed after `limits.header_read_timeout`, oversized heads
//! get 431, past `limits.max_connections` a new connection gets 503, a client
//! that never reads is let go after `limits.write_timeout`, and a trickling
//! upstream body is cut off at the upstream's `body_timeout`, bodies held
//! whole stay within `limits.buffer_budget`, and HTTP/2 connections are bounded
//! the same way (no window granted, idle).

use super::start;
use junction_testkit::FakeUpstream;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(url: &str, limits: &str) -> String {
    format!(
        "limits: {limits}\nupstreams: {{ up: {{ url: \"{url}\" }} }}\nroutes:\n  - {{ name: r, match: {{ method: GET, path: /r }}, upstream: up }}\n"
    )
}

/// Reads until the peer closes (or `within` passes); returns what arrived and when it closed.
async fn read_until_closed(s: &mut TcpStream, within: Duration) -> (String, Option<Duration>) {
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    while t0.elapsed() < within {
        match tokio::time::timeout(within - t0.elapsed(), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    String::from_utf8_lossy(&out).into_owned(),
                    Some(t0.elapsed()),
                )
            }
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => break,
        }
    }
    (String::from_utf8_lossy(&out).into_owned(), None)
}

#[tokio::test]
async fn slow_heads_and_idle_keep_alive_connections_are_closed() {
    let up = FakeUpstream::start().await;
    let gw = start(&config(&up.url(), "{ header_read_timeout: 300ms }")).await;
    // Slowloris: a head that never completes.
    let mut slow = TcpStream::connect(gw.data).await.unwrap();
    slow.write_all(b"GET /r HTTP/1.1\r\nhost: x\r\n")
        .await
        .unwrap();
    let (_, closed) = read_until_closed(&mut slow, Duration::from_secs(3)).await;
    assert!(closed.is_some(), "a slow head was held open");
    // Keep-alive: one request answered, then idle.
    let mut idle = TcpStream::connect(gw.data).await.unwrap();
    idle.write_all(b"GET /r HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut idle, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(
        closed.is_some(),
        "an idle keep-alive connection was held open"
    );
}

#[tokio::test]
async fn an_oversized_head_is_431() {
    let up = FakeUpstream::start().await;
    let gw = start(&config(&up.url(), "{ max_header_bytes: 16KiB }")).await;
    let mut s = TcpStream::connect(gw.data).await.unwrap();
    let big = format!(
        "GET /r HTTP/1.1\r\nhost: x\r\nx-big: {}\r\n\r\n",
        "a".repeat(100_000)
    );
    let _ = s.write_all(big.as_bytes()).await;
    let (answer, _) = read_until_closed(&mut s, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:.80}");
}

#[tokio::test]
async fn past_max_connections_a_new_connection_gets_503() {
    let up = FakeUpstream::start().await;
    let gw = start(&config(&up.url(), "{ max_connections: 2 }")).await;
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(gw.data).await.unwrap();
        s.write_all(b"GET /r HTTP/1.1\r\nhost: x\r\n\r\n")
            .await
            .unwrap();
        let mut buf = [0u8; 512];
        let n = s.read(&mut buf).await.unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
        held.push(s);
    }
    let mut third = TcpStream::connect(gw.data).await.unwrap();
    let (answer, closed) = read_until_closed(&mut third, Duration::from_secs(3)).await;
    assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
    assert!(answer.contains("max_connections"), "{answer}");
    assert!(closed.is_some());
    drop(held);
    // Slots free up when connections close.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let r = super::get(gw.data, "/r").await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn a_trickling_upstream_body_is_cut_off_at_body_timeout() {
    let slow = FakeUpstream::with(junction_testkit::Behavior::Trickle(Duration::from_millis(
        100,
    )))
    .await;
    let healthy = FakeUpstream::start().await;
    let cfg = format!(
        "upstreams:\n  slow: {{ url: \"{}\", body_timeout: 700ms }}\n  ok: {{ url: \"{}\" }}\nroutes:\n  - {{ name: trickle, match: {{ method: GET, path: /t }}, upstream: slow }}\n  - {{ name: fine, match: {{ method: GET, path: /f }}, upstream: ok }}\n",
        slow.url(),
        healthy.url()
    );
    let gw = start(&cfg).await;
    let t0 = Instant::now();
    let resp = super::client()
        .get(format!("http://{}/t", gw.data))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "the headers came in time");
    let body = tokio::time::timeout(Duration::from_secs(10), resp.bytes())
        .await
        .expect("the body ends (cut off) instead of trickling for an hour");
    assert!(
        body.is_err(),
        "a cut-off body is an error, not a short success"
    );
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_secs(5),
        "cut off at about body_timeout: {took:?}"
    );
    assert_eq!(
        super::metric(
            gw.admin,
            r#"junction_upstream_requests_total{upstream="slow",outcome="body_timeout"}"#
        )
        .await,
        1.0
    );
    // The other routes are not held up.
    assert_eq!(super::get(gw.data, "/f").await.status(), 200);
}

#[tokio::test]
async fn a_client_that_never_reads_is_disconnected_after_write_timeout() {
    // 64 MiB: far more than the socket buffers hold.
    const SIZE: usize = 64 << 20;
    let big = FakeUpstream::with(junction_testkit::Behavior::Large(SIZE)).await;
    let gw = start(&config(&big.url(), "{ write_timeout: 500ms }")).await;
    let mut stuck = TcpStream::connect(gw.data).await.unwrap();
    stuck
        .write_all(b"GET /r HTTP/1.1\r\nhost: x\r\n\r\n")
        .await
        .unwrap();
    // Never read while the gateway's writes stall, well past write_timeout.
    tokio::time::sleep(Duration::from_secs(3)).await;
    // Reading now gets what the buffers held, then the end: the gateway gave up.
    let t0 = Instant::now();
    let mut got = 0usize;
    let mut buf = vec![0u8; 1 << 16];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), stuck.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => got += n,
            Err(_) => break false,
        }
        assert!(t0.elapsed() < Duration::from_secs(20), "bounded read");
    };
    assert!(closed, "the connection was closed");
    assert!(
        got < SIZE,
        "the gateway stopped sending ({got} of {SIZE} bytes arrived)"
    );
}

/// HTTP/2 (h2c) escapes the socket's write timeout and hyper's head timeout: a
/// client that reads the socket but grants a response no flow-control window is
/// disconnected after `write_timeout`, and a connection with no stream open is
/// closed after `header_read_timeout`, like an idle HTTP/1 keep-alive one.
#[tokio::test]
async fn an_http2_client_that_grants_no_window_or_sits_idle_is_disconnected() {
    let up = FakeUpstream::start().await;
    let gw = start(&config(
        &up.url(),
        "{ header_read_timeout: 500ms, write_timeout: 500ms }",
    ))
    .await;
    let request = || {
        hyper::Request::get(format!("http://{}/r", gw.data))
            .body(())
            .unwrap()
    };
    // No window at all: the answer's head arrives, its body never can.
    let tcp = TcpStream::connect(gw.data).await.unwrap();
    let (mut stalled, conn) = h2::client::Builder::new()
        .initial_window_size(0)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    let stalled_conn = tokio::spawn(conn);
    let (answer, _) = stalled.send_request(request(), true).unwrap();
    let answer = answer.await.unwrap();
    assert_eq!(answer.status(), 200);
    let t0 = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), stalled_conn).await;
    assert!(
        ended.is_ok(),
        "a response with no window held its connection"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(400),
        "closed before write_timeout"
    );

    // A well-behaved client is served, then its idle connection is closed.
    let tcp = TcpStream::connect(gw.data).await.unwrap();
    let (mut client, conn) = h2::client::handshake(tcp).await.unwrap();
    let idle_conn = tokio::spawn(conn);
    let (answer, _) = client.send_request(request(), true).unwrap();
    let mut body = answer.await.unwrap().into_body();
    let mut got = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        body.flow_control().release_capacity(chunk.len()).unwrap();
        got.extend_from_slice(&chunk);
    }
    assert!(!got.is_empty(), "the answer's body arrived");
    let t0 = Instant::now();
    let ended = tokio::time::timeout(Duration::from_secs(10), idle_conn).await;
    assert!(ended.is_ok(), "an idle HTTP/2 connection was held open");
    assert!(
        t0.elapsed() >= Duration::from_millis(300),
        "closed while in use"
    );
    drop(client);
}

/// The HTTP/2 bounds spare a client that reads slowly but steadily (a 1 MiB
/// answer taking three times `write_timeout`), and an HTTP/2 preface not
/// recognised in time is not served as HTTP/2 without them.
#[tokio::test]
async fn a_slow_but_steady_http2_reader_gets_everything_and_an_unrecognised_preface_no_http2() {
    const SIZE: usize = 1 << 20;
    let big = FakeUpstream::with(junction_testkit::Behavior::Large(SIZE)).await;
    let gw = start(&config(
        &big.url(),
        "{ header_read_timeout: 2s, write_timeout: 500ms }",
    ))
    .await;
    let tcp = TcpStream::connect(gw.data).await.unwrap();
    let (mut client, conn) = h2::client::Builder::new()
        .initial_window_size(64 << 10)
        .handshake::<_, bytes::Bytes>(tcp)
        .await
        .unwrap();
    tokio::spawn(conn);
    let request = hyper::Request::get(format!("http://{}/r", gw.data))
        .body(())
        .unwrap();
    let (answer, _) = client.send_request(request, true).unwrap();
    let mut body = answer.await.unwrap().into_body();
    let (t0, mut got) = (Instant::now(), 0usize);
    while let Some(chunk) = body.data().await {
        let chunk = chunk.expect("the answer is not cut off");
        got += chunk.len();
        // About 64 KiB every 100 ms: 1.6 s for the whole answer.
        tokio::time::sleep(Duration::from_millis(100 * chunk.len() as u64 / (64 << 10))).await;
        body.flow_control().release_capacity(chunk.len()).unwrap();
    }
    assert_eq!(got, SIZE);
    assert!(
        t0.elapsed() > Duration::from_millis(1500),
        "the reader was slow"
    );

    // The preface trickled: served as HTTP/1, which it is not (no SETTINGS back).
    let mut slow = TcpStream::connect(gw.data).await.unwrap();
    slow.write_all(b"PRI").await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    slow.write_all(b" * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        .await
        .unwrap();
    let (answer, closed) = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "{answer:?}");
    assert!(
        answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
        "{answer:?}"
    );
}

/// `limits.buffer_budget` bounds the bodies held whole at once: a read that
/// nothing has acted on yet (here a cache fill) is refused with 503 +
/// Retry-After and never counts against the upstream; a write's answer (the
/// upstream already did it) is not refused; the bytes are given back after.
/// (Refusing an event past the budget needs others held at the same moment:
/// the `buffers` unit tests cover it.)
#[tokio::test]
async fn bodies_held_whole_stay_within_the_buffer_budget() {
    use super::client;
    const SIZE: usize = 300 * 1024;
    let big = FakeUpstream::with(junction_testkit::Behavior::Large(SIZE)).await;
    let hooks = FakeUpstream::start().await;
    let dir = tempfile::tempdir().unwrap();
    let yaml = format!(
        r#"limits: {{ buffer_budget: 100KiB, max_body: 64KiB }}
upstreams:
  big: {{ url: "{}", breaker: {{ min_requests: 1 }} }}
  hooks: {{ url: "{}" }}
routes:
  - {{ name: files, match: {{ method: GET, path: "/files/{{id}}" }}, upstream: big, cache: {{ ttl: 60s }} }}
  - {{ name: pay, match: {{ method: POST, path: /pay }}, upstream: big, idempotency: {{ ttl: 1h }} }}
  - name: events
    match: {{ method: POST, path: /events }}
    async: {{ topic: events, subscribers: [ {{ name: s, upstream: hooks, path: /h }} ] }}
"#,
        big.url(),
        hooks.url()
    );
    let gw = super::pipeline::start_in(dir.path(), &yaml).await;
    let base = format!("http://{}", gw.data);
    // A 300 KiB cache fill: refused, the upstream not blamed (its breaker,
    // opened by one failure, stays closed for the second try).
    for id in [1, 2] {
        let r = client()
            .get(format!("{base}/files/{id}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert_eq!(r.headers()["retry-after"], "1");
        let body = r.text().await.unwrap();
        assert!(body.contains("buffers-full"), "{body}");
    }
    // Events within the budget are accepted.
    let r = client()
        .post(format!("{base}/events"))
        .body("small")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    // A write's 300 KiB answer: the upstream did the write, so it is not refused.
    let r = client()
        .post(format!("{base}/pay"))
        .header("idempotency-key", "pay-1")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), SIZE);
    let refusals = |site: &str| format!(r#"junction_buffer_refusals_total{{site="{site}"}}"#);
    assert_eq!(super::metric(gw.admin, &refusals("cache")).await, 2.0);
    assert_eq!(
        super::metric(gw.admin, "junction_buffered_bytes").await,
        0.0
    );
}
