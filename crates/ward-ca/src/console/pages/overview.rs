//! The overview: issuance over the last hour and day, active certificates
//! by origin and profile, what expires next, revocations, the CRL's age, OCSP answers
//! and the storage's health.

use std::fmt::Write as _;
use std::time::Instant;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use time::{Duration, OffsetDateTime};
use ward_store::Store;

use super::super::auth::Signed;
use super::super::html::{Nav, bar_chart, esc, page, table, utc, when};
use super::{CERT_HEAD, cert_row, storage_failed};
use crate::http::AppState;

/// How many certificates each list of the overview shows.
const LIST: u32 = 10;

/// OCSP results counted by the responder's metric.
const OCSP_RESULTS: [&str; 4] = ["good", "revoked", "unknown", "mixed"];

/// Issuance counts per `step` from `start`, `n` intervals.
async fn issuance(
    store: &dyn Store,
    start: OffsetDateTime,
    step: Duration,
    n: i32,
) -> Result<Vec<u64>, ward_store::StoreError> {
    let bounds: Vec<_> = (0..=n).map(|i| start + step * i).collect();
    store.count_issued(&bounds).await
}

fn labels(start: OffsetDateTime, step: Duration, n: i32) -> Vec<String> {
    (0..n).map(|i| utc(start + step * i)).collect()
}

/// `GET /console/`.
pub(crate) async fn overview(State(state): State<AppState>, signed: Signed) -> Response {
    let started = Instant::now();
    let store = state.authority.store().as_ref();
    let now = OffsetDateTime::now_utc();
    // Whole minutes and hours, so bars do not shift between views.
    let minute = now
        .replace_second(0)
        .unwrap_or(now)
        .replace_nanosecond(0)
        .unwrap_or(now);
    let hour = minute.replace_minute(0).unwrap_or(minute);
    let hour_start = minute - Duration::minutes(59);
    let day_start = hour - Duration::hours(23);
    let ping_started = Instant::now();
    let ping = store.ping().await;
    let ping_ms = ping_started.elapsed().as_secs_f64() * 1000.0;
    let data = async {
        let overview = store.overview(now, LIST).await?;
        let per_minute = issuance(store, hour_start, Duration::minutes(1), 60).await?;
        let per_hour = issuance(store, day_start, Duration::hours(1), 24).await?;
        Ok::<_, ward_store::StoreError>((overview, per_minute, per_hour))
    }
    .await;
    let (overview, per_minute, per_hour) = match (ping, data) {
        (Ok(()), Ok(d)) => d,
        (Err(e), _) | (_, Err(e)) => return storage_failed(&signed, &e),
    };
    let db_ms = started.elapsed().as_secs_f64() * 1000.0;

    let mut body = String::new();
    body.push_str("<section aria-labelledby=\"issuance\"><h2 id=\"issuance\">Issuance</h2>");
    body.push_str(&bar_chart(
        "Certificates issued per minute, last hour",
        &labels(hour_start, Duration::minutes(1), 60),
        &per_minute,
    ));
    body.push_str(&bar_chart(
        "Certificates issued per hour, last day",
        &labels(day_start, Duration::hours(1), 24),
        &per_hour,
    ));
    body.push_str("</section>");

    let active: u64 = overview.active_by_origin.iter().map(|(_, n)| n).sum();
    let _ = write!(
        body,
        "<section aria-labelledby=\"active\"><h2 id=\"active\">Active certificates</h2>\
         <p class=\"figures\"><span><strong>{active}</strong> active</span>\
         <span><strong>{}</strong> revoked, unexpired</span>\
         <span><strong>{}</strong> usable tokens</span></p>",
        overview.revoked_unexpired, overview.usable_tokens
    );
    let rows: Vec<Vec<String>> = overview
        .active_by_origin
        .iter()
        .map(|(origin, n)| vec![esc(origin.as_str()), n.to_string()])
        .collect();
    body.push_str(&table(
        "Active certificates by origin",
        &["Origin", "Active"],
        &rows,
    ));
    let rows: Vec<Vec<String>> = overview
        .active_by_profile
        .iter()
        .map(|a| {
            vec![
                esc(a.origin.as_str()),
                a.profile
                    .as_deref()
                    .map(esc)
                    .unwrap_or_else(|| "<span class=\"note\">not recorded</span>".into()),
                a.count.to_string(),
            ]
        })
        .collect();
    body.push_str(&table(
        "Active certificates by origin and profile",
        &["Origin", "Profile", "Active"],
        &rows,
    ));
    body.push_str("</section>");

    let rows: Vec<Vec<String>> = overview.expiring.iter().map(|c| cert_row(c, now)).collect();
    body.push_str("<section aria-labelledby=\"expiring\"><h2 id=\"expiring\">Expiring next</h2>");
    body.push_str(&table(
        "The active certificates that expire first",
        CERT_HEAD,
        &rows,
    ));
    body.push_str("</section>");

    let rows: Vec<Vec<String>> = overview
        .recent_revocations
        .iter()
        .map(|c| cert_row(c, now))
        .collect();
    body.push_str(
        "<section aria-labelledby=\"revocations\"><h2 id=\"revocations\">Revocations</h2>",
    );
    body.push_str(&table("The latest revocations", CERT_HEAD, &rows));
    body.push_str("</section>");

    body.push_str("<section aria-labelledby=\"crl\"><h2 id=\"crl\">CRL and OCSP</h2>");
    match state.authority.current_crl() {
        Some(crl) => {
            let age = (now - crl.this_update).whole_seconds();
            let _ = write!(
                body,
                "<dl><dt>CRL number</dt><dd>{}</dd><dt>Signed</dt><dd>{} ({age} s ago)</dd>\
                 <dt>Next update</dt><dd>{}</dd><dt>Entries</dt><dd>{}</dd></dl>",
                crl.number,
                when(crl.this_update),
                when(crl.next_update),
                crl.entries
            );
        }
        None => body.push_str("<p>No CRL has been signed yet.</p>"),
    }
    let rows: Vec<Vec<String>> = OCSP_RESULTS
        .iter()
        .map(|r| vec![esc(r), state.metrics.ocsp.with(&[*r]).get().to_string()])
        .collect();
    body.push_str(&table(
        "OCSP answers by result, since this CA process started",
        &["Result", "Answers"],
        &rows,
    ));
    body.push_str("</section>");

    let _ = write!(
        body,
        "<section aria-labelledby=\"storage\"><h2 id=\"storage\">Storage</h2>\
         <dl><dt>Backend</dt><dd>{:?}</dd><dt>Health</dt><dd>reachable, ping {ping_ms:.1} ms</dd>\
         <dt>This page's queries</dt><dd>{db_ms:.1} ms</dd></dl></section>\
         <p class=\"note\">You are signed in with the {}.</p>",
        store.backend(),
        signed.session.via.as_str()
    );
    let mut response = signed.html(
        StatusCode::OK,
        page("Overview", Nav::Overview, Some(&signed.session.csrf), &body),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("db;dur={db_ms:.2}")) {
        response.headers_mut().insert("server-timing", v);
    }
    response
}
