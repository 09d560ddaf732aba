//! Black-box tests: real Junction on port 0, real upstream servers, real HTTP.

mod analyze;
mod breaker;
mod cache;
mod cache_rfc;
mod cli;
mod client_faults;
mod crash;
mod dashboard;
mod disk_full;
mod dlq;
mod idempotency;
mod lifecycle;
mod limits;
mod listener_tls;
mod openapi;
mod operator_files;
mod otel;
mod pipeline;
mod process;
mod proxy;
mod reload;
mod retry;
mod shared_queue;
mod tls;

use junction_gateway::app::{self, Listeners, Running};
use tokio::net::TcpListener;

/// Starts Junction in-process from config text, on fresh port-0 listeners,
/// and waits until `/readyz` answers 200.
pub async fn start(yaml: &str) -> Running {
    start_until(yaml, "/readyz").await
}

/// Like [`start`], but waits only for `/healthz`: for a gateway that is
/// running but not ready (a backend it needs is down).
pub async fn start_unready(yaml: &str) -> Running {
    start_until(yaml, "/healthz").await
}

async fn start_until(yaml: &str, probe: &str) -> Running {
    let config = junction_gateway::config::load_str(yaml, "test.yaml")
        .unwrap_or_else(|e| panic!("bad test config: {e:?}"));
    let listeners = Listeners {
        data: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let running = app::spawn(config, listeners).unwrap();
    // Wait until the admin API answers, so tests never race start-up.
    let client = reqwest::Client::new();
    for _ in 0..300 {
        if client
            .get(format!("http://{}{probe}", running.admin))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            return running;
        }
        if running.task.is_finished() {
            let result = running.task.await;
            panic!("junction did not start: {result:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("junction not ready after 3 s")
}

/// The Redis the tests use: `REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// A client that does not pool across tests and never follows redirects.
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// `GET http://{addr}{path}` with [`client`]; panics if nothing answers.
pub async fn get(addr: std::net::SocketAddr, path: &str) -> reqwest::Response {
    client()
        .get(format!("http://{addr}{path}"))
        .send()
        .await
        .unwrap()
}

/// The whole `/metrics` exposition of the admin listener at `admin`.
pub async fn metrics_text(admin: impl std::fmt::Display) -> String {
    client()
        .get(format!("http://{admin}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// The value of one metric sample line (exact label text), or 0 when absent.
pub async fn metric(admin: std::net::SocketAddr, series: &str) -> f64 {
    let text = metrics_text(admin).await;
    text.lines()
        .find_map(|l| {
            l.strip_prefix(series)
                .and_then(|rest| rest.strip_prefix(' '))
        })
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0.0)
}
