//! NATS JetStream's own client publishing with acks: `--publishers` tasks, each
//! publishing a `--size`-byte message to a file-storage stream and awaiting its
//! ack before the next, for `--duration` after `--warmup`. Prints one
//! `PEERJSON {...}` line (rate, latency percentiles), like bench/rabbit-peer.
//! `--rate R` paces the publishers to R messages/s in total (0, the default,
//! is the closed loop). `--consumers N` gives the stream interest retention and
//! N durable pull consumers with explicit acks (nobody pulls): the topology
//! Junction's NATS backend publishes into for a topic with N subscribers.
//! `--serve ADDR [--shape mt|tpc]` creates the stream and serves HTTP instead
//! (see `serve.rs`): the floor under an HTTP front to the same publish.

mod serve;

use async_nats::jetstream::{self, consumer, stream};
use std::time::{Duration, Instant};

struct Args {
    url: String,
    publishers: usize,
    duration: Duration,
    warmup: Duration,
    size: usize,
    stream: String,
    rate: f64,
    consumers: usize,
    serve: Option<String>,
    shape: String,
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
        consumers: 0,
        serve: None,
        shape: "mt".into(),
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
            "--consumers" => a.consumers = value.parse().expect("a count"),
            "--serve" => a.serve = Some(value),
            "--shape" => a.shape = value,
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

fn main() -> Result<(), async_nats::Error> {
    let args = parse_args();
    let rt = tokio::runtime::Runtime::new()?;
    let (js, subject) = rt.block_on(create_stream(&args))?;
    if let Some(addr) = &args.serve {
        drop((js, rt));
        serve::run(addr, &args.shape, &args.url, &subject);
        return Ok(());
    }
    rt.block_on(publish_loop(args, js, subject))
}

/// (Re)creates the stream (with `--consumers` consumers); its context and subject.
async fn create_stream(args: &Args) -> Result<(jetstream::Context, String), async_nats::Error> {
    let client = async_nats::connect(&args.url).await?;
    let js = jetstream::new(client);
    let _ = js.delete_stream(&args.stream).await;
    let subject = format!("{}.events", args.stream);
    let retention = if args.consumers > 0 {
        stream::RetentionPolicy::Interest
    } else {
        stream::RetentionPolicy::Limits
    };
    let created = js
        .create_stream(stream::Config {
            name: args.stream.clone(),
            subjects: vec![format!("{}.>", args.stream)],
            retention,
            storage: stream::StorageType::File,
            ..Default::default()
        })
        .await?;
    for i in 0..args.consumers {
        let name = format!("sub-{i}");
        created
            .create_consumer(consumer::pull::Config {
                durable_name: Some(name),
                ack_policy: consumer::AckPolicy::Explicit,
                max_ack_pending: 10_000,
                ..Default::default()
            })
            .await?;
    }
    Ok((js, subject))
}

async fn publish_loop(
    args: Args,
    js: jetstream::Context,
    subject: String,
) -> Result<(), async_nats::Error> {
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
