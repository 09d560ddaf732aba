//! The standard `process_*` metrics (the names every Prometheus client
//! library exports, which Grafana dashboards and alerts expect): CPU seconds,
//! resident and virtual memory, open and maximum file descriptors, threads
//! and start time, read from `/proc/self` at scrape time.
//!
//! Written here because prometheus-client has no process collector; the
//! reading is four `/proc` files (`procfs` would add a dependency tree for
//! the same seven numbers). Off Linux nothing is exported.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

/// Exports `process_*` for this process.
#[derive(Debug, Default)]
pub struct ProcessCollector;

/// One reading of `/proc/self`.
#[derive(Debug, Default, PartialEq)]
struct Reading {
    cpu_seconds: f64,
    resident_bytes: f64,
    virtual_bytes: f64,
    threads: f64,
    start_time_seconds: f64,
    open_fds: f64,
    max_fds: f64,
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(r) = read() else {
            return Ok(());
        };
        let counter = ConstCounter::new(r.cpu_seconds);
        counter.encode(encoder.encode_descriptor(
            "process_cpu_seconds",
            "Total user and system CPU time spent in seconds",
            None,
            counter.metric_type(),
        )?)?;
        for (name, help, value) in [
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes",
                r.resident_bytes,
            ),
            (
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes",
                r.virtual_bytes,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors",
                r.open_fds,
            ),
            (
                "process_max_fds",
                "Maximum number of open file descriptors",
                r.max_fds,
            ),
            ("process_threads", "Number of OS threads", r.threads),
            (
                "process_start_time_seconds",
                "Start time of the process since the Unix epoch in seconds",
                r.start_time_seconds,
            ),
        ] {
            let gauge = ConstGauge::new(value);
            gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)?;
        }
        Ok(())
    }
}

#[cfg(target_os = "linux")]
fn read() -> Option<Reading> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let boot_time = std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| boot_time(&s));
    let limits = std::fs::read_to_string("/proc/self/limits").ok();
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count();
    let mut r = parse_stat(&stat, USER_HZ, boot_time)?;
    r.resident_bytes = status_kb(&status, "VmRSS:")? * 1024.0;
    r.open_fds = open_fds as f64;
    r.max_fds = limits.as_deref().and_then(max_open_files).unwrap_or(0.0);
    Some(r)
}

/// Clock ticks per second of `/proc`'s times (`sysconf(_SC_CLK_TCK)`): the
/// kernel's USER_HZ, 100 on every architecture Junction builds for (reading
/// it would take `unsafe` libc, which this workspace forbids).
#[cfg(target_os = "linux")]
const USER_HZ: f64 = 100.0;

#[cfg(not(target_os = "linux"))]
fn read() -> Option<Reading> {
    None
}

/// The fields of `/proc/self/stat` (man 5 proc): after the command name in
/// parentheses (which may hold spaces), utime and stime are fields 14 and
/// 15, num_threads 20, starttime 22 (ticks after boot), vsize 23 (bytes).
fn parse_stat(stat: &str, ticks_per_sec: f64, boot: Option<f64>) -> Option<Reading> {
    let after_comm = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name.
    let fields: Vec<&str> = after_comm.split_whitespace().collect();
    let field = |n: usize| -> Option<f64> { fields.get(n - 3)?.parse().ok() };
    let started = field(22)? / ticks_per_sec;
    Some(Reading {
        cpu_seconds: (field(14)? + field(15)?) / ticks_per_sec,
        threads: field(20)?,
        start_time_seconds: boot.map_or(0.0, |b| b + started),
        virtual_bytes: field(23)?,
        ..Reading::default()
    })
}

/// A `kB` line of `/proc/self/status` (`VmRSS:   1234 kB`).
fn status_kb(status: &str, key: &str) -> Option<f64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(key))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// `btime` (boot time, Unix seconds) from `/proc/stat`.
fn boot_time(proc_stat: &str) -> Option<f64> {
    proc_stat
        .lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse().ok())
}

/// The soft limit of "Max open files" from `/proc/self/limits`.
fn max_open_files(limits: &str) -> Option<f64> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_fields_are_read_after_a_name_with_spaces() {
        // pid (comm) state ppid pgrp session tty tpgid flags minflt cminflt
        // majflt cmajflt utime stime cutime cstime priority nice threads
        // itrealvalue starttime vsize rss ...
        let stat = "42 (my (odd) name) S 1 42 42 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 1000 8192000 300 18446744073709551615";
        let r = parse_stat(stat, 100.0, Some(1_700_000_000.0)).unwrap();
        assert_eq!(r.cpu_seconds, 3.0);
        assert_eq!(r.threads, 7.0);
        assert_eq!(r.start_time_seconds, 1_700_000_010.0);
        assert_eq!(r.virtual_bytes, 8_192_000.0);
        let status = "Name:\tjunction\nVmRSS:\t   12345 kB\nThreads:\t7\n";
        assert_eq!(status_kb(status, "VmRSS:"), Some(12345.0));
    }

    #[test]
    fn limits_and_boot_time_are_found() {
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        assert_eq!(max_open_files(limits), Some(1024.0));
        assert_eq!(
            boot_time("cpu  1 2 3\nbtime 1700000000\n"),
            Some(1_700_000_000.0)
        );
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_measured() {
        let mut r = prometheus_client::registry::Registry::default();
        r.register_collector(Box::new(ProcessCollector));
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &r).unwrap();
        for name in [
            "process_cpu_seconds_total ",
            "process_resident_memory_bytes ",
            "process_open_fds ",
            "process_max_fds ",
            "process_threads ",
            "process_start_time_seconds ",
        ] {
            assert!(text.contains(name), "{name} missing: {text}");
        }
        let rss = text
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap();
        assert!(
            rss > 1_000_000.0,
            "a test process holds more than 1 MB: {rss}"
        );
    }
}
