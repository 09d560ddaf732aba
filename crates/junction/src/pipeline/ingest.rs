//! The data-plane side of an async route: validate, enqueue durably, answer 202.

use super::AsyncRoute;
use crate::body::{full, Body};
use crate::config::KeySource;
use crate::problem::GatewayError;
use crate::proxy::forward::collect_body;
use http::{header, HeaderMap, HeaderValue, Request, Response, StatusCode};
use hyper::body::Incoming;
use junction_queue::{EnqueueOutcome, EnqueueRequest, QueueError};

/// Header carrying the publisher's idempotency key.
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// Accepts one event: 202 with `{"id","topic","status":"accepted"}` once it is durable.
pub async fn accept(
    route: &AsyncRoute,
    req: Request<Incoming>,
    max_body: u64,
) -> Result<Response<Body>, GatewayError> {
    let (parts, body) = req.into_parts();
    let body = collect_body(body, max_body).await?;
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let is_json = content_type.as_deref().is_some_and(is_json_type);
    let json = if is_json || matches!(route.ordering_key, Some(KeySource::Json(_))) {
        match serde_json::from_slice::<serde_json::Value>(&body) {
            Ok(v) => Some(v),
            Err(e) if is_json => return Err(GatewayError::BadJson(e.to_string())),
            Err(_) => None,
        }
    } else {
        None
    };
    let ordering_key = match &route.ordering_key {
        Some(KeySource::Header(h)) => parts
            .headers
            .get(h.as_str())
            .and_then(|v| v.to_str().ok())
            .map(str::to_string),
        Some(KeySource::Json(ptr)) => json.as_ref().and_then(|v| v.pointer(ptr)).map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        }),
        None => None,
    };
    let idempotency_key = parts
        .headers
        .get(IDEMPOTENCY_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let req = EnqueueRequest {
        topic: route.topic.clone(),
        body,
        content_type,
        headers: forwarded_headers(&parts.headers),
        ordering_key,
        subscribers: route.subscribers.clone(),
        idempotency_key,
        idempotency_ttl: route.idempotency_window,
    };
    let outcome = route.broker.enqueue(req).await.map_err(|e| match e {
        QueueError::Full { depth, max } => GatewayError::QueueFull { depth, max },
        other => GatewayError::QueueUnavailable(crate::proxy::upstream::error_chain(&other)),
    })?;
    if matches!(outcome, EnqueueOutcome::Accepted(_)) {
        route.accepted.inc();
    }
    let body = serde_json::json!({
        "id": outcome.id().as_str(),
        "topic": route.topic,
        "status": "accepted",
    });
    let mut resp = Response::new(full(body.to_string()));
    *resp.status_mut() = StatusCode::ACCEPTED;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Ok(v) = HeaderValue::from_str(outcome.id().as_str()) {
        resp.headers_mut().insert("x-junction-message-id", v);
    }
    if matches!(outcome, EnqueueOutcome::Duplicate(_)) {
        resp.headers_mut().insert(
            "x-junction-idempotent-replay",
            HeaderValue::from_static("true"),
        );
    }
    Ok(resp)
}

/// `application/json` or any `+json` type.
pub fn is_json_type(ct: &str) -> bool {
    let essence = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// Headers kept with the message and forwarded to subscribers.
fn forwarded_headers(h: &HeaderMap) -> Vec<(String, String)> {
    let mut out = vec![(
        "traceparent".to_string(),
        crate::telemetry::otel::hop_traceparent(h.get("traceparent").and_then(|v| v.to_str().ok())),
    )];
    for name in ["tracestate", "x-junction-caller"] {
        if let Some(v) = h.get(name).and_then(|v| v.to_str().ok()) {
            out.push((name.to_string(), v.to_string()));
        }
    }
    out
}
