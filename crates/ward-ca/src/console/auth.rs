//! Who may use the console, and which changes are genuine.
//!
//! Sign-in: a one-time link from `ward ca console-login` (exchanged by a
//! POST, so link previewers cannot use it up) or the admin client
//! certificate on the TLS connection; either starts a [`Session`]. Every
//! change is a POST that must come from the console's own origin (`Origin`
//! and `Sec-Fetch-Site`, when the browser sends them) and carry the
//! session's CSRF token; the cookie is `SameSite=Strict` besides.

use axum::Form;
use axum::extract::{FromRequest, FromRequestParts, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use ward_store::LoginUse;
use ward_tls::server::PeerInfo;

use super::html::{Nav, esc, page};
use super::refusals::Refusal;
use super::session::{
    LOGIN_PREFIX, MAX_SECRET, Session, Via, clear_cookie, cookie_value, hash, same_secret,
    set_cookie,
};
use crate::http::AppState;

/// A signed-in request: its session, and the cookie to set when the
/// session was started by this request.
pub(crate) struct Signed {
    /// The session.
    pub(crate) session: Session,
    /// `Set-Cookie` for a session started now (admin certificate).
    pub(crate) set_cookie: Option<String>,
}

impl Signed {
    /// An HTML page answer carrying the cookie when one is due.
    pub(crate) fn html(&self, status: StatusCode, body: String) -> Response {
        html(status, body, self.set_cookie.as_deref())
    }
}

/// An HTML answer, with an optional `Set-Cookie`.
pub(crate) fn html(status: StatusCode, body: String, cookie: Option<&str>) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body,
    )
        .into_response();
    if let Some(value) = cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// A 303 to `to`, with an optional `Set-Cookie`.
pub(crate) fn see_other(to: &str, cookie: Option<&str>) -> Response {
    let mut response = (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_owned())]).into_response();
    if let Some(value) = cookie.and_then(|c| HeaderValue::from_str(c).ok()) {
        response.headers_mut().insert(header::SET_COOKIE, value);
    }
    response
}

/// An error page; the refusal is recorded for the audit page.
pub(crate) fn refuse(
    state: &AppState,
    peer: &PeerInfo,
    route: &str,
    status: StatusCode,
    reason: &'static str,
    message: &str,
) -> Response {
    state.console.refusals.record(Refusal {
        at: OffsetDateTime::now_utc(),
        route: format!("console:{route}"),
        reason: reason.to_owned(),
        source: peer.remote_addr.ip().to_string(),
        token_id: None,
    });
    state.audit.record(&serde_json::json!({
        "event": "console",
        "action": route,
        "result": "refused",
        "reason": reason,
        "source": peer.remote_addr.ip().to_string(),
    }));
    let body = format!(
        "<p class=\"error\" role=\"alert\"><strong>{}</strong> ({})</p>\
         <p><a href=\"/console/\">Back to the console</a> · <a href=\"/console/login\">Sign in</a></p>",
        esc(message),
        esc(reason)
    );
    html(status, page("Refused", Nav::None, None, &body), None)
}

/// The request's session: its cookie, else a new one for the admin client
/// certificate. Without either, a page view is sent to the sign-in page and
/// anything else is refused.
pub(crate) async fn signed_in(
    state: &AppState,
    peer: &PeerInfo,
    method: &Method,
    headers: &HeaderMap,
) -> Result<Signed, Response> {
    if let Some(session) = cookie_value(headers).and_then(|id| state.console.sessions.find(&id)) {
        return Ok(Signed {
            session,
            set_cookie: None,
        });
    }
    if peer.leaf().is_some()
        && crate::http::admin_certificate(state, peer, "console_sign_in")
            .await
            .is_ok()
    {
        let (id, session) = match state.console.sessions.start(Via::Certificate) {
            Ok(s) => s,
            Err(_) => return Err(unavailable()),
        };
        audit_sign_in(state, peer, Via::Certificate);
        return Ok(Signed {
            session,
            set_cookie: Some(set_cookie(&id)),
        });
    }
    if method == Method::GET || method == Method::HEAD {
        Err(see_other("/console/login", None))
    } else {
        Err(refuse(
            state,
            peer,
            "session",
            StatusCode::UNAUTHORIZED,
            "missing_session",
            "Sign in first: this request carries no live console session.",
        ))
    }
}

/// Extracting [`Signed`] runs [`signed_in`]: a handler that takes it
/// only runs for a signed-in request.
impl FromRequestParts<AppState> for Signed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        let Some(peer) = parts.extensions.get::<PeerInfo>() else {
            tracing::error!("console: a request without connection details");
            return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        };
        signed_in(state, peer, &parts.method, &parts.headers).await
    }
}

