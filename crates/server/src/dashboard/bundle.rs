//! The dashboard's enrolment bundle: `/bundle` shows a form (platform, single-use, expiry),
//! `POST /bundle` answers the archive. The form is posted with the session's form token from
//! the same origin (the commands' rules); the archive is made by `bundle::make`, the admin
//! API's own path.

use askama::Template;
use axum::Form;
use axum::extract::State;
use axum::extract::rejection::FormRejection;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use super::commands::posted_form;
use super::session::Session;
use super::{Nav, PageError, render};
use crate::AppState;
use crate::bundle::{self, BundleRequest};

/// The lifetimes the form offers for the bundle's token, seconds (`0`: no expiry).
const EXPIRIES: [(u64, &str); 5] = [
    (0, "never"),
    (3_600, "1 hour"),
    (86_400, "1 day"),
    (7 * 86_400, "7 days"),
    (30 * 86_400, "30 days"),
];

#[derive(Debug, Template)]
#[template(path = "bundle.html")]
struct BundlePage {
    nav: Nav,
    /// `None`: bundles are not configured on this server.
    platforms: Option<Vec<String>>,
    default_platform: String,
    expiries: Vec<(u64, &'static str)>,
    public_url: Option<String>,
}

/// `GET /bundle`.
pub async fn page(State(state): State<AppState>, session: Session) -> Response {
    let page = BundlePage {
        nav: Nav::of(&session, "bundle"),
        platforms: state.bundle.agent_dir.as_deref().map(bundle::platforms),
        default_platform: bundle::default_platform(),
        expiries: EXPIRIES.to_vec(),
        public_url: state.bundle.public_url.clone(),
    };
    render(&page).into_response()
}

/// The fields of the bundle form, as browsers post them.
#[derive(Debug, Default, Deserialize)]
pub struct BundleForm {
    #[serde(default)]
    form_token: String,
    #[serde(default)]
    platform: String,
    /// Present (any value) when the box is ticked.
    single_use: Option<String>,
    /// Seconds; empty or `0`: no expiry.
    #[serde(default)]
    expires_in_s: String,
}

/// `POST /bundle`: the archive itself.
pub async fn download(
    State(state): State<AppState>,
    headers: HeaderMap,
    form: Result<Form<BundleForm>, FormRejection>,
) -> Response {
    let (form, session) = match posted_form(&headers, &state, form, |f| &f.form_token).await {
        Ok(posted) => posted,
        Err(response) => return response,
    };
    let expires_in_s = match form.expires_in_s.trim() {
        "" | "0" => None,
        text => match text.parse::<u64>() {
            Ok(seconds) => Some(seconds),
            Err(_) => {
                return PageError::bad_request("the expiry is a number of seconds").into_response();
            }
        },
    };
    let request = BundleRequest {
        platform: form.platform,
        single_use: form.single_use.is_some(),
        expires_in_s,
    };
    match bundle::make(&state, &session.tenant_id, &headers, &request).await {
        Ok(response) => response,
        Err(error) => PageError::from(error).into_response(),
    }
}
