//! Heap allocations per proxied request, counted by a counting global
//! allocator (`stats_alloc`, in its own test binary so no other test pays for
//! it): the hot path's allocation count is a number that can only be kept
//! down if something fails when it goes up (issue 20).
//!
//! The counter sees the whole process: the test's client and its upstream
//! allocate too. So the same client first calls the upstream directly, then
//! through Junction; the difference per request is Junction's. The bound is
//! the count measured when it was set plus a small margin; lower it when the
//! path gets leaner.

use std::alloc::System;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;

use junction_gateway::app::{self, Listeners};
use junction_testkit::FakeUpstream;
use stats_alloc::{Region, StatsAlloc, INSTRUMENTED_SYSTEM};
use tokio::net::TcpListener;

/// Allocations Junction may make for one proxied GET: 35 measured on 2026-12-06 (the
/// test prints the count), plus a margin of 3.
const MAX_PER_PROXIED_GET: f64 = 38.0;

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

/// Sends `n` keep-alive GETs on one connection and reads every answer whole.
fn get_many(stream: &mut BufReader<std::net::TcpStream>, n: usize) {
    for i in 0..n {
        stream
            .get_mut()
            .write_all(b"GET /products/42 HTTP/1.1\r\nhost: shop\r\n\r\n")
            .unwrap();
        let mut line = String::new();
        stream.read_line(&mut line).unwrap();
        assert!(line.starts_with("HTTP/1.1 200"), "request {i}: {line}");
        let mut length = None;
        loop {
            line.clear();
            stream.read_line(&mut line).unwrap();
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                if name.eq_ignore_ascii_case("content-length") {
                    length = Some(value.trim().parse::<usize>().unwrap());
                }
            }
        }
        let mut body = vec![0; length.expect("a content-length")];
        stream.read_exact(&mut body).unwrap();
    }
}

/// Allocations (new blocks and reallocations) per GET of `n` keep-alive GETs to `addr`,
/// after 200 unmeasured ones.
fn allocations_per_get(addr: SocketAddr, n: usize) -> f64 {
    let mut stream = BufReader::new(
        (0..300)
            .find_map(|_| {
                std::net::TcpStream::connect(addr).ok().or_else(|| {
                    std::thread::sleep(std::time::Duration::from_millis(10));
                    None
                })
            })
            .expect("the port accepts"),
    );
    // Warm: pooled connections made, lazily built state built.
    get_many(&mut stream, 200);
    let region = Region::new(GLOBAL);
    get_many(&mut stream, n);
    let change = region.change();
    (change.allocations + change.reallocations) as f64 / n as f64
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_proxied_get_allocates_no_more_than_its_bound() {
    let upstream = FakeUpstream::start().await;
    let yaml = format!(
        "listen: 127.0.0.1:0\nupstreams:\n  origin: {{ url: \"{}\" }}\nroutes:\n  - {{ name: p, match: {{ path: \"/{{*rest}}\" }}, upstream: origin }}\n",
        upstream.url()
    );
    let config = junction_gateway::config::load_str(&yaml, "test.yaml").unwrap();
    let listeners = Listeners {
        data: TcpListener::bind("127.0.0.1:0").await.unwrap(),
        admin: TcpListener::bind("127.0.0.1:0").await.unwrap(),
    };
    let running = app::spawn(config, listeners).unwrap();
    let (up, data) = (upstream.addr(), running.data);
    let (direct, proxied) = tokio::task::spawn_blocking(move || {
        let n = 2000;
        (allocations_per_get(up, n), allocations_per_get(data, n))
    })
    .await
    .unwrap();
    let junction = proxied - direct;
    println!(
        "allocations per GET: {direct:.2} straight to the upstream, {proxied:.2} through Junction: {junction:.2} are Junction's"
    );
    assert!(
        direct > 0.0,
        "the counter counts nothing: the test measures nothing"
    );
    assert!(
        junction <= MAX_PER_PROXIED_GET,
        "a proxied GET now makes {junction:.2} allocations in Junction (bound {MAX_PER_PROXIED_GET}): \
         find the new one or, if it is needed, raise the bound with the reason"
    );
    running.shutdown.cancel();
}
