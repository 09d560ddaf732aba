//! Whether, and with what freshness, a shared cache may store a response
//! (RFC 9111 §3, §4.2, §3.5; RFC 5861; RFC 9213).
//!
//! Why it exists: the origin is in charge of freshness. A route's TTL is only
//! the heuristic used when the origin says nothing (unless the route forces it
//! with `override`), and the route's stale settings are upper bounds on what the
//! origin permits. Keeping every storage rule in one pure function makes the
//! rules testable as a table.
//!
//! What it promises, in order ([`storable`] answers `None` = do not store):
//! 1. Never stored: 1xx, 206, 304, `Vary: *`, `Set-Cookie`, unreadable
//!    directives, `no-store`, `private`, and, for a request that carried
//!    credentials, anything without `public`, `s-maxage` or `must-revalidate`.
//!    `override` does not lift these.
//! 2. Freshness lifetime: `s-maxage`, else `max-age`, else `Expires` − `Date`
//!    (an invalid `Expires` is already expired), else the route TTL as a
//!    heuristic, which only applies to statuses cacheable by default (RFC 9110
//!    §15.1) and, for non-2xx, only with `cache_errors`. `no-cache` stores with
//!    zero freshness: every reuse revalidates. A targeted field replaces
//!    `Cache-Control` and `Expires` altogether. With `override` the route TTL
//!    replaces all of that.
//! 3. Explicit freshness makes any status below 500 (and 501) storable except
//!    206 and 304; server errors are never stored.
//! 4. Stale serving: none after `must-revalidate`, `proxy-revalidate`,
//!    `s-maxage` or `no-cache`; otherwise the origin's `stale-while-revalidate`
//!    / `stale-if-error` seconds capped by the route's settings, or the
//!    route's settings when the origin gives none.
//! 5. A response with zero freshness, no validator and no stale allowance is
//!    not stored (it could never be reused).
//! 6. The age the response had on arrival follows §4.2.3 (`Age`, the response
//!    delay, and the `Date` skew), with `Date`'s one-second granularity not
//!    counted as age.

use std::time::Duration;

use http::{header, HeaderMap};

use crate::cache_control::{self, response_directives, Source};

/// Statuses a cache may store with heuristic freshness (RFC 9110 §15.1).
const HEURISTIC_STATUSES: [u16; 12] = [200, 203, 204, 206, 300, 301, 308, 404, 405, 410, 414, 501];

/// A route's caching rules, as far as storage is concerned.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteRules {
    /// Freshness when the origin gives none (or always, with `force_ttl`).
    pub ttl: Duration,
    /// `override: true`: the route TTL replaces the origin's freshness.
    pub force_ttl: bool,
    /// Upper bound on serving stale while revalidating; `None` = not configured.
    pub stale_while_revalidate: Option<Duration>,
    /// Upper bound on serving stale when the upstream fails; `None` = not configured.
    pub stale_if_error: Option<Duration>,
    /// Non-2xx statuses may use the heuristic TTL.
    pub cache_errors: bool,
}

/// When the exchange happened, milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// When the request was sent upstream.
    pub request_ms: u64,
    /// When the response headers arrived.
    pub response_ms: u64,
}

/// How a storable response is to be kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Storable {
    /// Freshness lifetime.
    pub fresh_for: Duration,
    /// Serve stale while revalidating, this long past freshness.
    pub stale_while_revalidate: Duration,
    /// Serve stale when the upstream fails, this long past freshness.
    pub stale_if_error: Duration,
    /// Age on arrival (RFC 9111 §4.2.3 `corrected_initial_age`).
    pub initial_age: Duration,
    /// May be reused for requests carrying credentials (RFC 9111 §3.5).
    pub shared_with_credentials: bool,
    /// Never served stale: the origin said `must-revalidate`, `proxy-revalidate`,
    /// `s-maxage` or `no-cache` (and the route does not override it).
    pub revalidate_when_stale: bool,
}

impl Storable {
    /// For a response held only for the request it answers (or as an
    /// idempotency record): no freshness, never served stale.
    pub const UNSHARED: Storable = Storable {
        fresh_for: Duration::ZERO,
        stale_while_revalidate: Duration::ZERO,
        stale_if_error: Duration::ZERO,
        initial_age: Duration::ZERO,
        shared_with_credentials: false,
        revalidate_when_stale: true,
    };
}

