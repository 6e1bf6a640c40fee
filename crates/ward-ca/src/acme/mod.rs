//! The ACME server (RFC 8555), one directory per provisioner of
//! `[acme.provisioners.NAME]`: `https://HOST:PORT/acme/NAME/directory`.
//!
//! Handlers parse the JWS ([`jws`]), check url, nonce and key, apply the
//! provisioner's policy ([`config`]) and keep every state in the store
//! (`ward_store::AcmeStore`), so replicas on one PostgreSQL database serve
//! the same accounts, orders and nonces. Certificates come from
//! [`crate::authority::Authority::issue_acme`]: DNS and IP SANs only,
//! linted, recorded with origin `acme`.
//!
//! Must never: accept a nonce twice, issue for a name the order did not
//! validate, or put anything from a CSR but its key into a certificate.

pub mod config;
mod dns;
mod handlers;
mod jws;
pub(crate) mod model;
mod nonce;
mod orders;
pub mod problem;
mod validate;

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, Uri, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use time::OffsetDateTime;

pub use config::{AcmeProvisioner, AcmeSection};
pub use problem::Problem;
pub use validate::Validator;

use crate::authority::Authority;
use crate::http::AppState;

/// How long a nonce stays usable.
const NONCE_LIFETIME: time::Duration = time::Duration::hours(1);
/// How long an order (and its authorizations) may take to complete.
const ORDER_LIFETIME: time::Duration = time::Duration::hours(1);
/// How often expired ACME state is swept.
const SWEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(60);
/// Rows of each kind one sweep transaction deletes at most.
const SWEEP_BATCH: u32 = 1000;
/// Transactions one sweep runs at most.
const SWEEP_ROUNDS: usize = 10;
/// Largest JWS body read.
pub const MAX_JWS: usize = 64 * 1024;

/// The ACME server's configuration and collaborators.
pub struct Acme {
    /// `[acme]` from `ca.toml`.
    pub config: AcmeSection,
    /// The authority that signs.
    pub authority: Arc<Authority>,
    /// How challenges are validated.
    pub validator: Validator,
    /// Nonces, authenticated with the store's key.
    nonces: nonce::Nonces,
}

impl std::fmt::Debug for Acme {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acme")
            .field("provisioners", &self.config.provisioners.keys())
            .finish_non_exhaustive()
    }
}

impl Acme {
    /// The ACME server of `config` signing with `authority`.
    pub fn new(config: AcmeSection, authority: Arc<Authority>) -> Result<Acme, crate::Error> {
        let dns_resolver = match &config.dns_resolver {
            Some(r) => Some(r.parse().map_err(|_| {
                crate::Error::Config(format!("ca.toml: acme.dns_resolver {r:?} is not IP:PORT"))
            })?),
            None => None,
        };
        Ok(Acme {
            validator: Validator {
                http01_port: config.http01_port,
                tlsalpn01_port: config.tlsalpn01_port,
                dns_resolver,
            },
            config,
            authority,
            nonces: nonce::Nonces::default(),
        })
    }

    /// Starts the sweep that deletes expired ACME state (nonces, orders,
    /// reusable authorizations) every [`SWEEP_EVERY`], at most
    /// [`SWEEP_BATCH`] rows of each kind per transaction and
    /// [`SWEEP_ROUNDS`] transactions per sweep; it ends with the runtime.
    pub fn spawn_sweeper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let acme = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(SWEEP_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(acme) = acme.upgrade() else { return };
                acme.sweep(OffsetDateTime::now_utc()).await;
            }
        })
    }

    /// One sweep (see [`Acme::spawn_sweeper`]); returns the rows deleted.
    pub async fn sweep(&self, now: OffsetDateTime) -> u64 {
        let mut total = 0;
        for _ in 0..SWEEP_ROUNDS {
            match self.authority.store().acme().prune(now, SWEEP_BATCH).await {
                Ok(n) => {
                    total += n;
                    if n < u64::from(SWEEP_BATCH) {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning expired ACME state failed");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::debug!(rows = total, "pruned expired ACME state");
        }
        total
    }

    /// A fresh nonce, which every replica accepts once (nothing is
    /// written: see [`nonce`]).
    pub(crate) async fn new_nonce(&self) -> Result<String, Problem> {
        let expires = OffsetDateTime::now_utc() + NONCE_LIFETIME;
        self.nonces
            .issue(self.authority.store().acme(), expires)
            .await
    }

    /// Uses a nonce a request carries: `true` once for a nonce this CA
    /// issued that has not expired, recorded (committed) before it answers.
    pub(crate) async fn take_nonce(
        &self,
        nonce: &str,
        now: OffsetDateTime,
    ) -> Result<bool, Problem> {
        self.nonces
            .take(self.authority.store().acme(), nonce, now)
            .await
    }
}

/// The absolute URL prefix of one provisioner's directory, as the client
/// addressed it (`https://HOST:PORT/acme/NAME/`).
#[derive(Clone, Debug)]
pub(crate) struct Base {
    origin: String,
    prefix: String,
    /// The provisioner's name.
    pub name: String,
}

impl Base {
    /// The base for `name` from the request's authority (HTTP/2) or Host.
    pub(crate) fn of(name: &str, uri: &Uri, headers: &HeaderMap) -> Result<Base, Problem> {
        let host = uri
            .authority()
            .map(|a| a.as_str().to_owned())
            .or_else(|| {
                headers
                    .get(header::HOST)
                    .and_then(|h| h.to_str().ok())
                    .map(str::to_owned)
            })
            .ok_or_else(|| Problem::malformed("the request names no host"))?;
        if host.is_empty() || host.contains(['/', ' ', '"', '\\']) {
            return Err(Problem::malformed("bad Host header"));
        }
        Ok(Base {
            origin: format!("https://{host}"),
            prefix: format!("https://{host}/acme/{name}/"),
            name: name.to_owned(),
        })
    }

    /// The absolute URL of a request path (what a JWS `url` must be).
    pub(crate) fn request_url(&self, path: &str) -> String {
        format!("{}{path}", self.origin)
    }

    /// The absolute URL of `rest` under this directory.
    pub(crate) fn url(&self, rest: &str) -> String {
        format!("{}{rest}", self.prefix)
    }

    /// The account id in an account URL of this directory.
    pub(crate) fn account_id<'a>(&self, kid: &'a str) -> Option<&'a str> {
        kid.strip_prefix(&self.prefix)?
            .strip_prefix("account/")
            .filter(|id| !id.is_empty() && !id.contains('/'))
    }
}

