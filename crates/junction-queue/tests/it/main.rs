//! Integration tests of junction-queue, compiled into one binary to keep link time down.

mod conformance;
mod embedded;
mod kafka;
mod model;
mod nats;
mod rabbitmq;
mod redis;
mod sqs;
mod support;
