//! W3C trace context: keep the caller's trace id, give each hop its own span id.
//!
//! Runs for every proxied request and every delivery, so it works on bytes:
//! a `traceparent` is parsed by its fixed layout and written into a 55-byte
//! buffer (no `format!`, no per-digit pushes).

use http::{HeaderName, HeaderValue};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::cell::RefCell;

thread_local! {
    /// Trace and span ids must be unique, not secret: a fast generator per
    /// thread (xoshiro), seeded from the system's randomness, instead of the
    /// cryptographic `thread_rng` on every request.
    static IDS: RefCell<SmallRng> = RefCell::new(SmallRng::from_entropy());
}

/// The `traceparent` header.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");
/// The `tracestate` header.
pub const TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Length of a version-00 `traceparent`: `vv-<32 hex>-<16 hex>-ff`.
const LEN: usize = 55;

/// The `traceparent` to send upstream: the caller's trace with a new span id, or a new trace.
pub fn next_traceparent(incoming: Option<&str>) -> String {
    let buf = next_bytes(incoming);
    std::str::from_utf8(&buf)
        .expect("a traceparent is ASCII")
        .to_owned()
}

/// [`next_traceparent`] as a header value.
pub fn next_traceparent_value(incoming: Option<&HeaderValue>) -> HeaderValue {
    let incoming = incoming.and_then(|v| v.to_str().ok());
    HeaderValue::from_bytes(&next_bytes(incoming)).expect("hex is a valid header value")
}

fn next_bytes(incoming: Option<&str>) -> [u8; LEN] {
    let mut out = [b'-'; LEN];
    out[..2].copy_from_slice(b"00");
    let parsed = incoming.and_then(parse);
    let (span, trace) = IDS.with(|ids| {
        let mut rng = ids.borrow_mut();
        let span: u64 = rng.gen::<u64>() | 1;
        (span, parsed.is_none().then(|| rng.gen::<u128>() | 1))
    });
    match (parsed, trace) {
        (Some((trace, flags)), _) => {
            out[3..35].copy_from_slice(trace.as_bytes());
            out[53..55].copy_from_slice(flags.as_bytes());
        }
        (None, trace) => {
            put_hex(&mut out[3..35], trace.unwrap_or(1));
            out[53..55].copy_from_slice(b"01");
        }
    }
    put_hex(&mut out[36..52], u128::from(span));
    out
}

/// A W3C trace id (32 lower-case hex digits), kept without allocating so the
/// access line can name it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TraceId([u8; 32]);

impl TraceId {
    /// The trace id of a valid `traceparent`.
    pub fn of(traceparent: &str) -> Option<Self> {
        let (trace, _) = parse(traceparent)?;
        let mut id = [0u8; 32];
        id.copy_from_slice(trace.as_bytes());
        id.make_ascii_lowercase();
        Some(Self(id))
    }

    /// The trace of a valid `traceparent` in `headers`, if one was sent.
    pub fn sent(headers: &http::HeaderMap) -> Option<Self> {
        headers
            .get(TRACEPARENT)
            .and_then(|v| v.to_str().ok())
            .and_then(Self::of)
    }

    /// A request's trace: its valid `traceparent`'s, else a new trace whose
    /// `traceparent` is added to `headers`, so every hop after (upstream,
    /// queued event) carries the id the access line shows. The new one is
    /// not flagged sampled (nothing recorded its parent span: upstreams that
    /// sample by their parent must not trace every such request), and a
    /// `tracestate` that came with an invalid `traceparent` goes with it
    /// (W3C Trace Context §3.3).
    pub fn ensure(headers: &mut http::HeaderMap) -> Self {
        if let Some(id) = Self::sent(headers) {
            return id;
        }
        let mut tp = next_bytes(None);
        tp[53..55].copy_from_slice(b"00");
        let mut id = [0u8; 32];
        id.copy_from_slice(&tp[3..35]);
        headers.remove(TRACESTATE);
        headers.insert(
            TRACEPARENT,
            HeaderValue::from_bytes(&tp).expect("hex is a valid header value"),
        );
        Self(id)
    }
}

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(std::str::from_utf8(&self.0).map_err(|_| std::fmt::Error)?)
    }
}

