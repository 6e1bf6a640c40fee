//! `ward cert …`: offline certificate operations.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use rustls_pki_types::{CertificateDer, UnixTime};
use serde::Serialize;
use time::OffsetDateTime;
use ward_ca::CaDir;
use ward_ca::authority::AuthorityError;
use ward_ca::offline::{OfflineError, OfflineRequest};
use ward_pki::inspect::CertInfo;
use ward_pki::issue::{Profile, humanize, rfc3339};
use ward_pki::verify::{Purpose, VerifyOptions, verify};
use ward_pki::{KeyType, SpiffeId, SpiffeIdPattern, pem};

use super::{Format, Outcome, duration_arg};

#[derive(Debug, Subcommand)]
pub(crate) enum CertCommand {
    /// Issue a certificate from a local CA directory.
    Create(CreateArgs),
    /// Show a certificate file, or the chain an endpoint presents.
    Inspect(InspectArgs),
    /// Validate a certificate chain against trusted roots.
    Verify(VerifyArgs),
    /// Check certificates against Ward's lint rules and a policy.
    Lint(super::lint::LintArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// CA directory made by `ward ca init`.
    #[arg(long)]
    ca_dir: PathBuf,
    /// What the certificate is for: server, client or peer (both).
    #[arg(long)]
    profile: Profile,
    /// The SPIFFE ID (the one URI SAN); must be in the CA's trust domain.
    #[arg(long)]
    spiffe_id: Option<SpiffeId>,
    /// DNS SAN (repeatable).
    #[arg(long)]
    dns: Vec<String>,
    /// IP SAN (repeatable).
    #[arg(long)]
    ip: Vec<IpAddr>,
    /// Subject common name (optional; verifiers use the SANs).
    #[arg(long)]
    cn: Option<String>,
    /// Lifetime (default: ca.toml's offline_default_ttl, 24h).
    #[arg(long, value_parser = duration_arg)]
    ttl: Option<Duration>,
    /// Key type of the new key (ecdsa-p256, ecdsa-p384, ed25519, rsa-2048/3072/4096, ml-dsa-44/65/87).
    #[arg(long, default_value = "ecdsa-p256")]
    key_type: KeyType,
    /// Output prefix: writes PREFIX.crt (leaf + intermediate) and PREFIX.key (0600).
    #[arg(long, value_name = "PREFIX")]
    out: PathBuf,
    /// Allow a reserved SPIFFE ID (spiffe://TD/ward/...), refused otherwise.
    #[arg(long)]
    allow_reserved: bool,
    /// The CA's database, if not ca.toml's (default DIR/ward.db): every
    /// certificate is recorded there, so it can be revoked.
    #[arg(long, env = "WARD_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct InspectArgs {
    /// A PEM/DER file, HOST:PORT, or https://HOST[:PORT].
    target: String,
    /// Server name to send when connecting (default: the host).
    #[arg(long)]
    sni: Option<String>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// Certificate file: the leaf first, then any intermediates.
    cert: PathBuf,
    /// Trusted roots (PEM bundle).
    #[arg(long)]
    roots: PathBuf,
    /// Required purpose; without it, server or client will do.
    #[arg(long)]
    purpose: Option<Purpose>,
    /// A DNS name or IP address the certificate must be valid for.
    #[arg(long)]
    dns: Option<String>,
    /// Required SPIFFE ID, or a prefix ending in /* .
    #[arg(long)]
    spiffe_id: Option<SpiffeIdPattern>,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

pub(crate) async fn run(cmd: CertCommand) -> anyhow::Result<Outcome> {
    match cmd {
        CertCommand::Create(args) => create(args).await,
        CertCommand::Inspect(args) => inspect(args).await,
        CertCommand::Verify(args) => verify_cmd(args),
        CertCommand::Lint(args) => super::lint::run(args),
    }
}

/// Turns an authority error into one that shows its detail (a command-line
/// user is the operator: nothing is hidden from them).
fn authority_error(e: AuthorityError) -> anyhow::Error {
    match e {
        AuthorityError::Internal(m) | AuthorityError::SignerUnavailable(m) => anyhow::anyhow!(m),
        AuthorityError::Unavailable(s) => anyhow::Error::new(s),
        other => anyhow::Error::new(other),
    }
}

/// The CLI's wording of an offline issuance failure.
fn offline_error(e: OfflineError) -> anyhow::Error {
    match e {
        OfflineError::CommonName(e) => anyhow::anyhow!("--cn: {e}"),
        OfflineError::Issue(e) => authority_error(e).context("cannot issue the certificate"),
        OfflineError::Ca(e) => e.into(),
        OfflineError::Pki(e) => e.into(),
        other => anyhow::Error::msg(other.to_string()),
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<Outcome> {
    let request = OfflineRequest {
        profile: args.profile,
        spiffe_id: args.spiffe_id,
        dns_names: args.dns,
        ip_addresses: args.ip,
        common_name: args.cn,
        ttl: args.ttl,
        key_type: args.key_type,
        allow_reserved: args.allow_reserved,
    };
    let issued = CaDir::new(&args.ca_dir)
        .issue_offline(request, args.database.as_deref(), OffsetDateTime::now_utc())
        .await
        .map_err(offline_error)?;
    let (crt_path, key_path) = issued.write(&args.out)?;

    eprintln!(
        "Wrote {} (leaf + intermediate) and {} (0600)",
        crt_path.display(),
        key_path.display()
    );
    eprintln!(
        "  profile {}, serial {}, valid until {} ({})",
        args.profile,
        issued.serial,
        rfc3339(issued.not_after),
        humanize(Duration::from_secs(
            (issued.not_after - OffsetDateTime::now_utc())
                .whole_seconds()
                .max(0)
                .unsigned_abs()
        ))
    );
    Ok(Outcome::Success)
}

#[derive(Debug, Serialize)]
struct InspectReport {
    source: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<TlsSummary>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    private_key_present: bool,
    certificates: Vec<CertInfo>,
}

#[derive(Debug, Serialize)]
struct TlsSummary {
    version: Option<String>,
    cipher: Option<String>,
    group: Option<String>,
    handshake_error: Option<String>,
}

/// Where `inspect` reads from.
enum Target {
    File(PathBuf),
    Endpoint(ward_check::Endpoint),
}

/// A file when one exists at `raw`, else an endpoint (`ward check`'s parser).
fn parse_target(raw: &str) -> anyhow::Result<Target> {
    let path = Path::new(raw);
    if path.exists() {
        return Ok(Target::File(path.to_owned()));
    }
    match ward_check::Endpoint::parse(raw) {
        Ok(endpoint) => Ok(Target::Endpoint(endpoint)),
        Err(ward_check::TargetError::NoPort(_)) => {
            bail!("{raw}: no such file, and not HOST:PORT or https://HOST[:PORT]")
        }
        Err(e) => Err(e.into()),
    }
}

async fn inspect(args: InspectArgs) -> anyhow::Result<Outcome> {
    let now = OffsetDateTime::now_utc();
    let report = match parse_target(&args.target)? {
        Target::File(path) => {
            let bytes =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            let certs = pem::parse_certs_any(&bytes)
                .with_context(|| format!("reading {}", path.display()))?;
            let private_key_present = String::from_utf8_lossy(&bytes).contains("PRIVATE KEY-----");
            InspectReport {
                source: path.display().to_string(),
                tls: None,
                private_key_present,
                certificates: describe(&certs, now)?,
            }
        }
        Target::Endpoint(ward_check::Endpoint { addr, host }) => {
            let sni = args.sni.unwrap_or(host);
            let seen = ward_tls::probe::fetch_chain(&addr, &sni, None, Duration::from_secs(10))
                .await
                .with_context(|| format!("cannot read the chain {addr} presents"))?;
            InspectReport {
                source: addr,
                tls: Some(TlsSummary {
                    version: seen.version,
                    cipher: seen.cipher,
                    group: seen.group,
                    handshake_error: seen.handshake_error,
                }),
                private_key_present: false,
                certificates: describe(&seen.chain, now)?,
            }
        }
    };
    match args.format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text => out!("{}", render_text(&report)),
    }
    Ok(Outcome::Success)
}

fn describe(certs: &[CertificateDer<'_>], now: OffsetDateTime) -> anyhow::Result<Vec<CertInfo>> {
    certs
        .iter()
        .enumerate()
        .map(|(i, der)| {
            CertInfo::from_der(der, now).with_context(|| format!("certificate {i} is unreadable"))
        })
        .collect()
}

fn render_text(report: &InspectReport) -> String {
    let mut out = format!("Source: {}\n", report.source);
    if let Some(tls) = &report.tls {
        let show = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
        out.push_str(&format!(
            "TLS: {} {} {}\n",
            show(&tls.version),
            show(&tls.cipher),
            show(&tls.group)
        ));
        if let Some(err) = &tls.handshake_error {
            out.push_str(&format!("Handshake: {err}\n"));
        }
    }
    if report.private_key_present {
        out.push_str("(the file also holds a private key; it is not shown)\n");
    }
    let n = report.certificates.len();
    for (i, info) in report.certificates.iter().enumerate() {
        let role = match (i, info.is_ca, info.self_issued) {
            (0, false, _) => "leaf",
            (_, true, true) => "root",
            (_, true, false) => "intermediate",
            _ => "certificate",
        };
        out.push_str(&format!("\nCertificate {}/{n} ({role})\n", i + 1));
        out.push_str(&info.to_text());
    }
    out
}

#[derive(Debug, Serialize)]
struct VerifyReport {
    valid: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<&'static str>,
    message: String,
    purposes: Vec<Purpose>,
    spiffe_id: Option<String>,
}

fn read_chain(path: &Path, what: &str) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let bytes =
        std::fs::read(path).with_context(|| format!("reading {what} {}", path.display()))?;
    pem::parse_certs_any(&bytes).with_context(|| format!("reading {what} {}", path.display()))
}

fn verify_cmd(args: VerifyArgs) -> anyhow::Result<Outcome> {
    let chain = read_chain(&args.cert, "certificate")?;
    let roots = read_chain(&args.roots, "roots")?;
    let opts = VerifyOptions {
        purpose: args.purpose,
        name: args.dns.as_deref(),
        spiffe_id: args.spiffe_id.as_ref(),
        now: UnixTime::now(),
    };
    let (report, outcome) = match verify(&chain, &roots, &opts) {
        Ok(ok) => {
            let purposes: Vec<String> = ok.purposes.iter().map(ToString::to_string).collect();
            let mut message = format!(
                "valid for {} authentication, path of {} certificates",
                purposes.join(" and "),
                ok.path_len
            );
            if let Some(id) = &ok.spiffe_id {
                message.push_str(&format!(", SPIFFE ID {id}"));
            }
            let report = VerifyReport {
                valid: true,
                code: None,
                message,
                purposes: ok.purposes,
                spiffe_id: ok.spiffe_id.map(|id| id.to_string()),
            };
            (report, Outcome::Success)
        }
        Err(err) => {
            let report = VerifyReport {
                valid: false,
                code: Some(err.code()),
                message: err.to_string(),
                purposes: Vec::new(),
                spiffe_id: None,
            };
            (report, Outcome::Problem)
        }
    };
    match args.format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&report)?),
        Format::Text if report.valid => outln!("OK: {}", report.message),
        Format::Text => outln!("FAIL: {}", report.message),
    }
    Ok(outcome)
}
