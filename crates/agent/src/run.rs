//! `muster-agent run`: the long-running agent.
//!
//! Start-up, in order: load the configuration (exit 78 if it is bad), daemonize if asked
//! (before any thread exists), lock the state directory (and the pidfile), set up logging,
//! then start a single-threaded tokio runtime. In it the agent enrols if it has no enrolment,
//! runs heartbeat, inventory and telemetry at once, and then sleeps until the next deadline
//! of [`Schedule`]. SIGTERM and SIGINT stop it (an upload cut short goes to the spool);
//! SIGHUP reloads the configuration, keeping the old one if the new one is bad. On Windows
//! Ctrl-C/Ctrl-Break in a console, or the service's Stop and Shutdown controls
//! (`run --service`, see `service::windows`), stop it through the same [`Stop`] path.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use jiff::Timestamp;
use muster_collect::{Context, ScanOptions, TelemetrySampler};
use muster_proto::api::{
    self, AgentHealth, Heartbeat, InventoryAck, MetricsReport, MetricsSample, RegisterRequest,
};
use muster_proto::{FunctionData, Worker};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::cli::{ConfigFlags, RunArgs};
use crate::client::{Client, ClientError};
use crate::commands::api::TokenCell;
use crate::commands::{self, ClientApi, CommandRuntime, HostLoad, Settings, SystemClock};
use crate::config::{self, Config};
use crate::identity::{Enrolment, Keys};
use crate::inventory::InventoryState;
use crate::schedule::{Intervals, Job, Schedule, random_offset};
use crate::secret::Secret;
use crate::spool::{Spool, SpoolKind};
use crate::status::{Outcome, Status};
use crate::{daemon, logging};

const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// Drains after a successful heartbeat in which the oldest spooled report failed (5xx) before
/// it is set aside: the server answers, but not to that report.
const MAX_HEAD_FAILURES: u32 = 5;

/// The file that makes one agent per state directory.
const LOCK_FILE: &str = "agent.lock";

/// How long a stopping agent waits for work in flight on the runtime (a DNS lookup on the
/// blocking pool) before it exits anyway.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// How long the server may hold a `commands/pending` long-poll (it clamps to 60 s).
const LONG_POLL_WAIT_S: u32 = 50;

/// The command queue's server calls give up after this much retrying: the same thread
/// heartbeats, and what they could not send is kept and sent at the next step.
const COMMAND_RETRY_BUDGET: Duration = Duration::from_secs(5);

pub fn main(args: RunArgs) -> anyhow::Result<ExitCode> {
    #[cfg(windows)]
    if args.service {
        return crate::service::run_service(args);
    }
    serve(&args, Stop::Signals, &mut || {}).map(ExitCode::from)
}

/// What stops a running agent. Every way ends in the same place: the `watch` that
/// [`Agent::run`] waits on (the one shutdown path).
#[derive(Debug)]
pub enum Stop {
    /// SIGTERM or SIGINT on Unix; Ctrl-C, Ctrl-Break, closing the console or the system
    /// shutting down on Windows.
    Signals,
    /// Someone else sets this to `true`: the Windows service's Stop and Shutdown controls.
    Channel(watch::Receiver<bool>),
}

/// Runs the agent until it is told to stop. `ready` is called once the agent has started
/// (configuration, lock, logging and runtime all in place), which a service manager is told.
/// Returns the process's exit status: 0, or [`config::EX_CONFIG`] for a bad configuration.
pub fn serve(args: &RunArgs, stop: Stop, ready: &mut dyn FnMut()) -> anyhow::Result<u8> {
    let loaded = match config::load(&args.config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("muster-agent: {e}");
            return Ok(config::EX_CONFIG);
        }
    };
    if let Err(e) = loaded.require_server() {
        eprintln!("muster-agent: {e}");
        return Ok(config::EX_CONFIG);
    }
    let config = loaded.config;
    // The pidfile is taken before daemonizing so a second agent fails in the foreground,
    // where its user sees why; daemonize keeps it open and rewrites it with the daemon's pid.
    // Windows keeps the pidfile in the state directory, which the first start creates.
    #[cfg(windows)]
    if let Some(dir) = config.agent.pid_file.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut pid_file = daemon::PidFile::acquire(&config.agent.pid_file)?;
    let detached = if args.daemonize {
        Some(daemon::daemonize(Some(&mut pid_file)).context("daemonizing")?)
    } else {
        None
    };
    // Everything that can fail at start-up happens before the daemon says it is up, so a
    // failed background start is a failed command, with its reason.
    let started = start(args, &config);
    let (held, runtime, agent) = match (started, detached) {
        (Ok(started), Some(detached)) => {
            detached.ready();
            started
        }
        (Ok(started), None) => started,
        (Err(e), Some(detached)) => {
            detached.fail(&format!("{e:#}"));
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };
    ready();
    let result = runtime.block_on(async move {
        let stop_rx = match stop {
            Stop::Signals => {
                let (stop_tx, stop_rx) = watch::channel(false);
                tokio::spawn(stop_on_signal(stop_tx));
                stop_rx
            }
            Stop::Channel(stop_rx) => stop_rx,
        };
        if let Some(interval) = daemon::watchdog_interval() {
            tokio::spawn(watchdog(interval / 2));
        }
        let mut agent = agent;
        agent.run(stop_rx).await
    });
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    if let Err(e) = &result {
        error!(error = %format!("{e:#}"), "muster-agent failed");
    }
    drop(held);
    drop(pid_file);
    result.map(|()| 0)
}

