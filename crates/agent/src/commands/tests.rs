//! The queue's rules, driven through [`CommandRuntime`] with a manual clock, a scripted load
//! source, an in-memory server and real child processes.
//!
//! The commands are shell one-liners: `sh -c` on Unix, `cmd /D /Q /C` on Windows (the helpers
//! below write each step in both). Tests of one platform's mechanism (setsid, `/proc`, fcntl
//! locks; Job Objects, the Windows Installer mutex) are gated to it and say so.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use jiff::Timestamp;
use jiff::tz::TimeZone;
use muster_proto::api::{
    Command, CommandState, CommandStatusUpdate, Lock, LockRequest, LockScope, PendingCommands,
};
use ring::signature::{Ed25519KeyPair, KeyPair as _};
use serde_json::json;

use super::*;
use crate::client::ClientError;

/// The server side of locks and status, in memory.
#[derive(Debug, Default)]
struct Server {
    /// (scope, resource) → (lock id, command id)
    locks: HashMap<String, (String, i64)>,
    next_lock: u64,
    statuses: Vec<CommandStatusUpdate>,
    /// Status posts to fail (server unavailable) before taking them.
    fail_status: usize,
    lock_requests: Vec<LockRequest>,
}

#[derive(Debug, Clone, Default)]
struct FakeApi(Arc<Mutex<Server>>);

impl FakeApi {
    fn states(&self, id: i64) -> Vec<CommandState> {
        let s = self.0.lock().unwrap();
        s.statuses
            .iter()
            .filter(|u| u.command_id == id)
            .map(|u| u.status)
            .collect()
    }

    fn last(&self, id: i64) -> CommandStatusUpdate {
        let s = self.0.lock().unwrap();
        s.statuses
            .iter()
            .rev()
            .find(|u| u.command_id == id)
            .cloned()
            .unwrap()
    }

    fn reasons(&self, id: i64, state: CommandState) -> Vec<String> {
        let s = self.0.lock().unwrap();
        s.statuses
            .iter()
            .filter(|u| u.command_id == id && u.status == state)
            .map(|u| u.reason.clone().unwrap_or_default())
            .collect()
    }
}

impl CommandApi for FakeApi {
    async fn create_lock(&self, req: &LockRequest) -> Result<Lock, ClientError> {
        let mut s = self.0.lock().unwrap();
        s.lock_requests.push(req.clone());
        let key = format!("{:?}:{}", req.scope, req.resource);
        let command = req.command_id.unwrap_or(0);
        if let Some((id, holder)) = s.locks.get(&key) {
            if *holder != command {
                return Err(ClientError::Conflict {
                    message: format!("{} is held by agent a-1 for command {holder}", req.resource),
                });
            }
            let id = id.clone();
            return Ok(lock(id, req));
        }
        s.next_lock += 1;
        let id = format!("lock-{}", s.next_lock);
        s.locks.insert(key, (id.clone(), command));
        Ok(lock(id, req))
    }

    async fn delete_lock(&self, id: &str) -> Result<(), ClientError> {
        let mut s = self.0.lock().unwrap();
        let before = s.locks.len();
        s.locks.retain(|_, (lock, _)| lock != id);
        if s.locks.len() == before {
            return Err(ClientError::Rejected {
                status: 404,
                message: "no such lock".into(),
            });
        }
        Ok(())
    }

    async fn post_status(&self, update: &CommandStatusUpdate) -> Result<(), ClientError> {
        let mut s = self.0.lock().unwrap();
        if s.fail_status > 0 {
            s.fail_status -= 1;
            return Err(ClientError::Unavailable {
                message: "down".into(),
                retry_after: None,
            });
        }
        s.statuses.push(update.clone());
        Ok(())
    }
}

fn lock(id: String, req: &LockRequest) -> Lock {
    Lock {
        id,
        resource: req.resource.clone(),
        scope: req.scope,
        holder_agent_id: "a-1".into(),
        command_id: req.command_id,
        expires_at: Timestamp::MAX,
    }
}

/// A load source whose readings the test sets.
#[derive(Debug, Clone)]
struct Dial(Arc<Mutex<LoadSample>>);

impl Dial {
    fn new() -> Self {
        Dial(Arc::new(Mutex::new(LoadSample {
            cpu: 5.0,
            memory: 20.0,
        })))
    }
    fn set(&self, cpu: f64, memory: f64) {
        *self.0.lock().unwrap() = LoadSample { cpu, memory };
    }
}

