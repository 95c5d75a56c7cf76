//! The admin API's commands under `/api/admin/commands`: create a command for one agent, a
//! list of agents or every agent matching a filter; list and show commands with each agent's
//! state and result; cancel.
//!
//! Like `admin_api`, every handler takes [`AdminCaller`] first and scopes every store call by
//! its tenant: another tenant's command or agent is not found (404 / 422). [`create`] is also
//! what the dashboard's form calls.

use std::collections::{BTreeMap, HashSet};

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::commands::TargetState;
use crate::error::ApiError;
use crate::extract::{AdminCaller, ApiJson, ApiPath, ApiQuery};
use crate::store::AgentFilter;
use crate::store::commands::{CommandFilter, CommandRecord, NewCommand, TargetRecord};

/// Longest `command` (a script's body), bytes.
pub const MAX_COMMAND_LEN: usize = 64 * 1024;
/// Longest `parameters`, as JSON, bytes.
pub const MAX_PARAMETERS_LEN: usize = 64 * 1024;
/// Most locks one command takes.
pub const MAX_LOCKS: usize = 16;
/// Longest lock name, bytes.
const MAX_LOCK_LEN: usize = 255;
/// Longest timeout: a day.
pub const MAX_TIMEOUT_S: u64 = 86_400;
/// Longest filter text or agent id, bytes.
const MAX_TEXT_LEN: usize = 255;
/// The command types.
pub const TYPES: [&str; 3] = ["exec", "script", "builtin"];
/// The agent's built-in actions.
pub const BUILTINS: [&str; 4] = ["scan_now", "telemetry_now", "reload_config", "collect_logs"];
const DEFAULT_LIMIT: u32 = 100;
const MAX_LIMIT: u32 = 1000;

/// The commands' admin routes, relative to `/api/admin`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/commands", get(list_commands).post(create_command))
        .route("/commands/{id}", get(get_command).delete(cancel_command))
}

fn time(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH)
}

fn invalid(message: impl Into<String>) -> ApiError {
    ApiError::Unprocessable(message.into())
}

/// Which agents a filter picks (all conditions must hold).
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TargetFilter {
    /// Platform or OS name, case-insensitive (`linux`, `windows`, `debian`).
    pub os: Option<String>,
    /// Hostname: `*` matches any run of characters (`web-*`); without `*`, a
    /// case-insensitive substring.
    pub hostname: Option<String>,
    /// Only online (`true`) or offline (`false`) agents.
    pub online: Option<bool>,
}

/// A command to create: its targets (exactly one of `agent_id`, `agent_ids`, `filter`) and
/// the fields of the agents' `Command`.
#[derive(Debug, Clone, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateCommandRequest {
    pub agent_id: Option<String>,
    pub agent_ids: Option<Vec<String>>,
    /// Every agent of the tenant matching it, at the time of creation.
    pub filter: Option<TargetFilter>,
    /// `exec`, `script` or `builtin`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The program (`exec`), the script's body (`script`) or the action (`builtin`:
    /// `scan_now`, `telemetry_now`, `reload_config`, `collect_logs`).
    pub command: String,
    /// `args` (array of strings, `exec`), `interpreter` (`script`), `env` (object of
    /// strings).
    #[serde(default)]
    #[schema(value_type = Object)]
    pub parameters: Value,
    /// 1 (highest) to 5 (lowest); 3 by default.
    pub priority: Option<u8>,
    /// Not before this time.
    pub scheduled_for: Option<Timestamp>,
    /// 1 to 86400 seconds.
    pub timeout_s: Option<u64>,
    /// Run only inside the agent's maintenance window.
    #[serde(default)]
    pub maintenance_window: bool,
    /// Locks held while it runs: `NAME` (the machine's) or `tenant:NAME` (fleet-wide).
    #[serde(default)]
    pub locks: Vec<String>,
    /// A package-manager operation (waits for the package manager's lock).
    #[serde(default)]
    pub package_manager: bool,
    /// Not run after this time; an agent that has not received it by then never will.
    pub expires_at: Option<Timestamp>,
}

