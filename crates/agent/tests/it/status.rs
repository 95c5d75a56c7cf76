//! `muster-agent status`: the real binary against a state directory and a pidfile held (or
//! not) by real processes.
#![cfg(unix)] // flock(1), Unix sockets and pidfile locks exist on Unix only

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use jiff::{SignedDuration, Timestamp};
use muster_agent::daemon::PidFile;
use muster_agent::status::{self, Outcome, Status};

use crate::daemon::FlockHolder;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Setup {
        Setup {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn state_dir(&self) -> &Path {
        self.dir.path()
    }

    fn pid_file(&self) -> PathBuf {
        self.dir.path().join("agent.pid")
    }

    /// `muster-agent status --state-dir DIR [extra]`, pidfile from the environment.
    fn status(&self, extra: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_muster-agent"))
            .arg("status")
            .arg("--state-dir")
            .arg(self.state_dir())
            .args(extra)
            .env("MUSTER_AGENT_PID_FILE", self.pid_file())
            .env_remove("MUSTER_AGENT_STATE_DIR")
            .output()
            .unwrap()
    }

    fn json(&self) -> (Option<i32>, serde_json::Value) {
        let out = self.status(&["--json"]);
        let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!("{e}: {}", String::from_utf8_lossy(&out.stdout));
        });
        (out.status.code(), json)
    }
}

fn text(out: &Output) -> String {
    String::from_utf8(out.stdout.clone()).unwrap()
}

/// A status an agent started 90 minutes ago would have written.
fn figures(pid: u32) -> Status {
    let now = Timestamp::now();
    let ago = |secs: i64| now - SignedDuration::from_secs(secs);
    let mut status = Status::starting(Some("agent-7".into()));
    status.pid = pid;
    status.started_at = ago(90 * 60);
    status.last_heartbeat = Some(Outcome::success(ago(30)));
    status.last_inventory = Some(Outcome::failure(ago(3600), "connection refused"));
    status.scans_completed = 3;
    status.errors = 1;
    status.spool_items = 2;
    status.spool_bytes = 1536;
    status.dropped_reports = 5;
    status.queue_depth = 4;
    status
}

#[test]
fn nothing_there_is_not_running_exit_3() {
    let setup = Setup::new();
    let out = setup.status(&[]);
    assert_eq!(out.status.code(), Some(3));
    assert_eq!(
        text(&out),
        "muster-agent is not running\nno status file yet\n"
    );
    let (code, json) = setup.json();
    assert_eq!(code, Some(3));
    assert_eq!(json["running"], false);
    assert_eq!(json["pid"], serde_json::Value::Null);
}

#[test]
fn a_locked_pidfile_and_its_status_file_read_as_running() {
    let setup = Setup::new();
    let me = std::process::id();
    status::write(setup.state_dir(), &figures(me)).unwrap();
    let pidfile = PidFile::acquire(&setup.pid_file()).unwrap();

    let out = setup.status(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let text = text(&out);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], format!("muster-agent is running (pid {me})"));
    for expected in [
        "agent id         agent-7",
        "uptime           1h 30m (since ",
        "last heartbeat   ",
        "last telemetry   never",
        "scans completed  3",
        "errors           1",
        "spool            2 items, 1.5 KiB",
        "dropped reports  5",
        "queue depth      4",
    ] {
        assert!(
            lines.iter().any(|l| l.starts_with(expected)),
            "`{expected}` in:\n{text}"
        );
    }
    let inventory = lines
        .iter()
        .find(|l| l.starts_with("last inventory"))
        .unwrap();
    assert!(
        inventory.ends_with("(1h 0m ago), failed: connection refused"),
        "{inventory}"
    );
    let heartbeat = lines
        .iter()
        .find(|l| l.starts_with("last heartbeat"))
        .unwrap();
    assert!(heartbeat.ends_with("s ago), ok"), "{heartbeat}");

    let (code, json) = setup.json();
    assert_eq!(code, Some(0));
    assert_eq!(json["running"], true);
    assert_eq!(json["pid"], me);
    assert_eq!(json["stale_status"], false);
    let uptime = json["uptime_secs"].as_i64().unwrap();
    assert!((5400..5460).contains(&uptime), "{uptime}");
    assert_eq!(json["scans_completed"], 3);
    assert_eq!(json["spool_bytes"], 1536);
    assert_eq!(json["dropped_reports"], 5);
    assert_eq!(json["last_inventory"]["ok"], false);
    assert_eq!(json["last_inventory"]["error"], "connection refused");
    assert_eq!(json["agent_id"], "agent-7");

    // The agent stops: the same status file now describes the last known state.
    drop(pidfile);
    let out = setup.status(&[]);
    assert_eq!(out.status.code(), Some(3));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with(&format!(
        "muster-agent is not running\nlast known state (pid {me}):\n"
    )));
    assert!(text.contains("\nstarted          "), "{text}");
    assert!(!text.contains("uptime"), "{text}");
    let (_, json) = setup.json();
    assert_eq!(json["running"], false);
    assert_eq!(json["pid"], me, "the last known pid");
    assert_eq!(json["uptime_secs"], serde_json::Value::Null);
}

