//! Crash and shutdown safety of the real `junction` binary: an event answered
//! `202` survives SIGKILL (it is delivered to every subscriber after a restart on
//! the same queue directory), and SIGTERM lets in-flight deliveries finish
//! before a clean exit.

use super::client;
use super::process::{spawn, Proc};
use junction_testkit::{Behavior, FakeUpstream};
use std::collections::HashSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Routes config: `POST /orders` fans out to one subscriber per `(upstream url, extra keys)`.
pub(super) fn fan_out(subs: &[(&str, &str)]) -> String {
    let mut ups = String::from("upstreams:\n");
    let mut list = String::new();
    for (i, (url, extra)) in subs.iter().enumerate() {
        ups.push_str(&format!(
            "  u{i}: {{ url: \"{url}\", timeout: 3s, breaker: {{ min_requests: 100000 }} }}\n"
        ));
        list.push_str(&format!(
            "        - {{ name: sub-{i}, upstream: u{i}, path: /hook{i}{extra} }}\n"
        ));
    }
    format!(
        "{ups}routes:\n  - name: orders\n    match: {{ method: POST, path: /orders }}\n    async:\n      topic: orders\n      subscribers:\n{list}"
    )
}

/// Posts one event; `Some(id)` only when the answer is a complete `202 accepted`.
async fn post(http: &reqwest::Client, data: &str, body: String) -> Option<String> {
    let resp = http
        .post(format!("http://{data}/orders"))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .ok()?;
    if resp.status() != 202 {
        return None;
    }
    let v: serde_json::Value = resp.json().await.ok()?;
    assert_eq!(v["status"], "accepted", "{v}");
    assert_eq!(v["topic"], "orders", "{v}");
    v["id"].as_str().map(str::to_string)
}

/// Bodies of `expected` that `up` has not received yet.
fn missing(up: &FakeUpstream, expected: &[String]) -> Vec<String> {
    let seen: HashSet<String> = up
        .seen()
        .iter()
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .collect();
    expected
        .iter()
        .filter(|b| !seen.contains(*b))
        .cloned()
        .collect()
}

