//! The CA issuance workload: `POST /v1/sign` with one CSR made at startup,
//! `POST /v1/issue` with server-side key generation, or (for comparison)
//! cfssl's `POST /api/v1/cfssl/sign` with the same kind of CSR.
//!
//! `concurrency` workers each own one keep-alive HTTP/1.1 TLS connection
//! (reconnecting after any error) and send one request at a time. Without a
//! rate the load is closed-loop: a worker sends its next request as soon as
//! the previous answer is read. With a rate the load is open-loop: request
//! slots are handed out at fixed intervals from one shared counter, a worker
//! waits for its slot, and latency is measured from the slot's scheduled
//! time, so queueing behind a slow server is counted (no coordinated
//! omission). If all workers are busy, slots fall behind and the achieved
//! rate is lower than asked; `rps` reports what was achieved.
//!
//! A request counts when it completes inside the measurement window
//! `[start + warmup, start + warmup + duration]`. Every wait is bounded by
//! the end of the window, so a run ends on time whatever the server does.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use tokio::time::{Instant, sleep_until, timeout_at};

use crate::conn::{Sender, Target};
use crate::stats::{Summary, Tally};

/// Which issuance route to drive.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Mode {
    /// `POST /v1/sign` with a CSR (the key stays with the client).
    Sign,
    /// `POST /v1/issue` (the CA generates the key).
    Issue,
    /// cfssl's `POST /api/v1/cfssl/sign` with the same CSR and the profile
    /// `peer`, for comparison (no token).
    CfsslSign,
}

impl Mode {
    fn as_str(self) -> &'static str {
        match self {
            Mode::Sign => "sign",
            Mode::Issue => "issue",
            Mode::CfsslSign => "cfssl-sign",
        }
    }

    fn path(self) -> &'static str {
        match self {
            Mode::Sign => "/v1/sign",
            Mode::Issue => "/v1/issue",
            Mode::CfsslSign => "/api/v1/cfssl/sign",
        }
    }

    /// Whether the route needs a bootstrap token.
    pub(crate) fn needs_token(self) -> bool {
        self != Mode::CfsslSign
    }
}

/// Everything a run needs, already validated.
pub(crate) struct Plan {
    /// The CA to load.
    pub(crate) target: Target,
    /// Route to drive.
    pub(crate) mode: Mode,
    /// Key type: of the CSR's key for `sign` and `cfssl-sign`, sent as
    /// `key_type` for `issue`.
    pub(crate) key_type: Option<String>,
    /// Bootstrap token (unlimited uses for a meaningful run); unused by
    /// `cfssl-sign`.
    pub(crate) token: String,
    /// Number of workers / connections.
    pub(crate) concurrency: usize,
    /// Measurement window.
    pub(crate) duration: Duration,
    /// Load before the window, not counted.
    pub(crate) warmup: Duration,
    /// Requests per second across all workers; `None` = closed loop.
    pub(crate) rate: Option<f64>,
    /// Longest wait for one answer (or one connection) before it counts as
    /// a `timeout` (or `connect`) error.
    pub(crate) request_timeout: Duration,
}

/// Builds the JSON request body sent by every request of the run.
pub(crate) fn request_body(
    mode: Mode,
    token: &str,
    key_type: Option<&str>,
) -> anyhow::Result<Bytes> {
    let mut body = serde_json::Map::new();
    if mode.needs_token() {
        body.insert("token".into(), token.into());
    }
    match mode {
        Mode::CfsslSign => {
            body.insert("certificate_request".into(), make_csr(key_type)?.into());
            body.insert("profile".into(), "peer".into());
        }
        Mode::Sign => {
            body.insert("csr".into(), make_csr(key_type)?.into());
        }
        Mode::Issue => {
            if let Some(kt) = key_type {
                body.insert("key_type".into(), kt.into());
            }
        }
    }
    Ok(Bytes::from(serde_json::to_vec(&body)?))
}

/// A PEM CSR with an empty subject and no extensions for a fresh key: the CA
/// takes the identity from the token, so the CSR only proves possession.
fn make_csr(key_type: Option<&str>) -> anyhow::Result<String> {
    let alg = match key_type.unwrap_or("ecdsa-p256") {
        "ecdsa-p256" => &rcgen::PKCS_ECDSA_P256_SHA256,
        "ecdsa-p384" => &rcgen::PKCS_ECDSA_P384_SHA384,
        "ed25519" => &rcgen::PKCS_ED25519,
        other => bail!("no CSR key type {other:?} (ecdsa-p256, ecdsa-p384, ed25519)"),
    };
    let key = rcgen::KeyPair::generate_for(alg).context("generating the CSR key")?;
    let mut params = rcgen::CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    let csr = params.serialize_request(&key).context("building the CSR")?;
    csr.pem().context("encoding the CSR")
}

/// Fixed-interval request slots shared by all workers.
struct Pacer {
    start: Instant,
    interval: Duration,
    next: AtomicU64,
}

impl Pacer {
    fn slot(&self) -> Instant {
        let i = self.next.fetch_add(1, Ordering::Relaxed);
        let i = u32::try_from(i).unwrap_or(u32::MAX);
        self.start + self.interval * i
    }
}

struct Shared {
    target: Target,
    path: String,
    body: Bytes,
    pacer: Option<Pacer>,
    measure_from: Instant,
    end: Instant,
    request_timeout: Duration,
    /// Set once the first connection error has been printed.
    reported: AtomicBool,
}

