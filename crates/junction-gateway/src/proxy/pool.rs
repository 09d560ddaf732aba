//! Keep-alive HTTP/1.1 connections to plain-HTTP upstreams: one pool per thread.
//!
//! Why not `hyper_util`'s legacy `Client` (still used for HTTPS, see `tls.rs`):
//! every data-plane and delivery thread runs its own single-threaded runtime, and
//! its connections never leave it. The legacy client is built for shared use: a
//! pool behind a mutex, a race between checkout and connect for each request, and
//! a task spawned per response to put the connection back once it is ready. On
//! the delivery drain that machinery took about 9 % of Junction's CPU per
//! delivery. Here a thread's idle connections are a plain stack per upstream
//! address (last in, first out, so the warmest connection is reused), and a
//! connection goes back when the response body ends, by whoever read it
//! ([`UpstreamBody`]).
//!
//! What it keeps from a production pool: a request whose pooled connection
//! turned out closed before the request was written goes out again on a new
//! connection; idle connections are closed after [`IDLE_TIMEOUT`]; at most
//! [`MAX_IDLE`] idle connections per address and thread; connecting gives up
//! after [`CONNECT_TIMEOUT`] and tries every address a host name resolves to.

use crate::body::{Body, BoxError};
use bytes::Bytes;
use http::uri::{Authority, PathAndQuery};
use http::{header, HeaderValue, Request, Response, Uri};
use http_body::{Body as _, Frame, SizeHint};
use hyper::body::Incoming;
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::collections::HashMap;
use std::future::Future as _;
use std::pin::Pin;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;

/// How long an idle connection is kept.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle connections kept per upstream address, per thread.
pub const MAX_IDLE: usize = 1024;
/// How long establishing a TCP connection may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

thread_local! {
    /// This thread's idle connections, by `host:port`.
    static IDLE: RefCell<HashMap<Box<str>, Vec<Idle>>> = RefCell::new(HashMap::new());
}

/// An idle connection, ready for its next request.
struct Idle {
    tx: http1::SendRequest<Body>,
    since: Instant,
}

/// Where a plain-HTTP upstream is, as the pool needs it.
#[derive(Debug, Clone)]
pub struct Target {
    /// `host:port`, the pool's key (the port made explicit).
    key: Box<str>,
    host: Box<str>,
    port: u16,
    /// The `Host` header sent with each request.
    host_header: HeaderValue,
}

impl Target {
    /// `host:port`, with the port made explicit.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The target of `authority` (an `http://` upstream's, port 80 when absent).
    pub fn new(authority: &Authority) -> Self {
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let port = authority.port_u16().unwrap_or(80);
        let host_header = HeaderValue::from_str(authority.as_str())
            .expect("an authority is a valid header value");
        Self {
            key: format!("{}:{port}", authority.host()).into(),
            host: host.into(),
            port,
            host_header,
        }
    }
}

/// Why a request got no response.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// No connection could be made; nothing was sent.
    #[error("connect error: {0}")]
    Connect(String),
    /// The connection failed while the request was sent or its answer awaited.
    #[error(transparent)]
    Http(#[from] hyper::Error),
}

impl SendError {
    /// Whether no connection could be made (so nothing reached the upstream).
    pub fn is_connect(&self) -> bool {
        matches!(self, SendError::Connect(_))
    }
}

/// Sends `req` to `target` on a pooled connection (or a new one).
///
/// The URI is sent in origin form (path and query) and `Host` is set to the
/// target's authority unless the request has one.
pub async fn send(
    target: &Target,
    mut req: Request<Body>,
) -> Result<Response<UpstreamBody>, SendError> {
    let path = req
        .uri()
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *req.uri_mut() = Uri::from(path);
    req.headers_mut()
        .entry(header::HOST)
        .or_insert_with(|| target.host_header.clone());

    // Pooled connections first; one that proves closed before the request was
    // written gives the request back, and the next one (or a new one) is tried.
    while let Some(mut tx) = checkout(&target.key).await {
        match tx.try_send_request(req).await {
            Ok(resp) => return Ok(finish(target, tx, resp)),
            Err(mut e) => match e.take_message() {
                Some(back) => req = back,
                None => return Err(SendError::Http(e.into_error())),
            },
        }
    }
    let mut tx = connect(target).await?;
    let resp = tx.send_request(req).await?;
    Ok(finish(target, tx, resp))
}

