//! Token and certificate administration, for the admin identity only
//! (a client certificate carrying `spiffe://<TD>/ward/admin`).

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use ward_pki::issue::{Profile, rfc3339};
use ward_pki::{SpiffeId, parse_duration};
use ward_store::{Certificate, Token};
use ward_tls::server::PeerInfo;

use super::AppState;
use super::body::{parse_json, read_json};
use super::error::ApiError;
use crate::authority::TokenSpec;
use ward_pki::cidr::Cidr;

/// Default lifetime of a token when the request names none.
pub const DEFAULT_TOKEN_EXPIRY: Duration = Duration::from_secs(24 * 3600);

/// Checks the caller is the admin identity: a certificate carrying the
/// admin SPIFFE ID *and* recorded as the admin certificate (origin `admin`,
/// made by `ward ca init`) and not revoked. A certificate that merely
/// carries the ID (from a token created with `--allow-reserved`) is refused.
pub(super) async fn require_admin(
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

pub(super) fn done(state: &AppState, action: &'static str, detail: serde_json::Value) {
    state.metrics.admin.with(&[action, "ok"]).inc();
    state.audit.record(&serde_json::json!({
        "event": "admin",
        "action": action,
        "detail": detail,
    }));
}

/// A token creation request: the same options as `ward token create`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// The SPIFFE ID to bind.
    pub spiffe_id: String,
    /// DNS SANs to bind.
    #[serde(default)]
    pub dns: Vec<String>,
    /// Certificate lifetime, e.g. `1h`.
    pub cert_ttl: Option<String>,
    /// Token lifetime, e.g. `24h`.
    pub expires_in: Option<String>,
    /// Use count; 0 = unlimited until expiry. Default 1.
    pub uses: Option<u32>,
    /// `server`, `client` or `peer` (default).
    pub profile: Option<String>,
    /// Allowed source networks.
    #[serde(default)]
    pub allowed_cidrs: Vec<String>,
    /// Subject common name to bind (a CSR may ask for exactly this CN).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cn: Option<String>,
    /// Allow a reserved SPIFFE ID (`spiffe://TD/ward/...`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_reserved: bool,
}

impl CreateTokenRequest {
    /// Validates into a [`TokenSpec`].
    pub fn into_spec(self) -> Result<TokenSpec, String> {
        let duration = |field: &str, v: Option<String>| {
            v.map(|s| parse_duration(&s).map_err(|e| format!("{field}: {e}")))
                .transpose()
        };
        Ok(TokenSpec {
            spiffe_id: self
                .spiffe_id
                .parse::<SpiffeId>()
                .map_err(|e| e.to_string())?,
            dns_names: self.dns,
            profile: self
                .profile
                .as_deref()
                .map(str::parse::<Profile>)
                .transpose()
                .map_err(|e| e.to_string())?
                .unwrap_or_default(),
            cert_ttl: duration("cert_ttl", self.cert_ttl)?,
            expires_in: duration("expires_in", self.expires_in)?.unwrap_or(DEFAULT_TOKEN_EXPIRY),
            max_uses: self.uses.unwrap_or(1),
            allowed_cidrs: self
                .allowed_cidrs
                .iter()
                .map(|c| c.parse::<Cidr>())
                .collect::<Result<_, _>>()?,
            common_name: self.cn,
            allow_reserved: self.allow_reserved,
        })
    }
}

/// A token as the admin API and `ward token list` show it (never the hash).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenView {
    /// Public id.
    pub id: String,
    /// Bound SPIFFE ID.
    pub spiffe_id: String,
    /// Bound DNS names.
    pub dns: Vec<String>,
    /// Certificate profile.
    pub profile: String,
    /// Certificate lifetime in seconds.
    pub cert_ttl_seconds: i64,
    /// Token expiry (RFC 3339).
    pub expires_at: String,
    /// Use limit (0 = unlimited).
    pub max_uses: i64,
    /// Uses so far.
    pub uses: i64,
    /// Allowed source networks.
    pub allowed_cidrs: Vec<String>,
    /// Creation time (RFC 3339).
    pub created_at: String,
    /// Revocation time, if revoked.
    pub revoked_at: Option<String>,
    /// Whether its certificates were revoked with it.
    pub revoked_with_certificates: bool,
    /// Bound subject common name, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cn: Option<String>,
}

