//! Heartbeats, the most frequent request (every agent's every minute; a fleet sends thousands
//! a second), written in groups by one writer task. Two modes (`[limits] heartbeat_flush_ms`):
//!
//! - **Write-behind** (the default, every second): a heartbeat is answered at once; the writer
//!   keeps the latest heartbeat of each agent in memory and writes them all once per flush
//!   interval, a transaction per [`MAX_GROUP`] agents, the way Fleet batches `last_seen`. A
//!   heartbeat then never waits for the database, whose writer it shares with reports and
//!   checkpoints. What it costs: a heartbeat is stored up to one interval late (online status
//!   and last seen lag by that much), at most one interval of heartbeats is lost if the
//!   server dies without a graceful stop (the agents send the next ones anyway), and an
//!   agent whose row was deleted hears it from its next report, not from the heartbeat.
//! - **Synchronous** (`0`): each request hands its update to the writer and waits for it. The
//!   writer asks the store for a connection and gathers the group once it has one (group
//!   commit): every update that queued while it waited goes in. A heartbeat answered 200 is
//!   stored, and one of a deleted agent is answered 404.
//!
//! Memory is bounded either way: the pending map holds one row per agent that heartbeated in
//! the interval (its size is the fleet's), the queue [`QUEUE`] updates.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::store::{HeartbeatRow, Store, StoreError};

/// Updates written by one transaction at most: one statement's worth, so that a group holds
/// SQLite's one writer for a few milliseconds and the reports queued behind it go between
/// two groups.
const MAX_GROUP: usize = crate::store::HEARTBEATS_PER_STATEMENT;
/// Heartbeats waiting for the writer at most; beyond it requests wait to hand theirs over.
const QUEUE: usize = 16_384;

type Done = oneshot::Sender<Result<(), ApiError>>;

enum Message {
    /// A heartbeat; the sender waits for its write when there is one (synchronous mode).
    Record(HeartbeatRow, Option<Done>),
    /// Write everything pending now, then answer.
    Flush(oneshot::Sender<()>),
}

/// The handle requests write heartbeats through. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HeartbeatWriter {
    queue: mpsc::Sender<Message>,
    behind: bool,
}

impl std::fmt::Debug for Message {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("heartbeat message")
    }
}

impl HeartbeatWriter {
    /// Starts the writer task on the current runtime; it ends (after a last flush) when the
    /// last handle is dropped. `flush_every` zero writes each heartbeat before it is answered;
    /// otherwise heartbeats are written behind, once per `flush_every`.
    pub fn start(store: Store, flush_every: Duration) -> HeartbeatWriter {
        let (queue, messages) = mpsc::channel(QUEUE);
        let behind = !flush_every.is_zero();
        if behind {
            tokio::spawn(write_behind(store, messages, flush_every));
        } else {
            tokio::spawn(write_groups(store, messages));
        }
        HeartbeatWriter { queue, behind }
    }

    /// Records `row`. Synchronous mode: waits until it is written (`NotFound` when the agent
    /// is gone). Write-behind: returns once the writer has it.
    pub async fn record(&self, row: HeartbeatRow) -> Result<(), ApiError> {
        let stopped = || ApiError::Unavailable("the server is stopping".into());
        if self.behind {
            return self
                .queue
                .send(Message::Record(row, None))
                .await
                .map_err(|_| stopped());
        }
        let (done, written) = oneshot::channel();
        self.queue
            .send(Message::Record(row, Some(done)))
            .await
            .map_err(|_| stopped())?;
        written.await.map_err(|_| stopped())?
    }

    /// Writes every heartbeat recorded so far and waits until they are stored (a graceful
    /// stop calls it after the last request).
    pub async fn flush(&self) {
        let (done, flushed) = oneshot::channel();
        if self.queue.send(Message::Flush(done)).await.is_ok() {
            let _ = flushed.await;
        }
    }
}

/// Write-behind: the latest heartbeat per agent, written once per `every`.
async fn write_behind(store: Store, mut messages: mpsc::Receiver<Message>, every: Duration) {
    let mut pending: HashMap<(String, String), HeartbeatRow> = HashMap::new();
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            message = messages.recv() => match message {
                Some(Message::Record(row, done)) => {
                    let key = (row.tenant_id.clone(), row.agent_id.clone());
                    pending.insert(key, row);
                    if let Some(done) = done {
                        let _ = done.send(Ok(()));
                    }
                }
                Some(Message::Flush(done)) => {
                    write_pending(&store, &mut pending).await;
                    let _ = done.send(());
                }
                None => {
                    write_pending(&store, &mut pending).await;
                    return;
                }
            },
            _ = tick.tick() => write_pending(&store, &mut pending).await,
        }
    }
}

/// Writes `pending` in groups and empties it. A failed group is logged and dropped: the
/// agents' next heartbeats carry the same facts, newer.
async fn write_pending(store: &Store, pending: &mut HashMap<(String, String), HeartbeatRow>) {
    if pending.is_empty() {
        return;
    }
    let mut rows: Vec<HeartbeatRow> = pending.drain().map(|(_, row)| row).collect();
    while !rows.is_empty() {
        // The rows move into their group: no copy per heartbeat.
        let rest = rows.split_off(rows.len().min(MAX_GROUP));
        let mut group = Some(std::mem::replace(&mut rows, rest));
        let written = store
            .heartbeats(&mut || group.take().unwrap_or_default())
            .await;
        if let Err(e) = written {
            tracing::warn!(error = %e, "writing heartbeats failed; the next ones will carry it");
        }
    }
}

/// Synchronous: each heartbeat written (in a group) before it is answered.
async fn write_groups(store: Store, mut messages: mpsc::Receiver<Message>) {
    while let Some(first) = messages.recv().await {
        let mut group = Vec::new();
        let mut flushes = Vec::new();
        let mut take = |message: Message, group: &mut Vec<_>| match message {
            Message::Record(row, done) => group.push((row, done)),
            Message::Flush(done) => flushes.push(done),
        };
        take(first, &mut group);
        if group.is_empty() {
            for done in flushes {
                let _ = done.send(());
            }
            continue;
        }
        // The group is gathered when the connection is free, not before: everything that
        // queued while it was busy goes in.
        let written = store
            .heartbeats(&mut || {
                while group.len() < MAX_GROUP {
                    match messages.try_recv() {
                        Ok(message) => take(message, &mut group),
                        Err(_) => break,
                    }
                }
                group.iter().map(|(row, _)| row.clone()).collect()
            })
            .await;
        answer(group, written);
        // Everything before a flush was in this group or an earlier one.
        for done in flushes {
            let _ = done.send(());
        }
    }
}

/// Tells each waiting request how its heartbeat fared.
fn answer(
    group: Vec<(HeartbeatRow, Option<Done>)>,
    written: Result<Vec<(String, String)>, StoreError>,
) {
    match written {
        Ok(found) => {
            let found: HashSet<(&str, &str)> = found
                .iter()
                .map(|(t, a)| (t.as_str(), a.as_str()))
                .collect();
            for (row, done) in group {
                let outcome = if found.contains(&(row.tenant_id.as_str(), row.agent_id.as_str())) {
                    Ok(())
                } else {
                    Err(ApiError::from(StoreError::NotFound("agent")))
                };
                // The request may have gone (its client hung up); nothing to tell then.
                if let Some(done) = done {
                    let _ = done.send(outcome);
                }
            }
        }
        Err(e) => {
            for (_, done) in group {
                if let Some(done) = done {
                    let _ = done.send(Err(ApiError::from(&e)));
                }
            }
        }
    }
}
