//! Tokens: create one bound to a SPIFFE ID (its secret shown once, with a
//! copy button), list them, revoke one with or without its certificates.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use time::OffsetDateTime;
use ward_api::CreateTokenRequest;
use ward_store::Token;

use super::super::auth::{Change, ChangeForm, Signed, see_other};
use super::super::html::{Nav, csrf_field, esc, page, table, url_component, when};
use super::{bad_request, storage_failed};
use crate::authority::AuthorityError;
use crate::http::AppState;
use crate::wire::token_spec;

/// Most tokens the list shows (newest first).
const SHOWN: usize = 500;

/// Longest value accepted in any field of the form.
const MAX_FIELD: usize = 2048;

/// A token's state at `now`.
fn token_status(t: &Token, now: OffsetDateTime) -> &'static str {
    if t.revoked_at.is_some() {
        "<span class=\"tag revoked\">revoked</span>"
    } else if t.expires_at <= now {
        "<span class=\"tag expired\">expired</span>"
    } else if t.max_uses != 0 && t.uses >= t.max_uses {
        "<span class=\"tag expired\">used up</span>"
    } else {
        "<span class=\"tag valid\">usable</span>"
    }
}

/// The creation form, pre-filled with `values`.
fn create_form(csrf: &str, v: &TokenForm) -> String {
    let field = |name: &str, label: &str, value: &Option<String>, hint: &str| {
        format!(
            "<div class=\"field\"><label for=\"{name}\">{label}</label>\
             <input id=\"{name}\" name=\"{name}\" value=\"{}\" maxlength=\"{MAX_FIELD}\" aria-describedby=\"{name}-hint\">\
             <small id=\"{name}-hint\">{hint}</small></div>",
            esc(value.as_deref().unwrap_or(""))
        )
    };
    let mut out = format!(
        "<form method=\"post\" action=\"/console/tokens\" class=\"create\">{}",
        csrf_field(csrf)
    );
    out.push_str(&field(
        "spiffe_id",
        "SPIFFE ID",
        &v.spiffe_id,
        "required: the one identity its certificates carry",
    ));
    out.push_str(&field(
        "dns",
        "DNS names",
        &v.dns,
        "optional, separated by spaces or commas",
    ));
    out.push_str("<div class=\"field\"><label for=\"profile\">Profile</label><select id=\"profile\" name=\"profile\">");
    for p in ["peer", "client", "server"] {
        let selected = if v.profile.as_deref() == Some(p) {
            " selected"
        } else {
            ""
        };
        let _ = write!(out, "<option{selected}>{p}</option>");
    }
    out.push_str("</select></div>");
    out.push_str(&field(
        "cert_ttl",
        "Certificate lifetime",
        &v.cert_ttl,
        "e.g. 1h; the CA's default when empty",
    ));
    out.push_str(&field(
        "expires_in",
        "Token expires in",
        &v.expires_in,
        "e.g. 15m; 24h when empty",
    ));
    out.push_str(&field(
        "uses",
        "Uses",
        &v.uses,
        "1 when empty; 0 = unlimited until expiry",
    ));
    out.push_str(&field("cn", "Common name", &v.cn, "optional subject CN"));
    out.push_str("<button type=\"submit\" id=\"create-token\">Create token</button></form>");
    out
}

/// `GET /console/tokens`.
pub(crate) async fn list(State(state): State<AppState>, signed: Signed) -> Response {
    list_page(&state, &signed, StatusCode::OK, "", &TokenForm::default()).await
}

