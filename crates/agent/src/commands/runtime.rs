//! The smart queue: accepts what the server leases, decides what runs when, runs it, and
//! reports every step back. See the module docs of [`super`] for the rules.

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use muster_proto::api::{
    Command, CommandState, CommandStatusUpdate, LockRequest, LockScope, PendingCommands,
};
use tokio::sync::{mpsc, watch};
use tracing::{debug, error, info, warn};

use super::api::CommandApi;
use super::clock::{Clock, Window};
use super::exec::{self, Ending, ExecOutcome, ExecSpec, ScriptDir};
use super::load::{LoadMonitor, LoadSource};
use super::store::{Entry, Store, Wait};
use super::verify::{Policy, SigningKey};
use super::{pkglock, store};
use crate::client::ClientError;
use crate::config::Config;

/// Added to a command's timeout for the TTL of its server locks: the lock must outlive the
/// command's stop (grace included) and the release call.
pub const LOCK_TTL_MARGIN: Duration = Duration::from_secs(60);

/// How long a command whose lock is held by another waits before it asks again.
pub const LOCK_RETRY: Duration = Duration::from_secs(15);

/// How long before status updates or lock releases the server did not take are tried again.
pub const SERVER_RETRY: Duration = Duration::from_secs(5);

/// How often waiting commands are looked at again (window, package-manager lock), at most.
pub const RECHECK: Duration = Duration::from_secs(5);

/// The longest the queue sleeps with commands waiting.
const MAX_SLEEP: Duration = Duration::from_secs(60);

/// The queue's settings, from `[scheduling]`, `[monitoring]` and `[security]`.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    pub max_concurrent: usize,
    pub defer_cpu: f64,
    pub defer_memory: f64,
    pub window: Option<Window>,
    pub load_check_interval: Duration,
    pub default_timeout: Duration,
    pub grace: Duration,
    pub output_cap: usize,
    pub allowed_types: Vec<String>,
    /// The package manager's lock files (tests point them elsewhere).
    pub package_lock_files: Vec<PathBuf>,
    /// Named mutexes a package manager holds while it works (Windows Installer's).
    pub package_mutexes: Vec<String>,
}

impl Settings {
    pub fn from_config(config: &Config) -> Settings {
        let s = &config.scheduling;
        Settings {
            max_concurrent: usize::try_from(s.max_concurrent_commands)
                .unwrap_or(1)
                .max(1),
            defer_cpu: s.defer_threshold_cpu,
            defer_memory: s.defer_threshold_memory,
            window: Window::from_config(s.maintenance_window_start, s.maintenance_window_end),
            load_check_interval: config.monitoring.load_check_interval,
            default_timeout: s.command_timeout,
            grace: s.kill_grace,
            output_cap: usize::try_from(s.output_max_bytes).unwrap_or(usize::MAX),
            allowed_types: config.security.allowed_command_types.clone(),
            package_lock_files: pkglock::default_lock_files(),
            package_mutexes: pkglock::default_mutexes(),
        }
    }
}

/// Why a running command was asked to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopWhy {
    Cancelled,
    Shutdown,
}

#[derive(Debug)]
struct Running {
    stop: watch::Sender<bool>,
    why: Option<StopWhy>,
    /// A script's private directory, removed when the command has ended.
    _script: Option<ScriptDir>,
}

