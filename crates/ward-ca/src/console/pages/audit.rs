//! Audit: the requests this CA process refused lately, by reason.

use std::fmt::Write as _;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

use super::super::auth::Signed;
use super::super::html::{Nav, esc, page, table, when};
use super::super::refusals::KEEP;
use crate::http::AppState;

/// How many single refusals the page lists.
const LISTED: usize = 200;

/// `GET /console/audit`.
pub(crate) async fn audit(State(state): State<AppState>, signed: Signed) -> Response {
    let refusals = &state.console.refusals;
    let mut body = String::new();
    let _ = write!(
        body,
        "<p class=\"note\">Refusals of issuance, admin and console requests seen by this CA \
         process (the newest {KEEP}); the audit log holds every one.</p>"
    );
    let rows: Vec<Vec<String>> = refusals
        .by_reason()
        .into_iter()
        .map(|(reason, n)| {
            vec![
                format!("<span class=\"mono\">{}</span>", esc(&reason)),
                n.to_string(),
            ]
        })
        .collect();
    body.push_str(&table("Refusals by reason", &["Reason", "Count"], &rows));
    let rows: Vec<Vec<String>> = refusals
        .newest(LISTED)
        .into_iter()
        .map(|r| {
            vec![
                when(r.at),
                esc(&r.route),
                format!("<span class=\"mono\">{}</span>", esc(&r.reason)),
                esc(&r.source),
                r.token_id.as_deref().map(esc).unwrap_or_else(|| "—".into()),
            ]
        })
        .collect();
    body.push_str(&table(
        &format!("The latest refusals (at most {LISTED})"),
        &["When", "Request", "Reason", "Source", "Token"],
        &rows,
    ));
    signed.html(
        StatusCode::OK,
        page("Audit", Nav::Audit, Some(&signed.session.csrf), &body),
    )
}