/// The storage decision for a response; see the module docs for the rules.
pub fn storable(
    status: u16,
    headers: &HeaderMap,
    rules: &RouteRules,
    timing: Timing,
    request_had_credentials: bool,
) -> Option<Storable> {
    if !(200..600).contains(&status) || status == 206 || status == 304 {
        return None;
    }
    if headers.contains_key(header::SET_COOKIE) || cache_control::vary_star(headers) {
        return None;
    }
    let (d, source) = response_directives(headers);
    if d.unreadable || d.has("no-store") || d.has("private") {
        return None;
    }
    let shared_with_credentials = d.has("public") || d.has("s-maxage") || d.has("must-revalidate");
    if request_had_credentials && !shared_with_credentials {
        return None;
    }
    let forbids_stale = d.has("must-revalidate")
        || d.has("proxy-revalidate")
        || d.has("s-maxage")
        || d.has("no-cache");

    let explicit = if rules.force_ttl {
        None
    } else if d.has("no-cache") {
        Some(Duration::ZERO)
    } else if let Some(secs) = d.seconds("s-maxage").or_else(|| d.seconds("max-age")) {
        // Present but malformed: treat the response as stale (RFC 9111 §4.2.1).
        Some(Duration::from_secs(secs.unwrap_or(0)))
    } else if source == Source::CacheControl && headers.contains_key(header::EXPIRES) {
        Some(expires_lifetime(headers, timing))
    } else {
        None
    };
    let fresh_for = match explicit {
        Some(lifetime) => {
            if status >= 500 && status != 501 {
                return None;
            }
            lifetime
        }
        None => {
            let heuristic_ok = HEURISTIC_STATUSES.contains(&status)
                && ((200..300).contains(&status) || rules.cache_errors);
            if !heuristic_ok {
                return None;
            }
            rules.ttl
        }
    };

    let (swr, sie) = if rules.force_ttl {
        (
            rules.stale_while_revalidate.unwrap_or_default(),
            rules.stale_if_error.unwrap_or_default(),
        )
    } else if forbids_stale {
        (Duration::ZERO, Duration::ZERO)
    } else {
        (
            stale_allowance(
                d.seconds("stale-while-revalidate"),
                rules.stale_while_revalidate,
            ),
            stale_allowance(d.seconds("stale-if-error"), rules.stale_if_error),
        )
    };
    if fresh_for.is_zero() && swr.is_zero() && sie.is_zero() && !has_validator(headers) {
        return None;
    }
    Some(Storable {
        fresh_for,
        stale_while_revalidate: swr,
        stale_if_error: sie,
        initial_age: initial_age(headers, timing),
        shared_with_credentials,
        revalidate_when_stale: forbids_stale && !rules.force_ttl,
    })
}

/// Whether the response carries a validator the origin can check (`ETag`, `Last-Modified`).
pub fn has_validator(headers: &HeaderMap) -> bool {
    headers.contains_key(header::ETAG) || headers.contains_key(header::LAST_MODIFIED)
}

/// The origin's permission capped by the route's bound; the route's value alone when the origin is silent.
fn stale_allowance(origin: Option<Option<u64>>, route: Option<Duration>) -> Duration {
    match (origin, route) {
        (Some(Some(secs)), Some(bound)) => Duration::from_secs(secs).min(bound),
        (Some(Some(secs)), None) => Duration::from_secs(secs),
        // A malformed permission grants nothing.
        (Some(None), _) => Duration::ZERO,
        (None, route) => route.unwrap_or_default(),
    }
}

/// `Expires` − `Date` (the response time when `Date` is missing or invalid);
/// an invalid `Expires` ("0" included) is a time in the past (RFC 9111 §5.3).
fn expires_lifetime(headers: &HeaderMap, timing: Timing) -> Duration {
    let Some(expires) = cache_control::date_secs(headers, &header::EXPIRES) else {
        return Duration::ZERO;
    };
    let date =
        cache_control::date_secs(headers, &header::DATE).unwrap_or(timing.response_ms / 1000);
    Duration::from_secs(expires.saturating_sub(date))
}