impl LoadSource for Dial {
    fn sample(&mut self) -> Option<LoadSample> {
        Some(*self.0.lock().unwrap())
    }
}

struct Rig {
    dir: tempfile::TempDir,
    api: FakeApi,
    clock: ManualClock,
    dial: Dial,
    settings: Settings,
}

impl Rig {
    fn new() -> Rig {
        let mut config = crate::config::Config::default();
        config.security.allowed_command_types =
            vec!["exec".into(), "script".into(), "builtin".into()];
        config.scheduling.kill_grace = Duration::from_millis(300);
        let mut settings = Settings::from_config(&config);
        settings.package_lock_files = Vec::new();
        Rig {
            dir: tempfile::tempdir().unwrap(),
            api: FakeApi::default(),
            // 12:00 UTC: outside the default 02:00–04:00 window.
            clock: ManualClock::new("2026-03-10T12:00:00Z".parse().unwrap(), TimeZone::UTC),
            dial: Dial::new(),
            settings,
        }
    }

    fn runtime(&self) -> CommandRuntime<FakeApi> {
        let mut rt = CommandRuntime::new(
            self.settings.clone(),
            self.dir.path(),
            self.api.clone(),
            Arc::new(self.clock.clone()),
            Box::new(self.dial.clone()),
        )
        .unwrap();
        rt.set_identity("agent-1", None);
        rt
    }
}

/// The platform shell's arguments that run `script`.
fn shell_args(script: &str) -> serde_json::Value {
    if cfg!(windows) {
        json!(["/D", "/Q", "/C", script])
    } else {
        json!(["-c", script])
    }
}

/// Does nothing, successfully.
const TRUE: &str = if cfg!(windows) { "exit 0" } else { "true" };

/// Sleeps `secs` seconds (`ping` waits a second between echoes on Windows).
fn sleep(secs: u32) -> String {
    if cfg!(windows) {
        format!("ping -n {} 127.0.0.1 > nul", secs + 1)
    } else {
        format!("sleep {secs}")
    }
}

/// A command that does `first` (if any), then waits until `gate` exists. On Windows a `cmd`
/// script: a wait needs a loop, and `exit` does not leave a `for` loop in Wine's cmd.
fn gated(id: i64, first: Option<String>, gate: &std::path::Path) -> Command {
    if cfg!(windows) {
        Command {
            kind: "script".into(),
            command: format!(
                "{}\r\n:wait\r\nif exist {g} exit /b 0\r\nping -n 1 127.0.0.1 > nul\r\ngoto wait\r\n",
                first.unwrap_or_default(),
                g = gate.display()
            ),
            parameters: json!({"interpreter": "cmd"}),
            ..exec(id, "")
        }
    } else {
        let wait = format!("while [ ! -e {} ]; do sleep 0.02; done", gate.display());
        exec(id, &first.map_or(wait.clone(), |f| format!("{f}; {wait}")))
    }
}

/// Appends the line `text` to `path` (Wine's cmd loses `(echo x)>> f`; `>> f echo x` works).
fn append(text: &str, path: &std::path::Path) -> String {
    if cfg!(windows) {
        format!(">> {} echo {text}", path.display())
    } else {
        format!("echo {text} >> {}", path.display())
    }
}

/// A file's text with Windows line ends as `\n`.
fn read_lines(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap().replace("\r\n", "\n")
}

/// `script` run by the platform's shell, priority 3, a 30 s timeout.
fn exec(id: i64, script: &str) -> Command {
    Command {
        id,
        kind: "exec".into(),
        command: if cfg!(windows) { "cmd.exe" } else { "sh" }.into(),
        parameters: json!({ "args": shell_args(script) }),
        priority: 3,
        scheduled_for: None,
        timeout_s: Some(30),
        maintenance_window: false,
        locks: Vec::new(),
        package_manager: false,
        expires_at: None,
        signature: None,
    }
}

fn leased(commands: Vec<Command>) -> PendingCommands {
    PendingCommands {
        commands,
        cancel: Vec::new(),
    }
}

/// Steps until `done` holds, a few seconds at most (commands here take milliseconds; a
/// Windows process under Wine, on a loaded machine, up to a second or more).
async fn until(
    rt: &mut CommandRuntime<FakeApi>,
    mut done: impl FnMut(&CommandRuntime<FakeApi>) -> bool,
) {
    let limit = Duration::from_secs(if cfg!(windows) { 30 } else { 10 });
    let deadline = std::time::Instant::now() + limit;
    loop {
        rt.step().await;
        if done(rt) {
            return;
        }
        assert!(std::time::Instant::now() < deadline, "timed out: {rt:?}");
        let _ = tokio::time::timeout(Duration::from_millis(50), rt.wait()).await;
    }
}

