//! Issuance, renewal and public routes.

use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use time::OffsetDateTime;
use ward_api::{IssueRequest, RenewRequest, SeedRequest, SignRequest};
use ward_pki::{KeyType, pem};
use ward_tls::server::PeerInfo;
use zeroize::Zeroizing;

use super::AppState;
use super::body::{bearer, parse_json, read_json};
use super::error::ApiError;
use crate::authority::{AuthorityError, Issuance};
use crate::csr::parse_csr;
use crate::wire::{issued as issued_body, seed_response};

/// One audit line per issuance attempt. Never the token itself.
#[derive(Serialize)]
struct IssuanceEvent<'a> {
    event: &'static str,
    route: &'static str,
    source: String,
    token_id: Option<&'a str>,
    spiffe_id: Option<String>,
    serial: Option<String>,
    result: &'static str,
    reason: Option<&'a str>,
    status: u16,
    duration_ms: f64,
}

/// Shared bookkeeping of an issuance request: rate limit by address,
/// audit line, metrics.
pub(super) struct Attempt<'a> {
    state: &'a AppState,
    route: &'static str,
    peer: &'a PeerInfo,
    started: Instant,
    token_id: Option<String>,
}

impl<'a> Attempt<'a> {
    pub(super) fn start(
        state: &'a AppState,
        route: &'static str,
        peer: &'a PeerInfo,
    ) -> Result<Self, ApiError> {
        let attempt = Attempt {
            state,
            route,
            peer,
            started: Instant::now(),
            token_id: None,
        };
        if !state.limits.allow_address(peer.remote_addr.ip()) {
            state.metrics.rate_limited.with(&["address"]).inc();
            let err = rate_limited("too many requests from this address");
            attempt.finish_err(&err);
            return Err(err);
        }
        Ok(attempt)
    }

    /// Notes the token an authority refusal concerns, for the audit line.
    fn refused(&mut self, err: AuthorityError) -> AuthorityError {
        if let Some(id) = err.token_id() {
            self.token_id = Some(id.to_owned());
        }
        err
    }

    /// Finds the presented token (consuming nothing), naming it in the
    /// audit line when it is refused.
    async fn authenticate(
        &mut self,
        presented: &str,
        now: OffsetDateTime,
    ) -> Result<ward_store::Token, AuthorityError> {
        let result = self
            .state
            .authority
            .authenticate(presented, self.peer.remote_addr.ip(), now)
            .await;
        result.map_err(|e| self.refused(e))
    }

    fn check_token_rate(&mut self, token_id: &str) -> Result<(), ApiError> {
        self.token_id = Some(token_id.to_owned());
        if self.state.limits.allow_token(token_id) {
            Ok(())
        } else {
            self.state.metrics.rate_limited.with(&["token"]).inc();
            Err(rate_limited("too many requests with this token"))
        }
    }

    fn record(
        &self,
        result: &'static str,
        reason: Option<&str>,
        status: StatusCode,
        issued: Option<&Issuance>,
    ) {
        let elapsed = self.started.elapsed();
        // The metric's result label is `issued` or the refusal reason, so
        // dashboards can tell replayed tokens from bad CSRs.
        self.state
            .metrics
            .issuance
            .with(&[self.route, reason.unwrap_or(result)])
            .inc();
        self.state
            .metrics
            .issuance_seconds
            .with(&[self.route])
            .observe(elapsed.as_secs_f64());
        if let Some(reason) = reason {
            self.state.console.refusals.record(crate::console::Refusal {
                at: OffsetDateTime::now_utc(),
                route: self.route.to_owned(),
                reason: reason.to_owned(),
                source: self.peer.remote_addr.ip().to_string(),
                token_id: self.token_id.clone(),
            });
        }
        self.state.audit.record(&IssuanceEvent {
            event: "issuance",
            route: self.route,
            source: self.peer.remote_addr.ip().to_string(),
            token_id: self
                .token_id
                .as_deref()
                .or(issued.and_then(|i| i.token_id.as_deref())),
            spiffe_id: issued.map(|i| i.spiffe_id.to_string()),
            serial: issued.map(|i| i.serial.to_string()),
            result,
            reason,
            status: status.as_u16(),
            duration_ms: elapsed.as_secs_f64() * 1000.0,
        });
    }

