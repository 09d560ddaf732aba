//! Parsing of the caching fields: `Cache-Control` (RFC 9111 §5.2), the targeted
//! `CDN-Cache-Control` / `Junction-Cache-Control` (RFC 9213), `Age`, `Expires`
//! and the other HTTP dates.
//!
//! Why it exists: every storage and reuse decision of the cache starts from what
//! these fields say, and they arrive malformed often enough that each parser
//! must have one conservative answer for garbage. The decisions themselves live
//! in [`crate::policy`] (storing) and [`crate::entry`] (reusing).
//!
//! What it promises:
//! - No parser panics on any input (property-tested below).
//! - Directive names are case-insensitive, values may be quoted, commas inside
//!   quotes do not split, directives spread over several field lines combine.
//! - A delta-seconds value that is not all digits reads as malformed; one too
//!   large saturates at 2^31 seconds (RFC 9111 §1.2.2).
//! - A field Junction cannot read (not visible ASCII) makes the whole set
//!   [`Directives::unreadable`]; callers then refuse to store.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{header, HeaderMap, HeaderName};

/// The targeted field aimed at Junction alone (RFC 9213 style); wins over the others.
pub const JUNCTION_CACHE_CONTROL: HeaderName = HeaderName::from_static("junction-cache-control");
/// The targeted field aimed at every CDN / gateway cache (RFC 9213).
pub const CDN_CACHE_CONTROL: HeaderName = HeaderName::from_static("cdn-cache-control");

/// Largest delta-seconds value kept; larger ones saturate to it (RFC 9111 §1.2.2).
const DELTA_SECONDS_MAX: u64 = 1 << 31;

/// The directives of one caching field.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Directives {
    list: Vec<(String, Option<String>)>,
    /// A field line was not visible ASCII: nothing it says can be trusted.
    pub unreadable: bool,
}

/// Which field the response's directives came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `Junction-Cache-Control` or `CDN-Cache-Control`: `Cache-Control` and
    /// `Expires` are ignored (RFC 9213 §2.2).
    Targeted,
    /// Plain `Cache-Control` (possibly absent).
    CacheControl,
}

// === impl Directives ===

impl Directives {
    /// The directives of every line of field `name`; `None` when the field is absent.
    pub fn of(headers: &HeaderMap, name: &HeaderName) -> Option<Self> {
        let mut lines = headers.get_all(name).iter().peekable();
        lines.peek()?;
        let mut out = Self::default();
        for line in lines {
            match line.to_str() {
                Ok(text) => out.push_line(text),
                Err(_) => out.unreadable = true,
            }
        }
        Some(out)
    }

    /// Parses one field line's text (for tests and fuzzing).
    pub fn parse(text: &str) -> Self {
        let mut out = Self::default();
        out.push_line(text);
        out
    }

    fn push_line(&mut self, text: &str) {
        for part in split_outside_quotes(text) {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (name, value) = match part.split_once('=') {
                Some((n, v)) => (n.trim(), Some(unquote(v.trim()).to_owned())),
                None => (part, None),
            };
            self.list.push((name.to_ascii_lowercase(), value));
        }
    }

    /// Whether directive `name` (lower case) is present, with or without a value.
    pub fn has(&self, name: &str) -> bool {
        self.list.iter().any(|(n, _)| n == name)
    }

    /// The first `name` directive as delta-seconds: `None` when absent,
    /// `Some(None)` when present but malformed (missing or not digits).
    pub fn seconds(&self, name: &str) -> Option<Option<u64>> {
        let (_, value) = self.list.iter().find(|(n, _)| n == name)?;
        Some(value.as_deref().and_then(delta_seconds))
    }

    /// Whether no directive was read.
    pub fn is_empty(&self) -> bool {
        self.list.is_empty()
    }
}

/// The directives that govern Junction's storage of a response:
/// `Junction-Cache-Control`, else `CDN-Cache-Control`, else `Cache-Control`
/// (RFC 9213: a valid targeted field replaces the general one).
pub fn response_directives(headers: &HeaderMap) -> (Directives, Source) {
    for field in [&JUNCTION_CACHE_CONTROL, &CDN_CACHE_CONTROL] {
        if let Some(d) = targeted(headers, field) {
            return (d, Source::Targeted);
        }
    }
    let general = Directives::of(headers, &header::CACHE_CONTROL).unwrap_or_default();
    (general, Source::CacheControl)
}

/// Directives that take a delta-seconds value; in a targeted field they must be
/// non-negative Integers.
const SECONDS_DIRECTIVES: [&str; 4] = [
    "max-age",
    "s-maxage",
    "stale-while-revalidate",
    "stale-if-error",
];

