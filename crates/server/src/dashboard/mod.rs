//! The dashboard: server-rendered HTML pages behind a login with an admin token.
//!
//! Pages: `/login` (and `POST /logout`), `/` the fleet, `/agents/{id}` one agent, `/software`
//! the fleet's software. Templates are askama's (`crates/server/templates/`), so everything
//! an agent reports — hostnames, package names — is escaped; nothing is marked safe. Charts
//! are inline SVG computed here ([`chart`]): the pages need no script at all, and the
//! stylesheet is the one asset, served from the binary (`/static/muster.css`).
//!
//! Every page reads one page of data (lists are paginated in the database), so a page costs
//! the same at 10 agents as at 10,000. A section whose data cannot be read (its store call
//! fails) says "unavailable" and is logged; the rest of the page still renders.

pub mod bundle;
pub mod chart;
pub mod commands;
pub mod format;
pub mod session;
pub mod view;

use std::time::Duration;

use askama::Template;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, SET_COOKIE};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::{Extension, Form, Router};
use serde::Deserialize;
use tracing::{error, warn};

use self::format::{Pager, page_number, percent, relative};
use self::session::Session;
use self::view::{InventoryView, ProcessOrder};
use crate::AppState;
use crate::error::ApiError;
use crate::store::dashboard::{
    AgentFilter, AgentPage, FleetOverview, InstalledPackage, InventoryChange, SoftwareHit,
    SoftwarePage, SoftwareQuery, Thresholds,
};
use crate::store::{AgentRecord, StoreError};

/// Default lifetime of a dashboard session: 12 hours.
pub const DEFAULT_SESSION_LIFETIME: Duration = Duration::from_secs(12 * 3600);
/// Rows per page of the fleet, packages and software search.
pub const PAGE_SIZE: u32 = 50;
/// Largest login or logout form body. A token is 53 bytes; the rest is slack.
const FORM_BODY_BYTES: usize = 4096;
/// Longest search text accepted in a query parameter.
const MAX_QUERY_CHARS: usize = 256;
/// A host's latest sample counts toward "over thresholds" when it is at most this old.
const RECENT_SAMPLE_S: i64 = 3600;
/// How far back the agent page's chart goes.
const CHART_SPAN_S: i64 = 24 * 3600;
/// Inventory changes the agent page lists.
const HISTORY_ROWS: u32 = 50;
/// Deepest page number accepted (offsets stay far inside `u32`).
const MAX_PAGE: u32 = 100_000;

/// How the dashboard behaves.
#[derive(Debug, Clone)]
pub struct DashboardConfig {
    /// How long a session lasts after login.
    pub session_lifetime: Duration,
    /// Figures above which a host counts as over its thresholds.
    pub thresholds: Thresholds,
}

impl Default for DashboardConfig {
    fn default() -> Self {
        DashboardConfig {
            session_lifetime: DEFAULT_SESSION_LIFETIME,
            thresholds: Thresholds::default(),
        }
    }
}

/// The dashboard's routes, at the root, with the default configuration.
pub fn router() -> Router<AppState> {
    router_with(DashboardConfig::default())
}

/// The dashboard's routes, at the root.
pub fn router_with(config: DashboardConfig) -> Router<AppState> {
    Router::new()
        .route("/", get(fleet))
        .route("/agents/{id}", get(agent))
        .route("/software", get(software))
        .route(
            "/commands",
            get(commands::list)
                .post(commands::create)
                .layer(DefaultBodyLimit::max(commands::COMMAND_FORM_BYTES)),
        )
        .route("/commands/{id}", get(commands::show))
        .route("/commands/{id}/cancel", post(commands::cancel))
        .route("/bundle", get(bundle::page).post(bundle::download))
        .route("/login", get(login_page).post(login))
        // A logout link followed (rather than the form posted) changes nothing.
        .route("/logout", post(logout).get(|| async { Redirect::to("/") }))
        .route("/static/muster.css", get(stylesheet))
        .layer(DefaultBodyLimit::max(FORM_BODY_BYTES))
        .layer(Extension(config))
        .layer(axum::middleware::map_response(security_headers))
}

