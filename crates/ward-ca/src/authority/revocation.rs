//! Revocation on the CA side: recording a revocation and publishing the CRL.
//!
//! The current CRL lives in memory ([`PublishedCrl`] behind an `ArcSwap`) and
//! is re-signed on every revocation made through this CA and, periodically,
//! whenever the revoked set changed (other replicas, `ward revoke --dir`) or
//! half of its validity passed. CRL numbers come from the store, so they
//! increase across restarts and across replicas sharing a database.
//!
//! Revocations recorded elsewhere (another replica, `ward revoke --dir`, a
//! token kill switch) reach the CRL through [`follow_revocations`]: the
//! store signals them (PostgreSQL `LISTEN`, SQLite `data_version`) and the
//! CRL is re-read at once, well within a second; the periodic refresh stays
//! as the fallback for a signal lost with a connection.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwapOption;
use aws_lc_rs::digest;
use time::OffsetDateTime;
use tokio::sync::watch;
use ward_pki::Serial;
use ward_pki::crl::{CrlEntry, crl_to_pem, sign_crl};
use ward_store::{RevocationWatch, RevokeOutcome};

use super::{Authority, AuthorityError};

/// How the CRL is published.
#[derive(Clone, Copy, Debug)]
pub struct CrlSettings {
    /// nextUpdate = thisUpdate + validity.
    pub validity: Duration,
    /// How often the background task re-reads the revoked set.
    pub refresh: Duration,
}

impl Default for CrlSettings {
    fn default() -> Self {
        CrlSettings {
            validity: Duration::from_secs(3600),
            refresh: Duration::from_secs(60),
        }
    }
}

/// A signed CRL as served.
#[derive(Clone, Debug)]
pub struct PublishedCrl {
    /// The DER CRL (shared: every answer hands out the same buffer).
    pub der: bytes::Bytes,
    /// The same in PEM (`X509 CRL`).
    pub pem: bytes::Bytes,
    /// Strong ETag of the DER (quoted SHA-256 prefix).
    pub etag: String,
    /// The CRL number.
    pub number: u64,
    /// thisUpdate.
    pub this_update: OffsetDateTime,
    /// nextUpdate.
    pub next_update: OffsetDateTime,
    /// How many certificates it lists.
    pub entries: usize,
    digest: Vec<u8>,
    /// The intermediate that signed it (a rotation's switch re-signs).
    signed_by: Vec<u8>,
    /// Its SHA-256 (hex), as `/v1/intermediates/<sha256>` serves it.
    pub signer: String,
}

/// The CA's CRL state (held by the [`Authority`]).
#[derive(Debug, Default)]
pub(crate) struct CrlState {
    current: ArcSwapOption<PublishedCrl>,
    settings: CrlSettings,
    /// Whether this authority publishes a CRL (`ward ca serve`); command-line
    /// tools that only record revocations leave it off.
    publishing: bool,
    signing: tokio::sync::Mutex<()>,
    /// The CRLs of the other published intermediates (a rotation), by the
    /// SHA-256 hex of the intermediate: served at `/v1/crl/<sha256>`, the
    /// CRL Distribution Point of their certificates.
    others: arc_swap::ArcSwap<Vec<(String, Arc<PublishedCrl>)>>,
}

impl CrlState {
    pub(crate) fn new(settings: CrlSettings) -> Self {
        CrlState {
            settings,
            publishing: true,
            ..CrlState::default()
        }
    }
}

