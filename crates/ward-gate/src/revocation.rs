//! Client certificate revocation: CRLs fetched in the background, verified
//! against the client CA bundles, and enforced at the handshake and on
//! connections that are already open.
//!
//! One [`Revocation`] per gate holds the CRL sources, the issuer
//! certificates CRLs may be signed by ([`crl::Trust`]) and a [`Snapshot`]
//! of the verified CRLs behind an `ArcSwap`. Every tenant's client
//! verifier reads the current snapshot at each handshake, so a CRL update
//! takes effect for the next handshake without rebuilding a `ServerConfig`
//! (ARCHITECTURE.md trap 5 concerns CRLs handed to webpki, which Ward does
//! not do: one snapshot serves the handshake check and the re-check of
//! open connections, so the two never disagree).
//!
//! TLS 1.3 resumption restores the client chain without running the
//! verifier (trap 6): [`Revocation::track`] re-checks the chain after every
//! handshake, resumed or not, and registers the connection by its leaf;
//! each snapshot update closes the registered connections it now refuses.
//!
//! This module never trusts a CRL it could not verify, and never lets a
//! failed fetch replace a CRL in force.

pub use ward_pki::crl;
mod refresh;
mod source;
mod tracking;

use self::tracking::Tracked;
pub use self::tracking::Tracking;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use arc_swap::ArcSwap;
use rustls::CertificateError;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::crl::{LeafRef, Trust, VerifiedCrl};
use self::source::{Fetcher, Validators};
use crate::config::{CrlSource, RevocationConfig};
use crate::metrics::GateMetrics;

/// The verdict on one client certificate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// No CRL source is configured, or none covers the certificate's issuer.
    Unchecked,
    /// A current CRL of its issuer does not list it.
    Good,
    /// Only CRLs past their nextUpdate cover it, and the gate fails open.
    StaleAccepted,
    /// Its issuer's CRL lists it.
    Revoked,
    /// Only CRLs past their nextUpdate cover it, and the gate fails closed.
    Stale,
    /// A CRL source has produced no valid CRL yet, and the gate fails closed.
    Unknown,
}

impl Status {
    /// The refusal reason (handshake metric and audit label), if refused.
    pub fn refusal(self) -> Option<&'static str> {
        match self {
            Status::Revoked => Some("revoked"),
            Status::Stale => Some("crl_stale"),
            Status::Unknown => Some("revocation_unknown"),
            Status::Unchecked | Status::Good | Status::StaleAccepted => None,
        }
    }

    /// The rustls error a handshake fails with (certificate_revoked for a
    /// revoked certificate).
    pub fn error(self) -> Option<rustls::Error> {
        let e = match self {
            Status::Revoked => CertificateError::Revoked,
            Status::Stale => CertificateError::ExpiredRevocationList,
            Status::Unknown => CertificateError::UnknownRevocationStatus,
            Status::Unchecked | Status::Good | Status::StaleAccepted => return None,
        };
        Some(rustls::Error::InvalidCertificate(e))
    }
}

/// The verified CRLs in force, as every handshake sees them.
#[derive(Debug, Default)]
pub struct Snapshot {
    enabled: bool,
    fail_open: bool,
    /// Some source has no verified CRL.
    unavailable: bool,
    /// Verified CRLs by issuer name (raw DER).
    crls: HashMap<Vec<u8>, Vec<Arc<VerifiedCrl>>>,
    /// Intermediates already looked at (SHA-256 of the DER).
    seen: HashSet<[u8; 32]>,
    seen_full: bool,
}

impl Snapshot {
    /// Whether any CRL source is configured.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// The verdict on `leaf` at `now` (Unix seconds).
    pub fn check(&self, leaf: &LeafRef, now: i64) -> Status {
        if !self.enabled {
            return Status::Unchecked;
        }
        let (mut covered, mut fresh) = (false, false);
        for crl in self.crls.get(&leaf.issuer_name).into_iter().flatten() {
            if !leaf.issued_by(crl) {
                continue;
            }
            if crl.revoked.contains(&leaf.serial) {
                return Status::Revoked;
            }
            covered = true;
            fresh |= crl.next_update.is_none_or(|n| now <= n);
        }
        match (covered, fresh, self.fail_open) {
            (true, true, _) => Status::Good,
            (true, false, true) => Status::StaleAccepted,
            (true, false, false) => Status::Stale,
            (false, _, false) if self.unavailable => Status::Unknown,
            (false, _, _) => Status::Unchecked,
        }
    }
}

