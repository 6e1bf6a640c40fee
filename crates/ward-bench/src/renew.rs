//! Renewal at scale: many agents renewing against one CA for a bounded time.
//!
//! Each of `--agents` identities is bootstrapped once with the same token
//! (`Rotator::bootstrap`, `POST /v1/sign`), then renews back to back the
//! way an agent does: a fresh ECDSA P-256 key and CSR, a new mTLS
//! connection to the CA presenting the current certificate, `POST
//! /v1/renew`, and the certificate just issued becomes the identity of the
//! next renewal. A failed renewal keeps the current identity (as an agent
//! does) and is counted by kind; the agent waits [`FAILURE_PAUSE`] before
//! trying again so a failing CA is not spun against.
//!
//! Every renewal's finish time and latency is kept, so the summary gives the
//! whole run's renewals/s and latency percentiles and the same per window
//! of `--window`: the series shows whether throughput or p99 degrade as the
//! store grows (`last_vs_first`: renewals/s of the last full window ÷ the
//! first).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hyper::Method;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::Serialize;
use ward_client::{BootstrapConfig, CaClient, CaTrust, ClientError, Identity, Rotator, Token};

use crate::stats::percentile;

/// Pause after a failed renewal before the agent tries again.
const FAILURE_PAUSE: Duration = Duration::from_millis(50);

/// The renewal route.
const RENEW_PATH: &str = "/v1/renew";

/// Options of `ward-bench renew`.
#[derive(Debug, clap::Args)]
pub(crate) struct RenewArgs {
    /// The CA's base URL, e.g. https://127.0.0.1:8443.
    #[arg(long)]
    url: String,
    /// SHA-256 fingerprint (hex) of the CA's root, as agents pin it.
    #[arg(long)]
    ca_fingerprint: String,
    /// File holding a bootstrap token with at least `--agents` uses.
    #[arg(long)]
    token_file: PathBuf,
    /// Number of agents, each renewing one identity back to back.
    #[arg(long, default_value_t = 32)]
    agents: usize,
    /// How long the agents keep renewing (e.g. 30s, 10m).
    #[arg(long, default_value = "30s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Length of each window of the series.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    window: Duration,
    /// Runtime worker threads (default: the CPUs this process may run on).
    #[arg(long)]
    threads: Option<usize>,
}

/// One renewal as seen by its agent.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// When it finished, from the start of the run.
    at: Duration,
    /// How long it took, in microseconds.
    latency_us: u64,
    /// Whether a new certificate came back and was taken into use.
    ok: bool,
}

/// What one agent saw.
#[derive(Debug, Default)]
struct AgentLog {
    samples: Vec<Sample>,
    failures: BTreeMap<String, u64>,
}

/// One window of the series.
#[derive(Debug, Serialize, PartialEq)]
pub(crate) struct Window {
    /// Start of the window, seconds from the start of the run.
    pub(crate) start_s: f64,
    /// Renewals that succeeded in it.
    pub(crate) renewals: u64,
    /// Renewals per second in it.
    pub(crate) rps: f64,
    /// 99th percentile latency of its successful renewals, milliseconds.
    pub(crate) p99_ms: f64,
    /// Failed renewals in it.
    pub(crate) failures: u64,
}

/// The JSON line printed at the end of a run.
#[derive(Debug, Serialize)]
pub(crate) struct RenewSummary {
    /// Always `renew`.
    pub(crate) mode: &'static str,
    /// Agents renewing at once.
    pub(crate) agents: usize,
    /// Length of the run, seconds.
    pub(crate) duration_s: f64,
    /// Successful renewals.
    pub(crate) renewals: u64,
    /// Failed renewals.
    pub(crate) failures: u64,
    /// Failures by kind: HTTP status, `timeout`, `connect`, `identity`, `other`.
    pub(crate) failure_counts: BTreeMap<String, u64>,
    /// Successful renewals per second over the whole run.
    pub(crate) rps: f64,
    /// Median latency of successful renewals, milliseconds.
    pub(crate) p50_ms: f64,
    /// 99th percentile, milliseconds.
    pub(crate) p99_ms: f64,
    /// Slowest successful renewal, milliseconds.
    pub(crate) max_ms: f64,
    /// The series, one entry per full window.
    pub(crate) windows: Vec<Window>,
    /// Renewals/s of the last full window ÷ the first (1.0 = no change).
    pub(crate) last_vs_first: f64,
}

