//! Rules about one endpoint: cache, duplicates, async, trimming.

use super::rules::*;
use super::yaml::{duration, route_entry, scalar};
use super::{ratio, Kind, Known, Recommendation};
use crate::aggregate::{EndpointAgg, TTLS_S};
use crate::recorder::Endpoint;

pub(super) fn cache(
    e: &Endpoint,
    t: &EndpointAgg,
    known: &Known,
    span: &str,
    seconds: f64,
) -> Option<Recommendation> {
    let route = route_of(e);
    if !is_read(e) || known.cached_routes.contains(&route) || t.cache_requests < MIN_REQUESTS {
        return None;
    }
    let verified = t.repeats_unverified == 0;
    let repeats = if verified {
        t.repeats
    } else {
        t.repeats + t.repeats_unverified
    };
    let hit_ratio = ratio(repeats, t.cache_requests);
    if hit_ratio < CACHE_MIN_REPEAT {
        return None;
    }
    // Nothing longer than what was watched: an answer unchanged for 3 s
    // says nothing about the next 5 minutes.
    let watched = TTLS_S
        .iter()
        .rposition(|s| *s as f64 <= seconds.max(1.0))
        .unwrap_or(0);
    let i = if verified {
        let ok = |i: &usize| {
            t.ttl[*i].hits > 0 && ratio(t.ttl[*i].stale, t.ttl[*i].hits) <= CACHE_MAX_STALE
        };
        (0..=watched).rev().find(ok).unwrap_or(0)
    } else {
        TTLS_S
            .iter()
            .rposition(|s| *s <= 60)
            .unwrap_or(0)
            .min(watched)
    };
    let ttl_s = TTLS_S[i];
    let sim = t.ttl[i];
    let p50 = t.latency_ms(0.5);
    let mut r = recommendation(Kind::Cache, Some(e), None);
    r.title = format!(
        "Cache {} {} for {}",
        e.method,
        e.template,
        duration(ttl_s * 1000)
    );
    r.evidence = format!(
        "{} reads in {span}; {} {} within 60 s; p50 {}, p99 {}{}",
        t.cache_requests,
        pct(hit_ratio),
        if verified {
            "got the same body as the previous answer for their URL"
        } else {
            "asked for a URL already answered"
        },
        ms(p50),
        ms(t.latency_ms(0.99)),
        if t.lifetimes.count() > 0 {
            format!(
                "; a body stayed the same for {} (median) before it changed",
                ms(t.lifetimes.quantile(0.5) as f64)
            )
        } else if verified {
            format!("; no body changed in the {span} observed")
        } else {
            String::new()
        }
    );
    r.gain = format!(
        "with ttl {}: {} upstream calls saved ({} of reads), answered in under 1 ms instead of p50 {}",
        duration(ttl_s * 1000),
        sim.hits,
        pct(ratio(sim.hits, t.cache_requests)),
        ms(p50)
    );
    r.risk = if verified {
        format!(
            "answers up to {} old: {} of those hits would have served an outdated body; invalidate from writes with cache tags if that matters",
            duration(ttl_s * 1000),
            pct(ratio(sim.stale, sim.hits))
        )
    } else {
        "the source has no body hashes, so whether answers changed is unknown: the hit ratio is an upper bound; answers may be up to the ttl old".to_owned()
    };
    r.yaml = proxied_route_yaml(
        e,
        &route,
        format!(
            "cache: {{ ttl: {}, stale_if_error: 10m }}",
            duration(ttl_s * 1000)
        ),
    );
    r.score = sim.hits as f64 * p50 / 1000.0;
    r.figures = figures([
        ("hit_ratio", hit_ratio),
        ("suggested_ttl_s", ttl_s as f64),
        ("ttl_hit_ratio", ratio(sim.hits, t.cache_requests)),
        ("calls_saved", sim.hits as f64),
        ("stale_ratio", ratio(sim.stale, sim.hits)),
        ("p50_ms", p50),
        ("requests", t.cache_requests as f64),
    ]);
    Some(r)
}

