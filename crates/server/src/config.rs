//! The server's configuration, passed explicitly to [`crate::run`].
//!
//! Three layers, highest first: command-line flags, the TOML file given with `--config`, and
//! the defaults here. The file rejects unknown sections and keys, so a typo is an error at start
//! rather than a setting silently ignored. `docs/SERVER.md` lists every key.

use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::store::{DEFAULT_DATABASE_URL, Thresholds};

/// Default address to listen on: loopback only, until an operator says otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:3000";

/// Default largest request body, before and after gzip: 16 MiB (a full inventory of a host
/// with thousands of packages and processes is a few MiB).
pub const DEFAULT_MAX_BODY_BYTES: usize = 16 * 1024 * 1024;

/// How `muster-server serve` runs.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Where to listen (the caller binds; see [`crate::run`]).
    pub listen: SocketAddr,
    /// Where `/metrics` is served instead of on `listen`, if set.
    pub metrics_listen: Option<SocketAddr>,
    /// `sqlite://PATH` (created if missing), a bare path, or `postgres://...`.
    pub database_url: String,
    pub limits: Limits,
    pub retention: Retention,
    /// The enrolment bundle: where the agent binaries are, the server's public URL.
    pub bundle: BundleConfig,
}

/// What the enrolment bundle (`bundle.rs`) is made of.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleConfig {
    /// `[server] public_url`: the server's URL as agents reach it (`https://muster.example.com`,
    /// no path); the bundle's `agent.toml` points at `<public_url>/api`. `None`: the scheme and
    /// `Host` of the request that asks for the bundle.
    pub public_url: Option<String>,
    /// `[bundle] agent_dir`: built agent binaries named `muster-agent-<platform>`
    /// (`muster-agent-linux-x86_64`). `None`: no bundles (404).
    pub agent_dir: Option<PathBuf>,
}

/// Bounds on what a request may cost.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Largest request body in bytes, as sent and after gzip decompression; larger is 413.
    pub max_body_bytes: usize,
    /// Requests one agent may make per minute, sustained; beyond it the answer is 429 with
    /// `Retry-After`. `None` turns the limit off.
    pub agent_requests_per_minute: Option<NonZeroU32>,
    /// Requests one agent may make at once after a quiet spell (a spool being emptied).
    pub agent_burst: NonZeroU32,
    /// Latest cpu/memory/disk percentages over which a host is listed in the alerts
    /// (defaults: the seed's 80, 80, 90).
    pub alert_thresholds: Thresholds,
    /// How long a dashboard login lasts.
    pub session_lifetime: Duration,
    /// How long an agent token found live is trusted without the database (`token_cache.rs`);
    /// zero looks every request's token up.
    pub token_cache: Duration,
    /// How long an agent has to acknowledge a leased command (`received`) before it goes
    /// back to pending and is delivered again.
    pub command_lease: Duration,
    /// Time between two runs of the commands' jobs (run-out leases, expiries, locks).
    pub command_sweep_interval: Duration,
    /// Most agents one command may be sent to.
    pub max_command_targets: u32,
    /// Heartbeats are answered at once and written behind, together, this often
    /// (`heartbeats.rs`); zero writes each before it is answered.
    pub heartbeat_flush: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: DEFAULT_MAX_BODY_BYTES,
            agent_requests_per_minute: NonZeroU32::new(120),
            agent_burst: NonZeroU32::new(60).expect("non-zero"),
            alert_thresholds: Thresholds::default(),
            session_lifetime: Duration::from_secs(12 * 60 * 60),
            token_cache: Duration::from_secs(DEFAULT_TOKEN_CACHE_S),
            command_lease: Duration::from_secs(60),
            command_sweep_interval: Duration::from_secs(30),
            max_command_targets: 10_000,
            heartbeat_flush: Duration::from_millis(DEFAULT_HEARTBEAT_FLUSH_MS),
        }
    }
}

/// How long stored data is kept, and how often the clean-up runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Telemetry samples older than this are deleted.
    pub metrics: Duration,
    /// Report records (what makes ingestion idempotent) older than this are deleted; a retry
    /// of a report older than this would be stored again.
    pub reports: Duration,
    /// Time between two clean-ups.
    pub interval: Duration,
}

const DAY: u64 = 24 * 60 * 60;

