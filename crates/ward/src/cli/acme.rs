//! `ward acme eab create`: external account binding keys for the CA's ACME
//! server (RFC 8555 §7.3.4), made in the CA directory's database. The HMAC
//! key is printed once; the CA keeps it to check bindings.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};
use time::OffsetDateTime;
use ward_ca::CaDir;
use ward_ca::dir::Storage;

use super::Outcome;

/// `ward acme …`.
#[derive(Debug, Subcommand)]
pub(crate) enum AcmeCommand {
    /// External account binding keys.
    #[command(subcommand)]
    Eab(EabCommand),
}

/// `ward acme eab …`.
#[derive(Debug, Subcommand)]
pub(crate) enum EabCommand {
    /// Create a key for one ACME provisioner; prints its key id and HMAC key once.
    Create(EabCreateArgs),
}

/// `ward acme eab create` arguments.
#[derive(Debug, Args)]
pub(crate) struct EabCreateArgs {
    /// CA directory made by `ward ca init`.
    #[arg(long)]
    dir: PathBuf,
    /// Database URL, if not ca.toml's (default DIR/ward.db).
    #[arg(long, env = "WARD_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
    /// The provisioner (`[acme.provisioners.NAME]` in ca.toml).
    #[arg(long)]
    provisioner: String,
}

/// Runs `ward acme …`.
pub(crate) async fn run(cmd: AcmeCommand) -> anyhow::Result<Outcome> {
    match cmd {
        AcmeCommand::Eab(EabCommand::Create(args)) => create(args).await,
    }
}

async fn create(args: EabCreateArgs) -> anyhow::Result<Outcome> {
    let dir = CaDir::new(&args.dir);
    let config = dir.config()?;
    let authority = dir
        .open_authority(
            &config,
            Storage::Existing {
                database: args.database.as_deref(),
            },
        )
        .await?;
    let created = ward_ca::acme::create_eab_key(
        authority.store().as_ref(),
        &config,
        &args.provisioner,
        OffsetDateTime::now_utc(),
    )
    .await
    .context("cannot create an EAB key");
    authority.store().close().await;
    let created = created?;
    outln!("key_id: {}", created.key_id);
    outln!("hmac_key: {}", created.hmac_key);
    outln!(
        "# shown once; e.g. lego --eab --kid {} --hmac {} …",
        created.key_id,
        created.hmac_key
    );
    Ok(Outcome::Success)
}
