//! Heartbeats written in groups: the most frequent request (an agent's every minute) is one
//! row update, and a fleet sends thousands a second. Each request hands its update to one
//! writer task and waits for it. The writer asks the store for a connection and gathers the
//! group only once it has one (group commit): every update that queued while it waited goes
//! in, so a heartbeat waits in the connection's queue once, as it would alone, and the
//! database sees a statement per group instead of one per heartbeat. An idle server writes
//! each heartbeat at once (a group of one). The answer still waits for the write, so a
//! heartbeat answered 200 is stored.

use std::collections::HashSet;

use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::store::{HeartbeatRow, Store, StoreError};

/// Updates written by one statement at most (6 bound values each).
const MAX_GROUP: usize = 250;
/// Heartbeats waiting for the writer at most; beyond it requests wait to hand theirs over.
const QUEUE: usize = 16_384;

type Done = oneshot::Sender<Result<(), ApiError>>;

/// The handle requests write heartbeats through. Cheap to clone.
#[derive(Debug, Clone)]
pub struct HeartbeatWriter {
    queue: mpsc::Sender<(HeartbeatRow, Done)>,
}

impl HeartbeatWriter {
    /// Starts the writer task on the current runtime; it ends when the last handle is dropped.
    pub fn start(store: Store) -> HeartbeatWriter {
        let (queue, updates) = mpsc::channel(QUEUE);
        tokio::spawn(write_groups(store, updates));
        HeartbeatWriter { queue }
    }

    /// Records `row` and waits until it is written: `NotFound` when the agent is gone.
    pub async fn record(&self, row: HeartbeatRow) -> Result<(), ApiError> {
        let (done, written) = oneshot::channel();
        let stopped = || ApiError::Unavailable("the server is stopping".into());
        self.queue.send((row, done)).await.map_err(|_| stopped())?;
        written.await.map_err(|_| stopped())?
    }
}

async fn write_groups(store: Store, mut updates: mpsc::Receiver<(HeartbeatRow, Done)>) {
    while let Some(first) = updates.recv().await {
        let mut group = vec![first];
        // The group is gathered when the connection is free, not before: everything that
        // queued while it was busy goes in.
        let written = store
            .heartbeats(&mut || {
                while group.len() < MAX_GROUP {
                    match updates.try_recv() {
                        Ok(update) => group.push(update),
                        Err(_) => break,
                    }
                }
                group.iter().map(|(row, _)| row.clone()).collect()
            })
            .await;
        answer(group, written);
    }
}

/// Tells each waiting request how its heartbeat fared.
fn answer(group: Vec<(HeartbeatRow, Done)>, written: Result<Vec<(String, String)>, StoreError>) {
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
                let _ = done.send(outcome);
            }
        }
        Err(e) => {
            for (_, done) in group {
                let _ = done.send(Err(ApiError::from(&e)));
            }
        }
    }
}
