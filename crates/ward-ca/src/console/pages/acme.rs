//! ACME: accounts (status, contacts, creation, how many orders) and orders
//! (status, identifiers, expiry, the certificate), read from the ACME
//! server's tables; an account can be deactivated after a confirmation.

use std::fmt::Write as _;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use time::OffsetDateTime;
use ward_store::{AccountDeactivation, AcmeAccount, AcmeOrder};

use super::super::auth::{Change, ChangeForm, Signed, see_other};
use super::super::html::{Nav, csrf_field, esc, page, table, url_component, when};
use super::{bad_request, storage_failed};
use crate::acme::model::{OrderDoc, order_status};
use crate::http::AppState;

/// Most accounts and orders one page lists.
const LIST: u32 = 100;

/// Longest account id accepted in a path (ids are short random text).
const MAX_ID: usize = 128;

/// An account's contacts as text (`mailto:` URLs), from their stored JSON.
fn contacts(account: &AcmeAccount) -> String {
    match serde_json::from_str::<Vec<String>>(&account.contact) {
        Ok(list) if list.is_empty() => "—".into(),
        Ok(list) => esc(&list.join(", ")),
        Err(_) => "<span class=\"note\">unreadable</span>".into(),
    }
}

/// A status as a tag.
fn tag(status: &str) -> String {
    let class = match status {
        "valid" => "valid",
        "deactivated" | "revoked" | "invalid" => "revoked",
        _ => "expired",
    };
    format!("<span class=\"tag {class}\">{}</span>", esc(status))
}

/// A link to an account's page.
fn account_link(id: &str) -> String {
    format!(
        "<a class=\"mono\" href=\"/console/acme/accounts/{}\">{}</a>",
        url_component(id),
        esc(id)
    )
}

/// One row of the orders table.
fn order_row(order: &AcmeOrder, now: OffsetDateTime) -> Vec<String> {
    let (status, identifiers) = match serde_json::from_str::<OrderDoc>(&order.doc) {
        Ok(doc) => (
            order_status(order, &doc, now).to_owned(),
            doc.identifiers
                .iter()
                .map(|i| format!("{}:{}", i.kind, i.value))
                .collect::<Vec<_>>()
                .join(", "),
        ),
        Err(_) => (order.status.clone(), "unreadable".into()),
    };
    let certificate = match &order.cert_serial {
        Some(serial) => format!(
            "<a class=\"mono\" href=\"/console/certificates/{}\">{}</a>",
            url_component(serial),
            esc(serial)
        ),
        None => "—".into(),
    };
    vec![
        format!("<span class=\"mono\">{}</span>", esc(&order.id)),
        account_link(&order.account_id),
        tag(&status),
        format!("<span class=\"mono\">{}</span>", esc(&identifiers)),
        when(order.created_at),
        when(order.expires_at),
        certificate,
    ]
}

/// Columns of [`order_row`].
const ORDER_HEAD: &[&str] = &[
    "Order",
    "Account",
    "Status",
    "Identifiers",
    "Created",
    "Expires",
    "Certificate",
];

/// `GET /console/acme`: the accounts and the latest orders.
pub(crate) async fn overview(State(state): State<AppState>, signed: Signed) -> Response {
    let store = state.authority.store();
    let (accounts, orders) = match (
        store.acme_accounts(LIST).await,
        store.acme_orders(None, LIST).await,
    ) {
        (Ok(a), Ok(o)) => (a, o),
        (Err(e), _) | (_, Err(e)) => return storage_failed(&signed, &e),
    };
    let now = OffsetDateTime::now_utc();
    let mut body =
        String::from("<section aria-labelledby=\"accounts\"><h2 id=\"accounts\">Accounts</h2>");
    let rows: Vec<Vec<String>> = accounts
        .iter()
        .map(|(a, orders)| {
            vec![
                account_link(&a.id),
                esc(&a.provisioner),
                tag(&a.status),
                contacts(a),
                when(a.created_at),
                orders.to_string(),
            ]
        })
        .collect();
    body.push_str(&table(
        &format!("ACME accounts, newest first (at most {LIST})"),
        &[
            "Account",
            "Provisioner",
            "Status",
            "Contact",
            "Created",
            "Orders",
        ],
        &rows,
    ));
    body.push_str("</section><section aria-labelledby=\"orders\"><h2 id=\"orders\">Orders</h2>");
    let rows: Vec<Vec<String>> = orders.iter().map(|o| order_row(o, now)).collect();
    body.push_str(&table(
        &format!("ACME orders, newest first (at most {LIST})"),
        ORDER_HEAD,
        &rows,
    ));
    body.push_str("</section>");
    signed.html(
        StatusCode::OK,
        page("ACME", Nav::Acme, Some(&signed.session.csrf), &body),
    )
}

/// Checks an account id from a path.
fn account_id(id: &str) -> Result<&str, String> {
    if id.is_empty()
        || id.len() > MAX_ID
        || !id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return Err("not an ACME account id".into());
    }
    Ok(id)
}

