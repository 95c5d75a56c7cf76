//! The HTTP client for the agent API: typed calls over HTTPS (rustls), a bearer token, gzip
//! request bodies, and retries with exponential backoff and full jitter that honour
//! `Retry-After`.
//!
//! The client decides what is worth retrying; the caller decides what to do with what is left:
//! [`ClientError::Unauthorized`] means enrol again, [`ClientError::Unavailable`] means spool the
//! report and send it later, [`ClientError::Rejected`] means the server will never take it.
//! Every report carries its `report_id`, so a retry after a lost answer is stored once.

use std::fmt;
use std::future::Future;
use std::io::Write;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use muster_proto::api::{
    self, Heartbeat, HeartbeatResponse, InventoryAck, InventoryUpload, MetricsAck, MetricsReport,
    RegisterRequest, RegisterResponse,
};
use reqwest::header::{
    AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER,
};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{debug, warn};

use crate::config::{ApiConfig, SecurityConfig};
use crate::secret::Secret;

/// Request bodies larger than this are gzip-compressed. Below it the gzip header and the
/// server's extra work cost more than the bytes saved (a heartbeat is ~300 bytes).
pub const GZIP_THRESHOLD: usize = 1024;

/// The largest answer read from the server; a larger one is an error, not an allocation.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// The longest computed backoff between two tries.
pub const MAX_BACKOFF: Duration = Duration::from_secs(5 * 60);

/// The default bound on one call's waiting between tries.
pub const RETRY_BUDGET: Duration = Duration::from_secs(120);

/// The longest `Retry-After` the client waits; a server asking for more gets this.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(60 * 60);

/// How much of a non-JSON error body goes into an error message.
const MAX_ERROR_TEXT: usize = 256;

const USER_AGENT: &str = concat!("muster-agent/", env!("CARGO_PKG_VERSION"));

/// Why a call failed, in the terms the caller acts on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// 401 or 403: the token is not (or no longer) valid; the caller enrols again.
    #[error("the server refused the agent's credentials")]
    Unauthorized,
    /// 409: the request contradicts the server's state (e.g. a delta whose base the server
    /// does not hold).
    #[error("conflict: {message}")]
    Conflict { message: String },
    /// Any other 4xx (or a redirect): permanent; neither retried nor worth spooling.
    #[error("rejected with status {status}: {message}")]
    Rejected { status: u16, message: String },
    /// The server could not be reached or kept failing (network, timeout, TLS, 5xx, 429)
    /// after all retries, or asked (`Retry-After`) for a longer pause than the call's budget;
    /// the caller spools what it sent and, given `retry_after`, sends nothing before then.
    #[error("server unavailable: {message}")]
    Unavailable {
        message: String,
        retry_after: Option<Duration>,
    },
    /// A bad configuration or an answer that does not decode.
    #[error("{0}")]
    Invalid(String),
}

/// A future that sleeps; see [`Sleeper`].
pub type SleepFuture = Pin<Box<dyn Future<Output = ()> + Send>>;

/// What the client calls to wait between tries: `tokio::time::sleep` by default, replaceable
/// (see [`Client::with_sleeper`]) so a test can record the delays instead of waiting them.
pub type Sleeper = Arc<dyn Fn(Duration) -> SleepFuture + Send + Sync>;

/// Exponential backoff with full jitter ("Exponential Backoff And Jitter", AWS architecture
/// blog): before retry `n` (0-based) wait a uniformly random time in
/// `[0, min(cap, base · 2^n)]`, unless the server said how long with `Retry-After`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first ceiling (the configuration's `retry_delay`).
    pub base: Duration,
    /// The largest ceiling.
    pub cap: Duration,
    /// The largest `Retry-After` honoured.
    pub max_retry_after: Duration,
}

impl Backoff {
    /// A backoff starting at `base` with the default bounds.
    pub fn new(base: Duration) -> Self {
        Backoff {
            base,
            cap: MAX_BACKOFF,
            max_retry_after: MAX_RETRY_AFTER,
        }
    }

    /// The largest delay before retry `retry` (0-based): `min(cap, base · 2^retry)`.
    pub fn ceiling(&self, retry: u32) -> Duration {
        let factor = 1u32.checked_shl(retry).unwrap_or(0);
        if factor == 0 {
            return self.cap;
        }
        self.base
            .checked_mul(factor)
            .map_or(self.cap, |d| d.min(self.cap))
    }

