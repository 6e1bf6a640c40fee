//! The background work of [`Revocation`]: one polling task per CRL source
//! and a housekeeping tick that reports staleness and closes connections
//! a stale CRL now refuses (fail-closed).

use std::sync::Arc;
use std::time::Duration;

use super::source::{Fetched, Fetcher, Validators};
use super::{Revocation, crl, now_unix};

/// Which source a poller fetches, and the state it must still match.
#[derive(Clone, Copy, Debug)]
pub(super) struct Slot {
    pub(super) index: usize,
    pub(super) generation: u64,
    pub(super) epoch: u64,
    /// Configured (not named by another source's answer): woken early when
    /// a new intermediate is seen.
    pub(super) configured: bool,
}

impl Revocation {
    /// The validators for the next fetch of `slot`; `None` once the poller
    /// is superseded (reconfigured, source retired or restarted).
    pub(super) fn validators(&self, slot: Slot) -> Option<Validators> {
        let st = self.lock();
        if st.generation != slot.generation {
            return None;
        }
        st.sources
            .get(slot.index)
            .filter(|s| !s.retired && s.epoch == slot.epoch)
            .map(|s| s.validators.clone())
    }

    /// Applies one fetch result of `slot`; returns the URL of the issuer
    /// certificate to fetch when its CRL waits for an unknown issuer that
    /// the answer named.
    pub(super) fn apply(
        self: &Arc<Self>,
        slot: Slot,
        fetched: Fetched,
        now: i64,
    ) -> Option<String> {
        let mut guard = self.lock();
        if guard.generation != slot.generation {
            return None;
        }
        let st = &mut *guard;
        let s = st
            .sources
            .get_mut(slot.index)
            .filter(|s| !s.retired && s.epoch == slot.epoch)?;
        s.attempted = true;
        let mut changed = false;
        let mut links = None;
        let result = match fetched {
            Fetched::Failed(error) => {
                if s.failing {
                    tracing::debug!(source = %s.label, %error, "CRL fetch failed again");
                } else {
                    tracing::warn!(source = %s.label, %error, "CRL fetch failed; the CRL in force stays");
                    s.failing = true;
                }
                "fetch_failed"
            }
            Fetched::NotModified {
                links: named,
                issuer,
            } => {
                links = Some(named);
                s.issuer_url = issuer;
                "not_modified"
            }
            Fetched::Body {
                bytes,
                etag,
                last_modified,
                links: named,
                issuer,
            } => {
                links = Some(named);
                s.issuer_url = issuer;
                s.validators = Validators {
                    etag,
                    last_modified,
                };
                let digest = crl::sha256(&bytes);
                if s.last_digest == Some(digest) {
                    "unchanged"
                } else {
                    s.last_digest = Some(digest);
                    let verified = crl::decode(&bytes).and_then(|der| {
                        crl::verify(&der, &st.trust, now).inspect_err(|e| {
                            if e.retry_on_learn() {
                                s.pending = Some(der.clone());
                            }
                        })
                    });
                    match verified {
                        Ok(v) => {
                            let r = self.install(s, v);
                            changed = r == "updated";
                            r
                        }
                        Err(e) => {
                            tracing::warn!(source = %s.label, error = %e, "CRL not accepted; the CRL in force stays");
                            e.label()
                        }
                    }
                }
            }
        };
        if result != "fetch_failed" && s.failing {
            s.failing = false;
            tracing::info!(source = %s.label, "CRL source reachable again");
        }
        self.metrics.crl_refresh.with(&[&s.label, result]).inc();
        let wanted = s.pending.as_ref().and(s.issuer_url.clone());
        // Only configured sources name siblings (no chains of discovery).
        if let Some(links) = links.filter(|_| slot.configured) {
            changed |= self.follow_links(st, slot.index, &links);
        }
        if changed {
            self.publish(st, now);
        }
        drop(guard);
        self.fetched.notify_waiters();
        wanted
    }

