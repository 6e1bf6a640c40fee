//! `ward-bench`: load generators for Ward's performance work.
//!
//! `ward-bench issue` drives the CA's issuance routes (`/v1/sign`,
//! `/v1/issue`) with N keep-alive HTTPS connections for a bounded time and
//! prints one JSON line with throughput, latency percentiles and errors.
//! `bench/README.md` in the repository explains the fields and the scripts
//! that use this binary.

#![forbid(unsafe_code)]

mod conn;
mod issue;
mod stats;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Parser, Subcommand};

/// Load generators for Ward.
#[derive(Debug, Parser)]
#[command(name = "ward-bench", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Load a CA's issuance route and print one JSON line of results.
    Issue(IssueArgs),
}

#[derive(Debug, clap::Args)]
struct IssueArgs {
    /// The CA's base URL, e.g. https://127.0.0.1:8443.
    #[arg(long)]
    url: String,
    /// PEM file with the root(s) that the CA's server certificate chains to.
    #[arg(long)]
    ca_bundle: PathBuf,
    /// File holding a bootstrap token (use an unlimited one: `--uses 0`);
    /// required except for `cfssl-sign`.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// `sign` (POST /v1/sign with one CSR made at startup), `issue`
    /// (POST /v1/issue, server-side key) or `cfssl-sign` (cfssl's
    /// POST /api/v1/cfssl/sign, profile `peer`, for comparison).
    #[arg(long, value_enum)]
    mode: issue::Mode,
    /// Key type: of the CSR key for `sign` (ecdsa-p256, ecdsa-p384,
    /// ed25519; default ecdsa-p256), sent as `key_type` for `issue` (default:
    /// none sent, the CA's default).
    #[arg(long)]
    key_type: Option<String>,
    /// Number of workers, each with its own keep-alive connection.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Length of the measurement window (e.g. 10s, 500ms, 1m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Load sent before the window and not counted.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    warmup: Duration,
    /// Fixed total request rate per second across all workers (open loop);
    /// without it each worker sends as fast as answers come back.
    #[arg(long)]
    rate: Option<f64>,
    /// Longest wait for one connection or one answer.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    timeout: Duration,
    /// Name to verify in the server certificate (default: the URL's host).
    #[arg(long)]
    server_name: Option<String>,
    /// Runtime worker threads (default: the CPUs this process may run on).
    #[arg(long)]
    threads: Option<usize>,
}

/// Parses `250ms`, `10s`, `2m`, `1h`, or a bare number of seconds.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("not a duration: {s:?} (try 10s or 500ms)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(format!("unknown unit {unit:?} in {s:?} (ms, s, m, h)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Issue(args) => run_issue(args),
    }
}

fn run_issue(args: IssueArgs) -> anyhow::Result<()> {
    let threads = match args.threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let summary = runtime.block_on(async {
        let token = match (&args.token_file, args.mode.needs_token()) {
            (Some(path), true) => {
                let token = std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .trim()
                    .to_owned();
                if token.is_empty() {
                    bail!("{} is empty", path.display());
                }
                token
            }
            (None, true) => bail!("--token-file is required for --mode {:?}", args.mode),
            (_, false) => String::new(),
        };
        let target =
            conn::Target::new(&args.url, &args.ca_bundle, args.server_name.as_deref()).await?;
        issue::run(issue::Plan {
            target,
            mode: args.mode,
            key_type: args.key_type,
            token,
            concurrency: args.concurrency,
            duration: args.duration,
            warmup: args.warmup,
            rate: args.rate,
            request_timeout: args.timeout,
        })
        .await
    })?;
    // Connection tasks may still be open; do not wait for them.
    runtime.shutdown_background();
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("10"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("ten").is_err());
        assert!(parse_duration("5d").is_err());
    }

    #[test]
    fn cli_parses() {
        let cli = Cli::try_parse_from([
            "ward-bench",
            "issue",
            "--url",
            "https://127.0.0.1:8443",
            "--ca-bundle",
            "root.crt",
            "--token-file",
            "t",
            "--mode",
            "sign",
            "--concurrency",
            "4",
            "--duration",
            "1s",
            "--rate",
            "100",
        ])
        .unwrap();
        let Command::Issue(a) = cli.command;
        assert_eq!(a.mode, issue::Mode::Sign);
        assert_eq!(a.concurrency, 4);
        assert_eq!(a.rate, Some(100.0));
    }
}
