//! The dashboard's commands: the list (with a form that sends a command to every agent
//! matching a filter), one command's page (each agent's state, output and timings, and a
//! cancel button), and the form on an agent's page. Forms are posted with the session's form
//! token (the logout form's scheme) from the same origin; creation and cancellation go
//! through `commands_api`, so the rules are the admin API's.

use std::collections::BTreeMap;

use askama::Template;
use axum::Form;
use axum::extract::rejection::{FormRejection, PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Redirect, Response};
use serde::Deserialize;
use serde_json::{Value, json};

use super::format::{Pager, relative};
use super::session::{self, Session};
use super::{Nav, PAGE_SIZE, PageError, agent_href, now, page, query, render};
use crate::AppState;
use crate::commands::TargetState;
use crate::commands_api::{self, CreateCommandRequest, TargetFilter, TargetView};
use crate::store::commands::CommandFilter;

/// Largest command form: a script body of up to `commands_api::MAX_COMMAND_LEN` and the rest.
pub const COMMAND_FORM_BYTES: usize = commands_api::MAX_COMMAND_LEN * 2 + 16 * 1024;

fn command_href(id: i64) -> String {
    format!("/commands/{id}")
}

/// The fields of the command form (all text, as browsers post them).
#[derive(Debug, Default, Deserialize)]
pub struct CommandForm {
    #[serde(default)]
    form_token: String,
    /// One agent (the agent page's form), or else the filter below.
    #[serde(default)]
    agent_id: String,
    #[serde(default)]
    hostname: String,
    #[serde(default)]
    os: String,
    /// ``, `true` or `false`.
    #[serde(default)]
    online: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    command: String,
    /// `exec` arguments, one per line.
    #[serde(default)]
    args: String,
    #[serde(default)]
    interpreter: String,
    #[serde(default)]
    priority: String,
    #[serde(default)]
    timeout_s: String,
    /// A checkbox: present when ticked.
    maintenance_window: Option<String>,
    /// Lock names, comma-separated.
    #[serde(default)]
    locks: String,
    package_manager: Option<String>,
}

fn number<T: std::str::FromStr>(text: &str, what: &str) -> Result<Option<T>, PageError> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| {
        PageError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("{what} must be a number"),
        )
    })
}

impl CommandForm {
    fn request(&self) -> Result<CreateCommandRequest, PageError> {
        let agent_id = Some(self.agent_id.trim().to_owned()).filter(|a| !a.is_empty());
        let filter = agent_id.is_none().then(|| TargetFilter {
            hostname: Some(self.hostname.clone()).filter(|h| !h.trim().is_empty()),
            os: Some(self.os.clone()).filter(|o| !o.trim().is_empty()),
            online: match self.online.as_str() {
                "true" => Some(true),
                "false" => Some(false),
                _ => None,
            },
        });
        let mut parameters = serde_json::Map::new();
        let args: Vec<&str> = self
            .args
            .lines()
            .map(|l| l.trim_end_matches('\r'))
            .filter(|l| !l.is_empty())
            .collect();
        if !args.is_empty() {
            parameters.insert("args".into(), json!(args));
        }
        if !self.interpreter.trim().is_empty() {
            parameters.insert("interpreter".into(), json!(self.interpreter.trim()));
        }
        Ok(CreateCommandRequest {
            agent_id,
            agent_ids: None,
            filter,
            kind: self.kind.trim().to_owned(),
            // A script keeps its body as typed, but browsers send CRLF.
            command: self.command.replace("\r\n", "\n"),
            parameters: Value::Object(parameters),
            priority: number(&self.priority, "the priority")?,
            scheduled_for: None,
            timeout_s: number(&self.timeout_s, "the timeout")?,
            maintenance_window: self.maintenance_window.is_some(),
            locks: self
                .locks
                .split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect(),
            package_manager: self.package_manager.is_some(),
            expires_at: None,
        })
    }
}

