//! `junction top`: the dashboard's overview numbers in a terminal.
//!
//! Why: on a server with only SSH, an operator still wants "which route is slow,
//! which breaker is open, is the queue draining" at a glance. [`run_top`] polls
//! `GET /admin/overview` (shape documented in [`crate::dashboard`]) and redraws
//! a table: clear screen and ANSI colours on a terminal, plain frames one after
//! another otherwise (pipes, logs, tests). [`render_overview`] is the pure part.

use anyhow::{bail, Context as _};
use serde_json::Value;
use std::fmt::Write as _;
use std::io::{IsTerminal as _, Write as _};
use std::time::Duration;

#[path = "top_keys.rs"]
mod keys;
#[path = "top_table.rs"]
mod table;

use keys::{Action, Keys, SortKey, View};
use std::collections::HashMap;
use std::time::Instant;
use table::{bytes, count, ms, pct, rate, state_style, Align, Style, Table};

/// Polls `{admin_url}/admin/overview` every `interval` and redraws the table,
/// `iterations` times (forever when `None`, until Ctrl-C or `q`). On a
/// terminal, keys sort the tables and show help (see [`keys`]).
///
/// A failed poll is shown in place of the table and polling goes on; a 401 ends
/// at once (no token or a wrong one), and so does a failure of the last poll
/// when `iterations` is given.
pub async fn run_top(
    admin_url: &str,
    token: Option<&str>,
    interval: Duration,
    iterations: Option<u64>,
) -> anyhow::Result<()> {
    let url = format!("{}/admin/overview", admin_url.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .context("building the HTTP client")?;
    let tty = std::io::stdout().is_terminal();
    let width = std::env::var("COLUMNS")
        .ok()
        .and_then(|c| c.parse::<usize>().ok())
        .filter(|w| *w >= 40)
        .unwrap_or(if tty { 100 } else { 120 });
    let mut ticker = tokio::time::interval(interval.max(Duration::from_millis(100)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    // SIGTERM (a `kill`, a closing tmux pane) ends it like `q`: the terminal
    // is put back out of raw mode instead of left unusable.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    if tty {
        print!("\x1b[?25l");
    }
    let interactive = tty && std::io::stdin().is_terminal();
    let mut keys = Keys::start(interactive);
    let mut view = View::default();
    let mut rates = Rates::default();
    let mut shown: Option<Result<Value, String>> = None;
    let mut done = 0u64;
    let outcome = loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut ctrl_c => break Ok(()),
            _ = term.recv() => break Ok(()),
            (c, ctrl) = keys.next() => {
                match view.key(c, ctrl) {
                    Action::Quit => break Ok(()),
                    Action::Redraw => {
                        if let Some(last) = &shown {
                            draw(last, &Header { admin_url, interval, url: &url }, width, tty, interactive.then_some(&view), &rates, keys.raw());
                        }
                    }
                    Action::None => {}
                }
                continue;
            }
        }
        done += 1;
        let last = iterations.is_some_and(|n| done >= n);
        let polled = fetch(&client, &url, token).await;
        if let Ok(json) = &polled {
            rates.observe(json);
        }
        let drawn = match &polled {
            Ok(json) => Ok(json.clone()),
            Err(e) => Err(format!("{e:#}")),
        };
        draw(
            &drawn,
            &Header {
                admin_url,
                interval,
                url: &url,
            },
            width,
            tty,
            interactive.then_some(&view),
            &rates,
            keys.raw(),
        );
        shown = Some(drawn);
        match polled {
            Err(e) if e.downcast_ref::<Unauthorized>().is_some() => break Err(e),
            Err(e) if last => break Err(e),
            _ if last => break Ok(()),
            _ => {}
        }
    };
    if tty {
        print!("\x1b[?25h");
        let _ = std::io::stdout().flush();
    }
    outcome
}

/// The admin API answered 401.
#[derive(Debug)]
struct Unauthorized;

