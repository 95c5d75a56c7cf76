//! The agents' API: the seed ITSM agent's eight endpoints, their requests and responses.
//!
//! | method | path                     | body → answer                                   |
//! | ------ | ------------------------ | ----------------------------------------------- |
//! | POST   | `/api/agents/register`   | [`RegisterRequest`] → [`RegisterResponse`]      |
//! | POST   | `/api/agents/heartbeat`  | [`Heartbeat`] → [`HeartbeatResponse`]           |
//! | POST   | `/api/system/report`     | [`InventoryUpload`] → [`InventoryAck`]          |
//! | GET    | `/api/commands/pending`  | → [`PendingCommands`]                           |
//! | POST   | `/api/commands/status`   | [`CommandStatusUpdate`] → 204                   |
//! | POST   | `/api/metrics/report`    | [`MetricsReport`] → [`MetricsAck`]              |
//! | POST   | `/api/locks/create`      | [`LockRequest`] → [`Lock`] (201) or 409         |
//! | DELETE | `/api/locks/{id}`        | → 204                                           |
//!
//! Registration authenticates with the tenant's enrolment token (the seed's `API_TOKEN`),
//! everything else with the per-agent token it returns; both as `Authorization: Bearer`.
//! Errors are [`ApiError`]: `{"error": {"code", "message"}}`.

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::DaemonReport;
use crate::data::SystemMetrics;

/// API paths, relative to the server's base URL (`.../api`).
pub mod paths {
    pub const REGISTER: &str = "agents/register";
    pub const HEARTBEAT: &str = "agents/heartbeat";
    pub const SYSTEM_REPORT: &str = "system/report";
    pub const COMMANDS_PENDING: &str = "commands/pending";
    pub const COMMANDS_STATUS: &str = "commands/status";
    pub const METRICS_REPORT: &str = "metrics/report";
    pub const LOCKS_CREATE: &str = "locks/create";
    /// `locks/{id}`, for DELETE.
    pub const LOCKS: &str = "locks";
}

/// `POST /api/agents/register`, with the tenant's enrolment token as bearer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterRequest {
    /// The seed's `TENANT_ID`.
    pub tenant_id: String,
    pub hostname: String,
    pub machine_id: Option<String>,
    /// The agent's ed25519 public key, base64 (standard alphabet, padded). It, not the
    /// hostname or a hardware id, identifies the agent: registration is idempotent per
    /// (tenant, key). Seed agents send none and are identified by machine id, else hostname.
    #[serde(default)]
    pub public_key: Option<String>,
    /// The seed's `platform`, e.g. `Linux`, `Windows 10`.
    #[serde(default)]
    pub platform: Option<String>,
    #[serde(default)]
    pub os_name: Option<String>,
    #[serde(default)]
    pub os_version: Option<String>,
    #[serde(default)]
    pub arch: Option<String>,
    #[serde(default)]
    pub agent_version: Option<String>,
}

/// The answer to a registration: who the agent is from now on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct RegisterResponse {
    pub agent_id: String,
    /// The per-agent bearer token. Shown once; the server keeps only its hash.
    pub agent_token: String,
    /// The tenant's command-signing public key (ed25519, base64), for the agent to pin.
    #[serde(default)]
    pub command_signing_key: Option<String>,
}

/// `POST /api/agents/heartbeat`: the agent is alive, and how it is doing.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Heartbeat {
    pub agent_id: String,
    pub datetime: Timestamp,
    pub agent_version: String,
    pub uptime_s: u64,
    pub health: AgentHealth,
    /// Seconds until the agent's next heartbeat: the server counts it offline after three
    /// missed. Absent (seed agents), the server assumes its default (60 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_s: Option<u64>,
}

/// The seed background scanner's health and service figures.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct AgentHealth {
    pub scans_completed: u64,
    pub errors: u64,
    pub spool_items: u64,
    pub spool_bytes: u64,
    /// Reports the spool dropped (oldest telemetry first) since the last heartbeat.
    pub dropped_reports: u64,
    pub queue_depth: u64,
    pub last_inventory: Option<Timestamp>,
    pub last_telemetry: Option<Timestamp>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct HeartbeatResponse {
    /// Commands waiting for this agent; it fetches `commands/pending` only when non-zero.
    pub pending_commands: u32,
    pub server_time: Timestamp,
}

