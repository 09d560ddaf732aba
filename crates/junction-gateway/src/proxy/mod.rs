//! The data plane: match a route, apply its policies, answer.
//!
//! [`Gateway::handle`] is the whole request path. It stays thin: routing,
//! then the route's stack of layers ([`stack`]: rate limit, invalidation,
//! shaping, idempotency, cache, upstream), then metrics and the access log.
//! Errors are [`GatewayError`]s, answered as problem+json in one place.

mod build;
pub mod cached;
pub mod call;
pub mod client_body;
pub mod h2c;
pub mod http_util;
pub mod idempotent;
pub mod meters;
pub mod pool;
pub mod router;
pub mod stack;
pub mod tap;
pub mod tls;
pub mod trim;
pub mod upstream;

use crate::body::Body;
use crate::config::{Config, RateLimitConfig, RouteConfig};
use crate::pipeline::AsyncRoute;
use crate::problem::GatewayError;
use crate::telemetry::live::{Client, Live};
use crate::telemetry::metrics::ClientFaultLabel;
use crate::telemetry::trace::TraceId;
use crate::telemetry::{otel, Metrics};
use cached::metrics::CacheMetrics;
use call::{Call, CallBody, CallContext};
use governor::DefaultDirectRateLimiter;
use http::{HeaderName, Method, Request, Response};
use hyper::body::Incoming;
use idempotent::RouteIdempotency;
use junction_cache::policy::RouteRules;
use junction_cache::{CacheStore, Coalescer, IdempotencyStore};
use junction_telemetry::{EdgeKind, RouteStats};
use meters::{ProxyMetrics, RouteMeters, Traffic};
use prometheus_client::metrics::counter::Counter;
use router::Router;
use stack::RouteService;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tower::ServiceExt;
use tracing::Instrument;
use upstream::Upstream;

/// Registers the data plane's metric families (requests, cache, idempotency, upstreams).
pub fn register_metrics(metrics: &Metrics) {
    metrics.set::<ProxyMetrics>();
    metrics.set::<CacheMetrics>();
    metrics.set::<idempotent::IdempotencyMetrics>();
    metrics.set::<upstream::UpstreamMetrics>();
}

/// Builds every upstream (shared by sync routes and subscribers) from the config.
pub fn build_upstreams(
    config: &Config,
    metrics: &Metrics,
) -> anyhow::Result<BTreeMap<String, Arc<Upstream>>> {
    let mut upstreams = BTreeMap::new();
    for (name, cfg) in &config.upstreams {
        upstreams.insert(name.clone(), Arc::new(Upstream::new(name, cfg, metrics)?));
    }
    Ok(upstreams)
}

/// The live state a gateway is built around, which a reload carries over to
/// the next gateway: the stores, the statistics, and each route's rate-limit
/// window (kept while the route keeps the same limit).
#[derive(Clone)]
pub struct LiveState {
    /// Response cache shared by cached routes.
    pub cache: Arc<dyn CacheStore>,
    /// Idempotency-Key claims and stored answers of sync writes.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Rolling stats and the dependency graph.
    pub live: Arc<Live>,
    /// Rate limiters by route name.
    pub rate_limits: Arc<RateLimits>,
    /// The budget of bodies held whole (`limits.buffer_budget`).
    pub buffers: Arc<crate::buffers::BufferBudget>,
}

/// Each route's rate limiter, by route name, with the limit it enforces.
#[derive(Default)]
pub struct RateLimits {
    by_route:
        parking_lot::Mutex<BTreeMap<String, (RateLimitConfig, Arc<DefaultDirectRateLimiter>)>>,
}

impl RateLimits {
    /// The limiter for `route` with `limit`: the running one while the limit
    /// is unchanged, else a fresh one.
    fn get(&self, route: &str, limit: &RateLimitConfig) -> Arc<DefaultDirectRateLimiter> {
        let mut by_route = self.by_route.lock();
        if let Some((cfg, limiter)) = by_route.get(route) {
            if cfg == limit {
                return limiter.clone();
            }
        }
        // A route allows its whole count at once (a client's burst), then refills evenly.
        let limiter = Arc::new(crate::rate::limiter(
            limit.requests,
            limit.per.0,
            limit.requests,
        ));
        by_route.insert(route.to_owned(), (limit.clone(), limiter.clone()));
        limiter
    }

