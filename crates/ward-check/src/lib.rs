//! The `ward check` engine: would this endpoint's clients accept it, and
//! does it follow policy?
//!
//! Steps: capture the presented chain with rustls (and, at the same time,
//! offer TLS 1.0, 1.1 and non-AEAD TLS 1.2 with hand-made ClientHellos),
//! build the path to the roots, match the name and SPIFFE ID, lint every
//! certificate, and ask the CRL distribution point or OCSP responder. The
//! result is one [`CheckReport`]; reading files, parsing flags and printing
//! are the CLI's job.

#![forbid(unsafe_code)]

mod fetch;
pub mod report;
mod revocation;
pub mod target;
mod verdicts;

use std::time::Duration;

use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;
use ward_pki::SpiffeIdPattern;
use ward_pki::issue::rfc3339;
use ward_pki::lint::rules::check as rules;
use ward_pki::lint::{Facts, Finding, Linter, Severity, Summary, valid_for_name};
use ward_tls::probe::{ClientIdentity, Presented, fetch_chain};
use ward_tls::probe_legacy::{self, LegacyOutcome, LegacyProbe, LegacyResult};

pub use self::report::CheckReport;
use self::report::{CertSummary, CheckFinding, IdentityReport, RevocationReport, TlsReport};
pub use self::target::{Endpoint, TargetError};
use self::verdicts::{build_path, judge_legacy};

/// id-kp-serverAuth.
const SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";

/// Longest wait for a legacy probe or a revocation source.
const SIDE_STEP_LIMIT: Duration = Duration::from_secs(5);

/// What to check and how.
#[derive(Debug)]
pub struct Options {
    /// The endpoint.
    pub endpoint: Endpoint,
    /// Server name to send and to match.
    pub sni: String,
    /// Trusted roots; without them the path is not built.
    pub roots: Vec<CertificateDer<'static>>,
    /// Client certificate to present.
    pub client: Option<ClientIdentity>,
    /// Required SPIFFE ID of the server, or a prefix.
    pub spiffe_id: Option<SpiffeIdPattern>,
    /// The lint rules every certificate goes through.
    pub linter: Linter,
    /// The check fails when a finding is at least this severe.
    pub fail_on: Severity,
    /// Skip the TLS 1.0/1.1 and non-AEAD TLS 1.2 probes.
    pub no_legacy: bool,
    /// Skip the CRL/OCSP lookup.
    pub no_revocation: bool,
    /// Time limit for each network step.
    pub timeout: Duration,
}

/// Why an endpoint could not be checked at all.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// Neither a modern handshake nor a legacy probe got a certificate.
    #[error("cannot check {addr}: {why}")]
    Unreachable {
        /// The endpoint.
        addr: String,
        /// What went wrong.
        why: String,
    },
    /// The server's certificate does not parse.
    #[error("the server's certificate cannot be parsed")]
    UnparsableLeaf,
}

