//! The command line. Usage errors exit with 2 (clap's convention).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use muster_proto::Worker;

#[derive(Debug, Parser)]
#[command(name = "muster-agent", version, about = "Muster endpoint agent")]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Inventory this machine once and print the report as JSON.
    Scan(ScanArgs),
    /// Run the agent: enrol, then heartbeat, inventory and telemetry on schedule.
    Run(RunArgs),
    /// Inspect the configuration.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Show whether the agent runs and how it is doing.
    Status(StatusArgs),
}

/// Flags that override the configuration file and the environment (highest precedence).
#[derive(Debug, Clone, Default, Args)]
pub struct ConfigFlags {
    /// The configuration file [default: /etc/muster/agent.toml].
    #[arg(long, short, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Overrides `[agent] state_dir`.
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Overrides `[agent] log_level` (error, warn, info, debug, trace).
    #[arg(long, value_name = "LEVEL")]
    pub log_level: Option<String>,
    /// Overrides `[api] base_url`.
    #[arg(long, value_name = "URL")]
    pub base_url: Option<String>,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub config: ConfigFlags,
    /// Detach and run in the background (SysV init), with a locked pidfile and a rotated log
    /// file; without it the agent stays in the foreground for systemd.
    #[arg(long)]
    pub daemonize: bool,
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print every effective value with its source.
    Check(ConfigCheckArgs),
}

#[derive(Debug, Args)]
pub struct ConfigCheckArgs {
    #[command(flatten)]
    pub config: ConfigFlags,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub config: ConfigFlags,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct ScanArgs {
    /// Indent the JSON.
    #[arg(long)]
    pub pretty: bool,

    /// Run only these workers (comma-separated): hardware, software, processes, services,
    /// telemetry.
    #[arg(long, value_delimiter = ',', value_parser = parse_worker, value_name = "WORKERS")]
    pub only: Vec<Worker>,

    /// Write the JSON report to FILE (atomically) instead of standard output.
    #[arg(long, short, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Print a short human summary instead of the JSON (with --output, the JSON still goes
    /// to FILE).
    #[arg(long)]
    pub summary: bool,

    /// Read the system from this directory instead of `/` (a fixture tree or a mounted image).
    #[arg(long, value_name = "DIR", default_value = "/")]
    pub root: PathBuf,

    /// Milliseconds between the two telemetry samples CPU usage and rates are computed from.
    #[arg(long, value_name = "MS", default_value_t = 250,
          value_parser = clap::value_parser!(u64).range(0..=10_000))]
    pub telemetry_interval_ms: u64,
}

fn parse_worker(name: &str) -> Result<Worker, String> {
    name.trim().parse().map_err(|e| {
        let known: Vec<&str> = Worker::ALL.iter().map(|w| w.as_str()).collect();
        format!("{e} (known: {})", known.join(", "))
    })
}