impl std::fmt::Display for Unauthorized {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the admin API needs a bearer token (set --token or JUNCTION_ADMIN_TOKEN)")
    }
}

impl std::error::Error for Unauthorized {}

async fn fetch(client: &reqwest::Client, url: &str, token: Option<&str>) -> anyhow::Result<Value> {
    let mut req = client.get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.context("request failed")?;
    let status = resp.status();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return Err(Unauthorized.into());
    }
    if !status.is_success() {
        let text = resp.text().await.unwrap_or_default();
        bail!(
            "HTTP {status}: {}",
            text.chars().take(200).collect::<String>()
        );
    }
    resp.json::<Value>().await.context("the answer is not JSON")
}

/// The first line of every frame.
struct Header<'a> {
    admin_url: &'a str,
    interval: Duration,
    url: &'a str,
}

/// Writes one frame: the header, the keys' note (interactive only), the
/// tables or the poll's error.
fn draw(
    polled: &Result<Value, String>,
    header: &Header<'_>,
    width: usize,
    tty: bool,
    view: Option<&View>,
    rates: &Rates,
    raw: bool,
) {
    let mut frame = String::new();
    if tty {
        frame.push_str("\x1b[H\x1b[2J");
    }
    let _ = write!(
        frame,
        "junction top · {} · every {}",
        header.admin_url,
        fmt_interval(header.interval)
    );
    if let Some(v) = view {
        let _ = write!(frame, " · {}", v.status());
    }
    frame.push('\n');
    if let Some(help) = view.and_then(View::help_lines) {
        frame.push_str(help);
    }
    match polled {
        Ok(json) => frame.push_str(&render_view(
            json,
            width,
            tty,
            view.copied().unwrap_or_default(),
            rates,
        )),
        Err(e) => {
            let _ = writeln!(frame, "cannot read {}: {e}", header.url);
        }
    }
    if !tty {
        frame.push('\n');
    }
    if raw {
        // Raw mode does not turn a line feed into a new line.
        frame = frame.replace('\n', "\r\n");
    }
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(frame.as_bytes());
    let _ = out.flush();
}

/// Delivered per second by subscriber, from the last two polls.
#[derive(Default)]
struct Rates {
    last: HashMap<String, (u64, Instant)>,
    per_sec: HashMap<String, f64>,
}

impl Rates {
    fn observe(&mut self, json: &Value) {
        let now = Instant::now();
        for s in list(json, "subscribers") {
            let (Some(name), Some(delivered)) = (
                s.get("name").and_then(Value::as_str),
                s.get("delivered").and_then(Value::as_u64),
            ) else {
                continue;
            };
            if let Some((before, at)) = self.last.get(name) {
                let secs = now.duration_since(*at).as_secs_f64();
                if secs > 0.0 {
                    let rate = delivered.saturating_sub(*before) as f64 / secs;
                    self.per_sec.insert(name.to_owned(), rate);
                }
            }
            self.last.insert(name.to_owned(), (delivered, now));
        }
    }
}

fn fmt_interval(d: Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// The overview as plain text, every line at most `width` characters.
pub fn render_overview(json: &Value, width: usize) -> String {
    render(json, width, false)
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key).and_then(Value::as_str).unwrap_or("-")
}

fn list<'a>(json: &'a Value, key: &str) -> &'a [Value] {
    json.get(key)
        .and_then(Value::as_array)
        .map_or(&[], Vec::as_slice)
}

fn uptime(secs: u64) -> String {
    let (d, h, m, s) = (secs / 86_400, secs / 3_600 % 24, secs / 60 % 60, secs % 60);
    match (d, h) {
        (0, 0) => format!("{m}m {s:02}s"),
        (0, _) => format!("{h}h {m:02}m {s:02}s"),
        _ => format!("{d}d {h:02}h {m:02}m"),
    }
}

fn render(json: &Value, width: usize, ansi: bool) -> String {
    render_view(json, width, ansi, View::default(), &Rates::default())
}