    /// Updates the per-source gauges and reports staleness transitions;
    /// connections are swept when one happens.
    pub(super) fn housekeeping(&self, generation: u64, now: i64) {
        let mut guard = self.lock();
        if guard.generation != generation {
            return;
        }
        let st = &mut *guard;
        let fail_open = st.settings.crl_fail_open;
        let mut changed = false;
        // Published after the sweep: once `ward_gate_crl_stale` reads 1,
        // the connections it condemns are already closed.
        let mut staleness = Vec::with_capacity(st.sources.len());
        for s in st.sources.iter_mut().filter(|s| !s.retired) {
            let next = s.current.as_ref().and_then(|c| c.next_update);
            let stale = match &s.current {
                None => true,
                Some(c) => c.next_update.is_some_and(|n| n < now),
            };
            if let Some(n) = next {
                self.metrics
                    .crl_next_update
                    .with(&[&s.label])
                    .set(n.saturating_sub(now));
            }
            if let Some(c) = &s.current {
                self.metrics
                    .crl_age
                    .with(&[&s.label])
                    .set(now.saturating_sub(c.this_update));
            }
            staleness.push((s.label.clone(), stale));
            if s.stale == Some(stale) || (s.stale.is_none() && !stale) {
                s.stale = Some(stale);
                continue;
            }
            s.stale = Some(stale);
            changed = true;
            match (stale, &s.current, fail_open) {
                (false, _, _) => tracing::info!(source = %s.label, "CRL current again"),
                (true, Some(c), false) => tracing::error!(
                    source = %s.label,
                    issuer = %c.issuer_display,
                    "CRL past its nextUpdate and not refreshed: refusing the client certificates of its issuer (fail-closed)"
                ),
                (true, Some(c), true) => tracing::warn!(
                    source = %s.label,
                    issuer = %c.issuer_display,
                    "CRL past its nextUpdate and not refreshed: accepting the client certificates of its issuer (fail-open)"
                ),
                (true, None, false) => tracing::error!(
                    source = %s.label,
                    "no valid CRL from this source yet: refusing client certificates no current CRL covers (fail-closed)"
                ),
                (true, None, true) => tracing::warn!(
                    source = %s.label,
                    "no valid CRL from this source yet: accepting client certificates (fail-open)"
                ),
            }
        }
        drop(guard);
        if changed {
            self.sweep(now);
        }
        for (label, stale) in staleness {
            self.metrics.crl_stale.with(&[&label]).set(i64::from(stale));
        }
    }
}

/// Polls one source every `refresh` (sooner after failures, and at once
/// when `wake` changes), until it is superseded.
pub(super) async fn poll(
    revocation: Arc<Revocation>,
    mut wake: Option<tokio::sync::watch::Receiver<u64>>,
    slot: Slot,
    fetcher: Fetcher,
    refresh: Duration,
) {
    let mut failures: u32 = 0;
    while let Some(validators) = revocation.validators(slot) {
        // A change from here on wakes the next wait.
        if let Some(w) = wake.as_mut() {
            w.borrow_and_update();
        }
        let fetched = fetcher.fetch(&validators).await;
        let failed = matches!(fetched, Fetched::Failed(_));
        if let Some(url) = revocation.apply(slot, fetched, now_unix()) {
            let cert = fetcher.fetch_cert(&url).await;
            revocation.learn_issuer(slot, cert);
        }
        let delay = if failed {
            failures = failures.saturating_add(1);
            refresh.min(Duration::from_secs(1) * 2u32.pow(failures.min(6)))
        } else {
            failures = 0;
            refresh
        };
        match wake.as_mut() {
            Some(w) => {
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    changed = w.changed() => {
                        if changed.is_err() {
                            wake = None;
                        }
                    }
                }
            }
            None => tokio::time::sleep(delay).await,
        }
    }
}

pub(super) async fn housekeeping(revocation: Arc<Revocation>, generation: u64, tick: Duration) {
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        if revocation.lock().generation != generation {
            return;
        }
        revocation.housekeeping(generation, now_unix());
    }
}