#[test]
fn another_process_holding_the_lock_runs_even_with_an_old_status_file() {
    let setup = Setup::new();
    status::write(setup.state_dir(), &figures(4_000_000)).unwrap();
    let holder = FlockHolder::hold(&setup.pid_file());

    let out = setup.status(&[]);
    assert_eq!(out.status.code(), Some(0));
    let text = text(&out);
    assert!(
        text.starts_with(&format!(
            "muster-agent is running (pid {})\nthe status file is from an earlier run (pid 4000000):\n",
            holder.pid
        )),
        "{text}"
    );
    assert!(
        !text.contains("uptime"),
        "no uptime from another run's file: {text}"
    );
    let (_, json) = setup.json();
    assert_eq!(json["pid"], holder.pid);
    assert_eq!(json["stale_status"], true);

    holder.release();
    assert_eq!(setup.status(&[]).status.code(), Some(3));
}

#[test]
fn a_stale_pidfile_is_named_but_does_not_count() {
    let setup = Setup::new();
    std::fs::write(setup.pid_file(), "4000001\n").unwrap();
    status::write(setup.state_dir(), &figures(4_000_001)).unwrap();
    let out = setup.status(&[]);
    assert_eq!(out.status.code(), Some(3));
    let text = text(&out);
    assert!(
        text.contains(&format!(
            "stale pid file {} names pid 4000001, which holds no lock",
            setup.pid_file().display()
        )),
        "{text}"
    );
}

#[test]
fn a_corrupt_status_file_is_an_error_naming_it() {
    let setup = Setup::new();
    std::fs::write(setup.state_dir().join("status.json"), "{\"pid\": ").unwrap();
    let out = setup.status(&[]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    let path = setup.state_dir().join("status.json");
    assert!(
        stderr.contains(&format!("reading {}", path.display())),
        "{stderr}"
    );
}

#[test]
fn the_config_file_locates_the_state_and_the_pidfile_and_flags_win() {
    let setup = Setup::new();
    let state = setup.state_dir().join("state");
    std::fs::create_dir(&state).unwrap();
    let pid_file = setup.state_dir().join("from-config.pid");
    let config = setup.state_dir().join("agent.toml");
    std::fs::write(
        &config,
        format!(
            "[agent]\nstate_dir = {:?}\npid_file = {:?}\n",
            state.display().to_string(),
            pid_file.display().to_string()
        ),
    )
    .unwrap();
    status::write(&state, &figures(std::process::id())).unwrap();
    let pidfile = PidFile::acquire(&pid_file).unwrap();
    let run = |args: &[&str]| {
        Command::new(env!("CARGO_BIN_EXE_muster-agent"))
            .arg("status")
            .args(args)
            .env_remove("MUSTER_AGENT_STATE_DIR")
            .env_remove("MUSTER_AGENT_PID_FILE")
            .output()
            .unwrap()
    };
    let out = run(&["--config", config.to_str().unwrap(), "--json"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        json["agent_id"], "agent-7",
        "state from the config's state_dir"
    );
    assert_eq!(json["pid_file"], pid_file.display().to_string());

    // --state-dir beats the file: an empty directory has no status.
    let empty = setup.state_dir().join("empty");
    std::fs::create_dir(&empty).unwrap();
    let out = run(&[
        "--config",
        config.to_str().unwrap(),
        "--state-dir",
        empty.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out).contains("no status file yet"), "{}", text(&out));

    // A config file asked for by name must exist: a configuration error, exit 78.
    let out = run(&["--config", "/nonexistent/agent.toml"]);
    assert_eq!(out.status.code(), Some(78));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/agent.toml"));
    drop(pidfile);
}

/// An agent that holds no pidfile lock (in the foreground when it could not take one) still
/// counts as running while the process its status file names is a muster-agent.
#[cfg(target_os = "linux")]
#[test]
fn without_a_lock_a_live_agent_process_named_in_the_status_counts() {
    let setup = Setup::new();
    // A process whose name is muster-agent: a copy of sleep(1) under that name.
    let fake = setup.state_dir().join("muster-agent");
    std::fs::copy("/bin/sleep", &fake).unwrap();
    let mut agent = Command::new(&fake).arg("30").spawn().unwrap();
    status::write(setup.state_dir(), &figures(agent.id())).unwrap();
    let out = setup.status(&[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).starts_with(&format!("muster-agent is running (pid {})", agent.id())));

    agent.kill().unwrap();
    agent.wait().unwrap();
    assert_eq!(setup.status(&[]).status.code(), Some(3));

    // The same pid under another name (here: this test process) is not the agent.
    status::write(setup.state_dir(), &figures(std::process::id())).unwrap();
    assert_eq!(setup.status(&[]).status.code(), Some(3));
}
