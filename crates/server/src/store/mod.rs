//! Storage: one interface, [`Store`], over the database backends.
//!
//! Every method that touches a tenant's data takes the tenant id and scopes its query by it;
//! the only unscoped look-ups are the operator's (`list_tenants`) and `find_token`, which is how a
//! request learns its tenant in the first place. The SQL is kept portable (numbered `$n`
//! parameters, `ON CONFLICT`, `RETURNING`, BIGINT unix seconds, TEXT ids and JSON) so the
//! PostgreSQL backend can run the same statements.

mod postgres;
mod sqlite;

use std::path::PathBuf;

use uuid::Uuid;

use crate::token::TokenKind;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("applying migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("creating the data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("database url: {0}")]
    Url(String),
    /// The request contradicts what is stored (a delta on a base the server does not hold, a
    /// report id another agent used).
    #[error("{0}")]
    Conflict(String),
    #[error("{0} not found")]
    NotFound(&'static str),
    /// A stored value the code cannot read back (a bug or a hand-edited database).
    #[error("corrupt row: {0}")]
    Corrupt(String),
    /// A registration the enrolment token no longer allows.
    #[error("{}", .0.message())]
    Enrolment(EnrolmentRefusal),
    /// The stored inventory moved while a new one was being made from it (the store works it
    /// out again; never answered as such).
    #[error("the held inventory changed while the new one was being made")]
    Stale,
}

/// Why an enrolment token refused a registration. Its holder proved they have the token, so
/// saying which limit it hit tells them nothing about other tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrolmentRefusal {
    Expired,
    UsedUp,
    Revoked,
}

impl EnrolmentRefusal {
    /// The 401's message.
    pub fn message(self) -> &'static str {
        match self {
            EnrolmentRefusal::Expired => "the enrolment token has expired",
            EnrolmentRefusal::UsedUp => {
                "the enrolment token has been used up: every registration it allows was made"
            }
            EnrolmentRefusal::Revoked => "the enrolment token has been revoked",
        }
    }
}

/// A tenant: one customer's fleet, tokens and data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tenant {
    pub id: String,
    pub name: String,
    pub created_at: i64,
}

/// A token to store: only its hash.
#[derive(Debug, Clone)]
pub struct NewToken {
    pub id: String,
    pub kind: TokenKind,
    pub hash: String,
    pub agent_id: Option<String>,
    pub expires_at: Option<i64>,
    /// Enrolment tokens: how many agents may register with it; `None`: any number.
    pub max_uses: Option<i64>,
}

impl NewToken {
    pub fn new(kind: TokenKind, hash: String, agent_id: Option<String>) -> NewToken {
        NewToken {
            id: Uuid::now_v7().to_string(),
            kind,
            hash,
            agent_id,
            expires_at: None,
            max_uses: None,
        }
    }
}

/// A stored token, found by its hash.
#[derive(Debug, Clone)]
pub struct TokenRecord {
    pub id: String,
    pub tenant_id: String,
    pub kind: TokenKind,
    pub hash: String,
    pub agent_id: Option<String>,
    pub expires_at: Option<i64>,
    pub revoked_at: Option<i64>,
    /// Unix seconds; kept for admin and enrolment tokens only, to the minute.
    pub last_used_at: Option<i64>,
    /// Enrolment tokens: the most registrations allowed (`None`: any number) and those made.
    pub max_uses: Option<i64>,
    pub uses: i64,
}

impl TokenRecord {
    /// Whether the token lets its holder act as `kind` at `now` (unix seconds): of that kind,
    /// not revoked, not expired. (An enrolment token's uses are counted by registration itself,
    /// atomically: `Store::register_agent`.)
    pub fn is_live(&self, kind: TokenKind, now: i64) -> bool {
        self.kind == kind && self.refusal(now).is_none()
    }

    /// Why the token no longer works at `now`, if it does not: revoked or expired.
    pub fn refusal(&self, now: i64) -> Option<EnrolmentRefusal> {
        if self.revoked_at.is_some() {
            Some(EnrolmentRefusal::Revoked)
        } else if self.expires_at.is_some_and(|at| at <= now) {
            Some(EnrolmentRefusal::Expired)
        } else {
            None
        }
    }
}

/// What registration knows about an agent.
#[derive(Debug, Clone)]
pub struct AgentRegistration {
    /// `key:<public key>`, `machine:<id>` or `host:<hostname>`: what registration is
    /// idempotent on within the tenant.
    pub identity: String,
    pub public_key: Option<String>,
    pub machine_id: Option<String>,
    pub hostname: String,
    pub platform: Option<String>,
    pub os_name: Option<String>,
    pub os_version: Option<String>,
    pub arch: Option<String>,
    pub agent_version: Option<String>,
}