async fn list_page(
    state: &AppState,
    signed: &Signed,
    status: StatusCode,
    notice: &str,
    form: &TokenForm,
) -> Response {
    let tokens = match state.authority.list_tokens().await {
        Ok(t) => t,
        Err(AuthorityError::Unavailable(e)) => return storage_failed(signed, &e),
        Err(e) => {
            tracing::error!(error = %e, "console: listing tokens failed");
            return bad_request(signed, Nav::Tokens, "listing tokens failed");
        }
    };
    let now = OffsetDateTime::now_utc();
    let csrf = &signed.session.csrf;
    let mut body = String::from(notice);
    body.push_str("<section aria-labelledby=\"new\"><h2 id=\"new\">New token</h2>");
    body.push_str(&create_form(csrf, form));
    body.push_str("</section><section aria-labelledby=\"all\"><h2 id=\"all\">Tokens</h2>");
    let rows: Vec<Vec<String>> = tokens
        .iter()
        .take(SHOWN)
        .map(|t| {
            let id = url_component(&t.id);
            let actions = if t.revoked_at.is_none() {
                format!(
                    "<form method=\"post\" action=\"/console/tokens/{id}/revoke\" class=\"inline\">{}\
                     <button type=\"submit\" name=\"certificates\" value=\"no\">Revoke</button> \
                     <button type=\"submit\" name=\"certificates\" value=\"yes\" class=\"danger\">Revoke with certificates</button></form>",
                    csrf_field(csrf)
                )
            } else if t.revoked_with_certs {
                "certificates revoked too".into()
            } else {
                "—".into()
            };
            vec![
                format!(
                    "<a class=\"mono\" href=\"/console/certificates?by=token&amp;q={id}\">{}</a>",
                    esc(&t.id)
                ),
                format!("<span class=\"mono\">{}</span>", esc(t.spiffe_id.as_str())),
                esc(&t.dns_names.join(", ")),
                esc(t.profile.as_str()),
                if t.max_uses == 0 {
                    format!("{} of unlimited", t.uses)
                } else {
                    format!("{} of {}", t.uses, t.max_uses)
                },
                when(t.created_at),
                when(t.expires_at),
                token_status(t, now).to_owned(),
                actions,
            ]
        })
        .collect();
    body.push_str(&table(
        &format!(
            "{} tokens, newest first (at most {SHOWN} shown)",
            tokens.len()
        ),
        &[
            "Id",
            "SPIFFE ID",
            "DNS",
            "Profile",
            "Uses",
            "Created",
            "Expires",
            "Status",
            "Revoke",
        ],
        &rows,
    ));
    body.push_str("</section>");
    signed.html(status, page("Tokens", Nav::Tokens, Some(csrf), &body))
}

/// The creation form as posted.
#[derive(Deserialize, Default)]
pub(crate) struct TokenForm {
    csrf: Option<String>,
    spiffe_id: Option<String>,
    dns: Option<String>,
    profile: Option<String>,
    cert_ttl: Option<String>,
    expires_in: Option<String>,
    uses: Option<String>,
    cn: Option<String>,
}