/// A console form that changes something: the change's name (in refusals
/// and audit lines) and the CSRF token it carried.
pub(crate) trait ChangeForm: DeserializeOwned {
    /// The change's name in refusals and audit lines.
    const CHANGE: &'static str;
    /// The CSRF token the form carried, if any.
    fn csrf(&self) -> Option<&str>;
}

/// A genuine change: a signed-in session, the console's own origin and
/// the session's CSRF token ([`check_change`]), and the posted form. Take
/// it as a handler's last argument.
pub(crate) struct Change<F> {
    /// The session the change is made under.
    pub(crate) signed: Signed,
    /// The form as posted.
    pub(crate) form: F,
}

impl<F: ChangeForm> FromRequest<AppState> for Change<F> {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let signed = Signed::from_request_parts(&mut parts, state).await?;
        let (headers, uri) = (parts.headers.clone(), parts.uri.clone());
        let Some(peer) = parts.extensions.get::<PeerInfo>().cloned() else {
            return Err(StatusCode::INTERNAL_SERVER_ERROR.into_response());
        };
        let Form(form) = Form::<F>::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        check_change(
            state,
            &peer,
            F::CHANGE,
            &headers,
            &uri,
            &signed,
            form.csrf(),
        )?;
        Ok(Change { signed, form })
    }
}

fn unavailable() -> Response {
    html(
        StatusCode::SERVICE_UNAVAILABLE,
        page(
            "Unavailable",
            Nav::None,
            None,
            "<p>The system's random number generator failed; try again.</p>",
        ),
        None,
    )
}

fn audit_sign_in(state: &AppState, peer: &PeerInfo, via: Via) {
    state.audit.record(&serde_json::json!({
        "event": "console",
        "action": "sign_in",
        "result": "ok",
        "via": via.as_str(),
        "source": peer.remote_addr.ip().to_string(),
    }));
}

/// Whether the request comes from the console's own origin. Browsers send
/// `Sec-Fetch-Site` and, on POST, `Origin`; a request with neither (a
/// command-line client) still needs the CSRF token.
pub(crate) fn same_origin(headers: &HeaderMap, uri: &Uri) -> bool {
    if let Some(site) = headers.get("sec-fetch-site")
        && !matches!(site.as_bytes(), b"same-origin" | b"none")
    {
        return false;
    }
    let Some(origin) = headers.get(header::ORIGIN) else {
        return true;
    };
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| uri.authority().map(|a| a.as_str()));
    match (origin.to_str(), host) {
        (Ok(origin), Some(host)) => origin.eq_ignore_ascii_case(&format!("https://{host}")),
        _ => false,
    }
}

/// Checks that a change is genuine: same origin, and the session's CSRF token.
// The refusal is the page the handler answers with; boxing it gains nothing
// on this path, which runs once per form submission.
#[allow(clippy::result_large_err)]
pub(crate) fn check_change(
    state: &AppState,
    peer: &PeerInfo,
    route: &str,
    headers: &HeaderMap,
    uri: &Uri,
    signed: &Signed,
    csrf: Option<&str>,
) -> Result<(), Response> {
    if !same_origin(headers, uri) {
        return Err(refuse(
            state,
            peer,
            route,
            StatusCode::FORBIDDEN,
            "cross_site_request",
            "This change came from another site and was refused.",
        ));
    }
    match csrf {
        None | Some("") => Err(refuse(
            state,
            peer,
            route,
            StatusCode::FORBIDDEN,
            "csrf_missing",
            "This form lacks its CSRF token; reload the page and try again.",
        )),
        Some(token) if same_secret(token, &signed.session.csrf) => Ok(()),
        Some(_) => Err(refuse(
            state,
            peer,
            route,
            StatusCode::FORBIDDEN,
            "csrf_mismatch",
            "This form's CSRF token does not belong to your session; reload the page and try again.",
        )),
    }
}

/// The query of the sign-in page.
#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    token: Option<String>,
}

