//! The store's admin reads and writes: tokens, agent listings, alerts.
//!
//! The types and signatures here are the contract the admin API and the dashboard code
//! against; the bodies are filled in with the admin API work.

#[allow(unused_imports)]
use super::{AgentRecord, Backend, Store, StoreError, postgres, sqlite};

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

impl Store {
    /// The tenant's agents matching `filter`, ordered by hostname then id; `now` (unix
    /// seconds) decides who is online.
    pub async fn list_agents_page(
        &self,
        tenant_id: &str,
        filter: &AgentFilter,
        now: i64,
    ) -> Result<AgentPage, StoreError> {
        let _ = (tenant_id, filter, now);
        Err(StoreError::Corrupt("agent listing: not built yet".into()))
    }

    /// One agent as the fleet list shows it.
    pub async fn agent_summary(
        &self,
        tenant_id: &str,
        agent_id: &str,
        now: i64,
    ) -> Result<Option<AgentSummary>, StoreError> {
        let _ = (tenant_id, agent_id, now);
        Err(StoreError::Corrupt("agent summary: not built yet".into()))
    }
}
