//! A YAML tree that remembers where every node came from.
//!
//! serde's YAML deserializers stop at the first error and lose positions once a
//! value is converted. Junction's `check` must report *every* error as
//! `FILE:LINE:COL`, so the file is first parsed into this marked tree (using
//! yaml-rust2's event parser), converted to plain JSON values for typed
//! deserialization section by section, and error paths are mapped back to
//! positions here.

use serde_json::{Map, Number, Value};
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::{Marker, TScalarStyle};

/// A line and column in the source file, both 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Pos {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub col: usize,
}

impl From<Marker> for Pos {
    fn from(m: Marker) -> Self {
        Pos {
            line: m.line().max(1),
            col: m.col() + 1,
        }
    }
}

/// One YAML node with its position.
#[derive(Debug, Clone)]
pub struct Node {
    /// Where the node starts.
    pub pos: Pos,
    /// What it holds.
    pub kind: NodeKind,
}

/// The shapes a YAML node can take.
#[derive(Debug, Clone)]
pub enum NodeKind {
    /// A scalar, with whether it was written plain (unquoted) so `"5"` stays a string.
    Scalar { value: String, plain: bool },
    /// A sequence.
    Seq(Vec<Node>),
    /// A mapping, keys in file order.
    Map(Vec<(Node, Node)>),
}

/// A syntax error with its position.
#[derive(Debug, Clone)]
pub struct SyntaxError {
    /// Where it happened.
    pub pos: Pos,
    /// What went wrong.
    pub message: String,
}

/// Stand-ins for `{` and `}` of path templates while parsing (private-use characters).
const OPEN: char = '\u{E000}';
const CLOSE: char = '\u{E001}';

/// Hides the braces of path parameters (`/products/{id}`, `/{*rest}`) from the YAML
/// scanner. YAML forbids `{` and `}` in plain scalars inside flow mappings, yet
/// `match: { path: /products/{id} }` is how everyone writes a route (and how the
/// contract shows it). One character replaces one, so positions are unchanged.
fn shield_templates(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = chars.clone();
    let mut i = 0;
    while i + 2 < chars.len() {
        if chars[i] == '/' && chars[i + 1] == '{' {
            let start = i + 2;
            let mut j = start;
            if j < chars.len() && chars[j] == '*' {
                j += 1;
            }
            while j < chars.len() && (chars[j].is_ascii_alphanumeric() || chars[j] == '_') {
                j += 1;
            }
            if j < chars.len() && chars[j] == '}' && j > start {
                out[i + 1] = OPEN;
                out[j] = CLOSE;
                i = j;
            }
        }
        i += 1;
    }
    out.into_iter().collect()
}

fn unshield(s: String) -> String {
    if s.contains(OPEN) {
        s.replace(OPEN, "{").replace(CLOSE, "}")
    } else {
        s
    }
}

/// Parses the first document of `text`. An empty document is an empty mapping.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut builder = Builder::default();
    let shielded = shield_templates(text);
    let mut parser = Parser::new_from_str(&shielded);
    parser.load(&mut builder, false).map_err(|e| SyntaxError {
        pos: (*e.marker()).into(),
        message: e.info().to_string(),
    })?;
    if let Some(err) = builder.error {
        return Err(err);
    }
    Ok(builder.root.unwrap_or(Node {
        pos: Pos { line: 1, col: 1 },
        kind: NodeKind::Map(Vec::new()),
    }))
}

/// An open collection while events stream in.
enum Frame {
    Seq(Pos, usize, Vec<Node>),
    Map(Pos, usize, Vec<(Node, Node)>, Option<Node>),
}

/// Nodes a config may hold once aliases are expanded: a real config has a few
/// thousand; a "billion laughs" file asks for billions and must fail fast.
pub const MAX_NODES: usize = 100_000;
/// Scalar bytes a config may hold once aliases are expanded.
pub const MAX_EXPANDED_BYTES: usize = 16 << 20;
/// Collections nested deeper than this are refused (later passes recurse).
pub const MAX_DEPTH: usize = 64;

/// How much of the tree a node stands for: nodes and scalar bytes.
#[derive(Debug, Clone, Copy, Default)]
struct Weight {
    nodes: usize,
    bytes: usize,
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    anchors: Vec<(usize, Node, Weight)>,
    root: Option<Node>,
    error: Option<SyntaxError>,
    /// The tree built so far, aliases expanded.
    built: Weight,
}

impl Builder {
    fn push_value(&mut self, node: Node) {
        match self.stack.last_mut() {
            None => {
                self.root.get_or_insert(node);
            }
            Some(Frame::Seq(_, _, items)) => items.push(node),
            Some(Frame::Map(_, _, entries, pending)) => match pending.take() {
                Some(key) => entries.push((key, node)),
                None => *pending = Some(node),
            },
        }
    }

