//! `ward`: one binary for every Ward command.
//!
//! Thin on purpose: install the crypto provider, parse the command line,
//! run the command, and map the result to an exit status
//! (0 success, 1 a check found a problem, 2 usage or runtime error).

#![forbid(unsafe_code)]

mod cli;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    ward_tls::install_default_provider();
    let args = cli::Cli::parse();
    match cli::run(args).await {
        Ok(cli::Outcome::Success) => ExitCode::SUCCESS,
        Ok(cli::Outcome::Problem) => ExitCode::from(1),
        Err(err) => {
            eprintln!("ward: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
