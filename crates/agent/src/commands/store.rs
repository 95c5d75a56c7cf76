//! The queue's persistent state: accepted commands, the running ones, the ids of recent
//! finished ones (replays are refused), status updates not yet acknowledged by the server, and
//! locks still to release. One JSON file, `commands/queue.json` in the state directory,
//! replaced whole and fsynced ([`crate::atomic::write`]) after every change: commands are few,
//! and a restart must lose nothing accepted.

use std::collections::VecDeque;
use std::io;
use std::path::{Path, PathBuf};

use jiff::Timestamp;
use muster_proto::api::{Command, CommandStatusUpdate};
use serde::{Deserialize, Serialize};

const FILE: &str = "queue.json";

/// Finished command ids remembered to refuse replays.
pub const MAX_FINISHED: usize = 4096;

/// Status updates kept for the server at most; past it the oldest go (and are logged).
pub const MAX_OUTBOX: usize = 10_000;

/// Why a command waits, as reported once in a `deferred` status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Wait {
    Window,
    Load,
    PackageManager,
    Lock,
}

/// A command accepted and not finished.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub command: Command,
    /// Arrival order, the queue's last tie-break.
    pub seq: u64,
    pub received_at: Timestamp,
    /// The wait last reported as `deferred`, so each is reported once.
    #[serde(default)]
    pub reported: Option<Wait>,
    /// Set once it runs.
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    /// Ids of the server locks it holds.
    #[serde(default)]
    pub lock_ids: Vec<String>,
    /// Its main process (and process group) and that process's start time, while it runs:
    /// after a crash of the agent, the next start stops what is left of the tree.
    #[serde(default)]
    pub pid: Option<(i32, u64)>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct State {
    pub next_seq: u64,
    /// Waiting to run, in no particular order (see [`State::order`]).
    pub queued: Vec<Entry>,
    pub running: Vec<Entry>,
    pub finished: VecDeque<i64>,
    pub outbox: VecDeque<CommandStatusUpdate>,
    /// Locks whose release the server has not confirmed yet.
    pub stale_locks: Vec<String>,
}

impl State {
    /// Sorts the queue: due time (no `scheduled_for` is due at once), then priority, then
    /// arrival.
    pub fn order(&mut self) {
        self.queued.sort_by(|a, b| {
            let due = |e: &Entry| e.command.scheduled_for.unwrap_or(Timestamp::MIN);
            due(a)
                .cmp(&due(b))
                .then(a.command.priority.cmp(&b.command.priority))
                .then(a.seq.cmp(&b.seq))
        });
    }

    pub fn knows(&self, id: i64) -> bool {
        self.queued
            .iter()
            .chain(&self.running)
            .any(|e| e.command.id == id)
    }

    pub fn finished(&mut self, id: i64) {
        self.finished.push_back(id);
        while self.finished.len() > MAX_FINISHED {
            self.finished.pop_front();
        }
    }

    /// Queues a status update; returns how many old ones were dropped for room.
    pub fn report(&mut self, update: CommandStatusUpdate) -> usize {
        self.outbox.push_back(update);
        let mut dropped = 0;
        while self.outbox.len() > MAX_OUTBOX {
            self.outbox.pop_front();
            dropped += 1;
        }
        dropped
    }
}

/// The state and where it lives.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    pub state: State,
}

impl Store {
    /// Loads `dir/queue.json` (creating `dir`); a missing file is an empty queue, a corrupt
    /// one is an error naming it (the agent must not drop accepted commands silently).
    pub fn open(dir: &Path) -> io::Result<Store> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(FILE);
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "{}: {e} (move it away to start with an empty queue)",
                        path.display()
                    ),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(e),
        };
        Ok(Store { path, state })
    }

    pub fn save(&self) -> io::Result<()> {
        let json = serde_json::to_vec(&self.state).expect("the queue always serializes");
        crate::atomic::write(&self.path, &json, Some(0o600))
    }
}
