//! Field projection (`?fields=a,b.c`): payload trimming for JSON bodies.
//!
//! Why it exists: clients often need three fields of a 100 KB upstream document;
//! trimming at the gateway saves their bandwidth and parsing time without
//! changing the upstream (the cache keeps the full body and projects per request).
//!
//! What it promises:
//! - [`FieldSet::parse`] accepts comma-separated dot paths of `[A-Za-z0-9_-]`
//!   segments (spaces around a path are ignored) and names the bad part otherwise.
//! - Projection keeps exactly the listed paths. A path applies to every element of
//!   an array it meets, objects keep only selected members (in document order),
//!   missing members are simply absent, a parent path keeps its whole subtree
//!   (`b` with `b.c` keeps all of `b`), and a value that is neither object nor
//!   array where a path continues is dropped (from its object, or from its array).
//!   A top-level scalar is returned unchanged.
//! - [`project_json_bytes`] never builds the unselected parts of the body: it walks
//!   the input once with serde's `IgnoredAny` for skipped members, and gives the
//!   same result as [`FieldSet::apply`] on the parsed document (last member wins
//!   on duplicate keys, like `serde_json`). Invalid JSON is an error so the
//!   gateway can pass the body through untouched.

use std::collections::BTreeMap;
use std::fmt;

use bytes::Bytes;
use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

/// Most paths one field list may hold.
pub const MAX_PATHS: usize = 256;
/// Most segments one path may have.
pub const MAX_DEPTH: usize = 32;

/// A parsed, validated set of field paths, stored as a prefix tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldSet {
    root: Node,
}

/// One step in the tree: either keep the whole subtree, or recurse into children.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Node {
    whole: bool,
    children: BTreeMap<String, Node>,
}

/// Why a field list was rejected; each variant names the offending part.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProjectionError {
    /// The list is empty.
    #[error("field list is empty")]
    Empty,
    /// An entry between commas is empty (`a,,b`, `a,`); `position` counts from 1.
    #[error("field list has an empty entry at position {position}")]
    EmptyPath {
        /// 1-based position of the empty entry.
        position: usize,
    },
    /// A path has an empty segment (`a..b`, `.a`, `a.`).
    #[error("field path {path:?} has an empty segment")]
    EmptySegment {
        /// The offending path.
        path: String,
    },
    /// A segment holds a character outside `[A-Za-z0-9_-]`.
    #[error(
        "field path {path:?} has invalid character {ch:?} (allowed: letters, digits, '_', '-')"
    )]
    InvalidChar {
        /// The offending path.
        path: String,
        /// The first invalid character.
        ch: char,
    },
    /// A path has more than [`MAX_DEPTH`] segments.
    #[error("field path {path:?} is deeper than {MAX_DEPTH} segments")]
    TooDeep {
        /// The offending path.
        path: String,
    },
    /// The list has more than [`MAX_PATHS`] paths.
    #[error("field list has more than {MAX_PATHS} paths")]
    TooMany,
}

