//! The Muster server: the agents' API over a tenant-scoped store.
//!
//! [`run`] serves a [`ServerConfig`] on a listener the caller bound, until `shutdown`
//! completes; [`router`] is the whole HTTP surface over an [`AppState`]. The binary
//! (`main.rs`) only parses arguments ([`cli`]) and calls in here.

pub mod admin;
pub mod admin_api;
pub mod api;
pub mod bundle;
pub mod cli;
pub mod commands;
pub mod commands_api;
pub mod config;
pub mod dashboard;
pub mod demo;
pub mod error;
pub mod extract;
pub mod heartbeats;
pub mod ingest;
pub mod inventory;
pub mod openapi;
pub mod ops;
pub mod store;
pub mod systemd;
pub mod token;
pub mod token_cache;
pub mod version;

use std::future::Future;
use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tracing::info;

pub use config::{BundleConfig, Limits, ServerConfig};
use error::ApiError;
use heartbeats::HeartbeatWriter;
use ops::Ops;
use store::{Store, StoreError};
use token_cache::TokenCache;

/// What every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub limits: Limits,
    /// Counters and the rate limiter.
    pub ops: Arc<Ops>,
    /// Writes heartbeats in groups.
    pub heartbeats: HeartbeatWriter,
    /// Agent tokens recently found live.
    pub agent_tokens: Arc<TokenCache>,
    /// The commands' long-poll waiters and tenants' signers.
    pub commands: Arc<commands::CommandHub>,
    /// What enrolment bundles are made of.
    pub bundle: Arc<BundleConfig>,
}

impl AppState {
    /// The state over `store`; starts the heartbeat writer on the current runtime.
    pub fn new(store: Store, limits: Limits) -> AppState {
        let ops = Arc::new(Ops::new(&limits));
        let heartbeats = HeartbeatWriter::start(store.clone(), limits.heartbeat_flush);
        let agent_tokens = Arc::new(TokenCache::new(limits.token_cache));
        AppState {
            store,
            limits,
            ops,
            heartbeats,
            agent_tokens,
            commands: Arc::default(),
            bundle: Arc::default(),
        }
    }

    /// The state with enrolment bundles made from `bundle`.
    pub fn with_bundle(mut self, bundle: BundleConfig) -> AppState {
        self.bundle = Arc::new(bundle);
        self
    }
}

/// Why the server could not run.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("opening the database: {0}")]
    Store(#[from] StoreError),
    #[error("serving: {0}")]
    Io(#[from] std::io::Error),
}

/// The whole HTTP surface, with `/metrics` on it unless `with_metrics` is false (it is then
/// served on its own listener, see [`metrics_router`]).
pub fn router(state: AppState, with_metrics: bool) -> Router {
    let mut router = Router::new()
        .route("/api/openapi.json", get(openapi::serve))
        .nest(
            "/api/admin",
            admin_api::router()
                .merge(commands_api::router())
                .merge(bundle::router()),
        )
        .nest("/api", api::router())
        .merge(dashboard::router_with(dashboard::DashboardConfig {
            session_lifetime: state.limits.session_lifetime,
            thresholds: state.limits.alert_thresholds,
        }))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz));
    if with_metrics {
        router = router.route("/metrics", get(ops::metrics));
    }
    router
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            ops::track,
        ))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// `/metrics` alone, for a separate listen address.
pub fn metrics_router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(ops::metrics))
        .fallback(not_found)
        .with_state(state)
}

/// Opens the store (applying migrations), then serves on `listener` (and `/metrics` on
/// `metrics_listener` if given) until `shutdown` completes; requests in flight are finished,
/// then the database is closed. The retention job runs beside it.
pub async fn run(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    run_with_metrics(config, listener, None, shutdown).await
}

/// [`run`], with `/metrics` served on `metrics_listener` instead of the main listener when
/// one is given.
pub async fn run_with_metrics(
    config: ServerConfig,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    serve(config, listener, metrics_listener, shutdown, |_| {}).await
}

/// [`run_with_metrics`], calling `ready` with the address once the database is open (its
/// migrations applied) and requests are about to be served: `muster-server serve` tells
/// systemd there (`systemd.rs`).
pub async fn serve(
    config: ServerConfig,
    listener: TcpListener,
    metrics_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    ready: impl FnOnce(std::net::SocketAddr) + Send,
) -> Result<(), ServerError> {
    let store = Store::open(&config.database_url).await?;
    let address = listener.local_addr()?;
    let state = AppState::new(store.clone(), config.limits).with_bundle(config.bundle.clone());
    info!(
        address = %address,
        rate_limit = %ops::describe_limit(&config.limits),
        max_body_bytes = config.limits.max_body_bytes,
        "listening"
    );
    let housekeeping = tokio::spawn(ops::housekeeping(state.clone(), config.retention));
    let nudges = tokio::spawn(api::relay_nudges(state.clone()));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let metrics_server = match metrics_listener {
        Some(metrics_listener) => {
            info!(address = %metrics_listener.local_addr()?, "serving /metrics");
            let app = metrics_router(state.clone());
            Some(tokio::spawn(async move {
                axum::serve(metrics_listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await
            }))
        }
        None => None,
    };
    let app = router(state.clone(), metrics_server.is_none());
    // The listener is bound and accepting (connections queue until `serve` takes them).
    ready(address);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    let _ = stop.send(());
    if let Some(metrics_server) = metrics_server {
        let _ = metrics_server.await;
    }
    // Heartbeats answered but still written behind go in before the store closes.
    state.heartbeats.flush().await;
    housekeeping.abort();
    nudges.abort();
    // Wait for them to be gone, so they never run against a closed pool.
    let _ = housekeeping.await;
    let _ = nudges.await;
    store.close().await;
    info!("stopped");
    served?;
    Ok(())
}

/// The process is up.
async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// The process can serve: the database answers.
async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    state
        .store
        .ping()
        .await
        .map_err(|e| ApiError::Unavailable(format!("the database does not answer: {e}")))?;
    Ok(Json(json!({"status": "ready"})))
}

async fn not_found() -> ApiError {
    ApiError::NotFound("no such endpoint".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError::MethodNotAllowed("method not allowed on this endpoint".into())
}