    /// Forgets the limiters of routes no longer configured.
    fn retain(&self, routes: &[RouteConfig]) {
        self.by_route.lock().retain(|name, _| {
            routes
                .iter()
                .any(|r| &r.name == name && r.rate_limit.is_some())
        });
    }
}

/// The running data plane, swapped whole by a reload; a request keeps the
/// gateway it started with until it is answered.
pub type SharedGateway = Arc<arc_swap::ArcSwap<Gateway>>;

/// Everything the data plane needs, built from one config.
pub struct Gateway {
    router: Router<Route>,
    routes: Vec<Arc<Route>>,
    metrics: Metrics,
    proxy_metrics: ProxyMetrics,
    cache_metrics: CacheMetrics,
    upstreams: BTreeMap<String, Arc<Upstream>>,
    /// `limits.max_body` in bytes.
    pub max_body: u64,
    /// Header naming the calling system.
    pub caller_header: HeaderName,
    /// Response cache shared by cached routes.
    pub cache: Arc<dyn CacheStore>,
    /// Idempotency-Key claims and stored answers of sync writes.
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Collapses concurrent misses per cache key.
    pub coalescer: Coalescer<cached::Fetched>,
    /// Rolling stats and the dependency graph.
    pub live: Arc<Live>,
    /// Rate limiters by route, carried to the next gateway by a reload.
    rate_limits: Arc<RateLimits>,
    /// The budget of bodies held whole, carried by a reload.
    pub buffers: Arc<crate::buffers::BufferBudget>,
    no_route: RouteMeters,
}

/// One configured route.
pub struct Route {
    /// Name for metrics and logs.
    pub name: String,
    /// Its path template.
    pub template: String,
    /// It has a default projection (`fields`).
    pub projects: bool,
    /// What serves it.
    pub kind: RouteKind,
    /// Response caching, for GET/HEAD.
    pub cache: Option<Arc<RouteCache>>,
    /// Sync writes run once per `Idempotency-Key`.
    pub idempotency: Option<Arc<RouteIdempotency>>,
    /// Body bytes in from the upstream and out to clients.
    pub traffic: Arc<Traffic>,
    /// The route's layers over its upstream or topic (see [`stack`]).
    service: RouteService,
    meters: RouteMeters,
    /// Graph node and live stats of this route.
    node: String,
    stats: Arc<RouteStats>,
    /// Graph node and live stats of what it calls (upstream or topic).
    callee: (String, EdgeKind, Option<Arc<RouteStats>>),
    /// The graph edge route → callee, held once the first call made it (it
    /// is the same for every call; the graph never drops an edge).
    callee_edge: std::sync::OnceLock<Arc<RouteStats>>,
}

impl Route {
    /// The name of what the route calls: its upstream, or `topic:NAME`.
    pub fn callee_name(&self) -> &str {
        match &self.kind {
            RouteKind::Sync { upstream } => upstream.name(),
            RouteKind::Async(_) => &self.callee.0,
        }
    }

    /// The longest a call of the route's upstream may take (zero for async routes).
    pub fn longest_call(&self) -> Duration {
        match &self.kind {
            RouteKind::Sync { upstream } => upstream.longest_call(),
            RouteKind::Async(_) => Duration::ZERO,
        }
    }
}

/// A route's cache settings and counters.
pub struct RouteCache {
    /// Freshness and stale rules for storing.
    pub rules: RouteRules,
    /// Tag templates.
    pub tags: Vec<String>,
    /// Request headers (lower case) that always select variants.
    pub vary: Vec<String>,
    /// Variants kept per URI.
    pub max_variants: usize,
    /// Clients' `Cache-Control` is honoured.
    pub honour_request_directives: bool,
    /// A request `Cookie` counts as a credential.
    pub cookie_is_credential: bool,
    /// `junction_cache_hits_total{route}`.
    pub hits: Counter,
    /// `junction_cache_misses_total{route}`.
    pub misses: Counter,
    /// `junction_cache_stale_serves_total{route}`.
    pub stale: Counter,
    /// `junction_cache_revalidations_total{route}`.
    pub revalidated: Counter,
    /// `junction_cache_bypasses_total{route}`.
    pub bypassed: Counter,
}

