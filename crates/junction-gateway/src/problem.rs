//! Errors of the data plane, classified where they happen and turned into
//! RFC 9457 `application/problem+json` responses in exactly one place
//! ([`GatewayError::into_response`]).

use crate::body::{full, Body};
use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};
use junction_policy::{UpstreamError, UpstreamErrorKind};
use std::time::Duration;

/// Something Junction answers itself instead of an upstream response.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// No route matches the method and path.
    #[error("no route matches {method} {path}")]
    NoRoute { method: String, path: String },
    /// The request body is larger than `limits.max_body`.
    #[error("request body exceeds the limit of {limit} bytes")]
    BodyTooLarge { limit: u64 },
    /// The request could not be read (client went away, bad framing).
    #[error("could not read the request body: {0}")]
    BadBody(String),
    /// The body of a JSON route is not JSON.
    #[error("request body is not valid JSON: {0}")]
    BadJson(String),
    /// A query or header the gateway interprets is malformed.
    #[error("{0}")]
    BadRequest(String),
    /// The client did not send its request body in time (the attempt timed out waiting on it).
    #[error("the request body did not arrive within {timeout:?}")]
    ClientTimeout { timeout: Duration },
    /// An upstream call failed (its kind, retry safety and cause inside).
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
    /// The route's rate limit is exceeded.
    #[error("rate limit of route {route} exceeded")]
    RateLimited {
        route: String,
        retry_after: Duration,
    },
    /// Every subscriber of the event is at `queue.max_depth` (or, on backends that
    /// limit the whole queue, the queue is).
    #[error("the queue is full: {depth} events wait for each subscriber of this event (max_depth {max}); retry later")]
    QueueFull { depth: u64, max: u64 },
    /// The queue could not store the event.
    #[error("the queue could not store the event: {0}")]
    QueueUnavailable(String),
    /// A request with the same `Idempotency-Key` is still being served.
    #[error(
        "a request with this Idempotency-Key is still in progress; retry after it has finished"
    )]
    IdempotencyInFlight,
    /// The `Idempotency-Key` was used before for a different request.
    #[error("this Idempotency-Key was already used for a different request (method, path, query or body differ)")]
    IdempotencyMismatch,
    /// The idempotency store could not be asked; running the request could run it twice.
    #[error("idempotency keys cannot be checked right now ({0}); the request was not forwarded")]
    IdempotencyUnavailable(String),
    /// The client sent `Cache-Control: only-if-cached` and nothing stored may answer it.
    #[error(
        "the request asked for a cached answer only (only-if-cached) and route {route} has none"
    )]
    NotCached { route: String },
    /// An admin-level resource is missing.
    #[error("{0}")]
    NotFound(String),
    /// `limits.buffer_budget` is spent: the body this request needs whole was not read.
    #[error("the gateway is holding as many bodies in memory as limits.buffer_budget allows; retry shortly")]
    BuffersFull,
}

