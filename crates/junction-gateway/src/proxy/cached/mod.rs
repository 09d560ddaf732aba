//! Cached sync routes: Junction as an RFC 9111 **shared** cache in front of one
//! upstream, with its own features (tags, coalescing, stale-while-revalidate,
//! stale-if-error, the Redis backend, projection) on top.
//!
//! The request path, in order:
//! 1. The key is the URI (`fields` left out: projection happens on the way
//!    out, so one stored response serves every projection). It holds the URI's
//!    variants; the one the request's headers select is the candidate.
//! 2. A request carrying credentials (`Authorization`, or `Cookie` when the
//!    route says so) may only use a response the origin marked shareable
//!    (`public`, `s-maxage`, `must-revalidate`); otherwise it goes upstream on
//!    its own (`BYPASS`), as does a request with `Cache-Control: no-store`.
//! 3. [`CachedResponse::reuse`] decides: fresh → `HIT`; stale within
//!    stale-while-revalidate → `STALE` and a background revalidation;
//!    otherwise a fetch, conditional when the stored response has validators
//!    (`REVALIDATED` on a 304), coalesced with concurrent requests for the key;
//!    within stale-if-error, the stored response answers if the fetch fails.
//! 4. The answer: stored headers, `Age` (current age) on everything served
//!    from storage, the client's own `Set-Cookie` on the answer to its request
//!    only, `304` for matching client conditionals, projection applied.
//!
//! The storage rules are [`junction_cache::policy`]; invalidation after
//! unsafe requests is [`invalidate`].

mod fetch;
pub mod invalidate;
pub mod metrics;

pub use fetch::Fetched;

use super::call::{Answer, Call, CallContext, WholeAnswer};
use super::RouteCache;
use crate::problem::GatewayError;
use fetch::{fetch, strip_client_conditionals, FetchRequest, Fetcher};
use futures::future::BoxFuture;
use http::{header, HeaderMap, HeaderValue, Method};
use junction_cache::cache_control::{RequestDirectives, CDN_CACHE_CONTROL, JUNCTION_CACHE_CONTROL};
use junction_cache::{entry::now_ms, render_tag, CacheKey, CachedResponse, Reuse};
use std::sync::Arc;
use std::task::{Context, Poll};
use tower::{Layer, Service};

/// Adds a route's cache to its stack (GET and HEAD; other methods pass by).
#[derive(Clone)]
pub struct CacheLayer {
    cache: Arc<RouteCache>,
}

impl CacheLayer {
    /// The layer of a route with these cache settings.
    pub fn new(cache: Arc<RouteCache>) -> Self {
        Self { cache }
    }
}

impl<S> Layer<S> for CacheLayer
where
    S: Service<Call, Response = Answer, Error = GatewayError> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
{
    type Service = Cache;

    fn layer(&self, inner: S) -> Cache {
        Cache {
            // Boxed: background revalidations keep a copy of what is below.
            inner: Fetcher::new(inner),
            cache: self.cache.clone(),
        }
    }
}

/// A route's stack below its cache, answering from storage where it may.
#[derive(Clone)]
pub struct Cache {
    inner: Fetcher,
    cache: Arc<RouteCache>,
}

impl Service<Call> for Cache {
    type Response = Answer;
    type Error = GatewayError;
    type Future = BoxFuture<'static, Result<Answer, GatewayError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> Self::Future {
        if !matches!(call.head.method, Method::GET | Method::HEAD) {
            return self.inner.call(call);
        }
        Box::pin(serve(self.inner.clone(), self.cache.clone(), call))
    }
}

/// What `x-junction-cache` says about an answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Hit,
    Miss,
    Stale,
    Revalidated,
    Bypass,
}

impl State {
    fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            State::Hit => "HIT",
            State::Miss => "MISS",
            State::Stale => "STALE",
            State::Revalidated => "REVALIDATED",
            State::Bypass => "BYPASS",
        })
    }

    /// Whether the upstream was called for the answer.
    fn went_upstream(self) -> bool {
        matches!(self, State::Miss | State::Revalidated | State::Bypass)
    }
}

/// The key of a URI's stored variants: method GET (HEAD is answered from a
/// stored GET), the path, the normalised query without `fields`.
pub fn uri_key(path: &str, query: Option<&str>) -> String {
    CacheKey::build(
        &Method::GET,
        path,
        query,
        &["fields"],
        &[],
        &HeaderMap::new(),
    )
}

