//! The CA's web console (issue 21), served under `/console/` on the HTTPS
//! listener (and on `--console-listen`): overview, certificates, tokens,
//! audit and ACME, as server-rendered HTML that works without JavaScript.
//!
//! Secure by default: sign-in by the admin client certificate or a one-time
//! link ([`create_login_link`], `ward ca console-login`); a session cookie
//! that is `HttpOnly`, `Secure`, `SameSite=Strict`; origin and CSRF checks
//! on every change; a Content Security Policy that allows no inline script
//! or style and no other origin; every asset embedded in the binary.
//!
//! Must never: serve anything outside `/console/`, show a stored secret
//! (only a token just created, once), or change state on a GET.

mod auth;
mod html;
mod pages;
mod refusals;
mod session;

use std::time::Duration;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::map_response;
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use time::OffsetDateTime;
use ward_store::Store;

pub use refusals::{KEEP as REFUSALS_KEPT, Refusal, Refusals};
pub use session::LOGIN_PREFIX;

use crate::http::AppState;
use html::{Nav, page};

/// The console's Content Security Policy: its own script and style only,
/// nothing inline, no framing, forms only to itself.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

/// Largest form body the console reads.
pub const MAX_FORM: usize = 16 * 1024;

/// Default lifetime of a login link.
pub const LOGIN_LINK_TTL: Duration = Duration::from_secs(5 * 60);

/// Longest lifetime a login link may be given.
pub const MAX_LOGIN_LINK_TTL: Duration = Duration::from_secs(60 * 60);

/// The console's state: live sessions and recent refusals.
#[derive(Debug, Default)]
pub struct Console {
    sessions: session::Sessions,
    /// Refused requests, for the audit page.
    pub refusals: Refusals,
}

impl Console {
    /// A console with no session.
    pub fn new() -> Self {
        Console::default()
    }
}

/// A login link's secret, made and recorded by [`create_login_link`].
pub struct LoginLink {
    secret: zeroize::Zeroizing<String>,
    /// When it stops working.
    pub expires_at: OffsetDateTime,
}

impl LoginLink {
    /// The link to open, under `base` (`https://HOST:PORT`).
    pub fn url(&self, base: &str) -> String {
        format!(
            "{}/console/login?token={}",
            base.trim_end_matches('/'),
            self.secret.as_str()
        )
    }
}

impl std::fmt::Debug for LoginLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginLink")
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

/// Makes a one-time login link valid for `ttl` and records its hash.
pub async fn create_login_link(
    store: &dyn Store,
    ttl: Duration,
    now: OffsetDateTime,
) -> Result<LoginLink, crate::Error> {
    if ttl.is_zero() || ttl > MAX_LOGIN_LINK_TTL {
        return Err(crate::Error::Config(format!(
            "a login link lives between 1 s and {} minutes",
            MAX_LOGIN_LINK_TTL.as_secs() / 60
        )));
    }
    let random = session::random_token()
        .map_err(|_| crate::Error::Config("the system's random generator failed".into()))?;
    let secret = zeroize::Zeroizing::new(format!("{LOGIN_PREFIX}{random}"));
    let expires_at = now + ttl;
    store
        .create_console_login(&session::hash(&secret), now, expires_at)
        .await
        .map_err(|e| crate::Error::Storage(format!("recording the login link: {e}")))?;
    Ok(LoginLink { secret, expires_at })
}

/// Certificates the DNS backfill indexes per transaction: short enough that
/// issuance (which waits for SQLite's write lock) barely notices.
const BACKFILL_ROWS: u32 = 500;

/// Indexes the DNS names of certificates recorded before the console's DNS
/// search existed (migration 0012), a few hundred per transaction, until
/// none is left or `stop`. Replicas may run it at once: each step locks the
/// cursor and indexing a name twice is a no-op.
pub async fn backfill_dns(
    store: std::sync::Arc<dyn Store>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut indexed_batches = 0u64;
    loop {
        if *stop.borrow() {
            return;
        }
        match store.backfill_dns(BACKFILL_ROWS).await {
            Ok(true) => {
                if indexed_batches > 0 {
                    tracing::info!(
                        batches = indexed_batches,
                        "console: DNS names of earlier certificates indexed"
                    );
                }
                return;
            }
            Ok(false) => {
                indexed_batches += 1;
                tokio::task::yield_now().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "console: indexing DNS names of earlier certificates failed; retrying in 30 s");
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return,
                    () = tokio::time::sleep(Duration::from_secs(30)) => {}
                }
            }
        }
    }
}

/// The console's routes (all under `/console`), with their security headers
/// and body limit; merged into the HTTPS API or served alone.
pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/console",
            get(|| async { Redirect::permanent("/console/") }),
        )
        .route("/console/", get(pages::overview::overview))
        .route("/console/login", get(auth::login_form).post(auth::login))
        .route("/console/logout", post(auth::logout))
        .route("/console/certificates", get(pages::certificates::list))
        .route(
            "/console/certificates/{serial}",
            get(pages::certificates::detail),
        )
        .route(
            "/console/certificates/{serial}/revoke",
            post(pages::certificates::revoke),
        )
        .route(
            "/console/tokens",
            get(pages::tokens::list).post(pages::tokens::create),
        )
        .route("/console/tokens/{id}/revoke", post(pages::tokens::revoke))
        .route("/console/audit", get(pages::audit::audit))
        .route("/console/acme", get(pages::acme::overview))
        .route("/console/acme/accounts/{id}", get(pages::acme::account))
        .route(
            "/console/acme/accounts/{id}/deactivate",
            post(pages::acme::deactivate),
        )
        .route("/console/assets/console.css", get(css))
        .route("/console/assets/console.js", get(js))
        .route("/console/{*rest}", get(not_found).post(not_found))
        .layer(DefaultBodyLimit::max(MAX_FORM))
        .layer(map_response(security_headers))
}

/// Headers on every console answer.
async fn security_headers(mut response: Response) -> Response {
    let h = response.headers_mut();
    for (name, value) in [
        (header::CONTENT_SECURITY_POLICY, CSP),
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "same-origin"),
        (header::CACHE_CONTROL, "no-store"),
        (header::STRICT_TRANSPORT_SECURITY, "max-age=31536000"),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-resource-policy",
        HeaderValue::from_static("same-origin"),
    );
    response
}

async fn css() -> Response {
    (
        [(header::CONTENT_TYPE, "text/css; charset=utf-8")],
        include_str!("assets/console.css"),
    )
        .into_response()
}

async fn js() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("assets/console.js"),
    )
        .into_response()
}

async fn not_found() -> Response {
    auth::html(
        StatusCode::NOT_FOUND,
        page(
            "Not found",
            Nav::None,
            None,
            "<p>No such console page. <a href=\"/console/\">Overview</a></p>",
        ),
        None,
    )
}
