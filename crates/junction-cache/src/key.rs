//! Cache keys: one string per distinct upstream answer.
//!
//! Why it exists: two requests that differ only in spelling (parameter order, an
//! empty `?`, `%7e` vs `~`) should share one cache entry, while two requests the
//! upstream may answer differently must never share one. The rule here is to
//! normalise only what RFC 3986 calls equivalent (percent-encoded unreserved
//! characters, hex case) plus parameter order, and keep everything else verbatim:
//! a spurious miss costs one upstream call, a spurious hit serves wrong data.
//!
//! Query parameters are sorted by name then value (so `a=2&a=1` and `a=1&a=2` share
//! a key — the gateway's contract treats repeated parameters as a set). `+` is kept
//! distinct from `%20` because upstreams disagree about it. Parameters listed in
//! `exclude` (such as `fields`, applied by the gateway after the cache) are dropped.
//! Each `vary` header contributes its lower-cased values, with absence distinct
//! from an empty value.

use std::fmt::Write as _;

use http::{HeaderMap, HeaderName, Method};

/// Namespace for building cache keys; see [`CacheKey::build`].
#[derive(Debug, Clone, Copy)]
pub struct CacheKey;

impl CacheKey {
    /// Builds the key for a request.
    ///
    /// `query` is the raw query string without `?`; `exclude` names parameters to
    /// leave out of the key; `vary` names the request headers whose values select
    /// different upstream representations.
    pub fn build(
        method: &Method,
        path: &str,
        query: Option<&str>,
        exclude: &[&str],
        vary: &[HeaderName],
        headers: &HeaderMap,
    ) -> String {
        let mut key = String::with_capacity(
            method.as_str().len() + path.len() + query.map_or(0, str::len) + 2,
        );
        key.push_str(method.as_str());
        key.push(' ');
        normalise_component(path, &mut key);

        let params = normalised_params(query.unwrap_or(""), exclude);
        for (i, (name, value)) in params.iter().enumerate() {
            key.push(if i == 0 { '?' } else { '&' });
            key.push_str(name);
            if let Some(value) = value {
                key.push('=');
                key.push_str(value);
            }
        }

        for name in vary {
            key.push('\n');
            key.push_str(name.as_str());
            let mut values = headers.get_all(name).iter().peekable();
            if values.peek().is_none() {
                continue;
            }
            key.push(':');
            for (i, value) in values.enumerate() {
                if i > 0 {
                    key.push(',');
                }
                push_escaped_lowercase(value.as_bytes(), &mut key);
            }
        }
        key
    }
}

/// Splits, normalises, filters and sorts query parameters.
///
/// A parameter without `=` (`?flag`) keeps `None` so it stays distinct from `flag=`.
fn normalised_params(query: &str, exclude: &[&str]) -> Vec<(String, Option<String>)> {
    let mut params: Vec<(String, Option<String>)> = query
        .split('&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let (raw_name, raw_value) = match pair.split_once('=') {
                Some((name, value)) => (name, Some(value)),
                None => (pair, None),
            };
            let mut name = String::with_capacity(raw_name.len());
            normalise_component(raw_name, &mut name);
            if exclude.iter().any(|excluded| *excluded == name) {
                return None;
            }
            let value = raw_value.map(|raw| {
                let mut value = String::with_capacity(raw.len());
                normalise_component(raw, &mut value);
                value
            });
            Some((name, value))
        })
        .collect();
    params.sort_unstable();
    params
}

/// Appends `input` with percent-encoded unreserved characters decoded and the hex
/// digits of every other escape upper-cased. Malformed escapes are kept verbatim.
fn normalise_component(input: &str, out: &mut String) {
    let bytes = input.as_bytes();
    let mut copied = 0;
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex_value(bytes[i + 1]), hex_value(bytes[i + 2])) {
                out.push_str(&input[copied..i]);
                let decoded = hi << 4 | lo;
                if is_unreserved(decoded) {
                    out.push(char::from(decoded));
                } else {
                    push_percent(decoded, out);
                }
                i += 3;
                copied = i;
                continue;
            }
        }
        i += 1;
    }
    out.push_str(&input[copied..]);
}

/// Appends a header value lower-cased, escaping `%` and every byte outside
/// printable ASCII so distinct raw values always give distinct text.
fn push_escaped_lowercase(value: &[u8], out: &mut String) {
    for &byte in value {
        if byte == b'%' || !(0x20..0x7f).contains(&byte) {
            push_percent(byte, out);
        } else {
            out.push(char::from(byte.to_ascii_lowercase()));
        }
    }
}

