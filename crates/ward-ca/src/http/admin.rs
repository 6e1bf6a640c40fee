//! Token and certificate administration, for the admin identity only
//! (a client certificate carrying `spiffe://<TD>/ward/admin`).

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;
use ward_api::{
    CertificateList, CertificatePage, CreateTokenRequest, RevokeTokenQuery, RevokedToken, TokenList,
};
use ward_tls::server::PeerInfo;

use super::AppState;
use super::body::{parse_json, read_json};
use super::error::ApiError;
use crate::wire::{certificate_view, created_token_view, token_spec, token_view};

/// Checks the caller is the admin identity: a certificate carrying the
/// admin SPIFFE ID *and* recorded as the admin certificate (origin `admin`,
/// made by `ward ca init`) and not revoked. A certificate that merely
/// carries the ID (from a token created with `--allow-reserved`) is refused.
pub(crate) async fn require_admin(
    state: &AppState,
    peer: &PeerInfo,
    action: &'static str,
) -> Result<(), ApiError> {
    let result = match peer.leaf() {
        None => Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_client_certificate",
            "admin routes require the admin client certificate",
        )),
        Some(leaf) => match ward_pki::inspect::spiffe_id_of(leaf) {
            Ok(Some(id)) if id == state.admin_id => admin_record(state, leaf).await,
            _ => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "not_admin",
                format!("admin routes are for {} only", state.admin_id),
            )),
        },
    };
    if let Err(e) = &result {
        state.metrics.admin.with(&[action, e.code]).inc();
        state.console.refusals.record(crate::console::Refusal {
            at: OffsetDateTime::now_utc(),
            route: format!("admin:{action}"),
            reason: e.code.to_owned(),
            source: peer.remote_addr.ip().to_string(),
            token_id: None,
        });
    }
    result
}

/// Checks that `leaf` is recorded as an admin certificate and not revoked.
async fn admin_record(state: &AppState, leaf: &[u8]) -> Result<(), ApiError> {
    let not_admin = |why: &str| {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "not_admin",
            format!("this certificate carries {} but {why}", state.admin_id),
        )
    };
    let serial = x509_parser::parse_x509_certificate(leaf)
        .ok()
        .and_then(|(_, c)| ward_pki::Serial::from_be_bytes(c.raw_serial()).ok())
        .ok_or_else(|| not_admin("cannot be read"))?;
    let record = state
        .authority
        .store()
        .certificate(&serial)
        .await
        .map_err(|e| -> ApiError {
            if e.is_unavailable() {
                crate::authority::AuthorityError::Unavailable(e).into()
            } else {
                crate::authority::AuthorityError::Internal(e.to_string()).into()
            }
        })?;
    match record {
        Some(r) if r.der == leaf && r.origin == ward_store::Origin::Admin => {
            if r.revoked_at.is_some() {
                Err(not_admin("it is revoked"))
            } else {
                Ok(())
            }
        }
        _ => Err(not_admin(
            "it is not the admin certificate made by `ward ca init`",
        )),
    }
}

pub(crate) fn done(state: &AppState, action: &'static str, detail: serde_json::Value) {
    state.metrics.admin.with(&[action, "ok"]).inc();
    state.audit.record(&serde_json::json!({
        "event": "admin",
        "action": action,
        "detail": detail,
    }));
}

pub(super) async fn create_token(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_admin(&state, &peer, "create_token").await?;
    let bytes = read_json(&headers, body).await?;
    let req: CreateTokenRequest = parse_json(&bytes)?;
    let spec = token_spec(req).map_err(|m| ApiError::bad_request("bad_request", m))?;
    let created = state
        .authority
        .create_token(&spec, OffsetDateTime::now_utc())
        .await?;
    let view = created_token_view(&created);
    done(
        &state,
        "create_token",
        serde_json::json!({ "token_id": view.info.id, "spiffe_id": view.info.spiffe_id }),
    );
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

pub(super) async fn list_tokens(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
) -> Result<Json<TokenList>, ApiError> {
    require_admin(&state, &peer, "list_tokens").await?;
    let tokens = state.authority.list_tokens().await?;
    done(
        &state,
        "list_tokens",
        serde_json::json!({ "count": tokens.len() }),
    );
    Ok(Json(TokenList {
        tokens: tokens.iter().map(token_view).collect(),
    }))
}

pub(super) async fn revoke_token(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
    Path(id): Path<String>,
    Query(q): Query<RevokeTokenQuery>,
) -> Result<Json<RevokedToken>, ApiError> {
    require_admin(&state, &peer, "revoke_token").await?;
    let n = state
        .authority
        .revoke_token(&id, q.with_certificates, OffsetDateTime::now_utc())
        .await?;
    done(
        &state,
        "revoke_token",
        serde_json::json!({ "token_id": id, "certificates_revoked": n }),
    );
    Ok(Json(RevokedToken {
        id,
        certificates_revoked: n,
    }))
}

pub(super) async fn list_certificates(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
    Query(page): Query<CertificatePage>,
) -> Result<Json<CertificateList>, ApiError> {
    require_admin(&state, &peer, "list_certificates").await?;
    let store = state.authority.store();
    let map = |e: ward_store::StoreError| -> ApiError {
        if e.is_unavailable() {
            crate::authority::AuthorityError::Unavailable(e).into()
        } else {
            crate::authority::AuthorityError::Internal(e.to_string()).into()
        }
    };
    let limit = page.limit.unwrap_or(100).min(1000);
    let certs = store
        .list_certificates(limit, page.offset.unwrap_or(0))
        .await
        .map_err(map)?;
    let total = store.count_certificates().await.map_err(map)?;
    done(
        &state,
        "list_certificates",
        serde_json::json!({ "count": certs.len() }),
    );
    Ok(Json(CertificateList {
        total,
        certificates: certs.iter().map(certificate_view).collect(),
    }))
}
