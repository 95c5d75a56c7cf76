//! The agent's configuration: defaults, a TOML file, `config.env`, the environment and flags.
//!
//! Precedence, highest first: flags, the real environment, `config.env`, the file, defaults.
//! Loading is two steps (ripgrep's low-level → high-level arguments): every value a layer
//! provides is collected raw with its origin, then parsed and validated into the resolved
//! [`Config`] the rest of the agent reads. Layers are applied lowest first, each value
//! validated as it is applied, so a bad value in the file is reported even while the
//! environment overrides it.
//!
//! Every key is declared once, in `SPECS`: its name, its seed environment variable, its parser
//! and how `config check` shows it. The file walker, the environment lookups, `config check`
//! and the test that compares `docs/CONFIG.md` with the code all read that one table.
//!
//! The file is walked as a spanned TOML document against that table rather than deserialized
//! into `#[serde(deny_unknown_fields)]` structs: the walk rejects unknown sections and keys just
//! the same, and every error can name the file, line, column, section and key, which serde's
//! derived errors don't.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::io::{self, Read as _, Write as _};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use toml::de::{DeTable, DeValue};

use crate::cli::{ConfigCheckArgs, ConfigFlags};
use crate::secret::Secret;

/// The exit code for any configuration error (`EX_CONFIG` in `sysexits.h`).
pub const EX_CONFIG: u8 = 78;

/// The configuration file read when `--config` is not given on Unix.
pub const DEFAULT_PATH: &str = "/etc/muster/agent.toml";

/// Where the agent keeps its files when nothing says otherwise, on this platform.
///
/// Unix: `/etc/muster/agent.toml`, `/var/lib/muster`, `/var/log/muster/agent.log`,
/// `/run/muster-agent.pid`. Windows: everything under `%ProgramData%\Muster\` (`agent.toml`,
/// `state\`, `logs\agent.log`, `state\agent.pid`), `%ProgramData%` read from the environment
/// (`C:\ProgramData` when it is unset), so an installer run with another `ProgramData` and a
/// test pointing it at a scratch directory both land where they say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DefaultPaths {
    pub config: PathBuf,
    pub state_dir: PathBuf,
    pub log_file: PathBuf,
    pub pid_file: PathBuf,
}

impl DefaultPaths {
    /// This platform's defaults.
    pub fn get() -> DefaultPaths {
        #[cfg(windows)]
        {
            DefaultPaths::windows(&program_data())
        }
        #[cfg(not(windows))]
        {
            DefaultPaths {
                config: PathBuf::from(DEFAULT_PATH),
                state_dir: PathBuf::from("/var/lib/muster"),
                log_file: PathBuf::from("/var/log/muster/agent.log"),
                pid_file: PathBuf::from("/run/muster-agent.pid"),
            }
        }
    }

    /// The Windows layout below `program_data` (`C:\ProgramData`): `Muster\agent.toml`,
    /// `Muster\state\`, `Muster\logs\agent.log`.
    pub fn windows(program_data: &Path) -> DefaultPaths {
        let base = program_data.join("Muster");
        DefaultPaths {
            config: base.join("agent.toml"),
            state_dir: base.join("state"),
            log_file: base.join("logs").join("agent.log"),
            pid_file: base.join("state").join("agent.pid"),
        }
    }
}

/// `%ProgramData%`, or `C:\ProgramData` where the variable is unset (a bare service
/// environment still has it; this is a fallback, not a setting).
#[cfg(windows)]
pub fn program_data() -> PathBuf {
    std::env::var_os("ProgramData")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(r"C:\ProgramData"), PathBuf::from)
}

/// The name of the seed-style `KEY=VALUE` file looked for beside the configuration file, then
/// beside the binary.
pub const ENV_FILE_NAME: &str = "config.env";

/// The sections of the file, in documentation order.
pub const SECTIONS: &[&str] = &["agent", "api", "monitoring", "scheduling", "security"];

/// The command types `[security] allowed_command_types` may list.
pub const COMMAND_TYPES: &[&str] = &["exec", "script", "builtin"];

/// The configuration file and `config.env` are small; anything bigger is a mistake (a log
/// file passed as `--config`), and reading it whole would be unbounded.
const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The longest schedule interval: 30 days. Far beyond any sensible schedule, and far below
/// what would overflow a deadline computed from it.
const MAX_INTERVAL_SECS: u64 = 30 * 24 * 3600;

/// The longest request timeout, retry delay and load-check interval: one hour.
const MAX_SHORT_SECS: u64 = 3600;

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
    /// The log file when daemonized or run as a Windows service. Default
    /// `/var/log/muster/agent.log` (Windows `%ProgramData%\Muster\logs\agent.log`).
    pub log_file: PathBuf,
    /// Identity, spool, queue and status. Default `/var/lib/muster` (Windows
    /// `%ProgramData%\Muster\state`).
    pub state_dir: PathBuf,
    /// Default `/run/muster-agent.pid` (Windows `%ProgramData%\Muster\state\agent.pid`).
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
    /// A command's timeout when it names none (`timeout_s`). Default 600 s.
    pub command_timeout: Duration,
    /// Between SIGTERM and SIGKILL when a command is stopped, and how long running commands
    /// may go on when the agent stops. Default 10 s.
    pub kill_grace: Duration,
    /// The most of each of a command's stdout and stderr kept (the tail). Default 64 KiB.
    pub output_max_bytes: u64,
    /// Keep a `commands/pending` long-poll open so a command arrives within about a second.
    /// Default on.
    pub long_poll: bool,
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
        let paths = DefaultPaths::get();
        Config {
            agent: AgentConfig {
                collection_interval: Duration::from_secs(600),
                heartbeat_interval: Duration::from_secs(60),
                inventory_interval: Duration::from_secs(3600),
                splay: Duration::from_secs(30),
                log_level: LogLevel::Info,
                log_max_size: 10 * 1024 * 1024,
                log_backup_count: 5,
                log_file: paths.log_file,
                state_dir: paths.state_dir,
                pid_file: paths.pid_file,
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
                command_timeout: Duration::from_secs(600),
                kill_grace: Duration::from_secs(10),
                output_max_bytes: 64 * 1024,
                long_poll: true,
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

impl LogLevel {
    /// Every level, least verbose first.
    pub const ALL: [LogLevel; 5] = [
        LogLevel::Error,
        LogLevel::Warn,
        LogLevel::Info,
        LogLevel::Debug,
        LogLevel::Trace,
    ];

    /// The level's name as written in the configuration (`info`).
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Error => "error",
            LogLevel::Warn => "warn",
            LogLevel::Info => "info",
            LogLevel::Debug => "debug",
            LogLevel::Trace => "trace",
        }
    }
}

impl fmt::Display for LogLevel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for LogLevel {
    type Err = String;

    /// Case-insensitive; also takes the seed's Python names (`WARNING`, `CRITICAL`) so its
    /// `log_level = INFO` carries over.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let level = match s.trim().to_ascii_lowercase().as_str() {
            "error" | "critical" => LogLevel::Error,
            "warn" | "warning" => LogLevel::Warn,
            "info" => LogLevel::Info,
            "debug" => LogLevel::Debug,
            "trace" => LogLevel::Trace,
            _ => {
                return Err(format!(
                    "must be one of error, warn, info, debug, trace, got {s:?}"
                ));
            }
        };
        Ok(level)
    }
}

// ---------------------------------------------------------------------------------------------
// Loading

/// A configuration as loaded, with where each value came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The validated configuration.
    pub config: Config,
    /// Where each key's effective value came from, by `section.key` (every key is present).
    pub sources: BTreeMap<&'static str, Source>,
    /// The configuration file: `--config`, or [`DefaultPaths::config`] (which may not exist).
    pub path: PathBuf,
    /// Whether [`Loaded::path`] existed and was read.
    pub file_found: bool,
    /// The `config.env` that was read, if one was found.
    pub env_file: Option<PathBuf>,
}

impl Loaded {
    /// Where `key` (`section.key`) got its value; `None` for a key that doesn't exist.
    pub fn source(&self, key: &str) -> Option<&Source> {
        self.sources.get(key)
    }

    /// Checks what `run` needs beyond a valid file: the server's address.
    pub fn require_server(&self) -> Result<(), ConfigError> {
        if self.config.api.base_url.is_empty() {
            return Err(ConfigError::Invalid {
                origin: Origin::File {
                    path: self.path.clone(),
                    line: None,
                },
                key: "[api] base_url".into(),
                reason: "required to run: set it in the file, MUSTER_API_BASE_URL, API_BASE_URL \
                         or --base-url"
                    .into(),
            });
        }
        Ok(())
    }
}

/// Where a key's effective value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// The built-in default.
    Default,
    /// The configuration file.
    File(PathBuf),
    /// A `config.env` file, through the variable `var`.
    EnvFile { path: PathBuf, var: String },
    /// The process environment.
    Env(String),
    /// A command-line flag (`--state-dir`).
    Flag(&'static str),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File(path) => write!(f, "file {}", path.display()),
            Source::EnvFile { path, var } => write!(f, "config.env {} {var}", path.display()),
            Source::Env(var) => write!(f, "env {var}"),
            Source::Flag(flag) => write!(f, "flag {flag}"),
        }
    }
}

/// Where a bad value was found, as precisely as the layer allows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// The configuration file, with the 1-based line and column when known.
    File {
        path: PathBuf,
        line: Option<(usize, usize)>,
    },
    /// A `config.env` file: its 1-based line and the variable.
    EnvFile {
        path: PathBuf,
        line: usize,
        var: String,
    },
    /// A process environment variable.
    Env(String),
    /// A command-line flag.
    Flag(&'static str),
    /// The built-in default (blamed only when it conflicts with another key's value).
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File { path, line: None } => write!(f, "{}", path.display()),
            Origin::File {
                path,
                line: Some((line, column)),
            } => write!(f, "{}:{line}:{column}", path.display()),
            Origin::EnvFile { path, line, var } => write!(f, "{}:{line}: {var}", path.display()),
            Origin::Env(var) => write!(f, "environment variable {var}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::Default => f.write_str("default"),
        }
    }
}

/// Why a configuration could not be loaded. Each message names the file (or variable, or
/// flag), the key and the reason, and never a secret's value.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// `--config` names a file that doesn't exist.
    #[error("{}: configuration file not found", path.display())]
    NotFound { path: PathBuf },
    /// The file exists but can't be read.
    #[error("{}: cannot read: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The file is bigger than any configuration should be.
    #[error("{}: larger than {limit} bytes, not a configuration file", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
    /// The file is not valid TOML.
    #[error("{}:{line}:{column}: invalid TOML: {message}", path.display())]
    Syntax {
        path: PathBuf,
        line: usize,
        column: usize,
        message: String,
    },
    /// A `config.env` line is not `KEY=VALUE`, or names an unknown variable.
    #[error("{}:{line}: {reason}", path.display())]
    EnvFile {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// An unknown section or key, a value of the wrong type, or an impossible value.
    #[error("{origin}: {key}: {reason}")]
    Invalid {
        origin: Origin,
        /// As the file spells it: `[agent] heartbeat_interval`, or `[foo]` for a section.
        key: String,
        reason: String,
    },
}

/// Loads and validates the configuration for these flags from the process environment.
pub fn load(flags: &ConfigFlags) -> Result<Loaded, ConfigError> {
    let exe_dir = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(Path::to_path_buf));
    // A variable that is not valid UTF-8 can't be a valid value of any key; passing it on
    // lossily makes it fail validation with its name instead of being silently ignored.
    let env = |name: &str| std::env::var_os(name).map(|v| v.to_string_lossy().into_owned());
    load_from(flags, &env, exe_dir.as_deref())
}

