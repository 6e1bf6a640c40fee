//! RFC 8555 §6.7 problem documents (`application/problem+json`) with the
//! `urn:ietf:params:acme:error:*` types. Details are safe to show clients;
//! internal causes go to the log, never into a problem.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::authority::AuthorityError;

/// An ACME error, rendered as a problem document.
#[derive(Debug, Clone)]
pub struct Problem {
    /// The error type without its `urn:ietf:params:acme:error:` prefix.
    pub kind: &'static str,
    /// Human text for the client.
    pub detail: String,
    /// HTTP status.
    pub status: StatusCode,
    /// Seconds to wait before retrying (rate limits).
    pub retry_after: Option<u64>,
}

impl Problem {
    /// A problem of `kind` with `status`.
    pub fn new(kind: &'static str, status: StatusCode, detail: impl Into<String>) -> Self {
        Problem {
            kind,
            detail: detail.into(),
            status,
            retry_after: None,
        }
    }

    /// `malformed` (400).
    pub fn malformed(detail: impl Into<String>) -> Self {
        Self::new("malformed", StatusCode::BAD_REQUEST, detail)
    }

    /// `unauthorized` (403).
    pub fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new("unauthorized", StatusCode::FORBIDDEN, detail)
    }

    /// `rejectedIdentifier` (400).
    pub fn rejected_identifier(detail: impl Into<String>) -> Self {
        Self::new("rejectedIdentifier", StatusCode::BAD_REQUEST, detail)
    }

    /// `badCSR` (400).
    pub fn bad_csr(detail: impl Into<String>) -> Self {
        Self::new("badCSR", StatusCode::BAD_REQUEST, detail)
    }

    /// `orderNotReady` (403).
    pub fn order_not_ready(detail: impl Into<String>) -> Self {
        Self::new("orderNotReady", StatusCode::FORBIDDEN, detail)
    }

    /// `serverInternal` (500); the cause is logged, not shown.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "ACME request failed");
        Self::new(
            "serverInternal",
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal error",
        )
    }

    /// `rateLimited` (429) with a Retry-After.
    pub fn rate_limited(detail: impl Into<String>) -> Self {
        let mut p = Self::new("rateLimited", StatusCode::TOO_MANY_REQUESTS, detail);
        p.retry_after = Some(1);
        p
    }

    /// 404 for an unknown object (a `malformed` type: RFC 8555 has no
    /// not-found error).
    pub fn not_found(what: &str) -> Self {
        Self::new(
            "malformed",
            StatusCode::NOT_FOUND,
            format!("no such {what}"),
        )
    }

    /// The full type URN.
    pub fn type_urn(&self) -> String {
        format!("urn:ietf:params:acme:error:{}", self.kind)
    }

    /// The JSON body (also used for errors inside challenges and orders).
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "type": self.type_urn(),
            "detail": self.detail,
            "status": self.status.as_u16(),
        })
    }
}

impl From<ward_store::StoreError> for Problem {
    fn from(e: ward_store::StoreError) -> Self {
        if matches!(e, ward_store::StoreError::Unavailable { .. }) {
            tracing::error!(error = %e, "ACME storage unavailable");
            let mut p = Self::new(
                "serverInternal",
                StatusCode::SERVICE_UNAVAILABLE,
                "storage unavailable",
            );
            p.retry_after = Some(1);
            return p;
        }
        Self::internal(e)
    }
}

impl From<AuthorityError> for Problem {
    fn from(e: AuthorityError) -> Self {
        match e {
            AuthorityError::Forbidden(m) => Self::rejected_identifier(m),
            AuthorityError::BadRequest(m) => Self::malformed(m),
            AuthorityError::NotFound(m) => Self::new("malformed", StatusCode::NOT_FOUND, m),
            AuthorityError::Unavailable(e) => e.into(),
            AuthorityError::SignerUnavailable(detail) => {
                tracing::error!(%detail, "the CA key is unavailable");
                let mut p = Self::new(
                    "serverInternal",
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the CA's signing key is unavailable",
                );
                p.retry_after = Some(1);
                p
            }
            other => Self::internal(other),
        }
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let body = self.to_json().to_string();
        let mut response = (self.status, body).into_response();
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        response
    }
}
