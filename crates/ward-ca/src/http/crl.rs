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

use super::admin::{done, require_admin};
use super::body::{parse_json, read_json};
use super::error::ApiError;
use super::{AppState, INTERMEDIATES};
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

/// The `Link` headers of a CRL answer (RFC 8288): the certificate of the
/// intermediate that signed it (`rel="up"; type="application/pkix-cert"`,
/// at `/v1/intermediates/<sha256>`), so a relying party that has not seen
/// that intermediate in a client chain yet can still verify the CRL; and,
/// with `siblings`, the CRLs of the other published intermediates
/// (`rel="related"; type="application/pkix-crl"`), so one that polls
/// `/v1/crl` also learns, before their first certificate is issued, the CRL
/// of an intermediate being rotated in (and keeps that of the one rotated
/// out). Outside a rotation there are no siblings.
fn with_links(
    state: &AppState,
    crl: &PublishedCrl,
    siblings: bool,
    mut response: Response,
) -> Response {
    let up = format!(
        "<{INTERMEDIATES}/{}>; rel=\"up\"; type=\"application/pkix-cert\"",
        crl.signer
    );
    let siblings = if siblings {
        state.authority.sibling_crls()
    } else {
        Vec::new()
    };
    let related = siblings.into_iter().map(|fp| {
        format!(
            "<{}/{fp}>; rel=\"related\"; type=\"application/pkix-crl\"",
            ward_api::paths::CRL
        )
    });
    for link in std::iter::once(up).chain(related) {
        if let Ok(v) = HeaderValue::from_str(&link) {
            response.headers_mut().append(header::LINK, v);
        }
    }
    response
}

/// `GET /v1/intermediates/<sha256>`: one published intermediate, DER (the
/// issuer of a CRL, named by its `Link: rel="up"`).
pub(super) async fn intermediate_der(
    State(state): State<AppState>,
    axum::extract::Path(fingerprint): axum::extract::Path<String>,
) -> Response {
    let fingerprint = fingerprint.to_ascii_lowercase();
    let found = state
        .authority
        .intermediates()
        .into_iter()
        .find(|c| crate::authority::fingerprint_hex(c) == fingerprint);
    match found {
        Some(der) => (
            [
                (header::CONTENT_TYPE, "application/pkix-cert"),
                (header::CACHE_CONTROL, "public, max-age=300"),
            ],
            der.to_vec(),
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no published intermediate has this SHA-256",
        )
        .into_response(),
    }
}

pub(super) async fn crl_der(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match current(&state) {
        Ok(crl) => with_links(
            &state,
            &crl,
            true,
            answer(
                &headers,
                &crl,
                crl.etag.clone(),
                "application/pkix-crl",
                crl.der.clone(),
            ),
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
        Some(crl) => with_links(
            &state,
            &crl,
            false,
            answer(
                &headers,
                &crl,
                crl.etag.clone(),
                "application/pkix-crl",
                crl.der.clone(),
            ),
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
            with_links(
                &state,
                &crl,
                true,
                answer(
                    &headers,
                    &crl,
                    etag,
                    "application/x-pem-file",
                    crl.pem.clone(),
                ),
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
