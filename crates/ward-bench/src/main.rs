//! `ward-bench`: load generators for Ward's performance work.
//!
//! `ward-bench issue` drives the CA's issuance routes (`/v1/sign`,
//! `/v1/issue`) with N keep-alive HTTPS connections for a bounded time and
//! prints one JSON line with throughput, latency percentiles and errors.
//! `ward-bench handshake` and `ward-bench keepalive` do the same with GETs
//! through an mTLS proxy (a full handshake per request, or N persistent
//! connections), or straight to a plain-HTTP upstream; `ward-bench upstream`
//! is that upstream. `ward-bench resume` is `handshake` with TLS session
//! resumption; `ward-bench idle` holds many idle mTLS connections open (for
//! a server's memory per connection); `ward-bench ceiling` times the
//! public-key operations of a full mTLS handshake; `ward-bench cold-start`
//! times a client process from start to its first mTLS request;
//! `ward-bench bare` is the bare-rustls mTLS reference server;
//! `ward-bench renew` keeps many identities renewing against one CA;
//! `ward-bench acme` completes ACME orders with the instant-acme client.
//! `bench/README.md` in the repository explains the fields
//! and the scripts that use this binary.

#![forbid(unsafe_code)]

mod acme;
mod bare;
mod ceiling;
mod cold;
mod conn;
mod idle;
mod issue;
#[cfg(test)]
mod live_tests;
mod load;
mod renew;
mod stats;
mod upstream;

use std::net::SocketAddr;
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
    /// Full handshakes: a new TCP + TLS 1.3 connection per GET (no
    /// resumption, `Connection: close`); one JSON line of results.
    Handshake(HttpArgs),
    /// Keep-alive: `--concurrency` persistent HTTP/1.1 connections sending
    /// GETs back to back (or at `--rate`); one JSON line of results.
    Keepalive(HttpArgs),
    /// Resumed handshakes: like `handshake`, but the client keeps TLS 1.3
    /// session tickets and resumes (PSK with ECDHE) whenever it holds one;
    /// the JSON line counts how many handshakes resumed.
    Resume(HttpArgs),
    /// Opens `--connections` mTLS connections, prints `ward-bench idle:
    /// holding N connections` on stderr, keeps them idle for `--hold`, then
    /// prints one JSON line.
    Idle(IdleArgs),
    /// Times X25519, ECDSA P-256 signing and verification with Ward's
    /// crypto provider and prints the full-mTLS-handshake ceiling of one
    /// core as one JSON line.
    Ceiling(CeilingArgs),
    /// Cold start of the client library: times `--runs` fresh processes
    /// from spawn to their first mTLS request with an identity just
    /// obtained from the CA; one JSON line per run, then medians.
    ColdStart(cold::ColdArgs),
    /// Complete ACME orders per second (newOrder → http-01 → finalize →
    /// download) with the instant-acme client against any RFC 8555
    /// server; one JSON line of results.
    Acme(acme::AcmeArgs),
    /// A fixed plain-HTTP upstream answering 200 with a small body to every
    /// request; prints `ward-bench upstream: listening on http://ADDR` on
    /// stderr and serves until killed.
    Upstream(UpstreamArgs),
    /// The bare-rustls reference: an mTLS responder (rustls + aws-lc-rs,
    /// client certificate required) answering every GET with a fixed 200
    /// itself, proxying nothing; prints `ward-bench bare: listening on
    /// ADDR` on stderr and serves until killed.
    Bare(BareArgs),
    /// Renewal at scale: `--agents` identities bootstrapped with one
    /// token, each renewing over mTLS (`POST /v1/renew`, fresh key and CSR,
    /// the certificate just issued as the next client identity) back to
    /// back for `--duration`; one JSON line with renewals/s, latency
    /// percentiles, failures and a per-window series.
    Renew(renew::RenewArgs),
}

/// Options shared by the HTTP load modes.
#[derive(Debug, clap::Args)]
struct LoadArgs {
    /// Number of workers, each with its own connection at a time.
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
    /// Runtime worker threads (default: the CPUs this process may run on).
    #[arg(long)]
    threads: Option<usize>,
}

impl LoadArgs {
    fn load(&self) -> load::Load {
        load::Load {
            concurrency: self.concurrency,
            duration: self.duration,
            warmup: self.warmup,
            rate: self.rate,
            request_timeout: self.timeout,
        }
    }
}

