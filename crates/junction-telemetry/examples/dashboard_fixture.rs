//! Serves the dashboard with the test fixture's admin API, for looking at the
//! page by hand or driving `browser/run.sh` against it.
//!
//! `cargo run -p junction-telemetry --example dashboard_fixture -- [--listen 127.0.0.1:9099] [--token T]`

#[path = "../tests/fixture/mod.rs"]
mod fixture;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut listen = "127.0.0.1:9099".to_owned();
    let mut token = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--listen" => {
                listen = args
                    .next()
                    .ok_or_else(|| anyhow::anyhow!("--listen needs an address"))?
            }
            "--token" => {
                token = Some(
                    args.next()
                        .ok_or_else(|| anyhow::anyhow!("--token needs a value"))?,
                )
            }
            other => anyhow::bail!("unknown argument {other}; usage: [--listen ADDR] [--token T]"),
        }
    }
    let addr = fixture::start(&listen, token.as_deref()).await;
    println!("dashboard fixture on http://{addr}/");
    tokio::signal::ctrl_c().await?;
    Ok(())
}