#[tokio::test]
async fn the_queue_orders_by_due_time_then_priority_then_arrival_and_survives_a_restart() {
    let rig = Rig::new();
    let mut rt = rig.runtime();
    let at = |t: &str| Some(t.parse::<Timestamp>().unwrap());
    let mut cmds = Vec::new();
    for (id, priority, due) in [
        (1, 3, at("2026-03-10T13:00:00Z")),
        (2, 5, None),
        (3, 1, None),
        (4, 3, None),
        (5, 3, None),
        (6, 1, at("2026-03-10T12:30:00Z")),
    ] {
        let mut c = exec(id, TRUE);
        c.priority = priority;
        c.scheduled_for = due;
        cmds.push(c);
    }
    rt.accept(leased(cmds));
    assert_eq!(rt.queued_ids(), [3, 4, 5, 2, 6, 1]);
    assert_eq!(rt.queue_depth(), 6);
    drop(rt);
    let mut again = rig.runtime();
    assert_eq!(again.queued_ids(), [3, 4, 5, 2, 6, 1], "reloaded in order");
    // Acknowledgements queued before the restart are sent after it.
    again.flush().await;
    for id in 1..=6 {
        assert_eq!(rig.api.states(id), [CommandState::Received], "{id}");
    }
}

#[tokio::test]
async fn only_due_commands_run_and_at_most_max_concurrent_at_once() {
    let mut rig = Rig::new();
    rig.settings.max_concurrent = 2;
    let mut rt = rig.runtime();
    let dir = rig.dir.path().join("marks");
    std::fs::create_dir(&dir).unwrap();
    let gate = rig.dir.path().join("gate");
    let mut cmds: Vec<Command> = (1..=3)
        .map(|id| gated(id, Some(append("x", &dir.join(id.to_string()))), &gate))
        .collect();
    let mut later = exec(4, TRUE);
    later.scheduled_for = Some("2026-03-10T12:05:00Z".parse().unwrap());
    cmds.push(later);
    rt.accept(leased(cmds));
    rt.step().await;
    assert_eq!(rt.running_ids(), [1, 2]);
    // Both started, the third waits for a free slot.
    until(&mut rt, |_| std::fs::read_dir(&dir).unwrap().count() == 2).await;
    assert_eq!(rt.queued_ids(), [3, 4]);
    std::fs::write(&gate, b"").unwrap();
    until(&mut rt, |rt| {
        rt.queued_ids() == [4] && rt.running_ids().is_empty()
    })
    .await;
    assert_eq!(
        rig.api.states(3),
        [
            CommandState::Received,
            CommandState::Running,
            CommandState::Succeeded
        ]
    );
    assert_eq!(rig.api.states(4), [CommandState::Received], "not due yet");
    rig.clock.set("2026-03-10T12:05:00Z".parse().unwrap());
    until(&mut rt, |rt| rt.queue_depth() == 0).await;
    assert_eq!(rig.api.last(4).status, CommandState::Succeeded);
}

#[tokio::test]
async fn under_load_priority_2_to_5_are_deferred_once_and_priority_1_runs() {
    let rig = Rig::new();
    let mut rt = rig.runtime();
    rig.dial.set(91.0, 20.0);
    let mut urgent = exec(1, TRUE);
    urgent.priority = 1;
    let normal = exec(2, TRUE);
    rt.accept(leased(vec![normal, urgent]));
    for _ in 0..5 {
        rt.step().await;
        rig.clock.advance(Duration::from_secs(10));
    }
    until(&mut rt, |rt| rt.running_ids().is_empty()).await;
    assert_eq!(rig.api.last(1).status, CommandState::Succeeded);
    assert_eq!(
        rig.api.states(2),
        [CommandState::Received, CommandState::Deferred],
        "reported once"
    );
    assert_eq!(
        rig.api.reasons(2, CommandState::Deferred),
        ["cpu 91% > 75%"]
    );
    // The load falls; the smoothed value follows over the window (30 s) and the command runs.
    rig.dial.set(10.0, 20.0);
    for _ in 0..8 {
        rig.clock.advance(Duration::from_secs(5));
        rt.step().await;
    }
    until(&mut rt, |rt| rt.queue_depth() == 0).await;
    assert_eq!(
        rig.api.states(2),
        [
            CommandState::Received,
            CommandState::Deferred,
            CommandState::Running,
            CommandState::Succeeded
        ]
    );
}

