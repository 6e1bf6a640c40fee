//! Certificates: search (SPIFFE ID prefix, serial, token, DNS name or
//! suffix), one
//! certificate decoded with its chain, and revocation with a reason after
//! a confirmation.

use std::fmt::Write as _;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use time::OffsetDateTime;
use ward_pki::Serial;
use ward_pki::crl::{REASONS, parse_reason, reason_name};
use ward_pki::inspect::CertInfo;
use ward_pki::pem::cert_to_pem;
use ward_store::CertificateSearch;

use super::super::auth::{Change, ChangeForm, Signed, see_other};
use super::super::html::{Nav, csrf_field, esc, page, table, url_component, when};
use super::{CERT_HEAD, bad_request, cert_row, status, storage_failed};
use crate::authority::AuthorityError;
use crate::http::AppState;

/// Most certificates one search shows.
const PAGE: u32 = 100;

/// Longest search text accepted.
const MAX_QUERY: usize = 2048;

/// Reasons offered when revoking (RFC 5280; the CA-level ones and
/// certificateHold/removeFromCRL make no sense for one workload certificate).
const OFFERED: [&str; 5] = [
    "unspecified",
    "keyCompromise",
    "superseded",
    "cessationOfOperation",
    "privilegeWithdrawn",
];

/// The search form.
#[derive(Deserialize)]
pub(crate) struct SearchQuery {
    q: Option<String>,
    by: Option<String>,
}

/// What a search text means: `by` picks, or `auto` guesses from its shape.
pub(crate) fn parse_search(q: &str, by: &str) -> Result<CertificateSearch, String> {
    let q = q.trim();
    if q.is_empty() {
        return Ok(CertificateSearch::Recent);
    }
    if q.len() > MAX_QUERY {
        return Err(format!("the search text is longer than {MAX_QUERY} bytes"));
    }
    let by = match by {
        "auto" | "" if q.starts_with("spiffe://") => "spiffe",
        "auto" | "" if q.starts_with("tok_") => "token",
        "auto" | "" if q.starts_with('.') || q.starts_with("*.") => "dns-suffix",
        "auto" | "" if q.contains('.') => "dns",
        "auto" | "" => "serial",
        other => other,
    };
    match by {
        "spiffe" => Ok(CertificateSearch::SpiffePrefix(q.to_owned())),
        "token" => Ok(CertificateSearch::Token(q.to_owned())),
        "dns" => dns_search(q, false),
        "dns-suffix" => dns_search(q, true),
        "serial" => q
            .parse::<Serial>()
            .map(CertificateSearch::Serial)
            .map_err(|e| format!("not a serial: {e}")),
        other => Err(format!("unknown search kind {other:?}")),
    }
}

/// A DNS name (`www.example.test`, `*.example.test`) or, with `suffix`, the
/// names under one (`example.test`, `.example.test`, `*.example.test`):
/// non-empty labels of letters, digits, `-` and `_`, at most 253 bytes, and
/// `*` only as a whole first label.
fn dns_search(q: &str, suffix: bool) -> Result<CertificateSearch, String> {
    let q = q.strip_suffix('.').unwrap_or(q);
    let (wildcard, rest) = match (q.strip_prefix("*."), q.strip_prefix('.')) {
        (Some(rest), _) => (true, rest),
        (None, Some(rest)) if suffix => (true, rest),
        _ => (false, q),
    };
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    };
    if rest.is_empty() || rest.len() > 253 || !rest.split('.').all(label_ok) {
        return Err(
            "not a DNS name: labels of letters, digits, '-' and '_' joined by dots, \
             '*.' or (for a suffix) '.' in front, at most 253 bytes"
                .into(),
        );
    }
    Ok(match (suffix, wildcard) {
        (true, _) => CertificateSearch::DnsSuffix(format!(".{rest}")),
        (false, true) => CertificateSearch::DnsName(format!("*.{rest}")),
        (false, false) => CertificateSearch::DnsName(rest.to_owned()),
    })
}