/// A targeted field (RFC 9213 §2.1): a Structured Field Dictionary (RFC 9651).
/// `None` when absent, empty, not a valid Dictionary, or when a known
/// directive has a value of the wrong type: such a field is ignored whole.
fn targeted(headers: &HeaderMap, name: &HeaderName) -> Option<Directives> {
    let mut text = String::new();
    for line in headers.get_all(name) {
        if !text.is_empty() {
            text.push_str(", ");
        }
        text.push_str(line.to_str().ok()?);
    }
    let dictionary = sfv::Parser::new(&text).parse::<sfv::Dictionary>().ok()?;
    let mut out = Directives::default();
    for (key, entry) in &dictionary {
        let name = key.as_str();
        let sfv::ListEntry::Item(item) = entry else {
            return None;
        };
        let bare = &item.bare_item;
        let value = if SECONDS_DIRECTIVES.contains(&name) {
            let seconds = i64::from(bare.as_integer()?);
            Some(
                u64::try_from(seconds)
                    .ok()?
                    .min(DELTA_SECONDS_MAX)
                    .to_string(),
            )
        } else {
            match bare.as_boolean() {
                Some(true) => None,
                Some(false) => continue,
                None => Some(
                    bare.as_string()
                        .map_or_else(String::new, |s| s.as_str().to_owned()),
                ),
            }
        };
        out.list.push((name.to_owned(), value));
    }
    (!out.is_empty()).then_some(out)
}

/// What a client's request `Cache-Control` asks of the cache (RFC 9111 §5.2.1).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RequestDirectives {
    /// Do not use a stored response without revalidating it (also `max-age=0`).
    pub no_cache: bool,
    /// Do not store the response to this request.
    pub no_store: bool,
    /// Answer from the cache or with 504; never contact the upstream.
    pub only_if_cached: bool,
    /// Only a response at most this old (seconds) may be reused.
    pub max_age: Option<u64>,
    /// Only a response fresh for at least this much longer (seconds).
    pub min_fresh: Option<u64>,
    /// A stale response may be reused: `Some(None)` at any staleness,
    /// `Some(Some(n))` up to `n` seconds past its freshness.
    pub max_stale: Option<Option<u64>>,
}

// === impl RequestDirectives ===

impl RequestDirectives {
    /// Reads the request's `Cache-Control`. Malformed values are read in the
    /// direction that reuses less: a bad `max-age` means `max-age=0`, a bad
    /// `max-stale` none at all.
    pub fn parse(headers: &HeaderMap) -> Self {
        let Some(d) = Directives::of(headers, &header::CACHE_CONTROL) else {
            return Self::default();
        };
        let max_age = d.seconds("max-age").map(|v| v.unwrap_or(0));
        Self {
            no_cache: d.has("no-cache") || max_age == Some(0),
            no_store: d.has("no-store"),
            only_if_cached: d.has("only-if-cached"),
            max_age,
            min_fresh: d
                .seconds("min-fresh")
                .map(|v| v.unwrap_or(DELTA_SECONDS_MAX)),
            max_stale: match d.list.iter().find(|(n, _)| n == "max-stale") {
                None => None,
                Some((_, None)) => Some(None),
                Some((_, Some(v))) => delta_seconds(v).map(Some),
            },
        }
    }
}

/// `delta-seconds` (RFC 9111 §1.2.2): digits only; saturates at 2^31.
pub fn delta_seconds(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    // Leading zeros aside, more than 10 digits is past 2^31 anyway.
    let digits = text.trim_start_matches('0');
    if digits.len() > 10 {
        return Some(DELTA_SECONDS_MAX);
    }
    Some(digits.parse::<u64>().unwrap_or(0).min(DELTA_SECONDS_MAX))
}

/// The `Age` field as a duration: `None` when absent or malformed (a
/// malformed `Age` is ignored, as RFC 9111 §5.1 allows).
pub fn age(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(header::AGE)?.to_str().ok()?;
    // Several values (a list) use the first.
    let first = value.split(',').next()?.trim();
    delta_seconds(first).map(Duration::from_secs)
}

/// An HTTP date field as seconds since the Unix epoch; `None` when absent or
/// invalid (callers decide what invalid means for them).
pub fn date_secs(headers: &HeaderMap, name: &HeaderName) -> Option<u64> {
    let text = headers.get(name)?.to_str().ok()?;
    http_date_secs(text.trim())
}