/// One CRL source and what it produced.
#[derive(Debug)]
struct SourceState {
    source: CrlSource,
    /// The `source` label of metrics.
    label: String,
    current: Option<Arc<VerifiedCrl>>,
    /// A CRL that did not verify yet (its issuer certificate is unknown).
    pending: Option<Vec<u8>>,
    validators: Validators,
    last_digest: Option<[u8; 32]>,
    failing: bool,
    /// The staleness last reported (None: not yet).
    stale: Option<bool>,
    /// Whether a fetch was attempted since the last (re)start.
    attempted: bool,
    /// For a source named by another's `Link` header: that source's index.
    discovered_by: Option<usize>,
    /// No longer named by its parent: not polled, its CRL out of force.
    retired: bool,
    /// Bumped when a retired source comes back, so a superseded poller stops.
    epoch: u64,
    /// Where the issuer of the `pending` CRL is, as the answer named it.
    issuer_url: Option<String>,
    /// A failure to get that issuer was logged (once per streak).
    issuer_warned: bool,
}

impl SourceState {
    fn new(source: CrlSource, discovered_by: Option<usize>) -> Self {
        SourceState {
            label: source_label(&source),
            source,
            current: None,
            pending: None,
            validators: Validators::default(),
            last_digest: None,
            failing: false,
            stale: None,
            attempted: false,
            discovered_by,
            retired: false,
            epoch: 0,
            issuer_url: None,
            issuer_warned: false,
        }
    }
}

/// Most sources discovered from `Link` headers, over all configured ones.
const MAX_DISCOVERED: usize = 64;

#[derive(Debug, Default)]
struct State {
    settings: RevocationConfig,
    roots: Vec<Vec<u8>>,
    trust: Trust,
    sources: Vec<SourceState>,
    generation: u64,
    tasks: Vec<JoinHandle<()>>,
    /// The HTTP client of this generation's sources.
    client: Option<source::HttpClient>,
}

/// The gate's revocation state (one per gate, shared by every tenant).
#[derive(Debug)]
pub struct Revocation {
    metrics: GateMetrics,
    snapshot: ArcSwap<Snapshot>,
    state: Mutex<State>,
    conns: Mutex<HashMap<u64, Tracked>>,
    next_id: AtomicU64,
    /// Woken after every fetch.
    fetched: tokio::sync::Notify,
    /// Bumped to make the pollers of configured sources fetch again at once
    /// (a new intermediate was seen: its CA may now name its CRL). A watch,
    /// so a poller busy fetching when it changes still sees the change.
    refresh_now: watch::Sender<u64>,
}

fn now_unix() -> i64 {
    OffsetDateTime::now_utc().unix_timestamp()
}

/// The `source` label: the URL without user info or query, or the path.
fn source_label(source: &CrlSource) -> String {
    match source {
        CrlSource::File(p) => p.display().to_string(),
        CrlSource::Url(u) => {
            let no_query = u.split(['?', '#']).next().unwrap_or(u);
            match no_query.split_once("://") {
                Some((scheme, rest)) => {
                    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
                    format!("{scheme}://{rest}")
                }
                None => no_query.to_owned(),
            }
        }
    }
}

