//! The broker's own client publishing durably, awaiting each acknowledgement:
//! `--broker kafka` produces with rdkafka (idempotent, `acks=all`) to a topic
//! of `--partitions`; `--broker sqs` publishes with the AWS SDK to an SNS
//! topic fanned out to `--fanout` SQS queues (what Junction's SQS backend
//! does per event). `--publishers` tasks, each awaiting its ack before the
//! next, for `--duration` after `--warmup`. Prints one `PEERJSON {...}` line,
//! like bench/rabbit-peer and bench/nats-peer, and removes what it created.
//! `--rate R` paces the publishers to R messages/s in total (0, the default,
//! is the closed loop).

use std::sync::Arc;
use std::time::{Duration, Instant};

struct Args {
    broker: String,
    url: String,
    publishers: usize,
    duration: Duration,
    warmup: Duration,
    size: usize,
    partitions: i32,
    fanout: usize,
    rate: f64,
}

fn parse_args() -> Args {
    let mut a = Args {
        broker: "kafka".into(),
        url: "127.0.0.1:9092".into(),
        publishers: 64,
        duration: Duration::from_secs(10),
        warmup: Duration::from_secs(2),
        size: 207,
        partitions: 6,
        fanout: 3,
        rate: 0.0,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let value = it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        let secs = |v: &str| Duration::from_secs_f64(v.parse().expect("seconds"));
        match flag.as_str() {
            "--broker" => a.broker = value,
            "--url" => a.url = value,
            "--publishers" => a.publishers = value.parse().expect("a count"),
            "--duration" => a.duration = secs(&value),
            "--warmup" => a.warmup = secs(&value),
            "--size" => a.size = value.parse().expect("bytes"),
            "--partitions" => a.partitions = value.parse().expect("a count"),
            "--fanout" => a.fanout = value.parse().expect("a count"),
            "--rate" => a.rate = value.parse().expect("messages per second"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// One durable publish, `Ok` once acknowledged.
type Publish = Arc<
    dyn Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = bool> + Send>> + Send + Sync,
>;

async fn kafka(args: &Args, name: &str) -> (Publish, Box<dyn FnOnce() + Send>) {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::producer::{FutureProducer, FutureRecord};
    use rdkafka::ClientConfig;
    let admin: AdminClient<_> = ClientConfig::new()
        .set("bootstrap.servers", &args.url)
        .create()
        .expect("kafka admin");
    let opts = AdminOptions::new();
    admin
        .create_topics(
            [&NewTopic::new(
                name,
                args.partitions,
                TopicReplication::Fixed(1),
            )],
            &opts,
        )
        .await
        .expect("create topic");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &args.url)
        .set("enable.idempotence", "true")
        .set("acks", "all")
        .set("linger.ms", "1")
        .create()
        .expect("kafka producer");
    let (topic, payload) = (name.to_owned(), vec![b'x'; args.size]);
    let publish: Publish = Arc::new(move || {
        let (producer, topic, payload) = (producer.clone(), topic.clone(), payload.clone());
        Box::pin(async move {
            let record: FutureRecord<'_, str, [u8]> = FutureRecord::to(&topic).payload(&payload);
            producer.send(record, Duration::from_secs(5)).await.is_ok()
        })
    });
    let name = name.to_owned();
    let cleanup = Box::new(move || {
        let rt = tokio::runtime::Handle::current();
        let _ = std::thread::spawn(move || {
            rt.block_on(admin.delete_topics(&[&name], &AdminOptions::new()))
        })
        .join();
    });
    (publish, cleanup)
}

async fn sqs(args: &Args, name: &str) -> (Publish, Box<dyn FnOnce() + Send>) {
    let sdk = aws_config::from_env().endpoint_url(&args.url).load().await;
    let (sns, sqs) = (
        aws_sdk_sns::Client::new(&sdk),
        aws_sdk_sqs::Client::new(&sdk),
    );
    let arn = sns
        .create_topic()
        .name(name)
        .send()
        .await
        .expect("topic")
        .topic_arn
        .unwrap();
    let mut queues = Vec::new();
    for i in 0..args.fanout {
        let url = sqs
            .create_queue()
            .queue_name(format!("{name}-{i}"))
            .send()
            .await
            .expect("queue")
            .queue_url
            .unwrap();
        let qarn = sqs
            .get_queue_attributes()
            .queue_url(&url)
            .attribute_names(aws_sdk_sqs::types::QueueAttributeName::QueueArn)
            .send()
            .await
            .expect("queue arn")
            .attributes
            .unwrap()[&aws_sdk_sqs::types::QueueAttributeName::QueueArn]
            .clone();
        sns.subscribe()
            .topic_arn(&arn)
            .protocol("sqs")
            .endpoint(qarn)
            .attributes("RawMessageDelivery", "true")
            .send()
            .await
            .expect("subscribe");
        queues.push(url);
    }
    let body = "x".repeat(args.size);
    let (client, topic) = (sns.clone(), arn.clone());
    let publish: Publish = Arc::new(move || {
        let (sns, arn, body) = (client.clone(), topic.clone(), body.clone());
        Box::pin(async move {
            sns.publish()
                .topic_arn(arn)
                .message(body)
                .send()
                .await
                .is_ok()
        })
    });
    let cleanup = Box::new(move || {
        let rt = tokio::runtime::Handle::current();
        let _ = std::thread::spawn(move || {
            rt.block_on(async {
                for q in queues {
                    let _ = sqs.delete_queue().queue_url(q).send().await;
                }
                let _ = sns.delete_topic().topic_arn(arn).send().await;
            })
        })
        .join();
    });
    (publish, cleanup)
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let name = format!("junction-bench-peer-{}", std::process::id());
    let (publish, cleanup) = match args.broker.as_str() {
        "kafka" => kafka(&args, &name).await,
        "sqs" => sqs(&args, &name).await,
        other => panic!("--broker is kafka or sqs, not {other}"),
    };
    let start = Instant::now();
    let measure_from = start + args.warmup;
    let end = measure_from + args.duration;
    let every =
        (args.rate > 0.0).then(|| Duration::from_secs_f64(args.publishers as f64 / args.rate));
    let mut tasks = Vec::with_capacity(args.publishers);
    for i in 0..args.publishers {
        let publish = publish.clone();
        let mut slots = every.map(|e| {
            // Spread the publishers' first slots over one interval.
            let first = tokio::time::Instant::now() + e.mul_f64(i as f64 / args.publishers as f64);
            tokio::time::interval_at(first, e)
        });
        tasks.push(tokio::spawn(async move {
            let (mut lat, mut errors) = (Vec::new(), 0u64);
            while Instant::now() < end {
                if let Some(slots) = &mut slots {
                    slots.tick().await;
                }
                let t0 = Instant::now();
                let acked = publish().await;
                if t0 >= measure_from && Instant::now() <= end {
                    if acked {
                        lat.push(t0.elapsed().as_micros() as u64);
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
    tokio::task::spawn_blocking(cleanup).await.expect("cleanup");
}
