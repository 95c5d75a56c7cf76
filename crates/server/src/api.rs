//! The agents' API: the seed's paths under `/api`, requests and answers from
//! `muster_proto::api`.

use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use base64::Engine as _;
use jiff::Timestamp;
use muster_proto::DaemonReport;
use muster_proto::api::{
    CommandState, CommandStatusUpdate, Heartbeat, HeartbeatResponse, InventoryAck, InventoryUpload,
    Lock, LockRequest, LockScope, MetricsAck, MetricsReport, PendingCommands, RegisterRequest,
    RegisterResponse,
};
use muster_proto::inventory::inventory_hash;
use serde::Deserialize;
use serde_json::Value;
use tracing::{info, warn};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::AppState;
use crate::commands::{TargetState, state_name, wire_command};
use crate::error::ApiError;
use crate::extract::{AgentCaller, ApiJson, ApiPath, ApiQuery, EnrolCaller, UnmeteredAgent};
use crate::ingest;
use crate::store::commands::{
    LockOutcome, LockRecord, MAX_LEASE_BATCH, StatusChange, StatusOutcome,
};
use crate::store::{
    AgentRegistration, HeartbeatRow, Ingested, MetricsRow, NOT_HELD, NewInventory, ReportKind,
    ReportMeta, StoreError,
};
use crate::token::{Token, TokenKind};

/// Longest accepted identity text (hostname, machine id, versions, ...).
const MAX_FIELD_LEN: usize = 255;

/// The agents' routes, relative to `/api`.
pub fn router() -> Router<AppState> {
    use muster_proto::api::paths;
    Router::new()
        .route(&format!("/{}", paths::REGISTER), post(register))
        .route(&format!("/{}", paths::HEARTBEAT), post(heartbeat))
        .route(&format!("/{}", paths::SYSTEM_REPORT), post(system_report))
        .route(&format!("/{}", paths::METRICS_REPORT), post(metrics_report))
        .route(
            &format!("/{}", paths::COMMANDS_PENDING),
            get(commands_pending),
        )
        .route(
            &format!("/{}", paths::COMMANDS_STATUS),
            post(commands_status),
        )
        .route(&format!("/{}", paths::LOCKS_CREATE), post(locks_create))
        .route(&format!("/{}/{{id}}", paths::LOCKS), delete(locks_delete))
}

fn now() -> Timestamp {
    Timestamp::now()
}

fn check_len(name: &str, value: Option<&str>) -> Result<(), ApiError> {
    match value {
        Some(v) if v.len() > MAX_FIELD_LEN => Err(ApiError::Unprocessable(format!(
            "`{name}` is longer than {MAX_FIELD_LEN} bytes"
        ))),
        _ => Ok(()),
    }
}

/// A body naming an agent must name the caller.
fn check_agent(caller: &AgentCaller, named: &str) -> Result<(), ApiError> {
    if named != caller.agent_id {
        return Err(ApiError::Forbidden(
            "the body names another agent than the token's".into(),
        ));
    }
    Ok(())
}