fn check_text(name: &str, value: &str) -> Result<(), ApiError> {
    if value.len() > MAX_TEXT_LEN {
        return Err(invalid(format!(
            "`{name}` is longer than {MAX_TEXT_LEN} bytes"
        )));
    }
    Ok(())
}

fn string_array(value: &Value) -> bool {
    value
        .as_array()
        .is_some_and(|items| items.iter().all(Value::is_string))
}

fn string_object(value: &Value) -> bool {
    value
        .as_object()
        .is_some_and(|map| map.values().all(Value::is_string))
}

/// The command as stored, checked (without its targets).
pub fn validate(
    request: &CreateCommandRequest,
    created_by: Option<String>,
    now: i64,
) -> Result<NewCommand, ApiError> {
    if !TYPES.contains(&request.kind.as_str()) {
        return Err(invalid(format!(
            "`type` is `{}`; it must be one of {}",
            request.kind,
            TYPES.join(", ")
        )));
    }
    if request.command.trim().is_empty() {
        return Err(invalid("`command` must not be empty"));
    }
    if request.command.len() > MAX_COMMAND_LEN {
        return Err(invalid(format!(
            "`command` is longer than {MAX_COMMAND_LEN} bytes"
        )));
    }
    if request.kind == "builtin" && !BUILTINS.contains(&request.command.as_str()) {
        return Err(invalid(format!(
            "a builtin `command` is one of {}",
            BUILTINS.join(", ")
        )));
    }
    let parameters = match &request.parameters {
        Value::Null => Value::Object(Default::default()),
        Value::Object(_) => request.parameters.clone(),
        _ => return Err(invalid("`parameters` must be an object")),
    };
    if let Some(args) = parameters.get("args")
        && !string_array(args)
    {
        return Err(invalid("`parameters.args` must be an array of strings"));
    }
    if let Some(env) = parameters.get("env")
        && !string_object(env)
    {
        return Err(invalid("`parameters.env` must be an object of strings"));
    }
    if let Some(interpreter) = parameters.get("interpreter")
        && !interpreter.is_string()
    {
        return Err(invalid("`parameters.interpreter` must be a string"));
    }
    let parameters = serde_json::to_string(&parameters).expect("a JSON value serializes");
    if parameters.len() > MAX_PARAMETERS_LEN {
        return Err(invalid(format!(
            "`parameters` is longer than {MAX_PARAMETERS_LEN} bytes as JSON"
        )));
    }
    let priority = request.priority.unwrap_or(3);
    if !(1..=5).contains(&priority) {
        return Err(invalid(format!(
            "`priority` is {priority}; it must be 1 (highest) to 5 (lowest)"
        )));
    }
    if let Some(timeout) = request.timeout_s
        && !(1..=MAX_TIMEOUT_S).contains(&timeout)
    {
        return Err(invalid(format!(
            "`timeout_s` must be from 1 to {MAX_TIMEOUT_S}"
        )));
    }
    if request.locks.len() > MAX_LOCKS {
        return Err(invalid(format!("at most {MAX_LOCKS} `locks`")));
    }
    for lock in &request.locks {
        let name = lock.strip_prefix("tenant:").unwrap_or(lock);
        if name.trim().is_empty() || lock.len() > MAX_LOCK_LEN {
            return Err(invalid(format!(
                "a lock name is 1 to {MAX_LOCK_LEN} bytes (`NAME` or `tenant:NAME`), got `{lock}`"
            )));
        }
    }
    let expires_at = request.expires_at.map(|t| t.as_second());
    let scheduled_for = request.scheduled_for.map(|t| t.as_second());
    if expires_at.is_some_and(|at| at <= now) {
        return Err(invalid("`expires_at` is not in the future"));
    }
    if let (Some(from), Some(to)) = (scheduled_for, expires_at)
        && from >= to
    {
        return Err(invalid("`scheduled_for` is not before `expires_at`"));
    }
    Ok(NewCommand {
        kind: request.kind.clone(),
        command: request.command.clone(),
        parameters,
        priority,
        scheduled_for,
        timeout_s: request.timeout_s.map(|t| t as i64),
        maintenance_window: request.maintenance_window,
        locks: request.locks.clone(),
        package_manager: request.package_manager,
        expires_at,
        created_by,
        created_at: now,
    })
}

