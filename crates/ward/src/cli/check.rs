//! `ward check HOST:PORT`: would this endpoint's clients accept it, and does
//! it follow policy? A CI gate: exit 0 pass, 1 findings at or above
//! `--fail-on`, 2 could not check.
//!
//! Steps: capture the presented chain with rustls (and, at the same time,
//! offer TLS 1.0, 1.1 and non-AEAD TLS 1.2 with hand-made ClientHellos),
//! build the path to `--roots`, match the name and SPIFFE ID, lint every
//! certificate, and ask the CRL distribution point or OCSP responder.

mod fetch;
mod report;
mod revocation;
mod verdicts;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Args;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use ward_pki::issue::rfc3339;
use ward_pki::lint::rules::check as rules;
use ward_pki::lint::{Facts, Finding, Severity, valid_for_name};
use ward_pki::{SpiffeIdPattern, pem};
use ward_tls::probe::{ClientIdentity, Presented, fetch_chain};
use ward_tls::probe_legacy::{self, LegacyOutcome, LegacyProbe, LegacyResult};

use self::report::{CertSummary, CheckFinding, CheckReport, IdentityReport, TlsReport};
use self::verdicts::{build_path, judge_legacy};
use super::lint::{Summary, load_linter, severity_arg};
use super::{Format, Outcome, duration_arg};

/// id-kp-serverAuth.
const SERVER_AUTH: &str = "1.3.6.1.5.5.7.3.1";

#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    /// The endpoint: HOST:PORT, [IPv6]:PORT or https://HOST[:PORT].
    target: String,
    /// Server name to send and to match (default: the host).
    #[arg(long)]
    sni: Option<String>,
    /// Trusted roots (PEM); without them the path is not built.
    #[arg(long)]
    roots: Option<PathBuf>,
    /// Client certificate chain to present (PEM, leaf first).
    #[arg(long, requires = "key")]
    cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// Required SPIFFE ID of the server, or a prefix ending in /* .
    #[arg(long)]
    spiffe_id: Option<SpiffeIdPattern>,
    /// Lint policy (TOML; see docs/lint-rules.md).
    #[arg(long)]
    policy: Option<PathBuf>,
    /// Exit 1 when a finding is at least this severe.
    #[arg(long, default_value = "error", value_parser = severity_arg)]
    fail_on: Severity,
    /// Skip the TLS 1.0/1.1 and non-AEAD TLS 1.2 probes.
    #[arg(long)]
    no_legacy: bool,
    /// Skip the CRL/OCSP lookup.
    #[arg(long)]
    no_revocation: bool,
    /// Time limit for each network step.
    #[arg(long, default_value = "10s", value_parser = duration_arg)]
    timeout: Duration,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

/// (connect address, host) from the target argument.
fn parse_target(raw: &str) -> anyhow::Result<(String, String)> {
    let (rest, default_port) = match raw.strip_prefix("https://") {
        Some(rest) => (rest, Some(443u16)),
        None => (raw, None),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (h, p) = v6.split_once(']').context("unterminated '[' in address")?;
        (h.to_owned(), p.strip_prefix(':').map(str::to_owned))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p.to_owned())),
            None => (authority.to_owned(), None),
        }
    };
    let port = match (port, default_port) {
        (Some(p), _) => p
            .parse()
            .with_context(|| format!("invalid port in {raw:?}"))?,
        (None, Some(d)) => d,
        (None, None) => bail!("{raw}: expected HOST:PORT or https://HOST[:PORT]"),
    };
    if host.is_empty() {
        bail!("{raw}: missing host");
    }
    let addr = if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    };
    Ok((addr, host))
}

fn read_certs(path: &PathBuf, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))?;
    pem::parse_certs_any(&bytes).with_context(|| format!("reading {what} {}", path.display()))
}

fn identity(args: &CheckArgs) -> anyhow::Result<Option<ClientIdentity>> {
    let (Some(cert), Some(key)) = (&args.cert, &args.key) else {
        return Ok(None);
    };
    let chain = read_certs(cert, "client certificate")?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|_| anyhow::anyhow!("{}: no usable PEM private key", key.display()))?;
    Ok(Some(ClientIdentity { chain, key }))
}

pub(crate) async fn run(args: CheckArgs) -> anyhow::Result<Outcome> {
    let (addr, host) = parse_target(&args.target)?;
    let sni = args.sni.clone().unwrap_or(host);
    let linter = load_linter(args.policy.as_deref())?;
    let roots = match &args.roots {
        Some(path) => read_certs(path, "roots")?,
        None => Vec::new(),
    };
    let client = identity(&args)?;
    let legacy_timeout = args.timeout.min(Duration::from_secs(5));

    // The modern handshake and the legacy probes run side by side.
    let legacy = async {
        if args.no_legacy {
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
    let (modern, legacy) = tokio::join!(fetch_chain(&addr, &sni, client, args.timeout), legacy);

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
                bail!("cannot check {addr}: {err}");
            };
            push(
                rules::NO_MODERN.finding(format!("a rustls client cannot connect: {err}")),
                None,
            );
            seen
        }
    };
    if presented.chain.is_empty() {
        bail!("cannot check {addr}: the server presented no certificate");
    }
    let chain = &presented.chain;
    let now = OffsetDateTime::now_utc();
    let facts: Vec<Option<Facts>> = chain.iter().map(|c| Facts::from_der(c).ok()).collect();
    let leaf = facts[0]
        .as_ref()
        .context("the server's certificate cannot be parsed")?;

    // TLS version and the handshake itself.
    if let (Some(err), true) = (&presented.handshake_error, modern_ok) {
        let wants_client_cert = ["CertificateRequired", "HandshakeFailure"]
            .iter()
            .any(|alert| err.contains(alert));
        let hint = if args.cert.is_none() && wants_client_cert {
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
    let spiffe_id_valid = args.spiffe_id.as_ref().map(|pattern| {
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
    let revocation = if args.no_revocation {
        revocation::RevocationReport {
            status: "unchecked",
            source: None,
            url: None,
            message: "skipped (--no-revocation)".into(),
        }
    } else {
        let (report, found) = revocation::check(
            &chain[0],
            leaf,
            issuer,
            args.timeout.min(Duration::from_secs(5)),
        )
        .await;
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
    let passed = !findings.iter().any(|f| f.severity >= args.fail_on);
    let summary = Summary::of(findings.iter().map(|f| f.severity));
    let report = CheckReport {
        target: addr,
        sni: sni.clone(),
        checked_at: rfc3339(now),
        passed,
        fail_on: args.fail_on,
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
            spiffe_id_expected: args.spiffe_id.as_ref().map(ToString::to_string),
            spiffe_id_valid,
        },
        revocation,
        certificates,
        findings,
    };
    match args.format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => out!("{}", report::render(&report)),
    }
    Ok(if passed {
        Outcome::Success
    } else {
        Outcome::Problem
    })
}
