//! The data-plane side of an async route: validate, enqueue durably, answer 202.

use super::AsyncRoute;
use crate::body::{full, Body};
use crate::config::KeySource;
use crate::problem::GatewayError;
use crate::proxy::call::Call;
use crate::proxy::http_util::{is_json_type, valid_key, IDEMPOTENCY_KEY};
use futures::future::BoxFuture;
use http::{header, HeaderMap, HeaderValue, Response, StatusCode};
use junction_queue::{EnqueueOutcome, EnqueueRequest, QueueError};
use std::sync::Arc;
use std::task::{Context, Poll};

/// The bottom of an async route's stack: the route's topic.
#[derive(Clone)]
pub struct IngestService {
    route: Arc<AsyncRoute>,
}

impl IngestService {
    /// Enqueues onto `route`'s topic.
    pub fn new(route: Arc<AsyncRoute>) -> Self {
        Self { route }
    }
}

impl tower::Service<Call> for IngestService {
    type Response = Response<Body>;
    type Error = GatewayError;
    type Future = BoxFuture<'static, Result<Response<Body>, GatewayError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), GatewayError>> {
        // A full or unreachable queue is refused per request, with its own problem.
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, call: Call) -> Self::Future {
        let route = self.route.clone();
        call.cx.mark_dispatched();
        Box::pin(async move { accept(&route, call).await })
    }
}

/// Accepts one event: 202 with `{"id","topic","status":"accepted"}` once it is durable.
async fn accept(route: &AsyncRoute, call: Call) -> Result<Response<Body>, GatewayError> {
    let Call {
        head: parts,
        body,
        cx,
    } = call;
    // Counted in limits.buffer_budget until the event is stored.
    let held = body
        .collect(cx.gw.max_body, &cx.gw.buffers, crate::buffers::Site::Async)
        .await?;
    let body = held.bytes.clone();
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let is_json = content_type.as_deref().is_some_and(is_json_type);
    let ordering_key = match &route.ordering_key {
        Some(KeySource::Json(ptr)) => json_key(&body, ptr, is_json)?,
        other => {
            if is_json {
                check_json(&body)?;
            }
            match other {
                Some(KeySource::Header(h)) => parts
                    .headers
                    .get(h.as_str())
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string),
                _ => None,
            }
        }
    };
    // The same rules as sync routes: a key that is empty, too long or not
    // visible ASCII is a 400, never silently ignored or merged with another.
    let idempotency_key = match parts.headers.contains_key(IDEMPOTENCY_KEY) {
        true => Some(valid_key(&parts.headers)?.to_owned()),
        false => None,
    };
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
    let outcome = route
        .queue
        .publisher
        .publish(req)
        .await
        .map_err(|e| match e {
            QueueError::Full { depth, max } => GatewayError::QueueFull { depth, max },
            QueueError::TooLarge { max, .. } => GatewayError::BodyTooLarge { limit: max },
            other => GatewayError::QueueUnavailable(crate::proxy::upstream::error_chain(&other)),
        })?;
    if matches!(outcome, EnqueueOutcome::Accepted(_)) {
        route.accepted.inc();
    }
    let body = serde_json::to_vec(&Accepted {
        id: outcome.id().as_str(),
        topic: &route.topic,
        status: "accepted",
    })
    .expect("a struct of strings always serializes");
    let mut resp = Response::new(full(body));
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

/// The 202 body.
#[derive(serde::Serialize)]
struct Accepted<'a> {
    id: &'a str,
    topic: &'a str,
    status: &'static str,
}

/// Checks that `body` is one JSON text without building its value: the body is
/// stored as it came, so only a JSON ordering key needs it parsed (building the
/// value and dropping it was a tenth of an accept's CPU).
fn check_json(body: &[u8]) -> Result<(), GatewayError> {
    // JSON is UTF-8 (RFC 8259 §8.1); checked first because ignored strings are
    // not checked for it.
    let text = std::str::from_utf8(body)
        .map_err(|e| GatewayError::BadJson(format!("the body is not UTF-8: {e}")))?;
    serde_json::from_str::<serde::de::IgnoredAny>(text)
        .map(drop)
        .map_err(|e| GatewayError::BadJson(e.to_string()))
}

/// The ordering key at JSON pointer `ptr` of the body (a string as it is, another
/// value as JSON text); `None` when absent or when a non-JSON body does not parse.
pub fn json_key(body: &[u8], ptr: &str, is_json: bool) -> Result<Option<String>, GatewayError> {
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => Ok(v.pointer(ptr).map(|v| match v {
            serde_json::Value::String(s) => s.clone(),
            other => other.to_string(),
        })),
        Err(e) if is_json => Err(GatewayError::BadJson(e.to_string())),
        Err(_) => Ok(None),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checking_json_agrees_with_parsing_it() {
        let cases: &[&[u8]] = &[
            br#"{"a":[1,2.5e3,"x\u00e9",true,null,{"b":{}}]}"#,
            b" 42 ",
            br#""s""#,
            b"",
            b"{",
            br#"{"a":1,}"#,
            b"[1 2]",
            b"{} {}",
            b"01",
            b"1.",
            br#""\q""#,
            b"\"tab\there\"",
            br#"{"a" 1}"#,
            b"nul",
            b"[\"\xff\"]",
        ];
        for body in cases {
            let parsed = serde_json::from_slice::<serde_json::Value>(body).is_ok();
            let checked = check_json(body).is_ok();
            assert_eq!(checked, parsed, "{:?}", String::from_utf8_lossy(body));
        }
        // The one difference: a lone surrogate escape is valid JSON grammar (RFC 8259
        // §8.2), which serde_json's value type cannot hold. Stored and forwarded as is.
        assert!(check_json(br#"["\ud800"]"#).is_ok());
    }

    #[test]
    fn json_types_are_recognised_in_any_case_with_parameters() {
        for ct in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/cloudevents+json",
            " application/problem+JSON ",
        ] {
            assert!(is_json_type(ct), "{ct}");
        }
        for ct in [
            "text/plain",
            "application/jsonx",
            "json",
            "",
            "application/x-ndjson",
        ] {
            assert!(!is_json_type(ct), "{ct}");
        }
    }

    #[test]
    fn a_json_key_is_read_from_its_pointer() {
        let body = br#"{"order":{"id":"o-1","n":7}}"#;
        assert_eq!(
            json_key(body, "/order/id", true).unwrap().as_deref(),
            Some("o-1")
        );
        assert_eq!(
            json_key(body, "/order/n", true).unwrap().as_deref(),
            Some("7")
        );
        assert_eq!(json_key(body, "/missing", true).unwrap(), None);
        assert!(json_key(b"{", "/a", true).is_err());
        assert_eq!(json_key(b"plain text", "/a", false).unwrap(), None);
    }
}
