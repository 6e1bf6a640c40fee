//! The life of one certificate: restore, order when missing, renew when
//! due (ARI window or two thirds of the lifetime), back off on failure.
//! The certificate in service is always the one in the state directory;
//! the [`Observer`] hears about every new one (to put it into service),
//! every finished order and every scheduled renewal.

use std::sync::Arc;
use std::time::Duration;

use instant_acme::Account;
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::schedule::{backoff, renewal_time, until};
use crate::state::{Current, StateDir};
use crate::{AcmeSettings, Challenges, Error, stopped};

/// A certificate the manager put into the state directory.
pub type Issued = Current;

/// Shortest and longest wait between two renewal-information polls,
/// whatever the server's Retry-After says.
const ARI_POLL_MIN: Duration = Duration::from_secs(60);
const ARI_POLL_MAX: Duration = Duration::from_secs(6 * 3600);
/// Wait before polling renewal information again after a failed poll.
const ARI_POLL_AFTER_ERROR: Duration = Duration::from_secs(600);

/// What the owner of a certificate hears from its manager.
pub trait Observer: Send + Sync + 'static {
    /// A new certificate is in the state directory.
    fn installed(&self, _current: &Issued) {}
    /// An order finished, `"success"` or `"failure"`.
    fn order_finished(&self, _result: &'static str) {}
    /// The next renewal is planned for `at`.
    fn next_renewal(&self, _at: OffsetDateTime) {}
    /// An attempt failed; the next is in `wait`.
    fn retrying(&self, _error: &Error, _wait: Duration) {}
}

/// An observer that ignores everything.
impl Observer for () {}

/// Obtains and renews one certificate.
pub struct Manager {
    settings: AcmeSettings,
    state: StateDir,
    challenges: Challenges,
    observer: Arc<dyn Observer>,
}

impl std::fmt::Debug for Manager {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Manager")
            .field("domains", &self.settings.domains)
            .finish_non_exhaustive()
    }
}

impl Manager {
    /// A manager for `settings` (checked, state directory created).
    pub fn new(
        settings: AcmeSettings,
        challenges: Challenges,
        observer: Arc<dyn Observer>,
    ) -> Result<Manager, Error> {
        settings.validate()?;
        let state = StateDir::open(&settings.state_dir)?;
        Ok(Manager {
            settings,
            state,
            challenges,
            observer,
        })
    }

    /// The stored certificate, if usable.
    pub fn current(&self) -> Option<Current> {
        self.state.current(&self.settings.domains)
    }

    /// The state directory.
    pub fn state(&self) -> &StateDir {
        &self.state
    }

    /// Orders a certificate now and stores it.
    pub async fn order_now(
        &self,
        account: &Account,
        previous: Option<&Current>,
        use_ari: bool,
    ) -> Result<Issued, Error> {
        let replaces = previous
            .filter(|_| use_ari)
            .and_then(|c| c.chain.first())
            .and_then(crate::order::cert_id);
        let result =
            crate::order::obtain(account, &self.settings, &self.challenges, replaces).await;
        let obtained = match result {
            Ok(o) => o,
            Err(e) => {
                self.observer.order_finished("failure");
                return Err(e);
            }
        };
        let current = Current::from_pem(obtained.chain_pem.as_bytes(), obtained.key_pem.as_bytes())
            .inspect_err(|_| self.observer.order_finished("failure"))?;
        self.state.store(&obtained.chain_pem, &obtained.key_pem)?;
        self.observer.order_finished("success");
        tracing::info!(
            domains = ?self.settings.domains,
            serial = %current.serial,
            not_after = %current.not_after,
            "ACME certificate obtained"
        );
        self.observer.installed(&current);
        Ok(current)
    }

    /// Keeps the certificate valid until `stop` turns true.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let mut account: Option<Account> = None;
        let mut attempt: u32 = 0;
        let mut draw = fastrand::f64();
        let mut serial = String::new();
        let mut ari_enabled = true;
        let mut ari_window: Option<(OffsetDateTime, OffsetDateTime)> = None;
        let mut next_ari = OffsetDateTime::UNIX_EPOCH;
        loop {
            let current = self.current();
            let now = OffsetDateTime::now_utc();
            if let Some(c) = &current
                && c.serial != serial
            {
                serial.clone_from(&c.serial);
                draw = fastrand::f64();
                ari_window = None;
                next_ari = now;
            }
            if let Some(c) = &current
                && ari_enabled
                && now >= next_ari
            {
                let wait = match self.poll_ari(&mut account, c).await {
                    Ok(Some((window, retry_after))) => {
                        ari_window = Some(window);
                        retry_after.clamp(ARI_POLL_MIN, ARI_POLL_MAX)
                    }
                    Ok(None) => {
                        ari_enabled = false;
                        ARI_POLL_MAX
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "renewal information unavailable; keeping the current schedule");
                        ARI_POLL_AFTER_ERROR
                    }
                };
                next_ari = now + wait;
            }
            let due = match &current {
                Some(c) => renewal_time(c.not_before, c.not_after, ari_window, draw),
                None => now,
            };
            self.observer.next_renewal(due);
            let wake = if current.is_some() && ari_enabled {
                due.min(next_ari)
            } else {
                due
            };
            if wake > now {
                tokio::select! {
                    () = tokio::time::sleep(until(wake, now)) => continue,
                    () = stopped(&mut stop) => return,
                }
            }
            let result = match self.ensure_account(&mut account).await {
                Ok(acc) => {
                    self.order_now(&acc, current.as_ref(), ari_enabled && attempt == 0)
                        .await
                }
                Err(e) => {
                    self.observer.order_finished("failure");
                    Err(e)
                }
            };
            match result {
                Ok(_) => attempt = 0,
                Err(e) => {
                    let wait = backoff(attempt, None, fastrand::f64());
                    attempt = attempt.saturating_add(1);
                    match &current {
                        Some(c) => {
                            tracing::error!(error = %e, retry_in = ?wait, attempt, serving_until = %c.not_after, "ACME renewal failed; the current certificate stays in service")
                        }
                        None => {
                            tracing::error!(error = %e, retry_in = ?wait, attempt, "ACME order failed")
                        }
                    }
                    self.observer.retrying(&e, wait);
                    tokio::select! {
                        () = tokio::time::sleep(wait) => {}
                        () = stopped(&mut stop) => return,
                    }
                }
            }
        }
    }

    async fn ensure_account(&self, slot: &mut Option<Account>) -> Result<Account, Error> {
        if let Some(a) = slot {
            return Ok(a.clone());
        }
        let a = crate::order::account(&self.settings, &self.state).await?;
        *slot = Some(a.clone());
        Ok(a)
    }

    /// The server's suggested window and Retry-After; `None` when the
    /// server has no renewal information (or the certificate no AKI).
    async fn poll_ari(
        &self,
        slot: &mut Option<Account>,
        current: &Current,
    ) -> Result<Option<((OffsetDateTime, OffsetDateTime), Duration)>, Error> {
        let Some(id) = current.chain.first().and_then(crate::order::cert_id) else {
            return Ok(None);
        };
        let account = self.ensure_account(slot).await?;
        match account.renewal_info(&id).await {
            Ok((info, retry_after)) => {
                let w = info.suggested_window;
                tracing::debug!(start = %w.start, end = %w.end, "renewal information");
                Ok(Some(((w.start, w.end), retry_after)))
            }
            Err(instant_acme::Error::Unsupported(_)) => Ok(None),
            Err(e) => Err(Error::Protocol {
                context: "renewalInfo".into(),
                source: e,
            }),
        }
    }
}