/// What every dashboard answer carries: no framing, no sniffing, no scripts, nothing cached
/// that a later user of the browser could read back.
async fn security_headers(mut response: Response) -> Response {
    let headers = response.headers_mut();
    let fixed: [(HeaderName, &str); 4] = [
        (
            HeaderName::from_static("content-security-policy"),
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; \
             frame-ancestors 'none'; base-uri 'none'",
        ),
        (HeaderName::from_static("x-content-type-options"), "nosniff"),
        (HeaderName::from_static("x-frame-options"), "DENY"),
        (HeaderName::from_static("referrer-policy"), "same-origin"),
    ];
    for (name, value) in fixed {
        headers.insert(name, HeaderValue::from_static(value));
    }
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

async fn stylesheet() -> impl IntoResponse {
    (
        [
            (CONTENT_TYPE, "text/css; charset=utf-8"),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        include_str!("../../templates/muster.css"),
    )
}

/// An error shown as a page, with its status.
#[derive(Debug)]
pub struct PageError {
    pub status: StatusCode,
    pub message: String,
}

impl PageError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> PageError {
        PageError {
            status,
            message: message.into(),
        }
    }

    pub(crate) fn bad_request(message: impl Into<String>) -> PageError {
        PageError::new(StatusCode::BAD_REQUEST, message)
    }

    fn not_found() -> PageError {
        PageError::new(StatusCode::NOT_FOUND, "there is no such agent")
    }

    /// A failure inside the server: logged here, shown as a bare "internal error".
    pub fn internal(cause: impl std::fmt::Display) -> PageError {
        error!(error = %cause, "dashboard request failed");
        PageError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

impl From<ApiError> for PageError {
    fn from(error: ApiError) -> PageError {
        match error {
            ApiError::Internal(cause) => PageError::internal(cause),
            ApiError::Unavailable(cause) => {
                warn!(error = %cause, "dashboard request refused");
                PageError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the database is busy; try again shortly",
                )
            }
            other => PageError::new(other.status(), other.to_string()),
        }
    }
}

impl From<StoreError> for PageError {
    fn from(error: StoreError) -> PageError {
        ApiError::from(error).into()
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error").to_owned();
        let page = ErrorPage {
            nav: Nav::default(),
            title,
            status: self.status.as_u16(),
            message: self.message,
        };
        let body = page
            .render()
            .unwrap_or_else(|_| "<!doctype html><title>Error</title><p>error".to_owned());
        (self.status, Html(body)).into_response()
    }
}

/// Renders a page template; a template that fails to render is a bug, answered 500.
fn render(page: &impl Template) -> Result<Html<String>, PageError> {
    page.render().map(Html).map_err(PageError::internal)
}

/// The query string as `T`; one that does not fit is a 400 page, not axum's plain text.
fn query<T>(query: Result<Query<T>, QueryRejection>) -> Result<T, PageError> {
    query
        .map(|Query(q)| q)
        .map_err(|e| PageError::bad_request(e.body_text()))
}

/// A search text from the query string: trimmed, empty as absent, bounded.
fn search_text(raw: Option<&str>, what: &str) -> Result<Option<String>, PageError> {
    let Some(text) = raw.map(str::trim).filter(|t| !t.is_empty()) else {
        return Ok(None);
    };
    if text.chars().count() > MAX_QUERY_CHARS || text.chars().any(char::is_control) {
        return Err(PageError::bad_request(format!(
            "the {what} must be at most {MAX_QUERY_CHARS} printable characters"
        )));
    }
    Ok(Some(text.to_owned()))
}

fn page(raw: Option<&str>) -> Result<u32, PageError> {
    page_number(raw, MAX_PAGE).map_err(PageError::bad_request)
}

/// A section's data, or `None` (shown as "unavailable") when its store call failed.
fn section<T>(what: &'static str, result: Result<T, StoreError>) -> Option<T> {
    result
        .inspect_err(|e| warn!(section = what, error = %e, "dashboard section unavailable"))
        .ok()
}

fn now() -> i64 {
    jiff::Timestamp::now().as_second()
}

/// The header's navigation: present on pages seen while logged in.
#[derive(Debug, Clone, Default)]
pub struct Nav {
    pub logged_in: bool,
    pub form_token: String,
    /// Which item is the current page: `fleet`, `software`, `commands`.
    pub current: &'static str,
}

impl Nav {
    pub(crate) fn of(session: &Session, current: &'static str) -> Nav {
        Nav {
            logged_in: true,
            form_token: session.form_token.clone(),
            current,
        }
    }
}

#[derive(Debug, Template)]
#[template(path = "error.html")]
struct ErrorPage {
    nav: Nav,
    title: String,
    status: u16,
    message: String,
}

// ---- login ----

#[derive(Debug, Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: Nav,
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    #[serde(default)]
    token: String,
}

#[derive(Debug, Deserialize)]
struct LogoutForm {
    #[serde(default)]
    form_token: String,
}

async fn login_page(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match session::find(&headers, &state).await {
        Ok(Some(_)) => Redirect::to("/").into_response(),
        Ok(None) => login_form(StatusCode::OK, None),
        Err(error) => error.into_response(),
    }
}

fn login_form(status: StatusCode, error: Option<String>) -> Response {
    let page = LoginPage {
        nav: Nav::default(),
        error,
    };
    match render(&page) {
        Ok(html) => (status, html).into_response(),
        Err(error) => error.into_response(),
    }
}

async fn login(
    State(state): State<AppState>,
    Extension(config): Extension<DashboardConfig>,
    headers: HeaderMap,
    form: Result<Form<LoginForm>, FormRejection>,
) -> Response {
    if !session::same_origin(&headers) {
        return PageError::new(StatusCode::FORBIDDEN, "a cross-site login was refused")
            .into_response();
    }
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => {
            return PageError::new(rejection.status(), rejection.body_text()).into_response();
        }
    };
    let secure = session::came_over_https(&headers);
    match session::open(&state, &config, &form.token, secure).await {
        Ok(cookie) => {
            let mut response = Redirect::to("/").into_response();
            response.headers_mut().insert(SET_COOKIE, cookie);
            response
        }
        Err(error) if error.status == StatusCode::UNAUTHORIZED => {
            login_form(StatusCode::UNAUTHORIZED, Some(error.message))
        }
        Err(error) => error.into_response(),
    }
}

