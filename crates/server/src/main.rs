//! `muster-server`: parses the command line, sets up logging, runs, maps errors to exit codes.

use std::process::ExitCode;

use clap::Parser;
use muster_server::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // The built-in agent sets up its own logging and runtime, as `muster-agent` does.
    if let Command::Agent { args } = cli.command {
        let argv = std::iter::once("muster-agent".into()).chain(args);
        let agent = muster_agent::cli::Cli::parse_from(argv);
        return match muster_agent::run(agent) {
            Ok(code) => code,
            Err(e) => {
                eprintln!("muster-agent: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let level = std::env::var("MUSTER_LOG")
        .ok()
        .and_then(|l| l.parse().ok())
        .unwrap_or(tracing::Level::INFO);
    tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(muster_server::cli::execute(cli, shutdown_signal())) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Completes on Ctrl-C or SIGTERM: the one way the server is asked to stop.
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
