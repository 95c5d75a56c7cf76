//! Operations: Prometheus metrics, per-agent rate limits, the periodic clean-up job.
//!
//! [`Ops`] is built once per server and shared by every request through [`crate::AppState`].
//! The rate limits and the counters live in this process: with several replicas, each counts
//! what it served (Prometheus sums them; an agent's limit is per replica it reaches).

use std::time::{Duration, Instant};

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::Clock as _;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing::{debug, info, warn};

use crate::AppState;
use crate::config::{Limits, Retention};
use crate::error::ApiError;
use crate::store::Store;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabels {
    kind: &'static str,
}

/// The process's counters and rate limiter.
#[derive(Debug)]
pub struct Ops {
    registry: Registry,
    requests: Family<RequestLabels, Counter>,
    durations: Family<RouteLabels, Histogram>,
    reports: Family<KindLabels, Counter>,
    rate_limited: Counter,
    agents: Gauge,
    agents_online: Gauge,
    limiter: Option<DefaultKeyedRateLimiter<String>>,
}

fn latency_histogram() -> Histogram {
    // 0.5 ms to about 8 s.
    Histogram::new(exponential_buckets(0.0005, 2.0, 15))
}

impl Ops {
    pub fn new(limits: &Limits) -> Ops {
        let mut registry = Registry::with_prefix("muster");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "HTTP requests answered, by method, route and status",
            requests.clone(),
        );
        let durations = Family::<RouteLabels, Histogram>::new_with_constructor(
            latency_histogram as fn() -> Histogram,
        );
        registry.register(
            "http_request_duration_seconds",
            "Time from a request's arrival to its answer, by route",
            durations.clone(),
        );
        let reports = Family::<KindLabels, Counter>::default();
        registry.register(
            "reports_ingested",
            "Reports accepted from agents, by kind (inventory, metrics)",
            reports.clone(),
        );
        let rate_limited = Counter::default();
        registry.register(
            "rate_limited_requests",
            "Agent requests answered 429 by the per-agent rate limit",
            rate_limited.clone(),
        );
        let agents = Gauge::default();
        registry.register("agents", "Registered agents, all tenants", agents.clone());
        let agents_online = Gauge::default();
        registry.register(
            "agents_online",
            "Agents heard from within three heartbeat intervals, all tenants",
            agents_online.clone(),
        );
        let limiter = limits.agent_requests_per_minute.map(|rate| {
            RateLimiter::keyed(Quota::per_minute(rate).allow_burst(limits.agent_burst))
        });
        Ops {
            registry,
            requests,
            durations,
            reports,
            rate_limited,
            agents,
            agents_online,
            limiter,
        }
    }

    /// Counts one request of `agent_id` against its limit; an agent over it is told when to
    /// come back.
    pub fn check_agent_rate(&self, agent_id: &str) -> Result<(), ApiError> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        match limiter.check_key(&agent_id.to_owned()) {
            Ok(()) => Ok(()),
            Err(not_until) => {
                self.rate_limited.inc();
                let wait = not_until.wait_time_from(limiter.clock().now());
                Err(ApiError::TooManyRequests {
                    retry_after_s: retry_after_seconds(wait),
                })
            }
        }
    }

    /// Forgets the limiter state of agents that have been quiet long enough to be back at
    /// their full burst, so the table does not keep every agent ever seen.
    fn shrink(&self) {
        if let Some(limiter) = &self.limiter {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// The text exposition, with the agent gauges read from the store now.
    pub async fn render(&self, store: &Store) -> Result<String, ApiError> {
        let now = jiff::Timestamp::now().as_second();
        let counts = store.agent_counts(now).await?;
        self.agents.set(counts.total);
        self.agents_online.set(counts.online);
        let mut text = String::new();
        prometheus_client::encoding::text::encode(&mut text, &self.registry)
            .map_err(|e| ApiError::Internal(format!("encoding metrics: {e}")))?;
        Ok(text)
    }
}

/// Whole seconds to wait, at least one (a `Retry-After` of 0 invites a tight loop).
fn retry_after_seconds(wait: Duration) -> u64 {
    wait.as_secs_f64().ceil().max(1.0) as u64
}

/// Middleware: counts and times every routed request, and counts accepted reports.
pub async fn track(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let mut labels = RequestLabels {
        method: request.method().as_str().to_owned(),
        route: request
            .extensions()
            .get::<MatchedPath>()
            .map_or("unmatched", |p| p.as_str())
            .to_owned(),
        status: 0,
    };
    let response = next.run(request).await;
    let elapsed = started.elapsed();
    labels.status = response.status().as_u16();
    let ops = &state.ops;
    ops.requests.get_or_create(&labels).inc();
    ops.durations
        .get_or_create(&RouteLabels {
            route: labels.route.clone(),
        })
        .observe(elapsed.as_secs_f64());
    if response.status().is_success() && labels.method == "POST" {
        let kind = match labels.route.as_str() {
            "/api/system/report" => Some("inventory"),
            "/api/metrics/report" => Some("metrics"),
            _ => None,
        };
        if let Some(kind) = kind {
            ops.reports.get_or_create(&KindLabels { kind }).inc();
        }
    }
    debug!(
        method = %labels.method,
        route = %labels.route,
        status = labels.status,
        elapsed_ms = elapsed.as_secs_f64() * 1000.0,
        "request"
    );
    response
}

/// `GET /metrics`.
pub async fn metrics(State(state): State<AppState>) -> Response {
    match state.ops.render(&state.store).await {
        Ok(text) => {
            let mut response = (StatusCode::OK, text).into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
            );
            response
        }
        Err(e) => e.into_response(),
    }
}

