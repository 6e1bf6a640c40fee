//! Between the authority's types and the API's wire types ([`ward_api`]):
//! the one place that turns a token, an issuance or a revocation into the
//! JSON the API answers, and a token request into a [`TokenSpec`]. The HTTP
//! handlers and the CLI's local mode (`ward token --dir`, `ward revoke
//! --dir`) both print through here, so they show the same thing.

use std::time::Duration;

use ward_api::{
    CertificateView, CreateTokenRequest, CreatedTokenView, Issued, RevokeResponse, SeedResponse,
    TokenView,
};
use ward_pki::cidr::Cidr;
use ward_pki::crl::reason_name;
use ward_pki::issue::{Profile, rfc3339};
use ward_pki::{SpiffeId, parse_duration};
use ward_store::{Certificate, Token};

use crate::authority::revocation::Revoked;
use crate::authority::{CreatedToken, Issuance, TokenSpec};

/// Default lifetime of a token when the request names none.
pub const DEFAULT_TOKEN_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// Validates a token creation request into a [`TokenSpec`]; the error names
/// the field.
pub fn token_spec(request: CreateTokenRequest) -> Result<TokenSpec, String> {
    let duration = |field: &str, v: Option<String>| {
        v.map(|s| parse_duration(&s).map_err(|e| format!("{field}: {e}")))
            .transpose()
    };
    Ok(TokenSpec {
        spiffe_id: request
            .spiffe_id
            .parse::<SpiffeId>()
            .map_err(|e| e.to_string())?,
        dns_names: request.dns,
        profile: request
            .profile
            .as_deref()
            .map(str::parse::<Profile>)
            .transpose()
            .map_err(|e| e.to_string())?
            .unwrap_or_default(),
        cert_ttl: duration("cert_ttl", request.cert_ttl)?,
        expires_in: duration("expires_in", request.expires_in)?.unwrap_or(DEFAULT_TOKEN_EXPIRY),
        max_uses: request.uses.unwrap_or(1),
        allowed_cidrs: request
            .allowed_cidrs
            .iter()
            .map(|c| c.parse::<Cidr>())
            .collect::<Result<_, _>>()?,
        common_name: request.cn,
        allow_reserved: request.allow_reserved,
    })
}

/// A stored token as shown (never its hash).
pub fn token_view(t: &Token) -> TokenView {
    TokenView {
        id: t.id.clone(),
        spiffe_id: t.spiffe_id.to_string(),
        dns: t.dns_names.clone(),
        profile: t.profile.to_string(),
        cert_ttl_seconds: t.cert_ttl_secs,
        expires_at: rfc3339(t.expires_at),
        max_uses: t.max_uses,
        uses: t.uses,
        allowed_cidrs: t.allowed_cidrs.clone(),
        created_at: rfc3339(t.created_at),
        revoked_at: t.revoked_at.map(rfc3339),
        revoked_with_certificates: t.revoked_with_certs,
        cn: t.common_name.clone(),
    }
}

/// A token just created, with its secret (shown this once).
pub fn created_token_view(created: &CreatedToken) -> CreatedTokenView {
    CreatedTokenView {
        token: created.secret.expose().to_owned(),
        info: token_view(&created.token),
    }
}

/// A recorded certificate as the admin API lists it.
pub fn certificate_view(c: &Certificate) -> CertificateView {
    CertificateView {
        serial: c.serial.to_string(),
        spiffe_id: c
            .spiffe_id
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default(),
        token_id: c.token_id.clone(),
        not_before: rfc3339(c.not_before),
        not_after: rfc3339(c.not_after),
        fingerprint: c.fingerprint.clone(),
        renewed_from: c.renewed_from.as_ref().map(ToString::to_string),
        revoked_at: c.revoked_at.map(rfc3339),
        revocation_reason: c.revocation_reason,
        origin: c.origin.as_str().to_owned(),
    }
}

/// The answer of `sign`, `issue` and `renew`; `private_key` only when the
/// CA generated the key.
pub fn issued(i: &Issuance, private_key: Option<String>) -> Issued {
    Issued {
        certificate: i.certificate_pem.clone(),
        chain: i.chain_pem.clone(),
        ca_bundle: i.ca_bundle_pem.clone(),
        serial: i.serial.to_string(),
        spiffe_id: i.spiffe_id.to_string(),
        not_after: rfc3339(i.not_after),
        private_key,
    }
}

/// The seed route's answer: the chain as `certificate`, the key, and the
/// intermediate with the roots as `ca_chain`.
pub fn seed_response(i: &Issuance, private_key: String) -> SeedResponse {
    SeedResponse {
        certificate: i.chain_pem.clone(),
        private_key,
        ca_chain: i.ca_chain_pem.clone(),
    }
}

/// What a revocation left recorded, as answered and printed.
pub fn revoke_response(r: &Revoked) -> RevokeResponse {
    RevokeResponse {
        serial: r.serial.to_string(),
        revoked_at: rfc3339(r.revoked_at),
        reason: reason_name(r.reason.unwrap_or(0))
            .unwrap_or("unspecified")
            .to_owned(),
        newly_revoked: r.newly_revoked,
    }
}