/// [`load`], with the environment read through `env` and `config.env` also looked for in
/// `exe_dir` (the binary's directory), so tests need not touch the process environment.
pub fn load_from(
    flags: &ConfigFlags,
    env: &dyn Fn(&str) -> Option<String>,
    exe_dir: Option<&Path>,
) -> Result<Loaded, ConfigError> {
    load_inner(flags, env, exe_dir, &DefaultPaths::get().config)
}

/// [`load_from`] with the default file's path as a parameter, so a test can point it at a
/// directory it controls instead of the machine's `/etc`.
fn load_inner(
    flags: &ConfigFlags,
    env: &dyn Fn(&str) -> Option<String>,
    exe_dir: Option<&Path>,
    default_path: &Path,
) -> Result<Loaded, ConfigError> {
    let path = flags
        .config
        .clone()
        .unwrap_or_else(|| default_path.to_owned());
    let file_dir = path.parent().map(Path::to_path_buf);

    // The file. Its absence is fine only when nobody asked for it by name.
    let text = match read_bounded(&path) {
        Ok(text) => Some(text),
        Err(ReadError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
            if flags.config.is_some() {
                return Err(ConfigError::NotFound { path });
            }
            None
        }
        Err(ReadError::Io(source)) => return Err(ConfigError::Read { path, source }),
        Err(ReadError::TooLarge) => {
            return Err(ConfigError::TooLarge {
                path,
                limit: MAX_FILE_BYTES,
            });
        }
    };
    let doc = match &text {
        Some(text) => Some(DeTable::parse(text).map_err(|e| syntax_error(&path, text, &e))?),
        None => None,
    };

    let mut candidates = Vec::new();
    if let (Some(text), Some(doc)) = (&text, &doc) {
        walk_file(
            &path,
            text,
            doc.get_ref(),
            file_dir.as_deref(),
            &mut candidates,
        )?;
    }

    let env_file = find_env_file(file_dir.as_deref(), exe_dir);
    if let Some(env_path) = &env_file {
        let entries = read_env_file(env_path)?;
        let base = env_path.parent().map(Path::to_path_buf);
        for seed in [true, false] {
            for spec in SPECS {
                let Some(var) = spec.var(seed) else { continue };
                if let Some(entry) = entries.iter().find(|e| e.name == var) {
                    candidates.push(Candidate {
                        spec,
                        value: Value {
                            raw: Raw::Text(entry.value.clone()),
                            minutes: seed && spec.seed_minutes,
                            base_dir: base.clone(),
                        },
                        origin: Origin::EnvFile {
                            path: env_path.clone(),
                            line: entry.line,
                            var: var.clone(),
                        },
                        source: Source::EnvFile {
                            path: env_path.clone(),
                            var,
                        },
                    });
                }
            }
        }
    }

    // The real environment: the seed's names first, so a `MUSTER_` name applied after wins.
    for seed in [true, false] {
        for spec in SPECS {
            let Some(var) = spec.var(seed) else { continue };
            if let Some(value) = env(&var) {
                candidates.push(Candidate {
                    spec,
                    value: Value {
                        raw: Raw::Text(value),
                        minutes: seed && spec.seed_minutes,
                        base_dir: None,
                    },
                    origin: Origin::Env(var.clone()),
                    source: Source::Env(var),
                });
            }
        }
    }

    let flag_values = [
        (
            "agent.state_dir",
            "--state-dir",
            flags.state_dir.clone().map(Raw::Path),
        ),
        (
            "agent.log_level",
            "--log-level",
            flags.log_level.clone().map(Raw::Text),
        ),
        (
            "api.base_url",
            "--base-url",
            flags.base_url.clone().map(Raw::Text),
        ),
    ];
    for (key, flag, raw) in flag_values {
        let (Some(raw), Some(spec)) = (raw, spec(key)) else {
            continue;
        };
        candidates.push(Candidate {
            spec,
            value: Value {
                raw,
                minutes: false,
                base_dir: None,
            },
            origin: Origin::Flag(flag),
            source: Source::Flag(flag),
        });
    }

    let mut config = Config::default();
    let mut sources: BTreeMap<&'static str, Source> =
        SPECS.iter().map(|s| (s.key, Source::Default)).collect();
    let mut origins: HashMap<&'static str, Origin> =
        SPECS.iter().map(|s| (s.key, Origin::Default)).collect();
    for candidate in candidates {
        let spec = candidate.spec;
        (spec.apply)(&mut config, &candidate.value).map_err(|reason| ConfigError::Invalid {
            origin: candidate.origin.clone(),
            key: spec.label(),
            reason,
        })?;
        sources.insert(spec.key, candidate.source);
        origins.insert(spec.key, candidate.origin);
    }

    check_relations(&config, &origins)?;
    Ok(Loaded {
        config,
        sources,
        path,
        file_found: text.is_some(),
        env_file,
    })
}

/// [`load`] for a command's entry point: on error, prints `muster-agent: <error>` to stderr
/// and gives the exit code to return ([`EX_CONFIG`]).
pub fn load_or_exit(flags: &ConfigFlags) -> Result<Loaded, ExitCode> {
    load(flags).map_err(|e| {
        eprintln!("muster-agent: {e}");
        ExitCode::from(EX_CONFIG)
    })
}

/// The name of every key, `section.key`, in documentation order.
pub fn keys() -> impl Iterator<Item = &'static str> {
    SPECS.iter().map(|s| s.key)
}

/// The environment variable that sets `key` (`agent.state_dir` → `MUSTER_AGENT_STATE_DIR`).
pub fn env_var(key: &str) -> String {
    format!("MUSTER_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// Values that are fine alone but impossible together.
fn check_relations(
    config: &Config,
    origins: &HashMap<&'static str, Origin>,
) -> Result<(), ConfigError> {
    let origin = |key: &str| origins.get(key).cloned().unwrap_or(Origin::Default);
    let invalid = |key: &str, reason: String| ConfigError::Invalid {
        origin: origin(key),
        key: spec(key).map(Spec::label).unwrap_or_else(|| key.to_owned()),
        reason,
    };

    // A splay longer than an interval would let runs of that schedule overtake each other.
    let agent = &config.agent;
    let intervals = [
        ("agent.heartbeat_interval", agent.heartbeat_interval),
        ("agent.collection_interval", agent.collection_interval),
        ("agent.inventory_interval", agent.inventory_interval),
    ];
    let (shortest, interval) = intervals
        .into_iter()
        .min_by_key(|&(_, d)| d)
        .unwrap_or(("agent.heartbeat_interval", agent.heartbeat_interval));
    if agent.splay > interval {
        let splay = agent.splay.as_secs();
        let secs = interval.as_secs();
        // Blame what the user wrote; a default is not where the fix goes.
        return Err(if origin("agent.splay") != Origin::Default {
            invalid(
                "agent.splay",
                format!("must not exceed the shortest interval ({shortest} = {secs}), got {splay}"),
            )
        } else {
            invalid(
                shortest,
                format!(
                    "is shorter than [agent] splay ({splay}, the default); lower splay too, \
                     got {secs}"
                ),
            )
        });
    }

    let scheduling = &config.scheduling;
    match (
        scheduling.maintenance_window_start,
        scheduling.maintenance_window_end,
    ) {
        (Some(_), None) => {
            return Err(invalid(
                "scheduling.maintenance_window_end",
                "must be set when maintenance_window_start is (leave both empty for no window)"
                    .into(),
            ));
        }
        (None, Some(_)) => {
            return Err(invalid(
                "scheduling.maintenance_window_start",
                "must be set when maintenance_window_end is (leave both empty for no window)"
                    .into(),
            ));
        }
        (Some(start), Some(end)) if start == end => {
            let key = if origin("scheduling.maintenance_window_end") != Origin::Default {
                "scheduling.maintenance_window_end"
            } else {
                "scheduling.maintenance_window_start"
            };
            return Err(invalid(
                key,
                format!(
                    "the window is empty: start and end are both {}",
                    hh_mm(start)
                ),
            ));
        }
        _ => {}
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The key table

/// One key: its name, its seed variable, how its value is parsed into [`Config`] and shown.
struct Spec {
    /// `section.key`.
    key: &'static str,
    /// The ITAM scanner's variable for this key, if it has one.
    seed_var: Option<&'static str>,
    /// The seed variable counts minutes where the key counts seconds.
    seed_minutes: bool,
    apply: fn(&mut Config, &Value<'_>) -> Result<(), String>,
    show: fn(&Config) -> Shown,
}

impl Spec {
    const fn seed(mut self, var: &'static str) -> Self {
        self.seed_var = Some(var);
        self
    }

    const fn seed_minutes(mut self, var: &'static str) -> Self {
        self.seed_var = Some(var);
        self.seed_minutes = true;
        self
    }

    fn section(&self) -> &'static str {
        self.key.split_once('.').map_or(self.key, |(s, _)| s)
    }

    fn name(&self) -> &'static str {
        self.key.split_once('.').map_or(self.key, |(_, n)| n)
    }

    /// `[agent] state_dir`, as the file spells it.
    fn label(&self) -> String {
        format!("[{}] {}", self.section(), self.name())
    }

    /// The seed variable (`seed`) or the `MUSTER_` one.
    fn var(&self, seed: bool) -> Option<String> {
        if seed {
            self.seed_var.map(str::to_owned)
        } else {
            Some(env_var(self.key))
        }
    }
}

fn spec(key: &str) -> Option<&'static Spec> {
    SPECS.iter().find(|s| s.key == key)
}

/// Declares a key whose name is its field's path, so the two can't drift apart.
macro_rules! spec {
    ($section:ident . $name:ident, $parse:expr, $show:expr) => {
        Spec {
            key: concat!(stringify!($section), ".", stringify!($name)),
            seed_var: None,
            seed_minutes: false,
            apply: |config, value| {
                config.$section.$name = ($parse)(value)?;
                Ok(())
            },
            show: |config| ($show)(&config.$section.$name),
        }
    };
}

/// Every key, in documentation order.
static SPECS: &[Spec] = &[
    spec!(
        agent.collection_interval,
        |v: &Value<'_>| v.seconds(1, MAX_INTERVAL_SECS),
        show_secs
    )
    .seed_minutes("TELEMETRY_INTERVAL"),
    spec!(
        agent.heartbeat_interval,
        |v: &Value<'_>| v.seconds(1, MAX_INTERVAL_SECS),
        show_secs
    ),
    spec!(
        agent.inventory_interval,
        |v: &Value<'_>| v.seconds(1, MAX_INTERVAL_SECS),
        show_secs
    )
    .seed_minutes("HARDWARE_SOFTWARE_INTERVAL"),
    spec!(
        agent.splay,
        |v: &Value<'_>| v.seconds(0, MAX_INTERVAL_SECS),
        show_secs
    ),
    spec!(agent.log_level, Value::log_level, |l: &LogLevel| {
        Shown::Str(l.as_str().into())
    }),
    spec!(
        agent.log_max_size,
        |v: &Value<'_>| v.integer(1024, 1 << 32, "bytes"),
        show_int
    ),
    spec!(
        agent.log_backup_count,
        |v: &Value<'_>| v.integer(0, 100, "files"),
        show_int
    ),
    spec!(agent.log_file, Value::path, show_path),
    spec!(agent.state_dir, Value::path, show_path),
    spec!(agent.pid_file, Value::path, show_path),
    spec!(
        agent.spool_max_bytes,
        |v: &Value<'_>| v.integer(1, 1 << 40, "bytes"),
        show_int
    ),
    spec!(
        agent.spool_max_items,
        |v: &Value<'_>| v.integer(1, 1_000_000, "items"),
        show_int
    ),
    spec!(api.base_url, Value::url, show_str).seed("API_BASE_URL"),
    spec!(api.auth_token, Value::secret, |s: &Secret| {
        // An empty token is no secret, and saying it is empty is what the reader needs.
        if s.is_empty() {
            Shown::Str(String::new())
        } else {
            Shown::Redacted
        }
    })
    .seed("API_TOKEN"),
    spec!(api.tenant_id, Value::tenant, show_str).seed("TENANT_ID"),
    spec!(
        api.timeout,
        |v: &Value<'_>| v.seconds(1, MAX_SHORT_SECS),
        show_secs
    ),
    spec!(
        api.retry_attempts,
        |v: &Value<'_>| v.integer(0, 20, "retries"),
        show_int
    ),
    spec!(
        api.retry_delay,
        |v: &Value<'_>| v.seconds(1, MAX_SHORT_SECS),
        show_secs
    ),
    spec!(monitoring.cpu_threshold, Value::percent, show_float),
    spec!(monitoring.memory_threshold, Value::percent, show_float),
    spec!(monitoring.disk_threshold, Value::percent, show_float),
    spec!(
        monitoring.load_check_interval,
        |v: &Value<'_>| v.seconds(1, MAX_SHORT_SECS),
        show_secs
    ),
    spec!(
        scheduling.max_concurrent_commands,
        |v: &Value<'_>| v.integer(1, 64, "commands"),
        show_int
    ),
    spec!(scheduling.defer_threshold_cpu, Value::percent, show_float),
    spec!(
        scheduling.defer_threshold_memory,
        Value::percent,
        show_float
    ),
    spec!(
        scheduling.maintenance_window_start,
        Value::time_of_day,
        show_time
    ),
    spec!(
        scheduling.maintenance_window_end,
        Value::time_of_day,
        show_time
    ),
    spec!(
        scheduling.command_timeout,
        |v: &Value<'_>| v.seconds(1, MAX_INTERVAL_SECS),
        show_secs
    ),
    spec!(
        scheduling.kill_grace,
        |v: &Value<'_>| v.seconds(0, 300),
        show_secs
    ),
    spec!(
        scheduling.output_max_bytes,
        |v: &Value<'_>| v.integer(1024, 16 << 20, "bytes"),
        show_int
    ),
    spec!(
        scheduling.long_poll,
        Value::boolean,
        |b: &bool| Shown::Bool(*b)
    ),
    spec!(security.verify_ssl, Value::boolean, |b: &bool| Shown::Bool(
        *b
    )),
    spec!(security.ca_file, Value::ca_file, |p: &Option<PathBuf>| {
        p.as_deref().map_or(Shown::Unset, show_path)
    }),
    spec!(
        security.allowed_command_types,
        Value::command_types,
        |t: &Vec<String>| Shown::List(t.clone())
    ),
    spec!(
        security.command_signing_key,
        Value::signing_key,
        |k: &Option<String>| k.clone().map_or(Shown::Unset, Shown::Str)
    ),
];

/// A value as `config check` shows it.
#[derive(Debug, Clone, PartialEq)]
enum Shown {
    Int(u64),
    Float(f64),
    Str(String),
    Bool(bool),
    List(Vec<String>),
    Unset,
    Redacted,
}

impl Shown {
    /// TOML-like text: strings quoted, so an empty one is visible.
    fn text(&self) -> String {
        match self {
            Shown::Int(n) => n.to_string(),
            Shown::Float(x) => x.to_string(),
            Shown::Str(s) => format!("{s:?}"),
            Shown::Bool(b) => b.to_string(),
            Shown::List(items) => {
                let items: Vec<String> = items.iter().map(|i| format!("{i:?}")).collect();
                format!("[{}]", items.join(", "))
            }
            Shown::Unset => "(not set)".into(),
            Shown::Redacted => "[redacted]".into(),
        }
    }

    fn json(&self) -> serde_json::Value {
        match self {
            Shown::Int(n) => (*n).into(),
            Shown::Float(x) => (*x).into(),
            Shown::Str(s) => s.clone().into(),
            Shown::Bool(b) => (*b).into(),
            Shown::List(items) => items.clone().into(),
            Shown::Unset => serde_json::Value::Null,
            Shown::Redacted => "[redacted]".into(),
        }
    }
}

fn show_secs(d: &Duration) -> Shown {
    Shown::Int(d.as_secs())
}

fn show_int<T: Copy + Into<u64>>(n: &T) -> Shown {
    Shown::Int((*n).into())
}

fn show_float(x: &f64) -> Shown {
    Shown::Float(*x)
}

fn show_str(s: &str) -> Shown {
    Shown::Str(s.to_owned())
}

fn show_path(p: &Path) -> Shown {
    Shown::Str(p.display().to_string())
}

fn show_time(t: &Option<u32>) -> Shown {
    t.map_or(Shown::Unset, |t| Shown::Str(hh_mm(t)))
}

fn hh_mm(minutes: u32) -> String {
    format!("{:02}:{:02}", minutes / 60, minutes % 60)
}

// ---------------------------------------------------------------------------------------------
// Raw values and their parsers

/// One layer's value for one key, before validation.
struct Candidate<'a> {
    spec: &'static Spec,
    value: Value<'a>,
    origin: Origin,
    source: Source,
}

/// A raw value: a TOML value from the file, or text from a variable or flag.
struct Value<'a> {
    raw: Raw<'a>,
    /// Set for the seed's minute-valued interval variables.
    minutes: bool,
    /// Relative paths are resolved against this directory (the file's); `None` means the
    /// working directory.
    base_dir: Option<PathBuf>,
}

