//! A client's streamed request body, watched so a failed upstream call can be
//! blamed on the right party.
//!
//! Why it exists: a request body streams from the client to the upstream while
//! the attempt runs. When the attempt then fails, the cause may be the
//! client's (malformed chunked framing, a body over `limits.max_body`, a client
//! that hung up or trickles its upload past the timeout), and a client's fault
//! must never open a healthy upstream's breaker, spend its retry budget or
//! count toward its failures. [`WatchedBody`] records what the client did;
//! [`BodyWatch::fault`] reads it after the attempt.
//!
//! What it promises: a fault is reported only for what the client's stream
//! itself did — an error it yielded, or (for a timed-out attempt) the stream
//! still waiting on the client rather than on the upstream to read.

use crate::body::{is_length_limit, Body, BoxError};
use bytes::Bytes;
use http_body::{Body as HttpBody, Frame, SizeHint};
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

const STREAMING: u8 = 0;
const WAITING_ON_CLIENT: u8 = 1;
const FINISHED: u8 = 2;
const TOO_LARGE: u8 = 3;
const BROKEN: u8 = 4;

/// What the client did wrong with its request body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientFault {
    /// More than `limits.max_body`.
    TooLarge,
    /// Bad framing, or the client went away mid-body.
    Broken,
    /// The upload was still waiting on the client when the attempt timed out.
    TooSlow,
}

/// Shared record of a watched body's progress.
#[derive(Debug, Default)]
pub struct BodyWatch {
    state: AtomicU8,
}

impl BodyWatch {
    /// The client's fault, if its body explains a failed attempt;
    /// `timed_out` says the attempt ran out of time.
    pub fn fault(&self, timed_out: bool) -> Option<ClientFault> {
        match self.state.load(Ordering::Acquire) {
            TOO_LARGE => Some(ClientFault::TooLarge),
            BROKEN => Some(ClientFault::Broken),
            WAITING_ON_CLIENT if timed_out => Some(ClientFault::TooSlow),
            _ => None,
        }
    }

    fn set(&self, state: u8) {
        self.state.store(state, Ordering::Release);
    }
}

/// The client's body with a [`BodyWatch`] kept up to date.
pub struct WatchedBody {
    inner: Body,
    watch: Arc<BodyWatch>,
}

impl WatchedBody {
    /// Wraps `inner`; the returned watch reads what happened to it.
    pub fn wrap(inner: Body) -> (Body, Arc<BodyWatch>) {
        let watch = Arc::new(BodyWatch::default());
        let body = WatchedBody {
            inner,
            watch: watch.clone(),
        };
        (Body::new(body), watch)
    }
}

impl HttpBody for WatchedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        let state = match &polled {
            Poll::Pending => WAITING_ON_CLIENT,
            Poll::Ready(None) => FINISHED,
            Poll::Ready(Some(Ok(_))) => STREAMING,
            Poll::Ready(Some(Err(e))) if is_length_limit(e.as_ref()) => TOO_LARGE,
            Poll::Ready(Some(Err(_))) => BROKEN,
        };
        self.watch.set(state);
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    fn stream(items: Vec<Result<&'static str, BoxError>>) -> Body {
        let frames = futures::stream::iter(
            items
                .into_iter()
                .map(|r| r.map(|s| Frame::data(Bytes::from_static(s.as_bytes())))),
        );
        StreamBody::new(frames).boxed()
    }

    #[tokio::test]
    async fn a_finished_body_is_no_fault() {
        let (body, watch) = WatchedBody::wrap(stream(vec![Ok("a"), Ok("b")]));
        assert_eq!(body.collect().await.expect("ok").to_bytes(), "ab");
        assert_eq!(watch.fault(true), None);
    }

    #[tokio::test]
    async fn errors_are_the_clients() {
        let (body, watch) = WatchedBody::wrap(stream(vec![Ok("a"), Err("bad chunk size".into())]));
        assert!(body.collect().await.is_err());
        assert_eq!(watch.fault(false), Some(ClientFault::Broken));
        let limited = http_body_util::Limited::new(stream(vec![Ok("abcdef")]), 3)
            .map_err(BoxError::from)
            .boxed();
        let (body, watch) = WatchedBody::wrap(limited);
        assert!(body.collect().await.is_err());
        assert_eq!(watch.fault(false), Some(ClientFault::TooLarge));
    }

    #[tokio::test]
    async fn waiting_on_the_client_is_slow_only_when_the_attempt_timed_out() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let (mut body, watch) = WatchedBody::wrap(StreamBody::new(tokio_stream_from(rx)).boxed());
        let pending = futures::poll!(body.frame());
        assert!(pending.is_pending());
        assert_eq!(watch.fault(false), None);
        assert_eq!(watch.fault(true), Some(ClientFault::TooSlow));
        drop(tx);
    }

    fn tokio_stream_from(
        mut rx: tokio::sync::mpsc::Receiver<Result<Frame<Bytes>, BoxError>>,
    ) -> impl futures::Stream<Item = Result<Frame<Bytes>, BoxError>> {
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
    }
}