/// What a running agent holds: the state-directory lock and the logger.
type Held = (Option<daemon::PidFile>, logging::LogGuard);

/// Locks the state directory, sets up logging, builds the runtime and the agent.
fn start(
    args: &RunArgs,
    config: &Config,
) -> anyhow::Result<(Held, tokio::runtime::Runtime, Agent)> {
    std::fs::create_dir_all(&config.agent.state_dir)
        .with_context(|| format!("creating {}", config.agent.state_dir.display()))?;
    // One agent per state directory, whatever pidfile each was given (unless the pidfile is
    // this very lock).
    let lock_path = config.agent.state_dir.join(LOCK_FILE);
    let state_lock = if lock_path == config.agent.pid_file {
        None
    } else {
        Some(daemon::PidFile::acquire(&lock_path)?)
    };
    #[cfg(windows)]
    crate::service::restrict_state_dir(&config.agent.state_dir);
    // A daemon and a Windows service have no terminal: they log to the rotated file.
    #[cfg(windows)]
    let to_file = args.daemonize || args.service;
    #[cfg(not(windows))]
    let to_file = args.daemonize;
    let target = if to_file {
        logging::LogTarget::File {
            path: config.agent.log_file.clone(),
            max_size: config.agent.log_max_size,
            backups: config.agent.log_backup_count,
        }
    } else {
        logging::LogTarget::Stderr
    };
    let log = logging::init(config.agent.log_level, target).context("setting up logging")?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    let agent = {
        let _entered = runtime.enter();
        Agent::new(args.config.clone(), config.clone())
    };
    let agent = agent.inspect_err(|e| error!(error = %format!("{e:#}"), "cannot start"))?;
    Ok(((state_lock, log), runtime, agent))
}

/// Sets `stop` on the first SIGTERM or SIGINT (Windows: Ctrl-C, Ctrl-Break, the console
/// closing, the system shutting down); a second SIGTERM/SIGINT (Ctrl-C/Ctrl-Break) exits at
/// once.
async fn stop_on_signal(stop: watch::Sender<bool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return;
        };
        let Ok(mut int) = signal(SignalKind::interrupt()) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", "stopping"),
            _ = int.recv() => info!(signal = "SIGINT", "stopping"),
        }
        let _ = stop.send(true);
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        warn!("second signal: exiting without waiting");
        std::process::exit(1);
    }
    #[cfg(windows)]
    {
        use tokio::signal::windows::{ctrl_break, ctrl_c, ctrl_close, ctrl_shutdown};
        let (Ok(mut c), Ok(mut brk), Ok(mut close), Ok(mut shutdown)) =
            (ctrl_c(), ctrl_break(), ctrl_close(), ctrl_shutdown())
        else {
            return;
        };
        tokio::select! {
            _ = c.recv() => info!(signal = "ctrl-c", "stopping"),
            _ = brk.recv() => info!(signal = "ctrl-break", "stopping"),
            _ = close.recv() => info!(signal = "ctrl-close", "stopping"),
            _ = shutdown.recv() => info!(signal = "ctrl-shutdown", "stopping"),
        }
        let _ = stop.send(true);
        tokio::select! {
            _ = c.recv() => {}
            _ = brk.recv() => {}
        }
        warn!("second signal: exiting without waiting");
        std::process::exit(1);
    }
    #[cfg(not(any(unix, windows)))]
    {
        let _ = tokio::signal::ctrl_c().await;
        info!(signal = "ctrl-c", "stopping");
        let _ = stop.send(true);
    }
}

async fn watchdog(every: Duration) {
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        daemon::notify("WATCHDOG=1");
    }
}

/// A stream of SIGHUPs (never yields where there are none).
struct Reloads {
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

impl Reloads {
    fn new() -> Self {
        Reloads {
            #[cfg(unix)]
            hangup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        }
    }

