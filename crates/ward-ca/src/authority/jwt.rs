//! JWT-SVIDs: minted for a workload that authenticates with its X.509-SVID
//! (mTLS), signed with the CA's own JWT key, and the trust bundle that
//! publishes that key beside the X.509 roots (SPIFFE bundle format).

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use ward_pki::SpiffeId;
use ward_pki::jwt::{self, Jwk, JwkSet, JwtSigner};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::binding::Binding;
use super::{Authority, AuthorityError};

/// Lifetime of a JWT-SVID when the request names none.
pub const DEFAULT_JWT_TTL: Duration = Duration::from_secs(5 * 60);
/// Longest lifetime of a JWT-SVID (bearer tokens stay short).
pub const MAX_JWT_TTL: Duration = Duration::from_secs(60 * 60);
/// Shortest lifetime asked for.
pub const MIN_JWT_TTL: Duration = Duration::from_secs(10);
/// Default `spiffe_refresh_hint` of the published bundle, in seconds.
pub const BUNDLE_REFRESH_HINT: u64 = 60;

/// A JWT-SVID just minted.
#[derive(Clone, Debug)]
pub struct MintedJwt {
    /// The compact JWS.
    pub token: String,
    /// Its subject.
    pub spiffe_id: SpiffeId,
    /// Its expiry.
    pub expires_at: OffsetDateTime,
}

/// The JWT keys and bundle version an authority publishes.
#[derive(Debug)]
pub(crate) struct JwtState {
    current: ArcSwap<JwtKeySet>,
}

/// One version of the JWT keys: the signing key, retired keys still
/// published (public JWK, retire time in Unix seconds) and the bundle's
/// `spiffe_sequence`.
#[derive(Debug)]
struct JwtKeySet {
    signer: Arc<JwtSigner>,
    previous: Vec<(Jwk, i64)>,
    sequence: u64,
}

impl Authority {
    /// Signs JWT-SVIDs with `signer`; the bundle carries `sequence` (the
    /// start time of this CA process: a restart may have changed the keys).
    pub fn with_jwt_signer(self, signer: JwtSigner, sequence: u64) -> Self {
        self.with_jwt_keys(
            &crate::dir::jwt_keys::JwtKeys {
                signer: Arc::new(signer),
                previous: Vec::new(),
            },
            sequence,
        )
    }

    /// Signs JWT-SVIDs with `keys.signer` and publishes the retired keys
    /// too until their retire time.
    pub fn with_jwt_keys(mut self, keys: &crate::dir::jwt_keys::JwtKeys, sequence: u64) -> Self {
        self.jwt = Some(JwtState {
            current: ArcSwap::from_pointee(JwtKeySet::of(keys, sequence)),
        });
        self
    }

    /// Replaces the JWT keys of a running authority (after `ward ca rotate
    /// jwt`); `sequence` must be higher than the last one. Returns false
    /// when this authority mints no JWT-SVIDs.
    pub fn replace_jwt_keys(&self, keys: &crate::dir::jwt_keys::JwtKeys, sequence: u64) -> bool {
        match &self.jwt {
            Some(state) => {
                state.current.store(Arc::new(JwtKeySet::of(keys, sequence)));
                true
            }
            None => false,
        }
    }

    /// Publishes `hint` as the bundle's `spiffe_refresh_hint` (whole
    /// seconds, at least 1).
    pub fn with_bundle_refresh_hint(mut self, hint: Duration) -> Self {
        self.bundle_refresh_hint = hint.as_secs().max(1);
        self
    }

