//! Revocation routes: `POST /v1/revoke` (admin) and the CRL at `GET /v1/crl`
//! (DER) and `GET /v1/crl.pem`, with ETag, Last-Modified and Cache-Control.

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;
use time::macros::format_description;
use ward_api::{RevokeRequest, RevokeResponse};
use ward_pki::Serial;
use ward_pki::crl::parse_reason;
use ward_tls::server::PeerInfo;

use super::AppState;
use super::admin::{done, require_admin};
use super::body::{parse_json, read_json};
use super::error::ApiError;
use crate::authority::revocation::PublishedCrl;
use crate::wire::revoke_response;

pub(super) async fn revoke(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<RevokeResponse>, ApiError> {
    require_admin(&state, &peer, "revoke_certificate").await?;
    let bytes = read_json(&headers, body).await?;
    let req: RevokeRequest = parse_json(&bytes)?;
    let serial: Serial = req
        .serial
        .parse()
        .map_err(|e| ApiError::bad_request("bad_serial", format!("{e}")))?;
    let reason = req
        .reason
        .as_deref()
        .map(parse_reason)
        .transpose()
        .map_err(|e| ApiError::bad_request("bad_reason", format!("{e}")))?;
    let revoked = state
        .authority
        .revoke_certificate(&serial, reason, OffsetDateTime::now_utc())
        .await?;
    let answer = revoke_response(&revoked);
    done(
        &state,
        "revoke_certificate",
        serde_json::json!({ "serial": answer.serial, "reason": answer.reason, "newly_revoked": answer.newly_revoked }),
    );
    Ok(Json(answer))
}

fn http_date(t: OffsetDateTime) -> String {
    let fmt = format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_default()
}

fn current(state: &AppState) -> Result<std::sync::Arc<PublishedCrl>, ApiError> {
    state.authority.current_crl().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "crl_unavailable",
            "no CRL has been signed yet",
        )
    })
}

fn answer(
    headers: &HeaderMap,
    crl: &PublishedCrl,
    etag: String,
    content_type: &'static str,
    body: bytes::Bytes,
) -> Response {
    let now = OffsetDateTime::now_utc();
    let max_age = (crl.next_update - now).whole_seconds().max(0);
    let matches = headers
        .get_all(header::IF_NONE_MATCH)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| {
            let tag = tag.trim();
            tag == "*" || tag.trim_start_matches("W/") == etag
        });
    let mut out = if matches {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        let mut r = body.into_response();
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        r
    };
    let h = out.headers_mut();
    for (name, value) in [
        (header::ETAG, etag),
        (header::LAST_MODIFIED, http_date(crl.this_update)),
        (header::CACHE_CONTROL, format!("public, max-age={max_age}")),
        (header::EXPIRES, http_date(crl.next_update)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(name, v);
        }
    }
    out
}

pub(super) async fn crl_der(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match current(&state) {
        Ok(crl) => answer(
            &headers,
            &crl,
            crl.etag.clone(),
            "application/pkix-crl",
            crl.der.clone(),
        ),
        Err(e) => e.into_response(),
    }
}

/// `GET /v1/crl/<sha256>`: the CRL of one published intermediate, DER
/// (the CRL Distribution Point of a rotated intermediate's certificates).
pub(super) async fn crl_of_der(
    State(state): State<AppState>,
    axum::extract::Path(fingerprint): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    let fingerprint = fingerprint.to_ascii_lowercase();
    match state.authority.crl_of(&fingerprint) {
        Some(crl) => answer(
            &headers,
            &crl,
            crl.etag.clone(),
            "application/pkix-crl",
            crl.der.clone(),
        ),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no published intermediate has this SHA-256",
        )
        .into_response(),
    }
}

pub(super) async fn crl_pem(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match current(&state) {
        Ok(crl) => {
            let etag = format!("{}-pem\"", crl.etag.trim_end_matches('"'));
            answer(
                &headers,
                &crl,
                etag,
                "application/x-pem-file",
                crl.pem.clone(),
            )
        }
        Err(e) => e.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates_are_imf_fixdate() {
        let t = OffsetDateTime::from_unix_timestamp(784_111_777).unwrap();
        assert_eq!(http_date(t), "Sun, 06 Nov 1994 08:49:37 GMT");
    }
}
