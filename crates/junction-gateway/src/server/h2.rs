//! Bounds on HTTP/2 connections that hyper does not give.
//!
//! HTTP/1 connections are bounded by hyper's `header_read_timeout` (it covers an
//! idle keep-alive connection too) and by the write timeout on the socket. An
//! HTTP/2 connection escapes both in two ways: it may stay open with no stream
//! at all forever, and a client may read the socket (so no write ever stalls)
//! while never granting flow-control window to a response, which then holds its
//! upstream connection and body without end. So on an HTTP/2 connection every
//! response body reports where it waits ([`StreamClock`]), and the connection's
//! task ([`drive`]) closes it when:
//! - no stream has been open for `header_read_timeout` (like an idle HTTP/1
//!   keep-alive connection), or
//! - a response has waited on the client for `write_timeout`. hyper hands each
//!   data frame to h2, which holds it until the client's window lets it out,
//!   and asks the body for the next frame only once it is out; so a frame
//!   handed over and no next request for `write_timeout` is a client that does
//!   not let it through (as is a body never asked for its first frame). Frames
//!   are handed over in pieces of at most [`PIECE`] bytes, so a slow client that
//!   keeps reading is never mistaken for a stalled one, and a stream that ended
//!   leaves at most that much behind in h2. A response waiting on its upstream
//!   (the body answered `Pending`) is not the client's fault and is left alone
//!   (`body_timeout` bounds it).
//!
//! Like nginx's `send_timeout`, a stall closes the whole connection (hyper gives
//! no handle to reset one stream from outside its body), and so does idleness.
//! Only HTTP/2 connections pay for this (a clock read per data frame, one
//! allocation per response); HTTP/1 requests are served as before, and a
//! connection not recognised as HTTP/2 is served as HTTP/1 only.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use http_body_util::BodyExt;
use parking_lot::Mutex;

use super::ConnectionLimits;
use crate::body::{Body, BoxError};

/// `waiting_since` of a stream that is not waiting on its client.
const NOT_WAITING: u64 = u64::MAX;
/// Largest data frame handed to h2 at once (h2's own default frame size).
pub(super) const PIECE: usize = 16 << 10;

/// The open streams of one HTTP/2 connection.
#[derive(Debug)]
pub(super) struct H2Conn {
    started: Instant,
    streams: Mutex<Vec<Arc<StreamClock>>>,
    /// When the last stream ended (ms since `started`).
    last_active: AtomicU64,
}

/// Where one response waits.
#[derive(Debug)]
pub(super) struct StreamClock {
    /// Since when (ms since the connection started) the response has waited for
    /// the client to take its next frame; [`NOT_WAITING`] otherwise.
    waiting_since: AtomicU64,
}

impl H2Conn {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            started: Instant::now(),
            streams: Mutex::new(Vec::new()),
            last_active: AtomicU64::new(0),
        })
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    /// A request arrived: its stream is open until its response body is dropped.
    pub fn open(self: &Arc<Self>) -> StreamGuard {
        let clock = Arc::new(StreamClock {
            waiting_since: AtomicU64::new(NOT_WAITING),
        });
        self.streams.lock().push(Arc::clone(&clock));
        StreamGuard {
            conn: Arc::clone(self),
            clock,
        }
    }

    /// Why the connection should be closed now, if it should.
    pub fn verdict(&self, limits: &ConnectionLimits) -> Option<&'static str> {
        let now = self.now_ms();
        let streams = self.streams.lock();
        if streams.is_empty() {
            let idle = now.saturating_sub(self.last_active.load(Ordering::Acquire));
            return (idle >= limits.header_read_timeout.as_millis() as u64)
                .then_some("idle HTTP/2 connection");
        }
        let stall = limits.write_timeout.as_millis() as u64;
        streams
            .iter()
            .any(|s| {
                let since = s.waiting_since.load(Ordering::Acquire);
                since != NOT_WAITING && now.saturating_sub(since) >= stall
            })
            .then_some("a response waited on the client's flow-control window past write_timeout")
    }
}

/// One open stream; dropped with its response body (or its request, if no
/// response was made).
pub(super) struct StreamGuard {
    conn: Arc<H2Conn>,
    clock: Arc<StreamClock>,
}

impl StreamGuard {
    fn waiting(&self, yes: bool) {
        let at = if yes { self.conn.now_ms() } else { NOT_WAITING };
        self.clock.waiting_since.store(at, Ordering::Release);
    }

    /// `body` reporting where it waits; it waits on the client until first polled.
    pub fn watch(self, body: Body) -> Body {
        self.waiting(true);
        Watched {
            inner: body,
            rest: Bytes::new(),
            guard: self,
        }
        .boxed()
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let now = self.conn.now_ms();
        let mut streams = self.conn.streams.lock();
        streams.retain(|s| !Arc::ptr_eq(s, &self.clock));
        self.conn.last_active.store(now, Ordering::Release);
    }
}

/// A response body on an HTTP/2 stream.
struct Watched {
    inner: Body,
    /// What is left of a data frame larger than [`PIECE`].
    rest: Bytes,
    guard: StreamGuard,
}

