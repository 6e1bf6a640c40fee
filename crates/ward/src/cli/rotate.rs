//! `ward ca rotate …`: CA rotation (issue 20, docs/rotation.md).

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use clap::{Args, Subcommand};
use time::OffsetDateTime;
use ward_ca::CaDir;
use ward_ca::dir::roots::{RootRotateOptions, resolve_trust};
use ward_ca::dir::rotation::{RotateOptions, resolve};

use super::{Outcome, duration_arg};

#[derive(Debug, Subcommand)]
pub(crate) enum RotateCommand {
    /// Make the next intermediate with the root key: published at once by
    /// every `ward ca serve` sharing the store, signing after --overlap.
    Intermediate(IntermediateArgs),
    /// Make the next root (a new key, cross-signed both ways with the
    /// current root) and its first intermediate: the root joins the trust
    /// bundle at once, its intermediate signs after --overlap, and the old
    /// root leaves the bundle once nothing chaining to it can be valid.
    Root(RootArgs),
    /// Cancel the pending intermediate (or root) before its switch (after
    /// the switch it is refused: rotate again instead).
    Cancel(StoreArgs),
    /// Show every rotated intermediate and root, and which ones are in use.
    Status(StoreArgs),
    /// Make a new JWT-SVID signing key; the old one stays published in the
    /// bundle until every token it signed has expired. A running `ward ca
    /// serve` picks it up within seconds.
    Jwt(JwtArgs),
}

#[derive(Debug, Args)]
pub(crate) struct JwtArgs {
    /// CA directory made by `ward ca init`.
    #[arg(long)]
    dir: PathBuf,
}

