//! `ward-bench acme`: complete ACME orders per second, driven by the
//! `instant-acme` client (an ACME client nobody here wrote) against any
//! RFC 8555 server: Ward's or Pebble's, with the same client and the same
//! http-01 responder.
//!
//! One account is created first (not measured). Then `--concurrency`
//! workers loop, each order being: newOrder for a unique name under
//! `--domain` → read the authorization → answer its http-01 challenge
//! (this process serves the key authorizations on `--http01-listen`, where
//! the server's validator must connect) → poll until ready → finalize with
//! a fresh P-256 CSR → poll until valid (only while the server answers
//! `processing`: a finalize answered `valid` goes straight to the download,
//! as instant-acme's `Order::certificate` documents) → download the chain.
//! An order counts when it completes inside the window `[start + warmup,
//! start + warmup + duration]`; its latency is the whole order's.
//!
//! Each order's time is also split into phases (`phases_ms` in the JSON
//! line, p50 and p99 of each): `new_order`, `challenge` (read the
//! authorization, answer the challenge), `ready` (poll until the order is
//! ready: the validation and the client's poll delays), `finalize` (CSR and
//! finalize), `download` (poll while processing, then the download). At a
//! fixed concurrency throughput = concurrency ÷ latency, so the phase that
//! dominates is where the time goes.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use instant_acme::{
    Account, AuthorizationStatus, ChallengeType, Identifier, NewAccount, NewOrder, OrderStatus,
    RetryPolicy,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::time::{Instant, timeout_at};

use serde_json::json;

use crate::stats::{Tally, percentile};

/// `ward-bench acme` arguments.
#[derive(Debug, clap::Args)]
pub(crate) struct AcmeArgs {
    /// The ACME directory URL (`https://HOST:PORT/acme/NAME/directory`,
    /// or Pebble's `https://HOST:PORT/dir`).
    #[arg(long)]
    directory: String,
    /// PEM root the server's HTTPS certificate chains to.
    #[arg(long)]
    ca_bundle: PathBuf,
    /// Where to serve http-01 answers; the server validates here.
    #[arg(long)]
    http01_listen: SocketAddr,
    /// Orders are for `oN-M.DOMAIN`, one fresh name each (so no
    /// authorization is reused); the server must resolve them to
    /// `--http01-listen`'s address.
    #[arg(long, default_value = "bench.acme.test")]
    domain: String,
    /// Number of workers, each with one order at a time.
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    /// Length of the measurement window.
    #[arg(long, default_value = "10s", value_parser = crate::parse_duration)]
    duration: Duration,
    /// Orders before the window, not counted.
    #[arg(long, default_value = "2s", value_parser = crate::parse_duration)]
    warmup: Duration,
    /// First wait before polling an order (then doubled, or the server's
    /// Retry-After when it sends one: instant-acme honours it).
    #[arg(long, default_value = "20ms", value_parser = crate::parse_duration)]
    poll: Duration,
    /// Runtime worker threads (default: the CPUs this process may run on).
    #[arg(long)]
    threads: Option<usize>,
}

/// Key authorizations by token, served on `/.well-known/acme-challenge/`.
type Answers = Arc<Mutex<HashMap<String, String>>>;

/// Runs the benchmark and prints one JSON line (`mode: "acme-order"`,
/// `rps` = complete orders per second).
pub(crate) fn run(args: AcmeArgs) -> anyhow::Result<()> {
    if args.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let runtime = crate::runtime(args.threads)?;
    runtime.block_on(measure(args))
}