impl HttpBody for Watched {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = if this.rest.is_empty() {
            match Pin::new(&mut this.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => Poll::Ready(Some(Ok(match frame.into_data() {
                    Ok(mut data) if data.len() > PIECE => {
                        this.rest = data.split_off(PIECE);
                        Frame::data(data)
                    }
                    Ok(data) => Frame::data(data),
                    Err(frame) => frame,
                }))),
                other => other,
            }
        } else {
            let piece = this.rest.split_to(this.rest.len().min(PIECE));
            Poll::Ready(Some(Ok(Frame::data(piece))))
        };
        // A frame handed over waits for the client to take it (hyper asks for the
        // next only once it is out); `Pending` waits on the upstream.
        this.guard
            .waiting(matches!(polled, Poll::Ready(Some(Ok(_)))));
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        let rest = self.rest.len() as u64;
        // The upper bound first: a lower one above it would be refused.
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper + rest);
        }
        hint.set_lower(hint.lower() + rest);
        hint
    }
}

/// Serves `conn` to its end; on an HTTP/2 connection (`h2`), closes it when
/// [`H2Conn::verdict`] says so.
pub(super) async fn drive<E: std::fmt::Display>(
    conn: impl Future<Output = Result<(), E>>,
    h2: Option<Arc<H2Conn>>,
    limits: ConnectionLimits,
    peer: std::net::SocketAddr,
) {
    let ended = |res: Result<(), E>| {
        if let Err(e) = res {
            tracing::debug!(error = %e, %peer, "connection ended with an error");
        }
    };
    let Some(h2) = h2 else {
        return ended(conn.await);
    };
    tokio::pin!(conn);
    let period =
        (limits.header_read_timeout.min(limits.write_timeout) / 4).max(Duration::from_millis(100));
    let mut tick = tokio::time::interval(period);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            res = &mut conn => return ended(res),
            _ = tick.tick() => {
                if let Some(why) = h2.verdict(&limits) {
                    tracing::debug!(%peer, why, "closing the connection");
                    return;
                }
            }
        }
    }
}

/// Whether a plain-text connection starts with the HTTP/2 preface (prior
/// knowledge, h2c), read without consuming it.
pub(super) async fn speaks_h2(stream: &tokio::net::TcpStream) -> std::io::Result<bool> {
    const PREFACE: &[u8] = b"PRI * HTTP/2.0";
    let mut buf = [0u8; PREFACE.len()];
    // A prefix of the preface so far: wait for the rest (peek returns at once
    // while anything is unread), for half a second at most from the first
    // bytes. A deadline, not a count of naps: on a busy machine each nap
    // overshoots, and what arrives after the half second must not count.
    let mut deadline = None;
    loop {
        let n = stream.peek(&mut buf).await?;
        if n == 0 || n >= PREFACE.len() || !PREFACE.starts_with(&buf[..n]) {
            return Ok(n >= PREFACE.len() && buf == *PREFACE);
        }
        let deadline = *deadline
            .get_or_insert_with(|| tokio::time::Instant::now() + Duration::from_millis(500));
        tokio::time::sleep(Duration::from_millis(5)).await;
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Full;

    fn limits() -> ConnectionLimits {
        ConnectionLimits {
            header_read_timeout: Duration::from_millis(40),
            max_header_bytes: 8192,
            max_connections: 10,
            write_timeout: Duration::from_millis(40),
        }
    }

    fn body() -> Body {
        Full::new(Bytes::from_static(b"hello"))
            .map_err(|e| match e {})
            .boxed()
    }

    #[tokio::test]
    async fn an_unread_response_and_an_idle_connection_are_closed_but_a_busy_upstream_is_not() {
        let conn = H2Conn::new();
        let limits = limits();
        // A request whose upstream is still working: not the client's fault.
        let guard = conn.open();
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(conn.verdict(&limits), None);
        // Its response is never asked for (no window): the client's.
        let mut watched = guard.watch(body());
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert!(conn.verdict(&limits).unwrap().contains("flow-control"));
        // Asked for and finished: nothing waits any more.
        while let Some(frame) = watched.frame().await {
            frame.unwrap();
        }
        drop(watched);
        assert_eq!(conn.verdict(&limits), None, "just ended: not idle yet");
        tokio::time::sleep(Duration::from_millis(60)).await;
        assert_eq!(conn.verdict(&limits), Some("idle HTTP/2 connection"));
    }

    #[tokio::test]
    async fn large_frames_are_handed_over_in_pieces() {
        let conn = H2Conn::new();
        let big = Bytes::from(vec![7u8; 2 * PIECE + 5]);
        let mut watched = conn
            .open()
            .watch(Full::new(big.clone()).map_err(|e| match e {}).boxed());
        assert_eq!(watched.size_hint().exact(), Some(big.len() as u64));
        let mut pieces = Vec::new();
        while let Some(frame) = watched.frame().await {
            pieces.push(frame.unwrap().into_data().unwrap());
            assert_eq!(
                watched.size_hint().lower() as usize,
                big.len() - pieces.iter().map(Bytes::len).sum::<usize>()
            );
        }
        assert_eq!(
            pieces.iter().map(Bytes::len).collect::<Vec<_>>(),
            [PIECE, PIECE, 5]
        );
        assert_eq!(pieces.concat(), big);
        assert!(watched.is_end_stream());
    }

    #[tokio::test]
    async fn the_preface_is_recognised_without_being_consumed() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        for (sent, h2) in [
            (&b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"[..], true),
            (&b"GET / HTTP/1.1\r\nhost: x\r\n\r\n"[..], false),
            (&b"PR"[..], false),
        ] {
            let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
            let (mut server, _) = listener.accept().await.unwrap();
            client.write_all(sent).await.unwrap();
            if sent.len() < 4 {
                client.shutdown().await.unwrap();
            }
            assert_eq!(speaks_h2(&server).await.unwrap(), h2);
            let mut all = vec![0u8; sent.len()];
            server.read_exact(&mut all).await.unwrap();
            assert_eq!(all, sent, "nothing consumed");
        }
    }
}
