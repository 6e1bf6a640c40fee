//! Expiry safety (issue 20): how long the root, the signing intermediate
//! and the OCSP responder remain valid, as
//! `ward_ca_certificate_expiry_seconds{kind}`, and a warning (log, metric
//! `ward_ca_intermediate_expiring`, `/readyz` detail) when the intermediate
//! expires within the configured margin: the operator's cue to run `ward
//! ca rotate intermediate`. Nothing issued outlives its issuer: issuance
//! clamps every certificate to the signing intermediate's notAfter.

use std::time::Duration;

use arc_swap::ArcSwapOption;
use time::OffsetDateTime;
use ward_telemetry::{GaugeVec, Registry};

use crate::authority::Authority;
use crate::ocsp::Responder;

/// The default warning margin of `ward ca serve`.
pub const DEFAULT_MARGIN: Duration = Duration::from_secs(30 * 24 * 3600);

/// The expiry gauges and the current warning of one CA instance.
#[derive(Debug)]
pub struct ExpiryWatch {
    seconds: GaugeVec,
    expiring: GaugeVec,
    margin: Duration,
    warning: ArcSwapOption<String>,
}

impl ExpiryWatch {
    /// Registers the gauges in `registry`; warns `margin` before the
    /// intermediate expires.
    pub fn register(registry: &Registry, margin: Duration) -> Result<Self, ward_telemetry::Error> {
        Ok(ExpiryWatch {
            seconds: registry.gauge(
                "ward_ca_certificate_expiry_seconds",
                "Seconds until the CA's certificates expire, by kind (root, intermediate, responder).",
                &["kind"],
            )?,
            expiring: registry.gauge(
                "ward_ca_intermediate_expiring",
                "1 when the signing intermediate expires within the warning margin.",
                &[],
            )?,
            margin,
            warning: ArcSwapOption::empty(),
        })
    }

    /// The warning in force, if any (the `/readyz` detail).
    pub fn warning(&self) -> Option<String> {
        self.warning.load_full().map(|w| (*w).clone())
    }

    /// Re-reads the expiry of the root, the signing intermediate and the
    /// OCSP responder at `now`.
    pub fn update(&self, authority: &Authority, ocsp: &Responder, now: OffsetDateTime) {
        let left = |t: OffsetDateTime| (t - now).whole_seconds();
        if let Some(root) = ward_pki::pem::parse_certs_any(authority.roots_pem().as_bytes())
            .ok()
            .and_then(|r| r.into_iter().next())
            .and_then(|r| not_after(&r))
        {
            self.seconds.with(&["root"]).set(left(root));
        }
        let int = authority.signing().issuer.not_after();
        self.seconds.with(&["intermediate"]).set(left(int));
        if let Some(t) = ocsp.responder_not_after() {
            self.seconds.with(&["responder"]).set(left(t));
        }
        if int - now < self.margin {
            let text = format!(
                "the signing intermediate expires in {}s (at {int}); rotate it: ward ca rotate intermediate",
                left(int).max(0)
            );
            if self.warning.load().is_none() {
                tracing::warn!(expires_in_seconds = left(int), "{text}");
            }
            self.expiring.with(&[]).set(1);
            self.warning.store(Some(std::sync::Arc::new(text)));
        } else {
            self.expiring.with(&[]).set(0);
            self.warning.store(None);
        }
    }
}

fn not_after(der: &[u8]) -> Option<OffsetDateTime> {
    let (_, c) = x509_parser::parse_x509_certificate(der).ok()?;
    OffsetDateTime::from_unix_timestamp(c.validity().not_after.timestamp()).ok()
}