impl std::fmt::Debug for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Writes `v`'s low `out.len()` hex digits into `out`, lower case, zero-padded.
fn put_hex(out: &mut [u8], v: u128) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let n = out.len();
    for (i, slot) in out.iter_mut().enumerate() {
        *slot = HEX[((v >> ((n - 1 - i) * 4)) & 0xf) as usize];
    }
}

/// Trace id and flags of a valid `traceparent`: `version-trace-parent-flags`,
/// then (in versions after 00) more fields after a `-`.
fn parse(tp: &str) -> Option<(&str, &str)> {
    let tp = tp.trim();
    let b = tp.as_bytes();
    if b.len() < LEN || (b.len() > LEN && b[LEN] != b'-') {
        return None;
    }
    if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
        return None;
    }
    let hex = |r: std::ops::Range<usize>| b[r].iter().all(u8::is_ascii_hexdigit);
    let valid = hex(0..2)
        && &b[..2] != b"ff"
        && hex(3..35)
        && b[3..35].iter().any(|&c| c != b'0')
        && hex(36..52)
        && hex(53..55);
    valid.then(|| (&tp[3..35], &tp[53..55]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_zero_padded_lower_case() {
        let mut s = [0u8; 4];
        put_hex(&mut s, 0xab);
        assert_eq!(&s, b"00ab");
        let mut s = [0u8; 32];
        put_hex(&mut s, u128::MAX);
        assert_eq!(s, [b'f'; 32]);
    }

    #[test]
    fn parses_by_layout_as_the_spec_says() {
        let t = "4bf92f3577b34da6a3ce929d0e0e4736";
        let ok = format!("00-{t}-00f067aa0ba902b7-01");
        assert_eq!(parse(&ok), Some((t, "01")));
        assert_eq!(parse(&format!(" {ok} ")), Some((t, "01")), "trimmed");
        // A later version may add fields after a dash; nothing else may follow.
        assert_eq!(
            parse(&format!("01-{t}-00f067aa0ba902b7-01-extra")),
            Some((t, "01"))
        );
        for bad in [
            format!("{ok}x"),
            format!("ff-{t}-00f067aa0ba902b7-01"),
            format!("00-{}-00f067aa0ba902b7-01", "0".repeat(32)),
            format!("00-{t}-00f067aa0ba902b7-1"),
            format!("00-{t}x00f067aa0ba902b7-01"),
            format!("00-{}g-00f067aa0ba902b7-01", &t[..31]),
            format!("0-{t}-00f067aa0ba902b7-01"),
            String::new(),
        ] {
            assert_eq!(parse(&bad), None, "{bad}");
        }
        // As value: the next hop keeps the trace and the flags.
        let v = next_traceparent_value(Some(&HeaderValue::from_str(&ok).unwrap()));
        assert_eq!(parse(v.to_str().unwrap()), Some((t, "01")));
        assert_ne!(v.to_str().unwrap(), ok);
    }

    #[test]
    fn keeps_trace_id_and_makes_new_span() {
        let inc = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let out = next_traceparent(Some(inc));
        assert!(out.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"));
        assert!(out.ends_with("-01"));
        assert_ne!(out, inc);
    }

    #[test]
    fn a_request_keeps_its_trace_or_gets_one() {
        let mut h = http::HeaderMap::new();
        h.insert(
            "traceparent",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"
                .parse()
                .unwrap(),
        );
        let id = TraceId::ensure(&mut h);
        assert_eq!(id.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");

        let mut h = http::HeaderMap::new();
        h.insert("traceparent", "garbage".parse().unwrap());
        h.insert("tracestate", "vendor=x".parse().unwrap());
        let id = TraceId::ensure(&mut h);
        let tp = h["traceparent"].to_str().unwrap();
        assert!(tp.ends_with("-00"), "a started trace is not sampled: {tp}");
        assert!(
            !h.contains_key("tracestate"),
            "it went with the invalid traceparent"
        );
        assert_eq!(TraceId::of(tp), Some(id), "{tp}");
        // The next hop keeps it.
        assert_eq!(TraceId::of(&next_traceparent(Some(tp))), Some(id));
    }

    #[test]
    fn creates_one_when_missing_or_invalid() {
        for inc in [
            None,
            Some("garbage"),
            Some("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
        ] {
            let out = next_traceparent(inc);
            assert_eq!(out.len(), 55, "{out}");
            assert!(parse(&out).is_some());
            assert!(out.starts_with("00-") && out.ends_with("-01"), "{out}");
        }
    }
}