/// A stored agent.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct AgentRecord {
    pub id: String,
    pub tenant_id: String,
    pub identity: String,
    pub public_key: Option<String>,
    pub machine_id: Option<String>,
    pub hostname: String,
    pub platform: Option<String>,
    pub os_name: Option<String>,
    pub os_version: Option<String>,
    pub arch: Option<String>,
    pub agent_version: Option<String>,
    pub created_at: i64,
    pub last_seen: Option<i64>,
    /// The last heartbeat's health figures, JSON.
    pub health: Option<String>,
}

/// One heartbeat to record.
#[derive(Debug, Clone)]
pub struct HeartbeatRow {
    pub tenant_id: String,
    pub agent_id: String,
    /// Unix seconds.
    pub seen_at: i64,
    pub agent_version: String,
    /// The agent's health figures, JSON.
    pub health: String,
    /// The interval the agent promises; `None`: the server's default.
    pub interval_s: Option<i64>,
}

/// The envelope of a report being ingested: what makes ingestion idempotent.
#[derive(Debug, Clone)]
pub struct ReportMeta {
    pub report_id: Uuid,
    pub tenant_id: String,
    pub agent_id: String,
    pub kind: ReportKind,
    pub received_at: i64,
}

/// What a stored report was.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    InventoryFull,
    InventoryDelta,
    InventoryUnchanged,
    /// A bare `DaemonReport` posted to the system report.
    DaemonReport,
    /// The seed agent's flat system report.
    SeedReport,
    Metrics,
}

impl ReportKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ReportKind::InventoryFull => "inventory_full",
            ReportKind::InventoryDelta => "inventory_delta",
            ReportKind::InventoryUnchanged => "inventory_unchanged",
            ReportKind::DaemonReport => "daemon_report",
            ReportKind::SeedReport => "seed_report",
            ReportKind::Metrics => "metrics",
        }
    }
}

/// An agent's latest inventory: a `DaemonReport` as JSON and its inventory hash.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct StoredInventory {
    pub hash: String,
    pub report: String,
    pub report_id: String,
    pub updated_at: i64,
}

/// The inventory that replaces the stored one.
#[derive(Debug, Clone)]
pub struct NewInventory {
    pub hash: String,
    pub report: String,
}

/// How often an inventory is worked out again when the stored one moved meanwhile.
pub const INGEST_ATTEMPTS: usize = 3;

/// An inventory made ready for storing, outside the write transaction.
#[derive(Debug)]
pub(crate) struct PreparedInventory {
    /// The stored inventory's hash when the work was done; stored only if it still is.
    base_hash: Option<String>,
    /// What `update` made, or why it refused (answered only if the report is not a retry).
    new: Result<NewInventory, StoreError>,
    /// The index's work when the hash changes; `None` for a resend of the held inventory.
    index: Option<IndexWork>,
}

/// What moves the software index and the change history to a new inventory.
#[derive(Debug)]
pub(crate) struct IndexWork {
    /// Every package of the new inventory.
    packages: Vec<crate::inventory::Package>,
    /// Its changes from the stored one (none for a first inventory, or one stored that
    /// does not parse).
    changes: Vec<crate::inventory::Change>,
}

impl PreparedInventory {
    fn new<F>(meta: &ReportMeta, stored: Option<&StoredInventory>, update: &F) -> PreparedInventory
    where
        F: Fn(Option<&StoredInventory>) -> Result<NewInventory, StoreError>,
    {
        let base_hash = stored.map(|s| s.hash.clone());
        let (new, index) = match update(stored) {
            Ok(new) if base_hash.as_deref() != Some(new.hash.as_str()) => {
                match IndexWork::new(meta, stored.map(|s| s.report.as_str()), &new.report) {
                    Ok(work) => (Ok(new), Some(work)),
                    Err(e) => (Err(e), None),
                }
            }
            other => (other, None),
        };
        PreparedInventory {
            base_hash,
            new,
            index,
        }
    }
}

impl IndexWork {
    fn new(meta: &ReportMeta, old: Option<&str>, new: &str) -> Result<IndexWork, StoreError> {
        let new: muster_proto::DaemonReport = serde_json::from_str(new)
            .map_err(|e| StoreError::Corrupt(format!("inventory being stored: {e}")))?;
        let changes = match old.map(serde_json::from_str::<muster_proto::DaemonReport>) {
            Some(Ok(old)) => crate::inventory::diff(&old, &new),
            Some(Err(e)) => {
                tracing::warn!(
                    agent_id = %meta.agent_id,
                    "the stored inventory does not parse ({e}); no changes recorded against it"
                );
                Vec::new()
            }
            None => Vec::new(),
        };
        Ok(IndexWork {
            packages: crate::inventory::packages(&new),
            changes,
        })
    }
}

