//! Cached sync routes: serve fresh entries without an upstream call, collapse
//! concurrent misses into one call, serve stale entries while revalidating or
//! when the upstream fails (its breaker open included), answer `If-None-Match`
//! with 304.
//!
//! The cache holds the upstream's full body; `?fields=` projection is applied
//! on the way out, so one entry serves every projection.

use super::forward::{upstream_headers, upstream_path_and_query};
use super::trim::{finish, Shaped};
use super::upstream::{CallOptions, RequestBody, Upstream};
use super::{Gateway, Outcome, Route, RouteCache};
use crate::body::Body;
use crate::problem::GatewayError;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use junction_cache::{
    cache_control, entry::now_ms, render_tag, CacheKey, CachedResponse, Freshness,
};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

/// Largest upstream body a cached route buffers.
const MAX_CACHED_BODY: usize = 32 << 20;

/// What one upstream fetch produced, shared by every coalesced waiter.
pub type Fetched = Result<Arc<CachedResponse>, Arc<GatewayError>>;

/// Serves a GET/HEAD on a cached route.
#[allow(clippy::too_many_arguments)]
pub async fn serve(
    gw: &Arc<Gateway>,
    route: &Arc<Route>,
    cache: &RouteCache,
    upstream: &Arc<Upstream>,
    params: &[(String, String)],
    req: Request<Incoming>,
    peer: SocketAddr,
    shaped: &Shaped,
    outcome: &mut Outcome,
) -> Result<Response<Body>, GatewayError> {
    outcome.upstream = Some(upstream.name().to_string());
    let (parts, _body) = req.into_parts();
    let key = CacheKey::build(
        &Method::GET,
        parts.uri.path(),
        parts.uri.query(),
        &["fields"],
        &cache.vary,
        &parts.headers,
    );
    let now = now_ms();
    let stored = match gw.cache.get(&key).await {
        Ok(e) => e,
        Err(e) => {
            gw.degraded(&e);
            None
        }
    };
    // Built only when the entry is not fresh: a hit needs no upstream request.
    let fetch = || {
        let gw = gw.clone();
        let route = route.clone();
        let upstream = upstream.clone();
        let key = key.clone();
        let path_and_query = upstream_path_and_query(&route, params, &parts.uri);
        let headers = upstream_headers(&parts.headers, peer);
        let tags: Vec<String> = render_tags(&cache.tags, params);
        async move {
            gw.coalescer
                .run(&key, || {
                    fetch_and_store(
                        gw.clone(),
                        route,
                        upstream,
                        key.clone(),
                        path_and_query,
                        headers,
                        tags,
                    )
                })
                .await
        }
    };
    let (entry, state) = match stored.map(|e| (e.freshness(now), e)) {
        Some((Freshness::Fresh, e)) => {
            cache.hits.inc();
            (e, "HIT")
        }
        Some((Freshness::Stale, e)) => {
            // Serve now; refresh once in the background (coalesced with any miss).
            cache.stale.inc();
            tokio::spawn(fetch());
            (e, "STALE")
        }
        stored => {
            cache.misses.inc();
            let usable_on_error =
                stored.and_then(|(f, e)| (f == Freshness::StaleIfError).then_some(e));
            match fetch().await {
                Ok(fresh) if fresh.status < 500 || usable_on_error.is_none() => (fresh, "MISS"),
                Ok(failed) => {
                    tracing::debug!(route = %route.name, status = failed.status, "upstream failed; serving stale");
                    cache.stale.inc();
                    (usable_on_error.expect("checked"), "STALE")
                }
                Err(e) => match usable_on_error {
                    Some(old) => {
                        tracing::debug!(route = %route.name, error = %e, "upstream failed; serving stale");
                        cache.stale.inc();
                        (old, "STALE")
                    }
                    None => {
                        let mut resp = e.to_response();
                        resp.headers_mut()
                            .insert("x-junction-cache", HeaderValue::from_static("MISS"));
                        return Ok(resp);
                    }
                },
            }
        }
    };
    outcome.attempts = u32::from(state == "MISS");
    if state != "MISS" {
        gw.metrics()
            .cache_bytes_saved
            .inc_by(entry.body.len() as u64);
    }
    Ok(respond(
        &entry,
        state,
        &parts.method,
        &parts.headers,
        shaped,
        now,
    ))
}

/// The leader's upstream call for a key: fetch, buffer, store when cacheable.
async fn fetch_and_store(
    gw: Arc<Gateway>,
    route: Arc<Route>,
    upstream: Arc<Upstream>,
    key: String,
    path_and_query: String,
    headers: HeaderMap,
    tags: Vec<String>,
) -> Fetched {
    let cache = route.cache.as_ref().expect("cached route");
    let uri = upstream.uri_for(&path_and_query).map_err(Arc::new)?;
    let opts = CallOptions {
        retry_allowed: true,
        body_limit: 0,
    };
    let (resp, _attempts) = upstream
        .call(
            Method::GET,
            uri,
            headers,
            RequestBody::Replayable(Bytes::new()),
            opts,
        )
        .await
        .map_err(Arc::new)?;
    let (parts, body) = resp.into_parts();
    let body = Limited::new(body, MAX_CACHED_BODY)
        .collect()
        .await
        .map_err(|e| {
            Arc::new(GatewayError::UpstreamUnreachable {
                upstream: upstream.name().to_string(),
                cause: format!("reading the response body failed: {e}"),
            })
        })?;
    let body = body.to_bytes();
    route.traffic.bytes_in.inc_by(body.len() as u64);
    let status = parts.status.as_u16();
    let ttl = cache_control::policy(status, &parts.headers, cache.ttl, cache.cache_errors);
    let entry = CachedResponse::from_upstream(
        status,
        &parts.headers,
        body,
        now_ms(),
        ttl.unwrap_or(Duration::ZERO),
        cache.stale_while_revalidate,
        if cache_control::forbids_stale(&parts.headers) {
            Duration::ZERO
        } else {
            cache.stale_if_error
        },
    );
    if ttl.is_some() {
        if let Err(e) = gw.cache.put(&key, entry.clone(), &tags).await {
            gw.degraded(&e);
        }
    }
    Ok(Arc::new(entry))
}

/// A client response from a cache entry: 304 on a matching `If-None-Match`, projection applied.
fn respond(
    entry: &CachedResponse,
    state: &'static str,
    method: &Method,
    req_headers: &HeaderMap,
    shaped: &Shaped,
    now: u64,
) -> Response<Body> {
    let mut headers = entry.header_map(3);
    headers.insert("x-junction-cache", HeaderValue::from_static(state));
    if state != "MISS" {
        headers.insert(header::AGE, HeaderValue::from(entry.age(now).as_secs()));
    }
    finish(
        entry.status,
        headers,
        entry.body.clone(),
        Some(&entry.etag),
        method,
        req_headers,
        shaped,
    )
}

/// Tags of a route rendered with this request's path parameters.
pub fn render_tags(templates: &[String], params: &[(String, String)]) -> Vec<String> {
    let params: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    templates.iter().map(|t| render_tag(t, &params)).collect()
}
