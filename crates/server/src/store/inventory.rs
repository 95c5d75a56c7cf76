//! The store's inventory history and the fleet-wide software index.
//!
//! The types and signatures here are the contract the admin API and the dashboard code
//! against; the bodies are filled in with the inventory work.

#[allow(unused_imports)]
use super::{Backend, Store, StoreError, postgres, sqlite};

/// A fleet-wide software search: hosts with a package named `name` (exact, case-insensitive),
/// optionally only where its version is below `below` by the package source's own ordering
/// (dpkg's for dpkg, rpm's for rpm, ...).
#[derive(Debug, Clone, Default)]
pub struct SoftwareQuery {
    pub name: String,
    pub below: Option<String>,
    /// Only packages from this source (`dpkg`, `rpm`, `apk`, `pacman`, `flatpak`, `snap`,
    /// `registry`, `seed`).
    pub source: Option<String>,
    pub limit: u32,
    pub offset: u32,
}

/// One host holding a matching package.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SoftwareHit {
    pub agent_id: String,
    pub hostname: String,
    pub name: String,
    pub version: String,
    pub source: String,
    pub arch: Option<String>,
}

/// A page of search results and how many there are in all.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct SoftwarePage {
    pub total: u64,
    pub hits: Vec<SoftwareHit>,
}

/// One package an agent has (latest inventory).
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InstalledPackage {
    pub name: String,
    pub version: String,
    pub source: String,
    pub arch: Option<String>,
}

/// One change between two inventories of an agent.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct InventoryChange {
    /// Unix seconds the inventory that showed the change was received.
    pub at: i64,
    /// `software` or `hardware`.
    pub category: String,
    /// `added`, `removed`, `upgraded`, `downgraded` (software) or `changed` (hardware).
    pub change: String,
    /// Package name, or the hardware item (`cpu`, `memory`, `disk:sda`, `network:eth0`, ...).
    pub item: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

impl Store {
    /// Hosts of `tenant_id` matching `query`, ordered by hostname, one page.
    pub async fn software_search(
        &self,
        tenant_id: &str,
        query: &SoftwareQuery,
    ) -> Result<SoftwarePage, StoreError> {
        let _ = (tenant_id, query);
        Err(StoreError::Corrupt("software search: not built yet".into()))
    }

    /// The agent's packages from its latest inventory, name containing `search`
    /// (case-insensitive) if given, ordered by name; one page and the total.
    pub async fn agent_software(
        &self,
        tenant_id: &str,
        agent_id: &str,
        search: Option<&str>,
        limit: u32,
        offset: u32,
    ) -> Result<(u64, Vec<InstalledPackage>), StoreError> {
        let _ = (tenant_id, agent_id, search, limit, offset);
        Err(StoreError::Corrupt("agent software: not built yet".into()))
    }

    /// The agent's inventory changes, newest first, at most `limit`, received before `before`
    /// (unix seconds) when given.
    pub async fn inventory_history(
        &self,
        tenant_id: &str,
        agent_id: &str,
        before: Option<i64>,
        limit: u32,
    ) -> Result<Vec<InventoryChange>, StoreError> {
        let _ = (tenant_id, agent_id, before, limit);
        Err(StoreError::Corrupt(
            "inventory history: not built yet".into(),
        ))
    }
}
