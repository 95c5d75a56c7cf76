//! The store's operations: retention and fleet-wide counts (the operator's view, across
//! tenants; nothing here is ever shown to a tenant).

use super::{Backend, Store, StoreError, postgres, sqlite};

/// How many agents there are, and how many are online, across all tenants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgentCounts {
    pub total: i64,
    pub online: i64,
}

/// Seconds of telemetry deleted per statement, so one clean-up never holds SQLite's write
/// lock for long.
pub(super) const PURGE_STEP_S: i64 = 60 * 60;

impl Store {
    /// Agent counts at `now` (unix seconds), for `/metrics`.
    pub async fn agent_counts(&self, now: i64) -> Result<AgentCounts, StoreError> {
        on_backend!(self, agent_counts(now))
    }

    /// Deletes telemetry samples taken before `before`, an hour of samples per statement;
    /// returns how many.
    pub async fn purge_metrics(&self, before: i64) -> Result<u64, StoreError> {
        on_backend!(self, write purge_metrics(before))
    }

    /// Deletes report records received before `before` (their samples go with them);
    /// returns how many.
    pub async fn purge_reports(&self, before: i64) -> Result<u64, StoreError> {
        on_backend!(self, write purge_reports(before))
    }
}