    fn remember(&mut self, anchor: usize, node: &Node) {
        if anchor > 0 {
            self.anchors.push((anchor, node.clone(), node.weight()));
        }
    }

    /// Counts `w` into the tree; false (and an error) past the bounds.
    fn grow(&mut self, w: Weight, pos: Pos) -> bool {
        self.built.nodes = self.built.nodes.saturating_add(w.nodes);
        self.built.bytes = self.built.bytes.saturating_add(w.bytes);
        if self.built.nodes > MAX_NODES || self.built.bytes > MAX_EXPANDED_BYTES {
            self.error.get_or_insert(SyntaxError {
                pos,
                message: format!(
                    "the config expands (through aliases) past {MAX_NODES} nodes or {} MiB of text; refusing it",
                    MAX_EXPANDED_BYTES >> 20
                ),
            });
            return false;
        }
        true
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        let pos = Pos::from(mark);
        // After the first error nothing more is built (an alias bomb stops here).
        if self.error.is_some() {
            return;
        }
        match ev {
            Event::Scalar(value, style, anchor, _tag) => {
                let weight = Weight {
                    nodes: 1,
                    bytes: value.len(),
                };
                if !self.grow(weight, pos) {
                    return;
                }
                let node = Node {
                    pos,
                    kind: NodeKind::Scalar {
                        value: unshield(value),
                        plain: style == TScalarStyle::Plain,
                    },
                };
                self.remember(anchor, &node);
                self.push_value(node);
            }
            Event::SequenceStart(..) | Event::MappingStart(..) if self.stack.len() >= MAX_DEPTH => {
                self.error.get_or_insert(SyntaxError {
                    pos,
                    message: format!("collections are nested more than {MAX_DEPTH} deep"),
                });
            }
            Event::SequenceStart(anchor, _) => self.stack.push(Frame::Seq(pos, anchor, Vec::new())),
            Event::MappingStart(anchor, _) => {
                self.stack.push(Frame::Map(pos, anchor, Vec::new(), None))
            }
            Event::SequenceEnd | Event::MappingEnd => {
                let (anchor, node) = match self.stack.pop() {
                    Some(Frame::Seq(pos, anchor, items)) => (
                        anchor,
                        Node {
                            pos,
                            kind: NodeKind::Seq(items),
                        },
                    ),
                    Some(Frame::Map(pos, anchor, entries, _)) => (
                        anchor,
                        Node {
                            pos,
                            kind: NodeKind::Map(entries),
                        },
                    ),
                    None => return,
                };
                if !self.grow(Weight { nodes: 1, bytes: 0 }, pos) {
                    return;
                }
                self.remember(anchor, &node);
                self.push_value(node);
            }
            Event::Alias(id) => match self.anchors.iter().rev().find(|(a, _, _)| *a == id) {
                Some((_, node, weight)) => {
                    // Count before copying: the copy is what an alias bomb multiplies.
                    let (node, weight) = (node.clone(), *weight);
                    if !self.grow(weight, pos) {
                        return;
                    }
                    let mut node = node;
                    node.pos = pos;
                    self.push_value(node);
                }
                None => {
                    self.error.get_or_insert(SyntaxError {
                        pos,
                        message: "unknown alias".into(),
                    });
                }
            },
            Event::Nothing
            | Event::StreamStart
            | Event::StreamEnd
            | Event::DocumentStart
            | Event::DocumentEnd => {}
        }
    }
}

// === impl Node ===

impl Node {
    /// Nodes and scalar bytes under (and including) this node.
    fn weight(&self) -> Weight {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Weight {
                nodes: 1,
                bytes: value.len(),
            },
            NodeKind::Seq(items) => items.iter().fold(Weight { nodes: 1, bytes: 0 }, |w, n| {
                let i = n.weight();
                Weight {
                    nodes: w.nodes.saturating_add(i.nodes),
                    bytes: w.bytes.saturating_add(i.bytes),
                }
            }),
            NodeKind::Map(entries) => {
                entries
                    .iter()
                    .fold(Weight { nodes: 1, bytes: 0 }, |w, (k, v)| {
                        let (k, v) = (k.weight(), v.weight());
                        Weight {
                            nodes: w.nodes.saturating_add(k.nodes).saturating_add(v.nodes),
                            bytes: w.bytes.saturating_add(k.bytes).saturating_add(v.bytes),
                        }
                    })
            }
        }
    }
}

impl Node {
    /// The entries of a mapping node, or `None` for other kinds.
    pub fn as_map(&self) -> Option<&[(Node, Node)]> {
        match &self.kind {
            NodeKind::Map(entries) => Some(entries),
            _ => None,
        }
    }

