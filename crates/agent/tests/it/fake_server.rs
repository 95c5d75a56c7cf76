//! A small agents'-API server for the agent's tests, built on the same `muster_proto` types
//! the real server uses: it enrols, authenticates, deduplicates by `report_id`, checks delta
//! bases, and records what it received. Tests can make it unavailable (503) or forget every
//! agent token (401).

// Handlers answer errors as ready responses; their size does not matter in a test server.
#![allow(clippy::result_large_err)]

use std::collections::{HashMap, HashSet};
use std::io::Read;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::{Path, Query};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use muster_proto::api::{
    ApiError, Command, CommandStatusUpdate, Heartbeat, HeartbeatResponse, InventoryAck,
    InventoryUpload, Lock, LockRequest, MetricsAck, MetricsReport, PendingCommands,
    RegisterRequest, RegisterResponse,
};
use uuid::Uuid;

pub const TENANT: &str = "tenant-test";
pub const ENROL_TOKEN: &str = "enrol-secret-7f3a9c";

/// What the server saw. Tests read and steer it through [`FakeServer::state`].
#[derive(Debug, Default)]
pub struct Seen {
    /// public key → (agent id, agent token)
    pub agents: HashMap<String, (String, String)>,
    pub valid_tokens: HashSet<String>,
    pub registrations: u32,
    pub heartbeats: u32,
    /// Accepted inventory uploads, in arrival order: (report id, mode).
    pub inventories: Vec<(Uuid, String)>,
    /// Accepted metrics reports, in arrival order.
    pub metrics: Vec<Uuid>,
    /// Reports received again with an id already stored.
    pub duplicates: u32,
    /// Requests whose body was gzip-encoded.
    pub gzipped: u32,
    /// The inventory hash held per agent id.
    pub hashes: HashMap<String, String>,
    /// Answer 503 to everything while set.
    pub unavailable: bool,
    /// Store the next metrics report, then answer 503 as if the answer were lost on the way.
    pub lose_next_metrics_answer: bool,
    /// Metrics reports answered 500 every time (a report that trips a server bug).
    pub failing_metrics: HashSet<Uuid>,
    /// Every bearer token presented, to check no token leaks elsewhere.
    pub tokens_issued: Vec<String>,
    /// The command-signing key offered at registration (base64).
    pub signing_key: Option<String>,
    /// Commands waiting to be leased (to any agent: the command tests run one).
    pub pending: Vec<Command>,
    /// Cancellations to deliver.
    pub cancel: Vec<i64>,
    /// `commands/pending` requests, and the `wait_s` each asked for.
    pub polls: Vec<u32>,
    /// Every status update received, in order.
    pub statuses: Vec<CommandStatusUpdate>,
    /// Held locks: resource → (lock id, command id); and every lock id released.
    pub locks: HashMap<String, (String, Option<i64>)>,
    pub released: Vec<String>,
    /// The `queue_depth` of the latest heartbeat.
    pub queue_depth: u64,
    /// Wakes held long-polls when a command or cancellation is queued.
    pub nudge: Arc<tokio::sync::Notify>,
}

// Used by the commands tests, Unix-only so far.
#[cfg_attr(not(unix), allow(dead_code))]
impl Seen {
    /// Queues a command and wakes a waiting long-poll.
    pub fn queue(&mut self, command: Command) {
        self.pending.push(command);
        self.nudge.notify_waiters();
    }

    pub fn cancel(&mut self, id: i64) {
        self.cancel.push(id);
        self.nudge.notify_waiters();
    }

    /// The states reported for command `id`, in order.
    pub fn states(&self, id: i64) -> Vec<muster_proto::api::CommandState> {
        self.statuses
            .iter()
            .filter(|u| u.command_id == id)
            .map(|u| u.status)
            .collect()
    }
}

pub struct FakeServer {
    /// The API base URL, `http://127.0.0.1:PORT/api`.
    pub url: String,
    pub state: Arc<Mutex<Seen>>,
}

impl FakeServer {
    pub async fn start() -> FakeServer {
        let state = Arc::new(Mutex::new(Seen::default()));
        let app = Router::new()
            .route("/api/agents/register", post(register))
            .route("/api/agents/heartbeat", post(heartbeat))
            .route("/api/system/report", post(system_report))
            .route("/api/metrics/report", post(metrics_report))
            .route("/api/commands/pending", get(commands_pending))
            .route("/api/commands/status", post(commands_status))
            .route("/api/locks/create", post(locks_create))
            .route("/api/locks/{id}", delete(locks_delete))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/api", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeServer { url, state }
    }

    pub fn seen<T>(&self, f: impl FnOnce(&mut Seen) -> T) -> T {
        f(&mut self.state.lock().unwrap())
    }
}

type Shared = State<Arc<Mutex<Seen>>>;

fn error(status: StatusCode, code: &str, message: &str) -> Response {
    (status, axum::Json(ApiError::new(code, message))).into_response()
}

