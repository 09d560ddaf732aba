//! A stored upstream response, its freshness, its ETag and its wire encoding.
//!
//! Why it exists: every backend stores the same thing and the gateway asks the
//! same questions of it (is it fresh, may it be served stale, what is its ETag).
//!
//! What it promises:
//! - [`CachedResponse::freshness`] follows one timeline: `Fresh` before
//!   `fresh_for`, then `Stale` within `stale_while_revalidate`, then
//!   `StaleIfError` within `stale_if_error`, then `Expired`.
//! - ETags computed here are strong, derived from the body with XXH3-128, so every
//!   process on every machine computes the same tag for the same bytes.
//! - [`CachedResponse::encode`] uses a small versioned binary format: a header
//!   (magic, version, status, times, ETag, headers) followed by the raw body.
//!   Chosen over postcard/JSON because the body is the bulk of every entry: here it
//!   is stored unframed and [`CachedResponse::decode`] hands it out as a zero-copy
//!   slice of the buffer Redis returned, JSON would inflate it by a third (base64),
//!   and the magic+version lets a future format change read old entries as a clean
//!   miss instead of garbage. Durations are kept to the millisecond. The serde
//!   derives remain for diagnostics and admin views.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::{BufMut, Bytes, BytesMut};
use http::{header, HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};

/// Format marker at the start of every encoded entry.
const MAGIC: &[u8; 3] = b"JCE";
/// Current encoding version.
const VERSION: u8 = 1;

/// A cached upstream response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CachedResponse {
    /// HTTP status code.
    pub status: u16,
    /// End-to-end response headers, in upstream order.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The full upstream body (projection happens after the cache).
    pub body: Bytes,
    /// Wall-clock time of storage, milliseconds since the Unix epoch.
    pub stored_at_ms: u64,
    /// How long the entry is fresh.
    pub fresh_for: Duration,
    /// How long past freshness it may be served while revalidating.
    pub stale_while_revalidate: Duration,
    /// How long past freshness it may be served when the upstream fails.
    pub stale_if_error: Duration,
    /// Entity tag, quoted (`"..."` or `W/"..."`).
    pub etag: String,
}

/// Where an entry stands on its timeline at a given moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Freshness {
    /// Serve as is.
    Fresh,
    /// Serve, and refresh in the background (within stale-while-revalidate).
    Stale,
    /// Serve only if the upstream fails (within stale-if-error).
    StaleIfError,
    /// Do not serve.
    Expired,
}

/// Why an encoded entry could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The buffer does not start with the entry marker.
    #[error("not a cache entry (bad magic)")]
    BadMagic,
    /// The entry was written by an unknown format version.
    #[error("unsupported cache entry version {0}")]
    UnsupportedVersion(u8),
    /// The buffer ended before the entry did, or has bytes past its end.
    #[error("cache entry is truncated or has trailing bytes")]
    BadLength,
    /// A header name or the ETag is not valid UTF-8.
    #[error("cache entry has a non-UTF-8 {0}")]
    NotUtf8(&'static str),
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
fn is_unstorable(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
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
            | "age"
    )
}

// === impl CachedResponse ===

