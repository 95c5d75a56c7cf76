//! The store's commands: creation, leasing, the agents' status reports, cancellation, locks,
//! the jobs that return and expire commands, and the tenants' signing keys.
//!
//! Leasing must hand each (command, agent) to one answer only, also with several replicas on
//! one PostgreSQL: the lease statement picks the rows `FOR UPDATE SKIP LOCKED` there (SQLite
//! has one writer, so the same statement without the clause is already exclusive).

use super::{Backend, Store, StoreError, postgres, sqlite};

/// A command to store, for its targets.
#[derive(Debug, Clone)]
pub struct NewCommand {
    pub kind: String,
    pub command: String,
    /// JSON.
    pub parameters: String,
    pub priority: u8,
    pub scheduled_for: Option<i64>,
    pub timeout_s: Option<i64>,
    pub maintenance_window: bool,
    pub locks: Vec<String>,
    pub package_manager: bool,
    pub expires_at: Option<i64>,
    /// The admin token's id, if a token created it.
    pub created_by: Option<String>,
    pub created_at: i64,
}

/// A stored command (what was asked, not any agent's state of it).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct CommandRecord {
    pub id: i64,
    pub tenant_id: String,
    pub kind: String,
    pub command: String,
    /// JSON.
    pub parameters: String,
    pub priority: i64,
    pub scheduled_for: Option<i64>,
    pub timeout_s: Option<i64>,
    pub maintenance_window: bool,
    /// JSON array.
    pub locks: String,
    pub package_manager: bool,
    pub expires_at: Option<i64>,
    pub created_by: Option<String>,
    pub created_at: i64,
    pub target_count: i64,
}

/// One target agent's state of a command, with its result.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct TargetRecord {
    pub command_id: i64,
    pub agent_id: String,
    /// The agent's hostname (joined), if the agent still exists.
    pub hostname: Option<String>,
    /// `pending`, `leased`, or a `CommandState` in snake case.
    pub state: String,
    pub attempts: i64,
    pub cancel_requested: bool,
    pub lease_expires_at: Option<i64>,
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
    pub delivered_at: Option<i64>,
    pub updated_at: i64,
}

/// Which commands a listing shows.
#[derive(Debug, Clone, Default)]
pub struct CommandFilter {
    /// Commands sent to this agent.
    pub agent_id: Option<String>,
    /// Commands with at least one target in this state.
    pub state: Option<String>,
    pub limit: u32,
    pub offset: u32,
}

/// A command in a listing, with how many of its targets are in each state.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandSummary {
    pub command: CommandRecord,
    /// (state, count), by state.
    pub states: Vec<(String, i64)>,
}

/// A page of commands, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct CommandPage {
    pub total: u64,
    pub commands: Vec<CommandSummary>,
}

/// What one `commands/pending` lease hands out.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Leased {
    pub commands: Vec<CommandRecord>,
    /// Delivered commands whose cancellation was asked, not yet ended by the agent.
    pub cancel: Vec<i64>,
    /// When nothing was leased: the unix second the agent's next scheduled command comes due,
    /// if it has one (a long poll waits no longer than that).
    pub next_due: Option<i64>,
}

/// An agent's report of a command's state (times in unix seconds).
#[derive(Debug, Clone, Default)]
pub struct StatusChange {
    pub state: String,
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub started_at: Option<i64>,
    pub finished_at: Option<i64>,
}

/// How a status report went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusOutcome {
    /// The state moved (or a legal repeat updated the details).
    Applied,
    /// The command was already in that state; nothing changed.
    Repeated,
    /// The move is not allowed from `from`.
    Illegal { from: &'static str },
}

/// What a cancellation did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Cancelled {
    /// Targets that had not been delivered: cancelled at once, never to be delivered.
    pub cancelled: u64,
    /// Agents that hold the command: they are asked to stop it (in `cancel`).
    pub requested: Vec<String>,
}

/// A held lock.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct LockRecord {
    pub id: String,
    pub scope_key: String,
    pub resource: String,
    pub holder_agent_id: String,
    pub command_id: Option<i64>,
    pub expires_at: i64,
}

/// A lock request's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LockOutcome {
    /// Taken, or renewed by its holder.
    Held(LockRecord),
    /// Another holder has it.
    Taken(LockRecord),
}

/// What the jobs changed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CommandsSwept {
    /// Leases that ran out: the commands went back to pending.
    pub returned: u64,
    /// Commands past their expiry that had not reached their agent: now `expired`.
    pub expired: u64,
    /// Locks past their expiry, deleted.
    pub locks: u64,
}

/// A tenant's signing key pair, base64: the PKCS#8 document and the raw public key.
#[derive(Clone, PartialEq, Eq)]
pub struct SigningKeyPair {
    pub private_pkcs8: String,
    pub public_key: String,
}

impl std::fmt::Debug for SigningKeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKeyPair")
            .field("private_pkcs8", &"[redacted]")
            .field("public_key", &self.public_key)
            .finish()
    }
}

/// Most commands one lease hands out.
pub const MAX_LEASE_BATCH: u32 = 100;

/// The PostgreSQL channel a command's creation or cancellation is announced on, with the
/// agents' ids (comma-separated) as the payload.
pub const NUDGE_CHANNEL: &str = "muster_commands";

impl Store {
    /// Stores a command for `agent_ids` (all of the tenant, checked: an unknown id is
    /// [`StoreError::NotFound`]); returns its id.
    pub async fn create_command(
        &self,
        tenant_id: &str,
        command: &NewCommand,
        agent_ids: &[String],
    ) -> Result<i64, StoreError> {
        on_backend!(self, write create_command(tenant_id, command, agent_ids))
    }

