//! Offline issuance (`ward cert create`): a key and a certificate signed
//! with the CA directory's intermediate, without a running CA and without a
//! token. The CLI parses arguments and prints; this decides and signs.
//!
//! Every certificate signed with the directory's keys is recorded in its
//! store (origin `offline`), so it can be revoked (OCSP, CRL, `ward
//! revoke`): no store, no certificate.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use time::OffsetDateTime;
use ward_pki::issue::{LeafRequest, Profile};
use ward_pki::lint::LintPolicy;
use ward_pki::{KeyType, PrivateKey, Serial, SpiffeId, pem};

use crate::authority::{AuthorityError, check_common_name, check_reserved};
use crate::dir::{CaDir, Storage};
use crate::files::{PUBLIC_MODE, Replace, SECRET_MODE, Staged};

/// What to issue.
#[derive(Clone, Debug)]
pub struct OfflineRequest {
    /// Server, client or peer (both).
    pub profile: Profile,
    /// The SPIFFE ID (the one URI SAN); must be in the CA's trust domain.
    pub spiffe_id: Option<SpiffeId>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<IpAddr>,
    /// Subject common name.
    pub common_name: Option<String>,
    /// Lifetime as asked; ca.toml's `offline_default_ttl` (clamped to the
    /// intermediate's validity) when `None`.
    pub ttl: Option<Duration>,
    /// Type of the new key.
    pub key_type: KeyType,
    /// Allow a reserved SPIFFE ID (`spiffe://TD/ward/...`).
    pub allow_reserved: bool,
}

/// A certificate issued offline, with its new key.
#[derive(Debug)]
pub struct OfflineCertificate {
    /// The new private key.
    pub key: PrivateKey,
    /// Leaf and intermediate, PEM.
    pub chain_pem: String,
    /// Serial of the leaf.
    pub serial: Serial,
    /// End of validity.
    pub not_after: OffsetDateTime,
}

/// Why offline issuance failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OfflineError {
    /// The SPIFFE ID is outside the CA's trust domain.
    #[error("SPIFFE ID {id} is outside this CA's trust domain {trust_domain}")]
    OutsideTrustDomain {
        /// The SPIFFE ID asked for.
        id: SpiffeId,
        /// The CA's trust domain.
        trust_domain: ward_pki::TrustDomain,
    },
    /// A reserved SPIFFE ID without `allow_reserved`.
    #[error("{0}")]
    Reserved(String),
    /// The common name is unusable (the message says why).
    #[error("{0}")]
    CommonName(String),
    /// The CA directory, its configuration or its store is unusable.
    #[error(transparent)]
    Ca(#[from] crate::Error),
    /// The key or serial could not be generated.
    #[error(transparent)]
    Pki(#[from] ward_pki::Error),
    /// The authority refused or failed to sign or record the certificate.
    #[error(transparent)]
    Issue(AuthorityError),
}

impl CaDir {
    /// Issues a certificate offline from this directory, recorded in its
    /// store (ca.toml's, or `database`), which is closed before returning.
    pub async fn issue_offline(
        &self,
        request: OfflineRequest,
        database: Option<&str>,
        now: OffsetDateTime,
    ) -> Result<OfflineCertificate, OfflineError> {
        let config = self.config()?;
        if let Some(id) = &request.spiffe_id {
            if !id.is_member_of(&config.ca.trust_domain) {
                return Err(OfflineError::OutsideTrustDomain {
                    id: id.clone(),
                    trust_domain: config.ca.trust_domain.clone(),
                });
            }
            check_reserved(id, request.allow_reserved).map_err(OfflineError::Reserved)?;
        }
        if let Some(cn) = &request.common_name {
            check_common_name(cn).map_err(OfflineError::CommonName)?;
        }
        let (ttl, clamp_to_issuer) = match request.ttl {
            Some(ttl) => (ttl, false),
            None => (config.issuance.offline_default_ttl()?, true),
        };
        let authority = self
            .open_authority(&config, Storage::Existing { database })
            .await?;
        let issued = async {
            let key = request.key_type.generate()?;
            let leaf = LeafRequest {
                profile: request.profile,
                spiffe_id: request.spiffe_id,
                dns_names: request.dns_names,
                ip_addresses: request.ip_addresses,
                common_name: request.common_name,
                ttl,
                clamp_to_issuer,
                serial: Serial::random(now)?,
                crl_url: None,
                ocsp_url: None,
            };
            // The pre-issuance lint of online issuance; offline certificates
            // may live as long as asked (within the intermediate), so only
            // the lifetime caps follow the request.
            let defaults = LintPolicy::default();
            let lint = LintPolicy {
                max_server_lifetime: defaults.max_server_lifetime.max(ttl),
                max_workload_lifetime: defaults.max_workload_lifetime.max(ttl),
                ..defaults
            };
            let issued = authority
                .issue_offline(&key.public_key_der(), leaf, &lint, now)
                .await
                .map_err(OfflineError::Issue)?;
            let chain_pem =
                pem::certs_to_pem([issued.der.as_ref(), authority.intermediate_der().as_ref()]);
            Ok(OfflineCertificate {
                key,
                chain_pem,
                serial: issued.serial,
                not_after: issued.not_after,
            })
        }
        .await;
        authority.store().close().await;
        issued
    }
}

impl OfflineCertificate {
    /// Writes `PREFIX.crt` (leaf + intermediate) and `PREFIX.key` (0600),
    /// replacing existing files, and returns their paths. Both are staged
    /// before either takes its name, so a failure leaves neither a new key
    /// without its certificate nor the reverse.
    pub fn write(&self, prefix: &Path) -> Result<(PathBuf, PathBuf), crate::Error> {
        let crt_path = with_suffix(prefix, ".crt");
        let key_path = with_suffix(prefix, ".key");
        let pem = self
            .key
            .to_pkcs8_pem()
            .map_err(|e| crate::Error::Config(format!("writing {}: {e}", key_path.display())))?;
        let staged_key = Staged::new(&key_path, pem.as_bytes(), SECRET_MODE)?;
        let staged_crt = Staged::new(&crt_path, self.chain_pem.as_bytes(), PUBLIC_MODE)?;
        staged_key.commit(Replace::Allow)?;
        staged_crt.commit(Replace::Allow)?;
        Ok((crt_path, key_path))
    }
}

fn with_suffix(prefix: &Path, suffix: &str) -> PathBuf {
    let mut s = prefix.as_os_str().to_os_string();
    s.push(suffix);
    PathBuf::from(s)
}
