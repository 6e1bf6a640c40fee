//! `ward entry …`: registration entries for node attestation, on a local CA
//! directory (`--dir`) or through a running CA's admin API (`--ca URL` with
//! the admin client certificate). See docs/attestation.md.

use anyhow::Context;
use clap::{Args, Subcommand};
use hyper::Method;
use time::OffsetDateTime;
use ward_api::{CreateEntryRequest, EntryList, EntryView, paths};
use ward_ca::authority::entries::{EntrySpec, entry_view};

use super::admin::{AdminTarget, Backend};
use super::{Format, Outcome};

#[derive(Debug, Subcommand)]
pub(crate) enum EntryCommand {
    /// Register a workload: selectors (all must match) → SPIFFE ID, served
    /// by one node agent.
    Create(CreateArgs),
    /// List registration entries.
    List(ListArgs),
    /// Delete a registration entry.
    Delete(DeleteArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    #[command(flatten)]
    local: AdminTarget,
    /// The SPIFFE ID a matching workload gets.
    #[arg(long)]
    spiffe_id: String,
    /// Selector (repeatable, all must match): unix:uid:N, unix:gid:N,
    /// unix:path:/EXE, unix:sha256:HEX, unix:cgroup:/PATH.
    #[arg(long = "selector", required = true)]
    selectors: Vec<String>,
    /// SPIFFE ID of the node agent allowed to serve this entry (its own
    /// certificate's ID).
    #[arg(long)]
    node: String,
    /// Allow a reserved SPIFFE ID (spiffe://TD/ward/...), refused otherwise.
    #[arg(long)]
    allow_reserved: bool,
    /// Output format (text prints the entry id on stdout).
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
pub(crate) struct DeleteArgs {
    #[command(flatten)]
    local: AdminTarget,
    /// The entry id (ent_…).
    id: String,
}

pub(crate) async fn run(cmd: EntryCommand) -> anyhow::Result<Outcome> {
    match cmd {
        EntryCommand::Create(args) => create(args).await,
        EntryCommand::List(args) => list(args).await,
        EntryCommand::Delete(args) => delete(args).await,
    }
}

async fn create(args: CreateArgs) -> anyhow::Result<Outcome> {
    let request = CreateEntryRequest {
        spiffe_id: args.spiffe_id,
        selectors: args.selectors,
        node: args.node,
        allow_reserved: args.allow_reserved,
    };
    let view: EntryView = match args.local.open().await? {
        Backend::Local(authority) => {
            let spec = EntrySpec {
                spiffe_id: request.spiffe_id,
                selectors: request.selectors,
                node: request.node,
                allow_reserved: request.allow_reserved,
            };
            let entry = authority
                .create_entry(&spec, OffsetDateTime::now_utc())
                .await
                .context("cannot create the entry");
            authority.store().close().await;
            entry_view(&entry?)
        }
        Backend::Remote(client) => client
            .json(Method::POST, paths::ADMIN_ENTRIES, Some(&request))
            .await
            .context("cannot create the entry")?,
    };
    match args.format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&view)?),
        Format::Text => {
            outln!("{}", view.id);
            eprintln!(
                "entry {} for {} on node {}: {}",
                view.id,
                view.spiffe_id,
                view.node,
                view.selectors.join(" ")
            );
        }
    }
    Ok(Outcome::Success)
}

async fn list(args: ListArgs) -> anyhow::Result<Outcome> {
    let entries: Vec<EntryView> = match args.local.open().await? {
        Backend::Local(authority) => {
            let entries = authority.list_entries().await;
            authority.store().close().await;
            entries?.iter().map(entry_view).collect()
        }
        Backend::Remote(client) => {
            client
                .json::<EntryList>(Method::GET, paths::ADMIN_ENTRIES, None::<&()>)
                .await?
                .entries
        }
    };
    match args.format {
        Format::Json => outln!("{}", serde_json::to_string_pretty(&EntryList { entries })?),
        Format::Text => {
            outln!("{:<21} {:<40} {:<40} SELECTORS", "ID", "SPIFFE ID", "NODE");
            for e in &entries {
                outln!(
                    "{:<21} {:<40} {:<40} {}",
                    e.id,
                    e.spiffe_id,
                    e.node,
                    e.selectors.join(" ")
                );
            }
        }
    }
    Ok(Outcome::Success)
}

async fn delete(args: DeleteArgs) -> anyhow::Result<Outcome> {
    match args.local.open().await? {
        Backend::Local(authority) => {
            let result = authority.delete_entry(&args.id).await;
            authority.store().close().await;
            result.with_context(|| format!("cannot delete {}", args.id))?;
        }
        Backend::Remote(client) => {
            client
                .json::<serde_json::Value>(
                    Method::DELETE,
                    &paths::admin_entry(&args.id),
                    None::<&()>,
                )
                .await
                .with_context(|| format!("cannot delete {}", args.id))?;
        }
    }
    outln!("deleted {}", args.id);
    Ok(Outcome::Success)
}
