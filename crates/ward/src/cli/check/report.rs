//! The `ward check` report: one JSON document (shape fixed by
//! `docs/check-output.schema.json`) or the same facts as text.

use serde::Serialize;
use ward_pki::lint::{Facts, Finding, Role, Severity};

use super::revocation::RevocationReport;
use crate::cli::lint::Summary;

/// Everything `ward check` found out.
#[derive(Debug, Serialize)]
pub(super) struct CheckReport {
    pub(super) target: String,
    pub(super) sni: String,
    pub(super) checked_at: String,
    pub(super) passed: bool,
    pub(super) fail_on: Severity,
    pub(super) summary: Summary,
    pub(super) tls: TlsReport,
    pub(super) chain: ChainReport,
    pub(super) identity: IdentityReport,
    pub(super) revocation: RevocationReport,
    pub(super) certificates: Vec<CertSummary>,
    pub(super) findings: Vec<CheckFinding>,
}

/// The negotiated parameters and the legacy probes.
#[derive(Debug, Serialize)]
pub(super) struct TlsReport {
    pub(super) version: Option<String>,
    pub(super) cipher: Option<String>,
    pub(super) group: Option<String>,
    pub(super) handshake_error: Option<String>,
    pub(super) legacy: Vec<LegacyReport>,
}

/// One legacy probe.
#[derive(Debug, Serialize)]
pub(super) struct LegacyReport {
    pub(super) probe: &'static str,
    /// `accepted`, `refused` or `inconclusive`.
    pub(super) result: &'static str,
    pub(super) version: Option<String>,
    pub(super) cipher: Option<String>,
    pub(super) detail: Option<String>,
}

/// Path building to the roots.
#[derive(Debug, Serialize)]
pub(super) struct ChainReport {
    pub(super) presented: usize,
    /// Whether a path was built (false without --roots).
    pub(super) checked: bool,
    pub(super) valid: Option<bool>,
    pub(super) code: Option<&'static str>,
    pub(super) message: String,
    pub(super) missing_issuer: Option<MissingIssuer>,
}

/// The issuer a client would need and did not get.
#[derive(Debug, Serialize)]
pub(super) struct MissingIssuer {
    pub(super) issuer: String,
    pub(super) authority_key_id: Option<String>,
}

/// Name and SPIFFE ID matching.
#[derive(Debug, Serialize)]
pub(super) struct IdentityReport {
    pub(super) name: String,
    pub(super) name_valid: bool,
    pub(super) spiffe_id: Option<String>,
    pub(super) spiffe_id_expected: Option<String>,
    pub(super) spiffe_id_valid: Option<bool>,
}

/// A presented certificate, briefly.
#[derive(Debug, Serialize)]
pub(super) struct CertSummary {
    pub(super) index: usize,
    pub(super) role: Role,
    pub(super) subject: String,
    pub(super) issuer: String,
    pub(super) serial: String,
    pub(super) not_before: String,
    pub(super) not_after: String,
    pub(super) spiffe_id: Option<String>,
    pub(super) key: String,
    pub(super) signature_algorithm: String,
    pub(super) sha256_fingerprint: String,
}

impl CertSummary {
    pub(super) fn new(index: usize, role: Role, f: &Facts) -> Self {
        CertSummary {
            index,
            role,
            subject: f.subject.clone(),
            issuer: f.issuer.clone(),
            serial: f.serial.clone(),
            not_before: f.not_before.clone(),
            not_after: f.not_after.clone(),
            spiffe_id: f.spiffe_id.clone(),
            key: f.key.to_string(),
            signature_algorithm: f.signature_algorithm.clone(),
            sha256_fingerprint: f.sha256_fingerprint.clone(),
        }
    }
}

/// A finding, with the certificate it concerns when it concerns one.
#[derive(Debug, Serialize)]
pub(super) struct CheckFinding {
    pub(super) id: String,
    pub(super) severity: Severity,
    pub(super) message: String,
    pub(super) certificate: Option<usize>,
}

impl CheckFinding {
    pub(super) fn new(f: Finding, certificate: Option<usize>) -> Self {
        CheckFinding {
            id: f.id,
            severity: f.severity,
            message: f.message,
            certificate,
        }
    }
}

fn or_dash(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// The text rendering.
pub(super) fn render(r: &CheckReport) -> String {
    let mut out = format!("Endpoint:    {} (SNI {})\n", r.target, r.sni);
    out.push_str(&format!(
        "TLS:         {} {} {}\n",
        or_dash(&r.tls.version),
        or_dash(&r.tls.cipher),
        or_dash(&r.tls.group)
    ));
    let legacy: Vec<String> = r
        .tls
        .legacy
        .iter()
        .map(|l| match (&l.version, &l.cipher) {
            (Some(v), Some(c)) if l.result == "accepted" => {
                format!("{} ACCEPTED ({v} {c})", l.probe)
            }
            _ => format!("{} {}", l.probe, l.result),
        })
        .collect();
    if !legacy.is_empty() {
        out.push_str(&format!("Legacy:      {}\n", legacy.join(", ")));
    }
    out.push_str(&format!(
        "Chain:       {} presented; {}\n",
        r.chain.presented, r.chain.message
    ));
    let name = if r.identity.name_valid {
        "valid"
    } else {
        "NOT VALID"
    };
    out.push_str(&format!("Name:        {} {name}\n", r.identity.name));
    if let Some(expected) = &r.identity.spiffe_id_expected {
        out.push_str(&format!(
            "SPIFFE ID:   {} (expected {expected})\n",
            or_dash(&r.identity.spiffe_id)
        ));
    }
    out.push_str(&format!(
        "Revocation:  {}: {}\n",
        r.revocation.status, r.revocation.message
    ));
    for c in &r.certificates {
        let subject = if c.subject.is_empty() {
            c.spiffe_id.as_deref().unwrap_or("(empty subject)")
        } else {
            &c.subject
        };
        out.push_str(&format!(
            "Certificate {} ({}): {subject}, {}, until {}\n",
            c.index,
            c.role.as_str(),
            c.key,
            c.not_after
        ));
    }
    if !r.findings.is_empty() {
        out.push_str("Findings:\n");
    }
    for f in &r.findings {
        let at = f
            .certificate
            .map_or_else(String::new, |i| format!(" [certificate {i}]"));
        out.push_str(&format!(
            "  {:<8}{}{at}: {}\n",
            f.severity.as_str().to_uppercase(),
            f.id,
            f.message
        ));
    }
    let verdict = if r.passed { "PASS" } else { "FAIL" };
    out.push_str(&format!(
        "{verdict}: {} (fail-on {})\n",
        r.summary.text(),
        r.fail_on
    ));
    out
}
