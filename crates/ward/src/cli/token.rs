//! `ward token …`: bootstrap token administration, on a local CA directory
//! (`--dir`) or through a running CA's admin API (`--ca URL` with the admin
//! client certificate).
//!
//! The local form works while `ward ca serve` runs: both open the same
//! database, and every write is a transaction.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Subcommand};
use hyper::Method;
use rustls_pki_types::PrivateKeyDer;
use rustls_pki_types::pem::PemObject;
use time::OffsetDateTime;
use ward_ca::CaDir;
use ward_ca::authority::{Authority, Policy};
use ward_ca::http::admin::{
    CreateTokenRequest, CreatedTokenView, RevokedToken, TokenList, TokenView,
};
use ward_client::{CaClient, Identity};

use super::{Format, Outcome};

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Create a token; it is printed once and never retrievable again.
    Create(CreateArgs),
    /// List tokens (never their secrets).
    List(ListArgs),
    /// Revoke a token, optionally with every certificate issued from it.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
struct Local {
    /// CA directory made by `ward ca init` (local mode).
    #[arg(long, required_unless_present = "ca", conflicts_with = "ca")]
    dir: Option<PathBuf>,
    /// Database URL, if not DIR/ward.db (local mode).
    #[arg(long, env = "WARD_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
    /// URL of a running CA, https://HOST:PORT (remote mode, admin mTLS).
    #[arg(long, requires_all = ["admin_cert", "admin_key"])]
    ca: Option<String>,
    /// Admin client certificate (DIR/admin.crt).
    #[arg(long)]
    admin_cert: Option<PathBuf>,
    /// Admin private key (DIR/admin.key).
    #[arg(long)]
    admin_key: Option<PathBuf>,
    /// Roots to verify the CA with (default: root.crt beside the admin certificate).
    #[arg(long)]
    ca_bundle: Option<PathBuf>,
}

/// Where token operations go.
enum Backend {
    Local(Box<Authority>),
    Remote(CaClient),
}

impl Local {
    async fn open(&self) -> anyhow::Result<Backend> {
        match (&self.dir, &self.ca) {
            (Some(_), _) => Ok(Backend::Local(Box::new(authority(self).await?))),
            (None, Some(url)) => {
                let cert = self
                    .admin_cert
                    .as_deref()
                    .context("--admin-cert is required with --ca")?;
                let key = self
                    .admin_key
                    .as_deref()
                    .context("--admin-key is required with --ca")?;
                let bundle = match &self.ca_bundle {
                    Some(b) => b.clone(),
                    None => cert.with_file_name("root.crt"),
                };
                let roots = ward_ca::dir::read_certs(&bundle)?;
                let chain = ward_ca::dir::read_certs(cert)?;
                let key_pem = zeroize::Zeroizing::new(
                    std::fs::read(key).with_context(|| format!("reading {}", key.display()))?,
                );
                let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|_| {
                    anyhow::anyhow!("{} holds no usable private key", key.display())
                })?;
                Ok(Backend::Remote(CaClient::new(
                    url,
                    &roots,
                    Some(Identity { chain, key }),
                )?))
            }
            (None, None) => anyhow::bail!("either --dir or --ca is required"),
        }
    }
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    #[command(flatten)]
    local: Local,
    /// The SPIFFE ID certificates from this token carry.
    #[arg(long)]
    spiffe_id: String,
    /// DNS SAN to bind (repeatable).
    #[arg(long)]
    dns: Vec<String>,
    /// Certificate lifetime (default: ca.toml's default_ttl).
    #[arg(long)]
    cert_ttl: Option<String>,
    /// How long the token stays usable.
    #[arg(long, default_value = "24h")]
    expires_in: String,
    /// Certificates it may issue; 0 = unlimited until it expires.
    #[arg(long, default_value_t = 1)]
    uses: u32,
    /// Certificate profile: server, client or peer.
    #[arg(long, default_value = "peer")]
    profile: String,
    /// Source network allowed to use the token (repeatable; default any).
    #[arg(long = "allow-cidr")]
    allow_cidr: Vec<String>,
    /// Output format (text prints the token alone on stdout).
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    local: Local,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    #[command(flatten)]
    local: Local,
    /// The token id (tok_…).
    id: String,
    /// Also revoke every certificate issued from the token.
    #[arg(long)]
    with_certificates: bool,
}

