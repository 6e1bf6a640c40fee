//! Reading request bodies with a hard size limit and precise errors.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;

use super::error::ApiError;

/// Largest request body the CA reads: a CSR for a 4096-bit RSA key plus a
/// token fits many times over.
pub const MAX_BODY: usize = 64 * 1024;

fn too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request body is larger than {MAX_BODY} bytes"),
    )
}

/// Reads at most [`MAX_BODY`] bytes; an announced or actual larger body is 413.
pub(super) async fn read_limited(
    headers: &HeaderMap,
    body: Body,
) -> Result<bytes::Bytes, ApiError> {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_BODY as u64) {
        return Err(too_large());
    }
    match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<LengthLimitError>().is_some() => Err(too_large()),
        Err(err) => Err(ApiError::bad_request(
            "bad_body",
            format!("could not read the request body: {err}"),
        )),
    }
}

/// Reads a JSON route's body: [`read_limited`] after checking that a body
/// is declared `application/json` (parameters such as `charset` allowed);
/// 415 otherwise. An empty body with no `Content-Type` passes (it parses
/// as `{}`).
pub(super) async fn read_json(headers: &HeaderMap, body: Body) -> Result<bytes::Bytes, ApiError> {
    let declared = headers.get(header::CONTENT_TYPE);
    if let Some(value) = declared
        && !is_json(value.as_bytes())
    {
        return Err(not_json());
    }
    let bytes = read_limited(headers, body).await?;
    if declared.is_none() && !bytes.iter().all(u8::is_ascii_whitespace) {
        return Err(not_json());
    }
    Ok(bytes)
}

fn not_json() -> ApiError {
    ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        "the request body must be sent as Content-Type: application/json",
    )
}

/// Whether a `Content-Type` value is `application/json`, in any case,
/// with or without parameters.
fn is_json(value: &[u8]) -> bool {
    let essence = value.split(|&b| b == b';').next().unwrap_or_default();
    essence
        .trim_ascii()
        .eq_ignore_ascii_case(b"application/json")
}

/// Parses a JSON body; an empty body parses as `{}` when `T` allows it.
pub(super) fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let bytes = if bytes.iter().all(u8::is_ascii_whitespace) {
        b"{}".as_slice()
    } else {
        bytes
    };
    serde_json::from_slice(bytes)
        .map_err(|e| ApiError::bad_request("malformed_json", format!("invalid JSON body: {e}")))
}

/// The bearer token of an `Authorization` header, if any.
pub(super) fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim().to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types() {
        for ok in [
            "application/json",
            "Application/JSON",
            "application/json; charset=utf-8",
            " application/json ;charset=UTF-8",
        ] {
            assert!(is_json(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "application/jsonp",
            "application/json-seq",
            "",
            "multipart/form-data; boundary=x",
        ] {
            assert!(!is_json(bad.as_bytes()), "{bad}");
        }
    }
}