#[tokio::test]
async fn memory_over_its_threshold_defers_too() {
    let rig = Rig::new();
    let mut rt = rig.runtime();
    rig.dial.set(5.0, 80.0);
    rt.accept(leased(vec![exec(1, TRUE)]));
    rt.step().await;
    assert_eq!(
        rig.api.reasons(1, CommandState::Deferred),
        ["memory 80% > 75%"]
    );
    assert_eq!(rt.queued_ids(), [1]);
}

#[tokio::test]
async fn a_maintenance_window_command_waits_for_the_window_even_across_midnight() {
    let mut rig = Rig::new();
    rig.settings.window = Some(Window {
        start: 23 * 60,
        end: 60,
    });
    rig.clock.set("2026-03-10T22:00:00Z".parse().unwrap());
    let mut rt = rig.runtime();
    let mut windowed = exec(1, TRUE);
    windowed.maintenance_window = true;
    rt.accept(leased(vec![windowed, exec(2, TRUE)]));
    until(&mut rt, |rt| {
        rt.queued_ids() == [1] && rt.running_ids().is_empty()
    })
    .await;
    rt.step().await;
    assert_eq!(
        rig.api.states(1),
        [CommandState::Received, CommandState::Deferred]
    );
    assert_eq!(
        rig.api.reasons(1, CommandState::Deferred),
        ["waiting for the maintenance window 23:00–01:00"]
    );
    // 00:30, after midnight: inside.
    rig.clock.set("2026-03-11T00:30:00Z".parse().unwrap());
    until(&mut rt, |rt| rt.queue_depth() == 0).await;
    assert_eq!(rig.api.last(1).status, CommandState::Succeeded);
}

#[tokio::test]
async fn a_window_command_without_a_window_is_rejected() {
    let mut rig = Rig::new();
    rig.settings.window = None;
    let mut rt = rig.runtime();
    let mut c = exec(1, TRUE);
    c.maintenance_window = true;
    rt.accept(leased(vec![c]));
    rt.step().await;
    assert_eq!(
        rig.api.states(1),
        [CommandState::Received, CommandState::Rejected]
    );
}

#[tokio::test]
async fn two_commands_contending_for_one_lock_run_one_after_the_other() {
    let rig = Rig::new();
    let mut rt = rig.runtime();
    let gate = rig.dir.path().join("gate");
    let mut first = gated(1, None, &gate);
    first.locks = vec!["tenant:reboot".into(), "apt".into()];
    let mut second = exec(2, TRUE);
    second.locks = vec!["tenant:reboot".into()];
    rt.accept(leased(vec![first, second]));
    rt.step().await;
    assert_eq!(rt.running_ids(), [1]);
    {
        let s = rig.api.0.lock().unwrap();
        let req = &s.lock_requests[0];
        assert_eq!(
            (req.scope, req.resource.as_str()),
            (LockScope::Tenant, "reboot")
        );
        assert_eq!(req.command_id, Some(1));
        assert_eq!(req.ttl_s, 30 + 60, "timeout + grace (<1 s) + margin");
        assert_eq!(
            (
                s.lock_requests[1].scope,
                s.lock_requests[1].resource.as_str()
            ),
            (LockScope::Agent, "apt")
        );
    }
    assert_eq!(
        rig.api.reasons(2, CommandState::Deferred),
        ["lock held: reboot is held by agent a-1 for command 1"]
    );
    // Asked again only after LOCK_RETRY, and deferred once.
    rt.step().await;
    assert_eq!(rig.api.0.lock().unwrap().lock_requests.len(), 3);
    std::fs::write(&gate, b"").unwrap();
    until(&mut rt, |rt| rt.running_ids().is_empty()).await;
    assert!(
        rig.api.0.lock().unwrap().locks.is_empty(),
        "released after the command"
    );
    rig.clock.advance(runtime::LOCK_RETRY);
    until(&mut rt, |rt| rt.queue_depth() == 0).await;
    assert_eq!(
        rig.api.states(2),
        [
            CommandState::Received,
            CommandState::Deferred,
            CommandState::Running,
            CommandState::Succeeded
        ]
    );
    assert!(rig.api.0.lock().unwrap().locks.is_empty());
}

