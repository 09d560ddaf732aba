//! Access-log readers: so a team can try the analysis on the logs it already
//! has, before deploying anything.
//!
//! Three formats, detected from the first lines that parse:
//! - Junction's own JSON access log (`--log-format json`, target `junction::access`);
//! - nginx `combined` with `$request_time` appended (seconds, the request's end time);
//! - the line of the common Node.js timing middleware, `GET /orders/42 took 812ms`
//!   (an optional timestamp first and status before `took` are read too).
//!
//! Each reader fills what its format has; the report names what was missing.

use crate::recorder::Recorder;
use crate::sample::Sample;
use serde_json::Value;
use std::io::{BufRead, Read};

/// The longest line read; longer ones are skipped.
const MAX_LINE: usize = 64 * 1024;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// The upstream a log without upstream names is about: the service behind
/// nginx, or the Node.js service itself.
pub const BACKEND: &str = "backend";

/// A supported access-log format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Junction's JSON access log.
    Junction,
    /// nginx `combined` + `$request_time`.
    Nginx,
    /// `METHOD /path took Nms`.
    NodeTiming,
}

impl Format {
    /// The name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Format::Junction => "junction-json",
            Format::Nginx => "nginx-combined",
            Format::NodeTiming => "node-timing",
        }
    }

    /// The format called `name` (see [`Format::name`]).
    pub fn from_name(name: &str) -> Option<Self> {
        [Format::Junction, Format::Nginx, Format::NodeTiming]
            .into_iter()
            .find(|f| f.name() == name)
    }

    /// Reads one line of this format; `None` when it is not one (blank
    /// lines, other log lines interleaved).
    pub fn parse(self, line: &str) -> Option<Sample> {
        match self {
            Format::Junction => junction(line),
            Format::Nginx => nginx(line),
            Format::NodeTiming => node(line),
        }
    }
}

/// What reading a log did.
#[derive(Debug, Clone, Default)]
pub struct ReadStats {
    /// The format used.
    pub format: Option<Format>,
    /// Lines read.
    pub lines: u64,
    /// Lines that were requests.
    pub samples: u64,
    /// Lines that were not (other log lines, malformed lines).
    pub skipped: u64,
}

/// Feeds every request line of `input` to `recorder`; the format is detected
/// from the first line that parses in one of them unless given.
pub fn read(
    input: impl BufRead,
    format: Option<Format>,
    recorder: &mut Recorder,
    mut progress: impl FnMut(&ReadStats),
) -> std::io::Result<ReadStats> {
    let mut stats = ReadStats {
        format,
        ..Default::default()
    };
    let mut input = input;
    let mut raw = Vec::new();
    loop {
        raw.clear();
        let n = (&mut input)
            .take(MAX_LINE as u64 + 1)
            .read_until(b'\n', &mut raw)?;
        if n == 0 {
            break;
        }
        stats.lines += 1;
        if raw.len() > MAX_LINE && raw.last() != Some(&b'\n') {
            // Longer than any access line: skipped, with the rest of it.
            input.skip_until(b'\n')?;
            stats.skipped += 1;
            continue;
        }
        // Logs are not always clean UTF-8 (paths, user agents): read lossily.
        let line = String::from_utf8_lossy(&raw);
        let line = line.trim_end_matches(['\n', '\r']);
        let sample = match stats.format {
            Some(f) => f.parse(line),
            None => [Format::Junction, Format::Nginx, Format::NodeTiming]
                .into_iter()
                .find_map(|f| f.parse(line).map(|s| (f, s)))
                .map(|(f, s)| {
                    stats.format = Some(f);
                    s
                }),
        };
        match sample {
            Some(s) => {
                stats.samples += 1;
                recorder.record(&s);
            }
            None => stats.skipped += 1,
        }
        if stats.lines.is_multiple_of(100_000) {
            progress(&stats);
        }
    }
    Ok(stats)
}