/// `GET /console/acme/accounts/{id}`: one account and its orders.
pub(crate) async fn account(
    State(state): State<AppState>,
    signed: Signed,
    Path(id): Path<String>,
) -> Response {
    let id = match account_id(&id) {
        Ok(id) => id,
        Err(m) => return bad_request(&signed, Nav::Acme, &m),
    };
    let store = state.authority.store();
    let account = match store.acme().account(id).await {
        Ok(Some(a)) => a,
        Ok(None) => {
            return signed.html(
                StatusCode::NOT_FOUND,
                page(
                    "Not found",
                    Nav::Acme,
                    Some(&signed.session.csrf),
                    "<p>No ACME account has this id.</p>",
                ),
            );
        }
        Err(e) => return storage_failed(&signed, &e),
    };
    let orders = match store.acme_orders(Some(id), LIST).await {
        Ok(o) => o,
        Err(e) => return storage_failed(&signed, &e),
    };
    let now = OffsetDateTime::now_utc();
    let mut body = format!(
        "<p class=\"status\" id=\"status\">Status: {}</p><dl>\
         <dt>Account</dt><dd class=\"mono\">{}</dd><dt>Provisioner</dt><dd>{}</dd>\
         <dt>Contact</dt><dd>{}</dd><dt>Created</dt><dd>{}</dd>\
         <dt>Key thumbprint</dt><dd class=\"mono wrap\">{}</dd>\
         <dt>External account binding</dt><dd>{}</dd></dl>",
        tag(&account.status),
        esc(&account.id),
        esc(&account.provisioner),
        contacts(&account),
        when(account.created_at),
        esc(&account.thumbprint),
        account
            .eab_key_id
            .as_deref()
            .map(esc)
            .unwrap_or_else(|| "—".into()),
    );
    let rows: Vec<Vec<String>> = orders.iter().map(|o| order_row(o, now)).collect();
    body.push_str(&table(
        &format!("This account's orders, newest first (at most {LIST})"),
        ORDER_HEAD,
        &rows,
    ));
    if account.status == "valid" {
        let _ = write!(
            body,
            "<section aria-labelledby=\"deactivate\"><h2 id=\"deactivate\">Deactivate</h2>\
             <form method=\"post\" action=\"/console/acme/accounts/{}/deactivate\">{}\
             <button type=\"submit\" class=\"danger\" id=\"deactivate-start\">Deactivate…</button>\
             <p class=\"note\">The account can then place no order and finalize nothing; \
             its certificates stay valid. You confirm on the next page.</p></form></section>",
            url_component(&account.id),
            csrf_field(&signed.session.csrf)
        );
    }
    signed.html(
        StatusCode::OK,
        page("ACME account", Nav::Acme, Some(&signed.session.csrf), &body),
    )
}

/// The deactivation form.
#[derive(Deserialize)]
pub(crate) struct DeactivateForm {
    csrf: Option<String>,
    confirm: Option<String>,
}

impl ChangeForm for DeactivateForm {
    const CHANGE: &'static str = "deactivate_acme_account";
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// `POST /console/acme/accounts/{id}/deactivate`: asks for confirmation,
/// then deactivates (RFC 8555 §7.3.6: final).
pub(crate) async fn deactivate(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Change { signed, form }: Change<DeactivateForm>,
) -> Response {
    let id = match account_id(&id) {
        Ok(id) => id.to_owned(),
        Err(m) => return bad_request(&signed, Nav::Acme, &m),
    };
    let path = format!("/console/acme/accounts/{}", url_component(&id));
    if form.confirm.as_deref() != Some("yes") {
        let body = format!(
            "<p>Deactivate ACME account <span class=\"mono\">{}</span>? Its key can then \
             place no order and finalize nothing; this cannot be undone.</p>\
             <form method=\"post\" action=\"{path}/deactivate\">{}\
             <input type=\"hidden\" name=\"confirm\" value=\"yes\">\
             <button type=\"submit\" class=\"danger\" id=\"deactivate-confirm\" autofocus>\
             Deactivate now</button> <a href=\"{path}\">Cancel</a></form>",
            esc(&id),
            csrf_field(&signed.session.csrf),
        );
        return signed.html(
            StatusCode::OK,
            page(
                "Confirm deactivation",
                Nav::Acme,
                Some(&signed.session.csrf),
                &body,
            ),
        );
    }
    match state.authority.store().deactivate_acme_account(&id).await {
        Ok(AccountDeactivation::Deactivated) => {
            crate::http::admin_done(
                &state,
                "console_deactivate_acme_account",
                serde_json::json!({ "account": id }),
            );
            see_other(&path, signed.set_cookie.as_deref())
        }
        Ok(AccountDeactivation::NotFound) => {
            bad_request(&signed, Nav::Acme, "no ACME account has this id")
        }
        Ok(AccountDeactivation::NotValid(status)) => bad_request(
            &signed,
            Nav::Acme,
            &format!("the account is {status}, not valid: nothing changed"),
        ),
        Err(e) => storage_failed(&signed, &e),
    }
}
