//! The upstream side of a cached route: fetch (conditionally when a stored
//! response has validators), update a stored response from a `304`, and store
//! what RFC 9111 lets a shared cache store.

use super::super::call::{Answer, Call, CallBody, CallContext};
use super::super::http_util::{drop_hop_by_hop, etags_match_weakly};
use super::super::upstream::RequestBody;
use super::super::RouteCache;
use crate::buffers::{BufferError, Held, Site};
use crate::problem::GatewayError;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Request, StatusCode, Uri};
use junction_cache::cache_control::vary_names;
use junction_cache::entry::{now_ms, upstream_etag};
use junction_cache::policy::{self, Storable, Timing};
use junction_cache::{CachedResponse, Variants};
use std::sync::Arc;
use tower::util::BoxCloneSyncService;
use tower::ServiceExt;

/// What is below a cache in a route's stack: where a fetch goes.
pub type Fetcher = BoxCloneSyncService<Call, Answer, GatewayError>;

/// Largest upstream body a cached route buffers.
const MAX_CACHED_BODY: usize = 32 << 20;

/// Client conditional and range headers: the cache fetches whole responses
/// and answers clients' conditions itself, so they are never sent upstream.
const CLIENT_CONDITIONALS: [header::HeaderName; 5] = [
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
    header::IF_RANGE,
];

/// What one upstream fetch produced, shared by every coalesced waiter.
pub type Fetched = Result<Arc<Fetch>, Arc<GatewayError>>;

/// One fetched (or revalidated) response.
pub struct Fetch {
    /// The response as the cache holds it (stored or not).
    pub entry: Arc<CachedResponse>,
    /// A `304` refreshed a stored response.
    pub revalidated: bool,
    /// The response may answer other requests (it was storable): coalesced
    /// waiters use it only then.
    pub shared: bool,
    /// `Set-Cookie` lines, for the client whose request made the call only.
    pub cookies: Vec<HeaderValue>,
}

/// Everything a fetch for one request needs; cloned into background revalidations.
pub struct FetchRequest {
    /// The route's stack below its cache.
    pub inner: Fetcher,
    /// The context of the request that needed the fetch.
    pub cx: Arc<CallContext>,
    /// The route's cache settings.
    pub cache: Arc<RouteCache>,
    /// The URI's cache key.
    pub key: String,
    /// The client's request URI.
    pub uri: Uri,
    /// The client's headers, conditionals removed: the fetch's own.
    pub fetch_headers: HeaderMap,
    /// The client's request headers, which select the variant stored.
    pub request_headers: HeaderMap,
    /// Tags the stored response is reachable by.
    pub tags: Vec<String>,
    /// The request carried credentials (RFC 9111 §3.5).
    pub credentials: bool,
    /// The client asked that nothing be stored (`Cache-Control: no-store`).
    pub no_store: bool,
}

impl FetchRequest {
    fn cache(&self) -> &RouteCache {
        &self.cache
    }
}

/// Removes the client's conditional and range headers from what goes upstream.
pub fn strip_client_conditionals(headers: &mut HeaderMap) {
    for name in &CLIENT_CONDITIONALS {
        headers.remove(name);
    }
    headers.remove(header::RANGE);
}

/// Fetches the resource; with `prior` (a stored response with validators)
/// the request is conditional and a `304` refreshes `prior`.
pub async fn fetch(req: Arc<FetchRequest>, prior: Option<Arc<CachedResponse>>) -> Fetched {
    let prior = prior.filter(|p| p.has_validator());
    let mut headers = req.fetch_headers.clone();
    if let Some(p) = &prior {
        for (stored, condition) in [
            ("etag", header::IF_NONE_MATCH),
            ("last-modified", header::IF_MODIFIED_SINCE),
        ] {
            if let Some(v) = p
                .header(stored)
                .and_then(|v| HeaderValue::from_bytes(v).ok())
            {
                headers.insert(condition, v);
            }
        }
    }
    let request_ms = now_ms();
    // Always a GET: a HEAD is answered from the stored GET.
    let (mut head, ()) = Request::get(req.uri.clone())
        .body(())
        .map_err(|e| {
            Arc::new(GatewayError::BadRequest(format!(
                "cannot build the fetch: {e}"
            )))
        })?
        .into_parts();
    head.headers = headers;
    let call = Call {
        head,
        body: CallBody::Ready(RequestBody::Replayable(Bytes::new())),
        cx: req.cx.clone(),
    };
    let answer = req.inner.clone().oneshot(call).await.map_err(Arc::new)?;
    let timing = Timing {
        request_ms,
        response_ms: now_ms(),
    };
    // Counted in limits.buffer_budget until stored and answered.
    let (parts, held) = whole(answer, &req.cx).await.map_err(Arc::new)?;
    let body = held.bytes.clone();
    req.cx.route.traffic.bytes_in.inc_by(body.len() as u64);

    // A 304 can only answer a conditional request; to an unconditional one it
    // is passed on as it is (never stored).
    if let (StatusCode::NOT_MODIFIED, Some(p)) = (parts.status, prior) {
        if same_validator(&p, &parts.headers) {
            return Ok(Arc::new(refresh(&req, &p, &parts.headers, timing).await));
        }
        // A 304 we cannot pair with what we hold: ask again, unconditionally
        // (once: `prior` is then `None`).
        return Box::pin(fetch(req, None)).await;
    }
    let status = parts.status.as_u16();
    let cache = req.cache();
    let keep = policy::storable(
        status,
        &parts.headers,
        &cache.rules,
        timing,
        req.credentials,
    );
    let entry = CachedResponse::from_upstream(
        status,
        &parts.headers,
        body,
        timing.response_ms,
        &keep.unwrap_or(Storable::UNSHARED),
    )
    .select_by(
        &selecting_names(cache, &parts.headers),
        &req.request_headers,
    );
    let entry = Arc::new(entry);
    if keep.is_some() && !req.no_store {
        store(&req, entry.clone()).await;
    }
    Ok(Arc::new(Fetch {
        entry,
        revalidated: false,
        shared: keep.is_some(),
        cookies: parts
            .headers
            .get_all(header::SET_COOKIE)
            .iter()
            .cloned()
            .collect(),
    }))
}

