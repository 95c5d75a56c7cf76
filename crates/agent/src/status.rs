//! The state file the running agent keeps current (`<state_dir>/status.json`) and
//! `muster-agent status`, which reads it: the seed's health figures (running, pid, uptime,
//! last scans and their outcomes, scans completed, errors, spool and queue depth).
//!
//! Whether the agent runs is decided by the pidfile's lock (see [`crate::daemon::lock_holder`]),
//! never by the status file alone: a crashed agent leaves a status file that still looks
//! healthy.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use jiff::Timestamp;
use serde::{Deserialize, Serialize};

use crate::cli::StatusArgs;
use crate::daemon;

/// The state file's name in the state directory.
pub const STATUS_FILE: &str = "status.json";

/// The exit code of `status` when the agent does not run (LSB init-script convention: 0
/// running, 3 not running).
pub const EXIT_NOT_RUNNING: u8 = 3;

/// A longer status file is not ours.
const MAX_STATUS_BYTES: u64 = 1 << 20;

/// An error message kept in the status file is cut to this many characters.
const MAX_ERROR_CHARS: usize = 500;

/// What the running agent reports about itself. Written whole after every change
/// ([`write`]); fields added later read as their default from an older file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    /// The agent process writing this file.
    pub pid: u32,
    /// The agent's version (`CARGO_PKG_VERSION`).
    pub version: String,
    pub started_at: Timestamp,
    pub last_heartbeat: Option<Outcome>,
    pub last_inventory: Option<Outcome>,
    pub last_telemetry: Option<Outcome>,
    /// Inventory and telemetry scans finished since start.
    #[serde(default)]
    pub scans_completed: u64,
    /// Failed scans and deliveries since start.
    #[serde(default)]
    pub errors: u64,
    /// Reports waiting in the spool, and their size on disk.
    #[serde(default)]
    pub spool_items: u64,
    #[serde(default)]
    pub spool_bytes: u64,
    /// Reports the spool dropped to stay within its bounds, since start.
    #[serde(default)]
    pub dropped_reports: u64,
    /// Commands accepted and not finished.
    #[serde(default)]
    pub queue_depth: u64,
    /// The id the server gave at enrolment, once enrolled.
    pub agent_id: Option<String>,
}

impl Status {
    /// The status of this process, starting now, with every figure at zero.
    pub fn starting(agent_id: Option<String>) -> Status {
        Status {
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION").to_owned(),
            started_at: Timestamp::now(),
            last_heartbeat: None,
            last_inventory: None,
            last_telemetry: None,
            scans_completed: 0,
            errors: 0,
            spool_items: 0,
            spool_bytes: 0,
            dropped_reports: 0,
            queue_depth: 0,
            agent_id,
        }
    }
}

/// How the last run of a task ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub at: Timestamp,
    pub ok: bool,
    /// Why it failed (no secrets: this file is world-readable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Outcome {
    /// It worked, at `at`.
    pub fn success(at: Timestamp) -> Outcome {
        Outcome {
            at,
            ok: true,
            error: None,
        }
    }

    /// It failed at `at`; the message is cut to a bounded length.
    pub fn failure(at: Timestamp, error: impl std::fmt::Display) -> Outcome {
        let mut error = error.to_string();
        if let Some((cut, _)) = error.char_indices().nth(MAX_ERROR_CHARS) {
            error.truncate(cut);
            error.push('…');
        }
        Outcome {
            at,
            ok: false,
            error: Some(error),
        }
    }
}

/// Replaces `<state_dir>/status.json` atomically (temp file, rename; not fsynced), mode 0644 so
/// any user can run `status`; a reader sees the old or the new file, never half of one.
pub fn write(state_dir: &Path, status: &Status) -> io::Result<()> {
    let mut json = serde_json::to_vec_pretty(status).map_err(io::Error::other)?;
    json.push(b'\n');
    // Every user may read it: the daemon's umask (027) would hide it from `status`. Not
    // synced: it is rewritten after every job, and a stale one after a crash is harmless.
    crate::atomic::write_unsynced(&state_dir.join(STATUS_FILE), &json, Some(0o644))
}