impl Default for Retention {
    fn default() -> Self {
        Retention {
            metrics: Duration::from_secs(30 * DAY),
            reports: Duration::from_secs(30 * DAY),
            interval: Duration::from_secs(60 * 60),
        }
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: DEFAULT_LISTEN.parse().expect("the default address parses"),
            metrics_listen: None,
            database_url: DEFAULT_DATABASE_URL.to_owned(),
            limits: Limits::default(),
            retention: Retention::default(),
            bundle: BundleConfig::default(),
        }
    }
}

/// Why the configuration file was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Invalid { path: String, message: String },
}

/// The file as written: every key optional, unknown keys refused.
#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct FileConfig {
    server: ServerSection,
    limits: LimitsSection,
    retention: RetentionSection,
    alerts: AlertsSection,
    dashboard: DashboardSection,
    commands: CommandsSection,
    bundle: BundleSection,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct BundleSection {
    agent_dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct CommandsSection {
    lease_s: Option<u64>,
    sweep_interval_s: Option<u64>,
    max_targets: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct DashboardSection {
    session_hours: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct AlertsSection {
    cpu_threshold: Option<f64>,
    memory_threshold: Option<f64>,
    disk_threshold: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct ServerSection {
    listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    database_url: Option<String>,
    public_url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct LimitsSection {
    max_body_bytes: Option<u64>,
    /// 0 turns the limit off.
    agent_requests_per_minute: Option<u32>,
    agent_burst: Option<u32>,
    /// 0 turns the cache off.
    token_cache_s: Option<u64>,
    /// 0 writes each heartbeat before answering it.
    heartbeat_flush_ms: Option<u64>,
}

/// Heartbeats written behind once a second: a fleet's thousands a second become a few
/// statements, and last seen lags by at most this.
const DEFAULT_HEARTBEAT_FLUSH_MS: u64 = 1_000;
/// The longest accepted: online status lags by up to this.
const MAX_HEARTBEAT_FLUSH_MS: u64 = 60_000;

/// Seconds an agent token found live is trusted without the database: longer than the agent's
/// default heartbeat interval (60 s), so a steady agent is looked up about once per entry.
const DEFAULT_TOKEN_CACHE_S: u64 = 120;
/// The longest accepted: the delay before a revocation made elsewhere takes effect.
const MAX_TOKEN_CACHE_S: u64 = 3_600;

#[derive(Debug, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
struct RetentionSection {
    metrics_days: Option<u32>,
    reports_days: Option<u32>,
    interval_s: Option<u64>,
}

/// The smallest and largest accepted body limit: 1 KiB to 1 GiB.
const BODY_LIMIT_RANGE: std::ops::RangeInclusive<u64> = 1024..=1024 * 1024 * 1024;

impl ServerConfig {
    /// The defaults with the file at `path` applied.
    pub fn load(path: &Path) -> Result<ServerConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        ServerConfig::parse(&text).map_err(|message| ConfigError::Invalid {
            path: path.display().to_string(),
            message,
        })
    }

    /// The defaults with the TOML `text` applied; the error names the key and the reason.
    pub fn parse(text: &str) -> Result<ServerConfig, String> {
        let file: FileConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut config = ServerConfig::default();
        if let Some(listen) = file.server.listen {
            config.listen = listen;
        }
        config.metrics_listen = file.server.metrics_listen;
        if let Some(url) = file.server.database_url {
            if url.trim().is_empty() {
                return Err("[server] database_url: must not be empty".into());
            }
            config.database_url = url;
        }
        if let Some(url) = file.server.public_url {
            config.bundle.public_url =
                Some(public_url(&url).map_err(|e| format!("[server] public_url: {e}"))?);
        }
        if let Some(dir) = file.bundle.agent_dir {
            if dir.as_os_str().is_empty() {
                return Err("[bundle] agent_dir: must not be empty".into());
            }
            config.bundle.agent_dir = Some(dir);
        }
        if let Some(bytes) = file.limits.max_body_bytes {
            if !BODY_LIMIT_RANGE.contains(&bytes) {
                return Err(format!(
                    "[limits] max_body_bytes: must be from {} to {}, got {bytes}",
                    BODY_LIMIT_RANGE.start(),
                    BODY_LIMIT_RANGE.end()
                ));
            }
            config.limits.max_body_bytes = bytes as usize;
        }
        if let Some(rate) = file.limits.agent_requests_per_minute {
            config.limits.agent_requests_per_minute = NonZeroU32::new(rate);
        }
        if let Some(burst) = file.limits.agent_burst {
            config.limits.agent_burst =
                NonZeroU32::new(burst).ok_or("[limits] agent_burst: must be at least 1, got 0")?;
        }
        if let Some(seconds) = file.limits.token_cache_s {
            if seconds > MAX_TOKEN_CACHE_S {
                return Err(format!(
                    "[limits] token_cache_s: must be from 0 (off) to {MAX_TOKEN_CACHE_S}, \
                     got {seconds}"
                ));
            }
            config.limits.token_cache = Duration::from_secs(seconds);
        }
        if let Some(ms) = file.limits.heartbeat_flush_ms {
            if ms > MAX_HEARTBEAT_FLUSH_MS {
                return Err(format!(
                    "[limits] heartbeat_flush_ms: must be from 0 (write before answering) to \
                     {MAX_HEARTBEAT_FLUSH_MS}, got {ms}"
                ));
            }
            config.limits.heartbeat_flush = Duration::from_millis(ms);
        }
        let days = |key: &str, value: u32| {
            if (1..=36_500).contains(&value) {
                Ok(Duration::from_secs(u64::from(value) * DAY))
            } else {
                Err(format!(
                    "[retention] {key}: must be from 1 to 36500 days, got {value}"
                ))
            }
        };
        if let Some(d) = file.retention.metrics_days {
            config.retention.metrics = days("metrics_days", d)?;
        }
        if let Some(d) = file.retention.reports_days {
            config.retention.reports = days("reports_days", d)?;
        }
        if let Some(s) = file.retention.interval_s {
            if !(60..=7 * DAY).contains(&s) {
                return Err(format!(
                    "[retention] interval_s: must be from 60 to {} seconds, got {s}",
                    7 * DAY
                ));
            }
            config.retention.interval = Duration::from_secs(s);
        }
        if let Some(hours) = file.dashboard.session_hours {
            if !(1..=24 * 30).contains(&hours) {
                return Err(format!(
                    "[dashboard] session_hours: must be from 1 to 720, got {hours}"
                ));
            }
            config.limits.session_lifetime = Duration::from_secs(u64::from(hours) * 60 * 60);
        }
        if let Some(s) = file.commands.lease_s {
            if !(1..=3600).contains(&s) {
                return Err(format!(
                    "[commands] lease_s: must be from 1 to 3600 seconds, got {s}"
                ));
            }
            config.limits.command_lease = Duration::from_secs(s);
        }
        if let Some(s) = file.commands.sweep_interval_s {
            if !(1..=3600).contains(&s) {
                return Err(format!(
                    "[commands] sweep_interval_s: must be from 1 to 3600 seconds, got {s}"
                ));
            }
            config.limits.command_sweep_interval = Duration::from_secs(s);
        }
        if let Some(n) = file.commands.max_targets {
            if !(1..=100_000).contains(&n) {
                return Err(format!(
                    "[commands] max_targets: must be from 1 to 100000, got {n}"
                ));
            }
            config.limits.max_command_targets = n;
        }
        for (key, value, slot) in [
            (
                "cpu_threshold",
                file.alerts.cpu_threshold,
                &mut config.limits.alert_thresholds.cpu,
            ),
            (
                "memory_threshold",
                file.alerts.memory_threshold,
                &mut config.limits.alert_thresholds.memory,
            ),
            (
                "disk_threshold",
                file.alerts.disk_threshold,
                &mut config.limits.alert_thresholds.disk,
            ),
        ] {
            if let Some(value) = value {
                if !(0.0..=100.0).contains(&value) {
                    return Err(format!(
                        "[alerts] {key}: must be a percentage from 0 to 100, got {value}"
                    ));
                }
                *slot = value;
            }
        }
        Ok(config)
    }
}

/// A public URL checked: `http://` or `https://`, a host, no credentials, query, fragment or
/// path (a trailing `/` is dropped).
pub fn public_url(text: &str) -> Result<String, String> {
    let text = text.trim().trim_end_matches('/');
    let rest = text
        .strip_prefix("https://")
        .or_else(|| text.strip_prefix("http://"))
        .ok_or("must start with http:// or https://")?;
    if rest.is_empty() {
        return Err("has no host".into());
    }
    if rest.contains(['/', '?', '#', '@'])
        || rest.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(
            "must be a scheme and a host (and port) only: no path, credentials, query or fragment"
                .into(),
        );
    }
    rest.parse::<axum::http::uri::Authority>()
        .map_err(|e| format!("`{rest}` is not a host: {e}"))?;
    Ok(text.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_file_is_the_defaults() {
        let config = ServerConfig::parse("").unwrap();
        assert_eq!(config.listen, ServerConfig::default().listen);
        assert_eq!(config.retention, Retention::default());
        assert_eq!(config.limits.max_body_bytes, DEFAULT_MAX_BODY_BYTES);
    }

    #[test]
    fn every_key_is_read() {
        let config = ServerConfig::parse(
            r#"
            [server]
            listen = "0.0.0.0:8080"
            metrics_listen = "127.0.0.1:9464"
            database_url = "postgres://muster@db/muster"
            public_url = "https://muster.example.com:8443/"
            [limits]
            max_body_bytes = 2048
            agent_requests_per_minute = 0
            agent_burst = 5
            token_cache_s = 30
            heartbeat_flush_ms = 250
            [alerts]
            cpu_threshold = 95
            memory_threshold = 85.5
            disk_threshold = 99
            [dashboard]
            session_hours = 2
            [commands]
            lease_s = 30
            sweep_interval_s = 5
            max_targets = 500
            [bundle]
            agent_dir = "/srv/muster/agents"
            [retention]
            metrics_days = 7
            reports_days = 2
            interval_s = 600
            "#,
        )
        .unwrap();
        assert_eq!(config.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(config.metrics_listen.unwrap().to_string(), "127.0.0.1:9464");
        assert_eq!(config.database_url, "postgres://muster@db/muster");
        assert_eq!(config.limits.max_body_bytes, 2048);
        assert_eq!(config.limits.agent_requests_per_minute, None);
        assert_eq!(config.limits.agent_burst.get(), 5);
        assert_eq!(config.limits.token_cache, Duration::from_secs(30));
        assert_eq!(config.retention.metrics, Duration::from_secs(7 * DAY));
        assert_eq!(config.retention.reports, Duration::from_secs(2 * DAY));
        assert_eq!(config.retention.interval, Duration::from_secs(600));
        assert_eq!(
            config.limits.session_lifetime,
            Duration::from_secs(2 * 60 * 60)
        );
        assert_eq!(config.limits.alert_thresholds.cpu, 95.0);
        assert_eq!(config.limits.alert_thresholds.memory, 85.5);
        assert_eq!(config.limits.alert_thresholds.disk, 99.0);
        assert_eq!(config.limits.command_lease, Duration::from_secs(30));
        assert_eq!(config.limits.command_sweep_interval, Duration::from_secs(5));
        assert_eq!(config.limits.max_command_targets, 500);
        assert_eq!(config.limits.heartbeat_flush, Duration::from_millis(250));
        assert_eq!(
            config.bundle.public_url.as_deref(),
            Some("https://muster.example.com:8443")
        );
        assert_eq!(
            config.bundle.agent_dir.as_deref(),
            Some(Path::new("/srv/muster/agents"))
        );
    }

    #[test]
    fn unknown_keys_and_bad_values_are_refused_by_name() {
        for (text, expected) in [
            ("[server]\nlisen = \"x\"", "unknown field `lisen`"),
            ("[serverx]", "unknown field `serverx`"),
            ("[server]\nlisten = \"nowhere\"", "invalid socket address"),
            ("[limits]\nmax_body_bytes = 10", "[limits] max_body_bytes"),
            ("[limits]\nagent_burst = 0", "[limits] agent_burst"),
            ("[limits]\ntoken_cache_s = 3601", "[limits] token_cache_s"),
            (
                "[limits]\nheartbeat_flush_ms = 60001",
                "[limits] heartbeat_flush_ms",
            ),
            ("[retention]\nmetrics_days = 0", "[retention] metrics_days"),
            ("[retention]\ninterval_s = 1", "[retention] interval_s"),
            ("[alerts]\ndisk_threshold = 101", "[alerts] disk_threshold"),
            ("[server]\ndatabase_url = \" \"", "[server] database_url"),
            ("[commands]\nlease_s = 0", "[commands] lease_s"),
            (
                "[commands]\nsweep_interval_s = 0",
                "[commands] sweep_interval_s",
            ),
            ("[commands]\nmax_targets = 0", "[commands] max_targets"),
            (
                "[server]\npublic_url = \"muster.example\"",
                "[server] public_url",
            ),
            ("[server]\npublic_url = \"https://\"", "[server] public_url"),
            (
                "[server]\npublic_url = \"https://a.example/api\"",
                "[server] public_url",
            ),
            (
                "[server]\npublic_url = \"https://u:p@a.example\"",
                "[server] public_url",
            ),
            ("[bundle]\nagent_dir = \"\"", "[bundle] agent_dir"),
            ("[bundle]\nagentdir = \"x\"", "unknown field `agentdir`"),
        ] {
            let error = ServerConfig::parse(text).unwrap_err();
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }
}
