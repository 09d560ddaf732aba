//! Payload trimming on the way out: `?fields=` projection of JSON bodies, ETags
//! and `If-None-Match` → 304, and bytes-in/bytes-out accounting per route.
//! (Compression is a layer around the whole data plane; see `server`.)

use super::http_util::{client_response, etags_match_weakly, is_json_type};
use super::pool::UpstreamBody;
use crate::body::{full, Body};
use crate::problem::GatewayError;
use bytes::Bytes;
use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use junction_cache::{cache_control, entry::etag_for, project_json_bytes, FieldSet};
use junction_policy::UpstreamError;
use prometheus_client::metrics::counter::Counter;
use std::sync::Arc;

/// Largest JSON body buffered for projection; larger ones pass through untouched.
const MAX_PROJECTED_BODY: u64 = 32 << 20;

/// How this request wants its response shaped.
pub struct Shaped {
    /// Fields to keep (`?fields=` or the route's default).
    pub fields: Option<Arc<FieldSet>>,
    /// Bytes sent to the client on this route.
    pub bytes_out: Counter,
    /// Bytes received from the upstream on this route.
    pub bytes_in: Counter,
    /// The route's upstream, named when its response body breaks off.
    pub upstream: Arc<str>,
    /// The budget a projection's body is counted in.
    pub buffers: Arc<crate::buffers::BufferBudget>,
}

/// The projection a request asks for: `?fields=a,b.c` over the route default. Bad syntax is a 400.
pub fn requested_fields(
    query: Option<&str>,
    default: Option<&Arc<FieldSet>>,
) -> Result<Option<Arc<FieldSet>>, GatewayError> {
    let param = query.and_then(|q| {
        form_urlencoded::parse(q.as_bytes())
            .find(|(k, _)| k == "fields")
            .map(|(_, v)| v.into_owned())
    });
    match param {
        Some(list) => FieldSet::parse(&list)
            .map(|f| Some(Arc::new(f)))
            .map_err(|e| {
                GatewayError::BadRequest(format!("invalid fields parameter {list:?}: {e}"))
            }),
        None => Ok(default.cloned()),
    }
}

/// Builds the client response from a whole body: projection, ETag, 304, HEAD, byte counts.
pub fn finish(
    status: u16,
    mut headers: HeaderMap,
    body: Bytes,
    etag: Option<&str>,
    method: &Method,
    req_headers: &HeaderMap,
    shaped: &Shaped,
) -> Response<Body> {
    let mut body = body;
    let mut etag = etag.map(str::to_string);
    if let Some(fields) = &shaped.fields {
        let json = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(is_json_type);
        if (200..300).contains(&status) && json {
            if let Ok(projected) = project_json_bytes(&body, fields) {
                // A projection is its own representation: it gets its own validator.
                etag = etag.map(|_| etag_for(&projected));
                body = projected;
            }
        }
    }
    headers.remove(header::CONTENT_LENGTH);
    headers.remove(header::TRANSFER_ENCODING);
    let tag = etag.as_deref().and_then(|t| HeaderValue::from_str(t).ok());
    // If-None-Match, when sent, decides alone (RFC 9110 §13.2.2).
    let not_modified = match req_headers.get(header::IF_NONE_MATCH) {
        Some(inm) => tag.as_ref().is_some_and(|tag| {
            inm.to_str().is_ok_and(|inm| {
                inm.split(',').any(|c| {
                    c.trim() == "*" || etags_match_weakly(c.trim().as_bytes(), tag.as_bytes())
                })
            })
        }),
        None => unmodified_since(req_headers, &headers),
    };
    if let Some(tag) = tag {
        headers.insert(header::ETAG, tag);
    }
    if not_modified && (200..300).contains(&status) && matches!(*method, Method::GET | Method::HEAD)
    {
        headers.remove(header::CONTENT_TYPE);
        let mut resp = Response::new(crate::body::empty());
        *resp.status_mut() = StatusCode::NOT_MODIFIED;
        *resp.headers_mut() = headers;
        return resp;
    }
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    shaped.bytes_out.inc_by(body.len() as u64);
    let body = if method == Method::HEAD {
        crate::body::empty()
    } else {
        full(body)
    };
    let mut resp = Response::new(body);
    *resp.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY);
    *resp.headers_mut() = headers;
    resp
}

/// `If-Modified-Since` holds: the response's `Last-Modified` is not after it.
fn unmodified_since(req_headers: &HeaderMap, resp_headers: &HeaderMap) -> bool {
    let Some(since) = cache_control::date_secs(req_headers, &header::IF_MODIFIED_SINCE) else {
        return false;
    };
    cache_control::date_secs(resp_headers, &header::LAST_MODIFIED).is_some_and(|last| last <= since)
}

/// An upstream response on an uncached route: streamed through, unless a JSON
/// projection needs the whole body.
pub async fn shape_streamed(
    resp: Response<UpstreamBody>,
    method: &Method,
    req_headers: &HeaderMap,
    shaped: &Shaped,
) -> Response<Body> {
    let length = resp
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(is_json_type);
    let wants_projection = shaped.fields.is_some()
        && json
        && resp.status().is_success()
        && length.is_none_or(|l| l <= MAX_PROJECTED_BODY);
    if !wants_projection {
        if let Some(l) = length {
            shaped.bytes_in.inc_by(l);
            shaped.bytes_out.inc_by(l);
        }
        return client_response(resp);
    }
    let (parts, body) = resp.into_parts();
    // A safe request's projection may be refused past the budget; a write's
    // has happened upstream and is not (see `buffers`).
    let may_refuse = matches!(*method, Method::GET | Method::HEAD);
    let read = shaped
        .buffers
        .collect(
            body,
            MAX_PROJECTED_BODY as usize,
            crate::buffers::Site::Projection,
            may_refuse,
        )
        .await;
    match read {
        Err(crate::buffers::BufferError::OverBudget) => GatewayError::BuffersFull.into_response(),
        Ok(held) => {
            let bytes = held.bytes.clone();
            shaped.bytes_in.inc_by(bytes.len() as u64);
            finish(
                parts.status.as_u16(),
                parts.headers,
                bytes,
                None,
                method,
                req_headers,
                shaped,
            )
        }
        Err(e) => GatewayError::from(UpstreamError::broken(
            &shaped.upstream,
            "reading the response body failed",
            e.into_box(),
        ))
        .into_response(),
    }
}
