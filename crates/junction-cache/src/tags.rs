//! Rendering of cache tag templates such as `product:{id}`.
//!
//! Why it exists: routes declare tags with placeholders filled from path
//! parameters, both when storing (`cache.tags`) and when invalidating
//! (`invalidate`); both sides must render a template the same way.
//!
//! What it promises: one left-to-right pass; `{name}` is replaced by the value of
//! the first matching parameter; unknown placeholders, unclosed braces and
//! anything that is not a `{name}` with a non-empty name are kept verbatim;
//! substituted values are never expanded again.

/// Fills `{name}` placeholders in `template` from `params`.
pub fn render_tag(template: &str, params: &[(&str, &str)]) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let after = &rest[open + 1..];
        let close = after.find(['}', '{']);
        match close {
            Some(end) if after.as_bytes()[end] == b'}' && end > 0 => {
                let name = &after[..end];
                match params.iter().find(|(n, _)| *n == name) {
                    Some((_, value)) => out.push_str(value),
                    None => {
                        out.push('{');
                        out.push_str(name);
                        out.push('}');
                    }
                }
                rest = &after[end + 1..];
            }
            _ => {
                // Not a placeholder: keep the brace and continue after it.
                out.push('{');
                rest = after;
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_known_placeholders() {
        assert_eq!(render_tag("product:{id}", &[("id", "42")]), "product:42");
        assert_eq!(
            render_tag("{tenant}/sku:{sku}", &[("sku", "A-1"), ("tenant", "t1")]),
            "t1/sku:A-1"
        );
        assert_eq!(render_tag("{id}{id}", &[("id", "7")]), "77");
    }

    #[test]
    fn leaves_unknown_and_malformed_placeholders() {
        assert_eq!(render_tag("p:{missing}", &[("id", "1")]), "p:{missing}");
        assert_eq!(render_tag("p:{id", &[("id", "1")]), "p:{id");
        assert_eq!(render_tag("p:{}", &[("", "x")]), "p:{}");
        assert_eq!(render_tag("p:{{id}", &[("id", "1")]), "p:{1");
        assert_eq!(render_tag("plain", &[("id", "1")]), "plain");
    }

    #[test]
    fn values_are_not_expanded_again() {
        assert_eq!(render_tag("{a}-{b}", &[("a", "{b}"), ("b", "2")]), "{b}-2");
    }
}
