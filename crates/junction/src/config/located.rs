//! Config errors located in the file: `FILE:LINE:COL: key: message`, and the
//! helpers that find a key's position. A leaf: loading and validation both
//! use it, and it uses neither.

use super::yaml::{join, Node, NodeKind, Pos};
use serde::de::DeserializeOwned;
use std::collections::HashSet;
use std::fmt;

/// One problem in a config file, located.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The file as the user named it.
    pub file: String,
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
    /// Dotted key path, e.g. `routes[2].match.method`; empty for syntax errors.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            // Not about a place in the file (it could not be read at all).
            return write!(f, "{}: {}", self.file, self.message);
        }
        if self.key.is_empty() {
            write!(
                f,
                "{}:{}:{}: {}",
                self.file, self.line, self.col, self.message
            )
        } else {
            write!(
                f,
                "{}:{}:{}: {}: {}",
                self.file, self.line, self.col, self.key, self.message
            )
        }
    }
}

impl std::error::Error for ConfigError {}

/// Errors collected while loading one file.
pub(super) struct Errors {
    pub(super) file: String,
    pub(super) list: Vec<ConfigError>,
}

impl Errors {
    pub(super) fn push(&mut self, pos: Pos, key: &str, message: String) {
        self.list.push(ConfigError {
            file: self.file.clone(),
            line: pos.line,
            col: pos.col,
            key: key.to_string(),
            message,
        });
    }

    /// Deserializes `value` (the JSON form of `node`, at `base`), recording a located error on failure.
    pub(super) fn de<T: DeserializeOwned>(
        &mut self,
        node: &Node,
        base: &str,
        value: serde_json::Value,
    ) -> Option<T> {
        match serde_path_to_error::deserialize::<_, T>(value) {
            Ok(v) => Some(v),
            Err(e) => {
                let segments: Vec<String> = e
                    .path()
                    .iter()
                    .filter_map(|s| match s {
                        serde_path_to_error::Segment::Map { key } => Some(key.clone()),
                        serde_path_to_error::Segment::Seq { index } => Some(format!("[{index}]")),
                        _ => None,
                    })
                    .collect();
                let message = e.inner().to_string();
                let (mut pos, mut key) = locate(node, base, &segments);
                // serde reports an unknown field at its parent; point at the field itself.
                if let Some(field) = message
                    .strip_prefix("unknown field `")
                    .and_then(|m| m.split('`').next())
                    .filter(|f| segments.last().map(String::as_str) != Some(*f))
                {
                    let (p, k) = locate(
                        node,
                        base,
                        &[segments.clone(), vec![field.to_string()]].concat(),
                    );
                    pos = p;
                    key = k;
                }
                self.push(pos, &key, message);
                None
            }
        }
    }
}

/// Finds the deepest node along `segments` from `node`; returns its position and the dotted path.
fn locate(node: &Node, base: &str, segments: &[String]) -> (Pos, String) {
    let mut cur = node;
    let mut pos = node.pos;
    let mut path = base.to_string();
    for seg in segments {
        if let Some(index) = seg.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            path.push_str(seg);
            match (&cur.kind, index.parse::<usize>()) {
                (NodeKind::Seq(items), Ok(i)) if i < items.len() => {
                    cur = &items[i];
                    pos = cur.pos;
                }
                _ => break,
            }
        } else {
            path = join(&path, seg);
            match cur.get(seg) {
                Some((k, v)) => {
                    pos = k.pos;
                    cur = v;
                }
                None => break,
            }
        }
    }
    (pos, path)
}

/// Position of the value at a dotted `key` under `node` (used by validation).
pub(super) fn pos_of(node: &Node, segments: &[&str]) -> Pos {
    let owned: Vec<String> = segments.iter().map(|s| s.to_string()).collect();
    locate(node, "", &owned).0
}

/// Names seen twice in an iterator, in order of the second sighting.
pub(super) fn repeated<'a>(names: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut seen = HashSet::new();
    names.filter(|n| !seen.insert(*n)).collect()
}