impl Revocation {
    /// A disabled revocation state (no sources) reporting into `metrics`.
    pub fn new(metrics: GateMetrics) -> Arc<Self> {
        Arc::new(Revocation {
            metrics,
            snapshot: ArcSwap::from_pointee(Snapshot::default()),
            state: Mutex::new(State::default()),
            conns: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(1),
            fetched: tokio::sync::Notify::new(),
            refresh_now: watch::Sender::new(0),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves consistent data behind
        // (every update is applied before the lock is released).
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn conns(&self) -> MutexGuard<'_, HashMap<u64, Tracked>> {
        self.conns.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The snapshot in force.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Applies `settings` with `roots` (the DER certificates of every
    /// tenant's client CA bundle): new roots are trusted at once; changed
    /// sources restart their polling (CRLs of unchanged sources stay).
    /// Call from within a Tokio runtime.
    pub fn configure(self: &Arc<Self>, settings: &RevocationConfig, roots: Vec<Vec<u8>>) {
        let now = now_unix();
        let mut st = self.lock();
        let roots_changed = st.roots != roots;
        if roots_changed {
            st.trust.set_roots(&roots);
            st.roots = roots;
        }
        let restart = st.generation == 0
            || st.settings.crl != settings.crl
            || st.settings.crl_refresh != settings.crl_refresh
            || st.settings.crl_max_bytes != settings.crl_max_bytes
            || st.settings.crl_fetch_timeout != settings.crl_fetch_timeout
            || (roots_changed && !st.sources.is_empty());
        st.settings = settings.clone();
        if restart {
            for task in st.tasks.drain(..) {
                task.abort();
            }
            st.generation += 1;
            let mut old: Vec<SourceState> = std::mem::take(&mut st.sources);
            old.iter_mut().for_each(|s| s.attempted = false);
            // Discovered sources are dropped: the first answers of their
            // parents name them again.
            st.sources = settings
                .sources()
                .into_iter()
                .map(|source| {
                    match old
                        .iter()
                        .position(|o| o.source == source && o.discovered_by.is_none())
                    {
                        Some(i) => old.swap_remove(i),
                        None => SourceState::new(source, None),
                    }
                })
                .collect();
            st.client = source::http_client(&st.roots);
            let mut tasks = Vec::new();
            for index in 0..st.sources.len() {
                tasks.push(self.spawn_poll(&st, index));
            }
            if !st.sources.is_empty() {
                let tick = settings.crl_refresh.0.min(Duration::from_secs(1));
                tasks.push(tokio::spawn(refresh::housekeeping(
                    self.clone(),
                    st.generation,
                    tick,
                )));
                tracing::info!(
                    sources = st.sources.len(),
                    refresh = %ward_pki::issue::humanize(settings.crl_refresh.0),
                    fail_open = settings.crl_fail_open,
                    "client certificate revocation: polling CRLs"
                );
            }
            st.tasks = tasks;
        }
        if roots_changed {
            self.retry_pending(&mut st, now);
        }
        self.publish(&st, now);
    }

    /// Starts polling source `index` of the current generation.
    fn spawn_poll(self: &Arc<Self>, st: &State, index: usize) -> JoinHandle<()> {
        let s = &st.sources[index];
        let fetcher = Fetcher::new(
            s.source.clone(),
            st.client.clone(),
            st.settings.crl_max_bytes,
            st.settings.crl_fetch_timeout.0,
        );
        let wake = s
            .discovered_by
            .is_none()
            .then(|| self.refresh_now.subscribe());
        tokio::spawn(refresh::poll(
            self.clone(),
            wake,
            refresh::Slot {
                index,
                generation: st.generation,
                epoch: s.epoch,
                configured: s.discovered_by.is_none(),
            },
            fetcher,
            st.settings.crl_refresh.0,
        ))
    }

    /// Follows the sibling CRLs configured source `parent` named in its
    /// last answer: new ones are polled from now on, and those it no
    /// longer names are retired (their CRLs leave the snapshot). Returns
    /// whether the snapshot must be published again.
    fn follow_links(self: &Arc<Self>, st: &mut State, parent: usize, links: &[String]) -> bool {
        let mut changed = false;
        for s in st.sources.iter_mut() {
            if s.discovered_by == Some(parent)
                && !s.retired
                && !links
                    .iter()
                    .any(|l| matches!(&s.source, CrlSource::Url(u) if u == l))
            {
                tracing::info!(source = %s.label, "CRL source no longer named by its CA; no longer polled");
                s.retired = true;
                s.current = None;
                s.pending = None;
                s.stale = None;
                changed = true;
            }
        }
        for link in links {
            let known = st
                .sources
                .iter()
                .position(|s| matches!(&s.source, CrlSource::Url(u) if u == link));
            let index = match known {
                Some(i) if !st.sources[i].retired => continue,
                Some(i) => {
                    let s = &mut st.sources[i];
                    s.retired = false;
                    s.epoch += 1;
                    s.validators = Validators::default();
                    s.last_digest = None;
                    s.discovered_by = Some(parent);
                    i
                }
                None => {
                    let discovered = st
                        .sources
                        .iter()
                        .filter(|s| s.discovered_by.is_some())
                        .count();
                    if discovered >= MAX_DISCOVERED {
                        tracing::warn!(
                            url = %link,
                            "CRL source not followed: already following {MAX_DISCOVERED} named by CAs"
                        );
                        continue;
                    }
                    st.sources
                        .push(SourceState::new(CrlSource::Url(link.clone()), Some(parent)));
                    st.sources.len() - 1
                }
            };
            tracing::info!(source = %st.sources[index].label, "CRL source named by its CA; polling it too");
            let task = self.spawn_poll(st, index);
            st.tasks.push(task);
        }
        changed
    }

    /// Waits (at most `limit`) until every source was fetched once since
    /// the last (re)start.
    pub async fn first_round(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let fetched = self.fetched.notified();
            if self
                .lock()
                .sources
                .iter()
                .all(|s| s.attempted || s.discovered_by.is_some())
            {
                return;
            }
            if tokio::time::timeout_at(deadline, fetched).await.is_err() {
                return;
            }
        }
    }

    /// Stops the background tasks.
    pub fn shutdown(&self) {
        for task in self.lock().tasks.drain(..) {
            task.abort();
        }
    }

    /// Looks at the intermediates of a chain that passed path validation:
    /// new CA certificates that validate to a root are learned, and CRLs
    /// waiting for their issuer are verified again.
    pub fn learn(&self, intermediates: &[CertificateDer<'_>]) {
        let snap = self.snapshot.load();
        if !snap.enabled || snap.seen_full || intermediates.is_empty() {
            return;
        }
        let fresh: Vec<&CertificateDer<'_>> = intermediates
            .iter()
            .filter(|c| !snap.seen.contains(&crl::sha256(c)))
            .collect();
        if fresh.is_empty() {
            return;
        }
        let now = now_unix();
        let mut st = self.lock();
        let mut learned = false;
        for c in fresh {
            if st.trust.learn(c, now) {
                tracing::info!("learned an intermediate CA certificate from a client chain");
                learned = true;
            }
        }
        if learned {
            self.retry_pending(&mut st, now);
            // Its CA may name the new intermediate's CRL by now: ask at once
            // rather than after a full refresh interval.
            self.refresh_now.send_modify(|n| *n = n.wrapping_add(1));
        }
        self.publish(&st, now);
    }

    /// Takes the certificate a CRL answer named as its issuer (`Link:
    /// rel="up"`) when it is a CA certificate issued by a trusted root (the
    /// same test as for intermediates of client chains), and verifies the
    /// CRLs waiting for it. Until then a CRL from an intermediate no client
    /// has shown stays unverified, and a fail-closed gate refuses every
    /// certificate no CRL covers.
    fn learn_issuer(&self, slot: refresh::Slot, result: Result<Vec<u8>, String>) {
        let now = now_unix();
        let mut st = self.lock();
        if st.generation != slot.generation {
            return;
        }
        // (seen before: learned then, or refused then and logged then)
        let (seen, learned) = match &result {
            Ok(der) if st.trust.has_seen(&crl::sha256(der)) => (true, false),
            Ok(der) => (false, st.trust.learn(der, now)),
            Err(_) => (false, false),
        };
        if let Some(s) = st.sources.get_mut(slot.index) {
            match (&result, learned) {
                (_, true) => s.issuer_warned = false,
                (Ok(_), false) if seen => {}
                (Err(e), false) if !s.issuer_warned => {
                    s.issuer_warned = true;
                    tracing::warn!(source = %s.label, error = %e, "cannot fetch the CRL's issuer certificate; the CRL waits for a client chain that carries it");
                }
                (Ok(_), false) if !s.issuer_warned => {
                    s.issuer_warned = true;
                    tracing::warn!(source = %s.label, "the CRL's issuer certificate named by its source is not a CA certificate issued by a trusted root; ignored");
                }
                _ => {}
            }
        }
        if learned {
            self.retry_pending(&mut st, now);
            self.publish(&st, now);
        }
    }

    /// The verdict on a leaf at `now` (Unix seconds); counts acceptances
    /// on a stale CRL.
    pub fn check(&self, leaf: &LeafRef, now: i64) -> Status {
        let status = self.snapshot.load().check(leaf, now);
        if status == Status::StaleAccepted {
            self.metrics.crl_stale_accepts.with(&[]).inc();
        }
        status
    }

    /// Registers an open connection by its chain (leaf first) and checks
    /// it against the snapshot in force; a refused chain is not registered
    /// and the reason is returned. The registration ends when the returned
    /// [`Tracking`] is dropped.
    pub fn track(self: &Arc<Self>, chain: &[CertificateDer<'_>]) -> Result<Tracking, &'static str> {
        if !self.snapshot.load().enabled {
            return Ok(Tracking::untracked());
        }
        let Some(leaf) = chain.first().and_then(|c| LeafRef::from_der(c)) else {
            return Err("bad_certificate");
        };
        // Intermediates of resumed sessions were learned at their full handshake.
        let (tx, rx) = watch::channel(None);
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.conns().insert(
            id,
            Tracked {
                leaf: leaf.clone(),
                kill: tx,
            },
        );
        // Registered first, checked second: an update between the two is
        // either seen here or closes the registered connection.
        if let Some(reason) = self.check(&leaf, now_unix()).refusal() {
            self.conns().remove(&id);
            return Err(reason);
        }
        Ok(Tracking {
            id: Some(id),
            revocation: Some(self.clone()),
            rx,
            _tx: None,
        })
    }

    /// Closes every registered connection the snapshot now refuses.
    fn sweep(&self, now: i64) {
        let snap = self.snapshot.load();
        for t in self.conns().values() {
            if t.kill.borrow().is_some() {
                continue;
            }
            if let Some(reason) = snap.check(&t.leaf, now).refusal() {
                let _ = t.kill.send(Some(reason));
            }
        }
    }

    fn publish(&self, st: &State, now: i64) {
        let mut crls: HashMap<Vec<u8>, Vec<Arc<VerifiedCrl>>> = HashMap::new();
        for s in st.sources.iter().filter(|s| !s.retired) {
            if let Some(c) = &s.current {
                crls.entry(c.issuer_name.clone())
                    .or_default()
                    .push(c.clone());
            }
        }
        let seen = st.trust.seen().clone();
        self.snapshot.store(Arc::new(Snapshot {
            enabled: !st.sources.is_empty(),
            fail_open: st.settings.crl_fail_open,
            // A discovered source without a CRL yet leaves its issuer
            // unchecked rather than condemning every uncovered certificate.
            unavailable: st
                .sources
                .iter()
                .any(|s| s.current.is_none() && s.discovered_by.is_none()),
            crls,
            seen_full: st.trust.seen_full(),
            seen,
        }));
        self.sweep(now);
    }

    /// Installs `crl` for source `index` unless it would roll back the
    /// CRL in force; returns the `result` label.
    fn install(&self, s: &mut SourceState, crl: VerifiedCrl) -> &'static str {
        if let Some(cur) = &s.current
            && cur.issuer == crl.issuer
            && crl.older_than(cur)
        {
            tracing::warn!(
                source = %s.label,
                number = %crl.number_display(),
                current = %cur.number_display(),
                "CRL rejected: older than the CRL in force; keeping the current one"
            );
            return "rollback";
        }
        tracing::info!(
            source = %s.label,
            issuer = %crl.issuer_display,
            number = %crl.number_display(),
            entries = crl.revoked.len(),
            next_update = crl.next_update.unwrap_or(0),
            "CRL updated"
        );
        self.metrics
            .crl_entries
            .with(&[&s.label])
            .set(i64::try_from(crl.revoked.len()).unwrap_or(i64::MAX));
        s.current = Some(Arc::new(crl));
        s.pending = None;
        "updated"
    }

    fn retry_pending(&self, st: &mut State, now: i64) {
        let State { trust, sources, .. } = st;
        for s in sources.iter_mut() {
            let Some(der) = s.pending.take() else {
                continue;
            };
            match crl::verify(&der, trust, now) {
                Ok(v) => {
                    let result = self.install(s, v);
                    self.metrics.crl_refresh.with(&[&s.label, result]).inc();
                }
                Err(e) if e.retry_on_learn() => s.pending = Some(der),
                Err(e) => tracing::warn!(source = %s.label, error = %e, "CRL rejected"),
            }
        }
    }
}

#[cfg(test)]
mod tests;
