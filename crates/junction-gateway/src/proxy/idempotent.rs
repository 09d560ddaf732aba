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

use super::call::{Answer, Call, CallBody, WholeAnswer};
use super::http_util::{drop_hop_by_hop, valid_key, IDEMPOTENCY_KEY};
use super::upstream::RequestBody;
use crate::problem::GatewayError;
use crate::telemetry::metrics::{MetricSet, RouteOutcome};
use crate::telemetry::Metrics;
use futures::future::BoxFuture;
use http::{header, HeaderName, HeaderValue, Method};
use junction_cache::idempotency::{fingerprint, scope, Token};
use junction_cache::policy::Storable;
use junction_cache::{entry::now_ms, CachedResponse, Claim, IdempotencyStore};
use junction_policy::UpstreamError;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tower::{Layer, Service, ServiceExt};

/// Set on answers replayed from a stored record.
pub const REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Time a claim is held beyond the upstream's longest call.
pub const LOCK_SLACK: Duration = Duration::from_secs(30);
/// Largest answer stored for replay.
const MAX_STORED_BODY: usize = 32 << 20;

/// `junction_idempotency_total{route,outcome}`.
#[derive(Clone)]
pub struct IdempotencyMetrics {
    outcomes: Family<RouteOutcome, Counter>,
}

impl MetricSet for IdempotencyMetrics {
    fn register(r: &mut Registry) -> Self {
        let outcomes = Family::default();
        r.register(
            "junction_idempotency",
            "Requests with an Idempotency-Key on routes that honour it, by outcome",
            outcomes.clone(),
        );
        Self { outcomes }
    }
}

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
        let metrics = metrics.set::<IdempotencyMetrics>();
        let counter = |outcome: &'static str| {
            metrics
                .outcomes
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

/// Adds a route's idempotency to its stack: a request carrying an
/// `Idempotency-Key` runs once; others pass by.
#[derive(Clone)]
pub struct IdempotencyLayer {
    idem: Arc<RouteIdempotency>,
    /// The route's cache answers GET/HEAD (they pass by, as reads).
    reads_cached: bool,
}

impl IdempotencyLayer {
    /// The layer of a route with these settings.
    pub fn new(idem: Arc<RouteIdempotency>, reads_cached: bool) -> Self {
        Self { idem, reads_cached }
    }
}

impl<S> Layer<S> for IdempotencyLayer {
    type Service = Idempotent<S>;

    fn layer(&self, inner: S) -> Idempotent<S> {
        Idempotent {
            inner,
            layer: self.clone(),
        }
    }
}

/// A route's stack below its idempotency.
#[derive(Clone)]
pub struct Idempotent<S> {
    inner: S,
    layer: IdempotencyLayer,
}

impl<S> Service<Call> for Idempotent<S>
where
    S: Service<Call, Response = Answer, Error = GatewayError> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Answer;
    type Error = GatewayError;
    type Future = BoxFuture<'static, Result<Answer, GatewayError>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let cached_read =
            self.layer.reads_cached && matches!(call.head.method, Method::GET | Method::HEAD);
        if cached_read || !call.head.headers.contains_key(IDEMPOTENCY_KEY) {
            return Box::pin(self.inner.call(call));
        }
        Box::pin(serve(self.inner.clone(), self.layer.idem.clone(), call))
    }
}

/// Serves a request that carries an `Idempotency-Key` on a route that honours it.
async fn serve<S>(inner: S, idem: Arc<RouteIdempotency>, call: Call) -> Result<Answer, GatewayError>
where
    S: Service<Call, Response = Answer, Error = GatewayError>,
{
    let Call {
        head: parts,
        body,
        cx,
    } = call;
    let gw = &cx.gw;
    let route = &cx.route;
    let key = valid_key(&parts.headers)?.to_owned();
    let held = body
        .collect(gw.max_body, &gw.buffers, crate::buffers::Site::Idempotency)
        .await?;
    let body = held.bytes.clone();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let fp = fingerprint(parts.method.as_str(), target, &body);
    let credentials = parts
        .headers
        .get(header::AUTHORIZATION)
        .map_or(&b""[..], |v| v.as_bytes());
    let store_key = format!("{}:{:016x}:{key}", route.name, scope(credentials));
    let token: Token = rand::random();
    let lock_for = (route.longest_call() + LOCK_SLACK).min(idem.ttl.max(LOCK_SLACK));
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
            return Ok(Answer::Whole(replay(&answer)));
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
    let called = inner
        .oneshot(Call {
            head: parts,
            body: CallBody::Ready(RequestBody::Replayable(body)),
            cx: cx.clone(),
        })
        .await;
    let resp = match called {
        Ok(Answer::Streamed(resp)) => resp,
        Ok(other) => {
            // Not the upstream's own answer (nothing below stores one): pass it on, run again next time.
            idem.released.inc();
            claim.release().await;
            return Ok(other);
        }
        Err(e) => {
            idem.released.inc();
            claim.release().await;
            return Err(e);
        }
    };
    let status = resp.status().as_u16();
    if !is_final(status) {
        idem.released.inc();
        claim.release().await;
        return Ok(Answer::Streamed(resp));
    }
    let (mut head, body) = resp.into_parts();
    // The upstream has done the write: this read is never refused (see `buffers`).
    let stored = cx
        .gw
        .buffers
        .collect(
            body,
            MAX_STORED_BODY,
            crate::buffers::Site::Idempotency,
            false,
        )
        .await
        .map_err(crate::buffers::BufferError::into_box);
    let held = match stored {
        Ok(held) => held,
        Err(e) => {
            idem.released.inc();
            claim.release().await;
            return Err(UpstreamError::broken(
                route.callee_name(),
                "reading the response body to store it failed",
                e,
            )
            .into());
        }
    };
    route.traffic.bytes_in.inc_by(held.bytes.len() as u64);
    let answer = CachedResponse::from_upstream(
        status,
        &head.headers,
        held.bytes.clone(),
        now_ms(),
        &Storable::UNSHARED,
    );
    idem.executed.inc();
    claim.complete(&answer, idem.ttl, &route.name).await;
    // Counted until stored.
    drop(held);
    // The first answer goes out as the upstream gave it (its cookies included);
    // the stored one leaves out what must not be replayed (see `from_upstream`).
    drop_hop_by_hop(&mut head.headers);
    Ok(Answer::Whole(WholeAnswer {
        status,
        headers: head.headers,
        body: answer.body.clone(),
        etag: None,
    }))
}

/// The answer for a stored record, marked as replayed (projection applied
/// above as on any answer).
fn replay(answer: &CachedResponse) -> WholeAnswer {
    let mut headers = answer.header_map(1);
    headers.insert(REPLAYED, HeaderValue::from_static("true"));
    WholeAnswer {
        status: answer.status,
        headers,
        body: answer.body.clone(),
        etag: None,
    }
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
    use http::HeaderMap;

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
