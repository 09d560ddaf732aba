//! Connection limits on the data port: slowloris heads and idle keep-alive
//! connections are closed after `limits.header_read_timeout`, oversized heads
//! get 431, and past `limits.max_connections` a new connection gets 503.

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