/// Registers an agent into the enrolment token's tenant (idempotent per public key, else
/// machine id, else hostname) and issues its own token.
#[utoipa::path(
    post, path = "/api/agents/register", tag = "agents",
    request_body = RegisterRequest,
    responses(
        (status = 200, description = "The agent's id and token", body = RegisterResponse),
        (status = 401, description = "No valid enrolment token; the message says when it has expired, been revoked or been used up", body = muster_proto::api::ApiError),
        (status = 403, description = "The token is another tenant's", body = muster_proto::api::ApiError),
        (status = 422, description = "A bad field", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn register(
    State(state): State<AppState>,
    caller: EnrolCaller,
    ApiJson(request): ApiJson<RegisterRequest>,
) -> Result<Json<RegisterResponse>, ApiError> {
    if request.tenant_id != caller.tenant_id {
        return Err(ApiError::Forbidden(
            "the enrolment token is not valid for this tenant".into(),
        ));
    }
    let hostname = request.hostname.trim();
    if hostname.is_empty() {
        return Err(ApiError::Unprocessable(
            "`hostname` must not be empty".into(),
        ));
    }
    for (name, value) in [
        ("hostname", Some(hostname)),
        ("machine_id", request.machine_id.as_deref()),
        ("platform", request.platform.as_deref()),
        ("os_name", request.os_name.as_deref()),
        ("os_version", request.os_version.as_deref()),
        ("arch", request.arch.as_deref()),
        ("agent_version", request.agent_version.as_deref()),
    ] {
        check_len(name, value)?;
    }
    let public_key = request
        .public_key
        .as_deref()
        .map(str::trim)
        .filter(|k| !k.is_empty());
    if let Some(key) = public_key {
        let decoded = base64::engine::general_purpose::STANDARD.decode(key);
        if !decoded.is_ok_and(|k| k.len() == 32) {
            return Err(ApiError::Unprocessable(
                "`public_key` must be an ed25519 public key, base64".into(),
            ));
        }
    }
    let machine_id = request
        .machine_id
        .as_deref()
        .map(str::trim)
        .filter(|m| !m.is_empty());
    let identity = match (public_key, machine_id) {
        (Some(key), _) => format!("key:{key}"),
        (None, Some(machine)) => format!("machine:{machine}"),
        (None, None) => format!("host:{hostname}"),
    };
    let registration = AgentRegistration {
        identity,
        public_key: public_key.map(str::to_owned),
        machine_id: machine_id.map(str::to_owned),
        hostname: hostname.to_owned(),
        platform: request.platform,
        os_name: request.os_name,
        os_version: request.os_version,
        arch: request.arch,
        agent_version: request.agent_version,
    };
    let token = Token::generate(TokenKind::Agent);
    let (agent_id, created) = state
        .store
        .register_agent(
            &caller.tenant_id,
            &registration,
            &caller.token_id,
            &token.hash(),
            now().as_second(),
        )
        .await?;
    if !created {
        // Registering again revoked the agent's earlier token, which may be cached.
        state.agent_tokens.clear();
    }
    info!(tenant_id = %caller.tenant_id, agent_id = %agent_id, created, "agent registered");
    let key = crate::commands::tenant_key(&state.store, &caller.tenant_id).await?;
    Ok(Json(RegisterResponse {
        agent_id,
        agent_token: token.expose().to_owned(),
        command_signing_key: Some(key.public_key),
    }))
}

/// The agent is alive: last seen, health, and the interval until its next heartbeat.
#[utoipa::path(
    post, path = "/api/agents/heartbeat", tag = "agents",
    request_body = Heartbeat,
    responses(
        (status = 200, description = "Pending commands and the server's time", body = HeartbeatResponse),
        (status = 401, description = "No valid agent token", body = muster_proto::api::ApiError),
        (status = 403, description = "The body names another agent", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn heartbeat(
    State(state): State<AppState>,
    caller: AgentCaller,
    ApiJson(heartbeat): ApiJson<Heartbeat>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    check_agent(&caller, &heartbeat.agent_id)?;
    check_len("agent_version", Some(&heartbeat.agent_version))?;
    let health = serde_json::to_string(&heartbeat.health).expect("health always serializes");
    let row = HeartbeatRow {
        tenant_id: caller.tenant_id.clone(),
        agent_id: caller.agent_id.clone(),
        seen_at: now().as_second(),
        agent_version: heartbeat.agent_version,
        health,
        interval_s: heartbeat.heartbeat_interval_s.map(clamp_interval),
    };
    // The write and the count do not depend on each other: both at once.
    let (written, pending) = tokio::join!(
        state.heartbeats.record(row),
        state.commands.pending_count(
            &state.store,
            &caller.tenant_id,
            &caller.agent_id,
            now().as_second()
        ),
    );
    written?;
    let pending = pending?;
    Ok(Json(HeartbeatResponse {
        pending_commands: u32::try_from(pending).unwrap_or(u32::MAX),
        server_time: now(),
    }))
}

/// An agent's heartbeat interval as stored: at least a second, at most a day, so a bogus
/// figure neither overflows the online arithmetic nor keeps a dead agent online for long.
fn clamp_interval(seconds: u64) -> i64 {
    i64::try_from(seconds.clamp(1, 86_400)).unwrap_or(86_400)
}

/// The longest long poll, seconds; a larger `wait_s` is clamped to it.
pub const MAX_WAIT_S: u64 = 60;
/// Longest `reason` of a status report, bytes.
const MAX_REASON_LEN: usize = 4096;
/// Longest lock resource name, bytes.
const MAX_RESOURCE_LEN: usize = 255;
/// Longest lock TTL: a day.
const MAX_LOCK_TTL_S: u64 = 86_400;

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PendingParams {
    /// Seconds to hold the request when there is nothing to answer, 0 to 60 (larger is
    /// clamped); 0 by default. The answer comes as soon as a command or a cancellation for
    /// the agent appears.
    wait_s: Option<u64>,
}

/// Leases the agent's due commands (each signed for it with the tenant's key) and lists the
/// cancellations of commands it holds. A leased command not acknowledged (`received`) within
/// the lease goes back to pending and is delivered again.
///
/// Rate limit: a request without `wait_s` counts against the agent's limit as any other; a
/// long poll counts only when it answers empty (after its wait), so the deliveries of an
/// operator's burst of commands are not held back to the agent's request rate.
#[utoipa::path(
    get, path = "/api/commands/pending", tag = "agents",
    params(PendingParams),
    responses(
        (status = 200, description = "Commands now leased to the agent, and cancellations", body = PendingCommands),
        (status = 400, description = "A malformed query string", body = muster_proto::api::ApiError),
        (status = 401, description = "No valid agent token", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn commands_pending(
    State(state): State<AppState>,
    UnmeteredAgent(caller): UnmeteredAgent,
    ApiQuery(params): ApiQuery<PendingParams>,
) -> Result<Json<PendingCommands>, ApiError> {
    let wait = Duration::from_secs(params.wait_s.unwrap_or(0).min(MAX_WAIT_S));
    if wait.is_zero() {
        state.ops.check_agent_rate(&caller.agent_id)?;
        return lease(&state, &caller).await.map(|(answer, _)| Json(answer));
    }
    let deadline = tokio::time::Instant::now() + wait;
    let waiters = &state.commands.waiters;
    let notify = waiters.register(&caller.agent_id);
    let answer = loop {
        // Listening before looking: a nudge between the look and the wait is not lost.
        let notified = notify.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        let (answer, next_due) = match lease(&state, &caller).await {
            Ok(leased) => leased,
            Err(e) => break Err(e),
        };
        if !answer.commands.is_empty()
            || !answer.cancel.is_empty()
            || tokio::time::Instant::now() >= deadline
        {
            break Ok(answer);
        }
        // A scheduled command coming due is not announced: wake for it as for a nudge.
        let wake = next_due.map_or(deadline, |due| deadline.min(instant_of(due)));
        // Woken or not, look once more: at the deadline that look is the answer.
        let _ = tokio::time::timeout_at(wake, notified).await;
    };
    waiters.release(&caller.agent_id, notify);
    let answer = answer?;
    if answer.commands.is_empty() && answer.cancel.is_empty() {
        state.ops.check_agent_rate(&caller.agent_id)?;
    }
    Ok(Json(answer))
}

/// The monotonic instant of unix second `at` (now, if it has passed).
fn instant_of(at: i64) -> tokio::time::Instant {
    let ahead_ms = at
        .saturating_mul(1000)
        .saturating_sub(now().as_millisecond())
        .max(0);
    tokio::time::Instant::now() + Duration::from_millis(ahead_ms.unsigned_abs())
}

/// Leases what is due for the caller; with the answer, when its next scheduled command comes
/// due (if nothing was leased).
async fn lease(
    state: &AppState,
    caller: &AgentCaller,
) -> Result<(PendingCommands, Option<i64>), ApiError> {
    let at = now();
    // The store keeps whole seconds: the lease's end is rounded up, so it lasts at least the
    // configured time.
    let lease_ms = i64::try_from(state.limits.command_lease.as_millis()).unwrap_or(60_000);
    let lease_until = (at.as_millisecond().saturating_add(lease_ms) + 999).div_euclid(1000);
    let leased = state
        .store
        .lease_commands(
            &caller.tenant_id,
            &caller.agent_id,
            at.as_second(),
            lease_until,
            MAX_LEASE_BATCH,
        )
        .await?;
    let mut commands = Vec::with_capacity(leased.commands.len());
    if !leased.commands.is_empty() {
        let signer = state
            .commands
            .signer(&state.store, &caller.tenant_id)
            .await?;
        for record in &leased.commands {
            let mut command = wire_command(record)?;
            signer.sign(&mut command, &caller.agent_id);
            commands.push(command);
        }
        info!(
            tenant_id = %caller.tenant_id,
            agent_id = %caller.agent_id,
            commands = commands.len(),
            "commands leased"
        );
    }
    Ok((
        PendingCommands {
            commands,
            cancel: leased.cancel,
        },
        leased.next_due,
    ))
}

/// Wakes this process's long polls when any replica announces new commands or cancellations
/// (PostgreSQL `LISTEN`); on SQLite there is one server and nothing to relay. A lost
/// connection is re-made after a pause (not at once, as `PgListener::recv` would: a database
/// being dropped must not see it come straight back).
pub async fn relay_nudges(state: AppState) {
    loop {
        let mut listener = match state.store.command_listener().await {
            Ok(Some(listener)) => listener,
            Ok(None) => return,
            Err(e) => {
                warn!(error = %e, "listening for command announcements failed; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
                continue;
            }
        };
        loop {
            match listener.try_recv().await {
                Ok(Some(notification)) => {
                    for agent_id in notification.payload().split(',') {
                        state.commands.waiters.nudge(agent_id);
                    }
                }
                Ok(None) => {
                    warn!("the command announcements' connection was lost; re-listening");
                    break;
                }
                Err(e) => {
                    warn!(error = %e, "the command announcements' connection failed; re-listening");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Wakes the agents' long polls here and, through the database, on every replica.
pub async fn nudge(state: &AppState, agent_ids: &[String]) {
    for agent_id in agent_ids {
        state.commands.waiters.nudge(agent_id);
    }
    if let Err(e) = state.store.announce_commands(agent_ids).await {
        // The agents still hear at their next heartbeat.
        warn!(error = %e, "announcing commands to the other replicas failed");
    }
}

fn timestamp_seconds(t: Option<Timestamp>) -> Option<i64> {
    t.map(|t| t.as_second())
}

/// One step of a command's life, with its result at the end. Legal moves: leased → any agent
/// state; received → deferred | running | any terminal; deferred → deferred | running | any
/// terminal; running → succeeded | failed | timed_out | cancelled. A repeat of the current
/// state is 204 and changes nothing; anything else, and any change of a terminal state, is 409.
#[utoipa::path(
    post, path = "/api/commands/status", tag = "agents",
    request_body = CommandStatusUpdate,
    responses(
        (status = 204, description = "Recorded (or a repeat, ignored)"),
        (status = 401, description = "No valid agent token", body = muster_proto::api::ApiError),
        (status = 404, description = "No such command for this agent", body = muster_proto::api::ApiError),
        (status = 409, description = "Not a legal move from the command's state", body = muster_proto::api::ApiError),
        (status = 422, description = "A bad field", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn commands_status(
    State(state): State<AppState>,
    UnmeteredAgent(caller): UnmeteredAgent,
    ApiJson(update): ApiJson<CommandStatusUpdate>,
) -> Result<StatusCode, ApiError> {
    // Rate limit: a report that moves a command on (received, running, its end: at most three
    // per command, each caused by a command the server handed out) is free; anything else
    // (a repeat, a deferral, a refused or bad report) counts against the agent's limit.
    let answer = record_status(&state, &caller, update).await;
    if !matches!(answer, Ok(Progress::Advanced)) {
        state.ops.check_agent_rate(&caller.agent_id)?;
    }
    answer.map(|_| StatusCode::NO_CONTENT)
}

/// Whether a status report moved its command on.
#[derive(Debug, PartialEq, Eq)]
enum Progress {
    Advanced,
    Other,
}

async fn record_status(
    state: &AppState,
    caller: &AgentCaller,
    update: CommandStatusUpdate,
) -> Result<Progress, ApiError> {
    if update
        .reason
        .as_ref()
        .is_some_and(|r| r.len() > MAX_REASON_LEN)
    {
        return Err(ApiError::Unprocessable(format!(
            "`reason` is longer than {MAX_REASON_LEN} bytes"
        )));
    }
    let change = StatusChange {
        state: state_name(update.status).to_owned(),
        reason: update.reason,
        exit_code: update.exit_code,
        stdout: update.stdout,
        stderr: update.stderr,
        stdout_truncated: update.stdout_truncated,
        stderr_truncated: update.stderr_truncated,
        started_at: timestamp_seconds(update.started_at),
        finished_at: timestamp_seconds(update.finished_at),
    };
    let outcome = state
        .store
        .update_command_status(
            &caller.tenant_id,
            &caller.agent_id,
            update.command_id,
            &change,
            now().as_second(),
        )
        .await
        .map_err(|e| match e {
            StoreError::NotFound(_) => ApiError::NotFound("no such command for this agent".into()),
            other => other.into(),
        })?;
    match outcome {
        StatusOutcome::Repeated => Ok(Progress::Other),
        StatusOutcome::Applied => {
            info!(
                agent_id = %caller.agent_id,
                command_id = update.command_id,
                state = %change.state,
                "command status"
            );
            Ok(if update.status == CommandState::Deferred {
                Progress::Other
            } else {
                Progress::Advanced
            })
        }
        StatusOutcome::Illegal { from } => {
            let terminal = TargetState::parse(from).is_some_and(TargetState::is_terminal);
            Err(ApiError::Conflict(if terminal {
                format!(
                    "command {} has ended (`{from}`); its state cannot change",
                    update.command_id
                )
            } else {
                format!(
                    "command {} is `{from}`; it cannot become `{}`",
                    update.command_id, change.state
                )
            }))
        }
    }
}

fn lock_view(lock: LockRecord) -> Lock {
    Lock {
        id: lock.id,
        resource: lock.resource,
        scope: if lock.scope_key == "tenant" {
            LockScope::Tenant
        } else {
            LockScope::Agent
        },
        holder_agent_id: lock.holder_agent_id,
        command_id: lock.command_id,
        expires_at: Timestamp::from_second(lock.expires_at).unwrap_or(Timestamp::UNIX_EPOCH),
    }
}

/// Takes a named lock for `ttl_s` seconds: scope `agent` is this machine's lock, `tenant` one
/// holder across the tenant's fleet. The same agent and command asking again renew it; another
/// holder's unexpired lock is 409, naming the holder.
#[utoipa::path(
    post, path = "/api/locks/create", tag = "agents",
    request_body = LockRequest,
    responses(
        (status = 201, description = "The lock, held (or renewed)", body = Lock),
        (status = 401, description = "No valid agent token", body = muster_proto::api::ApiError),
        (status = 409, description = "Another holder has it", body = muster_proto::api::ApiError),
        (status = 422, description = "A bad resource or TTL", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn locks_create(
    State(state): State<AppState>,
    caller: AgentCaller,
    ApiJson(request): ApiJson<LockRequest>,
) -> Result<(StatusCode, Json<Lock>), ApiError> {
    let resource = request.resource.trim();
    if resource.is_empty() || resource.len() > MAX_RESOURCE_LEN {
        return Err(ApiError::Unprocessable(format!(
            "`resource` must be 1 to {MAX_RESOURCE_LEN} bytes"
        )));
    }
    if !(1..=MAX_LOCK_TTL_S).contains(&request.ttl_s) {
        return Err(ApiError::Unprocessable(format!(
            "`ttl_s` must be from 1 to {MAX_LOCK_TTL_S}"
        )));
    }
    let scope_key = match request.scope {
        LockScope::Tenant => "tenant".to_owned(),
        LockScope::Agent => format!("agent:{}", caller.agent_id),
    };
    let at = now();
    // Whole seconds, rounded up: the lock lasts at least its TTL.
    let ttl_ms = i64::try_from(request.ttl_s)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    let expires_at = (at.as_millisecond().saturating_add(ttl_ms) + 999).div_euclid(1000);
    let outcome = state
        .store
        .create_lock(
            &caller.tenant_id,
            &scope_key,
            resource,
            &caller.agent_id,
            request.command_id,
            expires_at,
            at.as_second(),
        )
        .await?;
    match outcome {
        LockOutcome::Held(lock) => Ok((StatusCode::CREATED, Json(lock_view(lock)))),
        LockOutcome::Taken(lock) => {
            let held = lock_view(lock);
            let command = held
                .command_id
                .map_or_else(|| "no command".to_owned(), |id| format!("command {id}"));
            Err(ApiError::Conflict(format!(
                "the lock `{}` is held by agent {} for {command} until {}",
                held.resource, held.holder_agent_id, held.expires_at
            )))
        }
    }
}

/// Releases a lock this agent holds; any other (or an unknown id) is 404.
#[utoipa::path(
    delete, path = "/api/locks/{id}", tag = "agents",
    params(("id" = String, Path, description = "The lock's id")),
    responses(
        (status = 204, description = "Released"),
        (status = 401, description = "No valid agent token", body = muster_proto::api::ApiError),
        (status = 404, description = "This agent holds no lock of that id", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn locks_delete(
    State(state): State<AppState>,
    caller: AgentCaller,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    if state
        .store
        .delete_lock(&caller.tenant_id, &caller.agent_id, &id)
        .await?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::NotFound("this agent holds no such lock".into()))
    }
}

/// `POST /api/system/report`: an [`InventoryUpload`] (`mode`), a bare [`DaemonReport`]
/// (`worker_reports`) or the seed's flat report (`hostname`, `cpu_info`, ...).
#[utoipa::path(
    post, path = "/api/system/report", tag = "agents",
    request_body(
        content = InventoryUpload,
        description = "An inventory upload (`mode`: full, delta or unchanged); a bare \
            `DaemonReport` (`worker_reports`) and the seed agent's flat system report are \
            accepted too"
    ),
    responses(
        (status = 200, description = "The inventory hash now held", body = InventoryAck),
        (status = 401, description = "No valid agent token", body = muster_proto::api::ApiError),
        (status = 403, description = "The report names another agent", body = muster_proto::api::ApiError),
        (status = 409, description = "A delta or unchanged on a base not held, or a report id in use", body = muster_proto::api::ApiError),
        (status = 413, description = "The body is too large", body = muster_proto::api::ApiError),
        (status = 422, description = "Not a system report", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn system_report(
    State(state): State<AppState>,
    caller: AgentCaller,
    ApiJson(body): ApiJson<Value>,
) -> Result<Json<InventoryAck>, ApiError> {
    let Value::Object(map) = &body else {
        return Err(ApiError::Unprocessable(
            "a system report is a json object".into(),
        ));
    };
    if map.contains_key("mode") {
        let upload: InventoryUpload = from_value(body)?;
        return inventory_upload(&state, &caller, upload).await.map(Json);
    }
    if map.contains_key("worker_reports") {
        let report: DaemonReport = from_value(body)?;
        return daemon_report(
            &state,
            &caller,
            report,
            ReportKind::DaemonReport,
            Vec::new(),
        )
        .await
        .map(Json);
    }
    if ingest::is_seed_report(map) {
        let (report, sample) = ingest::seed_report(map, &caller.agent_id, now())?;
        return daemon_report(
            &state,
            &caller,
            report,
            ReportKind::SeedReport,
            sample.into_iter().collect(),
        )
        .await
        .map(Json);
    }
    Err(ApiError::Unprocessable(
        "not a system report: expected an inventory upload (`mode`), a daemon report \
         (`worker_reports`) or a seed system report (`hostname`, `cpu_info`, ...)"
            .into(),
    ))
}

fn from_value<T: serde::de::DeserializeOwned>(value: Value) -> Result<T, ApiError> {
    serde_json::from_value(value).map_err(|e| ApiError::Unprocessable(e.to_string()))
}

fn meta(caller: &AgentCaller, report_id: Uuid, kind: ReportKind) -> ReportMeta {
    ReportMeta {
        report_id,
        tenant_id: caller.tenant_id.clone(),
        agent_id: caller.agent_id.clone(),
        kind,
        received_at: now().as_second(),
    }
}

fn ack(report_id: Uuid, ingested: Ingested) -> InventoryAck {
    InventoryAck {
        report_id,
        hash: ingested.hash,
        duplicate: ingested.duplicate,
    }
}

/// The inventory as stored: the report without telemetry, and the hash the server computed.
fn new_inventory(report: &DaemonReport) -> NewInventory {
    NewInventory {
        hash: inventory_hash(report),
        report: serde_json::to_string(report).expect("a report always serializes"),
    }
}

fn warn_on_hash_mismatch(caller: &AgentCaller, claimed: &str, computed: &str) {
    if claimed != computed {
        warn!(
            agent_id = %caller.agent_id,
            claimed = %claimed,
            computed = %computed,
            "the agent's inventory hash differs from the server's; the server's is acknowledged"
        );
    }
}

async fn daemon_report(
    state: &AppState,
    caller: &AgentCaller,
    mut report: DaemonReport,
    kind: ReportKind,
    mut samples: Vec<MetricsRow>,
) -> Result<InventoryAck, ApiError> {
    if let Some(named) = report.agent_id.as_deref() {
        check_agent(caller, named)?;
    }
    samples.extend(ingest::take_telemetry(&mut report));
    let report_id = report.report_id;
    let inventory = new_inventory(&report);
    let ingested = state
        .store
        .ingest_inventory(&meta(caller, report_id, kind), &samples, |_| {
            Ok(inventory.clone())
        })
        .await?;
    Ok(ack(report_id, ingested))
}

async fn inventory_upload(
    state: &AppState,
    caller: &AgentCaller,
    upload: InventoryUpload,
) -> Result<InventoryAck, ApiError> {
    match upload {
        InventoryUpload::Full { hash, report } => {
            let mut report = report;
            if let Some(named) = report.agent_id.as_deref() {
                check_agent(caller, named)?;
            }
            let samples = ingest::take_telemetry(&mut report);
            let report_id = report.report_id;
            let inventory = new_inventory(&report);
            warn_on_hash_mismatch(caller, &hash, &inventory.hash);
            let ingested = state
                .store
                .ingest_inventory(
                    &meta(caller, report_id, ReportKind::InventoryFull),
                    &samples,
                    |_| Ok(inventory.clone()),
                )
                .await?;
            Ok(ack(report_id, ingested))
        }
        InventoryUpload::Delta {
            base_hash,
            hash,
            report,
            removed,
        } => {
            let mut report = report;
            if let Some(named) = report.agent_id.as_deref() {
                check_agent(caller, named)?;
            }
            let samples = ingest::take_telemetry(&mut report);
            let report_id = report.report_id;
            let update = |stored: Option<&crate::store::StoredInventory>| {
                let stored = stored
                    .filter(|s| s.hash == base_hash)
                    .ok_or_else(|| StoreError::Conflict(NOT_HELD.into()))?;
                let base: DaemonReport = serde_json::from_str(&stored.report)
                    .map_err(|e| StoreError::Corrupt(format!("stored inventory: {e}")))?;
                let merged = ingest::apply_delta(base, report.clone(), &removed);
                let inventory = new_inventory(&merged);
                warn_on_hash_mismatch(caller, &hash, &inventory.hash);
                Ok(inventory)
            };
            let ingested = state
                .store
                .ingest_inventory(
                    &meta(caller, report_id, ReportKind::InventoryDelta),
                    &samples,
                    update,
                )
                .await?;
            Ok(ack(report_id, ingested))
        }
        InventoryUpload::Unchanged {
            report_id,
            agent_id,
            hash,
            ..
        } => {
            // The agent sends an empty id before it knows its own.
            if !agent_id.is_empty() {
                check_agent(caller, &agent_id)?;
            }
            let ingested = state
                .store
                .ingest_unchanged(
                    &meta(caller, report_id, ReportKind::InventoryUnchanged),
                    &hash,
                )
                .await?;
            Ok(ack(report_id, ingested))
        }
    }
}

/// Telemetry samples, batched; idempotent by report id.
#[utoipa::path(
    post, path = "/api/metrics/report", tag = "agents",
    request_body = MetricsReport,
    responses(
        (status = 200, description = "How many samples were stored", body = MetricsAck),
        (status = 401, description = "No valid agent token", body = muster_proto::api::ApiError),
        (status = 403, description = "The report names another agent", body = muster_proto::api::ApiError),
        (status = 409, description = "The report id is another agent's", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn metrics_report(
    State(state): State<AppState>,
    caller: AgentCaller,
    ApiJson(report): ApiJson<MetricsReport>,
) -> Result<Json<MetricsAck>, ApiError> {
    check_agent(&caller, &report.agent_id)?;
    let samples: Vec<MetricsRow> = report
        .samples
        .iter()
        .map(|s| ingest::sample(s.datetime, &s.metrics))
        .collect();
    let ingested = state
        .store
        .ingest_metrics(
            &meta(&caller, report.report_id, ReportKind::Metrics),
            &samples,
        )
        .await?;
    let accepted = if ingested.duplicate {
        0
    } else {
        u32::try_from(samples.len()).unwrap_or(u32::MAX)
    };
    Ok(Json(MetricsAck {
        report_id: report.report_id,
        accepted,
        duplicate: ingested.duplicate,
    }))
}