enum Raw<'a> {
    Toml(&'a DeValue<'a>),
    Text(String),
    Path(PathBuf),
}

impl Value<'_> {
    /// `integer 5`, `string "5"`: what was found, for a wrong-type message.
    fn found(&self) -> String {
        match &self.raw {
            Raw::Toml(v) => describe_toml(v),
            Raw::Text(s) => format!("{s:?}"),
            Raw::Path(p) => format!("{:?}", p.display().to_string()),
        }
    }

    /// The value alone (`-5`, `"abc"`), for a bad-value message.
    fn got(&self) -> String {
        match &self.raw {
            Raw::Toml(DeValue::Integer(i)) => i.to_string(),
            Raw::Toml(DeValue::Float(f)) => f.as_str().to_owned(),
            Raw::Toml(DeValue::String(s)) => format!("{s:?}"),
            Raw::Toml(DeValue::Datetime(d)) => d.to_string(),
            _ => self.found(),
        }
    }

    fn wrong_type(&self, expected: &str) -> String {
        format!("expected {expected}, got {}", self.found())
    }

    fn str(&self, expected: &str) -> Result<&str, String> {
        match &self.raw {
            Raw::Toml(DeValue::String(s)) => Ok(s),
            Raw::Text(s) => Ok(s),
            Raw::Path(p) => p.to_str().ok_or_else(|| "is not valid UTF-8".to_owned()),
            Raw::Toml(_) => Err(self.wrong_type(expected)),
        }
    }

    /// An integer of any size TOML allows, wide enough that every bound check is exact.
    fn int(&self, expected: &str) -> Result<i128, String> {
        match &self.raw {
            Raw::Toml(DeValue::Integer(i)) => {
                i128::from_str_radix(i.as_str(), i.radix()).map_err(|_| self.wrong_type(expected))
            }
            Raw::Text(s) => s.trim().parse().map_err(|_| self.wrong_type(expected)),
            _ => Err(self.wrong_type(expected)),
        }
    }

    fn integer<T: TryFrom<i128>>(&self, min: i128, max: i128, unit: &str) -> Result<T, String> {
        let n = self.int(&format!("an integer number of {unit}"))?;
        if n < min {
            return Err(match min {
                0 => format!("must not be negative, got {}", self.got()),
                1 => format!("must be a positive number of {unit}, got {}", self.got()),
                _ => format!("must be at least {min} {unit}, got {}", self.got()),
            });
        }
        if n > max {
            return Err(format!("must be at most {max} {unit}, got {}", self.got()));
        }
        T::try_from(n).map_err(|_| format!("must be at most {max} {unit}, got {}", self.got()))
    }

    /// Whole seconds in `min..=max`; the seed's variables give minutes.
    fn seconds(&self, min: u64, max: u64) -> Result<Duration, String> {
        let (min, max, unit, scale) = if self.minutes {
            (min.div_ceil(60), max / 60, "minutes", 60)
        } else {
            (min, max, "seconds", 1)
        };
        let n: u64 = self.integer(min.into(), max.into(), unit)?;
        Ok(Duration::from_secs(n * scale))
    }

    fn percent(&self) -> Result<f64, String> {
        const EXPECTED: &str = "a percentage from 0 to 100";
        let x = match &self.raw {
            Raw::Toml(DeValue::Integer(_)) => self.int(EXPECTED)? as f64,
            Raw::Toml(DeValue::Float(f)) => {
                f.as_str().parse().map_err(|_| self.wrong_type(EXPECTED))?
            }
            Raw::Text(s) => s.trim().parse().map_err(|_| self.wrong_type(EXPECTED))?,
            _ => return Err(self.wrong_type(EXPECTED)),
        };
        if !(0.0..=100.0).contains(&x) {
            return Err(format!(
                "must be a percentage from 0 to 100, got {}",
                self.got()
            ));
        }
        Ok(x)
    }

    fn log_level(&self) -> Result<LogLevel, String> {
        self.str("a log level (error, warn, info, debug, trace)")?
            .parse()
    }

    fn boolean(&self) -> Result<bool, String> {
        match &self.raw {
            Raw::Toml(DeValue::Boolean(b)) => Ok(*b),
            Raw::Text(s) => match s.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" | "on" => Ok(true),
                "false" | "0" | "no" | "off" => Ok(false),
                _ => Err(format!("must be true or false, got {s:?}")),
            },
            _ => Err(self.wrong_type("true or false")),
        }
    }

    /// A path; relative ones are made absolute now, because the daemon changes directory.
    fn path(&self) -> Result<PathBuf, String> {
        let path = match &self.raw {
            Raw::Path(p) => p.clone(),
            _ => PathBuf::from(self.str("a path (string)")?),
        };
        if path.as_os_str().is_empty() {
            return Err("must not be empty".into());
        }
        let joined = match &self.base_dir {
            Some(dir) if path.is_relative() => dir.join(&path),
            _ => path,
        };
        std::path::absolute(&joined)
            .map_err(|e| format!("cannot make {} absolute: {e}", joined.display()))
    }

    fn ca_file(&self) -> Result<Option<PathBuf>, String> {
        if matches!(self.str("a path (string)")?, "") {
            return Ok(None);
        }
        let path = self.path()?;
        // Checked now so a typo stops `config check` and start-up, not the first request.
        match std::fs::metadata(&path) {
            Ok(meta) if meta.is_file() => {}
            Ok(_) => return Err(format!("{} is not a file", path.display())),
            Err(e) => return Err(format!("cannot use {}: {e}", path.display())),
        }
        let pem =
            std::fs::read(&path).map_err(|e| format!("cannot use {}: {e}", path.display()))?;
        match reqwest::Certificate::from_pem_bundle(&pem) {
            Ok(certs) if !certs.is_empty() => Ok(Some(path)),
            _ => Err(format!("{} holds no PEM certificate", path.display())),
        }
    }

    /// `http(s)://host[:port][/path]`; empty means not configured. A trailing `/` is dropped
    /// so request paths can be appended.
    fn url(&self) -> Result<String, String> {
        let text = self.str("a URL (string)")?.trim();
        if text.is_empty() {
            return Ok(String::new());
        }
        let expected = || format!("must be an http:// or https:// URL with a host, got {text:?}");
        let url = reqwest::Url::parse(text).map_err(|_| expected())?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(expected());
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err(expected());
        }
        if !url.username().is_empty() || url.password().is_some() {
            // Credentials in a URL end up in logs; the token has its own key.
            return Err("must not contain credentials (use [api] auth_token)".into());
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err(format!("must not have a query or fragment, got {text:?}"));
        }
        Ok(url.as_str().trim_end_matches('/').to_owned())
    }

    fn tenant(&self) -> Result<String, String> {
        let text = self.str("a string")?.trim();
        if text.len() > 256 {
            return Err("must be at most 256 bytes".into());
        }
        if text.chars().any(char::is_control) {
            return Err(format!("must not contain control characters, got {text:?}"));
        }
        Ok(text.to_owned())
    }

    /// The enrolment token. Messages never include it.
    fn secret(&self) -> Result<Secret, String> {
        let text = match &self.raw {
            Raw::Toml(DeValue::String(s)) => s.as_ref(),
            Raw::Text(s) => s.trim(),
            _ => {
                let kind = match &self.raw {
                    Raw::Toml(v) => toml_kind(v),
                    _ => "value",
                };
                return Err(format!("expected a string, got {kind} (value not shown)"));
            }
        };
        if text.len() > 4096 {
            return Err("must be at most 4096 bytes (value not shown)".into());
        }
        if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(
                "must not contain whitespace or control characters (value not shown)".into(),
            );
        }
        Ok(Secret::new(text))
    }

    /// `HH:MM`, 24-hour, as minutes after midnight; empty means no window. TOML 1.1's bare
    /// local time (`02:00`) is taken too, since that is how the seed's INI file wrote it.
    fn time_of_day(&self) -> Result<Option<u32>, String> {
        let bad = || {
            format!(
                "must be a time of day as HH:MM (24-hour, 00:00 to 23:59), got {}",
                self.got()
            )
        };
        if let Raw::Toml(DeValue::Datetime(dt)) = &self.raw {
            return match (dt.date, dt.time, dt.offset) {
                (None, Some(t), None)
                    if t.second.unwrap_or(0) == 0 && t.nanosecond.unwrap_or(0) == 0 =>
                {
                    Ok(Some(u32::from(t.hour) * 60 + u32::from(t.minute)))
                }
                _ => Err(bad()),
            };
        }
        let text = self.str("a time of day (\"HH:MM\")")?.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let (h, m) = text.split_once(':').ok_or_else(bad)?;
        let digits = |s: &str, len: std::ops::RangeInclusive<usize>| {
            len.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
        };
        if !digits(h, 1..=2) || !digits(m, 2..=2) {
            return Err(bad());
        }
        let (h, m): (u32, u32) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
        if h > 23 || m > 59 {
            return Err(bad());
        }
        Ok(Some(h * 60 + m))
    }

    /// A TOML array of strings, or a comma-separated list from a variable.
    fn command_types(&self) -> Result<Vec<String>, String> {
        const EXPECTED: &str = "an array of command types (exec, script, builtin)";
        let items: Vec<String> = match &self.raw {
            Raw::Toml(DeValue::Array(items)) => items
                .iter()
                .map(|item| match item.get_ref() {
                    DeValue::String(s) => Ok(s.to_string()),
                    other => Err(format!(
                        "{EXPECTED}, got {} in the array",
                        describe_toml(other)
                    )),
                })
                .collect::<Result<_, _>>()?,
            Raw::Text(s) => s
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect(),
            _ => return Err(self.wrong_type(EXPECTED)),
        };
        let mut types: Vec<String> = Vec::new();
        for item in items {
            if !COMMAND_TYPES.contains(&item.as_str()) {
                return Err(format!(
                    "unknown command type {item:?} (allowed: {})",
                    COMMAND_TYPES.join(", ")
                ));
            }
            if !types.contains(&item) {
                types.push(item);
            }
        }
        Ok(types)
    }

    /// The tenant's ed25519 public key: base64 of 32 bytes; empty means none.
    fn signing_key(&self) -> Result<Option<String>, String> {
        let text = self.str("a base64 string")?.trim();
        if text.is_empty() {
            return Ok(None);
        }
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(text)
            .map_err(|e| format!("must be base64 of a 32-byte ed25519 public key: {e}"))?;
        if bytes.len() != 32 {
            return Err(format!(
                "must be base64 of a 32-byte ed25519 public key, got {} bytes",
                bytes.len()
            ));
        }
        Ok(Some(text.to_owned()))
    }
}