fn bearer(headers: &HeaderMap) -> Option<String> {
    headers
        .get("authorization")?
        .to_str()
        .ok()?
        .strip_prefix("Bearer ")
        .map(str::to_owned)
}

/// The JSON body, gunzipped when the client compressed it.
fn body<T: serde::de::DeserializeOwned>(
    state: &Mutex<Seen>,
    headers: &HeaderMap,
    bytes: &Bytes,
) -> Result<T, Response> {
    let gzipped = headers.get("content-encoding").is_some_and(|v| v == "gzip");
    let plain = if gzipped {
        state.lock().unwrap().gzipped += 1;
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| error(StatusCode::BAD_REQUEST, "invalid_request", &e.to_string()))?;
        out
    } else {
        bytes.to_vec()
    };
    serde_json::from_slice(&plain).map_err(|e| {
        error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            &e.to_string(),
        )
    })
}

/// The agent id for a valid agent token, or the error answer.
fn authenticate(seen: &Seen, headers: &HeaderMap) -> Result<String, Response> {
    if seen.unavailable {
        return Err(error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "down for a test",
        ));
    }
    let token = bearer(headers)
        .ok_or_else(|| error(StatusCode::UNAUTHORIZED, "unauthorized", "no token"))?;
    if !seen.valid_tokens.contains(&token) {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "unknown agent token",
        ));
    }
    Ok(seen
        .agents
        .values()
        .find(|(_, t)| *t == token)
        .map(|(id, _)| id.clone())
        .unwrap())
}

async fn register(State(state): Shared, headers: HeaderMap, bytes: Bytes) -> Response {
    let request: RegisterRequest = match body(&state, &headers, &bytes) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let mut seen = state.lock().unwrap();
    if seen.unavailable {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "down for a test",
        );
    }
    if bearer(&headers).as_deref() != Some(ENROL_TOKEN) || request.tenant_id != TENANT {
        return error(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "bad enrolment token",
        );
    }
    seen.registrations += 1;
    let key = request.public_key.unwrap_or(request.hostname);
    let agent_id = seen
        .agents
        .get(&key)
        .map(|(id, _)| id.clone())
        .unwrap_or_else(|| format!("agent-{}", seen.agents.len() + 1));
    // A fresh token at every registration, as a real server would issue.
    let token = format!("agent-token-{}", Uuid::now_v7().simple());
    seen.valid_tokens.insert(token.clone());
    seen.tokens_issued.push(token.clone());
    seen.agents.insert(key, (agent_id.clone(), token.clone()));
    axum::Json(RegisterResponse {
        agent_id,
        agent_token: token,
        command_signing_key: seen.signing_key.clone(),
    })
    .into_response()
}

async fn heartbeat(State(state): Shared, headers: HeaderMap, bytes: Bytes) -> Response {
    let hb: Heartbeat = match body(&state, &headers, &bytes) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let mut seen = state.lock().unwrap();
    let agent_id = match authenticate(&seen, &headers) {
        Ok(id) => id,
        Err(e) => return e,
    };
    assert_eq!(hb.agent_id, agent_id, "a heartbeat names its own agent");
    seen.heartbeats += 1;
    seen.queue_depth = hb.health.queue_depth;
    axum::Json(HeartbeatResponse {
        pending_commands: (seen.pending.len() + seen.cancel.len()) as u32,
        server_time: jiff::Timestamp::now(),
    })
    .into_response()
}

async fn system_report(State(state): Shared, headers: HeaderMap, bytes: Bytes) -> Response {
    let upload: InventoryUpload = match body(&state, &headers, &bytes) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let mut seen = state.lock().unwrap();
    let agent_id = match authenticate(&seen, &headers) {
        Ok(id) => id,
        Err(e) => return e,
    };
    let (report_id, mode, hash, base) = match &upload {
        InventoryUpload::Full { hash, report } => (report.report_id, "full", hash, None),
        InventoryUpload::Delta {
            base_hash,
            hash,
            report,
            ..
        } => (report.report_id, "delta", hash, Some(base_hash)),
        InventoryUpload::Unchanged {
            report_id, hash, ..
        } => (*report_id, "unchanged", hash, Some(hash)),
    };
    if seen.inventories.iter().any(|(id, _)| *id == report_id) {
        seen.duplicates += 1;
        let hash = seen.hashes.get(&agent_id).cloned();
        return axum::Json(InventoryAck {
            report_id,
            hash,
            duplicate: true,
        })
        .into_response();
    }
    if base.is_some_and(|base| seen.hashes.get(&agent_id) != Some(base)) {
        return error(
            StatusCode::CONFLICT,
            "conflict",
            "the base inventory is not held",
        );
    }
    seen.inventories.push((report_id, mode.to_owned()));
    seen.hashes.insert(agent_id, hash.clone());
    axum::Json(InventoryAck {
        report_id,
        hash: Some(hash.clone()),
        duplicate: false,
    })
    .into_response()
}