/// The agent ids the request targets, checked for count and size (the store checks that each
/// is the tenant's).
async fn targets(
    state: &AppState,
    tenant_id: &str,
    request: &CreateCommandRequest,
    now: i64,
) -> Result<Vec<String>, ApiError> {
    let max = state.limits.max_command_targets;
    let ids: Vec<String> = match (&request.agent_id, &request.agent_ids, &request.filter) {
        (Some(id), None, None) => vec![id.trim().to_owned()],
        (None, Some(ids), None) => {
            let mut seen = HashSet::new();
            ids.iter()
                .map(|id| id.trim().to_owned())
                .filter(|id| seen.insert(id.clone()))
                .collect()
        }
        (None, None, Some(filter)) => {
            let text = |name: &str, v: &Option<String>| -> Result<Option<String>, ApiError> {
                let v = v.as_deref().map(str::trim).filter(|v| !v.is_empty());
                if let Some(v) = v {
                    check_text(name, v)?;
                }
                Ok(v.map(str::to_owned))
            };
            let page = state
                .store
                .list_agents_page(
                    tenant_id,
                    &AgentFilter {
                        hostname: text("filter.hostname", &filter.hostname)?,
                        os: text("filter.os", &filter.os)?,
                        online: filter.online,
                        limit: max.saturating_add(1),
                        offset: 0,
                    },
                    now,
                )
                .await?;
            if page.agents.is_empty() {
                return Err(invalid("no agent matches the filter"));
            }
            page.agents.into_iter().map(|a| a.agent.id).collect()
        }
        _ => {
            return Err(invalid(
                "give exactly one of `agent_id`, `agent_ids` and `filter`",
            ));
        }
    };
    if ids.is_empty() || ids.iter().any(String::is_empty) {
        return Err(invalid("an agent id must not be empty"));
    }
    if ids.len() > max as usize {
        return Err(invalid(format!(
            "the command targets more than {max} agents; narrow the filter"
        )));
    }
    for id in &ids {
        check_text("agent_id", id)?;
    }
    Ok(ids)
}

/// Creates a command for the request's targets and wakes the agents waiting for it; returns
/// its id.
pub async fn create(
    state: &AppState,
    tenant_id: &str,
    created_by: Option<String>,
    request: &CreateCommandRequest,
) -> Result<i64, ApiError> {
    let now = Timestamp::now().as_second();
    let command = validate(request, created_by, now)?;
    let agent_ids = targets(state, tenant_id, request, now).await?;
    let id = state
        .store
        .create_command(tenant_id, &command, &agent_ids)
        .await
        .map_err(|e| match e {
            crate::store::StoreError::NotFound(_) => {
                invalid("an agent id is not one of the tenant's agents")
            }
            other => other.into(),
        })?;
    tracing::info!(
        tenant_id = %tenant_id,
        command_id = id,
        kind = %command.kind,
        targets = agent_ids.len(),
        "command created"
    );
    state.commands.opened(tenant_id);
    crate::api::nudge(state, &agent_ids).await;
    Ok(id)
}

