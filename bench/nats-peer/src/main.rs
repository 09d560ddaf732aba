//! NATS JetStream's own client publishing with acks: `--publishers` tasks, each
//! publishing a `--size`-byte message to a file-storage stream and awaiting its
//! ack before the next, for `--duration` after `--warmup`. Prints one
//! `PEERJSON {...}` line (rate, latency percentiles), like bench/rabbit-peer.
//! `--rate R` paces the publishers to R messages/s in total (0, the default,
//! is the closed loop).

use async_nats::jetstream::{self, stream};
use std::time::{Duration, Instant};

struct Args {
    url: String,
    publishers: usize,
    duration: Duration,
    warmup: Duration,
    size: usize,
    stream: String,
    rate: f64,
}

fn parse_args() -> Args {
    let mut a = Args {
        url: "nats://127.0.0.1:4222".into(),
        publishers: 64,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        size: 207,
        stream: "junction_bench_peer".into(),
        rate: 0.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let secs = |v: &str| Duration::from_secs_f64(v.parse().expect("seconds"));
        match flag.as_str() {
            "--url" => a.url = value,
            "--publishers" => a.publishers = value.parse().expect("a count"),
            "--duration" => a.duration = secs(&value),
            "--warmup" => a.warmup = secs(&value),
            "--size" => a.size = value.parse().expect("bytes"),
            "--stream" => a.stream = value,
            "--rate" => a.rate = value.parse().expect("messages per second"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

#[tokio::main]
async fn main() -> Result<(), async_nats::Error> {
    let args = parse_args();
    let client = async_nats::connect(&args.url).await?;
    let js = jetstream::new(client);
    let _ = js.delete_stream(&args.stream).await;
    let subject = format!("{}.events", args.stream);
    js.create_stream(stream::Config {
        name: args.stream.clone(),
        subjects: vec![subject.clone()],
        storage: stream::StorageType::File,
        ..Default::default()
    })
    .await?;
    let payload = vec![b'x'; args.size];
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let every =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.publishers as f64 / args.rate));
    let mut tasks = Vec::with_capacity(args.publishers);
    for i in 0..args.publishers {
        let (js, subject, payload) = (js.clone(), subject.clone(), payload.clone());
        let mut slots = every.map(|e| {
            // Spread the publishers' first slots over one interval.
            let first = tokio::time::Instant::now() + e.mul_f64(i as f64 / args.publishers as f64);
            tokio::time::interval_at(first, e)
        });
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut errors = 0u64;
            while Instant::now() < end {
                if let Some(slots) = &mut slots {
                    slots.tick().await;
                }
                let t0 = Instant::now();
                let acked = match js.publish(subject.clone(), payload.clone().into()).await {
                    Ok(ack) => ack.await.is_ok(),
                    Err(_) => false,
                };
                let took = t0.elapsed();
                if t0 >= measure_from && Instant::now() <= end {
                    if acked {
                        lat.push(took.as_micros() as u64);
                    } else {
                        errors += 1;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let (mut all, mut errors) = (Vec::new(), 0);
    for t in tasks {
        let (lat, e) = t.await.expect("publisher task panicked");
        all.extend(lat);
        errors += e;
    }
    all.sort_unstable();
    let pct = |p: f64| -> u64 {
        if all.is_empty() {
            return 0;
        }
        all[((p / 100.0) * (all.len() - 1) as f64).round() as usize]
    };
    let secs = args.duration.as_secs_f64();
    println!(
        "PEERJSON {{\"confirmed\":{},\"seconds\":{:.3},\"rps\":{:.1},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"max_us\":{},\"nacks\":{},\"publishers\":{},\"size\":{},\"rate\":{}}}",
        all.len(),
        secs,
        all.len() as f64 / secs,
        pct(50.0),
        pct(90.0),
        pct(99.0),
        all.last().copied().unwrap_or(0),
        errors,
        args.publishers,
        args.size,
        args.rate
    );
    let _ = js.delete_stream(&args.stream).await;
    Ok(())
}