/// A posted form, parsed, with the session it came from: same origin, logged in, and its
/// `form_token` (read by `token`) the session's. Else the answer to give instead.
pub(super) async fn posted_form<T>(
    headers: &HeaderMap,
    state: &AppState,
    form: Result<Form<T>, FormRejection>,
    token: impl Fn(&T) -> &str,
) -> Result<(T, Session), Response> {
    let form = match form {
        Ok(Form(form)) => form,
        Err(rejection) => {
            return Err(PageError::new(rejection.status(), rejection.body_text()).into_response());
        }
    };
    if !session::same_origin(headers) {
        return Err(
            PageError::new(StatusCode::FORBIDDEN, "a cross-site form was refused").into_response(),
        );
    }
    let session = match session::find(headers, state).await {
        Ok(Some(session)) => session,
        Ok(None) => return Err(session::to_login(headers)),
        Err(error) => return Err(error.into_response()),
    };
    if !session.form_token_matches(token(&form)) {
        return Err(
            PageError::new(StatusCode::FORBIDDEN, "the form is stale; reload the page")
                .into_response(),
        );
    }
    Ok((form, session))
}

/// `POST /commands`: creates the command, then shows it.
pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<CommandForm>, FormRejection>,
) -> Response {
    let (form, session) = match posted_form(&headers, &state, form, |f| &f.form_token).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    let request = match form.request() {
        Ok(request) => request,
        Err(error) => return error.into_response(),
    };
    match commands_api::create(&state, &session.tenant_id, None, &request).await {
        Ok(id) => Redirect::to(&command_href(id)).into_response(),
        Err(error) => PageError::from(error).into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct CancelForm {
    #[serde(default)]
    form_token: String,
}

/// `POST /commands/{id}/cancel`.
pub async fn cancel(
    State(state): State<AppState>,
    headers: HeaderMap,
    id: Result<Path<i64>, PathRejection>,
    form: Result<Form<CancelForm>, FormRejection>,
) -> Response {
    let Ok(Path(id)) = id else {
        return PageError::new(StatusCode::NOT_FOUND, "there is no such command").into_response();
    };
    let (_, session) = match posted_form(&headers, &state, form, |f| &f.form_token).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    match commands_api::cancel(&state, &session.tenant_id, id).await {
        Ok(Some(_)) => Redirect::to(&command_href(id)).into_response(),
        Ok(None) => {
            PageError::new(StatusCode::NOT_FOUND, "there is no such command").into_response()
        }
        Err(error) => PageError::from(error).into_response(),
    }
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    agent_id: Option<String>,
    page: Option<String>,
}

/// A command in the list.
#[derive(Debug)]
pub struct CommandRow {
    pub href: String,
    pub id: i64,
    pub kind: String,
    pub command: String,
    pub created: String,
    pub targets: i64,
    /// "3 succeeded, 1 running", by state.
    pub states: String,
}

fn state_summary(states: &BTreeMap<String, i64>) -> String {
    states
        .iter()
        .map(|(state, n)| format!("{n} {state}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The first line of a command, shortened for a list.
fn short(command: &str) -> String {
    let line = command.lines().next().unwrap_or_default();
    let mut shown: String = line.chars().take(80).collect();
    if shown.len() < command.len() {
        shown.push('…');
    }
    shown
}

#[derive(Debug, Template)]
#[template(path = "commands.html")]
struct ListPage {
    nav: Nav,
    /// The form targets a filter, not one agent.
    form_agent: Option<String>,
    agent_id: String,
    rows: Option<Vec<CommandRow>>,
    total: u64,
    pager: Option<Pager>,
}

/// `GET /commands`: the tenant's commands, newest first, and the form for a filter.
pub async fn list(
    session: Session,
    State(state): State<AppState>,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Html<String>, PageError> {
    let params = query(params)?;
    let page_number = page(params.page.as_deref())?;
    let agent_id = params
        .agent_id
        .map(|a| a.trim().to_owned())
        .filter(|a| !a.is_empty() && a.len() <= 255);
    let found = state
        .store
        .list_commands(
            &session.tenant_id,
            &CommandFilter {
                agent_id: agent_id.clone(),
                state: None,
                limit: PAGE_SIZE,
                offset: (page_number - 1) * PAGE_SIZE,
            },
        )
        .await;
    let found = super::section("commands", found);
    let now = now();
    let agent_text = agent_id.unwrap_or_default();
    let pager = found.as_ref().map(|f| {
        Pager::new(
            "/commands",
            &[("agent_id", &agent_text)],
            "page",
            page_number,
            PAGE_SIZE,
            f.total,
            f.commands.len(),
        )
    });
    let total = found.as_ref().map_or(0, |f| f.total);
    let rows = found.map(|f| {
        f.commands
            .into_iter()
            .map(|s| CommandRow {
                href: command_href(s.command.id),
                id: s.command.id,
                kind: s.command.kind.clone(),
                command: short(&s.command.command),
                created: relative(now, Some(s.command.created_at)),
                targets: s.command.target_count,
                states: state_summary(&s.states.into_iter().collect()),
            })
            .collect()
    });
    render(&ListPage {
        nav: Nav::of(&session, "commands"),
        form_agent: None,
        agent_id: agent_text,
        rows,
        total,
        pager,
    })
}

/// One agent's row on a command's page.
#[derive(Debug)]
pub struct TargetRow {
    pub href: String,
    pub target: TargetView,
    pub host: String,
    pub delivered: String,
    pub started: String,
    pub finished: String,
    /// Seconds from start to finish, when both are known.
    pub duration: String,
    pub badge: &'static str,
}

#[derive(Debug, Template)]
#[template(path = "command.html")]
struct CommandPage {
    nav: Nav,
    id: i64,
    kind: String,
    command: String,
    parameters: String,
    priority: i64,
    timeout: String,
    locks: String,
    flags: String,
    created: String,
    states: String,
    /// Some target has not ended: the cancel button is shown.
    cancellable: bool,
    cancel_action: String,
    rows: Vec<TargetRow>,
    pager: Pager,
}

/// `GET /commands/{id}?page=N`: the page of its agents.
#[derive(Debug, Deserialize)]
pub struct ShowParams {
    page: Option<String>,
}

fn when(t: Option<jiff::Timestamp>) -> String {
    t.map(|t| t.strftime("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| "—".to_owned())
}

/// `GET /commands/{id}`.
pub async fn show(
    session: Session,
    State(state): State<AppState>,
    id: Result<Path<i64>, PathRejection>,
    params: Result<Query<ShowParams>, QueryRejection>,
) -> Result<Html<String>, PageError> {
    let params = query(params)?;
    let not_found = || PageError::new(StatusCode::NOT_FOUND, "there is no such command");
    let Path(id) = id.map_err(|_| not_found())?;
    let page_number = page(params.page.as_deref())?;
    let targets = commands_api::TargetPage {
        limit: PAGE_SIZE,
        offset: (page_number - 1) * PAGE_SIZE,
    };
    let detail = commands_api::detail(&state, &session.tenant_id, id, targets)
        .await?
        .ok_or_else(not_found)?;
    let pager = Pager::new(
        &format!("/commands/{id}"),
        &[],
        "page",
        page_number,
        PAGE_SIZE,
        u64::try_from(detail.command.target_count).unwrap_or_default(),
        detail.targets.len(),
    );
    let c = detail.command;
    let rows: Vec<TargetRow> = detail
        .targets
        .into_iter()
        .map(|t| TargetRow {
            href: agent_href(&t.agent_id),
            host: t.hostname.clone().unwrap_or_else(|| t.agent_id.clone()),
            delivered: when(t.delivered_at),
            started: when(t.started_at),
            finished: when(t.finished_at),
            duration: match (t.started_at, t.finished_at) {
                (Some(s), Some(f)) => format!("{} s", f.as_second() - s.as_second()),
                _ => String::new(),
            },
            badge: match t.state.as_str() {
                "succeeded" => "ok",
                "failed" | "timed_out" | "rejected" => "bad",
                _ => "",
            },
            target: t,
        })
        .collect();
    // Over every target, not only this page's.
    let cancellable = c.states.iter().any(|(state, n)| {
        *n > 0 && !TargetState::parse(state).is_some_and(TargetState::is_terminal)
    });
    let mut flags = Vec::new();
    if c.maintenance_window {
        flags.push("maintenance window");
    }
    if c.package_manager {
        flags.push("package manager");
    }
    render(&CommandPage {
        nav: Nav::of(&session, "commands"),
        id: c.id,
        kind: c.kind,
        command: c.command,
        parameters: serde_json::to_string_pretty(&c.parameters).unwrap_or_default(),
        priority: c.priority,
        timeout: c
            .timeout_s
            .map(|t| format!("{t} s"))
            .unwrap_or_else(|| "the agent's default".into()),
        locks: c.locks.join(", "),
        flags: flags.join(", "),
        created: when(Some(c.created_at)),
        states: state_summary(&c.states),
        cancellable,
        cancel_action: format!("/commands/{id}/cancel"),
        rows,
        pager,
    })
}