pub(super) fn duplicates(
    e: &Endpoint,
    t: &EndpointAgg,
    known: &Known,
    span: &str,
) -> Option<Recommendation> {
    let route = route_of(e);
    let r_dup = ratio(t.dups, t.dup_checked);
    if t.dup_checked < MIN_REQUESTS || r_dup < DUP_MIN_RATIO || t.dups < DUP_MIN {
        return None;
    }
    let read = is_read(e);
    if (read && known.cached_routes.contains(&route))
        || (!read && known.idempotent_routes.contains(&route))
    {
        return None;
    }
    let p50 = t.latency_ms(0.5);
    let mut r = recommendation(Kind::Duplicates, Some(e), None);
    r.evidence = format!(
        "{} of {} requests in {span} repeated an identical one from the same caller (same path{}) within 5 s; p50 {}",
        t.dups,
        t.dup_checked,
        if read { "" } else { " and body" },
        ms(p50)
    );
    let policy = if read {
        r.title = format!("Coalesce repeated reads of {} {}", e.method, e.template);
        r.gain = format!(
            "{} upstream calls saved: a 1 s cache answers the repeats and collapses concurrent ones into one call",
            t.dups
        );
        r.risk = "repeats within a second get the same answer".to_owned();
        "cache: { ttl: 1s }".to_owned()
    } else {
        r.title = format!("Make {} {} idempotent", e.method, e.template);
        r.gain = format!(
            "{} repeated writes run once instead of twice (no double orders or charges); the repeat gets the stored answer at once",
            t.dups
        );
        r.risk = "callers must send an Idempotency-Key header (the same one when they retry); without it Junction cannot tell a retry from a new request".to_owned();
        "idempotency: { ttl: 24h }".to_owned()
    };
    r.yaml = proxied_route_yaml(e, &route, policy);
    r.score = t.dups as f64 * p50 / 1000.0;
    r.figures = figures([
        ("duplicates", t.dups as f64),
        ("duplicate_ratio", r_dup),
        ("p50_ms", p50),
    ]);
    Some(r)
}

pub(super) fn async_write(
    e: &Endpoint,
    t: &EndpointAgg,
    known: &Known,
    span: &str,
) -> Option<Recommendation> {
    let route = route_of(e);
    if is_read(e) || known.async_routes.contains(&route) || t.with_status < MIN_REQUESTS {
        return None;
    }
    let p50 = t.latency_ms(0.5);
    let ack = ratio(t.acks, t.ok);
    if p50 < ASYNC_MIN_P50_MS || t.ok == 0 || ack < ASYNC_MIN_ACK {
        return None;
    }
    let upstream = upstream_of(e);
    let mut r = recommendation(Kind::Async, Some(e), None);
    r.title = format!(
        "Answer {} {} at once and deliver it durably (async)",
        e.method, e.template
    );
    r.evidence = format!(
        "{} requests in {span}; callers waited p50 {}, p99 {}; {} of successes carried no data (201/202/204 or at most 64 bytes); {} failed with 5xx",
        t.requests,
        ms(p50),
        ms(t.latency_ms(0.99)),
        pct(ack),
        pct(ratio(t.server_errors, t.with_status))
    );
    let saved_s = t.requests as f64 * (p50 - ACCEPT_MS).max(0.0) / 1000.0;
    r.gain = format!(
        "callers answered 202 in ~{} instead of p50 {} ({:.0} s of waiting saved in {span}); the {} failed calls become retried deliveries instead of errors callers see",
        ms(ACCEPT_MS),
        ms(p50),
        saved_s,
        t.server_errors
    );
    r.risk = "eventual consistency: the caller gets 202 and an event id, not the upstream's answer; the upstream receives each event at least once, so it should de-duplicate by the event id".to_owned();
    let subscriber_path = if e.template.contains('{') {
        format!(
            "{}  # one fixed path: the event carries the request body",
            scalar(&e.template.replace(['{', '}'], ""))
        )
    } else {
        scalar(&e.template)
    };
    r.yaml = format!(
        "routes:\n{}",
        route_entry(
            &route,
            &e.method,
            &e.template,
            "",
            &[
                "async:".to_owned(),
                format!("  topic: {}", scalar(&route)),
                "  subscribers:".to_owned(),
                // Named after the route: subscriber names are unique in a config.
                format!(
                    "    - {{ name: {}, upstream: {}, path: {} }}",
                    scalar(&route),
                    scalar(&upstream),
                    subscriber_path
                ),
            ],
        )
    );
    r.score = saved_s;
    r.figures = figures([
        ("p50_ms", p50),
        ("p99_ms", t.latency_ms(0.99)),
        ("ack_ratio", ack),
        ("requests", t.requests as f64),
        ("error_ratio", ratio(t.server_errors, t.with_status)),
    ]);
    Some(r)
}

