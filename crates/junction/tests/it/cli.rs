//! The binary's command line, run as a user would.

use std::process::Command;

fn junction() -> Command {
    Command::new(env!("CARGO_BIN_EXE_junction"))
}

#[test]
fn check_accepts_a_good_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.yaml");
    std::fs::write(&path, "upstreams: { a: { url: \"http://127.0.0.1:7001\" } }\nroutes:\n  - { name: r, match: { method: GET, path: /products/{id} }, upstream: a }\n").unwrap();
    let out = junction()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn check_reports_every_error_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, "listen: nowhere\nupstreams:\n  a: { url: \"http://127.0.0.1:7001\", timeout: soon }\nroutes:\n  - { name: r, match: { path: /x }, upstream: b }\n").unwrap();
    let out = junction()
        .args(["check", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let file = path.display().to_string();
    assert!(stderr.contains(&format!("{file}:1:1: listen:")), "{stderr}");
    assert!(
        stderr.contains(&format!("{file}:3:")) && stderr.contains("upstreams.a.timeout"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:5:"))
            && stderr.contains("routes[0].upstream: unknown upstream \"b\""),
        "{stderr}"
    );
}

#[test]
fn every_command_has_help() {
    for args in [
        vec!["--help"],
        vec!["serve", "--help"],
        vec!["check", "--help"],
    ] {
        let out = junction().args(&args).output().unwrap();
        assert!(out.status.success(), "{args:?}");
        assert!(!out.stdout.is_empty());
    }
}
