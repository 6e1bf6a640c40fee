//! `ward token …`: bootstrap token administration, on a local CA directory
//! (`--dir`) or through a running CA's admin API (`--ca URL` with the admin
//! client certificate).
//!
//! The local form works while `ward ca serve` runs: both open the same
//! database, and every write is a transaction.

use anyhow::Context;
use clap::{Args, Subcommand};
use hyper::Method;
use time::OffsetDateTime;
use ward_api::{CreateTokenRequest, CreatedTokenView, RevokedToken, TokenList, TokenView, paths};
use ward_ca::wire::{created_token_view, token_spec, token_view};

use super::admin::{AdminTarget, Backend};
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
pub(crate) struct CreateArgs {
    #[command(flatten)]
    local: AdminTarget,
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
    /// Subject common name to bind: a CSR asking for exactly this CN gets it
    /// (PostgreSQL `clientcert=verify-full` and other CN readers).
    #[arg(long)]
    cn: Option<String>,
    /// Allow a reserved SPIFFE ID (spiffe://TD/ward/...), refused otherwise.
    #[arg(long)]
    allow_reserved: bool,
    /// Output format (text prints the token alone on stdout).
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    local: AdminTarget,
    /// Output format.
    #[arg(long, value_enum, default_value_t)]
    format: Format,
}

#[derive(Debug, Args)]
pub(crate) struct RevokeArgs {
    #[command(flatten)]
    local: AdminTarget,
    /// The token id (tok_…).
    id: String,
    /// Also revoke every certificate issued from the token.
    #[arg(long)]
    with_certificates: bool,
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
        cn: args.cn,
        allow_reserved: args.allow_reserved,
    };
    let view: CreatedTokenView = match args.local.open().await? {
        Backend::Local(authority) => {
            let spec = token_spec(request).map_err(anyhow::Error::msg)?;
            let created = authority
                .create_token(&spec, OffsetDateTime::now_utc())
                .await
                .context("cannot create the token")?;
            authority.store().close().await;
            created_token_view(&created)
        }
        Backend::Remote(client) => client
            .json(Method::POST, paths::ADMIN_TOKENS, Some(&request))
            .await
            .context("cannot create the token")?,
    };
    match args.format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&view)?),
        Format::Text => {
            outln!("{}", view.token);
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
                .map(token_view)
                .collect();
            authority.store().close().await;
            tokens
        }
        Backend::Remote(client) => {
            client
                .json::<TokenList>(Method::GET, paths::ADMIN_TOKENS, None::<&()>)
                .await?
                .tokens
        }
    };
    match args.format {
        Format::Json => outln!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "tokens": tokens }))?
        ),
        Format::Text => {
            outln!(
                "{:<21} {:<8} {:<9} {:<21} SPIFFE ID",
                "ID",
                "PROFILE",
                "USES",
                "EXPIRES"
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
                outln!(
                    "{:<21} {:<8} {:<9} {:<21} {}{state}",
                    t.id,
                    t.profile,
                    uses,
                    t.expires_at,
                    t.spiffe_id
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
            let path = paths::admin_token(&args.id, args.with_certificates);
            client
                .json::<RevokedToken>(Method::DELETE, &path, None::<&()>)
                .await
                .with_context(|| format!("cannot revoke {}", args.id))?
                .certificates_revoked
        }
    };
    if args.with_certificates {
        outln!("revoked {} and {n} certificate(s) issued from it", args.id);
    } else {
        outln!("revoked {}", args.id);
    }
    Ok(Outcome::Success)
}
