//! The config snippets recommendations carry, and the durations and names
//! they use, in the config's own syntax (`junction check` reads them).

use std::fmt::Write as _;

/// Durations a suggestion is rounded up to: what a person would write.
const NICE_MS: [u64; 20] = [
    50, 100, 200, 250, 500, 1_000, 2_000, 3_000, 5_000, 10_000, 15_000, 20_000, 30_000, 45_000,
    60_000, 120_000, 300_000, 600_000, 1_800_000, 3_600_000,
];

/// `ms` rounded up to a round duration.
pub fn nice_ceil_ms(ms: f64) -> u64 {
    NICE_MS
        .iter()
        .copied()
        .find(|n| *n as f64 >= ms)
        .unwrap_or(NICE_MS[NICE_MS.len() - 1])
}

/// A duration in config syntax: `250ms`, `3s`, `5m`, `1h`.
pub fn duration(ms: u64) -> String {
    if ms >= 3_600_000 && ms.is_multiple_of(3_600_000) {
        format!("{}h", ms / 3_600_000)
    } else if ms >= 60_000 && ms.is_multiple_of(60_000) {
        format!("{}m", ms / 60_000)
    } else if ms.is_multiple_of(1_000) {
        format!("{}s", ms / 1_000)
    } else {
        format!("{ms}ms")
    }
}

/// A name for a route without one: method and literal path segments,
/// `get-suppliers`, `post-orders-lines`.
pub fn route_name(method: &str, template: &str) -> String {
    let mut name = method.to_ascii_lowercase();
    for seg in template.split('/').filter(|s| !s.is_empty()) {
        // `{id}` → `id`, `{*rest}` → `rest`: `GET /orders` and
        // `GET /orders/{id}` must not share a name.
        let seg = seg
            .trim_start_matches('{')
            .trim_start_matches('*')
            .trim_end_matches('}');
        name.push('-');
        name.extend(seg.chars().map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        }));
    }
    if name == method.to_ascii_lowercase() {
        name.push_str("-root");
    }
    name
}

/// A YAML string: quoted when plain would not read back the same.
pub fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '/' | '-' | '_' | '.'))
        && !s.starts_with(['-', '.']);
    if plain {
        s.to_owned()
    } else {
        serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
    }
}

/// A route entry (under `routes:`) with extra lines of policy, indented for a list item.
pub fn route_entry(
    name: &str,
    method: &str,
    template: &str,
    target: &str,
    policy: &[String],
) -> String {
    let mut y = String::new();
    let _ = writeln!(y, "  - name: {}", scalar(name));
    let _ = writeln!(
        y,
        "    match: {{ method: {method}, path: {} }}",
        scalar(template)
    );
    if !target.is_empty() {
        let _ = writeln!(y, "    {target}");
    }
    for line in policy {
        let _ = writeln!(y, "    {line}");
    }
    y
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_names_read_as_config() {
        assert_eq!(nice_ceil_ms(7.0), 50);
        assert_eq!(nice_ceil_ms(2_100.0), 3_000);
        assert_eq!(nice_ceil_ms(1e12), 3_600_000);
        assert_eq!(duration(250), "250ms");
        assert_eq!(duration(3_000), "3s");
        assert_eq!(duration(300_000), "5m");
        assert_eq!(duration(90_000), "90s");
        assert_eq!(duration(3_600_000), "1h");
        assert_eq!(route_name("GET", "/suppliers/{id}"), "get-suppliers-id");
        assert_eq!(route_name("GET", "/suppliers"), "get-suppliers");
        assert_eq!(route_name("POST", "/"), "post-root");
        assert_eq!(route_name("GET", "/a.b/{id}/c"), "get-a-b-id-c");
        assert_eq!(scalar("/orders/{id}"), "\"/orders/{id}\"");
        assert_eq!(scalar("/orders"), "/orders");
    }
}
