//! Shared HTTP helpers of the data plane: hop-by-hop headers, the request as
//! the upstream sees it, body collection within limits, JSON content types,
//! the `Idempotency-Key` rule. A leaf: every handler (sync, cached,
//! idempotent, async ingest) uses it, and it uses none of them.

use super::pool::UpstreamBody;
use super::router::render_path;
use crate::body::{Body, BoxError};
use crate::problem::GatewayError;
use crate::telemetry::trace::{next_traceparent_value, TRACEPARENT};
use http::{header, HeaderMap, HeaderName, HeaderValue, Method, Response};

/// Headers that describe one connection, not the message; never forwarded.
/// As `HeaderName`s: comparing and removing by name never parses a string.
const HOP_COUNT: usize = 9;
const HOP_BY_HOP: [HeaderName; HOP_COUNT] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// The request header naming the key (sync routes here, async routes in `pipeline::ingest`).
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// Longest key accepted.
const MAX_KEY_LEN: usize = 255;

/// The path (the route's template rendered, else the request path) and query
/// (without `fields`) to send upstream.
pub fn upstream_path_and_query(
    template: Option<&str>,
    params: &[(String, String)],
    uri: &http::Uri,
) -> String {
    let path = match template {
        Some(t) => render_path(t, params),
        None => uri.path().to_string(),
    };
    match strip_fields_param(uri.query()) {
        Some(q) => format!("{path}?{q}"),
        None => path,
    }
}

/// The query without the `fields` parameter, which Junction applies itself; `None` when empty.
pub fn strip_fields_param(query: Option<&str>) -> Option<String> {
    let q = query?;
    if !q
        .split('&')
        .any(|p| p == "fields" || p.starts_with("fields="))
    {
        return (!q.is_empty()).then(|| q.to_string());
    }
    let kept: Vec<&str> = q
        .split('&')
        .filter(|p| !(p.is_empty() || *p == "fields" || p.starts_with("fields=")))
        .collect();
    (!kept.is_empty()).then(|| kept.join("&"))
}

/// Whether retrying `m` cannot repeat a side effect (RFC 9110 idempotent methods).
pub fn is_idempotent(m: &Method) -> bool {
    matches!(
        *m,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

pub fn body_error(e: BoxError, max: u64) -> GatewayError {
    if crate::body::is_length_limit(e.as_ref()) {
        GatewayError::BodyTooLarge { limit: max }
    } else {
        GatewayError::BadBody(e.to_string())
    }
}

/// The request headers as the upstream should see them. `client_ip` is the
/// client's address as a header value (made once per connection).
pub fn upstream_headers(incoming: &HeaderMap, client_ip: &HeaderValue) -> HeaderMap {
    let mut h = HeaderMap::with_capacity(incoming.len() + 3);
    for (name, value) in incoming {
        if name == header::HOST || HOP_BY_HOP.contains(name) {
            continue;
        }
        h.append(name.clone(), value.clone());
    }
    // Fields the client's `Connection` names are about its connection only (RFC 9110 §7.6.1).
    for value in incoming.get_all(header::CONNECTION) {
        let Ok(list) = value.to_str() else { continue };
        for token in list.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            if let Ok(name) = http::HeaderName::from_bytes(token.as_bytes()) {
                h.remove(&name);
            }
        }
    }
    if let Some(host) = incoming.get(header::HOST) {
        h.insert(X_FORWARDED_HOST, host.clone());
    }
    match incoming.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(prev) => {
            let ip = client_ip.to_str().unwrap_or_default();
            if let Ok(v) = HeaderValue::from_str(&format!("{prev}, {ip}")) {
                h.insert(X_FORWARDED_FOR, v);
            }
        }
        None => {
            h.insert(X_FORWARDED_FOR, client_ip.clone());
        }
    }
    h.insert(
        TRACEPARENT,
        next_traceparent_value(incoming.get(TRACEPARENT)),
    );
    h
}

/// The upstream's response as the client should see it: hop-by-hop headers dropped, body streaming.
pub fn client_response(resp: Response<UpstreamBody>) -> Response<Body> {
    let (mut parts, body) = resp.into_parts();
    drop_hop_by_hop(&mut parts.headers);
    Response::from_parts(parts, body.into())
}

