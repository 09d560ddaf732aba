//! Test helpers: a fake upstream HTTP server on 127.0.0.1 port 0 whose status,
//! latency and failure mode a test can change while it runs, and which records
//! every request it sees; an origin whose answers a test computes from each
//! request ([`ScriptedOrigin`]); and a TCP forwarder a test can cut ([`TcpGate`]).

mod gate;
mod kafka;
mod scripted;

pub use gate::TcpGate;
pub use kafka::PrivateKafka;
pub use scripted::{Reply, ScriptedOrigin};

use axum::body::Bytes;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// What the fake upstream does with the next requests.
#[derive(Debug, Clone)]
pub enum Behavior {
    /// Answer 200 with the given body (JSON content type).
    Ok(String),
    /// Answer this status (with optional Retry-After seconds) for the next `times` calls, then `Ok`.
    FailTimes {
        status: u16,
        times: u64,
        retry_after: Option<u64>,
    },
    /// Always answer this status.
    Status(u16),
    /// Wait this long, then answer 200.
    Slow(Duration),
    /// Never answer (until the client gives up).
    Hang,
    /// Answer 200 at once, then send the body one byte per interval, for an hour.
    Trickle(Duration),
    /// Answer 200 with a body of this many bytes (`x`), streamed in 64 KiB chunks.
    Large(usize),
}

/// One request the fake upstream received.
#[derive(Debug, Clone)]
pub struct Seen {
    /// Method.
    pub method: Method,
    /// Path and query.
    pub uri: String,
    /// HTTP version it came over (the server speaks HTTP/1.1 and h2c).
    pub version: axum::http::Version,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
    /// When it arrived.
    pub at: Instant,
}

struct Shared {
    behavior: Mutex<Behavior>,
    failures_left: AtomicU64,
    calls: AtomicU64,
    seen: Mutex<Vec<Seen>>,
    extra_headers: Mutex<Vec<(String, String)>>,
}

/// A fake upstream server. Dropping it stops the server.
pub struct FakeUpstream {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeUpstream {
    /// Starts a server answering 200 `{"ok":true}`.
    pub async fn start() -> Self {
        Self::with(Behavior::Ok(r#"{"ok":true}"#.into())).await
    }

    /// Starts a server with the given behaviour.
    pub async fn with(behavior: Behavior) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            failures_left: AtomicU64::new(0),
            behavior: Mutex::new(Behavior::Ok(String::new())),
            calls: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
            extra_headers: Mutex::new(Vec::new()),
        });
        let up = Self {
            addr,
            shared: shared.clone(),
            task: tokio::spawn(async move {
                let app = Router::new().fallback(handle).with_state(shared);
                let _ = axum::serve(listener, app).await;
            }),
        };
        up.set(behavior);
        up
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Changes what the server does from now on.
    pub fn set(&self, behavior: Behavior) {
        if let Behavior::FailTimes { times, .. } = &behavior {
            self.shared.failures_left.store(*times, Ordering::SeqCst);
        }
        *self.shared.behavior.lock() = behavior;
    }

    /// Adds a header to every response (e.g. Cache-Control).
    pub fn add_response_header(&self, name: &str, value: &str) {
        self.shared
            .extra_headers
            .lock()
            .push((name.into(), value.into()));
    }

    /// Requests received so far.
    pub fn calls(&self) -> u64 {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// Every request received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().clone()
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn handle(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    shared.calls.fetch_add(1, Ordering::SeqCst);
    shared.seen.lock().push(Seen {
        method: parts.method.clone(),
        uri: parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned(),
        version: parts.version,
        headers: parts.headers.clone(),
        body,
        at: Instant::now(),
    });
    let behavior = shared.behavior.lock().clone();
    let mut resp = match behavior {
        Behavior::Ok(body) => json(StatusCode::OK, body),
        Behavior::Status(s) => json(
            StatusCode::from_u16(s).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            r#"{"error":"configured"}"#.into(),
        ),
        Behavior::FailTimes {
            status,
            retry_after,
            ..
        } => {
            let left = shared
                .failures_left
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1));
            if left.is_ok() {
                let mut r = json(
                    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
                    r#"{"error":"injected"}"#.into(),
                );
                if let Some(secs) = retry_after {
                    r.headers_mut()
                        .insert("retry-after", HeaderValue::from(secs));
                }
                r
            } else {
                json(StatusCode::OK, r#"{"ok":true}"#.into())
            }
        }
        Behavior::Slow(d) => {
            tokio::time::sleep(d).await;
            json(StatusCode::OK, r#"{"ok":true,"slow":true}"#.into())
        }
        Behavior::Hang => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            json(StatusCode::OK, String::new())
        }
        Behavior::Trickle(every) => {
            let bytes = futures::stream::unfold(0u64, move |sent| async move {
                if sent > 0 {
                    tokio::time::sleep(every).await;
                }
                (every * sent as u32 <= Duration::from_secs(3600))
                    .then(|| (Ok::<_, std::io::Error>(Bytes::from_static(b"x")), sent + 1))
            });
            Response::new(axum::body::Body::from_stream(bytes))
        }
        Behavior::Large(n) => {
            const CHUNK: usize = 64 * 1024;
            let bytes = futures::stream::unfold(n, |left| async move {
                (left > 0).then(|| {
                    let now = left.min(CHUNK);
                    (
                        Ok::<_, std::io::Error>(Bytes::from(vec![b'x'; now])),
                        left - now,
                    )
                })
            });
            let mut r = Response::new(axum::body::Body::from_stream(bytes));
            r.headers_mut()
                .insert("content-length", HeaderValue::from(n as u64));
            r
        }
    };
    for (k, v) in shared.extra_headers.lock().iter() {
        if let (Ok(name), Ok(value)) = (
            axum::http::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            resp.headers_mut().insert(name, value);
        }
    }
    resp
}

fn json(status: StatusCode, body: String) -> Response {
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response()
}

/// A TCP port on 127.0.0.1 with nothing listening (bound, never listening, kept).
pub async fn closed_port() -> SocketAddr {
    // Bound but never listening: a connection is refused, and the port stays
    // taken for the whole test process, so no other test's server can get it.
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind("127.0.0.1:0".parse().expect("address"))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    std::mem::forget(socket);
    addr
}
