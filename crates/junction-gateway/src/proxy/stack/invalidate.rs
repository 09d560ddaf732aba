//! Invalidation after writes: once a write is answered, what it made stale
//! is dropped before the client hears back, so its next read is fresh.
//!
//! Two rules, both here so that every way a write is answered (forwarded,
//! run once per idempotency key, accepted onto a queue) gets them:
//! - RFC 9111 §4.4: an unsafe request answered 2xx/3xx drops the stored
//!   variants of its URI and of the answer's same-host `Location` /
//!   `Content-Location` (see [`cached::invalidate`]), when some route caches;
//! - the route's `invalidate:` tags are dropped once the upstream answered
//!   the request 2xx (whatever the client then gets: a projection that
//!   failed, a 304), so not after a replayed idempotent answer, and not for
//!   a read its own cache serves.

use crate::body::Body;
use crate::problem::GatewayError;
use crate::proxy::cached::{self, invalidate::is_unsafe};
use crate::proxy::call::Call;
use futures::future::BoxFuture;
use http::{header, Method, Response};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Adds invalidation after writes to a route's stack.
#[derive(Clone)]
pub struct InvalidateLayer {
    /// Some route caches: unsafe requests drop their URI's stored variants.
    any_cached: bool,
    /// The route's tag templates.
    tags: Arc<[String]>,
    /// The route answers GET/HEAD from its cache (those reads drop no tags).
    reads_cached: bool,
}

impl InvalidateLayer {
    /// The layer, or `None` when there is nothing a write could make stale.
    pub fn new(any_cached: bool, tags: Vec<String>, reads_cached: bool) -> Option<Self> {
        (any_cached || !tags.is_empty()).then(|| Self {
            any_cached,
            tags: tags.into(),
            reads_cached,
        })
    }
}

impl<S> Layer<S> for InvalidateLayer {
    type Service = Invalidate<S>;

    fn layer(&self, inner: S) -> Invalidate<S> {
        Invalidate {
            inner,
            rules: self.clone(),
        }
    }
}

/// A service whose successful writes invalidate what they changed.
#[derive(Clone)]
pub struct Invalidate<S> {
    inner: S,
    rules: InvalidateLayer,
}

impl<S> Service<Call> for Invalidate<S>
where
    S: Service<Call, Response = Response<Body>, Error = GatewayError>,
    S::Future: Send + 'static,
{
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = BoxFuture<'static, Result<Response<Body>, GatewayError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let method = &call.head.method;
        let cached_read = self.rules.reads_cached && matches!(*method, Method::GET | Method::HEAD);
        let tags = (!self.rules.tags.is_empty() && !cached_read).then(|| self.rules.tags.clone());
        // The URI (and Host) of an unsafe request, to invalidate once it is answered.
        let written = (self.rules.any_cached && is_unsafe(method)).then(|| {
            let host = call
                .head
                .headers
                .get(header::HOST)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .or_else(|| call.head.uri.authority().map(|a| a.to_string()));
            (call.head.uri.clone(), host)
        });
        let cx = call.cx.clone();
        let answered = self.inner.call(call);
        Box::pin(async move {
            let resp = answered.await?;
            if let Some(tags) = tags {
                if cx.upstream_succeeded() {
                    cx.gw
                        .invalidate_tags(&cached::render_tags(&tags, &cx.params))
                        .await;
                }
            }
            if let Some((uri, host)) = written {
                cached::invalidate::after_write(
                    &cx.gw,
                    &uri,
                    host.as_deref(),
                    resp.status(),
                    resp.headers(),
                )
                .await;
            }
            Ok(resp)
        })
    }
}