/// How a route is served.
pub enum RouteKind {
    /// Proxied to an upstream.
    Sync { upstream: Arc<Upstream> },
    /// Enqueued durably and fanned out to subscribers.
    Async(Arc<AsyncRoute>),
}

/// A value, or `-` when there is none (the access line's convention).
struct OrDash<T>(Option<T>);

impl<T: std::fmt::Display> std::fmt::Display for OrDash<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("-"),
        }
    }
}

/// Who sent a request and in which trace, for the access log.
struct Who {
    /// The client's address.
    client: std::net::SocketAddr,
    /// The caller header's value, when sent.
    caller: Option<String>,
    /// The request's trace (`None` when a request no route matched came without one).
    trace: Option<TraceId>,
}

/// What the handler learned, for the access log.
#[derive(Default)]
pub struct Outcome {
    /// Upstream that served (or refused) the request.
    pub upstream: Option<String>,
    /// Attempts sent upstream.
    pub attempts: u32,
}

impl Gateway {
    /// The live state to build the next gateway around (a reload).
    pub fn live_state(&self) -> LiveState {
        LiveState {
            cache: self.cache.clone(),
            idempotency: self.idempotency.clone(),
            live: self.live.clone(),
            rate_limits: self.rate_limits.clone(),
            buffers: self.buffers.clone(),
        }
    }

    /// Whether a `GET` of `path` is served by a cached route.
    pub fn is_cached_get(&self, path: &str) -> bool {
        self.router
            .find(&Method::GET, path)
            .is_some_and(|m| m.route.cache.is_some())
    }

    /// Drops every cache entry with one of `tags` (errors degrade to a warning and a metric).
    pub async fn invalidate_tags(&self, tags: &[String]) {
        for tag in tags {
            match self.cache.invalidate_tag(tag).await {
                Ok(n) => tracing::debug!(%tag, dropped = n, "cache tag invalidated"),
                Err(e) => self.degraded(&e),
            }
        }
    }

    /// Records a cache backend failure; the request goes on without the cache.
    pub fn degraded(&self, e: &junction_cache::CacheError) {
        self.cache_metrics.degraded.inc();
        tracing::warn!(error = %crate::proxy::upstream::error_chain(e), "cache backend failed; passing through");
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The cache's metric families.
    pub fn cache_metrics(&self) -> &CacheMetrics {
        &self.cache_metrics
    }

    /// Every route, in config order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// Upstreams by name (admin API, metrics).
    pub fn upstreams(&self) -> &BTreeMap<String, Arc<Upstream>> {
        &self.upstreams
    }

    /// Answers one request, inside its trace span when tracing is on.
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>, client: Client) -> Response<Body> {
        if !otel::enabled() {
            return self.respond(req, client).await;
        }
        let span = otel::request_span(req.method(), req.uri().path(), req.headers());
        let resp = self.respond(req, client).instrument(span.clone()).await;
        otel::record_response(&span, &resp);
        resp
    }