async fn metrics_report(State(state): Shared, headers: HeaderMap, bytes: Bytes) -> Response {
    let report: MetricsReport = match body(&state, &headers, &bytes) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let mut seen = state.lock().unwrap();
    if let Err(e) = authenticate(&seen, &headers) {
        return e;
    }
    if seen.failing_metrics.contains(&report.report_id) {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error",
        );
    }
    let duplicate = seen.metrics.contains(&report.report_id);
    if duplicate {
        seen.duplicates += 1;
    } else {
        seen.metrics.push(report.report_id);
    }
    if std::mem::take(&mut seen.lose_next_metrics_answer) {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "answer lost",
        );
    }
    let accepted = if duplicate {
        0
    } else {
        report.samples.len() as u32
    };
    axum::Json(MetricsAck {
        report_id: report.report_id,
        accepted,
        duplicate,
    })
    .into_response()
}

#[derive(serde::Deserialize)]
struct Wait {
    #[serde(default)]
    wait_s: u32,
}

/// Leases everything pending (a test server: no lease expiry), holding the request up to
/// `wait_s` while there is nothing.
async fn commands_pending(
    State(state): Shared,
    headers: HeaderMap,
    Query(wait): Query<Wait>,
) -> Response {
    let deadline =
        tokio::time::Instant::now() + std::time::Duration::from_secs(wait.wait_s.min(60).into());
    loop {
        let nudge = state.lock().unwrap().nudge.clone();
        // Registered before looking, so a command queued in between still wakes it.
        let notified = nudge.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        {
            let mut seen = state.lock().unwrap();
            if let Err(e) = authenticate(&seen, &headers) {
                return e;
            }
            let nothing = seen.pending.is_empty() && seen.cancel.is_empty();
            if !nothing || tokio::time::Instant::now() >= deadline {
                seen.polls.push(wait.wait_s);
                let answer = PendingCommands {
                    commands: std::mem::take(&mut seen.pending),
                    cancel: std::mem::take(&mut seen.cancel),
                };
                return axum::Json(answer).into_response();
            }
        }
        let _ = tokio::time::timeout_at(deadline, notified).await;
    }
}

async fn commands_status(State(state): Shared, headers: HeaderMap, bytes: Bytes) -> Response {
    let update: CommandStatusUpdate = match body(&state, &headers, &bytes) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let mut seen = state.lock().unwrap();
    if let Err(e) = authenticate(&seen, &headers) {
        return e;
    }
    seen.statuses.push(update);
    StatusCode::NO_CONTENT.into_response()
}

async fn locks_create(State(state): Shared, headers: HeaderMap, bytes: Bytes) -> Response {
    let req: LockRequest = match body(&state, &headers, &bytes) {
        Ok(r) => r,
        Err(e) => return e,
    };
    let mut seen = state.lock().unwrap();
    let agent = match authenticate(&seen, &headers) {
        Ok(a) => a,
        Err(e) => return e,
    };
    let id = match seen.locks.get(&req.resource) {
        Some((id, holder)) if *holder == req.command_id => id.clone(),
        Some((_, holder)) => {
            return error(
                StatusCode::CONFLICT,
                "conflict",
                &format!("{} is held by command {holder:?}", req.resource),
            );
        }
        None => Uuid::now_v7().to_string(),
    };
    seen.locks
        .insert(req.resource.clone(), (id.clone(), req.command_id));
    let lock = Lock {
        id,
        resource: req.resource,
        scope: req.scope,
        holder_agent_id: agent,
        command_id: req.command_id,
        expires_at: jiff::Timestamp::now(),
    };
    (StatusCode::CREATED, axum::Json(lock)).into_response()
}

async fn locks_delete(
    State(state): Shared,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let mut seen = state.lock().unwrap();
    if let Err(e) = authenticate(&seen, &headers) {
        return e;
    }
    let before = seen.locks.len();
    seen.locks.retain(|_, (lock, _)| *lock != id);
    if seen.locks.len() == before {
        return error(StatusCode::NOT_FOUND, "not_found", "no such lock");
    }
    seen.released.push(id);
    StatusCode::NO_CONTENT.into_response()
}

/// Waits until `condition` holds on what the server saw (polling, bounded).
/// Waits until an agent has enrolled and delivered one of each: heartbeat, inventory and
/// telemetry.
pub async fn until_reporting(server: &FakeServer) {
    until(
        server,
        "enrolment, heartbeat, inventory and telemetry",
        |s| {
            s.registrations == 1
                && s.heartbeats >= 1
                && !s.inventories.is_empty()
                && !s.metrics.is_empty()
        },
    )
    .await;
}

pub async fn until(server: &FakeServer, what: &str, condition: impl Fn(&Seen) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        if server.seen(|seen| condition(seen)) {
            return;
        }
        if Instant::now() >= deadline {
            let seen = server.seen(|s| format!("{s:#?}"));
            panic!("timed out waiting for: {what}\nthe server saw: {seen}");
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}
