//! The real `junction` binary as a child process, for tests of what only a
//! process shows: crashes, signals, exit codes.

use super::client;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// A `junction serve` child process; killed (SIGKILL) and reaped on drop.
pub struct Proc {
    pub child: Child,
    pub log: PathBuf,
    pub data: String,
    pub admin: String,
    /// The config file, and the part of it `spawn` wrote before the caller's text.
    pub config: PathBuf,
    head: String,
}

impl Proc {
    /// Everything junction wrote on stderr so far.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_else(|e| format!("<no log: {e}>"))
    }

    /// Rewrites the config file with the same ports and queue and `rest` after them.
    pub fn rewrite_config(&self, rest: &str) {
        std::fs::write(&self.config, format!("{}{rest}", self.head)).expect("write config");
    }

    /// Waits (bounded) for the process to exit on its own.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let t0 = Instant::now();
        while t0.elapsed() < timeout {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_addr() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    l.local_addr().expect("addr").to_string()
}

/// Starts `junction serve` on fresh ports with the queue in `dir/q`, waits for `/readyz`.
pub async fn spawn(dir: &Path, tag: &str, rest: &str) -> Proc {
    spawn_with_env(dir, tag, rest, &[]).await
}

/// [`spawn`] with extra environment variables.
pub async fn spawn_with_env(dir: &Path, tag: &str, rest: &str, env: &[(&str, &str)]) -> Proc {
    let queue = format!("{{ backend: embedded, path: {} }}", dir.join("q").display());
    spawn_on(dir, tag, &queue, rest, env).await
}

/// [`spawn`] on the queue `queue` (a YAML flow mapping), with extra environment variables.
pub async fn spawn_on(
    dir: &Path,
    tag: &str,
    queue: &str,
    rest: &str,
    env: &[(&str, &str)],
) -> Proc {
    let (data, admin) = (free_addr(), free_addr());
    let head = format!("listen: {data}\nadmin: {{ listen: {admin} }}\nqueue: {queue}\n");
    let yaml = format!("{head}{rest}");
    let config = dir.join(format!("junction-{tag}.yaml"));
    std::fs::write(&config, yaml).expect("write config");
    let log = dir.join(format!("junction-{tag}.log"));
    let child = Command::new(env!("CARGO_BIN_EXE_junction"))
        .args(["serve", "--config"])
        .arg(&config)
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).expect("log file"))
        .spawn()
        .expect("spawn junction");
    let mut proc = Proc {
        child,
        log,
        data,
        admin,
        config: config.clone(),
        head,
    };
    let t0 = Instant::now();
    loop {
        let ready = client()
            .get(format!("http://{}/readyz", proc.admin))
            .timeout(Duration::from_secs(1))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        if ready {
            return proc;
        }
        if let Some(status) = proc.child.try_wait().expect("try_wait") {
            panic!(
                "junction ({tag}) exited at start-up: {status}\n{}",
                proc.stderr()
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(15),
            "junction ({tag}) not ready in 15s\n{}",
            proc.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Sends `signal` (`TERM`, `INT`, `HUP`, ...) to the process.
pub fn signal(proc: &Proc, signal: &str) {
    let pid = proc.child.id().to_string();
    let sent = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -{signal} {pid} failed");
}