impl CachedResponse {
    /// Builds an entry from an upstream response, dropping hop-by-hop headers
    /// (and any the `Connection` header names), `Set-Cookie` and `Age`. The
    /// upstream's ETag is kept when it has one; otherwise one is computed.
    pub fn from_upstream(
        status: u16,
        headers: &HeaderMap,
        body: Bytes,
        stored_at_ms: u64,
        fresh_for: Duration,
        stale_while_revalidate: Duration,
        stale_if_error: Duration,
    ) -> Self {
        let connection_named: Vec<String> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(|token| token.trim().to_ascii_lowercase())
            .collect();
        let kept = headers
            .iter()
            .filter(|(name, _)| {
                !is_unstorable(name) && !connection_named.iter().any(|c| c == name.as_str())
            })
            .map(|(name, value)| (name.as_str().to_owned(), value.as_bytes().to_vec()))
            .collect();
        let etag = headers
            .get(header::ETAG)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map_or_else(|| etag_for(&body), str::to_owned);
        Self {
            status,
            headers: kept,
            body,
            stored_at_ms,
            fresh_for,
            stale_while_revalidate,
            stale_if_error,
            etag,
        }
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

    /// Time since storage (zero if the clock went backwards).
    pub fn age(&self, now_ms: u64) -> Duration {
        Duration::from_millis(now_ms.saturating_sub(self.stored_at_ms))
    }

    /// Where the entry stands at `now_ms`.
    pub fn freshness(&self, now_ms: u64) -> Freshness {
        let age = self.age(now_ms);
        if age < self.fresh_for {
            Freshness::Fresh
        } else if age < self.fresh_for.saturating_add(self.stale_while_revalidate) {
            Freshness::Stale
        } else if age < self.fresh_for.saturating_add(self.stale_if_error) {
            Freshness::StaleIfError
        } else {
            Freshness::Expired
        }
    }

    /// How long a store keeps the entry after storage:
    /// `fresh_for + max(stale_while_revalidate, stale_if_error)`.
    pub fn retention(&self) -> Duration {
        self.fresh_for
            .saturating_add(self.stale_while_revalidate.max(self.stale_if_error))
    }

    /// Retention left at `now_ms`, or `None` once the entry is of no further use.
    pub fn remaining_retention(&self, now_ms: u64) -> Option<Duration> {
        self.retention()
            .checked_sub(self.age(now_ms))
            .filter(|d| !d.is_zero())
    }

    /// Approximate memory footprint: body, header names and values, and ETag.
    pub fn size_bytes(&self) -> u64 {
        let headers: usize = self.headers.iter().map(|(n, v)| n.len() + v.len()).sum();
        (self.body.len() + headers + self.etag.len()) as u64
    }

    /// Encodes the entry in the versioned binary format described in the module docs.
    pub fn encode(&self) -> Bytes {
        let mut buf = BytesMut::with_capacity(64 + self.size_bytes() as usize);
        buf.put_slice(MAGIC);
        buf.put_u8(VERSION);
        buf.put_u16(self.status);
        buf.put_u64(self.stored_at_ms);
        for duration in [
            self.fresh_for,
            self.stale_while_revalidate,
            self.stale_if_error,
        ] {
            buf.put_u64(u64::try_from(duration.as_millis()).unwrap_or(u64::MAX));
        }
        put_bytes(&mut buf, self.etag.as_bytes());
        buf.put_u32(u32::try_from(self.headers.len()).unwrap_or(u32::MAX));
        for (name, value) in &self.headers {
            put_bytes(&mut buf, name.as_bytes());
            put_bytes(&mut buf, value);
        }
        buf.put_u64(self.body.len() as u64);
        buf.put_slice(&self.body);
        buf.freeze()
    }

    /// Decodes an entry written by [`CachedResponse::encode`]; the body is a slice
    /// of `buf`, not a copy.
    pub fn decode(buf: Bytes) -> Result<Self, DecodeError> {
        let mut r = Reader { buf: &buf, pos: 0 };
        if r.take(MAGIC.len())? != MAGIC {
            return Err(DecodeError::BadMagic);
        }
        let version = r.u8()?;
        if version != VERSION {
            return Err(DecodeError::UnsupportedVersion(version));
        }
        let status = r.u16()?;
        let stored_at_ms = r.u64()?;
        let fresh_for = Duration::from_millis(r.u64()?);
        let stale_while_revalidate = Duration::from_millis(r.u64()?);
        let stale_if_error = Duration::from_millis(r.u64()?);
        let etag = utf8(r.bytes()?, "etag")?;
        let count = r.u32()? as usize;
        // Each header needs at least 8 length bytes: refuse counts the buffer cannot hold.
        if count > (buf.len() - r.pos) / 8 {
            return Err(DecodeError::BadLength);
        }
        let mut headers = Vec::with_capacity(count);
        for _ in 0..count {
            let name = utf8(r.bytes()?, "header name")?;
            headers.push((name, r.bytes()?.to_vec()));
        }
        let body_len = usize::try_from(r.u64()?).map_err(|_| DecodeError::BadLength)?;
        if buf.len() - r.pos != body_len {
            return Err(DecodeError::BadLength);
        }
        let body = buf.slice(r.pos..);
        Ok(Self {
            status,
            headers,
            body,
            stored_at_ms,
            fresh_for,
            stale_while_revalidate,
            stale_if_error,
            etag,
        })
    }
}

fn put_bytes(buf: &mut BytesMut, bytes: &[u8]) {
    buf.put_u32(u32::try_from(bytes.len()).unwrap_or(u32::MAX));
    buf.put_slice(&bytes[..bytes.len().min(u32::MAX as usize)]);
}

fn utf8(bytes: &[u8], what: &'static str) -> Result<String, DecodeError> {
    String::from_utf8(bytes.to_vec()).map_err(|_| DecodeError::NotUtf8(what))
}

/// Bounds-checked big-endian reader over an encoded entry.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.checked_add(n).ok_or(DecodeError::BadLength)?;
        let slice = self.buf.get(self.pos..end).ok_or(DecodeError::BadLength)?;
        self.pos = end;
        Ok(slice)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N)?);
        Ok(out)
    }

    fn u8(&mut self) -> Result<u8, DecodeError> {
        Ok(self.array::<1>()?[0])
    }

    fn u16(&mut self) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array()?))
    }

    fn u32(&mut self) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array()?))
    }

    fn u64(&mut self) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array()?))
    }

    fn bytes(&mut self) -> Result<&'a [u8], DecodeError> {
        let len = self.u32()? as usize;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn entry(fresh: u64, swr: u64, sie: u64) -> CachedResponse {
        CachedResponse {
            status: 200,
            headers: vec![
                ("content-type".into(), b"application/json".to_vec()),
                ("x-bin".into(), vec![0xff, 0]),
            ],
            body: Bytes::from_static(b"{\"id\":1}"),
            stored_at_ms: 1_000_000,
            fresh_for: Duration::from_millis(fresh),
            stale_while_revalidate: Duration::from_millis(swr),
            stale_if_error: Duration::from_millis(sie),
            etag: "\"abc\"".into(),
        }
    }

    #[test]
    fn freshness_follows_the_timeline() {
        let e = entry(1_000, 500, 2_000);
        let at = |ms: u64| e.freshness(1_000_000 + ms);
        assert_eq!(at(0), Freshness::Fresh);
        assert_eq!(at(999), Freshness::Fresh);
        assert_eq!(at(1_000), Freshness::Stale);
        assert_eq!(at(1_499), Freshness::Stale);
        assert_eq!(at(1_500), Freshness::StaleIfError);
        assert_eq!(at(2_999), Freshness::StaleIfError);
        assert_eq!(at(3_000), Freshness::Expired);
        // A clock that went backwards reads as age zero.
        assert_eq!(e.freshness(0), Freshness::Fresh);
        assert_eq!(e.retention(), Duration::from_millis(3_000));
        assert_eq!(
            e.remaining_retention(1_000_000 + 2_500),
            Some(Duration::from_millis(500))
        );
        assert_eq!(e.remaining_retention(1_000_000 + 3_000), None);
    }

    #[test]
    fn swr_longer_than_sie_stays_stale() {
        let e = entry(100, 1_000, 200);
        assert_eq!(e.freshness(1_000_000 + 500), Freshness::Stale);
        assert_eq!(e.freshness(1_000_000 + 1_100), Freshness::Expired);
    }

    #[test]
    fn encode_decode_round_trips_and_body_is_zero_copy() {
        let e = entry(1_000, 500, 2_000);
        let encoded = e.encode();
        let decoded = CachedResponse::decode(encoded.clone()).expect("decodes");
        assert_eq!(decoded, e);
        let body_start = encoded.len() - e.body.len();
        assert_eq!(decoded.body.as_ptr(), encoded[body_start..].as_ptr());
    }

    #[test]
    fn decode_rejects_damaged_input() {
        let encoded = entry(1, 1, 1).encode();
        for cut in [0, 3, 10, encoded.len() - 1] {
            assert_eq!(
                CachedResponse::decode(encoded.slice(..cut)),
                Err(DecodeError::BadLength),
                "cut at {cut}"
            );
        }
        let mut longer = encoded.to_vec();
        longer.push(0);
        assert_eq!(
            CachedResponse::decode(longer.into()),
            Err(DecodeError::BadLength)
        );
        let mut bad_magic = encoded.to_vec();
        bad_magic[0] = b'X';
        assert_eq!(
            CachedResponse::decode(bad_magic.into()),
            Err(DecodeError::BadMagic)
        );
        let mut bad_version = encoded.to_vec();
        bad_version[3] = 9;
        assert_eq!(
            CachedResponse::decode(bad_version.into()),
            Err(DecodeError::UnsupportedVersion(9))
        );
    }

    #[test]
    fn etag_is_stable_and_body_dependent() {
        // Fixed expectation: proves the tag does not depend on process state.
        assert_eq!(etag_for(b""), "\"99aa06d3014798d86001c324468d497f\"");
        assert_eq!(etag_for(b"abc"), etag_for(b"abc"));
        assert_ne!(etag_for(b"abc"), etag_for(b"abd"));
    }

    #[test]
    fn from_upstream_keeps_upstream_etag_and_drops_hop_by_hop() {
        let mut headers = HeaderMap::new();
        headers.insert("content-type", HeaderValue::from_static("application/json"));
        headers.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-private"),
        );
        headers.insert("x-private", HeaderValue::from_static("1"));
        headers.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        headers.insert("age", HeaderValue::from_static("10"));
        let body = Bytes::from_static(b"hello");
        let d = Duration::from_secs(1);
        let computed = CachedResponse::from_upstream(200, &headers, body.clone(), 5, d, d, d);
        assert_eq!(computed.etag, etag_for(b"hello"));
        let names: Vec<&str> = computed.headers.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["content-type"]);

        headers.insert("etag", HeaderValue::from_static("W/\"v7\""));
        let given = CachedResponse::from_upstream(200, &headers, body, 5, d, d, d);
        assert_eq!(given.etag, "W/\"v7\"");
        assert!(given.headers.iter().any(|(n, _)| n == "etag"));
    }
}
