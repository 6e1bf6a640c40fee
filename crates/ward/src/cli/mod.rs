//! Command-line definitions and dispatch; one file per command group.

mod acme;
mod acme_client;
mod admin;
mod agent;
mod ca;
mod cert;
mod check;
mod entry;
mod gate;
mod lint;
mod quickstart;
mod revoke;
mod rotate;
mod token;

use clap::{Parser, Subcommand, ValueEnum};

/// How a command ended when it did not fail outright.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Everything checked out (exit 0).
    Success,
    /// A check or verification found a problem (exit 1).
    Problem,
}

/// Ward: short-lived workload identities and mutual TLS everywhere.
#[derive(Debug, Parser)]
#[command(name = "ward", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Certificate authority: create and run one.
    #[command(subcommand)]
    Ca(ca::CaCommand),
    /// Offline certificate operations: create, inspect, verify.
    #[command(subcommand)]
    Cert(cert::CertCommand),
    /// The mTLS-enforcing proxy.
    #[command(subcommand)]
    Gate(gate::GateCommand),
    /// Bootstrap tokens: create, list, revoke.
    #[command(subcommand)]
    Token(token::TokenCommand),
    /// Registration entries for node attestation: create, list, delete.
    #[command(subcommand)]
    Entry(entry::EntryCommand),
    /// Revoke a certificate this CA issued (RFC 5280 reason codes).
    Revoke(revoke::RevokeArgs),
    /// Check a TLS endpoint: chain, names, lint rules, revocation, protocols.
    Check(check::CheckArgs),
    /// A CA, a gate, a demo upstream and a client identity in one command.
    Quickstart(quickstart::QuickstartArgs),
    /// Workload agent: obtain, rotate and hand out this workload's identity.
    #[command(subcommand)]
    Agent(agent::AgentCommand),
    /// The CA's ACME server: external account binding keys.
    #[command(subcommand)]
    Acme(acme::AcmeCommand),
}

/// Output format of reporting commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub(crate) enum Format {
    /// Human-readable text.
    #[default]
    Text,
    /// One JSON document on stdout.
    Json,
}

/// Runs the parsed command.
pub(crate) async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    match cli.command {
        Command::Ca(cmd) => ca::run(cmd).await,
        Command::Cert(cmd) => cert::run(cmd).await,
        Command::Token(cmd) => token::run(cmd).await,
        Command::Entry(cmd) => entry::run(cmd).await,
        Command::Check(args) => check::run(args).await,
        Command::Gate(cmd) => gate::run(cmd).await,
        Command::Revoke(args) => revoke::run(args).await,
        Command::Quickstart(args) => quickstart::run(args).await,
        Command::Agent(cmd) => agent::run(cmd).await,
        Command::Acme(cmd) => acme::run(cmd).await,
    }
}

/// Parses a human duration for clap.
pub(crate) fn duration_arg(s: &str) -> Result<std::time::Duration, String> {
    ward_pki::parse_duration(s).map_err(|e| e.to_string())
}

/// Resolves on SIGTERM or Ctrl-C.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
