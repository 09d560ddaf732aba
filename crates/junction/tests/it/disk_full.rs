//! A full disk under the embedded queue, through the real binary: while the disk
//! refuses writes new events get 503 + Retry-After and `/readyz` is 503; once
//! space is back both recover by themselves (no restart), every event answered
//! 202 before, during and after is delivered, and no empty or corrupt journal
//! file is left behind.
//!
//! The full-disk tests put the queue on a tmpfs of their own, the read-only one
//! makes its files immutable (both need root, as CI runs; `JUNCTION_DISK_TESTS=0`
//! skips them elsewhere). A queue directory removed under the running gateway is
//! the last test.

use super::client;
use super::crash::{all_delivered, fan_out};
use super::process::{spawn_on, Proc};
use junction_testkit::{Behavior, FakeUpstream};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// A small tmpfs, unmounted on drop.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Self {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("run mount");
        assert!(
            out.status.success(),
            "mounting a tmpfs for the queue failed (needs root; JUNCTION_DISK_TESTS=0 skips this test): {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self(at.to_owned())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Writes zeros into `path` until the disk is full; returns the bytes written.
fn fill(path: &Path) -> u64 {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 64 << 10];
    let mut total = 0;
    while f.write_all(&chunk).is_ok() {
        total += chunk.len() as u64;
    }
    // What is left is smaller than a chunk: take it in small writes.
    while f.write_all(&chunk[..512]).is_ok() {
        total += 512;
    }
    total
}

/// Posts one event: its status, its id when accepted, whether a 503 said when to retry.
async fn post(data: &str, body: &str) -> (u16, Option<String>, bool) {
    let resp = client()
        .post(format!("http://{data}/orders"))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .expect("the data port answers");
    let status = resp.status().as_u16();
    let retry_after = resp.headers().contains_key("retry-after");
    let v: serde_json::Value = resp.json().await.unwrap_or_default();
    (status, v["id"].as_str().map(str::to_owned), retry_after)
}