    pub async fn command(
        &self,
        tenant_id: &str,
        id: i64,
    ) -> Result<Option<CommandRecord>, StoreError> {
        on_backend!(self, command(tenant_id, id))
    }

    /// One page of the command's targets, by hostname.
    pub async fn command_targets(
        &self,
        tenant_id: &str,
        id: i64,
        limit: u32,
        offset: u32,
    ) -> Result<Vec<TargetRecord>, StoreError> {
        on_backend!(self, command_targets(tenant_id, id, limit, offset))
    }

    /// How many of the command's targets are in each state.
    pub async fn command_state_counts(
        &self,
        tenant_id: &str,
        id: i64,
    ) -> Result<Vec<(String, i64)>, StoreError> {
        on_backend!(self, command_state_counts(tenant_id, id))
    }

    /// Commands, newest first, one page.
    pub async fn list_commands(
        &self,
        tenant_id: &str,
        filter: &CommandFilter,
    ) -> Result<CommandPage, StoreError> {
        on_backend!(self, list_commands(tenant_id, filter))
    }

    /// Leases up to `limit` of the agent's due commands until `lease_until`, and lists the
    /// cancellations it must hear of. Each target row is leased by one call only.
    pub async fn lease_commands(
        &self,
        tenant_id: &str,
        agent_id: &str,
        now: i64,
        lease_until: i64,
        limit: u32,
    ) -> Result<Leased, StoreError> {
        on_backend!(
            self,
            write lease_commands(tenant_id, agent_id, now, lease_until, limit)
        )
    }

    /// Commands the agent could lease now plus cancellations it has not acknowledged.
    /// Whether the tenant has any command open (pending, leased, or asked to stop) in any
    /// agent: when not, every agent's pending count is 0.
    pub async fn tenant_has_open_commands(&self, tenant_id: &str) -> Result<bool, StoreError> {
        on_backend!(self, tenant_has_open_commands(tenant_id))
    }

    pub async fn pending_command_count(
        &self,
        tenant_id: &str,
        agent_id: &str,
        now: i64,
    ) -> Result<i64, StoreError> {
        on_backend!(self, pending_command_count(tenant_id, agent_id, now))
    }

    /// Applies an agent's report on command `command_id` (its own: another agent's or an
    /// unknown one is [`StoreError::NotFound`]) if the state machine allows it.
    pub async fn update_command_status(
        &self,
        tenant_id: &str,
        agent_id: &str,
        command_id: i64,
        change: &StatusChange,
        now: i64,
    ) -> Result<StatusOutcome, StoreError> {
        on_backend!(
            self,
            write update_command_status(tenant_id, agent_id, command_id, change, now)
        )
    }

    /// Cancels the command: undelivered targets at once, delivered ones by request. `None`
    /// when the tenant has no such command.
    pub async fn cancel_command(
        &self,
        tenant_id: &str,
        id: i64,
        now: i64,
    ) -> Result<Option<Cancelled>, StoreError> {
        on_backend!(self, write cancel_command(tenant_id, id, now))
    }

    /// Takes or renews a lock (`scope_key`: `tenant` or `agent:<id>`).
    #[allow(clippy::too_many_arguments)]
    pub async fn create_lock(
        &self,
        tenant_id: &str,
        scope_key: &str,
        resource: &str,
        agent_id: &str,
        command_id: Option<i64>,
        expires_at: i64,
        now: i64,
    ) -> Result<LockOutcome, StoreError> {
        on_backend!(
            self,
            write create_lock(
                tenant_id, scope_key, resource, agent_id, command_id, expires_at, now
            )
        )
    }

    /// Releases a lock the agent holds; false when it holds no lock of that id.
    pub async fn delete_lock(
        &self,
        tenant_id: &str,
        agent_id: &str,
        id: &str,
    ) -> Result<bool, StoreError> {
        on_backend!(self, write delete_lock(tenant_id, agent_id, id))
    }

    /// The jobs at `now`: run-out leases back to pending (or cancelled, when cancellation was
    /// asked), undelivered commands past their expiry to `expired`, expired locks deleted.
    pub async fn sweep_commands(&self, now: i64) -> Result<CommandsSwept, StoreError> {
        on_backend!(self, write sweep_commands(now))
    }

    /// The tenant's signing key pair, stored as `generated` if it has none yet (whoever
    /// stores first wins; every caller gets the stored pair).
    pub async fn signing_key(
        &self,
        tenant_id: &str,
        generated: &SigningKeyPair,
        now: i64,
    ) -> Result<SigningKeyPair, StoreError> {
        on_backend!(self, write signing_key(tenant_id, generated, now))
    }

    /// The tenant's stored signing key pair, if it has one.
    pub async fn stored_signing_key(
        &self,
        tenant_id: &str,
    ) -> Result<Option<SigningKeyPair>, StoreError> {
        on_backend!(self, stored_signing_key(tenant_id))
    }

    /// Announces to every replica that these agents have something new (PostgreSQL
    /// `NOTIFY`; nothing on SQLite, whose server is the only one).
    pub async fn announce_commands(&self, agent_ids: &[String]) -> Result<(), StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(()),
            Backend::Postgres(pool) => postgres::announce(pool, agent_ids).await,
        }
    }

    /// A listener for [`Store::announce_commands`] from any replica; `None` on SQLite.
    pub async fn command_listener(&self) -> Result<Option<sqlx::postgres::PgListener>, StoreError> {
        match &self.backend {
            Backend::Sqlite(_) => Ok(None),
            Backend::Postgres(pool) => {
                let mut listener = sqlx::postgres::PgListener::connect_with(pool).await?;
                listener.listen(NUDGE_CHANNEL).await?;
                Ok(Some(listener))
            }
        }
    }
}
