//! The agent's configuration: TOML file, environment, `config.env`, flags.
//!
//! STUB: the resolved types below are what the rest of the agent uses; loading, validation,
//! sources and `config check` are being written.

use std::path::PathBuf;
use std::time::Duration;

use crate::secret::Secret;

/// The validated configuration every component reads.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub agent: AgentConfig,
    pub api: ApiConfig,
    pub monitoring: MonitoringConfig,
    pub scheduling: SchedulingConfig,
    pub security: SecurityConfig,
}

/// `[agent]`
#[derive(Debug, Clone, PartialEq)]
pub struct AgentConfig {
    /// Telemetry interval (seed `collection_interval`, seconds; env `TELEMETRY_INTERVAL`
    /// in minutes). Default 600 s.
    pub collection_interval: Duration,
    /// Default 60 s.
    pub heartbeat_interval: Duration,
    /// Hardware + software inventory (env `HARDWARE_SOFTWARE_INTERVAL` in minutes). Default
    /// 3600 s.
    pub inventory_interval: Duration,
    /// The largest random offset added to each scheduled run. Default 30 s.
    pub splay: Duration,
    pub log_level: LogLevel,
    /// Bytes before the log file rotates. Default 10 MiB.
    pub log_max_size: u64,
    /// Rotated files kept. Default 5.
    pub log_backup_count: u32,
    /// The log file when daemonized. Default `/var/log/muster/agent.log`.
    pub log_file: PathBuf,
    /// Identity, spool, queue and status. Default `/var/lib/muster`.
    pub state_dir: PathBuf,
    /// Default `/run/muster-agent.pid`.
    pub pid_file: PathBuf,
    /// Spool bounds. Defaults 64 MiB and 10,000 items.
    pub spool_max_bytes: u64,
    pub spool_max_items: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum LogLevel {
    Error,
    Warn,
    Info,
    Debug,
    Trace,
}

/// `[api]`
#[derive(Debug, Clone, PartialEq)]
pub struct ApiConfig {
    /// The server's API root, e.g. `https://muster.example.com/api` (seed `API_BASE_URL`).
    pub base_url: String,
    /// The tenant's enrolment token (seed `API_TOKEN`).
    pub auth_token: Secret,
    /// Seed `TENANT_ID`.
    pub tenant_id: String,
    /// Per request. Default 30 s.
    pub timeout: Duration,
    /// Retries after the first try. Default 3.
    pub retry_attempts: u32,
    /// The first backoff; doubles per retry, with full jitter. Default 5 s.
    pub retry_delay: Duration,
}

/// `[monitoring]`
#[derive(Debug, Clone, PartialEq)]
pub struct MonitoringConfig {
    pub cpu_threshold: f64,
    pub memory_threshold: f64,
    pub disk_threshold: f64,
    pub load_check_interval: Duration,
}

/// `[scheduling]`
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulingConfig {
    pub max_concurrent_commands: u32,
    pub defer_threshold_cpu: f64,
    pub defer_threshold_memory: f64,
    /// Local time of day, minutes after midnight.
    pub maintenance_window_start: Option<u32>,
    pub maintenance_window_end: Option<u32>,
}

/// `[security]`
#[derive(Debug, Clone, PartialEq)]
pub struct SecurityConfig {
    pub verify_ssl: bool,
    /// PEM bundle of extra trusted CAs.
    pub ca_file: Option<PathBuf>,
    /// Default `["builtin"]`.
    pub allowed_command_types: Vec<String>,
    /// The tenant's command-signing public key (ed25519, base64).
    pub command_signing_key: Option<String>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            agent: AgentConfig {
                collection_interval: Duration::from_secs(600),
                heartbeat_interval: Duration::from_secs(60),
                inventory_interval: Duration::from_secs(3600),
                splay: Duration::from_secs(30),
                log_level: LogLevel::Info,
                log_max_size: 10 * 1024 * 1024,
                log_backup_count: 5,
                log_file: PathBuf::from("/var/log/muster/agent.log"),
                state_dir: PathBuf::from("/var/lib/muster"),
                pid_file: PathBuf::from("/run/muster-agent.pid"),
                spool_max_bytes: 64 * 1024 * 1024,
                spool_max_items: 10_000,
            },
            api: ApiConfig {
                base_url: String::new(),
                auth_token: Secret::default(),
                tenant_id: String::new(),
                timeout: Duration::from_secs(30),
                retry_attempts: 3,
                retry_delay: Duration::from_secs(5),
            },
            monitoring: MonitoringConfig {
                cpu_threshold: 80.0,
                memory_threshold: 80.0,
                disk_threshold: 90.0,
                load_check_interval: Duration::from_secs(30),
            },
            scheduling: SchedulingConfig {
                max_concurrent_commands: 2,
                defer_threshold_cpu: 75.0,
                defer_threshold_memory: 75.0,
                maintenance_window_start: Some(2 * 60),
                maintenance_window_end: Some(4 * 60),
            },
            security: SecurityConfig {
                verify_ssl: true,
                ca_file: None,
                allowed_command_types: vec!["builtin".into()],
                command_signing_key: None,
            },
        }
    }
}

/// `muster-agent config check`. STUB.
pub fn check(_args: &crate::cli::ConfigCheckArgs) -> anyhow::Result<std::process::ExitCode> {
    anyhow::bail!("not implemented yet")
}
