//! Admin routes for ACME external account binding keys (RFC 8555 §7.3.4):
//! create (the HMAC key is shown once), list (never the HMAC key) and
//! revoke (the account the key bound is revoked with it). Admin identity
//! only, like every `/v1/admin/` route.

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use ward_tls::server::PeerInfo;

use super::AppState;
use super::admin::{done, require_admin};
use super::body::{parse_json, read_json};
use super::error::ApiError;

/// `POST` (create) and `GET` (list) EAB keys.
pub(crate) const EAB_KEYS: &str = "/v1/admin/acme/eab";
/// `DELETE` revokes one EAB key.
pub(crate) const EAB_KEY: &str = "/v1/admin/acme/eab/{id}";
/// Most keys one list answer carries.
const LIST_LIMIT: u32 = 1000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CreateEab {
    provisioner: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListEab {
    #[serde(default)]
    provisioner: Option<String>,
}

fn storage(e: ward_store::StoreError) -> ApiError {
    if e.is_unavailable() {
        crate::authority::AuthorityError::Unavailable(e).into()
    } else {
        crate::authority::AuthorityError::Internal(e.to_string()).into()
    }
}

/// 404 unless `ca.toml` defines `[acme.provisioners.NAME]`.
fn known_provisioner(state: &AppState, name: &str) -> Result<(), ApiError> {
    let known = state
        .acme
        .as_ref()
        .is_some_and(|a| a.config.provisioners.contains_key(name));
    if known {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("ca.toml defines no [acme.provisioners.{name}]"),
        ))
    }
}

/// `POST /v1/admin/acme/eab` `{"provisioner": NAME}`: a new key, shown once.
pub(super) async fn create(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_admin(&state, &peer, "create_acme_eab").await?;
    let bytes = read_json(&headers, body).await?;
    let req: CreateEab = parse_json(&bytes)?;
    known_provisioner(&state, &req.provisioner)?;
    let now = OffsetDateTime::now_utc();
    let created =
        crate::acme::store_eab_key(state.authority.store().as_ref(), &req.provisioner, now)
            .await
            .map_err(|e| crate::authority::AuthorityError::Internal(e.to_string()))?;
    done(
        &state,
        "create_acme_eab",
        json!({ "key_id": created.key_id, "provisioner": req.provisioner }),
    );
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "key_id": created.key_id,
            "hmac_key": created.hmac_key,
            "provisioner": req.provisioner,
            "created_at": ward_pki::issue::rfc3339(now),
        })),
    )
        .into_response())
}

/// `GET /v1/admin/acme/eab[?provisioner=NAME]`: the keys, newest first.
pub(super) async fn list(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
    Query(q): Query<ListEab>,
) -> Result<Response, ApiError> {
    require_admin(&state, &peer, "list_acme_eab").await?;
    if let Some(p) = &q.provisioner {
        known_provisioner(&state, p)?;
    }
    let keys = state
        .authority
        .store()
        .acme()
        .eab_keys(q.provisioner.as_deref(), LIST_LIMIT)
        .await
        .map_err(storage)?;
    let rfc3339 = ward_pki::issue::rfc3339;
    let keys: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| {
            json!({
                "key_id": k.id,
                "provisioner": k.provisioner,
                "created_at": rfc3339(k.created_at),
                "account_id": k.account_id,
                "revoked_at": k.revoked_at.map(rfc3339),
            })
        })
        .collect();
    done(&state, "list_acme_eab", json!({ "count": keys.len() }));
    Ok(Json(json!({ "keys": keys })).into_response())
}

/// `DELETE /v1/admin/acme/eab/ID`: revokes the key and its account.
pub(super) async fn revoke(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    require_admin(&state, &peer, "revoke_acme_eab").await?;
    let store = state.authority.store().acme();
    let key = store.eab_key(&id).await.map_err(storage)?;
    let Some(key) = key else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no such EAB key",
        ));
    };
    let now = OffsetDateTime::now_utc();
    if !store.revoke_eab_key(&id, now).await.map_err(storage)? {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "already_revoked",
            "the EAB key is already revoked",
        ));
    }
    done(
        &state,
        "revoke_acme_eab",
        json!({ "key_id": id, "account_id": key.account_id }),
    );
    Ok(Json(json!({
        "key_id": id,
        "revoked_at": ward_pki::issue::rfc3339(now),
        "account_revoked": key.account_id,
    }))
    .into_response())
}