/// The body could not be projected because it is not valid JSON.
#[derive(Debug, thiserror::Error)]
#[error("body is not valid JSON: {0}")]
pub struct InvalidJson(#[from] serde_json::Error);

// === impl FieldSet ===

impl FieldSet {
    /// Parses a comma-separated list of dot paths, such as `id,items.sku`.
    pub fn parse(list: &str) -> Result<Self, ProjectionError> {
        if list.trim().is_empty() {
            return Err(ProjectionError::Empty);
        }
        let mut root = Node::default();
        for (index, raw) in list.split(',').enumerate() {
            if index >= MAX_PATHS {
                return Err(ProjectionError::TooMany);
            }
            let path = raw.trim();
            if path.is_empty() {
                return Err(ProjectionError::EmptyPath {
                    position: index + 1,
                });
            }
            if let Some(ch) = path
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.')))
            {
                let path = path.to_owned();
                return Err(ProjectionError::InvalidChar { path, ch });
            }
            let segments: Vec<&str> = path.split('.').collect();
            if segments.iter().any(|s| s.is_empty()) {
                let path = path.to_owned();
                return Err(ProjectionError::EmptySegment { path });
            }
            if segments.len() > MAX_DEPTH {
                let path = path.to_owned();
                return Err(ProjectionError::TooDeep { path });
            }
            root.insert(&segments);
        }
        Ok(Self { root })
    }

    /// Projects a parsed document; see the module docs for the rules.
    pub fn apply(&self, value: &Value) -> Value {
        match value {
            Value::Object(_) | Value::Array(_) => select(&self.root, value).unwrap_or(Value::Null),
            scalar => scalar.clone(),
        }
    }
}

impl std::str::FromStr for FieldSet {
    type Err = ProjectionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl fmt::Display for FieldSet {
    /// The canonical list: sorted, with paths covered by a parent left out.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fn walk(
            node: &Node,
            prefix: &str,
            first: &mut bool,
            f: &mut fmt::Formatter<'_>,
        ) -> fmt::Result {
            for (name, child) in &node.children {
                let path = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}.{name}")
                };
                if child.whole {
                    if !std::mem::take(first) {
                        f.write_str(",")?;
                    }
                    f.write_str(&path)?;
                } else {
                    walk(child, &path, first, f)?;
                }
            }
            Ok(())
        }
        walk(&self.root, "", &mut true, f)
    }
}

// === impl Node ===

impl Node {
    fn insert(&mut self, segments: &[&str]) {
        let mut node = self;
        for segment in segments {
            if node.whole {
                return; // A parent already keeps everything below it.
            }
            node = node.children.entry((*segment).to_owned()).or_default();
        }
        node.whole = true;
        node.children.clear();
    }
}

/// Projects `value` through a non-whole `node`; `None` drops the value.
fn select(node: &Node, value: &Value) -> Option<Value> {
    match value {
        Value::Object(members) => {
            let mut out = Map::new();
            for (name, member) in members {
                let Some(child) = node.children.get(name) else {
                    continue;
                };
                let kept = if child.whole {
                    Some(member.clone())
                } else {
                    select(child, member)
                };
                if let Some(kept) = kept {
                    out.insert(name.clone(), kept);
                }
            }
            Some(Value::Object(out))
        }
        Value::Array(items) => Some(Value::Array(
            items.iter().filter_map(|item| select(node, item)).collect(),
        )),
        _ => None,
    }
}

/// Projects a JSON body without building its unselected parts.
pub fn project_json_bytes(body: &[u8], fields: &FieldSet) -> Result<Bytes, InvalidJson> {
    let mut de = serde_json::Deserializer::from_slice(body);
    let projected = Select {
        node: &fields.root,
        top: true,
    }
    .deserialize(&mut de)?
    .unwrap_or(Value::Null);
    de.end()?;
    Ok(Bytes::from(serde_json::to_vec(&projected)?))
}

// === streaming projection ===

/// Deserializes one value through a node; `top` keeps scalars (the document root).
struct Select<'a> {
    node: &'a Node,
    top: bool,
}

