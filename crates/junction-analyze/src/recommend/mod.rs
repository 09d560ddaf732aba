//! From recorded numbers to ranked, explained recommendations.
//!
//! Each rule (in [`rules`]) looks at one endpoint, upstream or call chain and
//! says what to change, the evidence, the expected gain in a team's terms,
//! the risk, and the config snippet that applies it. Ranking is by
//! [`Recommendation::score`]: the caller waiting time the change would have
//! saved over the window, in seconds (trimming converts bytes at 100 Mbit/s;
//! breakers and timeouts count the time callers spent on failing or
//! overlong calls), so different kinds compare on one scale.

mod chain;
mod endpoint;
mod rules;
mod upstream;
pub mod yaml;

use crate::recorder::Recorder;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

/// What a recommendation changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Cache a read whose answers repeat.
    Cache,
    /// Stop identical requests: idempotency keys or coalescing.
    Duplicates,
    /// Answer a write at once and deliver it durably in the background.
    Async,
    /// A caller waits for several calls in sequence.
    Chain,
    /// Send only the fields callers read.
    Trim,
    /// Bound how long an upstream may take.
    Timeout,
    /// Stop calling an upstream while it fails.
    Breaker,
}

impl Kind {
    /// The name used in tables and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Cache => "cache",
            Kind::Duplicates => "duplicates",
            Kind::Async => "async",
            Kind::Chain => "chain",
            Kind::Trim => "trim",
            Kind::Timeout => "timeout",
            Kind::Breaker => "breaker",
        }
    }
}

/// One recommendation, with what backs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Recommendation {
    /// What it changes.
    pub kind: Kind,
    /// What it applies to: `GET /suppliers/{id}` or `upstream supplier`.
    pub target: String,
    /// The route, when it applies to one (configured name, or the suggested one).
    pub route: Option<String>,
    /// The upstream concerned.
    pub upstream: Option<String>,
    /// One line saying what to do.
    pub title: String,
    /// The numbers it rests on.
    pub evidence: String,
    /// What the change would have gained over the window.
    pub gain: String,
    /// What it costs or may break.
    pub risk: String,
    /// Config that applies it.
    pub yaml: String,
    /// Caller seconds saved over the window: the ranking key.
    pub score: f64,
    /// The key figures, by name (`hit_ratio`, `p50_ms`, `suggested_ttl_s`…).
    pub figures: BTreeMap<String, f64>,
}

/// What the running config already does, so nothing applied is recommended
/// again (empty when analysing a log).
#[derive(Debug, Clone, Default)]
pub struct Known {
    /// Routes that cache.
    pub cached_routes: BTreeSet<String>,
    /// Routes that are async.
    pub async_routes: BTreeSet<String>,
    /// Routes with idempotency keys.
    pub idempotent_routes: BTreeSet<String>,
    /// Routes with a default projection.
    pub fields_routes: BTreeSet<String>,
    /// Each upstream's per-attempt timeout.
    pub upstream_timeouts: BTreeMap<String, Duration>,
}

/// The whole analysis.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Report {
    /// `live` or the log's format.
    pub source: String,
    /// What the numbers cover.
    pub window: Window,
    /// Recommendations, best first.
    pub recommendations: Vec<Recommendation>,
    /// What could not be analysed and why (fields the source lacks).
    pub limitations: Vec<String>,
    /// Every endpoint seen, busiest first.
    pub endpoints: Vec<EndpointSummary>,
    /// Keys tracked by the cache simulation and duplicate detection.
    pub tracked_keys: usize,
    /// Keys not tracked because the tables were full.
    pub untracked_keys: u64,
}

/// The time the analysis covers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Window {
    /// Requests in it.
    pub requests: u64,
    /// Its length in seconds (0 when the source has no clock).
    pub seconds: f64,
    /// Its start, RFC 3339, when known.
    pub from: Option<String>,
    /// Its end, RFC 3339, when known.
    pub to: Option<String>,
}

/// One endpoint's headline numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EndpointSummary {
    /// The route (configured or suggested name).
    pub route: String,
    /// The method.
    pub method: String,
    /// The path template.
    pub path: String,
    /// The upstream, when known.
    pub upstream: Option<String>,
    /// Requests in the window.
    pub requests: u64,
    /// Median latency.
    pub p50_ms: f64,
    /// 99th percentile latency.
    pub p99_ms: f64,
    /// Share answered 5xx.
    pub error_ratio: f64,
    /// Median response size.
    pub p50_bytes: u64,
}

/// Analyses what `rec` recorded.
pub fn report(rec: &Recorder, known: &Known, source: &str) -> Report {
    let (first, last) = rec.span_ms();
    let seconds = match (first, last) {
        (Some(f), Some(l)) => {
            let span = (l - f) as f64 / 1000.0;
            match rec.settings().window {
                Some(w) => span.min(w.as_secs_f64()),
                None => span,
            }
        }
        _ => 0.0,
    };
    let mut endpoints: Vec<EndpointSummary> = rec
        .endpoints()
        .iter()
        .map(|e| {
            let t = e.totals();
            EndpointSummary {
                route: rules::route_of(e),
                method: e.method.clone(),
                path: e.template.clone(),
                upstream: e.upstream.clone(),
                requests: t.requests,
                p50_ms: t.latency_ms(0.5),
                p99_ms: t.latency_ms(0.99),
                error_ratio: ratio(t.server_errors, t.with_status),
                p50_bytes: t.bytes.quantile(0.5),
            }
        })
        .collect();
    endpoints.sort_by_key(|e| std::cmp::Reverse(e.requests));
    let mut recommendations = all(rec, known, seconds);
    recommendations.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.kind.cmp(&b.kind)));
    Report {
        source: source.to_owned(),
        window: Window {
            requests: endpoints.iter().map(|e| e.requests).sum(),
            seconds,
            from: first.and_then(rfc3339),
            to: last.and_then(rfc3339),
        },
        recommendations,
        limitations: rules::limitations(rec),
        endpoints,
        tracked_keys: rec.tracked_keys(),
        untracked_keys: rec.untracked_keys(),
    }
}

/// Every recommendation the recorded numbers support.
fn all(rec: &Recorder, known: &Known, seconds: f64) -> Vec<Recommendation> {
    let span = rules::span(seconds);
    let mut out = Vec::new();
    for e in rec.endpoints() {
        let t = e.totals();
        if t.requests < rules::MIN_REQUESTS {
            continue;
        }
        let cache = endpoint::cache(e, &t, known, &span, seconds);
        // Caching already answers a read's repeats.
        if cache.is_none() {
            out.extend(endpoint::duplicates(e, &t, known, &span));
        }
        out.extend(cache);
        out.extend(endpoint::async_write(e, &t, known, &span));
        out.extend(endpoint::trim(e, &t, known, &span));
    }
    for u in rec.upstreams() {
        let t = u.totals();
        if t.requests < rules::MIN_REQUESTS {
            continue;
        }
        out.extend(upstream::timeout(u, known, &span));
        out.extend(upstream::breaker(u, &span));
    }
    let chains = chain::chains(rec, &out, &span);
    out.extend(chains);
    out
}

fn ratio(n: u64, of: u64) -> f64 {
    if of == 0 {
        0.0
    } else {
        n as f64 / of as f64
    }
}

/// Unix ms as RFC 3339 (UTC).
pub fn rfc3339(ms: u64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000).ok()?;
    t.format(&time::format_description::well_known::Rfc3339)
        .ok()
}

#[cfg(test)]
#[path = "tests.rs"]
mod tests;
