//! `ward agent run`: obtain and rotate this workload's identity (SPEC §4, §7).
//!
//! The bootstrap token comes from `--token-file` or the `WARD_TOKEN`
//! environment variable. Removing a variable from the running process's
//! environment needs `unsafe` in Rust 2024 (`std::env::remove_var`), which
//! the workspace forbids; instead the token is read once into a redacting,
//! zeroizing [`Token`], and the only child the agent starts (`--on-rotate`)
//! runs with `WARD_TOKEN` removed from its environment. Prefer
//! `--token-file`: a file can be deleted after start-up.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use ward_agent::{AgentConfig, Event};
use ward_client::schedule::Backoff;
use ward_client::{BootstrapConfig, CaTrust, Token};
use ward_pki::KeyType;

use super::{Outcome, duration_arg};

/// The environment variable holding the bootstrap token.
const TOKEN_ENV: &str = "WARD_TOKEN";

/// Largest token file read.
const MAX_TOKEN_FILE: u64 = 64 * 1024;

#[derive(Debug, Subcommand)]
pub(crate) enum AgentCommand {
    /// Obtain an identity from the CA, keep it renewed, and hand it to the
    /// workload as files and/or over the SPIFFE Workload API.
    Run(Box<RunArgs>),
    /// Fetch the identity once from a SPIFFE Workload API socket (this
    /// agent's, or SPIRE's) and print it or write it as files.
    Fetch(FetchArgs),
}

#[derive(Debug, Args)]
pub(crate) struct FetchArgs {
    /// The Workload API socket (default: SPIFFE_ENDPOINT_SOCKET, as
    /// unix:///path).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Write svid.pem, svid_key.pem (0600) and svid_bundle.pem here.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// How long to wait for an identity.
    #[arg(long, default_value = "30s", value_parser = duration_arg)]
    timeout: Duration,
}

#[derive(Debug, Args)]
#[command(group(clap::ArgGroup::new("trust").args(["ca_fingerprint", "ca_bundle"])))]
#[command(group(clap::ArgGroup::new("output").required(true).multiple(true).args(["out_dir", "socket"])))]
pub(crate) struct RunArgs {
    /// The CA, https://HOST[:PORT].
    #[arg(
        long,
        required_unless_present = "acme_directory",
        conflicts_with = "acme_directory"
    )]
    ca: Option<String>,
    /// SHA-256 fingerprint of the CA's root certificate (hex, colons optional).
    #[arg(long)]
    ca_fingerprint: Option<String>,
    /// PEM file of roots the CA's certificate must chain to.
    #[arg(long)]
    ca_bundle: Option<PathBuf>,
    /// File holding the bootstrap token (otherwise the WARD_TOKEN variable).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// Write svid.pem, svid_key.pem (0600) and svid_bundle.pem here.
    #[arg(long)]
    out_dir: Option<PathBuf>,
    /// Serve the SPIFFE Workload API on this Unix socket (mode 0600).
    #[arg(long)]
    socket: Option<PathBuf>,
    /// Shell command run (sh -c) after each new identity was written.
    #[arg(long)]
    on_rotate: Option<String>,
    /// Longest the --on-rotate command may run before it is killed.
    #[arg(long, default_value = "30s", value_parser = duration_arg)]
    on_rotate_timeout: Duration,
    /// Admin listener for /healthz, /readyz, /metrics (e.g. 127.0.0.1:9090).
    #[arg(long)]
    admin: Option<String>,
    /// Type of the keys generated here (a new one at every renewal) (ecdsa-p256, ecdsa-p384, ed25519, rsa-2048/3072/4096, ml-dsa-44/65/87).
    #[arg(long, default_value = "ecdsa-p256")]
    key_type: KeyType,
    /// First retry delay after a failed renewal (doubles each time).
    #[arg(long, default_value = "1s", value_parser = duration_arg)]
    retry_min: Duration,
    /// Longest retry delay.
    #[arg(long, default_value = "60s", value_parser = duration_arg)]
    retry_max: Duration,
    /// How long to keep trying to reach the CA for the first identity.
    #[arg(long, default_value = "60s", value_parser = duration_arg)]
    bootstrap_timeout: Duration,
    /// Log format on stderr.
    #[arg(long, default_value = "text")]
    log_format: ward_telemetry::LogFormat,
    /// Instead of an identity from the CA: a DNS-named server certificate
    /// from an ACME CA, written as cert.pem and key.pem in --out-dir.
    #[command(flatten)]
    acme: super::acme_client::AcmeClientArgs,
    /// Serve several workloads on --socket (mode 0666), each identified by
    /// its peer credentials and matched against the entries of this TOML
    /// file ([[entry]] spiffe_id, selectors); see docs/attestation.md.
    #[arg(long, requires = "socket", conflicts_with = "entries_from_ca")]
    registrations: Option<PathBuf>,
    /// Like --registrations, with the entries the CA keeps for this agent's
    /// SPIFFE ID (`ward entry create --node`), refreshed every minute.
    #[arg(long, requires = "socket")]
    entries_from_ca: bool,
    /// Follow a partner trust domain's SPIFFE bundle endpoint and serve its
    /// bundle on the Workload API: TRUST_DOMAIN=https://URL (repeatable).
    /// The https_web profile, unless --federation-spiffe-id names the
    /// endpoint's SPIFFE ID for that trust domain (https_spiffe).
    #[arg(long, value_name = "TD=URL")]
    federate: Vec<String>,
    /// PEM roots for the https_web bundle endpoints' TLS certificates (a
    /// private CA); the web PKI roots when absent.
    #[arg(long, value_name = "FILE")]
    federation_ca_bundle: Option<PathBuf>,
    /// The https_spiffe profile for a --federate trust domain: the SPIFFE
    /// ID its endpoint's X509-SVID carries (repeatable; needs
    /// --federation-bundle for the same trust domain).
    #[arg(long, value_name = "TD=SPIFFE_ID")]
    federation_spiffe_id: Vec<String>,
    /// The partner's bundle obtained out of band (PEM roots or a SPIFFE
    /// bundle), authenticating the first https_spiffe fetch (repeatable).
    #[arg(long, value_name = "TD=FILE")]
    federation_bundle: Vec<String>,
    /// Shortest refresh interval of a partner bundle (its
    /// spiffe_refresh_hint is clamped to this .. 1h), and of asking the CA
    /// for the partners it follows.
    #[arg(long, default_value = "5s", value_parser = duration_arg)]
    federation_refresh_floor: Duration,
    /// Do not serve the partner bundles the CA follows (`GET
    /// /v1/federation`); only the --federate ones.
    #[arg(long)]
    no_ca_federation: bool,
}

