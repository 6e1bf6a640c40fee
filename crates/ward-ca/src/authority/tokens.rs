//! Bootstrap tokens: what a token binds, creating, listing and revoking
//! them, and authenticating the one a workload presents.

use std::net::IpAddr;
use std::time::Duration;

use time::OffsetDateTime;
use ward_pki::SpiffeId;
use ward_pki::cidr::Cidr;
use ward_pki::issue::{MIN_TTL, Profile, check_dns_name, humanize};
use ward_store::{NewToken, RevokeTokenOutcome, Token};

use super::{Authority, AuthorityError, store_err};
use crate::token::{TokenSecret, new_token_id};

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

impl Authority {
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
}
