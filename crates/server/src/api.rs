//! The agents' API: the seed's paths under `/api`, requests and answers from
//! `muster_proto::api`.

use axum::extract::State;
use axum::routing::{get, post};
use axum::{Json, Router};
use base64::Engine as _;
use jiff::Timestamp;
use muster_proto::DaemonReport;
use muster_proto::api::{
    Heartbeat, HeartbeatResponse, InventoryAck, InventoryUpload, MetricsAck, MetricsReport,
    PendingCommands, RegisterRequest, RegisterResponse,
};
use muster_proto::inventory::inventory_hash;
use serde_json::Value;
use tracing::{info, warn};
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;
use crate::extract::{AgentCaller, ApiJson, EnrolCaller};
use crate::ingest;
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
        (status = 401, description = "No valid enrolment token", body = muster_proto::api::ApiError),
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
            &token.hash(),
            now().as_second(),
        )
        .await?;
    if !created {
        // Registering again revoked the agent's earlier token, which may be cached.
        state.agent_tokens.clear();
    }
    info!(tenant_id = %caller.tenant_id, agent_id = %agent_id, created, "agent registered");
    Ok(Json(RegisterResponse {
        agent_id,
        agent_token: token.expose().to_owned(),
        command_signing_key: None,
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
    state
        .heartbeats
        .record(HeartbeatRow {
            tenant_id: caller.tenant_id,
            agent_id: caller.agent_id,
            seen_at: now().as_second(),
            agent_version: heartbeat.agent_version,
            health,
            interval_s: heartbeat.heartbeat_interval_s.map(clamp_interval),
        })
        .await?;
    Ok(Json(HeartbeatResponse {
        pending_commands: 0,
        server_time: now(),
    }))
}

/// An agent's heartbeat interval as stored: at least a second, at most a day, so a bogus
/// figure neither overflows the online arithmetic nor keeps a dead agent online for long.
fn clamp_interval(seconds: u64) -> i64 {
    i64::try_from(seconds.clamp(1, 86_400)).unwrap_or(86_400)
}

/// Commands arrive with the commands issue; until then there are never any.
#[utoipa::path(
    get, path = "/api/commands/pending", tag = "agents",
    responses(
        (status = 200, description = "Commands now leased to the agent", body = PendingCommands),
        (status = 401, description = "No valid agent token", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn commands_pending(_caller: AgentCaller) -> Json<PendingCommands> {
    Json(PendingCommands {
        commands: Vec::new(),
        cancel: Vec::new(),
    })
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
        .ingest_inventory(&meta(caller, report_id, kind), &samples, |_| Ok(inventory))
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
                    |_| Ok(inventory),
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
            let update = |stored: Option<crate::store::StoredInventory>| {
                let stored = stored
                    .filter(|s| s.hash == base_hash)
                    .ok_or_else(|| StoreError::Conflict(NOT_HELD.into()))?;
                let base: DaemonReport = serde_json::from_str(&stored.report)
                    .map_err(|e| StoreError::Corrupt(format!("stored inventory: {e}")))?;
                let merged = ingest::apply_delta(base, report, &removed);
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
