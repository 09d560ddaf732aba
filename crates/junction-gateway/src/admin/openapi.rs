//! `GET /admin/openapi.json`: the admin API's OpenAPI 3.1 document.
//!
//! The document is written by hand (`openapi.json` beside this file) rather
//! than derived: the handlers answer with JSON built in place, and the
//! document is the contract they are tested against — a unit test keeps its
//! operations equal to the router's, and a black-box test runs schemathesis
//! against the running API with it. It holds no data, so it needs no token.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};

/// The document, as committed.
pub(super) const DOCUMENT: &str = include_str!("openapi.json");

pub(super) async fn document() -> Response {
    let mut resp = DOCUMENT.into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    /// `(METHOD, path)` of every `.route("path", method(...))` in the router's source.
    fn routed() -> BTreeSet<(String, String)> {
        let src = include_str!("mod.rs");
        let mut out = BTreeSet::new();
        for line in src.lines() {
            let Some(rest) = line.trim().strip_prefix(".route(\"") else {
                continue;
            };
            let (path, rest) = rest.split_once('"').expect("a quoted path");
            let method = rest
                .trim_start_matches(',')
                .trim()
                .split('(')
                .next()
                .expect("a method router");
            out.insert((method.to_uppercase(), path.to_owned()));
        }
        out
    }

    #[test]
    fn the_document_lists_exactly_the_routed_operations() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).expect("valid JSON");
        assert_eq!(doc["openapi"], "3.1.0");
        let mut documented = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().expect("paths") {
            for method in item.as_object().expect("a path item").keys() {
                if method != "parameters" {
                    documented.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let routed = routed();
        assert!(routed.len() >= 15, "{routed:?}");
        assert_eq!(documented, routed, "documented vs routed");
    }

    #[test]
    fn every_operation_has_an_id_and_protected_ones_name_the_token() {
        let doc: serde_json::Value = serde_json::from_str(DOCUMENT).unwrap();
        let public = ["/healthz", "/readyz", "/", "/admin/openapi.json"];
        for (path, item) in doc["paths"].as_object().unwrap() {
            for (method, op) in item.as_object().unwrap() {
                assert!(op["operationId"].is_string(), "{method} {path}");
                let protected = !public.contains(&path.as_str());
                let secured = op["security"]
                    .as_array()
                    .or(doc["security"].as_array())
                    .is_some_and(|s| s.iter().any(|r| r.get("bearer").is_some()));
                let open = op["security"].as_array().is_some_and(|s| {
                    s.is_empty()
                        || s.iter()
                            .any(|r| r.as_object().is_some_and(|o| o.is_empty()))
                });
                if protected {
                    assert!(secured && !open, "{method} {path} needs the bearer token");
                    assert!(op["responses"]["401"].is_object(), "{method} {path}: 401");
                } else {
                    assert!(open || !secured, "{method} {path} is public");
                }
            }
        }
    }
}