/// `POST /api/system/report` from a Muster agent: the inventory, whole or as a change.
///
/// The server also accepts a bare [`DaemonReport`] and the seed's flat system report there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum InventoryUpload {
    /// The whole inventory.
    Full {
        hash: String,
        /// A `DaemonReport` (see `docs/report.schema.json`).
        #[cfg_attr(feature = "openapi", schema(value_type = Object))]
        report: DaemonReport,
    },
    /// Only the function reports that changed since `base_hash`, the inventory the server
    /// acknowledged last; `hash` is the inventory after applying them. A server whose stored
    /// inventory is not `base_hash` answers 409 and the agent sends `Full`.
    Delta {
        base_hash: String,
        hash: String,
        /// Only the changed function reports (see `docs/report.schema.json`).
        #[cfg_attr(feature = "openapi", schema(value_type = Object))]
        report: DaemonReport,
        /// Function reports present in the base but gone now, as `worker/function` (e.g.
        /// `software/snap` when a package source was removed).
        #[serde(default)]
        removed: Vec<String>,
    },
    /// Nothing changed since `hash`, which the server already holds.
    Unchanged {
        report_id: Uuid,
        agent_id: String,
        datetime: Timestamp,
        hash: String,
    },
}

/// The answer to an inventory upload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct InventoryAck {
    pub report_id: Uuid,
    /// The inventory hash the server now holds for this agent.
    pub hash: Option<String>,
    /// True when this `report_id` had been stored before (a retry after a lost answer).
    pub duplicate: bool,
}

/// `POST /api/metrics/report`: telemetry samples, batched.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricsReport {
    pub report_id: Uuid,
    pub agent_id: String,
    pub samples: Vec<MetricsSample>,
}

/// One telemetry sample and when it was taken.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricsSample {
    pub datetime: Timestamp,
    /// A `SystemMetrics` (see `docs/report.schema.json`).
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub metrics: SystemMetrics,
}

/// The answer to a metrics report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct MetricsAck {
    pub report_id: Uuid,
    pub accepted: u32,
    pub duplicate: bool,
}

/// A command for an agent: seed 001's command structure plus what safe execution needs.
///
/// What `command` and `parameters` mean, by `type`:
/// - `exec`: `command` is the program (a path, or a name looked up in `PATH`), run with no
///   shell; `parameters.args` its arguments (array of strings).
/// - `script`: `command` is the script's body; `parameters.interpreter` names what runs it
///   (on Linux `sh`, the default, `bash`, `python3`; on Windows `cmd`, the default,
///   `powershell`, `pwsh`, `python3`; an interpreter of the other platform is refused).
/// - `builtin`: `command` is the action: `scan_now`, `telemetry_now`, `reload_config`,
///   `collect_logs`.
///
/// For `exec` and `script`, `parameters.env` (object of strings) are the variables set in the
/// otherwise clean environment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Command {
    pub id: i64,
    /// `exec`, `script` or `builtin`.
    #[serde(rename = "type")]
    pub kind: String,
    pub command: String,
    #[serde(default)]
    pub parameters: serde_json::Value,
    /// 1 (highest) to 5 (lowest); 3 by default.
    #[serde(default = "default_priority")]
    pub priority: u8,
    #[serde(default)]
    pub scheduled_for: Option<Timestamp>,
    #[serde(default)]
    pub timeout_s: Option<u64>,
    #[serde(default)]
    pub maintenance_window: bool,
    /// Locks the command holds while it runs, taken through `POST /api/locks/create`: a plain
    /// name is this machine's lock (scope `agent`), `tenant:NAME` the lock `NAME` across the
    /// tenant's fleet (scope `tenant`).
    #[serde(default)]
    pub locks: Vec<String>,
    /// A package-manager operation: it waits while another process holds the package
    /// manager's lock (dpkg/apt, rpm/dnf; the Windows Installer mutex).
    #[serde(default)]
    pub package_manager: bool,
    #[serde(default)]
    pub expires_at: Option<Timestamp>,
    /// The server's ed25519 signature over [`Command::signing_payload`], base64.
    #[serde(default)]
    pub signature: Option<String>,
}

