//! Dashboard sessions: an admin token at `/login` opens one; a cookie carries its id.
//!
//! The id is 256 random bits; the database keeps only its SHA-256 (`dashboard_sessions`), with
//! the tenant and the admin token it came from, so any replica can check it and revoking the
//! token ends it. The cookie is `HttpOnly`, `SameSite=Strict`, `Path=/`, and `Secure` when the
//! request came over HTTPS (directly or as a proxy's `X-Forwarded-Proto`/`Forwarded` says).
//!
//! Forms that change state are guarded twice against cross-site requests: an `Origin` (or,
//! without one, `Referer`) naming another host is refused, and a form posted with a session
//! must carry that session's form token, a hash of the session id only its holder can compute.

use axum::extract::FromRequestParts;
use axum::http::header::{COOKIE, HOST, ORIGIN, REFERER, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::{SecureRandom, SystemRandom};

use super::{DashboardConfig, PageError};
use crate::AppState;
use crate::extract::AdminCaller;
use crate::store::dashboard::{NewSession, SessionRecord};
use crate::token::{hash_hex, hashes_equal};

/// The cookie's name.
pub const COOKIE_NAME: &str = "muster_session";
/// Bytes of randomness in a session id.
const SESSION_BYTES: usize = 32;

/// A logged-in dashboard user: a tenant's admin, through a live session.
#[derive(Debug, Clone)]
pub struct Session {
    pub tenant_id: String,
    pub token_id: String,
    /// The token forms posted in this session must carry.
    pub form_token: String,
    hash: String,
}

impl Session {
    /// Whether `presented` is this session's form token (in constant time).
    pub fn form_token_matches(&self, presented: &str) -> bool {
        hashes_equal(&self.form_token, presented)
    }
}

/// A page asked for without a live session goes to the login page.
impl FromRequestParts<AppState> for Session {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Response> {
        match find(&parts.headers, state).await {
            Ok(Some(session)) => Ok(session),
            Ok(None) => Err(to_login(&parts.headers)),
            Err(error) => Err(error.into_response()),
        }
    }
}

/// The live session the request's cookie names, if any.
pub async fn find(headers: &HeaderMap, state: &AppState) -> Result<Option<Session>, PageError> {
    let Some(id) = cookie(headers, COOKIE_NAME).filter(|id| well_formed(id)) else {
        return Ok(None);
    };
    let now = jiff::Timestamp::now().as_second();
    let hash = hash_hex(id.as_bytes());
    let record = state.store.find_session(&hash, now).await?;
    Ok(record.map(
        |SessionRecord {
             tenant_id,
             token_id,
             ..
         }| Session {
            tenant_id,
            token_id,
            form_token: form_token(id),
            hash,
        },
    ))
}

/// Opens a session for the admin `token` text, if it is a live admin token; returns the
/// `Set-Cookie` value that carries the new session.
pub async fn open(
    state: &AppState,
    config: &DashboardConfig,
    token: &str,
    secure: bool,
) -> Result<HeaderValue, PageError> {
    let caller = admin_token(state, token).await?;
    let now = jiff::Timestamp::now().as_second();
    let mut bytes = [0u8; SESSION_BYTES];
    SystemRandom::new()
        .fill(&mut bytes)
        .map_err(|_| PageError::internal("the system random generator failed"))?;
    let id = URL_SAFE_NO_PAD.encode(bytes);
    let lifetime = config.session_lifetime.as_secs();
    state
        .store
        .create_session(&NewSession {
            hash: hash_hex(id.as_bytes()),
            tenant_id: caller.tenant_id,
            token_id: caller.token_id,
            created_at: now,
            expires_at: now.saturating_add(i64::try_from(lifetime).unwrap_or(i64::MAX)),
        })
        .await?;
    // Expired sessions are swept as new ones open; a failure here costs nothing but space.
    if let Err(error) = state.store.delete_expired_sessions(now).await {
        tracing::warn!(error = %error, "sweeping expired dashboard sessions failed");
    }
    Ok(set_cookie(&id, lifetime, secure))
}

/// Ends `session`.
pub async fn close(state: &AppState, session: &Session) -> Result<(), PageError> {
    state.store.delete_session(&session.hash).await?;
    Ok(())
}

/// The caller `text` makes if it is a live admin token. The check is the admin API's own
/// (`AdminCaller`: shape, hash look-up, constant-time comparison, kind, revocation, expiry),
/// run on the token as if it had come in an `Authorization` header, so the two cannot drift.
async fn admin_token(state: &AppState, text: &str) -> Result<AdminCaller, PageError> {
    let rejected = || {
        PageError::new(
            StatusCode::UNAUTHORIZED,
            "that admin token was not accepted",
        )
    };
    let header =
        HeaderValue::try_from(format!("Bearer {}", text.trim())).map_err(|_| rejected())?;
    let (mut parts, ()) = axum::http::Request::builder()
        .header(axum::http::header::AUTHORIZATION, header)
        .body(())
        .map_err(|_| rejected())?
        .into_parts();
    match AdminCaller::from_request_parts(&mut parts, state).await {
        Ok(caller) => Ok(caller),
        Err(error) if error.status() == StatusCode::UNAUTHORIZED => Err(rejected()),
        Err(error) => Err(error.into()),
    }
}

/// The form token of the session `id`: a hash of it under a label of its own, so it differs
/// from the stored hash and reveals nothing about the id.
fn form_token(id: &str) -> String {
    hash_hex(format!("muster-dashboard-form:{id}").as_bytes())
}

/// A session id is 32 bytes in unpadded base64url; anything else never reaches the database.
fn well_formed(id: &str) -> bool {
    id.len() == 43
        && URL_SAFE_NO_PAD
            .decode(id)
            .is_ok_and(|b| b.len() == SESSION_BYTES)
}

fn set_cookie(id: &str, max_age_s: u64, secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::try_from(format!(
        "{COOKIE_NAME}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={max_age_s}{secure}"
    ))
    .expect("a session cookie is ascii")
}

/// The `Set-Cookie` that makes the browser forget its session.
pub fn clear_cookie(secure: bool) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::try_from(format!(
        "{COOKIE_NAME}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{secure}"
    ))
    .expect("a cookie is ascii")
}

