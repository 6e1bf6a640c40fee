//! Certificate lint rules: RFC 5280 structure, key and signature strength,
//! lifetimes, X509-SVID rules and site policy, plus optional Rego rules.
//!
//! Used three ways: `ward cert lint` on files, `ward check` on the chain an
//! endpoint presents, and the CA on every certificate before it leaves
//! (pre-issuance linting). Pure: callers hand in DER, a clock reading and a
//! policy (with the Rego source already read); nothing here does I/O.
//!
//! Every finding carries a stable rule id from [`rules`]; the catalog is
//! documented in `docs/lint-rules.md`.

mod checks;
mod facts;
mod policy;
mod rego;
pub mod revocation;
pub mod rules;
mod structure;
mod summary;

use std::fmt;
use std::str::FromStr;

use rustls_pki_types::{CertificateDer, ServerName};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

pub use facts::{ExtensionFact, Facts};
pub use policy::{Eku, LintPolicy, Oid, SanPattern};
pub use rego::{RegoInput, RegoPolicy};
pub use rules::Rule;
pub use summary::Summary;

use crate::Error;

/// How bad a finding is. Ordered: `Notice < Warning < Error`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth knowing; not a problem.
    Notice,
    /// A problem that some clients or auditors will mind.
    Warning,
    /// Clients will fail, or policy forbids it.
    Error,
}

impl Severity {
    /// The stable spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Notice => "notice",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl FromStr for Severity {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self, Error> {
        match s {
            "notice" => Ok(Severity::Notice),
            "warning" => Ok(Severity::Warning),
            "error" => Ok(Severity::Error),
            _ => Err(Error::Policy(format!(
                "unknown severity {s:?} (expected error, warning or notice)"
            ))),
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One problem found in one certificate.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable rule id (`w5280.serial_positive`, `rego.deny_wildcards`, …).
    pub id: String,
    /// Severity after policy overrides.
    pub severity: Severity,
    /// What exactly is wrong with this certificate.
    pub message: String,
}

/// The position a certificate holds, which decides the rules that apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The end-entity certificate (first in a chain).
    Leaf,
    /// A CA certificate that is not self-issued.
    Intermediate,
    /// A self-issued CA certificate (a trust anchor).
    Root,
}

impl Role {
    /// The stable spelling (`leaf`, `intermediate`, `root`).
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leaf => "leaf",
            Role::Intermediate => "intermediate",
            Role::Root => "root",
        }
    }

    /// The role of certificate `index` of a presented chain: the first is
    /// the leaf; later ones are roots when self-issued, else intermediates.
    pub fn in_chain(index: usize, facts: Option<&Facts>) -> Role {
        match (index, facts) {
            (0, _) => Role::Leaf,
            (_, Some(f)) if f.self_issued => Role::Root,
            _ => Role::Intermediate,
        }
    }
}

/// What a certificate is linted against besides the policy.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    /// The certificate's role.
    pub role: Role,
    /// The issuer's DER certificate, when known (enables the AKI, signature
    /// and outlives-issuer rules).
    pub issuer: Option<&'a [u8]>,
    /// The time of the check.
    pub now: OffsetDateTime,
}

/// Runs the built-in rules on one DER certificate. Findings come back in
/// catalog order, after the policy's `disable` and `severity` settings.
pub fn lint(der: &[u8], ctx: &Context<'_>, policy: &LintPolicy) -> Vec<Finding> {
    let issuer = ctx.issuer.and_then(|d| Facts::from_der(d).ok());
    lint_with(der, ctx, issuer.as_ref(), Signature::Verify, policy)
}

/// Whether the issuer-signature rule verifies the signature.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Signature {
    /// Verify it with the issuer's key (an ECDSA/RSA/EdDSA verify).
    Verify,
    /// The caller just made it with the issuer's own key: skip the verify.
    MadeByIssuerKey,
}

/// [`lint`] with the issuer's facts already computed.
fn lint_with(
    der: &[u8],
    ctx: &Context<'_>,
    issuer: Option<&Facts>,
    signature: Signature,
    policy: &LintPolicy,
) -> Vec<Finding> {
    let mut findings = match Facts::from_der(der) {
        Err(reason) => {
            vec![rules::PARSE.finding(format!("cannot parse the certificate: {reason}"))]
        }
        Ok(facts) => {
            let verify = signature == Signature::Verify;
            let mut out = structure::check(&facts, ctx.role, issuer);
            out.extend(checks::check(der, &facts, ctx, issuer, verify, policy));
            out
        }
    };
    apply_policy(&mut findings, policy);
    findings
}

/// Pre-issuance linting for a CA: `Err` names every error-level finding of
/// the freshly signed leaf `der` (ids and messages), for the refusal.
pub fn pre_issuance(
    der: &[u8],
    issuer_der: &[u8],
    policy: &LintPolicy,
    now: OffsetDateTime,
) -> Result<(), String> {
    let ctx = Context {
        role: Role::Leaf,
        issuer: Some(issuer_der),
        now,
    };
    refusal(lint(der, &ctx, policy))
}

