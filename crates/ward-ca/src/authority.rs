//! The authority: tokens, issuance and renewal, with no HTTP in sight.
//!
//! Every path runs parse → authenticate → authorize → build from policy →
//! sign → record → return, and a certificate is durably recorded before it
//! is returned. The HTTP layer only translates requests into these calls
//! and [`AuthorityError`] into statuses.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use ward_pki::issue::{Issuer, LeafRequest, MIN_TTL, Profile, check_dns_name, humanize};
use ward_pki::{Fingerprint, KeyType, PrivateKey, Serial, SpiffeId, TrustDomain, pem};
use ward_store::{NewCertificate, NewToken, Origin, RevokeTokenOutcome, Store, StoreError, Token};
use x509_parser::prelude::{FromDer, X509Certificate};

use crate::csr::CheckedCsr;
use crate::token::{TokenSecret, new_token_id};
use ward_pki::cidr::Cidr;

/// Why an authority call failed. Each variant is one HTTP status; messages
/// are safe to show a client and never contain a secret.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AuthorityError {
    /// The token is missing, malformed, unknown, expired, revoked or used up,
    /// or the client certificate is not acceptable for renewal (401).
    #[error("{message}")]
    Unauthenticated {
        /// Stable reason code for audit and metrics.
        reason: &'static str,
        /// Human text.
        message: String,
    },
    /// A known token that may not be used now: expired, revoked or used up (401).
    #[error("{message}")]
    TokenRefused {
        /// The token's public id.
        token_id: String,
        /// Stable reason code.
        reason: &'static str,
        /// Human text.
        message: String,
    },
    /// The request asks for more than the token or policy allows (403).
    #[error("{0}")]
    Forbidden(String),
    /// The request is malformed (400).
    #[error("{0}")]
    BadRequest(String),
    /// No such object (404).
    #[error("{0}")]
    NotFound(String),
    /// Storage is unreachable (503).
    #[error("storage unavailable")]
    Unavailable(#[source] StoreError),
    /// A bug or an unexpected failure (500); details go to the log.
    #[error("internal error")]
    Internal(String),
}

impl AuthorityError {
    fn unauthenticated(reason: &'static str, message: impl Into<String>) -> Self {
        AuthorityError::Unauthenticated {
            reason,
            message: message.into(),
        }
    }

    /// Marks an authentication failure with the token it concerns, so audit
    /// lines can name the token (never the secret).
    fn for_token(self, id: &str) -> Self {
        match self {
            AuthorityError::Unauthenticated { reason, message } => AuthorityError::TokenRefused {
                token_id: id.to_owned(),
                reason,
                message,
            },
            other => other,
        }
    }

    /// The token a refusal concerns, when it was identified.
    pub fn token_id(&self) -> Option<&str> {
        match self {
            AuthorityError::TokenRefused { token_id, .. } => Some(token_id),
            _ => None,
        }
    }

    /// A stable snake_case reason for audit lines and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthorityError::Unauthenticated { reason, .. }
            | AuthorityError::TokenRefused { reason, .. } => reason,
            AuthorityError::Forbidden(_) => "forbidden",
            AuthorityError::BadRequest(_) => "bad_request",
            AuthorityError::NotFound(_) => "not_found",
            AuthorityError::Unavailable(_) => "storage_unavailable",
            AuthorityError::Internal(_) => "internal",
        }
    }
}

pub(crate) fn store_err(err: StoreError) -> AuthorityError {
    match err {
        StoreError::TokenNotFound => {
            AuthorityError::unauthenticated("unknown_token", "invalid token")
        }
        StoreError::TokenExpired => {
            AuthorityError::unauthenticated("token_expired", "token expired")
        }
        StoreError::TokenRevoked => {
            AuthorityError::unauthenticated("token_revoked", "token revoked")
        }
        StoreError::TokenExhausted => {
            AuthorityError::unauthenticated("token_used", "token has no uses left")
        }
        e if e.is_unavailable() => AuthorityError::Unavailable(e),
        e => AuthorityError::Internal(e.to_string()),
    }
}