    async fn next(&mut self) {
        #[cfg(unix)]
        if let Some(hangup) = &mut self.hangup {
            hangup.recv().await;
            return;
        }
        std::future::pending::<()>().await
    }
}

struct Agent {
    flags: ConfigFlags,
    config: Config,
    client: Client,
    spool: Spool,
    keys: Keys,
    enrolment: Option<Enrolment>,
    inventory: InventoryState,
    sampler: TelemetrySampler,
    status: Status,
    started: Instant,
    /// Spool drops reported to the server in heartbeats so far.
    dropped_reported: u64,
    /// Set by an enrolment: the server needs this agent's whole inventory now.
    inventory_due: bool,
    /// The server asked (`Retry-After`) not to be sent anything before then.
    hold_until: Option<Instant>,
    /// The oldest spooled report and how many drains after a good heartbeat it failed.
    head_failures: Option<(crate::spool::SpoolId, u32)>,
    /// The last heartbeat said commands are waiting.
    commands_pending: bool,
    /// The command queue and executor.
    commands: CommandRuntime<ClientApi>,
    /// The agent token, shared with the command queue and the long-poll.
    token_cell: TokenCell,
    /// What the long-poll brings.
    leases: tokio::sync::mpsc::Receiver<api::PendingCommands>,
    leases_tx: tokio::sync::mpsc::Sender<api::PendingCommands>,
    poller: Option<tokio::task::JoinHandle<()>>,
}

/// What woke the agent's loop.
enum Wake {
    Stop,
    Reload,
    Job,
    Leased(api::PendingCommands),
    Commands,
}

/// What stopped a job early.
enum Cut {
    /// The agent is stopping.
    Stop,
}

/// What became of a report.
enum Delivery {
    /// The server took it; its answer.
    Sent(Vec<u8>),
    /// It is in the spool, for this reason.
    Spooled(String),
    /// The server refuses it for good (`Rejected`) or as it stands (`Conflict`).
    Refused(ClientError),
}

impl Agent {
    fn new(flags: ConfigFlags, config: Config) -> anyhow::Result<Agent> {
        let state_dir = config.agent.state_dir.clone();
        let client = Self::client(&config)?;
        let spool = Spool::open(
            &state_dir.join("spool"),
            config.agent.spool_max_bytes,
            config.agent.spool_max_items,
        )
        .with_context(|| format!("opening the spool in {}", state_dir.display()))?;
        let keys = Keys::load_or_create(&state_dir)?;
        let enrolment = Enrolment::load(&state_dir)?.filter(|e| e.base_url == config.api.base_url);
        let mut sampler = TelemetrySampler::new(Context::default());
        // The first sample only primes the counters, so the first report has CPU usage.
        sampler.sample();
        let status = Status::starting(enrolment.as_ref().map(|e| e.agent_id.clone()));
        let token_cell: TokenCell = std::sync::Arc::new(std::sync::Mutex::new(
            enrolment.as_ref().map(|e| e.agent_token.clone()),
        ));
        let mut commands = CommandRuntime::new(
            Settings::from_config(&config),
            &state_dir,
            Self::commands_api(&config, token_cell.clone())?,
            std::sync::Arc::new(SystemClock),
            Box::new(HostLoad::new()),
        )
        .with_context(|| format!("opening the command queue in {}", state_dir.display()))?;
        let key = commands::signing_key(
            &state_dir,
            config.security.command_signing_key.as_deref(),
            enrolment
                .as_ref()
                .and_then(|e| e.command_signing_key.as_deref()),
        )
        .map_err(anyhow::Error::msg)?;
        commands.set_identity(enrolment.as_ref().map_or("", |e| e.agent_id.as_str()), key);
        let (leases_tx, leases) = tokio::sync::mpsc::channel(4);
        Ok(Agent {
            commands,
            token_cell,
            leases,
            leases_tx,
            poller: None,
            flags,
            inventory: InventoryState::load(&state_dir),
            config,
            client,
            spool,
            keys,
            enrolment,
            sampler,
            status,
            started: Instant::now(),
            dropped_reported: 0,
            inventory_due: false,
            hold_until: None,
            head_failures: None,
            commands_pending: false,
        })
    }

    /// The API client for `config`. One call may wait between its tries at most one
    /// heartbeat interval: the same thread heartbeats.
    fn client(config: &Config) -> Result<Client, ClientError> {
        Ok(Client::new(&config.api, &config.security)?
            .with_retry_budget(config.agent.heartbeat_interval))
    }

    /// The command queue's server calls: short retries (see [`COMMAND_RETRY_BUDGET`]).
    fn commands_api(config: &Config, token: TokenCell) -> Result<ClientApi, ClientError> {
        let client =
            Client::new(&config.api, &config.security)?.with_retry_budget(COMMAND_RETRY_BUDGET);
        Ok(ClientApi {
            client: std::sync::Arc::new(client),
            token,
        })
    }

    /// Starts (or restarts, after a reload) the `commands/pending` long-poll when enabled.
    fn start_poller(&mut self, stop: &watch::Receiver<bool>) {
        if let Some(old) = self.poller.take() {
            old.abort();
        }
        if !self.config.scheduling.long_poll {
            return;
        }
        let mut api_config = self.config.api.clone();
        // The server holds the request up to LONG_POLL_WAIT_S: the client must wait longer.
        api_config.timeout = api_config
            .timeout
            .max(Duration::from_secs(u64::from(LONG_POLL_WAIT_S) + 15));
        let client = match Client::new(&api_config, &self.config.security) {
            Ok(client) => client.with_retry_budget(COMMAND_RETRY_BUDGET),
            Err(e) => {
                error!(error = %e, "cannot start the command long-poll");
                return;
            }
        };
        let api = ClientApi {
            client: std::sync::Arc::new(client),
            token: self.token_cell.clone(),
        };
        self.poller = Some(tokio::spawn(poll_pending(
            api,
            self.leases_tx.clone(),
            stop.clone(),
        )));
    }

