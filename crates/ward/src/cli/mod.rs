//! Command-line definitions and dispatch; one file per command group.

mod ca;
mod cert;

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
    }
}

/// Parses a human duration for clap.
pub(crate) fn duration_arg(s: &str) -> Result<std::time::Duration, String> {
    ward_pki::parse_duration(s).map_err(|e| e.to_string())
}