fn unix_ms(t: OffsetDateTime) -> Option<u64> {
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

fn split_path(target: &str) -> (String, Option<String>) {
    match target.split_once('?') {
        Some((p, q)) => (p.to_owned(), Some(q.to_owned())),
        None => (target.to_owned(), None),
    }
}

fn junction(line: &str) -> Option<Sample> {
    if !line.contains("junction::access") {
        return None;
    }
    let v: Value = serde_json::from_str(line).ok()?;
    // Flattened (`--log-format json`) or nested under "fields".
    let f = if v.get("method").is_some() {
        &v
    } else {
        v.get("fields")?
    };
    let text = |k: &str| {
        f.get(k)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && *s != "-")
            .map(str::to_owned)
    };
    let route = text("route")?;
    if route == "unmatched" {
        return None;
    }
    let latency_us = f.get("duration_us").and_then(Value::as_u64).unwrap_or(0);
    let end_ms = text_ts(v.get("timestamp"));
    let caller = text("caller").or_else(|| {
        text("client").map(|c| match c.rsplit_once(':') {
            Some((ip, _)) => ip.trim_matches(['[', ']']).to_owned(),
            None => c,
        })
    });
    let (path, query) = split_path(&text("path")?);
    Some(Sample {
        at_ms: end_ms.map(|e| e.saturating_sub(latency_us / 1000)),
        route: Some(route),
        // An async route's callee is its topic, not an upstream.
        upstream: text("upstream").filter(|u| !u.starts_with("topic:")),
        method: text("method")?,
        path,
        query,
        caller,
        trace: text("trace_id"),
        status: f
            .get("status")
            .and_then(Value::as_u64)
            .and_then(|s| u16::try_from(s).ok())
            .filter(|s| (100..600).contains(s)),
        latency_us,
        ..Default::default()
    })
}

fn text_ts(v: Option<&Value>) -> Option<u64> {
    let s = v?.as_str()?;
    unix_ms(OffsetDateTime::parse(s, &Rfc3339).ok()?)
}

/// `$remote_addr - $remote_user [$time_local] "$request" $status $body_bytes_sent "$http_referer" "$http_user_agent" $request_time`
fn nginx(line: &str) -> Option<Sample> {
    let (addr, rest) = line.split_once(' ')?;
    let (_, rest) = rest.split_once('[')?;
    let (time_local, rest) = rest.split_once(']')?;
    let rest = rest.trim_start().strip_prefix('"')?;
    let (request, rest) = rest.split_once('"')?;
    let mut req = request.split(' ');
    let method = req.next()?.to_owned();
    let target = req.next()?;
    if !crate::sample::METHODS.contains(&method.as_str()) || !target.starts_with('/') {
        return None;
    }
    let mut nums = rest.split_whitespace();
    let status: u16 = nums
        .next()?
        .parse()
        .ok()
        .filter(|s| (100..600).contains(s))?;
    let bytes: Option<u64> = nums.next()?.parse().ok();
    let request_time: f64 = line.rsplit(' ').next()?.trim().parse().ok()?;
    let fmt = time::macros::format_description!(
        "[day]/[month repr:short]/[year]:[hour]:[minute]:[second] [offset_hour sign:mandatory][offset_minute]"
    );
    let end_ms = OffsetDateTime::parse(time_local, &fmt)
        .ok()
        .and_then(unix_ms);
    let latency_us = (request_time * 1e6).round() as u64;
    let (path, query) = split_path(target);
    Some(Sample {
        at_ms: end_ms.map(|e| e.saturating_sub(latency_us / 1000)),
        method,
        path,
        query,
        caller: Some(addr.to_owned()),
        upstream: Some(BACKEND.to_owned()),
        status: Some(status),
        latency_us,
        response_bytes: bytes,
        ..Default::default()
    })
}

