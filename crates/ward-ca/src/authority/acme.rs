//! Issuance for the ACME server: DNS and IP names only (ACME cannot assert
//! a SPIFFE ID), the same pre-issuance lint as every online path, recorded
//! with origin `acme` before the certificate is returned.

use std::net::IpAddr;
use std::time::Duration;

use time::OffsetDateTime;
use ward_pki::issue::{LeafRequest, Profile};
use ward_pki::{Fingerprint, Serial, pem};
use ward_store::{NewCertificate, Origin};

use super::error::pki_err;
use super::{Authority, AuthorityError, store_err};

/// A certificate issued to an ACME order.
#[derive(Clone, Debug)]
pub struct AcmeIssuance {
    /// Serial number.
    pub serial: Serial,
    /// Leaf then intermediate, PEM (what `certificate` URLs serve).
    pub chain_pem: String,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// Start of validity.
    pub not_before: OffsetDateTime,
}

impl Authority {
    /// Signs `spki_der` for exactly these names with a server-auth profile
    /// and records it (origin `acme`, with the ACME `profile`'s name). The
    /// caller has checked the names against the provisioner's policy and
    /// the order's validations.
    #[allow(clippy::too_many_arguments)] // one call site; a struct would only rename them
    pub async fn issue_acme(
        &self,
        spki_der: &[u8],
        dns_names: &[String],
        ip_addresses: &[IpAddr],
        profile: &str,
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<AcmeIssuance, AuthorityError> {
        let serial = Serial::random(now).map_err(|e| AuthorityError::Internal(e.to_string()))?;
        let ttl = ttl.min(self.policy.max_ttl);
        let signing = self.signing();
        let request = LeafRequest {
            profile: Profile::Server,
            spiffe_id: None,
            dns_names: dns_names.to_vec(),
            ip_addresses: ip_addresses.to_vec(),
            common_name: None,
            ttl,
            clamp_to_issuer: true,
            serial: serial.clone(),
            crl_url: self.crl_url_for(&signing.issuer),
            ocsp_url: self.ocsp_url.clone(),
        };
        let issued = crate::cpu::heavy(signing.issuer.is_rsa(), || {
            signing.issuer.sign_leaf(spki_der, &request, now)
        })
        .map_err(pki_err("signing"))?;
        let lint = ward_pki::lint::LintPolicy {
            max_server_lifetime: ttl,
            max_workload_lifetime: ttl,
            ..Default::default()
        };
        match &signing.pre_issuance {
            Some(bound) => bound.check(&issued.der, &lint, now),
            None => {
                ward_pki::lint::pre_issuance(&issued.der, signing.issuer.cert_der(), &lint, now)
            }
        }
        .map_err(AuthorityError::Internal)?;
        let record = NewCertificate {
            serial: serial.clone(),
            spiffe_id: None,
            token_id: None,
            not_before: issued.not_before,
            not_after: issued.not_after,
            der: issued.der.to_vec(),
            fingerprint: Fingerprint::of_der(&issued.der).to_string(),
            issued_at: now,
            renewed_from: None,
            origin: Origin::Acme,
            profile: Some(profile.to_owned()),
        };
        self.store
            .record_certificate(&record)
            .await
            .map_err(store_err)?;
        Ok(AcmeIssuance {
            serial,
            chain_pem: format!(
                "{}{}",
                pem::cert_to_pem(&issued.der),
                signing.intermediate_pem
            ),
            not_after: issued.not_after,
            not_before: issued.not_before,
        })
    }
}