/// Removes the headers that describe the upstream connection, not the answer.
pub fn drop_hop_by_hop(headers: &mut HeaderMap) {
    // Most answers carry none, or only `connection`: look once, then remove
    // only the names present (a removal costs far more than a look).
    let mut present = [false; HOP_COUNT];
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present[i] = true;
        }
    }
    for (name, _) in HOP_BY_HOP.iter().zip(present).filter(|(_, p)| *p) {
        headers.remove(name);
    }
}

/// `application/json` or any `+json` type.
pub fn is_json_type(ct: &str) -> bool {
    let essence = ct.split(';').next().unwrap_or("").trim().as_bytes();
    essence.eq_ignore_ascii_case(b"application/json")
        || essence.len() >= 5 && essence[essence.len() - 5..].eq_ignore_ascii_case(b"+json")
}

/// The key of a request, checked: 1 to 255 visible ASCII characters (sync
/// and async routes alike).
pub fn valid_key(headers: &HeaderMap) -> Result<&str, GatewayError> {
    let raw = headers.get(IDEMPOTENCY_KEY).map(HeaderValue::as_bytes);
    let key = raw
        .and_then(|v| std::str::from_utf8(v).ok())
        .map(|k| k.trim_matches('"'))
        .filter(|k| {
            !k.is_empty() && k.len() <= MAX_KEY_LEN && k.bytes().all(|b| b.is_ascii_graphic())
        });
    key.ok_or_else(|| {
        GatewayError::BadRequest(format!(
            "the Idempotency-Key header must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        ))
    })
}

/// Weak comparison of entity tags (RFC 9110 §8.8.3.2): equal once the `W/`
/// weakness marks are set aside.
pub fn etags_match_weakly(a: &[u8], b: &[u8]) -> bool {
    fn opaque(mut tag: &[u8]) -> &[u8] {
        while let Some(rest) = tag.strip_prefix(b"W/") {
            tag = rest;
        }
        tag
    }
    opaque(a) == opaque(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_named_in_connection_are_not_forwarded() {
        let mut incoming = HeaderMap::new();
        incoming.insert(
            header::CONNECTION,
            HeaderValue::from_static("keep-alive, X-Secret , close"),
        );
        incoming.insert(
            "x-secret",
            HeaderValue::from_static("for the first hop only"),
        );
        incoming.insert("x-kept", HeaderValue::from_static("1"));
        let out = upstream_headers(&incoming, &HeaderValue::from_static("127.0.0.1"));
        assert!(!out.contains_key("x-secret"));
        assert!(!out.contains_key(header::CONNECTION));
        assert_eq!(out["x-kept"], "1");
    }

    #[test]
    fn forwarded_for_names_the_client_after_earlier_hops() {
        let ip = HeaderValue::from_static("10.0.0.7");
        let mut incoming = HeaderMap::new();
        incoming.insert(header::HOST, HeaderValue::from_static("shop.example"));
        let out = upstream_headers(&incoming, &ip);
        assert_eq!(out["x-forwarded-for"], "10.0.0.7");
        assert_eq!(out["x-forwarded-host"], "shop.example");
        assert!(!out.contains_key(header::HOST));
        incoming.insert("x-forwarded-for", HeaderValue::from_static("192.0.2.1"));
        let out = upstream_headers(&incoming, &ip);
        assert_eq!(out["x-forwarded-for"], "192.0.2.1, 10.0.0.7");
        assert_eq!(out.get_all("x-forwarded-for").iter().count(), 1);
    }

    #[test]
    fn hop_by_hop_fields_are_dropped_from_answers() {
        let mut h = HeaderMap::new();
        h.insert("content-type", HeaderValue::from_static("application/json"));
        drop_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            header::TRANSFER_ENCODING,
            HeaderValue::from_static("chunked"),
        );
        drop_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1);
        assert!(h.contains_key("content-type"));
    }

    #[test]
    fn fields_is_removed_from_the_upstream_query() {
        assert_eq!(strip_fields_param(None), None);
        assert_eq!(strip_fields_param(Some("a=1")), Some("a=1".into()));
        assert_eq!(
            strip_fields_param(Some("fields=a,b&x=2")),
            Some("x=2".into())
        );
        assert_eq!(strip_fields_param(Some("fields=a")), None);
    }
}
