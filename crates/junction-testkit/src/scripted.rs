//! An origin whose every answer a test computes from the request: for protocol
//! behaviour (caching headers, validators, `Vary`) that fixed behaviours cannot
//! express.

use crate::Seen;
use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use axum::Router;
use parking_lot::Mutex;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;

/// One answer of a [`ScriptedOrigin`].
#[derive(Debug, Clone, Default)]
pub struct Reply {
    /// Status code (200 when left at 0).
    pub status: u16,
    /// Response headers, in order; repeated names give several lines.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: String,
}

impl Reply {
    /// A 200 with `body` and the given headers.
    pub fn ok(body: impl Into<String>, headers: &[(&str, &str)]) -> Self {
        Self::status(200, body, headers)
    }

    /// A reply with `status`, `body` and the given headers.
    pub fn status(status: u16, body: impl Into<String>, headers: &[(&str, &str)]) -> Self {
        Self {
            status,
            headers: headers
                .iter()
                .map(|(n, v)| ((*n).to_owned(), (*v).to_owned()))
                .collect(),
            body: body.into(),
        }
    }
}

type Script = dyn Fn(&Seen, u64) -> Reply + Send + Sync;

struct Shared {
    script: Box<Script>,
    calls: AtomicU64,
    seen: Mutex<Vec<Seen>>,
}

/// A server on 127.0.0.1 port 0 answering each request with `script(request,
/// call number from 1)`. Dropping it stops the server.
pub struct ScriptedOrigin {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl ScriptedOrigin {
    /// Starts the server.
    pub async fn start(script: impl Fn(&Seen, u64) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = listener.local_addr().expect("local addr");
        let shared = Arc::new(Shared {
            script: Box::new(script),
            calls: AtomicU64::new(0),
            seen: Mutex::new(Vec::new()),
        });
        let state = shared.clone();
        let task = tokio::spawn(async move {
            let app = Router::new().fallback(answer).with_state(state);
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, shared, task }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Requests answered so far.
    pub fn calls(&self) -> u64 {
        self.shared.calls.load(Ordering::SeqCst)
    }

    /// Every request received, in order.
    pub fn seen(&self) -> Vec<Seen> {
        self.shared.seen.lock().clone()
    }
}

impl Drop for ScriptedOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(State(shared): State<Arc<Shared>>, req: Request) -> Response {
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_else(|_| Bytes::new());
    let seen = Seen {
        method: parts.method,
        uri: parts.uri.to_string(),
        version: parts.version,
        headers: parts.headers,
        body,
        at: Instant::now(),
    };
    let n = shared.calls.fetch_add(1, Ordering::SeqCst) + 1;
    let reply = (shared.script)(&seen, n);
    shared.seen.lock().push(seen);
    let mut resp = Response::new(Body::from(reply.body));
    *resp.status_mut() = StatusCode::from_u16(reply.status.max(100)).unwrap_or(StatusCode::OK);
    if reply.status == 0 {
        *resp.status_mut() = StatusCode::OK;
    }
    for (name, value) in reply.headers {
        if let (Ok(n), Ok(v)) = (
            HeaderName::from_bytes(name.as_bytes()),
            HeaderValue::from_str(&value),
        ) {
            resp.headers_mut().append(n, v);
        }
    }
    resp
}