/// `GET /console/certificates`.
pub(crate) async fn list(
    State(state): State<AppState>,
    signed: Signed,
    Query(query): Query<SearchQuery>,
) -> Response {
    let q = query.q.unwrap_or_default();
    let by = query.by.unwrap_or_else(|| "auto".into());
    let search = match parse_search(&q, &by) {
        Ok(s) => s,
        Err(m) => return bad_request(&signed, Nav::Certificates, &m),
    };
    let started = std::time::Instant::now();
    let found = match state
        .authority
        .store()
        .search_certificates(&search, PAGE)
        .await
    {
        Ok(f) => f,
        Err(e) => return storage_failed(&signed, &e),
    };
    let ms = started.elapsed().as_secs_f64() * 1000.0;
    let now = OffsetDateTime::now_utc();
    let mut body = String::from(
        "<form method=\"get\" action=\"/console/certificates\" class=\"search\" role=\"search\">\
         <label for=\"q\">Search</label>",
    );
    let _ = write!(
        body,
        "<input id=\"q\" name=\"q\" type=\"search\" value=\"{}\" \
         placeholder=\"spiffe://… prefix, serial, tok_…, name.example or .example suffix\" maxlength=\"{MAX_QUERY}\">\
         <label for=\"by\">by</label><select id=\"by\" name=\"by\">",
        esc(&q)
    );
    for (value, label) in [
        ("auto", "guess from the text"),
        ("spiffe", "SPIFFE ID prefix"),
        ("serial", "serial"),
        ("token", "token id"),
        ("dns", "DNS name"),
        ("dns-suffix", "DNS suffix"),
    ] {
        let selected = if value == by { " selected" } else { "" };
        let _ = write!(body, "<option value=\"{value}\"{selected}>{label}</option>");
    }
    body.push_str("</select><button type=\"submit\">Search</button></form>");
    let caption = match &search {
        CertificateSearch::Recent => "The newest certificates".to_owned(),
        CertificateSearch::SpiffePrefix(p) => format!("SPIFFE IDs starting with {p}"),
        CertificateSearch::Serial(s) => format!("Serial {s}"),
        CertificateSearch::Token(t) => format!("Issued from token {t}"),
        CertificateSearch::DnsName(n) => format!("DNS name {n}"),
        CertificateSearch::DnsSuffix(s) => format!("DNS names ending in {s}"),
    };
    let rows: Vec<_> = found.iter().map(|c| cert_row(c, now)).collect();
    body.push_str(&table(&caption, CERT_HEAD, &rows));
    if matches!(
        search,
        CertificateSearch::DnsName(_) | CertificateSearch::DnsSuffix(_)
    ) && !state
        .authority
        .store()
        .dns_index_complete()
        .await
        .unwrap_or(true)
    {
        body.push_str(
            "<p class=\"note\" role=\"status\">Certificates recorded before this CA version \
             are still being indexed by DNS name: some may be missing for a while.</p>",
        );
    }
    let _ = write!(
        body,
        "<p class=\"note\">{} shown (at most {PAGE}); searched in {ms:.1} ms.</p>",
        found.len()
    );
    signed.html(
        StatusCode::OK,
        page(
            "Certificates",
            Nav::Certificates,
            Some(&signed.session.csrf),
            &body,
        ),
    )
}

/// Reads a serial from the path.
fn serial_of(text: &str) -> Result<Serial, String> {
    text.parse::<Serial>()
        .map_err(|e| format!("not a serial: {e}"))
}