/// One telemetry sample.
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct MetricsRow {
    pub sampled_at: i64,
    pub cpu_usage: Option<f64>,
    pub memory_usage: Option<f64>,
    pub disk_usage: Option<f64>,
    /// The whole sample, JSON.
    pub data: String,
}

/// The outcome of ingesting a report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ingested {
    /// The report id had been stored before; nothing changed.
    pub duplicate: bool,
    /// The inventory hash now held for the agent, if it has one.
    pub hash: Option<String>,
}

/// The database, whichever backend holds it. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlite::Pools),
    Postgres(sqlx::PgPool),
}

/// The schema's migrations (`crates/server/migrations/`, sqlx's default place), one set for
/// both backends, applied at open.
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!();

/// Runs the statement function `f` of whichever backend the store has: both backends compile
/// the same `statements.rs`, so every method is the same call on either. A statement that
/// writes is marked `write`: SQLite sends it to its one writing connection (`sqlite.rs` says
/// why); the readers are `query_only` and refuse it.
macro_rules! on_backend {
    ($store:expr, write $f:ident($($arg:expr),*)) => {
        match &$store.backend {
            Backend::Sqlite(pools) => sqlite::$f(&pools.write, $($arg),*).await,
            Backend::Postgres(pool) => postgres::$f(pool, $($arg),*).await,
        }
    };
    ($store:expr, $f:ident($($arg:expr),*)) => {
        match &$store.backend {
            Backend::Sqlite(pools) => sqlite::$f(&pools.read, $($arg),*).await,
            Backend::Postgres(pool) => postgres::$f(pool, $($arg),*).await,
        }
    };
}

pub mod admin;
pub mod commands;
pub mod dashboard;
pub mod inventory;
pub mod ops;

pub use admin::{
    AgentFilter, AgentPage, AgentSummary, Alert, AlertMetric, AlertPage,
    DEFAULT_HEARTBEAT_INTERVAL_S, OFFLINE_AFTER_INTERVALS, Thresholds, TokenFilter, TokenInfo,
    TokenPage, is_online,
};
pub use inventory::{InstalledPackage, InventoryChange, SoftwareHit, SoftwarePage, SoftwareQuery};

/// The most heartbeats one statement updates: a power of two, up to 256 (1,536 parameters).
pub const HEARTBEATS_PER_STATEMENT: usize = 256;

/// Why an upload that builds on the held inventory was refused: the server holds another.
pub const NOT_HELD: &str = "the base inventory is not held; send it in full";

/// The default database: a SQLite file in `./muster-data/`.
pub const DEFAULT_DATABASE_URL: &str = "sqlite://muster-data/muster.db";

