//! The rules: when an endpoint, upstream or chain earns a recommendation,
//! and what it says. Every threshold is a named constant here.

use super::yaml::route_name;
use super::{Kind, Recommendation};
use crate::recorder::{Endpoint, Recorder};
use std::collections::BTreeMap;

/// Requests an endpoint or upstream needs before anything is said about it.
pub const MIN_REQUESTS: u64 = 20;
/// Share of reads that must find the same answer as last time to suggest caching.
pub(super) const CACHE_MIN_REPEAT: f64 = 0.5;
/// Share of simulated cache hits allowed to be outdated at the suggested lifetime.
pub(super) const CACHE_MAX_STALE: f64 = 0.02;
/// Share (and count) of identical repeated requests worth fixing.
pub(super) const DUP_MIN_RATIO: f64 = 0.05;
pub(super) const DUP_MIN: u64 = 5;
/// A write's median latency from which answering at once is worth it.
pub(super) const ASYNC_MIN_P50_MS: f64 = 100.0;
/// Share of a write's successes that must be plain acknowledgements.
pub(super) const ASYNC_MIN_ACK: f64 = 0.9;
/// Median JSON response size from which trimming is suggested.
pub(super) const TRIM_MIN_P50_BYTES: u64 = 8 * 1024;
/// Error ratio from which a breaker (and retries) are suggested.
pub(super) const BREAKER_MIN_ERROR: f64 = 0.02;
/// A spell: a 10 s bucket with at least this many calls and this error share.
pub(super) const SPIKE_MIN_CALLS: u64 = 5;
pub(super) const SPIKE_ERROR: f64 = 0.5;
/// Suggested timeout: p99.9 times this, rounded up.
pub(super) const TIMEOUT_FACTOR: f64 = 1.5;
/// The shortest timeout suggested: a fast upstream still has slow moments
/// (a GC pause, a cold cache) a timeout should ride out.
pub(super) const TIMEOUT_FLOOR_MS: f64 = 1_000.0;
/// A configured timeout this many times the suggestion (and over 1 s) is too loose.
pub(super) const TIMEOUT_SLACK: f64 = 4.0;
/// Share of a chain's traces that must call one after the other.
pub(super) const CHAIN_MIN_SEQUENTIAL: f64 = 0.8;
/// Bytes converted to caller time for ranking: 100 Mbit/s.
pub(super) const BYTES_PER_SECOND: f64 = 12.5e6;
/// What an async accept costs a caller, for the expected latency.
pub(super) const ACCEPT_MS: f64 = 5.0;

/// The route name of an endpoint: configured, or made from method and path.
pub(super) fn route_of(e: &Endpoint) -> String {
    e.route
        .clone()
        .unwrap_or_else(|| route_name(&e.method, &e.template))
}

pub(super) fn upstream_of(e: &Endpoint) -> String {
    e.upstream
        .clone()
        .unwrap_or_else(|| crate::logs::BACKEND.to_owned())
}

pub(super) fn is_read(e: &Endpoint) -> bool {
    matches!(e.method.as_str(), "GET" | "HEAD")
}

pub(super) fn pct(x: f64) -> String {
    format!("{:.0}%", x * 100.0)
}

pub(super) fn ms(x: f64) -> String {
    if x >= 1000.0 {
        format!("{:.2} s", x / 1000.0)
    } else {
        format!("{x:.0} ms")
    }
}

pub(super) fn bytes(b: f64) -> String {
    if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

pub(super) fn span(seconds: f64) -> String {
    if seconds <= 0.0 {
        "the input".to_owned()
    } else if seconds >= 120.0 {
        format!("{:.0} min", seconds / 60.0)
    } else {
        format!("{seconds:.0} s")
    }
}

pub(super) fn recommendation(
    kind: Kind,
    e: Option<&Endpoint>,
    upstream: Option<String>,
) -> Recommendation {
    Recommendation {
        kind,
        target: match e {
            Some(e) => format!("{} {}", e.method, e.template),
            None => format!("upstream {}", upstream.as_deref().unwrap_or("-")),
        },
        route: e.map(route_of),
        upstream: upstream.or_else(|| e.and_then(|e| e.upstream.clone())),
        title: String::new(),
        evidence: String::new(),
        gain: String::new(),
        risk: String::new(),
        yaml: String::new(),
        score: 0.0,
        figures: BTreeMap::new(),
    }
}

/// What the source lacked, and which recommendations that ruled out.
pub(super) fn limitations(rec: &Recorder) -> Vec<String> {
    let p = rec.presence();
    let mut out = Vec::new();
    if p.samples == 0 {
        out.push("no requests seen yet".to_owned());
        return out;
    }
    let none = |n: u64| n == 0;
    if none(p.time) {
        out.push(
            "no timestamps: no cache simulation, duplicate detection, call chains or error spells"
                .to_owned(),
        );
    }
    if none(p.status) {
        out.push("no status codes: async candidates (201/202/204 answers), error ratios and breakers could not be assessed".to_owned());
    }
    if none(p.caller) {
        out.push("no caller (caller header or client address): identical requests from one caller could not be found".to_owned());
    }
    if none(p.trace) {
        out.push(
            "no trace ids sent by callers (traceparent): call chains could not be found".to_owned(),
        );
    }
    if none(p.response_hash) {
        out.push("no response body hashes: cache candidates assume answers repeat, so their hit ratios are upper bounds".to_owned());
    }
    if p.writes > 0 && none(p.request_hash) {
        out.push(
            "no request body hashes: duplicate writes could not be told from distinct ones"
                .to_owned(),
        );
    }
    if none(p.bytes) {
        out.push("no response sizes: payload trimming could not be assessed".to_owned());
    } else if none(p.json_known) {
        out.push("no content types: large responses are not known to be JSON".to_owned());
    }
    if rec.untracked_keys() > 0 {
        out.push(format!(
            "{} keys were not tracked: the key table (max_keys {}) was full",
            rec.untracked_keys(),
            rec.settings().max_keys
        ));
    }
    if rec.untracked_endpoints() > 0 {
        out.push(format!(
            "{} requests of endpoints past the first {} were not analysed",
            rec.untracked_endpoints(),
            rec.settings().max_endpoints
        ));
    }
    out
}

/// Key figures by name, as a recommendation carries them.
pub(super) fn figures<const N: usize>(pairs: [(&str, f64); N]) -> BTreeMap<String, f64> {
    pairs.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}
