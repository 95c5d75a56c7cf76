//! `muster-agent`: parses arguments, maps errors to exit codes, calls into the library.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    let cli = muster_agent::cli::Cli::parse();
    match muster_agent::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("muster-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}
