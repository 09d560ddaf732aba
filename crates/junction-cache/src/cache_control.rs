//! Whether, and for how long, an upstream response may be stored.
//!
//! Why it exists: a shared cache must respect what the upstream says about its
//! response (RFC 9111) even when the route configures a TTL; storing a personal
//! or cookie-setting response would leak it to other clients.
//!
//! What it promises: [`policy`] answers `None` (do not store) for `no-store`,
//! `no-cache`, `private`, `Vary: *`, a `Set-Cookie` header, a malformed age
//! directive, a zero lifetime, partial content, and non-2xx statuses unless the
//! route allows them (and then only statuses RFC 9110 calls heuristically
//! cacheable). Otherwise `s-maxage`, then `max-age`, then the route TTL decide the
//! freshness lifetime. `Expires` is not consulted.

use std::time::Duration;

use http::{header, HeaderMap};

/// Non-2xx statuses storable when a route opts in (RFC 9110 §15.1, minus 2xx).
const CACHEABLE_NON_2XX: [u16; 8] = [300, 301, 308, 404, 405, 410, 414, 501];

/// One parsed `Cache-Control` directive.
#[derive(Debug, PartialEq, Eq)]
struct Directive<'a> {
    name: String,
    value: Option<&'a str>,
}

/// The freshness lifetime to store the response with, or `None` to not store it.
pub fn policy(
    status: u16,
    headers: &HeaderMap,
    route_ttl: Duration,
    cache_non_2xx: bool,
) -> Option<Duration> {
    let status_ok = match status {
        206 => false,
        200..=299 => true,
        _ => cache_non_2xx && CACHEABLE_NON_2XX.contains(&status),
    };
    if !status_ok || headers.contains_key(header::SET_COOKIE) || vary_star(headers) {
        return None;
    }

    let directives = directives(headers)?;
    let has = |name: &str| directives.iter().any(|d| d.name == name);
    if has("no-store") || has("no-cache") || has("private") {
        return None;
    }
    let seconds = |name: &str| -> Option<Option<u64>> {
        directives
            .iter()
            .find(|d| d.name == name)
            .map(|d| d.value.and_then(|v| v.parse::<u64>().ok()))
    };
    let ttl = match (seconds("s-maxage"), seconds("max-age")) {
        // Present but malformed: RFC 9111 says treat the response as stale.
        (Some(None), _) => return None,
        (Some(Some(secs)), _) => Duration::from_secs(secs),
        (None, Some(None)) => return None,
        (None, Some(Some(secs))) => Duration::from_secs(secs),
        (None, None) => route_ttl,
    };
    (!ttl.is_zero()).then_some(ttl)
}

/// True when the upstream forbids serving this response once stale
/// (`must-revalidate`, `proxy-revalidate`), so stale-while-revalidate and
/// stale-if-error must not apply. Unreadable headers count as forbidding.
pub fn forbids_stale(headers: &HeaderMap) -> bool {
    directives(headers).map_or(true, |ds| {
        ds.iter()
            .any(|d| d.name == "must-revalidate" || d.name == "proxy-revalidate")
    })
}

fn vary_star(headers: &HeaderMap) -> bool {
    headers.get_all(header::VARY).iter().any(|v| {
        v.as_bytes()
            .split(|b| *b == b',')
            .any(|t| t.trim_ascii() == b"*")
    })
}

/// All `Cache-Control` directives, names lower-cased, quotes stripped from values.
/// `None` when a header value is not visible ASCII (we cannot know what it says).
fn directives(headers: &HeaderMap) -> Option<Vec<Directive<'_>>> {
    let mut out = Vec::new();
    for value in headers.get_all(header::CACHE_CONTROL) {
        let text = value.to_str().ok()?;
        for part in split_outside_quotes(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v.trim().trim_matches('"'))),
                None => (part, None),
            };
            out.push(Directive {
                name: name.to_ascii_lowercase(),
                value,
            });
        }
    }
    Some(out)
}

/// Splits on commas that are not inside a quoted string (`private="a, b"`).
fn split_outside_quotes(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut in_quotes = false;
    let mut start = 0;
    for (i, c) in text.char_indices() {
        match c {
            '"' => in_quotes = !in_quotes,
            ',' if !in_quotes => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const ROUTE: Duration = Duration::from_secs(300);

    fn with(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    fn cc(value: &'static str) -> Option<Duration> {
        policy(200, &with(&[("cache-control", value)]), ROUTE, false)
    }

    #[test]
    fn route_ttl_applies_without_directives() {
        assert_eq!(policy(200, &HeaderMap::new(), ROUTE, false), Some(ROUTE));
        assert_eq!(cc("public"), Some(ROUTE));
    }

    #[test]
    fn s_maxage_wins_over_max_age_which_wins_over_route() {
        assert_eq!(cc("max-age=60"), Some(Duration::from_secs(60)));
        assert_eq!(cc("max-age=60, s-maxage=10"), Some(Duration::from_secs(10)));
        assert_eq!(cc("S-MAXAGE=\"20\""), Some(Duration::from_secs(20)));
        assert_eq!(cc("max-age=3600"), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn refusals() {
        assert_eq!(cc("no-store"), None);
        assert_eq!(cc("No-Cache"), None);
        assert_eq!(cc("private"), None);
        assert_eq!(cc("private=\"x-a, x-b\", max-age=5"), None);
        assert_eq!(cc("max-age=0"), None);
        assert_eq!(cc("max-age=soon"), None);
        assert_eq!(cc("s-maxage=0, max-age=60"), None);
        assert_eq!(policy(200, &HeaderMap::new(), Duration::ZERO, false), None);
        let cookie = with(&[("set-cookie", "a=b")]);
        assert_eq!(policy(200, &cookie, ROUTE, false), None);
        let vary = with(&[("vary", "accept, *")]);
        assert_eq!(policy(200, &vary, ROUTE, false), None);
    }

    #[test]
    fn directives_spread_over_several_headers() {
        let headers = with(&[("cache-control", "public"), ("cache-control", "no-store")]);
        assert_eq!(policy(200, &headers, ROUTE, false), None);
    }

    #[test]
    fn statuses() {
        let none = HeaderMap::new();
        assert_eq!(policy(204, &none, ROUTE, false), Some(ROUTE));
        assert_eq!(policy(206, &none, ROUTE, true), None);
        assert_eq!(policy(404, &none, ROUTE, false), None);
        assert_eq!(policy(404, &none, ROUTE, true), Some(ROUTE));
        assert_eq!(policy(503, &none, ROUTE, true), None);
        assert_eq!(policy(302, &none, ROUTE, true), None);
    }

    #[test]
    fn stale_forbidden_by_revalidate_directives() {
        assert!(!forbids_stale(&HeaderMap::new()));
        assert!(forbids_stale(&with(&[(
            "cache-control",
            "max-age=5, must-revalidate"
        )])));
        assert!(forbids_stale(&with(&[(
            "cache-control",
            "proxy-revalidate"
        )])));
    }
}
