//! Serving the data plane on a pre-bound listener, with graceful shutdown.
//!
//! Listeners are bound by the caller (the CLI, or a test on port 0), so tests
//! run many gateways in parallel without port races.
//!
//! The data plane runs thread-per-core, like nginx's workers: each thread has a
//! single-threaded Tokio runtime accepting on a clone of the listening socket
//! (connections spread evenly, see [`balance`]) and its own upstream connection pool, so a request is served start to end on
//! one thread with no cross-thread wake-ups (measured: the largest cost of a
//! proxied request on a small VM). Shared state (routes, breakers, metrics,
//! cache, queue) is the same `Arc`s for every thread.

pub mod admin;
pub mod balance;
mod h2;
pub mod tls;

use crate::body::{Body, BoxError};
use crate::proxy::SharedGateway;
use crate::telemetry::live::Client;
use balance::{Balance, Handoff};
use http::{Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::compression::predicate::{NotForContentType, Predicate, SizeAbove};
use tower_http::compression::CompressionBody;
use tower_http::compression::CompressionLayer;

/// What a connection over `limits.max_connections` gets before it is closed.
const OVERLOADED: &[u8] = b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 186\r\n\r\n{\"type\":\"https://junction.dev/problems/too-many-connections\",\"title\":\"Service Unavailable\",\"status\":503,\"detail\":\"the gateway has limits.max_connections connections open; retry shortly\"}";

/// How connections on the data port are bounded (`limits` in the config).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// A request head must arrive within this (an idle keep-alive connection is closed after it too).
    pub header_read_timeout: Duration,
    /// Largest request head; hyper answers 431 past it.
    pub max_header_bytes: usize,
    /// Open connections at most, over every data thread.
    pub max_connections: usize,
    /// A write that makes no progress this long ends the connection.
    pub write_timeout: Duration,
}

/// Responses smaller than this are not worth compressing.
const COMPRESS_ABOVE: u16 = 1024;

/// Data-plane threads: `JUNCTION_WORKERS`, else one per available core.
pub fn worker_count() -> usize {
    std::env::var("JUNCTION_WORKERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|n: &usize| *n > 0)
        .unwrap_or_else(|| {
            std::thread::available_parallelism()
                .map(|n| n.get())
                .unwrap_or(1)
        })
}

/// Serves the data plane on `workers` threads (each its own runtime) until
/// `shutdown`; resolves when every thread has drained and stopped.
pub async fn serve_data_threads(
    listener: TcpListener,
    gateway: SharedGateway,
    shutdown: CancellationToken,
    grace: Duration,
    workers: usize,
    limits: ConnectionLimits,
    tls: Option<Arc<tls::ListenerTls>>,
) -> std::io::Result<()> {
    let std_listener = listener.into_std()?;
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let workers = workers.max(1);
    let mut done = Vec::with_capacity(workers);
    let (balance, inboxes) = Balance::new(workers);
    for (i, inbox) in inboxes.into_iter().enumerate() {
        let socket = std_listener.try_clone()?;
        let (gateway, shutdown, balance) = (gateway.clone(), shutdown.clone(), balance.clone());
        let (open, tls) = (open.clone(), tls.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("junction-data-{i}"))
            .spawn(move || {
                let rt = crate::runtime::current_thread().expect("data-plane runtime");
                rt.block_on(async move {
                    match TcpListener::from_std(socket) {
                        Ok(listener) => {
                            let accept = Accept {
                                listener,
                                me: i,
                                balance,
                                inbox,
                            };
                            let bounds = Bounds { limits, open };
                            serve_data(accept, gateway, shutdown, grace, bounds, tls).await
                        }
                        Err(e) => {
                            tracing::error!(error = %e, "data-plane thread cannot use the listener")
                        }
                    }
                });
                // Let tasks spawned by requests (background refreshes) finish briefly.
                rt.shutdown_timeout(Duration::from_millis(100));
                let _ = tx.send(());
            })?;
        done.push(rx);
    }
    drop(std_listener);
    for rx in done {
        let _ = rx.await;
    }
    Ok(())
}

/// Where one data thread gets its connections: its clone of the listener, and
/// its inbox of connections other threads accepted for it.
struct Accept {
    listener: TcpListener,
    me: usize,
    balance: Arc<Balance>,
    inbox: tokio::sync::mpsc::UnboundedReceiver<Handoff>,
}

/// A data thread's share of the connection bounds.
struct Bounds {
    limits: ConnectionLimits,
    /// One permit per open connection, shared by every data thread.
    open: Arc<Semaphore>,
}

/// Accepts connections until `shutdown`, then lets in-flight requests finish for up to `grace`.
async fn serve_data(
    mut accept: Accept,
    gateway: SharedGateway,
    shutdown: CancellationToken,
    grace: Duration,
    bounds: Bounds,
    tls: Option<Arc<tls::ListenerTls>>,
) {
    let graceful = GracefulShutdown::new();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Slowloris defence: a head must arrive in time, and be of bounded size.
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(bounds.limits.header_read_timeout)
        .max_buf_size(bounds.limits.max_header_bytes.max(8192));
    // Compress by Accept-Encoding (gzip, br, zstd), never already-compressed types,
    // at each codec's fastest level (nginx's default is gzip level 1). The
    // libraries' default levels cost far more than a gateway should spend: a
    // brotli encoder at its default quality zeroes an 8 MiB ring buffer for
    // every response written in more than one piece (profiled in the fault
    // matrix: 32 streamed answers starting at once stalled both data threads
    // for tens of milliseconds, RELIABILITY.md).
    let predicate = SizeAbove::new(COMPRESS_ABOVE)
        .and(NotForContentType::IMAGES)
        .and(NotForContentType::GRPC)
        .and(NotForContentType::SSE)
        .and(NotForContentType::const_new("application/zip"))
        .and(NotForContentType::const_new("application/gzip"))
        .and(NotForContentType::const_new("video/"))
        .and(NotForContentType::const_new("audio/"));
    let compression = CompressionLayer::new()
        .quality(tower_http::CompressionLevel::Fastest)
        .compress_when(predicate.clone());
    let predicate = Arc::new(predicate);
    loop {
        let (stream, peer, held) = tokio::select! {
            accepted = accept.listener.accept() => match accepted {
                Ok((stream, peer)) => match accept.balance.place(accept.me, stream, peer) {
                    Some((stream, held)) => (stream, peer, held),
                    // Handed to a less loaded thread.
                    None => continue,
                },
                Err(e) => {
                    // Usually EMFILE: back off briefly instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            Some(handed) = accept.inbox.recv() => {
                let peer = handed.1;
                match accept.balance.take(accept.me, handed) {
                    Some((stream, held)) => (stream, peer, held),
                    None => continue,
                }
            }
            _ = shutdown.cancelled() => break,
        };
        let Ok(slot) = bounds.open.clone().try_acquire_owned() else {
            // Over max_connections: say so and close at once rather than hold a socket.
            let _ = stream.try_write(OVERLOADED);
            tracing::debug!(%peer, "connection refused: max_connections reached");
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = Connection {
            gateway: gateway.clone(),
            compression: compression.clone(),
            predicate: predicate.clone(),
            builder: builder.clone(),
            watcher: graceful.watcher(),
            limits: bounds.limits,
            peer,
        };
        let tls = tls.clone();
        tokio::spawn(async move {
            conn.serve(stream, tls).await;
            drop(held);
            drop(slot);
        });
    }
    drop(accept);
    tokio::select! {
        _ = graceful.shutdown() => tracing::info!("data plane drained"),
        _ = tokio::time::sleep(grace) => tracing::warn!(?grace, "grace period over; closing remaining connections"),
    }
}

/// What serving one accepted connection takes.
struct Connection<P> {
    gateway: SharedGateway,
    compression: CompressionLayer<P>,
    /// The compression layer's predicate, for the answers that skip the layer.
    predicate: Arc<P>,
    builder: auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    limits: ConnectionLimits,
    peer: std::net::SocketAddr,
}

impl<P: Predicate + Send + Sync + 'static> Connection<P> {
    /// Serves the connection to its end (TLS first when the listener has it).
    async fn serve(self, stream: tokio::net::TcpStream, tls: Option<Arc<tls::ListenerTls>>) {
        let (peer, limits) = (self.peer, self.limits);
        // A client that stops reading its response must not hold the connection.
        let timed = |stream| {
            let mut stream = tokio_io_timeout::TimeoutStream::new(stream);
            stream.set_write_timeout(Some(limits.write_timeout));
            Box::pin(stream)
        };
        let Some(tls) = tls else {
            // Which protocol decides the bounds (see `h2.rs`); nothing sent in
            // time is a slow request head.
            let h2 = match tokio::time::timeout(limits.header_read_timeout, h2::speaks_h2(&stream))
                .await
            {
                Ok(Ok(h2)) => h2,
                Ok(Err(e)) => return tracing::debug!(error = %e, %peer, "connection failed"),
                Err(_) => return tracing::debug!(%peer, "nothing sent in time"),
            };
            return self.run(timed(stream), h2).await;
        };
        // The handshake is bounded like a request head.
        match tokio::time::timeout(limits.header_read_timeout, tls.accept(timed(stream))).await {
            Ok(Ok(stream)) => {
                let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                self.run(stream, h2).await
            }
            Ok(Err(e)) => tracing::debug!(error = %e, %peer, "TLS handshake failed"),
            Err(_) => tracing::debug!(%peer, "TLS handshake not done in time"),
        }
    }

    async fn run<IO>(self, io: IO, h2: bool)
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
    {
        let h2 = h2.then(h2::H2Conn::new);
        let handler = Handler {
            gateway: self.gateway,
            client: Client::new(self.peer),
            h2: h2.clone(),
            vary_when: None,
        };
        let plain = Handler {
            vary_when: Some(self.predicate),
            ..handler.clone()
        };
        let compressed = ServiceBuilder::new()
            // Box the compressed body back into our `Body` so hyper sees one concrete type.
            .map_response(box_compressed)
            .layer(self.compression)
            .service(handler);
        let svc = Negotiate { compressed, plain };
        // Only the protocol recognised: an HTTP/2 connection that escaped
        // recognition (a preface sent too slowly, h2 without ALPN) is refused
        // rather than served without its bounds.
        let builder = if h2.is_some() {
            self.builder.http2_only()
        } else {
            self.builder.http1_only()
        };
        let conn = builder
            .serve_connection(TokioIo::new(io), TowerToHyperService::new(svc))
            .into_owned();
        h2::drive(self.watcher.watch(conn), h2, self.limits, self.peer).await
    }
}

/// What the compression layer does to an answer it does not compress for a
/// client that accepts no encoding (tower-http 0.6 `compression/future.rs`):
/// `Vary: Accept-Encoding` on an answer it would compress for one that does,
/// unless a `Vary` already names it.
fn mark_vary<P: Predicate>(resp: &mut Response<Body>, predicate: &P) {
    let h = resp.headers();
    let named = h.get_all(http::header::VARY).iter().any(|v| {
        v.as_bytes()
            .windows(b"accept-encoding".len())
            .any(|w| w.eq_ignore_ascii_case(b"accept-encoding"))
    });
    if !named
        && !h.contains_key(http::header::CONTENT_ENCODING)
        && !h.contains_key(http::header::CONTENT_RANGE)
        && predicate.should_compress(resp)
    {
        resp.headers_mut().append(
            http::header::VARY,
            http::HeaderValue::from_static("accept-encoding"),
        );
    }
}

fn box_compressed(resp: Response<CompressionBody<Body>>) -> Response<Body> {
    resp.map(|b| b.map_err(|e| -> BoxError { e }).boxed())
}

/// One connection's service: a request that names an encoding in
/// `Accept-Encoding` goes through the compression layer; one that names none
/// (most API clients) cannot be compressed, so it skips the layer's work per
/// request (parsing the header, cloning its predicate, one more body wrapper
/// and box) and only gets the `Vary: Accept-Encoding` the layer would add.
#[derive(Clone)]
struct Negotiate<C, P> {
    compressed: C,
    plain: Handler<P>,
}

impl<C, P> tower::Service<Request<Incoming>> for Negotiate<C, P>
where
    C: tower::Service<Request<Incoming>, Response = Response<Body>, Error = Infallible>,
    C::Future: Send + 'static,
    P: Predicate + Send + Sync + 'static,
{
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = futures::future::Either<
        C::Future,
        futures::future::BoxFuture<'static, Result<Response<Body>, Infallible>>,
    >;

    fn poll_ready(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        // Either may serve the next request: both must be ready.
        futures::ready!(self.compressed.poll_ready(cx))?;
        self.plain.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        if req.headers().contains_key(http::header::ACCEPT_ENCODING) {
            futures::future::Either::Left(self.compressed.call(req))
        } else {
            futures::future::Either::Right(self.plain.call(req))
        }
    }
}

/// The data plane as a `tower::Service` for one connection.
#[derive(Clone)]
struct Handler<P> {
    gateway: SharedGateway,
    client: Client,
    /// The open streams, on an HTTP/2 connection.
    h2: Option<Arc<h2::H2Conn>>,
    /// Outside the compression layer: the answers it would have marked
    /// `Vary: Accept-Encoding` (those it compresses for clients that ask).
    vary_when: Option<Arc<P>>,
}

impl<P: Predicate + Send + Sync + 'static> tower::Service<Request<Incoming>> for Handler<P> {
    type Response = Response<Body>;
    type Error = Infallible;
    type Future = futures::future::BoxFuture<'static, Result<Response<Body>, Infallible>>;

    fn poll_ready(
        &mut self,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Infallible>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: Request<Incoming>) -> Self::Future {
        // The gateway current now serves this request to the end, even if a reload swaps it.
        let gateway = self.gateway.load_full();
        let client = self.client.clone();
        let stream = self.h2.as_ref().map(h2::H2Conn::open);
        let vary_when = self.vary_when.clone();
        Box::pin(async move {
            let mut resp = gateway.handle(req, client).await;
            if let Some(predicate) = vary_when {
                mark_vary(&mut resp, predicate.as_ref());
            }
            Ok(match stream {
                Some(stream) => resp.map(|body| stream.watch(body)),
                None => resp,
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn answer(len: usize, headers: &[(&str, &str)]) -> Response<Body> {
        let mut resp = Response::new(
            Full::new(bytes::Bytes::from(vec![b'x'; len]))
                .map_err(|e| match e {})
                .boxed(),
        );
        for (k, v) in headers {
            resp.headers_mut().append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        resp
    }

    fn varies(resp: &Response<Body>) -> Vec<&str> {
        resp.headers()
            .get_all(http::header::VARY)
            .iter()
            .map(|v| v.to_str().unwrap())
            .collect()
    }

    #[test]
    fn answers_that_skip_the_compression_layer_get_its_vary_once() {
        let p = SizeAbove::new(COMPRESS_ABOVE).and(NotForContentType::IMAGES);
        let mut big = answer(4096, &[("content-type", "application/json")]);
        mark_vary(&mut big, &p);
        assert_eq!(varies(&big), ["accept-encoding"]);
        let mut small = answer(10, &[]);
        mark_vary(&mut small, &p);
        assert!(varies(&small).is_empty(), "too small to compress");
        let mut named = answer(4096, &[("vary", "Accept-Encoding, Origin")]);
        mark_vary(&mut named, &p);
        assert_eq!(varies(&named), ["Accept-Encoding, Origin"], "not twice");
        let mut encoded = answer(4096, &[("content-encoding", "gzip")]);
        mark_vary(&mut encoded, &p);
        assert!(varies(&encoded).is_empty(), "already encoded");
        let mut image = answer(4096, &[("content-type", "image/png")]);
        mark_vary(&mut image, &p);
        assert!(varies(&image).is_empty(), "never compressed");
    }
}