#[tokio::test]
async fn locks_are_released_after_failure_and_timeout_too() {
    let rig = Rig::new();
    let mut rt = rig.runtime();
    let mut failing = exec(1, "exit 4");
    failing.locks = vec!["a".into()];
    let mut slow = exec(2, &sleep(30));
    slow.locks = vec!["b".into()];
    slow.timeout_s = Some(1);
    rt.accept(leased(vec![failing, slow]));
    until(&mut rt, |rt| rt.queue_depth() == 0).await;
    let failed = rig.api.last(1);
    assert_eq!(
        (failed.status, failed.exit_code),
        (CommandState::Failed, Some(4))
    );
    let timed_out = rig.api.last(2);
    assert_eq!(timed_out.status, CommandState::TimedOut);
    assert!(timed_out.started_at.is_some() && timed_out.finished_at.is_some());
    assert!(rig.api.0.lock().unwrap().locks.is_empty());
}

#[tokio::test]
async fn a_redelivered_lease_is_acknowledged_again_and_a_finished_id_is_never_rerun() {
    let rig = Rig::new();
    let mut rt = rig.runtime();
    let marks = rig.dir.path().join("runs");
    let c = exec(1, &append("x", &marks));
    rig.dial.set(99.0, 20.0);
    rt.accept(leased(vec![c.clone()]));
    rt.flush().await;
    rt.accept(leased(vec![c.clone()]));
    assert_eq!(rt.queued_ids(), [1], "not queued twice");
    rt.flush().await;
    assert_eq!(
        rig.api.states(1),
        [CommandState::Received, CommandState::Received]
    );
    rig.dial.set(1.0, 1.0);
    rig.clock.advance(Duration::from_secs(60));
    rt.step().await;
    until(&mut rt, |rt| rt.queue_depth() == 0).await;
    rt.accept(leased(vec![c.clone()]));
    until(&mut rt, |rt| rt.queue_depth() == 0).await;
    // And after a restart, too.
    drop(rt);
    let mut rt = rig.runtime();
    rt.accept(leased(vec![c]));
    assert_eq!(rt.queue_depth(), 0);
    assert_eq!(read_lines(&marks), "x\n", "ran once");
}