#[derive(Debug, Args)]
pub(crate) struct StoreArgs {
    /// CA directory made by `ward ca init`.
    #[arg(long)]
    dir: PathBuf,
    /// Database: a SQLite file path or postgres://… (default: ca.toml's
    /// [storage] database, else DIR/ward.db); the one `ward ca serve` uses.
    #[arg(long, env = "WARD_DATABASE_URL", hide_env_values = true)]
    database: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct IntermediateArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// How long the next intermediate is published before it signs: long
    /// enough for every client to have fetched it.
    #[arg(long, default_value = "24h", value_parser = duration_arg)]
    overlap: Duration,
    /// Lifetime of the next intermediate (default: the current one's).
    #[arg(long, value_parser = duration_arg)]
    validity: Option<Duration>,
    /// The root key file, when the root is offline (`ca init --offline-root`).
    #[arg(long, value_name = "FILE")]
    root_key: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct RootArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// How long the next root is in the trust bundle before its
    /// intermediate signs: long enough for every party to have renewed
    /// (each renewal delivers the bundle).
    #[arg(long, default_value = "24h", value_parser = duration_arg)]
    overlap: Duration,
    /// Lifetime of the next root (default: the current root's).
    #[arg(long, value_parser = duration_arg)]
    validity: Option<Duration>,
    /// Lifetime of its first intermediate (default: the current one's).
    #[arg(long, value_parser = duration_arg)]
    intermediate_validity: Option<Duration>,
    /// The current root's key file, when the root is offline.
    #[arg(long, value_name = "FILE")]
    root_key: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum IntermediateCommand {
    /// Make the next intermediate's key (DIR/intermediates/pending.key) and
    /// print a CSR for the external root to sign.
    Csr(CsrArgs),
    /// Install the certificate the external root signed for that key as
    /// the next intermediate.
    Install(InstallArgs),
}

#[derive(Debug, Args)]
pub(crate) struct CsrArgs {
    /// CA directory made by `ward ca init`.
    #[arg(long)]
    dir: PathBuf,
    /// Write the CSR here instead of stdout.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct InstallArgs {
    #[command(flatten)]
    store: StoreArgs,
    /// The certificate the root signed (PEM or DER).
    #[arg(long, value_name = "FILE")]
    cert: PathBuf,
    /// How long it is published before it signs.
    #[arg(long, default_value = "24h", value_parser = duration_arg)]
    overlap: Duration,
}

pub(crate) async fn run_external(cmd: IntermediateCommand) -> anyhow::Result<Outcome> {
    match cmd {
        IntermediateCommand::Csr(args) => {
            let csr = CaDir::new(&args.dir)
                .intermediate_csr()
                .context("cannot make the intermediate CSR")?;
            match &args.out {
                Some(path) => std::fs::write(path, &csr)
                    .with_context(|| format!("writing {}", path.display()))?,
                None => outln!("{}", csr.trim_end()),
            }
            Ok(Outcome::Success)
        }
        IntermediateCommand::Install(args) => {
            let dir = CaDir::new(&args.store.dir);
            let config = dir.config()?;
            let store = dir
                .open_store(&config, args.store.database.as_deref())
                .await?;
            let now = OffsetDateTime::now_utc();
            let made = dir
                .install_intermediate(store.as_ref(), &args.cert, args.overlap, now)
                .await;
            store.close().await;
            let next = made.context("cannot install the intermediate")?;
            report(&args.store.dir, &next);
            Ok(Outcome::Success)
        }
    }
}

pub(crate) async fn run(cmd: RotateCommand) -> anyhow::Result<Outcome> {
    match cmd {
        RotateCommand::Intermediate(args) => intermediate(args).await,
        RotateCommand::Root(args) => root(args).await,
        RotateCommand::Cancel(args) => cancel(args).await,
        RotateCommand::Status(args) => status(args).await,
        RotateCommand::Jwt(args) => jwt(&args),
    }
}

fn jwt(args: &JwtArgs) -> anyhow::Result<Outcome> {
    let dir = CaDir::new(&args.dir);
    // The directory must be a CA's (ca.toml readable), not any folder.
    dir.config()?;
    let done = dir
        .rotate_jwt_key(OffsetDateTime::now_utc())
        .context("cannot rotate the JWT key")?;
    outln!("New JWT key: {}", done.new_kid);
    if let Some(old) = &done.old_kid {
        outln!(
            "  retired:   {old} (published until {} UTC, in {}/{}/{old}.json)",
            ward_pki::issue::rfc3339(done.retire_after),
            args.dir.display(),
            ward_ca::dir::jwt_keys::PREVIOUS_DIR
        );
    }
    if done.pruned > 0 {
        outln!("  removed {} expired retired key(s)", done.pruned);
    }
    outln!("A running `ward ca serve` signs with the new key within seconds.");
    Ok(Outcome::Success)
}

async fn intermediate(args: IntermediateArgs) -> anyhow::Result<Outcome> {
    let dir = CaDir::new(&args.store.dir);
    let config = dir.config()?;
    let store = dir
        .open_store(&config, args.store.database.as_deref())
        .await?;
    let opts = RotateOptions {
        overlap: args.overlap,
        validity: args.validity,
        root_key: args.root_key,
    };
    let now = OffsetDateTime::now_utc();
    let made = dir.rotate_intermediate(store.as_ref(), &opts, now).await;
    store.close().await;
    let next = made.context("cannot rotate the intermediate")?;
    report(&args.store.dir, &next);
    Ok(Outcome::Success)
}

async fn root(args: RootArgs) -> anyhow::Result<Outcome> {
    let dir = CaDir::new(&args.store.dir);
    let config = dir.config()?;
    let store = dir
        .open_store(&config, args.store.database.as_deref())
        .await?;
    let opts = RootRotateOptions {
        overlap: args.overlap,
        validity: args.validity,
        intermediate_validity: args.intermediate_validity,
        root_key: args.root_key,
    };
    let now = OffsetDateTime::now_utc();
    let made = dir.rotate_root(store.as_ref(), &opts, now).await;
    store.close().await;
    let done = made.context("cannot rotate the root")?;
    let d = args.store.dir.display();
    let fp = &done.root.fingerprint;
    outln!("Next root: {fp}");
    outln!("  certificate:     {d}/roots/{fp}.crt");
    outln!("  cross-signed:    {d}/roots/{fp}.new-with-old.crt (by the current root)");
    outln!("                   {d}/roots/{fp}.old-with-new.crt (the current root by it)");
    outln!("  OCSP responder:  {d}/roots/{fp}-ocsp.crt (answers about its intermediates)");
    outln!("  distributed:     now (GET /v1/roots, ca_bundle, the SPIFFE bundle)");
    outln!("Its intermediate: {}", done.intermediate.fingerprint);
    outln!(
        "  signs from:      {} (UTC)",
        ward_pki::issue::rfc3339(done.intermediate.signs_from)
    );
    outln!(
        "  root expires:    {} (UTC)",
        ward_pki::issue::rfc3339(done.root.not_after)
    );
    outln!("Cancel before the switch with: ward ca rotate cancel --dir {d}");
    Ok(Outcome::Success)
}

fn report(dir: &std::path::Path, next: &ward_store::CaIntermediate) {
    outln!("Next intermediate: {}", next.fingerprint);
    outln!(
        "  certificate:     {}/intermediates/{}.crt",
        dir.display(),
        next.fingerprint
    );
    outln!("  published:       now (GET /v1/intermediates, OCSP)");
    outln!(
        "  signs from:      {} (UTC)",
        ward_pki::issue::rfc3339(next.signs_from)
    );
    outln!(
        "  expires:         {} (UTC)",
        ward_pki::issue::rfc3339(next.not_after)
    );
    outln!(
        "Cancel before the switch with: ward ca rotate cancel --dir {}",
        dir.display()
    );
}

async fn cancel(args: StoreArgs) -> anyhow::Result<Outcome> {
    let dir = CaDir::new(&args.dir);
    let config = dir.config()?;
    let store = dir.open_store(&config, args.database.as_deref()).await?;
    let cancelled = store
        .cancel_pending_intermediates(OffsetDateTime::now_utc())
        .await;
    store.close().await;
    match cancelled.context("cannot cancel the rotation")? {
        0 => anyhow::bail!(
            "no rotation is pending: none was made, it was cancelled, or it has already switched"
        ),
        n => {
            outln!("Cancelled {n} pending intermediate(s); the current one keeps signing.");
            Ok(Outcome::Success)
        }
    }
}

async fn status(args: StoreArgs) -> anyhow::Result<Outcome> {
    let dir = CaDir::new(&args.dir);
    let config = dir.config()?;
    let store = dir.open_store(&config, args.database.as_deref()).await?;
    let rows = store.intermediates().await;
    let roots = store.roots().await;
    store.close().await;
    let rows = rows.context("cannot read the rotation state")?;
    let roots = roots.context("cannot read the rotation state")?;
    let now = OffsetDateTime::now_utc();
    let resolved = resolve(&rows, ward_ca::dir::policy(&config)?.max_ttl, now);
    match &resolved.signing {
        None => outln!("Signing:   intermediate.crt (the directory's own)"),
        Some(r) => outln!("Signing:   intermediates/{}.crt", r.fingerprint),
    }
    for r in &rows {
        let state = if r.cancelled_at.is_some() {
            "cancelled"
        } else if r.signs_from > now {
            "pending"
        } else if resolved.signing.as_ref() == Some(r) {
            "signing"
        } else if resolved.others.contains(r) {
            "retiring"
        } else {
            "retired"
        };
        outln!(
            "{state:<10} {} signs from {} expires {}",
            r.fingerprint,
            ward_pki::issue::rfc3339(r.signs_from),
            ward_pki::issue::rfc3339(r.not_after)
        );
    }
    if !roots.is_empty() {
        root_status(&dir, &resolved, &roots, now)?;
    }
    Ok(Outcome::Success)
}

/// The roots' lines of `status`: which ones the bundle holds and why.
fn root_status(
    dir: &CaDir,
    resolved: &ward_ca::dir::rotation::Resolved,
    roots: &[ward_store::CaRoot],
    now: OffsetDateTime,
) -> anyhow::Result<()> {
    // The published intermediates, the signing one first, as `apply` sees them.
    let initial = dir.intermediate_cert()?;
    let mut published = vec![match &resolved.signing {
        Some(r) => rustls_pki_types::CertificateDer::from(r.der.clone()),
        None => initial.clone(),
    }];
    published.extend(
        resolved
            .others
            .iter()
            .map(|r| rustls_pki_types::CertificateDer::from(r.der.clone())),
    );
    if resolved.keep_initial && resolved.signing.is_some() {
        published.push(initial);
    }
    let dir_roots = dir.roots()?;
    let trust = resolve_trust(&dir_roots, roots, &published, now);
    let in_bundle = |der: &[u8]| trust.bundle.iter().any(|b| b.as_ref() == der);
    for r in &dir_roots {
        let state = if in_bundle(r) { "in bundle" } else { "retired" };
        outln!(
            "root {state:<10} {} (root.crt)",
            ward_ca::authority::fingerprint_hex(r)
        );
    }
    for r in roots {
        let state = if r.cancelled_at.is_some() {
            "cancelled"
        } else if r.signs_from > now {
            "pending"
        } else if in_bundle(&r.der) {
            "in bundle"
        } else {
            "retired"
        };
        outln!(
            "root {state:<10} {} switches {} expires {}",
            r.fingerprint,
            ward_pki::issue::rfc3339(r.signs_from),
            ward_pki::issue::rfc3339(r.not_after)
        );
    }
    Ok(())
}
