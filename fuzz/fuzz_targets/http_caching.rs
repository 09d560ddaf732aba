//! The caching fields: `Cache-Control` directives, delta-seconds, HTTP dates
//! (`Expires`, `Date`), `Age` and `Retry-After`, from any header text.
#![no_main]
use http::{HeaderMap, HeaderValue};
use junction_cache::cache_control::{
    age, date_secs, delta_seconds, http_date_secs, response_directives, Directives,
    RequestDirectives,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let d = Directives::parse(text);
    let _ = d.seconds("max-age");
    let _ = d.has("no-store");
    let _ = delta_seconds(text);
    if let Some(secs) = http_date_secs(text) {
        // A date it reads, it writes back readably.
        let again = junction_cache::cache_control::fmt_http_date(secs);
        assert_eq!(http_date_secs(&again), Some(secs), "{text:?} → {again}");
    }
    let _ = junction_policy::retry::parse_retry_after(text);
    let Ok(value) = HeaderValue::from_str(text) else {
        return;
    };
    let mut h = HeaderMap::new();
    for name in ["cache-control", "expires", "age", "date", "pragma", "retry-after"] {
        h.insert(name, value.clone());
    }
    let _ = response_directives(&h);
    let _ = RequestDirectives::parse(&h);
    let _ = age(&h);
    let _ = date_secs(&h, &http::header::EXPIRES);
});