#[derive(Debug, clap::Args)]
struct HttpArgs {
    /// URL to GET: https://HOST:PORT/PATH through an mTLS proxy, or
    /// http://HOST:PORT/PATH straight to a plain upstream (the baseline).
    #[arg(long)]
    url: String,
    /// PEM root(s) the server's certificate chains to (https only).
    #[arg(long)]
    ca_bundle: Option<PathBuf>,
    /// PEM client certificate chain to present, leaf then intermediate.
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// PEM private key of `--cert`.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Key-exchange group(s) the client offers.
    #[arg(long, value_enum, default_value = "default")]
    kx_group: conn::KxGroup,
    /// Name to verify in the server certificate (default: the URL's host).
    #[arg(long)]
    server_name: Option<String>,
    /// Do not verify the server's certificate chain (its handshake
    /// signature is still checked): saves the client two ECDSA verifies per
    /// handshake so one core of load can saturate one core of server.
    #[arg(long)]
    skip_chain_verify: bool,
    #[command(flatten)]
    load: LoadArgs,
}

#[derive(Debug, clap::Args)]
struct IdleArgs {
    /// URL of the mTLS server: https://HOST:PORT/PATH.
    #[arg(long)]
    url: String,
    /// PEM root(s) the server's certificate chains to.
    #[arg(long)]
    ca_bundle: Option<PathBuf>,
    /// PEM client certificate chain to present, leaf then intermediate.
    #[arg(long)]
    cert: PathBuf,
    /// PEM private key of `--cert`.
    #[arg(long)]
    key: PathBuf,
    /// Key-exchange group(s) the client offers.
    #[arg(long, value_enum, default_value = "default")]
    kx_group: conn::KxGroup,
    /// Do not verify the server's certificate chain.
    #[arg(long)]
    skip_chain_verify: bool,
    /// Connections to establish and hold.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Connection attempts in flight at once while setting up.
    #[arg(long, default_value_t = 64)]
    parallel: usize,
    /// Send one GET on each connection (and read the answer) before idling.
    #[arg(long)]
    request: bool,
    /// Longest time for setting up all connections.
    #[arg(long, default_value = "120s", value_parser = parse_duration)]
    setup_timeout: Duration,
    /// How long to hold the connections once established.
    #[arg(long, default_value = "5s", value_parser = parse_duration)]
    hold: Duration,
    /// Runtime worker threads (default: the CPUs this process may run on).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Debug, clap::Args)]
struct CeilingArgs {
    /// Time spent timing each of the three operations.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    per_op: Duration,
}

#[derive(Debug, clap::Args)]
struct UpstreamArgs {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Runtime worker threads (default: the CPUs this process may run on).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Debug, clap::Args)]
struct BareArgs {
    /// Address to listen on; port 0 picks a free one.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// PEM server certificate chain (leaf first).
    #[arg(long)]
    cert: PathBuf,
    /// PEM private key of `--cert`.
    #[arg(long)]
    key: PathBuf,
    /// PEM root(s) client certificates must chain to.
    #[arg(long)]
    client_ca: PathBuf,
    /// Runtime worker threads (default: the CPUs this process may run on).
    #[arg(long)]
    threads: Option<usize>,
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
    /// ed25519, ml-dsa-44/65/87; default ecdsa-p256), sent as `key_type`
    /// for `issue` (default:
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
        Command::Handshake(args) => run_http(args, HttpMode::Handshake),
        Command::Resume(args) => run_http(args, HttpMode::Resume),
        Command::Keepalive(args) => run_http(args, HttpMode::Keepalive),
        Command::Idle(args) => run_idle(args),
        Command::Ceiling(args) => {
            let c = ceiling::measure(args.per_op)?;
            println!("{}", serde_json::to_string(&c)?);
            Ok(())
        }
        Command::ColdStart(args) => cold::run(args),
        Command::Acme(args) => acme::run(args),
        Command::Upstream(args) => {
            let runtime = runtime(args.threads)?;
            runtime.block_on(upstream::serve(args.listen))
        }
        Command::Bare(args) => {
            let config = bare::server_config(&args.cert, &args.key, &args.client_ca)?;
            let runtime = runtime(args.threads)?;
            runtime.block_on(bare::serve(args.listen, config))
        }
        Command::Renew(args) => renew::run(args),
    }
}

/// A multi-threaded runtime with `threads` workers (default: the CPUs this
/// process may run on, 1 when pinned with `taskset -c N`).
fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let threads = match threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(n) => n,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .context("starting the runtime")
}

/// The three HTTP load shapes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HttpMode {
    /// A new connection and a full handshake per request.
    Handshake,
    /// A new connection per request, resuming a TLS session when possible.
    Resume,
    /// Persistent connections.
    Keepalive,
}

/// The path and query of `url`, `/` when it has none.
fn url_path(url: &str) -> String {
    url.parse::<http::Uri>()
        .ok()
        .and_then(|u| u.path_and_query().map(|p| p.as_str().to_owned()))
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "/".to_owned())
}