fn push_percent(byte: u8, out: &mut String) {
    // Writing to a String cannot fail.
    let _ = write!(out, "%{byte:02X}");
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::{ACCEPT_LANGUAGE, AUTHORIZATION};
    use http::HeaderValue;

    fn key(query: Option<&str>) -> String {
        CacheKey::build(&Method::GET, "/p", query, &[], &[], &HeaderMap::new())
    }

    #[test]
    fn sorts_params_by_name_then_value() {
        assert_eq!(key(Some("b=2&a=9&a=1")), "GET /p?a=1&a=9&b=2");
        assert_eq!(key(Some("b=2&a=1")), key(Some("a=1&b=2")));
    }

    #[test]
    fn empty_query_is_no_query() {
        assert_eq!(key(None), "GET /p");
        assert_eq!(key(Some("")), "GET /p");
        assert_eq!(key(Some("&&")), "GET /p");
    }

    #[test]
    fn normalises_percent_encoding_without_merging_distinct_values() {
        assert_eq!(key(Some("q=%7e%41")), "GET /p?q=~A");
        assert_eq!(key(Some("q=%2f")), "GET /p?q=%2F");
        assert_eq!(key(Some("q=%zz&r=%4")), "GET /p?q=%zz&r=%4");
        assert_ne!(key(Some("q=a+b")), key(Some("q=a%20b")));
        assert_ne!(key(Some("flag")), key(Some("flag=")));
        let path = CacheKey::build(&Method::GET, "/a%2db", None, &[], &[], &HeaderMap::new());
        assert_eq!(path, "GET /a-b");
    }

    #[test]
    fn keeps_non_ascii_text_intact() {
        assert_eq!(key(Some("q=café")), "GET /p?q=café");
    }

    #[test]
    fn excluded_params_are_dropped() {
        let with = CacheKey::build(
            &Method::GET,
            "/p",
            Some("fields=a,b&id=1"),
            &["fields"],
            &[],
            &HeaderMap::new(),
        );
        let without = CacheKey::build(
            &Method::GET,
            "/p",
            Some("id=1"),
            &["fields"],
            &[],
            &HeaderMap::new(),
        );
        assert_eq!(with, without);
        let only = CacheKey::build(
            &Method::GET,
            "/p",
            Some("fi%65lds=x"),
            &["fields"],
            &[],
            &HeaderMap::new(),
        );
        assert_eq!(only, "GET /p");
    }

    #[test]
    fn method_is_part_of_the_key() {
        let head = CacheKey::build(&Method::HEAD, "/p", None, &[], &[], &HeaderMap::new());
        assert_ne!(head, key(None));
    }

    #[test]
    fn vary_headers_are_lowercased_and_absence_is_distinct() {
        let vary = [ACCEPT_LANGUAGE];
        let mut upper = HeaderMap::new();
        upper.insert(ACCEPT_LANGUAGE, HeaderValue::from_static("EN-GB"));
        let mut lower = HeaderMap::new();
        lower.insert(ACCEPT_LANGUAGE, HeaderValue::from_static("en-gb"));
        let mut empty = HeaderMap::new();
        empty.insert(ACCEPT_LANGUAGE, HeaderValue::from_static(""));
        let build = |h: &HeaderMap| CacheKey::build(&Method::GET, "/p", None, &[], &vary, h);

        assert_eq!(build(&upper), "GET /p\naccept-language:en-gb");
        assert_eq!(build(&upper), build(&lower));
        assert_ne!(build(&empty), build(&HeaderMap::new()));
        // Headers not listed in vary never reach the key.
        let mut other = lower.clone();
        other.insert(AUTHORIZATION, HeaderValue::from_static("secret"));
        assert_eq!(build(&other), build(&lower));
    }

    #[test]
    fn vary_values_escape_separators_and_binary() {
        let name = HeaderName::from_static("x-v");
        let mut headers = HeaderMap::new();
        headers.append(&name, HeaderValue::from_static("a"));
        headers.append(
            &name,
            HeaderValue::from_bytes(b"b%\xff").expect("valid header"),
        );
        let built = CacheKey::build(&Method::GET, "/p", None, &[], &[name], &headers);
        assert_eq!(built, "GET /p\nx-v:a,b%25%FF");
    }
}
