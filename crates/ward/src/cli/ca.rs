//! `ward ca …`: create a CA directory.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use time::OffsetDateTime;
use ward_ca::{CaDir, InitOptions};
use ward_pki::{KeyType, TrustDomain};

use super::{Outcome, duration_arg};

#[derive(Debug, Subcommand)]
pub(crate) enum CaCommand {
    /// Create a root, an online intermediate, an admin identity and ca.toml in DIR.
    Init(InitArgs),
    /// Run the CA's HTTPS API (SPEC §5) until SIGTERM or Ctrl-C.
    Serve(Box<ServeArgs>),
    /// Print a one-time link that signs a browser in to the web console
    /// (`/console/` of `ward ca serve`).
    ConsoleLogin(ConsoleLoginArgs),
    /// Rotate the CA: `intermediate` makes the next intermediate, published
    /// at once and signing after the overlap; `cancel` withdraws it before
    /// the switch; `status` shows every intermediate and when it signs.
    #[command(subcommand)]
    Rotate(super::rotate::RotateCommand),
    /// The next intermediate from a root outside Ward: `csr` makes its key
    /// and a CSR, `install` takes the signed certificate as the next
    /// intermediate (published at once, signing after --overlap).
    #[command(subcommand)]
    Intermediate(super::rotate::IntermediateCommand),
}

#[derive(Debug, Args)]
pub(crate) struct ConsoleLoginArgs {
    /// CA directory made by `ward ca init`.
    #[arg(long)]
    dir: PathBuf,
    /// Database: a SQLite file path or postgres://… (default: ca.toml's
    /// [storage] database, else DIR/ward.db); the one `ward ca serve` uses.
    #[arg(long, env = "WARD_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
    /// Where the console is reached: https://HOST:PORT of `ward ca serve`
    /// (its --listen or --console-listen address).
    #[arg(long, default_value = "https://127.0.0.1:8443")]
    url: String,
    /// How long the link works (at most 1h); it works once.
    #[arg(long, default_value = "5m", value_parser = duration_arg)]
    expires_in: Duration,
}

#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// CA directory made by `ward ca init`.
    #[arg(long)]
    dir: PathBuf,
    /// HTTPS listen address (port 0 picks a free port; the address is printed).
    #[arg(long, default_value = "127.0.0.1:8443")]
    listen: String,
    /// Also serve the public objects (roots, CRL, OCSP) over plain HTTP here.
    #[arg(long)]
    http_listen: Option<String>,
    /// Also serve the web console (only /console/) over HTTPS here; it is
    /// always on the main listener too.
    #[arg(long, value_name = "ADDR")]
    console_listen: Option<String>,
    /// Extra DNS name or IP address for the CA's server certificate (repeatable).
    #[arg(long)]
    san: Vec<String>,
    /// Database: a SQLite file path or postgres://… (default: ca.toml's
    /// [storage] database, else DIR/ward.db).
    #[arg(long, env = "WARD_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
    /// Create the store if there is none (a new PostgreSQL database). Without
    /// it a missing or empty store is refused: it would forget every token,
    /// certificate and revocation, and restart CRL numbers.
    #[arg(long)]
    init_storage: bool,
    /// Where audit lines go: stdout, stderr or a file path.
    #[arg(long, default_value = "stdout")]
    audit_log: String,
    /// Log format on stderr.
    #[arg(long, default_value = "text")]
    log_format: ward_telemetry::LogFormat,
    /// Serve the API with this PEM certificate chain (leaf first) instead of
    /// one the CA issues itself; re-read when it changes. Needs --tls-key.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key of --tls-cert (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// The API's certificate from an ACME CA instead (docs/acme-client.md).
    #[command(flatten)]
    acme: super::acme_client::AcmeClientArgs,
    /// Start even if private keys are readable by group or others, or the
    /// CA directory is writable by them.
    #[arg(long)]
    allow_insecure_permissions: bool,
    /// Warn (log, ward_ca_intermediate_expiring, /readyz) when the signing
    /// intermediate expires within this margin.
    #[arg(long, default_value = "30d", value_parser = duration_arg)]
    intermediate_warning: Duration,
    /// How often to re-read the rotation state from the store (the CA also
    /// wakes at each scheduled switch).
    #[arg(long, default_value = "1s", value_parser = duration_arg)]
    rotation_poll: Duration,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Directory to create the CA in (created if missing; must not hold a CA).
    #[arg(long)]
    dir: PathBuf,
    /// SPIFFE trust domain, e.g. example.org.
    #[arg(long)]
    trust_domain: TrustDomain,
    /// Organisation name in the CA subjects.
    #[arg(long, default_value = "Ward")]
    name: String,
    /// Key type for the CA keys (ecdsa-p256, ecdsa-p384, ed25519, rsa-2048/3072/4096, ml-dsa-44/65/87).
    #[arg(long, default_value = "ecdsa-p256")]
    key_type: KeyType,
    /// Root lifetime.
    #[arg(long, default_value = "3650d", value_parser = duration_arg)]
    root_validity: Duration,
    /// Intermediate lifetime (capped at the root's).
    #[arg(long, default_value = "365d", value_parser = duration_arg)]
    intermediate_validity: Duration,
    /// Write the root key to FILE instead of DIR/root.key, to keep it offline.
    #[arg(long, value_name = "FILE")]
    offline_root: Option<PathBuf>,
    /// Constrain the intermediate to these DNS subtrees (repeatable).
    #[arg(long, value_name = "DOMAIN")]
    permit_dns: Vec<String>,
    /// The CA's store, created now and written into ca.toml: a SQLite file
    /// path or postgres://… (default DIR/ward.db).
    #[arg(long)]
    database: Option<String>,
    /// Make the root, intermediate and root OCSP responder keys in a PKCS#11
    /// token reached through this module (e.g. libsofthsm2.so); ca.toml
    /// names them with RFC 7512 URIs. Needs --pkcs11-token and --pin-file.
    #[arg(long, value_name = "PATH", requires_all = ["pkcs11_token", "pin_file"], conflicts_with = "offline_root")]
    pkcs11_module: Option<PathBuf>,
    /// Label of the PKCS#11 token to make the keys in.
    #[arg(long, value_name = "LABEL", requires = "pkcs11_module")]
    pkcs11_token: Option<String>,
    /// File holding the token's user PIN (one line).
    #[arg(long, value_name = "FILE", requires = "pkcs11_module")]
    pin_file: Option<PathBuf>,
}

