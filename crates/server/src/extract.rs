//! Extractors: who is calling (checked from the headers alone, before any body byte is read)
//! and the JSON body (bounded, gzip-aware, with errors in the API's format).
//!
//! A handler lists the caller extractor before [`ApiJson`]; axum runs extractors in order and
//! only the last one may read the body, so a request with a bad token is answered 401 while its
//! body is still unread.

use std::io::Read;

use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::{AUTHORIZATION, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE};
use axum::http::request::Parts;
use http_body_util::{BodyExt, LengthLimitError, Limited};
use serde::de::DeserializeOwned;
use tracing::warn;

use crate::AppState;
use crate::error::ApiError;
use crate::store::TokenRecord;
use crate::token::{Token, TokenKind, hashes_equal};

/// An agent, authenticated by its own token.
#[derive(Debug, Clone)]
pub struct AgentCaller {
    pub tenant_id: String,
    pub agent_id: String,
}

/// An agent, authenticated by its own token, whose request is not yet counted against its
/// rate limit: the command endpoints count it themselves, for what the request brought (see
/// [`crate::api::commands_pending`] and [`crate::api::commands_status`]). A command the server
/// handed out pays for its own delivery and reports, so an operator's burst of commands is not
/// slowed to the agent's request rate, while an agent asking for nothing still is.
#[derive(Debug, Clone)]
pub struct UnmeteredAgent(pub AgentCaller);

/// A holder of a tenant's enrolment token.
#[derive(Debug, Clone)]
pub struct EnrolCaller {
    pub tenant_id: String,
    /// The enrolment token's id: registration counts its uses.
    pub token_id: String,
}

impl FromRequestParts<AppState> for AgentCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let UnmeteredAgent(caller) = UnmeteredAgent::from_request_parts(parts, state).await?;
        state.ops.check_agent_rate(&caller.agent_id)?;
        Ok(caller)
    }
}

impl FromRequestParts<AppState> for UnmeteredAgent {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts, TokenKind::Agent)?;
        let hash = token.hash();
        let now = jiff::Timestamp::now().as_second();
        let caller = match state.agent_tokens.get(&hash, now) {
            Some(cached) => AgentCaller {
                tenant_id: cached.tenant_id,
                agent_id: cached.agent_id,
            },
            None => {
                let record = check_token(state, &hash, TokenKind::Agent, now).await?;
                state.agent_tokens.insert(&record);
                AgentCaller {
                    tenant_id: record.tenant_id,
                    agent_id: record
                        .agent_id
                        .ok_or(ApiError::Unauthorized("invalid token"))?,
                }
            }
        };
        Ok(UnmeteredAgent(caller))
    }
}

impl FromRequestParts<AppState> for EnrolCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let record = authenticate(parts, state, TokenKind::Enrol).await?;
        Ok(EnrolCaller {
            tenant_id: record.tenant_id,
            token_id: record.id,
        })
    }
}

/// A holder of a tenant's admin token: the admin API and the dashboard.
#[derive(Debug, Clone)]
pub struct AdminCaller {
    pub tenant_id: String,
    /// The admin token's own id (a token may not revoke itself by accident of a list).
    pub token_id: String,
}

impl FromRequestParts<AppState> for AdminCaller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let record = authenticate(parts, state, TokenKind::Admin).await?;
        Ok(AdminCaller {
            tenant_id: record.tenant_id,
            token_id: record.id,
        })
    }
}

const INVALID: ApiError = ApiError::Unauthorized("invalid token");

/// The live token of `kind` in the `Authorization: Bearer` header. Every failure is the same
/// 401, so a caller learns nothing about which tokens exist.
async fn authenticate(
    parts: &Parts,
    state: &AppState,
    kind: TokenKind,
) -> Result<TokenRecord, ApiError> {
    let token = bearer(parts, kind)?;
    let now = jiff::Timestamp::now().as_second();
    let record = check_token(state, &token.hash(), kind, now).await?;
    // Admin and enrolment tokens note their last use, to the minute (a write per minute per
    // token, not per request); agent tokens would cost a write per heartbeat, and an agent's
    // `last_seen` says the same.
    if kind != TokenKind::Agent
        && record
            .last_used_at
            .is_none_or(|at| at <= now - LAST_USED_RESOLUTION_S)
        && let Err(e) = state.store.touch_token(&record.id, now).await
    {
        warn!(token_id = %record.id, error = %e, "recording a token's use failed");
    }
    Ok(record)
}

