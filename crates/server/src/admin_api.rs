//! The admin API under `/api/admin/`: a tenant's agents, inventory, telemetry, software
//! search, alerts and tokens, for holders of the tenant's admin token.

use axum::Router;

use crate::AppState;

/// The admin routes, relative to `/api/admin`.
pub fn router() -> Router<AppState> {
    Router::new()
}
