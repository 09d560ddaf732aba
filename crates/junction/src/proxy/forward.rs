//! Forwarding a sync route's request to its upstream and streaming the answer back.

use super::client_body::WatchedBody;
use super::pool::UpstreamBody;
use super::trim::{requested_fields, shape_streamed, Shaped};
use super::upstream::{CallOptions, RequestBody, Upstream};
use super::{cached, idempotent};
use super::{router::render_path, Gateway, Outcome, Route};
use crate::body::{Body, BoxError};
use crate::problem::GatewayError;
use crate::telemetry::trace::next_traceparent;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response};
use http_body::Body as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use std::net::SocketAddr;
use std::sync::Arc;

/// Request bodies up to this size are buffered so that a retry can send them again.
const REPLAY_CAP: u64 = 64 * 1024;

/// Headers that describe one connection, not the message; never forwarded.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

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
    if let Some(cache) = &route.cache {
        if matches!(*req.method(), Method::GET | Method::HEAD) {
            return cached::serve(
                gw, route, cache, upstream, params, req, peer, &shaped, outcome,
            )
            .await;
        }
    }
    if let Some(idem) = &route.idempotency {
        if req.headers().contains_key(idempotent::IDEMPOTENCY_KEY) {
            return idempotent::serve(
                gw, route, idem, upstream, params, req, peer, &shaped, outcome,
            )
            .await;
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

/// The path (the route's template rendered, else the request path) and query
/// (without `fields`) to send upstream.
pub fn upstream_path_and_query(
    route: &Route,
    params: &[(String, String)],
    uri: &http::Uri,
) -> String {
    let path = match &route.upstream_path {
        Some(t) => render_path(t, params),
        None => uri.path().to_string(),
    };
    match strip_fields_param(uri.query()) {
        Some(q) => format!("{path}?{q}"),
        None => path,
    }
}

/// The query without the `fields` parameter, which Junction applies itself; `None` when empty.
pub fn strip_fields_param(query: Option<&str>) -> Option<String> {
    let q = query?;
    if !q
        .split('&')
        .any(|p| p == "fields" || p.starts_with("fields="))
    {
        return (!q.is_empty()).then(|| q.to_string());
    }
    let kept: Vec<&str> = q
        .split('&')
        .filter(|p| !(p.is_empty() || *p == "fields" || p.starts_with("fields=")))
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// Whether retrying `m` cannot repeat a side effect (RFC 9110 idempotent methods).
pub fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
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

/// Buffers a request body whole (async routes, JSON checks), within `max`.
pub async fn collect_body(body: Incoming, max: u64) -> Result<Bytes, GatewayError> {
    if body.size_hint().lower() > max {
        return Err(GatewayError::BodyTooLarge { limit: max });
    }
    Limited::new(body, max as usize)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| body_error(e, max))
}

fn body_error(e: BoxError, max: u64) -> GatewayError {
    if crate::body::is_length_limit(e.as_ref()) {
        GatewayError::BodyTooLarge { limit: max }
    } else {
        GatewayError::BadBody(e.to_string())
    }
}

/// The request headers as the upstream should see them.
pub fn upstream_headers(incoming: &HeaderMap, peer: SocketAddr) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(incoming.len() + 3);
    for (name, value) in incoming {
        if name == header::HOST || HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        h.append(name.clone(), value.clone());
    }
    // Fields the client's `Connection` names are about its connection only (RFC 9110 §7.6.1).
    for value in incoming.get_all(header::CONNECTION) {
        let Ok(list) = value.to_str() else { continue };
        for token in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if let Ok(name) = http::HeaderName::from_bytes(token.as_bytes()) {
                h.remove(&name);
            }
        }
    }
    if let Some(host) = incoming.get(header::HOST) {
        h.insert("x-forwarded-host", host.clone());
    }
    let xff = match incoming
        .get("x-forwarded-for")
        .and_then(|v| v.to_str().ok())
    {
        Some(prev) => format!("{prev}, {}", peer.ip()),
        None => peer.ip().to_string(),
    };
    if let Ok(v) = HeaderValue::from_str(&xff) {
        h.insert("x-forwarded-for", v);
    }
    let tp = next_traceparent(incoming.get("traceparent").and_then(|v| v.to_str().ok()));
    if let Ok(v) = HeaderValue::from_str(&tp) {
        h.insert("traceparent", v);
    }
    h
}

/// The upstream's response as the client should see it: hop-by-hop headers dropped, body streaming.
pub fn client_response(resp: Response<UpstreamBody>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    drop_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.into())
}

/// Removes the headers that describe the upstream connection, not the answer.
pub fn drop_hop_by_hop(headers: &mut HeaderMap) {
    for name in HOP_BY_HOP {
        headers.remove(*name);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_named_in_connection_are_not_forwarded() {
        let mut incoming = HeaderMap::new();
        incoming.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret , close"),
        );
        incoming.insert(
            "x-secret",
            HeaderValue::from_static("for the first hop only"),
        );
        incoming.insert("x-kept", HeaderValue::from_static("1"));
        let out = upstream_headers(&incoming, "127.0.0.1:1".parse().expect("addr"));
        assert!(!out.contains_key("x-secret"));
        assert!(!out.contains_key(header::CONNECTION));
        assert_eq!(out["x-kept"], "1");
    }

    #[test]
    fn fields_is_removed_from_the_upstream_query() {
        assert_eq!(strip_fields_param(None), None);
        assert_eq!(strip_fields_param(Some("a=1")), Some("a=1".into()));
        assert_eq!(
            strip_fields_param(Some("fields=a,b&x=2")),
            Some("x=2".into())
        );
        assert_eq!(strip_fields_param(Some("fields=a")), None);
    }
}
