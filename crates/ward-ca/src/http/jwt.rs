//! `POST /v1/jwt-svid` (mTLS), `GET /v1/bundle` (the SPIFFE bundle) and
//! `GET /v1/federation` (mTLS: the partner trust domains' bundles).

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;
use ward_api::{JwtSvidRequest, JwtSvidResponse, NodeJwtSvidRequest};
use ward_pki::issue::rfc3339;
use ward_tls::server::PeerInfo;

use super::AppState;
use super::body::{parse_json, read_json};
use super::error::ApiError;

pub(super) async fn mint(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let chain = client_chain(
        &state,
        &peer,
        "a JWT-SVID requires a client certificate from this CA",
    )?;
    let bytes = read_json(&headers, body).await?;
    let req: JwtSvidRequest = parse_json(&bytes)?;
    let minted = state
        .authority
        .mint_jwt_svid(
            &chain,
            &req.audience,
            req.ttl_secs.map(Duration::from_secs),
            OffsetDateTime::now_utc(),
        )
        .await?;
    tracing::info!(
        spiffe_id = %minted.spiffe_id,
        audience = ?req.audience,
        expires_at = %rfc3339(minted.expires_at),
        "JWT-SVID minted"
    );
    Ok(created(minted))
}

/// `POST /v1/node/jwt-svid`: a JWT-SVID for an entry of the calling node
/// agent (authenticated by its own certificate).
pub(super) async fn node_mint(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let chain = client_chain(
        &state,
        &peer,
        "node routes need the node agent's client certificate",
    )?;
    let bytes = read_json(&headers, body).await?;
    let req: NodeJwtSvidRequest = parse_json(&bytes)?;
    let minted = state
        .authority
        .mint_jwt_svid_for_node(
            &chain,
            &req.spiffe_id,
            &req.audience,
            req.ttl_secs.map(Duration::from_secs),
            OffsetDateTime::now_utc(),
        )
        .await?;
    tracing::info!(
        spiffe_id = %minted.spiffe_id,
        audience = ?req.audience,
        expires_at = %rfc3339(minted.expires_at),
        "JWT-SVID minted for a node agent's workload"
    );
    Ok(created(minted))
}

/// The caller's client chain, within the per-address rate limit;
/// `missing` is the 401 message without one.
fn client_chain(
    state: &AppState,
    peer: &PeerInfo,
    missing: &'static str,
) -> Result<std::sync::Arc<Vec<rustls_pki_types::CertificateDer<'static>>>, ApiError> {
    if !state.limits.allow_address(peer.remote_addr.ip()) {
        state.metrics.rate_limited.with(&["address"]).inc();
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            "too many requests from this address",
        ));
    }
    peer.peer_chain.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_client_certificate",
            missing,
        )
    })
}

/// The 201 answer for a minted JWT-SVID.
fn created(minted: crate::authority::jwt::MintedJwt) -> Response {
    let body = JwtSvidResponse {
        token: minted.token,
        spiffe_id: minted.spiffe_id.to_string(),
        expires_at: rfc3339(minted.expires_at),
    };
    (StatusCode::CREATED, Json(body)).into_response()
}

pub(super) async fn bundle(State(state): State<AppState>) -> Result<Response, ApiError> {
    let set = state.authority.spiffe_bundle()?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        set.to_json(),
    )
        .into_response())
}

/// `GET /v1/federation`: the bundles of the partner trust domains this CA
/// follows, for a caller holding a certificate of this CA's trust domain
/// (its chain was verified against our roots in the handshake).
pub(super) async fn federation(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
) -> Result<Response, ApiError> {
    let chain = client_chain(
        &state,
        &peer,
        "federated bundles require a client certificate from this CA",
    )?;
    let own = state.federation.own_trust_domain();
    let caller = chain
        .first()
        .and_then(|leaf| ward_pki::inspect::spiffe_id_of(leaf).ok().flatten());
    if caller
        .as_ref()
        .map(ward_pki::SpiffeId::trust_domain)
        .as_ref()
        != Some(own)
    {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "federated bundles are for identities of this trust domain",
        ));
    }
    Ok((
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Json(state.federation.answer()),
    )
        .into_response())
}
