//! Forwarding a sync route's request to its upstream and streaming the answer back.

use super::client_body::WatchedBody;
use super::http_util::{
    body_error, is_idempotent, upstream_headers, upstream_path_and_query, IDEMPOTENCY_KEY,
};
use super::trim::{requested_fields, shape_streamed, Shaped};
use super::upstream::{CallOptions, RequestBody, Upstream};
use super::{cached, idempotent};
use super::{Exchange, Gateway, Outcome, Route};
use crate::body::{Body, BoxError};
use crate::problem::GatewayError;
use bytes::Bytes;
use http::{Method, Request, Response};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;

/// Request bodies up to this size are buffered so that a retry can send them again.
const REPLAY_CAP: u64 = 64 * 1024;

/// Serves a sync route: from the cache when the route has one, else by calling
/// `upstream` with its policies, then invalidates tags and shapes the answer.
pub async fn forward(
    gw: &Arc<Gateway>,
    route: &Arc<Route>,
    upstream: &Arc<Upstream>,
    params: &[(String, String)],
    req: Request<Incoming>,
    peer: SocketAddr,
    outcome: &mut Outcome,
) -> Result<Response<Body>, GatewayError> {
    let shaped = Shaped {
        fields: requested_fields(req.uri().query(), route.fields.as_ref())?,
        bytes_in: route.traffic.bytes_in.clone(),
        bytes_out: route.traffic.bytes_out.clone(),
    };
    let exchange = Exchange {
        gw,
        route,
        upstream,
        params,
        peer,
        shaped: &shaped,
    };
    if let Some(cache) = &route.cache {
        if matches!(*req.method(), Method::GET | Method::HEAD) {
            return cached::serve(&exchange, cache, req, outcome).await;
        }
    }
    if let Some(idem) = &route.idempotency {
        if req.headers().contains_key(IDEMPOTENCY_KEY) {
            return idempotent::serve(&exchange, idem, req, outcome).await;
        }
    }
    outcome.upstream = Some(upstream.name().to_string());
    let (parts, body) = req.into_parts();
    let retry_allowed = is_idempotent(&parts.method) || route.retry_non_idempotent;
    let body = read_body(body, gw.max_body, retry_allowed).await?;
    let uri = upstream.uri_for(&upstream_path_and_query(route, params, &parts.uri))?;
    let headers = upstream_headers(&parts.headers, peer);
    let opts = CallOptions {
        retry_allowed,
        body_limit: gw.max_body,
    };
    let (resp, attempts) = upstream
        .call(parts.method.clone(), uri, headers, body, opts)
        .await
        .inspect_err(|_| {
            outcome.attempts = outcome.attempts.max(1);
        })?;
    outcome.attempts = attempts;
    if resp.status().is_success() && !route.invalidate.is_empty() {
        gw.invalidate_tags(&cached::render_tags(&route.invalidate, params))
            .await;
    }
    Ok(shape_streamed(resp, &parts.method, &parts.headers, &shaped).await)
}

/// Applies the body limit and decides whether the body is buffered for replay.
async fn read_body(body: Incoming, max: u64, may_retry: bool) -> Result<RequestBody, GatewayError> {
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
