//! Fixed-width text tables and number formats for `junction top`.
//!
//! Lines never exceed the given width (names are shortened with `…` first);
//! colour codes wrap cells after padding so they never count toward the width.

use serde_json::Value;

/// Horizontal alignment of a column.
#[derive(Clone, Copy)]
pub(super) enum Align {
    Left,
    Right,
}

/// How a cell is coloured on a terminal.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Style {
    Plain,
    Header,
    Good,
    Warn,
    Bad,
}

impl Style {
    fn code(self) -> Option<&'static str> {
        match self {
            Style::Plain => None,
            Style::Header => Some("\x1b[1m"),
            Style::Good => Some("\x1b[32m"),
            Style::Warn => Some("\x1b[33m"),
            Style::Bad => Some("\x1b[1;31m"),
        }
    }
}

/// A titled table whose first column holds names.
pub(super) struct Table {
    title: String,
    columns: Vec<(String, Align)>,
    rows: Vec<(String, Vec<(String, Style)>)>,
}

impl Table {
    pub(super) fn new(title: &str, columns: &[(&str, Align)]) -> Self {
        Table {
            title: title.to_owned(),
            columns: columns.iter().map(|(h, a)| ((*h).to_owned(), *a)).collect(),
            rows: Vec::new(),
        }
    }

    pub(super) fn row(&mut self, name: &str, cells: Vec<(String, Style)>) {
        self.rows.push((name.to_owned(), cells));
    }

    /// Appends a blank line, the header and the rows (or a "none" line).
    pub(super) fn render_into(&self, out: &mut String, width: usize, ansi: bool) {
        let widths: Vec<usize> = self
            .columns
            .iter()
            .enumerate()
            .map(|(i, (h, _))| {
                self.rows
                    .iter()
                    .filter_map(|(_, cells)| cells.get(i))
                    .map(|(c, _)| c.chars().count())
                    .fold(h.chars().count(), usize::max)
            })
            .collect();
        let rest: usize = widths.iter().map(|w| w + 2).sum();
        let longest = self
            .rows
            .iter()
            .map(|(n, _)| n.chars().count())
            .fold(self.title.chars().count(), usize::max);
        let name_w = longest.min(width.saturating_sub(rest)).max(8);

        out.push('\n');
        let mut header = vec![(pad(&self.title, name_w, Align::Left), Style::Header)];
        for ((h, align), w) in self.columns.iter().zip(&widths) {
            header.push((format!("  {}", pad(h, *w, *align)), Style::Header));
        }
        emit(out, &header, width, ansi);
        if self.rows.is_empty() {
            emit(out, &[("  (none)".to_owned(), Style::Plain)], width, ansi);
        }
        for (name, cells) in &self.rows {
            let mut line = vec![(pad(name, name_w, Align::Left), Style::Plain)];
            for (i, ((_, align), w)) in self.columns.iter().zip(&widths).enumerate() {
                let (text, style) = cells
                    .get(i)
                    .map_or(("-", Style::Plain), |(t, s)| (t.as_str(), *s));
                line.push(("  ".to_owned(), Style::Plain));
                line.push((pad(text, *w, *align), style));
            }
            emit(out, &line, width, ansi);
        }
    }
}

/// Pads (or shortens with `…`) `s` to exactly `w` characters.
fn pad(s: &str, w: usize, align: Align) -> String {
    let n = s.chars().count();
    if n > w {
        let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
        t.push('…');
        return t;
    }
    let fill = " ".repeat(w - n);
    match align {
        Align::Left => format!("{s}{fill}"),
        Align::Right => format!("{fill}{s}"),
    }
}

/// Writes one line of segments, cut at `width` visible characters, trailing spaces trimmed.
fn emit(out: &mut String, segments: &[(String, Style)], width: usize, ansi: bool) {
    let mut line = String::new();
    let mut budget = width;
    for (text, style) in segments {
        if budget == 0 {
            break;
        }
        let part: String = text.chars().take(budget).collect();
        budget -= part.chars().count();
        match style.code().filter(|_| ansi) {
            Some(code) => {
                line.push_str(code);
                line.push_str(&part);
                line.push_str("\x1b[0m");
            }
            None => line.push_str(&part),
        }
    }
    out.push_str(line.trim_end());
    out.push('\n');
}

/// `s` cut to `width` characters.
pub(super) fn fit(s: &str, width: usize) -> String {
    pad(s, width.min(s.chars().count()), Align::Left)
}

/// Colour of a breaker state.
pub(super) fn state_style(state: &str) -> Style {
    match state {
        "closed" => Style::Good,
        "half-open" => Style::Warn,
        "open" => Style::Bad,
        _ => Style::Plain,
    }
}

/// Calls per second, one decimal.
pub(super) fn rate(v: Option<&Value>) -> String {
    v.and_then(Value::as_f64)
        .map_or("-".into(), |n| format!("{n:.1}"))
}

/// Milliseconds with precision that fits the magnitude.
pub(super) fn ms(v: Option<&Value>) -> String {
    match v.and_then(Value::as_f64) {
        None => "-".into(),
        Some(n) if n < 10.0 => format!("{n:.2}"),
        Some(n) if n < 100.0 => format!("{n:.1}"),
        Some(n) => format!("{n:.0}"),
    }
}

/// A ratio as a percentage, yellow when above 0, red from 5 %.
pub(super) fn pct(v: Option<&Value>) -> (String, Style) {
    match v.and_then(Value::as_f64) {
        None => ("-".into(), Style::Plain),
        Some(r) => {
            let style = if r >= 0.05 {
                Style::Bad
            } else if r > 0.0 {
                Style::Warn
            } else {
                Style::Plain
            };
            (format!("{:.1}%", r * 100.0), style)
        }
    }
}

/// A whole number.
pub(super) fn count(v: Option<&Value>) -> String {
    match v {
        Some(Value::Number(n)) => n
            .as_u64()
            .map(|u| u.to_string())
            .or_else(|| n.as_f64().map(|f| format!("{f:.0}")))
            .unwrap_or_else(|| n.to_string()),
        _ => "-".into(),
    }
}

/// Bytes in binary units.
pub(super) fn bytes(v: Option<&Value>) -> String {
    let Some(n) = v.and_then(Value::as_f64) else {
        return "-".into();
    };
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{value:.0} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}
