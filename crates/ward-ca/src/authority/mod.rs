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

use arc_swap::ArcSwap;
use rustls_pki_types::CertificateDer;
use ward_pki::issue::Issuer;
use ward_pki::{TrustDomain, pem};
use ward_store::Store;

pub mod acme;
mod binding;
pub mod entries;
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

/// The intermediate that signs now, with what is derived from it once.
/// Swapped whole when a rotation switches (see `crate::rotation`), so one
/// issuance never mixes two intermediates.
pub(crate) struct Signing {
    pub(crate) issuer: Arc<Issuer>,
    /// The intermediate as PEM, then the rollover certificates of a root
    /// rotation (`extra`), appended to every chain.
    pub(crate) intermediate_pem: String,
    /// Rollover certificates appended after the intermediate.
    pub(crate) extra: Vec<CertificateDer<'static>>,
    /// The pre-issuance lint bound to `issuer` (parsed once; `None` only if
    /// the issuer certificate could not be read, then the full lint runs).
    pub(crate) pre_issuance: Option<ward_pki::lint::PreIssuance>,
}

impl Signing {
    fn new(issuer: Arc<Issuer>, extra: Vec<CertificateDer<'static>>) -> Self {
        Signing {
            intermediate_pem: pem::certs_to_pem(
                std::iter::once(issuer.cert_der().as_ref()).chain(extra.iter().map(|c| c.as_ref())),
            ),
            extra,
            pre_issuance: ward_pki::lint::PreIssuance::new(&issuer).ok(),
            issuer,
        }
    }
}