/// What a revocation left recorded.
#[derive(Clone, Debug)]
pub struct Revoked {
    /// The serial.
    pub serial: Serial,
    /// When it was revoked (the first time).
    pub revoked_at: OffsetDateTime,
    /// The RFC 5280 reason code recorded (the first one).
    pub reason: Option<i16>,
    /// Whether this call revoked it (false: it already was).
    pub newly_revoked: bool,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl Authority {
    /// Re-signs the CRL after a revocation, when this authority publishes one.
    pub(crate) async fn after_revocation(&self, now: OffsetDateTime) {
        if !self.crl.publishing {
            return;
        }
        if let Err(e) = self.refresh_crl(now).await {
            tracing::error!(error = %e, "re-signing the CRL after a revocation failed; the periodic refresh will retry");
        }
    }

    /// The CRL settings in force.
    pub fn crl_settings(&self) -> CrlSettings {
        self.crl.settings
    }

    /// The CRL currently served, if one was signed.
    pub fn current_crl(&self) -> Option<Arc<PublishedCrl>> {
        self.crl.current.load_full()
    }

    /// The CRL signed by the published intermediate whose SHA-256 (hex) is
    /// `fingerprint`, if there is one.
    pub fn crl_of(&self, fingerprint: &str) -> Option<Arc<PublishedCrl>> {
        let current = self.crl.current.load_full()?;
        if current.signer == fingerprint {
            return Some(current);
        }
        self.crl
            .others
            .load()
            .iter()
            .find(|(fp, _)| fp == fingerprint)
            .map(|(_, crl)| crl.clone())
    }

    /// SHA-256 (hex) of every published intermediate whose CRL is not the
    /// one at `/v1/crl` (during a rotation: the pending and the replaced
    /// ones), each served at `/v1/crl/<sha256>`.
    pub fn sibling_crls(&self) -> Vec<String> {
        self.crl
            .others
            .load()
            .iter()
            .map(|(fp, _)| fp.clone())
            .collect()
    }

    /// Revokes the certificate `serial` with an RFC 5280 reason code;
    /// idempotent (the first time and reason are kept). Re-signs the CRL when
    /// this authority publishes one; when that fails the revocation stands
    /// and the periodic refresh retries.
    pub async fn revoke_certificate(
        &self,
        serial: &Serial,
        reason: Option<i16>,
        now: OffsetDateTime,
    ) -> Result<Revoked, AuthorityError> {
        let outcome = self
            .store()
            .revoke_certificate(serial, reason, now)
            .await
            .map_err(super::store_err)?;
        let newly_revoked = match outcome {
            RevokeOutcome::NotFound => {
                return Err(AuthorityError::NotFound(format!(
                    "no certificate with serial {serial} was issued by this CA"
                )));
            }
            RevokeOutcome::Revoked => true,
            RevokeOutcome::AlreadyRevoked => false,
        };
        let record = self
            .store()
            .certificate(serial)
            .await
            .map_err(super::store_err)?
            .ok_or_else(|| AuthorityError::Internal("revoked certificate vanished".into()))?;
        self.after_revocation(now).await;
        Ok(Revoked {
            serial: serial.clone(),
            revoked_at: record.revoked_at.unwrap_or(now),
            reason: record.revocation_reason,
            newly_revoked,
        })
    }

    /// Re-reads the revoked set and signs a new CRL when it changed, when
    /// half of the current CRL's validity has passed, or when there is none.
    pub async fn refresh_crl(
        &self,
        now: OffsetDateTime,
    ) -> Result<Arc<PublishedCrl>, AuthorityError> {
        let _turn = self.crl.signing.lock().await;
        let now = now.replace_nanosecond(0).unwrap_or(now);
        let rows = self
            .store()
            .revoked_certificates(now)
            .await
            .map_err(super::store_err)?;
        let mut entries = Vec::with_capacity(rows.len());
        let mut ctx = digest::Context::new(&digest::SHA256);
        for row in &rows {
            let serial = row.serial.clone();
            ctx.update(serial.as_bytes());
            ctx.update(&row.revoked_at.unix_timestamp().to_be_bytes());
            ctx.update(&row.reason.unwrap_or(-1).to_be_bytes());
            entries.push(CrlEntry {
                serial,
                revoked_at: row.revoked_at,
                reason: row.reason,
            });
        }
        let set_digest = ctx.finish().as_ref().to_vec();
        let settings = self.crl.settings;
        let signer = self.crl_signer();
        let others: Vec<Arc<ward_pki::issue::Issuer>> = self
            .published_issuers()
            .into_iter()
            .filter(|i| i.cert_der() != signer.cert_der())
            .collect();
        if let Some(current) = self.crl.current.load_full() {
            let half = (current.next_update - current.this_update) / 2;
            let same_others = {
                let have = self.crl.others.load();
                have.len() == others.len()
                    && others.iter().all(|o| {
                        let fp = crate::authority::fingerprint_hex(o.cert_der());
                        have.iter().any(|(f, _)| *f == fp)
                    })
            };
            if current.digest == set_digest
                && now < current.this_update + half
                && current.signed_by.as_slice() == signer.cert_der().as_ref()
                && same_others
            {
                return Ok(current);
            }
        }
        let number = self
            .store()
            .next_crl_number()
            .await
            .map_err(super::store_err)?;
        let next_update = now + settings.validity;
        // An RSA signature or a large set takes milliseconds: off the worker.
        let sign = |issuer: &ward_pki::issue::Issuer| -> Result<Arc<PublishedCrl>, AuthorityError> {
            let heavy = issuer.is_rsa() || entries.len() > 1000;
            let der = crate::cpu::heavy(heavy, || {
                sign_crl(issuer, &entries, number, now, next_update)
            })
            .map_err(|e| match e {
                ward_pki::Error::KeyUnavailable(m) => {
                    AuthorityError::SignerUnavailable(format!("signing the CRL: {m}"))
                }
                e => AuthorityError::Internal(format!("signing the CRL: {e}")),
            })?;
            let etag = format!(
                "\"{}\"",
                hex(&digest::digest(&digest::SHA256, &der).as_ref()[..16])
            );
            Ok(Arc::new(PublishedCrl {
                pem: crl_to_pem(&der).into(),
                der: der.into(),
                etag,
                number,
                this_update: now,
                next_update,
                entries: entries.len(),
                digest: set_digest.clone(),
                signed_by: issuer.cert_der().to_vec(),
                signer: crate::authority::fingerprint_hex(issuer.cert_der()),
            }))
        };
        let published = sign(&signer)?;
        let mut other_crls = Vec::with_capacity(others.len());
        for o in &others {
            other_crls.push((crate::authority::fingerprint_hex(o.cert_der()), sign(o)?));
        }
        self.crl.others.store(Arc::new(other_crls));
        self.crl.current.store(Some(published.clone()));
        tracing::info!(number, entries = published.entries, "signed a new CRL");
        Ok(published)
    }
}

/// Re-reads the revoked set whenever `changes` signals a revocation made by
/// any process sharing the store, until `stop` turns true (run by `ward ca
/// serve`, which opens the watch before signing its first CRL so nothing
/// falls in between). When the watch stops, the periodic refresh alone keeps
/// the CRL current.
pub async fn follow_revocations(
    authority: Arc<Authority>,
    mut changes: RevocationWatch,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        tokio::select! {
            () = async { let _ = stop.wait_for(|s| *s).await; } => return,
            changed = changes.changed() => {
                if !changed {
                    tracing::warn!("the revocation watch stopped; revocations made elsewhere reach the CRL every crl_refresh only");
                    return;
                }
                if let Err(e) = authority.refresh_crl(OffsetDateTime::now_utc()).await {
                    tracing::error!(error = %e, "re-reading the revoked set failed; the periodic refresh will retry");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