    /// Mints a JWT-SVID for the identity of the client certificate `chain`
    /// (validated by TLS; checked here like a renewal: issued online by this
    /// CA, unrevoked, unexpired). It expires after `ttl` (default 5 min,
    /// clamped to 10 s .. 1 h) and never after the certificate.
    pub async fn mint_jwt_svid(
        &self,
        chain: &[CertificateDer<'_>],
        audience: &[String],
        ttl: Option<Duration>,
        now: OffsetDateTime,
    ) -> Result<MintedJwt, AuthorityError> {
        if self.jwt.is_none() {
            return Err(AuthorityError::Forbidden(
                "this CA has no JWT-SVID signing key".into(),
            ));
        }
        jwt::check_audience(audience).map_err(AuthorityError::BadRequest)?;
        let leaf = chain.first().ok_or_else(|| {
            AuthorityError::unauthenticated(
                "no_client_certificate",
                "a JWT-SVID needs a client certificate",
            )
        })?;
        let (_, cert) = X509Certificate::from_der(leaf).map_err(|_| {
            AuthorityError::unauthenticated("bad_certificate", "unreadable client certificate")
        })?;
        let (_, record, _) = self.presented_certificate(leaf, &cert, now).await?;
        let binding = Binding::of_certificate(&cert, &self.policy.trust_domain)?;
        self.sign_jwt(binding.spiffe_id, audience, ttl, record.not_after, now)
    }

    /// Signs a JWT-SVID for `spiffe_id` (already authorized by the caller),
    /// expiring after `ttl` (default 5 min, clamped to 10 s .. 1 h) and
    /// never after `not_after`.
    pub(crate) fn sign_jwt(
        &self,
        spiffe_id: SpiffeId,
        audience: &[String],
        ttl: Option<Duration>,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> Result<MintedJwt, AuthorityError> {
        let state = self.jwt.as_ref().ok_or_else(|| {
            AuthorityError::Forbidden("this CA has no JWT-SVID signing key".into())
        })?;
        let keys = state.current.load();
        jwt::check_audience(audience).map_err(AuthorityError::BadRequest)?;
        let ttl = ttl
            .unwrap_or(DEFAULT_JWT_TTL)
            .clamp(MIN_JWT_TTL, MAX_JWT_TTL);
        let expires_at = (now + ttl).min(not_after);
        let token = keys
            .signer
            .sign(
                &spiffe_id,
                audience,
                now.unix_timestamp(),
                expires_at.unix_timestamp(),
            )
            .map_err(|e| AuthorityError::Internal(format!("signing a JWT-SVID: {e}")))?;
        Ok(MintedJwt {
            token,
            spiffe_id,
            expires_at,
        })
    }

    /// The trust bundle in SPIFFE format: the roots as `x509-svid` keys, the
    /// JWT key and the retired ones not yet past their retire time as
    /// `jwt-svid` keys; its `spiffe_sequence` grows when the JWT keys or
    /// the distributed roots change.
    pub fn spiffe_bundle(&self) -> Result<JwkSet, AuthorityError> {
        let mut keys = Vec::new();
        for root in ward_pki::pem::parse_certs(self.roots_pem().as_bytes())
            .map_err(|e| AuthorityError::Internal(format!("reading the roots: {e}")))?
        {
            keys.push(
                jwt::x509_jwk(&root)
                    .map_err(|e| AuthorityError::Internal(format!("a root as JWK: {e}")))?,
            );
        }
        let mut sequence = 1;
        if let Some(state) = &self.jwt {
            let set = state.current.load();
            keys.push(set.signer.jwk().clone());
            let now = OffsetDateTime::now_utc().unix_timestamp();
            keys.extend(
                set.previous
                    .iter()
                    .filter(|(_, retire_after)| *retire_after > now)
                    .map(|(jwk, _)| jwk.clone()),
            );
            sequence = set.sequence;
        }
        // A root rotation changes the bundle too.
        let sequence = sequence.max(
            self.roots_sequence
                .load(std::sync::atomic::Ordering::Acquire),
        );
        Ok(JwkSet {
            keys,
            spiffe_sequence: Some(sequence),
            spiffe_refresh_hint: Some(self.bundle_refresh_hint),
        })
    }
}

impl JwtKeySet {
    fn of(keys: &crate::dir::jwt_keys::JwtKeys, sequence: u64) -> JwtKeySet {
        JwtKeySet {
            signer: keys.signer.clone(),
            previous: keys
                .previous
                .iter()
                .map(|p| (p.jwk.clone(), p.retire_after))
                .collect(),
            sequence,
        }
    }
}
