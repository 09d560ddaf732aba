//! `junction analyze`: the ranked recommendations of a running Junction
//! (`--admin`) or of an access log (`--access-log`), and optionally a
//! starting config from the log (`--emit-config`).

use anyhow::{bail, Context, Result};
use junction_analyze::emit::UpstreamUrls;
use junction_analyze::logs::{self, Format};
use junction_analyze::{Known, Recorder, Report, Settings};
use std::io::{BufReader, IsTerminal, Write};
use std::path::PathBuf;

/// What `junction analyze` was asked.
pub struct AnalyzeArgs {
    /// A running Junction's admin URL.
    pub admin: Option<String>,
    /// Its bearer token.
    pub token: Option<String>,
    /// An access log (`-` for stdin).
    pub access_log: Option<PathBuf>,
    /// The log's format, when not detected.
    pub format: Option<String>,
    /// Write a starting config here (`-` for stdout).
    pub emit_config: Option<PathBuf>,
    /// `NAME=URL` of upstreams, for the emitted config.
    pub upstreams: Vec<String>,
    /// Print the report as JSON instead of the table.
    pub json: bool,
}

/// Runs it; the report goes to stdout, progress to stderr.
pub fn run(args: AnalyzeArgs) -> Result<()> {
    let report = match (&args.admin, &args.access_log) {
        (Some(admin), None) => {
            if args.emit_config.is_some() {
                bail!("--emit-config works from an access log (--access-log FILE)");
            }
            fetch(admin, args.token.as_deref())?
        }
        (None, Some(path)) => from_log(path, args.format.as_deref())?,
        _ => bail!("give either --admin URL or --access-log FILE"),
    };
    if let Some(out) = &args.emit_config {
        let urls = upstream_urls(&args.upstreams)?;
        let text = junction_analyze::emit::config(&report, &urls);
        if out.as_os_str() == "-" {
            print!("{text}");
            return Ok(());
        }
        std::fs::write(out, text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!(
            "wrote {} (check it with `junction check --config {}`)",
            out.display(),
            out.display()
        );
    }
    let mut stdout = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut stdout, &report)?;
        writeln!(stdout)?;
    } else {
        write!(stdout, "{}", junction_analyze::table::render(&report))?;
    }
    Ok(())
}

fn fetch(admin: &str, token: Option<&str>) -> Result<Report> {
    let url = format!("{}/admin/recommendations", admin.trim_end_matches('/'));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async {
        let mut req = reqwest::Client::new()
            .get(&url)
            .timeout(std::time::Duration::from_secs(10));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.with_context(|| format!("GET {url}"))?;
        let status = resp.status();
        if !status.is_success() {
            bail!(
                "GET {url}: {status}: {}",
                resp.text().await.unwrap_or_default()
            );
        }
        resp.json::<Report>()
            .await
            .with_context(|| format!("reading {url}"))
    })
}

fn from_log(path: &PathBuf, format: Option<&str>) -> Result<Report> {
    let format = match format {
        Some(name) => Some(Format::from_name(name).with_context(|| {
            format!("unknown --format {name}: junction-json, nginx-combined or node-timing")
        })?),
        None => None,
    };
    let mut recorder = Recorder::new(Settings {
        window: None,
        ..Settings::default()
    });
    let show = std::io::stderr().is_terminal();
    let progress = |s: &logs::ReadStats| {
        if show {
            eprint!("\r{} lines read, {} requests", s.lines, s.samples);
        }
    };
    let stats = if path.as_os_str() == "-" {
        logs::read(std::io::stdin().lock(), format, &mut recorder, progress)
    } else {
        let file =
            std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
        logs::read(BufReader::new(file), format, &mut recorder, progress)
    }
    .with_context(|| format!("reading {}", path.display()))?;
    if show {
        eprint!("\r");
    }
    let Some(format) = stats.format else {
        bail!(
            "{}: no line in a known format (Junction's JSON access log, nginx combined + $request_time, or `GET /path took 12ms`)",
            path.display()
        );
    };
    eprintln!(
        "{}: {} lines, {} requests ({}), {} other lines skipped",
        path.display(),
        stats.lines,
        stats.samples,
        format.name(),
        stats.skipped
    );
    Ok(junction_analyze::report(
        &recorder,
        &Known::default(),
        format.name(),
    ))
}

fn upstream_urls(pairs: &[String]) -> Result<UpstreamUrls> {
    pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((name, url)) if !name.is_empty() && url.starts_with("http") => {
                Ok((name.to_owned(), url.to_owned()))
            }
            _ => bail!("--upstream {p:?}: expected NAME=http://host:port"),
        })
        .collect()
}
