//! Sync writes run once per `Idempotency-Key` (route `idempotency: { ttl }`).
//!
//! A request carrying the header claims its key in the gateway's idempotency
//! store (memory, or Redis when `cache.backend` is redis, so every instance
//! sees the claim) before anything is sent upstream:
//! - first of its key: forwarded; a final answer (anything but 5xx, 408 or
//!   429) is stored for `ttl` and the key stays taken; a failure a retry may fix
//!   gives the key back, so the client's retry runs the request again;
//! - a repeat after that: the stored answer, with `idempotent-replayed: true`,
//!   and the upstream sees nothing;
//! - a repeat while the first is still running: 409, `Retry-After: 1`;
//! - the key reused for a different request (method, path, query or body): 422;
//! - the store unreachable or full: 503, rather than risk running it twice.
//!
//! Keys are scoped to the route and to the caller's `Authorization` header, so
//! two callers cannot see each other's answers. A claim is held at most the
//! upstream's longest call (every attempt and backoff) plus [`LOCK_SLACK`]: a
//! gateway that dies mid-request does not lock the key for the whole `ttl`.
//! Requests without the header pass through as on any route.

use super::http_util::{
    collect_body, drop_hop_by_hop, is_idempotent, upstream_headers, upstream_path_and_query,
    valid_key,
};
use super::trim::{finish, shape_streamed, Shaped};
use super::upstream::{CallOptions, RequestBody};
use super::{cached, Exchange, Outcome};
use crate::body::Body;
use crate::problem::GatewayError;
use crate::telemetry::metrics::RouteOutcome;
use crate::telemetry::Metrics;
use http::{header, HeaderMap, HeaderName, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use junction_cache::idempotency::{fingerprint, scope, Token};
use junction_cache::policy::Storable;
use junction_cache::{entry::now_ms, CachedResponse, Claim, IdempotencyStore};
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;
use std::time::Duration;

/// Set on answers replayed from a stored record.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Time a claim is held beyond the upstream's longest call.
pub const LOCK_SLACK: Duration = Duration::from_secs(30);
/// Largest answer stored for replay.
const MAX_STORED_BODY: usize = 32 << 20;

/// A route's idempotency settings and counters.
pub struct RouteIdempotency {
    /// How long an answer is replayed.
    pub ttl: Duration,
    executed: Counter,
    replayed: Counter,
    in_flight: Counter,
    mismatch: Counter,
    released: Counter,
    unavailable: Counter,
}

impl RouteIdempotency {
    /// Settings for `route`, its `junction_idempotency_total` series resolved once.
    pub fn new(route: &str, ttl: Duration, metrics: &Metrics) -> Self {
        let counter = |outcome: &'static str| {
            metrics
                .idempotency
                .get_or_create(&RouteOutcome {
                    route: route.to_string(),
                    outcome,
                })
                .clone()
        };
        Self {
            ttl,
            executed: counter("executed"),
            replayed: counter("replayed"),
            in_flight: counter("in_flight"),
            mismatch: counter("mismatch"),
            released: counter("released"),
            unavailable: counter("unavailable"),
        }
    }
}

/// Whether an answer is final (stored) rather than one a retry may change.
fn is_final(status: u16) -> bool {
    junction_policy::classify_status(status) != junction_policy::StatusClass::Transient
}