/// `GET /console/certificates/{serial}`.
pub(crate) async fn detail(
    State(state): State<AppState>,
    signed: Signed,
    Path(serial): Path<String>,
) -> Response {
    let serial = match serial_of(&serial) {
        Ok(s) => s,
        Err(m) => return bad_request(&signed, Nav::Certificates, &m),
    };
    let cert = match state.authority.store().certificate(&serial).await {
        Ok(Some(c)) => c,
        Ok(None) => {
            return signed.html(
                StatusCode::NOT_FOUND,
                page(
                    "Not found",
                    Nav::Certificates,
                    Some(&signed.session.csrf),
                    "<p>No certificate has this serial.</p>",
                ),
            );
        }
        Err(e) => return storage_failed(&signed, &e),
    };
    let now = OffsetDateTime::now_utc();
    let mut body = format!(
        "<p class=\"status\" id=\"status\">Status: {}</p>",
        status(&cert, now)
    );
    body.push_str("<section aria-labelledby=\"decoded\"><h2 id=\"decoded\">Decoded</h2><dl>");
    let mut field = |name: &str, value: String| {
        let _ = write!(body, "<dt>{}</dt><dd>{value}</dd>", esc(name));
    };
    field(
        "Serial",
        format!(
            "<span class=\"mono\">{}</span>",
            esc(&cert.serial.to_string())
        ),
    );
    field(
        "SPIFFE ID",
        cert.spiffe_id
            .as_ref()
            .map(|id| format!("<span class=\"mono\">{}</span>", esc(id.as_str())))
            .unwrap_or_else(|| "—".into()),
    );
    field("Origin", esc(cert.origin.as_str()));
    field(
        "Token",
        cert.token_id
            .as_ref()
            .map(|t| {
                format!(
                    "<a class=\"mono\" href=\"/console/certificates?by=token&amp;q={}\">{}</a>",
                    url_component(t),
                    esc(t)
                )
            })
            .unwrap_or_else(|| "—".into()),
    );
    field("Issued", when(cert.issued_at));
    field("Not before", when(cert.not_before));
    field("Not after", when(cert.not_after));
    if let Some(from) = &cert.renewed_from {
        let from = from.to_string();
        field(
            "Renews",
            format!(
                "<a class=\"mono\" href=\"/console/certificates/{}\">{}</a>",
                url_component(&from),
                esc(&from)
            ),
        );
    }
    match CertInfo::from_der(&cert.der, now) {
        Ok(info) => {
            field("Subject", esc(&info.subject));
            field("Issuer", esc(&info.issuer));
            field("Public key", esc(&format!("{:?}", info.key)));
            field("Signature", esc(&info.signature_algorithm));
            field("Key usage", esc(&info.key_usage.join(", ")));
            field(
                "Extended key usage",
                esc(&info.extended_key_usage.join(", ")),
            );
            field(
                "CA",
                if info.is_ca {
                    "yes".into()
                } else {
                    "no".into()
                },
            );
            field("URI SANs", esc(&info.sans.uri.join(", ")));
            field("DNS SANs", esc(&info.sans.dns.join(", ")));
            field("IP SANs", esc(&info.sans.ip.join(", ")));
        }
        Err(e) => field("Decoding", esc(&format!("failed: {e}"))),
    }
    field(
        "SHA-256",
        format!(
            "<span class=\"mono wrap\">{}</span>",
            esc(&cert.fingerprint)
        ),
    );
    body.push_str("</dl></section>");

    body.push_str("<section aria-labelledby=\"chain\"><h2 id=\"chain\">Chain</h2>");
    let intermediate = cert_to_pem(&state.authority.intermediate_der());
    for (label, pem) in [
        ("Certificate", cert_to_pem(&cert.der)),
        ("Intermediate", intermediate),
        ("Roots", (*state.authority.roots_pem()).clone()),
    ] {
        let _ = write!(
            body,
            "<h3>{label}</h3><pre class=\"pem\" tabindex=\"0\">{}</pre>",
            esc(&pem)
        );
    }
    body.push_str("</section>");

    if cert.revoked_at.is_none() {
        let _ = write!(
            body,
            "<section aria-labelledby=\"revoke\"><h2 id=\"revoke\">Revoke</h2>\
             <form method=\"post\" action=\"/console/certificates/{}/revoke\">{}\
             <label for=\"reason\">Reason</label><select id=\"reason\" name=\"reason\">",
            url_component(&cert.serial.to_string()),
            csrf_field(&signed.session.csrf)
        );
        for r in OFFERED {
            let _ = write!(body, "<option value=\"{r}\">{r}</option>");
        }
        body.push_str(
            "</select><button type=\"submit\" class=\"danger\" id=\"revoke-start\">Revoke…</button>\
             <p class=\"note\">You confirm on the next page.</p></form></section>",
        );
    }
    signed.html(
        StatusCode::OK,
        page(
            "Certificate",
            Nav::Certificates,
            Some(&signed.session.csrf),
            &body,
        ),
    )
}

/// The revocation form.
#[derive(Deserialize)]
pub(crate) struct RevokeForm {
    csrf: Option<String>,
    reason: Option<String>,
    confirm: Option<String>,
}

impl ChangeForm for RevokeForm {
    const CHANGE: &'static str = "revoke_certificate";
    fn csrf(&self) -> Option<&str> {
        self.csrf.as_deref()
    }
}

