//! The load loop shared by every HTTP workload: `concurrency` workers, each
//! owning one HTTP/1.1 connection (reconnecting after any error) and sending
//! one request at a time, for a bounded time.
//!
//! Without a rate the load is closed-loop: a worker sends its next request
//! as soon as the previous answer is read. With a rate the load is
//! open-loop: request slots are handed out at fixed intervals from one
//! shared counter, a worker waits for its slot and latency is measured
//! from the slot's scheduled time, whether the worker was idle until then
//! or busy with earlier requests (no coordinated omission: queueing behind
//! a slow server counts). Waiting for a slot sleeps to shortly before it and
//! then yields until it passes, because tokio's timer wakes up to ~1 ms late
//! and that delay would otherwise be counted as the server's. If all
//! workers are busy, slots fall behind and the achieved rate is lower than
//! asked; `rps` reports what was achieved.
//!
//! With [`Workload::fresh_connection`] every request opens a new connection
//! (TCP + full TLS handshake), sends `Connection: close` and drops it after
//! the answer; its latency then includes connecting and the handshake.
//! TLS handshakes completed inside the window are counted, and whether
//! each resumed a session.
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

/// What every request of a run looks like.
pub(crate) struct Workload {
    /// Name in the JSON line's `mode` field.
    pub(crate) mode: &'static str,
    /// HTTP method.
    pub(crate) method: http::Method,
    /// Request path (the target's base path already prepended).
    pub(crate) path: String,
    /// Request body; sent with `content_type` when that is set.
    pub(crate) body: Bytes,
    /// `Content-Type` of the body, if any.
    pub(crate) content_type: Option<&'static str>,
    /// One new connection per request (`Connection: close`), else keep-alive.
    pub(crate) fresh_connection: bool,
}

/// How hard and how long to load, already validated by the caller.
pub(crate) struct Load {
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
    work: Workload,
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

/// Runs the workload against the target to completion and summarizes it.
pub(crate) async fn run(target: Target, work: Workload, load: Load) -> anyhow::Result<Summary> {
    if load.concurrency == 0 {
        bail!("--concurrency must be at least 1");
    }
    let start = Instant::now();
    let pacer = match load.rate {
        None => None,
        Some(r) if r.is_finite() && r > 0.0 => Some(Pacer {
            start,
            interval: Duration::from_secs_f64(1.0 / r),
            next: AtomicU64::new(0),
        }),
        Some(r) => bail!("--rate must be a positive number (got {r})"),
    };
    let measure_from = start + load.warmup;
    let mode = work.mode;
    let shared = Arc::new(Shared {
        target,
        work,
        pacer,
        measure_from,
        end: measure_from + load.duration,
        request_timeout: load.request_timeout,
        reported: AtomicBool::new(false),
    });

    let workers: Vec<_> = (0..load.concurrency)
        .map(|_| tokio::spawn(worker(Arc::clone(&shared))))
        .collect();
    let mut total = Tally::default();
    for w in workers {
        total.merge(w.await.context("a worker panicked")?);
    }
    Ok(total.summarize(mode, load.concurrency, load.duration))
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
    // Each worker is its own client: its own TLS session cache.
    let target = s.target.for_worker();
    let mut sender: Option<Sender> = None;
    let fresh = s.work.fresh_connection;
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
                // Late (busy with earlier requests) or on time, the request
                // is timed from its slot, so queueing counts.
                wait_until(at).await;
                Some(at)
            }
            None => None,
        };
        // A fresh connection per request is part of the request's latency.
        let fresh_start = scheduled.unwrap_or_else(Instant::now);
        if fresh {
            sender = None;
        }

        if sender.as_ref().is_none_or(|c| c.is_closed()) {
            sender = None;
            let deadline = s.end.min(Instant::now() + s.request_timeout);
            match timeout_at(deadline, target.connect()).await {
                Ok(Ok(c)) => {
                    let now = Instant::now();
                    if let Some(resumed) = c.resumed
                        && now >= s.measure_from
                        && now < s.end
                    {
                        tally.handshake(resumed);
                    }
                    sender = Some(c.sender);
                }
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

        let started = if fresh {
            fresh_start
        } else {
            scheduled.unwrap_or_else(Instant::now)
        };
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
        if fresh {
            sender = None;
        }
    }
    tally
}

/// Waits until `at`, precisely. tokio's timer has millisecond granularity
/// and wakes up to ~1 ms late, which would be the client's delay counted
/// as the server's; so sleep until shortly before `at`, then yield to the
/// runtime (which keeps polling sockets) until it passes. Costs client CPU
/// for the last stretch only.
async fn wait_until(at: Instant) {
    const SPIN: Duration = Duration::from_micros(1500);
    if let Some(early) = at.checked_sub(SPIN)
        && Instant::now() < early
    {
        sleep_until(early).await;
    }
    while Instant::now() < at {
        tokio::task::yield_now().await;
    }
}

async fn send_one(s: &Shared, conn: &mut Sender, started: Instant) -> Outcome {
    let w = &s.work;
    let mut builder = http::Request::builder()
        .method(w.method.clone())
        .uri(w.path.as_str())
        .header(http::header::HOST, s.target.authority.as_str());
    if let Some(ct) = w.content_type {
        builder = builder.header(http::header::CONTENT_TYPE, ct);
    }
    if w.fresh_connection {
        builder = builder.header(http::header::CONNECTION, "close");
    }
    let request = match builder.body(Full::new(w.body.clone())) {
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
