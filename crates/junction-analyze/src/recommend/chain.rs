//! The rule about call chains: a caller waiting for several calls in sequence.

use super::rules::*;
use super::{ratio, Kind, Recommendation};
use crate::recorder::{Endpoint, Recorder};

pub(super) fn chains(rec: &Recorder, found: &[Recommendation], span: &str) -> Vec<Recommendation> {
    let endpoints = rec.endpoints();
    let mut out = Vec::new();
    for c in rec.traces().chains() {
        if c.count < MIN_REQUESTS / 2 || ratio(c.sequential, c.count) < CHAIN_MIN_SEQUENTIAL {
            continue;
        }
        let hops: Vec<&Endpoint> = c.hops.iter().map(|i| &endpoints[*i]).collect();
        let mut before = 0.0;
        let mut after = 0.0;
        let mut parallel: f64 = 0.0;
        let mut changes = Vec::new();
        let mut yaml = String::new();
        for e in &hops {
            let p50 = e.totals().latency_ms(0.5);
            before += p50;
            parallel = parallel.max(p50);
            let route = route_of(e);
            let rec_of = |k: Kind| {
                found.iter().find(|r| {
                    r.kind == k
                        && r.route.as_deref() == Some(route.as_str())
                        && r.target.starts_with(&e.method)
                })
            };
            if let Some(a) = rec_of(Kind::Async) {
                after += ACCEPT_MS;
                changes.push(format!("{} async", a.target));
                yaml.push_str(&a.yaml);
            } else if let Some(ca) = rec_of(Kind::Cache) {
                let hit = ca.figures.get("ttl_hit_ratio").copied().unwrap_or(0.0);
                after += p50 * (1.0 - hit);
                changes.push(format!("{} cached", ca.target));
                yaml.push_str(&ca.yaml);
            } else {
                after += p50;
            }
        }
        let path: Vec<String> = hops
            .iter()
            .map(|e| format!("{} {}", e.method, e.template))
            .collect();
        let mut r = recommendation(Kind::Chain, None, None);
        // Unique per chain: one caller may run several.
        r.target = format!("caller {}: {}", c.caller, path.join(" → "));
        r.upstream = None;
        r.evidence = format!(
            "{} requests of caller {} in {span} made {} calls one after the other: {}; the caller waited {} on average (sum of p50s {})",
            c.count,
            c.caller,
            hops.len(),
            path.join(" → "),
            ms(c.mean_total_ms),
            ms(before)
        );
        if changes.is_empty() {
            r.title = format!(
                "Call {}'s {} upstream calls in parallel",
                c.caller,
                hops.len()
            );
            r.gain = format!(
                "about {} instead of {} per request (the slowest call, not the sum)",
                ms(parallel),
                ms(before)
            );
            r.risk = "the calls must not depend on each other's answers".to_owned();
            r.yaml = "# no config: the caller issues these calls concurrently\n".to_owned();
            after = parallel;
        } else {
            r.title = format!(
                "Break caller {}'s {}-call chain: {}",
                c.caller,
                hops.len(),
                changes.join(", ")
            );
            r.gain = format!(
                "the caller waits about {} instead of {} per request",
                ms(after),
                ms(before)
            );
            r.risk = "see the async and cache recommendations it combines".to_owned();
            r.yaml = yaml.replace("routes:\n", "");
            r.yaml.insert_str(0, "routes:\n");
        }
        r.score = c.count as f64 * (before - after).max(0.0) / 1000.0;
        r.figures = figures([
            ("hops", hops.len() as f64),
            ("requests", c.count as f64),
            ("before_ms", before),
            ("after_ms", after),
        ]);
        out.push(r);
    }
    out
}
