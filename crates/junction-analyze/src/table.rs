//! The ranked table `junction analyze` prints, then each recommendation
//! explained with the config that applies it.

use crate::recommend::Report;
use std::fmt::Write as _;

/// The report as text for a terminal.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let w = &report.window;
    let _ = writeln!(
        out,
        "Analysed {} requests from {}{} across {} endpoints.",
        w.requests,
        report.source,
        if w.seconds > 0.0 {
            format!(" over {:.0} s", w.seconds)
        } else {
            String::new()
        },
        report.endpoints.len()
    );
    if report.recommendations.is_empty() {
        out.push_str("\nNo recommendations: nothing seen qualifies (yet).\n");
    } else {
        let target_w = report
            .recommendations
            .iter()
            .map(|r| r.target.len())
            .max()
            .unwrap_or(6)
            .clamp(6, 40);
        let _ = writeln!(
            out,
            "\n{:>4}  {:<10}  {:<target_w$}  {:>12}  RECOMMENDATION",
            "RANK", "KIND", "TARGET", "SAVES (s)"
        );
        for (i, r) in report.recommendations.iter().enumerate() {
            let _ = writeln!(
                out,
                "{:>4}  {:<10}  {:<target_w$}  {:>12.1}  {}",
                i + 1,
                r.kind.as_str(),
                truncate(&r.target, target_w),
                r.score,
                r.title
            );
        }
        out.push_str("\nSAVES: caller waiting time the change would have saved over the window (trimming: bytes at 100 Mbit/s).\n");
        for (i, r) in report.recommendations.iter().enumerate() {
            let _ = writeln!(out, "\n{}. {}", i + 1, r.title);
            let _ = writeln!(out, "   evidence: {}", r.evidence);
            let _ = writeln!(out, "   gain:     {}", r.gain);
            let _ = writeln!(out, "   risk:     {}", r.risk);
            out.push_str("   config:\n");
            for line in r.yaml.lines() {
                let _ = writeln!(out, "     {line}");
            }
        }
    }
    if !report.limitations.is_empty() {
        out.push_str("\nNot assessed:\n");
        for l in &report.limitations {
            let _ = writeln!(out, "  - {l}");
        }
    }
    out
}

fn truncate(s: &str, w: usize) -> String {
    if s.chars().count() <= w {
        s.to_owned()
    } else {
        let mut t: String = s.chars().take(w.saturating_sub(1)).collect();
        t.push('…');
        t
    }
}