pub(crate) async fn run(cmd: CaCommand) -> anyhow::Result<Outcome> {
    match cmd {
        CaCommand::Init(args) => init(args).await,
        CaCommand::Serve(args) => serve(*args).await,
        CaCommand::ConsoleLogin(args) => console_login(args).await,
        CaCommand::Rotate(cmd) => super::rotate::run(cmd).await,
        CaCommand::Intermediate(cmd) => super::rotate::run_external(cmd).await,
    }
}

async fn init(args: InitArgs) -> anyhow::Result<Outcome> {
    let dir = CaDir::new(&args.dir);
    // ca.toml is read from anywhere: name the module and PIN file absolutely.
    let absolute = |p: PathBuf, what: &str| {
        std::path::absolute(&p).with_context(|| format!("resolving the {what} {}", p.display()))
    };
    let pkcs11 = match (args.pkcs11_module, args.pkcs11_token, args.pin_file) {
        (Some(module), Some(token), Some(pin)) => Some(ward_ca::dir::Pkcs11Init {
            module: absolute(module, "PKCS#11 module")?,
            token,
            pin_file: absolute(pin, "PIN file")?,
        }),
        _ => None,
    };
    let in_token = pkcs11.is_some();
    let opts = InitOptions {
        trust_domain: args.trust_domain,
        name: args.name,
        key_type: args.key_type,
        root_validity: args.root_validity,
        intermediate_validity: args.intermediate_validity,
        offline_root: args.offline_root,
        permitted_dns: args.permit_dns,
        database: args.database,
        pkcs11,
    };
    let report = dir
        .init_with_store(&opts, OffsetDateTime::now_utc())
        .await
        .with_context(|| format!("cannot create a CA in {}", args.dir.display()))?;
    outln!("Created a Ward CA in {}", args.dir.display());
    for file in &report.files {
        outln!("  {}", file.display());
    }
    let url = dir.database_url(&dir.config()?, None);
    // Never echo a PostgreSQL URL: it may hold a password.
    let store = if url.starts_with("postgres") {
        "the PostgreSQL database of ca.toml [storage]".to_owned()
    } else {
        url
    };
    outln!("Store:            {store} (admin certificate recorded)");
    outln!("Trust domain:     {}", opts.trust_domain);
    outln!("Admin identity:   {}", report.admin_spiffe_id);
    outln!("Root fingerprint: {}", report.root_fingerprint);
    if opts.offline_root.is_some() {
        outln!("The root key is outside the CA directory: move it offline.");
    }
    if in_token {
        outln!(
            "CA keys:          in the PKCS#11 token (sensitive, not extractable; see ca.toml [keys])"
        );
    }
    Ok(Outcome::Success)
}

async fn serve(args: ServeArgs) -> anyhow::Result<Outcome> {
    ward_telemetry::init_tracing(args.log_format, "info")?;
    let config = ward_ca::serve::ServeConfig {
        dir: args.dir,
        listen: args.listen,
        http_listen: args.http_listen,
        console_listen: args.console_listen,
        sans: args.san,
        database: args.database,
        init_storage: args.init_storage,
        audit: args.audit_log,
        tls_cert: args.tls_cert,
        tls_key: args.tls_key,
        allow_insecure_permissions: args.allow_insecure_permissions,
        intermediate_warning: args.intermediate_warning,
        rotation_poll: args.rotation_poll,
        acme: args.acme.settings(),
    };
    ward_ca::serve::run(
        config,
        |bound| {
            // Scripts and tests wait for these lines.
            eprintln!("ward ca: listening on https://{}", bound.https);
            if let Some(http) = bound.http {
                eprintln!("ward ca: listening on http://{http}");
            }
            if let Some(console) = bound.console {
                eprintln!("ward ca: console on https://{console}/console/");
            }
        },
        super::shutdown_signal(),
    )
    .await
    .context("the CA server failed")?;
    Ok(Outcome::Success)
}

/// Prints a one-time console link on stdout (alone, for scripts), its
/// expiry on stderr.
async fn console_login(args: ConsoleLoginArgs) -> anyhow::Result<Outcome> {
    let url = args.url.trim_end_matches('/');
    if !url.starts_with("https://") {
        anyhow::bail!("--url must be the console's https:// address, e.g. https://ca.example:8443");
    }
    let dir = CaDir::new(&args.dir);
    let config = dir.config()?;
    let store = dir.open_store(&config, args.database.as_deref()).await?;
    let now = OffsetDateTime::now_utc();
    let link = ward_ca::console::create_login_link(store.as_ref(), args.expires_in, now).await;
    store.close().await;
    let link = link.context("cannot make a console login link")?;
    outln!("{}", link.url(url));
    eprintln!(
        "ward ca: the link works once, until {} (UTC); keep it secret.",
        ward_pki::issue::rfc3339(link.expires_at)
    );
    Ok(Outcome::Success)
}