/// Pre-issuance linting bound to one [`Issuer`](crate::issue::Issuer), for
/// a CA that lints every certificate it signs: the same rules as
/// [`pre_issuance`], with the issuer certificate parsed once instead of per
/// certificate, and without verifying the leaf's signature again.
///
/// Skipping that verify (one public-key operation per certificate, as costly
/// as the CSR's) is sound because an `Issuer` only exists for a private key
/// that matches its certificate (`Issuer::new` checks the pair), and the
/// leaf was signed by that key a moment ago; the signature *algorithm* is
/// still checked (weak, unknown), as is everything else.
#[derive(Clone, Debug)]
pub struct PreIssuance {
    /// The issuing CA certificate, DER.
    issuer_der: Vec<u8>,
    /// What the rules need of it.
    issuer: Facts,
}

impl PreIssuance {
    /// Prepares linting for certificates `issuer` signs.
    pub fn new(issuer: &crate::issue::Issuer) -> Result<Self, String> {
        let issuer_der = issuer.cert_der().to_vec();
        let facts = Facts::from_der(&issuer_der)?;
        Ok(PreIssuance {
            issuer_der,
            issuer: facts,
        })
    }

    /// Lints a leaf the issuer has just signed; `Err` as [`pre_issuance`].
    pub fn check(
        &self,
        der: &[u8],
        policy: &LintPolicy,
        now: OffsetDateTime,
    ) -> Result<(), String> {
        let ctx = Context {
            role: Role::Leaf,
            issuer: Some(&self.issuer_der),
            now,
        };
        refusal(lint_with(
            der,
            &ctx,
            Some(&self.issuer),
            Signature::MadeByIssuerKey,
            policy,
        ))
    }
}

/// `Err` naming every error-level finding, for a pre-issuance refusal.
fn refusal(findings: Vec<Finding>) -> Result<(), String> {
    let errors: Vec<String> = findings
        .into_iter()
        .filter(|f| f.severity == Severity::Error)
        .map(|f| format!("{} ({})", f.id, f.message))
        .collect();
    if errors.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "pre-issuance lint refused the certificate: {}",
            errors.join("; ")
        ))
    }
}

/// Applies `disable` and `severity` overrides.
fn apply_policy(findings: &mut Vec<Finding>, policy: &LintPolicy) {
    findings.retain(|f| !policy.disable.contains(&f.id));
    for f in findings.iter_mut() {
        if let Some(sev) = policy.severity.get(&f.id) {
            f.severity = *sev;
        }
    }
}

/// The findings for one certificate of a chain.
#[derive(Clone, Debug, Serialize)]
pub struct CertReport {
    /// Position in the chain (0 = leaf).
    pub index: usize,
    /// Role the rules treated it as.
    pub role: Role,
    /// Subject DN (empty when unparseable).
    pub subject: String,
    /// What the rules found.
    pub findings: Vec<Finding>,
}

/// Built-in rules plus an optional Rego policy: what the CLI uses.
#[derive(Debug, Clone, Default)]
pub struct Linter {
    policy: LintPolicy,
    rego: Option<RegoPolicy>,
}

impl Linter {
    /// A linter for `policy`; `rego` is the compiled policy the policy file
    /// names, if any.
    pub fn new(policy: LintPolicy, rego: Option<RegoPolicy>) -> Self {
        Linter { policy, rego }
    }

    /// The policy in force.
    pub fn policy(&self) -> &LintPolicy {
        &self.policy
    }

    /// Lints one certificate with built-in and Rego rules.
    pub fn lint(&self, der: &[u8], ctx: &Context<'_>) -> Vec<Finding> {
        let mut findings = lint(der, ctx, &self.policy);
        if let Some(rego) = &self.rego
            && let Ok(facts) = Facts::from_der(der)
        {
            let mut extra = rego.evaluate(&RegoInput::new(facts, ctx.role, ctx.now));
            apply_policy(&mut extra, &self.policy);
            findings.extend(extra);
        }
        findings
    }

    /// Lints every certificate of a chain (leaf first), each against the
    /// next one as its issuer.
    pub fn lint_chain(&self, chain: &[CertificateDer<'_>], now: OffsetDateTime) -> Vec<CertReport> {
        chain
            .iter()
            .enumerate()
            .map(|(index, der)| {
                let facts = Facts::from_der(der).ok();
                let role = Role::in_chain(index, facts.as_ref());
                // A self-issued certificate is checked against itself.
                let issuer = match role {
                    Role::Root => Some(der.as_ref()),
                    _ => chain.get(index + 1).map(|c| c.as_ref()),
                };
                let ctx = Context { role, issuer, now };
                CertReport {
                    index,
                    role,
                    subject: facts.map(|f| f.subject).unwrap_or_default(),
                    findings: self.lint(der, &ctx),
                }
            })
            .collect()
    }
}

/// Whether the leaf is valid for `name` (a DNS name or IP address), by
/// rustls-webpki's rules (wildcards, IP SANs, no CN fallback).
pub fn valid_for_name(leaf_der: &[u8], name: &str) -> Result<bool, Error> {
    let server_name = ServerName::try_from(name)
        .map_err(|_| Error::Policy(format!("{name:?} is not a DNS name or IP address")))?;
    let der = CertificateDer::from(leaf_der);
    let cert = webpki::EndEntityCert::try_from(&der)
        .map_err(|e| Error::InvalidCertificate(format!("{e:?}")))?;
    Ok(cert.verify_is_valid_for_subject_name(&server_name).is_ok())
}

#[cfg(test)]
mod tests;
