//! Rules about one upstream: timeout and breaker.

use super::rules::*;
use super::yaml::{duration, nice_ceil_ms, scalar};
use super::{ratio, Kind, Known, Recommendation};
use crate::recorder::Upstream;

pub(super) fn timeout(u: &Upstream, known: &Known, span: &str) -> Option<Recommendation> {
    let t = u.totals();
    let q = |q: f64| t.latency.quantile(q) as f64 / 1000.0;
    let (p50, p99, p999, max) = (q(0.5), q(0.99), q(0.999), q(1.0));
    let suggested = nice_ceil_ms((p999 * TIMEOUT_FACTOR).max(TIMEOUT_FLOOR_MS));
    let configured = known
        .upstream_timeouts
        .get(&u.name)
        .map(|d| d.as_millis() as u64);
    if let Some(c) = configured {
        if (c as f64) <= suggested as f64 * TIMEOUT_SLACK || c <= 1_000 {
            return None;
        }
    }
    let over = t.latency.excess_over(suggested * 1000) / 1e6;
    let mut r = recommendation(Kind::Timeout, None, Some(u.name.clone()));
    r.title = match configured {
        Some(c) => format!(
            "Lower the timeout of upstream {} from {} to {}",
            u.name,
            duration(c),
            duration(suggested)
        ),
        None => format!(
            "Give upstream {} a timeout of {}",
            u.name,
            duration(suggested)
        ),
    };
    r.evidence = format!(
        "{} calls in {span}: p50 {}, p99 {}, p99.9 {}, max {}; {}",
        t.requests,
        ms(p50),
        ms(p99),
        ms(p999),
        ms(max),
        match configured {
            Some(c) => format!("its timeout is {}", duration(c)),
            None => "no timeout is known for it (the source cannot say)".to_owned(),
        }
    );
    r.gain = format!(
        "a hung or very slow call holds its caller at most {} ({:.1} s of waiting past it in {span}), and a stuck upstream cannot pile up callers",
        duration(suggested),
        over
    );
    r.risk = format!(
        "calls slower than {} fail (fewer than 1 in 1,000 today: it is 1.5 times p99.9); they count as timeouts for the breaker",
        duration(suggested)
    );
    r.yaml = format!(
        "upstreams:\n  {}:\n    timeout: {}\n",
        scalar(&u.name),
        duration(suggested)
    );
    r.score = over + 0.001 * t.requests as f64 * p50 / 1000.0;
    r.figures = figures([
        ("suggested_timeout_ms", suggested as f64),
        ("p99_ms", p99),
        ("p999_ms", p999),
        ("max_ms", max),
    ]);
    Some(r)
}

pub(super) fn breaker(u: &Upstream, span: &str) -> Option<Recommendation> {
    let t = u.totals();
    let error_ratio = ratio(t.errors, t.requests);
    let spells: Vec<(u64, u64, u64)> = u
        .buckets()
        .filter(|(_, n, err)| *n >= SPIKE_MIN_CALLS && ratio(*err, *n) >= SPIKE_ERROR)
        .collect();
    if error_ratio < BREAKER_MIN_ERROR && spells.is_empty() {
        return None;
    }
    let (spell_calls, spell_errors) = spells.iter().fold((0, 0), |a, b| (a.0 + b.1, a.1 + b.2));
    let baseline = ratio(
        t.errors.saturating_sub(spell_errors),
        t.requests.saturating_sub(spell_calls),
    );
    let threshold = ((baseline * 300.0 / 5.0).ceil() * 5.0).clamp(20.0, 50.0);
    let p50 = t.latency.quantile(0.5) as f64 / 1000.0;
    let mut r = recommendation(Kind::Breaker, None, Some(u.name.clone()));
    r.title = format!(
        "Break the circuit to upstream {} at {threshold:.0}% errors{}",
        u.name,
        if baseline > 0.001 {
            " and retry its sparse errors"
        } else {
            ""
        }
    );
    r.evidence = format!(
        "{} of {} calls failed ({}) in {span}; {} 10 s spells with over half the calls failing ({} calls); outside them {} failed",
        t.errors,
        t.requests,
        pct(error_ratio),
        spells.len(),
        spell_calls,
        pct(baseline)
    );
    r.gain = format!(
        "during the spells callers get 503 at once instead of waiting p50 {} for an error ({} calls), and the upstream gets room to recover{}",
        ms(p50),
        spell_errors,
        if baseline > 0.001 {
            format!("; retries turn most of the {} sparse errors into successes", pct(baseline))
        } else {
            String::new()
        }
    );
    r.risk = "while open, the upstream's callers get 503 with Retry-After (async subscribers pause and keep their messages); a threshold too low opens on noise; retries add load, bounded by the retry budget".to_owned();
    let mut yaml = format!(
        "upstreams:\n  {}:\n    breaker: {{ error_threshold_percentage: {threshold:.0}, min_requests: 20, window: 10s, reset_timeout: 5s }}\n",
        scalar(&u.name)
    );
    if baseline > 0.001 {
        yaml.push_str("    retry: { attempts: 3, backoff: 100ms, max_backoff: 1s }\n");
    }
    r.yaml = yaml;
    r.score = t.errors as f64 * p50 / 1000.0;
    r.figures = figures([
        ("error_ratio", error_ratio),
        ("baseline_error_ratio", baseline),
        ("spells", spells.len() as f64),
        ("threshold_percent", threshold),
    ]);
    Some(r)
}