/// The response, its body set to return the connection when it ends.
fn finish(
    target: &Target,
    tx: http1::SendRequest<Body>,
    resp: Response<Incoming>,
) -> Response<UpstreamBody> {
    resp.map(|inner| {
        let mut body = UpstreamBody {
            inner,
            back: Some(Checkin {
                key: target.key.clone(),
                tx,
            }),
            deadline: None,
        };
        // A body known to be empty (204, HEAD, `content-length: 0`) may never be polled.
        if body.inner.is_end_stream() {
            body.give_back();
        }
        body
    })
}

/// The newest idle connection to `key` that is still open and ready.
async fn checkout(key: &str) -> Option<http1::SendRequest<Body>> {
    loop {
        let Idle { mut tx, since } = IDLE.with(|idle| idle.borrow_mut().get_mut(key)?.pop())?;
        if tx.is_closed() || since.elapsed() > IDLE_TIMEOUT {
            continue;
        }
        // A connection is put back when its last response ended; its task marks
        // it ready right after, so this rarely waits.
        if tx.ready().await.is_ok() {
            return Some(tx);
        }
    }
}

/// Puts a connection whose exchange is over back in this thread's pool.
fn checkin(key: Box<str>, tx: http1::SendRequest<Body>) {
    if tx.is_closed() {
        return;
    }
    IDLE.with(|idle| {
        let mut idle = idle.borrow_mut();
        let stack = idle.entry(key).or_default();
        if stack.len() < MAX_IDLE {
            stack.push(Idle {
                tx,
                since: Instant::now(),
            });
        }
    });
}

/// Closes this thread's connections idle for longer than [`IDLE_TIMEOUT`] (or
/// closed by their upstream). Called periodically by each thread's runtime.
pub fn sweep() {
    let _ = IDLE.try_with(|idle| {
        let Ok(mut idle) = idle.try_borrow_mut() else {
            return;
        };
        idle.retain(|_, stack| {
            // Oldest first: keep from the first connection still fresh.
            let fresh = stack
                .iter()
                .position(|c| c.since.elapsed() <= IDLE_TIMEOUT)
                .unwrap_or(stack.len());
            stack.drain(..fresh);
            stack.retain(|c| !c.tx.is_closed());
            !stack.is_empty()
        });
    });
}