/// Serves a GET/HEAD on a cached route.
async fn serve(inner: Fetcher, cache: Arc<RouteCache>, call: Call) -> Result<Answer, GatewayError> {
    let Call {
        head: parts, cx, ..
    } = call;
    let gw = &cx.gw;
    let key = uri_key(parts.uri.path(), parts.uri.query());
    let directives = if cache.honour_request_directives {
        RequestDirectives::parse(&parts.headers)
    } else {
        RequestDirectives::default()
    };
    let credentials = carries_credentials(&parts.headers, &cache);
    let now = now_ms();
    let stored = match gw.cache.get(&key).await {
        Ok(variants) => variants.and_then(|v| v.select(&parts.headers).cloned()),
        Err(e) => {
            gw.degraded(&e);
            None
        }
    }
    .filter(|e| !credentials || e.shared_with_credentials);
    let reuse = stored.as_ref().map(|e| e.reuse(now, &directives));

    // Built only when the upstream is needed: a hit makes no upstream request.
    let request = |on: Arc<CallContext>| {
        let mut fetch_headers = parts.headers.clone();
        strip_client_conditionals(&mut fetch_headers);
        Arc::new(FetchRequest {
            inner: inner.clone(),
            tags: render_tags(&cache.tags, &on.params),
            cx: on,
            cache: cache.clone(),
            key: key.clone(),
            uri: parts.uri.clone(),
            fetch_headers,
            request_headers: parts.headers.clone(),
            credentials,
            no_store: directives.no_store,
        })
    };

    let (fetched, state, cookies) = match (stored, reuse) {
        (Some(e), Some(Reuse::Fresh)) => {
            cache.hits.inc();
            (e, State::Hit, Vec::new())
        }
        (Some(e), Some(Reuse::Stale)) => {
            // Serve now; revalidate once in the background (coalesced with any miss).
            cache.stale.inc();
            // On its own context: the answered request records nothing more.
            let (prior, request) = (e.clone(), request(cx.detached()));
            tokio::spawn(async move { coalesced(&request, Some(prior)).await });
            (e, State::Stale, Vec::new())
        }
        (_, _) if directives.only_if_cached => {
            return Err(GatewayError::NotCached {
                route: cx.route.name.clone(),
            });
        }
        (stored, reuse) => {
            let private = credentials || directives.no_store;
            if private {
                cache.bypassed.inc();
            } else {
                cache.misses.inc();
            }
            let usable_on_error = stored
                .clone()
                .filter(|_| reuse == Some(Reuse::StaleIfError));
            let request = request(cx.clone());
            let result = if private {
                fetch(request, stored).await
            } else {
                coalesced(&request, stored).await
            };
            match result {
                Ok(f) if f.entry.status < 500 || usable_on_error.is_none() => {
                    let state = match (f.revalidated, private) {
                        (true, _) => State::Revalidated,
                        (false, true) => State::Bypass,
                        (false, false) => State::Miss,
                    };
                    if state == State::Revalidated {
                        cache.revalidated.inc();
                    }
                    (f.entry.clone(), state, f.cookies.clone())
                }
                Ok(failed) => {
                    tracing::debug!(route = %cx.route.name, status = failed.entry.status, "upstream failed; serving stale");
                    cache.stale.inc();
                    (usable_on_error.expect("checked"), State::Stale, Vec::new())
                }
                Err(e) => match usable_on_error {
                    Some(old) => {
                        tracing::debug!(route = %cx.route.name, error = %e, "upstream failed; serving stale");
                        cache.stale.inc();
                        (old, State::Stale, Vec::new())
                    }
                    None => {
                        // As before the stack: a failed fetch is logged as no attempt.
                        cx.set_attempts(0);
                        let mut resp = e.to_response();
                        resp.headers_mut()
                            .insert("x-junction-cache", State::Miss.header());
                        return Ok(Answer::Ready(resp));
                    }
                },
            }
        }
    };
    cx.set_attempts(u32::from(state.went_upstream()));
    if !state.went_upstream() {
        gw.cache_metrics()
            .bytes_saved
            .inc_by(fetched.body.len() as u64);
    }
    Ok(Answer::Whole(answer(&fetched, state, &cookies, now)))
}

/// A fetch coalesced with every concurrent one for the key. A waiter uses the
/// leader's answer only when it was storable (a private answer is the
/// leader's alone) and its variant is the one the waiter's headers select;
/// otherwise it fetches for itself.
async fn coalesced(request: &Arc<FetchRequest>, prior: Option<Arc<CachedResponse>>) -> Fetched {
    let mut led = false;
    let result = request
        .cx
        .gw
        .coalescer
        .run(&request.key, || {
            led = true;
            fetch(request.clone(), prior.clone())
        })
        .await;
    let usable = |f: &fetch::Fetch| f.shared && f.entry.matches(&request.request_headers);
    match result {
        Ok(f) if !led && !usable(&f) => fetch(request.clone(), prior).await,
        other => other,
    }
}

/// Whether the request carries credentials a shared cache must not answer
/// from a shared entry: `Authorization`, and `Cookie` when the route says so,
/// unless the route's own `vary:` list keys on that header.
fn carries_credentials(headers: &HeaderMap, cache: &RouteCache) -> bool {
    let varies_on = |name: &str| cache.vary.iter().any(|v| v == name);
    (headers.contains_key(header::AUTHORIZATION) && !varies_on("authorization"))
        || (cache.cookie_is_credential
            && headers.contains_key(header::COOKIE)
            && !varies_on("cookie"))
}

/// The whole answer from a stored or fetched response, before shaping.
fn answer(entry: &CachedResponse, state: State, cookies: &[HeaderValue], now: u64) -> WholeAnswer {
    let mut headers = entry.header_map(3 + cookies.len());
    headers.insert("x-junction-cache", state.header());
    // A MISS passes the origin's own Age through; anything answered from storage says how old it is.
    if state != State::Miss && state != State::Bypass {
        headers.insert(
            header::AGE,
            HeaderValue::from(entry.current_age(now).as_secs()),
        );
    }
    // Targeted at Junction (and CDNs before it): not for clients.
    headers.remove(JUNCTION_CACHE_CONTROL);
    headers.remove(CDN_CACHE_CONTROL);
    for cookie in cookies {
        headers.append(header::SET_COOKIE, cookie.clone());
    }
    WholeAnswer {
        status: entry.status,
        headers,
        body: entry.body.clone(),
        etag: Some(entry.etag.clone()),
    }
}

/// Tags of a route rendered with this request's path parameters.
pub fn render_tags(templates: &[String], params: &[(String, String)]) -> Vec<String> {
    let params: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    templates.iter().map(|t| render_tag(t, &params)).collect()
}
