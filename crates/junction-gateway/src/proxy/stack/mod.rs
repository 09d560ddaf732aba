//! A route's request path as a stack of tower layers over one service.
//!
//! Why it exists: a route's policies (rate limit, invalidation, shaping, the
//! cache, idempotency, the upstream's own protections) are independent
//! concerns that meet on every request. As layers, each is one small service
//! that sees only what it needs, they compose in one visible order, and a
//! route pays only for the layers its config asks for.
//!
//! The order is in [`sync_stack`] and [`async_stack`], one line each saying
//! why a layer sits where it does. Every layer takes a [`Call`]; below the
//! shape layer, services answer with an [`Answer`](super::call::Answer) (an
//! upstream response still streaming, or a whole one from storage), which the
//! shape layer turns into the client's response.

mod invalidate;
mod rate_limit;
mod shape;
mod upstream;

use super::cached::CacheLayer;
use super::call::Call;
use super::idempotent::IdempotencyLayer;
use super::{RouteCache, Traffic};
use crate::body::Body;
use crate::pipeline::AsyncRoute;
use crate::problem::GatewayError;
use governor::DefaultDirectRateLimiter;
use http::Response;
use junction_cache::FieldSet;
use std::sync::Arc;
use tower::util::BoxCloneSyncService;
use tower::ServiceBuilder;

pub use invalidate::InvalidateLayer;
pub use rate_limit::RateLimitLayer;
pub use shape::ShapeLayer;
pub use upstream::UpstreamService;

/// A route's whole stack: a client request in, the client's response out.
pub type RouteService = BoxCloneSyncService<Call, Response<Body>, GatewayError>;

/// What a sync route's stack is built from.
pub struct SyncParts {
    /// The route's rate limiter.
    pub rate_limiter: Option<Arc<DefaultDirectRateLimiter>>,
    /// Some route of the gateway caches (unsafe requests then invalidate).
    pub any_cached: bool,
    /// The route's `invalidate:` tag templates.
    pub invalidate: Vec<String>,
    /// The route's default projection.
    pub fields: Option<Arc<FieldSet>>,
    /// The route's byte counters.
    pub traffic: Arc<Traffic>,
    /// The route's cache settings.
    pub cache: Option<Arc<RouteCache>>,
    /// The route's idempotency settings.
    pub idempotency: Option<Arc<super::idempotent::RouteIdempotency>>,
    /// The upstream and the route's retry opt-in.
    pub upstream: UpstreamService,
}

/// The stack of a sync route, outermost first.
pub fn sync_stack(route: &str, parts: SyncParts) -> RouteService {
    let reads_cached = parts.cache.is_some();
    let stack = ServiceBuilder::new()
        // Refuse an over-limit caller before any work is done for it.
        .option_layer(parts.rate_limiter.map(|l| RateLimitLayer::new(route, l)))
        // Sees the final answer of a write, whoever gave it, and drops what it made stale.
        .option_layer(InvalidateLayer::new(
            parts.any_cached,
            parts.invalidate,
            reads_cached,
        ))
        // Projects and validates what the client gets, so everything below keeps whole answers
        // (one stored response serves every `?fields=`).
        .layer(ShapeLayer::new(
            parts.fields,
            parts.traffic,
            parts.upstream.name(),
        ))
        // Runs a write once per Idempotency-Key: a replay needs neither the cache nor the
        // upstream (reads the cache answers pass by).
        .option_layer(
            parts
                .idempotency
                .map(|i| IdempotencyLayer::new(i, reads_cached)),
        )
        // Answers GET/HEAD from storage; passes other methods down untouched.
        .option_layer(parts.cache.map(CacheLayer::new))
        // The upstream with its own protections: retry → bulkhead → breaker → timeout → transport.
        .service(parts.upstream);
    RouteService::new(stack)
}

/// The stack of an async route, outermost first.
pub fn async_stack(
    route: &str,
    rate_limiter: Option<Arc<DefaultDirectRateLimiter>>,
    any_cached: bool,
    topic: Arc<AsyncRoute>,
) -> RouteService {
    let stack = ServiceBuilder::new()
        // Refuse an over-limit producer before its body is read.
        .option_layer(rate_limiter.map(|l| RateLimitLayer::new(route, l)))
        // An accepted event is a write: the GETs of its URI are stale.
        .option_layer(InvalidateLayer::new(any_cached, Vec::new(), false))
        // Store durably, answer 202.
        .service(crate::pipeline::ingest::IngestService::new(topic));
    RouteService::new(stack)
}
