//! `ward`: one binary for every Ward command.
//!
//! Thin on purpose: install the crypto provider, parse the command line,
//! run the command, and map the result to an exit status
//! (0 success, 1 a check found a problem, 2 usage or runtime error).

#![forbid(unsafe_code)]

#[macro_use]
mod out;

mod cli;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    ward_tls::install_default_provider();
    let args = match cli::Cli::try_parse() {
        Ok(args) => args,
        Err(err) if !err.use_stderr() => {
            // --help and --version.
            let _ = err.print();
            return ExitCode::SUCCESS;
        }
        Err(err) => {
            // One line, like every other error: clap's first line carries
            // the reason; the rest is a pointer to --help.
            let rendered = err.render().to_string();
            let first = rendered.lines().next().unwrap_or("invalid arguments");
            eprintln!("ward: {first} (see --help)");
            return ExitCode::from(2);
        }
    };
    match cli::run(args).await {
        Ok(cli::Outcome::Success) => ExitCode::SUCCESS,
        Ok(cli::Outcome::Problem) => ExitCode::from(1),
        Err(err) => {
            eprintln!("ward: error: {err:#}");
            ExitCode::from(2)
        }
    }
}
