//! Several endpoints behind one route (or TCP tenant): which one a request
//! goes to ([`Balancer::pick`]: round robin, least outstanding requests or a
//! consistent hash of the caller's SPIFFE ID), which ones are out of
//! rotation (active health checks in [`health`], passive ejection after
//! consecutive failures), and how much each may take at once
//! ([`Endpoint::admit`]: requests in flight and waiting, beyond which the
//! gate answers 503).
//!
//! Nothing here does HTTP: the transports (`proxy/balanced.rs` for HTTP,
//! the TCP tenant in `server.rs`) ask for an endpoint, hold its
//! [`InFlight`] guard while they use it, and report the [`Outcome`].
//! Endpoint names are resolved anew on every connection (the system
//! resolver), so a DNS change takes effect without a reload.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use ward_telemetry::{Counter, Gauge};

use crate::config::Upstream;
use crate::metrics::GateMetrics;

pub(crate) mod health;
mod settings;

pub(crate) use settings::check_endpoint_list;
pub use settings::{BalanceConfig, EjectionConfig, HealthConfig, Policy};

/// Most endpoints one route may list.
pub const MAX_ENDPOINTS: usize = 64;
/// Points each endpoint gets on the consistent-hash ring.
const RING_POINTS: usize = 160;
/// Longest time a request waits for an endpoint slot (`max_pending`).
const LONGEST_WAIT: Duration = Duration::from_secs(30);

/// What happened to a request (or connection) sent to an endpoint.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// An answer below 500 (TCP: connected).
    Success,
    /// A 5xx answer.
    ServerError,
    /// No connection could be made.
    ConnectFailure,
    /// The exchange broke before an answer.
    Failure,
}

impl Outcome {
    fn label(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::ServerError => "server_error",
            Outcome::ConnectFailure => "connect_failure",
            Outcome::Failure => "failure",
        }
    }
}

/// An endpoint's metric series (none for `--check-config`).
#[derive(Debug)]
struct Series {
    healthy: Gauge,
    ejected: Gauge,
    active: Gauge,
    ejections: Counter,
    outcomes: [Counter; 4],
    overflow: Counter,
}

/// Passive and active health bookkeeping.
#[derive(Debug, Default)]
struct Health {
    consecutive_failures: u32,
    checks_passed: u32,
    checks_failed: u32,
}

/// One endpoint of a [`Balancer`].
#[derive(Debug)]
pub struct Endpoint {
    /// Where it is.
    pub upstream: Upstream,
    /// As configured (metrics label, logs).
    pub label: String,
    index: usize,
    /// Requests in flight.
    active: AtomicUsize,
    slots: Arc<Semaphore>,
    waiting: AtomicUsize,
    /// Passed the last active checks (always true without them).
    healthy: AtomicBool,
    /// Milliseconds since the balancer's epoch until which it is ejected;
    /// 0 when it is not.
    ejected_until: AtomicU64,
    health: Mutex<Health>,
    series: Option<Series>,
}

/// The endpoints of one route and how to choose among them.
#[derive(Debug)]
pub struct Balancer {
    /// The route's (or TCP tenant's) name.
    pub route: String,
    /// Its settings.
    pub config: BalanceConfig,
    /// Its endpoints, in configuration order.
    pub endpoints: Vec<Arc<Endpoint>>,
    ring: Vec<(u64, usize)>,
    next: AtomicUsize,
    epoch: Instant,
    retries: Option<Counter>,
}

/// Why no endpoint took the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unavailable {
    /// Every endpoint is down (health check) or ejected.
    NoHealthy,
    /// The chosen endpoint is at its limit and its waiting line is full
    /// (or the wait ran out).
    Overflow {
        /// The endpoint.
        endpoint: String,
        /// Its `max_connections`.
        max: usize,
    },
}

/// An endpoint's slot for one request; the request is in flight until
/// this is dropped.
#[derive(Debug)]
pub struct InFlight {
    endpoint: Arc<Endpoint>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.endpoint.active.fetch_sub(1, Ordering::Relaxed);
        if let Some(s) = &self.endpoint.series {
            s.active.dec();
        }
    }
}

