//! The live views: `GET /admin/overview` (what the dashboard and `junction top`
//! show), `GET /admin/dependencies` (JSON or Graphviz DOT) and the dashboard page.
//! Shapes are documented in `junction_telemetry::dashboard`.

use super::AdminState;
use crate::proxy::RouteKind;
use axum::extract::{Query, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use junction_cache::entry::now_ms;
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use tokio::time::Instant;

/// `GET /`: the dashboard (holds no data; its API calls carry the token).
pub(super) async fn dashboard() -> Response {
    let mut resp = junction_telemetry::dashboard::index_html().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(junction_telemetry::dashboard::CONTENT_TYPE),
    );
    resp
}

/// `GET /admin/overview`.
pub(super) async fn overview(State(state): State<AdminState>) -> Json<Value> {
    let gw = &state.gateway();
    let live = &gw.live;
    let now = Instant::now();
    let routes: Vec<Value> = gw
        .routes()
        .iter()
        .map(|r| {
            let s = live.routes.get_or_create(&r.name).snapshot(now);
            json!({
                "name": r.name,
                "kind": if matches!(r.kind, RouteKind::Async(_)) { "async" } else { "sync" },
                "rps": s.rps, "p50_ms": s.p50_ms, "p99_ms": s.p99_ms,
                "error_ratio": s.error_ratio, "count_total": s.count_total,
            })
        })
        .collect();
    let upstreams: Vec<Value> = gw
        .upstreams()
        .iter()
        .map(|(name, u)| {
            let b = u.breaker().snapshot();
            let s = live.upstreams.get_or_create(name).snapshot(now);
            json!({
                "name": name, "state": b.state.as_str(), "error_ratio": b.error_ratio,
                "calls_in_window": b.calls_in_window,
                "next_probe_in_ms": b.next_probe_in.map(|d| d.as_millis() as u64),
                "in_flight": u.bulkhead().in_flight(), "max_concurrency": u.bulkhead().max(),
                "concurrency_limit": u.bulkhead().limit(),
                "rps": s.rps, "p99_ms": s.p99_ms,
            })
        })
        .collect();
    let cached: Vec<_> = gw
        .routes()
        .iter()
        .filter_map(|r| r.cache.as_ref())
        .collect();
    let cache = (!cached.is_empty()).then(|| {
        let hits: u64 = cached.iter().map(|c| c.hits.get() + c.stale.get()).sum();
        let misses: u64 = cached.iter().map(|c| c.misses.get()).sum();
        let stats = gw.cache.stats();
        json!({
            "hits": hits, "misses": misses,
            "hit_ratio": if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 },
            "entries": stats.entries, "bytes": stats.bytes,
            "bytes_saved": gw.cache_metrics().bytes_saved.get(),
            "backend": gw.cache.backend(),
        })
    });
    let subscribers = live.current_subscribers();
    let depth = state.queue.as_ref().map(|q| q.ledger.depth());
    let now_ms = now_ms();
    let queues: Vec<Value> = match &depth {
        Some(depth) => depth
            .topics
            .iter()
            .map(|(topic, n)| {
                // Delivery lag: age of the oldest message a subscriber of this topic is on.
                let lag = (*n > 0)
                    .then(|| {
                        subscribers
                            .iter()
                            .filter(|s| &s.topic == topic)
                            .map(|s| s.last_enqueued_ms.load(Ordering::Relaxed))
                            .filter(|t| *t > 0)
                            .min()
                            .map(|t| now_ms.saturating_sub(t))
                    })
                    .flatten();
                json!({
                    "topic": topic, "depth": n,
                    "dlq_depth": depth.dlq.get(topic).copied().unwrap_or(0),
                    "oldest_pending_age_ms": lag,
                })
            })
            .collect(),
        None => Vec::new(),
    };
    let subscribers: Vec<Value> = subscribers
        .iter()
        .map(|s| {
            let backlog = depth
                .as_ref()
                .and_then(|d| d.subscribers.get(&s.name).copied());
            json!({
                "name": s.name, "topic": s.topic,
                "state": s.state().as_str(),
                "backlog": backlog,
                "oldest_pending_age_ms": s.oldest_age_ms(backlog, now_ms),
                "delivered": s.delivered.load(Ordering::Relaxed),
                "retrying": s.retrying.load(Ordering::Relaxed).max(0),
                "dead": s.dead.load(Ordering::Relaxed),
                "p99_ms": s.stats.snapshot(now).p99_ms,
            })
        })
        .collect();
    Json(json!({
        "uptime_s": live.uptime().as_secs(),
        "config_sha256": state.reloader.config_sha256(),
        "routes": routes,
        "upstreams": upstreams,
        "cache": cache,
        "queues": queues,
        "subscribers": subscribers,
    }))
}

/// Query of `GET /admin/dependencies`.
#[derive(Deserialize)]
pub(super) struct GraphQuery {
    format: Option<String>,
}

/// `GET /admin/dependencies` (JSON) or `?format=dot` (Graphviz).
pub(super) async fn dependencies(
    State(state): State<AdminState>,
    Query(q): Query<GraphQuery>,
) -> Response {
    let gw = state.gateway();
    let graph = &gw.live.graph;
    match q.format.as_deref() {
        Some("dot") => {
            let mut resp = graph.to_dot().into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/vnd.graphviz; charset=utf-8"),
            );
            resp
        }
        Some("json") | None => Json(graph.snapshot()).into_response(),
        Some(other) => super::problem(
            axum::http::StatusCode::BAD_REQUEST,
            &format!("unknown format {other:?}; use json or dot"),
        ),
    }
}

/// Which series `GET /admin/drill` shows: exactly one of them.
#[derive(Deserialize)]
pub(super) struct DrillQuery {
    route: Option<String>,
    upstream: Option<String>,
    subscriber: Option<String>,
}

/// `GET /admin/drill?route=NAME` (or `upstream=`, `subscriber=`): the last
/// hour at 10 s, answers by status and the latency histogram of one series.
pub(super) async fn drill(
    State(state): State<AdminState>,
    Query(q): Query<DrillQuery>,
) -> Response {
    let gw = state.gateway();
    let live = &gw.live;
    let (kind, name, stats) = match (q.route, q.upstream, q.subscriber) {
        (Some(n), None, None) => {
            let known = gw.routes().iter().any(|r| r.name == n);
            (
                "route",
                n.clone(),
                known.then(|| live.routes.get(&n)).flatten(),
            )
        }
        (None, Some(n), None) => {
            let known = gw.upstreams().contains_key(&n);
            (
                "upstream",
                n.clone(),
                known.then(|| live.upstreams.get(&n)).flatten(),
            )
        }
        (None, None, Some(n)) => {
            let s = live
                .subscribers
                .read()
                .iter()
                .find(|s| s.name == n)
                .map(|s| s.stats.clone());
            ("subscriber", n, s)
        }
        _ => {
            return super::problem(
                axum::http::StatusCode::BAD_REQUEST,
                "give exactly one of route=, upstream=, subscriber=",
            )
        }
    };
    match stats.and_then(|s| s.history(Instant::now())) {
        Some(h) => Json(json!({ "kind": kind, "name": name, "history": h })).into_response(),
        None => super::problem(
            axum::http::StatusCode::NOT_FOUND,
            &format!("no {kind} {name} (or nothing recorded for it yet)"),
        ),
    }
}
