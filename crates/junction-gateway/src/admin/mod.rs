//! The admin API: metrics, health, breakers, messages, dead letters.
//!
//! Handlers are thin: they read shared state and serialize it. When
//! `admin.token_env` names a set variable, every path but `/healthz`,
//! `/readyz`, the OpenAPI document and the dashboard's static page (which hold
//! no data; the page asks for the token its API calls carry) needs
//! `Authorization: Bearer <token>`.

mod dlq;
mod observe;
mod openapi;
mod overview;
mod peek;
mod queue;

use crate::proxy::{Gateway, SharedGateway};
use crate::telemetry::Metrics;
use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use junction_queue::Queue;
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// State shared by admin handlers.
#[derive(Clone)]
pub struct AdminState {
    /// The data plane (routes, upstreams, breakers), as a reload last left it.
    pub gateways: SharedGateway,
    /// Applies `POST /admin/reload`.
    pub reloader: Arc<crate::reload::Reloader>,
    /// The queue, when any route is async.
    pub queue: Option<Queue>,
    /// Metrics registry.
    pub metrics: Metrics,
    /// Set once every component is up.
    pub ready: Arc<AtomicBool>,
    /// Bearer token, when configured.
    pub token: Option<Arc<str>>,
    /// What dead letters' payloads may be shown (set at start, not reloaded).
    pub payload_peek: Arc<crate::config::PayloadPeekConfig>,
}

impl AdminState {
    /// The current data plane.
    pub fn gateway(&self) -> Arc<Gateway> {
        self.gateways.load_full()
    }
}

/// The admin router.
pub fn router(state: AdminState) -> Router {
    let protected = Router::new()
        .route("/metrics", get(observe::metrics))
        .route("/admin/breakers", get(observe::breakers))
        .route("/admin/overview", get(overview::overview))
        .route("/admin/dependencies", get(overview::dependencies))
        .route("/admin/recommendations", get(observe::recommendations))
        .route("/admin/drill", get(overview::drill))
        .route("/admin/cache", delete(observe::invalidate_cache))
        .route("/admin/messages/{id}", get(queue::message))
        .route("/admin/dlq", get(queue::dlq_list))
        .route("/admin/dlq/replay", post(queue::dlq_replay_all))
        .route("/admin/dlq/purge", post(queue::dlq_purge_all))
        .route("/admin/dlq/{id}/replay", post(queue::dlq_replay))
        .route("/admin/dlq/{id}", delete(queue::dlq_purge))
        .route("/admin/dlq/{id}/payload", get(peek::dlq_payload))
        .route("/admin/reload", post(reload))
        .route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/", get(overview::dashboard))
        .route("/admin/openapi.json", get(openapi::document))
        .merge(protected)
        .fallback(|| async { problem(StatusCode::NOT_FOUND, "no such admin path") })
        .layer(middleware::from_fn(problems_only))
        .with_state(state)
}

/// Every admin error is problem+json: the extractors' own rejections (a bad
/// `?limit=`, a body without a JSON content type, 405s) come as plain text,
/// so they are rewrapped here, in the one place.
async fn problems_only(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    let plain = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_none_or(|v| v.as_bytes().starts_with(b"text/plain"));
    if !(status.is_client_error() || status.is_server_error()) || !plain {
        return resp;
    }
    let body = axum::body::to_bytes(resp.into_body(), 64 * 1024)
        .await
        .unwrap_or_default();
    let detail = String::from_utf8_lossy(&body);
    let detail = detail.trim();
    problem(
        status,
        if detail.is_empty() {
            status.canonical_reason().unwrap_or("error")
        } else {
            detail
        },
    )
}

async fn require_token(State(state): State<AdminState>, req: Request, next: Next) -> Response {
    if let Some(token) = &state.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| bearer_token(v.as_bytes()));
        if !given.is_some_and(|g| token_matches(g, token.as_bytes())) {
            return problem(
                StatusCode::UNAUTHORIZED,
                "a valid admin bearer token is required",
            );
        }
    }
    next.run(req).await
}

