//! The dashboard: server-rendered HTML pages behind a login with an admin token.

use axum::Router;

use crate::AppState;

/// The dashboard's routes, at the root.
pub fn router() -> Router<AppState> {
    Router::new()
}
