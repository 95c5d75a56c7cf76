//! The Muster server: the agents' API over a tenant-scoped store.
//!
//! [`run`] serves a [`ServerConfig`] on a listener the caller bound, until `shutdown`
//! completes; [`router`] is the whole HTTP surface over an [`AppState`]. The binary
//! (`main.rs`) only parses arguments ([`cli`]) and calls in here.

pub mod admin;
pub mod admin_api;
pub mod api;
pub mod cli;
pub mod config;
pub mod dashboard;
pub mod error;
pub mod extract;
pub mod ingest;
pub mod openapi;
pub mod ops;
pub mod store;
pub mod token;

use std::future::Future;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use serde_json::json;
use tokio::net::TcpListener;
use tracing::info;

pub use config::{Limits, ServerConfig};
use error::ApiError;
use store::{Store, StoreError};

/// What every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    pub store: Store,
    pub limits: Limits,
}

impl AppState {
    pub fn new(store: Store, limits: Limits) -> AppState {
        AppState { store, limits }
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

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/openapi.json", get(openapi::serve))
        .nest("/api/admin", admin_api::router())
        .nest("/api", api::router())
        .merge(dashboard::router())
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Opens the store (applying migrations), then serves on `listener` until `shutdown`
/// completes; requests in flight are finished, then the database is closed.
pub async fn run(
    config: ServerConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServerError> {
    let store = Store::open(&config.database_url).await?;
    let address = listener.local_addr()?;
    info!(address = %address, "listening");
    let app = router(AppState::new(store.clone(), config.limits));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await?;
    store.close().await;
    info!("stopped");
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
