//! The admin API under `/api/admin/`: a tenant's agents, inventory, telemetry, software
//! search, alerts and tokens, for holders of the tenant's admin token.
//!
//! Every handler takes [`AdminCaller`] first (the token is checked before anything else) and
//! passes its tenant to every store call, so another tenant's agent or token is simply not
//! found: 404, the same as one that never existed. Query strings go through [`ApiQuery`], so a
//! malformed one is a JSON 400 like every other error.
//!
//! The answer types live here, not in `muster-proto`: no Rust client reads them; the OpenAPI
//! document (`crate::openapi`) is their contract.

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{delete, get};
use axum::{Json, Router};
use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use crate::AppState;
use crate::admin::AdminError;
use crate::error::ApiError;
use crate::extract::{AdminCaller, ApiJson, ApiPath, ApiQuery};
use crate::store::{
    AgentFilter, AgentSummary, Alert, AlertMetric, InventoryChange, MetricsRow, SoftwareHit,
    SoftwareQuery, Thresholds, TokenFilter, TokenInfo,
};
use crate::token::TokenKind;

/// Page size when none is asked for.
const DEFAULT_LIMIT: u32 = 100;
/// Largest page.
const MAX_LIMIT: u32 = 1000;
/// The metrics window when none is asked for: the last 24 hours.
const DEFAULT_METRICS_WINDOW_S: i64 = 24 * 3600;
/// The widest metrics window one request may ask for: 31 days.
const MAX_METRICS_WINDOW_S: i64 = 31 * 24 * 3600;
/// Most samples one metrics answer carries (24 h at one every 10 s is 8,640).
const MAX_METRICS_SAMPLES: u32 = 10_000;
/// Longest filter text (hostname pattern, OS, package name, version, source).
const MAX_FILTER_LEN: usize = 255;

/// The admin routes, relative to `/api/admin`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/agents", get(list_agents))
        .route("/agents/{id}", get(get_agent))
        .route("/agents/{id}/inventory", get(agent_inventory))
        .route("/agents/{id}/metrics", get(agent_metrics))
        .route("/software", get(software))
        .route("/alerts", get(alerts))
        .route("/tokens", get(list_tokens).post(create_token))
        .route("/tokens/{id}", delete(revoke_token))
}

fn now() -> i64 {
    Timestamp::now().as_second()
}

/// Unix seconds as a timestamp; the store only holds times the server wrote.
fn time(seconds: i64) -> Timestamp {
    Timestamp::from_second(seconds).unwrap_or(Timestamp::UNIX_EPOCH)
}

/// A page size: the default when absent, 1 to `MAX_LIMIT` otherwise.
fn page_limit(limit: Option<u32>) -> Result<u32, ApiError> {
    match limit {
        None => Ok(DEFAULT_LIMIT),
        Some(n @ 1..=MAX_LIMIT) => Ok(n),
        Some(n) => Err(ApiError::Unprocessable(format!(
            "`limit` is {n}; it must be 1 to {MAX_LIMIT}"
        ))),
    }
}

/// An optional filter text, trimmed; empty is no filter.
fn filter_text(name: &str, value: Option<String>) -> Result<Option<String>, ApiError> {
    let value = value.map(|v| v.trim().to_owned()).filter(|v| !v.is_empty());
    if value.as_ref().is_some_and(|v| v.len() > MAX_FILTER_LEN) {
        return Err(ApiError::Unprocessable(format!(
            "`{name}` is longer than {MAX_FILTER_LEN} bytes"
        )));
    }
    Ok(value)
}

/// A time in a query string: RFC 3339 (`2024-01-15T02:30:00Z`) or unix seconds.
fn parse_time(name: &str, text: &str) -> Result<i64, ApiError> {
    let text = text.trim();
    if let Ok(seconds) = text.parse::<i64>() {
        return Timestamp::from_second(seconds)
            .map(|t| t.as_second())
            .map_err(|_| ApiError::Unprocessable(format!("`{name}` is out of range")));
    }
    text.parse::<Timestamp>()
        .map(|t| t.as_second())
        .map_err(|_| {
            ApiError::Unprocessable(format!("`{name}` must be an RFC 3339 time or unix seconds"))
        })
}

fn agent_not_found() -> ApiError {
    ApiError::NotFound("no such agent".into())
}

