//! Invalidation after unsafe requests (RFC 9111 §4.4).
//!
//! Why it exists: after a successful `POST`/`PUT`/`PATCH`/`DELETE` to a URI,
//! the next `GET` of that URI must not be answered from what was stored
//! before the write, on any instance, whether or not the route lists tags.
//!
//! What it promises: when an unsafe request gets a non-error answer (2xx or
//! 3xx), the stored variants of its URI are dropped, and those of the
//! `Location` and `Content-Location` of the answer when they name the same
//! host (a relative reference, or an absolute URI whose authority is the
//! request's `Host`). Only URIs a cached `GET` route serves are touched, so
//! routes without caching pay one route lookup and no store call.

use super::uri_key;
use crate::proxy::Gateway;
use http::{header, HeaderMap, Method, StatusCode, Uri};

/// Whether a request with `method` may change the resource (anything but the safe methods).
pub fn is_unsafe(method: &Method) -> bool {
    !matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::TRACE
    )
}

/// Drops the stored responses an unsafe request's answer made outdated.
pub async fn after_write(
    gw: &Gateway,
    uri: &Uri,
    host: Option<&str>,
    status: StatusCode,
    answer: &HeaderMap,
) {
    if !(status.is_success() || status.is_redirection()) {
        return;
    }
    let mut targets = vec![(uri.path().to_owned(), uri.query().map(str::to_owned))];
    for field in [header::LOCATION, header::CONTENT_LOCATION] {
        if let Some(target) = answer
            .get(&field)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| same_host_target(v, host))
        {
            targets.push(target);
        }
    }
    for (path, query) in targets {
        if !gw.is_cached_get(&path) {
            continue;
        }
        let key = uri_key(&path, query.as_deref());
        match gw.cache.invalidate_key(&key).await {
            Ok(dropped) => tracing::debug!(%key, dropped, "stored response invalidated by a write"),
            Err(e) => gw.degraded(&e),
        }
    }
}

/// The path and query `reference` names when it is on the request's host.
fn same_host_target(reference: &str, host: Option<&str>) -> Option<(String, Option<String>)> {
    let uri: Uri = reference.trim().parse().ok()?;
    match uri.authority() {
        None if reference.starts_with('/') && !reference.starts_with("//") => {}
        Some(authority) if host.is_some_and(|h| h.eq_ignore_ascii_case(authority.as_str())) => {}
        _ => return None,
    }
    Some((uri.path().to_owned(), uri.query().map(str::to_owned)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn safe_methods_never_invalidate() {
        for m in [Method::GET, Method::HEAD, Method::OPTIONS, Method::TRACE] {
            assert!(!is_unsafe(&m));
        }
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(is_unsafe(&m));
        }
        assert!(is_unsafe(&Method::from_bytes(b"PURGE").expect("method")));
    }

    #[test]
    fn only_same_host_references_are_targets() {
        let host = Some("shop.example:8080");
        let target = |r: &str| same_host_target(r, host);
        assert_eq!(
            target("/products/7?x=1"),
            Some(("/products/7".into(), Some("x=1".into())))
        );
        assert_eq!(
            target("http://SHOP.example:8080/products/8"),
            Some(("/products/8".into(), None))
        );
        assert_eq!(target("http://other.example/products/8"), None);
        assert_eq!(target("//other.example/products/8"), None);
        assert_eq!(
            target("products/8"),
            None,
            "relative paths are not resolved"
        );
        assert_eq!(same_host_target("http://shop.example:8080/p", None), None);
    }
}