/// RFC 9111 §4.2.3: `max(apparent_age, age_value + response_delay)`. The
/// apparent age compares whole seconds, so `Date`'s truncation is not age.
pub fn initial_age(headers: &HeaderMap, timing: Timing) -> Duration {
    let apparent = cache_control::date_secs(headers, &header::DATE)
        .map_or(Duration::ZERO, |date| {
            Duration::from_secs((timing.response_ms / 1000).saturating_sub(date))
        });
    let delay = Duration::from_millis(timing.response_ms.saturating_sub(timing.request_ms));
    let corrected = cache_control::age(headers).map_or(Duration::ZERO, |age| age + delay);
    apparent.max(corrected)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    const ROUTE: Duration = Duration::from_secs(300);
    const NOW_MS: u64 = 1_700_000_000_000;
    const AT: Timing = Timing {
        request_ms: NOW_MS - 20,
        response_ms: NOW_MS,
    };

    fn rules() -> RouteRules {
        RouteRules {
            ttl: ROUTE,
            ..RouteRules::default()
        }
    }

    fn with(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_str(value).expect("valid"));
        }
        headers
    }

    fn fresh(status: u16, h: &HeaderMap, r: &RouteRules) -> Option<Duration> {
        storable(status, h, r, AT, false).map(|s| s.fresh_for)
    }

    fn cc(value: &str) -> Option<Duration> {
        fresh(200, &with(&[("cache-control", value)]), &rules())
    }

    fn date(secs_before_now: u64) -> String {
        cache_control::fmt_http_date(NOW_MS / 1000 - secs_before_now)
    }

    #[test]
    fn origin_freshness_wins_over_the_route_ttl() {
        assert_eq!(fresh(200, &HeaderMap::new(), &rules()), Some(ROUTE));
        assert_eq!(cc("public"), Some(ROUTE));
        assert_eq!(cc("max-age=60"), Some(Duration::from_secs(60)));
        assert_eq!(cc("max-age=60, s-maxage=10"), Some(Duration::from_secs(10)));
        let expires = with(&[("date", &date(0)), ("expires", &date(0))]);
        assert_eq!(
            fresh(200, &expires, &rules()),
            None,
            "Expires = Date, no validator"
        );
        let in_an_hour = cache_control::fmt_http_date(NOW_MS / 1000 + 3600);
        let expires = with(&[("date", &date(0)), ("expires", &in_an_hour)]);
        assert_eq!(
            fresh(200, &expires, &rules()),
            Some(Duration::from_secs(3600))
        );
        let both = with(&[("expires", &in_an_hour), ("cache-control", "max-age=5")]);
        assert_eq!(fresh(200, &both, &rules()), Some(Duration::from_secs(5)));
    }

    #[test]
    fn invalid_or_past_expires_is_stale_not_the_route_ttl() {
        let etag = ("etag", "\"v1\"");
        assert_eq!(
            fresh(200, &with(&[("expires", "0"), etag]), &rules()),
            Some(Duration::ZERO)
        );
        assert_eq!(fresh(200, &with(&[("expires", "0")]), &rules()), None);
        let past = with(&[("date", &date(0)), ("expires", &date(60)), etag]);
        assert_eq!(fresh(200, &past, &rules()), Some(Duration::ZERO));
    }

    #[test]
    fn override_forces_the_route_ttl_but_not_privacy() {
        let forced = RouteRules {
            force_ttl: true,
            ..rules()
        };
        let h = with(&[("cache-control", "max-age=0, must-revalidate")]);
        assert_eq!(fresh(200, &h, &forced), Some(ROUTE));
        for refused in ["no-store", "private"] {
            assert_eq!(
                fresh(200, &with(&[("cache-control", refused)]), &forced),
                None
            );
        }
        assert_eq!(fresh(200, &with(&[("set-cookie", "a=b")]), &forced), None);
    }

    #[test]
    fn refusals() {
        for value in [
            "no-store",
            "private",
            "private=\"x-a, x-b\", max-age=5",
            "max-age=0",
            "max-age=soon",
        ] {
            assert_eq!(cc(value), None, "{value}");
        }
        let zero = RouteRules {
            ttl: Duration::ZERO,
            ..rules()
        };
        assert_eq!(fresh(200, &HeaderMap::new(), &zero), None);
        assert_eq!(fresh(200, &with(&[("set-cookie", "a=b")]), &rules()), None);
        assert_eq!(fresh(200, &with(&[("vary", "accept, *")]), &rules()), None);
        let several = with(&[("cache-control", "public"), ("cache-control", "no-store")]);
        assert_eq!(fresh(200, &several, &rules()), None);
    }

    #[test]
    fn no_cache_is_stored_for_revalidation_only() {
        let h = with(&[("cache-control", "no-cache, max-age=60"), ("etag", "\"a\"")]);
        let s = storable(200, &h, &rules(), AT, false).expect("stored");
        assert_eq!(s.fresh_for, Duration::ZERO);
        assert_eq!(
            cc("no-cache"),
            None,
            "no validator: nothing to revalidate with"
        );
    }

    #[test]
    fn statuses() {
        let none = HeaderMap::new();
        let errors = RouteRules {
            cache_errors: true,
            ..rules()
        };
        assert_eq!(fresh(204, &none, &rules()), Some(ROUTE));
        assert_eq!(
            fresh(201, &none, &rules()),
            None,
            "201 is not cacheable by default"
        );
        assert_eq!(fresh(202, &none, &errors), None);
        assert_eq!(fresh(206, &none, &errors), None);
        assert_eq!(fresh(404, &none, &rules()), None);
        assert_eq!(fresh(404, &none, &errors), Some(ROUTE));
        assert_eq!(fresh(503, &none, &errors), None);
        assert_eq!(fresh(302, &none, &errors), None);
        let explicit = with(&[("cache-control", "max-age=30")]);
        assert_eq!(
            fresh(201, &explicit, &rules()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            fresh(302, &explicit, &rules()),
            Some(Duration::from_secs(30))
        );
        assert_eq!(fresh(500, &explicit, &errors), None);
        assert_eq!(fresh(304, &explicit, &rules()), None);
    }

    #[test]
    fn credentials_need_an_explicit_permission() {
        let h = with(&[("cache-control", "max-age=100000")]);
        assert!(storable(200, &h, &rules(), AT, true).is_none());
        for ok in [
            "public, max-age=5",
            "s-maxage=5",
            "max-age=5, must-revalidate",
        ] {
            let h = with(&[("cache-control", ok)]);
            let s = storable(200, &h, &rules(), AT, true).expect(ok);
            assert!(s.shared_with_credentials);
        }
        assert!(
            !storable(200, &HeaderMap::new(), &rules(), AT, false)
                .expect("stored")
                .shared_with_credentials
        );
    }

    #[test]
    fn stale_serving_is_the_origins_permission_capped_by_the_route() {
        let route = RouteRules {
            stale_while_revalidate: Some(Duration::from_secs(30)),
            stale_if_error: Some(Duration::from_secs(600)),
            ..rules()
        };
        let stale = |value: &str, r: &RouteRules| {
            storable(200, &with(&[("cache-control", value)]), r, AT, false).map(|s| {
                (
                    s.stale_while_revalidate.as_secs(),
                    s.stale_if_error.as_secs(),
                )
            })
        };
        assert_eq!(stale("max-age=5", &route), Some((30, 600)));
        assert_eq!(
            stale(
                "max-age=5, stale-while-revalidate=10, stale-if-error=9999",
                &route
            ),
            Some((10, 600))
        );
        assert_eq!(
            stale("max-age=5, stale-while-revalidate=10", &rules()),
            Some((10, 0))
        );
        for forbidding in [
            "max-age=5, must-revalidate",
            "max-age=5, proxy-revalidate",
            "s-maxage=5",
        ] {
            assert_eq!(stale(forbidding, &route), Some((0, 0)), "{forbidding}");
        }
        let h = with(&[("cache-control", "no-cache"), ("etag", "\"a\"")]);
        let s = storable(200, &h, &route, AT, false).expect("stored");
        assert_eq!(
            (s.stale_while_revalidate, s.stale_if_error),
            (Duration::ZERO, Duration::ZERO)
        );
    }

    #[test]
    fn targeted_fields_replace_cache_control_and_expires() {
        let h = with(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=40"),
        ]);
        assert_eq!(fresh(200, &h, &rules()), Some(Duration::from_secs(40)));
        let h = with(&[
            ("cache-control", "max-age=600"),
            ("junction-cache-control", "no-store"),
        ]);
        assert_eq!(fresh(200, &h, &rules()), None);
        let h = with(&[("expires", "0"), ("cdn-cache-control", "public")]);
        assert_eq!(
            fresh(200, &h, &rules()),
            Some(ROUTE),
            "Expires ignored under a targeted field"
        );
    }

    proptest::proptest! {
        /// Whatever the origin sends, the decision is made without panicking,
        /// and never stores what `no-store` or `Set-Cookie` forbid.
        #[test]
        fn any_headers_get_a_conservative_answer(
            cc in "[ -~]{0,40}",
            age in "[ -~]{0,12}",
            expires in "[ -~]{0,32}",
            status in 100u16..700,
        ) {
            let mut h = HeaderMap::new();
            for (name, value) in [("cache-control", &cc), ("age", &age), ("expires", &expires), ("date", &expires)] {
                if let Ok(v) = HeaderValue::from_str(value) {
                    h.insert(name, v);
                }
            }
            let decision = storable(status, &h, &rules(), AT, false);
            if cache_control::Directives::parse(&cc).has("no-store") {
                proptest::prop_assert!(decision.is_none());
            }
            h.insert("set-cookie", HeaderValue::from_static("a=b"));
            proptest::prop_assert!(storable(status, &h, &rules(), AT, false).is_none());
        }
    }

    #[test]
    fn initial_age_follows_the_rfc() {
        let age = |h: &HeaderMap| initial_age(h, AT).as_millis();
        assert_eq!(age(&HeaderMap::new()), 0);
        assert_eq!(
            age(&with(&[("age", "7200")])),
            7_200_020,
            "Age plus the response delay"
        );
        assert_eq!(
            age(&with(&[("date", &date(100))])),
            100_000,
            "apparent age from Date"
        );
        assert_eq!(age(&with(&[("date", &date(100)), ("age", "5")])), 100_000);
        let future = cache_control::fmt_http_date(NOW_MS / 1000 + 50);
        assert_eq!(age(&with(&[("date", &future)])), 0);
        let h = with(&[("cache-control", "max-age=3600"), ("age", "7200")]);
        let s = storable(200, &h, &rules(), AT, false).expect("stored");
        assert!(s.initial_age > s.fresh_for, "stale on arrival");
    }
}