/// A command as the admin API shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandView {
    pub id: i64,
    #[serde(rename = "type")]
    pub kind: String,
    pub command: String,
    #[schema(value_type = Object)]
    pub parameters: Value,
    pub priority: i64,
    pub scheduled_for: Option<Timestamp>,
    pub timeout_s: Option<i64>,
    pub maintenance_window: bool,
    pub locks: Vec<String>,
    pub package_manager: bool,
    pub expires_at: Option<Timestamp>,
    /// The admin token that created it, if one did.
    pub created_by: Option<String>,
    pub created_at: Timestamp,
    /// How many agents it was sent to.
    pub target_count: i64,
    /// How many targets are in each state (`pending`, `leased`, `received`, ...).
    pub states: BTreeMap<String, i64>,
}

impl CommandView {
    fn new(c: CommandRecord, states: BTreeMap<String, i64>) -> CommandView {
        CommandView {
            id: c.id,
            kind: c.kind,
            command: c.command,
            parameters: serde_json::from_str(&c.parameters).unwrap_or(Value::Null),
            priority: c.priority,
            scheduled_for: c.scheduled_for.map(time),
            timeout_s: c.timeout_s,
            maintenance_window: c.maintenance_window,
            locks: serde_json::from_str(&c.locks).unwrap_or_default(),
            package_manager: c.package_manager,
            expires_at: c.expires_at.map(time),
            created_by: c.created_by,
            created_at: time(c.created_at),
            target_count: c.target_count,
            states,
        }
    }
}

/// One agent's state of a command and its result.
#[derive(Debug, Serialize, ToSchema)]
pub struct TargetView {
    pub agent_id: String,
    pub hostname: Option<String>,
    /// `pending`, `leased`, `received`, `deferred`, `running`, `succeeded`, `failed`,
    /// `timed_out`, `cancelled`, `rejected` or `expired`.
    pub state: String,
    /// Whether it has ended.
    pub terminal: bool,
    /// How many times it was sent.
    pub attempts: i64,
    /// A cancellation was asked while the agent held it.
    pub cancel_requested: bool,
    pub lease_expires_at: Option<Timestamp>,
    pub reason: Option<String>,
    pub exit_code: Option<i32>,
    pub stdout: Option<String>,
    pub stderr: Option<String>,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub delivered_at: Option<Timestamp>,
    pub started_at: Option<Timestamp>,
    pub finished_at: Option<Timestamp>,
    pub updated_at: Timestamp,
}

impl From<TargetRecord> for TargetView {
    fn from(t: TargetRecord) -> Self {
        TargetView {
            terminal: TargetState::parse(&t.state).is_some_and(TargetState::is_terminal),
            agent_id: t.agent_id,
            hostname: t.hostname,
            state: t.state,
            attempts: t.attempts,
            cancel_requested: t.cancel_requested,
            lease_expires_at: t.lease_expires_at.map(time),
            reason: t.reason,
            exit_code: t.exit_code,
            stdout: t.stdout,
            stderr: t.stderr,
            stdout_truncated: t.stdout_truncated,
            stderr_truncated: t.stderr_truncated,
            delivered_at: t.delivered_at.map(time),
            started_at: t.started_at.map(time),
            finished_at: t.finished_at.map(time),
            updated_at: time(t.updated_at),
        }
    }
}

/// A command with every target's state and result.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandDetail {
    #[serde(flatten)]
    pub command: CommandView,
    /// One page of its `target_count` agents (`targets_limit` / `targets_offset`), by
    /// hostname; `states` counts all of them by state.
    pub targets: Vec<TargetView>,
}

/// Which of a command's targets to show: a command may have thousands, each with its output.
#[derive(Debug, Clone, Copy)]
pub struct TargetPage {
    pub limit: u32,
    pub offset: u32,
}

impl Default for TargetPage {
    fn default() -> Self {
        TargetPage {
            limit: DEFAULT_TARGETS_PAGE,
            offset: 0,
        }
    }
}

/// Targets shown by default, and at most, per page of a command.
pub const DEFAULT_TARGETS_PAGE: u32 = 100;
pub const MAX_TARGETS_PAGE: u32 = 1000;

