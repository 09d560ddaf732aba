//! A stored upstream response: its headers and body, its freshness, the request
//! header values it was selected by, and its ETag.
//!
//! Why it exists: every backend stores the same thing and the gateway asks the
//! same questions of it (may it be reused for this request, is it stale, how old
//! is it, what is its ETag). The wire format lives in [`crate::codec`].
//!
//! What it promises:
//! - [`CachedResponse::current_age`] is RFC 9111 §4.2.3's `current_age`: the age
//!   the response had on arrival plus the time it has been stored.
//! - [`CachedResponse::reuse`] follows one timeline, narrowed by the client's
//!   request directives: fresh before `fresh_for`, then stale within
//!   `stale_while_revalidate`, then usable only on an upstream failure within
//!   `stale_if_error`, then it must be revalidated.
//! - [`CachedResponse::matches`] selects a variant by the request header values
//!   its `Vary` (and the route's `vary:` list) names, normalised per RFC 9110
//!   field rules (lines combined, whitespace around commas dropped).
//! - ETags computed here are strong, derived from the body with XXH3-128, so every
//!   process on every machine computes the same tag for the same bytes.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{header, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

use crate::cache_control::RequestDirectives;
use crate::policy::Storable;

/// How long past its stale allowances an entry with a validator is kept, so it
/// can still be revalidated with a conditional request instead of refetched.
pub const KEEP_FOR_REVALIDATION: Duration = Duration::from_secs(600);

/// A cached upstream response (one variant of a URI).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedResponse {
    /// HTTP status code.
    pub status: u16,
    /// End-to-end response headers, in upstream order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The full upstream body (projection happens after the cache).
    pub body: Bytes,
    /// Wall-clock time of storage (the response time), ms since the Unix epoch.
    pub stored_at_ms: u64,
    /// How long the entry is fresh, counted from its age zero.
    pub fresh_for: Duration,
    /// How long past freshness it may be served while revalidating.
    pub stale_while_revalidate: Duration,
    /// How long past freshness it may be served when the upstream fails.
    pub stale_if_error: Duration,
    /// Entity tag, quoted (`"..."` or `W/"..."`).
    pub etag: String,
    /// Age the response already had when stored (`corrected_initial_age`).
    pub initial_age: Duration,
    /// The selecting request headers: lower-case name and the normalised value
    /// the storing request had (`None` = absent).
    pub selecting: Vec<(String, Option<Vec<u8>>)>,
    /// May be reused for requests carrying credentials (RFC 9111 §3.5).
    pub shared_with_credentials: bool,
    /// Never served stale (`must-revalidate`, `proxy-revalidate`, `s-maxage`, `no-cache`).
    pub revalidate_when_stale: bool,
}

/// How a stored response may be used for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reuse {
    /// Serve as is.
    Fresh,
    /// Serve, and revalidate in the background.
    Stale,
    /// Serve only if the upstream fails.
    StaleIfError,
    /// Do not serve without revalidating (a conditional request when it has validators).
    Revalidate,
}

/// Milliseconds since the Unix epoch, the clock `stored_at_ms` is measured on.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The strong ETag Junction computes for a body: `"` + 32 hex digits of XXH3-128 + `"`.
pub fn etag_for(body: &[u8]) -> String {
    format!("\"{:032x}\"", xxhash_rust::xxh3::xxh3_128(body))
}

/// Headers that describe one connection or one client and are never stored.
fn is_unstorable(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "transfer-encoding"
            | "te"
            | "trailer"
            | "upgrade"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "set-cookie"
    )
}

/// Headers a `304` never replaces in a stored response (RFC 9111 §3.2).
fn kept_on_update(name: &str) -> bool {
    is_unstorable(name) || name == "content-length"
}

/// The value of every line of `name` in `headers`, normalised as one list:
/// lines joined by commas, whitespace around each member dropped.
pub fn normalised_field(headers: &HeaderMap, name: &str) -> Option<Vec<u8>> {
    let mut lines = headers.get_all(name).iter().peekable();
    lines.peek()?;
    let mut out = Vec::new();
    for line in lines {
        for member in line.as_bytes().split(|b| *b == b',') {
            let member = member.trim_ascii();
            if member.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push(b',');
            }
            out.extend_from_slice(member);
        }
    }
    Some(out)
}

/// The headers of `headers` minus hop-by-hop ones (and those `Connection` names)
/// and `Set-Cookie`, as stored.
fn storable_headers(headers: &HeaderMap) -> Vec<(String, Vec<u8>)> {
    let connection_named: Vec<String> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|token| token.trim().to_ascii_lowercase())
        .collect();
    headers
        .iter()
        .filter(|(name, _)| {
            !is_unstorable(name.as_str()) && !connection_named.iter().any(|c| c == name.as_str())
        })
        .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
        .collect()
}

// === impl CachedResponse ===