/// Waits (bounded) until every subscriber has every expected body at least once.
pub(super) async fn all_delivered(
    subs: &[&FakeUpstream],
    expected: &[String],
    timeout: Duration,
    gw: &Proc,
) {
    let t0 = Instant::now();
    loop {
        let gaps: Vec<(usize, Vec<String>)> = subs
            .iter()
            .enumerate()
            .map(|(i, up)| (i, missing(up, expected)))
            .filter(|(_, m)| !m.is_empty())
            .collect();
        if gaps.is_empty() {
            return;
        }
        if t0.elapsed() > timeout {
            let report: Vec<String> = gaps
                .iter()
                .map(|(i, m)| format!("sub-{i} misses {} of {}: {m:?}", m.len(), expected.len()))
                .collect();
            panic!(
                "accepted events lost after {timeout:?}:\n{}\n--- junction stderr ---\n{}",
                report.join("\n"),
                gw.stderr()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `GET /admin/messages/{id}` on `gw`: status and JSON body.
async fn message_status(gw: &Proc, id: &str) -> (u16, serde_json::Value) {
    let resp = client()
        .get(format!("http://{}/admin/messages/{id}", gw.admin))
        .send()
        .await
        .expect("admin reachable");
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_no_accepted_event() {
    const N: usize = 400;
    const KILL_AFTER: usize = N / 2;
    let dir = tempfile::tempdir().unwrap();
    let fast = FakeUpstream::start().await;
    // Slow and narrow, so deliveries are still pending when the process dies.
    let slow = FakeUpstream::with(Behavior::Slow(Duration::from_millis(20))).await;
    let routes = fan_out(&[(&fast.url(), ""), (&slow.url(), ", concurrency: 2")]);
    let mut gw = spawn(dir.path(), "first", &routes).await;

    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let accepted_count = Arc::new(AtomicUsize::new(0));
    let killed = Arc::new(AtomicBool::new(false));
    let accepted = Arc::new(parking_lot::Mutex::new(Vec::<(String, String)>::new()));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..16 {
        let (http, data) = (http.clone(), gw.data.clone());
        let (next, count, killed, accepted) = (
            next.clone(),
            accepted_count.clone(),
            killed.clone(),
            accepted.clone(),
        );
        tasks.spawn(async move {
            while !killed.load(Ordering::SeqCst) {
                let n = next.fetch_add(1, Ordering::SeqCst);
                if n >= N {
                    break;
                }
                let body = format!(r#"{{"n":{n}}}"#);
                if let Some(id) = post(&http, &data, body.clone()).await {
                    accepted.lock().push((id, body));
                    count.fetch_add(1, Ordering::SeqCst);
                }
            }
        });
    }
    let t0 = Instant::now();
    while accepted_count.load(Ordering::SeqCst) < KILL_AFTER {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "only {} accepted in 20s\n{}",
            accepted_count.load(Ordering::SeqCst),
            gw.stderr()
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    gw.child.kill().expect("SIGKILL");
    killed.store(true, Ordering::SeqCst);
    let status = gw.child.wait().expect("reap");
    assert!(!status.success(), "SIGKILL must not look like a clean exit");
    // In-flight requests fail (ignored); a 202 already on the wire still counts.
    let drained = tokio::time::timeout(Duration::from_secs(10), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    assert!(
        drained.is_ok(),
        "client tasks did not finish after the kill"
    );
    let accepted = accepted.lock().clone();
    let bodies: Vec<String> = accepted.iter().map(|(_, b)| b.clone()).collect();
    let pending_at_kill = missing(&slow, &bodies).len();
    eprintln!(
        "accepted {} of {N} before SIGKILL; slow subscriber still owed {pending_at_kill}",
        accepted.len()
    );
    assert!(accepted.len() < N, "the kill came after the load ended");
    assert!(pending_at_kill > 0, "nothing was pending at the kill");
    let first_log = gw.stderr();
    drop(gw);

    let gw = spawn(dir.path(), "restart", &routes).await;
    all_delivered(&[&fast, &slow], &bodies, Duration::from_secs(30), &gw).await;
    let (id, _) = &accepted[accepted.len() / 2];
    let (code, status) = message_status(&gw, id).await;
    assert_eq!(
        code, 200,
        "message {id} unknown after restart: {status}\n--- first run ---\n{first_log}"
    );
    assert_eq!(
        status["subscribers"].as_array().map(Vec::len),
        Some(2),
        "{status}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_deliveries() {
    const EVENTS: usize = 5;
    let dir = tempfile::tempdir().unwrap();
    let slow = FakeUpstream::with(Behavior::Slow(Duration::from_millis(500))).await;
    // One delivery at a time: one in flight at SIGTERM, the rest still queued.
    let routes = fan_out(&[(&slow.url(), ", concurrency: 1")]);
    let mut gw = spawn(dir.path(), "first", &routes).await;
    let http = client();
    let mut accepted = Vec::new();
    for n in 0..EVENTS {
        let body = format!(r#"{{"n":{n}}}"#);
        let id = post(&http, &gw.data, body.clone())
            .await
            .unwrap_or_else(|| panic!("event {n} not accepted\n{}", gw.stderr()));
        accepted.push((id, body));
    }
    let t0 = Instant::now();
    while slow.calls() == 0 {
        assert!(
            t0.elapsed() < Duration::from_secs(10),
            "no delivery started in 10s\n{}",
            gw.stderr()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = gw.child.id();
    let sent = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(sent.success(), "kill -TERM {pid} failed");
    let t_term = Instant::now();
    // The grace period is 10s; allow a little for process teardown.
    let status = gw.wait_exit(Duration::from_secs(12)).await;
    let exited_after = t_term.elapsed();
    let first_log = gw.stderr();
    let status = status.unwrap_or_else(|| panic!("no exit 12s after SIGTERM\n{first_log}"));
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{first_log}"
    );
    // What the subscriber had received when the process was gone: those
    // deliveries were in flight at SIGTERM (or started while draining).
    let started: Vec<String> = slow
        .seen()
        .iter()
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .collect();
    eprintln!(
        "exited {status} {exited_after:?} after SIGTERM; {} of {EVENTS} deliveries had started",
        started.len()
    );
    assert!(!started.is_empty());
    drop(gw);

    let gw = spawn(dir.path(), "restart", &routes).await;
    let bodies: Vec<String> = accepted.iter().map(|(_, b)| b.clone()).collect();
    all_delivered(&[&slow], &bodies, Duration::from_secs(20), &gw).await;
    // A drained delivery was acknowledged before exit, so it is never sent again.
    let seen_bodies: Vec<String> = slow
        .seen()
        .iter()
        .map(|s| String::from_utf8_lossy(&s.body).into_owned())
        .collect();
    for body in &started {
        let times = seen_bodies.iter().filter(|b| *b == body).count();
        assert_eq!(
            times,
            1,
            "{body} was in flight at SIGTERM but delivered {times} times: the drain did not ack it\n--- first run ---\n{first_log}\n--- restart ---\n{}",
            gw.stderr()
        );
    }
    let (code, status) = message_status(&gw, &accepted[0].0).await;
    assert_eq!(code, 200, "{status}");
}

/// A crash loop: 20 SIGKILLs of the process, each in the middle of async load
/// on the same embedded queue, then a final start. Every event that was
/// answered 202 in any round reaches both subscribers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sigkills_under_load_lose_no_accepted_event() {
    const KILLS: usize = 20;
    const PER_ROUND: usize = 50;
    let dir = tempfile::tempdir().unwrap();
    let fast = FakeUpstream::start().await;
    let slow = FakeUpstream::with(Behavior::Slow(Duration::from_millis(20))).await;
    let routes = fan_out(&[(&fast.url(), ""), (&slow.url(), ", concurrency: 4")]);
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let mut bodies = Vec::new();
    for round in 0..KILLS {
        let mut gw = spawn(dir.path(), &format!("round{round}"), &routes).await;
        let next = Arc::new(AtomicUsize::new(0));
        let count = Arc::new(AtomicUsize::new(0));
        let killed = Arc::new(AtomicBool::new(false));
        let accepted = Arc::new(parking_lot::Mutex::new(Vec::<String>::new()));
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (http, data) = (http.clone(), gw.data.clone());
            let (next, count, killed, accepted) = (
                next.clone(),
                count.clone(),
                killed.clone(),
                accepted.clone(),
            );
            tasks.spawn(async move {
                while !killed.load(Ordering::SeqCst) {
                    let n = next.fetch_add(1, Ordering::SeqCst);
                    if n >= PER_ROUND {
                        break;
                    }
                    let body = format!(r#"{{"round":{round},"n":{n}}}"#);
                    if post(&http, &data, body.clone()).await.is_some() {
                        accepted.lock().push(body);
                        count.fetch_add(1, Ordering::SeqCst);
                    }
                }
            });
        }
        // Kill somewhere in the middle of the round's load.
        let kill_after = PER_ROUND / 4 + round % (PER_ROUND / 2);
        let t0 = Instant::now();
        while count.load(Ordering::SeqCst) < kill_after && t0.elapsed() < Duration::from_secs(10) {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        gw.child.kill().expect("SIGKILL");
        killed.store(true, Ordering::SeqCst);
        gw.child.wait().expect("reap");
        let drained = tokio::time::timeout(Duration::from_secs(10), async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        assert!(
            drained.is_ok(),
            "client tasks did not finish after kill {round}"
        );
        bodies.extend(accepted.lock().drain(..));
    }
    assert!(
        bodies.len() >= KILLS * PER_ROUND / 4,
        "only {} accepted",
        bodies.len()
    );
    let gw = spawn(dir.path(), "final", &routes).await;
    all_delivered(&[&fast, &slow], &bodies, Duration::from_secs(60), &gw).await;
    eprintln!(
        "{} events accepted across {KILLS} SIGKILLs; every one delivered to both subscribers",
        bodies.len()
    );
}
