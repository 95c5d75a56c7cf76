//! The Muster agent as a library: everything `main.rs` calls, so tests can reach it.

pub mod cli;
pub mod scan;
pub mod summary;

use std::process::ExitCode;

/// Runs one parsed command line.
pub fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        cli::Command::Scan(args) => scan::run(&args),
    }
}
