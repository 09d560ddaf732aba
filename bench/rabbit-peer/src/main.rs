//! RabbitMQ peer for the async-enqueue benchmark.
//!
//! Measures what Junction's 202 promises, on RabbitMQ: a message is counted
//! only once the broker confirmed it (publisher confirms) into a durable queue
//! as a persistent message. N publishers run at once, each on its own channel,
//! each awaiting the confirm of its message before sending the next (the same
//! closed loop as an HTTP client awaiting a 202). Prints one `PEERJSON` line.
//!
//! `--fanout N` publishes to a fanout exchange bound to N queues (what
//! Junction's RabbitMQ backend does for a topic with N subscribers) and
//! `--queue-type quorum` makes them quorum queues (its default). `--rate R`
//! paces the publishers to R messages/s in total (each publisher waits for
//! its next slot; 0, the default, is the closed loop).
//!
//! Usage: rabbit-peer [--uri U] [--publishers N] [--duration S] [--warmup S] [--size B] [--queue Q]
//!                    [--fanout N] [--queue-type classic|quorum] [--rate R]

use lapin::options::{
    BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::publisher_confirm::Confirmation;
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{BasicProperties, Connection, ConnectionProperties, ExchangeKind};
use std::time::{Duration, Instant};

/// Command-line settings.
struct Args {
    uri: String,
    publishers: usize,
    duration: Duration,
    warmup: Duration,
    size: usize,
    queue: String,
    /// Queues bound to a fanout exchange (0: publish to one queue directly).
    fanout: usize,
    quorum: bool,
    /// Messages per second in total (0: as fast as confirms come back).
    rate: f64,
}

fn parse_args() -> Args {
    let mut a = Args {
        uri: "amqp://guest:guest@127.0.0.1:5672/%2f".into(),
        publishers: 64,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        size: 207,
        queue: "junction-bench-peer".into(),
        fanout: 0,
        quorum: false,
        rate: 0.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let secs = |v: &str| Duration::from_secs_f64(v.parse().expect("seconds"));
        match flag.as_str() {
            "--uri" => a.uri = value,
            "--publishers" => a.publishers = value.parse().expect("a count"),
            "--duration" => a.duration = secs(&value),
            "--warmup" => a.warmup = secs(&value),
            "--size" => a.size = value.parse().expect("bytes"),
            "--queue" => a.queue = value,
            "--fanout" => a.fanout = value.parse().expect("a count"),
            "--queue-type" => a.quorum = value == "quorum",
            "--rate" => a.rate = value.parse().expect("messages per second"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// What one publisher saw during the measured window.
#[derive(Default)]
struct Tally {
    latencies_us: Vec<u64>,
    nacks: u64,
}

#[tokio::main]
async fn main() -> Result<(), lapin::Error> {
    let args = parse_args();
    let conn = Connection::connect(&args.uri, ConnectionProperties::default()).await?;
    let setup = conn.create_channel().await?;
    let durable = QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    };
    let mut queue_args = FieldTable::default();
    if args.quorum {
        queue_args.insert(
            "x-queue-type".into(),
            AMQPValue::LongString(LongString::from("quorum")),
        );
    }
    // Start from empty queues so earlier runs do not weigh on this one.
    let queues: Vec<String> = match args.fanout {
        0 => vec![args.queue.clone()],
        n => (0..n).map(|i| format!("{}.{i}", args.queue)).collect(),
    };
    let exchange = if args.fanout > 0 {
        format!("{}.x", args.queue)
    } else {
        String::new()
    };
    for q in &queues {
        setup.queue_delete(q, QueueDeleteOptions::default()).await?;
        setup.queue_declare(q, durable, queue_args.clone()).await?;
    }
    if args.fanout > 0 {
        let options = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        setup
            .exchange_declare(
                &exchange,
                ExchangeKind::Fanout,
                options,
                FieldTable::default(),
            )
            .await?;
        for q in &queues {
            setup
                .queue_bind(
                    q,
                    &exchange,
                    "",
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await?;
        }
    }
    // Each publisher's slot interval at `--rate`.
    let every =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.publishers as f64 / args.rate));

    let payload = vec![b'x'; args.size];
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let mut tasks = Vec::with_capacity(args.publishers);
    for _ in 0..args.publishers {
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        let (exchange, key) = if args.fanout > 0 {
            (exchange.clone(), String::new())
        } else {
            (String::new(), args.queue.clone())
        };
        let payload = payload.clone();
        let mut slots = every.map(|e| {
            // Spread the publishers' first slots over one interval.
            let first = tokio::time::Instant::now()
                + e.mul_f64(tasks.len() as f64 / args.publishers as f64);
            tokio::time::interval_at(first, e)
        });
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let props = BasicProperties::default().with_delivery_mode(2);
            while Instant::now() < end {
                if let Some(slots) = &mut slots {
                    slots.tick().await;
                }
                let t0 = Instant::now();
                let confirm = channel
                    .basic_publish(
                        &exchange,
                        &key,
                        BasicPublishOptions::default(),
                        &payload,
                        props.clone(),
                    )
                    .await?
                    .await?;
                let took = t0.elapsed();
                if t0 >= measure_from && Instant::now() <= end {
                    match confirm {
                        Confirmation::Ack(_) => tally.latencies_us.push(took.as_micros() as u64),
                        _ => tally.nacks += 1,
                    }
                }
            }
            Ok::<Tally, lapin::Error>(tally)
        }));
    }
    let mut all = Vec::new();
    let mut nacks = 0;
    for t in tasks {
        let tally = t.await.expect("publisher task panicked")?;
        all.extend(tally.latencies_us);
        nacks += tally.nacks;
    }
    all.sort_unstable();
    let pct = |p: f64| -> u64 {
        if all.is_empty() {
            return 0;
        }
        let i = ((p / 100.0) * (all.len() - 1) as f64).round() as usize;
        all[i]
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
        nacks,
        args.publishers,
        args.size,
        args.rate
    );
    for q in &queues {
        setup.queue_delete(q, QueueDeleteOptions::default()).await?;
    }
    if args.fanout > 0 {
        setup
            .exchange_delete(&exchange, ExchangeDeleteOptions::default())
            .await?;
    }
    conn.close(200, "bye").await?;
    Ok(())
}
