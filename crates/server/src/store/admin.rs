//! The store's admin reads and writes: tokens, agent listings, alerts.
//!
//! The agent types and signatures here are the contract the dashboard codes against.

use super::{AgentRecord, Backend, MetricsRow, NewToken, Store, StoreError, postgres, sqlite};
use crate::token::TokenKind;

/// The heartbeat interval assumed for an agent that never said its own (seed agents), seconds.
pub const DEFAULT_HEARTBEAT_INTERVAL_S: i64 = 60;

/// An agent is offline once this many heartbeat intervals passed without one.
pub const OFFLINE_AFTER_INTERVALS: i64 = 3;

/// Whether an agent last seen at `last_seen`, promising a heartbeat every `interval_s`
/// (`None`: [`DEFAULT_HEARTBEAT_INTERVAL_S`]), is online at `now`. The SQL of the listings
/// says the same.
pub fn is_online(last_seen: Option<i64>, interval_s: Option<i64>, now: i64) -> bool {
    let interval = interval_s.unwrap_or(DEFAULT_HEARTBEAT_INTERVAL_S);
    last_seen.is_some_and(|seen| seen > now.saturating_sub(OFFLINE_AFTER_INTERVALS * interval))
}

/// Which of a tenant's agents to list, one page of them.
#[derive(Debug, Clone, Default)]
pub struct AgentFilter {
    /// Hostname pattern: `*` matches any run of characters; without `*`, a case-insensitive
    /// substring.
    pub hostname: Option<String>,
    /// Platform or OS name, case-insensitive (`linux`, `windows`, `debian`, ...).
    pub os: Option<String>,
    pub online: Option<bool>,
    pub limit: u32,
    pub offset: u32,
}

/// An agent as the fleet list shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentSummary {
    pub agent: AgentRecord,
    /// Heard from within three heartbeat intervals.
    pub online: bool,
    /// The latest telemetry sample's seed figures, percent.
    pub cpu_usage: Option<f64>,
    pub memory_usage: Option<f64>,
    pub disk_usage: Option<f64>,
    /// Unix seconds of that sample.
    pub metrics_at: Option<i64>,
}

/// A page of agents and how many match in all.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentPage {
    pub total: u64,
    pub agents: Vec<AgentSummary>,
}

/// A token as listed: never its hash.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenInfo {
    pub id: String,
    pub kind: TokenKind,
    pub name: Option<String>,
    /// Set for agent tokens.
    pub agent_id: Option<String>,
    pub created_at: i64,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Admin and enrolment tokens only, to the minute.
    pub last_used_at: Option<i64>,
    /// Enrolment tokens: the most agents that may register with it (`None`: any number).
    pub max_uses: Option<i64>,
    /// Enrolment tokens: the agents that registered with it, each counted once.
    pub uses: i64,
}

/// Which of a tenant's tokens to list, one page of them, oldest first.
#[derive(Debug, Clone, Default)]
pub struct TokenFilter {
    pub kind: Option<TokenKind>,
    /// `Some(true)`: only revoked ones; `Some(false)`: only those not revoked.
    pub revoked: Option<bool>,
    pub limit: u32,
    pub offset: u32,
}

/// A page of tokens and how many match in all.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenPage {
    pub total: u64,
    pub tokens: Vec<TokenInfo>,
}

/// Percentages over which a host's latest figure is an alert (the seed's `cpu_threshold`,
/// `memory_threshold`, `disk_threshold`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Thresholds {
    pub cpu: f64,
    pub memory: f64,
    pub disk: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            cpu: 80.0,
            memory: 80.0,
            disk: 90.0,
        }
    }
}

/// What an alert is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertMetric {
    Cpu,
    Memory,
    Disk,
    /// No heartbeat for three intervals.
    Offline,
}

impl AlertMetric {
    pub fn as_str(self) -> &'static str {
        match self {
            AlertMetric::Cpu => "cpu",
            AlertMetric::Memory => "memory",
            AlertMetric::Disk => "disk",
            AlertMetric::Offline => "offline",
        }
    }
}

/// One host over one threshold, or offline.
#[derive(Debug, Clone, PartialEq)]
pub struct Alert {
    pub agent_id: String,
    pub hostname: String,
    pub metric: AlertMetric,
    /// The latest figure, percent (`None` for offline).
    pub value: Option<f64>,
    pub threshold: Option<f64>,
    /// Unix seconds: the first sample of the current run over the threshold, or when the
    /// agent's third missed heartbeat was due.
    pub since: i64,
}

/// The alerts of one page of hosts, and how many hosts have any.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertPage {
    pub total_agents: u64,
    pub alerts: Vec<Alert>,
}

impl Store {
    /// The tenant's agents matching `filter`, ordered by hostname then id; `now` (unix
    /// seconds) decides who is online.
    pub async fn list_agents_page(
        &self,
        tenant_id: &str,
        filter: &AgentFilter,
        now: i64,
    ) -> Result<AgentPage, StoreError> {
        on_backend!(self, list_agents_page(tenant_id, filter, now))
    }

    /// One agent as the fleet list shows it.
    pub async fn agent_summary(
        &self,
        tenant_id: &str,
        agent_id: &str,
        now: i64,
    ) -> Result<Option<AgentSummary>, StoreError> {
        on_backend!(self, agent_summary(tenant_id, agent_id, now))
    }

    /// Samples taken in `[from, to)`, oldest first, at most `limit`.
    pub async fn metrics_window(
        &self,
        tenant_id: &str,
        agent_id: &str,
        from: i64,
        to: i64,
        limit: u32,
    ) -> Result<Vec<MetricsRow>, StoreError> {
        on_backend!(self, metrics_window(tenant_id, agent_id, from, to, limit))
    }

    /// Stores a new admin or enrolment token (its hash) named `name`.
    pub async fn create_token(
        &self,
        tenant_id: &str,
        token: &NewToken,
        name: Option<&str>,
        now: i64,
    ) -> Result<TokenInfo, StoreError> {
        on_backend!(self, write create_token(tenant_id, token, name, now))
    }

    pub async fn list_tokens(
        &self,
        tenant_id: &str,
        filter: &TokenFilter,
    ) -> Result<TokenPage, StoreError> {
        on_backend!(self, list_tokens(tenant_id, filter))
    }

    /// Revokes one of the tenant's tokens (of any kind); `None` if the tenant has no such
    /// token. Revoking a revoked token changes nothing.
    pub async fn revoke_token(
        &self,
        tenant_id: &str,
        token_id: &str,
        now: i64,
    ) -> Result<Option<TokenInfo>, StoreError> {
        on_backend!(self, write revoke_token(tenant_id, token_id, now))
    }

    /// Records that a token was used at `now`.
    pub async fn touch_token(&self, token_id: &str, now: i64) -> Result<(), StoreError> {
        on_backend!(self, write touch_token(token_id, now))
    }

    /// Hosts over `thresholds` by their latest figures, and hosts offline at `now`: one page
    /// of hosts (by hostname), each with its alerts.
    pub async fn alerts(
        &self,
        tenant_id: &str,
        thresholds: &Thresholds,
        now: i64,
        limit: u32,
        offset: u32,
    ) -> Result<AlertPage, StoreError> {
        on_backend!(self, alerts(tenant_id, thresholds, now, limit, offset))
    }
}