/// `POST /admin/reload`: re-reads the config file (as `SIGHUP` does).
async fn reload(State(state): State<AdminState>) -> Response {
    use crate::reload::ReloadError;
    match state.reloader.reload().await {
        Ok(report) => {
            axum::Json(json!({ "outcome": "reloaded", "report": report })).into_response()
        }
        Err(e) => {
            let status = match &e {
                ReloadError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
                ReloadError::NoFile | ReloadError::NeedsRestart(_) => StatusCode::CONFLICT,
                ReloadError::Apply(_) => StatusCode::INTERNAL_SERVER_ERROR,
            };
            let mut resp = problem(status, &e.to_string());
            if let ReloadError::Invalid(errors) = &e {
                // The same FILE:LINE:COL lines `junction check` prints, one per error.
                let list: Vec<String> = errors.iter().map(ToString::to_string).collect();
                let body = json!({
                    "type": "about:blank",
                    "title": status.canonical_reason().unwrap_or("Error"),
                    "status": status.as_u16(),
                    "detail": e.to_string(),
                    "errors": list,
                });
                *resp.body_mut() = axum::body::Body::from(body.to_string());
            }
            resp
        }
    }
}

/// The credentials of an `Authorization: Bearer <token>` value; the scheme
/// is case-insensitive (RFC 9110 §11.1).
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    let space = value.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = value.split_at(space);
    scheme
        .eq_ignore_ascii_case(b"bearer")
        .then(|| rest.trim_ascii())
        .filter(|t| !t.is_empty())
}

/// Compares tokens in constant time, so response timing does not reveal how
/// much of a guess was right (only its length).
fn token_matches(given: &[u8], expected: &[u8]) -> bool {
    use subtle::ConstantTimeEq;
    given.len() == expected.len() && bool::from(given.ct_eq(expected))
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

/// `GET /readyz`: 200 only while serving (not starting, not draining), with
/// the queue backend answering and, when a route keeps idempotency keys in
/// Redis, that Redis answering too (a cache-only Redis degrades to
/// pass-through and does not make the instance unready).
async fn readyz(State(state): State<AdminState>) -> Response {
    const PROBE: std::time::Duration = std::time::Duration::from_secs(1);
    if !state.ready.load(Ordering::Acquire) {
        return problem(StatusCode::SERVICE_UNAVAILABLE, "starting or draining");
    }
    if let Some(queue) = &state.queue {
        let health = tokio::time::timeout(PROBE, queue.publisher.health()).await;
        if let Some(why) = unhealthy(health.map(|r| r.map_err(|e| e.to_string()))) {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the queue backend is unreachable: {why}"),
            );
        }
    }
    let gw = state.gateway();
    if gw.routes().iter().any(|r| r.idempotency.is_some()) {
        let health = tokio::time::timeout(PROBE, gw.cache.health()).await;
        if let Some(why) =
            unhealthy(health.map(|r| r.map_err(|e| crate::proxy::upstream::error_chain(&e))))
        {
            return problem(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the idempotency store is unreachable: {why}"),
            );
        }
    }
    "ready\n".into_response()
}

/// Why a health probe failed, if it did (an error, or no answer in time).
fn unhealthy(probe: Result<Result<(), String>, tokio::time::error::Elapsed>) -> Option<String> {
    match probe {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some("no answer within 1s".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive_and_tokens_compare_whole() {
        assert_eq!(bearer_token(b"Bearer s3cret"), Some(&b"s3cret"[..]));
        assert_eq!(bearer_token(b"bearer s3cret"), Some(&b"s3cret"[..]));
        assert_eq!(bearer_token(b"BEARER  s3cret "), Some(&b"s3cret"[..]));
        assert_eq!(bearer_token(b"Basic s3cret"), None);
        assert_eq!(bearer_token(b"Bearer"), None);
        assert_eq!(bearer_token(b"Bearer "), None);
        assert!(token_matches(b"s3cret", b"s3cret"));
        assert!(!token_matches(b"s3cre", b"s3cret"));
        assert!(!token_matches(b"s3cres", b"s3cret"));
        assert!(!token_matches(b"", b"s3cret"));
    }
}