/// `[2026-12-05T10:00:00Z] GET /orders/42 200 took 812ms`: timestamp and status optional.
fn node(line: &str) -> Option<Sample> {
    let tokens: Vec<&str> = line.split_whitespace().collect();
    let m = tokens.iter().position(|t| {
        matches!(
            *t,
            "GET" | "HEAD" | "POST" | "PUT" | "PATCH" | "DELETE" | "OPTIONS"
        )
    })?;
    let target = tokens.get(m + 1).filter(|t| t.starts_with('/'))?;
    let took = tokens.iter().skip(m + 2).position(|t| *t == "took")? + m + 2;
    let between = &tokens[m + 2..took];
    let status = between.iter().find_map(|t| {
        t.parse::<u16>()
            .ok()
            .filter(|s| (100..600).contains(s) && t.len() == 3)
    });
    let amount = tokens.get(took + 1)?;
    let (number, unit) = match amount.strip_suffix("ms") {
        Some(n) if !n.is_empty() => (n, "ms"),
        _ => match tokens.get(took + 2) {
            Some(&"ms") => (*amount, "ms"),
            Some(&"s") => (*amount, "s"),
            _ => (amount.strip_suffix('s')?, "s"),
        },
    };
    let value: f64 = number.parse().ok()?;
    let latency_us = if unit == "ms" {
        value * 1e3
    } else {
        value * 1e6
    }
    .round() as u64;
    // The middleware logs when the response finished: the start is before it.
    let at_ms = tokens[..m]
        .iter()
        .find_map(|t| {
            let t = t.trim_matches(|c| c == '[' || c == ']');
            OffsetDateTime::parse(t, &Rfc3339).ok().and_then(unix_ms)
        })
        .map(|end| end.saturating_sub(latency_us / 1000));
    let (path, query) = split_path(target);
    Some(Sample {
        at_ms,
        method: tokens[m].to_owned(),
        upstream: Some(BACKEND.to_owned()),
        path,
        query,
        status,
        latency_us,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn junction_json_lines() {
        let line = r#"{"timestamp":"2026-12-05T10:00:01.500000Z","level":"INFO","method":"GET","path":"/suppliers/sup-1","route":"supplier","status":200,"upstream":"supplier","duration_us":500000,"client":"127.0.0.1:4242","caller":"-","trace_id":"4bf92f3577b34da6a3ce929d0e0e4736","attempts":1,"cache":"-","target":"junction::access"}"#;
        let s = Format::Junction.parse(line).expect("parses");
        assert_eq!(s.method, "GET");
        assert_eq!(s.route.as_deref(), Some("supplier"));
        assert_eq!(s.status, Some(200));
        assert_eq!(s.latency_us, 500_000);
        assert_eq!(s.caller.as_deref(), Some("127.0.0.1"));
        assert_eq!(s.at_ms, Some(1_796_464_801_500 - 500));
        assert!(Format::Junction
            .parse("{\"target\":\"junction::reload\"}")
            .is_none());
    }

    #[test]
    fn nginx_combined_with_request_time() {
        let line = r#"10.0.0.7 - - [05/Dec/2026:10:00:01 +0000] "GET /orders/42?fields=id HTTP/1.1" 200 512 "-" "curl/8.5.0" 0.812"#;
        let s = Format::Nginx.parse(line).expect("parses");
        assert_eq!((s.method.as_str(), s.path.as_str()), ("GET", "/orders/42"));
        assert_eq!(s.query.as_deref(), Some("fields=id"));
        assert_eq!(s.status, Some(200));
        assert_eq!(s.response_bytes, Some(512));
        assert_eq!(s.latency_us, 812_000);
        assert_eq!(s.caller.as_deref(), Some("10.0.0.7"));
        assert_eq!(s.at_ms, Some(1_796_464_801_000 - 812));
        assert!(Format::Nginx.parse("not a log line").is_none());
        let propfind = line.replace("GET /orders", "PROPFIND /orders");
        assert!(
            Format::Nginx.parse(&propfind).is_none(),
            "a method Junction cannot route"
        );
        assert!(Format::Nginx
            .parse(&line.replace(" 200 512", " 65736 512"))
            .is_none());
    }

    #[test]
    fn node_timing_lines() {
        let s = Format::NodeTiming
            .parse("GET /orders/42 took 812ms")
            .expect("parses");
        assert_eq!(s.latency_us, 812_000);
        assert_eq!(s.status, None);
        assert_eq!(s.at_ms, None);
        let s = Format::NodeTiming
            .parse("[2026-12-05T10:00:01Z] POST /orders 201 took 1.5 s")
            .expect("parses");
        assert_eq!(s.status, Some(201));
        assert_eq!(s.latency_us, 1_500_000);
        assert_eq!(s.at_ms, Some(1_796_464_801_000 - 1_500));
        assert!(Format::NodeTiming.parse("GET took 5ms").is_none());
        assert!(Format::NodeTiming.parse("server started in 5ms").is_none());
    }

    #[test]
    fn the_format_is_detected_and_other_lines_skipped() {
        let mut log = b"starting\nGET /a/1 took 5ms\nGET /a/\xfe2 took 7ms\n\n".to_vec();
        // A line past the limit is skipped whole; the next one still reads.
        log.extend(std::iter::repeat_n(b'x', MAX_LINE + 10));
        log.extend(b"\nGET /a/3 took 1ms");
        let mut rec = Recorder::new(crate::Settings {
            window: None,
            ..Default::default()
        });
        let stats = read(log.as_slice(), None, &mut rec, |_| {}).expect("reads");
        assert_eq!(stats.format, Some(Format::NodeTiming));
        assert_eq!((stats.lines, stats.samples, stats.skipped), (6, 3, 3));
        assert_eq!(rec.endpoints()[0].template, "/a/{id}");
    }
}