/// Reads `<state_dir>/status.json`; `None` when there is none (the agent never ran here).
pub fn read(state_dir: &Path) -> io::Result<Option<Status>> {
    let path = state_dir.join(STATUS_FILE);
    let file = match File::open(&path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut text = Vec::new();
    file.take(MAX_STATUS_BYTES + 1).read_to_end(&mut text)?;
    if text.len() as u64 > MAX_STATUS_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than {MAX_STATUS_BYTES} bytes"),
        ));
    }
    serde_json::from_slice(&text)
        .map(Some)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// `muster-agent status [--json]`: exit 0 when the agent runs, 3 when it does not, 1 when
/// the state cannot be read.
pub fn main(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let loaded = match crate::config::load_or_exit(&args.config) {
        Ok(loaded) => loaded,
        Err(code) => return Ok(code),
    };
    let (state_dir, pid_file) = (loaded.config.agent.state_dir, loaded.config.agent.pid_file);
    let holder = daemon::lock_holder(&pid_file)
        .with_context(|| format!("reading pid file {}", pid_file.display()))?;
    let status = read(&state_dir)
        .with_context(|| format!("reading {}", state_dir.join(STATUS_FILE).display()))?;
    let health = Health::assess(holder, status, &pid_file, agent_process_alive);
    let now = Timestamp::now();
    if args.json {
        let json = serde_json::to_string_pretty(&health.to_json(now))?;
        println!("{json}");
    } else {
        print!("{}", health.to_text(now));
    }
    Ok(if health.running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_RUNNING)
    })
}

/// Whether `pid` is a live muster-agent. Only for an agent that holds no pidfile lock (the
/// foreground agent when the pidfile could not be taken): the process name guards against a
/// pid the kernel has since given to another program.
/// A zombie (an exited daemon whose parent, init in a container, has not reaped it yet) is
/// not running.
fn agent_process_alive(pid: u32) -> bool {
    let named = std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .is_ok_and(|comm| comm.trim_end() == "muster-agent");
    // `pid (comm) S ...`: the state follows the last parenthesis.
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| rest.starts_with('Z') || rest.starts_with('X'))
    });
    named && !zombie
}

/// `status --json`: the verdict first, then the status file's fields. `pid` is the running
/// agent's, else the last one known.
#[derive(Debug, Serialize)]
struct StatusJson<'a> {
    running: bool,
    pid: Option<u32>,
    uptime_secs: Option<i64>,
    /// The status file was written by another process than the one running.
    stale_status: bool,
    pid_file: &'a Path,
    #[serde(flatten)]
    status: serde_json::Map<String, serde_json::Value>,
}

/// What `status` concludes.
#[derive(Debug)]
struct Health {
    running: bool,
    /// The live agent's pid; else the last one known.
    pid: Option<u32>,
    /// The status file was written by another process than the one running now.
    stale: bool,
    status: Option<Status>,
    pid_file: PathBuf,
    /// A pid in a pidfile nobody holds.
    stale_pid: Option<u32>,
}

impl Health {
    fn assess(
        holder: Option<u32>,
        status: Option<Status>,
        pid_file: &Path,
        alive: impl Fn(u32) -> bool,
    ) -> Health {
        let status_pid = status.as_ref().map(|s| s.pid);
        let (running, pid) = match (holder, status_pid) {
            // The holder has not written its pid yet: it is the agent the status file names
            // if anything.
            (Some(0), _) => (true, status_pid),
            (Some(pid), _) => (true, Some(pid)),
            (None, Some(pid)) if alive(pid) => (true, Some(pid)),
            (None, pid) => (false, pid),
        };
        let stale = running && status_pid.is_some() && pid != status_pid;
        let stale_pid = if holder.is_none() {
            daemon::read_pid(pid_file)
        } else {
            None
        };
        Health {
            running,
            pid,
            stale,
            status,
            pid_file: pid_file.to_owned(),
            stale_pid,
        }
    }

    /// The uptime, when the status file belongs to the running agent.
    fn uptime_secs(&self, now: Timestamp) -> Option<i64> {
        let status = self
            .status
            .as_ref()
            .filter(|_| self.running && !self.stale)?;
        Some(now.duration_since(status.started_at).as_secs().max(0))
    }