/// `GET /console/login`: the form exchanging a link's secret for a session,
/// or how to get one.
pub(crate) async fn login_form(
    State(state): State<AppState>,
    axum::Extension(_peer): axum::Extension<PeerInfo>,
    headers: HeaderMap,
    Query(q): Query<LoginQuery>,
) -> Response {
    if cookie_value(&headers).is_some_and(|id| state.console.sessions.find(&id).is_some()) {
        return see_other("/console/", None);
    }
    let body = match q.token.filter(|t| !t.is_empty() && t.len() <= MAX_SECRET) {
        Some(token) => format!(
            "<p>Sign in with this one-time link. It works once and expires minutes after it was made.</p>\
             <form method=\"post\" action=\"/console/login\">\
             <input type=\"hidden\" name=\"token\" value=\"{}\">\
             <button type=\"submit\" id=\"sign-in\" autofocus>Sign in</button></form>",
            esc(&token)
        ),
        None => "<p>Sign in with a one-time link printed by \
                 <code>ward ca console-login --dir DIR</code> on the CA's host, \
                 or open the console with the admin client certificate \
                 (<code>admin.crt</code>, <code>admin.key</code>) installed in your browser.</p>"
            .to_owned(),
    };
    html(
        StatusCode::OK,
        page("Sign in", Nav::None, None, &body),
        None,
    )
}

/// The sign-in form.
#[derive(Deserialize)]
pub(crate) struct LoginForm {
    token: Option<String>,
}

/// `POST /console/login`: uses the link (once) and starts a session.
pub(crate) async fn login(
    State(state): State<AppState>,
    axum::Extension(peer): axum::Extension<PeerInfo>,
    headers: HeaderMap,
    uri: Uri,
    Form(form): Form<LoginForm>,
) -> Response {
    if !same_origin(&headers, &uri) {
        return refuse(
            &state,
            &peer,
            "login",
            StatusCode::FORBIDDEN,
            "cross_site_request",
            "This sign-in came from another site and was refused.",
        );
    }
    let token = form.token.unwrap_or_default();
    let outcome = if token.starts_with(LOGIN_PREFIX) && token.len() <= MAX_SECRET {
        state
            .authority
            .store()
            .use_console_login(&hash(&token), OffsetDateTime::now_utc())
            .await
    } else {
        Ok(LoginUse::Unknown)
    };
    let (reason, message) = match outcome {
        Ok(LoginUse::Accepted) => {
            let Ok((id, _)) = state.console.sessions.start(Via::Link) else {
                return unavailable();
            };
            audit_sign_in(&state, &peer, Via::Link);
            return see_other("/console/", Some(&set_cookie(&id)));
        }
        Ok(LoginUse::Used) => (
            "login_link_used",
            "This login link was used already; make a new one with `ward ca console-login`.",
        ),
        Ok(LoginUse::Expired) => (
            "login_link_expired",
            "This login link expired; make a new one with `ward ca console-login`.",
        ),
        Ok(LoginUse::Unknown) => ("login_link_unknown", "This login link is not valid."),
        Err(e) => {
            tracing::error!(error = %e, "console sign-in: storage failed");
            return html(
                StatusCode::SERVICE_UNAVAILABLE,
                page(
                    "Unavailable",
                    Nav::None,
                    None,
                    "<p>The CA's storage is unavailable; try again.</p>",
                ),
                None,
            );
        }
    };
    refuse(
        &state,
        &peer,
        "login",
        StatusCode::UNAUTHORIZED,
        reason,
        message,
    )
}

/// A form carrying only the CSRF token.
#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    csrf: Option<String>,
}

impl ChangeForm for CsrfForm {
    const CHANGE: &'static str = "logout";
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// `POST /console/logout`: ends the session.
pub(crate) async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    _: Change<CsrfForm>,
) -> Response {
    if let Some(id) = cookie_value(&headers) {
        state.console.sessions.end(&id);
    }
    let body = "<p>You are signed out. <a href=\"/console/login\">Sign in again</a>.</p>";
    html(
        StatusCode::OK,
        page("Signed out", Nav::None, None, body),
        Some(&clear_cookie()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    #[test]
    fn origins_are_compared_with_the_host() {
        let uri: Uri = "/console/tokens".parse().unwrap();
        let host = ("host", "ca.example:8443");
        assert!(same_origin(&headers(&[host]), &uri));
        assert!(same_origin(
            &headers(&[host, ("origin", "https://ca.example:8443")]),
            &uri
        ));
        for bad in [
            vec![host, ("origin", "https://evil.example")],
            vec![host, ("origin", "http://ca.example:8443")],
            vec![host, ("origin", "null")],
            vec![host, ("sec-fetch-site", "cross-site")],
            vec![host, ("sec-fetch-site", "same-site")],
            vec![("origin", "https://ca.example:8443")],
        ] {
            assert!(!same_origin(&headers(&bad), &uri), "{bad:?}");
        }
        // HTTP/2 carries the host in the URI's authority.
        let h2: Uri = "https://ca.example:8443/console/".parse().unwrap();
        assert!(same_origin(
            &headers(&[("origin", "https://ca.example:8443")]),
            &h2
        ));
    }
}
