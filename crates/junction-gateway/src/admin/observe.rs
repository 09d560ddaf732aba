//! Views of live state (Prometheus metrics, breakers) and cache invalidation.

use super::AdminState;
use crate::pipeline::metrics::PipelineMetrics;
use crate::proxy::cached::metrics::CacheMetrics;
use crate::proxy::upstream::UpstreamMetrics;
use crate::telemetry::live::SubscriberState;
use crate::telemetry::metrics::{SubscriberLabel, SubscriberStateLabel, TopicLabel, UpstreamLabel};
use axum::extract::State;
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

pub(super) async fn metrics(State(state): State<AdminState>) -> Response {
    // Gauges that mirror state are refreshed at scrape time.
    let gw = state.gateway();
    let stats = gw.cache.stats();
    let cache = state.metrics.set::<CacheMetrics>();
    cache.count_evictions(stats.evictions);
    cache.entries.set(stats.entries.unwrap_or(0) as i64);
    cache.bytes.set(stats.bytes.unwrap_or(0) as i64);
    if let Some(queue) = &state.queue {
        let pipeline = state.metrics.set::<PipelineMetrics>();
        let depth = queue.ledger.depth();
        for (topic, n) in &depth.topics {
            pipeline
                .queue_depth
                .get_or_create(&TopicLabel {
                    topic: topic.clone(),
                })
                .set(*n as i64);
        }
        for (topic, n) in &depth.dlq {
            pipeline
                .dlq_depth
                .get_or_create(&TopicLabel {
                    topic: topic.clone(),
                })
                .set(*n as i64);
        }
        let now_ms = junction_cache::entry::now_ms();
        for s in gw.live.current_subscribers() {
            let label = SubscriberLabel {
                subscriber: s.name.clone(),
            };
            let backlog = depth.subscribers.get(&s.name).copied();
            if let Some(n) = backlog {
                pipeline
                    .subscriber_backlog
                    .get_or_create(&label)
                    .set(n as i64);
            }
            let age = s.oldest_age_ms(backlog, now_ms).unwrap_or(0);
            pipeline
                .subscriber_oldest_age
                .get_or_create(&label)
                .set(age as f64 / 1000.0);
            let current = s.state();
            for st in SubscriberState::ALL {
                pipeline
                    .subscriber_state
                    .get_or_create(&SubscriberStateLabel {
                        subscriber: s.name.clone(),
                        state: st.as_str(),
                    })
                    .set(i64::from(st == current));
            }
        }
    }
    let upstreams = state.metrics.set::<UpstreamMetrics>();
    for (name, u) in gw.upstreams() {
        let label = UpstreamLabel {
            upstream: name.clone(),
        };
        upstreams
            .breaker_state
            .get_or_create(&label)
            .set(u.breaker().state().as_gauge());
        upstreams
            .concurrency_limit
            .get_or_create(&label)
            .set(u.bulkhead().limit() as i64);
    }
    let mut resp = state.metrics.encode().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

pub(super) async fn breakers(State(state): State<AdminState>) -> Json<serde_json::Value> {
    let gw = state.gateway();
    let list: Vec<_> = gw
        .upstreams()
        .iter()
        .map(|(name, u)| {
            let s = u.breaker().snapshot();
            let cfg = u.breaker().config();
            json!({
                "upstream": name,
                "state": s.state.as_str(),
                "error_ratio": s.error_ratio,
                "calls_in_window": s.calls_in_window,
                "failures_in_window": s.failures_in_window,
                "next_probe_in_ms": s.next_probe_in.map(|d| d.as_millis() as u64),
                "next_probe_at": s.next_probe_in.map(|d| httpdate::fmt_http_date(std::time::SystemTime::now() + d)),
                "times_opened": s.times_opened,
                "in_flight": u.bulkhead().in_flight(),
                "max_concurrency": u.bulkhead().max(),
                "concurrency_limit": u.bulkhead().limit(),
                "config": {
                    "error_threshold_percentage": cfg.error_threshold * 100.0,
                    "min_requests": cfg.min_requests,
                    "window_ms": cfg.window.as_millis() as u64,
                    "reset_timeout_ms": cfg.reset_timeout.as_millis() as u64,
                },
            })
        })
        .collect();
    Json(json!({ "breakers": list }))
}

/// Query of `DELETE /admin/cache`.
#[derive(serde::Deserialize)]
pub(super) struct InvalidateQuery {
    tag: Option<String>,
    key: Option<String>,
}

/// `DELETE /admin/cache?tag=T` or `?key=K`: drops entries on every instance sharing the store.
pub(super) async fn invalidate_cache(
    State(state): State<AdminState>,
    axum::extract::Query(q): axum::extract::Query<InvalidateQuery>,
) -> Response {
    let gw = state.gateway();
    let cache = &gw.cache;
    let result = match (&q.tag, &q.key) {
        (Some(tag), None) => cache
            .invalidate_tag(tag)
            .await
            .map(|n| json!({ "tag": tag, "dropped": n })),
        (None, Some(key)) => cache
            .invalidate_key(key)
            .await
            .map(|found| json!({ "key": key, "dropped": u64::from(found) })),
        _ => {
            return super::problem(
                axum::http::StatusCode::BAD_REQUEST,
                "give exactly one of ?tag= or ?key=",
            );
        }
    };
    match result {
        Ok(v) => Json(v).into_response(),
        Err(e) => super::problem(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            &crate::proxy::upstream::error_chain(&e),
        ),
    }
}

/// `GET /admin/recommendations`: what to change, from the traffic observed
/// (`analyze.enabled`), ranked, with evidence, gain, risk and config.
pub(super) async fn recommendations(State(state): State<AdminState>) -> Response {
    let gw = state.gateway();
    Json(gw.live.analysis.report(&gw.analysis_known())).into_response()
}