    fn to_json(&self, now: Timestamp) -> StatusJson<'_> {
        let mut status = match self.status.as_ref().map(serde_json::to_value) {
            Some(Ok(serde_json::Value::Object(map))) => map,
            _ => serde_json::Map::new(),
        };
        // Named once, at the top.
        status.remove("pid");
        StatusJson {
            running: self.running,
            pid: self.pid,
            uptime_secs: self.uptime_secs(now),
            stale_status: self.stale,
            pid_file: &self.pid_file,
            status,
        }
    }

    fn to_text(&self, now: Timestamp) -> String {
        let mut out = String::new();
        let mut line = |label: &str, value: String| {
            out.push_str(&format!("{label:<16} {value}\n"));
        };
        let headline = match (self.running, self.pid) {
            (true, Some(pid)) => format!("muster-agent is running (pid {pid})"),
            (true, None) => "muster-agent is running".to_owned(),
            (false, _) => "muster-agent is not running".to_owned(),
        };
        let mut text = format!("{headline}\n");
        if let Some(pid) = self.stale_pid {
            text.push_str(&format!(
                "stale pid file {} names pid {pid}, which holds no lock\n",
                self.pid_file.display()
            ));
        }
        let Some(status) = &self.status else {
            text.push_str("no status file yet\n");
            return text;
        };
        if self.stale {
            text.push_str(&format!(
                "the status file is from an earlier run (pid {}):\n",
                status.pid
            ));
        } else if !self.running {
            text.push_str(&format!("last known state (pid {}):\n", status.pid));
        }
        line("version", status.version.clone());
        line(
            "agent id",
            status
                .agent_id
                .clone()
                .unwrap_or_else(|| "not enrolled".into()),
        );
        let started = format!("{:.0}", status.started_at);
        match self.uptime_secs(now) {
            Some(secs) => line("uptime", format!("{} (since {started})", human_secs(secs))),
            None => line("started", started),
        }
        for (label, outcome) in [
            ("last heartbeat", &status.last_heartbeat),
            ("last inventory", &status.last_inventory),
            ("last telemetry", &status.last_telemetry),
        ] {
            line(label, describe(outcome.as_ref(), now));
        }
        line("scans completed", status.scans_completed.to_string());
        line("errors", status.errors.to_string());
        line(
            "spool",
            format!(
                "{} items, {}",
                status.spool_items,
                human_bytes(status.spool_bytes)
            ),
        );
        line("dropped reports", status.dropped_reports.to_string());
        line("queue depth", status.queue_depth.to_string());
        text + &out
    }
}

/// `2026-05-01T10:00:00Z (42s ago), ok` or `..., failed: connection refused`.
fn describe(outcome: Option<&Outcome>, now: Timestamp) -> String {
    let Some(outcome) = outcome else {
        return "never".into();
    };
    let ago = now.duration_since(outcome.at).as_secs();
    let when = if ago >= 0 {
        format!("{} ago", human_secs(ago))
    } else {
        "in the future: clocks differ".into()
    };
    let result = match (&outcome.error, outcome.ok) {
        (_, true) => "ok".to_owned(),
        (Some(error), false) => format!("failed: {error}"),
        (None, false) => "failed".to_owned(),
    };
    format!("{:.0} ({when}), {result}", outcome.at)
}

