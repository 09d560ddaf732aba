//! The demo's picture: a hand-written SVG with two panels.
//!
//! Top: the cumulative distribution of response times before and after, on a
//! log-scale time axis, so a 4 s tail and a 5 ms median fit in one view.
//! Bottom: failed transactions per second over the run, before and after,
//! with each outage window shaded. Everything drawn comes from the report's
//! measurements. The output is plain SVG 1.1 that browsers render as is.

use std::fmt::Write as _;

use crate::report::{dur, DemoReport};

const W: f64 = 960.0;
const H: f64 = 800.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 40.0;
const BEFORE: &str = "#d62728";
const AFTER: &str = "#2ca02c";
const MAX_POINTS: usize = 800;

/// A plotting rectangle.
struct Panel {
    x: f64,
    y: f64,
    w: f64,
    h: f64,
}

impl Panel {
    fn frame(&self, svg: &mut String, title: &str, x_label: &str, y_label: &str) {
        let _ = writeln!(
            svg,
            r##"<rect x="{:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="none" stroke="#444"/>"##,
            self.x, self.y, self.w, self.h
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="16" font-weight="bold">{}</text>"#,
            self.x,
            self.y - 12.0,
            esc(title)
        );
        let _ = writeln!(
            svg,
            r#"<text x="{:.1}" y="{:.1}" font-size="13" text-anchor="middle">{}</text>"#,
            self.x + self.w / 2.0,
            self.y + self.h + 40.0,
            esc(x_label)
        );
        let (cx, cy) = (self.x - 55.0, self.y + self.h / 2.0);
        let _ = writeln!(
            svg,
            r#"<text x="{cx:.1}" y="{cy:.1}" font-size="13" text-anchor="middle" transform="rotate(-90 {cx:.1} {cy:.1})">{}</text>"#,
            esc(y_label)
        );
    }

    fn x_tick(&self, svg: &mut String, x: f64, label: &str) {
        let _ = writeln!(
            svg,
            r##"<line x1="{x:.1}" y1="{:.1}" x2="{x:.1}" y2="{:.1}" stroke="#ddd"/><text x="{x:.1}" y="{:.1}" font-size="11" text-anchor="middle">{}</text>"##,
            self.y,
            self.y + self.h,
            self.y + self.h + 16.0,
            esc(label)
        );
    }

