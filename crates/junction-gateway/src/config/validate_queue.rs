//! Checks of the `queue:` section that its types cannot express: names and
//! URLs each backend accepts, settings a backend does not support.

use super::located::{pos_of, Errors};
use super::yaml::Node;
use super::{OnFull, QueueConfig};

/// Records every problem of the queue section in `errs`.
pub(super) fn check(root: &Node, queue: Option<&QueueConfig>, errs: &mut Errors) {
    if let Some(QueueConfig::Postgres { schema, .. }) = queue {
        if !junction_queue::postgres::schema::valid_schema(schema) {
            errs.push(
                pos_of(root, &["queue", "schema"]),
                "queue.schema",
                format!("{schema:?} is not a plain schema name: use lowercase letters, digits and _ (at most 63)"),
            );
        }
    }
    if let Some(QueueConfig::Redis { lease_ttl, .. } | QueueConfig::Postgres { lease_ttl, .. }) =
        queue
    {
        if lease_ttl.0 < std::time::Duration::from_millis(300) {
            errs.push(
                pos_of(root, &["queue", "lease_ttl"]),
                "queue.lease_ttl",
                "must be at least 300ms (leases are renewed every third of it)".into(),
            );
        }
    }

    if let Some(QueueConfig::Nats {
        max_depth: Some(_),
        on_full: OnFull::Reject,
        ..
    }) = queue
    {
        errs.push(
            pos_of(root, &["queue", "max_depth"]),
            "queue.max_depth",
            "on NATS a full subscriber can only shed its oldest events: add `on_full: dead_letter_oldest` (a publish reaches every subscriber's consumer, so it cannot be refused for one alone)".into(),
        );
    }
    if let Some(QueueConfig::Nats { url, .. }) = queue {
        let scheme = url.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("nats" | "tls")) {
            errs.push(
                pos_of(root, &["queue", "url"]),
                "queue.url",
                format!("invalid NATS URL {url:?}: expected e.g. nats://127.0.0.1:4222"),
            );
        }
    }
    if let Some(
        QueueConfig::Nats {
            ordering_partitions,
            ..
        }
        | QueueConfig::Rabbitmq {
            ordering_partitions,
            ..
        },
    ) = queue
    {
        if !(1..=256).contains(ordering_partitions) {
            errs.push(
                pos_of(root, &["queue", "ordering_partitions"]),
                "queue.ordering_partitions",
                format!("{ordering_partitions} is out of range: between 1 and 256"),
            );
        }
    }
    if let Some(QueueConfig::Rabbitmq { url, .. }) = queue {
        let scheme = url.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("amqp" | "amqps")) {
            errs.push(
                pos_of(root, &["queue", "url"]),
                "queue.url",
                format!(
                    "invalid AMQP URL {url:?}: expected e.g. amqp://guest:guest@127.0.0.1:5672/%2f"
                ),
            );
        }
    }
    if let Some(QueueConfig::Kafka {
        url,
        partitions,
        replication_factor,
        session_timeout,
        ..
    }) = queue
    {
        if junction_queue::kafka::bootstrap_servers(url).is_none() {
            errs.push(
                pos_of(root, &["queue", "url"]),
                "queue.url",
                format!("invalid Kafka URL {url:?}: expected e.g. kafka://127.0.0.1:9092 (several hosts: kafka://a:9092,b:9092)"),
            );
        }
        if *partitions < 1 {
            errs.push(
                pos_of(root, &["queue", "partitions"]),
                "queue.partitions",
                "must be at least 1".into(),
            );
        }
        if replication_factor.is_some_and(|r| r < 1) {
            errs.push(
                pos_of(root, &["queue", "replication_factor"]),
                "queue.replication_factor",
                "must be at least 1 (leave it out for the broker's default)".into(),
            );
        }
        let t = session_timeout.0;
        if t < std::time::Duration::from_secs(6) || t > std::time::Duration::from_secs(300) {
            errs.push(
                pos_of(root, &["queue", "session_timeout"]),
                "queue.session_timeout",
                "must be between 6s and 5m (the brokers' default group session bounds)".into(),
            );
        }
    }
    if let Some(QueueConfig::Sqs {
        endpoint,
        prefix,
        visibility_timeout,
        ..
    }) = queue
    {
        let valid = endpoint.as_deref().is_none_or(|e| {
            e.parse::<http::Uri>().is_ok_and(|u| {
                matches!(u.scheme_str(), Some("http" | "https")) && u.host().is_some()
            })
        });
        if !valid {
            errs.push(
                pos_of(root, &["queue", "endpoint"]),
                "queue.endpoint",
                format!(
                    "invalid SQS endpoint {:?}: expected e.g. http://127.0.0.1:4566",
                    endpoint.as_deref().unwrap_or_default()
                ),
            );
        }
        let name_ok = !prefix.is_empty()
            && prefix.len() <= 40
            && prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            errs.push(
                pos_of(root, &["queue", "prefix"]),
                "queue.prefix",
                format!("{prefix:?} cannot start SQS queue names: use letters, digits, - and _ (at most 40)"),
            );
        }
        let v = visibility_timeout.0;
        if v < std::time::Duration::from_secs(1) || v > std::time::Duration::from_secs(12 * 3600) {
            errs.push(
                pos_of(root, &["queue", "visibility_timeout"]),
                "queue.visibility_timeout",
                "must be between 1s and 12h (SQS's range, in whole seconds)".into(),
            );
        }
    }
    if let Some(QueueConfig::Postgres { url, .. }) = queue {
        let scheme = url.split_once("://").map(|(s, _)| s);
        if !matches!(scheme, Some("postgres" | "postgresql")) {
            errs.push(
                pos_of(root, &["queue", "url"]),
                "queue.url",
                format!("invalid PostgreSQL URL {url:?}: expected e.g. postgres://postgres@127.0.0.1:5432/postgres"),
            );
        }
    }
}