/// The two largest units: `42s`, `3m 4s`, `5h 2m`, `2d 3h`.
fn human_secs(secs: i64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3_600,
        secs % 3_600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m {s}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> Timestamp {
        text.parse().unwrap()
    }

    fn sample() -> Status {
        Status {
            pid: 4242,
            version: "0.1.0".into(),
            started_at: at("2026-05-01T08:00:00.5Z"),
            last_heartbeat: Some(Outcome::success(at("2026-05-01T10:04:30Z"))),
            last_inventory: Some(Outcome::failure(
                at("2026-05-01T09:00:00Z"),
                "connection refused",
            )),
            last_telemetry: None,
            scans_completed: 3,
            errors: 1,
            spool_items: 2,
            spool_bytes: 1536,
            dropped_reports: 0,
            queue_depth: 4,
            agent_id: Some("0196a1b2-0000-7000-8000-000000000001".into()),
        }
    }

    const NOW: &str = "2026-05-01T10:05:00Z";

    #[test]
    fn status_file_round_trips_atomically_and_world_readable() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read(dir.path()).unwrap(), None);
        write(dir.path(), &sample()).unwrap();
        let mut second = sample();
        second.scans_completed = 4;
        write(dir.path(), &second).unwrap();
        assert_eq!(read(dir.path()).unwrap(), Some(second));
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, [STATUS_FILE], "no temporary file left");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(dir.path().join(STATUS_FILE)).unwrap();
            assert_eq!(meta.permissions().mode() & 0o777, 0o644);
        }
    }

    #[test]
    fn writing_into_a_missing_directory_fails_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent");
        assert!(write(&missing, &sample()).is_err());
        assert!(!missing.exists());
    }

    #[test]
    fn a_file_from_an_older_agent_reads_with_defaults() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(STATUS_FILE),
            r#"{"pid": 7, "version": "0.0.9", "started_at": "2026-01-01T00:00:00Z",
                "future_field": true}"#,
        )
        .unwrap();
        let status = read(dir.path()).unwrap().unwrap();
        assert_eq!(status.pid, 7);
        assert_eq!(status.scans_completed, 0);
        assert_eq!(status.last_heartbeat, None);
    }

    #[test]
    fn garbage_and_huge_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATUS_FILE), "{not json").unwrap();
        assert_eq!(
            read(dir.path()).unwrap_err().kind(),
            io::ErrorKind::InvalidData
        );
        std::fs::write(
            dir.path().join(STATUS_FILE),
            vec![b' '; MAX_STATUS_BYTES as usize + 1],
        )
        .unwrap();
        assert!(read(dir.path()).unwrap_err().to_string().contains("larger"));
    }

    #[test]
    fn failure_messages_are_bounded() {
        let outcome = Outcome::failure(at(NOW), "é".repeat(2000));
        let error = outcome.error.unwrap();
        assert_eq!(error.chars().count(), MAX_ERROR_CHARS + 1);
        assert!(error.ends_with('…'));
    }

    #[test]
    fn running_is_the_lock_holder_not_the_status_file() {
        let path = Path::new("/nonexistent/agent.pid");
        let never = |_| false;
        let health = Health::assess(Some(4242), Some(sample()), path, never);
        assert!(health.running && !health.stale);
        assert_eq!(health.pid, Some(4242));

        let health = Health::assess(None, Some(sample()), path, never);
        assert!(!health.running);
        assert_eq!(health.pid, Some(4242), "the last known pid");

        let health = Health::assess(Some(99), Some(sample()), path, never);
        assert!(health.running && health.stale);
        assert_eq!(health.pid, Some(99));

        let health = Health::assess(Some(0), Some(sample()), path, never);
        assert!(health.running && !health.stale);
        assert_eq!(health.pid, Some(4242));

        // No lock, but the status file's pid is a live agent (a foreground agent without
        // a pidfile).
        let health = Health::assess(None, Some(sample()), path, |pid| pid == 4242);
        assert!(health.running);
        assert_eq!(health.uptime_secs(at(NOW)), Some(2 * 3600 + 4 * 60 + 59));

        let health = Health::assess(None, None, path, never);
        assert!(!health.running);
        assert_eq!(health.pid, None);
    }

    #[test]
    fn text_of_a_running_agent() {
        let health = Health::assess(Some(4242), Some(sample()), Path::new("/x.pid"), |_| false);
        insta::assert_snapshot!(health.to_text(at(NOW)));
    }

    #[test]
    fn text_of_a_stopped_agent() {
        let health = Health::assess(None, Some(sample()), Path::new("/x.pid"), |_| false);
        insta::assert_snapshot!(health.to_text(at(NOW)));
    }

    #[test]
    fn json_leads_with_the_verdict_then_the_status_fields() {
        let health = Health::assess(Some(4242), Some(sample()), Path::new("/x.pid"), |_| false);
        insta::assert_json_snapshot!(health.to_json(at(NOW)));
    }

    #[test]
    fn durations_and_sizes_read_naturally() {
        assert_eq!(human_secs(0), "0s");
        assert_eq!(human_secs(59), "59s");
        assert_eq!(human_secs(61), "1m 1s");
        assert_eq!(human_secs(3 * 3600 + 125), "3h 2m");
        assert_eq!(human_secs(2 * 86_400 + 3 * 3600 + 5), "2d 3h");
        assert_eq!(human_bytes(0), "0 B");
        assert_eq!(human_bytes(1023), "1023 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(64 << 20), "64.0 MiB");
        assert_eq!(
            describe(Some(&Outcome::success(at("2026-05-01T10:06:00Z"))), at(NOW)),
            "2026-05-01T10:06:00Z (in the future: clocks differ), ok"
        );
    }
}
