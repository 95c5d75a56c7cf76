//! The server calls the queue makes, behind [`CommandApi`] so the scheduler's tests use an
//! in-memory server; [`ClientApi`] is the real one over [`crate::client::Client`].

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use muster_proto::api::{self, CommandStatusUpdate, Lock, LockRequest, PendingCommands};

use crate::client::{Client, ClientError};
use crate::secret::Secret;

/// Locks and status updates. Errors are the client's: `Conflict` is a 409 (the lock is held;
/// the status move is illegal), `Rejected { status: 404 }` an unknown command or lock.
pub trait CommandApi {
    fn create_lock(&self, req: &LockRequest) -> impl Future<Output = Result<Lock, ClientError>>;
    fn delete_lock(&self, id: &str) -> impl Future<Output = Result<(), ClientError>>;
    fn post_status(
        &self,
        update: &CommandStatusUpdate,
    ) -> impl Future<Output = Result<(), ClientError>>;
}

/// The agent's token as it changes (enrolment, re-enrolment): shared with the poller.
pub type TokenCell = Arc<Mutex<Option<Secret>>>;

/// The real server.
#[derive(Debug, Clone)]
pub struct ClientApi {
    pub client: Arc<Client>,
    pub token: TokenCell,
}

impl ClientApi {
    fn token(&self) -> Result<Secret, ClientError> {
        self.token
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
            .ok_or(ClientError::Unauthorized)
    }

    /// `GET commands/pending[?wait_s=N]`.
    pub async fn pending(&self, wait_s: u32) -> Result<PendingCommands, ClientError> {
        let path = if wait_s == 0 {
            api::paths::COMMANDS_PENDING.to_owned()
        } else {
            format!("{}?wait_s={wait_s}", api::paths::COMMANDS_PENDING)
        };
        let answer = self.client.get_json(&self.token()?, &path).await?;
        serde_json::from_slice(&answer)
            .map_err(|e| ClientError::Invalid(format!("undecodable answer from {path}: {e}")))
    }
}

impl CommandApi for ClientApi {
    async fn create_lock(&self, req: &LockRequest) -> Result<Lock, ClientError> {
        let body = serde_json::to_vec(req).expect("a lock request always serializes");
        let answer = self
            .client
            .post_json(&self.token()?, api::paths::LOCKS_CREATE, &body)
            .await?;
        serde_json::from_slice(&answer)
            .map_err(|e| ClientError::Invalid(format!("undecodable lock: {e}")))
    }

    async fn delete_lock(&self, id: &str) -> Result<(), ClientError> {
        self.client
            .delete(&self.token()?, &format!("{}/{id}", api::paths::LOCKS))
            .await
            .map(|_| ())
    }

    async fn post_status(&self, update: &CommandStatusUpdate) -> Result<(), ClientError> {
        let body = serde_json::to_vec(update).expect("a status update always serializes");
        self.client
            .post_json(&self.token()?, api::paths::COMMANDS_STATUS, &body)
            .await
            .map(|_| ())
    }
}
