//! What a subscriber answered to a failed delivery attempt, kept with the
//! attempt so an operator can see *why* it failed (the message page, DLQ
//! history) without reproducing the call.
//!
//! Bounded by construction, whatever the subscriber sends: at most
//! [`MAX_HEADERS`] headers, names of at most [`MAX_HEADER_NAME`] bytes, values
//! of at most [`MAX_HEADER_VALUE`], [`MAX_HEADER_BYTES`] in all, and the first
//! [`MAX_BODY`] bytes of the body as text. Text is stored only as characters
//! every store takes: invalid UTF-8, NUL and other control characters (but tab
//! and line breaks) and the non-characters U+FFFE/U+FFFF read as U+FFFD
//! (PostgreSQL's `jsonb` refuses `\u0000`, SQS's attributes refuse controls).
//! The values of headers that carry credentials are never stored. A sample is
//! at most ~5 KiB of text, kept per attempt (at most [`crate::MAX_HISTORY`] of
//! them) by every backend that keeps history, and travels in the envelope of
//! the broker backends' dead letters (the last 3 attempts only).

use serde::{Deserialize, Serialize};

/// Most response headers kept.
pub const MAX_HEADERS: usize = 24;
/// Longest header name kept (longer ones are cut, with `…`).
pub const MAX_HEADER_NAME: usize = 64;
/// Longest header value kept (longer ones are cut, with `…`).
pub const MAX_HEADER_VALUE: usize = 256;
/// Most header bytes kept, names and values together.
pub const MAX_HEADER_BYTES: usize = 3 * 1024;
/// Most body bytes kept.
pub const MAX_BODY: usize = 1024;

/// Headers whose values are replaced by [`REDACTED`].
const SECRET_HEADERS: [&str; 5] = [
    "set-cookie",
    "authorization",
    "proxy-authorization",
    "www-authenticate",
    "cookie",
];
/// What a secret header's value reads as.
pub const REDACTED: &str = "[redacted]";

/// A bounded copy of a subscriber's response.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseSample {
    /// HTTP status.
    pub status: u16,
    /// Response headers (lowercase names), in the order received.
    #[serde(default)]
    pub headers: Vec<(String, String)>,
    /// The first bytes of the body, as text.
    #[serde(default)]
    pub body: String,
    /// The body's whole length in bytes (more than `body` holds when cut).
    #[serde(default)]
    pub body_bytes: u64,
    /// Whether headers or body were cut to fit.
    #[serde(default)]
    pub truncated: bool,
}

impl ResponseSample {
    /// Samples a response: `headers` as (name, raw value), `body` whole.
    pub fn new<'a>(
        status: u16,
        headers: impl IntoIterator<Item = (&'a str, &'a [u8])>,
        body: &[u8],
    ) -> Self {
        let mut truncated = false;
        let mut kept = Vec::new();
        let mut bytes = 0;
        for (name, value) in headers {
            if kept.len() == MAX_HEADERS || bytes >= MAX_HEADER_BYTES {
                truncated = true;
                break;
            }
            let (name, cut) = prefix_text(name.to_ascii_lowercase().as_bytes(), MAX_HEADER_NAME);
            truncated |= cut;
            let value = if SECRET_HEADERS.contains(&name.as_str()) {
                REDACTED.to_owned()
            } else {
                let (text, cut) = prefix_text(value, MAX_HEADER_VALUE);
                truncated |= cut;
                text
            };
            bytes += name.len() + value.len();
            kept.push((name, value));
        }
        let (text, cut) = prefix_text(body, MAX_BODY);
        Self {
            status,
            headers: kept,
            body: text,
            body_bytes: body.len() as u64,
            truncated: truncated || cut,
        }
    }
}

/// The first `max` bytes of `raw` as text (cut on a character boundary,
/// invalid UTF-8 replaced), and whether anything was left out.
fn prefix_text(raw: &[u8], max: usize) -> (String, bool) {
    if raw.len() <= max {
        return (storable(&String::from_utf8_lossy(raw)), false);
    }
    let mut text = String::from_utf8_lossy(&raw[..max]).into_owned();
    // A multi-byte character cut in two reads as one replacement character at
    // the end: drop it rather than show a broken character.
    if text.ends_with(char::REPLACEMENT_CHARACTER) && std::str::from_utf8(&raw[..max]).is_err() {
        text.pop();
    }
    let mut text = storable(&text);
    text.push('…');
    (text, true)
}

