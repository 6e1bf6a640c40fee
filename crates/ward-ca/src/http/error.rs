//! The one error type of the HTTP API and its stable JSON shape:
//! `{"error": "<snake_case_code>", "message": "<human text>"}`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ward_api::ErrorBody;

use crate::authority::AuthorityError;

/// An error answer: a status, a stable code, and a message safe for clients.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// HTTP status.
    pub status: StatusCode,
    /// Stable snake_case code.
    pub code: &'static str,
    /// Human text; never a secret.
    pub message: String,
}

impl ApiError {
    /// Builds an error answer.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 with a code.
    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }
}

impl From<AuthorityError> for ApiError {
    fn from(err: AuthorityError) -> Self {
        match &err {
            AuthorityError::Unauthenticated { reason, message }
            | AuthorityError::TokenRefused {
                reason, message, ..
            } => ApiError::new(StatusCode::UNAUTHORIZED, reason, message.clone()),
            AuthorityError::Forbidden(m) => {
                ApiError::new(StatusCode::FORBIDDEN, "forbidden", m.clone())
            }
            AuthorityError::BadRequest(m) => ApiError::bad_request("bad_request", m.clone()),
            AuthorityError::NotFound(m) => {
                ApiError::new(StatusCode::NOT_FOUND, "not_found", m.clone())
            }
            AuthorityError::Unavailable(source) => {
                tracing::error!(error = %source, "storage unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "storage_unavailable",
                    "storage is unavailable; retry later",
                )
            }
            AuthorityError::SignerUnavailable(detail) => {
                tracing::error!(%detail, "the CA key is unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "signer_unavailable",
                    "the CA's signing key is unavailable; retry later",
                )
            }
            AuthorityError::Internal(detail) => {
                tracing::error!(%detail, "internal error");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "internal error",
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(ErrorBody {
                error: self.code.to_owned(),
                message: self.message,
            }),
        )
            .into_response()
    }
}
