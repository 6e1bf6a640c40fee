//! Certificate revocation: `POST /v1/revoke` (admin).

use serde::{Deserialize, Serialize};

/// A revocation request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RevokeRequest {
    /// Serial in hex (any case, colons optional).
    pub serial: String,
    /// RFC 5280 reason name (e.g. `keyCompromise`); unspecified when absent.
    pub reason: Option<String>,
}

/// The revocation answer: what is recorded (the first time and reason).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RevokeResponse {
    /// Serial, lowercase hex.
    pub serial: String,
    /// When it was revoked, RFC 3339.
    pub revoked_at: String,
    /// RFC 5280 reason name.
    pub reason: String,
    /// Whether this request revoked it (false: it already was).
    pub newly_revoked: bool,
}
