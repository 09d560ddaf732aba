//! W3C trace context: keep the caller's trace id, give each hop its own span id.

use rand::Rng;

/// The `traceparent` to send upstream: the caller's trace with a new span id, or a new trace.
pub fn next_traceparent(incoming: Option<&str>) -> String {
    // Written by hand rather than with `format!`: this runs for every proxied
    // request and every delivery.
    let mut rng = rand::thread_rng();
    let span: u64 = rng.gen::<u64>() | 1;
    let mut out = String::with_capacity(55);
    out.push_str("00-");
    match incoming.and_then(parse) {
        Some((trace, flags)) => {
            out.push_str(trace);
            out.push('-');
            push_hex(&mut out, u128::from(span), 16);
            out.push('-');
            out.push_str(flags);
        }
        None => {
            push_hex(&mut out, rng.gen::<u128>() | 1, 32);
            out.push('-');
            push_hex(&mut out, u128::from(span), 16);
            out.push_str("-01");
        }
    }
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

    /// A request's trace: its valid `traceparent`'s, else a new trace whose
    /// `traceparent` is added to `headers`, so every hop after (upstream,
    /// queued event) carries the id the access line shows. The new one is
    /// not flagged sampled (nothing recorded its parent span: upstreams that
    /// sample by their parent must not trace every such request), and a
    /// `tracestate` that came with an invalid `traceparent` goes with it
    /// (W3C Trace Context §3.3).
    pub fn ensure(headers: &mut http::HeaderMap) -> Self {
        if let Some(id) = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(Self::of)
        {
            return id;
        }
        let mut tp = next_traceparent(None);
        tp.replace_range(tp.len() - 2.., "00");
        let id = Self::of(&tp).expect("a new traceparent is valid");
        headers.remove("tracestate");
        headers.insert(
            "traceparent",
            http::HeaderValue::from_str(&tp).expect("hex is a valid header value"),
        );
        id
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

/// Appends the low `digits` hex digits of `v`, lower case, zero-padded.
fn push_hex(out: &mut String, v: u128, digits: u32) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for i in (0..digits).rev() {
        out.push(char::from(HEX[((v >> (i * 4)) & 0xf) as usize]));
    }
}

/// Trace id and flags of a valid `traceparent`.
fn parse(tp: &str) -> Option<(&str, &str)> {
    let mut parts = tp.trim().split('-');
    let version = parts.next()?;
    let trace = parts.next()?;
    let parent = parts.next()?;
    let flags = parts.next()?;
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let valid = hex(version, 2)
        && version != "ff"
        && hex(trace, 32)
        && trace.bytes().any(|b| b != b'0')
        && hex(parent, 16)
        && hex(flags, 2);
    valid.then_some((trace, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_zero_padded_lower_case() {
        let mut s = String::new();
        push_hex(&mut s, 0xab, 4);
        assert_eq!(s, "00ab");
        s.clear();
        push_hex(&mut s, u128::MAX, 32);
        assert_eq!(s, "f".repeat(32));
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