fn pki_err(context: &str) -> impl FnOnce(ward_pki::Error) -> AuthorityError + '_ {
    move |e| match e {
        ward_pki::Error::Policy(m) => AuthorityError::Forbidden(m),
        other => AuthorityError::Internal(format!("{context}: {other}")),
    }
}

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

/// What a new token binds.
#[derive(Clone, Debug)]
pub struct TokenSpec {
    /// The one SPIFFE ID its certificates carry.
    pub spiffe_id: SpiffeId,
    /// DNS SANs its certificates carry.
    pub dns_names: Vec<String>,
    /// EKU profile of its certificates.
    pub profile: Profile,
    /// Certificate lifetime; the policy default when `None`.
    pub cert_ttl: Option<Duration>,
    /// How long the token itself stays usable.
    pub expires_in: Duration,
    /// Certificates it may issue; 0 means unlimited until expiry.
    pub max_uses: u32,
    /// Source networks it may be used from; empty means any.
    pub allowed_cidrs: Vec<Cidr>,
    /// Subject common name its certificates may carry (copied from a CSR
    /// that asks for it, and put into `/v1/issue` certificates).
    pub common_name: Option<String>,
    /// Allow a reserved SPIFFE ID (`spiffe://TD/ward/...`, the CA's own
    /// identities); refused without it.
    pub allow_reserved: bool,
}

/// The path prefix of the SPIFFE IDs Ward keeps for itself
/// (`spiffe://TD/ward/admin`, `spiffe://TD/ward/ca`, …).
pub const RESERVED_PATH: &str = "/ward";

/// Whether `id` is one of Ward's reserved identities: `spiffe://TD/ward` or
/// anything under `spiffe://TD/ward/`.
pub fn is_reserved(id: &SpiffeId) -> bool {
    let path = id.path();
    path == RESERVED_PATH
        || path
            .strip_prefix(RESERVED_PATH)
            .is_some_and(|rest| rest.starts_with('/'))
}

/// Refuses a reserved SPIFFE ID unless `allow` says otherwise.
pub fn check_reserved(id: &SpiffeId, allow: bool) -> Result<(), String> {
    if is_reserved(id) && !allow {
        return Err(format!(
            "{id} is reserved for Ward's own identities (spiffe://<trust domain>{RESERVED_PATH}/...); \
             the admin identity is made only by `ward ca init`. Pass --allow-reserved \
             (\"allow_reserved\": true) if you really mean it"
        ));
    }
    Ok(())
}

/// Longest subject common name (X.520 ub-common-name).
pub const MAX_COMMON_NAME: usize = 64;

/// Checks a common name to bind or write: 1 to 64 characters, no control
/// characters, no surrounding spaces.
pub fn check_common_name(cn: &str) -> Result<(), String> {
    if cn.is_empty() || cn.chars().count() > MAX_COMMON_NAME {
        return Err(format!(
            "common name must be 1 to {MAX_COMMON_NAME} characters"
        ));
    }
    if cn.chars().any(char::is_control) {
        return Err("common name must not contain control characters".into());
    }
    if cn.trim() != cn {
        return Err("common name must not start or end with spaces".into());
    }
    Ok(())
}

/// A token just created: the secret is shown once, then only its hash remains.
#[derive(Debug)]
pub struct CreatedToken {
    /// The secret, to hand to the workload.
    pub secret: TokenSecret,
    /// The stored record.
    pub token: Token,
}