impl ChangeForm for TokenForm {
    const CHANGE: &'static str = "create_token";
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

fn nonempty(v: &Option<String>) -> Option<String> {
    v.as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// The API request the form stands for.
fn request(form: &TokenForm) -> Result<CreateTokenRequest, String> {
    let fields = [
        &form.spiffe_id,
        &form.dns,
        &form.profile,
        &form.cert_ttl,
        &form.expires_in,
        &form.uses,
        &form.cn,
    ];
    if fields
        .iter()
        .any(|f| f.as_ref().is_some_and(|v| v.len() > MAX_FIELD))
    {
        return Err(format!("a field is longer than {MAX_FIELD} bytes"));
    }
    let spiffe_id = nonempty(&form.spiffe_id).ok_or("the SPIFFE ID is required")?;
    let uses = nonempty(&form.uses)
        .map(|u| {
            u.parse::<u32>()
                .map_err(|_| format!("uses: {u:?} is not a whole number"))
        })
        .transpose()?;
    Ok(CreateTokenRequest {
        spiffe_id,
        dns: form
            .dns
            .as_deref()
            .unwrap_or("")
            .split([' ', ','])
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect(),
        cert_ttl: nonempty(&form.cert_ttl),
        expires_in: nonempty(&form.expires_in),
        uses,
        profile: nonempty(&form.profile),
        allowed_cidrs: Vec::new(),
        cn: nonempty(&form.cn),
        allow_reserved: false,
    })
}

/// `POST /console/tokens`: creates a token and shows its secret once.
pub(crate) async fn create(
    State(state): State<AppState>,
    Change { signed, form }: Change<TokenForm>,
) -> Response {
    let refused = |m: String| {
        let notice = format!(
            "<p class=\"error\" role=\"alert\">Not created: {}</p>",
            esc(&m)
        );
        (notice, m)
    };
    let spec = request(&form).and_then(token_spec);
    let created = match spec {
        Err(m) => Err(refused(m)),
        Ok(spec) => match state
            .authority
            .create_token(&spec, OffsetDateTime::now_utc())
            .await
        {
            Ok(c) => Ok(c),
            Err(AuthorityError::BadRequest(m) | AuthorityError::Forbidden(m)) => Err(refused(m)),
            Err(AuthorityError::Unavailable(e)) => return storage_failed(&signed, &e),
            Err(e) => {
                tracing::error!(error = %e, "console: creating a token failed");
                Err(refused("the token could not be created".into()))
            }
        },
    };
    let created = match created {
        Ok(c) => c,
        Err((notice, _)) => {
            return list_page(&state, &signed, StatusCode::BAD_REQUEST, &notice, &form).await;
        }
    };
    crate::http::admin_done(
        &state,
        "console_create_token",
        serde_json::json!({ "token_id": created.token.id, "spiffe_id": created.token.spiffe_id.to_string() }),
    );
    let t = &created.token;
    let mut body = String::from(
        "<p role=\"status\">Token created. Copy it now: it is shown this once and cannot be retrieved again.</p>",
    );
    let _ = write!(
        body,
        "<div class=\"secret-box\"><code id=\"new-token\" class=\"secret\">{}</code> \
         <button type=\"button\" data-copy=\"new-token\" hidden>Copy</button></div>\
         <dl><dt>Id</dt><dd class=\"mono\" id=\"new-token-id\">{}</dd><dt>SPIFFE ID</dt><dd class=\"mono\">{}</dd>\
         <dt>DNS names</dt><dd>{}</dd><dt>Profile</dt><dd>{}</dd><dt>Uses</dt><dd>{}</dd>\
         <dt>Expires</dt><dd>{}</dd></dl>\
         <p><a href=\"/console/certificates?by=token&amp;q={}\">Certificates issued from it</a> · \
         <a href=\"/console/tokens\">All tokens</a></p>",
        esc(created.secret.expose()),
        esc(&t.id),
        esc(t.spiffe_id.as_str()),
        esc(&t.dns_names.join(", ")),
        esc(t.profile.as_str()),
        if t.max_uses == 0 {
            "unlimited until expiry".to_owned()
        } else {
            t.max_uses.to_string()
        },
        when(t.expires_at),
        url_component(&t.id),
    );
    signed.html(
        StatusCode::CREATED,
        page("New token", Nav::Tokens, Some(&signed.session.csrf), &body),
    )
}

/// The revocation form of one token.
#[derive(Deserialize)]
pub(crate) struct RevokeForm {
    csrf: Option<String>,
    certificates: Option<String>,
}

impl ChangeForm for RevokeForm {
    const CHANGE: &'static str = "revoke_token";
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// `POST /console/tokens/{id}/revoke`.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Change { signed, form }: Change<RevokeForm>,
) -> Response {
    let with_certificates = form.certificates.as_deref() == Some("yes");
    match state
        .authority
        .revoke_token(&id, with_certificates, OffsetDateTime::now_utc())
        .await
    {
        Ok(n) => {
            crate::http::admin_done(
                &state,
                "console_revoke_token",
                serde_json::json!({ "token_id": id, "certificates_revoked": n }),
            );
            see_other("/console/tokens", signed.set_cookie.as_deref())
        }
        Err(AuthorityError::NotFound(m)) => bad_request(&signed, Nav::Tokens, &m),
        Err(AuthorityError::Unavailable(e)) => storage_failed(&signed, &e),
        Err(e) => {
            tracing::error!(error = %e, "console: revoking a token failed");
            bad_request(
                &signed,
                Nav::Tokens,
                "the revocation failed; nothing changed",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_form_becomes_an_api_request() {
        let form = TokenForm {
            spiffe_id: Some(" spiffe://t/a ".into()),
            dns: Some("a.t, b.t  c.t".into()),
            uses: Some("0".into()),
            ..TokenForm::default()
        };
        let r = request(&form).unwrap();
        assert_eq!(r.spiffe_id, "spiffe://t/a");
        assert_eq!(r.dns, ["a.t", "b.t", "c.t"]);
        assert_eq!(
            (r.uses, r.cert_ttl, r.allow_reserved),
            (Some(0), None, false)
        );
        assert!(request(&TokenForm::default()).is_err());
        let bad = TokenForm {
            spiffe_id: Some("spiffe://t/a".into()),
            uses: Some("-1".into()),
            ..TokenForm::default()
        };
        assert!(request(&bad).is_err());
        let long = TokenForm {
            spiffe_id: Some("x".repeat(MAX_FIELD + 1)),
            ..TokenForm::default()
        };
        assert!(request(&long).is_err());
    }
}
