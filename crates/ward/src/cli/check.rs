//! `ward check HOST:PORT`: would this endpoint's clients accept it, and does
//! it follow policy? A CI gate: exit 0 pass, 1 findings at or above
//! `--fail-on`, 2 could not check.
//!
//! The flags, the files they name and the printing live here; the check
//! itself is the `ward-check` crate.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use time::OffsetDateTime;
use ward_check::report::CheckReport;
use ward_check::{Endpoint, Options};
use ward_pki::lint::Severity;
use ward_pki::{SpiffeIdPattern, pem};
use ward_tls::probe::ClientIdentity;

use super::lint::{load_linter, severity_arg};
use super::{Format, Outcome, duration_arg};

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
    let endpoint = Endpoint::parse(&args.target)?;
    let sni = args.sni.clone().unwrap_or_else(|| endpoint.host.clone());
    let linter = load_linter(args.policy.as_deref())?;
    let roots = match &args.roots {
        Some(path) => read_certs(path, "roots")?,
        None => Vec::new(),
    };
    let client = identity(&args)?;
    let options = Options {
        endpoint,
        sni,
        roots,
        client,
        spiffe_id: args.spiffe_id,
        linter,
        fail_on: args.fail_on,
        no_legacy: args.no_legacy,
        no_revocation: args.no_revocation,
        timeout: args.timeout,
    };
    let report = ward_check::check(options, OffsetDateTime::now_utc()).await?;
    match args.format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => out!("{}", render(&report)),
    }
    Ok(if report.passed {
        Outcome::Success
    } else {
        Outcome::Problem
    })
}

fn or_dash(v: &Option<String>) -> &str {
    v.as_deref().unwrap_or("-")
}

/// The text rendering.
fn render(r: &CheckReport) -> String {
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
    out.push_str(&r.summary.verdict_line(r.passed, r.fail_on));
    out
}
