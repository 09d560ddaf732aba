//! The bottom of a sync route's stack: the request as the upstream sees it,
//! sent with the upstream's own protections (retry → bulkhead → breaker →
//! timeout → transport, in [`Upstream::call`]).

use crate::body::BoxError;
use crate::problem::GatewayError;
use crate::proxy::call::{Answer, Call, CallBody};
use crate::proxy::client_body::WatchedBody;
use crate::proxy::http_util::{
    body_error, is_idempotent, upstream_headers, upstream_path_and_query,
};
use crate::proxy::upstream::{CallOptions, RequestBody, Upstream};
use bytes::Bytes;
use futures::future::BoxFuture;
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::Service;

/// Request bodies up to this size are buffered so that a retry can send them again.
const REPLAY_CAP: u64 = 64 * 1024;

/// A route's upstream, with what the route decides about calling it.
#[derive(Clone)]
pub struct UpstreamService {
    upstream: Arc<Upstream>,
    /// The route's upstream path template, when it differs from the request path.
    path: Option<Arc<str>>,
    /// Retries allowed for POST/PATCH too.
    retry_non_idempotent: bool,
}

impl UpstreamService {
    /// The upstream's name.
    pub fn name(&self) -> &str {
        self.upstream.name()
    }

    /// Calls `upstream` for a route.
    pub fn new(upstream: Arc<Upstream>, path: Option<&str>, retry_non_idempotent: bool) -> Self {
        Self {
            upstream,
            path: path.map(Into::into),
            retry_non_idempotent,
        }
    }
}

impl Service<Call> for UpstreamService {
    type Response = Answer;
    type Error = GatewayError;
    type Future = BoxFuture<'static, Result<Answer, GatewayError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        // Readiness is decided per attempt (bulkhead, breaker) so the refusal names the upstream.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let this = self.clone();
        Box::pin(async move {
            let Call { head, body, cx } = call;
            let max_body = cx.gw.max_body;
            let retry_allowed = is_idempotent(&head.method) || this.retry_non_idempotent;
            let body = match body {
                CallBody::Client(body) => read_body(body, max_body, retry_allowed).await?,
                CallBody::Ready(body) => body,
            };
            let path = upstream_path_and_query(this.path.as_deref(), &cx.params, &head.uri);
            let uri = this.upstream.uri_for(&path)?;
            let headers = upstream_headers(&head.headers, &cx.peer_ip);
            let opts = CallOptions {
                retry_allowed,
                body_limit: max_body,
            };
            let called = this
                .upstream
                .call(head.method, uri, headers, body, opts)
                .await;
            match called {
                Ok((resp, attempts)) => {
                    cx.set_attempts(attempts);
                    if resp.status().is_success() {
                        cx.mark_upstream_succeeded();
                    }
                    Ok(Answer::Streamed(resp))
                }
                Err(e) => {
                    cx.set_attempts(cx.attempts().max(1));
                    Err(e)
                }
            }
        })
    }
}

/// Applies the body limit and decides whether the body is buffered for replay.
async fn read_body(
    body: crate::proxy::tap::ClientBody,
    max: u64,
    may_retry: bool,
) -> Result<RequestBody, GatewayError> {
    let hint = body.size_hint();
    if hint.lower() > max {
        return Err(GatewayError::BodyTooLarge { limit: max });
    }
    if hint.exact() == Some(0) {
        return Ok(RequestBody::Replayable(Bytes::new()));
    }
    let fits_replay = hint.upper().is_some_and(|u| u <= REPLAY_CAP.min(max));
    let limited = Limited::new(body, max as usize);
    if may_retry && fits_replay {
        let bytes = limited
            .collect()
            .await
            .map_err(|e| body_error(e, max))?
            .to_bytes();
        return Ok(RequestBody::Replayable(bytes));
    }
    let (body, watch) = WatchedBody::wrap(limited.map_err(BoxError::from).boxed());
    Ok(RequestBody::Once(body, watch))
}
