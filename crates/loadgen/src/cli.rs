//! The command line.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;

use crate::driver::LoadConfig;
use crate::fleet::Token;
use crate::schedule::{Intervals, Start};

/// Simulates a fleet of Muster agents against a server and reports what it sustained.
///
/// Agents are registered once (and their first inventory sent whole); with `--enrolments` the
/// registrations are kept for the next run. Then every agent heartbeats, reports telemetry and
/// inventories on the agent's default schedule for `--duration`. Durations take a unit:
/// `500ms`, `90s`, `10m`, `1h` (a bare number is seconds).
#[derive(Debug, Parser)]
#[command(name = "muster-loadgen", version)]
pub struct Args {
    /// The server's root url, e.g. `http://127.0.0.1:3000` (plain http).
    #[arg(long)]
    pub server: String,
    /// The tenant the agents enrol into (the agent's `tenant_id`).
    #[arg(long)]
    pub tenant_id: String,
    /// The tenant's enrolment token.
    #[arg(long, conflicts_with = "enrol_token_file")]
    pub enrol_token: Option<String>,
    /// A file holding the enrolment token (keeps it out of the process list).
    #[arg(long)]
    pub enrol_token_file: Option<PathBuf>,
    /// Agents to simulate.
    #[arg(long, default_value_t = 1_000)]
    pub agents: u32,
    /// How long to play the schedule, after enrolment.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,
    /// A `DaemonReport` JSON (`muster-agent scan --output FILE`) as every agent's inventory
    /// template; by default this machine is scanned in-process.
    #[arg(long)]
    pub template: Option<PathBuf>,
    /// The agent's `heartbeat_interval`.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    pub heartbeat_interval: Duration,
    /// The agent's `collection_interval` (telemetry).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    pub telemetry_interval: Duration,
    /// The agent's `inventory_interval`.
    #[arg(long, default_value = "60m", value_parser = parse_duration)]
    pub inventory_interval: Duration,
    /// The agent's `splay`: each job's grid offset is drawn from [0, splay).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub splay: Duration,
    /// 0: a fleet in its steady state (phases uniform over each interval). Otherwise a fleet
    /// restarted together: agents start uniformly within RAMP, run every job at once, then
    /// follow the splayed grid.
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub ramp: Duration,
    /// Share of inventory runs that upload a package upgrade (a delta); the rest are
    /// "unchanged".
    #[arg(long, default_value_t = 0.05)]
    pub delta_ratio: f64,
    /// Packages at a version of the agent's own, per agent.
    #[arg(long, default_value_t = 3)]
    pub bumped_packages: usize,
    /// Keeps registrations (agent ids, tokens, acknowledged inventory hashes) across runs
    /// against the same database; created if missing.
    #[arg(long)]
    pub enrolments: Option<PathBuf>,
    /// Agents registering at once.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Requests in flight at most during the load.
    #[arg(long, default_value_t = 1_024)]
    pub max_in_flight: usize,
    /// The server's process id: its RSS (VmRSS, VmHWM) and CPU are sampled over the run.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Seeds identities, package versions and schedule phases.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Per-request timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub timeout: Duration,
    /// Print the result as JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Also write the result as JSON to FILE.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
    /// No progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// The commands benchmark instead of the schedule: queue this many (command, agent)
    /// pairs through the admin API across `--agents`, have the agents lease and complete
    /// them, and check that none ran twice. Needs `--admin-token` or `--admin-token-file`.
    #[arg(long)]
    pub commands: Option<u64>,
    /// With `--commands`: agents per command created.
    #[arg(long, default_value_t = 1_000)]
    pub per_command: u32,
    /// The tenant's admin token (for `--commands`).
    #[arg(long, conflicts_with = "admin_token_file")]
    pub admin_token: Option<String>,
    /// A file holding the admin token.
    #[arg(long)]
    pub admin_token_file: Option<PathBuf>,
}

/// A token given inline or in a file.
fn token(inline: &Option<String>, file: &Option<PathBuf>) -> anyhow::Result<Option<String>> {
    Ok(match (inline, file) {
        (Some(token), _) => Some(token.trim().to_owned()),
        (None, Some(path)) => Some(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading {}", path.display()))?
                .trim()
                .to_owned(),
        ),
        (None, None) => None,
    })
}