/// Opens a connection to `target`, trying each address its host resolves to.
async fn connect(target: &Target) -> Result<http1::SendRequest<Body>, SendError> {
    let stream = connect_tcp(target).await?;
    let (tx, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(tx)
}

/// A TCP connection to `target`, trying each address its host resolves to,
/// within [`CONNECT_TIMEOUT`].
pub(super) async fn connect_tcp(target: &Target) -> Result<TcpStream, SendError> {
    tokio::time::timeout(CONNECT_TIMEOUT, connect_any(target))
        .await
        .map_err(|_| {
            SendError::Connect(format!(
                "timed out after {}s connecting to {}",
                CONNECT_TIMEOUT.as_secs(),
                target.key
            ))
        })?
}

async fn connect_any(target: &Target) -> Result<TcpStream, SendError> {
    let addrs: Vec<std::net::SocketAddr> = match target.host.parse::<std::net::IpAddr>() {
        Ok(ip) => vec![(ip, target.port).into()],
        Err(_) => tokio::net::lookup_host((&*target.host, target.port))
            .await
            .map_err(|e| SendError::Connect(format!("cannot resolve {}: {e}", target.host)))?
            .collect(),
    };
    let mut last = None;
    for addr in addrs {
        match TcpStream::connect(addr).await {
            Ok(stream) => {
                // Requests are written whole; waiting to coalesce them only adds latency.
                let _ = stream.set_nodelay(true);
                return Ok(stream);
            }
            Err(e) => last = Some(format!("{addr}: {e}")),
        }
    }
    Err(SendError::Connect(last.unwrap_or_else(|| {
        format!("{} resolved to no address", target.host)
    })))
}

/// A connection on its way back to the pool.
#[derive(Debug)]
struct Checkin {
    key: Box<str>,
    tx: http1::SendRequest<Body>,
}

/// An upstream response body. On a pooled connection it puts the connection
/// back in its thread's pool once it has been read to the end; dropped before
/// that, the connection closes (its unread rest cannot be skipped). With a
/// deadline ([`UpstreamBody::with_deadline`]) it ends in [`BodyTimeout`] when
/// the upstream has not sent all of it in time.
#[derive(Debug)]
pub struct UpstreamBody {
    inner: Incoming,
    back: Option<Checkin>,
    deadline: Option<Deadline>,
}

/// How long a body may keep its reader waiting on the upstream, in total.
/// Only time spent waiting for the upstream's data counts (a client that
/// reads slowly is not the upstream's fault, and a fast download of any
/// length is fine). The timer is made only when the body first has to wait:
/// most bodies arrive with their headers.
#[derive(Debug)]
struct Deadline {
    after: Duration,
    /// Waited on the upstream so far, over the finished waits.
    waited: Duration,
    /// When the current wait began.
    since: Option<tokio::time::Instant>,
    timer: Option<Pin<Box<tokio::time::Sleep>>>,
    /// Counts the cut-off bodies (`junction_upstream_requests_total{outcome="body_timeout"}`).
    counter: prometheus_client::metrics::counter::Counter,
}

/// The upstream did not send its whole response body within `body_timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the upstream did not send the whole response body within body_timeout ({})", humantime::format_duration(*.0))]
pub struct BodyTimeout(pub Duration);

impl UpstreamBody {
    /// A body on a connection this pool does not own (HTTPS).
    pub fn unpooled(inner: Incoming) -> Self {
        Self {
            inner,
            back: None,
            deadline: None,
        }
    }

    /// This body, cut off with [`BodyTimeout`] once its reader has waited on
    /// the upstream for `after` in total; each cut is counted in `counter`.
    pub fn with_deadline(
        mut self,
        after: Duration,
        counter: prometheus_client::metrics::counter::Counter,
    ) -> Self {
        if !self.inner.is_end_stream() {
            self.deadline = Some(Deadline {
                after,
                waited: Duration::ZERO,
                since: None,
                timer: None,
                counter,
            });
        }
        self
    }

    fn give_back(&mut self) {
        if let Some(Checkin { key, tx }) = self.back.take() {
            checkin(key, tx);
        }
    }
}

impl http_body::Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        let frame = match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(d) = &mut this.deadline {
                    if let Some(since) = d.since.take() {
                        d.waited += since.elapsed();
                    }
                }
                frame
            }
            Poll::Pending => {
                let Some(d) = &mut this.deadline else {
                    return Poll::Pending;
                };
                if d.since.is_none() {
                    // A new wait: it may last what is left of the budget.
                    let now = tokio::time::Instant::now();
                    d.since = Some(now);
                    let at = now + d.after.saturating_sub(d.waited);
                    match &mut d.timer {
                        Some(timer) => timer.as_mut().reset(at),
                        None => d.timer = Some(Box::pin(tokio::time::sleep_until(at))),
                    }
                }
                let timer = d.timer.as_mut().expect("set when the wait began");
                ready!(timer.as_mut().poll(cx));
                d.counter.inc();
                let after = d.after;
                // Cut off: the connection goes with the rest of the body.
                this.deadline = None;
                this.back = None;
                return Poll::Ready(Some(Err(Box::new(BodyTimeout(after)))));
            }
        };
        match &frame {
            None => this.give_back(),
            Some(Ok(_)) if this.inner.is_end_stream() => this.give_back(),
            Some(Ok(_)) => {}
            // The connection is broken: let it go.
            Some(Err(_)) => this.back = None,
        }
        Poll::Ready(frame.map(|f| f.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl From<UpstreamBody> for Body {
    fn from(body: UpstreamBody) -> Body {
        use http_body_util::BodyExt;
        body.boxed()
    }
}

#[cfg(test)]
#[path = "pool_tests.rs"]
mod tests;
