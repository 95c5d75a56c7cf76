//! The Muster agent as a library: everything `main.rs` calls, so tests can reach it.

pub mod atomic;
pub mod cli;
pub mod client;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod identity;
pub mod inventory;
pub mod logging;
pub mod logs;
pub mod random;
pub mod run;
pub mod scan;
pub mod schedule;
pub mod secret;
pub mod service;
pub mod spool;
pub mod status;
pub mod summary;

use std::process::ExitCode;

/// Runs one parsed command line.
pub fn run(cli: cli::Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        cli::Command::Scan(args) => scan::run(&args),
        cli::Command::Run(args) => run::main(args),
        cli::Command::Config(cli::ConfigCommand::Check(args)) => config::check(&args),
        cli::Command::Status(args) => status::main(&args),
        cli::Command::Service(command) => match command {
            cli::ServiceCommand::Install(args) => service::install(&args),
            cli::ServiceCommand::Uninstall(args) => service::uninstall(&args),
            cli::ServiceCommand::Status(args) => service::status(&args),
            cli::ServiceCommand::Start(args) => service::start(&args),
            cli::ServiceCommand::Stop(args) => service::stop(&args),
        },
        cli::Command::Logs(args) => logs::main(&args),
    }
}
