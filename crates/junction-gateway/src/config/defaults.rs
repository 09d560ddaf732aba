//! Default values of config keys (named by `#[serde(default = ...)]`).

use super::{ByteSize, Dur};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub fn listen() -> SocketAddr {
    "127.0.0.1:8080".parse().expect("valid")
}
pub fn admin_listen() -> SocketAddr {
    "127.0.0.1:9090".parse().expect("valid")
}
pub fn peek_max_bytes() -> ByteSize {
    ByteSize(64 * 1024)
}
pub fn peek_redact() -> Vec<String> {
    [
        "password",
        "secret",
        "token",
        "access_token",
        "refresh_token",
        "api_key",
        "authorization",
        "card_number",
        "cvv",
        "ssn",
        "iban",
    ]
    .map(String::from)
    .to_vec()
}
pub fn queue_path() -> PathBuf {
    PathBuf::from("./data/queue")
}
pub fn max_entries() -> u64 {
    100_000
}
pub fn header_read_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
pub fn write_timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
pub fn body_timeout() -> Dur {
    Dur(Duration::from_secs(300))
}

pub fn max_header_bytes() -> ByteSize {
    ByteSize(64 << 10)
}

pub fn max_connections() -> usize {
    10_000
}

pub fn drain_delay() -> Dur {
    Dur(Duration::from_secs(5))
}

pub fn grace() -> Dur {
    Dur(Duration::from_secs(30))
}

pub fn max_variants() -> u32 {
    16
}

pub fn max_cache_bytes() -> ByteSize {
    ByteSize(256 << 20)
}
pub fn redis_prefix() -> String {
    "junction".into()
}
pub fn max_body() -> ByteSize {
    ByteSize(10 << 20)
}
pub fn buffer_budget() -> ByteSize {
    ByteSize(256 << 20)
}
pub fn caller_header() -> String {
    "x-junction-caller".into()
}
pub fn timeout() -> Dur {
    Dur(Duration::from_secs(30))
}
pub fn max_concurrency() -> usize {
    1024
}
pub fn adaptive_min() -> usize {
    4
}
pub fn adaptive_initial() -> usize {
    20
}
pub fn adaptive_tolerance() -> f64 {
    1.5
}
pub fn attempts() -> u32 {
    3
}
pub fn backoff() -> Dur {
    Dur(Duration::from_millis(100))
}
pub fn max_backoff() -> Dur {
    Dur(Duration::from_secs(2))
}
pub fn budget_percent() -> f64 {
    20.0
}
pub fn budget_min_per_sec() -> u32 {
    10
}
pub fn error_threshold() -> f64 {
    50.0
}
pub fn min_requests() -> u64 {
    20
}
pub fn window() -> Dur {
    Dur(Duration::from_secs(10))
}
pub fn reset_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}
pub fn half_open_probes() -> u32 {
    1
}
pub fn lease_ttl() -> Dur {
    Dur(junction_queue::redis::LEASE_TTL)
}
pub fn queue_prefix() -> String {
    "junction:q".into()
}
pub fn ordering_partitions() -> u16 {
    junction_queue::DEFAULT_ORDERING_PARTITIONS
}
pub fn kafka_partitions() -> i32 {
    6
}
pub fn kafka_session_timeout() -> Dur {
    Dur(std::time::Duration::from_secs(10))
}
pub fn queue_schema() -> String {
    "junction".into()
}
pub fn idempotency_window() -> Dur {
    Dur(Duration::from_secs(24 * 3600))
}
pub fn subscriber_concurrency() -> usize {
    32
}
