//! Cold start of the client library: from process start to the first mTLS
//! request made with an identity fresh from the CA.
//!
//! `ward-bench cold-start` runs itself `--runs` times as a child process
//! and times each from `spawn` to exit. A child is what a workload linking
//! ward-client does on start: build a runtime, bootstrap an identity
//! (`Rotator::bootstrap`: key generated here, CSR, `POST /v1/sign` over
//! TLS), then one mTLS GET with that identity. It reports its phases:
//! until `main`, the first random bytes (aws-lc seeding its DRBG: CPU
//! jitter entropy unless built without it), the bootstrap, the first mTLS
//! request, and then, warm, a second bootstrap: the CA round trip (TLS
//! connection + `/v1/sign`) that the budget allows on top.
//!
//! `--entropy-first` makes the child seed the DRBG before anything else
//! (the default leaves it to the first key generation); `--prewarm` seeds
//! it on a thread of its own at the start of `main`, overlapping the rest
//! of start-up (runtime, files, TCP connect).

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::Serialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use ward_client::{BootstrapConfig, CaTrust, Rotator, Token};

/// `ward-bench cold-start` options.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct ColdArgs {
    /// The CA's base URL, e.g. https://127.0.0.1:8443.
    #[arg(long)]
    url: String,
    /// SHA-256 fingerprint of the CA's root (hex), as `ward ca serve`
    /// prints it.
    #[arg(long)]
    ca_fingerprint: String,
    /// File holding a bootstrap token with enough uses (`--uses 0`).
    #[arg(long)]
    token_file: PathBuf,
    /// Child processes to time.
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Seed aws-lc's DRBG on its own thread at the start of `main`.
    #[arg(long)]
    prewarm: bool,
    /// Time the DRBG's seeding as its own phase, before anything else.
    #[arg(long)]
    entropy_first: bool,
    /// Internal: this process is one timed run.
    #[arg(long, hide = true)]
    child: bool,
}

/// What one child measured, in milliseconds from the start of its `main`.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
struct Phases {
    /// Time from `spawn` to exit, measured by the parent.
    total_ms: f64,
    /// Time from `spawn` to the child's `main` (exec, dynamic loading).
    to_main_ms: f64,
    /// Seeding the DRBG (with `--entropy-first`; else inside `bootstrap_ms`).
    entropy_ms: f64,
    /// `Rotator::bootstrap`: key, CSR, TLS to the CA, `/v1/sign`.
    bootstrap_ms: f64,
    /// The first mTLS GET with the new identity (new TLS connection).
    first_request_ms: f64,
    /// A second bootstrap, warm: one CA round trip.
    ca_round_trip_ms: f64,
}

