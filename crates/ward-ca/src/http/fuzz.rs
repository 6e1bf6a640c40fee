//! The request parsing of the API's handlers, without a server, for the
//! fuzz targets (the crate's `fuzzing` module re-exports them; this module
//! does not name it, so the two import in one direction only).
//!
//! Each function runs on untrusted bytes exactly the pure steps its handler
//! runs before it authenticates anyone or touches storage: the JSON body,
//! then the fields' own parsers (CSR, key type, serial, reason, durations,
//! SPIFFE ID, networks).

use axum::http::{HeaderMap, HeaderValue, header};
use ward_pki::Serial;

use ward_api::{
    CreateTokenRequest, IssueRequest, RenewRequest, RevokeRequest, SeedRequest, SignRequest,
};

use super::body::{bearer, parse_json};
use super::error::ApiError;
use super::routes::key_type;
use crate::csr::parse_csr;

/// A JSON route of the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JsonRoute {
    /// `POST /v1/sign`.
    Sign,
    /// `POST /v1/issue`.
    Issue,
    /// `POST /internal/pki/issue-certificate` (the seed route).
    Seed,
    /// `POST /v1/renew`.
    Renew,
    /// `POST /v1/admin/tokens`.
    CreateToken,
    /// `POST /v1/revoke`.
    Revoke,
}

impl JsonRoute {
    /// Every route, for picking one from a fuzz input byte.
    pub const ALL: [JsonRoute; 6] = [
        JsonRoute::Sign,
        JsonRoute::Issue,
        JsonRoute::Seed,
        JsonRoute::Renew,
        JsonRoute::CreateToken,
        JsonRoute::Revoke,
    ];
}

/// Parses `body` as `route`'s handler does; `Ok` when the request would go
/// on to authentication.
pub fn json_body(route: JsonRoute, body: &[u8]) -> Result<(), ApiError> {
    let bad = |code: &'static str| move |e: String| ApiError::bad_request(code, e);
    match route {
        JsonRoute::Sign => {
            let req: SignRequest = parse_json(body)?;
            let _token = req.token;
            let csr = req.csr.ok_or_else(|| bad("missing_csr")("no csr".into()))?;
            parse_csr(&csr).map_err(|e| bad("bad_csr")(e.to_string()))?;
        }
        JsonRoute::Issue => {
            let req: IssueRequest = parse_json(body)?;
            let _token = req.token;
            key_type(req.key_type.as_deref())?;
        }
        JsonRoute::Seed => {
            let req: SeedRequest = parse_json(body)?;
            req.bootstrap_token
                .filter(|t| !t.is_empty())
                .ok_or_else(|| bad("missing_bootstrap_token")("no token".into()))?;
        }
        JsonRoute::Renew => {
            let req: RenewRequest = parse_json(body)?;
            if let Some(pem) = req.csr {
                parse_csr(&pem).map_err(|e| bad("bad_csr")(e.to_string()))?;
            }
        }
        JsonRoute::CreateToken => {
            let req: CreateTokenRequest = parse_json(body)?;
            crate::wire::token_spec(req).map_err(bad("bad_request"))?;
        }
        JsonRoute::Revoke => {
            let req: RevokeRequest = parse_json(body)?;
            req.serial
                .parse::<Serial>()
                .map_err(|e| bad("bad_serial")(e.to_string()))?;
            if let Some(reason) = req.reason.as_deref() {
                ward_pki::crl::parse_reason(reason)
                    .map_err(|e| bad("bad_reason")(e.to_string()))?;
            }
        }
    }
    Ok(())
}

/// The bearer token of an `Authorization` header with this value, as the
/// issuance handlers read it; `None` when the value is not a valid header
/// value or not a bearer token.
pub fn bearer_token(authorization: &[u8]) -> Option<String> {
    let value = HeaderValue::from_bytes(authorization).ok()?;
    let mut headers = HeaderMap::new();
    headers.insert(header::AUTHORIZATION, value);
    bearer(&headers)
}

/// The DER OCSP request carried by a `GET /ocsp/{request}` path segment.
pub fn ocsp_get_request(encoded: &str) -> Option<Vec<u8>> {
    super::ocsp::decode_get(encoded)
}