impl Store {
    /// Opens the database `url` and applies its backend's migrations: `postgres://…` or
    /// `postgresql://…` is PostgreSQL (the database must exist); `sqlite://PATH`,
    /// `sqlite::memory:` or a bare file path is SQLite, created with its directory if needed.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            Backend::Postgres(postgres::open(url).await?)
        } else {
            Backend::Sqlite(sqlite::open(url).await?)
        };
        Ok(Store { backend })
    }

    /// Whether the database answers (for `/readyz`).
    pub async fn ping(&self) -> Result<(), StoreError> {
        on_backend!(self, ping())
    }

    /// Closes the pool, waiting for connections in use to come back.
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(pools) => pools.close().await,
            Backend::Postgres(pool) => pool.close().await,
        }
    }

    /// Creates a tenant with its first tokens, atomically.
    pub async fn create_tenant(
        &self,
        tenant: &Tenant,
        tokens: &[NewToken],
    ) -> Result<(), StoreError> {
        on_backend!(self, write create_tenant(tenant, tokens))
    }

    /// Every tenant (an operator's view, not a tenant's).
    pub async fn list_tenants(&self) -> Result<Vec<Tenant>, StoreError> {
        on_backend!(self, list_tenants())
    }

    /// The token whose hash is `hash`, whatever its state; the caller checks kind, expiry and
    /// revocation.
    pub async fn find_token(&self, hash: &str) -> Result<Option<TokenRecord>, StoreError> {
        on_backend!(self, find_token(hash))
    }

    /// Registers an agent with the enrolment token `enrol_token_id`, or finds it again by its
    /// identity, and gives it `token` (revoking its earlier tokens: an agent has one live
    /// token). Returns the agent id and whether the agent is new.
    ///
    /// The first registration of an identity with an enrolment token is one of the token's
    /// uses, counted in the same transaction only while the token is live and has uses left
    /// (else [`StoreError::Enrolment`], and nothing is stored); registering that identity again
    /// with the same token uses nothing.
    pub async fn register_agent(
        &self,
        tenant_id: &str,
        agent: &AgentRegistration,
        enrol_token_id: &str,
        token_hash: &str,
        now: i64,
    ) -> Result<(String, bool), StoreError> {
        on_backend!(
            self,
            write register_agent(tenant_id, agent, enrol_token_id, token_hash, now)
        )
    }

    /// Records a heartbeat: last seen, version, health and the interval the agent promises
    /// (`None`: the server's default applies).
    pub async fn heartbeat(
        &self,
        tenant_id: &str,
        agent_id: &str,
        now: i64,
        agent_version: &str,
        health: &str,
        interval_s: Option<i64>,
    ) -> Result<(), StoreError> {
        let row = HeartbeatRow {
            tenant_id: tenant_id.to_owned(),
            agent_id: agent_id.to_owned(),
            seen_at: now,
            agent_version: agent_version.to_owned(),
            health: health.to_owned(),
            interval_s,
        };
        let mut row = Some(row);
        let found = self
            .heartbeats(&mut || row.take().into_iter().collect())
            .await?;
        match found.is_empty() {
            true => Err(StoreError::NotFound("agent")),
            false => Ok(()),
        }
    }

    /// Records many heartbeats with one statement (see `heartbeats.rs`): once a connection
    /// is free, `gather` hands over the rows — as many as have queued up by then. Returns the
    /// (tenant, agent) pairs found, the others being gone.
    pub async fn heartbeats(
        &self,
        gather: &mut (dyn FnMut() -> Vec<HeartbeatRow> + Send),
    ) -> Result<Vec<(String, String)>, StoreError> {
        on_backend!(self, write heartbeats(gather))
    }

    /// Ingests an inventory report once per report id. First, outside any transaction, reads
    /// the stored inventory (from a reader, on SQLite), lets `update` make the new one (an
    /// `Err` — a delta on the wrong base — stores nothing) and works out its packages and its
    /// changes from the stored one: the JSON work (parsing hundreds of KB, merging, hashing,
    /// diffing) never holds the database's writer. Then, in one transaction: records the report
    /// (a retry of a stored id answers `duplicate` and changes nothing), checks the stored
    /// inventory is still the one worked on (by hash; if another report of the agent moved it
    /// meanwhile, all of it is done again, up to [`INGEST_ATTEMPTS`] times), and stores the new
    /// inventory, its index and changes, and the report's metrics samples.
    pub async fn ingest_inventory<F>(
        &self,
        meta: &ReportMeta,
        samples: &[MetricsRow],
        update: F,
    ) -> Result<Ingested, StoreError>
    where
        F: Fn(Option<&StoredInventory>) -> Result<NewInventory, StoreError> + Send + Sync,
    {
        for _ in 0..INGEST_ATTEMPTS {
            let stored = self.inventory(&meta.tenant_id, &meta.agent_id).await?;
            let prepared = PreparedInventory::new(meta, stored.as_ref(), &update);
            match on_backend!(self, write ingest_inventory(meta, samples, prepared)) {
                Err(StoreError::Stale) => continue,
                done => return done,
            }
        }
        Err(StoreError::Conflict(
            "the held inventory kept changing while this one was stored; send it again".into(),
        ))
    }

    /// Ingests an "unchanged" report once per report id: the held inventory must be `hash`
    /// (else [`StoreError::Conflict`] with [`NOT_HELD`], and nothing is recorded); it is kept,
    /// and its time moves on.
    pub async fn ingest_unchanged(
        &self,
        meta: &ReportMeta,
        hash: &str,
    ) -> Result<Ingested, StoreError> {
        on_backend!(self, write ingest_unchanged(meta, hash))
    }

    /// Ingests telemetry samples once per report id.
    pub async fn ingest_metrics(
        &self,
        meta: &ReportMeta,
        samples: &[MetricsRow],
    ) -> Result<Ingested, StoreError> {
        on_backend!(self, write ingest_metrics(meta, samples))
    }

    pub async fn agent(
        &self,
        tenant_id: &str,
        agent_id: &str,
    ) -> Result<Option<AgentRecord>, StoreError> {
        on_backend!(self, agent(tenant_id, agent_id))
    }

    pub async fn list_agents(&self, tenant_id: &str) -> Result<Vec<AgentRecord>, StoreError> {
        on_backend!(self, list_agents(tenant_id))
    }

    pub async fn inventory(
        &self,
        tenant_id: &str,
        agent_id: &str,
    ) -> Result<Option<StoredInventory>, StoreError> {
        on_backend!(self, inventory(tenant_id, agent_id))
    }

    /// Samples taken in `[from, to)`, oldest first.
    pub async fn metrics(
        &self,
        tenant_id: &str,
        agent_id: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<MetricsRow>, StoreError> {
        on_backend!(self, metrics(tenant_id, agent_id, from, to))
    }

    /// How many reports of the agent are stored (each report id once).
    pub async fn report_count(&self, tenant_id: &str, agent_id: &str) -> Result<i64, StoreError> {
        on_backend!(self, report_count(tenant_id, agent_id))
    }
}
