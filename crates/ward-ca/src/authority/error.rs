//! What an authority call answers when it fails, and how storage and PKI
//! failures map onto it.

use ward_store::StoreError;

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
    /// The CA key cannot sign now: its PKCS#11 token is gone or failing
    /// (503). The detail is logged, not shown.
    #[error("signing key unavailable")]
    SignerUnavailable(String),
    /// A bug or an unexpected failure (500); details go to the log.
    #[error("internal error")]
    Internal(String),
}

impl AuthorityError {
    pub(super) fn unauthenticated(reason: &'static str, message: impl Into<String>) -> Self {
        AuthorityError::Unauthenticated {
            reason,
            message: message.into(),
        }
    }

    /// Marks an authentication failure with the token it concerns, so audit
    /// lines can name the token (never the secret).
    pub(super) fn for_token(self, id: &str) -> Self {
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
            AuthorityError::SignerUnavailable(_) => "signer_unavailable",
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

pub(super) fn pki_err(context: &str) -> impl FnOnce(ward_pki::Error) -> AuthorityError + '_ {
    move |e| match e {
        ward_pki::Error::Policy(m) => AuthorityError::Forbidden(m),
        ward_pki::Error::KeyUnavailable(m) => {
            AuthorityError::SignerUnavailable(format!("{context}: {m}"))
        }
        other => AuthorityError::Internal(format!("{context}: {other}")),
    }
}