/// Parses an HTTP date (IMF-fixdate and the two obsolete forms), leniently
/// as RFC 9110 §5.6.7 asks of recipients: the case of names and a weekday
/// that does not match the date are forgiven.
pub fn http_date_secs(text: &str) -> Option<u64> {
    let strict = |t: &str| {
        httpdate::parse_http_date(t)
            .ok()
            .and_then(|time| time.duration_since(UNIX_EPOCH).ok())
            .map(|d| d.as_secs())
    };
    if let Some(secs) = strict(text) {
        return Some(secs);
    }
    if text.len() > 64 || !text.is_ascii() {
        return None;
    }
    let canonical = canonical_case(text);
    if let Some(secs) = strict(&canonical) {
        return Some(secs);
    }
    // The date's own weekday: try each (httpdate checks it; we do not care).
    let (weekday, rest) = canonical.split_at(canonical.find([',', ' '])?);
    let days: &[&str] = if weekday.len() > 3 {
        &[
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
            "Sunday",
        ]
    } else {
        &["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    };
    days.iter().find_map(|day| strict(&format!("{day}{rest}")))
}

/// Words in date case: `GMT` upper, others capitalised (`THU` → `Thu`).
fn canonical_case(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word_start = true;
    for c in text.chars() {
        if c.is_ascii_alphabetic() {
            out.push(if word_start {
                c.to_ascii_uppercase()
            } else {
                c.to_ascii_lowercase()
            });
            word_start = false;
        } else {
            out.push(c);
            word_start = true;
        }
    }
    out.replace("Gmt", "GMT")
}

/// Formats seconds since the Unix epoch as an IMF-fixdate.
pub fn fmt_http_date(secs: u64) -> String {
    httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(secs))
}

/// Whether `Vary` lists `*` (such a response never matches a later request).
pub fn vary_star(headers: &HeaderMap) -> bool {
    vary_names(headers).iter().any(|n| n == "*")
}

/// The field names `Vary` lists, lower-cased, without duplicates.
pub fn vary_names(headers: &HeaderMap) -> Vec<String> {
    let mut names: Vec<String> = Vec::new();
    for line in headers.get_all(header::VARY) {
        for token in line.as_bytes().split(|b| *b == b',') {
            let token = String::from_utf8_lossy(token.trim_ascii()).to_ascii_lowercase();
            if !token.is_empty() && !names.contains(&token) {
                names.push(token);
            }
        }
    }
    names
}

/// Seconds since the Unix epoch now.
pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn unquote(value: &str) -> &str {
    value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value)
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
    use proptest::prelude::*;

    fn with(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(*name, HeaderValue::from_static(value));
        }
        headers
    }

    #[test]
    fn directives_are_case_insensitive_quoted_and_multi_line() {
        let h = with(&[
            ("cache-control", "Public, S-MAXAGE=\"20\""),
            ("cache-control", "private=\"a, b\", max-age=5"),
        ]);
        let d = Directives::of(&h, &header::CACHE_CONTROL).expect("present");
        assert!(d.has("public") && d.has("private"));
        assert_eq!(d.seconds("s-maxage"), Some(Some(20)));
        assert_eq!(d.seconds("max-age"), Some(Some(5)));
        assert_eq!(d.seconds("min-fresh"), None);
        assert_eq!(
            Directives::parse("max-age=soon").seconds("max-age"),
            Some(None)
        );
        assert_eq!(Directives::parse("max-age").seconds("max-age"), Some(None));
    }

    #[test]
    fn delta_seconds_rejects_signs_and_fractions_and_saturates() {
        assert_eq!(delta_seconds("60"), Some(60));
        assert_eq!(delta_seconds("007"), Some(7));
        for bad in ["", "-1", "+1", "1.5", " 1", "1s", "0x10"] {
            assert_eq!(delta_seconds(bad), None, "{bad:?}");
        }
        assert_eq!(delta_seconds("99999999999999999999999"), Some(1 << 31));
        assert_eq!(delta_seconds("4294967296"), Some(1 << 31));
    }

    #[test]
    fn targeted_fields_win_in_order() {
        let h = with(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=10"),
            ("junction-cache-control", "max-age=20"),
        ]);
        let (d, source) = response_directives(&h);
        assert_eq!(
            (d.seconds("max-age"), source),
            (Some(Some(20)), Source::Targeted)
        );
        let h = with(&[
            ("cache-control", "no-store"),
            ("cdn-cache-control", "max-age=10"),
        ]);
        assert_eq!(response_directives(&h).0.seconds("max-age"), Some(Some(10)));
        let (d, source) = response_directives(&with(&[("cache-control", "no-store")]));
        assert!(d.has("no-store") && source == Source::CacheControl);
        // An empty or invalid targeted field does not hide Cache-Control.
        for ignored in [
            "",
            "max-age=10000, &&&&&",
            "max-age=\"10000\"",
            "max-age=-1",
            "Max-Age=5",
        ] {
            let h = with(&[
                ("cache-control", "no-store"),
                ("cdn-cache-control", ignored),
            ]);
            assert!(response_directives(&h).0.has("no-store"), "{ignored:?}");
        }
        let h = with(&[(
            "cdn-cache-control",
            "max-age=60, must-revalidate, private=\"a\", no-cache=?0",
        )]);
        let (d, _) = response_directives(&h);
        assert!(d.has("must-revalidate") && d.has("private") && !d.has("no-cache"));
        assert_eq!(d.seconds("max-age"), Some(Some(60)));
    }

    #[test]
    fn request_directives() {
        let parse = |v: &'static str| RequestDirectives::parse(&with(&[("cache-control", v)]));
        assert!(parse("no-cache").no_cache);
        assert!(parse("max-age=0").no_cache);
        assert!(
            parse("max-age=zero").no_cache,
            "malformed max-age reads as 0"
        );
        assert_eq!(parse("max-age=60").max_age, Some(60));
        assert!(!parse("max-age=60").no_cache);
        assert!(parse("only-if-cached").only_if_cached);
        assert!(parse("no-store").no_store);
        assert_eq!(parse("max-stale").max_stale, Some(None));
        assert_eq!(parse("max-stale=5").max_stale, Some(Some(5)));
        assert_eq!(parse("max-stale=x").max_stale, None);
        assert_eq!(parse("min-fresh=x").min_fresh, Some(1 << 31));
        assert_eq!(
            RequestDirectives::parse(&HeaderMap::new()),
            RequestDirectives::default()
        );
    }

    #[test]
    fn age_and_dates() {
        assert_eq!(
            age(&with(&[("age", "7200")])),
            Some(Duration::from_secs(7200))
        );
        assert_eq!(age(&with(&[("age", "-5")])), None);
        assert_eq!(age(&with(&[("age", "1.5")])), None);
        assert_eq!(age(&HeaderMap::new()), None);
        let h = with(&[("expires", "Thu, 01 Jan 1970 00:01:40 GMT")]);
        assert_eq!(date_secs(&h, &header::EXPIRES), Some(100));
        assert_eq!(
            date_secs(&with(&[("expires", "0")]), &header::EXPIRES),
            None
        );
        assert_eq!(
            http_date_secs(&fmt_http_date(1_700_000_000)),
            Some(1_700_000_000)
        );
        assert_eq!(
            http_date_secs("Sunday, 06-Nov-94 08:49:37 GMT"),
            Some(784_111_777)
        );
        let fixdate = http_date_secs("Thu, 18 Aug 2050 02:01:18 GMT").expect("valid");
        for lenient in [
            "THU, 18 Aug 2050 02:01:18 GMT",
            "Thu, 18 AUG 2050 02:01:18 GMT",
            "Thu, 18 Aug 2050 02:01:18 gMT",
            "Mon, 18 Aug 2050 02:01:18 GMT",
        ] {
            assert_eq!(http_date_secs(lenient), Some(fixdate), "{lenient}");
        }
        assert!(
            http_date_secs("Thu Aug  8 02:01:18 2050").is_some(),
            "asctime, wrong weekday"
        );
        assert_eq!(http_date_secs("Thu, 18 Aug 2050 25:01:18 GMT"), None);
    }

    #[test]
    fn vary_lists() {
        let h = with(&[("vary", "Accept-Encoding, foo"), ("vary", "FOO,,bar ")]);
        assert_eq!(vary_names(&h), ["accept-encoding", "foo", "bar"]);
        assert!(!vary_star(&h));
        assert!(vary_star(&with(&[("vary", "accept, *")])));
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in "\\PC{0,64}", bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = Directives::parse(&text);
            let _ = delta_seconds(&text);
            let _ = http_date_secs(&text);
            if let Ok(value) = http::HeaderValue::from_bytes(&bytes) {
                let mut h = HeaderMap::new();
                for name in [header::CACHE_CONTROL, header::AGE, header::EXPIRES, header::DATE, header::VARY, CDN_CACHE_CONTROL] {
                    h.insert(name, value.clone());
                }
                let _ = response_directives(&h);
                let _ = RequestDirectives::parse(&h);
                let _ = age(&h);
                let _ = date_secs(&h, &header::EXPIRES);
                let _ = vary_names(&h);
            }
        }

        #[test]
        fn delta_seconds_is_conservative(text in "[0-9a-z.+-]{0,24}") {
            match delta_seconds(&text) {
                Some(n) => prop_assert!(n <= 1 << 31 && text.bytes().all(|b| b.is_ascii_digit())),
                None => prop_assert!(text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit())),
            }
        }

        #[test]
        fn unreadable_fields_are_flagged(bytes in proptest::collection::vec(0x80u8..=0xff, 1..8)) {
            let mut h = HeaderMap::new();
            h.insert(header::CACHE_CONTROL, http::HeaderValue::from_bytes(&bytes).expect("obs-text is allowed"));
            prop_assert!(Directives::of(&h, &header::CACHE_CONTROL).expect("present").unreadable);
        }
    }
}