async fn authority(local: &Local) -> anyhow::Result<Authority> {
    let dir = CaDir::new(local.dir.as_deref().context("--dir is required")?);
    let config = dir.config()?;
    let url = local
        .database
        .clone()
        .unwrap_or_else(|| dir.path().join("ward.db").display().to_string());
    let store = ward_store::connect(&url)
        .await
        .context("opening the CA database")?;
    Ok(Authority::new(
        Policy {
            trust_domain: config.ca.trust_domain.clone(),
            default_ttl: config.issuance.default_ttl()?,
            max_ttl: config.issuance.max_ttl()?,
        },
        dir.intermediate_issuer()?,
        &dir.roots()?,
        Arc::clone(&store),
    ))
}

pub(crate) async fn run(cmd: TokenCommand) -> anyhow::Result<Outcome> {
    match cmd {
        TokenCommand::Create(args) => create(args).await,
        TokenCommand::List(args) => list(args).await,
        TokenCommand::Revoke(args) => revoke(args).await,
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<Outcome> {
    let request = CreateTokenRequest {
        spiffe_id: args.spiffe_id,
        dns: args.dns,
        cert_ttl: args.cert_ttl,
        expires_in: Some(args.expires_in),
        uses: Some(args.uses),
        profile: Some(args.profile),
        allowed_cidrs: args.allow_cidr,
    };
    let view = match args.local.open().await? {
        Backend::Local(authority) => {
            let spec = request.into_spec().map_err(anyhow::Error::msg)?;
            let created = authority
                .create_token(&spec, OffsetDateTime::now_utc())
                .await
                .context("cannot create the token")?;
            authority.store().close().await;
            CreatedTokenView {
                token: created.secret.expose().to_owned(),
                info: TokenView::from(&created.token),
            }
        }
        Backend::Remote(client) => client
            .json(Method::POST, "/v1/admin/tokens", Some(&request))
            .await
            .context("cannot create the token")?,
    };
    match args.format {
        Format::Json => println!("{}", serde_json::to_string_pretty(&view)?),
        Format::Text => {
            println!("{}", view.token);
            let uses = match view.info.max_uses {
                0 => "unlimited uses".to_owned(),
                1 => "1 use".to_owned(),
                n => format!("{n} uses"),
            };
            eprintln!(
                "token {} for {} ({}, certificates {}s, {uses}, expires {})",
                view.info.id,
                view.info.spiffe_id,
                view.info.profile,
                view.info.cert_ttl_seconds,
                view.info.expires_at
            );
            eprintln!("This is the only time the token is shown.");
        }
    }
    Ok(Outcome::Success)
}

async fn list(args: ListArgs) -> anyhow::Result<Outcome> {
    let tokens: Vec<TokenView> = match args.local.open().await? {
        Backend::Local(authority) => {
            let tokens = authority
                .list_tokens()
                .await?
                .iter()
                .map(TokenView::from)
                .collect();
            authority.store().close().await;
            tokens
        }
        Backend::Remote(client) => {
            client
                .json::<TokenList>(Method::GET, "/v1/admin/tokens", None::<&()>)
                .await?
                .tokens
        }
    };
    match args.format {
        Format::Json => println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "tokens": tokens }))?
        ),
        Format::Text => {
            println!(
                "{:<21} {:<8} {:<9} {:<21} SPIFFE ID",
                "ID", "PROFILE", "USES", "EXPIRES"
            );
            for t in &tokens {
                let uses = if t.max_uses == 0 {
                    format!("{}/∞", t.uses)
                } else {
                    format!("{}/{}", t.uses, t.max_uses)
                };
                let state = if t.revoked_at.is_some() {
                    " (revoked)"
                } else {
                    ""
                };
                println!(
                    "{:<21} {:<8} {:<9} {:<21} {}{state}",
                    t.id, t.profile, uses, t.expires_at, t.spiffe_id
                );
            }
        }
    }
    Ok(Outcome::Success)
}

async fn revoke(args: RevokeArgs) -> anyhow::Result<Outcome> {
    let n = match args.local.open().await? {
        Backend::Local(authority) => {
            let n = authority
                .revoke_token(&args.id, args.with_certificates, OffsetDateTime::now_utc())
                .await
                .with_context(|| format!("cannot revoke {}", args.id))?;
            authority.store().close().await;
            n
        }
        Backend::Remote(client) => {
            let path = format!(
                "/v1/admin/tokens/{}?with_certificates={}",
                args.id, args.with_certificates
            );
            client
                .json::<RevokedToken>(Method::DELETE, &path, None::<&()>)
                .await
                .with_context(|| format!("cannot revoke {}", args.id))?
                .certificates_revoked
        }
    };
    if args.with_certificates {
        println!("revoked {} and {n} certificate(s) issued from it", args.id);
    } else {
        println!("revoked {}", args.id);
    }
    Ok(Outcome::Success)
}