/// `prior` updated by a `304` (RFC 9111 §4.3.4): its fields replaced by the
/// 304's, freshness computed again from the result, stored again.
async fn refresh(
    req: &FetchRequest,
    prior: &CachedResponse,
    update: &HeaderMap,
    timing: Timing,
) -> Fetch {
    let cache = req.cache();
    let merged = prior.headers_updated_by(update);
    let keep = policy::storable(prior.status, &merged, &cache.rules, timing, req.credentials);
    let mut entry = CachedResponse::from_upstream(
        prior.status,
        &merged,
        prior.body.clone(),
        timing.response_ms,
        &keep.unwrap_or(Storable::UNSHARED),
    );
    if upstream_etag(&merged).is_none() {
        entry.etag.clone_from(&prior.etag);
    }
    entry.selecting.clone_from(&prior.selecting);
    let entry = Arc::new(entry);
    if keep.is_some() && !req.no_store {
        store(req, entry.clone()).await;
    }
    Fetch {
        entry,
        revalidated: true,
        shared: keep.is_some(),
        cookies: Vec::new(),
    }
}

/// Whether a `304` speaks of the stored response: same entity tag (weakly
/// compared) when both have one.
fn same_validator(prior: &CachedResponse, update: &HeaderMap) -> bool {
    let (Some(stored), Some(sent)) = (prior.header("etag"), update.get(header::ETAG)) else {
        return true;
    };
    etags_match_weakly(stored, sent.as_bytes())
}

/// The request headers a response is selected by: the route's `vary:` list
/// and the response's `Vary`.
fn selecting_names(cache: &RouteCache, headers: &HeaderMap) -> Vec<String> {
    let mut names = cache.vary.clone();
    for name in vary_names(headers) {
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// Adds `entry` to the URI's stored variants (a store failure degrades to a metric).
async fn store(req: &FetchRequest, entry: Arc<CachedResponse>) {
    let gw = &req.cx.gw;
    // Only a response with selecting headers keeps others beside it.
    let existing = if entry.selecting.is_empty() {
        None
    } else {
        match gw.cache.get(&req.key).await {
            Ok(v) => v,
            Err(e) => {
                gw.degraded(&e);
                return;
            }
        }
    };
    let set = Variants::with(
        existing.as_deref(),
        entry,
        &req.request_headers,
        req.cache().max_variants,
        now_ms(),
    );
    if let Err(e) = gw.cache.put(&req.key, set, &req.tags).await {
        gw.degraded(&e);
    }
}

/// The head and whole body of what the stack below answered.
async fn whole(
    answer: Answer,
    cx: &CallContext,
) -> Result<(http::response::Parts, Held), GatewayError> {
    let unreadable = |e: BufferError| match e {
        // Our own limit, not the upstream's fault: 503, nothing counted against it.
        BufferError::OverBudget => GatewayError::BuffersFull,
        e => GatewayError::from(junction_policy::UpstreamError::broken(
            cx.route.callee_name(),
            "reading the response body failed",
            e.into_box(),
        )),
    };
    let buffers = &cx.gw.buffers;
    match answer {
        Answer::Streamed(resp) => {
            let (parts, body) = resp.into_parts();
            let body = buffers
                .collect(body, MAX_CACHED_BODY, Site::Cache, true)
                .await
                .map_err(unreadable)?;
            Ok((parts, body))
        }
        Answer::Whole(w) => {
            let (mut parts, ()) = http::Response::new(()).into_parts();
            parts.status = StatusCode::from_u16(w.status).unwrap_or(StatusCode::BAD_GATEWAY);
            parts.headers = w.headers;
            Ok((parts, Held::uncounted(w.body)))
        }
        Answer::Ready(resp) => {
            let (mut parts, body) = resp.into_parts();
            drop_hop_by_hop(&mut parts.headers);
            let body = buffers
                .collect(body, MAX_CACHED_BODY, Site::Cache, true)
                .await
                .map_err(unreadable)?;
            Ok((parts, body))
        }
    }
}
