//! The shared conformance suite, run against the embedded broker.

junction_queue::conformance_suite!(crate::support::embedded);

/// The same suite with almost no fast-path memory: most messages overflow into the
/// journal and are loaded back as room frees up.
mod small_hot {
    junction_queue::conformance_suite!(crate::support::embedded_small_hot);
}

/// The same suite against a real Redis, one key prefix per check.
mod redis {
    junction_queue::conformance_suite!(crate::support::redis);
}

/// The same suite against a real PostgreSQL, one schema per check.
mod postgres {
    junction_queue::conformance_suite!(crate::support::postgres);
}

/// The contract suite (publisher, subscriptions with ack handles, ledger) over
/// each backend.
mod contract {
    mod embedded {
        junction_queue::queue_conformance_suite!(crate::support::embedded_queue);
    }
    mod redis {
        junction_queue::queue_conformance_suite!(crate::support::redis_queue);
    }
    mod postgres {
        junction_queue::queue_conformance_suite!(crate::support::postgres_queue);
    }
    mod rabbitmq {
        junction_queue::queue_conformance_suite!(crate::support::rabbitmq_queue);
    }
    mod nats {
        junction_queue::queue_conformance_suite!(crate::support::nats_queue);
    }
    mod kafka {
        junction_queue::queue_conformance_suite!(crate::support::kafka_queue);
    }
    mod sqs {
        junction_queue::queue_conformance_suite!(crate::support::sqs_queue);
    }
    mod sqs_fifo {
        junction_queue::queue_conformance_suite!(crate::support::sqs_fifo_queue);
    }
}