/// Parent: runs the children, prints one JSON line per run and a summary
/// line of medians.
pub(crate) fn run(args: ColdArgs) -> anyhow::Result<()> {
    if args.child {
        return child(&args);
    }
    if args.runs == 0 {
        bail!("--runs must be at least 1");
    }
    let exe = std::env::current_exe().context("finding this program")?;
    let mut runs = Vec::with_capacity(args.runs);
    for _ in 0..args.runs {
        let mut cmd = Command::new(&exe);
        cmd.args([
            "cold-start",
            "--child",
            "--url",
            &args.url,
            "--ca-fingerprint",
            &args.ca_fingerprint,
        ])
        .arg("--token-file")
        .arg(&args.token_file);
        if args.prewarm {
            cmd.arg("--prewarm");
        }
        if args.entropy_first {
            cmd.arg("--entropy-first");
        }
        let epoch = std::time::SystemTime::now();
        let start = Instant::now();
        let out = cmd
            .env(
                "WARD_BENCH_SPAWNED_AT",
                since_epoch_nanos(epoch).to_string(),
            )
            .output()
            .context("running a child")?;
        let total = start.elapsed();
        if !out.status.success() {
            bail!(
                "child failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let mut phases: Phases = serde_json::from_slice(&out.stdout)
            .with_context(|| format!("child said {:?}", String::from_utf8_lossy(&out.stdout)))?;
        phases.total_ms = ms(total);
        println!("{}", serde_json::to_string(&phases)?);
        runs.push(phases);
    }
    let median = |f: fn(&Phases) -> f64| {
        let mut v: Vec<f64> = runs.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let summary = serde_json::json!({
        "mode": "cold-start",
        "runs": runs.len(),
        "prewarm": args.prewarm,
        "entropy_first": args.entropy_first,
        "median_total_ms": median(|p| p.total_ms),
        "median_to_main_ms": median(|p| p.to_main_ms),
        "median_entropy_ms": median(|p| p.entropy_ms),
        "median_bootstrap_ms": median(|p| p.bootstrap_ms),
        "median_first_request_ms": median(|p| p.first_request_ms),
        "median_ca_round_trip_ms": median(|p| p.ca_round_trip_ms),
        // The budget: total minus one CA round trip.
        "median_total_minus_ca_ms": median(|p| p.total_ms - p.ca_round_trip_ms),
    });
    println!("{summary}");
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn since_epoch_nanos(t: std::time::SystemTime) -> u128 {
    t.duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos())
}

/// One timed run, from the start of `main`.
fn child(args: &ColdArgs) -> anyhow::Result<()> {
    let to_main_ms = std::env::var("WARD_BENCH_SPAWNED_AT")
        .ok()
        .and_then(|s| s.parse::<u128>().ok())
        .map_or(0.0, |spawned| {
            let now = since_epoch_nanos(std::time::SystemTime::now());
            now.saturating_sub(spawned) as f64 / 1e6
        });
    let provider = ward_tls::provider();
    let warm = args.prewarm.then(|| {
        let provider = provider.clone();
        std::thread::spawn(move || {
            let mut b = [0u8; 16];
            provider
                .secure_random
                .fill(&mut b)
                .map_err(|e| anyhow::anyhow!("{e:?}"))
        })
    });
    let mut phases = Phases {
        to_main_ms,
        ..Phases::default()
    };
    if args.entropy_first {
        let t = Instant::now();
        let mut b = [0u8; 16];
        provider
            .secure_random
            .fill(&mut b)
            .map_err(|e| anyhow::anyhow!("random: {e:?}"))?;
        phases.entropy_ms = ms(t.elapsed());
    }
    ward_tls::install_default_provider();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async {
        let token_text = tokio::fs::read_to_string(&args.token_file)
            .await
            .context("reading the token")?;
        let config = || -> anyhow::Result<BootstrapConfig> {
            Ok(BootstrapConfig::new(
                args.url.clone(),
                CaTrust::fingerprint(&args.ca_fingerprint)?,
                Token::new(token_text.trim())?,
            ))
        };
        if let Some(warm) = warm {
            // The key generation needs the DRBG: wait for the thread.
            warm.join()
                .map_err(|_| anyhow::anyhow!("entropy thread panicked"))??;
        }
        let t = Instant::now();
        let rotator = Rotator::bootstrap(config()?).await?;
        phases.bootstrap_ms = ms(t.elapsed());

        let t = Instant::now();
        mtls_get(&rotator, &args.url).await?;
        phases.first_request_ms = ms(t.elapsed());

        let t = Instant::now();
        let again = Rotator::bootstrap(config()?).await?;
        phases.ca_round_trip_ms = ms(t.elapsed());
        drop(again);
        anyhow::Ok(())
    })?;
    println!("{}", serde_json::to_string(&phases)?);
    Ok(())
}

/// One GET /healthz over a new TLS connection to the CA, presenting the
/// rotator's identity.
async fn mtls_get(rotator: &Rotator, url: &str) -> anyhow::Result<()> {
    let uri: http::Uri = url.parse().context("the CA URL")?;
    let host = uri.host().context("the CA URL has no host")?.to_owned();
    let port = uri.port_u16().unwrap_or(443);
    let config = rotator.client_config()?;
    let tcp = TcpStream::connect((host.as_str(), port))
        .await
        .context("connecting to the CA")?;
    tcp.set_nodelay(true)?;
    let name = rustls_pki_types::ServerName::try_from(host.clone())?;
    let mut tls = TlsConnector::from(config)
        .connect(name, tcp)
        .await
        .context("mTLS handshake with the CA")?;
    if tls.get_ref().1.peer_certificates().is_none() {
        bail!("no server certificate");
    }
    tls.write_all(
        format!("GET /healthz HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut answer = Vec::new();
    tls.take(64 * 1024).read_to_end(&mut answer).await?;
    if !answer.starts_with(b"HTTP/1.1 200") {
        bail!(
            "GET /healthz: {:?}",
            String::from_utf8_lossy(&answer[..answer.len().min(80)])
        );
    }
    Ok(())
}