pub(super) fn trim(
    e: &Endpoint,
    t: &EndpointAgg,
    known: &Known,
    span: &str,
) -> Option<Recommendation> {
    let route = route_of(e);
    let p50b = t.bytes.quantile(0.5);
    let sized = t.bytes.count();
    if sized < MIN_REQUESTS || p50b < TRIM_MIN_P50_BYTES || known.fields_routes.contains(&route) {
        return None;
    }
    // Not JSON (when the source says): projection cannot apply.
    if t.typed > 0 && t.json == 0 {
        return None;
    }
    let mean = t.bytes_total as f64 / sized as f64;
    let mut asked: Vec<(&String, &u64)> = e.fields_asked.iter().collect();
    asked.sort_by(|a, b| b.1.cmp(a.1).then(a.0.cmp(b.0)));
    let sizes: Vec<(&String, f64)> = {
        let mut v: Vec<_> = e
            .field_sizes
            .iter()
            .map(|(k, (n, b))| (k, *b as f64 / (*n).max(1) as f64))
            .collect();
        v.sort_by(|a, b| b.1.total_cmp(&a.1));
        v
    };
    let read_bytes: Option<f64> = (!asked.is_empty() && !sizes.is_empty()).then(|| {
        asked
            .iter()
            .map(|(f, _)| sizes.iter().find(|(k, _)| k == f).map_or(0.0, |s| s.1) + 4.0)
            .sum::<f64>()
            + 2.0
    });
    // Unknown share read: rank as if half the body is saved.
    let saved_per = read_bytes.map_or(mean / 2.0, |rb| (mean - rb).max(0.0));
    let mut r = recommendation(Kind::Trim, Some(e), None);
    r.title = format!(
        "Trim {} {} to the fields callers read",
        e.method, e.template
    );
    let fields_note = if asked.is_empty() {
        "no caller sent ?fields=, so which fields are read is unknown".to_owned()
    } else {
        format!(
            "{} requests sent ?fields=, asking for {}",
            e.asked_requests,
            asked
                .iter()
                .map(|(f, _)| f.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    let largest = if sizes.is_empty() {
        String::new()
    } else {
        format!(
            "; largest fields: {}",
            sizes
                .iter()
                .take(3)
                .map(|(k, b)| format!("{k} {} ({})", bytes(*b), pct(b / mean.max(1.0))))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    r.evidence = format!(
        "{} responses in {span}: p50 {}, p90 {}, max {}, {} in total{}; {fields_note}",
        sized,
        bytes(p50b as f64),
        bytes(t.bytes.quantile(0.9) as f64),
        bytes(t.bytes.quantile(1.0) as f64),
        bytes(t.bytes_total as f64),
        if t.json > 0 || e.field_samples > 0 {
            " of JSON".to_owned()
        } else {
            " (content type not in the source)".to_owned()
        },
    ) + &largest;
    r.gain = match read_bytes {
        Some(rb) => format!(
            "about {} per response instead of {} ({} less, {} in {span})",
            bytes(rb),
            bytes(mean),
            pct(saved_per / mean.max(1.0)),
            bytes(saved_per * sized as f64)
        ),
        None => format!(
            "up to {} per response ({} in {span}) for the fields callers do not read",
            bytes(mean),
            bytes(t.bytes_total as f64)
        ),
    };
    r.risk = "a route-wide projection drops the other fields for every caller; a caller needing more asks with ?fields= (or leave the route alone and have callers send ?fields=)".to_owned();
    let policy = if asked.is_empty() {
        "# fields: [id, name]  # the fields callers read; or have them send ?fields=id,name"
            .to_owned()
    } else {
        format!(
            "fields: [{}]",
            asked
                .iter()
                .map(|(f, _)| scalar(f))
                .collect::<Vec<_>>()
                .join(", ")
        )
    };
    r.yaml = proxied_route_yaml(e, &route, policy);
    r.score = saved_per * sized as f64 / BYTES_PER_SECOND;
    r.figures = figures([
        ("p50_bytes", p50b as f64),
        ("mean_bytes", mean),
        ("bytes_saved", saved_per * sized as f64),
        ("fields_asked", asked.len() as f64),
    ]);
    Some(r)
}

/// The `routes:` snippet of `e` proxied to its upstream with one `policy` line.
fn proxied_route_yaml(e: &Endpoint, route: &str, policy: String) -> String {
    format!(
        "routes:\n{}",
        route_entry(
            route,
            &e.method,
            &e.template,
            &format!("upstream: {}", scalar(&upstream_of(e))),
            &[policy],
        )
    )
}