/// The command `id` of the tenant with one page of its targets and the count of all of them
/// by state; `None` when it has none such.
pub async fn detail(
    state: &AppState,
    tenant_id: &str,
    id: i64,
    page: TargetPage,
) -> Result<Option<CommandDetail>, ApiError> {
    let Some(command) = state.store.command(tenant_id, id).await? else {
        return Ok(None);
    };
    let targets = state
        .store
        .command_targets(tenant_id, id, page.limit, page.offset)
        .await?;
    let states: BTreeMap<String, i64> = state
        .store
        .command_state_counts(tenant_id, id)
        .await?
        .into_iter()
        .collect();
    Ok(Some(CommandDetail {
        command: CommandView::new(command, states),
        targets: targets.into_iter().map(TargetView::from).collect(),
    }))
}

fn command_not_found() -> ApiError {
    ApiError::NotFound("no such command".into())
}

/// Creates a command for one agent (`agent_id`), several (`agent_ids`) or every agent
/// matching `filter`; agents waiting in a long poll hear of it at once.
#[utoipa::path(
    post, path = "/api/admin/commands", tag = "admin",
    request_body = CreateCommandRequest,
    responses(
        (status = 201, description = "The command and its targets", body = CommandDetail),
        (status = 400, description = "Not JSON", body = muster_proto::api::ApiError),
        (status = 401, description = "No valid admin token", body = muster_proto::api::ApiError),
        (status = 422, description = "A bad field, no target, too many targets, or an agent not the tenant's", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn create_command(
    caller: AdminCaller,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CreateCommandRequest>,
) -> Result<(StatusCode, Json<CommandDetail>), ApiError> {
    let id = create(&state, &caller.tenant_id, Some(caller.token_id), &request).await?;
    let detail = detail(&state, &caller.tenant_id, id, TargetPage::default())
        .await?
        .ok_or_else(command_not_found)?;
    Ok((StatusCode::CREATED, Json(detail)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct CommandParams {
    /// Commands sent to this agent.
    agent_id: Option<String>,
    /// Commands with at least one target in this state.
    state: Option<String>,
    /// Page size, 1 to 1000; 100 by default.
    limit: Option<u32>,
    offset: Option<u32>,
}

/// A page of commands.
#[derive(Debug, Serialize, ToSchema)]
pub struct CommandList {
    /// Commands matching the filters, in all pages.
    pub total: u64,
    /// Newest first.
    pub commands: Vec<CommandView>,
}

/// The tenant's commands, newest first, one page.
#[utoipa::path(
    get, path = "/api/admin/commands", tag = "admin",
    params(CommandParams),
    responses(
        (status = 200, description = "A page of commands", body = CommandList),
        (status = 400, description = "A malformed query string", body = muster_proto::api::ApiError),
        (status = 401, description = "No valid admin token", body = muster_proto::api::ApiError),
        (status = 422, description = "A value out of bounds", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn list_commands(
    caller: AdminCaller,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<CommandParams>,
) -> Result<Json<CommandList>, ApiError> {
    let limit = match params.limit {
        None => DEFAULT_LIMIT,
        Some(n @ 1..=MAX_LIMIT) => n,
        Some(n) => {
            return Err(invalid(format!(
                "`limit` is {n}; it must be 1 to {MAX_LIMIT}"
            )));
        }
    };
    let state_filter = params.state.filter(|s| !s.is_empty());
    if let Some(s) = &state_filter
        && TargetState::parse(s).is_none()
    {
        return Err(invalid(format!("`state` `{s}` is not a command state")));
    }
    let agent_id = params.agent_id.filter(|s| !s.is_empty());
    if let Some(id) = &agent_id {
        check_text("agent_id", id)?;
    }
    let page = state
        .store
        .list_commands(
            &caller.tenant_id,
            &CommandFilter {
                agent_id,
                state: state_filter,
                limit,
                offset: params.offset.unwrap_or(0),
            },
        )
        .await?;
    Ok(Json(CommandList {
        total: page.total,
        commands: page
            .commands
            .into_iter()
            .map(|s| CommandView::new(s.command, s.states.into_iter().collect()))
            .collect(),
    }))
}

/// One command of the tenant, with every target agent's state, output and timings.
#[utoipa::path(
    get, path = "/api/admin/commands/{id}", tag = "admin",
    params(("id" = i64, Path, description = "The command's id"), TargetParams),
    responses(
        (status = 200, description = "The command", body = CommandDetail),
        (status = 400, description = "A bad page of targets", body = muster_proto::api::ApiError),
        (status = 401, description = "No valid admin token", body = muster_proto::api::ApiError),
        (status = 404, description = "No such command in the tenant", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn get_command(
    caller: AdminCaller,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
    ApiQuery(params): ApiQuery<TargetParams>,
) -> Result<Json<CommandDetail>, ApiError> {
    let limit = match params.targets_limit {
        None => DEFAULT_TARGETS_PAGE,
        Some(n @ 1..=MAX_TARGETS_PAGE) => n,
        Some(n) => {
            return Err(ApiError::BadRequest(format!(
                "`targets_limit` is {n}; it must be 1 to {MAX_TARGETS_PAGE}"
            )));
        }
    };
    let page = TargetPage {
        limit,
        offset: params.targets_offset.unwrap_or(0),
    };
    detail(&state, &caller.tenant_id, id, page)
        .await?
        .map(Json)
        .ok_or_else(command_not_found)
}

/// Which page of a command's targets `GET /api/admin/commands/{id}` shows.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TargetParams {
    /// Targets per page, 1 to 1000; 100 by default.
    targets_limit: Option<u32>,
    targets_offset: Option<u32>,
}

/// What a cancellation did.
#[derive(Debug, Serialize, ToSchema)]
pub struct CancelledCommand {
    /// Targets that had not received it: cancelled now, never delivered again.
    pub cancelled: u64,
    /// Targets holding it: asked to drop or stop it (they report `cancelled`, or how it ended).
    pub cancel_requested: u64,
}

/// Cancels a command: a target that has not received it is cancelled at once and never gets
/// it; one that holds it is asked to stop (the `cancel` list of its next
/// `commands/pending`). Ended targets are left as they are.
#[utoipa::path(
    delete, path = "/api/admin/commands/{id}", tag = "admin",
    params(("id" = i64, Path, description = "The command's id")),
    responses(
        (status = 200, description = "What was cancelled", body = CancelledCommand),
        (status = 401, description = "No valid admin token", body = muster_proto::api::ApiError),
        (status = 404, description = "No such command in the tenant", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn cancel_command(
    caller: AdminCaller,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<i64>,
) -> Result<Json<CancelledCommand>, ApiError> {
    let answer = cancel(&state, &caller.tenant_id, id)
        .await?
        .ok_or_else(command_not_found)?;
    Ok(Json(answer))
}

/// Cancels the command (see [`cancel_command`]) and wakes the agents that must hear of it.
pub async fn cancel(
    state: &AppState,
    tenant_id: &str,
    id: i64,
) -> Result<Option<CancelledCommand>, ApiError> {
    let now = Timestamp::now().as_second();
    let Some(cancelled) = state.store.cancel_command(tenant_id, id, now).await? else {
        return Ok(None);
    };
    tracing::info!(
        tenant_id = %tenant_id,
        command_id = id,
        cancelled = cancelled.cancelled,
        requested = cancelled.requested.len(),
        "command cancelled"
    );
    state.commands.opened(tenant_id);
    crate::api::nudge(state, &cancelled.requested).await;
    Ok(Some(CancelledCommand {
        cancelled: cancelled.cancelled,
        cancel_requested: cancelled.requested.len() as u64,
    }))
}