async fn logout(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<LogoutForm>, FormRejection>,
) -> Response {
    if !session::same_origin(&headers) {
        return PageError::new(StatusCode::FORBIDDEN, "a cross-site logout was refused")
            .into_response();
    }
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => {
            return PageError::new(rejection.status(), rejection.body_text()).into_response();
        }
    };
    let session = match session::find(&headers, &state).await {
        Ok(Some(session)) => session,
        Ok(None) => return session::to_login(&headers),
        Err(error) => return error.into_response(),
    };
    if !session.form_token_matches(&form.form_token) {
        return PageError::new(StatusCode::FORBIDDEN, "the form is stale; reload the page")
            .into_response();
    }
    if let Err(error) = session::close(&state, &session).await {
        return error.into_response();
    }
    let mut response = Redirect::to("/login").into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        session::clear_cookie(session::came_over_https(&headers)),
    );
    response
}

// ---- the fleet ----

#[derive(Debug, Deserialize)]
struct FleetQuery {
    q: Option<String>,
    os: Option<String>,
    online: Option<String>,
    page: Option<String>,
}

#[derive(Debug, Template)]
#[template(path = "fleet.html")]
struct FleetPage {
    nav: Nav,
    q: String,
    os: String,
    online: String,
    overview: Option<FleetOverview>,
    /// The OS mix: name, agents, link to the fleet filtered by it.
    os_links: Vec<(String, u64, String)>,
    /// Online and offline counts, when the listing answers.
    online_count: Option<(u64, u64)>,
    thresholds: Thresholds,
    rows: Option<Vec<FleetRow>>,
    pager: Option<Pager>,
}

#[derive(Debug)]
struct FleetRow {
    href: String,
    hostname: String,
    os: String,
    online: bool,
    last_seen: String,
    last_seen_at: String,
    cpu: Figure,
    memory: Figure,
    disk: Figure,
}

/// A percentage and whether it is over its threshold.
#[derive(Debug)]
struct Figure {
    text: String,
    over: bool,
}

impl Figure {
    fn new(value: Option<f64>, threshold: f64) -> Figure {
        Figure {
            text: percent(value),
            over: value.is_some_and(|v| v > threshold),
        }
    }
}

