//! The SQLite backend: WAL, foreign keys on, migrations from `migrations/` (shared).

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

/// Connections in the pool. SQLite has one writer at a time; readers run beside it (WAL).
const MAX_CONNECTIONS: u32 = 8;

pub(super) async fn open(url: &str) -> Result<SqlitePool, StoreError> {
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
    let pool = SqlitePoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .connect_with(options)
        .await?;
    super::MIGRATOR.run(&pool).await?;
    Ok(pool)
}