    /// The text of a scalar node.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            NodeKind::Scalar { value, .. } => Some(value),
            _ => None,
        }
    }

    /// The value under `key` in a mapping node, with the key node.
    pub fn get(&self, key: &str) -> Option<(&Node, &Node)> {
        self.as_map()?
            .iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(k, v)| (k, v))
    }

    /// Converts to a JSON value, resolving plain scalars to null/bool/number as YAML 1.2 core does.
    pub fn to_json(&self) -> Value {
        match &self.kind {
            NodeKind::Scalar { value, plain } => {
                if *plain {
                    resolve_plain(value)
                } else {
                    Value::String(value.clone())
                }
            }
            NodeKind::Seq(items) => Value::Array(items.iter().map(Node::to_json).collect()),
            NodeKind::Map(entries) => {
                let mut map = Map::new();
                for (k, v) in entries {
                    let key = k.as_str().unwrap_or_default().to_string();
                    map.insert(key, v.to_json());
                }
                Value::Object(map)
            }
        }
    }

    /// Keys that appear twice in any mapping of this tree, with the second occurrence's position.
    pub fn duplicate_keys(&self, path: &str, out: &mut Vec<(String, Pos)>) {
        match &self.kind {
            NodeKind::Map(entries) => {
                for (i, (k, v)) in entries.iter().enumerate() {
                    let name = k.as_str().unwrap_or_default();
                    let child = join(path, name);
                    if entries[..i].iter().any(|(p, _)| p.as_str() == Some(name)) {
                        out.push((child.clone(), k.pos));
                    }
                    v.duplicate_keys(&child, out);
                }
            }
            NodeKind::Seq(items) => {
                for (i, item) in items.iter().enumerate() {
                    item.duplicate_keys(&format!("{path}[{i}]"), out);
                }
            }
            NodeKind::Scalar { .. } => {}
        }
    }
}

/// Joins a dotted key path.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn resolve_plain(s: &str) -> Value {
    match s {
        "" | "~" | "null" | "Null" | "NULL" => Value::Null,
        "true" | "True" | "TRUE" => Value::Bool(true),
        "false" | "False" | "FALSE" => Value::Bool(false),
        _ => {
            if let Ok(i) = s.parse::<i64>() {
                Value::Number(i.into())
            } else if let Some(n) = s
                .parse::<f64>()
                .ok()
                .filter(|f| f.is_finite() && s.chars().any(|c| c.is_ascii_digit()))
                .and_then(Number::from_f64)
            {
                Value::Number(n)
            } else {
                Value::String(s.to_string())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_are_one_based_and_scalars_resolve() {
        let doc = parse("a: 1\nb:\n  c: \"2\"\n  d: [x, true, ~]\n").unwrap();
        let (bk, b) = doc.get("b").unwrap();
        assert_eq!(bk.pos, Pos { line: 2, col: 1 });
        let (ck, _) = b.get("c").unwrap();
        assert_eq!(ck.pos, Pos { line: 3, col: 3 });
        assert_eq!(
            doc.to_json(),
            serde_json::json!({"a": 1, "b": {"c": "2", "d": ["x", true, null]}})
        );
    }

    #[test]
    fn path_templates_in_flow_mappings() {
        let doc =
            parse("m: { method: GET, path: /products/{id}/x/{*rest} }\nt: \"p:{id}\"\n").unwrap();
        assert_eq!(doc.to_json()["m"]["path"], "/products/{id}/x/{*rest}");
        assert_eq!(doc.to_json()["t"], "p:{id}");
    }

    #[test]
    fn syntax_errors_have_positions() {
        let err = parse("a: [1, 2\nb: 3\n").unwrap_err();
        assert!(err.pos.line >= 1, "{err:?}");
    }

    #[test]
    fn alias_bombs_and_deep_nesting_are_refused_fast() {
        // "Billion laughs": 9 levels of 9 aliases each.
        let mut bomb = String::from(
            "a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n",
        );
        for (prev, next) in ["a", "b", "c", "d", "e", "f", "g", "h"]
            .iter()
            .zip(["b", "c", "d", "e", "f", "g", "h", "i"])
        {
            let refs = vec![format!("*{prev}"); 9].join(",");
            bomb.push_str(&format!("{next}: &{next} [{refs}]\n"));
        }
        let started = std::time::Instant::now();
        let err = parse(&bomb).expect_err("refused");
        assert!(err.message.contains("expands"), "{}", err.message);
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        let deep = format!("x: {}1{}", "[".repeat(200), "]".repeat(200));
        let err = parse(&deep).expect_err("refused");
        assert!(err.message.contains("nested"), "{}", err.message);
        // Ordinary aliases still work.
        assert!(parse("x: &r {a: 1}\ny: *r\nz: *r\n").is_ok());
    }

    #[test]
    fn aliases_and_duplicates() {
        let doc = parse("x: &r {a: 1}\ny: *r\nx: 2\n").unwrap();
        assert_eq!(doc.to_json()["y"], serde_json::json!({"a": 1}));
        let mut dups = Vec::new();
        doc.duplicate_keys("", &mut dups);
        assert_eq!(dups, vec![("x".to_string(), Pos { line: 3, col: 1 })]);
    }
}
