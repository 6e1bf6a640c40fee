//! OCSP over HTTP (RFC 6960 appendix A): `GET /ocsp/{base64}` and
//! `POST /ocsp`, on both listeners.
//!
//! GET takes the DER request base64-encoded (standard or URL-safe alphabet,
//! padding optional), possibly percent-encoded, as the rest of the path.
//! POST takes the DER body; `application/ocsp-request` is expected but any
//! content type is read, as the DER decides. A body over
//! [`MAX_REQUEST`](ward_pki::ocsp::MAX_REQUEST) is refused with 413 and a
//! path over [`MAX_PATH`] with 414 (the usual JSON error); anything else
//! that is not an OCSPRequest gets the `malformedRequest` OCSP status.

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use time::OffsetDateTime;
use ward_pki::ocsp::{MAX_REQUEST, Refusal};

use super::AppState;
use super::error::ApiError;
use crate::ocsp::Answer;

/// Longest `/ocsp/...` path accepted: a maximal request, base64 and
/// percent-encoded.
pub const MAX_PATH: usize = 3 * (MAX_REQUEST * 4 / 3 + 4) + 8;

const CONTENT_TYPE: &str = "application/ocsp-response";

fn render(state: &AppState, answer: Answer) -> Response {
    state.metrics.ocsp.with(&[answer.result]).inc();
    let mut r = answer.der.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    let cache = if answer.successful {
        format!(
            "public, max-age={}, no-transform, must-revalidate",
            answer.max_age
        )
    } else {
        "no-store".to_owned()
    };
    if let Ok(v) = HeaderValue::from_str(&cache) {
        h.insert(header::CACHE_CONTROL, v);
    }
    r
}

fn malformed(state: &AppState) -> Response {
    render(state, Answer::refused(Refusal::MalformedRequest))
}

fn too_large(what: &str, limit: usize, status: StatusCode) -> ApiError {
    ApiError::new(
        status,
        if status == StatusCode::URI_TOO_LONG {
            "uri_too_long"
        } else {
            "body_too_large"
        },
        format!("the OCSP request {what} is larger than {limit} bytes"),
    )
}

/// Decodes `%XX` escapes; `None` on a bad escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = std::str::from_utf8(b.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

/// The DER request carried in a GET path segment.
pub(super) fn decode_get(encoded: &str) -> Option<Vec<u8>> {
    let text = percent_decode(encoded)?;
    let text: Vec<u8> = text
        .into_iter()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    let trimmed = text
        .strip_suffix(b"==")
        .or_else(|| text.strip_suffix(b"="))
        .unwrap_or(&text);
    let engine = if trimmed.iter().any(|c| *c == b'-' || *c == b'_') {
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
    } else {
        &base64::engine::general_purpose::STANDARD_NO_PAD
    };
    engine.decode(trimmed).ok()
}

pub(super) async fn get(State(state): State<AppState>, uri: Uri) -> Response {
    let path = uri.path();
    if path.len() > MAX_PATH {
        return too_large("URL", MAX_PATH, StatusCode::URI_TOO_LONG).into_response();
    }
    let encoded = path.strip_prefix("/ocsp/").unwrap_or_default();
    match decode_get(encoded) {
        Some(der) => render(
            &state,
            state.ocsp.answer(&der, OffsetDateTime::now_utc()).await,
        ),
        None => malformed(&state),
    }
}

/// `GET /ocsp` with no request at all.
pub(super) async fn get_empty(State(state): State<AppState>) -> Response {
    malformed(&state)
}

pub(super) async fn post(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > MAX_REQUEST as u64) {
        return too_large("body", MAX_REQUEST, StatusCode::PAYLOAD_TOO_LARGE).into_response();
    }
    let bytes = match Limited::new(body, MAX_REQUEST).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return too_large("body", MAX_REQUEST, StatusCode::PAYLOAD_TOO_LARGE).into_response();
        }
        Err(e) => {
            return ApiError::bad_request("bad_body", format!("could not read the body: {e}"))
                .into_response();
        }
    };
    render(
        &state,
        state.ocsp.answer(&bytes, OffsetDateTime::now_utc()).await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_paths_decode_in_every_spelling() {
        let der = vec![0x30, 0x03, 0xfb, 0xff, 0x3e];
        let std = base64::engine::general_purpose::STANDARD.encode(&der);
        assert!(std.contains('+') || std.contains('/'));
        assert_eq!(decode_get(&std).unwrap(), der);
        let escaped = std
            .replace('/', "%2F")
            .replace('+', "%2B")
            .replace('=', "%3D");
        assert_eq!(decode_get(&escaped).unwrap(), der);
        let url = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&der);
        assert_eq!(decode_get(&url).unwrap(), der);
        assert!(decode_get("%zz").is_none());
        assert!(decode_get("%4").is_none());
        assert!(decode_get("not base64!").is_none());
    }
}