/// `POST /console/certificates/{serial}/revoke`: asks for confirmation,
/// then revokes.
pub(crate) async fn revoke(
    State(state): State<AppState>,
    Path(serial): Path<String>,
    Change { signed, form }: Change<RevokeForm>,
) -> Response {
    let serial = match serial_of(&serial) {
        Ok(s) => s,
        Err(m) => return bad_request(&signed, Nav::Certificates, &m),
    };
    let reason_text = form.reason.unwrap_or_else(|| "unspecified".into());
    let reason = match parse_reason(&reason_text) {
        Ok(code) if OFFERED.iter().any(|o| reason_name(code) == Some(*o)) => code,
        _ => {
            let offered = OFFERED.join(", ");
            return bad_request(
                &signed,
                Nav::Certificates,
                &format!("unknown revocation reason; choose one of {offered}"),
            );
        }
    };
    debug_assert!(REASONS.iter().any(|(_, c)| *c == reason));
    let path = format!(
        "/console/certificates/{}",
        url_component(&serial.to_string())
    );
    if form.confirm.as_deref() != Some("yes") {
        let body = format!(
            "<p>Revoke certificate <span class=\"mono\">{}</span> with reason <strong>{}</strong>? \
             Relying parties that check the CRL or OCSP will refuse it; this cannot be undone.</p>\
             <form method=\"post\" action=\"{path}/revoke\">{}\
             <input type=\"hidden\" name=\"reason\" value=\"{}\">\
             <input type=\"hidden\" name=\"confirm\" value=\"yes\">\
             <button type=\"submit\" class=\"danger\" id=\"revoke-confirm\" autofocus>Revoke now</button> \
             <a href=\"{path}\">Cancel</a></form>",
            esc(&serial.to_string()),
            esc(&reason_text),
            csrf_field(&signed.session.csrf),
            esc(&reason_text)
        );
        return signed.html(
            StatusCode::OK,
            page(
                "Confirm revocation",
                Nav::Certificates,
                Some(&signed.session.csrf),
                &body,
            ),
        );
    }
    let code = (reason != 0).then_some(reason);
    match state
        .authority
        .revoke_certificate(&serial, code, OffsetDateTime::now_utc())
        .await
    {
        Ok(revoked) => {
            crate::http::admin_done(
                &state,
                "console_revoke_certificate",
                serde_json::json!({ "serial": revoked.serial.to_string(), "reason": reason_text, "newly_revoked": revoked.newly_revoked }),
            );
            see_other(&path, signed.set_cookie.as_deref())
        }
        Err(AuthorityError::NotFound(m)) => bad_request(&signed, Nav::Certificates, &m),
        Err(e) => {
            tracing::error!(error = %e, "console: revoking a certificate failed");
            bad_request(
                &signed,
                Nav::Certificates,
                "the revocation failed; nothing changed. Try again.",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn searches_are_guessed_from_their_shape() {
        assert_eq!(parse_search(" ", "auto"), Ok(CertificateSearch::Recent));
        assert_eq!(
            parse_search("spiffe://t/a", "auto"),
            Ok(CertificateSearch::SpiffePrefix("spiffe://t/a".into()))
        );
        assert_eq!(
            parse_search("tok_0a", "auto"),
            Ok(CertificateSearch::Token("tok_0a".into()))
        );
        assert_eq!(
            parse_search("0A:1b", "auto"),
            Ok(CertificateSearch::Serial("0a1b".parse().unwrap()))
        );
        assert!(parse_search("zz", "serial").is_err());
        assert_eq!(
            parse_search("www.Example.test", "auto"),
            Ok(CertificateSearch::DnsName("www.Example.test".into()))
        );
        for suffix in [".example.test", "*.example.test"] {
            assert_eq!(
                parse_search(suffix, "auto"),
                Ok(CertificateSearch::DnsSuffix(".example.test".into())),
                "{suffix}"
            );
        }
        assert_eq!(
            parse_search("example.test", "dns-suffix"),
            Ok(CertificateSearch::DnsSuffix(".example.test".into()))
        );
        assert_eq!(
            parse_search("*.example.test", "dns"),
            Ok(CertificateSearch::DnsName("*.example.test".into()))
        );
        for bad in [
            "a b.test",
            "<x>.test",
            ".",
            "*.",
            "é.test",
            "a..test",
            ".example.test",
            "a.*.test",
            "%.test",
        ] {
            assert!(parse_search(bad, "dns").is_err(), "{bad}");
        }
        assert!(parse_search(&format!("{}.test", "a".repeat(250)), "dns").is_err());
        assert!(parse_search("x", "nothing").is_err());
        assert!(parse_search(&"a".repeat(MAX_QUERY + 1), "spiffe").is_err());
    }
}