/// The token in the `Authorization: Bearer` header, shaped as one of `kind`.
fn bearer(parts: &Parts, kind: TokenKind) -> Result<Token, ApiError> {
    let header = parts
        .headers
        .get(AUTHORIZATION)
        .ok_or(ApiError::Unauthorized("a bearer token is required"))?;
    let text = header
        .to_str()
        .ok()
        .and_then(|h| h.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized("a bearer token is required"))?;
    let token = Token::parse(text.trim()).ok_or(INVALID)?;
    if token.claimed_kind() != Some(kind) {
        return Err(INVALID);
    }
    Ok(token)
}

/// The stored token whose hash is `hash`, if it is a live one of `kind` at `now`.
async fn check_token(
    state: &AppState,
    hash: &str,
    kind: TokenKind,
    now: i64,
) -> Result<TokenRecord, ApiError> {
    let record = state.store.find_token(hash).await?.ok_or(INVALID)?;
    // The look-up went through an index on the hash; comparing again in constant time keeps
    // the decision itself free of timing differences.
    if !hashes_equal(&record.hash, hash) || record.kind != kind {
        return Err(INVALID);
    }
    match record.refusal(now) {
        None => Ok(record),
        // An enrolment token's holder (who proved they have it) is told why it stopped
        // working (expired, revoked), so an installer can say so; that reveals nothing about
        // any other token. Other kinds get the one 401.
        Some(refusal) if kind == TokenKind::Enrol => Err(ApiError::Unauthorized(refusal.message())),
        Some(_) => Err(INVALID),
    }
}

/// How stale a token's `last_used_at` may get before a request refreshes it, seconds.
const LAST_USED_RESOLUTION_S: i64 = 60;

/// The query string as `T`, with a malformed one answered 400 in the API's error format
/// (axum's own `Query` answers in plain text).
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        Query::try_from_uri(&parts.uri)
            .map(|Query(value)| ApiQuery(value))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// Path parameters as `T`, with a bad one answered 400 in the API's error format.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::from_request_parts(parts, state)
            .await
            .map(|Path(value)| ApiPath(value))
            .map_err(|e| ApiError::BadRequest(e.body_text()))
    }
}

/// A JSON body of type `T`: at most the configured size before and after gzip, answered 400
/// (not JSON), 413 (too large), 415 (not JSON, or an encoding other than gzip) or 422 (the
/// wrong shape), all as [`ApiError`].
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &AppState) -> Result<Self, ApiError> {
        let bytes = read_body(request, state.limits.max_body_bytes).await?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// The body, decompressed, at most `limit` bytes either way.
pub async fn read_body(request: Request, limit: usize) -> Result<Vec<u8>, ApiError> {
    let too_large = || ApiError::PayloadTooLarge(format!("the body is over {limit} bytes"));
    let headers = request.headers();
    if let Some(kind) = headers.get(CONTENT_TYPE) {
        let kind = kind.to_str().unwrap_or_default().to_ascii_lowercase();
        let essence = kind.split(';').next().unwrap_or_default().trim();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(ApiError::UnsupportedMediaType(
                "the body must be application/json".into(),
            ));
        }
    }
    let gzip = match headers.get(CONTENT_ENCODING).map(|v| v.to_str()) {
        None => false,
        Some(Ok(v)) if v.eq_ignore_ascii_case("identity") => false,
        Some(Ok(v)) if v.eq_ignore_ascii_case("gzip") => true,
        Some(_) => {
            return Err(ApiError::UnsupportedMediaType(
                "content-encoding must be gzip or identity".into(),
            ));
        }
    };
    // A declared length over the limit is refused before reading anything.
    let declared = headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let body = Limited::new(request.into_body(), limit)
        .collect()
        .await
        .map_err(|e| {
            if e.downcast_ref::<LengthLimitError>().is_some() {
                too_large()
            } else {
                ApiError::BadRequest("reading the body failed".into())
            }
        })?
        .to_bytes();
    if !gzip {
        return Ok(body.to_vec());
    }
    let mut plain = Vec::new();
    flate2::read::GzDecoder::new(&body[..])
        .take(limit as u64 + 1)
        .read_to_end(&mut plain)
        .map_err(|e| ApiError::BadRequest(format!("the gzip body is corrupt: {e}")))?;
    if plain.len() > limit {
        return Err(ApiError::PayloadTooLarge(format!(
            "the body is over {limit} bytes decompressed"
        )));
    }
    Ok(plain)
}

/// Parses JSON: a syntax error is 400, a well-formed body of the wrong shape 422.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => ApiError::Unprocessable(e.to_string()),
        _ => ApiError::BadRequest(format!("the body is not valid json: {e}")),
    })
}
