//! The console's pages. Each handler: session → (for a change: origin and
//! CSRF) → the authority or the store → HTML.

pub(crate) mod acme;
pub(crate) mod audit;
pub(crate) mod certificates;
pub(crate) mod overview;
pub(crate) mod tokens;

use axum::http::StatusCode;
use axum::response::Response;
use time::OffsetDateTime;
use ward_pki::crl::reason_name;
use ward_store::Certificate;

use super::auth::Signed;
use super::html::{Nav, esc, page, url_component, when};

/// Columns of [`cert_row`].
pub(crate) const CERT_HEAD: &[&str] = &[
    "Serial",
    "SPIFFE ID",
    "Origin",
    "Issued",
    "Expires",
    "Status",
];

/// A certificate's status at `now`: revoked (with the reason), expired or valid.
pub(crate) fn status(c: &Certificate, now: OffsetDateTime) -> String {
    match c.revoked_at {
        Some(at) => format!(
            "<span class=\"tag revoked\">revoked</span> {} {}",
            c.revocation_reason
                .and_then(reason_name)
                .map(esc)
                .unwrap_or_else(|| "unspecified".into()),
            when(at)
        ),
        None if c.not_after <= now => "<span class=\"tag expired\">expired</span>".into(),
        None => "<span class=\"tag valid\">valid</span>".into(),
    }
}

/// One row of a certificate table.
pub(crate) fn cert_row(c: &Certificate, now: OffsetDateTime) -> Vec<String> {
    let serial = c.serial.to_string();
    vec![
        format!(
            "<a class=\"mono\" href=\"/console/certificates/{}\">{}</a>",
            url_component(&serial),
            esc(&serial)
        ),
        c.spiffe_id
            .as_ref()
            .map(|id| format!("<span class=\"mono\">{}</span>", esc(id.as_str())))
            .unwrap_or_else(|| "—".into()),
        esc(c.origin.as_str()),
        when(c.issued_at),
        when(c.not_after),
        status(c, now),
    ]
}

/// The page shown when storage failed (details go to the log).
pub(crate) fn storage_failed(signed: &Signed, e: &ward_store::StoreError) -> Response {
    tracing::error!(error = %e, "console: storage failed");
    signed.html(
        StatusCode::SERVICE_UNAVAILABLE,
        page(
            "Storage unavailable",
            Nav::None,
            Some(&signed.session.csrf),
            "<p class=\"error\" role=\"alert\">The CA's storage did not answer; try again.</p>",
        ),
    )
}

/// A page answering a bad request made from a signed-in page.
pub(crate) fn bad_request(signed: &Signed, nav: Nav, message: &str) -> Response {
    signed.html(
        StatusCode::BAD_REQUEST,
        page(
            "Not accepted",
            nav,
            Some(&signed.session.csrf),
            &format!("<p class=\"error\" role=\"alert\">{}</p>", esc(message)),
        ),
    )
}