impl Shared {
    /// Prints the first connection error of the run to stderr, so a run
    /// that fails entirely says why; later ones are only counted.
    fn report_once(&self, error: &anyhow::Error) {
        if !self.reported.swap(true, Ordering::Relaxed) {
            eprintln!("ward-bench: first connection error: {error:#}");
        }
    }
}

/// Runs the plan to completion and summarizes it.
pub(crate) async fn run(plan: Plan) -> anyhow::Result<Summary> {
    if plan.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let body = request_body(plan.mode, &plan.token, plan.key_type.as_deref())?;
    let path = format!("{}{}", plan.target.base_path, plan.mode.path());
    let start = Instant::now();
    let pacer = match plan.rate {
        None => None,
        Some(r) if r.is_finite() && r > 0.0 => Some(Pacer {
            start,
            interval: Duration::from_secs_f64(1.0 / r),
            next: AtomicU64::new(0),
        }),
        Some(r) => bail!("--rate must be a positive number (got {r})"),
    };
    let measure_from = start + plan.warmup;
    let shared = Arc::new(Shared {
        target: plan.target,
        path,
        body,
        pacer,
        measure_from,
        end: measure_from + plan.duration,
        request_timeout: plan.request_timeout,
        reported: AtomicBool::new(false),
    });

    let workers: Vec<_> = (0..plan.concurrency)
        .map(|_| tokio::spawn(worker(Arc::clone(&shared))))
        .collect();
    let mut total = Tally::default();
    for w in workers {
        total.merge(w.await.context("a worker panicked")?);
    }
    Ok(total.summarize(plan.mode.as_str(), plan.concurrency, plan.duration))
}

/// What became of one attempt to send a request.
enum Outcome {
    Answer(u16),
    Failure(&'static str),
    /// The window closed first: not counted.
    Cut,
}

async fn worker(s: Arc<Shared>) -> Tally {
    let mut tally = Tally::default();
    let mut sender: Option<Sender> = None;
    loop {
        let now = Instant::now();
        if now >= s.end {
            break;
        }
        let scheduled = match &s.pacer {
            Some(p) => {
                let at = p.slot();
                if at >= s.end {
                    break;
                }
                sleep_until(at).await;
                Some(at)
            }
            None => None,
        };

        if sender.as_ref().is_none_or(|c| c.is_closed()) {
            sender = None;
            let deadline = s.end.min(Instant::now() + s.request_timeout);
            match timeout_at(deadline, s.target.connect()).await {
                Ok(Ok(c)) => sender = Some(c),
                outcome => {
                    if let Ok(Err(e)) = outcome {
                        s.report_once(&e);
                    }
                    if Instant::now() >= s.measure_from && Instant::now() < s.end {
                        tally.failure("connect");
                    }
                    // Do not spin against a server that refuses connections.
                    sleep_until(s.end.min(Instant::now() + Duration::from_millis(50))).await;
                    continue;
                }
            }
        }
        let Some(conn) = sender.as_mut() else {
            continue;
        };
        if timeout_at(s.end, conn.ready()).await.is_err() {
            break;
        }

        let started = scheduled.unwrap_or_else(Instant::now);
        let outcome = send_one(&s, conn, started).await;
        let done = Instant::now();
        if done > s.end {
            break;
        }
        let counted = done >= s.measure_from;
        match outcome {
            Outcome::Answer(status) => {
                if counted {
                    tally.answer(status, done - started);
                }
            }
            Outcome::Failure(kind) => {
                if counted {
                    tally.failure(kind);
                }
                sender = None;
            }
            Outcome::Cut => break,
        }
    }
    tally
}

async fn send_one(s: &Shared, conn: &mut Sender, started: Instant) -> Outcome {
    let request = match http::Request::post(s.path.as_str())
        .header(http::header::HOST, s.target.authority.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(s.body.clone()))
    {
        Ok(r) => r,
        Err(_) => return Outcome::Failure("request"),
    };
    let own_deadline = Instant::now().max(started) + s.request_timeout;
    let deadline = own_deadline.min(s.end);
    let exchange = async {
        let response = conn.send_request(request).await?;
        let status = response.status().as_u16();
        // Read the whole body so the connection can carry the next request.
        response.into_body().collect().await?;
        Ok::<u16, hyper::Error>(status)
    };
    match timeout_at(deadline, exchange).await {
        Ok(Ok(status)) => Outcome::Answer(status),
        Ok(Err(_)) => Outcome::Failure("transport"),
        Err(_) if deadline == own_deadline => Outcome::Failure("timeout"),
        Err(_) => Outcome::Cut,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_body_carries_a_csr() {
        let body = request_body(Mode::Sign, "wdt_x", None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["token"], "wdt_x");
        let csr = v["csr"].as_str().unwrap();
        assert!(csr.starts_with("-----BEGIN CERTIFICATE REQUEST-----"));
    }

    #[test]
    fn issue_body_passes_key_type() {
        let body = request_body(Mode::Issue, "wdt_x", Some("ed25519")).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["key_type"], "ed25519");
        let body = request_body(Mode::Issue, "wdt_x", None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v.get("key_type").is_none());
    }

    #[test]
    fn cfssl_body_has_no_token() {
        let body = request_body(Mode::CfsslSign, "", None).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert!(v.get("token").is_none());
        assert_eq!(v["profile"], "peer");
        assert!(
            v["certificate_request"]
                .as_str()
                .unwrap()
                .contains("REQUEST")
        );
    }

    #[test]
    fn unknown_csr_key_type_is_refused() {
        assert!(request_body(Mode::Sign, "wdt_x", Some("dsa")).is_err());
    }
}
