//! Holding many idle mTLS connections open, to measure what each costs a
//! server in memory (`ward-bench idle`).
//!
//! `parallel` tasks open connections (TCP + full TLS 1.3 handshake with the
//! client certificate, optionally one GET answered with 2xx) until
//! `connections` are established, the setup time runs out or more than
//! 100 + 10 % of `connections` attempts have failed. Then a line
//! `ward-bench idle: holding N connections` goes to stderr (the script's
//! cue to read the server's RSS), the connections stay open and silent for
//! `hold`, and the summary reports how many were still open at the end, so
//! a server that closed idle connections during the measurement shows it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::Serialize;
use tokio::sync::Mutex;
use tokio::time::{Instant, timeout_at};

use crate::conn::{Sender, Target};

/// What to hold and for how long, already validated by the caller.
pub(crate) struct Plan {
    /// Connections to establish.
    pub(crate) connections: usize,
    /// Connection attempts in flight at once.
    pub(crate) parallel: usize,
    /// Send one GET on each connection (and read its answer) before idling.
    pub(crate) request: bool,
    /// Path of that GET.
    pub(crate) path: String,
    /// Longest time for establishing all connections.
    pub(crate) setup_timeout: Duration,
    /// How long to hold them once established.
    pub(crate) hold: Duration,
}

/// The JSON line printed at the end.
#[derive(Debug, Serialize)]
pub(crate) struct IdleSummary {
    /// Always `idle`.
    pub(crate) mode: &'static str,
    /// Connections asked for.
    pub(crate) connections: usize,
    /// Connections established (and answered, with `request`).
    pub(crate) established: usize,
    /// Of those, still open when the hold ended.
    pub(crate) open_at_end: usize,
    /// Failed attempts (connect, handshake, request or non-2xx answer).
    pub(crate) errors: usize,
    /// Of the established connections, how many resumed a TLS session.
    pub(crate) resumed: usize,
    /// Whether one request was sent on each connection before idling.
    pub(crate) request: bool,
    /// Time to establish them, seconds.
    pub(crate) setup_s: f64,
    /// Handshakes per second during setup.
    pub(crate) setup_hps: f64,
    /// Time held, seconds.
    pub(crate) hold_s: f64,
}

struct Shared {
    target: Target,
    plan: Plan,
    deadline: Instant,
    /// Connections claimed by a task (established or being attempted).
    claimed: AtomicUsize,
    errors: AtomicUsize,
    resumed: AtomicUsize,
    held: Mutex<Vec<Sender>>,
    /// Set once the first failure has been printed.
    reported: AtomicBool,
}

impl Shared {
    /// Failures after which setting up stops: a server at its connection
    /// limit refuses every further attempt, and retrying until the setup
    /// time runs out would only delay the report.
    fn too_many_errors(&self) -> bool {
        self.errors.load(Ordering::Relaxed) > 100 + self.plan.connections / 10
    }
}

/// Establishes the connections, holds them, and summarizes.
pub(crate) async fn run(target: Target, plan: Plan) -> anyhow::Result<IdleSummary> {
    if plan.connections == 0 || plan.parallel == 0 {
        bail!("--connections and --parallel must be at least 1");
    }
    let start = Instant::now();
    let shared = Arc::new(Shared {
        target,
        deadline: start + plan.setup_timeout,
        claimed: AtomicUsize::new(0),
        errors: AtomicUsize::new(0),
        resumed: AtomicUsize::new(0),
        held: Mutex::new(Vec::with_capacity(plan.connections)),
        reported: AtomicBool::new(false),
        plan,
    });
    let tasks: Vec<_> = (0..shared.plan.parallel.min(shared.plan.connections))
        .map(|_| tokio::spawn(opener(Arc::clone(&shared))))
        .collect();
    for t in tasks {
        t.await.context("a connection task panicked")?;
    }
    let setup = start.elapsed();
    let established = shared.held.lock().await.len();
    eprintln!(
        "ward-bench idle: holding {established} connections (asked {})",
        shared.plan.connections
    );
    tokio::time::sleep(shared.plan.hold).await;
    let open_at_end = shared
        .held
        .lock()
        .await
        .iter()
        .filter(|s| !s.is_closed())
        .count();
    let setup_s = setup.as_secs_f64();
    Ok(IdleSummary {
        mode: "idle",
        connections: shared.plan.connections,
        established,
        open_at_end,
        errors: shared.errors.load(Ordering::Relaxed),
        resumed: shared.resumed.load(Ordering::Relaxed),
        request: shared.plan.request,
        setup_s: round3(setup_s),
        setup_hps: if setup_s > 0.0 {
            round3(established as f64 / setup_s)
        } else {
            0.0
        },
        hold_s: round3(shared.plan.hold.as_secs_f64()),
    })
}

/// Opens connections one after another until enough are claimed, the
/// setup time is up or too many attempts failed; a failed attempt gives its
/// claim back.
async fn opener(s: Arc<Shared>) {
    loop {
        if Instant::now() >= s.deadline || s.too_many_errors() {
            return;
        }
        if s.claimed.fetch_add(1, Ordering::Relaxed) >= s.plan.connections {
            return;
        }
        match timeout_at(s.deadline, open_one(&s)).await {
            Ok(Ok((sender, resumed))) => {
                if resumed {
                    s.resumed.fetch_add(1, Ordering::Relaxed);
                }
                s.held.lock().await.push(sender);
            }
            outcome => {
                s.claimed.fetch_sub(1, Ordering::Relaxed);
                s.errors.fetch_add(1, Ordering::Relaxed);
                if let Ok(Err(e)) = outcome
                    && !s.reported.swap(true, Ordering::Relaxed)
                {
                    eprintln!("ward-bench idle: first connection error: {e:#}");
                }
                // Do not spin against a server that refuses connections.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
}

/// One connection, with its optional request answered.
async fn open_one(s: &Shared) -> anyhow::Result<(Sender, bool)> {
    let c = s.target.connect().await?;
    let mut sender = c.sender;
    if s.plan.request {
        sender.ready().await.context("connection not ready")?;
        let request = http::Request::builder()
            .uri(s.plan.path.as_str())
            .header(http::header::HOST, s.target.authority.as_str())
            .body(Full::new(Bytes::new()))
            .context("building the request")?;
        let response = sender.send_request(request).await.context("request")?;
        let status = response.status();
        response
            .into_body()
            .collect()
            .await
            .context("reading the answer")?;
        if !status.is_success() {
            bail!("answer {status}");
        }
    }
    Ok((sender, c.resumed == Some(true)))
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}
