//! `junction top`'s keys: `q` quits, `?` shows the keys, `s` sorts by the
//! next column, `r` reverses the order.
//!
//! Keys are read (with crossterm, in raw mode) only when both stdin and stdout
//! are a terminal; piped or logged output keeps the plain frames.

use serde_json::Value;
use std::cmp::Ordering;
use std::time::Duration;

/// The column rows are sorted by.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SortKey {
    /// By name (the config's order is not kept: names are easier to find).
    #[default]
    Name,
    /// Requests (or deliveries) per second.
    Rate,
    /// p99 latency.
    P99,
    /// Error ratio (subscribers: dead letters).
    Errors,
}

impl SortKey {
    fn next(self) -> Self {
        match self {
            Self::Name => Self::Rate,
            Self::Rate => Self::P99,
            Self::P99 => Self::Errors,
            Self::Errors => Self::Name,
        }
    }

    fn label(self) -> &'static str {
        match self {
            Self::Name => "name",
            Self::Rate => "rate",
            Self::P99 => "p99",
            Self::Errors => "errors",
        }
    }
}

/// What the keys chose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct View {
    /// The column.
    pub sort: SortKey,
    /// Largest first (the default for numbers; names go A to Z unless reversed).
    pub reversed: bool,
    /// The key help is shown.
    pub help: bool,
}

/// What a key asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    /// Leave `top`.
    Quit,
    /// Draw again with the new [`View`] (no new poll).
    Redraw,
    /// Nothing.
    None,
}

impl View {
    /// Applies one key press.
    pub fn key(&mut self, c: char, ctrl: bool) -> Action {
        match (c, ctrl) {
            ('c', true) | ('q', false) | ('Q', false) => Action::Quit,
            ('?', _) | ('h', false) => {
                self.help = !self.help;
                Action::Redraw
            }
            ('s', false) => {
                self.sort = self.sort.next();
                self.reversed = false;
                Action::Redraw
            }
            ('r', false) => {
                self.reversed = !self.reversed;
                Action::Redraw
            }
            _ => Action::None,
        }
    }

    /// The header's note of the order and the keys.
    pub fn status(&self) -> String {
        let arrow = if self.descending() { "↓" } else { "↑" };
        format!("sort: {} {arrow} · ? keys", self.sort.label())
    }

    /// The help lines, when shown.
    pub fn help_lines(&self) -> Option<&'static str> {
        self.help.then_some(
            "KEYS  q quit · ? hide this · s sort by next column (name, rate, p99, errors) · r reverse order\n",
        )
    }

    fn descending(&self) -> bool {
        (self.sort != SortKey::Name) != self.reversed
    }

    /// Sorts `rows` by the view's column; `field` names the JSON field of
    /// each sort key for this table (`None`: the table has no such column,
    /// rows sort by name).
    pub fn sort<'a>(
        &self,
        rows: &'a [Value],
        field: impl Fn(SortKey) -> Option<&'static str>,
    ) -> Vec<&'a Value> {
        let mut out: Vec<&Value> = rows.iter().collect();
        let name = |v: &Value| {
            v.get("name")
                .or_else(|| v.get("topic"))
                .and_then(Value::as_str)
                .unwrap_or("")
                .to_owned()
        };
        match field(self.sort).filter(|_| self.sort != SortKey::Name) {
            Some(f) => {
                let num = |v: &Value| {
                    v.get(f)
                        .and_then(Value::as_f64)
                        .unwrap_or(f64::NEG_INFINITY)
                };
                // Largest first unless reversed; ties by name.
                out.sort_by(|a, b| {
                    let by_value = num(b).partial_cmp(&num(a)).unwrap_or(Ordering::Equal);
                    let by_value = if self.reversed {
                        by_value.reverse()
                    } else {
                        by_value
                    };
                    by_value.then_with(|| name(a).cmp(&name(b)))
                });
            }
            None => {
                out.sort_by_key(|v| name(v));
                if self.reversed && self.sort == SortKey::Name {
                    out.reverse();
                }
            }
        }
        out
    }
}

