//! Storage ceiling of the embedded queue, without HTTP: 64 concurrent producers
//! enqueue for a few seconds, then 3 subscribers lease and ack the backlog.
//!
//! `cargo run --release -p junction-queue --example throughput -- [secs] [producers]`
use std::sync::Arc;
use std::time::{Duration, Instant};

use junction_queue::conformance::{now_ms, request};
use junction_queue::{AttemptRecord, EmbeddedBroker, EmbeddedConfig, IndexedStore};

const BODY: &str = r#"{"orderId":"o-000000123456","customerId":"c-98765","items":[{"sku":"SKU-1001","qty":2,"price":19.99},{"sku":"SKU-2002","qty":1,"price":5.5}],"currency":"EUR","total":45.48,"createdAt":"2024-05-01T12:00:00Z"}"#;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let producers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let dir = tempfile::tempdir().unwrap();
    let broker = EmbeddedBroker::open(EmbeddedConfig::new(dir.path()))
        .await
        .unwrap();
    let subs = ["sub-1", "sub-2", "sub-3"];
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let b = Arc::clone(&broker);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                b.enqueue(request("orders", &subs, BODY)).await.unwrap();
                lat.push(t.elapsed().as_micros() as u64);
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let took = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    let pct = |p: f64| lat[((lat.len() as f64 - 1.0) * p) as usize];
    println!(
        "enqueue: {} in {took:.2}s = {:.0}/s, p50 {} us, p99 {} us, {:?}",
        lat.len(),
        lat.len() as f64 / took,
        pct(0.5),
        pct(0.99),
        broker.commit_stats()
    );
    let start = Instant::now();
    let mut tasks = Vec::new();
    for sub in subs {
        let b = Arc::clone(&broker);
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            loop {
                let now = now_ms();
                let batch = b.lease_due(sub, now, 256).await.unwrap();
                if batch.is_empty() {
                    break n;
                }
                let acks = batch.iter().map(|d| {
                    b.ack(
                        d,
                        AttemptRecord {
                            attempt: 1,
                            at_ms: now,
                            outcome: "status 200".into(),
                            duration_ms: 0,
                            response: None,
                        },
                    )
                });
                for r in futures::future::join_all(acks).await {
                    r.unwrap();
                }
                n += batch.len() as u64;
            }
        }));
    }
    let mut n = 0;
    for t in tasks {
        n += t.await.unwrap();
    }
    let took = start.elapsed().as_secs_f64();
    println!(
        "lease+ack: {n} deliveries in {took:.2}s = {:.0}/s",
        n as f64 / took
    );
    broker.close().await.unwrap();
}