/// A certificate just issued and recorded.
#[derive(Clone, Debug)]
pub struct Issuance {
    /// Serial number.
    pub serial: Serial,
    /// The identity in the certificate.
    pub spiffe_id: SpiffeId,
    /// End of validity.
    pub not_after: OffsetDateTime,
    /// The leaf certificate, DER.
    pub leaf_der: CertificateDer<'static>,
    /// The leaf as PEM.
    pub certificate_pem: String,
    /// Leaf and intermediate, PEM.
    pub chain_pem: String,
    /// The trusted roots, PEM.
    pub ca_bundle_pem: String,
    /// Intermediate and roots, PEM (the seed-compatible `ca_chain`).
    pub ca_chain_pem: String,
    /// The token it was issued from.
    pub token_id: Option<String>,
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
    pub(crate) crl: crate::revocation::CrlState,
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
            crl: crate::revocation::CrlState::default(),
        }
    }

    /// Sets how the CRL is published and the CRL Distribution Point URL
    /// written into certificates issued from now on.
    pub fn with_revocation(
        mut self,
        settings: crate::revocation::CrlSettings,
        crl_url: Option<String>,
    ) -> Self {
        self.crl = crate::revocation::CrlState::new(settings);
        self.crl_url = crl_url;
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

    /// Sets the OCSP responder URL written (as Authority Information Access)
    /// into certificates issued from now on.
    pub fn with_ocsp_url(mut self, ocsp_url: Option<String>) -> Self {
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

    /// Validates and stores a new token; returns its secret once.
    pub async fn create_token(
        &self,
        spec: &TokenSpec,
        now: OffsetDateTime,
    ) -> Result<CreatedToken, AuthorityError> {
        if !spec.spiffe_id.is_member_of(&self.policy.trust_domain) {
            return Err(AuthorityError::BadRequest(format!(
                "SPIFFE ID {} is outside this CA's trust domain {}",
                spec.spiffe_id, self.policy.trust_domain
            )));
        }
        check_reserved(&spec.spiffe_id, spec.allow_reserved).map_err(AuthorityError::Forbidden)?;
        if let Some(cn) = &spec.common_name {
            check_common_name(cn).map_err(AuthorityError::BadRequest)?;
        }
        let cert_ttl = spec.cert_ttl.unwrap_or(self.policy.default_ttl);
        if cert_ttl < MIN_TTL || cert_ttl > self.policy.max_ttl {
            return Err(AuthorityError::BadRequest(format!(
                "certificate lifetime {} is outside {} to {} (the CA's maximum)",
                humanize(cert_ttl),
                humanize(MIN_TTL),
                humanize(self.policy.max_ttl)
            )));
        }
        if spec.expires_in.is_zero() {
            return Err(AuthorityError::BadRequest(
                "token expiry must be in the future".into(),
            ));
        }
        let dns_names = spec
            .dns_names
            .iter()
            .map(|d| check_dns_name(d).map_err(|e| AuthorityError::BadRequest(e.to_string())))
            .collect::<Result<Vec<_>, _>>()?;
        let expires_at = time::Duration::try_from(spec.expires_in)
            .ok()
            .and_then(|d| now.checked_add(d))
            .ok_or_else(|| AuthorityError::BadRequest("token expiry is too far away".into()))?;
        let secret =
            TokenSecret::generate().map_err(|e| AuthorityError::Internal(e.to_string()))?;
        let new = NewToken {
            id: new_token_id().map_err(|e| AuthorityError::Internal(e.to_string()))?,
            hash: secret.hash(),
            spiffe_id: spec.spiffe_id.clone(),
            dns_names,
            profile: spec.profile,
            cert_ttl_secs: i64::try_from(cert_ttl.as_secs()).unwrap_or(i64::MAX),
            expires_at,
            max_uses: i64::from(spec.max_uses),
            allowed_cidrs: spec.allowed_cidrs.iter().map(ToString::to_string).collect(),
            created_at: now,
            common_name: spec.common_name.clone(),
        };
        self.store.create_token(&new).await.map_err(store_err)?;
        let token = self
            .store
            .token(&new.id)
            .await
            .map_err(store_err)?
            .ok_or_else(|| AuthorityError::Internal("token vanished after creation".into()))?;
        Ok(CreatedToken { secret, token })
    }

    /// Every token, newest first (hashes included; never secrets).
    pub async fn list_tokens(&self) -> Result<Vec<Token>, AuthorityError> {
        self.store.list_tokens().await.map_err(store_err)
    }

    /// Revokes a token, and with `with_certificates` every live certificate
    /// issued from it. Returns how many certificates were revoked.
    pub async fn revoke_token(
        &self,
        id: &str,
        with_certificates: bool,
        now: OffsetDateTime,
    ) -> Result<u64, AuthorityError> {
        let outcome = self
            .store
            .revoke_token(id, with_certificates, now)
            .await
            .map_err(store_err)?;
        self.tokens.evict(id);
        match outcome {
            RevokeTokenOutcome::NotFound => Err(AuthorityError::NotFound(format!("no token {id}"))),
            RevokeTokenOutcome::Revoked {
                certificates_revoked,
            } => {
                if certificates_revoked > 0 {
                    self.after_revocation(now).await;
                }
                Ok(certificates_revoked)
            }
        }
    }

    /// Finds the token a workload presents and checks it may be used now,
    /// from `source`. Consumes nothing.
    pub async fn authenticate(
        &self,
        presented: &str,
        source: IpAddr,
        now: OffsetDateTime,
    ) -> Result<Token, AuthorityError> {
        let secret = TokenSecret::parse(presented)
            .ok_or_else(|| AuthorityError::unauthenticated("malformed_token", "invalid token"))?;
        let hash = secret.hash();
        let read_at = std::time::Instant::now();
        let token = match self.tokens.get(&hash, read_at) {
            Some(token) => token,
            None => {
                let token = self
                    .store
                    .token_by_hash(&hash)
                    .await
                    .map_err(store_err)?
                    .ok_or_else(|| {
                        AuthorityError::unauthenticated("unknown_token", "invalid token")
                    })?;
                self.tokens.put(&token, read_at);
                token
            }
        };
        // From here on the token is known: refusals name it (by id) for the
        // audit line.
        if token.revoked_at.is_some() {
            return Err(
                AuthorityError::unauthenticated("token_revoked", "token revoked")
                    .for_token(&token.id),
            );
        }
        if token.expires_at <= now {
            return Err(
                AuthorityError::unauthenticated("token_expired", "token expired")
                    .for_token(&token.id),
            );
        }
        if token.max_uses != 0 && token.uses >= token.max_uses {
            return Err(
                AuthorityError::unauthenticated("token_used", "token has no uses left")
                    .for_token(&token.id),
            );
        }
        if !token.allowed_cidrs.is_empty() {
            let allowed = token
                .allowed_cidrs
                .iter()
                .filter_map(|c| c.parse::<Cidr>().ok())
                .any(|c| c.contains(source));
            if !allowed {
                return Err(AuthorityError::Forbidden(format!(
                    "this token may not be used from {source}"
                )));
            }
        }
        Ok(token)
    }

    /// Signs the CSR's key for the token's binding and consumes one use.
    pub async fn sign_for_token(
        &self,
        token: &Token,
        csr: &CheckedCsr,
        now: OffsetDateTime,
    ) -> Result<Issuance, AuthorityError> {
        let mut binding = Binding::of_token(token)?;
        binding.check_request(csr)?;
        // The CN goes in only when the CSR asks for it (and is allowed to).
        binding.common_name = csr.requested.common_names.first().cloned();
        self.issue_for_token(token, &binding, &csr.spki_der, now)
            .await
    }

    /// Generates a key server-side (for runtimes that cannot), signs it for
    /// the token's binding and consumes one use. The key is returned, never stored.
    pub async fn issue_keypair_for_token(
        &self,
        token: &Token,
        key_type: KeyType,
        now: OffsetDateTime,
    ) -> Result<(Issuance, PrivateKey), AuthorityError> {
        let mut binding = Binding::of_token(token)?;
        binding.common_name = binding.bound_common_name.clone();
        // RSA keys take up to seconds of CPU: not on an async worker.
        let key = crate::cpu::generate(key_type)
            .await
            .map_err(AuthorityError::Internal)?;
        let issuance = self
            .issue_for_token(token, &binding, &key.public_key_der(), now)
            .await?;
        Ok((issuance, key))
    }

    async fn issue_for_token(
        &self,
        token: &Token,
        binding: &Binding,
        spki_der: &[u8],
        now: OffsetDateTime,
    ) -> Result<Issuance, AuthorityError> {
        let ttl =
            Duration::from_secs(token.cert_ttl_secs.max(0).unsigned_abs()).min(self.policy.max_ttl);
        let (issuance, record) = self.sign(
            binding,
            spki_der,
            ttl,
            Some(token.id.clone()),
            None,
            Origin::Token,
            now,
        )?;
        self.store
            .issue_with_token(&token.id, now, &record)
            .await
            .map_err(|e| {
                if matches!(
                    e,
                    StoreError::TokenNotFound
                        | StoreError::TokenRevoked
                        | StoreError::TokenExpired
                        | StoreError::TokenExhausted
                ) {
                    // The cached copy was stale: read it afresh next time.
                    self.tokens.evict(&token.id);
                }
                store_err(e).for_token(&token.id)
            })?;
        if token.max_uses != 0 {
            // Its use count matters: later requests must see this use.
            self.tokens.evict(&token.id);
        }
        Ok(issuance)
    }

    /// Renews the certificate a client authenticated with: same identity,
    /// fresh validity, the CSR's key if one is sent (else the same key).
    /// `chain` was already validated against the roots by the TLS layer.
    pub async fn renew(
        &self,
        chain: &[CertificateDer<'_>],
        csr: Option<&CheckedCsr>,
        now: OffsetDateTime,
    ) -> Result<Issuance, AuthorityError> {
        let leaf = chain.first().ok_or_else(|| {
            AuthorityError::unauthenticated(
                "no_client_certificate",
                "renewal needs a client certificate",
            )
        })?;
        let (_, cert) = X509Certificate::from_der(leaf).map_err(|_| {
            AuthorityError::unauthenticated("bad_certificate", "unreadable client certificate")
        })?;
        let serial = Serial::from_be_bytes(cert.raw_serial())
            .map_err(|_| AuthorityError::unauthenticated("bad_certificate", "bad serial number"))?;
        let record = self
            .store
            .certificate(&serial)
            .await
            .map_err(store_err)?
            .ok_or_else(|| {
                AuthorityError::unauthenticated(
                    "unknown_certificate",
                    "this certificate was not issued online by this CA",
                )
            })?;
        if record.der != leaf.as_ref() {
            return Err(AuthorityError::unauthenticated(
                "unknown_certificate",
                "this certificate was not issued online by this CA",
            ));
        }
        // Offline, admin and the CA's own certificates are recorded (so they
        // can be revoked) but renew only the way they were made.
        if !matches!(record.origin, Origin::Token | Origin::Renewal) {
            return Err(AuthorityError::unauthenticated(
                "unknown_certificate",
                format!(
                    "this certificate was not issued online by this CA (origin {}); \
                     only online certificates renew",
                    record.origin
                ),
            ));
        }
        if record.revoked_at.is_some() {
            return Err(AuthorityError::unauthenticated(
                "certificate_revoked",
                "certificate revoked",
            ));
        }
        if record.not_after <= now {
            return Err(AuthorityError::unauthenticated(
                "certificate_expired",
                "certificate expired",
            ));
        }
        // The lifetime the token granted; without a token, the presented
        // certificate's own (notBefore may have been clamped to the
        // issuer's start, so this can come out shorter than asked).
        let mut granted = None;
        if let Some(token_id) = &record.token_id {
            let token = self.store.token(token_id).await.map_err(store_err)?;
            if token.as_ref().is_some_and(|t| t.revoked_with_certs) {
                return Err(AuthorityError::unauthenticated(
                    "token_revoked",
                    "the token this certificate came from was revoked with its certificates",
                ));
            }
            granted = token
                .and_then(|t| u64::try_from(t.cert_ttl_secs).ok())
                .map(Duration::from_secs);
        }
        let mut binding = Binding::of_certificate(&cert, &self.policy.trust_domain)?;
        let spki = match csr {
            Some(csr) => {
                binding.check_request(csr)?;
                csr.spki_der.clone()
            }
            None => cert.public_key().raw.to_vec(),
        };
        // A renewal keeps the identity as it is, CN included; a CSR may ask
        // for a CN it is allowed (checked above).
        binding.common_name = csr
            .and_then(|c| c.requested.common_names.first().cloned())
            .or_else(|| binding.bound_common_name.clone());
        let lifetime = (record.not_after - record.not_before)
            .whole_seconds()
            .max(0)
            .unsigned_abs();
        let ttl = granted
            .unwrap_or_else(|| {
                Duration::from_secs(lifetime).saturating_sub(ward_pki::issue::NOT_BEFORE_SKEW)
            })
            .max(MIN_TTL)
            .min(self.policy.max_ttl);
        let (issuance, new) = self.sign(
            &binding,
            &spki,
            ttl,
            record.token_id.clone(),
            Some(serial),
            Origin::Renewal,
            now,
        )?;
        self.store
            .record_certificate(&new)
            .await
            .map_err(store_err)?;
        Ok(issuance)
    }

    /// Issues and records a server certificate for the CA's own listener.
    pub async fn issue_server_identity(
        &self,
        dns_names: &[String],
        ips: &[IpAddr],
        ttl: Duration,
        now: OffsetDateTime,
    ) -> Result<(Issuance, PrivateKey), AuthorityError> {
        let binding = Binding {
            spiffe_id: self
                .policy
                .trust_domain
                .id("/ward/ca")
                .map_err(|e| AuthorityError::Internal(e.to_string()))?,
            dns_names: dns_names.to_vec(),
            ip_addresses: ips.to_vec(),
            profile: Profile::Server,
            bound_common_name: None,
            common_name: None,
        };
        let key = KeyType::EcdsaP256
            .generate()
            .map_err(|e| AuthorityError::Internal(e.to_string()))?;
        let (issuance, record) = self.sign(
            &binding,
            &key.public_key_der(),
            ttl,
            None,
            None,
            Origin::CaServer,
            now,
        )?;
        self.store
            .record_certificate(&record)
            .await
            .map_err(store_err)?;
        Ok((issuance, key))
    }

    /// Records a certificate a key of the CA directory signed outside this
    /// authority (the admin identity, an OCSP responder), linted by its
    /// maker. Recording the same certificate again is a no-op; another
    /// certificate under its serial is an error.
    pub async fn record_signed(
        &self,
        der: &[u8],
        origin: Origin,
        now: OffsetDateTime,
    ) -> Result<(), AuthorityError> {
        record_signed(self.store.as_ref(), der, origin, now).await
    }

    /// Issues a certificate offline (`ward cert create`): built from
    /// `request` with this CA's CRL and OCSP URLs, linted with `lint`
    /// (offline certificates may be long-lived), and recorded with origin
    /// `offline` before it is returned.
    pub async fn issue_offline(
        &self,
        spki_der: &[u8],
        mut request: LeafRequest,
        lint: &ward_pki::lint::LintPolicy,
        now: OffsetDateTime,
    ) -> Result<ward_pki::issue::Issued, AuthorityError> {
        request.crl_url = self.crl_url.clone();
        request.ocsp_url = self.ocsp_url.clone();
        let issued = self
            .issuer
            .sign_leaf(spki_der, &request, now)
            .map_err(pki_err("signing"))?;
        match &self.pre_issuance {
            Some(bound) => bound.check(&issued.der, lint, now),
            None => ward_pki::lint::pre_issuance(&issued.der, self.issuer.cert_der(), lint, now),
        }
        .map_err(AuthorityError::Forbidden)?;
        let record = record_of(&issued.der, Origin::Offline, now)?;
        self.store
            .record_certificate(&record)
            .await
            .map_err(store_err)?;
        Ok(issued)
    }

    #[allow(clippy::too_many_arguments)] // one call site per origin; a struct would only rename them
    fn sign(
        &self,
        binding: &Binding,
        spki_der: &[u8],
        ttl: Duration,
        token_id: Option<String>,
        renewed_from: Option<Serial>,
        origin: Origin,
        now: OffsetDateTime,
    ) -> Result<(Issuance, NewCertificate), AuthorityError> {
        let serial = Serial::random().map_err(|e| AuthorityError::Internal(e.to_string()))?;
        let request = LeafRequest {
            profile: binding.profile,
            spiffe_id: Some(binding.spiffe_id.clone()),
            dns_names: binding.dns_names.clone(),
            ip_addresses: binding.ip_addresses.clone(),
            common_name: binding.common_name.clone(),
            ttl,
            clamp_to_issuer: true,
            serial: serial.clone(),
            crl_url: self.crl_url.clone(),
            ocsp_url: self.ocsp_url.clone(),
        };
        let issued = crate::cpu::heavy(self.issuer.is_rsa(), || {
            self.issuer.sign_leaf(spki_der, &request, now)
        })
        .map_err(pki_err("signing"))?;
        // Pre-issuance lint, the rules of `ward cert lint`: a CA bug must never
        // reach a client. Online paths cap `ttl` at max_ttl; the CA's own
        // server certificate may ask for more.
        let lint = ward_pki::lint::LintPolicy {
            max_workload_lifetime: ttl.max(self.policy.max_ttl),
            ..Default::default()
        };
        match &self.pre_issuance {
            Some(bound) => bound.check(&issued.der, &lint, now),
            None => ward_pki::lint::pre_issuance(&issued.der, self.issuer.cert_der(), &lint, now),
        }
        .map_err(AuthorityError::Internal)?;
        let certificate_pem = pem::cert_to_pem(&issued.der);
        let record = NewCertificate {
            serial: serial.clone(),
            spiffe_id: Some(binding.spiffe_id.clone()),
            token_id: token_id.clone(),
            not_before: issued.not_before,
            not_after: issued.not_after,
            der: issued.der.to_vec(),
            fingerprint: Fingerprint::of_der(&issued.der).to_string(),
            issued_at: now,
            renewed_from,
            origin,
        };
        let issuance = Issuance {
            serial,
            spiffe_id: binding.spiffe_id.clone(),
            not_after: issued.not_after,
            chain_pem: format!("{certificate_pem}{}", self.intermediate_pem),
            certificate_pem,
            ca_bundle_pem: self.roots_pem.clone(),
            ca_chain_pem: format!("{}{}", self.intermediate_pem, self.roots_pem),
            leaf_der: issued.der,
            token_id,
        };
        Ok((issuance, record))
    }
}

/// The check [`Authority::sign_for_token`] makes of a CSR against the
/// token's binding, alone (for the fuzz targets).
pub(crate) fn check_csr_for_token(token: &Token, csr: &CheckedCsr) -> Result<(), AuthorityError> {
    Binding::of_token(token)?.check_request(csr)
}

/// The names a certificate may carry: a token's binding, or the identity of
/// a certificate being renewed.
#[derive(Clone, Debug)]
struct Binding {
    spiffe_id: SpiffeId,
    dns_names: Vec<String>,
    ip_addresses: Vec<IpAddr>,
    profile: Profile,
    /// The common name a request may ask for; with none, a request may ask
    /// for one of `dns_names` as its CN.
    bound_common_name: Option<String>,
    /// The common name written into the certificate being built.
    common_name: Option<String>,
}

impl Binding {
    fn of_token(token: &Token) -> Result<Self, AuthorityError> {
        Ok(Binding {
            spiffe_id: token.spiffe_id.clone(),
            dns_names: token.dns_names.clone(),
            ip_addresses: Vec::new(),
            profile: token.profile,
            bound_common_name: token.common_name.clone(),
            common_name: None,
        })
    }

    fn of_certificate(
        cert: &X509Certificate<'_>,
        td: &TrustDomain,
    ) -> Result<Self, AuthorityError> {
        let der = cert.as_raw();
        let spiffe_id = ward_pki::inspect::spiffe_id_of(der)
            .ok()
            .flatten()
            .filter(|id| id.is_member_of(td))
            .ok_or_else(|| {
                AuthorityError::unauthenticated(
                    "not_an_svid",
                    "the client certificate carries no SPIFFE ID of this trust domain",
                )
            })?;
        let info = ward_pki::inspect::CertInfo::from_der(der, OffsetDateTime::now_utc())
            .map_err(|e| AuthorityError::Internal(e.to_string()))?;
        let server = info.extended_key_usage.iter().any(|e| e == "serverAuth");
        let client = info.extended_key_usage.iter().any(|e| e == "clientAuth");
        let profile = match (server, client) {
            (true, true) => Profile::Peer,
            (true, false) => Profile::Server,
            _ => Profile::Client,
        };
        let bound_common_name = cert
            .subject()
            .iter_common_name()
            .next()
            .and_then(|cn| cn.as_str().ok())
            .map(str::to_owned);
        Ok(Binding {
            spiffe_id,
            bound_common_name,
            common_name: None,
            dns_names: info.sans.dns,
            ip_addresses: info
                .sans
                .ip
                .iter()
                .filter_map(|ip| ip.parse().ok())
                .collect(),
            profile,
        })
    }

    /// Refuses a CSR that asks for any name outside the binding.
    fn check_request(&self, csr: &CheckedCsr) -> Result<(), AuthorityError> {
        let r = &csr.requested;
        let mut outside: Vec<String> = Vec::new();
        outside.extend(
            r.uris
                .iter()
                .filter(|u| *u != self.spiffe_id.as_str())
                .cloned(),
        );
        outside.extend(
            r.dns
                .iter()
                .filter(|d| !self.dns_names.contains(d))
                .cloned(),
        );
        outside.extend(
            r.ips
                .iter()
                .filter(|ip| !self.ip_addresses.contains(ip))
                .map(ToString::to_string),
        );
        outside.extend(r.other.iter().cloned());
        // A CN is allowed when it is the bound one or, with none bound,
        // one of the bound DNS names; several CNs must all be that one.
        let allowed_cn = |cn: &String| match &self.bound_common_name {
            Some(bound) => cn == bound,
            None => self.dns_names.contains(&cn.to_ascii_lowercase()),
        };
        outside.extend(
            r.common_names
                .iter()
                .filter(|cn| !allowed_cn(cn))
                .map(|cn| format!("CN={cn}")),
        );
        if r.common_names
            .iter()
            .any(|cn| Some(cn) != r.common_names.first())
        {
            outside.push("more than one CN".to_owned());
        }
        if outside.is_empty() {
            Ok(())
        } else {
            Err(AuthorityError::Forbidden(format!(
                "the request asks for names outside the token's binding: {}",
                outside.join(", ")
            )))
        }
    }
}

/// Records a certificate signed with a key of the CA directory outside an
/// [`Authority`] (the admin identity, OCSP responders). Idempotent for the
/// same certificate; another certificate under its serial is an error.
pub async fn record_signed(
    store: &dyn Store,
    der: &[u8],
    origin: Origin,
    now: OffsetDateTime,
) -> Result<(), AuthorityError> {
    let record = record_of(der, origin, now)?;
    match store.record_certificate(&record).await {
        Ok(()) => Ok(()),
        Err(StoreError::DuplicateSerial) => {
            let existing = store.certificate(&record.serial).await.map_err(store_err)?;
            if existing.is_some_and(|c| c.der == record.der) {
                Ok(())
            } else {
                Err(AuthorityError::Internal(format!(
                    "another certificate is recorded under serial {}",
                    record.serial
                )))
            }
        }
        Err(e) => Err(store_err(e)),
    }
}

/// The record of a certificate signed outside [`Authority::sign`].
fn record_of(
    der: &[u8],
    origin: Origin,
    now: OffsetDateTime,
) -> Result<NewCertificate, AuthorityError> {
    let bad = |e: String| AuthorityError::Internal(format!("reading a certificate to record: {e}"));
    let (_, cert) = X509Certificate::from_der(der).map_err(|e| bad(e.to_string()))?;
    let serial = Serial::from_be_bytes(cert.raw_serial()).map_err(|e| bad(e.to_string()))?;
    let spiffe_id = ward_pki::inspect::spiffe_id_of(der).map_err(|e| bad(e.to_string()))?;
    Ok(NewCertificate {
        serial,
        spiffe_id,
        token_id: None,
        not_before: cert.validity().not_before.to_datetime(),
        not_after: cert.validity().not_after.to_datetime(),
        der: der.to_vec(),
        fingerprint: Fingerprint::of_der(der).to_string(),
        issued_at: now,
        renewed_from: None,
        origin,
    })
}

mod token_cache;

#[cfg(test)]
mod tests;