    async fn respond(
        self: Arc<Self>,
        mut req: Request<Incoming>,
        client: Client,
    ) -> Response<Body> {
        let peer = client.addr;
        let start = Instant::now();
        let method = req.method().clone();
        let path = req.uri().path().to_string();
        let caller_value = req
            .headers()
            .get(&self.caller_header)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty());
        let mut who = Who {
            client: peer,
            caller: caller_value.map(str::to_owned),
            trace: None,
        };
        let Some(matched) = self.router.find(&method, &path) else {
            who.trace = TraceId::sent(req.headers());
            let resp = GatewayError::NoRoute {
                method: method.to_string(),
                path: path.clone(),
            }
            .into_response();
            self.record(
                &self.no_route,
                &who,
                &method,
                &path,
                &resp,
                &Outcome::default(),
                start,
            );
            return resp;
        };
        let route = matched.route;
        otel::record_route(&route.name);
        let observing = self
            .live
            .analysis
            .enabled()
            .then(|| tap::sample_of(&req, &route, &who.client, who.caller.as_deref()));
        // One trace id from here on: the span's when tracing is on, else the
        // caller's `traceparent` (or a new one, added so every hop keeps it).
        who.trace =
            Some(otel::current_trace_id().unwrap_or_else(|| TraceId::ensure(req.headers_mut())));
        let caller = client.caller_node(who.caller.as_deref());
        let cx = Arc::new(CallContext::new(
            self.clone(),
            route.clone(),
            matched.params,
            &client,
        ));
        let (head, body) = req.into_parts();
        let (body, request_digest) = match &observing {
            Some(s) if !s.is_read() => {
                let (body, digest) = tap::ClientBody::hashed(body);
                (body, Some(digest))
            }
            _ => (tap::ClientBody::plain(body), None),
        };
        let call = Call {
            head,
            body: CallBody::Client(body),
            cx: cx.clone(),
        };
        let result = route.service.clone().oneshot(call).await;
        let outcome = Outcome {
            upstream: cx.dispatched().then(|| route.callee_name().to_owned()),
            attempts: cx.attempts(),
        };
        if let Some(reason) = result.as_ref().err().and_then(GatewayError::client_fault) {
            self.proxy_metrics
                .client_errors
                .get_or_create(&ClientFaultLabel {
                    route: route.name.clone(),
                    reason,
                })
                .inc();
        }
        let resp = result.unwrap_or_else(GatewayError::into_response);
        self.observe(&route, &caller, &resp, &outcome, start.elapsed());
        self.record(&route.meters, &who, &method, &path, &resp, &outcome, start);
        match observing {
            Some(mut sample) => {
                sample.latency_us = start.elapsed().as_micros() as u64;
                // An async route's callee is its topic, not an upstream.
                if matches!(route.kind, RouteKind::Sync { .. }) {
                    sample.upstream = outcome.upstream;
                }
                tap::observe(resp, sample, self.live.clone(), request_digest)
            }
            None => resp,
        }
    }

    /// Feeds the live stats and the dependency graph: caller → route → upstream/topic.
    fn observe(
        &self,
        route: &Route,
        caller: &str,
        resp: &Response<Body>,
        outcome: &Outcome,
        latency: Duration,
    ) {
        let status = resp.status().as_u16();
        let failed = resp.status().is_server_error();
        let retried = outcome.attempts > 1;
        route.stats.record_status(latency, failed, status);
        let graph = &self.live.graph;
        graph.record_ref(
            caller,
            &route.node,
            EdgeKind::Sync,
            latency,
            failed,
            retried,
        );
        let (callee, kind, stats) = &route.callee;
        let reached = match kind {
            EdgeKind::Sync => outcome.attempts > 0,
            EdgeKind::Async => resp.status().is_success(),
        };
        if reached {
            let edge = match route.callee_edge.get() {
                Some(edge) => Some(edge),
                None => graph
                    .edge(&route.node, callee, *kind)
                    .map(|e| route.callee_edge.get_or_init(|| e)),
            };
            match edge {
                Some(edge) => edge.record_at(tokio::time::Instant::now(), latency, failed, retried),
                // The graph is full: counted as dropped.
                None => graph.note_dropped(),
            }
            if let Some(s) = stats {
                s.record_status(latency, failed, status);
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        meters: &RouteMeters,
        who: &Who,
        method: &Method,
        path: &str,
        resp: &Response<Body>,
        outcome: &Outcome,
        start: Instant,
    ) {
        let elapsed = start.elapsed();
        let status = resp.status().as_u16();
        let route = meters.route.as_str();
        meters.requests.inc(status);
        meters.duration.observe(elapsed.as_secs_f64());
        tracing::info!(
            target: "junction::access",
            method = %method,
            path,
            route,
            status,
            upstream = outcome.upstream.as_deref().unwrap_or("-"),
            duration_us = elapsed.as_micros() as u64,
            client = %who.client,
            caller = who.caller.as_deref().unwrap_or("-"),
            trace_id = %OrDash(who.trace),
            attempts = outcome.attempts,
            cache = resp.headers().get("x-junction-cache").and_then(|v| v.to_str().ok()).unwrap_or("-"),
        );
    }
}