/// Serves a request that carries an `Idempotency-Key` on a route that honours it.
pub async fn serve(
    cx: &Exchange<'_>,
    idem: &RouteIdempotency,
    req: Request<Incoming>,
    outcome: &mut Outcome,
) -> Result<Response<Body>, GatewayError> {
    let Exchange {
        gw,
        route,
        upstream,
        params,
        peer,
        shaped,
    } = *cx;
    outcome.upstream = Some(upstream.name().to_string());
    let (parts, body) = req.into_parts();
    let key = valid_key(&parts.headers)?;
    let body = collect_body(body, gw.max_body).await?;
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let fp = fingerprint(parts.method.as_str(), target, &body);
    let credentials = parts
        .headers
        .get(header::AUTHORIZATION)
        .map_or(&b""[..], |v| v.as_bytes());
    let store_key = format!("{}:{:016x}:{key}", route.name, scope(credentials));
    let token: Token = rand::random();
    let lock_for = (upstream.longest_call() + LOCK_SLACK).min(idem.ttl.max(LOCK_SLACK));
    let store = gw.idempotency.clone();
    match store.claim(&store_key, fp, token, lock_for).await {
        Err(e) => {
            idem.unavailable.inc();
            tracing::warn!(route = %route.name, error = %super::upstream::error_chain(&e), "idempotency store failed; refusing the request");
            return Err(GatewayError::IdempotencyUnavailable(e.to_string()));
        }
        Ok(Claim::InFlight) => {
            idem.in_flight.inc();
            return Err(GatewayError::IdempotencyInFlight);
        }
        Ok(Claim::Mismatch) => {
            idem.mismatch.inc();
            return Err(GatewayError::IdempotencyMismatch);
        }
        Ok(Claim::Replay(answer)) => {
            idem.replayed.inc();
            return Ok(replay(&answer, &parts.method, &parts.headers, shaped));
        }
        Ok(Claim::Owner) => {}
    }
    // From here the key is ours: every way out settles it, and if this future
    // is dropped (the client went away) the guard gives the key back.
    let mut claim = Held {
        store,
        key: store_key,
        fingerprint: fp,
        token,
        settled: false,
    };
    let uri = upstream.uri_for(&upstream_path_and_query(route, params, &parts.uri))?;
    let opts = CallOptions {
        retry_allowed: is_idempotent(&parts.method) || route.retry_non_idempotent,
        body_limit: gw.max_body,
    };
    let headers = upstream_headers(&parts.headers, peer);
    let called = upstream
        .call(
            parts.method.clone(),
            uri,
            headers,
            RequestBody::Replayable(body),
            opts,
        )
        .await;
    let (resp, attempts) = match called {
        Ok(r) => r,
        Err(e) => {
            outcome.attempts = 1;
            idem.released.inc();
            claim.release().await;
            return Err(e);
        }
    };
    outcome.attempts = attempts;
    let status = resp.status().as_u16();
    if !is_final(status) {
        idem.released.inc();
        claim.release().await;
        return Ok(shape_streamed(resp, &parts.method, &parts.headers, shaped).await);
    }
    let (mut head, body) = resp.into_parts();
    let body = match Limited::new(body, MAX_STORED_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) => {
            idem.released.inc();
            claim.release().await;
            return Err(GatewayError::UpstreamUnreachable {
                upstream: upstream.name().to_string(),
                cause: format!("reading the response body to store it failed: {e}"),
            });
        }
    };
    shaped.bytes_in.inc_by(body.len() as u64);
    let answer =
        CachedResponse::from_upstream(status, &head.headers, body, now_ms(), &Storable::UNSHARED);
    idem.executed.inc();
    claim.complete(&answer, idem.ttl, &route.name).await;
    if head.status.is_success() && !route.invalidate.is_empty() {
        gw.invalidate_tags(&cached::render_tags(&route.invalidate, params))
            .await;
    }
    // The first answer goes out as the upstream gave it (its cookies included);
    // the stored one leaves out what must not be replayed (see `from_upstream`).
    drop_hop_by_hop(&mut head.headers);
    Ok(finish(
        status,
        head.headers,
        answer.body.clone(),
        None,
        &parts.method,
        &parts.headers,
        shaped,
    ))
}

/// The client response for a stored answer, marked as replayed (projection
/// applied as on any answer).
fn replay(
    answer: &CachedResponse,
    method: &http::Method,
    req_headers: &HeaderMap,
    shaped: &Shaped,
) -> Response<Body> {
    let mut headers = answer.header_map(1);
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    finish(
        answer.status,
        headers,
        answer.body.clone(),
        None,
        method,
        req_headers,
        shaped,
    )
}

/// A claim this request holds until it completes or releases it.
struct Held {
    store: Arc<dyn IdempotencyStore>,
    key: String,
    fingerprint: u128,
    token: Token,
    settled: bool,
}

impl Held {
    async fn release(&mut self) {
        self.settled = true;
        if let Err(e) = self
            .store
            .release(&self.key, self.fingerprint, self.token)
            .await
        {
            // The claim's lock runs out by itself; until then repeats get 409.
            tracing::warn!(key = %self.key, error = %super::upstream::error_chain(&e), "could not give an idempotency key back");
        }
    }

    async fn complete(&mut self, answer: &CachedResponse, keep_for: Duration, route: &str) {
        self.settled = true;
        match self
            .store
            .complete(&self.key, self.fingerprint, self.token, answer, keep_for)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(route, key = %self.key, "the idempotency claim expired before the upstream answered; a repeat may have run the request again")
            }
            Err(e) => {
                tracing::warn!(route, key = %self.key, error = %super::upstream::error_chain(&e), "could not store the answer for its idempotency key; a repeat will run the request again after the lock expires")
            }
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if self.settled {
            return;
        }
        // Dropped mid-request (the client went away): whether the upstream acted
        // is unknown, so give the key back and let the client's retry decide.
        let (store, key, fp, token) = (
            self.store.clone(),
            std::mem::take(&mut self.key),
            self.fingerprint,
            self.token,
        );
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn(async move {
                let _ = store.release(&key, fp, token).await;
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::http_util::IDEMPOTENCY_KEY;

    #[test]
    fn only_answers_a_retry_cannot_change_are_final() {
        for final_status in [200, 201, 204, 400, 402, 404, 409, 422] {
            assert!(is_final(final_status), "{final_status}");
        }
        for retryable in [408, 429, 500, 502, 503, 504] {
            assert!(!is_final(retryable), "{retryable}");
        }
    }

    #[test]
    fn keys_are_checked() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(IDEMPOTENCY_KEY, HeaderValue::from_static(v));
            h
        };
        assert_eq!(valid_key(&with("order-42")).unwrap(), "order-42");
        assert_eq!(valid_key(&with("\"abc\"")).unwrap(), "abc");
        assert!(valid_key(&with("")).is_err());
        assert!(valid_key(&with("has space")).is_err());
        let long: &'static str = Box::leak("k".repeat(256).into_boxed_str());
        assert!(valid_key(&with(long)).is_err());
    }
}