/// `TD=VALUE` flags by trust domain; a trust domain named twice is an error.
fn by_trust_domain(
    flag: &str,
    specs: &[String],
) -> anyhow::Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for spec in specs {
        let (td, value) = spec
            .split_once('=')
            .with_context(|| format!("--{flag} {spec:?}: expected TRUST_DOMAIN=VALUE"))?;
        anyhow::ensure!(
            out.insert(td.to_ascii_lowercase(), value.to_owned())
                .is_none(),
            "--{flag}: trust domain {td} named twice"
        );
    }
    Ok(out)
}

/// `--federate TD=URL` flags (with their https_spiffe settings) as
/// followed endpoints, and the refresh bounds.
fn federation_endpoints(
    args: &RunArgs,
) -> anyhow::Result<(
    Vec<ward_client::federation::Endpoint>,
    ward_client::federation::Refresh,
)> {
    use ward_client::federation::Endpoint;
    let mut refresh = ward_client::federation::Refresh::default();
    anyhow::ensure!(
        args.federation_refresh_floor >= Duration::from_secs(1)
            && args.federation_refresh_floor <= refresh.ceiling,
        "--federation-refresh-floor must be between 1s and 1h"
    );
    refresh.floor = args.federation_refresh_floor;
    let urls = by_trust_domain("federate", &args.federate)?;
    let mut ids = by_trust_domain("federation-spiffe-id", &args.federation_spiffe_id)?;
    let mut bundles = by_trust_domain("federation-bundle", &args.federation_bundle)?;
    let mut out = Vec::new();
    for (td, url) in urls {
        let trust_domain = td
            .parse()
            .map_err(|e| anyhow::anyhow!("--federate {td}={url}: {e}"))?;
        out.push(match (ids.remove(&td), bundles.remove(&td)) {
            (None, None) => Endpoint::web(trust_domain, url, args.federation_ca_bundle.clone()),
            (Some(id), Some(bundle)) => {
                let id = id
                    .parse()
                    .map_err(|e| anyhow::anyhow!("--federation-spiffe-id {td}={id}: {e}"))?;
                Endpoint::spiffe(trust_domain, url, id, PathBuf::from(bundle))
            }
            _ => anyhow::bail!(
                "--federate {td}: https_spiffe needs both --federation-spiffe-id and --federation-bundle for it"
            ),
        });
    }
    if let Some(td) = ids.keys().chain(bundles.keys()).next() {
        anyhow::bail!("trust domain {td}: https_spiffe settings without --federate {td}=URL");
    }
    Ok((out, refresh))
}

pub(crate) async fn run(cmd: AgentCommand) -> anyhow::Result<Outcome> {
    match cmd {
        AgentCommand::Run(args) => run_agent(*args).await,
        AgentCommand::Fetch(args) => fetch(args).await,
    }
}