/// The certificate authority.
pub struct Authority {
    policy: Policy,
    signing: ArcSwap<Signing>,
    /// The directory's own intermediate (`intermediate.crt`), which signs
    /// until a rotation switches.
    initial: Arc<Issuer>,
    /// Intermediates published besides the signing one: the next one during
    /// an overlap, earlier ones until their last certificate expires.
    others: ArcSwap<Vec<Arc<Issuer>>>,
    /// The trust bundle distributed now (a root rotation adds and retires
    /// roots), as PEM.
    roots_pem: ArcSwap<String>,
    /// The roots of the directory (`root.crt`).
    directory_roots: Vec<CertificateDer<'static>>,
    /// When the distributed roots last changed (milliseconds since the
    /// epoch; 0: never in this process): the SPIFFE bundle's
    /// `spiffe_sequence` is at least this, so a root rotation is a new
    /// bundle version to federation peers.
    pub(crate) roots_sequence: std::sync::atomic::AtomicU64,
    store: Arc<dyn Store>,
    crl_url: Option<String>,
    ocsp_url: Option<String>,
    /// Tokens recently found by secret hash (see [`token_cache`]).
    tokens: token_cache::TokenCache,
    pub(crate) crl: CrlState,
    /// The JWT-SVID key, when this authority mints JWT-SVIDs.
    pub(crate) jwt: Option<jwt::JwtState>,
    /// `spiffe_refresh_hint` of the published bundle, in seconds.
    pub(crate) bundle_refresh_hint: u64,
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
        let issuer = Arc::new(issuer);
        Authority {
            roots_pem: ArcSwap::from_pointee(pem::certs_to_pem(roots.iter().map(|r| r.as_ref()))),
            directory_roots: roots.iter().map(|r| r.clone().into_owned()).collect(),
            roots_sequence: std::sync::atomic::AtomicU64::new(0),
            tokens: token_cache::TokenCache::default(),
            policy,
            signing: ArcSwap::from_pointee(Signing::new(issuer.clone(), Vec::new())),
            initial: issuer,
            others: ArcSwap::from_pointee(Vec::new()),
            store,
            crl_url: None,
            ocsp_url: None,
            crl: CrlState::default(),
            jwt: None,
            bundle_refresh_hint: jwt::BUNDLE_REFRESH_HINT,
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

    /// The signing intermediate and what is derived from it, as of now.
    pub(crate) fn signing(&self) -> Arc<Signing> {
        self.signing.load_full()
    }

    /// Starts signing with `issuer` (a rotation's switch), publishes
    /// `others` besides it, distributes `roots` as the trust bundle and
    /// appends `extra` (rollover certificates) to every chain. Issuances
    /// already under way finish with the intermediate they started with.
    pub fn set_intermediates(
        &self,
        signing: Arc<Issuer>,
        others: Vec<Arc<Issuer>>,
        roots: &[CertificateDer<'static>],
        extra: &[CertificateDer<'static>],
    ) {
        // The bundle and the others first: a certificate from the new
        // signer is never out before its root is distributed and its
        // intermediate listed.
        let bundle = pem::certs_to_pem(roots.iter().map(|r| r.as_ref()));
        if **self.roots_pem.load() != bundle {
            self.roots_pem.store(Arc::new(bundle));
            let now =
                u64::try_from(time::OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000)
                    .unwrap_or(1);
            // Strictly greater than any sequence before, even within one
            // millisecond.
            let _ = self.roots_sequence.fetch_update(
                std::sync::atomic::Ordering::AcqRel,
                std::sync::atomic::Ordering::Acquire,
                |prev| Some(now.max(prev + 1)),
            );
        }
        self.others.store(Arc::new(others));
        let current = self.signing.load();
        if current.issuer.cert_der() != signing.cert_der() || current.extra != extra {
            self.signing
                .store(Arc::new(Signing::new(signing, extra.to_vec())));
        }
    }

    /// Every intermediate published: the signing one first, then the next
    /// one and earlier ones still in use.
    pub fn intermediates(&self) -> Vec<CertificateDer<'static>> {
        let mut all = vec![self.intermediate_der()];
        all.extend(self.others.load().iter().map(|i| i.cert_der().clone()));
        all
    }

    /// Every published intermediate with its key, the signing one first.
    pub(crate) fn published_issuers(&self) -> Vec<Arc<Issuer>> {
        let mut all = vec![self.signing.load().issuer.clone()];
        all.extend(self.others.load().iter().cloned());
        all
    }

    /// Who signs the CRL at the configured `crl_url` (`/v1/crl`): the
    /// directory's own intermediate while it is published (its
    /// certificates name that URL), then the signing one.
    pub(crate) fn crl_signer(&self) -> Arc<Issuer> {
        let published = self.published_issuers();
        if published.iter().any(|i| Arc::ptr_eq(i, &self.initial)) {
            return self.initial.clone();
        }
        self.signing.load().issuer.clone()
    }

    /// The CRL Distribution Point written into certificates `issuer`
    /// signs: `crl_url` for the directory's own intermediate,
    /// `crl_url/<sha256 of the intermediate>` for a rotated one, so each
    /// certificate names the CRL its own issuer signs.
    pub(crate) fn crl_url_for(&self, issuer: &Issuer) -> Option<String> {
        let url = self.crl_url.as_ref()?;
        if issuer.cert_der() == self.initial.cert_der() {
            return Some(url.clone());
        }
        Some(format!(
            "{}/{}",
            url.trim_end_matches('/'),
            fingerprint_hex(issuer.cert_der())
        ))
    }

    /// The directory's own intermediate (`intermediate.crt`).
    pub fn initial_issuer(&self) -> Arc<Issuer> {
        self.initial.clone()
    }

    /// The loaded intermediate whose certificate is `der`, if any.
    pub fn issuer_for(&self, der: &CertificateDer<'_>) -> Option<Arc<Issuer>> {
        let signing = self.signing.load();
        if signing.issuer.cert_der() == der {
            return Some(signing.issuer.clone());
        }
        self.others
            .load()
            .iter()
            .find(|i| i.cert_der() == der)
            .cloned()
    }

    /// The policy in force.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// The store (for readiness checks and administration).
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The trust bundle distributed now, as PEM.
    pub fn roots_pem(&self) -> Arc<String> {
        self.roots_pem.load_full()
    }

    /// The roots of the CA directory (`root.crt`).
    pub fn directory_roots(&self) -> &[CertificateDer<'static>] {
        &self.directory_roots
    }

    /// The signing chain after the leaf, as PEM: the signing intermediate
    /// and any rollover certificates of a root rotation.
    pub fn signing_chain_pem(&self) -> String {
        self.signing.load().intermediate_pem.clone()
    }

    /// The signing intermediate certificate, DER.
    pub fn intermediate_der(&self) -> CertificateDer<'static> {
        self.signing.load().issuer.cert_der().clone()
    }
}

/// SHA-256 of a DER certificate, lowercase hex without separators (how
/// rotated intermediates are named).
pub fn fingerprint_hex(der: &[u8]) -> String {
    ward_pki::Fingerprint::of_der(der)
        .to_string()
        .replace(':', "")
        .to_lowercase()
}

#[cfg(test)]
mod tests;