#[tokio::test]
async fn cancelling_drops_a_queued_command_and_stops_a_running_tree() {
    let rig = Rig::new();
    let mut rt = rig.runtime();
    let mut queued = exec(2, TRUE);
    queued.scheduled_for = Some("2026-03-10T18:00:00Z".parse().unwrap());
    let tree = if cfg!(windows) {
        format!("start /b {} & {}", sleep(30), sleep(31))
    } else {
        "sleep 30 & sleep 31; wait".to_owned()
    };
    rt.accept(leased(vec![exec(1, &tree), queued]));
    rt.step().await;
    assert_eq!(rt.running_ids(), [1]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    rt.accept(PendingCommands {
        commands: Vec::new(),
        cancel: vec![1, 2],
    });
    assert_eq!(rt.queued_ids(), Vec::<i64>::new());
    let started = std::time::Instant::now();
    until(&mut rt, |rt| rt.queue_depth() == 0).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    assert_eq!(
        rig.api.states(2),
        [CommandState::Received, CommandState::Cancelled]
    );
    assert_eq!(
        rig.api.states(1),
        [
            CommandState::Received,
            CommandState::Running,
            CommandState::Cancelled
        ]
    );
}

fn key_pair() -> Ed25519KeyPair {
    let rng = ring::rand::SystemRandom::new();
    let der = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    Ed25519KeyPair::from_pkcs8(der.as_ref()).unwrap()
}

#[tokio::test]
async fn with_a_key_only_commands_signed_for_this_agent_run() {
    let rig = Rig::new();
    let mut rt = rig.runtime();
    let pair = key_pair();
    let key = SigningKey::from_base64(&BASE64.encode(pair.public_key().as_ref())).unwrap();
    rt.set_identity("agent-1", Some(key));
    let marks = rig.dir.path().join("ran");
    let sign = |mut c: Command, agent: &str| {
        c.signature = Some(BASE64.encode(pair.sign(&c.signing_payload(agent)).as_ref()));
        c
    };
    let good = sign(exec(1, &append("1", &marks)), "agent-1");
    let mut tampered = sign(exec(2, TRUE), "agent-1");
    tampered.parameters = json!({ "args": shell_args(&append("2", &marks)) });
    let unsigned = exec(3, &append("3", &marks));
    let elsewhere = sign(exec(4, &append("4", &marks)), "agent-2");
    let mut expired = exec(5, &append("5", &marks));
    expired.expires_at = Some("2026-03-10T11:00:00Z".parse().unwrap());
    let expired = sign(expired, "agent-1");
    rt.accept(leased(vec![good, tampered, unsigned, elsewhere, expired]));
    until(&mut rt, |rt| rt.queue_depth() == 0).await;
    assert_eq!(read_lines(&marks), "1\n");
    for id in [2, 3, 4] {
        assert_eq!(
            rig.api.states(id),
            [CommandState::Received, CommandState::Rejected],
            "{id}"
        );
    }
    assert_eq!(
        rig.api.states(5),
        [CommandState::Received, CommandState::Expired]
    );
}

#[tokio::test]
async fn a_command_that_expires_while_queued_never_runs() {
    let rig = Rig::new();
    let mut rt = rig.runtime();
    let mut c = exec(1, TRUE);
    c.scheduled_for = Some("2026-03-10T13:00:00Z".parse().unwrap());
    c.expires_at = Some("2026-03-10T12:30:00Z".parse().unwrap());
    rt.accept(leased(vec![c]));
    rt.step().await;
    assert_eq!(rt.queued_ids(), [1]);
    assert!(rt.next_wake().unwrap() <= Duration::from_secs(60));
    rig.clock.set("2026-03-10T13:00:00Z".parse().unwrap());
    rt.step().await;
    assert_eq!(rt.queue_depth(), 0);
    assert_eq!(
        rig.api.states(1),
        [CommandState::Received, CommandState::Expired]
    );
}

#[tokio::test]
async fn types_not_allowed_are_rejected_with_the_reason() {
    let mut rig = Rig::new();
    rig.settings.allowed_types = vec!["builtin".into()];
    let mut rt = rig.runtime();
    rt.accept(leased(vec![exec(1, TRUE)]));
    rt.flush().await;
    assert_eq!(
        rig.api.states(1),
        [CommandState::Received, CommandState::Rejected]
    );
    assert!(
        rig.api
            .last(1)
            .reason
            .unwrap()
            .contains("\"exec\" is not allowed")
    );
}

#[cfg(unix)]
#[tokio::test]
async fn a_script_runs_from_a_private_file_with_its_interpreter_env_and_output() {
    let rig = Rig::new();
    let mut rt = rig.runtime();
    let script = Command {
        kind: "script".into(),
        command: "import os, sys\nprint(os.environ['GREETING'], [k for k in sorted(os.environ) if not k.startswith('LC_')])\nprint(oct(os.stat(sys.argv[0]).st_mode & 0o777), oct(os.stat(os.path.dirname(sys.argv[0])).st_mode & 0o777))\nsys.exit(2)\n".into(),
        parameters: json!({"interpreter": "python3", "env": {"GREETING": "hello"}}),
        ..exec(1, "")
    };
    rt.accept(leased(vec![script]));
    until(&mut rt, |rt| rt.queue_depth() == 0).await;
    let u = rig.api.last(1);
    assert_eq!((u.status, u.exit_code), (CommandState::Failed, Some(2)));
    let out = u.stdout.unwrap();
    // Python itself may add LC_CTYPE (PEP 538); nothing of the agent's environment leaks.
    assert!(out.starts_with("hello ['GREETING', 'PATH']\n"), "{out}");
    assert!(out.contains("0o600 0o700"), "{out}");
    let tmp = rig.dir.path().join("commands/tmp");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "the private directory is removed"
    );
}

#[tokio::test]
async fn output_is_capped_to_its_tail_with_the_flag_set() {
    let mut rig = Rig::new();
    rig.settings.output_cap = 1024;
    let mut rt = rig.runtime();
    let script = if cfg!(windows) {
        "(for /L %i in (1,1,2000) do @echo %i) & for /L %i in (1,1,3) do @echo %i>&2"
    } else {
        "seq 1 2000; seq 1 3 >&2"
    };
    rt.accept(leased(vec![exec(1, script)]));
    until(&mut rt, |rt| rt.queue_depth() == 0).await;
    let u = rig.api.last(1);
    assert!(u.stdout_truncated && !u.stderr_truncated);
    let nl = |t: Option<String>| t.unwrap().replace("\r\n", "\n");
    assert!(nl(u.stdout).ends_with("1999\n2000\n"));
    assert_eq!(nl(u.stderr), "1\n2\n3\n");
}

