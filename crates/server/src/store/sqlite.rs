//! The SQLite backend: WAL, foreign keys on, migrations from `migrations/` (shared).
//!
//! SQLite lets one connection write at a time. Connections that race for that lock do not
//! queue: each sleeps in SQLite's busy handler (1, 2, 5, … 100 ms) and tries again, which under
//! a fleet's steady writes put p99 latency near 200 ms while p50 stayed under 2 ms. So the
//! backend holds two pools: one connection that does every write, which requests wait for in
//! the order they came (the pool's queue is fair), and readers beside it (WAL lets them read
//! while it writes) that are `query_only`, so a write sent to them by mistake fails loudly.

use std::str::FromStr;
use std::time::Duration;

use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::StoreError;

/// The statements (`statements.rs`), compiled for this backend's types. Both backends include
/// the file on purpose: one source of SQL, two sets of sqlx types.
#[allow(clippy::duplicate_mod)]
#[path = "statements/mod.rs"]
mod statements;
pub(super) use statements::*;

type Pool = SqlitePool;
type Db = sqlx::Sqlite;
type Conn = sqlx::SqliteConnection;

/// How leasing picks its rows: SQLite has one writer, so the plain select is exclusive.
const SKIP_LOCKED: &str = "";

/// Reading connections. SQLite has one writer at a time; readers run beside it (WAL).
const READERS: u32 = 8;

/// The backend's two pools: `write` (one connection) for every statement that writes, `read`
/// for the rest.
#[derive(Debug, Clone)]
pub(super) struct Pools {
    pub read: SqlitePool,
    pub write: SqlitePool,
}

impl Pools {
    pub async fn close(&self) {
        self.read.close().await;
        self.write.close().await;
    }
}

pub(super) async fn open(url: &str) -> Result<Pools, StoreError> {
    let options = if url.starts_with("sqlite:") {
        SqliteConnectOptions::from_str(url).map_err(|e| StoreError::Url(e.to_string()))?
    } else {
        SqliteConnectOptions::new().filename(url)
    };
    let options = options
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .foreign_keys(true)
        .busy_timeout(Duration::from_secs(5));
    let file = options.get_filename();
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty())
        && file.as_os_str() != ":memory:"
    {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::DataDir {
            path: dir.to_owned(),
            source,
        })?;
    }
    let write = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options.clone())
        .await?;
    super::MIGRATOR.run(&write).await?;
    let read = SqlitePoolOptions::new()
        .max_connections(READERS)
        .connect_with(options.pragma("query_only", "ON"))
        .await?;
    Ok(Pools { read, write })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn writes_go_through_one_connection_and_readers_refuse_them() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("m.db").display());
        let pools = open(&url).await.unwrap();
        assert_eq!(pools.write.options().get_max_connections(), 1);

        let insert = "INSERT INTO tenants (id, name, created_at) VALUES ('t', 'n', 0)";
        let refused = sqlx::query(insert).execute(&pools.read).await.unwrap_err();
        assert!(
            refused.to_string().contains("readonly"),
            "a reader wrote: {refused}"
        );
        sqlx::query(insert).execute(&pools.write).await.unwrap();
        // What the writer committed, a reader sees.
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM tenants")
            .fetch_one(&pools.read)
            .await
            .unwrap();
        assert_eq!(n, 1);
        pools.close().await;
    }
}
