//! Checks that span sections: references, route conflicts, value ranges.

use super::located::{pos_of, repeated, Errors};
use super::yaml::Node;
use super::{AdminConfig, QueueConfig, RouteConfig, UpstreamConfig};
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// Largest `admin.payload_peek.max_bytes`: one read is held in memory whole.
const MAX_PEEK_BYTES: u64 = 16 << 20;
const METHODS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"];

/// Records every cross-section problem in `errs`. `routes` holds the routes that
/// deserialized, with their index in the file; `queue` the queue section, if the
/// top level deserialized.
pub(super) fn check(
    root: &Node,
    upstream_names: &BTreeSet<String>,
    upstreams: &BTreeMap<String, UpstreamConfig>,
    routes: &[(usize, RouteConfig)],
    queue: Option<&QueueConfig>,
    admin: Option<&AdminConfig>,
    errs: &mut Errors,
) {
    let at = |i: usize, rest: &[&str]| -> super::yaml::Pos {
        let idx = format!("[{i}]");
        let mut segs = vec!["routes", idx.as_str()];
        segs.extend_from_slice(rest);
        pos_of(root, &segs)
    };

    if let Some(a) = admin {
        if !a.listen.ip().is_loopback() && a.token_env.is_none() && !a.insecure {
            errs.push(
                pos_of(root, &["admin", "listen"]),
                "admin.listen",
                format!(
                    "{} is reachable from other hosts, and the admin API can replay dead letters and drop the cache: \
                     set admin.token_env, or admin.insecure: true to serve it without a token anyway",
                    a.listen
                ),
            );
        }
        let peek = a.payload_peek.max_bytes.0;
        if peek == 0 || peek > MAX_PEEK_BYTES {
            errs.push(
                pos_of(root, &["admin", "payload_peek", "max_bytes"]),
                "admin.payload_peek.max_bytes",
                format!("must be between 1 byte and 16MiB (use mode: off to show no payload), got {peek}"),
            );
        }
    }

    super::validate_queue::check(root, queue, errs);

    for section in ["queue", "cache"] {
        let url = root
            .get(section)
            .filter(|(_, s)| s.get("backend").and_then(|(_, b)| b.as_str()) == Some("redis"))
            .and_then(|(_, s)| s.get("url"))
            .and_then(|(_, v)| v.as_str());
        if let Some(url) = url {
            let scheme = url.split_once("://").map(|(s, _)| s);
            if !matches!(scheme, Some("redis" | "rediss" | "redis+unix" | "unix")) {
                errs.push(
                    pos_of(root, &[section, "url"]),
                    &format!("{section}.url"),
                    format!("invalid Redis URL {url:?}: expected e.g. redis://127.0.0.1:6379"),
                );
            }
        }
    }

    let otlp = root
        .get("telemetry")
        .and_then(|(_, t)| t.get("otlp_endpoint"))
        .and_then(|(_, v)| v.as_str());
    if let Some(endpoint) = otlp {
        let valid = endpoint.parse::<http::Uri>().ok().filter(|u| {
            matches!(u.scheme_str(), Some("http") | Some("https")) && u.host().is_some()
        });
        if valid.is_none() {
            errs.push(
                pos_of(root, &["telemetry", "otlp_endpoint"]),
                "telemetry.otlp_endpoint",
                format!("invalid OTLP endpoint {endpoint:?}: expected e.g. http://127.0.0.1:4318"),
            );
        }
    }

    let log_level = root
        .get("telemetry")
        .and_then(|(_, t)| t.get("log_level"))
        .and_then(|(_, v)| v.as_str());
    if let Some(level) = log_level {
        if let Err(msg) = crate::telemetry::logs::parse_level(level) {
            errs.push(
                pos_of(root, &["telemetry", "log_level"]),
                "telemetry.log_level",
                format!("{msg}; expected e.g. info or warn,junction::access=info"),
            );
        }
    }

    for (name, u) in upstreams {
        let key = format!("upstreams.{name}");
        if let Some(tls) = &u.tls {
            if !u.url.starts_with("https://") {
                errs.push(
                    pos_of(root, &["upstreams", name, "tls"]),
                    &format!("{key}.tls"),
                    format!(
                        "tls applies to https:// upstreams, and {:?} is not one",
                        u.url
                    ),
                );
            }
            if let Some(ca) = &tls.ca_file {
                if let Err(msg) = crate::proxy::tls::load_ca_file(std::path::Path::new(ca)) {
                    errs.push(
                        pos_of(root, &["upstreams", name, "tls", "ca_file"]),
                        &format!("{key}.tls.ca_file"),
                        msg,
                    );
                }
            }
        }
        if u.http2 && !u.url.starts_with("http://") {
            errs.push(
                pos_of(root, &["upstreams", name, "http2"]),
                &format!("{key}.http2"),
                format!(
                    "http2 (HTTP/2 without TLS) applies to http:// upstreams; {:?} negotiates HTTP/2 by ALPN",
                    u.url
                ),
            );
        }
        if let Err(msg) = check_url(&u.url) {
            errs.push(
                pos_of(root, &["upstreams", name, "url"]),
                &format!("{key}.url"),
                msg,
            );
        }
        let pct = u.breaker.error_threshold_percentage;
        if !(0.0..=100.0).contains(&pct) || pct == 0.0 {
            errs.push(
                pos_of(
                    root,
                    &["upstreams", name, "breaker", "error_threshold_percentage"],
                ),
                &format!("{key}.breaker.error_threshold_percentage"),
                format!("must be above 0 and at most 100, got {pct}"),
            );
        }
        if u.body_timeout.0.is_zero() {
            errs.push(
                pos_of(root, &["upstreams", name, "body_timeout"]),
                &format!("{key}.body_timeout"),
                "must be above zero".into(),
            );
        }
        if u.max_concurrency == 0 {
            errs.push(
                pos_of(root, &["upstreams", name, "max_concurrency"]),
                &format!("{key}.max_concurrency"),
                "must be at least 1".into(),
            );
        }
        if let Some(a) = &u.adaptive_concurrency {
            let at = |k: &str| pos_of(root, &["upstreams", name, "adaptive_concurrency", k]);
            if a.min == 0 || a.min > u.max_concurrency {
                errs.push(
                    at("min"),
                    &format!("{key}.adaptive_concurrency.min"),
                    format!(
                        "must be between 1 and max_concurrency ({})",
                        u.max_concurrency
                    ),
                );
            }
            // Above max_concurrency it starts there (the default 20 with a smaller max).
            if a.initial < a.min {
                errs.push(
                    at("initial"),
                    &format!("{key}.adaptive_concurrency.initial"),
                    format!("must be at least min ({})", a.min),
                );
            }
            if !(a.tolerance >= 1.0 && a.tolerance <= 100.0) {
                errs.push(
                    at("tolerance"),
                    &format!("{key}.adaptive_concurrency.tolerance"),
                    format!("must be between 1 and 100, got {}", a.tolerance),
                );
            }
        }
        if let Some(r) = &u.retry {
            if r.attempts == 0 {
                errs.push(
                    pos_of(root, &["upstreams", name, "retry", "attempts"]),
                    &format!("{key}.retry.attempts"),
                    "must be at least 1 (the first attempt counts)".into(),
                );
            }
        }
    }

    for dup in repeated(routes.iter().map(|(_, r)| r.name.as_str())) {
        let (i, _) = routes
            .iter()
            .rev()
            .find(|(_, r)| r.name == dup)
            .expect("present");
        errs.push(
            at(*i, &["name"]),
            &format!("routes[{i}].name"),
            format!("route name {dup:?} is used twice"),
        );
    }
    for (i, r) in routes {
        if r.name == crate::telemetry::metrics::UNMATCHED_ROUTE {
            errs.push(
                at(*i, &["name"]),
                &format!("routes[{i}].name"),
                format!(
                    "route name {:?} is reserved: metrics and logs label requests no route matched with it",
                    r.name
                ),
            );
        }
    }
    let subscriber_names = routes
        .iter()
        .filter_map(|(_, r)| r.async_.as_ref())
        .flat_map(|a| a.subscribers.iter().map(|s| s.name.as_str()));
    for dup in repeated(subscriber_names) {
        for (i, r) in routes {
            if let Some(a) = &r.async_ {
                if let Some(j) = a.subscribers.iter().rposition(|s| s.name == dup) {
                    let j = format!("[{j}]");
                    errs.push(
                        at(*i, &["async", "subscribers", &j, "name"]),
                        &format!("routes[{i}].async.subscribers{j}.name"),
                        format!("subscriber name {dup:?} is used twice; names must be unique"),
                    );
                    break;
                }
            }
        }
    }

    let mut matchers: HashMap<String, matchit::Router<usize>> = HashMap::new();
    for (i, r) in routes {
        let key = format!("routes[{i}]");
        let method = r.matcher.method.as_deref().map(str::to_ascii_uppercase);
        if let Some(m) = &method {
            if !METHODS.contains(&m.as_str()) {
                errs.push(
                    at(*i, &["match", "method"]),
                    &format!("{key}.match.method"),
                    format!(
                        "unknown method {m:?}; expected one of {}",
                        METHODS.join(", ")
                    ),
                );
            }
        }
        if !r.matcher.path.starts_with('/') {
            errs.push(
                at(*i, &["match", "path"]),
                &format!("{key}.match.path"),
                "must start with /".into(),
            );
        } else {
            let router = matchers
                .entry(method.clone().unwrap_or_else(|| "*".into()))
                .or_default();
            let checked = crate::proxy::router::check_template(&r.matcher.path)
                .map_err(|e| e.to_string())
                .and_then(|()| {
                    router
                        .insert(r.matcher.path.as_str(), *i)
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = checked {
                errs.push(
                    at(*i, &["match", "path"]),
                    &format!("{key}.match.path"),
                    format!("invalid or conflicting path: {e}"),
                );
            }
        }
        match (&r.upstream, &r.async_) {
            (None, None) => errs.push(
                at(*i, &[]),
                &key,
                "a route needs `upstream` (sync) or `async` (events)".into(),
            ),
            (Some(_), Some(_)) => errs.push(
                at(*i, &["async"]),
                &format!("{key}.async"),
                "a route is either sync (`upstream`) or `async`, not both".into(),
            ),
            _ => {}
        }
        if let Some(u) = &r.upstream {
            if !upstream_names.contains(u) {
                errs.push(
                    at(*i, &["upstream"]),
                    &format!("{key}.upstream"),
                    unknown_upstream(u, upstream_names),
                );
            }
        }
        if r.cache.is_some() && !matches!(method.as_deref(), Some("GET") | Some("HEAD")) {
            errs.push(
                at(*i, &["cache"]),
                &format!("{key}.cache"),
                "only GET or HEAD routes can be cached".into(),
            );
        }
        if r.cache.as_ref().is_some_and(|c| c.max_variants == 0) {
            errs.push(
                at(*i, &["cache", "max_variants"]),
                &format!("{key}.cache.max_variants"),
                "must be at least 1".into(),
            );
        }
        if let Some(idem) = &r.idempotency {
            if r.async_.is_some() {
                errs.push(
                    at(*i, &["idempotency"]),
                    &format!("{key}.idempotency"),
                    "async routes deduplicate with `async.idempotency_window`; `idempotency` is for sync routes".into(),
                );
            } else if idem.ttl.0.is_zero() {
                errs.push(
                    at(*i, &["idempotency", "ttl"]),
                    &format!("{key}.idempotency.ttl"),
                    "must be above zero".into(),
                );
            }
        }
        if let Some(rl) = &r.rate_limit {
            if rl.requests == 0 || rl.per.0.is_zero() {
                errs.push(
                    at(*i, &["rate_limit"]),
                    &format!("{key}.rate_limit"),
                    "requests and per must be above zero".into(),
                );
            }
        }
        if let Some(a) = &r.async_ {
            if a.subscribers.is_empty() {
                errs.push(
                    at(*i, &["async", "subscribers"]),
                    &format!("{key}.async.subscribers"),
                    "an async route needs at least one subscriber".into(),
                );
            }
            for (j, s) in a.subscribers.iter().enumerate() {
                let idx = format!("[{j}]");
                if !upstream_names.contains(&s.upstream) {
                    errs.push(
                        at(*i, &["async", "subscribers", &idx, "upstream"]),
                        &format!("{key}.async.subscribers{idx}.upstream"),
                        unknown_upstream(&s.upstream, upstream_names),
                    );
                }
                if s.concurrency == 0 {
                    errs.push(
                        at(*i, &["async", "subscribers", &idx, "concurrency"]),
                        &format!("{key}.async.subscribers{idx}.concurrency"),
                        "must be at least 1".into(),
                    );
                }
                for env in s.secret_env.iter().flat_map(|e| e.0.iter()) {
                    if std::env::var_os(env).is_none() {
                        errs.push(
                            at(*i, &["async", "subscribers", &idx, "secret_env"]),
                            &format!("{key}.async.subscribers{idx}.secret_env"),
                            format!("environment variable {env} is not set"),
                        );
                    }
                }
            }
        }
    }
}

fn unknown_upstream(name: &str, upstreams: &BTreeSet<String>) -> String {
    let known: Vec<&str> = upstreams.iter().map(String::as_str).collect();
    if known.is_empty() {
        format!("unknown upstream {name:?}: no upstreams are defined")
    } else {
        format!("unknown upstream {name:?}; defined: {}", known.join(", "))
    }
}

/// The request limits against each other.
pub(super) fn check_limits(root: &Node, limits: &super::LimitsConfig, errs: &mut Errors) {
    // A body the gateway accepts must fit in the budget, or it would get 503
    // on every try: 413 is its answer.
    if limits.buffer_budget.0 < limits.max_body.0 {
        errs.push(
            pos_of(root, &["limits", "buffer_budget"]),
            "limits.buffer_budget",
            format!(
                "must be at least limits.max_body ({} bytes), got {}",
                limits.max_body.0, limits.buffer_budget.0
            ),
        );
    }
}

fn check_url(url: &str) -> Result<(), String> {
    let uri: http::Uri = url
        .parse()
        .map_err(|e| format!("invalid URL {url:?}: {e}"))?;
    match uri.scheme_str() {
        Some("http") | Some("https") => {}
        Some(other) => {
            return Err(format!(
                "unsupported scheme {other:?} in {url:?}: use http:// or https://"
            ))
        }
        None => {
            return Err(format!(
                "URL {url:?} needs a scheme, e.g. http://127.0.0.1:7001"
            ))
        }
    }
    if uri.host().is_none() {
        return Err(format!("URL {url:?} has no host"));
    }
    if uri.query().is_some() {
        return Err(format!("URL {url:?} must not have a query"));
    }
    Ok(())
}