impl CachedResponse {
    /// Builds an entry from an upstream response, dropping hop-by-hop headers
    /// (and any the `Connection` header names) and `Set-Cookie`. The upstream's
    /// ETag is kept when it has one; otherwise one is computed.
    pub fn from_upstream(
        status: u16,
        headers: &HeaderMap,
        body: Bytes,
        stored_at_ms: u64,
        keep: &Storable,
    ) -> Self {
        let etag = upstream_etag(headers).unwrap_or_else(|| etag_for(&body));
        Self {
            status,
            headers: storable_headers(headers),
            body,
            stored_at_ms,
            fresh_for: keep.fresh_for,
            stale_while_revalidate: keep.stale_while_revalidate,
            stale_if_error: keep.stale_if_error,
            etag,
            initial_age: keep.initial_age,
            selecting: Vec::new(),
            shared_with_credentials: keep.shared_with_credentials,
            revalidate_when_stale: keep.revalidate_when_stale,
        }
    }

    /// Records the request header values this variant is selected by: each of
    /// `names` (lower case) as the storing request sent it.
    pub fn select_by(mut self, names: &[String], request: &HeaderMap) -> Self {
        self.selecting = names
            .iter()
            .map(|n| (n.clone(), normalised_field(request, n)))
            .collect();
        self
    }

    /// Whether this variant may answer a request with `request` headers.
    pub fn matches(&self, request: &HeaderMap) -> bool {
        self.selecting
            .iter()
            .all(|(name, value)| normalised_field(request, name) == *value)
    }

    /// The headers to store after a `304` with `update` revalidated this
    /// entry: each field the `304` carries replaces the stored one (RFC 9111
    /// §3.2), except `Content-Length` and what is never stored.
    pub fn headers_updated_by(&self, update: &HeaderMap) -> HeaderMap {
        let mut merged = self.header_map(update.len());
        for name in update.keys() {
            if kept_on_update(name.as_str()) {
                continue;
            }
            merged.remove(name);
            for value in update.get_all(name) {
                merged.append(name.clone(), value.clone());
            }
        }
        merged
    }

    /// The stored headers as a map, with room for `extra` more (names or
    /// values that no longer parse are left out).
    pub fn header_map(&self, extra: usize) -> HeaderMap {
        let mut headers = HeaderMap::with_capacity(self.headers.len() + extra);
        for (name, value) in &self.headers {
            if let (Ok(n), Ok(v)) = (
                HeaderName::from_bytes(name.as_bytes()),
                HeaderValue::from_bytes(value),
            ) {
                headers.append(n, v);
            }
        }
        headers
    }

    /// A stored header's raw value.
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    /// Whether the origin gave a validator (`ETag`, `Last-Modified`) to revalidate with.
    pub fn has_validator(&self) -> bool {
        self.header("etag").is_some() || self.header("last-modified").is_some()
    }

    /// Time since storage (zero if the clock went backwards).
    pub fn resident_time(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.stored_at_ms))
    }

    /// RFC 9111 §4.2.3 `current_age`: age on arrival plus resident time.
    pub fn current_age(&self, now_ms: u64) -> Duration {
        self.initial_age.saturating_add(self.resident_time(now_ms))
    }

    /// How the entry may be used at `now_ms` for a request with `req` directives.
    pub fn reuse(&self, now_ms: u64, req: &RequestDirectives) -> Reuse {
        let age = self.current_age(now_ms);
        let too_old_for_client = req.no_cache
            || req
                .max_age
                .is_some_and(|max| age > Duration::from_secs(max))
            || req
                .min_fresh
                .is_some_and(|min| age.saturating_add(Duration::from_secs(min)) >= self.fresh_for);
        if too_old_for_client {
            return Reuse::Revalidate;
        }
        if age < self.fresh_for {
            return Reuse::Fresh;
        }
        let staleness = age - self.fresh_for;
        if self.revalidate_when_stale {
            return Reuse::Revalidate;
        }
        let client_accepts = match req.max_stale {
            Some(None) => true,
            Some(Some(limit)) => staleness <= Duration::from_secs(limit),
            None => false,
        };
        if client_accepts || staleness < self.stale_while_revalidate {
            Reuse::Stale
        } else if staleness < self.stale_if_error {
            Reuse::StaleIfError
        } else {
            Reuse::Revalidate
        }
    }

    /// How long after storage the entry stays of use: through its stale
    /// allowances, and (when it has a validator) [`KEEP_FOR_REVALIDATION`] more.
    pub fn remaining_retention(&self, now_ms: u64) -> Option<Duration> {
        let lifetime = self
            .fresh_for
            .saturating_add(self.stale_while_revalidate.max(self.stale_if_error));
        let by_lifetime = lifetime.saturating_sub(self.current_age(now_ms));
        let by_validator = if self.has_validator() {
            lifetime
                .saturating_add(KEEP_FOR_REVALIDATION)
                .saturating_sub(self.resident_time(now_ms))
        } else {
            Duration::ZERO
        };
        Some(by_lifetime.max(by_validator)).filter(|d| !d.is_zero())
    }

    /// Approximate memory footprint: body, header names and values, and ETag.
    pub fn size_bytes(&self) -> u64 {
        let headers: usize = self.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        let selecting: usize = self
            .selecting
            .iter()
            .map(|(n, v)| n.len() + v.as_ref().map_or(0, Vec::len))
            .sum();
        (self.body.len() + headers + selecting + self.etag.len()) as u64
    }
}

/// The origin's `ETag`, when it sent a usable one.
pub fn upstream_etag(headers: &HeaderMap) -> Option<String> {
    headers
        .get(header::ETAG)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

#[cfg(test)]
mod tests;