    /// The delay before retry `retry`: the server's `retry_after` (bounded) when given, else
    /// `random` mapped uniformly onto `[0, ceiling(retry)]`.
    pub fn delay(&self, retry: u32, retry_after: Option<Duration>, random: u64) -> Duration {
        if let Some(after) = retry_after {
            return after.min(self.max_retry_after);
        }
        let ceiling = self.ceiling(retry).as_nanos();
        // random / 2^64 · (ceiling + 1), in integers: uniform over 0..=ceiling.
        let nanos = (u128::from(random) * (ceiling + 1)) >> 64;
        Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
    }
}

/// Parses a `Retry-After` value: delta-seconds or an HTTP-date (RFC 9110 §10.2.3), relative
/// to `now`. A date in the past means "now"; anything else unparseable is ignored.
pub fn parse_retry_after(value: &str, now: Timestamp) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Huge values saturate; the backoff bounds them.
        return Some(Duration::from_secs(value.parse().unwrap_or(u64::MAX)));
    }
    let date = jiff::fmt::rfc2822::DateTimeParser::new()
        .parse_timestamp(value)
        .ok()?;
    let span = date.duration_since(now);
    Some(Duration::try_from(span).unwrap_or(Duration::ZERO))
}

/// The agent API client. Cheap to share by reference; holds one connection pool.
pub struct Client {
    http: reqwest::Client,
    /// `scheme://host[:port]/path`, without a trailing slash.
    base_url: String,
    retry_attempts: u32,
    /// The longest a call waits between its tries in all; see [`Client::with_retry_budget`].
    retry_budget: Duration,
    backoff: Backoff,
    sleeper: Sleeper,
    rng: ring::rand::SystemRandom,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.base_url)
            .field("retry_attempts", &self.retry_attempts)
            .field("backoff", &self.backoff)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Builds a client for `api.base_url` with the TLS settings of `security`.
    ///
    /// `verify_ssl = false` accepts any server certificate (and ignores `ca_file`);
    /// `ca_file` adds the PEM bundle's certificates to the platform's trusted roots, which
    /// are loaded here (a system without any and no `ca_file` is [`ClientError::Invalid`]).
    ///
    /// A call may wait up to [`MAX_RETRY_AFTER`] when the server asks for it; a caller with a
    /// deadline of its own (shutdown) drops the future.
    pub fn new(api: &ApiConfig, security: &SecurityConfig) -> Result<Client, ClientError> {
        // reqwest is built without a default crypto provider; ring is the one the workspace
        // uses. An error only means one is installed already.
        let _ = rustls::crypto::ring::default_provider().install_default();

        let base_url = normalise_base_url(&api.base_url)?;
        let mut builder = reqwest::Client::builder()
            .user_agent(USER_AGENT)
            .timeout(api.timeout)
            .connect_timeout(api.timeout)
            // An API answering with a redirect is misconfigured (often http → https); following
            // it would turn a POST into a GET or resend the token elsewhere.
            .redirect(reqwest::redirect::Policy::none())
            // The agent talks to one server, a request at a time per schedule.
            .pool_max_idle_per_host(2);

        if !security.verify_ssl {
            warn!(
                base_url = %base_url,
                "tls certificate verification is disabled (verify_ssl = false)"
            );
            if security.ca_file.is_some() {
                warn!("ca_file is ignored because verify_ssl is false");
            }
            builder = builder.tls_danger_accept_invalid_certs(true);
        } else if let Some(path) = &security.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                ClientError::Invalid(format!("reading ca_file {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                ClientError::Invalid(format!("ca_file {}: {}", path.display(), error_chain(&e)))
            })?;
            if certs.is_empty() {
                return Err(ClientError::Invalid(format!(
                    "ca_file {}: no PEM certificate in it",
                    path.display()
                )));
            }
            builder = builder.tls_certs_merge(certs);
        } else if base_url.starts_with("http://") {
            // No TLS will ever happen (redirects are not followed), so the platform's trust
            // store need not be loaded: about half a MiB less resident memory.
            builder = builder.tls_certs_only(Vec::new());
        }

        let http = builder.build().map_err(|e| {
            ClientError::Invalid(format!("building the http client: {}", error_chain(&e)))
        })?;
        let sleeper: Sleeper = Arc::new(|d| Box::pin(tokio::time::sleep(d)));
        Ok(Client {
            http,
            base_url,
            retry_attempts: api.retry_attempts,
            retry_budget: RETRY_BUDGET,
            backoff: Backoff::new(api.retry_delay),
            sleeper,
            rng: ring::rand::SystemRandom::new(),
        })
    }

    /// Bounds the time one call spends waiting between its tries (default [`RETRY_BUDGET`]).
    /// A wait that would go past it, such as a long `Retry-After`, ends the call with
    /// [`ClientError::Unavailable`] instead.
    pub fn with_retry_budget(mut self, budget: Duration) -> Self {
        self.retry_budget = budget;
        self
    }

    /// Replaces the function that waits between tries (for tests: record, don't wait).
    pub fn with_sleeper(mut self, sleeper: Sleeper) -> Self {
        self.sleeper = sleeper;
        self
    }

    /// The backoff policy in use.
    pub fn backoff(&self) -> Backoff {
        self.backoff
    }

    /// `POST agents/register` with the tenant's enrolment token.
    pub async fn register(
        &self,
        enrolment_token: &Secret,
        req: &RegisterRequest,
    ) -> Result<RegisterResponse, ClientError> {
        self.post_typed(enrolment_token, api::paths::REGISTER, req)
            .await
    }

    /// `POST agents/heartbeat` with the agent's token.
    pub async fn heartbeat(
        &self,
        agent_token: &Secret,
        hb: &Heartbeat,
    ) -> Result<HeartbeatResponse, ClientError> {
        self.post_typed(agent_token, api::paths::HEARTBEAT, hb)
            .await
    }

    /// `POST system/report`: the inventory, whole, as a delta or unchanged.
    pub async fn upload_inventory(
        &self,
        agent_token: &Secret,
        upload: &InventoryUpload,
    ) -> Result<InventoryAck, ClientError> {
        self.post_typed(agent_token, api::paths::SYSTEM_REPORT, upload)
            .await
    }

    /// `POST metrics/report`: a batch of telemetry samples.
    pub async fn report_metrics(
        &self,
        agent_token: &Secret,
        report: &MetricsReport,
    ) -> Result<MetricsAck, ClientError> {
        self.post_typed(agent_token, api::paths::METRICS_REPORT, report)
            .await
    }

    /// `POST <path>` with a JSON `body` as is (a spooled report being replayed); returns the
    /// answer's body (empty for 204).
    pub async fn post_json(
        &self,
        token: &Secret,
        path: &str,
        body: &[u8],
    ) -> Result<Vec<u8>, ClientError> {
        self.request(Method::POST, token, path, Some(body)).await
    }

    /// `DELETE <path>`; returns the answer's body (empty for 204).
    pub async fn delete(&self, token: &Secret, path: &str) -> Result<Vec<u8>, ClientError> {
        self.request(Method::DELETE, token, path, None).await
    }

    /// `GET <path>`; returns the answer's body.
    pub async fn get_json(&self, token: &Secret, path: &str) -> Result<Vec<u8>, ClientError> {
        self.request(Method::GET, token, path, None).await
    }

    async fn post_typed<T: Serialize, R: DeserializeOwned>(
        &self,
        token: &Secret,
        path: &str,
        body: &T,
    ) -> Result<R, ClientError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| ClientError::Invalid(format!("encoding the {path} request: {e}")))?;
        let answer = self.post_json(token, path, &body).await?;
        serde_json::from_slice(&answer)
            .map_err(|e| ClientError::Invalid(format!("undecodable answer from {path}: {e}")))
    }

    /// One call with its retries.
    async fn request(
        &self,
        method: Method,
        token: &Secret,
        path: &str,
        body: Option<&[u8]>,
    ) -> Result<Vec<u8>, ClientError> {
        let url = format!("{}/{}", self.base_url, path.trim_start_matches('/'));
        let mut auth = HeaderValue::from_str(&format!("Bearer {}", token.expose()))
            .map_err(|_| ClientError::Invalid("the token is not a valid header value".into()))?;
        // Keeps the value out of hyper's and reqwest's debug output.
        auth.set_sensitive(true);
        let body = match body {
            Some(b) if b.len() > GZIP_THRESHOLD => Some((gzip(b)?, true)),
            Some(b) => Some((b.to_vec(), false)),
            None => None,
        };

        let mut retry = 0;
        let mut waited = Duration::ZERO;
        loop {
            let (message, retry_after) = match self.attempt(&method, &url, &auth, &body).await {
                Attempt::Done(result) => return result,
                Attempt::Retry {
                    message,
                    retry_after,
                } => (message, retry_after),
            };
            let delay = self.backoff.delay(retry, retry_after, self.random());
            if retry >= self.retry_attempts || waited + delay > self.retry_budget {
                // Out of tries, or the wait would hold the caller (one thread that also
                // heartbeats) too long: let it spool and come back when the server said.
                return Err(ClientError::Unavailable {
                    message: format!("{message} (after {} attempts)", retry + 1),
                    retry_after,
                });
            }
            debug!(
                path,
                retry = retry + 1,
                delay_ms = u64::try_from(delay.as_millis()).unwrap_or(u64::MAX),
                error = %message,
                "request failed, retrying"
            );
            (self.sleeper)(delay).await;
            waited += delay;
            retry += 1;
        }
    }

    /// One try: an answer to return, or what went wrong and whether the server said when to
    /// come back.
    async fn attempt(
        &self,
        method: &Method,
        url: &str,
        auth: &HeaderValue,
        body: &Option<(Vec<u8>, bool)>,
    ) -> Attempt {
        let mut req = self
            .http
            .request(method.clone(), url)
            .header(AUTHORIZATION, auth.clone());
        if let Some((bytes, gzipped)) = body {
            req = req
                .header(CONTENT_TYPE, "application/json")
                .body(bytes.clone());
            if *gzipped {
                req = req.header(CONTENT_ENCODING, "gzip");
            }
        }
        let response = match req.send().await {
            Ok(r) => r,
            Err(e) => {
                let message = error_chain(&e);
                // Retrying seconds later won't make an untrusted certificate trusted.
                if is_certificate_error(&e) {
                    return Attempt::Done(Err(ClientError::Unavailable {
                        message,
                        retry_after: None,
                    }));
                }
                return Attempt::Retry {
                    message,
                    retry_after: None,
                };
            }
        };
        let status = response.status();
        let retry_after = match status {
            StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                retry_after(response.headers())
            }
            _ => None,
        };
        let location = response
            .headers()
            .get(reqwest::header::LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let answer = match read_bounded(response).await {
            Ok(bytes) => bytes,
            Err(ReadError::TooLarge) => {
                return Attempt::Done(Err(ClientError::Invalid(format!(
                    "the answer from {url} exceeds {MAX_RESPONSE_BYTES} bytes"
                ))));
            }
            Err(ReadError::Http(e)) => {
                return Attempt::Retry {
                    message: format!("reading the answer: {}", error_chain(&e)),
                    retry_after,
                };
            }
        };

        if status.is_success() {
            return Attempt::Done(Ok(answer));
        }
        let message = error_message(status, &answer);
        match status {
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                debug!(status = status.as_u16(), error = %message, "credentials refused");
                Attempt::Done(Err(ClientError::Unauthorized))
            }
            StatusCode::CONFLICT => Attempt::Done(Err(ClientError::Conflict { message })),
            StatusCode::REQUEST_TIMEOUT | StatusCode::TOO_MANY_REQUESTS => Attempt::Retry {
                message: format!("status {}: {message}", status.as_u16()),
                retry_after,
            },
            s if s.is_server_error() => Attempt::Retry {
                message: format!("status {}: {message}", status.as_u16()),
                retry_after,
            },
            s if s.is_redirection() => Attempt::Done(Err(ClientError::Rejected {
                status: s.as_u16(),
                message: format!(
                    "unexpected redirect to {} (is base_url right?)",
                    location.as_deref().unwrap_or("nowhere")
                ),
            })),
            s => Attempt::Done(Err(ClientError::Rejected {
                status: s.as_u16(),
                message,
            })),
        }
    }

    fn random(&self) -> u64 {
        let bytes: [u8; 8] = ring::rand::generate(&self.rng)
            .map(|r| r.expose())
            // The system's random source failing is not worth failing a request for: the
            // jitter then degrades to the full ceiling.
            .unwrap_or([0xff; 8]);
        u64::from_le_bytes(bytes)
    }
}