/// Checks the endpoint at `now`.
pub async fn check(opts: Options, now: OffsetDateTime) -> Result<CheckReport, CheckError> {
    let Options {
        endpoint,
        sni,
        roots,
        client,
        spiffe_id,
        linter,
        fail_on,
        no_legacy,
        no_revocation,
        timeout,
    } = opts;
    let addr = endpoint.addr;
    let client_cert_given = client.is_some();
    let legacy_timeout = timeout.min(SIDE_STEP_LIMIT);

    // The modern handshake and the legacy probes run side by side.
    let legacy = async {
        if no_legacy {
            return Vec::new();
        }
        let probes = LegacyProbe::ALL.map(|p| probe_legacy::probe(&addr, &sni, p, legacy_timeout));
        let [a, b, c] = probes;
        let (a, b, c) = tokio::join!(a, b, c);
        LegacyProbe::ALL
            .into_iter()
            .zip([a, b, c])
            .collect::<Vec<_>>()
    };
    let (modern, legacy) = tokio::join!(fetch_chain(&addr, &sni, client, timeout), legacy);

    let mut findings: Vec<CheckFinding> = Vec::new();
    let mut push = |f: Finding, cert: Option<usize>| findings.push(CheckFinding::new(f, cert));
    let modern_ok = modern.is_ok();
    let presented = match modern {
        Ok(p) => p,
        Err(err) => {
            // No modern handshake: judge the chain a legacy probe saw, if any.
            let Some(seen) = legacy.iter().find_map(|(_, r)| match r {
                Ok(LegacyResult {
                    outcome: LegacyOutcome::Accepted { version, cipher },
                    chain,
                    ..
                }) if !chain.is_empty() => Some(Presented {
                    chain: chain.clone(),
                    version: Some(version.clone()),
                    cipher: Some(cipher.clone()),
                    group: None,
                    handshake_error: Some(err.to_string()),
                }),
                _ => None,
            }) else {
                return Err(CheckError::Unreachable {
                    addr,
                    why: err.to_string(),
                });
            };
            push(
                rules::NO_MODERN.finding(format!("a rustls client cannot connect: {err}")),
                None,
            );
            seen
        }
    };
    if presented.chain.is_empty() {
        return Err(CheckError::Unreachable {
            addr,
            why: "the server presented no certificate".into(),
        });
    }
    let chain = &presented.chain;
    let facts: Vec<Option<Facts>> = chain.iter().map(|c| Facts::from_der(c).ok()).collect();
    let leaf = facts[0].as_ref().ok_or(CheckError::UnparsableLeaf)?;

    // TLS version and the handshake itself.
    if let (Some(err), true) = (&presented.handshake_error, modern_ok) {
        let wants_client_cert = ["CertificateRequired", "HandshakeFailure"]
            .iter()
            .any(|alert| err.contains(alert));
        let hint = if !client_cert_given && wants_client_cert {
            " (pass --cert and --key if the endpoint wants a client certificate)"
        } else {
            ""
        };
        push(rules::HANDSHAKE.finding(format!("{err}{hint}")), None);
    }
    if let Some(v) = &presented.version
        && v != "TLSv1_3"
        && presented.handshake_error.is_none()
    {
        push(rules::NO_TLS13.finding(format!("negotiated {v}")), None);
    }
    let mut legacy_reports = Vec::new();
    for (probe, result) in &legacy {
        let (report, finding) = judge_legacy(*probe, result);
        legacy_reports.push(report);
        if let Some(f) = finding {
            push(f, None);
        }
    }

    // The path to the roots, and the leaf's EKU either way.
    let has_eku = leaf.has_eku(SERVER_AUTH);
    if !has_eku {
        push(
            rules::CHAIN_WRONG_EKU.finding(format!(
                "the leaf's extendedKeyUsage is [{}], without serverAuth: clients refuse it as a server certificate",
                leaf.extended_key_usage.join(", ")
            )),
            Some(0),
        );
    }
    let chain_report = build_path(chain, &roots, &facts, has_eku, &mut push);

    // Name and SPIFFE ID.
    let name_valid = valid_for_name(&chain[0], &sni).unwrap_or(false);
    if !name_valid {
        let sans: Vec<&str> = leaf
            .dns_names
            .iter()
            .chain(&leaf.ip_addresses)
            .map(String::as_str)
            .collect();
        push(
            rules::NAME_MISMATCH.finding(format!(
                "the leaf is not valid for {sni} (DNS/IP SANs: {})",
                if sans.is_empty() {
                    "none".into()
                } else {
                    sans.join(", ")
                }
            )),
            Some(0),
        );
    }
    let spiffe_id_valid = spiffe_id.as_ref().map(|pattern| {
        let ok = leaf
            .spiffe_id
            .as_ref()
            .and_then(|id| id.parse().ok())
            .is_some_and(|id| pattern.matches(&id));
        if !ok {
            push(
                rules::SPIFFE_ID_MISMATCH.finding(format!(
                    "expected {pattern}, the leaf carries {}",
                    leaf.spiffe_id.as_deref().unwrap_or("no SPIFFE ID")
                )),
                Some(0),
            );
        }
        ok
    });

    // Every certificate through the lint rules.
    let reports = linter.lint_chain(chain, now);
    for r in &reports {
        for f in &r.findings {
            push(f.clone(), Some(r.index));
        }
    }

    // Revocation of the leaf.
    let issuer = chain
        .get(1)
        .filter(|_| {
            facts
                .get(1)
                .and_then(Option::as_ref)
                .is_some_and(|f| f.subject == leaf.issuer)
        })
        .or_else(|| {
            roots
                .iter()
                .find(|r| Facts::from_der(r).is_ok_and(|f| f.subject == leaf.issuer))
        })
        .map(|c| c.as_ref());
    let revocation = if no_revocation {
        RevocationReport::unchecked("skipped (--no-revocation)".into())
    } else {
        let (report, found) =
            revocation::check(&chain[0], leaf, issuer, timeout.min(SIDE_STEP_LIMIT), now).await;
        for f in found {
            push(f, Some(0));
        }
        report
    };

    let certificates = reports
        .iter()
        .filter_map(|r| {
            facts[r.index]
                .as_ref()
                .map(|f| CertSummary::new(r.index, r.role, f))
        })
        .collect();
    let passed = !findings.iter().any(|f| f.severity >= fail_on);
    let summary = Summary::of(findings.iter().map(|f| f.severity));
    Ok(CheckReport {
        target: addr,
        sni: sni.clone(),
        checked_at: rfc3339(now),
        passed,
        fail_on,
        summary,
        tls: TlsReport {
            version: presented.version.clone(),
            cipher: presented.cipher.clone(),
            group: presented.group.clone(),
            handshake_error: presented.handshake_error.clone(),
            legacy: legacy_reports,
        },
        chain: chain_report,
        identity: IdentityReport {
            name: sni,
            name_valid,
            spiffe_id: leaf.spiffe_id.clone(),
            spiffe_id_expected: spiffe_id.as_ref().map(ToString::to_string),
            spiffe_id_valid,
        },
        revocation,
        certificates,
        findings,
    })
}