/// A table's JSON field for each sort key, for routes and upstreams.
fn traffic_field(k: SortKey) -> Option<&'static str> {
    match k {
        SortKey::Name => None,
        SortKey::Rate => Some("rps"),
        SortKey::P99 => Some("p99_ms"),
        SortKey::Errors => Some("error_ratio"),
    }
}

fn render_view(json: &Value, width: usize, ansi: bool, view: View, rates: &Rates) -> String {
    let width = width.max(40);
    let routes = list(json, "routes");
    let upstreams = list(json, "upstreams");
    let open = upstreams
        .iter()
        .filter(|u| str_of(u, "state") != "closed")
        .count();
    let mut out = String::new();
    let up = json
        .get("uptime_s")
        .and_then(Value::as_u64)
        .map_or("-".into(), uptime);
    let summary = format!(
        "up {up} · {} routes · {} upstreams ({open} not closed) · {} topics",
        routes.len(),
        upstreams.len(),
        list(json, "queues").len()
    );
    out.push_str(&table::fit(&summary, width));
    out.push('\n');

    let mut t = Table::new(
        "ROUTES",
        &[
            ("KIND", Align::Left),
            ("RPS", Align::Right),
            ("P50 MS", Align::Right),
            ("P99 MS", Align::Right),
            ("ERR", Align::Right),
            ("TOTAL", Align::Right),
        ],
    );
    for r in view.sort(routes, traffic_field) {
        t.row(
            str_of(r, "name"),
            vec![
                (str_of(r, "kind").to_owned(), Style::Plain),
                (rate(r.get("rps")), Style::Plain),
                (ms(r.get("p50_ms")), Style::Plain),
                (ms(r.get("p99_ms")), Style::Plain),
                pct(r.get("error_ratio")),
                (count(r.get("count_total")), Style::Plain),
            ],
        );
    }
    t.render_into(&mut out, width, ansi);

    let mut t = Table::new(
        "UPSTREAMS",
        &[
            ("STATE", Align::Left),
            ("ERR", Align::Right),
            ("CALLS", Align::Right),
            ("IN FLIGHT", Align::Right),
            ("RPS", Align::Right),
            ("P99 MS", Align::Right),
            ("NEXT PROBE", Align::Right),
        ],
    );
    for u in view.sort(upstreams, traffic_field) {
        let state = str_of(u, "state");
        let probe = u
            .get("next_probe_in_ms")
            .and_then(Value::as_f64)
            .map_or("-".into(), |n| format!("in {:.1}s", n / 1000.0));
        let flight = format!(
            "{}/{}",
            count(u.get("in_flight")),
            count(u.get("max_concurrency"))
        );
        t.row(
            str_of(u, "name"),
            vec![
                (state.to_owned(), state_style(state)),
                pct(u.get("error_ratio")),
                (count(u.get("calls_in_window")), Style::Plain),
                (flight, Style::Plain),
                (rate(u.get("rps")), Style::Plain),
                (ms(u.get("p99_ms")), Style::Plain),
                (probe, Style::Plain),
            ],
        );
    }
    t.render_into(&mut out, width, ansi);

    let queues = list(json, "queues");
    if !queues.is_empty() {
        let mut t = Table::new(
            "QUEUES",
            &[
                ("DEPTH", Align::Right),
                ("DLQ", Align::Right),
                ("OLDEST PENDING", Align::Right),
            ],
        );
        for q in queues {
            let dlq = count(q.get("dlq_depth"));
            let dlq_style = if dlq != "0" && dlq != "-" {
                Style::Bad
            } else {
                Style::Plain
            };
            let oldest = q
                .get("oldest_pending_age_ms")
                .and_then(Value::as_f64)
                .map_or("-".into(), |n| format!("{:.1}s", n / 1000.0));
            t.row(
                str_of(q, "topic"),
                vec![
                    (count(q.get("depth")), Style::Plain),
                    (dlq, dlq_style),
                    (oldest, Style::Plain),
                ],
            );
        }
        t.render_into(&mut out, width, ansi);
    }

    // Subscribers with their delivery rate (from the last two polls) and
    // their topic's lag, so they sort by them too.
    let lag: HashMap<&str, f64> = queues
        .iter()
        .filter_map(|q| {
            Some((
                q.get("topic")?.as_str()?,
                q.get("oldest_pending_age_ms")?.as_f64()?,
            ))
        })
        .collect();
    let subscribers: Vec<Value> = list(json, "subscribers")
        .iter()
        .map(|s| {
            let rate = rates.per_sec.get(str_of(s, "name")).copied();
            let lag_ms = lag.get(str_of(s, "topic")).copied();
            let mut s = s.clone();
            if let Some(obj) = s.as_object_mut() {
                if let Some(r) = rate {
                    obj.insert("rate".into(), r.into());
                }
                if let Some(l) = lag_ms {
                    obj.insert("lag_ms".into(), l.into());
                }
            }
            s
        })
        .collect();
    if !subscribers.is_empty() {
        let mut t = Table::new(
            "SUBSCRIBERS",
            &[
                ("STATE", Align::Left),
                ("TOPIC", Align::Left),
                ("RATE/S", Align::Right),
                ("LAG", Align::Right),
                ("BACKLOG", Align::Right),
                ("DELIVERED", Align::Right),
                ("RETRYING", Align::Right),
                ("DEAD", Align::Right),
                ("P99 MS", Align::Right),
            ],
        );
        let field = |k: SortKey| match k {
            SortKey::Name => None,
            SortKey::Rate => Some("rate"),
            SortKey::P99 => Some("p99_ms"),
            SortKey::Errors => Some("dead"),
        };
        for s in view.sort(&subscribers, field) {
            let dead = count(s.get("dead"));
            let dead_style = if dead != "0" && dead != "-" {
                Style::Bad
            } else {
                Style::Plain
            };
            // Why it is not delivering, in the breaker's colours.
            let state = match str_of(s, "state") {
                "delivering" => ("delivering", "closed"),
                "paused" => ("paused: breaker open", "open"),
                "disabled" => ("disabled", "open"),
                "rate_limited" => ("rate-limited", "half-open"),
                other => (other, "closed"),
            };
            // Its own oldest waiting event when the backend counts it, else the topic's.
            let lag = s
                .get("oldest_pending_age_ms")
                .and_then(Value::as_f64)
                .or_else(|| s.get("lag_ms").and_then(Value::as_f64))
                .map_or("-".into(), |n| format!("{:.1}s", n / 1000.0));
            t.row(
                str_of(s, "name"),
                vec![
                    (state.0.to_owned(), state_style(state.1)),
                    (str_of(s, "topic").to_owned(), Style::Plain),
                    (rate(s.get("rate")), Style::Plain),
                    (lag, Style::Plain),
                    (count(s.get("backlog")), Style::Plain),
                    (count(s.get("delivered")), Style::Plain),
                    (count(s.get("retrying")), Style::Plain),
                    (dead, dead_style),
                    (ms(s.get("p99_ms")), Style::Plain),
                ],
            );
        }
        t.render_into(&mut out, width, ansi);
    }

    out.push('\n');
    match json.get("cache").filter(|c| c.is_object()) {
        Some(c) => {
            let (ratio, _) = pct(c.get("hit_ratio"));
            let line = format!(
                "CACHE  hit ratio {ratio} · hits {} · misses {} · entries {} · size {} · saved {}",
                count(c.get("hits")),
                count(c.get("misses")),
                count(c.get("entries")),
                bytes(c.get("bytes")),
                bytes(c.get("bytes_saved")),
            );
            out.push_str(&table::fit(&line, width));
        }
        None => out.push_str("CACHE  not configured"),
    }
    out.push('\n');
    out
}

#[cfg(test)]
#[path = "top_tests.rs"]
mod tests;
