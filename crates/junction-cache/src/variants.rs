//! The stored responses of one URI: one per variant its `Vary` (and the route's
//! `vary:` list) selects, newest first.
//!
//! Why it exists: a shared cache keyed by URI alone would serve one client's
//! language, encoding or tenant variant to another. Keeping every variant of a
//! URI under the URI's one key also means that invalidating the URI (after an
//! unsafe request, or by key from the admin API) drops all of its variants in
//! one step, on every backend.
//!
//! What it promises:
//! - [`Variants::select`] returns the newest variant whose selecting header
//!   values equal the request's (RFC 9111 §4.1).
//! - [`Variants::with`] puts a new response first, drops the variants it
//!   supersedes (those the storing request would have selected) and those past
//!   retention, and keeps at most `max` variants: the oldest go first.

use std::sync::Arc;

use bytes::Bytes;
use http::HeaderMap;

use crate::codec::{decode_variants, encode_variants, DecodeError};
use crate::entry::CachedResponse;

/// The variants stored for one URI, newest first (never empty).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Variants {
    entries: Vec<Arc<CachedResponse>>,
}

// === impl Variants ===

impl Variants {
    /// A set holding one response.
    pub fn one(entry: CachedResponse) -> Self {
        Self {
            entries: vec![Arc::new(entry)],
        }
    }

    /// The newest variant the request selects.
    pub fn select(&self, request: &HeaderMap) -> Option<&Arc<CachedResponse>> {
        self.entries.iter().find(|e| e.matches(request))
    }

    /// This set with `entry` (stored for a request with `storing_request`
    /// headers) added first, superseded and expired variants dropped, at most
    /// `max` kept.
    pub fn with(
        existing: Option<&Self>,
        entry: impl Into<Arc<CachedResponse>>,
        storing_request: &HeaderMap,
        max: usize,
        now_ms: u64,
    ) -> Self {
        let mut entries = vec![entry.into()];
        // A response without selecting headers answers every request: older ones are unreachable.
        if entries[0].selecting.is_empty() {
            return Self { entries };
        }
        if let Some(existing) = existing {
            entries.extend(
                existing
                    .entries
                    .iter()
                    .filter(|v| !v.selecting.is_empty() && !v.matches(storing_request))
                    .filter(|v| v.remaining_retention(now_ms).is_some())
                    .take(max.saturating_sub(1))
                    .cloned(),
            );
        }
        Self { entries }
    }

    /// Every variant, newest first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<CachedResponse>> {
        self.entries.iter()
    }

    /// Number of variants.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Always false: a set holds at least one variant.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// How long the longest-lived variant stays of use.
    pub fn remaining_retention(&self, now_ms: u64) -> Option<std::time::Duration> {
        self.entries
            .iter()
            .filter_map(|e| e.remaining_retention(now_ms))
            .max()
    }

    /// Approximate memory footprint of every variant.
    pub fn size_bytes(&self) -> u64 {
        self.entries.iter().map(|e| e.size_bytes()).sum()
    }

    /// The wire form (see [`crate::codec`]).
    pub fn encode(&self) -> Bytes {
        encode_variants(&self.entries)
    }

    /// Reads the wire form; bodies are slices of `buf`.
    pub fn decode(buf: Bytes) -> Result<Self, DecodeError> {
        let entries: Vec<_> = decode_variants(buf)?.into_iter().map(Arc::new).collect();
        if entries.is_empty() {
            return Err(DecodeError::BadLength);
        }
        Ok(Self { entries })
    }
}

impl From<CachedResponse> for Variants {
    fn from(entry: CachedResponse) -> Self {
        Self::one(entry)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entry::now_ms;
    use http::HeaderValue;
    use std::time::Duration;

    fn variant(body: &'static str, names: &[&str], request: &HeaderMap) -> CachedResponse {
        let names: Vec<String> = names.iter().map(|n| (*n).to_owned()).collect();
        CachedResponse {
            status: 200,
            body: Bytes::from_static(body.as_bytes()),
            stored_at_ms: now_ms(),
            fresh_for: Duration::from_secs(60),
            ..CachedResponse::default()
        }
        .select_by(&names, request)
    }

    fn req(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (n, v) in pairs {
            h.append(*n, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn selects_by_the_stored_request_values() {
        let fr = req(&[("foo", "1")]);
        let de = req(&[("foo", "2")]);
        let set = Variants::one(variant("one", &["foo"], &fr));
        assert!(set.select(&fr).is_some());
        assert!(set.select(&de).is_none());
        assert!(
            set.select(&HeaderMap::new()).is_none(),
            "absent is not a value"
        );
        let set = Variants::with(Some(&set), variant("two", &["foo"], &de), &de, 8, now_ms());
        assert_eq!(set.len(), 2);
        assert_eq!(set.select(&de).expect("two").body, "two");
        assert_eq!(set.select(&fr).expect("one").body, "one");
    }

    #[test]
    fn values_are_normalised_across_lines_and_whitespace() {
        let stored = req(&[("accept-language", "en, fr")]);
        let same = req(&[("accept-language", "en"), ("accept-language", " fr ")]);
        let other = req(&[("accept-language", "fr, en")]);
        let set = Variants::one(variant("x", &["accept-language"], &stored));
        assert!(set.select(&same).is_some());
        assert!(set.select(&other).is_none());
    }

    #[test]
    fn a_new_response_supersedes_what_its_request_selected_and_the_oldest_go_first() {
        let now = now_ms();
        let mut set = Variants::one(variant("v0", &["foo"], &req(&[("foo", "0")])));
        for (i, value) in ["1", "2", "3"].into_iter().enumerate() {
            let r = req(&[("foo", value)]);
            set = Variants::with(
                Some(&set),
                variant(["a", "b", "c"][i], &["foo"], &r),
                &r,
                3,
                now,
            );
        }
        let bodies: Vec<_> = set.iter().map(|e| e.body.clone()).collect();
        assert_eq!(bodies, ["c", "b", "a"]);
        let r = req(&[("foo", "2")]);
        set = Variants::with(Some(&set), variant("b2", &["foo"], &r), &r, 3, now);
        let bodies: Vec<_> = set.iter().map(|e| e.body.clone()).collect();
        assert_eq!(bodies, ["b2", "c", "a"]);
        // A response without Vary replaces every variant.
        set = Variants::with(Some(&set), variant("all", &[], &r), &r, 3, now);
        assert_eq!(set.len(), 1);
    }

    #[test]
    fn round_trips_and_reads_a_lone_entry() {
        let a = variant("a", &["foo"], &req(&[("foo", "1")]));
        let b = variant("b", &["foo"], &HeaderMap::new());
        let set = Variants::with(
            Some(&Variants::one(a.clone())),
            b,
            &HeaderMap::new(),
            8,
            now_ms(),
        );
        assert_eq!(Variants::decode(set.encode()).expect("decodes"), set);
        assert_eq!(
            Variants::decode(a.encode()).expect("decodes"),
            Variants::one(a)
        );
        let encoded = set.encode();
        assert!(Variants::decode(encoded.slice(..encoded.len() - 1)).is_err());
    }
}
