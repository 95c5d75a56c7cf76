//! `muster-agent run`: the long-running agent.
//!
//! Start-up, in order: load the configuration (exit 78 if it is bad), daemonize if asked
//! (before any thread exists), lock the state directory (and the pidfile), set up logging,
//! then start a single-threaded tokio runtime. In it the agent enrols if it has no enrolment,
//! runs heartbeat, inventory and telemetry at once, and then sleeps until the next deadline
//! of [`Schedule`]. SIGTERM and SIGINT stop it (an upload cut short goes to the spool);
//! SIGHUP reloads the configuration, keeping the old one if the new one is bad.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use jiff::Timestamp;
use muster_collect::{Context, ScanOptions, TelemetrySampler};
use muster_proto::api::{
    self, AgentHealth, Heartbeat, MetricsReport, MetricsSample, RegisterRequest,
};
use muster_proto::{FunctionData, Worker};
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use uuid::Uuid;

use crate::cli::{ConfigFlags, RunArgs};
use crate::client::{Client, ClientError};
use crate::config::{self, Config};
use crate::identity::{Enrolment, Keys};
use crate::inventory::InventoryState;
use crate::schedule::{Intervals, Job, Schedule, random_offset};
use crate::secret::Secret;
use crate::spool::{Spool, SpoolKind};
use crate::status::{Outcome, Status};
use crate::{daemon, logging};

const AGENT_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The file that makes one agent per state directory.
const LOCK_FILE: &str = "agent.pid";

pub fn main(args: RunArgs) -> anyhow::Result<ExitCode> {
    let loaded = match config::load_or_exit(&args.config) {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    if let Err(e) = loaded.require_server() {
        eprintln!("muster-agent: {e}");
        return Ok(ExitCode::from(config::EX_CONFIG));
    }
    let config = loaded.config;
    // The pidfile is taken before daemonizing so a second agent fails in the foreground,
    // where its user sees why; daemonize keeps it open and rewrites it with the daemon's pid.
    let mut pid_file = daemon::PidFile::acquire(&config.agent.pid_file)?;
    let detached = if args.daemonize {
        Some(daemon::daemonize(Some(&mut pid_file)).context("daemonizing")?)
    } else {
        None
    };
    let started = (|| -> anyhow::Result<_> {
        std::fs::create_dir_all(&config.agent.state_dir)
            .with_context(|| format!("creating {}", config.agent.state_dir.display()))?;
        // One agent per state directory, whatever pidfile each was given.
        let state_lock = daemon::PidFile::acquire(&config.agent.state_dir.join(LOCK_FILE))?;
        let target = if args.daemonize {
            logging::LogTarget::File {
                path: config.agent.log_file.clone(),
                max_size: config.agent.log_max_size,
                backups: config.agent.log_backup_count,
            }
        } else {
            logging::LogTarget::Stderr
        };
        let log = logging::init(config.agent.log_level, target).context("setting up logging")?;
        Ok((state_lock, log))
    })();
    let _held = match (started, detached) {
        (Ok(held), Some(detached)) => {
            detached.ready();
            held
        }
        (Ok(held), None) => held,
        (Err(e), Some(detached)) => {
            detached.fail(&format!("{e:#}"));
            return Err(e);
        }
        (Err(e), None) => return Err(e),
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let (stop_tx, stop_rx) = watch::channel(false);
        tokio::spawn(stop_on_signal(stop_tx));
        if let Some(interval) = daemon::watchdog_interval() {
            tokio::spawn(watchdog(interval / 2));
        }
        let mut agent = Agent::new(args.config, config)?;
        agent.run(stop_rx).await
    })?;
    Ok(ExitCode::SUCCESS)
}

/// Sets `stop` on the first SIGTERM or SIGINT.
async fn stop_on_signal(stop: watch::Sender<bool>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut term) = signal(SignalKind::terminate()) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => info!(signal = "SIGTERM", "stopping"),
            _ = tokio::signal::ctrl_c() => info!(signal = "SIGINT", "stopping"),
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
        info!(signal = "ctrl-c", "stopping");
    }
    let _ = stop.send(true);
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
    /// Spool drops counted but not yet reported in a heartbeat.
    dropped: u64,
    /// Set by an enrolment: the server needs this agent's whole inventory now.
    inventory_due: bool,
}

