//! The CA's HTTP API (SPEC §5): parse → authenticate → authorize → call the
//! [`Authority`] → render. Handlers hold no policy; the authority holds no
//! HTTP. [`app`] returns the router so tests can drive it without a socket.

mod acme_admin;
mod admin;
mod body;
mod crl;
mod entries;
mod error;
pub(crate) mod fuzz;
mod jwt;
mod limits;
mod metrics;
pub mod ocsp;
mod routes;

use std::sync::Arc;

use axum::Router;
use axum::routing::{delete, get, post};
use ward_api::paths;
use ward_pki::SpiffeId;
use ward_telemetry::{AuditLog, Registry};

pub use body::MAX_BODY;
pub use error::ApiError;
pub use limits::Limits;
pub use metrics::CaMetrics;

pub(crate) use admin::{done as admin_done, require_admin as admin_certificate};

use crate::authority::Authority;

/// Everything a handler may use.
#[derive(Clone)]
pub struct AppState {
    /// The authority.
    pub authority: Arc<Authority>,
    /// The admin identity (`spiffe://TD/ward/admin`).
    pub admin_id: SpiffeId,
    /// Issuance rate limits.
    pub limits: Limits,
    /// Metrics of this CA instance.
    pub metrics: Arc<CaMetrics>,
    /// The registry the metrics live in (rendered on /metrics).
    pub registry: Registry,
    /// One JSON line per issuance attempt and admin action.
    pub audit: Arc<AuditLog>,
    /// The OCSP responder.
    pub ocsp: Arc<crate::ocsp::Responder>,
    /// The ACME server, when `ca.toml` configures `[acme]`.
    pub acme: Option<Arc<crate::acme::Acme>>,
    /// The web console's sessions and the recent refusals it shows.
    pub console: Arc<crate::console::Console>,
    /// The CA certificates' expiry and the intermediate's warning.
    pub expiry: Arc<crate::expiry::ExpiryWatch>,
    /// The partner trust domains followed (`GET /v1/federation`).
    pub federation: Arc<crate::federation::CaFederation>,
}

impl std::fmt::Debug for AppState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppState")
            .field("admin_id", &self.admin_id)
            .finish_non_exhaustive()
    }
}

/// `GET`: the intermediates published, PEM: the signing one first, then
/// during a rotation the next one and earlier ones still in use.
pub const INTERMEDIATES: &str = "/v1/intermediates";

/// The full API, served on the HTTPS listener.
pub fn app(state: AppState) -> Router {
    Router::new()
        .route(paths::SIGN, post(routes::sign))
        .route(paths::ISSUE, post(routes::issue))
        .route(paths::SEED_ISSUE, post(routes::seed_issue))
        .route(paths::RENEW, post(routes::renew))
        .route(paths::JWT_SVID, post(jwt::mint))
        .route(paths::BUNDLE, get(jwt::bundle))
        .route(paths::FEDERATION, get(jwt::federation))
        .route(
            paths::ADMIN_TOKENS,
            post(admin::create_token).get(admin::list_tokens),
        )
        .route("/v1/admin/tokens/{id}", delete(admin::revoke_token))
        .route(paths::ADMIN_CERTIFICATES, get(admin::list_certificates))
        .route(
            paths::ADMIN_ENTRIES,
            post(entries::create).get(entries::list),
        )
        .route("/v1/admin/entries/{id}", delete(entries::delete))
        .route(paths::NODE_ENTRIES, get(entries::node_entries))
        .route(paths::NODE_SIGN, post(entries::node_sign))
        .route(paths::NODE_JWT_SVID, post(jwt::node_mint))
        .route(paths::REVOKE, post(crl::revoke))
        .route(
            acme_admin::EAB_KEYS,
            post(acme_admin::create).get(acme_admin::list),
        )
        .route(acme_admin::EAB_KEY, delete(acme_admin::revoke))
        .merge(crate::acme::routes(state.clone()))
        .merge(public_routes())
        .merge(crate::console::router())
        .fallback(routes::not_found)
        .with_state(state)
}

/// The console alone, for `--console-listen`.
pub fn console_app(state: AppState) -> Router {
    crate::console::router()
        .fallback(routes::not_found)
        .with_state(state)
}

/// Only the self-authenticating objects, for the plain-HTTP listener.
pub fn public_app(state: AppState) -> Router {
    public_routes()
        .fallback(routes::not_found)
        .with_state(state)
}

fn public_routes() -> Router<AppState> {
    Router::new()
        .route(paths::ROOTS, get(routes::roots))
        .route(INTERMEDIATES, get(routes::intermediates))
        .route(
            "/v1/intermediates/{fingerprint}",
            get(crl::intermediate_der),
        )
        .route(paths::CRL, get(crl::crl_der))
        .route(paths::CRL_PEM, get(crl::crl_pem))
        .route("/v1/crl/{fingerprint}", get(crl::crl_of_der))
        .route("/ocsp", get(ocsp::get_empty).post(ocsp::post))
        .route("/ocsp/", get(ocsp::get_empty))
        .route("/ocsp/{*request}", get(ocsp::get))
        .route("/healthz", get(routes::healthz))
        .route("/readyz", get(routes::readyz))
        .route("/metrics", get(routes::metrics))
}
