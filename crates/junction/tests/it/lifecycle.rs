//! The process lifecycle through the real binary: SIGTERM turns `/readyz` 503
//! first while both ports keep serving for `shutdown.drain_delay`, lets
//! in-flight requests finish, then exits 0; a second signal exits at once.

use super::client;
use super::process::{signal, spawn, spawn_with_env};
use junction_testkit::{Behavior, FakeUpstream};
use std::time::{Duration, Instant};

fn routes(slow: &FakeUpstream, fast: &FakeUpstream, shutdown: &str) -> String {
    format!(
        r#"shutdown: {shutdown}
upstreams:
  slow: {{ url: "{}", timeout: 5s }}
  fast: {{ url: "{}", timeout: 5s }}
routes:
  - {{ name: slow, match: {{ method: GET, path: /slow }}, upstream: slow }}
  - {{ name: fast, match: {{ method: GET, path: /fast }}, upstream: fast }}
"#,
        slow.url(),
        fast.url()
    )
}

async fn readyz(admin: &str) -> Option<u16> {
    client()
        .get(format!("http://{admin}/readyz"))
        .timeout(Duration::from_secs(1))
        .send()
        .await
        .ok()
        .map(|r| r.status().as_u16())
}

#[tokio::test]
async fn sigterm_turns_readyz_503_first_keeps_serving_then_finishes_in_flight_and_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let slow = FakeUpstream::with(Behavior::Slow(Duration::from_millis(2500))).await;
    let fast = FakeUpstream::start().await;
    let config = routes(&slow, &fast, "{ drain_delay: 1500ms, grace: 10s }");
    let mut gw = spawn(dir.path(), "drain", &config).await;
    let in_flight = tokio::spawn(client().get(format!("http://{}/slow", gw.data)).send());
    while slow.calls() == 0 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal(&gw, "TERM");
    let t_term = Instant::now();
    // Not ready at once...
    loop {
        if readyz(&gw.admin).await == Some(503) {
            break;
        }
        assert!(
            t_term.elapsed() < Duration::from_millis(500),
            "/readyz still 200\n{}",
            gw.stderr()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // ...while new connections are still served during the drain delay.
    let during = client()
        .get(format!("http://{}/fast", gw.data))
        .send()
        .await
        .expect("the data port still accepts while draining");
    assert_eq!(during.status(), 200);
    assert!(t_term.elapsed() < Duration::from_millis(1500));
    // The request in flight at SIGTERM completes.
    let done = in_flight
        .await
        .unwrap()
        .expect("in-flight request answered");
    assert_eq!(done.status(), 200, "{}", gw.stderr());
    let status = gw
        .wait_exit(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| panic!("no exit 10s after SIGTERM\n{}", gw.stderr()));
    assert!(
        status.success(),
        "exit after SIGTERM: {status}\n{}",
        gw.stderr()
    );
    assert!(
        t_term.elapsed() >= Duration::from_millis(1500),
        "exited before the drain delay was over"
    );
    let log = gw.stderr();
    assert!(log.contains("shutdown requested"), "{log}");
}

#[tokio::test]
async fn a_second_sigterm_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let slow = FakeUpstream::with(Behavior::Hang).await;
    let fast = FakeUpstream::start().await;
    let config = routes(&slow, &fast, "{ drain_delay: 30s, grace: 30s }");
    let mut gw = spawn(dir.path(), "twice", &config).await;
    let _hung = tokio::spawn(client().get(format!("http://{}/slow", gw.data)).send());
    signal(&gw, "TERM");
    let t0 = Instant::now();
    while readyz(&gw.admin).await != Some(503) {
        assert!(
            t0.elapsed() < Duration::from_secs(2),
            "/readyz still 200\n{}",
            gw.stderr()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    signal(&gw, "TERM");
    let status = gw
        .wait_exit(Duration::from_secs(3))
        .await
        .unwrap_or_else(|| panic!("still running 3s after a second SIGTERM\n{}", gw.stderr()));
    assert!(
        !status.success(),
        "a second signal is not a clean drain: {status}"
    );
    assert!(gw.stderr().contains("exiting at once"), "{}", gw.stderr());
}

#[tokio::test]
async fn systemd_hears_ready_reloading_and_stopping() {
    let dir = tempfile::tempdir().unwrap();
    let socket_path = dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let (slow, fast) = (FakeUpstream::start().await, FakeUpstream::start().await);
    let config = routes(&slow, &fast, "{ drain_delay: 0s, grace: 5s }");
    let socket_env = socket_path.display().to_string();
    let mut gw = spawn_with_env(
        dir.path(),
        "notify",
        &config,
        &[("NOTIFY_SOCKET", &socket_env)],
    )
    .await;
    let next = |socket: &std::os::unix::net::UnixDatagram| {
        let mut buf = [0u8; 512];
        let n = socket.recv(&mut buf).expect("a notification");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    assert_eq!(next(&socket).trim(), "READY=1", "{}", gw.stderr());
    signal(&gw, "HUP");
    let reloading = next(&socket);
    assert!(
        reloading.contains("RELOADING=1") && reloading.contains("MONOTONIC_USEC="),
        "{reloading}"
    );
    assert_eq!(next(&socket).trim(), "READY=1");
    signal(&gw, "TERM");
    assert_eq!(next(&socket).trim(), "STOPPING=1");
    let status = gw.wait_exit(Duration::from_secs(10)).await.expect("exits");
    assert!(status.success());
}