/// Runs the clean-up every `retention.interval`, the first one interval after start, until the
/// task is dropped: telemetry and report records past their retention, expired dashboard
/// sessions, and the rate limiter's idle entries. Each replica may run it; the deletes are
/// idempotent.
pub async fn housekeeping(state: AppState, retention: Retention) {
    // The first clean-up is one interval after start: a restart does no extra work, and a
    // fleet of replicas started together does not delete in step.
    let mut tick = tokio::time::interval_at(
        tokio::time::Instant::now() + retention.interval,
        retention.interval,
    );
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The commands' jobs run more often: a lease or a lock lasts seconds to minutes.
    let sweep_every = state.limits.command_sweep_interval;
    let mut sweep =
        tokio::time::interval_at(tokio::time::Instant::now() + sweep_every, sweep_every);
    sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => clean_up(&state, retention).await,
            _ = sweep.tick() => sweep_commands(&state.store, jiff::Timestamp::now().as_second()).await,
        }
    }
}

async fn clean_up(state: &AppState, retention: Retention) {
    state.ops.shrink();
    let now = jiff::Timestamp::now().as_second();
    match state.store.delete_expired_sessions(now).await {
        Ok(n) if n > 0 => debug!(sessions = n, "expired dashboard sessions deleted"),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "deleting expired sessions failed"),
    }
    match purge(&state.store, retention, now).await {
        Ok(purged) if purged.metrics + purged.reports > 0 => info!(
            metrics = purged.metrics,
            reports = purged.reports,
            "retention: old data deleted"
        ),
        Ok(_) => debug!("retention: nothing to delete"),
        Err(e) => warn!(error = %e, "retention: clean-up failed; retrying next time"),
    }
}

/// The commands' jobs at `now`: leases that ran out go back to pending (cancelled, if that
/// was asked), undelivered commands past their expiry become `expired`, expired locks go.
pub async fn sweep_commands(store: &Store, now: i64) {
    match store.sweep_commands(now).await {
        Ok(swept) if swept.returned + swept.expired + swept.locks > 0 => info!(
            returned = swept.returned,
            expired = swept.expired,
            locks = swept.locks,
            "commands: leases returned, expiries and locks swept"
        ),
        Ok(_) => {}
        Err(e) => warn!(error = %e, "commands: the sweep failed; retrying next time"),
    }
}

/// What one clean-up deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Purged {
    pub metrics: u64,
    pub reports: u64,
}

/// Deletes telemetry and report records older than their retention at `now` (unix seconds).
pub async fn purge(
    store: &Store,
    retention: Retention,
    now: i64,
) -> Result<Purged, crate::store::StoreError> {
    let cutoff =
        |keep: Duration| now.saturating_sub(i64::try_from(keep.as_secs()).unwrap_or(i64::MAX));
    Ok(Purged {
        metrics: store.purge_metrics(cutoff(retention.metrics)).await?,
        reports: store.purge_reports(cutoff(retention.reports)).await?,
    })
}

/// The rate limit's quota as configured, for messages.
pub fn describe_limit(limits: &Limits) -> String {
    match limits.agent_requests_per_minute {
        Some(rate) => format!(
            "{rate} requests per minute per agent, bursts of {}",
            limits.agent_burst
        ),
        None => "off".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU32;

    use super::*;

    #[test]
    fn retry_after_rounds_up_and_is_never_zero() {
        assert_eq!(retry_after_seconds(Duration::ZERO), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_secs(1)), 1);
        assert_eq!(retry_after_seconds(Duration::from_millis(1500)), 2);
    }

    #[test]
    fn an_agent_over_its_burst_is_told_to_wait_and_others_are_not() {
        let limits = Limits {
            agent_requests_per_minute: NonZeroU32::new(60),
            agent_burst: NonZeroU32::new(3).unwrap(),
            ..Limits::default()
        };
        let ops = Ops::new(&limits);
        for _ in 0..3 {
            ops.check_agent_rate("a").unwrap();
        }
        match ops.check_agent_rate("a") {
            Err(ApiError::TooManyRequests { retry_after_s }) => assert_eq!(retry_after_s, 1),
            other => panic!("expected 429, got {other:?}"),
        }
        ops.check_agent_rate("b").unwrap();
        let off = Ops::new(&Limits {
            agent_requests_per_minute: None,
            ..Limits::default()
        });
        for _ in 0..1000 {
            off.check_agent_rate("a").unwrap();
        }
    }
}
