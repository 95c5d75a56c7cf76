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

/// Whether `packages` and `software_hosts` take their ids from sequences (PostgreSQL only).
const SEQUENCES: bool = false;

/// How statements built with many parameters number them: numbered by `?N` (SQLite finds `$N` by name, in time that grows with the square of their number).
const PARAMETER: &str = "?";

type Pool = SqlitePool;
type Db = sqlx::Sqlite;
type Conn = sqlx::SqliteConnection;

/// How leasing picks its rows: SQLite has one writer, so the plain select is exclusive.
const SKIP_LOCKED: &str = "";

/// Reading connections. SQLite has one writer at a time; readers run beside it (WAL).
const READERS: u32 = 8;

/// How often the write-ahead log is copied back into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// The backend's pools: `write` (one connection) for every statement that writes, `read` for
/// the rest, and one connection of its own for checkpoints.
#[derive(Debug, Clone)]
pub(super) struct Pools {
    pub read: SqlitePool,
    pub write: SqlitePool,
    checkpoint: SqlitePool,
}

impl Pools {
    pub async fn close(&self) {
        self.checkpoint.close().await;
        self.read.close().await;
        self.write.close().await;
    }
}

/// Copies the write-ahead log back into the database file every [`CHECKPOINT_EVERY`], until
/// the pool closes: a passive checkpoint from another connection runs beside the writer, so
/// the checkpoint SQLite runs on the writing connection when a commit leaves the log over
/// 1,000 pages (holding up every write queued behind it) finds little left to copy. That one
/// stays on: only a checkpoint between two writes can find the whole log copied and start it
/// again from its beginning. With the writer's own checkpoint off, a busy writer always had
/// new frames past the background checkpoint's end, and the log grew until the disk was full
/// (seen in the 10-minute load test).
async fn checkpoints(pool: SqlitePool) {
    let mut every = tokio::time::interval(CHECKPOINT_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        if pool.is_closed() {
            return;
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&pool)
            .await
        {
            if pool.is_closed() {
                return;
            }
            tracing::warn!(error = %e, "checkpointing the write-ahead log failed");
        }
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
        .connect_with(options.clone().pragma("query_only", "ON"))
        .await?;
    let checkpoint = SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await?;
    tokio::spawn(checkpoints(checkpoint.clone()));
    Ok(Pools {
        read,
        write,
        checkpoint,
    })
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

    #[tokio::test]
    async fn the_log_is_checkpointed_beside_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("m.db");
        let pools = open(&format!("sqlite://{}", file.display())).await.unwrap();
        let before = std::fs::metadata(&file).unwrap().len();
        sqlx::query("CREATE TABLE blobs (b BLOB)")
            .execute(&pools.write)
            .await
            .unwrap();
        for _ in 0..8 {
            sqlx::query("INSERT INTO blobs VALUES (zeroblob(262144))")
                .execute(&pools.write)
                .await
                .unwrap();
        }
        // The 2 MiB (under the writer's own 1,000-page threshold) are in the log until the
        // background checkpoint copies them into the file.
        let deadline = std::time::Instant::now() + 5 * CHECKPOINT_EVERY;
        while std::fs::metadata(&file).unwrap().len() < before + 2 * 1024 * 1024 {
            assert!(
                std::time::Instant::now() < deadline,
                "no checkpoint within {:?}",
                5 * CHECKPOINT_EVERY
            );
            tokio::time::sleep(CHECKPOINT_EVERY / 10).await;
        }
        pools.close().await;
    }
}
