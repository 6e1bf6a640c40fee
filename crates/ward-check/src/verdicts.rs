//! Verdicts of `ward check` that need more than one line: path building to
//! the roots (naming a missing intermediate) and the legacy-protocol probes.

use rustls_pki_types::{CertificateDer, UnixTime};
use ward_pki::lint::rules::check as rules;
use ward_pki::lint::{Facts, Finding};
use ward_pki::verify::{Purpose, VerifyError, VerifyOptions, verify};
use ward_tls::probe_legacy::{LegacyOutcome, LegacyProbe, LegacyResult};

use crate::report::{ChainReport, LegacyReport, MissingIssuer};

pub(crate) fn judge_legacy(
    probe: LegacyProbe,
    result: &Result<LegacyResult, ward_tls::Error>,
) -> (LegacyReport, Option<Finding>) {
    let mut report = LegacyReport {
        probe: probe.label(),
        result: "refused",
        version: None,
        cipher: None,
        detail: None,
    };
    let finding = match result {
        Ok(LegacyResult { outcome, .. }) => match outcome {
            LegacyOutcome::Accepted { version, cipher } => {
                report.result = "accepted";
                report.version = Some(version.clone());
                report.cipher = Some(cipher.clone());
                let rule = match probe {
                    LegacyProbe::Tls10 => rules::TLS10,
                    LegacyProbe::Tls11 => rules::TLS11,
                    LegacyProbe::Tls12NonAead => rules::TLS12_CBC,
                };
                Some(rule.finding(format!("the endpoint accepts {version} with {cipher}")))
            }
            LegacyOutcome::Refused { alert } => {
                report.detail = alert.map(|a| format!("alert {a}"));
                None
            }
            LegacyOutcome::Inconclusive(why) => {
                report.result = "inconclusive";
                report.detail = Some(why.clone());
                Some(rules::LEGACY_PROBE.finding(format!("{}: {why}", probe.label())))
            }
        },
        Err(err) => {
            report.result = "inconclusive";
            report.detail = Some(err.to_string());
            Some(rules::LEGACY_PROBE.finding(format!("{}: {err}", probe.label())))
        }
    };
    (report, finding)
}

/// Builds the path to `roots` and reports why it fails, naming a missing
/// issuer when the chain stops short.
pub(crate) fn build_path(
    chain: &[CertificateDer<'_>],
    roots: &[CertificateDer<'_>],
    facts: &[Option<Facts>],
    leaf_has_eku: bool,
    push: &mut impl FnMut(Finding, Option<usize>),
) -> ChainReport {
    let mut report = ChainReport {
        presented: chain.len(),
        checked: false,
        valid: None,
        code: None,
        message: String::new(),
        missing_issuer: None,
    };
    if roots.is_empty() {
        report.message = "path not built: no --roots given".into();
        push(rules::NO_ROOTS.finding(report.message.clone()), None);
        return report;
    }
    report.checked = true;
    let opts = VerifyOptions {
        purpose: Some(Purpose::Server),
        name: None,
        spiffe_id: None,
        now: UnixTime::now(),
    };
    match verify(chain, roots, &opts) {
        Ok(ok) => {
            report.valid = Some(true);
            report.message = format!("builds to a trusted root (path of {})", ok.path_len);
        }
        Err(err) => {
            report.valid = Some(false);
            report.code = Some(err.code());
            report.message = err.to_string();
            let rule = match &err {
                VerifyError::UnknownIssuer | VerifyError::SignatureMismatch => {
                    rules::UNKNOWN_ISSUER
                }
                VerifyError::Expired { .. } => rules::CHAIN_EXPIRED,
                VerifyError::NotYetValid { .. } => rules::CHAIN_NOT_YET_VALID,
                VerifyError::WrongEku { .. } => rules::CHAIN_WRONG_EKU,
                VerifyError::WeakSignature { .. } => rules::CHAIN_WEAK_SIGNATURE,
                VerifyError::WeakKey { .. } => rules::CHAIN_WEAK_KEY,
                VerifyError::CaAsLeaf => rules::CHAIN_CA_AS_LEAF,
                _ => rules::CHAIN_INVALID,
            };
            if matches!(err, VerifyError::UnknownIssuer)
                && let Some(Some(last)) = facts.last()
            {
                report.missing_issuer = Some(MissingIssuer {
                    issuer: last.issuer.clone(),
                    authority_key_id: last.authority_key_id.clone(),
                });
                report.message = if last.self_issued {
                    format!(
                        "unknown issuer: the chain ends at the self-issued {}, which is not among --roots",
                        last.subject
                    )
                } else {
                    format!(
                        "unknown issuer: the last presented certificate is issued by {} (authority key id {}), which the server did not send and --roots does not hold: an intermediate is missing",
                        last.issuer,
                        last.authority_key_id.as_deref().unwrap_or("absent")
                    )
                };
            }
            // The leaf's EKU was already reported on its own.
            if rule != rules::CHAIN_WRONG_EKU || leaf_has_eku {
                push(rule.finding(report.message.clone()), Some(0));
            }
        }
    }
    report
}