/// The agent page's path.
fn agent_href(id: &str) -> String {
    format!("/agents/{}", format::percent_encode(id))
}

fn os_label(agent: &AgentRecord) -> String {
    match (&agent.os_name, &agent.os_version) {
        (Some(name), Some(version)) => format!("{name} {version}"),
        (Some(name), None) => name.clone(),
        (None, _) => agent.platform.clone().unwrap_or_default(),
    }
}

async fn fleet(
    session: Session,
    State(state): State<AppState>,
    Extension(config): Extension<DashboardConfig>,
    params: Result<Query<FleetQuery>, QueryRejection>,
) -> Result<Html<String>, PageError> {
    let params = query(params)?;
    let q = search_text(params.q.as_deref(), "hostname pattern")?;
    let os = search_text(params.os.as_deref(), "operating system")?;
    let online = match params.online.as_deref().map(str::trim).unwrap_or("") {
        "" | "any" => None,
        "online" | "yes" | "true" => Some(true),
        "offline" | "no" | "false" => Some(false),
        _ => {
            return Err(PageError::bad_request(
                "online must be `online` or `offline`",
            ));
        }
    };
    let page_number = page(params.page.as_deref())?;
    let now = now();
    let filter = AgentFilter {
        hostname: q.clone(),
        os: os.clone(),
        online,
        limit: PAGE_SIZE,
        offset: (page_number - 1) * PAGE_SIZE,
    };
    let online_only = AgentFilter {
        online: Some(true),
        limit: 1,
        ..AgentFilter::default()
    };
    let tenant = &session.tenant_id;
    let store = &state.store;
    let (listed, overview, online_listed) = tokio::join!(
        store.list_agents_page(tenant, &filter, now),
        store.fleet_overview(tenant, now - RECENT_SAMPLE_S, config.thresholds),
        store.list_agents_page(tenant, &online_only, now),
    );
    let listed: Option<AgentPage> = section("fleet list", listed);
    let overview = section("fleet overview", overview);
    let online_count = section("online count", online_listed)
        .zip(overview.as_ref())
        .map(|(online, overview)| (online.total, overview.total.saturating_sub(online.total)));
    let q_text = q.unwrap_or_default();
    let os_text = os.unwrap_or_default();
    let online_text = match online {
        None => "",
        Some(true) => "online",
        Some(false) => "offline",
    };
    let thresholds = config.thresholds;
    let (rows, pager) = match listed {
        Some(listed) => {
            let pager = Pager::new(
                "/",
                &[("q", &q_text), ("os", &os_text), ("online", online_text)],
                "page",
                page_number,
                PAGE_SIZE,
                listed.total,
                listed.agents.len(),
            );
            let rows = listed
                .agents
                .into_iter()
                .map(|a| FleetRow {
                    os: os_label(&a.agent),
                    last_seen: relative(now, a.agent.last_seen),
                    last_seen_at: a.agent.last_seen.map(format::datetime).unwrap_or_default(),
                    online: a.online,
                    cpu: Figure::new(a.cpu_usage, thresholds.cpu),
                    memory: Figure::new(a.memory_usage, thresholds.memory),
                    disk: Figure::new(a.disk_usage, thresholds.disk),
                    href: agent_href(&a.agent.id),
                    hostname: a.agent.hostname,
                })
                .collect();
            (Some(rows), Some(pager))
        }
        None => (None, None),
    };
    let os_links = overview
        .iter()
        .flat_map(|o| &o.os_mix)
        .map(|(name, count)| {
            let href = format!("/{}", format::query_string(&[("os", name)]));
            (name.clone(), *count, href)
        })
        .collect();
    render(&FleetPage {
        nav: Nav::of(&session, "fleet"),
        os_links,
        q: q_text,
        os: os_text,
        online: online_text.to_owned(),
        overview,
        online_count,
        thresholds,
        rows,
        pager,
    })
}

// ---- one agent ----

#[derive(Debug, Deserialize)]
struct AgentQuery {
    /// Package search text.
    pkg: Option<String>,
    /// Page of packages.
    pkg_page: Option<String>,
    /// Process order: `cpu` (default) or `memory`.
    procs: Option<String>,
}