enum Attempt {
    Done(Result<Vec<u8>, ClientError>),
    Retry {
        message: String,
        retry_after: Option<Duration>,
    },
}

enum ReadError {
    TooLarge,
    Http(reqwest::Error),
}

/// Reads the answer's body, stopping at [`MAX_RESPONSE_BYTES`].
async fn read_bounded(mut response: reqwest::Response) -> Result<Vec<u8>, ReadError> {
    if response
        .content_length()
        .is_some_and(|n| n > MAX_RESPONSE_BYTES as u64)
    {
        return Err(ReadError::TooLarge);
    }
    let mut out = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(ReadError::Http)? {
        if out.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(ReadError::TooLarge);
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let value = headers.get(RETRY_AFTER)?.to_str().ok()?;
    parse_retry_after(value, Timestamp::now())
}

/// The server's `{"error": {"message"}}` when it sent one, else the start of the body, else
/// the status's reason.
fn error_message(status: StatusCode, body: &[u8]) -> String {
    if let Ok(e) = serde_json::from_slice::<api::ApiError>(body) {
        return format!("{} ({})", e.error.message, e.error.code);
    }
    let text = String::from_utf8_lossy(body);
    let text = text.trim();
    if text.is_empty() {
        return status
            .canonical_reason()
            .unwrap_or("no reason given")
            .to_lowercase();
    }
    let mut end = text.len().min(MAX_ERROR_TEXT);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text[..end].to_owned()
}

/// Checks and normalises `base_url`: http or https, no credentials, no trailing slash.
fn normalise_base_url(base_url: &str) -> Result<String, ClientError> {
    let url = reqwest::Url::parse(base_url.trim())
        .map_err(|e| ClientError::Invalid(format!("base_url {base_url:?}: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ClientError::Invalid(format!(
            "base_url {base_url:?}: the scheme must be http or https"
        )));
    }
    // Credentials in the URL would end up in error messages and logs; the token goes in a
    // header instead.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ClientError::Invalid(
            "base_url must not contain credentials".into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ClientError::Invalid(format!(
            "base_url {base_url:?}: no query or fragment allowed"
        )));
    }
    Ok(url.as_str().trim_end_matches('/').to_owned())
}