async fn measure(args: AcmeArgs) -> anyhow::Result<()> {
    let answers: Answers = Arc::default();
    let listener = TcpListener::bind(args.http01_listen)
        .await
        .with_context(|| format!("binding {}", args.http01_listen))?;
    tokio::spawn(serve_http01(listener, answers.clone()));
    let (account, _) = Account::builder_with_root(&args.ca_bundle)
        .context("loading --ca-bundle")?
        .create(
            &NewAccount {
                contact: &[],
                terms_of_service_agreed: true,
                only_return_existing: false,
            },
            args.directory.clone(),
            None,
        )
        .await
        .context("creating the ACME account")?;
    let account = Arc::new(account);
    let start = Instant::now();
    let open = start + args.warmup;
    let close = open + args.duration;
    let seq = Arc::new(AtomicU64::new(0));
    let policy = RetryPolicy::new()
        .initial_delay(args.poll)
        .backoff(2.0)
        .timeout(Duration::from_secs(30));
    let mut workers = Vec::new();
    for _ in 0..args.concurrency {
        let (account, answers, seq, domain) = (
            account.clone(),
            answers.clone(),
            seq.clone(),
            args.domain.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut phases = Phases::default();
            let mut first_error = None;
            while Instant::now() < close {
                let n = seq.fetch_add(1, Ordering::Relaxed);
                let name = format!("o{}-{n}.{domain}", std::process::id());
                let began = Instant::now();
                let mut times = [Duration::ZERO; PHASES.len()];
                let order = one_order(&account, &name, &answers, &policy, &mut times);
                let done = timeout_at(close, order).await;
                let ended = Instant::now();
                if ended < open || ended > close {
                    continue;
                }
                match done {
                    Ok(Ok(())) => {
                        tally.answer(200, ended - began);
                        phases.add(&times);
                    }
                    Ok(Err(e)) => {
                        tally.failure("order");
                        first_error.get_or_insert_with(|| format!("{e:#}"));
                    }
                    Err(_) => tally.failure("timeout"),
                }
            }
            (tally, phases, first_error)
        }));
    }
    let mut total = Tally::default();
    let mut all_phases = Phases::default();
    let mut errors = Vec::new();
    for w in workers {
        let (tally, phases, error) = w.await.context("a worker panicked")?;
        total.merge(tally);
        all_phases.merge(phases);
        errors.extend(error);
    }
    if let Some(e) = errors.first() {
        eprintln!("ward-bench acme: first error: {e}");
    }
    let summary = total.summarize("acme-order", args.concurrency, args.duration);
    let mut line = serde_json::to_value(&summary)?;
    if let Some(map) = line.as_object_mut() {
        map.insert("phases_ms".into(), all_phases.summary());
    }
    println!("{}", serde_json::to_string(&line)?);
    Ok(())
}

/// The phases of one order, in order (see the module documentation).
const PHASES: [&str; 5] = ["new_order", "challenge", "ready", "finalize", "download"];

/// Per phase, the microseconds each completed order spent in it.
#[derive(Default)]
struct Phases {
    us: [Vec<u64>; PHASES.len()],
}

impl Phases {
    /// Records one completed order's phase times.
    fn add(&mut self, times: &[Duration; PHASES.len()]) {
        for (v, t) in self.us.iter_mut().zip(times) {
            v.push(u64::try_from(t.as_micros()).unwrap_or(u64::MAX));
        }
    }

    /// Adds another worker's phases.
    fn merge(&mut self, other: Phases) {
        for (v, o) in self.us.iter_mut().zip(other.us) {
            v.extend(o);
        }
    }

    /// `{phase: {"p50": ms, "p99": ms, "mean": ms}}`.
    fn summary(mut self) -> serde_json::Value {
        let ms = |us: u64| us as f64 / 1000.0;
        let mut out = BTreeMap::new();
        for (name, v) in PHASES.iter().zip(self.us.iter_mut()) {
            v.sort_unstable();
            let mean = if v.is_empty() {
                0
            } else {
                v.iter().sum::<u64>() / v.len() as u64
            };
            out.insert(
                *name,
                json!({"p50": ms(percentile(v, 0.50)), "p99": ms(percentile(v, 0.99)), "mean": ms(mean)}),
            );
        }
        json!(out)
    }
}