/// Runs `ward-bench renew` and prints its JSON line.
pub(crate) fn run(args: RenewArgs) -> anyhow::Result<()> {
    if args.agents == 0 {
        bail!("--agents must be at least 1");
    }
    if args.window.is_zero() {
        bail!("--window must be longer than zero");
    }
    let runtime = crate::runtime(args.threads)?;
    let summary = runtime.block_on(drive(&args))?;
    runtime.shutdown_background();
    println!("{}", serde_json::to_string(&summary)?);
    if summary.renewals == 0 {
        bail!("no renewal succeeded");
    }
    Ok(())
}

/// An agent's current identity.
struct Current {
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
}

async fn drive(args: &RenewArgs) -> anyhow::Result<RenewSummary> {
    let token_text = tokio::fs::read_to_string(&args.token_file)
        .await
        .with_context(|| format!("reading {}", args.token_file.display()))?;
    let trust = CaTrust::fingerprint(&args.ca_fingerprint).context("--ca-fingerprint")?;
    let token = Token::new(token_text.trim()).context("the token")?;
    // Bootstrap every agent first (not timed), a few at a time.
    let mut agents = Vec::with_capacity(args.agents);
    let mut roots = Vec::new();
    for chunk in (0..args.agents).collect::<Vec<_>>().chunks(16) {
        let mut set = tokio::task::JoinSet::new();
        for _ in chunk {
            let config = BootstrapConfig::new(args.url.clone(), trust.clone(), token.clone());
            set.spawn(async move { Rotator::bootstrap(config).await });
        }
        while let Some(done) = set.join_next().await {
            let rotator = done
                .context("bootstrap task")?
                .context("bootstrapping an agent")?;
            let svid = rotator.current();
            roots = svid.bundle().to_vec();
            agents.push(Current {
                chain: svid.chain().to_vec(),
                key: svid.private_key(),
            });
        }
    }
    let roots = Arc::new(roots);
    let start = Instant::now();
    let end = start + args.duration;
    let mut set = tokio::task::JoinSet::new();
    for current in agents {
        let url = args.url.clone();
        let roots = roots.clone();
        set.spawn(async move { agent(url, roots, current, start, end).await });
    }
    let mut all = AgentLog::default();
    while let Some(done) = set.join_next().await {
        let log = done.context("agent task")?;
        all.samples.extend(log.samples);
        for (k, v) in log.failures {
            *all.failures.entry(k).or_default() += v;
        }
    }
    Ok(summarize(
        args.agents,
        args.duration,
        args.window,
        all.samples,
        all.failures,
    ))
}

/// One agent: renew until `end`, keeping each new identity.
async fn agent(
    url: String,
    roots: Arc<Vec<CertificateDer<'static>>>,
    mut current: Current,
    start: Instant,
    end: Instant,
) -> AgentLog {
    let mut log = AgentLog::default();
    while Instant::now() < end {
        let t = Instant::now();
        let result = renew_once(&url, &roots, &current).await;
        let sample = Sample {
            at: start.elapsed(),
            latency_us: u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX),
            ok: result.is_ok(),
        };
        log.samples.push(sample);
        match result {
            Ok(next) => current = next,
            Err(kind) => {
                *log.failures.entry(kind).or_default() += 1;
                tokio::time::sleep(FAILURE_PAUSE).await;
            }
        }
    }
    log
}

/// One renewal; `Err` names the kind of failure.
async fn renew_once(
    url: &str,
    roots: &[CertificateDer<'static>],
    current: &Current,
) -> Result<Current, String> {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .map_err(|_| "other".to_owned())?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params
        .serialize_request(&key)
        .and_then(|c| c.pem())
        .map_err(|_| "other".to_owned())?;
    let identity = Identity {
        chain: current.chain.clone(),
        key: current.key.clone_key(),
    };
    let client = CaClient::new(url, roots, Some(identity)).map_err(|e| kind(&e))?;
    let answer: serde_json::Value = client
        .json(
            Method::POST,
            RENEW_PATH,
            Some(&serde_json::json!({ "csr": csr })),
        )
        .await
        .map_err(|e| kind(&e))?;
    let chain_pem = answer
        .get("chain")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| "identity".to_owned())?;
    let chain = CertificateDer::pem_slice_iter(chain_pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| "identity".to_owned())?;
    if chain.is_empty() {
        return Err("identity".to_owned());
    }
    Ok(Current {
        chain,
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    })
}