fn read_token(file: Option<&PathBuf>) -> anyhow::Result<Token> {
    let text = match file {
        Some(path) => {
            let len = std::fs::metadata(path)
                .with_context(|| format!("cannot read the token file {}", path.display()))?
                .len();
            anyhow::ensure!(
                len <= MAX_TOKEN_FILE,
                "the token file {} is larger than {MAX_TOKEN_FILE} bytes",
                path.display()
            );
            zeroize::Zeroizing::new(
                std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read the token file {}", path.display()))?,
            )
        }
        None => zeroize::Zeroizing::new(std::env::var(TOKEN_ENV).map_err(|_| {
            anyhow::anyhow!("no bootstrap token: give --token-file FILE or set {TOKEN_ENV}")
        })?),
    };
    Ok(Token::new(&text)?)
}

async fn run_agent(args: RunArgs) -> anyhow::Result<Outcome> {
    anyhow::ensure!(
        args.retry_min > Duration::ZERO && args.retry_min <= args.retry_max,
        "--retry-min must be positive and at most --retry-max"
    );
    if let Some(settings) = args.acme.settings() {
        return run_acme(settings, args).await;
    }
    let ca = args.ca.clone().context("--ca is required")?;
    let trust = match (&args.ca_fingerprint, &args.ca_bundle) {
        (Some(fp), _) => CaTrust::fingerprint(fp)?,
        (None, Some(path)) => CaTrust::bundle_file(path)?,
        (None, None) => anyhow::bail!("give --ca-fingerprint or --ca-bundle"),
    };
    let token = read_token(args.token_file.as_ref())?;
    ward_telemetry::init_tracing(args.log_format, "info")?;
    let mut bootstrap = BootstrapConfig::new(ca, trust, token);
    bootstrap.key_type = args.key_type;
    bootstrap.backoff = Backoff {
        base: args.retry_min,
        cap: args.retry_max,
    };
    bootstrap.bootstrap_timeout = args.bootstrap_timeout;
    let (federation, federation_refresh) = federation_endpoints(&args)?;
    let config = AgentConfig {
        federation,
        federation_refresh,
        federation_from_ca: !args.no_ca_federation,
        bootstrap,
        out_dir: args.out_dir,
        socket: args.socket,
        on_rotate: args.on_rotate,
        on_rotate_timeout: args.on_rotate_timeout,
        admin: args.admin,
        attestation: match (args.registrations, args.entries_from_ca) {
            (Some(path), _) => Some(ward_agent::Registrations::File(path)),
            (None, true) => Some(ward_agent::Registrations::FromCa),
            (None, false) => None,
        },
    };
    let notify = |event: Event<'_>| match event {
        Event::WorkloadApi(path) => {
            eprintln!(
                "ward agent: workload API listening on unix://{}",
                path.display()
            );
        }
        Event::Admin(addr) => eprintln!("ward agent: admin listening on {addr}"),
        Event::Delivered { svid, first } => eprintln!(
            "ward agent: {} {} serial {} expires {}",
            if first {
                "identity ready:"
            } else {
                "identity rotated:"
            },
            svid.spiffe_id(),
            svid.serial(),
            ward_pki::issue::rfc3339(svid.not_after().into()),
        ),
        _ => {}
    };
    ward_agent::run(config, notify, super::shutdown_signal()).await?;
    Ok(Outcome::Success)
}

/// `--acme-directory`: the certificate comes from an ACME CA.
async fn run_acme(settings: ward_acme::AcmeSettings, args: RunArgs) -> anyhow::Result<Outcome> {
    let out_dir = args
        .out_dir
        .clone()
        .context("--out-dir is required with --acme-directory")?;
    anyhow::ensure!(
        args.socket.is_none(),
        "--socket serves SVIDs; an ACME certificate goes to --out-dir only"
    );
    settings.validate()?;
    ward_telemetry::init_tracing(args.log_format, "info")?;
    let config = ward_agent::acme::AcmeAgentConfig {
        settings,
        out_dir,
        on_rotate: args.on_rotate,
        on_rotate_timeout: args.on_rotate_timeout,
    };
    let notify = |current: &ward_acme::Issued, first: bool| {
        eprintln!(
            "ward agent: {} {} serial {} expires {}",
            if first {
                "certificate ready:"
            } else {
                "certificate rotated:"
            },
            current.names.join(","),
            current.serial,
            current.not_after,
        );
    };
    ward_agent::acme::run(config, notify, super::shutdown_signal()).await?;
    Ok(Outcome::Success)
}

async fn fetch(args: FetchArgs) -> anyhow::Result<Outcome> {
    let config = ward_client::WorkloadApiConfig {
        socket: args.socket,
        first_timeout: args.timeout,
        ..Default::default()
    };
    let rotator = ward_client::Rotator::from_workload_api(config).await?;
    let svid = rotator.current();
    if let Some(dir) = &args.out_dir {
        ward_agent::files::prepare_dir(dir)?;
        ward_agent::files::write_svid(dir, &svid)?;
    }
    outln!("spiffe_id: {}", svid.spiffe_id());
    outln!("serial: {}", svid.serial());
    outln!(
        "not_after: {}",
        ward_pki::issue::rfc3339(svid.not_after().into())
    );
    outln!("sha256: {}", svid.fingerprint());
    Ok(Outcome::Success)
}