    fn finish_ok(&self, issued: &Issuance, status: StatusCode) {
        if issued.token_id.is_some() && self.route != "renew" {
            self.state.metrics.token_uses.with(&[]).inc();
        }
        self.record("issued", None, status, Some(issued));
    }

    fn finish_err(&self, err: &ApiError) {
        self.record("refused", Some(err.code), err.status, None);
    }

    /// Records the outcome of the request; `ok` is the status the route
    /// answers a success with (the audit line says what the client got).
    pub(super) fn finish<T>(&self, result: &Result<(Issuance, T), ApiError>, ok: StatusCode) {
        match result {
            Ok((issued, _)) => self.finish_ok(issued, ok),
            Err(err) => self.finish_err(err),
        }
    }
}

fn rate_limited(message: &str) -> ApiError {
    ApiError::new(StatusCode::TOO_MANY_REQUESTS, "rate_limited", message)
}

fn missing_token() -> ApiError {
    ApiError::new(
        StatusCode::UNAUTHORIZED,
        "missing_token",
        "a bootstrap token is required (\"token\" field or Authorization: Bearer)",
    )
}

pub(super) async fn sign(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut attempt = Attempt::start(&state, "sign", &peer)?;
    let result = sign_inner(&state, &headers, body, &mut attempt).await;
    attempt.finish(&result, StatusCode::CREATED);
    let (issued, ()) = result?;
    Ok((StatusCode::CREATED, Json(issued_body(&issued, None))).into_response())
}

async fn sign_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    a: &mut Attempt<'_>,
) -> Result<(Issuance, ()), ApiError> {
    let bytes = read_json(headers, body).await?;
    let req: SignRequest = parse_json(&bytes)?;
    let presented = req
        .token
        .or_else(|| bearer(headers))
        .ok_or_else(missing_token)?;
    let csr_pem = req
        .csr
        .ok_or_else(|| ApiError::bad_request("missing_csr", "the \"csr\" field is required"))?;
    let csr = parse_csr(&csr_pem).map_err(|e| ApiError::bad_request("bad_csr", e.to_string()))?;
    let now = OffsetDateTime::now_utc();
    let token = a.authenticate(&presented, now).await?;
    a.check_token_rate(&token.id)?;
    let issued = state
        .authority
        .sign_for_token(&token, &csr, now)
        .await
        .map_err(|e| a.refused(e))?;
    Ok((issued, ()))
}

pub(super) fn key_type(name: Option<&str>) -> Result<KeyType, ApiError> {
    match name {
        None => Ok(KeyType::EcdsaP256),
        Some(n) => n
            .parse()
            .map_err(|e: ward_pki::Error| ApiError::bad_request("bad_key_type", e.to_string())),
    }
}

pub(super) async fn issue(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut attempt = Attempt::start(&state, "issue", &peer)?;
    let result = issue_inner(&state, &headers, body, &mut attempt).await;
    attempt.finish(&result, StatusCode::CREATED);
    let (issued, key_pem) = result?;
    let body = issued_body(&issued, Some(key_pem.to_string()));
    Ok((StatusCode::CREATED, Json(body)).into_response())
}

async fn issue_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    a: &mut Attempt<'_>,
) -> Result<(Issuance, Zeroizing<String>), ApiError> {
    let bytes = read_json(headers, body).await?;
    let req: IssueRequest = parse_json(&bytes)?;
    let presented = req
        .token
        .or_else(|| bearer(headers))
        .ok_or_else(missing_token)?;
    let key_type = key_type(req.key_type.as_deref())?;
    let now = OffsetDateTime::now_utc();
    let token = a.authenticate(&presented, now).await?;
    a.check_token_rate(&token.id)?;
    // RSA keys cost the CA up to seconds of CPU each: one token gets a
    // bounded share (`limits.key_generations_per_token`).
    let _slot = if crate::cpu::is_expensive(key_type) {
        let slot = state.limits.keygen_slot(&token.id).ok_or_else(|| {
            state.metrics.rate_limited.with(&["key_generation"]).inc();
            rate_limited(
                "too many server-side key generations in progress with this token; retry when one finishes",
            )
        })?;
        Some(slot)
    } else {
        None
    };
    let (issued, key) = state
        .authority
        .issue_keypair_for_token(&token, key_type, now)
        .await
        .map_err(|e| a.refused(e))?;
    let pem = key
        .to_pkcs8_pem()
        .map_err(|e| AuthorityError::Internal(format!("writing the new key: {e}")))?;
    Ok((issued, pem))
}

