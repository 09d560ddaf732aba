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
        mut value: serde_json::Value,
    ) -> Option<T> {
        // serde stops at a block's first error. To report every error of the
        // block, the offending key is taken out and the block read again,
        // until it reads cleanly (bounded).
        let mut removed: Vec<String> = Vec::new();
        for _ in 0..MAX_ERRORS_PER_BLOCK {
            let e = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
                Ok(v) if removed.is_empty() => return Some(v),
                Ok(_) => return None,
                Err(e) => e,
            };
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
            // A field we took out ourselves is now "missing": not the user's error.
            if message
                .strip_prefix("missing field `")
                .and_then(|m| m.split('`').next())
                .is_some_and(|f| removed.iter().any(|r| r == f))
            {
                return None;
            }
            let mut target = segments.clone();
            let (mut pos, mut key) = locate(node, base, &segments);
            // serde reports an unknown field at its parent; point at the field itself.
            if let Some(field) = message
                .strip_prefix("unknown field `")
                .and_then(|m| m.split('`').next())
                .filter(|f| segments.last().map(String::as_str) != Some(*f))
            {
                target.push(field.to_string());
                let (p, k) = locate(node, base, &target);
                pos = p;
                key = k;
            }
            self.push(pos, &key, message);
            match target.last() {
                Some(last) if remove_key(&mut value, &target) => removed.push(last.clone()),
                _ => return None,
            }
        }
        None
    }
}

/// Errors reported for one block (an upstream, a route, the top level) at most.
const MAX_ERRORS_PER_BLOCK: usize = 20;

/// Takes the map key at `path` out of `value` (list elements are left alone:
/// removing one would shift the positions of the next errors).
fn remove_key(value: &mut serde_json::Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    if last.starts_with('[') {
        return false;
    }
    let mut cur = value;
    for seg in parents {
        let next = match seg.strip_prefix('[').and_then(|s| s.strip_suffix(']')) {
            Some(i) => i.parse::<usize>().ok().and_then(|i| cur.get_mut(i)),
            None => cur.get_mut(seg.as_str()),
        };
        match next {
            Some(n) => cur = n,
            None => return false,
        }
    }
    cur.as_object_mut()
        .is_some_and(|o| o.remove(last).is_some())
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
