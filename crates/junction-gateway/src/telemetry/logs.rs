//! Logging on stderr with a filter that a config reload can change.
//!
//! Precedence: `RUST_LOG` when set (an operator's override wins, at start and
//! on every reload), else `telemetry.log_level` from the config, else the
//! command's default (`info`; `warn` for the demo). The filter is behind a
//! `tracing_subscriber::reload` layer, so [`set_level`] swaps it without
//! losing a line. Colours only on a terminal.

use std::io::IsTerminal;
use std::sync::OnceLock;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Layer};

/// Human-readable text, or one JSON object per line.
#[derive(Clone, Copy, Debug, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable text.
    Text,
    /// One JSON object per line.
    Json,
}

/// Swaps the running filter (set once, by [`init`]).
type Swap = Box<dyn Fn(EnvFilter) -> Result<(), reload::Error> + Send + Sync>;
static SWAP: OnceLock<Swap> = OnceLock::new();
/// The command's level, used when a reloaded config sets none.
static DEFAULT_LEVEL: OnceLock<String> = OnceLock::new();

/// Whether `RUST_LOG` is set (not empty).
fn env_set() -> bool {
    std::env::var_os(EnvFilter::DEFAULT_ENV).is_some_and(|v| !v.is_empty())
}

/// Whether `RUST_LOG` decided the filter at start (set and valid): the
/// config's level is then never applied.
static ENV_DECIDES: OnceLock<bool> = OnceLock::new();

/// Checks a `telemetry.log_level` value (`RUST_LOG` syntax).
pub fn parse_level(directives: &str) -> Result<EnvFilter, String> {
    EnvFilter::try_new(directives).map_err(|e| format!("invalid log filter {directives:?}: {e}"))
}

/// Starts logging. With `traces` (the `serve` command), the trace layer is
/// installed too, exporting to the endpoint it names (if any) and switchable
/// by a reload; call inside a Tokio runtime then, and drop the guard before
/// the runtime to flush.
pub fn init(
    format: LogFormat,
    default_level: &str,
    config_level: Option<&str>,
    traces: Option<Option<&str>>,
) -> anyhow::Result<Option<super::otel::OtelGuard>> {
    let _ = DEFAULT_LEVEL.set(default_level.to_owned());
    let fallback = || match config_level {
        Some(level) => parse_level(level).map_err(anyhow::Error::msg),
        None => Ok(EnvFilter::new(default_level)),
    };
    let from_env = match env_set() {
        true => match EnvFilter::try_from_default_env() {
            Ok(f) => Some(f),
            Err(e) => {
                // Logging is not up yet: say it on stderr, and log by the config.
                eprintln!(
                    "warning: RUST_LOG is not a valid filter ({e}); using the configured level"
                );
                None
            }
        },
        false => None,
    };
    let _ = ENV_DECIDES.set(from_env.is_some());
    let filter = match from_env {
        Some(f) => f,
        None => fallback()?,
    };
    match traces {
        None => {
            tracing_subscriber::registry()
                .with(lines(format).with_filter(reloadable(filter, None)))
                .init();
            Ok(None)
        }
        Some(endpoint) => {
            let (spans, guard) = super::otel::layer(endpoint)?;
            // Spans are for the collector only: the log lines stay as they are.
            let quiet = format!("{}=off", super::otel::TARGET);
            tracing_subscriber::registry()
                .with(spans)
                .with(lines(format).with_filter(reloadable(filter, Some(quiet))))
                .init();
            Ok(Some(guard))
        }
    }
}

/// The log lines on stderr, in `format`.
fn lines<S>(format: LogFormat) -> Box<dyn Layer<S> + Send + Sync>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    let lines = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    match format {
        LogFormat::Text => lines.boxed(),
        LogFormat::Json => lines.json().flatten_event(true).boxed(),
    }
}

/// `filter` behind a reload layer whose handle [`set_level`] uses; `quiet` is
/// a directive every filter keeps.
fn reloadable<S: 'static>(filter: EnvFilter, quiet: Option<String>) -> reload::Layer<EnvFilter, S> {
    let keep_quiet = move |f: EnvFilter| match &quiet {
        Some(d) => f.add_directive(d.parse().expect("a valid directive")),
        None => f,
    };
    let (layer, handle) = reload::Layer::new(keep_quiet(filter));
    let _ = SWAP.set(Box::new(move |f| handle.reload(keep_quiet(f))));
    layer
}

/// Applies a reloaded config's `telemetry.log_level` (`None`: back to the
/// command's default).
/// Does nothing while `RUST_LOG` decides, or before logging started.
pub fn set_level(config_level: Option<&str>) -> Result<(), String> {
    if ENV_DECIDES.get().copied().unwrap_or(false) {
        tracing::info!("telemetry.log_level not applied: RUST_LOG is set and takes precedence");
        return Ok(());
    }
    let Some(swap) = SWAP.get() else {
        return Ok(());
    };
    let directives = config_level
        .or(DEFAULT_LEVEL.get().map(String::as_str))
        .unwrap_or("info");
    swap(parse_level(directives)?).map_err(|e| e.to_string())?;
    tracing::info!(log_level = directives, "log level changed");
    Ok(())
}