    /// The enrolment changed: the queue's token and identity follow.
    fn enrolment_changed(&mut self) {
        *self
            .token_cell
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) =
            self.enrolment.as_ref().map(|e| e.agent_token.clone());
        let key = commands::signing_key(
            &self.state_dir(),
            self.config.security.command_signing_key.as_deref(),
            self.enrolment
                .as_ref()
                .and_then(|e| e.command_signing_key.as_deref()),
        );
        match key {
            Ok(key) => {
                let id = self.agent_id();
                self.commands.set_identity(&id, key);
            }
            Err(e) => {
                error!(error = %e, "cannot read the command-signing key; keeping the one in use")
            }
        }
    }

    fn intervals(&self) -> Intervals {
        Intervals {
            heartbeat: self.config.agent.heartbeat_interval,
            inventory: self.config.agent.inventory_interval,
            telemetry: self.config.agent.collection_interval,
            splay: self.config.agent.splay,
        }
    }

    fn state_dir(&self) -> PathBuf {
        self.config.agent.state_dir.clone()
    }

    async fn run(&mut self, mut stop: watch::Receiver<bool>) -> anyhow::Result<()> {
        info!(
            version = AGENT_VERSION,
            state_dir = %self.config.agent.state_dir.display(),
            server = %self.config.api.base_url,
            "muster-agent started"
        );
        let splay = self.config.agent.splay;
        let mut schedule =
            Schedule::new(Instant::now(), self.intervals(), |_| random_offset(splay));
        let mut reloads = Reloads::new();
        self.write_status();
        daemon::notify("READY=1");
        self.start_poller(&stop);
        loop {
            let (job, at) = schedule.next();
            let wake = tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => Wake::Stop,
                _ = reloads.next() => Wake::Reload,
                Some(leased) = self.leases.recv() => Wake::Leased(leased),
                _ = self.commands.wait() => Wake::Commands,
                _ = tokio::time::sleep_until(at) => Wake::Job,
            };
            match wake {
                Wake::Stop => break,
                Wake::Reload => {
                    let _ = self.reload(&mut schedule);
                    self.start_poller(&stop);
                    continue;
                }
                Wake::Leased(leased) => {
                    self.commands.accept(leased);
                    if let Err(Cut::Stop) = self.command_step(&mut stop, &mut schedule).await {
                        break;
                    }
                    continue;
                }
                Wake::Commands => {
                    if let Err(Cut::Stop) = self.command_step(&mut stop, &mut schedule).await {
                        break;
                    }
                    continue;
                }
                Wake::Job => {}
            }
            let outcome = match job {
                Job::Heartbeat => self.heartbeat(&mut stop).await,
                Job::Inventory => self.inventory(&mut stop).await,
                Job::Telemetry => self.telemetry(&mut stop).await,
            };
            schedule.complete(job, Instant::now());
            if std::mem::take(&mut self.inventory_due) && job != Job::Inventory {
                schedule.run_now(Job::Inventory, Instant::now());
            }
            self.write_status();
            if let Err(Cut::Stop) = outcome {
                break;
            }
            if job == Job::Heartbeat
                && std::mem::take(&mut self.commands_pending)
                && let Err(Cut::Stop) = self.fetch_commands(&mut stop, &mut schedule).await
            {
                break;
            }
        }
        daemon::notify("STOPPING=1");
        if let Some(poller) = self.poller.take() {
            poller.abort();
        }
        // Running commands get the grace period, then their trees are stopped; each is
        // reported and its locks released.
        self.commands.shutdown().await;
        self.write_status();
        info!("muster-agent stopped");
        Ok(())
    }

    fn reload(&mut self, schedule: &mut Schedule) -> Result<(), String> {
        daemon::notify_reloading();
        let result = match self.reloaded() {
            Ok(()) => {
                let splay = self.config.agent.splay;
                schedule.set_intervals(self.intervals(), Instant::now(), |_| random_offset(splay));
                info!("configuration reloaded");
                Ok(())
            }
            Err(e) => {
                error!(error = %e, "configuration reload rejected, keeping the old one");
                Err(format!("{e:#}"))
            }
        };
        daemon::notify("READY=1");
        result
    }

    /// One round of the command queue, and the builtin actions it hands over.
    async fn command_step(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        schedule: &mut Schedule,
    ) -> Result<(), Cut> {
        self.commands.step().await;
        while let Some((id, action)) = self.commands.take_builtin() {
            let result = self.builtin(&action, stop, schedule).await?;
            if action == "reload_config" && result.is_ok() {
                // As after SIGHUP: the long-poll follows the new settings.
                self.start_poller(stop);
            }
            self.commands.finish_builtin(id, result).await;
        }
        self.write_status();
        Ok(())
    }

    /// `GET commands/pending` after a heartbeat said there are some.
    async fn fetch_commands(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        schedule: &mut Schedule,
    ) -> Result<(), Cut> {
        let fetched = Self::until_stop(stop, self.commands.api_mut().pending(0)).await?;
        match fetched {
            Ok(leased) => self.commands.accept(leased),
            Err(ClientError::Unauthorized) => self.forget_enrolment(),
            Err(e) => warn!(error = %e, "cannot fetch pending commands"),
        }
        self.command_step(stop, schedule).await
    }

    /// Performs a `builtin` command's action through the agent's own paths.
    async fn builtin(
        &mut self,
        action: &str,
        stop: &mut watch::Receiver<bool>,
        schedule: &mut Schedule,
    ) -> Result<Result<String, String>, Cut> {
        let outcome = |o: Option<&Outcome>, what: &str| match o {
            Some(o) if o.ok => Ok(format!("{what} collected and sent")),
            Some(o) => Err(o.error.clone().unwrap_or_else(|| format!("{what} failed"))),
            None => Err(format!("{what} did not run")),
        };
        Ok(match action {
            "scan_now" => {
                self.inventory(stop).await?;
                schedule.complete(Job::Inventory, Instant::now());
                outcome(self.status.last_inventory.as_ref(), "inventory")
            }
            "telemetry_now" => {
                self.telemetry(stop).await?;
                schedule.complete(Job::Telemetry, Instant::now());
                outcome(self.status.last_telemetry.as_ref(), "telemetry")
            }
            "reload_config" => self
                .reload(schedule)
                .map(|()| "configuration reloaded".to_owned()),
            "collect_logs" => self.log_tail(),
            other => Err(format!("unknown builtin {other:?}")),
        })
    }

    /// The end of the log file, up to the output cap.
    fn log_tail(&self) -> Result<String, String> {
        use std::io::{Read as _, Seek as _};
        let path = &self.config.agent.log_file;
        let cap = self.config.scheduling.output_max_bytes;
        let mut file = std::fs::File::open(path).map_err(|e| {
            format!(
                "{}: {e} (in the foreground the agent logs to stderr: see journalctl -u muster-agent)",
                path.display()
            )
        })?;
        let len = file.metadata().map(|m| m.len()).unwrap_or(0);
        let from = len.saturating_sub(cap);
        file.seek(std::io::SeekFrom::Start(from))
            .map_err(|e| format!("{}: {e}", path.display()))?;
        let mut bytes = Vec::new();
        file.take(cap)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Loads the configuration again and applies it, or says why not.
    fn reloaded(&mut self) -> anyhow::Result<()> {
        let loaded = config::load(&self.flags)?;
        loaded.require_server()?;
        let new = loaded.config;
        let (old_agent, new_agent) = (&self.config.agent, &new.agent);
        for (key, changed) in [
            (
                "agent.state_dir",
                old_agent.state_dir != new_agent.state_dir,
            ),
            ("agent.pid_file", old_agent.pid_file != new_agent.pid_file),
            ("agent.log_file", old_agent.log_file != new_agent.log_file),
            (
                "agent.spool_max_bytes",
                old_agent.spool_max_bytes != new_agent.spool_max_bytes,
            ),
            (
                "agent.spool_max_items",
                old_agent.spool_max_items != new_agent.spool_max_items,
            ),
        ] {
            if changed {
                anyhow::bail!("changing {key} needs a restart");
            }
        }
        let client = Self::client(&new)?;
        if new.api.base_url != self.config.api.base_url {
            // Another server: this server's token must not go there; enrol with it afresh.
            self.enrolment = None;
            self.inventory = InventoryState::default();
            self.hold_until = None;
        }
        let commands_api = Self::commands_api(&new, self.token_cell.clone())?;
        logging::set_level(new.agent.log_level);
        self.client = client;
        self.config = new;
        self.commands
            .set_settings(Settings::from_config(&self.config));
        *self.commands.api_mut() = commands_api;
        self.enrolment_changed();
        Ok(())
    }

    /// Races `work` against the agent stopping.
    async fn until_stop<T>(
        stop: &mut watch::Receiver<bool>,
        work: impl Future<Output = T>,
    ) -> Result<T, Cut> {
        tokio::select! {
            biased;
            _ = stop.wait_for(|stop| *stop) => Err(Cut::Stop),
            result = work => Ok(result),
        }
    }

    /// Whether the server asked for a pause that is not over.
    fn holding(&mut self) -> bool {
        match self.hold_until {
            Some(until) if Instant::now() < until => true,
            _ => {
                self.hold_until = None;
                false
            }
        }
    }

    /// Remembers a `Retry-After` the client could not wait out itself.
    fn note_unavailable(&mut self, error: &ClientError) {
        if let ClientError::Unavailable {
            retry_after: Some(after),
            ..
        } = error
        {
            let after = (*after).min(crate::client::MAX_RETRY_AFTER);
            info!(
                seconds = after.as_secs(),
                "the server asked for a pause; spooling until then"
            );
            self.hold_until = Some(Instant::now() + after);
        }
    }

    /// The agent token, enrolling first if there is none. `None` when enrolment failed (the
    /// failure is recorded) and the job should wait for its next turn.
    async fn token(&mut self, stop: &mut watch::Receiver<bool>) -> Result<Option<Secret>, Cut> {
        if let Some(enrolment) = &self.enrolment {
            return Ok(Some(enrolment.agent_token.clone()));
        }
        if self.holding() {
            return Ok(None);
        }
        let host = muster_collect::host_identity(&Context::default());
        let request = RegisterRequest {
            tenant_id: self.config.api.tenant_id.clone(),
            hostname: host.hostname,
            machine_id: host.machine_id,
            public_key: Some(self.keys.public_key_base64()),
            platform: Some(std::env::consts::OS.to_owned()),
            os_name: None,
            os_version: None,
            arch: Some(std::env::consts::ARCH.to_owned()),
            agent_version: Some(AGENT_VERSION.to_owned()),
        };
        let enrol_token = self.config.api.auth_token.clone();
        let result = Self::until_stop(stop, self.client.register(&enrol_token, &request)).await?;
        match result {
            Ok(response) => {
                info!(agent_id = %response.agent_id, "enrolled");
                let enrolment = Enrolment {
                    agent_id: response.agent_id,
                    agent_token: Secret::new(response.agent_token),
                    command_signing_key: response.command_signing_key,
                    base_url: self.config.api.base_url.clone(),
                };
                if let Err(e) = enrolment.save(&self.state_dir()) {
                    error!(error = %e, "cannot store the enrolment; it will be redone at restart");
                }
                // A new enrolment is a new agent on the server: it needs the whole inventory.
                self.inventory = InventoryState::default();
                self.inventory_due = true;
                self.status.agent_id = Some(enrolment.agent_id.clone());
                let token = enrolment.agent_token.clone();
                self.enrolment = Some(enrolment);
                self.enrolment_changed();
                Ok(Some(token))
            }
            Err(e) => {
                warn!(error = %e, "enrolment failed");
                self.note_unavailable(&e);
                self.status.errors += 1;
                self.status.last_heartbeat = Some(Outcome::failure(
                    Timestamp::now(),
                    format!("enrolment: {e}"),
                ));
                Ok(None)
            }
        }
    }

    /// The server said the agent token is not (or no longer) valid: forget it and enrol
    /// again at the next opportunity.
    fn forget_enrolment(&mut self) {
        warn!("the server rejected the agent token; enrolling again");
        self.enrolment = None;
        self.enrolment_changed();
        if let Err(e) = Enrolment::remove(&self.state_dir()) {
            error!(error = %e, "cannot remove the stored enrolment");
        }
    }

    fn agent_id(&self) -> String {
        self.enrolment
            .as_ref()
            .map(|e| e.agent_id.clone())
            .unwrap_or_default()
    }

    async fn heartbeat(&mut self, stop: &mut watch::Receiver<bool>) -> Result<(), Cut> {
        if self.holding() {
            self.status.last_heartbeat = Some(Outcome::failure(
                Timestamp::now(),
                "the server asked for a pause",
            ));
            return Ok(());
        }
        let Some(token) = self.token(stop).await? else {
            return Ok(());
        };
        // Reported now, taken from the spool's count only once the server has it.
        let dropped = self.spool.dropped();
        let spool = self.spool.stats();
        let heartbeat = Heartbeat {
            agent_id: self.agent_id(),
            datetime: Timestamp::now(),
            agent_version: AGENT_VERSION.to_owned(),
            uptime_s: self.started.elapsed().as_secs(),
            health: AgentHealth {
                scans_completed: self.status.scans_completed,
                errors: self.status.errors,
                spool_items: spool.items,
                spool_bytes: spool.bytes,
                dropped_reports: dropped,
                queue_depth: self.commands.queue_depth() as u64,
                last_inventory: self.status.last_inventory.as_ref().map(|o| o.at),
                last_telemetry: self.status.last_telemetry.as_ref().map(|o| o.at),
            },
            heartbeat_interval_s: Some(self.config.agent.heartbeat_interval.as_secs()),
        };
        match Self::until_stop(stop, self.client.heartbeat(&token, &heartbeat)).await? {
            Ok(answer) => {
                debug!(pending_commands = answer.pending_commands, "heartbeat");
                self.commands_pending = answer.pending_commands > 0;
                let taken = self.spool.take_dropped();
                self.spool.restore_dropped(taken.saturating_sub(dropped));
                self.dropped_reported += dropped;
                self.status.last_heartbeat = Some(Outcome::success(Timestamp::now()));
                self.drain_spool(&token, stop, true).await.map(|_| ())
            }
            Err(ClientError::Unauthorized) => {
                self.forget_enrolment();
                self.status.last_heartbeat =
                    Some(Outcome::failure(Timestamp::now(), "agent token rejected"));
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "heartbeat failed");
                self.note_unavailable(&e);
                self.status.errors += 1;
                self.status.last_heartbeat = Some(Outcome::failure(Timestamp::now(), &e));
                Ok(())
            }
        }
    }

    /// Sends spooled reports oldest first while the server takes them. `true` when the spool
    /// is empty afterwards, so a new report may go straight out without overtaking older ones.
    /// `server_answers` (the heartbeat just succeeded) makes a failure of the oldest report
    /// count against it: one the server keeps failing is set aside after
    /// [`MAX_HEAD_FAILURES`] such drains instead of blocking everything behind it.
    async fn drain_spool(
        &mut self,
        token: &Secret,
        stop: &mut watch::Receiver<bool>,
        server_answers: bool,
    ) -> Result<bool, Cut> {
        loop {
            let item = match self.spool.oldest() {
                Ok(Some(item)) => item,
                Ok(None) => return Ok(true),
                Err(e) => {
                    error!(error = %e, "cannot read the spool");
                    return Ok(false);
                }
            };
            let sent = Self::until_stop(
                stop,
                self.client.post_json(token, &item.api_path, &item.body),
            )
            .await?;
            match sent {
                Ok(_) => {}
                // The server will never take it (a stale delta, a malformed body): keeping it
                // would block everything behind it.
                Err(e @ (ClientError::Rejected { .. } | ClientError::Conflict { .. })) => {
                    warn!(error = %e, path = %item.api_path, "dropping a spooled report the server refuses");
                }
                Err(ClientError::Unauthorized) => {
                    self.forget_enrolment();
                    return Ok(false);
                }
                Err(e) => {
                    debug!(error = %e, "server unavailable; spool kept");
                    self.note_unavailable(&e);
                    if !server_answers {
                        return Ok(false);
                    }
                    let failures = match self.head_failures {
                        Some((id, n)) if id == item.id => n + 1,
                        _ => 1,
                    };
                    if failures < MAX_HEAD_FAILURES {
                        self.head_failures = Some((item.id, failures));
                        return Ok(false);
                    }
                    warn!(error = %e, path = %item.api_path, failures, "setting aside a spooled report the server keeps failing");
                    self.spool.restore_dropped(1);
                }
            }
            self.head_failures = None;
            if let Err(e) = self.spool.remove(item.id) {
                error!(error = %e, "cannot remove a sent report from the spool");
                return Ok(false);
            }
        }
    }

    fn spool(&mut self, kind: SpoolKind, path: &str, body: &[u8]) {
        match self.spool.push(kind, path, body) {
            Ok(outcome) => {
                if outcome.dropped > 0 {
                    warn!(
                        dropped = outcome.dropped,
                        "spool full, oldest reports dropped"
                    );
                }
            }
            Err(e) => error!(error = %e, "cannot write to the spool; report lost"),
        }
    }

    /// Delivers `body` to `path`, or spools what `spooled` returns when it cannot go now: the
    /// server asked for a pause, the agent is not enrolled, older reports are still queued
    /// (a new report never overtakes them), the server is unavailable or rejected the token,
    /// or the agent is stopping.
    async fn deliver(
        &mut self,
        stop: &mut watch::Receiver<bool>,
        kind: SpoolKind,
        path: &str,
        body: &[u8],
        spooled: impl FnOnce() -> Vec<u8>,
    ) -> Result<Delivery, Cut> {
        let reason = 'send: {
            if self.holding() {
                break 'send "the server asked for a pause".to_owned();
            }
            let token = match self.token(stop).await {
                Ok(Some(token)) => token,
                Ok(None) => break 'send "not enrolled".to_owned(),
                Err(cut) => {
                    self.spool(kind, path, &spooled());
                    return Err(cut);
                }
            };
            match self.drain_spool(&token, stop, false).await {
                Ok(true) => {}
                Ok(false) => break 'send "older reports are still queued".to_owned(),
                Err(cut) => {
                    self.spool(kind, path, &spooled());
                    return Err(cut);
                }
            }
            match Self::until_stop(stop, self.client.post_json(&token, path, body)).await {
                Ok(Ok(answer)) => return Ok(Delivery::Sent(answer)),
                Ok(Err(e @ (ClientError::Rejected { .. } | ClientError::Conflict { .. }))) => {
                    return Ok(Delivery::Refused(e));
                }
                Ok(Err(ClientError::Unauthorized)) => {
                    self.forget_enrolment();
                    "agent token rejected".to_owned()
                }
                Ok(Err(e)) => {
                    self.note_unavailable(&e);
                    e.to_string()
                }
                Err(cut) => {
                    self.spool(kind, path, &spooled());
                    return Err(cut);
                }
            }
        };
        self.spool(kind, path, &spooled());
        Ok(Delivery::Spooled(reason))
    }

    async fn inventory(&mut self, stop: &mut watch::Receiver<bool>) -> Result<(), Cut> {
        let options = ScanOptions {
            workers: vec![
                Worker::Hardware,
                Worker::Software,
                Worker::Processes,
                Worker::Services,
            ],
            parallel: false,
            ..ScanOptions::default()
        };
        let mut report = muster_collect::scan(&options);
        report.agent_id = self.enrolment.as_ref().map(|e| e.agent_id.clone());
        self.status.scans_completed += 1;
        let now = Timestamp::now();
        let planned = self.inventory.plan(report.clone(), now);
        let full = |state: &InventoryState| state.plan_full(report.clone(), now);
        // A spooled inventory is whole: a delta would depend on what the server holds when
        // it finally arrives.
        let spool_full = |state: &InventoryState| {
            serde_json::to_vec(&full(state).upload).expect("an upload always serializes")
        };
        let body = serde_json::to_vec(&planned.upload).expect("an upload always serializes");
        let state = self.inventory.clone();
        let path = api::paths::SYSTEM_REPORT;
        let mut delivery = self
            .deliver(stop, SpoolKind::Inventory, path, &body, || {
                spool_full(&state)
            })
            .await;
        let mut after_ack = planned.after_ack;
        if let Ok(Delivery::Refused(ClientError::Conflict { .. })) = &delivery {
            // The server does not hold our base: send it all.
            let planned = full(&state);
            let body = serde_json::to_vec(&planned.upload).expect("an upload always serializes");
            after_ack = planned.after_ack;
            delivery = self
                .deliver(stop, SpoolKind::Inventory, path, &body, || {
                    spool_full(&state)
                })
                .await;
        }
        let record = match &delivery {
            Ok(Delivery::Sent(answer)) => {
                if let Some(hash) = serde_json::from_slice::<InventoryAck>(answer)
                    .ok()
                    .and_then(|ack| ack.hash)
                {
                    after_ack.hash = Some(hash);
                }
                self.inventory = after_ack;
                if let Err(e) = self.inventory.save(&self.state_dir()) {
                    warn!(error = %e, "cannot store the inventory state; the next one is full");
                }
                Outcome::success(Timestamp::now())
            }
            Ok(Delivery::Spooled(why)) => {
                // What the server holds is unknown until the spool drains: start over whole.
                self.inventory = InventoryState::default();
                Outcome::failure(Timestamp::now(), format!("{why} (spooled)"))
            }
            Ok(Delivery::Refused(e)) => Outcome::failure(Timestamp::now(), e),
            Err(Cut::Stop) => {
                self.inventory = InventoryState::default();
                Outcome::failure(Timestamp::now(), "stopped while sending (spooled)")
            }
        };
        if !record.ok {
            warn!(
                error = record.error.as_deref().unwrap_or(""),
                "inventory not delivered"
            );
            self.status.errors += 1;
        }
        self.status.last_inventory = Some(record);
        // The scan and its upload were the agent's largest allocations; give the pages back
        // rather than keep them until the next inventory an hour from now.
        daemon::release_free_memory();
        delivery.map(|_| ())
    }

    async fn telemetry(&mut self, stop: &mut watch::Receiver<bool>) -> Result<(), Cut> {
        let sample = self.sampler.sample();
        self.status.scans_completed += 1;
        let FunctionData::SystemMetrics(metrics) = sample.data else {
            return Ok(());
        };
        let report = MetricsReport {
            report_id: Uuid::now_v7(),
            agent_id: self.agent_id(),
            samples: metrics
                .into_iter()
                .map(|metrics| MetricsSample {
                    datetime: sample.datetime,
                    metrics,
                })
                .collect(),
        };
        let body = serde_json::to_vec(&report).expect("a metrics report always serializes");
        let delivery = self
            .deliver(
                stop,
                SpoolKind::Telemetry,
                api::paths::METRICS_REPORT,
                &body,
                || body.clone(),
            )
            .await;
        let record = match &delivery {
            Ok(Delivery::Sent(_)) => Outcome::success(Timestamp::now()),
            Ok(Delivery::Spooled(why)) => {
                Outcome::failure(Timestamp::now(), format!("{why} (spooled)"))
            }
            Ok(Delivery::Refused(e)) => Outcome::failure(Timestamp::now(), e),
            Err(Cut::Stop) => Outcome::failure(Timestamp::now(), "stopped while sending (spooled)"),
        };
        if !record.ok {
            self.status.errors += 1;
        }
        self.status.last_telemetry = Some(record);
        delivery.map(|_| ())
    }

    fn write_status(&mut self) {
        let spool = self.spool.stats();
        self.status.spool_items = spool.items;
        self.status.spool_bytes = spool.bytes;
        self.status.dropped_reports = self.dropped_reported + self.spool.dropped();
        self.status.queue_depth = self.commands.queue_depth() as u64;
        if let Err(e) = crate::status::write(&self.config.agent.state_dir, &self.status) {
            warn!(error = %e, "cannot write the status file");
        }
    }
}

