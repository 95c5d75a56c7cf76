//! The OpenAPI 3.1 document of the whole HTTP API, generated from the handlers'
//! `#[utoipa::path]` attributes and the types' `ToSchema`, served at `/api/openapi.json` and
//! checked in at `docs/openapi.json` (a test fails when that copy is stale).

use std::sync::OnceLock;

use axum::http::header;
use axum::response::IntoResponse;
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::{admin_api, api, commands_api};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "Muster",
        description = "The Muster server's API. Agents use the paths under `/api` (the seed \
            ITSM agent's, kept), with the tenant's enrolment token to register and their own \
            token afterwards; administrators use `/api/admin/...` with an admin token. Every \
            token goes in `Authorization: Bearer`. Every error is JSON: \
            `{\"error\": {\"code\", \"message\"}}` (`ApiError`).",
    ),
    paths(
        api::register,
        api::heartbeat,
        api::system_report,
        api::metrics_report,
        api::commands_pending,
        api::commands_status,
        api::locks_create,
        api::locks_delete,
        admin_api::list_agents,
        admin_api::get_agent,
        admin_api::agent_inventory,
        admin_api::agent_metrics,
        admin_api::software,
        admin_api::alerts,
        admin_api::list_tokens,
        admin_api::create_token,
        admin_api::revoke_token,
        crate::bundle::get_bundle,
        commands_api::create_command,
        commands_api::list_commands,
        commands_api::get_command,
        commands_api::cancel_command,
    ),
    components(schemas(muster_proto::api::ApiError, muster_proto::api::ErrorBody)),
    modifiers(&BearerScheme),
    tags(
        (name = "agents", description = "The agents' API (agent or enrolment token)"),
        (name = "admin", description = "The admin API (admin token), one tenant's data"),
    )
)]
struct ApiDoc;

/// Declares the `bearer` security scheme the paths refer to.
struct BearerScheme;

impl Modify for BearerScheme {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        let mut scheme = Http::new(HttpAuthScheme::Bearer);
        scheme.description = Some(
            "A Muster token, `mst_<kind>_<random>`: the tenant's enrolment token for \
             registration, the agent's own token for the agents' API, an admin token for \
             `/api/admin`. A missing, unknown, revoked, expired or wrong-kind token is 401."
                .into(),
        );
        components.add_security_scheme("bearer", SecurityScheme::Http(scheme));
    }
}

/// The document.
pub fn document() -> utoipa::openapi::OpenApi {
    ApiDoc::openapi()
}

/// The document as served and checked in: pretty JSON and a final newline.
pub fn document_json() -> String {
    document()
        .to_pretty_json()
        .expect("the OpenAPI document serializes")
        + "\n"
}

/// `GET /api/openapi.json`, no token needed. Rendered once.
pub async fn serve() -> impl IntoResponse {
    static JSON: OnceLock<String> = OnceLock::new();
    let body = JSON.get_or_init(document_json).clone();
    ([(header::CONTENT_TYPE, "application/json")], body)
}