impl From<AdminError> for ApiError {
    fn from(e: AdminError) -> Self {
        match e {
            AdminError::Invalid(message) => ApiError::Unprocessable(message),
            AdminError::Store(e) => e.into(),
        }
    }
}

// ----- agents ---------------------------------------------------------------------------

/// An agent as the fleet list shows it.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentView {
    pub id: String,
    pub hostname: String,
    /// The platform the agent registered with (`Linux`, `Windows 10`, ...).
    pub platform: Option<String>,
    pub os_name: Option<String>,
    pub os_version: Option<String>,
    pub arch: Option<String>,
    pub machine_id: Option<String>,
    pub agent_version: Option<String>,
    /// Heard from within three heartbeat intervals.
    pub online: bool,
    pub last_seen: Option<Timestamp>,
    pub registered_at: Timestamp,
    /// The latest telemetry sample's figures, percent.
    pub cpu_usage: Option<f64>,
    pub memory_usage: Option<f64>,
    pub disk_usage: Option<f64>,
    /// When that sample was taken.
    pub metrics_at: Option<Timestamp>,
}

impl From<AgentSummary> for AgentView {
    fn from(s: AgentSummary) -> Self {
        let a = s.agent;
        AgentView {
            id: a.id,
            hostname: a.hostname,
            platform: a.platform,
            os_name: a.os_name,
            os_version: a.os_version,
            arch: a.arch,
            machine_id: a.machine_id,
            agent_version: a.agent_version,
            online: s.online,
            last_seen: a.last_seen.map(time),
            registered_at: time(a.created_at),
            cpu_usage: s.cpu_usage,
            memory_usage: s.memory_usage,
            disk_usage: s.disk_usage,
            metrics_at: s.metrics_at.map(time),
        }
    }
}

/// One agent, with its last heartbeat's health figures.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentDetail {
    #[serde(flatten)]
    pub agent: AgentView,
    /// The last heartbeat's `AgentHealth` (`scans_completed`, `errors`, `spool_items`, ...).
    #[schema(value_type = Option<Object>)]
    pub health: Option<Value>,
}

