//! The admin API: metrics, health, breakers (and, as they land, messages, DLQ, cache, dashboard).
//!
//! Handlers are thin: they read shared state and serialize it. When
//! `admin.token_env` names a set variable, every path but `/healthz` and
//! `/readyz` needs `Authorization: Bearer <token>`.

use crate::proxy::Gateway;
use crate::telemetry::metrics::UpstreamLabel;
use crate::telemetry::Metrics;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// State shared by admin handlers.
#[derive(Clone)]
pub struct AdminState {
    /// The data plane (routes, upstreams, breakers).
    pub gateway: Arc<Gateway>,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Set once every component is up.
    pub ready: Arc<AtomicBool>,
    /// Bearer token, when configured.
    pub token: Option<Arc<str>>,
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/metrics", get(metrics))
        .route("/admin/breakers", get(breakers))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .merge(protected)
        .with_state(state)
}

async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if given != Some(token.as_ref()) {
            return problem(
                StatusCode::UNAUTHORIZED,
                "a valid admin bearer token is required",
            );
        }
    }
    next.run(req).await
}

/// A problem+json response for admin errors.
pub fn problem(status: StatusCode, detail: &str) -> Response {
    let body = json!({
        "type": "about:blank",
        "title": status.canonical_reason().unwrap_or("Error"),
        "status": status.as_u16(),
        "detail": detail,
    });
    let mut resp = (status, body.to_string()).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/problem+json"),
    );
    resp
}

async fn readyz(State(state): State<AdminState>) -> Response {
    if state.ready.load(Ordering::Acquire) {
        "ready\n".into_response()
    } else {
        problem(StatusCode::SERVICE_UNAVAILABLE, "starting")
    }
}

async fn metrics(State(state): State<AdminState>) -> Response {
    // Gauges that mirror state are refreshed at scrape time.
    for (name, u) in state.gateway.upstreams() {
        state
            .metrics
            .breaker_state
            .get_or_create(&UpstreamLabel {
                upstream: name.clone(),
            })
            .set(u.breaker().state().as_gauge());
    }
    let mut resp = state.metrics.encode().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

async fn breakers(State(state): State<AdminState>) -> Json<serde_json::Value> {
    let list: Vec<_> = state
        .gateway
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