/// Posts `next()` bodies until one is accepted (503s while waiting), within
/// `within`; keeps the accepted body in `accepted`.
async fn until_accepted(
    gw: &Proc,
    accepted: &mut Vec<String>,
    mut next: impl FnMut() -> String,
    within: Duration,
    what: &str,
) {
    let t0 = Instant::now();
    loop {
        let body = next();
        match post(&gw.data, &body).await {
            (202, Some(_), _) => return accepted.push(body),
            (503, _, _) => {}
            other => panic!("unexpected answer while waiting for {what}: {other:?}"),
        }
        assert!(
            t0.elapsed() < within,
            "{what}: never within {within:?}\n{}",
            gw.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until `/readyz` answers `status`, within `within`.
async fn until_readyz(gw: &Proc, status: u16, within: Duration) {
    let t0 = Instant::now();
    while readyz(&gw.admin).await != status {
        assert!(
            t0.elapsed() < within,
            "/readyz never answered {status} within {within:?}:\n{}",
            gw.stderr()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn readyz(admin: &str) -> u16 {
    client()
        .get(format!("http://{admin}/readyz"))
        .send()
        .await
        .map_or(0, |r| r.status().as_u16())
}

/// Events on the fast path: the journal refuses the write, redb is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_journal_refuses_new_events_then_recovers_by_itself_and_loses_nothing(
) {
    full_disk("").await;
}

/// Events with an ordering key go to redb, which after a failed write refuses
/// every later one until the queue reopens it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_redb_refuses_new_events_then_recovers_by_itself_and_loses_nothing() {
    full_disk(r#", ordering_key: "json:/order""#).await;
}

/// `extra`: more keys of the subscriber.
async fn full_disk(extra: &str) {
    disk_fault(extra, Fault::Full).await;
}

/// A queue directory whose files turn read-only under the running gateway
/// (`chattr +i`: even root's writes fail, as on a read-only mount) is the same
/// fault: refused, not ready, then recovered by itself once writable again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_queue_directory_refuses_new_events_then_recovers_by_itself() {
    disk_fault(r#", ordering_key: "json:/order""#, Fault::ReadOnly).await;
}

/// How the disk refuses writes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Fault {
    /// A tmpfs of its own, filled up.
    Full,
    /// Every file and directory of the queue made immutable.
    ReadOnly,
}

/// `chattr -R {flag}` on `path`; undone on drop when it was `+i`.
struct Immutable(PathBuf);

impl Immutable {
    fn set(path: &Path, on: bool) {
        let out = Command::new("chattr")
            .args(["-R", if on { "+i" } else { "-i" }])
            .arg(path)
            .output()
            .expect("run chattr");
        assert!(
            out.status.success(),
            "chattr failed (needs root; JUNCTION_DISK_TESTS=0 skips this test): {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = Command::new("chattr")
            .args(["-R", "-i"])
            .arg(&self.0)
            .status();
    }
}

async fn disk_fault(extra: &str, fault: Fault) {
    if std::env::var("JUNCTION_DISK_TESTS").as_deref() == Ok("0") {
        eprintln!("skipped: JUNCTION_DISK_TESTS=0");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let disk = dir.path().join("disk");
    let _mnt = match fault {
        Fault::Full => Some(Tmpfs::mount(&disk, "48m")),
        Fault::ReadOnly => None,
    };
    let queue_dir = disk.join("q");
    let _writable_again = Immutable(queue_dir.clone());
    let sub = FakeUpstream::start().await;
    let queue = format!("{{ backend: embedded, path: {} }}", queue_dir.display());
    let gw = spawn_on(
        dir.path(),
        "disk",
        &queue,
        &fan_out(&[(&sub.url(), extra)]),
        &[],
    )
    .await;
    let mut accepted = Vec::new();
    let mut n = 0;
    let mut next_body = || {
        n += 1;
        format!(r#"{{"order":{n},"pad":"{}"}}"#, "x".repeat(2000))
    };

    for _ in 0..50 {
        let body = next_body();
        let (status, id, _) = post(&gw.data, &body).await;
        assert_eq!(status, 202, "{}", gw.stderr());
        assert!(id.is_some());
        accepted.push(body);
    }

    // The disk fills up: new events are refused with 503 + Retry-After, never a
    // 202 for something not durable, and the instance says it is not ready.
    let filler = disk.join("filler");
    match fault {
        Fault::Full => assert!(fill(&filler) > 0),
        Fault::ReadOnly => Immutable::set(&queue_dir, true),
    }
    let (mut refused, t0) = (0, Instant::now());
    while refused < 20 && t0.elapsed() < Duration::from_secs(20) {
        let body = next_body();
        match post(&gw.data, &body).await {
            (202, Some(_), _) => accepted.push(body),
            (503, _, retry_after) => {
                assert!(retry_after, "a 503 says when to retry");
                refused += 1;
            }
            other => panic!(
                "unexpected answer while the disk refuses writes: {other:?}\n{}",
                gw.stderr()
            ),
        }
    }
    assert!(
        refused >= 20,
        "a disk refusing writes must refuse new events:\n{}",
        gw.stderr()
    );
    until_readyz(&gw, 503, Duration::from_secs(10)).await;

    // Space comes back: no restart, the queue takes events again by itself.
    match fault {
        Fault::Full => std::fs::remove_file(&filler).unwrap(),
        Fault::ReadOnly => Immutable::set(&queue_dir, false),
    }
    let what = "enqueues resuming after space came back";
    until_accepted(
        &gw,
        &mut accepted,
        &mut next_body,
        Duration::from_secs(15),
        what,
    )
    .await;
    until_readyz(&gw, 200, Duration::from_secs(15)).await;
    for _ in 0..50 {
        let body = next_body();
        let (status, _, _) = post(&gw.data, &body).await;
        assert_eq!(status, 202, "{}", gw.stderr());
        accepted.push(body);
    }
    all_delivered(&[&sub], &accepted, Duration::from_secs(30), &gw).await;

    // Nothing left behind: no empty journal segment but (at most) the one being
    // written, and nothing logged as corrupt.
    let journal = queue_dir.join("journal");
    let segments: Vec<(String, u64)> = std::fs::read_dir(&journal)
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                e.file_name().to_string_lossy().into_owned(),
                e.metadata().unwrap().len(),
            )
        })
        .collect();
    let empty = segments.iter().filter(|(_, len)| *len == 0).count();
    assert!(
        empty <= 1 && segments.len() <= 3,
        "journal files left: {segments:?}"
    );
    let log = gw.stderr();
    assert!(!log.contains("corrupt"), "{log}");
    assert!(
        log.contains("refused a write"),
        "the fault is logged:\n{log}"
    );
}

/// The queue directory removed under a running gateway: writes would go to
/// unlinked files, so new events are refused (503, `/readyz` 503) until what was
/// pending is delivered from the open files; then the queue starts over in a
/// new directory by itself, and every event answered 202 is delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_queue_directory_refuses_new_events_until_the_pending_ones_are_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let sub = FakeUpstream::with(Behavior::Slow(Duration::from_millis(40))).await;
    let queue_dir = dir.path().join("q");
    let queue = format!("{{ backend: embedded, path: {} }}", queue_dir.display());
    let routes = fan_out(&[(&sub.url(), ", concurrency: 1")]);
    let gw = spawn_on(dir.path(), "vanish", &queue, &routes, &[]).await;
    let mut accepted = Vec::new();
    for n in 0..30 {
        let body = format!(r#"{{"before":{n}}}"#);
        assert_eq!(post(&gw.data, &body).await.0, 202, "{}", gw.stderr());
        accepted.push(body);
    }
    std::fs::remove_dir_all(&queue_dir).unwrap();

    // Noticed within about a second: refused, not ready.
    let (mut n, t0) = (0, Instant::now());
    loop {
        n += 1;
        let body = format!(r#"{{"during":{n}}}"#);
        match post(&gw.data, &body).await {
            (202, Some(_), _) => accepted.push(body),
            (503, _, retry_after) => {
                assert!(retry_after);
                break;
            }
            other => panic!("unexpected answer: {other:?}"),
        }
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "a removed queue directory went unnoticed:\n{}",
            gw.stderr()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(readyz(&gw.admin).await, 503);

    // Once the pending events are delivered, the queue starts over by itself.
    let next = || {
        n += 1;
        format!(r#"{{"after":{n}}}"#)
    };
    let what = "the queue starting over";
    until_accepted(&gw, &mut accepted, next, Duration::from_secs(30), what).await;
    assert!(queue_dir.join(junction_queue::embedded::DB_FILE).exists());
    all_delivered(&[&sub], &accepted, Duration::from_secs(30), &gw).await;
    until_readyz(&gw, 200, Duration::from_secs(10)).await;
}
