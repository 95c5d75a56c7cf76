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
    /// Install, remove, start, stop or inspect the agent as a system service (systemd or
    /// System V init; the Service Control Manager on Windows), for machines without the
    /// muster-agent package (or the MSI).
    #[command(subcommand)]
    Service(ServiceCommand),
    /// Show the agent's log: the journal under systemd, else the rotated log file.
    Logs(LogsArgs),
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
    /// Run as the Windows service (the Service Control Manager starts the agent so; see
    /// `service install`): report to the SCM, stop on its Stop and Shutdown, log to the file.
    #[cfg(windows)]
    #[arg(long, conflicts_with = "daemonize")]
    pub service: bool,
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
    #[arg(long, conflicts_with_all = ["quiet", "get"])]
    pub json: bool,
    /// Print nothing: only validate (the exit code says whether the configuration is good).
    #[arg(long, short, conflicts_with = "get")]
    pub quiet: bool,
    /// Print only this key's effective value (`agent.pid_file`), unquoted, for scripts.
    #[arg(long, value_name = "SECTION.KEY")]
    pub get: Option<String>,
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

#[derive(Debug, Subcommand)]
pub enum ServiceCommand {
    /// Install the agent as a service: the `muster` user and group, the binary, the
    /// configuration, the state and log directories, and a systemd unit (or, with `--sysv`,
    /// an init script); enable it and start it.
    Install(ServiceInstallArgs),
    /// Stop and remove the service and the binary; the configuration, state and logs stay
    /// unless `--purge`.
    Uninstall(ServiceUninstallArgs),
    /// Show what is installed and whether it runs (exit 0 running, 3 installed but not
    /// running, 4 not installed).
    Status(ServiceStatusArgs),
    /// Start the installed service and wait until it runs.
    Start(ServiceControlArgs),
    /// Stop the service and wait until it has stopped.
    Stop(ServiceControlArgs),
}

#[derive(Debug, Args)]
pub struct ServiceControlArgs {
    /// How long to wait for the service to reach the state, in seconds.
    #[arg(long, value_name = "SECONDS", default_value_t = 60)]
    pub timeout: u64,
}

#[derive(Debug, Args)]
pub struct ServiceInstallArgs {
    /// Install into this directory as if it were `/`: nothing on the running system is
    /// touched (no systemctl, no useradd; the user is written into DIR/etc/passwd and
    /// DIR/etc/group) and nothing is started.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Install a System V init script (`/etc/init.d/muster-agent`) instead of a systemd unit.
    #[arg(long)]
    pub sysv: bool,
    /// The agent binary to install [default: this executable].
    #[arg(long, value_name = "PATH")]
    pub binary: Option<PathBuf>,
    /// A configuration file to install as `/etc/muster/agent.toml` (an existing one is kept
    /// unless `--force`) [default: a commented template when there is none].
    #[arg(long, value_name = "PATH")]
    pub config: Option<PathBuf>,
    /// Replace an existing `/etc/muster/agent.toml` with `--config`.
    #[arg(long)]
    pub force: bool,
    /// The user the agent runs as. Remote `exec` and `script` commands run as this user too,
    /// so most administration needs root (see docs/INSTALL.md).
    #[arg(long, value_name = "NAME", default_value = "root")]
    pub user: String,
    /// Enable the service but do not start it.
    #[arg(long)]
    pub no_start: bool,
}

#[derive(Debug, Args)]
pub struct ServiceUninstallArgs {
    /// Remove from this directory as if it were `/` (no systemctl, nothing stopped).
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
    /// Also remove the configuration, the state directory (the agent's identity, spool and
    /// command queue) and the logs.
    #[arg(long)]
    pub purge: bool,
}

#[derive(Debug, Args)]
pub struct ServiceStatusArgs {
    /// Inspect this directory as if it were `/`.
    #[arg(long, value_name = "DIR")]
    pub root: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub config: ConfigFlags,
    /// Keep printing lines as they are written, across rotations.
    #[arg(long, short)]
    pub follow: bool,
    /// Print this many of the last lines first.
    #[arg(long, short = 'n', value_name = "N", default_value_t = 50)]
    pub lines: usize,
    /// Read the log file (`[agent] log_file` and its rotated copies) even where the journal
    /// would be used.
    #[arg(long)]
    pub file: bool,
}

fn parse_worker(name: &str) -> Result<Worker, String> {
    name.trim().parse().map_err(|e| {
        let known: Vec<&str> = Worker::ALL.iter().map(|w| w.as_str()).collect();
        format!("{e} (known: {})", known.join(", "))
    })
}