/// The command queue and executor. Drive it with [`CommandRuntime::accept`] (what the server
/// leased), [`CommandRuntime::step`] (start what may start, finish what ended, report) and
/// [`CommandRuntime::wait`] (until a step has something to do).
pub struct CommandRuntime<A> {
    settings: Settings,
    store: Store,
    dir: PathBuf,
    api: A,
    clock: Arc<dyn Clock>,
    load: Box<dyn LoadSource>,
    monitor: LoadMonitor,
    policy: Policy,
    running: HashMap<i64, Running>,
    done_tx: mpsc::UnboundedSender<(i64, ExecOutcome)>,
    done_rx: mpsc::UnboundedReceiver<(i64, ExecOutcome)>,
    done: Vec<(i64, ExecOutcome)>,
    builtins: VecDeque<(i64, String)>,
    /// Commands not to try before then (their lock was held).
    not_before: HashMap<i64, Timestamp>,
    /// When the server last failed us: status updates and lock releases wait until then.
    server_retry_at: Option<Timestamp>,
    /// Started processes, (command id, pid), to record.
    pid_tx: mpsc::UnboundedSender<(i64, i32)>,
    pid_rx: mpsc::UnboundedReceiver<(i64, i32)>,
    spawned: Vec<(i64, i32)>,
    /// Process groups of commands that were running when the agent last stopped, still to
    /// be stopped.
    orphans: Vec<(i32, u64)>,
}

impl<A> std::fmt::Debug for CommandRuntime<A> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandRuntime")
            .field("queued", &self.store.state.queued.len())
            .field("running", &self.running.len())
            .field("outbox", &self.store.state.outbox.len())
            .finish_non_exhaustive()
    }
}

/// A status update with nothing but the state and a reason.
fn update(id: i64, status: CommandState, reason: Option<String>) -> CommandStatusUpdate {
    CommandStatusUpdate {
        command_id: id,
        status,
        reason,
        exit_code: None,
        stdout: None,
        stderr: None,
        stdout_truncated: false,
        stderr_truncated: false,
        started_at: None,
        finished_at: None,
    }
}

/// A lock name as the server knows it: `tenant:NAME` is `NAME` across the tenant.
pub fn lock_scope(name: &str) -> (LockScope, &str) {
    match name.strip_prefix("tenant:") {
        Some(rest) => (LockScope::Tenant, rest),
        None => (LockScope::Agent, name),
    }
}

impl<A: CommandApi> CommandRuntime<A> {
    /// The queue kept in `state_dir/commands`. Commands that were running when the agent last
    /// stopped are reported `failed` (their locks released); queued ones wait as before.
    pub fn new(
        settings: Settings,
        state_dir: &Path,
        api: A,
        clock: Arc<dyn Clock>,
        load: Box<dyn LoadSource>,
    ) -> std::io::Result<Self> {
        let dir = state_dir.join("commands");
        let mut store = Store::open(&dir)?;
        let interrupted = std::mem::take(&mut store.state.running);
        let now = clock.now();
        let mut orphans = Vec::new();
        for entry in interrupted {
            orphans.extend(entry.pid);
            warn!(
                command_id = entry.command.id,
                "a command was running when the agent stopped"
            );
            store
                .state
                .stale_locks
                .extend(entry.lock_ids.iter().cloned());
            let mut u = update(
                entry.command.id,
                CommandState::Failed,
                Some("the agent stopped while the command ran".into()),
            );
            u.started_at = entry.started_at;
            u.finished_at = Some(now);
            store.state.report(u);
            store.state.finished(entry.command.id);
        }
        store.state.order();
        store.save()?;
        let (done_tx, done_rx) = mpsc::unbounded_channel();
        let (pid_tx, pid_rx) = mpsc::unbounded_channel();
        Ok(CommandRuntime {
            pid_tx,
            pid_rx,
            spawned: Vec::new(),
            orphans,
            monitor: LoadMonitor::new(settings.load_check_interval),
            policy: Policy {
                agent_id: String::new(),
                key: None,
                allowed_types: settings.allowed_types.clone(),
            },
            settings,
            store,
            dir,
            api,
            clock,
            load,
            running: HashMap::new(),
            done_tx,
            done_rx,
            done: Vec::new(),
            builtins: VecDeque::new(),
            not_before: HashMap::new(),
            server_retry_at: None,
        })
    }

