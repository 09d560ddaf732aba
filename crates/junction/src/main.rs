//! The `junction` command: serve, check, demo.

mod analyze;
mod demo;

use clap::{Parser, Subcommand};

/// mimalloc: the data plane allocates small, short-lived buffers per request;
/// glibc malloc showed up at ~10% of CPU under load, mimalloc is markedly cheaper.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use junction_gateway::app::{self, Listeners};
use junction_gateway::config;
use junction_gateway::telemetry::logs::{self, LogFormat};
use std::path::PathBuf;
use std::process::ExitCode;

/// Junction, a resilient integration gateway.
#[derive(Parser)]
#[command(version = junction_gateway::VERSION, about, long_about = None)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Text, global = true)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        /// Config file (YAML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file: exit 0, or 2 with every error as FILE:LINE:COL: message.
    Check {
        /// Config file (YAML).
        #[arg(long, short)]
        config: PathBuf,
        /// Do not check that the environment variables the config names
        /// (`admin.token_env`, subscribers' `secret_env`) are set: for CI
        /// machines without the secrets.
        #[arg(long)]
        skip_env: bool,
    },
    /// Applies the queue backend's schema migrations (PostgreSQL), then exits;
    /// `serve` applies them too, this lets a deploy run them first.
    Migrate {
        /// Config file (YAML).
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Exits 0 if a URL answers 2xx within 3 s (a container health check, where there is no curl).
    Probe {
        /// e.g. http://127.0.0.1:9090/healthz
        #[arg(long, default_value = "http://127.0.0.1:9090/healthz")]
        url: String,
    },
    /// Prints the JSON Schema of the config file (for editors: YAML language servers read it).
    Schema,
    /// Prints a shell completion script (bash, zsh, fish, elvish, powershell).
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Live terminal view of a running Junction (routes, breakers, queues, cache).
    Top {
        /// Admin API base URL.
        #[arg(long, default_value = "http://127.0.0.1:9090")]
        admin: String,
        /// Bearer token for the admin API.
        #[arg(long, env = "JUNCTION_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// Refresh interval.
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        interval: std::time::Duration,
        /// Stop after this many refreshes (default: until Ctrl-C).
        #[arg(long)]
        iterations: Option<u64>,
    },
    /// Recommendations (cache, async, trimming, idempotency, timeouts,
    /// breakers) from a running Junction or from an access log, ranked.
    Analyze {
        /// Admin API base URL of a Junction running with `analyze.enabled`.
        #[arg(long, conflicts_with = "access_log")]
        admin: Option<String>,
        /// Bearer token for the admin API.
        #[arg(long, env = "JUNCTION_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        /// An access log (`-` reads stdin): Junction's JSON, nginx combined
        /// with $request_time appended, or `GET /path took 12ms` lines.
        #[arg(long)]
        access_log: Option<PathBuf>,
        /// The log's format when detection is not wanted: junction-json,
        /// nginx-combined, node-timing.
        #[arg(long, requires = "access_log")]
        format: Option<String>,
        /// Write a starting junction.yaml with the recommendations applied (`-`: stdout).
        #[arg(long, requires = "access_log")]
        emit_config: Option<PathBuf>,
        /// Where an upstream listens, for --emit-config: NAME=URL (repeatable).
        #[arg(long = "upstream", value_name = "NAME=URL")]
        upstreams: Vec<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Run the ERP case study before/after Junction, print the table, write the plot.
    Demo {
        /// Built-in scenario (erp-peak) or a scenario file.
        #[arg(long, default_value = "erp-peak")]
        scenario: String,
        /// Length of each run (e.g. 30s); when given, the demo exits after the report.
        #[arg(long, value_parser = humantime::parse_duration)]
        duration: Option<std::time::Duration>,
        /// Order syncs started per second.
        #[arg(long)]
        rate: Option<f64>,
        /// Scale every latency and outage window (0.1 runs ten times faster).
        #[arg(long)]
        time_scale: Option<f64>,
        /// Where the report, plot, generated config and queue are written.
        #[arg(long, default_value = "junction-demo")]
        out_dir: PathBuf,
        /// Hide progress bars.
        #[arg(long)]
        quiet: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The demo draws progress bars and a table; per-request logs would drown them.
    let default_level = if matches!(cli.command, Command::Demo { .. }) {
        "warn"
    } else {
        "info"
    };
    if !matches!(cli.command, Command::Serve { .. }) {
        // `serve` starts logging once its config (which may name a collector) is loaded.
        logs::init(cli.log_format, default_level, None, None).expect("plain logging cannot fail");
    }
    match cli.command {
        Command::Check { config, skip_env } => match config::load_file(&config) {
            Ok(c) => {
                let missing = if skip_env {
                    Vec::new()
                } else {
                    c.missing_env()
                };
                if !missing.is_empty() {
                    for (key, var) in &missing {
                        eprintln!(
                            "{}: {key}: environment variable {var} is not set (serve needs it; --skip-env skips this check)",
                            config.display()
                        );
                    }
                    eprintln!("{} error(s)", missing.len());
                    return ExitCode::from(2);
                }
                if c.routes.is_empty() {
                    eprintln!(
                        "{}: warning: the config defines no routes; every request would get 404",
                        config.display()
                    );
                }
                println!(
                    "{}: ok ({} upstreams, {} routes)",
                    config.display(),
                    c.upstreams.len(),
                    c.routes.len()
                );
                ExitCode::SUCCESS
            }
            Err(errors) => {
                for e in &errors {
                    eprintln!("{e}");
                }
                eprintln!("{} error(s)", errors.len());
                ExitCode::from(2)
            }
        },
        Command::Demo {
            scenario,
            duration,
            rate,
            time_scale,
            out_dir,
            quiet,
        } => {
            let args = demo::DemoArgs {
                scenario,
                duration,
                rate,
                time_scale,
                out_dir,
                progress: !quiet,
            };
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            match rt.block_on(demo::run(args)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Analyze {
            admin,
            token,
            access_log,
            format,
            emit_config,
            upstreams,
            json,
        } => match analyze::run(analyze::AnalyzeArgs {
            admin,
            token,
            access_log,
            format,
            emit_config,
            upstreams,
            json,
        }) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: {e:#}");
                ExitCode::FAILURE
            }
        },
        Command::Migrate { config } => {
            let c = match config::load_file(&config) {
                Ok(c) => c,
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{e}");
                    }
                    return ExitCode::from(2);
                }
            };
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            match rt.block_on(junction_gateway::pipeline::migrate(&c)) {
                Ok(line) => {
                    println!("{line}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Probe { url } => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio runtime");
            match rt.block_on(probe(&url)) {
                Ok(status) if (200..300).contains(&status) => ExitCode::SUCCESS,
                Ok(status) => {
                    eprintln!("{url}: {status}");
                    ExitCode::FAILURE
                }
                Err(e) => {
                    eprintln!("{url}: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Schema => {
            let schema = schemars::schema_for!(config::Config);
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).expect("a schema serializes")
            );
            ExitCode::SUCCESS
        }
        Command::Completions { shell } => {
            use clap::CommandFactory;
            clap_complete::generate(
                shell,
                &mut Cli::command(),
                "junction",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
        Command::Top {
            admin,
            token,
            interval,
            iterations,
        } => {
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            match rt.block_on(junction_telemetry::top::run_top(
                &admin,
                token.as_deref(),
                interval,
                iterations,
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Serve { config } => {
            let cfg = match config::load_file(&config) {
                Ok(c) => c,
                Err(errors) => {
                    for e in &errors {
                        eprintln!("{e}");
                    }
                    return ExitCode::from(2);
                }
            };
            let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
            let otlp = cfg.telemetry.otlp_endpoint.as_deref();
            let level = cfg.telemetry.log_level.as_deref();
            // The trace layer is installed whatever the config says, so a reload can turn it on.
            let logs =
                rt.block_on(async { logs::init(cli.log_format, default_level, level, Some(otlp)) });
            let spans = match logs {
                Ok(guard) => guard,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    return ExitCode::from(2);
                }
            };
            let code = match rt.block_on(serve(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            };
            // Flush buffered spans while the runtime still runs.
            drop(spans);
            code
        }
    }
}

async fn serve(cfg: config::Config) -> anyhow::Result<()> {
    let listeners = Listeners::bind(&cfg).await?;
    let shutdown = app::Shutdown::default();
    let steps = shutdown.clone();
    let drain_delay = cfg.shutdown.drain_delay.0;
    let mut signals = Signals::new()?;
    tokio::spawn(async move {
        signals.next().await;
        tracing::info!(
            ?drain_delay,
            "shutdown requested: /readyz answers 503, still accepting for the drain delay (a second signal exits at once)"
        );
        steps.drain.cancel();
        tokio::select! {
            _ = tokio::time::sleep(drain_delay) => {}
            _ = signals.next() => exit_at_once(),
        }
        tracing::info!("drain delay over: no longer accepting; finishing in-flight work");
        steps.stop.cancel();
        signals.next().await;
        exit_at_once();
    });
    app::run(cfg, listeners, shutdown).await
}

/// A second SIGTERM / Ctrl-C: leave without waiting for in-flight work (an
/// accepted event is durable already; an interrupted delivery goes out again).
fn exit_at_once() -> ! {
    tracing::warn!("second shutdown signal: exiting at once");
    std::process::exit(1)
}

/// SIGTERM and SIGINT (Ctrl-C), registered once so no signal between two waits is lost.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> anyhow::Result<Self> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{signal, SignalKind};
            Ok(Self {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Self {})
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// One plain-HTTP GET of `url` within 3 s; the answer's status code.
async fn probe(url: &str) -> anyhow::Result<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let uri: http::Uri = url.parse()?;
    anyhow::ensure!(
        uri.scheme_str() == Some("http"),
        "only http:// URLs can be probed"
    );
    let host = uri
        .host()
        .ok_or_else(|| anyhow::anyhow!("no host in {url}"))?;
    let port = uri.port_u16().unwrap_or(80);
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    let ask = async {
        let mut stream = tokio::net::TcpStream::connect((host, port)).await?;
        let request =
            format!("GET {path} HTTP/1.1\r\nhost: {host}:{port}\r\nconnection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut head = vec![0u8; 64];
        let n = stream.read(&mut head).await?;
        let line = String::from_utf8_lossy(&head[..n]).into_owned();
        line.split_whitespace()
            .nth(1)
            .and_then(|code| code.parse::<u16>().ok())
            .ok_or_else(|| anyhow::anyhow!("not an HTTP answer: {line:?}"))
    };
    tokio::time::timeout(std::time::Duration::from_secs(3), ask)
        .await
        .map_err(|_| anyhow::anyhow!("no answer within 3s"))?
}