/// Random id (128 bits, base64url).
pub(crate) fn random_id() -> Result<String, Problem> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| Problem::internal("RNG failure"))?;
    Ok(jws::b64e(&bytes))
}

/// Adds a fresh `Replay-Nonce` to every answer that needs one (all POSTs
/// and newNonce) and `Cache-Control: no-store` to newNonce.
async fn nonces(State(state): State<AppState>, request: Request<Body>, next: Next) -> Response {
    let wants_nonce =
        request.method() == Method::POST || request.uri().path().ends_with("/new-nonce");
    let mut response = next.run(request).await;
    if !wants_nonce {
        return response;
    }
    let Some(acme) = state.acme.as_ref() else {
        return response;
    };
    match acme.new_nonce().await {
        Ok(nonce) => {
            if let Ok(v) = HeaderValue::from_str(&nonce) {
                response.headers_mut().insert("replay-nonce", v);
            }
            response
                .headers_mut()
                .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
            response
        }
        Err(p) => axum::response::IntoResponse::into_response(p),
    }
}

/// The ACME routes, mounted under `/acme/` on the HTTPS router.
pub(crate) fn routes(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/acme/{p}/directory", get(handlers::directory))
        .route(
            "/acme/{p}/new-nonce",
            get(handlers::new_nonce_get).head(handlers::new_nonce_head),
        )
        .route("/acme/{p}/new-account", post(handlers::new_account))
        .route("/acme/{p}/account/{id}", post(handlers::account))
        .route(
            "/acme/{p}/account/{id}/orders",
            post(handlers::account_orders),
        )
        .route("/acme/{p}/key-change", post(handlers::key_change))
        .route("/acme/{p}/new-order", post(orders::new_order))
        .route("/acme/{p}/order/{id}", post(orders::order))
        .route("/acme/{p}/order/{id}/finalize", post(orders::finalize))
        .route("/acme/{p}/authz/{id}/{i}", post(orders::authz))
        .route("/acme/{p}/chall/{id}/{i}/{kind}", post(orders::challenge))
        .route("/acme/{p}/cert/{id}", post(orders::certificate))
        .route("/acme/{p}/revoke-cert", post(orders::revoke))
        .route("/acme/{p}/renewal-info/{id}", get(orders::renewal_info))
        .layer(middleware::from_fn_with_state(state, nonces))
}

/// An external account binding key just made: shown once, stored as is
/// (the server needs the key itself to check the MAC).
#[derive(Clone)]
pub struct CreatedEab {
    /// The key id clients send (`--kid`, `--eab-kid`).
    pub key_id: String,
    /// The HMAC key, base64url (`--hmac`, `--eab-hmac-key`).
    pub hmac_key: String,
}

impl std::fmt::Debug for CreatedEab {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedEab")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// Creates an EAB key for `provisioner` (which `ca.toml` must define).
pub async fn create_eab_key(
    store: &dyn ward_store::Store,
    config: &crate::CaConfig,
    provisioner: &str,
    now: OffsetDateTime,
) -> Result<CreatedEab, crate::Error> {
    let known = config
        .acme
        .as_ref()
        .is_some_and(|a| a.provisioners.contains_key(provisioner));
    if !known {
        return Err(crate::Error::Config(format!(
            "ca.toml defines no [acme.provisioners.{provisioner}]"
        )));
    }
    store_eab_key(store, provisioner, now).await
}

/// Creates an EAB key for `provisioner` (the caller checked it exists).
pub(crate) async fn store_eab_key(
    store: &dyn ward_store::Store,
    provisioner: &str,
    now: OffsetDateTime,
) -> Result<CreatedEab, crate::Error> {
    let rng = |_| crate::Error::Storage("the system RNG failed".into());
    let mut secret = zeroize::Zeroizing::new([0u8; 32]);
    aws_lc_rs::rand::fill(secret.as_mut()).map_err(rng)?;
    let key_id = random_id().map_err(|p| crate::Error::Storage(p.detail))?;
    store
        .acme()
        .create_eab_key(&ward_store::AcmeEabKey {
            id: key_id.clone(),
            provisioner: provisioner.to_owned(),
            hmac_key: secret.to_vec(),
            created_at: now,
            account_id: None,
            revoked_at: None,
        })
        .await
        .map_err(|e| crate::Error::Storage(format!("storing the EAB key: {e}")))?;
    Ok(CreatedEab {
        key_id,
        hmac_key: jws::b64e(secret.as_ref()),
    })
}