impl From<&Token> for TokenView {
    fn from(t: &Token) -> Self {
        TokenView {
            id: t.id.clone(),
            spiffe_id: t.spiffe_id.to_string(),
            dns: t.dns_names.clone(),
            profile: t.profile.to_string(),
            cert_ttl_seconds: t.cert_ttl_secs,
            expires_at: rfc3339(t.expires_at),
            max_uses: t.max_uses,
            uses: t.uses,
            allowed_cidrs: t.allowed_cidrs.clone(),
            created_at: rfc3339(t.created_at),
            revoked_at: t.revoked_at.map(rfc3339),
            revoked_with_certificates: t.revoked_with_certs,
            cn: t.common_name.clone(),
        }
    }
}

/// The answer to a token creation: the secret, shown this once.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreatedTokenView {
    /// The secret token.
    pub token: String,
    /// Its metadata.
    #[serde(flatten)]
    pub info: TokenView,
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
    let spec = req
        .into_spec()
        .map_err(|m| ApiError::bad_request("bad_request", m))?;
    let created = state
        .authority
        .create_token(&spec, OffsetDateTime::now_utc())
        .await?;
    let info = TokenView::from(&created.token);
    done(
        &state,
        "create_token",
        serde_json::json!({ "token_id": info.id, "spiffe_id": info.spiffe_id }),
    );
    let view = CreatedTokenView {
        token: created.secret.expose().to_owned(),
        info,
    };
    Ok((StatusCode::CREATED, Json(view)).into_response())
}

/// The token list answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TokenList {
    /// Every token, newest first.
    pub tokens: Vec<TokenView>,
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
        tokens: tokens.iter().map(TokenView::from).collect(),
    }))
}

#[derive(Deserialize)]
pub(super) struct RevokeQuery {
    #[serde(default)]
    with_certificates: bool,
}

/// The answer to a token revocation.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RevokedToken {
    /// The token id.
    pub id: String,
    /// Certificates revoked along with it.
    pub certificates_revoked: u64,
}

pub(super) async fn revoke_token(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
    Path(id): Path<String>,
    Query(q): Query<RevokeQuery>,
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

#[derive(Deserialize)]
pub(super) struct Page {
    limit: Option<u32>,
    offset: Option<u64>,
}

#[derive(Serialize)]
pub(super) struct CertificateView {
    serial: String,
    spiffe_id: String,
    token_id: Option<String>,
    not_before: String,
    not_after: String,
    fingerprint: String,
    renewed_from: Option<String>,
    revoked_at: Option<String>,
    revocation_reason: Option<i16>,
    origin: &'static str,
}

impl From<&Certificate> for CertificateView {
    fn from(c: &Certificate) -> Self {
        CertificateView {
            serial: c.serial.to_string(),
            spiffe_id: c
                .spiffe_id
                .as_ref()
                .map(ToString::to_string)
                .unwrap_or_default(),
            token_id: c.token_id.clone(),
            not_before: rfc3339(c.not_before),
            not_after: rfc3339(c.not_after),
            fingerprint: c.fingerprint.clone(),
            renewed_from: c.renewed_from.as_ref().map(ToString::to_string),
            revoked_at: c.revoked_at.map(rfc3339),
            revocation_reason: c.revocation_reason,
            origin: c.origin.as_str(),
        }
    }
}

#[derive(Serialize)]
pub(super) struct CertificateList {
    total: u64,
    certificates: Vec<CertificateView>,
}

pub(super) async fn list_certificates(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
    Query(page): Query<Page>,
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
        certificates: certs.iter().map(CertificateView::from).collect(),
    }))
}