/// The failure kind of a client error.
fn kind(e: &ClientError) -> String {
    match e {
        ClientError::Api { status, .. } => status.as_u16().to_string(),
        ClientError::Timeout => "timeout".to_owned(),
        ClientError::Connect { .. } => "connect".to_owned(),
        ClientError::Identity(_) | ClientError::Protocol(_) => "identity".to_owned(),
        _ => "other".to_owned(),
    }
}

fn ms(us: u64) -> f64 {
    round3(us as f64 / 1000.0)
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The run's summary from every agent's samples.
fn summarize(
    agents: usize,
    duration: Duration,
    window: Duration,
    samples: Vec<Sample>,
    failure_counts: BTreeMap<String, u64>,
) -> RenewSummary {
    let mut ok: Vec<u64> = samples
        .iter()
        .filter(|s| s.ok)
        .map(|s| s.latency_us)
        .collect();
    ok.sort_unstable();
    let renewals = ok.len() as u64;
    let failures = samples.len() as u64 - renewals;
    let full = (duration.as_nanos() / window.as_nanos().max(1)) as usize;
    let mut per: Vec<(Vec<u64>, u64)> = vec![(Vec::new(), 0); full];
    for s in &samples {
        let i = (s.at.as_nanos() / window.as_nanos().max(1)) as usize;
        if let Some((lat, fail)) = per.get_mut(i) {
            if s.ok {
                lat.push(s.latency_us);
            } else {
                *fail += 1;
            }
        }
    }
    let w = window.as_secs_f64();
    let windows: Vec<Window> = per
        .into_iter()
        .enumerate()
        .map(|(i, (mut lat, failures))| {
            lat.sort_unstable();
            Window {
                start_s: round3(i as f64 * w),
                renewals: lat.len() as u64,
                rps: round3(lat.len() as f64 / w),
                p99_ms: ms(percentile(&lat, 0.99)),
                failures,
            }
        })
        .collect();
    let last_vs_first = match (windows.first(), windows.last()) {
        (Some(a), Some(b)) if a.rps > 0.0 => round3(b.rps / a.rps),
        _ => 0.0,
    };
    let secs = duration.as_secs_f64();
    RenewSummary {
        mode: "renew",
        agents,
        duration_s: round3(secs),
        renewals,
        failures,
        failure_counts,
        rps: if secs > 0.0 {
            round3(renewals as f64 / secs)
        } else {
            0.0
        },
        p50_ms: ms(percentile(&ok, 0.50)),
        p99_ms: ms(percentile(&ok, 0.99)),
        max_ms: ms(ok.last().copied().unwrap_or(0)),
        windows,
        last_vs_first,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(at_ms: u64, latency_ms: u64, ok: bool) -> Sample {
        Sample {
            at: Duration::from_millis(at_ms),
            latency_us: latency_ms * 1000,
            ok,
        }
    }

    #[test]
    fn windows_and_ratio() {
        let mut samples = vec![];
        // First second: 4 renewals, one slow; second: 2 and a failure;
        // a renewal finishing after the last full window is in the totals
        // but no window.
        for (at, lat) in [(100, 1), (200, 1), (300, 1), (900, 9)] {
            samples.push(sample(at, lat, true));
        }
        samples.push(sample(1100, 2, true));
        samples.push(sample(1500, 2, true));
        samples.push(sample(1600, 3, false));
        samples.push(sample(2050, 2, true));
        let failures = BTreeMap::from([("503".to_owned(), 1)]);
        let s = summarize(
            2,
            Duration::from_secs(2),
            Duration::from_secs(1),
            samples,
            failures,
        );
        assert_eq!((s.renewals, s.failures), (7, 1));
        assert_eq!(s.windows.len(), 2);
        assert_eq!(
            s.windows[0],
            Window {
                start_s: 0.0,
                renewals: 4,
                rps: 4.0,
                p99_ms: 9.0,
                failures: 0
            }
        );
        assert_eq!((s.windows[1].renewals, s.windows[1].failures), (2, 1));
        assert!((s.last_vs_first - 0.5).abs() < 1e-9);
        assert!((s.rps - 3.5).abs() < 1e-9);
        assert!((s.max_ms - 9.0).abs() < 1e-9);
        assert_eq!(s.failure_counts.get("503"), Some(&1));
    }

    #[test]
    fn empty_run() {
        let s = summarize(
            1,
            Duration::from_secs(1),
            Duration::from_secs(10),
            vec![],
            BTreeMap::new(),
        );
        assert_eq!((s.renewals, s.windows.len(), s.last_vs_first), (0, 0, 0.0));
    }
}