#[tokio::test]
async fn status_updates_are_retried_until_the_server_takes_them_even_across_a_restart() {
    let rig = Rig::new();
    rig.api.0.lock().unwrap().fail_status = 2;
    let mut rt = rig.runtime();
    rt.accept(leased(vec![exec(1, TRUE)]));
    rt.step().await;
    assert!(rig.api.states(1).is_empty());
    assert_eq!(rt.outbox().count(), 2, "received, running");
    drop(rt);
    // The process was running when the agent went away: reported failed after the restart.
    let mut rt = rig.runtime();
    rt.step().await;
    assert!(
        rig.api.states(1).is_empty(),
        "waits SERVER_RETRY after a failure: {:?}",
        rig.api.states(1)
    );
    rig.clock.advance(runtime::SERVER_RETRY);
    rt.step().await;
    rig.clock.advance(runtime::SERVER_RETRY);
    rt.step().await;
    assert_eq!(
        rig.api.states(1),
        [
            CommandState::Received,
            CommandState::Running,
            CommandState::Failed
        ]
    );
    assert_eq!(rt.outbox().count(), 0);
}

/// dpkg's fcntl lock: Unix only (the Windows Installer's mutex: `windows_tests`).
#[cfg(unix)]
#[tokio::test]
async fn a_package_manager_command_waits_while_another_process_holds_the_lock() {
    use std::io::{BufRead, BufReader};
    let mut rig = Rig::new();
    let lock = rig.dir.path().join("lock-frontend");
    std::fs::write(&lock, b"").unwrap();
    rig.settings.package_lock_files =
        vec![std::path::PathBuf::from("/nonexistent/lock"), lock.clone()];
    let mut rt = rig.runtime();
    let mut holder = std::process::Command::new("python3")
        .args(["-c", "import fcntl,sys; f=open(sys.argv[1],'r+'); fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()"])
        .arg(&lock)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(holder.stdout.as_mut().unwrap())
        .read_line(&mut line)
        .unwrap();
    let mut c = exec(1, TRUE);
    c.package_manager = true;
    rt.accept(leased(vec![c, exec(2, TRUE)]));
    until(&mut rt, |rt| {
        rt.queued_ids() == [1] && rt.running_ids().is_empty()
    })
    .await;
    rt.step().await;
    assert_eq!(
        rig.api.states(1),
        [CommandState::Received, CommandState::Deferred]
    );
    assert!(
        rig.api
            .last(1)
            .reason
            .unwrap()
            .contains(&format!("held by pid {}", holder.id()))
    );
    drop(holder.stdin.take());
    holder.wait().unwrap();
    until(&mut rt, |rt| rt.queue_depth() == 0).await;
    assert_eq!(rig.api.last(1).status, CommandState::Succeeded);
}

#[tokio::test]
async fn builtins_are_handed_to_the_agent_and_reported_with_its_result() {
    let rig = Rig::new();
    let mut rt = rig.runtime();
    let builtin = Command {
        kind: "builtin".into(),
        command: "scan_now".into(),
        parameters: json!({}),
        ..exec(1, "")
    };
    rt.accept(leased(vec![builtin]));
    rt.step().await;
    assert_eq!(rt.take_builtin(), Some((1, "scan_now".to_owned())));
    assert_eq!(rt.take_builtin(), None);
    rt.finish_builtin(1, Ok("inventory sent".into())).await;
    let u = rig.api.last(1);
    assert_eq!(
        (u.status, u.stdout.as_deref()),
        (CommandState::Succeeded, Some("inventory sent"))
    );
    assert_eq!(rt.queue_depth(), 0);
}

#[tokio::test]
async fn shutdown_gives_running_commands_the_grace_then_stops_and_reports_them() {
    let mut rig = Rig::new();
    // A Windows process under Wine takes a few hundred milliseconds to start.
    let (quick, limit) = if cfg!(windows) {
        rig.settings.grace = Duration::from_secs(2);
        (TRUE.to_owned(), Duration::from_secs(8))
    } else {
        ("sleep 0.1".to_owned(), Duration::from_secs(3))
    };
    let mut rt = rig.runtime();
    let mut c = exec(1, &sleep(30));
    c.locks = vec!["x".into()];
    rt.accept(leased(vec![c, exec(2, &quick)]));
    rt.step().await;
    let started = std::time::Instant::now();
    rt.shutdown().await;
    assert!(started.elapsed() < limit, "{:?}", started.elapsed());
    assert_eq!(
        rig.api.last(2).status,
        CommandState::Succeeded,
        "finished within the grace"
    );
    let stopped = rig.api.last(1);
    assert_eq!(stopped.status, CommandState::Failed);
    assert!(stopped.reason.unwrap().contains("shutting down"));
    assert!(rig.api.0.lock().unwrap().locks.is_empty(), "locks released");
}

