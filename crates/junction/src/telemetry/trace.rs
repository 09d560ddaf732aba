//! W3C trace context: keep the caller's trace id, give each hop its own span id.

use rand::Rng;

/// The `traceparent` to send upstream: the caller's trace with a new span id, or a new trace.
pub fn next_traceparent(incoming: Option<&str>) -> String {
    let mut rng = rand::thread_rng();
    let span: u64 = rng.gen::<u64>() | 1;
    if let Some((trace, flags)) = incoming.and_then(parse) {
        return format!("00-{trace}-{span:016x}-{flags}");
    }
    let trace: u128 = rng.gen::<u128>() | 1;
    format!("00-{trace:032x}-{span:016x}-01")
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
        }
    }
}