fn toml_kind(value: &DeValue<'_>) -> &'static str {
    match value {
        DeValue::String(_) => "string",
        DeValue::Integer(_) => "integer",
        DeValue::Float(_) => "float",
        DeValue::Boolean(_) => "boolean",
        DeValue::Datetime(_) => "date-time",
        DeValue::Array(_) => "an array",
        DeValue::Table(_) => "a table",
    }
}

fn describe_toml(value: &DeValue<'_>) -> String {
    let kind = toml_kind(value);
    match value {
        DeValue::String(s) => format!("{kind} {s:?}"),
        DeValue::Integer(i) => format!("{kind} {i}"),
        DeValue::Float(f) => format!("{kind} {}", f.as_str()),
        DeValue::Boolean(b) => format!("{kind} {b}"),
        DeValue::Datetime(d) => format!("{kind} {d}"),
        DeValue::Array(_) | DeValue::Table(_) => kind.to_owned(),
    }
}

// ---------------------------------------------------------------------------------------------
// The file

enum ReadError {
    Io(io::Error),
    TooLarge,
}

fn read_bounded(path: &Path) -> Result<String, ReadError> {
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    let mut text = String::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(ReadError::Io)?;
    if text.len() as u64 > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge);
    }
    // Notepad writes a byte-order mark; it is not part of the content.
    if let Some(rest) = text.strip_prefix('\u{feff}') {
        text = rest.to_owned();
    }
    Ok(text)
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}

fn syntax_error(path: &Path, text: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = line_column(text, e.span().map_or(0, |s| s.start));
    // Only the parser's message: toml's Display would quote the offending line, which may
    // hold the token.
    let message = e.message().trim().replace('\n', "; ");
    ConfigError::Syntax {
        path: path.to_owned(),
        line,
        column,
        message,
    }
}

/// Checks every section and key of the document against the key table and collects the
/// values, in file order.
fn walk_file<'a>(
    path: &Path,
    text: &str,
    doc: &'a DeTable<'a>,
    base_dir: Option<&Path>,
    out: &mut Vec<Candidate<'a>>,
) -> Result<(), ConfigError> {
    let at = |offset: usize| Origin::File {
        path: path.to_owned(),
        line: Some(line_column(text, offset)),
    };
    let mut errors: Vec<(usize, ConfigError)> = Vec::new();
    let mut found: Vec<(usize, Candidate<'a>)> = Vec::new();
    for (section, value) in doc.iter() {
        let name: &str = section.get_ref();
        let start = section.span().start;
        let DeValue::Table(table) = value.get_ref() else {
            let reason = if SECTIONS.contains(&name) {
                format!("must be a table, got {}", describe_toml(value.get_ref()))
            } else {
                format!(
                    "unknown key outside any section (sections: {})",
                    SECTIONS.join(", ")
                )
            };
            let key = if SECTIONS.contains(&name) {
                format!("[{name}]")
            } else {
                name.to_owned()
            };
            errors.push((
                start,
                ConfigError::Invalid {
                    origin: at(start),
                    key,
                    reason,
                },
            ));
            continue;
        };
        if !SECTIONS.contains(&name) {
            errors.push((
                start,
                ConfigError::Invalid {
                    origin: at(start),
                    key: format!("[{name}]"),
                    reason: format!("unknown section (known: {})", SECTIONS.join(", ")),
                },
            ));
            continue;
        }
        for (key, value) in table.iter() {
            let full = format!("{name}.{}", key.get_ref());
            let Some(spec) = spec(&full) else {
                let start = key.span().start;
                errors.push((
                    start,
                    ConfigError::Invalid {
                        origin: at(start),
                        key: format!("[{name}] {}", key.get_ref()),
                        reason: unknown_key_reason(name, key.get_ref()),
                    },
                ));
                continue;
            };
            let start = value.span().start;
            found.push((
                start,
                Candidate {
                    spec,
                    value: Value {
                        raw: Raw::Toml(value.get_ref()),
                        minutes: false,
                        base_dir: base_dir.map(Path::to_path_buf),
                    },
                    origin: at(start),
                    source: Source::File(path.to_owned()),
                },
            ));
        }
    }
    // Report the first problem in reading order, not the map's order.
    if let Some((_, error)) = errors.into_iter().min_by_key(|(start, _)| *start) {
        return Err(error);
    }
    found.sort_by_key(|(start, _)| *start);
    out.extend(found.into_iter().map(|(_, c)| c));
    Ok(())
}

fn unknown_key_reason(section: &str, key: &str) -> String {
    let known: Vec<&str> = SPECS
        .iter()
        .filter(|s| s.section() == section)
        .map(Spec::name)
        .collect();
    match known.iter().min_by_key(|k| edit_distance(k, key)) {
        Some(close) if edit_distance(close, key) <= 2 => {
            format!("unknown key (did you mean {close}?)")
        }
        _ => format!("unknown key (known: {})", known.join(", ")),
    }
}

/// Levenshtein distance, for "did you mean".
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1)
                .min(row[j] + 1)
                .min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

// ---------------------------------------------------------------------------------------------
// config.env

/// The first `config.env` that exists: beside the configuration file, then beside the binary.
fn find_env_file(file_dir: Option<&Path>, exe_dir: Option<&Path>) -> Option<PathBuf> {
    [file_dir, exe_dir]
        .into_iter()
        .flatten()
        .map(|dir| dir.join(ENV_FILE_NAME))
        // An entry we can't even stat still counts, so the read fails loudly instead of the
        // file being skipped in silence.
        .find(|path| path.try_exists().unwrap_or(true))
}

struct EnvEntry {
    name: String,
    value: String,
    line: usize,
}

/// Reads `KEY=VALUE` lines: `#` comments, blank lines, an optional `export `, values optionally
/// in single or double quotes (taken literally), unquoted values ending at ` #`. Every name must
/// be one the agent reads, and appear once.
fn read_env_file(path: &Path) -> Result<Vec<EnvEntry>, ConfigError> {
    let text = read_bounded(path).map_err(|e| match e {
        ReadError::Io(source) => ConfigError::Read {
            path: path.to_owned(),
            source,
        },
        ReadError::TooLarge => ConfigError::TooLarge {
            path: path.to_owned(),
            limit: MAX_FILE_BYTES,
        },
    })?;
    parse_env_text(path, &text)
}

