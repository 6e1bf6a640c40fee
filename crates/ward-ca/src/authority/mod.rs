//! The authority: tokens, issuance and renewal, with no HTTP in sight.
//!
//! Every path runs parse → authenticate → authorize → build from policy →
//! sign → record → return, and a certificate is durably recorded before it
//! is returned. The HTTP layer only translates requests into these calls
//! and [`AuthorityError`] into statuses.
//!
//! One concern per submodule, all on the one [`Authority`]: [`tokens`]
//! (create, list, revoke, authenticate), [`issuance`] (token issuance,
//! renewal, the CA's own and offline certificates), [`jwt`] (JWT-SVIDs and
//! the SPIFFE bundle), `binding` (the names a
//! certificate may carry), [`revocation`] (revoking and publishing the CRL),
//! and `error` (what a call answers when it fails).

use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use ward_pki::issue::Issuer;
use ward_pki::{TrustDomain, pem};
use ward_store::Store;

pub mod acme;
mod binding;
mod error;
pub mod issuance;
pub mod jwt;
pub mod revocation;
mod token_cache;
pub mod tokens;

pub(crate) use binding::check_csr_for_token;
pub use error::AuthorityError;
pub(crate) use error::store_err;
pub use issuance::{Issuance, record_signed};
use revocation::{CrlSettings, CrlState};
pub use tokens::{
    CreatedToken, MAX_COMMON_NAME, RESERVED_PATH, TokenSpec, check_common_name, check_reserved,
    is_reserved,
};

/// Issuance policy from `ca.toml`.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Every identity must be in this trust domain.
    pub trust_domain: TrustDomain,
    /// Lifetime when a token does not name one.
    pub default_ttl: Duration,
    /// Longest lifetime issued online.
    pub max_ttl: Duration,
}

/// The certificate authority.
pub struct Authority {
    policy: Policy,
    issuer: Issuer,
    intermediate_pem: String,
    roots_pem: String,
    store: Arc<dyn Store>,
    crl_url: Option<String>,
    ocsp_url: Option<String>,
    /// The pre-issuance lint bound to `issuer` (parsed once; `None` only if
    /// the issuer certificate could not be read, then the full lint runs).
    pre_issuance: Option<ward_pki::lint::PreIssuance>,
    /// Tokens recently found by secret hash (see [`token_cache`]).
    tokens: token_cache::TokenCache,
    pub(crate) crl: CrlState,
    /// The JWT-SVID key, when this authority mints JWT-SVIDs.
    pub(crate) jwt: Option<jwt::JwtState>,
}

impl std::fmt::Debug for Authority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authority")
            .field("trust_domain", &self.policy.trust_domain)
            .finish_non_exhaustive()
    }
}

impl Authority {
    /// An authority signing with `issuer`, trusting `roots`, recording in `store`.
    pub fn new(
        policy: Policy,
        issuer: Issuer,
        roots: &[CertificateDer<'_>],
        store: Arc<dyn Store>,
    ) -> Self {
        Authority {
            intermediate_pem: pem::cert_to_pem(issuer.cert_der()),
            roots_pem: pem::certs_to_pem(roots.iter().map(|r| r.as_ref())),
            pre_issuance: ward_pki::lint::PreIssuance::new(&issuer).ok(),
            tokens: token_cache::TokenCache::default(),
            policy,
            issuer,
            store,
            crl_url: None,
            ocsp_url: None,
            crl: CrlState::default(),
            jwt: None,
        }
    }

    /// Publishes a CRL with these settings (`ward ca serve`): signed at
    /// start, after each revocation made here, and refreshed periodically.
    pub fn with_revocation(mut self, settings: CrlSettings) -> Self {
        self.crl = CrlState::new(settings);
        self
    }

    /// Sets the CRL Distribution Point and OCSP responder URLs written into
    /// certificates, without publishing a CRL (command-line issuance).
    pub fn with_certificate_urls(
        mut self,
        crl_url: Option<String>,
        ocsp_url: Option<String>,
    ) -> Self {
        self.crl_url = crl_url;
        self.ocsp_url = ocsp_url;
        self
    }

    /// The signing intermediate.
    pub(crate) fn issuer(&self) -> &Issuer {
        &self.issuer
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The store (for readiness checks and administration).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The trusted roots as PEM.
    pub fn roots_pem(&self) -> &str {
        &self.roots_pem
    }

    /// The intermediate certificate, DER.
    pub fn intermediate_der(&self) -> &CertificateDer<'static> {
        self.issuer.cert_der()
    }
}

#[cfg(test)]
mod tests;