/// What stopped a job early.
enum Cut {
    /// The agent is stopping.
    Stop,
}

impl Agent {
    fn new(flags: ConfigFlags, config: Config) -> anyhow::Result<Agent> {
        let state_dir = config.agent.state_dir.clone();
        let client = Client::new(&config.api, &config.security)?;
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
        Ok(Agent {
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
            dropped: 0,
            inventory_due: false,
        })
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
        loop {
            let (job, at) = schedule.next();
            tokio::select! {
                biased;
                _ = stop.wait_for(|stop| *stop) => break,
                _ = reloads.next() => {
                    self.reload(&mut schedule);
                    continue;
                }
                _ = tokio::time::sleep_until(at) => {}
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
        }
        daemon::notify("STOPPING=1");
        self.write_status();
        info!("muster-agent stopped");
        Ok(())
    }

    fn reload(&mut self, schedule: &mut Schedule) {
        daemon::notify("RELOADING=1");
        match config::load(&self.flags).and_then(|loaded| loaded.require_server().map(|()| loaded))
        {
            Ok(loaded) => match Client::new(&loaded.config.api, &loaded.config.security) {
                Ok(client) => {
                    logging::set_level(loaded.config.agent.log_level);
                    self.client = client;
                    self.config = loaded.config;
                    schedule.set_intervals(self.intervals(), Instant::now());
                    info!("configuration reloaded");
                }
                Err(e) => error!(error = %e, "configuration reload rejected, keeping the old one"),
            },
            Err(e) => error!(error = %e, "configuration reload rejected, keeping the old one"),
        }
        daemon::notify("READY=1");
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

    /// The agent token, enrolling first if there is none. `None` when enrolment failed (the
    /// failure is recorded) and the job should wait for its next turn.
    async fn token(&mut self, stop: &mut watch::Receiver<bool>) -> Result<Option<Secret>, Cut> {
        if let Some(enrolment) = &self.enrolment {
            return Ok(Some(enrolment.agent_token.clone()));
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
                Ok(Some(token))
            }
            Err(e) => {
                warn!(error = %e, "enrolment failed");
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
        let Some(token) = self.token(stop).await? else {
            return Ok(());
        };
        self.dropped += self.spool.take_dropped();
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
                dropped_reports: self.dropped,
                queue_depth: 0,
                last_inventory: self.status.last_inventory.as_ref().map(|o| o.at),
                last_telemetry: self.status.last_telemetry.as_ref().map(|o| o.at),
            },
        };
        match Self::until_stop(stop, self.client.heartbeat(&token, &heartbeat)).await? {
            Ok(answer) => {
                debug!(pending_commands = answer.pending_commands, "heartbeat");
                self.dropped = 0;
                self.status.last_heartbeat = Some(Outcome::success(Timestamp::now()));
                self.drain_spool(&token, stop).await
            }
            Err(ClientError::Unauthorized) => {
                self.forget_enrolment();
                self.status.last_heartbeat =
                    Some(Outcome::failure(Timestamp::now(), "agent token rejected"));
                Ok(())
            }
            Err(e) => {
                warn!(error = %e, "heartbeat failed");
                self.status.errors += 1;
                self.status.last_heartbeat =
                    Some(Outcome::failure(Timestamp::now(), e.to_string()));
                Ok(())
            }
        }
    }

    /// Sends spooled reports oldest first while the server takes them.
    async fn drain_spool(
        &mut self,
        token: &Secret,
        stop: &mut watch::Receiver<bool>,
    ) -> Result<(), Cut> {
        loop {
            let item = match self.spool.oldest() {
                Ok(Some(item)) => item,
                Ok(None) => return Ok(()),
                Err(e) => {
                    error!(error = %e, "cannot read the spool");
                    return Ok(());
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
                    return Ok(());
                }
                Err(e) => {
                    debug!(error = %e, "server unavailable; spool kept");
                    return Ok(());
                }
            }
            if let Err(e) = self.spool.remove(item.id) {
                error!(error = %e, "cannot remove a sent report from the spool");
                return Ok(());
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

    async fn inventory(&mut self, stop: &mut watch::Receiver<bool>) -> Result<(), Cut> {
        let Some(token) = self.token(stop).await? else {
            return Ok(());
        };
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
        report.agent_id = Some(self.agent_id());
        self.status.scans_completed += 1;
        let now = Timestamp::now();
        let mut planned = self.inventory.plan(report.clone(), now);
        let mut result =
            Self::until_stop(stop, self.client.upload_inventory(&token, &planned.upload)).await;
        if let Ok(Err(ClientError::Conflict { .. })) = &result {
            // The server does not hold our base: start over with everything.
            planned = self.inventory.plan_full(report.clone(), now);
            result =
                Self::until_stop(stop, self.client.upload_inventory(&token, &planned.upload)).await;
        }
        let outcome = match result {
            Ok(Ok(ack)) => {
                let mut state = planned.after_ack;
                if let Some(hash) = ack.hash {
                    state.hash = Some(hash);
                }
                self.inventory = state;
                if let Err(e) = self.inventory.save(&self.state_dir()) {
                    warn!(error = %e, "cannot store the inventory state; the next one is full");
                }
                Ok(Outcome::success(Timestamp::now()))
            }
            Ok(Err(ClientError::Unauthorized)) => {
                self.forget_enrolment();
                Ok(Outcome::failure(Timestamp::now(), "agent token rejected"))
            }
            Ok(Err(e @ ClientError::Unavailable { .. })) => {
                self.spool_inventory(report, now);
                Ok(Outcome::failure(Timestamp::now(), format!("{e} (spooled)")))
            }
            Ok(Err(e)) => Ok(Outcome::failure(Timestamp::now(), e.to_string())),
            Err(Cut::Stop) => {
                self.spool_inventory(report, now);
                Err(Cut::Stop)
            }
        };
        let record = match &outcome {
            Ok(o) => o.clone(),
            Err(_) => Outcome::failure(Timestamp::now(), "stopped while sending (spooled)"),
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
        outcome.map(|_| ())
    }

    /// Keeps an inventory the server could not take. It is spooled whole (a delta would
    /// depend on what the server holds when it finally arrives), and the next inventory is
    /// whole too.
    fn spool_inventory(&mut self, report: muster_proto::DaemonReport, now: Timestamp) {
        self.inventory = InventoryState::default();
        let upload = self.inventory.plan_full(report, now).upload;
        let body = serde_json::to_vec(&upload).expect("an upload always serializes");
        self.spool(SpoolKind::Inventory, api::paths::SYSTEM_REPORT, &body);
    }

    async fn telemetry(&mut self, stop: &mut watch::Receiver<bool>) -> Result<(), Cut> {
        let sample = self.sampler.sample();
        let FunctionData::SystemMetrics(metrics) = sample.data else {
            return Ok(());
        };
        let Some(token) = self.token(stop).await? else {
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
        let result = Self::until_stop(stop, self.client.report_metrics(&token, &report)).await;
        let record = match &result {
            Ok(Ok(_)) => Outcome::success(Timestamp::now()),
            Ok(Err(ClientError::Unauthorized)) => {
                self.forget_enrolment();
                Outcome::failure(Timestamp::now(), "agent token rejected")
            }
            Ok(Err(e @ ClientError::Unavailable { .. })) | Ok(Err(e @ ClientError::Invalid(_))) => {
                let body = serde_json::to_vec(&report).expect("a metrics report always serializes");
                self.spool(SpoolKind::Telemetry, api::paths::METRICS_REPORT, &body);
                Outcome::failure(Timestamp::now(), format!("{e} (spooled)"))
            }
            Ok(Err(e)) => Outcome::failure(Timestamp::now(), e.to_string()),
            Err(Cut::Stop) => {
                let body = serde_json::to_vec(&report).expect("a metrics report always serializes");
                self.spool(SpoolKind::Telemetry, api::paths::METRICS_REPORT, &body);
                Outcome::failure(Timestamp::now(), "stopped while sending (spooled)")
            }
        };
        if !record.ok {
            self.status.errors += 1;
        }
        self.status.last_telemetry = Some(record);
        result.map(|_| ())
    }

    fn write_status(&mut self) {
        let spool = self.spool.stats();
        self.status.spool_items = spool.items;
        self.status.spool_bytes = spool.bytes;
        self.status.dropped_reports = self.dropped;
        if let Err(e) = crate::status::write(&self.config.agent.state_dir, &self.status) {
            warn!(error = %e, "cannot write the status file");
        }
    }
}
