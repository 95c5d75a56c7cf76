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
    let shutdown = {
        let _inside = runtime.enter();
        shutdown_signal()
    };
    match runtime.block_on(muster_server::cli::execute(cli, shutdown)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            // EX_CONFIG (sysexits.h): a bad configuration file is not worth a restart
            // (`RestartPreventExitStatus=78` in the unit).
            if e.downcast_ref::<muster_server::config::ConfigError>()
                .is_some()
            {
                ExitCode::from(78)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// Completes on Ctrl-C or SIGTERM: the one way the server is asked to stop. The handlers are
/// installed now (inside the runtime), not when the future is first polled: a SIGTERM while
/// migrations run then stops the server cleanly too instead of killing it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            match (interrupt, terminate) {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {},
                        _ = terminate.recv() => {},
                    }
                }
                _ => {
                    let _ = tokio::signal::ctrl_c().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}