    /// Who the agent is and the key commands must be signed with (`None`: none known, so
    /// unsigned commands are accepted).
    pub fn set_identity(&mut self, agent_id: &str, key: Option<SigningKey>) {
        self.policy.agent_id = agent_id.to_owned();
        self.policy.key = key;
    }

    /// New settings (a reloaded configuration).
    pub fn set_settings(&mut self, settings: Settings) {
        if settings.load_check_interval != self.settings.load_check_interval {
            self.monitor = LoadMonitor::new(settings.load_check_interval);
        }
        self.policy.allowed_types = settings.allowed_types.clone();
        self.settings = settings;
    }

    pub fn api_mut(&mut self) -> &mut A {
        &mut self.api
    }

    /// Commands queued or running.
    pub fn queue_depth(&self) -> usize {
        self.store.state.queued.len() + self.store.state.running.len()
    }

    /// The ids of queued commands in the order they would run (tests, status).
    pub fn queued_ids(&self) -> Vec<i64> {
        self.store
            .state
            .queued
            .iter()
            .map(|e| e.command.id)
            .collect()
    }

    pub fn running_ids(&self) -> Vec<i64> {
        let mut ids: Vec<i64> = self
            .store
            .state
            .running
            .iter()
            .map(|e| e.command.id)
            .collect();
        ids.sort_unstable();
        ids
    }

    /// Status updates not yet acknowledged by the server, oldest first.
    pub fn outbox(&self) -> impl Iterator<Item = &CommandStatusUpdate> {
        self.store.state.outbox.iter()
    }

    fn save(&self) {
        if let Err(e) = self.store.save() {
            error!(error = %e, "cannot store the command queue");
        }
    }

    fn report(&mut self, u: CommandStatusUpdate) {
        debug!(command_id = u.command_id, status = ?u.status, reason = u.reason.as_deref().unwrap_or(""), "command status");
        let dropped = self.store.state.report(u);
        if dropped > 0 {
            warn!(
                dropped,
                "too many unsent command status updates; oldest dropped"
            );
        }
    }

    /// Takes what the server leased: each new command is acknowledged `received` and checked
    /// (signature, expiry, type: else `rejected`/`expired`, never run) and queued; a command
    /// already held is acknowledged again, not queued twice; a finished one is a replay and
    /// refused. Then the cancellations.
    pub fn accept(&mut self, pending: PendingCommands) {
        let now = self.clock.now();
        for command in pending.commands {
            let id = command.id;
            if let Some(entry) = self.store.state.queued.iter().find(|e| e.command.id == id) {
                // The lease was delivered again: our acknowledgement was lost (or is still in
                // the outbox). Once deferred or running, the server already knows better.
                if entry.reported.is_none() {
                    self.report(update(id, CommandState::Received, None));
                }
                continue;
            }
            if self.store.state.running.iter().any(|e| e.command.id == id) {
                continue;
            }
            if self.store.state.finished.contains(&id) {
                warn!(command_id = id, "refusing a replayed command id");
                continue;
            }
            self.report(update(id, CommandState::Received, None));
            match self.policy.check(&command, now) {
                Err(refusal) => {
                    warn!(command_id = id, status = ?refusal.state, reason = %refusal.reason, "command refused");
                    self.report(update(id, refusal.state, Some(refusal.reason)));
                    self.store.state.finished(id);
                }
                Ok(()) => {
                    info!(command_id = id, kind = %command.kind, priority = command.priority, "command queued");
                    let seq = self.store.state.next_seq;
                    self.store.state.next_seq += 1;
                    self.store.state.queued.push(Entry {
                        command,
                        seq,
                        received_at: now,
                        reported: None,
                        started_at: None,
                        lock_ids: Vec::new(),
                        pid: None,
                    });
                }
            }
        }
        self.store.state.order();
        for id in pending.cancel {
            self.cancel(id);
        }
        self.save();
    }

