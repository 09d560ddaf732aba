//! `${VAR}` and `${VAR:-default}` in config values: the same file serves
//! every environment (addresses, prefixes, URLs), while secrets stay in the
//! `*_env` keys that name a variable.
//!
//! What it promises: substitution happens in scalar values after YAML
//! parsing, so a variable's value can never add keys or change the
//! structure; a plain (unquoted) value is typed after substitution
//! (`port: ${PORT}` is a number); `$${` writes a literal `${`. A variable
//! that is not set and has no default is a located error naming it.

use super::located::Errors;
use super::yaml::{Node, NodeKind};

/// Substitutes every scalar value under `node` (map keys are left alone);
/// `path` names the node in errors.
pub(super) fn substitute(
    node: &mut Node,
    path: &str,
    lookup: &dyn Fn(&str) -> Option<String>,
    errs: &mut Errors,
) {
    match &mut node.kind {
        NodeKind::Scalar { value, .. } => {
            if value.contains('$') {
                match expand(value, lookup) {
                    Ok(v) => *value = v,
                    Err(why) => errs.push(node.pos, path, why),
                }
            }
        }
        NodeKind::Seq(items) => {
            for (i, item) in items.iter_mut().enumerate() {
                substitute(item, &format!("{path}[{i}]"), lookup, errs);
            }
        }
        NodeKind::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                let key = match &k.kind {
                    NodeKind::Scalar { value, .. } => value.clone(),
                    _ => "?".to_owned(),
                };
                let child = if path.is_empty() {
                    key
                } else {
                    format!("{path}.{key}")
                };
                substitute(v, &child, lookup, errs);
            }
        }
    }
}

/// `s` with every `${NAME}` / `${NAME:-default}` replaced and `$${` made `${`.
pub(super) fn expand(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        if let Some(lit) = after.strip_prefix("${") {
            out.push_str("${");
            rest = lit;
            continue;
        }
        let Some(body) = after.strip_prefix('{') else {
            out.push('$');
            rest = after;
            continue;
        };
        let Some(end) = body.find('}') else {
            return Err(format!(
                "unclosed ${{ in {s:?} (write $${{ for a literal ${{)"
            ));
        };
        let inner = &body[..end];
        let (name, default) = match inner.split_once(":-") {
            Some((n, d)) => (n, Some(d)),
            None => (inner, None),
        };
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            return Err(format!(
                "${{{inner}}}: not a variable name (letters, digits and _; ${{NAME}} or ${{NAME:-default}})"
            ));
        }
        // As in the shell, `:-` also replaces a variable set to "".
        let value = lookup(name).filter(|v| !(v.is_empty() && default.is_some()));
        match (value, default) {
            (Some(v), _) => out.push_str(&v),
            (None, Some(d)) => out.push_str(d),
            (None, None) => {
                return Err(format!(
                    "environment variable {name} is not set (give a default: ${{{name}:-value}})"
                ))
            }
        }
        rest = &body[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "HOST" => Some("10.0.0.5".into()),
            "EMPTY" => Some(String::new()),
            _ => None,
        }
    }

    #[test]
    fn variables_defaults_and_literals() {
        assert_eq!(
            expand("http://${HOST}:8080", &env).unwrap(),
            "http://10.0.0.5:8080"
        );
        assert_eq!(expand("${PORT:-9090}", &env).unwrap(), "9090");
        assert_eq!(expand("${EMPTY:-x}", &env).unwrap(), "x");
        assert_eq!(expand("${EMPTY}", &env).unwrap(), "");
        assert_eq!(
            expand("$${HOST} costs $5", &env).unwrap(),
            "${HOST} costs $5"
        );
        assert_eq!(expand("no vars", &env).unwrap(), "no vars");
        let e = expand("${MISSING}", &env).unwrap_err();
        assert!(e.contains("MISSING is not set"), "{e}");
        assert!(expand("${HOST", &env).unwrap_err().contains("unclosed"));
        assert!(expand("${1X}", &env)
            .unwrap_err()
            .contains("not a variable name"));
    }
}
