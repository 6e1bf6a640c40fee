//! Registration entries (admin) and node-scoped issuance (node agents),
//! see [`crate::authority::entries`].

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;
use ward_api::{CreateEntryRequest, EntryList, NodeSignRequest};
use ward_tls::server::PeerInfo;

use super::AppState;
use super::admin::{done, require_admin};
use super::body::{parse_json, read_json};
use super::error::ApiError;
use super::routes::Attempt;
use crate::authority::Issuance;
use crate::authority::entries::{EntrySpec, entry_view};
use crate::csr::parse_csr;

use crate::wire::issued as issued_body;

pub(super) async fn create(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    require_admin(&state, &peer, "create_entry").await?;
    let bytes = read_json(&headers, body).await?;
    let req: CreateEntryRequest = parse_json(&bytes)?;
    let spec = EntrySpec {
        spiffe_id: req.spiffe_id,
        selectors: req.selectors,
        node: req.node,
        allow_reserved: req.allow_reserved,
    };
    let entry = state
        .authority
        .create_entry(&spec, OffsetDateTime::now_utc())
        .await?;
    done(
        &state,
        "create_entry",
        serde_json::json!({ "entry_id": entry.id, "spiffe_id": entry.spiffe_id, "node": entry.node }),
    );
    Ok((StatusCode::CREATED, Json(entry_view(&entry))).into_response())
}

pub(super) async fn list(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
) -> Result<Json<EntryList>, ApiError> {
    require_admin(&state, &peer, "list_entries").await?;
    let entries = state.authority.list_entries().await?;
    done(
        &state,
        "list_entries",
        serde_json::json!({ "count": entries.len() }),
    );
    Ok(Json(EntryList {
        entries: entries.iter().map(entry_view).collect(),
    }))
}

pub(super) async fn delete(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    require_admin(&state, &peer, "delete_entry").await?;
    state.authority.delete_entry(&id).await?;
    done(
        &state,
        "delete_entry",
        serde_json::json!({ "entry_id": id }),
    );
    Ok(Json(serde_json::json!({ "id": id, "deleted": true })))
}

type NodeChain = std::sync::Arc<Vec<rustls_pki_types::CertificateDer<'static>>>;

fn node_chain(peer: &PeerInfo) -> Result<NodeChain, ApiError> {
    peer.peer_chain.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_client_certificate",
            "node routes require the node agent's client certificate",
        )
    })
}

pub(super) async fn node_entries(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
) -> Result<Json<EntryList>, ApiError> {
    let chain = node_chain(&peer)?;
    let (_, entries) = state
        .authority
        .node_entries(&chain, OffsetDateTime::now_utc())
        .await?;
    Ok(Json(EntryList {
        entries: entries.iter().map(entry_view).collect(),
    }))
}

pub(super) async fn node_sign(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let attempt = Attempt::start(&state, "node_sign", &peer)?;
    let result = node_sign_inner(&state, &peer, &headers, body).await;
    attempt.finish(&result, StatusCode::CREATED);
    let (issued, ()) = result?;
    Ok((StatusCode::CREATED, Json(issued_body(&issued, None))).into_response())
}

async fn node_sign_inner(
    state: &AppState,
    peer: &PeerInfo,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Issuance, ()), ApiError> {
    let chain = node_chain(peer)?;
    let bytes = read_json(headers, body).await?;
    let req: NodeSignRequest = parse_json(&bytes)?;
    let csr = parse_csr(&req.csr).map_err(|e| ApiError::bad_request("bad_csr", e.to_string()))?;
    let issued = state
        .authority
        .sign_for_node(&chain, &req.spiffe_id, &csr, OffsetDateTime::now_utc())
        .await?;
    Ok((issued, ()))
}