/// A page of agents.
#[derive(Debug, Serialize, ToSchema)]
pub struct AgentList {
    /// Agents matching the filters, in all pages.
    pub total: u64,
    pub agents: Vec<AgentView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct AgentParams {
    /// Hostname: `*` matches any run of characters (`web-*`); without `*`, a
    /// case-insensitive substring.
    hostname: Option<String>,
    /// Platform or OS name, case-insensitive (`linux`, `windows`, `debian`).
    os: Option<String>,
    /// Only online (`true`) or offline (`false`) agents.
    online: Option<bool>,
    /// Page size, 1 to 1000; 100 by default.
    limit: Option<u32>,
    /// Agents to skip.
    offset: Option<u32>,
}

/// The tenant's agents, by hostname, one page.
#[utoipa::path(
    get, path = "/api/admin/agents", tag = "admin",
    params(AgentParams),
    responses(
        (status = 200, description = "A page of agents", body = AgentList),
        (status = 400, description = "A malformed query string", body = muster_proto::api::ApiError),
        (status = 401, description = "No valid admin token", body = muster_proto::api::ApiError),
        (status = 422, description = "A value out of bounds", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn list_agents(
    caller: AdminCaller,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<AgentParams>,
) -> Result<Json<AgentList>, ApiError> {
    let filter = AgentFilter {
        hostname: filter_text("hostname", params.hostname)?,
        os: filter_text("os", params.os)?,
        online: params.online,
        limit: page_limit(params.limit)?,
        offset: params.offset.unwrap_or(0),
    };
    let page = state
        .store
        .list_agents_page(&caller.tenant_id, &filter, now())
        .await?;
    Ok(Json(AgentList {
        total: page.total,
        agents: page.agents.into_iter().map(AgentView::from).collect(),
    }))
}

/// One agent of the tenant.
#[utoipa::path(
    get, path = "/api/admin/agents/{id}", tag = "admin",
    params(("id" = String, Path, description = "The agent's id")),
    responses(
        (status = 200, description = "The agent", body = AgentDetail),
        (status = 401, description = "No valid admin token", body = muster_proto::api::ApiError),
        (status = 404, description = "No such agent in the tenant", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn get_agent(
    caller: AdminCaller,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<AgentDetail>, ApiError> {
    let summary = state
        .store
        .agent_summary(&caller.tenant_id, &id, now())
        .await?
        .ok_or_else(agent_not_found)?;
    let health = summary
        .agent
        .health
        .as_deref()
        .and_then(|h| serde_json::from_str(h).ok());
    Ok(Json(AgentDetail {
        agent: summary.into(),
        health,
    }))
}

/// Fails with 404 unless the tenant has the agent.
async fn require_agent(state: &AppState, tenant_id: &str, id: &str) -> Result<(), ApiError> {
    match state.store.agent(tenant_id, id).await? {
        Some(_) => Ok(()),
        None => Err(agent_not_found()),
    }
}

// ----- inventory ------------------------------------------------------------------------

/// An agent's latest inventory.
#[derive(Debug, Serialize, ToSchema)]
pub struct InventoryView {
    pub agent_id: String,
    /// Its `inventory_hash`.
    pub hash: String,
    /// The report that last changed or confirmed it.
    pub report_id: String,
    pub updated_at: Timestamp,
    /// A `DaemonReport` (see `docs/report.schema.json`).
    #[schema(value_type = Object)]
    pub report: Value,
}

/// One change between two inventories.
#[derive(Debug, Serialize, ToSchema)]
pub struct ChangeView {
    /// When the inventory that showed the change was received.
    pub at: Timestamp,
    /// `software` or `hardware`.
    pub category: String,
    /// `added`, `removed`, `upgraded`, `downgraded` (software) or `changed` (hardware).
    pub change: String,
    /// Package name, or the hardware item (`cpu`, `memory`, `disk:sda`, ...).
    pub item: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

impl From<InventoryChange> for ChangeView {
    fn from(c: InventoryChange) -> Self {
        ChangeView {
            at: time(c.at),
            category: c.category,
            change: c.change,
            item: c.item,
            old: c.old,
            new: c.new,
        }
    }
}

/// A page of an agent's inventory changes, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct InventoryHistory {
    pub agent_id: String,
    pub changes: Vec<ChangeView>,
    /// Pass as `before` for the next page; absent on the last one.
    pub next_before: Option<Timestamp>,
}

/// The latest inventory, or with `history` the changes.
#[derive(Debug, Serialize, ToSchema)]
#[serde(untagged)]
pub enum InventoryAnswer {
    Latest(InventoryView),
    History(InventoryHistory),
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct InventoryParams {
    /// Present (`?history`, or `history=true`): the history of changes instead of the
    /// latest inventory.
    #[param(value_type = Option<String>)]
    history: Option<String>,
    /// History only: changes received before this time (RFC 3339 or unix seconds).
    before: Option<String>,
    /// History only: page size, 1 to 1000; 100 by default.
    limit: Option<u32>,
}

/// An agent's latest inventory, or (`?history`) what changed in it, newest first.
#[utoipa::path(
    get, path = "/api/admin/agents/{id}/inventory", tag = "admin",
    params(("id" = String, Path, description = "The agent's id"), InventoryParams),
    responses(
        (status = 200, description = "The latest inventory, or the history", body = InventoryAnswer),
        (status = 401, description = "No valid admin token", body = muster_proto::api::ApiError),
        (status = 404, description = "No such agent in the tenant, or no inventory yet", body = muster_proto::api::ApiError),
        (status = 422, description = "A value out of bounds", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn agent_inventory(
    caller: AdminCaller,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<InventoryParams>,
) -> Result<Json<InventoryAnswer>, ApiError> {
    require_agent(&state, &caller.tenant_id, &id).await?;
    let history = match params.history.as_deref().map(str::trim) {
        None | Some("false") | Some("0") => false,
        Some("" | "true" | "1") => true,
        Some(other) => {
            return Err(ApiError::Unprocessable(format!(
                "`history` is `{other}`; it is a flag (`?history`)"
            )));
        }
    };
    if !history {
        let stored = state
            .store
            .inventory(&caller.tenant_id, &id)
            .await?
            .ok_or_else(|| ApiError::NotFound("the agent has sent no inventory yet".into()))?;
        let report = serde_json::from_str(&stored.report).map_err(|e| {
            ApiError::Internal(format!("stored inventory of agent {id} is not json: {e}"))
        })?;
        return Ok(Json(InventoryAnswer::Latest(InventoryView {
            agent_id: id,
            hash: stored.hash,
            report_id: stored.report_id,
            updated_at: time(stored.updated_at),
            report,
        })));
    }
    let limit = page_limit(params.limit)?;
    let before = params
        .before
        .as_deref()
        .map(|b| parse_time("before", b))
        .transpose()?;
    let mut changes = state
        .store
        .inventory_history(&caller.tenant_id, &id, before, limit)
        .await?;
    // One inventory yields several changes at the same time; a full page ending inside such a
    // group leaves the group to the next page, so `before` loses none of it.
    let mut next_before = None;
    if changes.len() == limit as usize
        && let Some(last) = changes.last().map(|c| c.at)
    {
        if changes.iter().any(|c| c.at != last) {
            changes.retain(|c| c.at != last);
        }
        next_before = changes.last().map(|c| time(c.at));
    }
    Ok(Json(InventoryAnswer::History(InventoryHistory {
        agent_id: id,
        changes: changes.into_iter().map(ChangeView::from).collect(),
        next_before,
    })))
}

// ----- metrics --------------------------------------------------------------------------

/// One telemetry sample.
#[derive(Debug, Serialize, ToSchema)]
pub struct SampleView {
    pub sampled_at: Timestamp,
    pub cpu_usage: Option<f64>,
    pub memory_usage: Option<f64>,
    pub disk_usage: Option<f64>,
    /// The whole sample: a `SystemMetrics`, or the seed's `system_metrics` object.
    #[schema(value_type = Object)]
    pub metrics: Value,
}

impl From<MetricsRow> for SampleView {
    fn from(row: MetricsRow) -> Self {
        SampleView {
            sampled_at: time(row.sampled_at),
            cpu_usage: row.cpu_usage,
            memory_usage: row.memory_usage,
            disk_usage: row.disk_usage,
            metrics: serde_json::from_str(&row.data).unwrap_or(Value::Null),
        }
    }
}

/// An agent's samples over a window, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct MetricsView {
    pub agent_id: String,
    pub from: Timestamp,
    pub to: Timestamp,
    /// More samples than one answer carries (10,000) fall in the window: ask again from
    /// the last one's time.
    pub truncated: bool,
    pub samples: Vec<SampleView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct MetricsParams {
    /// Start of the window, inclusive (RFC 3339 or unix seconds); 24 hours before `to` by
    /// default.
    from: Option<String>,
    /// End of the window, exclusive; now by default. At most 31 days after `from`.
    to: Option<String>,
}

/// An agent's telemetry samples in `[from, to)`.
#[utoipa::path(
    get, path = "/api/admin/agents/{id}/metrics", tag = "admin",
    params(("id" = String, Path, description = "The agent's id"), MetricsParams),
    responses(
        (status = 200, description = "The samples", body = MetricsView),
        (status = 401, description = "No valid admin token", body = muster_proto::api::ApiError),
        (status = 404, description = "No such agent in the tenant", body = muster_proto::api::ApiError),
        (status = 422, description = "A bad time or window", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn agent_metrics(
    caller: AdminCaller,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(params): ApiQuery<MetricsParams>,
) -> Result<Json<MetricsView>, ApiError> {
    let to = match params.to.as_deref() {
        Some(t) => parse_time("to", t)?,
        None => now(),
    };
    let from = match params.from.as_deref() {
        Some(f) => parse_time("from", f)?,
        None => to.saturating_sub(DEFAULT_METRICS_WINDOW_S),
    };
    if from >= to {
        return Err(ApiError::Unprocessable("`from` must be before `to`".into()));
    }
    if to - from > MAX_METRICS_WINDOW_S {
        return Err(ApiError::Unprocessable(
            "the window is longer than 31 days".into(),
        ));
    }
    require_agent(&state, &caller.tenant_id, &id).await?;
    let mut rows = state
        .store
        .metrics_window(&caller.tenant_id, &id, from, to, MAX_METRICS_SAMPLES + 1)
        .await?;
    let truncated = rows.len() > MAX_METRICS_SAMPLES as usize;
    rows.truncate(MAX_METRICS_SAMPLES as usize);
    Ok(Json(MetricsView {
        agent_id: id,
        from: time(from),
        to: time(to),
        truncated,
        samples: rows.into_iter().map(SampleView::from).collect(),
    }))
}

// ----- software -------------------------------------------------------------------------

/// A host holding a matching package.
#[derive(Debug, Serialize, ToSchema)]
pub struct SoftwareHitView {
    pub agent_id: String,
    pub hostname: String,
    pub name: String,
    pub version: String,
    /// `dpkg`, `rpm`, `apk`, `pacman`, `flatpak`, `snap`, `registry` or `seed`.
    pub source: String,
    pub arch: Option<String>,
}

impl From<SoftwareHit> for SoftwareHitView {
    fn from(h: SoftwareHit) -> Self {
        SoftwareHitView {
            agent_id: h.agent_id,
            hostname: h.hostname,
            name: h.name,
            version: h.version,
            source: h.source,
            arch: h.arch,
        }
    }
}

/// A page of software search results.
#[derive(Debug, Serialize, ToSchema)]
pub struct SoftwareResults {
    pub total: u64,
    pub hits: Vec<SoftwareHitView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct SoftwareParams {
    /// Package name, exact, case-insensitive. Required.
    name: Option<String>,
    /// Only versions below this one, by the package source's own ordering (dpkg's, rpm's).
    below: Option<String>,
    /// Only packages from this source (`dpkg`, `rpm`, ...).
    source: Option<String>,
    /// Page size, 1 to 1000; 100 by default.
    limit: Option<u32>,
    offset: Option<u32>,
}

/// Fleet-wide software search: which hosts have `name` (below `below`).
#[utoipa::path(
    get, path = "/api/admin/software", tag = "admin",
    params(SoftwareParams),
    responses(
        (status = 200, description = "Hosts with the package, by hostname", body = SoftwareResults),
        (status = 401, description = "No valid admin token", body = muster_proto::api::ApiError),
        (status = 422, description = "No name, or a value out of bounds", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn software(
    caller: AdminCaller,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<SoftwareParams>,
) -> Result<Json<SoftwareResults>, ApiError> {
    let name = filter_text("name", params.name)?
        .ok_or_else(|| ApiError::Unprocessable("`name` is required".into()))?;
    let query = SoftwareQuery {
        name,
        below: filter_text("below", params.below)?,
        source: filter_text("source", params.source)?,
        limit: page_limit(params.limit)?,
        offset: params.offset.unwrap_or(0),
    };
    let page = state
        .store
        .software_search(&caller.tenant_id, &query)
        .await?;
    Ok(Json(SoftwareResults {
        total: page.total,
        hits: page.hits.into_iter().map(SoftwareHitView::from).collect(),
    }))
}

// ----- alerts ---------------------------------------------------------------------------

/// What an alert is about.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AlertKind {
    Cpu,
    Memory,
    Disk,
    /// No heartbeat for three intervals.
    Offline,
}

impl From<AlertMetric> for AlertKind {
    fn from(m: AlertMetric) -> Self {
        match m {
            AlertMetric::Cpu => AlertKind::Cpu,
            AlertMetric::Memory => AlertKind::Memory,
            AlertMetric::Disk => AlertKind::Disk,
            AlertMetric::Offline => AlertKind::Offline,
        }
    }
}

/// A host over a threshold, or offline.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertView {
    pub agent_id: String,
    pub hostname: String,
    pub metric: AlertKind,
    /// The latest figure, percent; absent for `offline`.
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    /// Since the first sample of the current run over the threshold, or since the third
    /// missed heartbeat was due.
    pub since: Timestamp,
}

impl From<Alert> for AlertView {
    fn from(a: Alert) -> Self {
        AlertView {
            agent_id: a.agent_id,
            hostname: a.hostname,
            metric: a.metric.into(),
            value: a.value,
            threshold: a.threshold,
            since: time(a.since),
        }
    }
}

/// The thresholds in force, percent.
#[derive(Debug, Serialize, ToSchema)]
pub struct ThresholdsView {
    pub cpu: f64,
    pub memory: f64,
    pub disk: f64,
}

impl From<Thresholds> for ThresholdsView {
    fn from(t: Thresholds) -> Self {
        ThresholdsView {
            cpu: t.cpu,
            memory: t.memory,
            disk: t.disk,
        }
    }
}

/// The alerts of one page of hosts.
#[derive(Debug, Serialize, ToSchema)]
pub struct AlertList {
    /// Hosts with at least one alert, in all pages.
    pub total_agents: u64,
    pub thresholds: ThresholdsView,
    pub alerts: Vec<AlertView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PageParams {
    /// Page size, 1 to 1000; 100 by default.
    limit: Option<u32>,
    offset: Option<u32>,
}

/// Hosts whose latest cpu/memory/disk figure is over its threshold, and offline hosts; a page
/// of hosts by hostname, each with its alerts.
#[utoipa::path(
    get, path = "/api/admin/alerts", tag = "admin",
    params(PageParams),
    responses(
        (status = 200, description = "The alerts", body = AlertList),
        (status = 401, description = "No valid admin token", body = muster_proto::api::ApiError),
        (status = 422, description = "A value out of bounds", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn alerts(
    caller: AdminCaller,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<PageParams>,
) -> Result<Json<AlertList>, ApiError> {
    let thresholds = state.limits.alert_thresholds;
    let page = state
        .store
        .alerts(
            &caller.tenant_id,
            &thresholds,
            now(),
            page_limit(params.limit)?,
            params.offset.unwrap_or(0),
        )
        .await?;
    Ok(Json(AlertList {
        total_agents: page.total_agents,
        thresholds: thresholds.into(),
        alerts: page.alerts.into_iter().map(AlertView::from).collect(),
    }))
}

// ----- tokens ---------------------------------------------------------------------------

/// What a token lets its holder do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TokenKindView {
    /// The admin API and the dashboard.
    Admin,
    /// Registers agents into the tenant.
    Enrol,
    /// One agent's own reports (issued by registration).
    Agent,
}

impl From<TokenKindView> for TokenKind {
    fn from(k: TokenKindView) -> Self {
        match k {
            TokenKindView::Admin => TokenKind::Admin,
            TokenKindView::Enrol => TokenKind::Enrol,
            TokenKindView::Agent => TokenKind::Agent,
        }
    }
}

impl From<TokenKind> for TokenKindView {
    fn from(k: TokenKind) -> Self {
        match k {
            TokenKind::Admin => TokenKindView::Admin,
            TokenKind::Enrol => TokenKindView::Enrol,
            TokenKind::Agent => TokenKindView::Agent,
        }
    }
}

/// A token as listed: never the token itself, nor its hash.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub id: String,
    pub kind: TokenKindView,
    pub name: Option<String>,
    /// The agent of an agent token.
    pub agent_id: Option<String>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// Admin and enrolment tokens, to the minute.
    pub last_used_at: Option<Timestamp>,
    /// Enrolment tokens: how many agents may register with it; `null`: any number.
    pub max_uses: Option<i64>,
    /// Enrolment tokens: how many agents have registered with it (an agent registering again
    /// with the same token is counted once).
    pub uses: i64,
}

impl From<TokenInfo> for TokenView {
    fn from(t: TokenInfo) -> Self {
        TokenView {
            id: t.id,
            kind: t.kind.into(),
            name: t.name,
            agent_id: t.agent_id,
            created_at: time(t.created_at),
            expires_at: t.expires_at.map(time),
            revoked_at: t.revoked_at.map(time),
            last_used_at: t.last_used_at.map(time),
            max_uses: t.max_uses,
            uses: t.uses,
        }
    }
}

/// A page of tokens, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenList {
    pub total: u64,
    pub tokens: Vec<TokenView>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct TokenParams {
    /// Only tokens of this kind.
    kind: Option<TokenKindView>,
    /// Only revoked (`true`) or live (`false`) tokens.
    revoked: Option<bool>,
    /// Page size, 1 to 1000; 100 by default.
    limit: Option<u32>,
    offset: Option<u32>,
}

/// The tenant's tokens: admin, enrolment and agent tokens.
#[utoipa::path(
    get, path = "/api/admin/tokens", tag = "admin",
    params(TokenParams),
    responses(
        (status = 200, description = "A page of tokens", body = TokenList),
        (status = 400, description = "A malformed query string", body = muster_proto::api::ApiError),
        (status = 401, description = "No valid admin token", body = muster_proto::api::ApiError),
        (status = 422, description = "A value out of bounds", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn list_tokens(
    caller: AdminCaller,
    State(state): State<AppState>,
    ApiQuery(params): ApiQuery<TokenParams>,
) -> Result<Json<TokenList>, ApiError> {
    let filter = TokenFilter {
        kind: params.kind.map(TokenKind::from),
        revoked: params.revoked,
        limit: page_limit(params.limit)?,
        offset: params.offset.unwrap_or(0),
    };
    let page = state.store.list_tokens(&caller.tenant_id, &filter).await?;
    Ok(Json(TokenList {
        total: page.total,
        tokens: page.tokens.into_iter().map(TokenView::from).collect(),
    }))
}

/// A token to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// `admin` or `enrol`.
    pub kind: TokenKindView,
    pub name: Option<String>,
    /// When it stops working; at most one of `expires_at` and `expires_in_s`. Neither: never.
    pub expires_at: Option<Timestamp>,
    pub expires_in_s: Option<u64>,
    /// Enrolment tokens only: how many agents may register with it (1: single-use). Absent:
    /// any number. An agent registering again with the same token is not a new use.
    pub max_uses: Option<i64>,
}

/// A token just created: the only answer that carries the token itself.
#[derive(Debug, Serialize, ToSchema)]
pub struct CreatedToken {
    #[serde(flatten)]
    pub info: TokenView,
    /// The bearer token. Shown once; the server keeps only its hash.
    pub token: String,
}

/// Creates an admin or enrolment token for the caller's tenant.
#[utoipa::path(
    post, path = "/api/admin/tokens", tag = "admin",
    request_body = CreateTokenRequest,
    responses(
        (status = 201, description = "The token, shown this once", body = CreatedToken),
        (status = 400, description = "Not JSON", body = muster_proto::api::ApiError),
        (status = 401, description = "No valid admin token", body = muster_proto::api::ApiError),
        (status = 422, description = "A bad kind, name, expiry or number of uses", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn create_token(
    caller: AdminCaller,
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<CreatedToken>), ApiError> {
    let now = now();
    let expires_at = match (request.expires_at, request.expires_in_s) {
        (Some(_), Some(_)) => {
            return Err(ApiError::Unprocessable(
                "give `expires_at` or `expires_in_s`, not both".into(),
            ));
        }
        (Some(at), None) => Some(at.as_second()),
        (None, Some(seconds)) => Some(expiry_in(now, seconds)?),
        (None, None) => None,
    };
    let limits = crate::admin::TokenLimits {
        expires_at,
        max_uses: request.max_uses,
    };
    let (info, token) = crate::admin::create_token(
        &state.store,
        &caller.tenant_id,
        request.kind.into(),
        request.name.as_deref(),
        limits,
        now,
    )
    .await?;
    tracing::info!(tenant_id = %caller.tenant_id, token_id = %info.id, kind = info.kind.as_str(), "token created");
    Ok((
        StatusCode::CREATED,
        Json(CreatedToken {
            info: info.into(),
            token: token.expose().to_owned(),
        }),
    ))
}

/// `now` plus `seconds`, as unix seconds a timestamp can hold; 422 otherwise.
pub fn expiry_in(now: i64, seconds: u64) -> Result<i64, ApiError> {
    i64::try_from(seconds)
        .ok()
        .and_then(|s| now.checked_add(s))
        .filter(|at| Timestamp::from_second(*at).is_ok())
        .ok_or_else(|| ApiError::Unprocessable("`expires_in_s` is too large".into()))
}

/// A token just revoked.
#[derive(Debug, Serialize, ToSchema)]
pub struct RevokedToken {
    pub token: TokenView,
    /// The token revoked is the one this request came with: the next request with it is 401.
    pub revoked_own_token: bool,
}

/// Revokes one of the tenant's tokens, of any kind (an agent's too: it must register again).
/// Revoking the token the request came with is allowed, and the answer says so.
#[utoipa::path(
    delete, path = "/api/admin/tokens/{id}", tag = "admin",
    params(("id" = String, Path, description = "The token's id")),
    responses(
        (status = 200, description = "The token, revoked", body = RevokedToken),
        (status = 401, description = "No valid admin token", body = muster_proto::api::ApiError),
        (status = 404, description = "No such token in the tenant", body = muster_proto::api::ApiError),
    ),
    security(("bearer" = []))
)]
pub async fn revoke_token(
    caller: AdminCaller,
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<RevokedToken>, ApiError> {
    let info = state
        .store
        .revoke_token(&caller.tenant_id, &id, now())
        .await?
        .ok_or_else(|| ApiError::NotFound("no such token".into()))?;
    // A cached agent token must stop working now, not when its entry ends.
    state.agent_tokens.clear();
    let own = info.id == caller.token_id;
    tracing::info!(tenant_id = %caller.tenant_id, token_id = %info.id, own, "token revoked");
    Ok(Json(RevokedToken {
        token: info.into(),
        revoked_own_token: own,
    }))
}