/// One complete order for `name`; `times` gets each phase's duration.
async fn one_order(
    account: &Account,
    name: &str,
    answers: &Answers,
    policy: &RetryPolicy,
    times: &mut [Duration; PHASES.len()],
) -> anyhow::Result<()> {
    let mut mark = Instant::now();
    let mut lap = |i: usize| {
        let now = Instant::now();
        times[i] = now - mark;
        mark = now;
    };
    let ids = [Identifier::Dns(name.to_owned())];
    let mut order = account
        .new_order(&NewOrder::new(&ids))
        .await
        .context("newOrder")?;
    lap(0);
    let mut tokens = Vec::new();
    {
        let mut authzs = order.authorizations();
        while let Some(authz) = authzs.next().await {
            let mut authz = authz.context("reading an authorization")?;
            if authz.status == AuthorizationStatus::Valid {
                continue;
            }
            let Some(mut challenge) = authz.challenge(ChallengeType::Http01) else {
                bail!("no http-01 challenge offered");
            };
            let token = challenge.token.clone();
            let answer = challenge.key_authorization().as_str().to_owned();
            answers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(token.clone(), answer);
            tokens.push(token);
            challenge
                .set_ready()
                .await
                .context("answering the challenge")?;
        }
    }
    lap(1);
    let status = order
        .poll_ready(policy)
        .await
        .context("polling the order")?;
    lap(2);
    {
        let mut map = answers.lock().unwrap_or_else(PoisonError::into_inner);
        for t in &tokens {
            map.remove(t);
        }
    }
    if status != OrderStatus::Ready {
        bail!("order became {status:?}");
    }
    let key = rcgen::KeyPair::generate().context("generating a key")?;
    let mut params =
        rcgen::CertificateParams::new(vec![name.to_owned()]).context("CSR parameters")?;
    // rcgen's default subject is CN=rcgen self signed cert, a name the
    // order does not hold: Ward refuses such a CSR (badCSR), Pebble ignores
    // it. The CSR names the order's name only, as ACME clients send.
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).context("signing the CSR")?;
    order.finalize_csr(csr.der()).await.context("finalize")?;
    lap(3);
    // A server that signed inside the finalize answers `valid` and the
    // chain can be fetched at once; polling (which waits before its first
    // look) is for `processing`.
    let chain = if order.state().status == OrderStatus::Valid {
        order
            .certificate()
            .await
            .context("downloading the certificate")?
    } else {
        None
    };
    let chain = match chain {
        Some(chain) => chain,
        None => order
            .poll_certificate(policy)
            .await
            .context("downloading the certificate")?,
    };
    lap(4);
    if !chain.contains("BEGIN CERTIFICATE") {
        bail!("the certificate download is not PEM");
    }
    Ok(())
}

/// Largest http-01 request read.
const MAX_REQUEST: usize = 8 * 1024;

/// Answers `GET /.well-known/acme-challenge/TOKEN` with its key
/// authorization (404 for anything else), one request per connection.
async fn serve_http01(listener: TcpListener, answers: Answers) {
    while let Ok((mut stream, _)) = listener.accept().await {
        let answers = answers.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_REQUEST];
            let mut n = 0;
            while n < buf.len() {
                match stream.read(&mut buf[n..]).await {
                    Ok(0) | Err(_) => return,
                    Ok(m) => n += m,
                }
                if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let request = String::from_utf8_lossy(&buf[..n]);
            let path = request.split_whitespace().nth(1).unwrap_or("");
            let found = path
                .strip_prefix("/.well-known/acme-challenge/")
                .and_then(|token| {
                    answers
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .get(token)
                        .cloned()
                });
            let response = match found {
                Some(body) => format!(
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                     Connection: close\r\n\r\n{body}",
                    body.len()
                ),
                None => "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .to_owned(),
            };
            let _ = stream.write_all(response.as_bytes()).await;
            let _ = stream.shutdown().await;
        });
    }
}
