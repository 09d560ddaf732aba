//! HTTP/2 over plain TCP ("h2c", prior knowledge) to `http://` upstreams
//! configured with `http2: true` (internal services, gRPC-style servers,
//! sidecars; HTTPS upstreams get HTTP/2 by ALPN instead, see `tls.rs`).
//!
//! Why: every request on HTTP/1.1 needs its own connection turn, so each costs
//! a write and a read on both ends. On one multiplexed HTTP/2 connection the
//! requests in flight share writes and reads, which matters most for
//! deliveries, where many go to one subscriber at once.
//!
//! Like the HTTP/1.1 pool, each thread keeps its own connection per upstream
//! address, so a connection's task runs on the thread that uses it. A
//! connection the upstream closed (or sent GOAWAY on) is replaced on the next
//! request; a request it refused before sending goes out once more on a new one.

use super::pool::{connect_tcp, SendError, Target, UpstreamBody};
use crate::body::Body;
use http::{Request, Response};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use std::cell::RefCell;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Mutex;

/// Idle connections are pinged this often, so a dead peer is noticed.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(30);

/// One upstream address's connection on this thread (none until first use).
type Slot = Arc<Mutex<Option<http2::SendRequest<Body>>>>;

thread_local! {
    /// This thread's connections, by `host:port`.
    static CONNS: RefCell<HashMap<Box<str>, Slot>> = RefCell::new(HashMap::new());
}

/// Sends `req` (its URI absolute) to `target` over this thread's HTTP/2 connection.
pub async fn send(
    target: &Target,
    req: Request<Body>,
) -> Result<Response<UpstreamBody>, SendError> {
    let slot = CONNS.with(|conns| {
        let mut conns = conns.borrow_mut();
        // Looked up by `&str` first: the key is allocated once per address, not per request.
        match conns.get(target.key()) {
            Some(slot) => slot.clone(),
            None => conns.entry(target.key().into()).or_default().clone(),
        }
    });
    let mut req = req;
    // A connection that closed before taking the request gives it back; the
    // second try is on a fresh connection, whose failure is final.
    for fresh in [false, true] {
        let mut tx = connection(&slot, target, fresh).await?;
        tx.ready().await?;
        match tx.try_send_request(req).await {
            Ok(resp) => return Ok(resp.map(UpstreamBody::unpooled)),
            Err(mut e) => match e.take_message() {
                Some(back) if !fresh => req = back,
                _ => return Err(SendError::Http(e.into_error())),
            },
        }
    }
    unreachable!("the loop returns on its second pass")
}

/// The open connection in `slot`, or a new one (always new when `fresh`).
async fn connection(
    slot: &Slot,
    target: &Target,
    fresh: bool,
) -> Result<http2::SendRequest<Body>, SendError> {
    // Held while connecting, so concurrent first requests share one connection.
    let mut held = slot.lock().await;
    if let Some(tx) = held.as_ref().filter(|tx| !fresh && !tx.is_closed()) {
        return Ok(tx.clone());
    }
    let stream = connect_tcp(target).await?;
    let (tx, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .handshake(TokioIo::new(stream))
        .await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "h2c upstream connection ended with an error");
        }
    });
    *held = Some(tx.clone());
    Ok(tx)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use http_body_util::{BodyExt, Full};
    use hyper::server::conn::http2 as server;
    use hyper::service::service_fn;
    use std::convert::Infallible;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// An h2c server on port 0 answering each request with its protocol
    /// version and path; counts connections. With `close_after`, each
    /// connection is closed gracefully (GOAWAY) that long after it opened.
    async fn h2c_server(close_after: Option<Duration>) -> (std::net::SocketAddr, Arc<AtomicUsize>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = Arc::new(AtomicUsize::new(0));
        let counted = conns.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let body = format!("{:?} {}", req.version(), req.uri().path());
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(body))))
                    });
                    let conn = server::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), svc);
                    tokio::pin!(conn);
                    if let Some(after) = close_after {
                        if tokio::time::timeout(after, conn.as_mut()).await.is_ok() {
                            return;
                        }
                        conn.as_mut().graceful_shutdown();
                    }
                    let _ = conn.await;
                });
            }
        });
        (addr, conns)
    }

    fn target(addr: std::net::SocketAddr) -> Target {
        Target::new(&addr.to_string().parse().unwrap())
    }

    fn get(addr: std::net::SocketAddr, path: &str) -> Request<Body> {
        Request::builder()
            .uri(format!("http://{addr}{path}"))
            .body(crate::body::empty())
            .unwrap()
    }

    async fn text(resp: Response<UpstreamBody>) -> String {
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(bytes.to_vec()).unwrap()
    }

    #[tokio::test]
    async fn concurrent_requests_share_one_connection() {
        let (addr, conns) = h2c_server(None).await;
        let target = target(addr);
        let sends = (0..50).map(|i| {
            let target = target.clone();
            async move { text(send(&target, get(addr, &format!("/r{i}"))).await.unwrap()).await }
        });
        let answers = futures::future::join_all(sends).await;
        assert!(
            answers.iter().all(|a| a.starts_with("HTTP/2.0 /r")),
            "{answers:?}"
        );
        assert_eq!(conns.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_replaced() {
        let (addr, conns) = h2c_server(Some(Duration::from_millis(200))).await;
        let target = target(addr);
        assert!(text(send(&target, get(addr, "/a")).await.unwrap())
            .await
            .starts_with("HTTP/2.0"));
        // The server closes that connection after 200 ms.
        tokio::time::sleep(Duration::from_millis(400)).await;
        assert!(text(send(&target, get(addr, "/b")).await.unwrap())
            .await
            .starts_with("HTTP/2.0"));
        assert_eq!(conns.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn nothing_listening_is_a_connect_error() {
        let addr = junction_testkit::closed_port().await;
        let target = target(addr);
        let err = send(&target, get(addr, "/")).await.unwrap_err();
        assert!(err.is_connect(), "{err}");
    }
}