impl GatewayError {
    /// The `reason` of `junction_client_errors_total` when the client's own
    /// request caused this error (it never counts against an upstream).
    pub fn client_fault(&self) -> Option<&'static str> {
        match self {
            GatewayError::BodyTooLarge { .. } => Some("body_too_large"),
            GatewayError::BadBody(_) => Some("bad_body"),
            GatewayError::ClientTimeout { .. } => Some("body_timeout"),
            _ => None,
        }
    }

    /// The HTTP status this error maps to.
    pub fn status(&self) -> StatusCode {
        use GatewayError::*;
        match self {
            NoRoute { .. } | NotFound(_) => StatusCode::NOT_FOUND,
            BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            BadBody(_) | BadJson(_) | BadRequest(_) => StatusCode::BAD_REQUEST,
            ClientTimeout { .. } => StatusCode::REQUEST_TIMEOUT,
            NotCached { .. } => StatusCode::GATEWAY_TIMEOUT,
            Upstream(e) => match e.kind {
                UpstreamErrorKind::Timeout { .. } => StatusCode::GATEWAY_TIMEOUT,
                UpstreamErrorKind::Connect | UpstreamErrorKind::Broken => StatusCode::BAD_GATEWAY,
                UpstreamErrorKind::BreakerOpen { .. } | UpstreamErrorKind::Overloaded { .. } => {
                    StatusCode::SERVICE_UNAVAILABLE
                }
            },
            QueueFull { .. } | QueueUnavailable(_) | BuffersFull => StatusCode::SERVICE_UNAVAILABLE,
            RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            IdempotencyInFlight => StatusCode::CONFLICT,
            IdempotencyMismatch => StatusCode::UNPROCESSABLE_ENTITY,
            IdempotencyUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    /// A short, stable slug naming the problem type (the `type` URI ends with it).
    pub fn kind(&self) -> &'static str {
        use GatewayError::*;
        match self {
            NoRoute { .. } => "no-route",
            BodyTooLarge { .. } => "body-too-large",
            BadBody(_) => "bad-body",
            BadJson(_) => "bad-json",
            BadRequest(_) => "bad-request",
            ClientTimeout { .. } => "client-timeout",
            Upstream(e) => match e.kind {
                UpstreamErrorKind::Timeout { .. } => "upstream-timeout",
                UpstreamErrorKind::Connect | UpstreamErrorKind::Broken => "upstream-unreachable",
                UpstreamErrorKind::BreakerOpen { .. } => "breaker-open",
                UpstreamErrorKind::Overloaded { .. } => "upstream-overloaded",
            },
            RateLimited { .. } => "rate-limited",
            QueueFull { .. } => "queue-full",
            QueueUnavailable(_) => "queue-unavailable",
            NotCached { .. } => "not-cached",
            NotFound(_) => "not-found",
            IdempotencyInFlight => "idempotency-key-in-flight",
            IdempotencyMismatch => "idempotency-key-mismatch",
            IdempotencyUnavailable(_) => "idempotency-unavailable",
            BuffersFull => "buffers-full",
        }
    }

    /// The problem+json response, with `Retry-After` and `x-junction-breaker` where they apply.
    pub fn into_response(self) -> Response<Body> {
        self.to_response()
    }

    /// Same as [`into_response`](Self::into_response), for errors shared between coalesced requests.
    pub fn to_response(&self) -> Response<Body> {
        let status = self.status();
        let body = serde_json::json!({
            "type": format!("https://junction.dev/problems/{}", self.kind()),
            "title": status.canonical_reason().unwrap_or("Error"),
            "status": status.as_u16(),
            "detail": self.to_string(),
        });
        let mut resp = Response::new(full(Bytes::from(body.to_string())));
        *resp.status_mut() = status;
        let h = resp.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        let retry_after = match self {
            GatewayError::Upstream(e) => match e.kind {
                UpstreamErrorKind::BreakerOpen { retry_in } => {
                    h.insert("x-junction-breaker", HeaderValue::from_static("open"));
                    Some(retry_in)
                }
                UpstreamErrorKind::Overloaded { .. } => Some(Duration::from_secs(1)),
                _ => None,
            },
            GatewayError::RateLimited { retry_after, .. } => Some(*retry_after),
            GatewayError::QueueFull { .. } | GatewayError::QueueUnavailable(_) => {
                Some(Duration::from_secs(1))
            }
            GatewayError::IdempotencyInFlight
            | GatewayError::IdempotencyUnavailable(_)
            | GatewayError::BuffersFull => Some(Duration::from_secs(1)),
            _ => None,
        };
        if let Some(d) = retry_after {
            let secs = d.as_secs() + u64::from(d.subsec_nanos() > 0);
            h.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn breaker_open_is_503_problem_json_with_header() {
        let resp = GatewayError::from(UpstreamError::new(
            "inventory",
            UpstreamErrorKind::BreakerOpen {
                retry_in: Duration::from_millis(1500),
            },
        ))
        .into_response();
        assert_eq!(resp.status(), 503);
        assert_eq!(resp.headers()["x-junction-breaker"], "open");
        assert_eq!(resp.headers()["retry-after"], "2");
        assert_eq!(resp.headers()["content-type"], "application/problem+json");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["status"], 503);
        assert!(v["detail"].as_str().unwrap().contains("inventory"));
    }
}