/// Key presses from the terminal (raw mode while alive), or nothing when
/// stdin or stdout is not a terminal.
pub struct Keys {
    rx: Option<tokio::sync::mpsc::Receiver<(char, bool)>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl Keys {
    /// Starts reading keys when both ends are a terminal.
    pub fn start(interactive: bool) -> Self {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        if !interactive || crossterm::terminal::enable_raw_mode().is_err() {
            return Self { rx: None, stop };
        }
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        let flag = stop.clone();
        std::thread::spawn(move || {
            use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                // Polled, so the thread ends soon after `top` does.
                if !event::poll(Duration::from_millis(100)).unwrap_or(false) {
                    continue;
                }
                let Ok(Event::Key(k)) = event::read() else {
                    continue;
                };
                if k.kind != KeyEventKind::Press {
                    continue;
                }
                let c = match k.code {
                    KeyCode::Char(c) => c,
                    KeyCode::Esc => 'q',
                    _ => continue,
                };
                if tx
                    .blocking_send((c, k.modifiers.contains(KeyModifiers::CONTROL)))
                    .is_err()
                {
                    return;
                }
            }
        });
        Self { rx: Some(rx), stop }
    }

    /// Whether the terminal is in raw mode (frames then need `\r\n`).
    pub fn raw(&self) -> bool {
        self.rx.is_some()
    }

    /// The next key press; never resolves without a terminal.
    pub async fn next(&mut self) -> (char, bool) {
        match &mut self.rx {
            Some(rx) => match rx.recv().await {
                Some(k) => k,
                None => std::future::pending().await,
            },
            None => std::future::pending().await,
        }
    }
}

impl Drop for Keys {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        if self.rx.is_some() {
            let _ = crossterm::terminal::disable_raw_mode();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(rows: Vec<&Value>) -> Vec<&str> {
        rows.iter().map(|r| r["name"].as_str().unwrap()).collect()
    }

    #[test]
    fn keys_quit_toggle_help_and_cycle_the_sort() {
        let mut v = View::default();
        assert_eq!(v.key('q', false), Action::Quit);
        assert_eq!(v.key('c', true), Action::Quit);
        assert_eq!(v.key('?', false), Action::Redraw);
        assert!(v.help && v.help_lines().is_some());
        assert_eq!(v.key('s', false), Action::Redraw);
        assert_eq!(v.sort, SortKey::Rate);
        assert_eq!(v.status(), "sort: rate ↓ · ? keys");
        assert_eq!(v.key('r', false), Action::Redraw);
        assert_eq!(v.status(), "sort: rate ↑ · ? keys");
        assert_eq!(v.key('x', false), Action::None);
    }

    #[test]
    fn rows_sort_by_the_chosen_column() {
        let rows = vec![
            json!({"name": "b", "rps": 5.0, "p99_ms": 10.0}),
            json!({"name": "a", "rps": 1.0, "p99_ms": 90.0}),
            json!({"name": "c", "rps": 9.0, "p99_ms": 50.0}),
        ];
        let field = |k: SortKey| match k {
            SortKey::Rate => Some("rps"),
            SortKey::P99 => Some("p99_ms"),
            _ => None,
        };
        let mut v = View::default();
        assert_eq!(names(v.sort(&rows, field)), ["a", "b", "c"]);
        v.key('r', false);
        assert_eq!(names(v.sort(&rows, field)), ["c", "b", "a"]);
        v.key('s', false);
        assert_eq!(
            names(v.sort(&rows, field)),
            ["c", "b", "a"],
            "rate, largest first"
        );
        v.key('s', false);
        assert_eq!(
            names(v.sort(&rows, field)),
            ["a", "c", "b"],
            "p99, largest first"
        );
        v.key('r', false);
        assert_eq!(
            names(v.sort(&rows, field)),
            ["b", "c", "a"],
            "p99, smallest first"
        );
        v.key('s', false);
        assert_eq!(
            names(v.sort(&rows, field)),
            ["a", "b", "c"],
            "no errors column here: by name"
        );
    }
}