    fn y_tick(&self, svg: &mut String, y: f64, label: &str) {
        let _ = writeln!(
            svg,
            r##"<line x1="{:.1}" y1="{y:.1}" x2="{:.1}" y2="{y:.1}" stroke="#ddd"/><text x="{:.1}" y="{:.1}" font-size="11" text-anchor="end">{}</text>"##,
            self.x,
            self.x + self.w,
            self.x - 6.0,
            y + 4.0,
            esc(label)
        );
    }
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn polyline(svg: &mut String, id: &str, color: &str, points: &[(f64, f64)]) {
    let mut pts = String::with_capacity(points.len() * 14);
    for (x, y) in points {
        let _ = write!(pts, "{x:.1},{y:.1} ");
    }
    let _ = writeln!(
        svg,
        r#"<polyline id="{id}" fill="none" stroke="{color}" stroke-width="2" points="{}"/>"#,
        pts.trim_end()
    );
}

fn legend(svg: &mut String, x: f64, y: f64, entries: &[(&str, String)]) {
    for (i, (color, text)) in entries.iter().enumerate() {
        let yy = y + i as f64 * 18.0;
        let _ = writeln!(
            svg,
            r#"<rect x="{x:.1}" y="{:.1}" width="14" height="4" fill="{color}"/><text x="{:.1}" y="{:.1}" font-size="13">{}</text>"#,
            yy - 4.0,
            x + 20.0,
            yy + 1.0,
            esc(text)
        );
    }
}

/// Writes the two-panel plot of `report` to `path`.
pub fn write_svg(report: &DemoReport, path: impl AsRef<std::path::Path>) -> anyhow::Result<()> {
    use anyhow::Context;
    let path = path.as_ref();
    std::fs::write(path, render_svg(report)).with_context(|| format!("writing {}", path.display()))
}

/// Renders the report's two-panel plot as an SVG document.
pub fn render_svg(report: &DemoReport) -> String {
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif">"#
    );
    let _ = writeln!(svg, r#"<rect width="{W}" height="{H}" fill="white"/>"#);
    let _ = writeln!(
        svg,
        r#"<text x="{LEFT}" y="28" font-size="18" font-weight="bold">Junction demo: {} — {:.0} orders/s for {}</text>"#,
        esc(&report.scenario),
        report.rate,
        dur(report.duration_secs * 1000.0)
    );
    let (b, a) = (&report.before, &report.after);
    legend(
        &mut svg,
        LEFT,
        56.0,
        &[
            (
                BEFORE,
                format!(
                    "before, direct synchronous calls: avg {}, p99 {}, {} failed ({:.1}%)",
                    dur(b.avg_ms),
                    dur(b.p99_ms),
                    b.failed,
                    b.failed_pct
                ),
            ),
            (
                AFTER,
                format!(
                    "after, through Junction: avg {}, p99 {}, {} failed ({:.1}%)",
                    dur(a.avg_ms),
                    dur(a.p99_ms),
                    a.failed,
                    a.failed_pct
                ),
            ),
        ],
    );
    let top = Panel {
        x: LEFT,
        y: 115.0,
        w: W - LEFT - RIGHT,
        h: 260.0,
    };
    latency_panel(&mut svg, &top, report);
    let bottom = Panel {
        x: LEFT,
        y: 480.0,
        w: W - LEFT - RIGHT,
        h: 260.0,
    };
    failure_panel(&mut svg, &bottom, report);
    svg.push_str("</svg>\n");
    svg
}

fn latency_panel(svg: &mut String, p: &Panel, r: &DemoReport) {
    p.frame(
        svg,
        "Response time distribution (CDF)",
        "response time (log scale)",
        "transactions ≤ t (%)",
    );
    let all = r.before.latencies_ms.iter().chain(&r.after.latencies_ms);
    let (lo, hi) = all.fold((f64::INFINITY, 0.0f64), |(lo, hi), &v| {
        (lo.min(v), hi.max(v))
    });
    let lo_dec = if lo.is_finite() && lo > 0.0 {
        lo.log10().floor()
    } else {
        0.0
    };
    let hi_dec = if hi > 0.0 {
        hi.log10().ceil().max(lo_dec + 1.0)
    } else {
        lo_dec + 1.0
    };
    let x_of = |ms: f64| {
        let l = ms.max(10f64.powf(lo_dec)).log10();
        p.x + (l - lo_dec) / (hi_dec - lo_dec) * p.w
    };
    let y_of = |frac: f64| p.y + p.h - frac * p.h;
    let mut d = lo_dec;
    while d <= hi_dec + 1e-9 {
        p.x_tick(svg, x_of(10f64.powf(d)), &dur(10f64.powf(d)));
        d += 1.0;
    }
    for pc in [0.0, 0.25, 0.5, 0.75, 0.9, 1.0] {
        p.y_tick(svg, y_of(pc), &format!("{:.0}", pc * 100.0));
    }
    for (id, color, lat) in [
        ("cdf-before", BEFORE, &r.before.latencies_ms),
        ("cdf-after", AFTER, &r.after.latencies_ms),
    ] {
        let n = lat.len();
        let step = n.div_ceil(MAX_POINTS).max(1);
        let mut pts: Vec<(f64, f64)> = (0..n)
            .step_by(step)
            .map(|i| (x_of(lat[i]), y_of((i + 1) as f64 / n as f64)))
            .collect();
        if let Some(&last) = lat.last() {
            pts.push((x_of(last), y_of(1.0)));
        }
        polyline(svg, id, color, &pts);
    }
}

fn failure_panel(svg: &mut String, p: &Panel, r: &DemoReport) {
    p.frame(
        svg,
        "Failed transactions per second",
        "time since run start",
        "failures / s",
    );
    let t = &r.timeline;
    let span = r.duration_secs.max(t.bucket_secs);
    let peak = t
        .before_failures_per_sec
        .iter()
        .chain(&t.after_failures_per_sec)
        .fold(0.0f64, |m, &v| m.max(v));
    let ymax = nice_ceiling(peak.max(1.0) * 1.1);
    let x_of = |s: f64| p.x + (s / span).clamp(0.0, 1.0) * p.w;
    let y_of = |v: f64| p.y + p.h - (v / ymax).clamp(0.0, 1.0) * p.h;
    for w in &r.outages {
        let (x0, x1) = (x_of(w.start.as_secs_f64()), x_of(w.end.as_secs_f64()));
        let _ = writeln!(
            svg,
            r##"<rect class="outage" x="{x0:.1}" y="{:.1}" width="{:.1}" height="{:.1}" fill="#ffbf00" fill-opacity="0.22"/><text x="{:.1}" y="{:.1}" font-size="12" text-anchor="middle" fill="#8a6500">{} outage</text>"##,
            p.y,
            (x1 - x0).max(1.0),
            p.h,
            (x0 + x1) / 2.0,
            p.y + 16.0,
            w.service
        );
    }
    for i in 0..=5 {
        let s = span * i as f64 / 5.0;
        p.x_tick(svg, x_of(s), &secs_label(s));
        let v = ymax * i as f64 / 5.0;
        let label = if ymax >= 5.0 {
            format!("{v:.0}")
        } else {
            format!("{v:.1}")
        };
        p.y_tick(svg, y_of(v), &label);
    }
    for (id, color, series) in [
        ("fail-before", BEFORE, &t.before_failures_per_sec),
        ("fail-after", AFTER, &t.after_failures_per_sec),
    ] {
        // A step line: flat across each bucket.
        let mut pts = Vec::with_capacity(series.len() * 2);
        for (i, &v) in series.iter().enumerate() {
            let (a, b) = (i as f64 * t.bucket_secs, (i + 1) as f64 * t.bucket_secs);
            pts.push((x_of(a), y_of(v)));
            pts.push((x_of(b), y_of(v)));
        }
        polyline(svg, id, color, &pts);
    }
}

/// `0 s`, `0.4 s`, `12 s`, `2.5 min`.
fn secs_label(s: f64) -> String {
    if s == 0.0 {
        "0 s".into()
    } else if s >= 120.0 {
        format!("{:.1} min", s / 60.0)
    } else if s >= 10.0 || (s - s.round()).abs() < 1e-9 {
        format!("{s:.0} s")
    } else {
        format!("{s:.1} s")
    }
}

/// 1, 2, 5 × 10^k at or above `v`.
fn nice_ceiling(v: f64) -> f64 {
    let mag = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * mag)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * mag)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::tests::sample_report;

    #[test]
    fn time_labels() {
        assert_eq!(secs_label(0.0), "0 s");
        assert_eq!(secs_label(0.4), "0.4 s");
        assert_eq!(secs_label(12.0), "12 s");
        assert_eq!(secs_label(2.0), "2 s");
        assert_eq!(secs_label(300.0), "5.0 min");
    }

    #[test]
    fn nice_ceilings() {
        assert_eq!(nice_ceiling(0.9), 1.0);
        assert_eq!(nice_ceiling(1.1), 2.0);
        assert_eq!(nice_ceiling(3.0), 5.0);
        assert_eq!(nice_ceiling(7.0), 10.0);
        assert_eq!(nice_ceiling(42.0), 50.0);
    }

    #[test]
    fn svg_has_both_panels_and_series() {
        let report = sample_report();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("demo-report.svg");
        write_svg(&report, &path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("<svg"));
        assert!(text.trim_end().ends_with("</svg>"));
        for id in ["cdf-before", "cdf-after", "fail-before", "fail-after"] {
            assert!(
                text.contains(&format!("id=\"{id}\"")),
                "missing series {id}"
            );
        }
        assert!(text.contains("class=\"outage\""));
        assert!(text.contains("fulfillment outage"));
        // Tags balance: every opened element is closed.
        let opens = text.matches("<text").count();
        assert_eq!(opens, text.matches("</text>").count());
        // The CDF polylines carry one point per sample (below the cap).
        let before_pts = text
            .split("id=\"cdf-before\"")
            .nth(1)
            .and_then(|s| s.split("points=\"").nth(1))
            .and_then(|s| s.split('"').next())
            .unwrap()
            .split(' ')
            .count();
        assert_eq!(before_pts, report.before.latencies_ms.len() + 1);
    }
}