/// Keeps one `GET commands/pending?wait_s=N` open at a time, handing what it brings to the
/// agent's loop; backs off on errors; ends when the agent stops.
async fn poll_pending(
    api: ClientApi,
    leases: tokio::sync::mpsc::Sender<api::PendingCommands>,
    mut stop: watch::Receiver<bool>,
) {
    const MAX_BACKOFF: Duration = Duration::from_secs(60);
    let mut backoff = Duration::from_secs(1);
    loop {
        let enrolled = api
            .token
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some();
        if !enrolled {
            // The agent's loop enrols; look again shortly, without asking the server.
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
            }
        }
        let asked = Instant::now();
        let answer = tokio::select! {
            biased;
            _ = stop.wait_for(|s| *s) => return,
            answer = api.pending(LONG_POLL_WAIT_S) => answer,
        };
        let pause = match answer {
            Ok(leased) => {
                backoff = Duration::from_secs(1);
                let empty = leased.commands.is_empty() && leased.cancel.is_empty();
                let leased_commands = leased.commands.len();
                if !empty && leases.send(leased).await.is_err() {
                    return;
                }
                // A server that does not hold the request answers an empty one at once, and
                // one holding a cancellation this agent is still carrying out answers it again
                // at once until the agent reports it: don't spin on either.
                let quick = asked.elapsed() < Duration::from_secs(1);
                match (quick, empty, leased_commands) {
                    (true, true, _) => Some(Duration::from_secs(5)),
                    (true, false, 0) => Some(Duration::from_secs(1)),
                    _ => None,
                }
            }
            Err(e) => {
                debug!(error = %e, "command long-poll failed");
                let pause = backoff;
                backoff = (backoff * 2).min(MAX_BACKOFF);
                Some(pause)
            }
        };
        if let Some(pause) = pause {
            tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return,
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }
}
