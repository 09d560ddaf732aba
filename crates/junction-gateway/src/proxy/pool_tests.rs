//! The per-thread pool against a raw HTTP/1.1 server on loopback that counts its
//! connections and keeps each request head it read.

use super::*;
use crate::body::{empty, full};
use http_body_util::BodyExt;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What the test server saw.
#[derive(Default)]
struct Seen {
    connections: AtomicUsize,
    heads: Mutex<Vec<String>>,
}

/// How the test server answers.
#[derive(Clone, Copy)]
enum Mode {
    /// `200 ok`, keeping the connection open.
    KeepAlive,
    /// Like `KeepAlive`, then closes the connection after the first answer.
    CloseAfterOne,
    /// Like `CloseAfterOne`, 30 ms after the answer.
    CloseSoonAfterOne,
    /// A 64 KiB body, keeping the connection open.
    Large,
}

async fn server(mode: Mode) -> (Target, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Seen::default());
    let s = seen.clone();
    tokio::spawn(async move {
        loop {
            let (mut sock, _) = listener.accept().await.unwrap();
            s.connections.fetch_add(1, Ordering::SeqCst);
            let s = s.clone();
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                loop {
                    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
                        match sock.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    buf.drain(..end + 4);
                    s.heads.lock().unwrap().push(head);
                    let reply = match mode {
                        Mode::Large => {
                            let mut r =
                                b"HTTP/1.1 200 OK\r\ncontent-length: 65536\r\n\r\n".to_vec();
                            r.resize(r.len() + 65536, b'x');
                            r
                        }
                        _ => b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok".to_vec(),
                    };
                    if sock.write_all(&reply).await.is_err() {
                        return;
                    }
                    match mode {
                        Mode::CloseAfterOne => return,
                        Mode::CloseSoonAfterOne => {
                            tokio::time::sleep(Duration::from_millis(30)).await;
                            return;
                        }
                        _ => {}
                    }
                }
            });
        }
    });
    let authority: Authority = addr.to_string().parse().unwrap();
    (Target::new(&authority), seen)
}

fn get(target: &Target, path: &str) -> Request<Body> {
    Request::get(format!("http://{}{path}", target.key))
        .body(empty())
        .unwrap()
}

async fn body_text(resp: Response<UpstreamBody>) -> String {
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

#[tokio::test]
async fn sequential_requests_share_one_connection() {
    let (target, seen) = server(Mode::KeepAlive).await;
    for _ in 0..5 {
        let resp = send(&target, get(&target, "/a")).await.unwrap();
        assert_eq!(body_text(resp).await, "ok");
    }
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
    assert_eq!(seen.heads.lock().unwrap().len(), 5);
}

#[tokio::test]
async fn requests_in_flight_together_get_their_own_connections() {
    let (target, seen) = server(Mode::KeepAlive).await;
    let a = send(&target, get(&target, "/a")).await.unwrap();
    // `a`'s body is unread, so its connection is still busy.
    let b = send(&target, get(&target, "/b")).await.unwrap();
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    assert_eq!(body_text(a).await, "ok");
    assert_eq!(body_text(b).await, "ok");
    // Both went back: two more requests at once need no new connection.
    let c = send(&target, get(&target, "/c")).await.unwrap();
    let d = send(&target, get(&target, "/d")).await.unwrap();
    assert_eq!(body_text(c).await + &body_text(d).await, "okok");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn the_request_goes_out_in_origin_form_with_the_upstream_host() {
    let (target, seen) = server(Mode::KeepAlive).await;
    let resp = send(&target, get(&target, "/items/7?x=1")).await.unwrap();
    body_text(resp).await;
    let mut req = get(&target, "/");
    req.headers_mut()
        .insert(header::HOST, HeaderValue::from_static("kept.example"));
    body_text(send(&target, req).await.unwrap()).await;
    let heads = seen.heads.lock().unwrap().clone();
    assert!(
        heads[0].starts_with("GET /items/7?x=1 HTTP/1.1\r\n"),
        "{}",
        heads[0]
    );
    let host = format!("host: {}", target.key);
    assert!(
        heads[0].to_ascii_lowercase().contains(&host),
        "{}",
        heads[0]
    );
    assert!(heads[1].contains("kept.example"), "{}", heads[1]);
}

#[tokio::test]
async fn a_connection_the_upstream_closed_is_replaced() {
    let (target, seen) = server(Mode::CloseAfterOne).await;
    for i in 0..3 {
        let resp = send(&target, get(&target, "/")).await.unwrap();
        assert_eq!(body_text(resp).await, "ok", "request {i}");
        // Let the connection's task see the close before the next checkout.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(seen.connections.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn a_body_dropped_unread_does_not_go_back_to_the_pool() {
    let (target, seen) = server(Mode::Large).await;
    let resp = send(&target, get(&target, "/")).await.unwrap();
    drop(resp);
    let resp = send(&target, get(&target, "/")).await.unwrap();
    assert_eq!(body_text(resp).await.len(), 65536);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
    // Read to the end, it does.
    let resp = send(&target, get(&target, "/")).await.unwrap();
    assert_eq!(body_text(resp).await.len(), 65536);
    assert_eq!(seen.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_post_body_reaches_the_upstream() {
    let (target, seen) = server(Mode::KeepAlive).await;
    let req = Request::post(format!("http://{}/hook", target.key))
        .header(header::CONTENT_LENGTH, "5")
        .body(full("hello"))
        .unwrap();
    assert_eq!(body_text(send(&target, req).await.unwrap()).await, "ok");
    // The next head starts right after the 5 body bytes.
    body_text(send(&target, get(&target, "/next")).await.unwrap()).await;
    let heads = seen.heads.lock().unwrap().clone();
    assert!(heads[0].starts_with("POST /hook HTTP/1.1"), "{}", heads[0]);
    assert!(heads[1].starts_with("hello") || heads[1].contains("GET /next"));
}

#[tokio::test]
async fn a_refused_connection_is_a_connect_error() {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let target = Target::new(&format!("127.0.0.1:{port}").parse().unwrap());
    let err = send(&target, get(&target, "/")).await.unwrap_err();
    assert!(err.is_connect(), "{err}");
    assert!(err.to_string().contains("connect error"), "{err}");
}

#[tokio::test]
async fn a_host_name_is_resolved() {
    let (target, seen) = server(Mode::KeepAlive).await;
    let port = target.port;
    let named = Target::new(&format!("localhost:{port}").parse().unwrap());
    // `localhost` may resolve to ::1 first, where nothing listens; 127.0.0.1 follows.
    let resp = send(&named, get(&named, "/")).await.unwrap();
    assert_eq!(body_text(resp).await, "ok");
    assert_eq!(seen.connections.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn sweep_drops_connections_closed_by_their_upstream() {
    let (target, _seen) = server(Mode::CloseSoonAfterOne).await;
    body_text(send(&target, get(&target, "/")).await.unwrap()).await;
    let idle = || IDLE.with(|i| i.borrow().get(&target.key).map_or(0, Vec::len));
    assert_eq!(idle(), 1);
    tokio::time::sleep(Duration::from_millis(100)).await;
    sweep();
    assert_eq!(idle(), 0);
}
