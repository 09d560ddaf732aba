//! The Grafana dashboard and the Prometheus alert rules in `deploy/` speak of
//! metrics the running binary exports: every `junction_*` and `process_*`
//! name in every PromQL expression is checked against a real scrape of
//! `/metrics`, and none is a deprecated alias.

use super::process::spawn;
use std::collections::BTreeSet;
use std::path::PathBuf;

fn deploy(path: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy")
        .join(path)
}

/// The series names a scrape can contain: `name_total` for counters,
/// `_bucket`/`_sum`/`_count` for histograms, the name itself otherwise.
fn exported_names(exposition: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in exposition.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let mut parts = rest.split_whitespace();
        let (Some(name), Some(kind)) = (parts.next(), parts.next()) else {
            continue;
        };
        match kind {
            "counter" => {
                names.insert(format!("{name}_total"));
            }
            "histogram" => {
                for suffix in ["_bucket", "_sum", "_count"] {
                    names.insert(format!("{name}{suffix}"));
                }
            }
            _ => {
                names.insert(name.to_owned());
            }
        }
    }
    names
}

/// Every PromQL expression of the dashboard: panel targets, template queries.
fn dashboard_exprs(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match (k.as_str(), v) {
                    ("expr" | "query" | "definition", serde_json::Value::String(s)) => {
                        out.push(s.clone())
                    }
                    _ => dashboard_exprs(v, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|i| dashboard_exprs(i, out)),
        _ => {}
    }
}

/// Every rule's `expr` in the alert file.
fn alert_exprs(text: &str) -> Vec<String> {
    let docs = yaml_rust2::YamlLoader::load_from_str(text).expect("the alert rules are YAML");
    let mut out = Vec::new();
    for group in docs[0]["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            assert!(
                rule["alert"].as_str().is_some() && rule["for"].as_str().is_some(),
                "every rule has a name and a for: {rule:?}"
            );
            out.push(rule["expr"].as_str().expect("expr").to_owned());
        }
    }
    out
}

/// Families whose help text says they are deprecated (old names kept as aliases).
fn deprecated_names(exposition: &str) -> BTreeSet<String> {
    exposition
        .lines()
        .filter_map(|l| l.strip_prefix("# HELP "))
        .filter_map(|l| l.split_once(' '))
        .filter(|(_, help)| help.starts_with("Deprecated"))
        .map(|(name, _)| name.to_owned())
        .collect()
}

/// The `junction_*` and `process_*` names in a PromQL expression.
fn metric_names(expr: &str) -> Vec<String> {
    let mut out = ["junction_", "process_"]
        .iter()
        .flat_map(|prefix| names_with(expr, prefix))
        .collect::<Vec<_>>();
    out.sort_by_key(|n| expr.find(n.as_str()));
    out
}

fn names_with(expr: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let bytes = expr.as_bytes();
    let mut i = 0;
    while let Some(at) = expr[i..].find(prefix) {
        let start = i + at;
        let boundary = start == 0 || {
            let c = bytes[start - 1];
            !(c.is_ascii_alphanumeric() || c == b'_')
        };
        let end = expr[start..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(expr.len(), |e| start + e);
        if boundary {
            out.push(expr[start..end].to_owned());
        }
        i = end;
    }
    out
}

#[tokio::test]
async fn dashboards_and_alerts_use_only_exported_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let gw = spawn(
        dir.path(),
        "operator",
        // A sync route and an async one: the queue (and its families) is open.
        "upstreams: { a: { url: \"http://127.0.0.1:9\" } }\nroutes:\n  - { name: r, match: { method: GET, path: /p }, upstream: a }\n  - name: orders\n    match: { method: POST, path: /orders }\n    async: { topic: orders, subscribers: [ { name: s, upstream: a, path: /hook } ] }\n",
    )
    .await;
    let scrape = super::metrics_text(&gw.admin).await;
    let exported = exported_names(&scrape);
    assert!(exported.contains("junction_requests_total"), "{exported:?}");
    assert!(
        exported.contains("process_cpu_seconds_total"),
        "{exported:?}"
    );
    let deprecated = deprecated_names(&scrape);
    assert!(
        deprecated.contains("junction_upstream_bytes_in"),
        "{deprecated:?}"
    );

    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(deploy("grafana/junction-dashboard.json")).unwrap(),
    )
    .expect("the dashboard is JSON");
    let mut exprs = Vec::new();
    dashboard_exprs(&dashboard, &mut exprs);
    assert!(exprs.len() >= 20, "{} expressions", exprs.len());
    let alerts =
        alert_exprs(&std::fs::read_to_string(deploy("prometheus/junction-alerts.yaml")).unwrap());
    assert!(alerts.len() >= 5, "{} rules", alerts.len());
    exprs.extend(alerts);

    let mut unknown = BTreeSet::new();
    for expr in &exprs {
        for name in metric_names(expr) {
            if !exported.contains(&name) {
                unknown.insert(format!("{name} (in {expr})"));
            }
            if deprecated.iter().any(|d| name.starts_with(d.as_str())) {
                unknown.insert(format!("{name} is a deprecated alias (in {expr})"));
            }
        }
    }
    assert!(
        unknown.is_empty(),
        "names Junction does not export:\n{}",
        unknown.into_iter().collect::<Vec<_>>().join("\n")
    );
}

#[test]
fn names_are_found_whole() {
    assert_eq!(
        metric_names("sum(rate(junction_requests_total{x=\"junction_no\"}[5m])) / xjunction_y"),
        vec!["junction_requests_total", "junction_no"]
    );
    assert_eq!(
        metric_names("rate(process_cpu_seconds_total[1m]) * on (job) junction_build_info"),
        vec!["process_cpu_seconds_total", "junction_build_info"]
    );
}

/// Every `yaml` block of the README is a config `junction check` accepts
/// (given the files and variables it names: a CA file, the secrets).
#[test]
fn the_readmes_config_blocks_load() {
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (n, line) in readme.lines().enumerate() {
        match (&mut current, line.trim_start()) {
            (None, l) if l.starts_with("```yaml") => current = Some((n + 2, String::new())),
            (Some(_), l) if l.starts_with("```") => blocks.push(current.take().unwrap()),
            (Some((_, text)), _) => {
                text.push_str(line);
                text.push('\n');
            }
            _ => {}
        }
    }
    assert!(blocks.len() >= 2, "found {} yaml blocks", blocks.len());
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    std::fs::write(&ca, cert.cert.pem()).unwrap();
    for (line, text) in blocks {
        let path = dir.path().join(format!("readme-{line}.yaml"));
        std::fs::write(
            &path,
            text.replace("/etc/junction/ca.pem", ca.to_str().unwrap()),
        )
        .unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_junction"))
            .args(["check", "--config"])
            .arg(&path)
            .env("JUNCTION_ADMIN_TOKEN", "t")
            .env("WEBHOOK_SECRET", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
            .env(
                "WEBHOOK_SECRET_OLD",
                "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
            )
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "the README's yaml block at line {line} fails junction check:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