fn gzip(body: &[u8]) -> Result<Vec<u8>, ClientError> {
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 4),
        flate2::Compression::default(),
    );
    encoder
        .write_all(body)
        .and_then(|()| encoder.finish())
        .map_err(|e| ClientError::Invalid(format!("compressing the request: {e}")))
}

/// An error and its causes, `: `-separated, without repeating a cause already quoted.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut message = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// Whether the failure is the server's certificate not being trusted (as opposed to the
/// network), found anywhere in the error's causes. `io::Error` hides the error it wraps from
/// `source()` (and the TLS stack wraps it twice), hence the look inside each one.
fn is_certificate_error(e: &(dyn std::error::Error + 'static)) -> bool {
    if let Some(tls) = e.downcast_ref::<rustls::Error>() {
        return matches!(
            tls,
            rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
        );
    }
    if let Some(inner) = e
        .downcast_ref::<std::io::Error>()
        .and_then(|io| io.get_ref())
        && is_certificate_error(inner)
    {
        return true;
    }
    e.source().is_some_and(is_certificate_error)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backoff(base_ms: u64) -> Backoff {
        Backoff::new(Duration::from_millis(base_ms))
    }

    #[test]
    fn ceiling_doubles_from_base_up_to_the_cap() {
        let b = backoff(5_000);
        assert_eq!(b.ceiling(0), Duration::from_secs(5));
        assert_eq!(b.ceiling(1), Duration::from_secs(10));
        assert_eq!(b.ceiling(2), Duration::from_secs(20));
        assert_eq!(b.ceiling(5), Duration::from_secs(160));
        assert_eq!(b.ceiling(6), MAX_BACKOFF);
        for retry in [7, 31, 32, 63, 64, 1000, u32::MAX] {
            assert_eq!(b.ceiling(retry), MAX_BACKOFF, "retry {retry}");
        }
        // A huge base never overflows.
        let huge = Backoff::new(Duration::from_secs(u64::MAX / 2));
        assert_eq!(huge.ceiling(3), MAX_BACKOFF);
        assert_eq!(backoff(0).ceiling(10), Duration::ZERO);
    }

    #[test]
    fn delay_is_full_jitter_over_zero_to_ceiling() {
        let b = backoff(5_000);
        for retry in 0..70 {
            let ceiling = b.ceiling(retry);
            assert_eq!(b.delay(retry, None, 0), Duration::ZERO);
            assert_eq!(b.delay(retry, None, u64::MAX), ceiling, "retry {retry}");
            let half = b.delay(retry, None, 1 << 63);
            let diff = half.abs_diff(ceiling / 2);
            assert!(diff <= Duration::from_nanos(1), "retry {retry}: {half:?}");
            // Monotonic in the random value.
            let mut last = Duration::ZERO;
            for r in (0..=64).map(|i| u64::MAX / 64 * i) {
                let d = b.delay(retry, None, r);
                assert!(d >= last && d <= ceiling);
                last = d;
            }
        }
    }

    #[test]
    fn retry_after_replaces_the_jitter_within_bounds() {
        let b = backoff(5_000);
        for random in [0, 1 << 40, u64::MAX] {
            assert_eq!(
                b.delay(0, Some(Duration::from_secs(2)), random),
                Duration::from_secs(2)
            );
            assert_eq!(b.delay(9, Some(Duration::ZERO), random), Duration::ZERO);
            assert_eq!(
                b.delay(1, Some(Duration::from_secs(86_400)), random),
                MAX_RETRY_AFTER
            );
            // Longer than the computed cap but within the bound: honoured.
            assert_eq!(
                b.delay(1, Some(Duration::from_secs(600)), random),
                Duration::from_secs(600)
            );
        }
    }

    #[test]
    fn parses_retry_after_seconds_and_dates() {
        let now: Timestamp = "2025-03-01T12:00:00Z".parse().unwrap();
        let p = |v| parse_retry_after(v, now);
        assert_eq!(p("2"), Some(Duration::from_secs(2)));
        assert_eq!(p(" 120 "), Some(Duration::from_secs(120)));
        assert_eq!(p("0"), Some(Duration::ZERO));
        assert_eq!(
            p("99999999999999999999999"),
            Some(Duration::from_secs(u64::MAX))
        );
        assert_eq!(
            p("Sat, 01 Mar 2025 12:00:30 GMT"),
            Some(Duration::from_secs(30))
        );
        assert_eq!(p("Sat, 01 Mar 2025 11:00:00 GMT"), Some(Duration::ZERO));
        for bad in ["", "-1", "1.5", "soon", "2 s", "Sat, 01 Mar 2025"] {
            assert_eq!(p(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn base_url_is_normalised_and_checked() {
        assert_eq!(
            normalise_base_url("https://m.example/api/").unwrap(),
            "https://m.example/api"
        );
        assert_eq!(
            normalise_base_url("http://127.0.0.1:8080").unwrap(),
            "http://127.0.0.1:8080"
        );
        for bad in [
            "",
            "m.example/api",
            "ftp://m.example/api",
            "https://user:pw@m.example/api",
            "https://m.example/api?x=1",
        ] {
            assert!(
                matches!(normalise_base_url(bad), Err(ClientError::Invalid(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn error_messages_prefer_the_servers_words() {
        let json = br#"{"error":{"code":"invalid_request","message":"bad hostname"}}"#;
        assert_eq!(
            error_message(StatusCode::BAD_REQUEST, json),
            "bad hostname (invalid_request)"
        );
        assert_eq!(
            error_message(StatusCode::BAD_REQUEST, b"  plain text\n"),
            "plain text"
        );
        assert_eq!(
            error_message(StatusCode::SERVICE_UNAVAILABLE, b""),
            "service unavailable"
        );
        let long = "é".repeat(400);
        assert!(error_message(StatusCode::BAD_GATEWAY, long.as_bytes()).len() <= MAX_ERROR_TEXT);
    }

    #[test]
    fn gzip_round_trips() {
        use std::io::Read;
        let body = br#"{"a":1}"#.repeat(500);
        let packed = gzip(&body).unwrap();
        assert!(packed.len() < body.len() / 10);
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&packed[..])
            .read_to_end(&mut out)
            .unwrap();
        assert_eq!(out, body);
    }
}