#[derive(Debug, Template)]
#[template(path = "agent.html")]
struct AgentPageView {
    nav: Nav,
    hostname: String,
    /// What registration and heartbeats say, whatever the inventory holds.
    registered: Vec<view::Fact>,
    online: Option<bool>,
    inventory: InventoryState,
    chart: Option<chart::Chart>,
    packages: Option<PackageSection>,
    history: Option<Vec<HistoryRow>>,
    procs: &'static str,
    /// This page's path, and the links that re-order its processes.
    packages_action: String,
    /// The command form's target, and the list of the agent's commands.
    form_agent: Option<String>,
    commands_href: String,
    cpu_href: String,
    memory_href: String,
}

/// The agent page's inventory, or why there is none.
#[derive(Debug)]
enum InventoryState {
    Shown(Box<InventoryView>, String),
    None,
    Unreadable,
    Unavailable,
}

impl InventoryState {
    fn view(&self) -> Option<&InventoryView> {
        match self {
            InventoryState::Shown(view, _) => Some(view),
            _ => None,
        }
    }
}

#[derive(Debug)]
struct PackageSection {
    search: String,
    rows: Vec<InstalledPackage>,
    pager: Pager,
}

#[derive(Debug)]
struct HistoryRow {
    at: String,
    category: String,
    change: String,
    item: String,
    old: String,
    new: String,
}

impl From<InventoryChange> for HistoryRow {
    fn from(c: InventoryChange) -> HistoryRow {
        HistoryRow {
            at: format::datetime(c.at),
            category: c.category,
            change: c.change,
            item: c.item,
            old: c.old.unwrap_or_default(),
            new: c.new.unwrap_or_default(),
        }
    }
}

async fn agent(
    session: Session,
    State(state): State<AppState>,
    id: Result<Path<String>, PathRejection>,
    params: Result<Query<AgentQuery>, QueryRejection>,
) -> Result<Html<String>, PageError> {
    let Path(id) = id.map_err(|e| PageError::bad_request(e.body_text()))?;
    let params = query(params)?;
    let search = search_text(params.pkg.as_deref(), "package search")?;
    let package_page = page(params.pkg_page.as_deref())?;
    let order = match params.procs.as_deref().unwrap_or("cpu") {
        "cpu" | "" => ProcessOrder::Cpu,
        "memory" => ProcessOrder::Memory,
        _ => return Err(PageError::bad_request("procs must be `cpu` or `memory`")),
    };
    let tenant = &session.tenant_id;
    let store = &state.store;
    let agent = store
        .agent(tenant, &id)
        .await?
        .ok_or_else(PageError::not_found)?;
    let now = now();
    let offset = (package_page - 1) * PAGE_SIZE;
    let (summary, inventory, metrics, software, history) = tokio::join!(
        store.agent_summary(tenant, &id, now),
        store.inventory(tenant, &id),
        store.metrics(tenant, &id, now - CHART_SPAN_S, now + 1),
        store.agent_software(tenant, &id, search.as_deref(), PAGE_SIZE, offset),
        store.inventory_history(tenant, &id, None, HISTORY_ROWS),
    );
    let online = section("agent summary", summary)
        .flatten()
        .map(|s| s.online);
    let inventory = match section("inventory", inventory) {
        None => InventoryState::Unavailable,
        Some(None) => InventoryState::None,
        Some(Some(stored)) => match view::read(&stored.report) {
            Ok(report) => InventoryState::Shown(
                Box::new(view::inventory(&report, order)),
                relative(now, Some(stored.updated_at)),
            ),
            Err(e) => {
                warn!(agent_id = %id, error = %e, "a stored inventory does not parse");
                InventoryState::Unreadable
            }
        },
    };
    let chart =
        section("telemetry", metrics).map(|m| chart::telemetry(&m, now - CHART_SPAN_S, now));
    // The software index is the source of the package list; while it cannot answer, the
    // inventory's own packages stand in.
    let software = match software {
        Ok(found) => Some(found),
        Err(e) => {
            warn!(section = "packages", error = %e, "software index unavailable; listing the inventory's packages");
            inventory
                .view()
                .map(|v| view::package_page(&v.packages, search.as_deref(), PAGE_SIZE, offset))
        }
    };
    let search_text = search.unwrap_or_default();
    let procs = match order {
        ProcessOrder::Cpu => "cpu",
        ProcessOrder::Memory => "memory",
    };
    let packages = software.map(|(total, rows)| PackageSection {
        pager: Pager::new(
            &agent_href(&id),
            &[
                ("pkg", &search_text),
                ("procs", if procs == "cpu" { "" } else { procs }),
            ],
            "pkg_page",
            package_page,
            PAGE_SIZE,
            total,
            rows.len(),
        ),
        search: search_text.clone(),
        rows,
    });
    let history = section("inventory history", history)
        .map(|changes| changes.into_iter().map(HistoryRow::from).collect());
    let mut registered = Vec::new();
    let mut fact = |label: &'static str, value: Option<String>| {
        if let Some(value) = value.filter(|v| !v.is_empty()) {
            registered.push(view::Fact { label, value });
        }
    };
    // What registration said of the system, only while no inventory says more.
    if inventory.view().is_none_or(|v| v.system.is_empty()) {
        fact("Operating system", Some(os_label(&agent)));
        fact("Platform", agent.platform.clone());
        fact("Architecture", agent.arch.clone());
    }
    fact("Agent version", agent.agent_version.clone());
    fact("Registered", Some(format::datetime(agent.created_at)));
    fact(
        "Last seen",
        Some(match agent.last_seen {
            Some(at) => format!("{} ({})", relative(now, Some(at)), format::datetime(at)),
            None => "never".to_owned(),
        }),
    );
    let path = agent_href(&id);
    let with_procs = |order: &str| {
        let current_page = package_page.to_string();
        let page_param = if package_page > 1 {
            current_page.as_str()
        } else {
            ""
        };
        format!(
            "{path}{}",
            format::query_string(&[
                ("pkg", &search_text),
                ("pkg_page", page_param),
                ("procs", order)
            ])
        )
    };
    render(&AgentPageView {
        nav: Nav::of(&session, "fleet"),
        cpu_href: with_procs(""),
        memory_href: with_procs("memory"),
        packages_action: path.clone(),
        form_agent: Some(id.clone()),
        commands_href: format!("/commands?agent_id={id}"),
        hostname: agent.hostname,
        registered,
        online,
        inventory,
        chart,
        packages,
        history,
        procs,
    })
}