/// The redirect to the login page, forgetting a cookie that named no live session.
pub fn to_login(headers: &HeaderMap) -> Response {
    let mut response = Redirect::to("/login").into_response();
    if cookie(headers, COOKIE_NAME).is_some() {
        response
            .headers_mut()
            .insert(SET_COOKIE, clear_cookie(came_over_https(headers)));
    }
    response
}

/// The value of cookie `name` in the request's `Cookie` headers.
fn cookie<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|h| h.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value.trim())
}

/// Whether the request reached us, or the proxy in front of us, over HTTPS.
pub fn came_over_https(headers: &HeaderMap) -> bool {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(proto) = header("x-forwarded-proto") {
        return proto
            .split(',')
            .next()
            .is_some_and(|p| p.trim().eq_ignore_ascii_case("https"));
    }
    header("forwarded").is_some_and(|f| {
        f.split(',').next().is_some_and(|first| {
            first.split(';').any(|kv| {
                kv.trim().split_once('=').is_some_and(|(k, v)| {
                    k.eq_ignore_ascii_case("proto")
                        && v.trim_matches('"').eq_ignore_ascii_case("https")
                })
            })
        })
    })
}

/// Whether a state-changing request may come from where it says it came from: an `Origin`
/// (or, lacking one, a `Referer`) must name this host. Neither present passes: browsers send
/// `Origin` on cross-site form posts, and the cookie is `SameSite=Strict` besides.
pub fn same_origin(headers: &HeaderMap) -> bool {
    let hosts: Vec<&str> = [HOST.as_str(), "x-forwarded-host"]
        .into_iter()
        .filter_map(|h| headers.get(h)?.to_str().ok())
        .map(str::trim)
        .collect();
    let source = headers
        .get(ORIGIN)
        .or_else(|| headers.get(REFERER))
        .map(|v| v.to_str().unwrap_or("null"));
    let Some(source) = source else {
        return true;
    };
    let authority = source
        .split_once("://")
        .map(|(_, rest)| rest.split(['/', '?', '#']).next().unwrap_or_default());
    authority.is_some_and(|a| !a.is_empty() && hosts.iter().any(|h| h.eq_ignore_ascii_case(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_str(value).unwrap());
        }
        map
    }

    #[test]
    fn cookies_are_found_among_others() {
        let h = headers(&[
            ("cookie", "a=1; muster_session=abc ; b=2"),
            ("cookie", "c=3"),
        ]);
        assert_eq!(cookie(&h, COOKIE_NAME), Some("abc"));
        assert_eq!(cookie(&h, "c"), Some("3"));
        assert_eq!(cookie(&h, "muster"), None);
    }

    #[test]
    fn only_well_formed_ids_are_looked_up() {
        assert!(well_formed(&URL_SAFE_NO_PAD.encode([7u8; 32])));
        assert!(!well_formed(""));
        assert!(!well_formed(&URL_SAFE_NO_PAD.encode([7u8; 31])));
        assert!(!well_formed(&"!".repeat(43)));
    }

    #[test]
    fn cookie_flags() {
        let cookie = set_cookie("id", 43_200, false);
        assert_eq!(
            cookie,
            "muster_session=id; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200"
        );
        assert!(
            set_cookie("id", 1, true)
                .to_str()
                .unwrap()
                .ends_with("; Secure")
        );
        assert!(clear_cookie(false).to_str().unwrap().contains("Max-Age=0"));
    }

    #[test]
    fn https_is_recognised_behind_proxies() {
        assert!(!came_over_https(&headers(&[])));
        assert!(came_over_https(&headers(&[("x-forwarded-proto", "https")])));
        assert!(came_over_https(&headers(&[(
            "x-forwarded-proto",
            "HTTPS, http"
        )])));
        assert!(!came_over_https(&headers(&[("x-forwarded-proto", "http")])));
        assert!(came_over_https(&headers(&[(
            "forwarded",
            "for=1.2.3.4;proto=https"
        )])));
        assert!(!came_over_https(&headers(&[(
            "forwarded",
            "proto=http, proto=https"
        )])));
    }

    #[test]
    fn cross_site_posts_are_refused() {
        let host = ("host", "muster.example:3000");
        assert!(same_origin(&headers(&[host])));
        assert!(same_origin(&headers(&[
            host,
            ("origin", "http://muster.example:3000")
        ])));
        assert!(same_origin(&headers(&[
            host,
            ("referer", "https://muster.example:3000/login?x=1")
        ])));
        assert!(!same_origin(&headers(&[
            host,
            ("origin", "https://evil.example")
        ])));
        assert!(!same_origin(&headers(&[host, ("origin", "null")])));
        assert!(!same_origin(&headers(&[
            host,
            ("referer", "https://evil.example/muster.example:3000")
        ])));
        assert!(!same_origin(&headers(&[(
            "origin",
            "http://muster.example:3000"
        )])));
        assert!(same_origin(&headers(&[
            host,
            ("x-forwarded-host", "dash.example"),
            ("origin", "https://dash.example")
        ])));
    }

    #[test]
    fn form_tokens_differ_from_stored_hashes() {
        let id = URL_SAFE_NO_PAD.encode([1u8; 32]);
        assert_ne!(form_token(&id), hash_hex(id.as_bytes()));
        assert_eq!(form_token(&id).len(), 64);
    }
}