fn default_priority() -> u8 {
    3
}

/// What a command's signature says, and the tag that starts it (a new form gets a new tag).
pub const COMMAND_SIGNATURE_TAG: &str = "muster-command-v1";

impl Command {
    /// The bytes the server signs (ed25519, the tenant's key) and the agent verifies, for the
    /// agent `agent_id` (the agent passes its own id, so a command for another agent does not
    /// verify): a JSON array of [`COMMAND_SIGNATURE_TAG`], id, agent id, type, command,
    /// parameters (object keys sorted at every depth), `scheduled_for` (not before) and
    /// `expires_at` (RFC 3339, or null), `timeout_s`, `priority`, `maintenance_window`,
    /// `locks` and `package_manager`. Every field that decides what runs, where and when is covered; the signature
    /// itself is not.
    pub fn signing_payload(&self, agent_id: &str) -> Vec<u8> {
        let payload = serde_json::json!([
            COMMAND_SIGNATURE_TAG,
            self.id,
            agent_id,
            self.kind,
            self.command,
            sorted(&self.parameters),
            self.scheduled_for.map(|t| t.to_string()),
            self.expires_at.map(|t| t.to_string()),
            self.timeout_s,
            self.priority,
            self.maintenance_window,
            self.locks,
            self.package_manager,
        ]);
        serde_json::to_vec(&payload).expect("a JSON value always serializes")
    }
}

/// `value` with the keys of every object in sorted order, whatever order the map keeps.
fn sorted(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(k, v)| (k.clone(), sorted(v)))
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.iter().map(sorted).collect()),
        other => other.clone(),
    }
}

/// The answer to `GET /api/commands/pending`: commands now leased to the agent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct PendingCommands {
    pub commands: Vec<Command>,
    /// Commands delivered earlier that were cancelled since: not yet started, they are
    /// dropped (and reported `cancelled`); running, they are stopped.
    #[serde(default)]
    pub cancel: Vec<i64>,
}

/// Where a command is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum CommandState {
    Received,
    Deferred,
    Running,
    Succeeded,
    Failed,
    TimedOut,
    Cancelled,
    Rejected,
    Expired,
}

impl CommandState {
    /// Whether the command has ended; a terminal state never changes.
    pub fn is_terminal(self) -> bool {
        !matches!(
            self,
            CommandState::Received | CommandState::Deferred | CommandState::Running
        )
    }
}

/// `POST /api/commands/status`: one step of a command's life, with its result at the end.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct CommandStatusUpdate {
    pub command_id: i64,
    pub status: CommandState,
    /// Why a command was deferred or rejected.
    #[serde(default)]
    pub reason: Option<String>,
    #[serde(default)]
    pub exit_code: Option<i32>,
    #[serde(default)]
    pub stdout: Option<String>,
    #[serde(default)]
    pub stderr: Option<String>,
    #[serde(default)]
    pub stdout_truncated: bool,
    #[serde(default)]
    pub stderr_truncated: bool,
    #[serde(default)]
    pub started_at: Option<Timestamp>,
    #[serde(default)]
    pub finished_at: Option<Timestamp>,
}

/// `POST /api/locks/create`: take a named lock before an operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct LockRequest {
    pub resource: String,
    /// The command that will hold it.
    #[serde(default)]
    pub command_id: Option<i64>,
    pub ttl_s: u64,
    /// `agent` (the default: this machine only) or `tenant` (one holder across the fleet).
    #[serde(default)]
    pub scope: LockScope,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "snake_case")]
pub enum LockScope {
    #[default]
    Agent,
    Tenant,
}

/// A lock that is held.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Lock {
    pub id: String,
    pub resource: String,
    pub scope: LockScope,
    pub holder_agent_id: String,
    pub command_id: Option<i64>,
    pub expires_at: Timestamp,
}

/// Every error answer: `{"error": {"code": "...", "message": "..."}}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ApiError {
    pub error: ErrorBody,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct ErrorBody {
    /// A stable, machine-readable code: `unauthorized`, `not_found`, `conflict`,
    /// `payload_too_large`, `rate_limited`, `invalid_request`, ...
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            error: ErrorBody {
                code: code.into(),
                message: message.into(),
            },
        }
    }
}