    /// Cancels `id`: queued, it is dropped and reported `cancelled`; running, its process tree
    /// is stopped and it is reported `cancelled` when it has ended.
    pub fn cancel(&mut self, id: i64) {
        if let Some(i) = self
            .store
            .state
            .queued
            .iter()
            .position(|e| e.command.id == id)
        {
            self.store.state.queued.remove(i);
            info!(command_id = id, "queued command cancelled");
            self.report(update(
                id,
                CommandState::Cancelled,
                Some("cancelled before it started".into()),
            ));
            self.store.state.finished(id);
        } else if let Some(run) = self.running.get_mut(&id) {
            if run.why.is_none() {
                info!(command_id = id, "stopping a cancelled command");
                run.why = Some(StopWhy::Cancelled);
                let _ = run.stop.send(true);
            }
        } else if !self.store.state.finished.contains(&id) {
            // Delivered once, lost since (e.g. a queue file moved away): the server still
            // waits for an end.
            self.report(update(
                id,
                CommandState::Cancelled,
                Some("cancelled".into()),
            ));
            self.store.state.finished(id);
        }
        self.save();
    }

    /// One round: finish what ended, release stale locks, start what may start, send the
    /// status updates.
    pub async fn step(&mut self) {
        self.stop_orphans().await;
        self.record_pids();
        while let Ok(done) = self.done_rx.try_recv() {
            self.done.push(done);
        }
        for (id, outcome) in std::mem::take(&mut self.done) {
            self.finish_exec(id, outcome).await;
        }
        self.release_stale_locks().await;
        self.schedule().await;
        self.flush().await;
    }

    /// Stops what is left of the process trees of commands that were running when the agent
    /// last stopped (killed, it could not stop them itself).
    async fn stop_orphans(&mut self) {
        for (pgid, start) in std::mem::take(&mut self.orphans) {
            #[cfg(unix)]
            if super::proctree::still_ours(
                pgid,
                start,
                &super::proctree::snapshot(Path::new("/proc")),
            ) {
                warn!(
                    pgid,
                    "stopping what is left of a command that ran when the agent stopped"
                );
                super::proctree::stop_tree(pgid, self.settings.grace).await;
            }
            #[cfg(not(unix))]
            let _ = (pgid, start);
        }
    }

    /// Notes the pid of each command process started since the last look.
    fn record_pids(&mut self) {
        let mut changed = false;
        while let Ok(spawned) = self.pid_rx.try_recv() {
            self.spawned.push(spawned);
        }
        for (id, pid) in std::mem::take(&mut self.spawned) {
            let start = super::proctree::start_time(pid);
            if let (Some(entry), Some(start)) = (
                self.store
                    .state
                    .running
                    .iter_mut()
                    .find(|e| e.command.id == id),
                start,
            ) {
                entry.pid = Some((pid, start));
                changed = true;
            }
        }
        if changed {
            self.save();
        }
    }