impl<'de> DeserializeSeed<'de> for Select<'_> {
    type Value = Option<Value>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Select<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(self.top.then_some(Value::Bool(v)))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(self.top.then(|| Value::from(v)))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(self.top.then(|| Value::from(v)))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(self.top.then(|| Value::from(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(self.top.then(|| Value::String(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(self.top.then_some(Value::String(v)))
    }

    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(self.top.then_some(Value::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut out = Vec::new();
        let element = || Select {
            node: self.node,
            top: false,
        };
        while let Some(item) = seq.next_element_seed(element())? {
            out.extend(item);
        }
        Ok(Some(Value::Array(out)))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            let Some(child) = self.node.children.get(key.as_str()) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let kept = if child.whole {
                Some(map.next_value::<Value>()?)
            } else {
                map.next_value_seed(Select {
                    node: child,
                    top: false,
                })?
            };
            match kept {
                Some(value) => {
                    out.insert(key.into_string(), value);
                }
                None => {
                    // A later duplicate that is dropped replaces an earlier kept one.
                    out.remove(key.as_str());
                }
            }
        }
        Ok(Some(Value::Object(out)))
    }
}

/// An object key, borrowed from the input when it has no escapes.
enum Key<'de> {
    Borrowed(&'de str),
    Owned(String),
}

impl Key<'_> {
    fn as_str(&self) -> &str {
        match self {
            Key::Borrowed(s) => s,
            Key::Owned(s) => s,
        }
    }

    fn into_string(self) -> String {
        match self {
            Key::Borrowed(s) => s.to_owned(),
            Key::Owned(s) => s,
        }
    }
}

struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Key<'de>;

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<Self::Value, D::Error> {
        deserializer.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Key<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object key")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Key::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Key::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Key::Owned(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Projects both ways and checks they agree.
    fn project(fields: &str, doc: &Value) -> Value {
        let set = FieldSet::parse(fields).expect("valid field list");
        let via_value = set.apply(doc);
        let bytes = serde_json::to_vec(doc).expect("serialize");
        let streamed = project_json_bytes(&bytes, &set).expect("valid json");
        let via_bytes: Value = serde_json::from_slice(&streamed).expect("projected json");
        assert_eq!(
            via_value, via_bytes,
            "apply and project_json_bytes disagree"
        );
        via_value
    }

    /// Found by the `fields` fuzz target: a long number was read with
    /// serde_json's fast, not correctly rounded float parser, so the projected
    /// response carried a different number (last bits) than the upstream sent.
    #[test]
    fn numbers_keep_their_correctly_rounded_value() {
        let digits = format!("4{}2", "4".repeat(88));
        let set = FieldSet::parse("a").unwrap();
        for body in [
            digits.clone(),
            format!("{{\"a\": {digits}}}"),
            format!("{{\"a\": [0.1, 1e-7, {digits}.5e-3]}}"),
        ] {
            let out = project_json_bytes(body.as_bytes(), &set).unwrap();
            let text = std::str::from_utf8(&out).unwrap();
            let wanted: f64 = digits.parse().unwrap(); // std parses correctly rounded
            let number = |t: &str| -> Vec<f64> {
                t.split(|c: char| !(c.is_ascii_digit() || matches!(c, '.' | 'e' | 'E' | '-' | '+')))
                    .filter(|s| !s.is_empty())
                    .map(|s| s.parse().unwrap())
                    .collect()
            };
            let got = number(text);
            if body.starts_with('4') || body.contains(": 4") {
                assert!(got.contains(&wanted), "{body} → {text}");
            }
            let sent = number(&body);
            assert_eq!(got.len(), sent.len(), "{body} → {text}");
            for (g, s) in got.iter().zip(&sent) {
                assert_eq!(g, s, "{body} → {text}");
            }
        }
    }

    #[test]
    fn nested_objects() {
        let doc =
            json!({"id": 1, "name": "x", "b": {"c": 2, "d": 3}, "e": {"f": {"g": 4, "h": 5}}});
        assert_eq!(project("id,b.c", &doc), json!({"id": 1, "b": {"c": 2}}));
        assert_eq!(project("e.f.h", &doc), json!({"e": {"f": {"h": 5}}}));
    }

    #[test]
    fn parent_path_keeps_whole_subtree_in_either_order() {
        let doc = json!({"b": {"c": 2, "d": 3}, "z": 0});
        assert_eq!(project("b,b.c", &doc), json!({"b": {"c": 2, "d": 3}}));
        assert_eq!(project("b.c,b", &doc), json!({"b": {"c": 2, "d": 3}}));
        assert_eq!(
            FieldSet::parse("b.c,b,a.x").expect("valid").to_string(),
            "a.x,b"
        );
    }

    #[test]
    fn arrays_of_objects_inside_objects() {
        let doc = json!({"items": [
            {"id": 1, "sku": "a", "tags": [{"k": "x", "v": 1}]},
            {"id": 2, "sku": "b", "tags": []},
            {"sku": "c"}
        ], "total": 3});
        assert_eq!(
            project("items.id,total", &doc),
            json!({"items": [{"id": 1}, {"id": 2}, {}], "total": 3})
        );
        assert_eq!(
            project("items.tags.k", &doc),
            json!({"items": [{"tags": [{"k": "x"}]}, {"tags": []}, {}]})
        );
    }

    #[test]
    fn arrays_at_top_level_and_nested_arrays() {
        let doc = json!([{"id": 1, "x": 0}, {"id": 2}, [{"id": 3, "y": 1}], 4, "s"]);
        assert_eq!(
            project("id", &doc),
            json!([{"id": 1}, {"id": 2}, [{"id": 3}]])
        );
    }

    #[test]
    fn missing_paths_and_scalars_where_objects_were_expected() {
        let doc = json!({"a": 1, "b": null, "c": {"d": 1}, "s": "text"});
        assert_eq!(project("nope", &doc), json!({}));
        assert_eq!(project("a.x,b.x,c.x,s.x", &doc), json!({"c": {}}));
        assert_eq!(project("b", &doc), json!({"b": null}));
    }

    #[test]
    fn top_level_scalar_is_unchanged() {
        assert_eq!(project("a", &json!(5)), json!(5));
        assert_eq!(project("a", &json!("s")), json!("s"));
        assert_eq!(project("a", &json!(null)), json!(null));
    }

    #[test]
    fn escaped_keys_and_duplicate_members_match_the_parsed_document() {
        let set = FieldSet::parse("a").expect("valid");
        let escaped = br#"{"\u0061": {"x": 1}, "b": 2}"#;
        let out = project_json_bytes(escaped, &set).expect("valid json");
        let out: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(out, json!({"a": {"x": 1}}));

        let dup = br#"{"a": {"b": 1}, "a": 5}"#;
        let set = FieldSet::parse("a.b").expect("valid");
        let parsed: Value = serde_json::from_slice(dup).expect("json");
        let out = project_json_bytes(dup, &set).expect("valid json");
        let streamed: Value = serde_json::from_slice(&out).expect("json");
        assert_eq!(streamed, set.apply(&parsed));
        assert_eq!(streamed, json!({}));
    }

    #[test]
    fn invalid_json_is_an_error() {
        let set = FieldSet::parse("a").expect("valid");
        for body in [&br#"{"a": "#[..], b"not json", b"{} trailing", b""] {
            let shown = String::from_utf8_lossy(body);
            assert!(project_json_bytes(body, &set).is_err(), "{shown}");
        }
    }

    #[test]
    fn bad_syntax_names_the_bad_part() {
        use ProjectionError::*;
        let err = |s: &str| FieldSet::parse(s).expect_err(s);
        assert_eq!(err(""), Empty);
        assert_eq!(err("  "), Empty);
        assert_eq!(err("a,,b"), EmptyPath { position: 2 });
        assert_eq!(err("a,"), EmptyPath { position: 2 });
        assert_eq!(
            err("a..b"),
            EmptySegment {
                path: "a..b".into()
            }
        );
        assert_eq!(err(".a"), EmptySegment { path: ".a".into() });
        assert_eq!(
            err("ok,a$b"),
            InvalidChar {
                path: "a$b".into(),
                ch: '$'
            }
        );
        assert_eq!(
            err("a b"),
            InvalidChar {
                path: "a b".into(),
                ch: ' '
            }
        );
        let deep = vec!["x"; MAX_DEPTH + 1].join(".");
        assert_eq!(err(&deep), TooDeep { path: deep.clone() });
        assert_eq!(err(&vec!["x"; MAX_PATHS + 1].join(",")), TooMany);
        assert!(err("a..b").to_string().contains("\"a..b\""));
        let spaced = FieldSet::parse(" id , items.sku-2 ").expect("valid");
        assert_eq!(spaced.to_string(), "id,items.sku-2");
    }
}
