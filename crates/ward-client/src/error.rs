//! The one error type of this crate.

use hyper::StatusCode;

use crate::REQUEST_TIMEOUT;

/// What went wrong talking to the CA or handling what it sent.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The URL or credentials are unusable.
    #[error("{0}")]
    Config(String),
    /// The CA could not be reached or the TLS handshake failed.
    #[error("cannot reach the CA at {addr}: {detail}")]
    Connect {
        /// host:port.
        addr: String,
        /// What failed.
        detail: String,
    },
    /// The CA answered with an error.
    #[error("the CA refused ({status}): {code}: {message}")]
    Api {
        /// HTTP status.
        status: StatusCode,
        /// The CA's error code.
        code: String,
        /// The CA's message.
        message: String,
    },
    /// The answer was not what the API promises.
    #[error("unexpected answer from the CA: {0}")]
    Protocol(String),
    /// The request took longer than [`REQUEST_TIMEOUT`].
    #[error("the CA did not answer within {}s", REQUEST_TIMEOUT.as_secs())]
    Timeout,
    /// The CA could not be authenticated (fingerprint not found, chain not
    /// leading to the pinned root).
    #[error("cannot trust the CA: {0}")]
    Trust(String),
    /// A certificate or key received is unusable (wrong identity, does not
    /// verify, key mismatch).
    #[error("unusable identity: {0}")]
    Identity(String),
    /// The SPIFFE Workload API failed.
    #[error("workload API: {0}")]
    WorkloadApi(String),
    /// The identity expired before it could be renewed.
    #[error("the certificate expired before it could be renewed")]
    Expired,
}

impl ClientError {
    /// Whether retrying cannot help: the CA refused the credentials
    /// themselves (401/403: token used up or unknown, certificate revoked,
    /// expired or unknown, request outside the binding).
    pub fn is_definitive_refusal(&self) -> bool {
        matches!(
            self,
            ClientError::Api { status, .. }
                if *status == StatusCode::UNAUTHORIZED || *status == StatusCode::FORBIDDEN
        ) || matches!(self, ClientError::Expired)
    }

    /// The CA's error code, when it answered with one.
    pub fn api_code(&self) -> Option<&str> {
        match self {
            ClientError::Api { code, .. } => Some(code),
            _ => None,
        }
    }
}
