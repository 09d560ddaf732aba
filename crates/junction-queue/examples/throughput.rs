//! Storage ceiling of the embedded queue, without HTTP: 64 concurrent producers
//! enqueue for a few seconds, then 3 subscribers lease and ack the backlog.
//!
//! `cargo run --release -p junction-queue --example throughput -- [secs] [producers]`
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use junction_queue::{AttemptRecord, Broker, EmbeddedBroker, EmbeddedConfig, EnqueueRequest};

const BODY: &[u8] = br#"{"orderId":"o-000000123456","customerId":"c-98765","items":[{"sku":"SKU-1001","qty":2,"price":19.99},{"sku":"SKU-2002","qty":1,"price":5.5}],"currency":"EUR","total":45.48,"createdAt":"2024-05-01T12:00:00Z"}"#;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let secs: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(3);
    let producers: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(64);
    let dir = tempfile_dir();
    let broker = EmbeddedBroker::open(EmbeddedConfig::new(&dir))
        .await
        .unwrap();
    let subs: Vec<String> = (1..=3).map(|i| format!("sub-{i}")).collect();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..producers {
        let (b, subs) = (Arc::clone(&broker), subs.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < deadline {
                let t = Instant::now();
                b.enqueue(EnqueueRequest {
                    topic: "orders".into(),
                    body: Bytes::from_static(BODY),
                    content_type: Some("application/json".into()),
                    headers: vec![(
                        "traceparent".into(),
                        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
                    )],
                    ordering_key: None,
                    subscribers: subs.clone(),
                    idempotency_key: None,
                    idempotency_ttl: Duration::from_secs(60),
                })
                .await
                .unwrap();
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
                let now = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_millis() as u64;
                let batch = b.lease_due(&sub, now, 256).await.unwrap();
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
                        },
                    )
                });
                futures_ack(acks).await;
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
    let _ = std::fs::remove_dir_all(&dir);
}

async fn futures_ack<F: std::future::Future<Output = Result<(), junction_queue::QueueError>>>(
    acks: impl Iterator<Item = F>,
) {
    for r in futures::future::join_all(acks).await {
        r.unwrap();
    }
}

fn tempfile_dir() -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("jq-throughput-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}