fn parse_env_text(path: &Path, text: &str) -> Result<Vec<EnvEntry>, ConfigError> {
    let error = |line: usize, reason: String| ConfigError::EnvFile {
        path: path.to_owned(),
        line,
        reason,
    };
    let mut entries: Vec<EnvEntry> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let line = line.strip_prefix("export ").map_or(line, str::trim_start);
        let (name, rest) = line
            .split_once('=')
            .ok_or_else(|| error(number, "expected KEY=VALUE".into()))?;
        let name = name.trim();
        let valid_name = name.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_')
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid_name {
            return Err(error(number, format!("{name:?} is not a variable name")));
        }
        if !known_variable(name) {
            return Err(error(
                number,
                format!(
                    "{name}: unknown variable (expected MUSTER_<SECTION>_<KEY> or one of {})",
                    seed_variables().join(", ")
                ),
            ));
        }
        let value = parse_env_value(rest.trim_start())
            .map_err(|reason| error(number, format!("{name}: {reason}")))?;
        if let Some(first) = entries.iter().find(|e| e.name == name) {
            return Err(error(
                number,
                format!("{name}: set twice (first on line {})", first.line),
            ));
        }
        entries.push(EnvEntry {
            name: name.to_owned(),
            value,
            line: number,
        });
    }
    Ok(entries)
}

fn parse_env_value(rest: &str) -> Result<String, String> {
    let mut chars = rest.chars();
    match chars.next() {
        Some(quote @ ('"' | '\'')) => {
            let inner = chars.as_str();
            let end = inner
                .find(quote)
                .ok_or_else(|| format!("unterminated {quote} quote"))?;
            let after = inner[end + 1..].trim();
            if !after.is_empty() && !after.starts_with('#') {
                return Err("unexpected text after the closing quote".into());
            }
            Ok(inner[..end].to_owned())
        }
        _ => {
            // ` #` starts a comment, as in a shell; a `#` inside a word does not.
            let end = rest
                .char_indices()
                .find(|&(i, c)| c == '#' && rest[..i].ends_with(char::is_whitespace))
                .map_or(rest.len(), |(i, _)| i);
            Ok(rest[..end].trim_end().to_owned())
        }
    }
}

fn known_variable(name: &str) -> bool {
    SPECS
        .iter()
        .any(|s| s.seed_var == Some(name) || env_var(s.key) == name)
}

fn seed_variables() -> Vec<&'static str> {
    SPECS.iter().filter_map(|s| s.seed_var).collect()
}

// ---------------------------------------------------------------------------------------------
// config check

