//! The revocation step of `ward check`: fetch the leaf's CRL (distribution
//! point) or ask its OCSP responder, and judge the answer with
//! `ward_pki::lint::revocation`. Unreachable or absent sources are a notice,
//! never a failure: the check reports what it could not learn.

use std::time::Duration;

use time::OffsetDateTime;
use ward_pki::lint::revocation::{Answer, Status, crl_status, ocsp_request, ocsp_status};
use ward_pki::lint::rules::check as rules;
use ward_pki::lint::{Facts, Finding};

use crate::fetch;
use crate::report::RevocationReport;

/// Checks the leaf at `now`; `issuer` authenticates the answer.
pub(crate) async fn check(
    leaf: &[u8],
    facts: &Facts,
    issuer: Option<&[u8]>,
    timeout: Duration,
    now: OffsetDateTime,
) -> (RevocationReport, Vec<Finding>) {
    let mut findings = Vec::new();
    if facts.crl_urls.is_empty() && facts.ocsp_urls.is_empty() {
        let msg = "the leaf names no CRL distribution point and no OCSP responder".to_owned();
        findings.push(rules::REVOCATION_UNCHECKED.finding(msg.clone()));
        return (RevocationReport::unchecked(msg), findings);
    }
    let Some(issuer) = issuer else {
        let msg = "the issuer's certificate is neither presented nor among --roots, so no answer can be authenticated".to_owned();
        findings.push(rules::REVOCATION_UNCHECKED.finding(msg.clone()));
        return (RevocationReport::unchecked(msg), findings);
    };
    let mut failures = Vec::new();
    let sources = facts
        .crl_urls
        .iter()
        .map(|u| ("crl", u))
        .chain(facts.ocsp_urls.iter().map(|u| ("ocsp", u)));
    for (kind, url) in sources {
        let answer = match kind {
            "crl" => match fetch::get(url, timeout).await {
                Ok(der) => crl_status(&der, leaf, issuer, now).map_err(|e| (true, e)),
                Err(e) => Err((false, format!("{e:#}"))),
            },
            _ => match ocsp_request(leaf, issuer) {
                Err(e) => Err((false, e)),
                Ok(req) => {
                    match fetch::post(url, "application/ocsp-request", &req, timeout).await {
                        Ok(der) => ocsp_status(&der, leaf, issuer, now).map_err(|e| (true, e)),
                        Err(e) => Err((false, format!("{e:#}"))),
                    }
                }
            },
        };
        match answer {
            Ok(answer) => return (judge(kind, url, answer, &mut findings), findings),
            Err((bad_answer, why)) => {
                if bad_answer {
                    findings.push(rules::REVOCATION_BAD_SOURCE.finding(format!("{url}: {why}")));
                }
                failures.push(format!("{url}: {why}"));
            }
        }
    }
    let msg = format!("no source gave a usable answer ({})", failures.join("; "));
    findings.push(rules::REVOCATION_UNCHECKED.finding(msg.clone()));
    (RevocationReport::unchecked(msg), findings)
}

fn judge(
    kind: &'static str,
    url: &str,
    answer: Answer,
    findings: &mut Vec<Finding>,
) -> RevocationReport {
    if answer.stale {
        findings.push(rules::REVOCATION_BAD_SOURCE.finding(format!(
            "{url}: the answer is past its nextUpdate ({})",
            answer.next_update.as_deref().unwrap_or("?")
        )));
    }
    let (status, message) = match &answer.status {
        Status::Good => ("good", format!("not revoked, per {url}")),
        Status::Revoked { at } => {
            let msg = format!("revoked at {at}, per {url}");
            findings.push(rules::REVOKED.finding(msg.clone()));
            ("revoked", msg)
        }
        Status::Unknown => {
            let msg = format!("the OCSP responder at {url} does not know the certificate");
            findings.push(rules::REVOCATION_UNCHECKED.finding(msg.clone()));
            ("unknown", msg)
        }
    };
    RevocationReport {
        status,
        source: Some(kind),
        url: Some(url.to_owned()),
        message,
    }
}
