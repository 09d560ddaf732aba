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