fn run_http(args: HttpArgs, mode: HttpMode) -> anyhow::Result<()> {
    let fresh_connection = mode != HttpMode::Keepalive;
    let runtime = runtime(args.load.threads)?;
    let summary = runtime.block_on(async {
        let client_cert = match (&args.cert, &args.key) {
            (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
            _ => None,
        };
        let target = conn::Target::with_options(
            &args.url,
            &conn::TlsOptions {
                ca_bundle: args.ca_bundle.as_deref(),
                server_name: args.server_name.as_deref(),
                client_cert,
                // Only `resume` keeps sessions: elsewhere every new
                // connection is a full handshake.
                resumption: mode == HttpMode::Resume,
                kx_group: Some(args.kx_group),
                skip_chain_verify: args.skip_chain_verify,
            },
        )
        .await?;
        let path = url_path(&args.url);
        load::run(
            target,
            load::Workload {
                mode: match mode {
                    HttpMode::Handshake => "handshake",
                    HttpMode::Resume => "resume",
                    HttpMode::Keepalive => "keepalive",
                },
                method: http::Method::GET,
                path,
                body: bytes::Bytes::new(),
                content_type: None,
                fresh_connection,
            },
            args.load.load(),
        )
        .await
    })?;
    runtime.shutdown_background();
    println!("{}", serde_json::to_string(&summary)?);
    Ok(())
}

fn run_idle(args: IdleArgs) -> anyhow::Result<()> {
    let runtime = runtime(args.threads)?;
    let summary = runtime.block_on(async {
        let target = conn::Target::with_options(
            &args.url,
            &conn::TlsOptions {
                ca_bundle: args.ca_bundle.as_deref(),
                server_name: None,
                client_cert: Some((args.cert.as_path(), args.key.as_path())),
                resumption: false,
                kx_group: Some(args.kx_group),
                skip_chain_verify: args.skip_chain_verify,
            },
        )
        .await?;
        idle::run(
            target,
            idle::Plan {
                connections: args.connections,
                parallel: args.parallel,
                request: args.request,
                path: url_path(&args.url),
                setup_timeout: args.setup_timeout,
                hold: args.hold,
            },
        )
        .await
    })?;
    println!("{}", serde_json::to_string(&summary)?);
    // Closing thousands of connections one by one is not worth waiting for.
    runtime.shutdown_background();
    Ok(())
}

fn run_issue(args: IssueArgs) -> anyhow::Result<()> {
    let runtime = runtime(args.threads)?;
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
        let Command::Issue(a) = cli.command else {
            panic!("not issue");
        };
        assert_eq!(a.mode, issue::Mode::Sign);
        assert_eq!(a.concurrency, 4);
        assert_eq!(a.rate, Some(100.0));
    }

    #[test]
    fn http_modes_parse() {
        let cli = Cli::try_parse_from([
            "ward-bench",
            "handshake",
            "--url",
            "https://127.0.0.1:8443/",
            "--ca-bundle",
            "root.crt",
            "--cert",
            "c.crt",
            "--key",
            "c.key",
            "--kx-group",
            "x25519",
            "--rate",
            "1000",
        ])
        .unwrap();
        let Command::Handshake(a) = cli.command else {
            panic!("not handshake");
        };
        assert_eq!(a.kx_group, conn::KxGroup::X25519);
        assert_eq!(a.load.rate, Some(1000.0));
        assert_eq!(a.load.concurrency, 32);
        // --cert without --key is refused.
        assert!(
            Cli::try_parse_from([
                "ward-bench",
                "keepalive",
                "--url",
                "http://127.0.0.1:1/",
                "--cert",
                "c.crt"
            ])
            .is_err()
        );
        let cli = Cli::try_parse_from([
            "ward-bench",
            "idle",
            "--url",
            "https://127.0.0.1:1/",
            "--cert",
            "c.crt",
            "--key",
            "c.key",
            "--connections",
            "5",
            "--request",
        ])
        .unwrap();
        let Command::Idle(i) = cli.command else {
            panic!("not idle");
        };
        assert_eq!((i.connections, i.parallel, i.request), (5, 64, true));
        assert!(matches!(
            Cli::try_parse_from(["ward-bench", "resume", "--url", "https://h/"])
                .unwrap()
                .command,
            Command::Resume(_)
        ));
        assert_eq!(url_path("https://h:1"), "/");
        assert_eq!(url_path("https://h:1/a?b"), "/a?b");
        let cli = Cli::try_parse_from(["ward-bench", "upstream"]).unwrap();
        let Command::Upstream(u) = cli.command else {
            panic!("not upstream");
        };
        assert_eq!(u.listen.port(), 0);
    }
}