impl Args {
    /// The commands benchmark's configuration, when `--commands` is given.
    pub fn commands_config(&self) -> anyhow::Result<Option<crate::commands::CommandsConfig>> {
        let Some(commands) = self.commands else {
            return Ok(None);
        };
        let enrol_token = token(&self.enrol_token, &self.enrol_token_file)?
            .context("--commands needs --enrol-token or --enrol-token-file")?;
        let admin_token = token(&self.admin_token, &self.admin_token_file)?
            .context("--commands needs --admin-token or --admin-token-file")?;
        Ok(Some(crate::commands::CommandsConfig {
            server: self.server.clone(),
            tenant_id: self.tenant_id.clone(),
            enrol_token: Token::new(enrol_token),
            admin_token: Token::new(admin_token),
            agents: self.agents,
            commands,
            per_command: self.per_command,
            concurrency: self.concurrency.max(1),
            timeout: self.timeout,
            seed: self.seed,
            progress: !self.quiet,
        }))
    }

    /// The run's configuration; reads the token file.
    pub fn config(&self) -> anyhow::Result<LoadConfig> {
        let enrol_token = match (&self.enrol_token, &self.enrol_token_file) {
            (Some(token), _) => Some(token.trim().to_owned()),
            (None, Some(path)) => Some(
                std::fs::read_to_string(path)
                    .with_context(|| format!("reading {}", path.display()))?
                    .trim()
                    .to_owned(),
            ),
            (None, None) => None,
        };
        anyhow::ensure!(
            (0.0..=1.0).contains(&self.delta_ratio),
            "--delta-ratio must be within [0, 1]"
        );
        let intervals = Intervals {
            heartbeat: self.heartbeat_interval,
            telemetry: self.telemetry_interval,
            inventory: self.inventory_interval,
            splay: self.splay,
        };
        for (name, d) in [
            ("--heartbeat-interval", intervals.heartbeat),
            ("--telemetry-interval", intervals.telemetry),
            ("--inventory-interval", intervals.inventory),
        ] {
            anyhow::ensure!(d >= Duration::from_millis(1), "{name} must be at least 1ms");
        }
        let mut config =
            LoadConfig::new(&self.server, &self.tenant_id, enrol_token.map(Token::new));
        config.agents = self.agents;
        config.duration = self.duration;
        config.intervals = intervals;
        config.start = if self.ramp.is_zero() {
            Start::Steady
        } else {
            Start::Restart { ramp: self.ramp }
        };
        config.delta_ratio = self.delta_ratio;
        config.bumped_packages = self.bumped_packages;
        config.enrolments.clone_from(&self.enrolments);
        config.concurrency = self.concurrency.max(1);
        config.max_in_flight = self.max_in_flight.max(1);
        config.server_pid = self.server_pid;
        config.seed = self.seed;
        config.timeout = self.timeout;
        config.progress = !self.quiet;
        Ok(config)
    }
}

/// `500ms`, `90s`, `10m`, `1h`, `1d`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 90s, 10m or 1h"))?;
    let seconds = match unit.trim() {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" | "min" => number * 60.0,
        "h" => number * 3600.0,
        "d" => number * 86_400.0,
        other => {
            return Err(format!(
                "unknown unit {other:?} in {text:?} (ms, s, m, h, d)"
            ));
        }
    };
    Duration::try_from_secs_f64(seconds).map_err(|e| format!("{text:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_units() {
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("1.5h"), Ok(Duration::from_secs(5400)));
        for bad in ["", "m", "10x", "-1s", "1e3s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn the_defaults_are_the_agents() {
        let args = Args::parse_from(["muster-loadgen", "--server", "http://x", "--tenant-id", "t"]);
        let config = args.config().unwrap();
        assert_eq!(config.intervals, Intervals::AGENT_DEFAULTS);
        assert_eq!(config.start, Start::Steady);
        assert!(config.enrol_token.is_none());
    }
}
