//! JWT-SVIDs: `POST /v1/jwt-svid`, authenticated by the client certificate.

use serde::{Deserialize, Serialize};

/// `POST /v1/jwt-svid`: a JWT-SVID for the caller's SPIFFE ID.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtSvidRequest {
    /// The audiences (`aud`); one or more, required.
    pub audience: Vec<String>,
    /// Lifetime in seconds (default 300, clamped to 10..=3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

/// `POST /v1/node/jwt-svid`: a JWT-SVID for a workload this node agent
/// serves (an entry registered for the caller's node).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeJwtSvidRequest {
    /// The SPIFFE ID asked for (the token's `sub`).
    pub spiffe_id: String,
    /// The audiences (`aud`); one or more, required.
    pub audience: Vec<String>,
    /// Lifetime in seconds (default 300, clamped to 10..=3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl_secs: Option<u64>,
}

/// 201 answer to [`JwtSvidRequest`] and [`NodeJwtSvidRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JwtSvidResponse {
    /// The token (compact JWS).
    pub token: String,
    /// Its `sub`.
    pub spiffe_id: String,
    /// Its `exp`, RFC 3339.
    pub expires_at: String,
}