/// `muster-agent config check`: validates the configuration and prints every effective value
/// with its source. Exits [`EX_CONFIG`] when the configuration is bad.
pub fn check(args: &ConfigCheckArgs) -> anyhow::Result<ExitCode> {
    let loaded = match load_or_exit(&args.config) {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let out = if args.quiet {
        String::new()
    } else if let Some(key) = &args.get {
        let Some(spec) = SPECS.iter().find(|spec| spec.key == key) else {
            let known: Vec<&str> = SPECS.iter().map(|spec| spec.key).collect();
            eprintln!(
                "muster-agent: unknown key {key} (known: {})",
                known.join(", ")
            );
            return Ok(ExitCode::from(2));
        };
        match (spec.show)(&loaded.config).json() {
            serde_json::Value::String(text) => format!("{text}\n"),
            serde_json::Value::Null => "\n".to_owned(),
            other => format!("{other}\n"),
        }
    } else if args.json {
        let mut text = serde_json::to_string_pretty(&render_json(&loaded))
            .context("rendering the configuration as JSON")?;
        text.push('\n');
        text
    } else {
        render_text(&loaded)
    };
    io::stdout()
        .lock()
        .write_all(out.as_bytes())
        .context("writing to standard output")?;
    Ok(ExitCode::SUCCESS)
}

/// `{ "section.key": { "value": ..., "source": "..." } }`.
fn render_json(loaded: &Loaded) -> serde_json::Value {
    let map: serde_json::Map<String, serde_json::Value> = SPECS
        .iter()
        .map(|spec| {
            let source = loaded
                .sources
                .get(spec.key)
                .map_or_else(|| "default".into(), ToString::to_string);
            let entry = serde_json::json!({
                "value": (spec.show)(&loaded.config).json(),
                "source": source,
            });
            (spec.key.to_owned(), entry)
        })
        .collect();
    serde_json::Value::Object(map)
}

/// `section.key = value  (source)`, aligned, after two comment lines naming the files.
fn render_text(loaded: &Loaded) -> String {
    let file_note = if loaded.file_found {
        ""
    } else {
        " (not found, defaults apply)"
    };
    let mut out = format!("# file: {}{file_note}\n", loaded.path.display());
    match &loaded.env_file {
        Some(path) => out.push_str(&format!("# config.env: {}\n", path.display())),
        None => out.push_str("# config.env: none found\n"),
    }
    let lines: Vec<(String, String)> = SPECS
        .iter()
        .map(|spec| {
            let value = (spec.show)(&loaded.config).text();
            let source = loaded
                .sources
                .get(spec.key)
                .map_or_else(|| "default".into(), ToString::to_string);
            (format!("{} = {value}", spec.key), source)
        })
        .collect();
    let width = lines
        .iter()
        .map(|(l, _)| l.chars().count())
        .max()
        .unwrap_or(0);
    for (left, source) in lines {
        out.push_str(&format!("{left:<width$}  ({source})\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    const TOKEN: &str = "tok-9f2c7e1d-never-print-me";

    /// A directory with a configuration file in it, and the environment to load it with.
    struct Fixture {
        dir: tempfile::TempDir,
        env: HashMap<String, String>,
        flags: ConfigFlags,
    }

    impl Fixture {
        fn new(toml: &str) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("agent.toml");
            std::fs::write(&path, toml).unwrap();
            let flags = ConfigFlags {
                config: Some(path),
                ..ConfigFlags::default()
            };
            Fixture {
                dir,
                env: HashMap::new(),
                flags,
            }
        }

        fn path(&self) -> PathBuf {
            self.dir.path().join("agent.toml")
        }

        fn env(mut self, name: &str, value: &str) -> Self {
            self.env.insert(name.into(), value.into());
            self
        }

        fn env_file(self, text: &str) -> Self {
            std::fs::write(self.dir.path().join(ENV_FILE_NAME), text).unwrap();
            self
        }

        fn load(&self) -> Result<Loaded, ConfigError> {
            let env = |name: &str| self.env.get(name).cloned();
            load_from(&self.flags, &env, None)
        }

        fn ok(&self) -> Loaded {
            self.load()
                .unwrap_or_else(|e| panic!("expected a valid config, got: {e}"))
        }

        /// The error's message, with the fixture's directory replaced by `DIR` and the
        /// separator after it written `/` (Windows names the file `DIR\agent.toml`).
        fn err(&self) -> String {
            match self.load() {
                Ok(_) => panic!("expected a config error"),
                Err(e) => e
                    .to_string()
                    .replace(&self.dir.path().display().to_string(), "DIR")
                    .replace("DIR\\", "DIR/"),
            }
        }
    }

    fn err(toml: &str) -> String {
        Fixture::new(toml).err()
    }

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn a_missing_default_file_means_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let default = dir.path().join("agent.toml");
        let loaded = load_inner(&ConfigFlags::default(), &no_env, None, &default).unwrap();
        assert_eq!(loaded.config, Config::default());
        assert!(!loaded.file_found);
        assert_eq!(loaded.path, default);
        assert_eq!(loaded.sources.len(), SPECS.len());
        assert!(loaded.sources.values().all(|s| *s == Source::Default));
    }

    #[test]
    fn a_missing_file_named_by_config_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope.toml");
        let flags = ConfigFlags {
            config: Some(path.clone()),
            ..ConfigFlags::default()
        };
        let e = load_from(&flags, &no_env, None).unwrap_err();
        assert!(matches!(&e, ConfigError::NotFound { path: p } if *p == path));
        assert_eq!(
            e.to_string(),
            format!("{}: configuration file not found", path.display())
        );
    }

    #[test]
    fn the_file_sets_every_section() {
        let fixture = Fixture::new(
            r#"
            [agent]
            collection_interval = 300
            heartbeat_interval = 15
            inventory_interval = 7200
            splay = 5
            log_level = "DEBUG"
            log_max_size = 2048
            log_backup_count = 0
            log_file = "/tmp/agent.log"
            state_dir = "/tmp/muster-state"
            pid_file = "/tmp/agent.pid"
            spool_max_bytes = 1_000_000
            spool_max_items = 50

            [api]
            base_url = "https://muster.example.com:8443/api/"
            auth_token = "tok-9f2c7e1d-never-print-me"
            tenant_id = "acme"
            timeout = 10
            retry_attempts = 0
            retry_delay = 2

            [monitoring]
            cpu_threshold = 90.5
            memory_threshold = 0
            disk_threshold = 100
            load_check_interval = 20

            [scheduling]
            max_concurrent_commands = 8
            defer_threshold_cpu = 60
            defer_threshold_memory = 70.25
            maintenance_window_start = "23:30"
            maintenance_window_end = 01:15
            command_timeout = 120
            kill_grace = 3
            output_max_bytes = 2048
            long_poll = false

            [security]
            verify_ssl = false
            allowed_command_types = ["exec", "builtin", "exec"]
            command_signing_key = "11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo="
            "#,
        );
        let loaded = fixture.ok();
        let c = &loaded.config;
        assert_eq!(c.agent.collection_interval, Duration::from_secs(300));
        assert_eq!(c.agent.heartbeat_interval, Duration::from_secs(15));
        assert_eq!(c.agent.inventory_interval, Duration::from_secs(7200));
        assert_eq!(c.agent.splay, Duration::from_secs(5));
        assert_eq!(c.agent.log_level, LogLevel::Debug);
        assert_eq!(c.agent.log_max_size, 2048);
        assert_eq!(c.agent.log_backup_count, 0);
        // `/tmp/...` is absolute on Unix; on Windows it is rooted on the file's drive.
        let in_file = |p: &str| std::path::absolute(fixture.dir.path().join(p)).unwrap();
        assert_eq!(c.agent.log_file, in_file("/tmp/agent.log"));
        assert_eq!(c.agent.state_dir, in_file("/tmp/muster-state"));
        assert_eq!(c.agent.pid_file, in_file("/tmp/agent.pid"));
        assert_eq!(c.agent.spool_max_bytes, 1_000_000);
        assert_eq!(c.agent.spool_max_items, 50);
        // The trailing slash goes, so request paths can be appended.
        assert_eq!(c.api.base_url, "https://muster.example.com:8443/api");
        assert_eq!(c.api.auth_token.expose(), TOKEN);
        assert_eq!(c.api.tenant_id, "acme");
        assert_eq!(c.api.timeout, Duration::from_secs(10));
        assert_eq!(c.api.retry_attempts, 0);
        assert_eq!(c.api.retry_delay, Duration::from_secs(2));
        assert_eq!(c.monitoring.cpu_threshold, 90.5);
        assert_eq!(c.monitoring.memory_threshold, 0.0);
        assert_eq!(c.monitoring.disk_threshold, 100.0);
        assert_eq!(c.monitoring.load_check_interval, Duration::from_secs(20));
        assert_eq!(c.scheduling.max_concurrent_commands, 8);
        assert_eq!(c.scheduling.defer_threshold_cpu, 60.0);
        assert_eq!(c.scheduling.defer_threshold_memory, 70.25);
        assert_eq!(c.scheduling.maintenance_window_start, Some(23 * 60 + 30));
        assert_eq!(c.scheduling.maintenance_window_end, Some(60 + 15));
        assert_eq!(c.scheduling.command_timeout, Duration::from_secs(120));
        assert_eq!(c.scheduling.kill_grace, Duration::from_secs(3));
        assert_eq!(c.scheduling.output_max_bytes, 2048);
        assert!(!c.scheduling.long_poll);
        assert!(!c.security.verify_ssl);
        assert_eq!(c.security.allowed_command_types, ["exec", "builtin"]);
        assert_eq!(
            c.security.command_signing_key.as_deref(),
            Some("11qYAYKxCrfVS/7TyWQHOg7hcvPapiMlrwIaaPcHURo=")
        );
        let file = Source::File(fixture.path());
        assert_eq!(loaded.source("agent.splay"), Some(&file));
        assert_eq!(loaded.source("security.ca_file"), Some(&Source::Default));
        assert_eq!(loaded.source("no.such_key"), None);
        assert!(loaded.file_found);
    }

    #[test]
    fn empty_strings_turn_optional_values_off() {
        let loaded = Fixture::new(
            r#"
            [scheduling]
            maintenance_window_start = ""
            maintenance_window_end = ""
            [security]
            ca_file = ""
            command_signing_key = ""
            allowed_command_types = []
            "#,
        )
        .ok();
        let c = &loaded.config;
        assert_eq!(c.scheduling.maintenance_window_start, None);
        assert_eq!(c.scheduling.maintenance_window_end, None);
        assert_eq!(c.security.ca_file, None);
        assert_eq!(c.security.command_signing_key, None);
        assert!(c.security.allowed_command_types.is_empty());
    }

    #[test]
    fn relative_paths_are_taken_from_the_files_directory() {
        let fixture = Fixture::new("[agent]\nstate_dir = \"state\"\nlog_file = \"../x.log\"\n");
        let c = fixture.ok().config;
        assert_eq!(c.agent.state_dir, fixture.dir.path().join("state"));
        assert!(c.agent.log_file.is_absolute());
        assert!(c.agent.log_file.ends_with("x.log"));
    }

    #[test]
    fn an_existing_ca_file_is_accepted() {
        let fixture = Fixture::new("[security]\nca_file = \"ca.pem\"\n");
        let ca = rcgen::generate_simple_self_signed(vec!["muster-ca".into()]).unwrap();
        std::fs::write(fixture.dir.path().join("ca.pem"), ca.cert.pem()).unwrap();
        let c = fixture.ok().config;
        assert_eq!(c.security.ca_file, Some(fixture.dir.path().join("ca.pem")));
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_a_config_error() {
        let fixture = Fixture::new("[security]\nca_file = \"ca.pem\"\n");
        std::fs::write(fixture.dir.path().join("ca.pem"), "not a certificate\n").unwrap();
        let err = fixture.err();
        assert!(
            err.contains("ca_file") && err.contains("holds no PEM certificate"),
            "{err}"
        );
    }

    /// Every layer in turn, from the bottom: each one must beat all those below it, and the
    /// source must say which one won.
    #[test]
    fn precedence_is_flag_env_config_env_file_default() {
        let layers = [
            ("file", None, None),
            ("config.env seed", Some("API_BASE_URL"), None),
            ("config.env muster", Some("MUSTER_API_BASE_URL"), None),
            ("env seed", None, Some("API_BASE_URL")),
            ("env muster", None, Some("MUSTER_API_BASE_URL")),
        ];
        let base = Fixture::new("[api]\nbase_url = \"https://file.example\"\n");
        assert_eq!(base.ok().config.api.base_url, "https://file.example");
        assert_eq!(
            base.ok().source("api.base_url"),
            Some(&Source::File(base.path()))
        );

        let mut env_file = String::new();
        let mut env: Vec<(&str, String)> = Vec::new();
        for (n, (layer, file_var, env_var)) in layers.iter().enumerate().skip(1) {
            let url = format!("https://layer{n}.example");
            if let Some(var) = file_var {
                env_file.push_str(&format!("{var}={url}\n"));
            }
            if let Some(var) = env_var {
                env.push((var, url.clone()));
            }
            let mut fixture =
                Fixture::new("[api]\nbase_url = \"https://file.example\"\n").env_file(&env_file);
            for (var, value) in &env {
                fixture = fixture.env(var, value);
            }
            let loaded = fixture.ok();
            assert_eq!(loaded.config.api.base_url, url, "layer {layer}");
            let expected = match (file_var, env_var) {
                (Some(var), _) => Source::EnvFile {
                    path: fixture.dir.path().join(ENV_FILE_NAME),
                    var: (*var).into(),
                },
                (_, Some(var)) => Source::Env((*var).into()),
                _ => unreachable!(),
            };
            assert_eq!(
                loaded.source("api.base_url"),
                Some(&expected),
                "layer {layer}"
            );

            // And a flag beats everything.
            fixture.flags.base_url = Some("http://flag.example".into());
            let loaded = fixture.ok();
            assert_eq!(loaded.config.api.base_url, "http://flag.example");
            assert_eq!(
                loaded.source("api.base_url"),
                Some(&Source::Flag("--base-url"))
            );
        }
    }

    #[test]
    fn flags_override_state_dir_and_log_level() {
        let mut fixture =
            Fixture::new("[agent]\nstate_dir = \"/from/file\"\nlog_level = \"warn\"\n")
                .env("MUSTER_AGENT_STATE_DIR", "/from/env")
                .env("MUSTER_AGENT_LOG_LEVEL", "error");
        let loaded = fixture.ok();
        // Rooted on the current drive on Windows.
        let abs = |p: &str| std::path::absolute(p).unwrap();
        assert_eq!(loaded.config.agent.state_dir, abs("/from/env"));
        assert_eq!(loaded.config.agent.log_level, LogLevel::Error);
        assert_eq!(
            loaded.source("agent.state_dir"),
            Some(&Source::Env("MUSTER_AGENT_STATE_DIR".into()))
        );
        fixture.flags.state_dir = Some("/from/flag".into());
        fixture.flags.log_level = Some("trace".into());
        let loaded = fixture.ok();
        assert_eq!(loaded.config.agent.state_dir, abs("/from/flag"));
        assert_eq!(loaded.config.agent.log_level, LogLevel::Trace);
        assert_eq!(
            loaded.source("agent.state_dir"),
            Some(&Source::Flag("--state-dir"))
        );
        assert_eq!(
            loaded.source("agent.log_level"),
            Some(&Source::Flag("--log-level"))
        );
    }

    #[test]
    fn every_key_has_a_muster_variable() {
        let defaults = Config::default();
        for spec in SPECS {
            let var = env_var(spec.key);
            let loaded = Fixture::new("")
                .env(&var, &default_text(&(spec.show)(&defaults)))
                .ok();
            assert_eq!(loaded.config, defaults, "{var}");
            assert_eq!(loaded.source(spec.key), Some(&Source::Env(var)));
        }
    }

    /// A default as a variable would spell it.
    fn default_text(shown: &Shown) -> String {
        match shown {
            Shown::Str(s) => s.clone(),
            Shown::Unset => String::new(),
            Shown::List(items) => items.join(","),
            other => other.text(),
        }
    }

    #[test]
    fn the_seeds_variables_count_minutes() {
        let loaded = Fixture::new("")
            .env("TELEMETRY_INTERVAL", "10")
            .env("HARDWARE_SOFTWARE_INTERVAL", "120")
            .env("TENANT_ID", "acme")
            .env("API_TOKEN", TOKEN)
            .ok();
        let c = &loaded.config;
        assert_eq!(c.agent.collection_interval, Duration::from_secs(600));
        assert_eq!(c.agent.inventory_interval, Duration::from_secs(7200));
        assert_eq!(c.api.tenant_id, "acme");
        assert_eq!(c.api.auth_token.expose(), TOKEN);
        assert_eq!(
            loaded.source("agent.inventory_interval"),
            Some(&Source::Env("HARDWARE_SOFTWARE_INTERVAL".into()))
        );
        assert_eq!(
            loaded.source("api.auth_token"),
            Some(&Source::Env("API_TOKEN".into()))
        );

        // The MUSTER_ name, in seconds, wins over the seed's.
        let loaded = Fixture::new("")
            .env("TELEMETRY_INTERVAL", "10")
            .env("MUSTER_AGENT_COLLECTION_INTERVAL", "45")
            .ok();
        assert_eq!(
            loaded.config.agent.collection_interval,
            Duration::from_secs(45)
        );

        assert_eq!(
            Fixture::new("").env("TELEMETRY_INTERVAL", "0").err(),
            "environment variable TELEMETRY_INTERVAL: [agent] collection_interval: must be a \
             positive number of minutes, got \"0\""
        );
        assert_eq!(
            Fixture::new("").env("TELEMETRY_INTERVAL", "10m").err(),
            "environment variable TELEMETRY_INTERVAL: [agent] collection_interval: expected an \
             integer number of minutes, got \"10m\""
        );
    }

    #[test]
    fn config_env_is_read_beside_the_file() {
        let fixture = Fixture::new("").env_file(
            "# ITAM Scanner Configuration\n\
             \n\
             TENANT_ID=acme\n\
             export API_TOKEN=\"tok-9f2c7e1d-never-print-me\"\n\
             API_BASE_URL='http://your-server:3000/api'\n\
             HARDWARE_SOFTWARE_INTERVAL=60  # minutes\n\
             MUSTER_AGENT_SPLAY=7\n",
        );
        let loaded = fixture.ok();
        let c = &loaded.config;
        assert_eq!(c.api.tenant_id, "acme");
        assert_eq!(c.api.auth_token.expose(), TOKEN);
        assert_eq!(c.api.base_url, "http://your-server:3000/api");
        assert_eq!(c.agent.inventory_interval, Duration::from_secs(3600));
        assert_eq!(c.agent.splay, Duration::from_secs(7));
        let path = fixture.dir.path().join(ENV_FILE_NAME);
        assert_eq!(loaded.env_file.as_deref(), Some(path.as_path()));
        assert_eq!(
            loaded.source("api.tenant_id"),
            Some(&Source::EnvFile {
                path,
                var: "TENANT_ID".into()
            })
        );
    }

    #[test]
    fn config_env_is_read_beside_the_binary_when_not_beside_the_file() {
        let fixture = Fixture::new("");
        let exe_dir = tempfile::tempdir().unwrap();
        std::fs::write(exe_dir.path().join(ENV_FILE_NAME), "TENANT_ID=from-exe\n").unwrap();
        let load =
            |fixture: &Fixture| load_from(&fixture.flags, &no_env, Some(exe_dir.path())).unwrap();
        assert_eq!(load(&fixture).config.api.tenant_id, "from-exe");
        assert_eq!(
            load(&fixture).env_file,
            Some(exe_dir.path().join(ENV_FILE_NAME))
        );
        // Beside the file comes first, and only one is read.
        let fixture = fixture.env_file("API_TOKEN=x\n");
        let loaded = load(&fixture);
        assert_eq!(loaded.config.api.tenant_id, "");
        assert_eq!(loaded.config.api.auth_token.expose(), "x");
    }

    #[test]
    fn the_real_environment_beats_config_env() {
        let loaded = Fixture::new("")
            .env_file("TENANT_ID=from-file\nMUSTER_API_TIMEOUT=5\n")
            .env("TENANT_ID", "from-env")
            .ok();
        assert_eq!(loaded.config.api.tenant_id, "from-env");
        assert_eq!(
            loaded.source("api.tenant_id"),
            Some(&Source::Env("TENANT_ID".into()))
        );
        assert_eq!(loaded.config.api.timeout, Duration::from_secs(5));
    }

    #[test]
    fn config_env_errors_name_the_line() {
        let cases = [
            ("TENANT_ID\n", "DIR/config.env:1: expected KEY=VALUE"),
            (
                "# c\nAPI_TOKN=x\n",
                "DIR/config.env:2: API_TOKN: unknown variable (expected \
                 MUSTER_<SECTION>_<KEY> or one of TELEMETRY_INTERVAL, \
                 HARDWARE_SOFTWARE_INTERVAL, API_BASE_URL, API_TOKEN, TENANT_ID)",
            ),
            (
                "TENANT_ID=a\nTENANT_ID=b\n",
                "DIR/config.env:2: TENANT_ID: set twice (first on line 1)",
            ),
            (
                "API_TOKEN=\"abc\n",
                "DIR/config.env:1: API_TOKEN: unterminated \" quote",
            ),
            ("1X=2\n", "DIR/config.env:1: \"1X\" is not a variable name"),
            (
                "\nMUSTER_AGENT_SPLAY=-1\n",
                "DIR/config.env:2: MUSTER_AGENT_SPLAY: [agent] splay: must not be negative, \
                 got \"-1\"",
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(Fixture::new("").env_file(text).err(), expected, "{text:?}");
        }
        // The value of a bad quoted token never shows.
        let e = Fixture::new("")
            .env_file("API_TOKEN=\"tok-9f2c7e1d-never-print-me\" x\n")
            .err();
        assert!(!e.contains(TOKEN), "{e}");
    }

    #[test]
    fn env_values_parse_like_a_shell_would() {
        let parse = |s: &str| parse_env_value(s).unwrap();
        assert_eq!(parse("abc"), "abc");
        assert_eq!(parse("abc # comment"), "abc");
        assert_eq!(parse("a#b"), "a#b");
        assert_eq!(parse("\"a # b\" # c"), "a # b");
        assert_eq!(parse("'x y'"), "x y");
        assert_eq!(parse(""), "");
        assert_eq!(parse("\"\""), "");
        assert!(parse_env_value("'abc").is_err());
        assert!(parse_env_value("'a' b").is_err());
    }

    #[test]
    fn unknown_sections_and_keys_are_errors() {
        assert_eq!(
            err("[agent]\nheartbeat_interval = 60\ncolection_interval = 5\n"),
            "DIR/agent.toml:3:1: [agent] colection_interval: unknown key (did you mean \
             collection_interval?)"
        );
        assert_eq!(
            err("[api]\nendpoint = \"x\"\n"),
            "DIR/agent.toml:2:1: [api] endpoint: unknown key (known: base_url, auth_token, \
             tenant_id, timeout, retry_attempts, retry_delay)"
        );
        assert_eq!(
            err("[agent]\n[logging]\nlevel = 1\n"),
            "DIR/agent.toml:2:2: [logging]: unknown section (known: agent, api, monitoring, \
             scheduling, security)"
        );
        assert_eq!(
            err("base_url = \"x\"\n[api]\n"),
            "DIR/agent.toml:1:1: base_url: unknown key outside any section (sections: agent, \
             api, monitoring, scheduling, security)"
        );
        assert_eq!(
            err("agent = 5\n"),
            "DIR/agent.toml:1:1: [agent]: must be a table, got integer 5"
        );
        // The first problem in the file is the one reported, whatever the map's order.
        assert_eq!(
            err("[zzz]\n[aaa]\n"),
            "DIR/agent.toml:1:2: [zzz]: unknown section (known: agent, api, monitoring, \
             scheduling, security)"
        );
    }

    #[test]
    fn wrong_types_are_errors() {
        let cases = [
            (
                "[agent]\nheartbeat_interval = \"60\"\n",
                "DIR/agent.toml:2:22: [agent] heartbeat_interval: expected an integer number \
                 of seconds, got string \"60\"",
            ),
            (
                "[agent]\nsplay = 1.5\n",
                "DIR/agent.toml:2:9: [agent] splay: expected an integer number of seconds, got \
                 float 1.5",
            ),
            (
                "[security]\nverify_ssl = \"yes\"\n",
                "DIR/agent.toml:2:14: [security] verify_ssl: expected true or false, got \
                 string \"yes\"",
            ),
            (
                "[security]\nallowed_command_types = \"exec\"\n",
                "DIR/agent.toml:2:25: [security] allowed_command_types: expected an array of \
                 command types (exec, script, builtin), got string \"exec\"",
            ),
            (
                "[security]\nallowed_command_types = [\"exec\", 1]\n",
                "DIR/agent.toml:2:25: [security] allowed_command_types: an array of command \
                 types (exec, script, builtin), got integer 1 in the array",
            ),
            (
                "[agent]\nlog_level = 3\n",
                "DIR/agent.toml:2:13: [agent] log_level: expected a log level (error, warn, \
                 info, debug, trace), got integer 3",
            ),
            (
                "[monitoring]\ncpu_threshold = \"80%\"\n",
                "DIR/agent.toml:2:17: [monitoring] cpu_threshold: expected a percentage from 0 \
                 to 100, got string \"80%\"",
            ),
            (
                "[api]\nbase_url = [\"http://a\"]\n",
                "DIR/agent.toml:2:12: [api] base_url: expected a URL (string), got an array",
            ),
        ];
        for (toml, expected) in cases {
            assert_eq!(err(toml), expected, "{toml}");
        }
    }

    #[test]
    fn impossible_values_are_errors() {
        let cases = [
            (
                "[agent]\nheartbeat_interval = -5\n",
                "DIR/agent.toml:2:22: [agent] heartbeat_interval: must be a positive number of \
                 seconds, got -5",
            ),
            (
                "[agent]\ninventory_interval = 0\n",
                "DIR/agent.toml:2:22: [agent] inventory_interval: must be a positive number of \
                 seconds, got 0",
            ),
            (
                "[agent]\ncollection_interval = 99999999999\n",
                "DIR/agent.toml:2:23: [agent] collection_interval: must be at most 2592000 \
                 seconds, got 99999999999",
            ),
            (
                "[agent]\nsplay = -1\n",
                "DIR/agent.toml:2:9: [agent] splay: must not be negative, got -1",
            ),
            (
                "[agent]\nlog_backup_count = 101\n",
                "DIR/agent.toml:2:20: [agent] log_backup_count: must be at most 100 files, got \
                 101",
            ),
            (
                "[agent]\nlog_max_size = 100\n",
                "DIR/agent.toml:2:16: [agent] log_max_size: must be at least 1024 bytes, got 100",
            ),
            (
                "[agent]\nlog_level = \"loud\"\n",
                "DIR/agent.toml:2:13: [agent] log_level: must be one of error, warn, info, \
                 debug, trace, got \"loud\"",
            ),
            (
                "[agent]\nstate_dir = \"\"\n",
                "DIR/agent.toml:2:13: [agent] state_dir: must not be empty",
            ),
            (
                "[api]\nretry_attempts = 21\n",
                "DIR/agent.toml:2:18: [api] retry_attempts: must be at most 20 retries, got 21",
            ),
            (
                "[api]\ntimeout = 0\n",
                "DIR/agent.toml:2:11: [api] timeout: must be a positive number of seconds, got 0",
            ),
            (
                "[api]\nbase_url = \"muster.example.com/api\"\n",
                "DIR/agent.toml:2:12: [api] base_url: must be an http:// or https:// URL with a \
                 host, got \"muster.example.com/api\"",
            ),
            (
                "[api]\nbase_url = \"localhost:3000/api\"\n",
                "DIR/agent.toml:2:12: [api] base_url: must be an http:// or https:// URL with a \
                 host, got \"localhost:3000/api\"",
            ),
            (
                "[api]\nbase_url = \"ftp://files.example\"\n",
                "DIR/agent.toml:2:12: [api] base_url: must be an http:// or https:// URL with a \
                 host, got \"ftp://files.example\"",
            ),
            (
                "[api]\nbase_url = \"https://\"\n",
                "DIR/agent.toml:2:12: [api] base_url: must be an http:// or https:// URL with a \
                 host, got \"https://\"",
            ),
            (
                "[api]\nbase_url = \"https://u:p@h.example\"\n",
                "DIR/agent.toml:2:12: [api] base_url: must not contain credentials (use [api] \
                 auth_token)",
            ),
            (
                "[monitoring]\ndisk_threshold = 101\n",
                "DIR/agent.toml:2:18: [monitoring] disk_threshold: must be a percentage from 0 \
                 to 100, got 101",
            ),
            (
                "[scheduling]\ndefer_threshold_cpu = -0.5\n",
                "DIR/agent.toml:2:23: [scheduling] defer_threshold_cpu: must be a percentage \
                 from 0 to 100, got -0.5",
            ),
            (
                "[monitoring]\ncpu_threshold = nan\n",
                "DIR/agent.toml:2:17: [monitoring] cpu_threshold: must be a percentage from 0 \
                 to 100, got nan",
            ),
            (
                "[scheduling]\nmax_concurrent_commands = 0\n",
                "DIR/agent.toml:2:27: [scheduling] max_concurrent_commands: must be a positive \
                 number of commands, got 0",
            ),
            (
                "[scheduling]\noutput_max_bytes = 100\n",
                "DIR/agent.toml:2:20: [scheduling] output_max_bytes: must be at least 1024 bytes, got 100",
            ),
            (
                "[scheduling]\nkill_grace = 301\n",
                "DIR/agent.toml:2:14: [scheduling] kill_grace: must be at most 300 seconds, got 301",
            ),
            (
                "[scheduling]\nmaintenance_window_start = \"25:00\"\n",
                "DIR/agent.toml:2:28: [scheduling] maintenance_window_start: must be a time of \
                 day as HH:MM (24-hour, 00:00 to 23:59), got \"25:00\"",
            ),
            (
                "[scheduling]\nmaintenance_window_end = \"2am\"\n",
                "DIR/agent.toml:2:26: [scheduling] maintenance_window_end: must be a time of day \
                 as HH:MM (24-hour, 00:00 to 23:59), got \"2am\"",
            ),
            (
                "[scheduling]\nmaintenance_window_end = \"02:0\"\n",
                "DIR/agent.toml:2:26: [scheduling] maintenance_window_end: must be a time of day \
                 as HH:MM (24-hour, 00:00 to 23:59), got \"02:0\"",
            ),
            (
                "[scheduling]\nmaintenance_window_end = 02:00:30\n",
                "DIR/agent.toml:2:26: [scheduling] maintenance_window_end: must be a time of day \
                 as HH:MM (24-hour, 00:00 to 23:59), got 02:00:30",
            ),
            (
                "[security]\nallowed_command_types = [\"shell\"]\n",
                "DIR/agent.toml:2:25: [security] allowed_command_types: unknown command type \
                 \"shell\" (allowed: exec, script, builtin)",
            ),
            (
                "[security]\ncommand_signing_key = \"not base64!\"\n",
                "DIR/agent.toml:2:23: [security] command_signing_key: must be base64 of a \
                 32-byte ed25519 public key: Invalid symbol 32, offset 3.",
            ),
            (
                "[security]\ncommand_signing_key = \"AAAA\"\n",
                "DIR/agent.toml:2:23: [security] command_signing_key: must be base64 of a \
                 32-byte ed25519 public key, got 3 bytes",
            ),
        ];
        for (toml, expected) in cases {
            assert_eq!(err(toml), expected, "{toml}");
        }
        // The system's own words for "not found" (Linux: "No such file or directory").
        let not_found = io::Error::from_raw_os_error(2);
        assert_eq!(
            err("[security]\nca_file = \"missing.pem\"\n"),
            format!(
                "DIR/agent.toml:2:11: [security] ca_file: cannot use DIR/missing.pem: {not_found}"
            )
        );
    }

    #[test]
    fn values_that_conflict_are_errors() {
        assert_eq!(
            err("[agent]\nsplay = 120\n"),
            "DIR/agent.toml:2:9: [agent] splay: must not exceed the shortest interval \
             (agent.heartbeat_interval = 60), got 120"
        );
        // With splay left at its default, the interval the user shortened is to blame.
        assert_eq!(
            err("[agent]\nheartbeat_interval = 10\n"),
            "DIR/agent.toml:2:22: [agent] heartbeat_interval: is shorter than [agent] splay \
             (30, the default); lower splay too, got 10"
        );
        assert_eq!(
            err("[scheduling]\nmaintenance_window_end = \"\"\n"),
            "DIR/agent.toml:2:26: [scheduling] maintenance_window_end: must be set when \
             maintenance_window_start is (leave both empty for no window)"
        );
        assert_eq!(
            err("[scheduling]\nmaintenance_window_end = \"02:00\"\n"),
            "DIR/agent.toml:2:26: [scheduling] maintenance_window_end: the window is empty: \
             start and end are both 02:00"
        );
    }

    #[test]
    fn toml_syntax_errors_give_line_and_column() {
        let e = err("[agent]\nheartbeat_interval = 60\nsplay = = 3\n");
        assert!(e.starts_with("DIR/agent.toml:3:9: invalid TOML: "), "{e}");
        let e = err("[agent]\nsplay = 1\nsplay = 2\n");
        assert!(e.starts_with("DIR/agent.toml:3:1: invalid TOML: "), "{e}");
        assert!(e.contains("duplicate"), "{e}");
        // The parser's message only: never the offending line, which may hold the token.
        let e = err("[api]\nauth_token = \"tok-9f2c7e1d-never-print-me\n");
        assert!(e.starts_with("DIR/agent.toml:2:"), "{e}");
        assert!(!e.contains(TOKEN), "{e}");
    }

    #[test]
    fn a_bad_token_is_reported_without_its_value() {
        let bad = "tok 9f2c7e1d never print me";
        let e = err(&format!("[api]\nauth_token = {bad:?}\n"));
        assert_eq!(
            e,
            "DIR/agent.toml:2:14: [api] auth_token: must not contain whitespace or control \
             characters (value not shown)"
        );
        let e = Fixture::new("").env("API_TOKEN", bad).err();
        assert!(!e.contains("9f2c7e1d"), "{e}");
        let e = err("[api]\nauth_token = 12345678\n");
        assert!(!e.contains("12345678"), "{e}");
        assert!(
            e.ends_with("expected a string, got integer (value not shown)"),
            "{e}"
        );
    }

    #[test]
    fn a_bad_value_in_the_file_is_reported_even_when_overridden() {
        let e = Fixture::new("[agent]\nheartbeat_interval = -5\n")
            .env("MUSTER_AGENT_HEARTBEAT_INTERVAL", "60")
            .err();
        assert!(
            e.starts_with("DIR/agent.toml:2:22: [agent] heartbeat_interval"),
            "{e}"
        );
    }

    #[test]
    fn flag_and_env_errors_name_their_origin() {
        let mut fixture = Fixture::new("");
        fixture.flags.log_level = Some("loud".into());
        assert_eq!(
            fixture.err(),
            "flag --log-level: [agent] log_level: must be one of error, warn, info, debug, \
             trace, got \"loud\""
        );
        let mut fixture = Fixture::new("");
        fixture.flags.base_url = Some("example.com".into());
        assert!(
            fixture
                .err()
                .starts_with("flag --base-url: [api] base_url: must be")
        );
        assert_eq!(
            Fixture::new("")
                .env("MUSTER_SECURITY_VERIFY_SSL", "maybe")
                .err(),
            "environment variable MUSTER_SECURITY_VERIFY_SSL: [security] verify_ssl: must be \
             true or false, got \"maybe\""
        );
    }

    #[test]
    fn env_text_takes_lists_booleans_and_times() {
        let c = Fixture::new("")
            .env(
                "MUSTER_SECURITY_ALLOWED_COMMAND_TYPES",
                "exec, script ,builtin",
            )
            .env("MUSTER_SECURITY_VERIFY_SSL", "off")
            .env("MUSTER_SCHEDULING_MAINTENANCE_WINDOW_START", "9:05")
            .env("MUSTER_SCHEDULING_MAINTENANCE_WINDOW_END", "17:00")
            .env("MUSTER_MONITORING_CPU_THRESHOLD", "55.5")
            .ok()
            .config;
        assert_eq!(
            c.security.allowed_command_types,
            ["exec", "script", "builtin"]
        );
        assert!(!c.security.verify_ssl);
        assert_eq!(c.scheduling.maintenance_window_start, Some(9 * 60 + 5));
        assert_eq!(c.scheduling.maintenance_window_end, Some(17 * 60));
        assert_eq!(c.monitoring.cpu_threshold, 55.5);
    }

    #[test]
    fn a_huge_file_is_refused() {
        let fixture = Fixture::new(&"# filler\n".repeat(200_000));
        assert_eq!(
            fixture.err(),
            "DIR/agent.toml: larger than 1048576 bytes, not a configuration file"
        );
    }

    #[test]
    fn require_server_wants_a_base_url() {
        let fixture = Fixture::new("");
        let e = fixture.ok().require_server().unwrap_err().to_string();
        assert!(e.contains("[api] base_url: required to run"), "{e}");
        let loaded = fixture.env("API_BASE_URL", "http://127.0.0.1:1/api").ok();
        loaded.require_server().unwrap();
    }

    #[test]
    fn check_output_shows_sources_and_hides_the_token() {
        let loaded = Fixture::new("[api]\nauth_token = \"tok-9f2c7e1d-never-print-me\"\n")
            .env("MUSTER_AGENT_SPLAY", "3")
            .ok();
        let text = render_text(&loaded);
        assert!(!text.contains(TOKEN));
        let token_line = text
            .lines()
            .find(|l| l.starts_with("api.auth_token"))
            .unwrap();
        assert!(token_line.contains("= [redacted]"), "{token_line}");
        assert!(token_line.ends_with(&format!("(file {})", loaded.path.display())));
        let splay = text
            .lines()
            .find(|l| l.starts_with("agent.splay "))
            .unwrap();
        assert!(splay.ends_with("(env MUSTER_AGENT_SPLAY)"), "{splay}");
        let json = render_json(&loaded);
        assert!(!json.to_string().contains(TOKEN));
        assert_eq!(json["api.auth_token"]["value"], "[redacted]");
        assert_eq!(json["agent.splay"]["value"], 3);
        assert_eq!(json["agent.splay"]["source"], "env MUSTER_AGENT_SPLAY");
        assert_eq!(json["security.ca_file"]["value"], serde_json::Value::Null);
        assert_eq!(json.as_object().unwrap().len(), SPECS.len());
    }

    #[test]
    fn the_key_table_is_consistent() {
        let mut seen = std::collections::HashSet::new();
        for spec in SPECS {
            assert!(seen.insert(spec.key), "{} twice", spec.key);
            assert!(SECTIONS.contains(&spec.section()), "{}", spec.key);
        }
        // Applying each key's default text round-trips to the default config: the parser and
        // the display agree, and each key writes its own field.
        let defaults = Config::default();
        for spec in SPECS {
            let text = default_text(&(spec.show)(&defaults));
            let mut config = Config::default();
            let value = Value {
                raw: Raw::Text(text),
                minutes: false,
                base_dir: None,
            };
            (spec.apply)(&mut config, &value).unwrap();
            assert_eq!(config, defaults, "{}", spec.key);
        }
    }

    /// docs/CONFIG.md's table lists exactly the keys the loader knows, in the same order, with
    /// their real defaults and variables.
    #[test]
    fn the_documentation_matches_the_code() {
        let doc = include_str!("../../../docs/CONFIG.md");
        let strip = |cell: &str| cell.trim().trim_matches('`').to_owned();
        let rows: Vec<Vec<String>> = doc
            .lines()
            .filter(|l| l.starts_with("| `"))
            .map(|l| {
                l.trim_matches('|')
                    .split(" | ")
                    .map(str::to_owned)
                    .collect()
            })
            .filter(|cells: &Vec<String>| {
                let key = strip(&cells[0]);
                key.split_once('.')
                    .is_some_and(|(section, _)| SECTIONS.contains(&section))
            })
            .collect();
        let documented: Vec<String> = rows.iter().map(|r| strip(&r[0])).collect();
        let code: Vec<&str> = keys().collect();
        assert_eq!(documented, code);
        // The table gives the Unix paths; the Windows ones are named in the row's text.
        #[allow(unused_mut)]
        let mut defaults = Config::default();
        #[cfg(windows)]
        {
            let windows = [
                ("agent.log_file", r"%ProgramData%\Muster\logs\agent.log"),
                ("agent.state_dir", r"%ProgramData%\Muster\state"),
                ("agent.pid_file", r"%ProgramData%\Muster\state\agent.pid"),
            ];
            for (key, path) in windows {
                let row = rows.iter().find(|r| strip(&r[0]) == key).unwrap();
                assert!(
                    row[4].contains(&format!("Windows default: `{path}`")),
                    "{key}"
                );
            }
            let base = program_data().join("Muster");
            assert_eq!(defaults.agent.state_dir, base.join("state"));
            assert_eq!(defaults.agent.log_file, base.join("logs").join("agent.log"));
            assert_eq!(
                defaults.agent.pid_file,
                base.join("state").join("agent.pid")
            );
            defaults.agent.log_file = PathBuf::from("/var/log/muster/agent.log");
            defaults.agent.state_dir = PathBuf::from("/var/lib/muster");
            defaults.agent.pid_file = PathBuf::from("/run/muster-agent.pid");
        }
        for (row, spec) in rows.iter().zip(SPECS) {
            assert_eq!(
                row.len(),
                5,
                "{}: | key | type | default | env | meaning |",
                spec.key
            );
            assert_eq!(
                strip(&row[2]),
                (spec.show)(&defaults).text(),
                "default of {}",
                spec.key
            );
            assert!(
                row[3].contains(&format!("`{}`", env_var(spec.key))),
                "{}",
                spec.key
            );
            if let Some(seed) = spec.seed_var {
                assert!(row[3].contains(&format!("`{seed}`")), "{}", spec.key);
            }
        }
    }

    #[test]
    fn edit_distance_counts_edits() {
        assert_eq!(edit_distance("splay", "splay"), 0);
        assert_eq!(edit_distance("splay", "spaly"), 2);
        assert_eq!(edit_distance("colection", "collection"), 1);
        assert_eq!(edit_distance("", "abc"), 3);
    }

    proptest! {
        #[test]
        fn config_env_parsing_never_panics(text in "\\PC{0,200}") {
            let _ = parse_env_text(Path::new("config.env"), &text);
        }

        #[test]
        fn any_file_loads_or_fails_cleanly(text in "(\\[[a-z]{1,10}\\]\n|[a-z_]{1,20} = (-?[0-9]{1,12}|\"[^\"\\\\]{0,20}\"|[0-9]{2}:[0-9]{2}|true|\\[\\]|1\\.5)\n|\\PC{0,10}\n){0,8}") {
            let fixture = Fixture::new(&text);
            let _ = fixture.load();
        }

        #[test]
        fn any_env_value_loads_or_fails_cleanly(key in 0..SPECS.len(), value in "\\PC{0,30}") {
            let var = env_var(SPECS[key].key);
            let fixture = Fixture::new("").env(&var, &value);
            let _ = fixture.load();
        }
    }
}