/// `text` with what some store refuses replaced by U+FFFD (see the module doc).
fn storable(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '\t' | '\n' | '\r' => c,
            c if c.is_control() || c == '\u{fffe}' || c == '\u{ffff}' => {
                char::REPLACEMENT_CHARACTER
            }
            c => c,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_responses_are_kept_whole() {
        let s = ResponseSample::new(
            503,
            [("Content-Type", &b"application/json"[..])],
            br#"{"error":"down"}"#,
        );
        assert_eq!(s.status, 503);
        assert_eq!(
            s.headers,
            [("content-type".into(), "application/json".into())]
        );
        assert_eq!(s.body, r#"{"error":"down"}"#);
        assert_eq!(s.body_bytes, 16);
        assert!(!s.truncated);
    }

    #[test]
    fn everything_is_bounded_whatever_the_subscriber_sends() {
        let long = vec![b'x'; 10_000];
        let headers: Vec<(String, Vec<u8>)> = (0..100)
            .map(|i| (format!("x-h{i}"), long.clone()))
            .collect();
        let s = ResponseSample::new(
            500,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_slice())),
            &vec![b'y'; 1 << 20],
        );
        let kept: usize = s.headers.iter().map(|(k, v)| k.len() + v.len()).sum();
        assert!(kept < MAX_HEADER_BYTES + MAX_HEADER_VALUE + 16, "{kept}");
        assert!(s
            .headers
            .iter()
            .all(|(_, v)| v.len() <= MAX_HEADER_VALUE + '…'.len_utf8()));
        assert!(s.body.len() <= MAX_BODY + '…'.len_utf8());
        assert_eq!(s.body_bytes, 1 << 20);
        assert!(s.truncated);
        let json = serde_json::to_string(&s).unwrap();
        assert!(json.len() < 16 * 1024, "{} bytes", json.len());
        let long_name = "x".repeat(10_000);
        let s = ResponseSample::new(500, [(long_name.as_str(), &b"v"[..])], b"");
        assert!(s.headers[0].0.len() <= MAX_HEADER_NAME + '…'.len_utf8() && s.truncated);
    }

    #[test]
    fn nul_and_controls_are_replaced_tabs_and_newlines_kept() {
        let s = ResponseSample::new(
            500,
            [("x-raw", &b"a\x00b"[..])],
            b"\x1f\x8b\x00gz\tline\r\nnext\xef\xbf\xbf",
        );
        assert_eq!(s.headers[0].1, "a\u{fffd}b");
        assert_eq!(s.body, "\u{fffd}\u{fffd}\u{fffd}gz\tline\r\nnext\u{fffd}");
        assert!(!serde_json::to_string(&s).unwrap().contains("\\u0000"));
    }

    #[test]
    fn credentials_are_not_stored() {
        let s = ResponseSample::new(
            401,
            [
                ("Set-Cookie", &b"session=abc"[..]),
                ("WWW-Authenticate", &b"Bearer realm=x"[..]),
                ("Retry-After", &b"5"[..]),
            ],
            b"",
        );
        assert_eq!(s.headers[0], ("set-cookie".into(), REDACTED.into()));
        assert_eq!(s.headers[1].1, REDACTED);
        assert_eq!(s.headers[2], ("retry-after".into(), "5".into()));
    }

    #[test]
    fn a_cut_character_is_dropped_and_bad_bytes_replaced() {
        let mut body = vec![b'a'; MAX_BODY - 1];
        body.extend("é".as_bytes()); // 2 bytes: the second falls past the limit
        body.extend(b"tail");
        let s = ResponseSample::new(502, [], &body);
        assert!(s.body.ends_with("a…"), "{}", &s.body[s.body.len() - 8..]);
        let s = ResponseSample::new(502, [], &[0xff, b'o', b'k']);
        assert_eq!(s.body, "\u{fffd}ok");
        assert!(!s.truncated);
    }
}
