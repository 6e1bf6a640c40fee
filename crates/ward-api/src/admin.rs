//! Token and certificate administration (`/v1/admin/…`, admin identity
//! only), and what `ward token` prints from it.

use serde::{Deserialize, Serialize};

/// `POST /v1/admin/tokens`: the same options as `ward token create`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// The SPIFFE ID to bind.
    pub spiffe_id: String,
    /// DNS SANs to bind.
    #[serde(default)]
    pub dns: Vec<String>,
    /// Certificate lifetime, e.g. `1h`; the CA's default when absent.
    pub cert_ttl: Option<String>,
    /// Token lifetime, e.g. `24h`; 24 hours when absent.
    pub expires_in: Option<String>,
    /// Use count; 0 = unlimited until expiry. Default 1.
    pub uses: Option<u32>,
    /// `server`, `client` or `peer` (default).
    pub profile: Option<String>,
    /// Allowed source networks (CIDR); any when empty.
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
    /// Subject common name to bind (a CSR may ask for exactly this CN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cn: Option<String>,
    /// Allow a reserved SPIFFE ID (`spiffe://TD/ward/...`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_reserved: bool,
}

/// A token as the admin API and `ward token list` show it (never the hash).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenView {
    /// Public id (`tok_…`).
    pub id: String,
    /// Bound SPIFFE ID.
    pub spiffe_id: String,
    /// Bound DNS names.
    pub dns: Vec<String>,
    /// Certificate profile.
    pub profile: String,
    /// Certificate lifetime in seconds.
    pub cert_ttl_seconds: i64,
    /// Token expiry (RFC 3339).
    pub expires_at: String,
    /// Use limit (0 = unlimited).
    pub max_uses: i64,
    /// Uses so far.
    pub uses: i64,
    /// Allowed source networks.
    pub allowed_cidrs: Vec<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Revocation time (RFC 3339), if revoked.
    pub revoked_at: Option<String>,
    /// Whether its certificates were revoked with it.
    pub revoked_with_certificates: bool,
    /// Bound subject common name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cn: Option<String>,
}

/// The answer to a token creation (201): the secret, shown this once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedTokenView {
    /// The secret token.
    pub token: String,
    /// Its metadata, flattened beside the secret.
    #[serde(flatten)]
    pub info: TokenView,
}

/// `GET /v1/admin/tokens`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenList {
    /// Every token, newest first.
    pub tokens: Vec<TokenView>,
}

/// The query of `DELETE /v1/admin/tokens/{id}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeTokenQuery {
    /// Also revoke every certificate issued from the token.
    #[serde(default)]
    pub with_certificates: bool,
}

/// The answer to a token revocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokedToken {
    /// The token id.
    pub id: String,
    /// Certificates revoked along with it.
    pub certificates_revoked: u64,
}

/// The query of `GET /v1/admin/certificates`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificatePage {
    /// Page size: 100 when absent, at most 1000.
    pub limit: Option<u32>,
    /// How many to skip: 0 when absent.
    pub offset: Option<u64>,
}

/// An issued certificate as the admin API lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateView {
    /// Serial, lowercase hex.
    pub serial: String,
    /// The SPIFFE ID it carries (empty when none).
    pub spiffe_id: String,
    /// The token it was issued from, if any.
    pub token_id: Option<String>,
    /// Start of validity, RFC 3339.
    pub not_before: String,
    /// End of validity, RFC 3339.
    pub not_after: String,
    /// SHA-256 fingerprint of the DER.
    pub fingerprint: String,
    /// The serial this one renewed, if it is a renewal.
    pub renewed_from: Option<String>,
    /// Revocation time, RFC 3339, if revoked.
    pub revoked_at: Option<String>,
    /// RFC 5280 reason code, if revoked with one.
    pub revocation_reason: Option<i16>,
    /// How it was made: `token`, `renewal`, `offline`, `admin`,
    /// `ca-server`, `ocsp-responder` or `acme`.
    pub origin: String,
}

/// `GET /v1/admin/certificates`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CertificateList {
    /// How many certificates are recorded in all.
    pub total: u64,
    /// This page, as the store orders them.
    pub certificates: Vec<CertificateView>,
}
