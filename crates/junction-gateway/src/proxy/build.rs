//! Building a [`Gateway`] from a validated config: each route's service
//! stack (sync proxy, cached, async ingest), meters, graph node and limits.

use super::cached::metrics::CacheMetrics;
use super::idempotent::RouteIdempotency;
use super::meters::{ProxyMetrics, RouteMeters, Traffic};
use super::router::Router;
use super::stack::{SyncParts, UpstreamService};
use super::upstream::Upstream;
use super::{stack, Gateway, LiveState, RateLimits, Route, RouteCache, RouteKind};
use crate::config::{Config, RouteConfig};
use crate::pipeline::AsyncRoute;
use crate::telemetry::live::Live;
use crate::telemetry::metrics::{RouteLabel, UNMATCHED_ROUTE};
use crate::telemetry::Metrics;
use anyhow::Context;
use http::{HeaderName, Method};
use junction_cache::policy::RouteRules;
use junction_cache::{Coalescer, FieldSet};
use junction_telemetry::graph::node_id;
use junction_telemetry::{EdgeKind, NodeKind};
use std::collections::BTreeMap;
use std::sync::Arc;

impl Gateway {
    /// Builds routes and upstreams from a validated config.
    pub fn build(
        config: &Config,
        metrics: Metrics,
        upstreams: BTreeMap<String, Arc<Upstream>>,
        async_routes: &BTreeMap<String, Arc<AsyncRoute>>,
        state: LiveState,
    ) -> anyhow::Result<Self> {
        let LiveState {
            cache,
            idempotency,
            live,
            rate_limits,
            buffers,
        } = state;
        rate_limits.retain(&config.routes);
        live.analysis.configure(&config.analyze);
        // Some route caches: unsafe requests on every route then invalidate what they change.
        let any_cached = config.routes.iter().any(|r| r.cache.is_some());
        let mut router = Router::default();
        let mut routes = Vec::new();
        for rc in &config.routes {
            let route = Arc::new(Self::build_route(
                rc,
                &upstreams,
                async_routes,
                &metrics,
                &live,
                &rate_limits,
                any_cached,
            )?);
            let method = match &rc.matcher.method {
                Some(m) => Some(Method::from_bytes(m.to_ascii_uppercase().as_bytes())?),
                None => None,
            };
            routes.push(route.clone());
            router
                .insert(method, &rc.matcher.path, route)
                .with_context(|| format!("route {}", rc.name))?;
        }
        let proxy_metrics = metrics.set::<ProxyMetrics>();
        let no_route = RouteMeters::new(&proxy_metrics, UNMATCHED_ROUTE);
        Ok(Self {
            router,
            routes,
            no_route,
            cache,
            idempotency,
            coalescer: Coalescer::new(),
            live,
            rate_limits,
            buffers,
            proxy_metrics,
            cache_metrics: metrics.set::<CacheMetrics>(),
            metrics,
            upstreams,
            max_body: config.limits.max_body.0,
            caller_header: HeaderName::from_bytes(config.telemetry.caller_header.as_bytes())?,
        })
    }

    fn build_route(
        rc: &RouteConfig,
        upstreams: &BTreeMap<String, Arc<Upstream>>,
        async_routes: &BTreeMap<String, Arc<AsyncRoute>>,
        metrics: &Metrics,
        live: &Live,
        rate_limits: &RateLimits,
        any_cached: bool,
    ) -> anyhow::Result<Route> {
        let kind = match (&rc.upstream, async_routes.get(&rc.name)) {
            (Some(name), _) => RouteKind::Sync {
                upstream: upstreams
                    .get(name)
                    .cloned()
                    .with_context(|| format!("unknown upstream {name}"))?,
            },
            (None, Some(a)) => RouteKind::Async(a.clone()),
            (None, None) => anyhow::bail!(
                "route {} has neither an upstream nor an async topic",
                rc.name
            ),
        };
        let rate_limiter = rc
            .rate_limit
            .as_ref()
            .map(|rl| rate_limits.get(&rc.name, rl));
        let proxy_metrics = metrics.set::<ProxyMetrics>();
        let cache_metrics = metrics.set::<CacheMetrics>();
        let label = RouteLabel {
            route: rc.name.clone(),
        };
        let callee = match &kind {
            RouteKind::Sync { upstream } => (
                node_id(NodeKind::Upstream, upstream.name()),
                EdgeKind::Sync,
                Some(live.upstreams.get_or_create(upstream.name())),
            ),
            RouteKind::Async(a) => (node_id(NodeKind::Topic, &a.topic), EdgeKind::Async, None),
        };
        let cache = match &rc.cache {
            Some(c) => Some(Arc::new(RouteCache {
                rules: RouteRules {
                    ttl: c.ttl.0,
                    force_ttl: c.override_ttl,
                    stale_while_revalidate: c.stale_while_revalidate.map(|d| d.0),
                    stale_if_error: c.stale_if_error.map(|d| d.0),
                    cache_errors: c.cache_errors,
                },
                tags: c.tags.clone(),
                vary: c
                    .vary
                    .iter()
                    .map(|h| HeaderName::from_bytes(h.as_bytes()).map(|n| n.as_str().to_owned()))
                    .collect::<Result<_, _>>()?,
                max_variants: c.max_variants.max(1) as usize,
                honour_request_directives: !c.ignore_request_cache_control,
                cookie_is_credential: c.cookie_is_credential,
                hits: cache_metrics.hits.get_or_create(&label).clone(),
                misses: cache_metrics.misses.get_or_create(&label).clone(),
                stale: cache_metrics.stale.get_or_create(&label).clone(),
                revalidated: cache_metrics.revalidated.get_or_create(&label).clone(),
                bypassed: cache_metrics.bypassed.get_or_create(&label).clone(),
            })),
            None => None,
        };
        let fields = match &rc.fields {
            Some(list) => {
                Some(Arc::new(FieldSet::parse(&list.join(",")).map_err(|e| {
                    anyhow::anyhow!("route {}: fields: {e}", rc.name)
                })?))
            }
            None => None,
        };
        let idempotency = rc
            .idempotency
            .as_ref()
            .map(|i| Arc::new(RouteIdempotency::new(&rc.name, i.ttl.0, metrics)));
        let traffic = Arc::new(Traffic::new(&proxy_metrics, &rc.name));
        let service = match &kind {
            RouteKind::Sync { upstream } => stack::sync_stack(
                &rc.name,
                SyncParts {
                    rate_limiter,
                    any_cached,
                    invalidate: rc.invalidate.clone(),
                    fields,
                    traffic: traffic.clone(),
                    cache: cache.clone(),
                    idempotency: idempotency.clone(),
                    upstream: UpstreamService::new(
                        upstream.clone(),
                        rc.path.as_deref(),
                        rc.retry_non_idempotent,
                    ),
                },
            ),
            RouteKind::Async(a) => {
                stack::async_stack(&rc.name, rate_limiter, any_cached, a.clone())
            }
        };
        let node = node_id(NodeKind::Route, &rc.name);
        Ok(Route {
            name: rc.name.clone(),
            template: rc.matcher.path.clone(),
            projects: rc.fields.is_some(),
            kind,
            cache,
            idempotency,
            traffic,
            service,
            meters: RouteMeters::new(&proxy_metrics, &rc.name),
            node,
            stats: live.routes.get_or_create(&rc.name),
            callee,
            callee_edge: std::sync::OnceLock::new(),
        })
    }
}