// ---- fleet software ----

#[derive(Debug, Deserialize)]
struct SoftwareParams {
    name: Option<String>,
    below: Option<String>,
    page: Option<String>,
}

#[derive(Debug, Template)]
#[template(path = "software.html")]
struct SoftwareView {
    nav: Nav,
    name: String,
    below: String,
    /// `None` before a search; `Some(None)` when the search could not run.
    results: Option<Option<SoftwarePage>>,
    /// The page's hits with the path of each host's page.
    hits: Vec<(String, SoftwareHit)>,
    pager: Option<Pager>,
}

async fn software(
    session: Session,
    State(state): State<AppState>,
    params: Result<Query<SoftwareParams>, QueryRejection>,
) -> Result<Html<String>, PageError> {
    let params = query(params)?;
    let name = search_text(params.name.as_deref(), "package name")?;
    let below = search_text(params.below.as_deref(), "version")?;
    let page_number = page(params.page.as_deref())?;
    let mut results = None;
    let mut pager = None;
    if let Some(name) = &name {
        let found = state
            .store
            .software_search(
                &session.tenant_id,
                &SoftwareQuery {
                    name: name.clone(),
                    below: below.clone(),
                    source: None,
                    limit: PAGE_SIZE,
                    offset: (page_number - 1) * PAGE_SIZE,
                },
            )
            .await;
        let found = section("software search", found);
        if let Some(found) = &found {
            pager = Some(Pager::new(
                "/software",
                &[("name", name), ("below", below.as_deref().unwrap_or(""))],
                "page",
                page_number,
                PAGE_SIZE,
                found.total,
                found.hits.len(),
            ));
        }
        results = Some(found);
    }
    let hits = results
        .iter()
        .flatten()
        .flat_map(|found| &found.hits)
        .map(|hit| (agent_href(&hit.agent_id), hit.clone()))
        .collect();
    render(&SoftwareView {
        nav: Nav::of(&session, "software"),
        hits,
        name: name.unwrap_or_default(),
        below: below.unwrap_or_default(),
        results,
        pager,
    })
}