#[test]
fn the_signing_key_is_pinned_once_and_never_replaced_silently() {
    let dir = tempfile::tempdir().unwrap();
    let a = BASE64.encode(key_pair().public_key().as_ref());
    let b = BASE64.encode(key_pair().public_key().as_ref());
    assert_eq!(signing_key(dir.path(), None, None).unwrap(), None);
    let pinned = signing_key(dir.path(), None, Some(&a)).unwrap().unwrap();
    assert_eq!(pinned.to_base64(), a);
    // A re-enrolment offering another key keeps the pinned one.
    assert_eq!(
        signing_key(dir.path(), None, Some(&b))
            .unwrap()
            .unwrap()
            .to_base64(),
        a
    );
    assert_eq!(
        signing_key(dir.path(), None, None)
            .unwrap()
            .unwrap()
            .to_base64(),
        a
    );
    // The configured key wins over both.
    assert_eq!(
        signing_key(dir.path(), Some(&b), Some(&a))
            .unwrap()
            .unwrap()
            .to_base64(),
        b
    );
}

/// The `/proc` walk that stops a crashed agent's commands at the next start: Unix only. On
/// Windows the kill-on-close job stops them when the agent dies (`tests::windows`).
#[cfg(unix)]
#[tokio::test]
async fn after_a_crash_the_next_start_reports_the_running_command_failed_and_stops_its_tree() {
    let rig = Rig::new();
    let mut rt = rig.runtime();
    let pids = rig.dir.path().join("pids");
    let mut c = exec(
        1,
        &format!(
            "echo $$ >> {p}; setsid sleep 60 & echo $! >> {p}; sleep 61",
            p = pids.display()
        ),
    );
    c.locks = vec!["x".into()];
    rt.accept(leased(vec![c]));
    rt.step().await;
    let recorded = |n: usize| {
        std::fs::read_to_string(&pids)
            .map(|t| {
                t.lines()
                    .filter_map(|l| l.trim().parse::<i32>().ok())
                    .collect::<Vec<_>>()
            })
            .ok()
            .filter(|p| p.len() == n)
    };
    until(&mut rt, |_| recorded(2).is_some()).await;
    // The agent dies without stopping anything (kill -9): the runtime is just dropped.
    let _ = tokio::time::timeout(Duration::from_millis(100), rt.wait()).await;
    rt.step().await;
    std::mem::forget(rt);
    let pids = recorded(2).unwrap();
    assert!(
        pids.iter()
            .all(|p| super::proctree::start_time(*p).is_some()),
        "running before the restart"
    );
    let mut rt = rig.runtime();
    rt.step().await;
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while pids.iter().any(|p| {
        super::proctree::start_time(*p).is_some_and(|_| {
            std::fs::read_to_string(format!("/proc/{p}/stat")).is_ok_and(|t| !t.contains(") Z"))
        })
    }) {
        assert!(
            std::time::Instant::now() < deadline,
            "the crashed command's tree is still running"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let end = rig.api.last(1);
    assert_eq!(end.status, CommandState::Failed);
    assert!(end.reason.unwrap().contains("agent stopped"));
    assert!(
        rig.api.0.lock().unwrap().locks.is_empty(),
        "its lock released"
    );
}

#[tokio::test]
async fn a_conflict_on_one_lock_releases_the_locks_already_taken() {
    let rig = Rig::new();
    rig.api
        .0
        .lock()
        .unwrap()
        .locks
        .insert("Tenant:reboot".into(), ("held".into(), 99));
    let mut rt = rig.runtime();
    let mut c = exec(1, TRUE);
    c.locks = vec!["apt".into(), "tenant:reboot".into()];
    rt.accept(leased(vec![c]));
    rt.step().await;
    let s = rig.api.0.lock().unwrap();
    assert_eq!(s.lock_requests.len(), 2, "apt taken, then reboot refused");
    assert_eq!(s.locks.len(), 1, "apt released again: {:?}", s.locks);
    assert!(s.locks.contains_key("Tenant:reboot"));
    drop(s);
    assert_eq!(rt.queued_ids(), [1]);
    assert_eq!(
        rig.api.reasons(1, CommandState::Deferred),
        ["lock held: reboot is held by agent a-1 for command 99"]
    );
}

#[cfg(windows)]
mod windows;