/// The Phoenix CA wire format: `{"bootstrap_token"}` → 200
/// `{certificate, private_key, ca_chain}`; 400 `missing_bootstrap_token`;
/// 401 `invalid_bootstrap_token` for any token refusal.
pub(super) async fn seed_issue(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let mut attempt = Attempt::start(&state, "seed_issue", &peer)?;
    let result = seed_inner(&state, &headers, body, &mut attempt).await;
    attempt.finish(&result, StatusCode::OK);
    let (issued, key_pem) = result?;
    let body = seed_response(&issued, key_pem.to_string());
    Ok((StatusCode::OK, Json(body)).into_response())
}

async fn seed_inner(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    a: &mut Attempt<'_>,
) -> Result<(Issuance, Zeroizing<String>), ApiError> {
    let bytes = read_json(headers, body).await?;
    let req: SeedRequest = parse_json(&bytes)?;
    let presented = req
        .bootstrap_token
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ApiError::bad_request("missing_bootstrap_token", "bootstrap_token is required")
        })?;
    let now = OffsetDateTime::now_utc();
    let invalid = |e: AuthorityError| match e {
        AuthorityError::Unauthenticated { .. }
        | AuthorityError::TokenRefused { .. }
        | AuthorityError::Forbidden(_) => ApiError::new(
            StatusCode::UNAUTHORIZED,
            "invalid_bootstrap_token",
            "the bootstrap token is invalid, expired or used",
        ),
        other => other.into(),
    };
    let token = a.authenticate(&presented, now).await.map_err(invalid)?;
    a.check_token_rate(&token.id)?;
    let (issued, key) = state
        .authority
        .issue_keypair_for_token(&token, KeyType::EcdsaP256, now)
        .await
        .map_err(|e| invalid(a.refused(e)))?;
    let pem = key
        .to_pkcs8_pem()
        .map_err(|e| AuthorityError::Internal(format!("writing the new key: {e}")))?;
    Ok((issued, pem))
}

pub(super) async fn renew(
    State(state): State<AppState>,
    Extension(peer): Extension<PeerInfo>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let attempt = Attempt::start(&state, "renew", &peer)?;
    let result = renew_inner(&state, &peer, &headers, body).await;
    attempt.finish(&result, StatusCode::CREATED);
    let (issued, ()) = result?;
    Ok((StatusCode::CREATED, Json(issued_body(&issued, None))).into_response())
}

async fn renew_inner(
    state: &AppState,
    peer: &PeerInfo,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Issuance, ()), ApiError> {
    let chain = peer.peer_chain.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "missing_client_certificate",
            "renewal requires a client certificate from this CA",
        )
    })?;
    let bytes = read_json(headers, body).await?;
    let req: RenewRequest = parse_json(&bytes)?;
    let csr = req
        .csr
        .map(|pem| parse_csr(&pem))
        .transpose()
        .map_err(|e| ApiError::bad_request("bad_csr", e.to_string()))?;
    let issued = state
        .authority
        .renew(&chain, csr.as_ref(), OffsetDateTime::now_utc())
        .await?;
    Ok((issued, ()))
}

pub(super) async fn roots(State(state): State<AppState>) -> Response {
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        (*state.authority.roots_pem()).clone(),
    )
        .into_response()
}

pub(super) async fn intermediates(State(state): State<AppState>) -> Response {
    let all = state.authority.intermediates();
    (
        [(header::CONTENT_TYPE, "application/x-pem-file")],
        pem::certs_to_pem(all.iter().map(|c| c.as_ref())),
    )
        .into_response()
}

pub(super) async fn healthz() -> &'static str {
    "ok\n"
}

pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    match state.authority.store().ping().await {
        Ok(()) => match state.expiry.warning() {
            Some(w) => (StatusCode::OK, format!("ready\nwarning: {w}\n")).into_response(),
            None => (StatusCode::OK, "ready\n").into_response(),
        },
        Err(e) => {
            tracing::warn!(error = %e, "not ready: storage unreachable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "storage_unavailable",
                "storage is unreachable",
            )
            .into_response()
        }
    }
}

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            ward_telemetry::Registry::content_type(),
        )],
        state.registry.render(),
    )
        .into_response()
}

pub(super) async fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such route")
}