/// 64-bit FNV-1a with a final mix: a hash that stays the same across
/// builds and processes (consistent hashing must not move callers when
/// the gate restarts).
fn stable_hash(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    // splitmix64's finalizer spreads FNV's weak low bits.
    h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

/// The consistent-hash key of a caller: its SPIFFE ID, else its
/// certificate's fingerprint.
pub fn caller_key(identity: &crate::identity::Identity) -> u64 {
    match identity.spiffe_str() {
        Some(id) => stable_hash(id.as_bytes()),
        None => stable_hash(identity.fingerprint.as_bytes()),
    }
}

impl Balancer {
    /// A balancer over `endpoints` (already validated) for the route
    /// `route`; metric series when `metrics` is given.
    pub fn new(
        route: &str,
        endpoints: &[String],
        config: BalanceConfig,
        metrics: Option<&GateMetrics>,
    ) -> Result<Self, String> {
        let mut list = Vec::with_capacity(endpoints.len());
        for (index, label) in endpoints.iter().enumerate() {
            let upstream = Upstream::parse(label)?;
            let series = metrics.map(|m| {
                let l = [route, label.as_str()];
                let outcome = |o: Outcome| {
                    m.endpoint_requests
                        .with(&[route, label.as_str(), o.label()])
                };
                let s = Series {
                    healthy: m.endpoint_healthy.with(&l),
                    ejected: m.endpoint_ejected.with(&l),
                    active: m.endpoint_active.with(&l),
                    ejections: m.endpoint_ejections.with(&l),
                    outcomes: [
                        outcome(Outcome::Success),
                        outcome(Outcome::ServerError),
                        outcome(Outcome::ConnectFailure),
                        outcome(Outcome::Failure),
                    ],
                    overflow: m
                        .endpoint_requests
                        .with(&[route, label.as_str(), "overflow"]),
                };
                s.healthy.set(1);
                s.ejected.set(0);
                s.active.set(0);
                s
            });
            list.push(Arc::new(Endpoint {
                upstream,
                label: label.clone(),
                index,
                active: AtomicUsize::new(0),
                slots: Arc::new(Semaphore::new(config.max_connections)),
                waiting: AtomicUsize::new(0),
                healthy: AtomicBool::new(true),
                ejected_until: AtomicU64::new(0),
                health: Mutex::new(Health::default()),
                series,
            }));
        }
        let mut ring = Vec::with_capacity(list.len() * RING_POINTS);
        for e in &list {
            for point in 0..RING_POINTS {
                ring.push((
                    stable_hash(format!("{}#{point}", e.label).as_bytes()),
                    e.index,
                ));
            }
        }
        ring.sort_unstable();
        Ok(Balancer {
            route: route.to_owned(),
            config,
            endpoints: list,
            ring,
            next: AtomicUsize::new(0),
            epoch: Instant::now(),
            retries: metrics.map(|m| m.endpoint_retries.with(&[route])),
        })
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Whether `e` takes traffic now (healthy and not ejected); an
    /// ejection that has run out ends here.
    fn available(&self, e: &Endpoint, now: u64) -> bool {
        if !e.healthy.load(Ordering::Relaxed) {
            return false;
        }
        let until = e.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        if until > now {
            return false;
        }
        if e.ejected_until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
        {
            if let Some(s) = &e.series {
                s.ejected.set(0);
            }
            e.lock().consecutive_failures = 0;
            tracing::info!(route = %self.route, endpoint = %e.label, "ejection over: endpoint back in rotation");
        }
        true
    }

    /// The rotation's position: a new request moves it on, a retry does
    /// not (else every retry would push the next request onto the
    /// endpoint that just failed).
    fn turn(&self, tried: &[usize]) -> usize {
        if tried.is_empty() {
            self.next.fetch_add(1, Ordering::Relaxed)
        } else {
            self.next.load(Ordering::Relaxed)
        }
    }

    /// The endpoint for the next request, skipping those in `tried`;
    /// `key` is the caller's hash ([`caller_key`]) for `hash_spiffe_id`.
    pub fn pick(&self, key: u64, tried: &[usize]) -> Option<Arc<Endpoint>> {
        let now = self.now_ms();
        let n = self.endpoints.len();
        let usable = |e: &Endpoint| !tried.contains(&e.index) && self.available(e, now);
        match self.config.policy {
            Policy::RoundRobin => {
                // The turn counts over the usable endpoints only, so that
                // one out of rotation does not double its neighbour's share.
                let m = self.endpoints.iter().filter(|e| usable(e)).count();
                if m == 0 {
                    return None;
                }
                let turn = self.turn(tried) % m;
                self.endpoints
                    .iter()
                    .filter(|e| usable(e))
                    .nth(turn)
                    .cloned()
            }
            Policy::LeastRequest => {
                let start = self.turn(tried);
                (0..n)
                    .map(|i| &self.endpoints[(start + i) % n])
                    .filter(|e| usable(e))
                    .min_by_key(|e| e.active.load(Ordering::Relaxed))
                    .cloned()
            }
            Policy::HashSpiffeId => {
                let at = self.ring.partition_point(|(h, _)| *h < key);
                let len = self.ring.len();
                (0..len)
                    .map(|i| self.ring[(at + i) % len].1)
                    .find(|i| usable(&self.endpoints[*i]))
                    .map(|i| self.endpoints[i].clone())
            }
        }
    }

    /// Connects a TCP tenant's connection to one of its endpoints: the
    /// policy's choice, then (when connecting fails) up to `retries`
    /// others. Returns the stream, its slot (held while the connection
    /// lasts) and the endpoint's label; the error is the audit reason.
    pub async fn connect_tcp(
        &self,
        caller: &crate::identity::Identity,
        timeout: Duration,
    ) -> Result<(tokio::net::TcpStream, InFlight, String), &'static str> {
        let key = caller_key(caller);
        let mut tried = Vec::new();
        for attempt in 0..=self.config.retries {
            let Some(e) = self.pick(key, &tried) else {
                break;
            };
            tried.push(e.index);
            let slot = e
                .admit(&self.config)
                .await
                .map_err(|_| "upstream_overloaded")?;
            if attempt > 0 {
                self.count_retry();
            }
            let authority = match &e.upstream {
                Upstream::Tcp(a) | Upstream::Http(a) => a.as_str(),
                Upstream::Https { authority, .. } => authority.as_str(),
            };
            match crate::pool::connect(authority, timeout).await {
                Ok(stream) => {
                    self.record(&e, Outcome::Success);
                    return Ok((stream, slot, e.label.clone()));
                }
                Err(error) => {
                    tracing::warn!(route = %self.route, endpoint = %e.label, %error, "connecting to the endpoint failed");
                    self.record(&e, Outcome::ConnectFailure);
                }
            }
        }
        Err(if tried.is_empty() {
            "no_healthy_upstream"
        } else {
            "upstream_unreachable"
        })
    }

    /// Counts a retry on another endpoint.
    pub fn count_retry(&self) {
        if let Some(c) = &self.retries {
            c.inc();
        }
    }

    /// Records what happened at `e`: failures in a row eject it (within
    /// `max_ejection_percent`), a success ends the row.
    pub fn record(&self, e: &Endpoint, outcome: Outcome) {
        if let Some(s) = &e.series {
            s.outcomes[outcome as usize].inc();
        }
        let limit = self.config.ejection.consecutive_failures;
        let mut health = e.lock();
        if outcome == Outcome::Success {
            health.consecutive_failures = 0;
            return;
        }
        health.consecutive_failures = health.consecutive_failures.saturating_add(1);
        if limit == 0 || health.consecutive_failures < limit {
            return;
        }
        let now = self.now_ms();
        if e.ejected_until.load(Ordering::Relaxed) > now {
            return;
        }
        let ejected = self
            .endpoints
            .iter()
            .filter(|o| o.ejected_until.load(Ordering::Relaxed) > now)
            .count();
        let n = self.endpoints.len();
        let allowed = (n * usize::from(self.config.ejection.max_ejection_percent)) / 100;
        if n < 2 || ejected + 1 > allowed.max(1) {
            return;
        }
        let time =
            u64::try_from(self.config.ejection.ejection_time.0.as_millis()).unwrap_or(u64::MAX);
        e.ejected_until
            .store(now.saturating_add(time).max(1), Ordering::Relaxed);
        health.consecutive_failures = 0;
        if let Some(s) = &e.series {
            s.ejected.set(1);
            s.ejections.inc();
        }
        tracing::warn!(
            route = %self.route,
            endpoint = %e.label,
            failures = limit,
            ejection_time = ?self.config.ejection.ejection_time.0,
            "endpoint ejected after consecutive failures"
        );
    }

    /// Records an active check's result; `Some(healthy)` when the
    /// endpoint's state changed.
    pub(crate) fn check_result(&self, e: &Endpoint, passed: bool, why: &str) -> Option<bool> {
        let Some(h) = &self.config.health else {
            return None;
        };
        let mut health = e.lock();
        let was = e.healthy.load(Ordering::Relaxed);
        if passed {
            health.checks_failed = 0;
            health.checks_passed = health.checks_passed.saturating_add(1);
            if was || health.checks_passed < h.healthy_threshold {
                return None;
            }
            e.healthy.store(true, Ordering::Relaxed);
            // It proved itself: an ejection still running ends too.
            e.ejected_until.store(0, Ordering::Relaxed);
            health.consecutive_failures = 0;
            if let Some(s) = &e.series {
                s.healthy.set(1);
                s.ejected.set(0);
            }
            tracing::info!(route = %self.route, endpoint = %e.label, "health check passed: endpoint back in rotation");
            Some(true)
        } else {
            health.checks_passed = 0;
            health.checks_failed = health.checks_failed.saturating_add(1);
            if !was || health.checks_failed < h.unhealthy_threshold {
                return None;
            }
            e.healthy.store(false, Ordering::Relaxed);
            if let Some(s) = &e.series {
                s.healthy.set(0);
            }
            tracing::warn!(route = %self.route, endpoint = %e.label, reason = why, "health check failed: endpoint out of rotation");
            Some(false)
        }
    }
}

impl Endpoint {
    fn lock(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Its position in the balancer (for a retry's `tried` list).
    pub fn index(&self) -> usize {
        self.index
    }

    /// Requests in flight now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// A slot for one request: at once while fewer than `max_connections`
    /// are in flight, else after waiting in a line of at most
    /// `max_pending` for up to `pending_timeout`.
    pub async fn admit(self: &Arc<Self>, config: &BalanceConfig) -> Result<InFlight, Unavailable> {
        let permit = match self.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                let overflow = || {
                    if let Some(s) = &self.series {
                        s.overflow.inc();
                    }
                    Unavailable::Overflow {
                        endpoint: self.label.clone(),
                        max: config.max_connections,
                    }
                };
                if self.waiting.fetch_add(1, Ordering::Relaxed) >= config.max_pending {
                    self.waiting.fetch_sub(1, Ordering::Relaxed);
                    return Err(overflow());
                }
                let waited = tokio::time::timeout(
                    config.pending_timeout.0,
                    self.slots.clone().acquire_owned(),
                )
                .await;
                self.waiting.fetch_sub(1, Ordering::Relaxed);
                match waited {
                    Ok(Ok(p)) => p,
                    _ => return Err(overflow()),
                }
            }
        };
        self.active.fetch_add(1, Ordering::Relaxed);
        if let Some(s) = &self.series {
            s.active.inc();
        }
        Ok(InFlight {
            endpoint: self.clone(),
            _permit: permit,
        })
    }
}

#[cfg(test)]
mod tests;
