//! The `ward check` report: everything the check found out, serialized as
//! one JSON document whose shape `docs/check-output.schema.json` fixes (the
//! CLI also renders it as text).

use serde::Serialize;
use ward_pki::lint::{Facts, Finding, Role, Severity, Summary};

/// Everything `ward check` found out.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// The address connected to (HOST:PORT).
    pub target: String,
    /// The server name sent and matched.
    pub sni: String,
    /// When the check ran (RFC 3339).
    pub checked_at: String,
    /// Whether no finding reached `fail_on`.
    pub passed: bool,
    /// The severity at which the check fails.
    pub fail_on: Severity,
    /// Findings counted by severity.
    pub summary: Summary,
    /// The TLS handshake and the legacy probes.
    pub tls: TlsReport,
    /// Path building to the roots.
    pub chain: ChainReport,
    /// Name and SPIFFE ID matching.
    pub identity: IdentityReport,
    /// The leaf's revocation status.
    pub revocation: RevocationReport,
    /// The presented certificates, briefly.
    pub certificates: Vec<CertSummary>,
    /// Every finding.
    pub findings: Vec<CheckFinding>,
}

/// The negotiated parameters and the legacy probes.
#[derive(Debug, Serialize)]
pub struct TlsReport {
    /// The negotiated protocol version.
    pub version: Option<String>,
    /// The negotiated cipher suite.
    pub cipher: Option<String>,
    /// The negotiated key exchange group.
    pub group: Option<String>,
    /// Why the handshake failed, if it did.
    pub handshake_error: Option<String>,
    /// The legacy-protocol probes.
    pub legacy: Vec<LegacyReport>,
}

/// One legacy probe.
#[derive(Debug, Serialize)]
pub struct LegacyReport {
    /// Which probe.
    pub probe: &'static str,
    /// `accepted`, `refused` or `inconclusive`.
    pub result: &'static str,
    /// The version the server accepted.
    pub version: Option<String>,
    /// The cipher suite the server accepted.
    pub cipher: Option<String>,
    /// Why the probe was inconclusive, or what the server answered.
    pub detail: Option<String>,
}

/// Path building to the roots.
#[derive(Debug, Serialize)]
pub struct ChainReport {
    /// How many certificates the server presented.
    pub presented: usize,
    /// Whether a path was built (false without --roots).
    pub checked: bool,
    /// Whether the path validated (when built).
    pub valid: Option<bool>,
    /// The failure, as a stable code.
    pub code: Option<&'static str>,
    /// Human summary.
    pub message: String,
    /// The issuer a client would need and did not get.
    pub missing_issuer: Option<MissingIssuer>,
}

/// The issuer a client would need and did not get.
#[derive(Debug, Serialize)]
pub struct MissingIssuer {
    /// Its subject name.
    pub issuer: String,
    /// Its key identifier (hex), from the child's authorityKeyIdentifier.
    pub authority_key_id: Option<String>,
}

/// Name and SPIFFE ID matching.
#[derive(Debug, Serialize)]
pub struct IdentityReport {
    /// The name matched (the SNI).
    pub name: String,
    /// Whether the leaf is valid for it.
    pub name_valid: bool,
    /// The leaf's SPIFFE ID.
    pub spiffe_id: Option<String>,
    /// The SPIFFE ID (or prefix) required.
    pub spiffe_id_expected: Option<String>,
    /// Whether the leaf's SPIFFE ID matches, when one is required.
    pub spiffe_id_valid: Option<bool>,
}

/// A presented certificate, briefly.
#[derive(Debug, Serialize)]
pub struct CertSummary {
    /// Position in the presented chain (0: the leaf).
    pub index: usize,
    /// Leaf, intermediate or root.
    pub role: Role,
    /// Subject name.
    pub subject: String,
    /// Issuer name.
    pub issuer: String,
    /// Serial, hex.
    pub serial: String,
    /// notBefore (RFC 3339).
    pub not_before: String,
    /// notAfter (RFC 3339).
    pub not_after: String,
    /// The SPIFFE ID, if any.
    pub spiffe_id: Option<String>,
    /// Key type.
    pub key: String,
    /// Signature algorithm.
    pub signature_algorithm: String,
    /// SHA-256 of the DER, hex.
    pub sha256_fingerprint: String,
}

impl CertSummary {
    /// The summary of certificate `index` in `role`.
    pub fn new(index: usize, role: Role, f: &Facts) -> Self {
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
pub struct CheckFinding {
    /// The rule id.
    pub id: String,
    /// How bad.
    pub severity: Severity,
    /// What was found.
    pub message: String,
    /// The certificate it concerns (index in the chain).
    pub certificate: Option<usize>,
}

impl CheckFinding {
    /// A finding about `certificate` (or about the endpoint: `None`).
    pub fn new(f: Finding, certificate: Option<usize>) -> Self {
        CheckFinding {
            id: f.id,
            severity: f.severity,
            message: f.message,
            certificate,
        }
    }
}

/// What the check learned about revocation.
#[derive(Debug, Serialize)]
pub struct RevocationReport {
    /// `good`, `revoked`, `unknown` or `unchecked`.
    pub status: &'static str,
    /// `crl` or `ocsp`, when a source answered.
    pub source: Option<&'static str>,
    /// The URL that answered.
    pub url: Option<String>,
    /// Human summary.
    pub message: String,
}

impl RevocationReport {
    /// Nothing learned, and why.
    pub fn unchecked(message: String) -> Self {
        RevocationReport {
            status: "unchecked",
            source: None,
            url: None,
            message,
        }
    }
}
