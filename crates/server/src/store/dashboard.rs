//! What the dashboard reads beyond the admin and inventory areas (the fleet's overview) and its
//! login sessions.

use super::{Backend, Store, StoreError, postgres, sqlite};

// The admin and inventory areas' types the dashboard reads, reachable from here while
// `store/mod.rs` keeps those modules private.
pub use super::admin::{AgentFilter, AgentPage, AgentSummary, Thresholds};
pub use super::inventory::{
    InstalledPackage, InventoryChange, SoftwareHit, SoftwarePage, SoftwareQuery,
};

/// A dashboard session to store: the SHA-256 of its id, never the id.
#[derive(Debug, Clone)]
pub struct NewSession {
    pub hash: String,
    pub tenant_id: String,
    /// The admin token the session was opened with.
    pub token_id: String,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A live session, found by the hash of its id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub hash: String,
    pub tenant_id: String,
    pub token_id: String,
    pub expires_at: i64,
}

/// The counts the fleet page opens with.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FleetOverview {
    pub total: u64,
    /// Agents per operating system (`os_name`, else `platform`), most common first, at most
    /// [`OS_MIX_ROWS`]; the rest are not listed.
    pub os_mix: Vec<(String, u64)>,
    /// Hosts whose latest figures (kept on the agent's row at ingestion, sampled since
    /// `recent_since`) are over any threshold, and over each.
    pub over_any: u64,
    pub over_cpu: u64,
    pub over_memory: u64,
    pub over_disk: u64,
}

/// How many operating systems the overview names.
pub const OS_MIX_ROWS: u32 = 8;

impl Store {
    pub async fn create_session(&self, session: &NewSession) -> Result<(), StoreError> {
        on_backend!(self, write create_session(session))
    }

    /// The session whose id hashes to `hash`, if it has not expired at `now` and the admin
    /// token it came from is still live (not revoked, not expired).
    pub async fn find_session(
        &self,
        hash: &str,
        now: i64,
    ) -> Result<Option<SessionRecord>, StoreError> {
        on_backend!(self, find_session(hash, now))
    }

    /// Ends a session (logout). Ending one that does not exist is not an error.
    pub async fn delete_session(&self, hash: &str) -> Result<(), StoreError> {
        on_backend!(self, write delete_session(hash))
    }

    /// Deletes sessions expired at `now`; returns how many.
    pub async fn delete_expired_sessions(&self, now: i64) -> Result<u64, StoreError> {
        on_backend!(self, write delete_expired_sessions(now))
    }

    /// The tenant's fleet in counts: agents, the OS mix, and hosts whose latest figures
    /// (sampled since `recent_since`) are over `thresholds`. (Who is online is the admin area's
    /// definition: see `list_agents_page`.)
    pub async fn fleet_overview(
        &self,
        tenant_id: &str,
        recent_since: i64,
        thresholds: Thresholds,
    ) -> Result<FleetOverview, StoreError> {
        on_backend!(self, fleet_overview(tenant_id, recent_since, thresholds))
    }
}