    /// Waits until a step has something to do: a command ended, or a waiting one is due for
    /// another look, or unsent updates are due for another try.
    pub async fn wait(&mut self) {
        let sleep = self.next_wake();
        tokio::select! {
            Some(done) = self.done_rx.recv() => self.done.push(done),
            Some(spawned) = self.pid_rx.recv() => self.spawned.push(spawned),
            _ = async {
                match sleep {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            } => {}
        }
    }

    /// How long until a step is worth it; `None`: only when something arrives.
    pub fn next_wake(&self) -> Option<Duration> {
        let now = self.clock.now();
        let until =
            |t: Timestamp| Duration::try_from(t.duration_since(now)).unwrap_or(Duration::ZERO);
        let mut wake: Option<Duration> = None;
        let mut at = |d: Duration| wake = Some(wake.map_or(d, |w| w.min(d)));
        let state = &self.store.state;
        if !state.outbox.is_empty() || !state.stale_locks.is_empty() {
            at(self.server_retry_at.map_or(Duration::ZERO, until));
        }
        for e in &state.queued {
            match e.command.scheduled_for {
                Some(due) if due > now => at(until(due)),
                _ => match self.not_before.get(&e.command.id) {
                    Some(t) => at(until(*t)),
                    None => at(RECHECK.min(self.monitor.sample_every())),
                },
            }
            if let Some(expires) = e.command.expires_at {
                at(until(expires));
            }
        }
        wake.map(|w| w.min(MAX_SLEEP))
    }

    /// The next builtin action to perform (`scan_now`, ...): the agent does it and calls
    /// [`CommandRuntime::finish_builtin`].
    pub fn take_builtin(&mut self) -> Option<(i64, String)> {
        self.builtins.pop_front()
    }

    /// A builtin's result: its output, or why it failed.
    pub async fn finish_builtin(&mut self, id: i64, result: Result<String, String>) {
        let cap = self.settings.output_cap;
        let (ending, out, err) = match result {
            Ok(out) => (
                Ending::Exited {
                    code: Some(0),
                    signal: None,
                },
                out,
                String::new(),
            ),
            Err(e) => (
                Ending::Exited {
                    code: Some(1),
                    signal: None,
                },
                String::new(),
                e,
            ),
        };
        let mut stdout = exec::Tail::new(cap);
        stdout.push(out.as_bytes());
        let mut stderr = exec::Tail::new(cap);
        stderr.push(err.as_bytes());
        let exit_code = match ending {
            Ending::Exited { code, .. } => code,
            _ => None,
        };
        self.finish_exec(
            id,
            ExecOutcome {
                ending,
                exit_code,
                stdout,
                stderr,
            },
        )
        .await;
        self.flush().await;
    }

    async fn finish_exec(&mut self, id: i64, outcome: ExecOutcome) {
        let Some(i) = self
            .store
            .state
            .running
            .iter()
            .position(|e| e.command.id == id)
        else {
            return;
        };
        let entry = self.store.state.running.remove(i);
        let why = self.running.remove(&id).and_then(|r| r.why);
        let timeout = self.timeout_of(&entry.command);
        let (status, reason) = match (&outcome.ending, why) {
            (Ending::Exited { code: Some(0), .. }, None) => (CommandState::Succeeded, None),
            (
                Ending::Exited {
                    code: Some(code), ..
                },
                None,
            ) => (CommandState::Failed, Some(format!("exit status {code}"))),
            (Ending::Exited { signal, .. }, None) => (
                CommandState::Failed,
                Some(format!("killed by signal {}", signal.unwrap_or(0))),
            ),
            (Ending::TimedOut, _) => (
                CommandState::TimedOut,
                Some(format!(
                    "timed out after {} s; process tree stopped",
                    timeout.as_secs()
                )),
            ),
            (Ending::SpawnFailed(why), _) => (CommandState::Failed, Some(why.clone())),
            (_, Some(StopWhy::Cancelled)) => (
                CommandState::Cancelled,
                Some("cancelled while running; process tree stopped".into()),
            ),
            (_, Some(StopWhy::Shutdown)) => (
                CommandState::Failed,
                Some("stopped: the agent is shutting down".into()),
            ),
            (Ending::Stopped, None) => (CommandState::Failed, Some("stopped".into())),
        };
        info!(command_id = id, status = ?status, exit_code = ?outcome.exit_code, "command ended");
        let u = CommandStatusUpdate {
            command_id: id,
            status,
            reason,
            exit_code: outcome.exit_code,
            stdout: Some(outcome.stdout.text()),
            stderr: Some(outcome.stderr.text()),
            stdout_truncated: outcome.stdout.truncated,
            stderr_truncated: outcome.stderr.truncated,
            started_at: entry.started_at,
            finished_at: Some(self.clock.now()),
        };
        self.report(u);
        self.store.state.finished(id);
        self.store.state.stale_locks.extend(entry.lock_ids);
        self.save();
        self.release_stale_locks().await;
    }

    fn timeout_of(&self, command: &Command) -> Duration {
        command
            .timeout_s
            .filter(|s| *s > 0)
            .map_or(self.settings.default_timeout, Duration::from_secs)
    }

    fn server_waits(&self) -> bool {
        self.server_retry_at.is_some_and(|t| t > self.clock.now())
    }

    fn server_failed(&mut self) {
        let retry = jiff::SignedDuration::try_from(SERVER_RETRY).unwrap_or_default();
        self.server_retry_at = self.clock.now().checked_add(retry).ok();
    }

    /// Releases locks of ended commands; the ones the server cannot be told about now are
    /// kept for the next step (and expire on the server anyway).
    async fn release_stale_locks(&mut self) {
        if self.store.state.stale_locks.is_empty() || self.server_waits() {
            return;
        }
        let mut kept = Vec::new();
        for id in std::mem::take(&mut self.store.state.stale_locks) {
            if !kept.is_empty() {
                kept.push(id);
                continue;
            }
            match self.api.delete_lock(&id).await {
                Ok(())
                | Err(
                    ClientError::Rejected { .. }
                    | ClientError::Conflict { .. }
                    | ClientError::Invalid(_),
                ) => {
                    debug!(lock_id = %id, "lock released");
                }
                Err(e) => {
                    warn!(lock_id = %id, error = %e, "cannot release a lock now; trying again later");
                    kept.push(id);
                    self.server_failed();
                }
            }
        }
        self.store.state.stale_locks = kept;
        self.save();
    }

    /// Sends status updates oldest first until the server stops taking them. A 409 (the
    /// server already has a later state) or 404 is the server's final word: dropped.
    pub async fn flush(&mut self) {
        if self.server_waits() {
            return;
        }
        let mut changed = false;
        while let Some(u) = self.store.state.outbox.front() {
            match self.api.post_status(u).await {
                Ok(()) => {}
                Err(
                    e @ (ClientError::Conflict { .. }
                    | ClientError::Rejected { .. }
                    | ClientError::Invalid(_)),
                ) => {
                    warn!(command_id = u.command_id, status = ?u.status, error = %e, "the server refused a command status update");
                }
                Err(e) => {
                    debug!(error = %e, "cannot send command status now");
                    self.server_failed();
                    break;
                }
            }
            self.store.state.outbox.pop_front();
            changed = true;
        }
        if changed {
            self.save();
        }
    }

    /// Reports `wait` for the entry at `i` unless it was the last wait reported.
    fn defer(&mut self, i: usize, wait: Wait, reason: String) {
        let entry = &mut self.store.state.queued[i];
        if entry.reported != Some(wait) {
            entry.reported = Some(wait);
            let id = entry.command.id;
            info!(command_id = id, reason = %reason, "command deferred");
            self.report(update(id, CommandState::Deferred, Some(reason)));
            self.save();
        }
    }

    fn needs_load(&self) -> bool {
        let now = self.clock.now();
        self.store
            .state
            .queued
            .iter()
            .any(|e| e.command.priority > 1 && e.command.scheduled_for.is_none_or(|t| t <= now))
    }

    async fn schedule(&mut self) {
        let now = self.clock.now();
        // Expired while waiting: never run.
        let mut i = 0;
        while i < self.store.state.queued.len() {
            let e = &self.store.state.queued[i];
            if let Some(expires) = e.command.expires_at
                && expires <= now
            {
                let e = self.store.state.queued.remove(i);
                self.report(update(
                    e.command.id,
                    CommandState::Expired,
                    Some(format!("expired at {expires} before it could run")),
                ));
                self.store.state.finished(e.command.id);
                self.save();
            } else {
                i += 1;
            }
        }
        if self.needs_load()
            && self.monitor.wants_sample(now)
            && let Some(sample) = self.load.sample()
        {
            self.monitor.observe(now, sample);
        }
        let mut i = 0;
        while i < self.store.state.queued.len() {
            if self.store.state.running.len() >= self.settings.max_concurrent {
                break;
            }
            let command = self.store.state.queued[i].command.clone();
            if command.scheduled_for.is_some_and(|t| t > now) {
                // Sorted by due time: nothing after it is due either.
                break;
            }
            if self.not_before.get(&command.id).is_some_and(|t| *t > now) {
                i += 1;
                continue;
            }
            if command.maintenance_window {
                match self.settings.window {
                    None => {
                        self.store.state.queued.remove(i);
                        self.report(update(
                            command.id,
                            CommandState::Rejected,
                            Some(
                                "the command needs a maintenance window and none is configured"
                                    .into(),
                            ),
                        ));
                        self.store.state.finished(command.id);
                        self.save();
                        continue;
                    }
                    Some(w) if !w.contains(now, &self.clock.time_zone()) => {
                        self.defer(
                            i,
                            Wait::Window,
                            format!("waiting for the maintenance window {}", w.describe()),
                        );
                        i += 1;
                        continue;
                    }
                    Some(_) => {}
                }
            }
            if command.priority > 1
                && let Some(reason) = self
                    .monitor
                    .over(self.settings.defer_cpu, self.settings.defer_memory)
            {
                self.defer(i, Wait::Load, reason);
                i += 1;
                continue;
            }
            if command.package_manager
                && let Some(reason) = pkglock::held(&self.settings.package_lock_files)
                    .or_else(|| pkglock::mutex_held(&self.settings.package_mutexes))
            {
                self.defer(i, Wait::PackageManager, reason);
                i += 1;
                continue;
            }
            let lock_ids = match self.take_locks(&command).await {
                Ok(ids) => ids,
                Err(ClientError::Conflict { message }) => {
                    let retry = jiff::SignedDuration::try_from(LOCK_RETRY).unwrap_or_default();
                    if let Ok(t) = now.checked_add(retry) {
                        self.not_before.insert(command.id, t);
                    }
                    self.defer(i, Wait::Lock, format!("lock held: {message}"));
                    i += 1;
                    continue;
                }
                Err(e) => {
                    debug!(command_id = command.id, error = %e, "cannot take the command's locks now");
                    self.server_failed();
                    let retry = jiff::SignedDuration::try_from(SERVER_RETRY).unwrap_or_default();
                    if let Ok(t) = now.checked_add(retry) {
                        self.not_before.insert(command.id, t);
                    }
                    i += 1;
                    continue;
                }
            };
            let entry = self.store.state.queued.remove(i);
            self.start(entry, lock_ids);
        }
    }

    /// Takes the command's server locks in order; on any failure releases those taken.
    async fn take_locks(&mut self, command: &Command) -> Result<Vec<String>, ClientError> {
        let ttl = self.timeout_of(command) + self.settings.grace + LOCK_TTL_MARGIN;
        let mut taken = Vec::new();
        for name in &command.locks {
            let (scope, resource) = lock_scope(name);
            let req = LockRequest {
                resource: resource.to_owned(),
                command_id: Some(command.id),
                ttl_s: ttl.as_secs(),
                scope,
            };
            match self.api.create_lock(&req).await {
                Ok(lock) => taken.push(lock.id),
                Err(e) => {
                    for id in taken {
                        if self.api.delete_lock(&id).await.is_err() {
                            self.store.state.stale_locks.push(id);
                        }
                    }
                    return Err(e);
                }
            }
        }
        Ok(taken)
    }

    fn start(&mut self, mut entry: Entry, lock_ids: Vec<String>) {
        let id = entry.command.id;
        let now = self.clock.now();
        self.not_before.remove(&id);
        entry.started_at = Some(now);
        entry.lock_ids = lock_ids;
        let command = entry.command.clone();
        self.store.state.running.push(entry);
        let mut u = update(id, CommandState::Running, None);
        u.started_at = Some(now);
        self.report(u);
        info!(command_id = id, kind = %command.kind, "command started");
        let (stop, stop_rx) = watch::channel(false);
        let timeout = self.timeout_of(&command);
        let (grace, cap) = (self.settings.grace, self.settings.output_cap);
        // `None`: nothing to spawn (a builtin, which the agent's loop performs, or a script
        // that could not be written, which ends at the next step).
        let (spec, script) = match command.kind.as_str() {
            "builtin" => {
                self.builtins.push_back((id, command.command.clone()));
                (None, None)
            }
            "script" => {
                // Checked when accepted ([`super::verify`]); a queue file from another
                // platform's agent could still name one this one lacks.
                let interpreter = exec::find_interpreter(
                    command
                        .parameters
                        .get("interpreter")
                        .and_then(|v| v.as_str()),
                );
                let script = interpreter
                    .ok_or_else(|| "no such interpreter on this platform".to_owned())
                    .and_then(|i| {
                        ScriptDir::create(&self.dir.join("tmp"), id, &command.command, i)
                            .map(|s| (i, s))
                            .map_err(|e| format!("cannot write the script: {e}"))
                    });
                match script {
                    Ok((interpreter, script)) => {
                        let spec = ExecSpec::for_script(
                            &command,
                            interpreter,
                            &script.file,
                            timeout,
                            grace,
                            cap,
                        );
                        (Some(spec), Some(script))
                    }
                    Err(why) => {
                        self.done.push((
                            id,
                            ExecOutcome {
                                ending: Ending::SpawnFailed(why),
                                exit_code: None,
                                stdout: exec::Tail::new(0),
                                stderr: exec::Tail::new(0),
                            },
                        ));
                        (None, None)
                    }
                }
            }
            _ => (
                Some(ExecSpec::for_exec(&command, timeout, grace, cap)),
                None,
            ),
        };
        self.running.insert(
            id,
            Running {
                stop,
                why: None,
                _script: script,
            },
        );
        if let Some(spec) = spec {
            let tx = self.done_tx.clone();
            let pid_tx = self.pid_tx.clone();
            let on_spawn: exec::OnSpawn = Box::new(move |pid| {
                let _ = pid_tx.send((id, pid));
            });
            tokio::spawn(async move {
                let outcome = exec::run(spec, stop_rx, on_spawn).await;
                let _ = tx.send((id, outcome));
            });
        }
        self.save();
    }

    /// The agent is stopping: running commands get the grace period to end, then their trees
    /// are stopped; each is reported and its locks released. Queued commands stay queued for
    /// the next start.
    pub async fn shutdown(&mut self) {
        for (id, _) in std::mem::take(&mut self.builtins) {
            self.finish_builtin(id, Err("the agent stopped before the action ran".into()))
                .await;
        }
        let grace = self.settings.grace;
        let deadline = tokio::time::Instant::now() + grace;
        while !self.running.is_empty() {
            match tokio::time::timeout_at(deadline, self.done_rx.recv()).await {
                Ok(Some((id, outcome))) => self.finish_exec(id, outcome).await,
                _ => break,
            }
        }
        for run in self.running.values_mut() {
            run.why = Some(StopWhy::Shutdown);
            let _ = run.stop.send(true);
        }
        // Each stop takes at most the grace period and a moment for SIGKILL.
        let deadline = tokio::time::Instant::now() + grace + Duration::from_secs(5);
        while !self.running.is_empty() {
            match tokio::time::timeout_at(deadline, self.done_rx.recv()).await {
                Ok(Some((id, outcome))) => self.finish_exec(id, outcome).await,
                _ => break,
            }
        }
        self.server_retry_at = None;
        self.release_stale_locks().await;
        self.flush().await;
    }
}

/// The queue file's bound on remembered ids, re-exported for tests.
pub const MAX_FINISHED: usize = store::MAX_FINISHED;
