//! The PostgreSQL backend: a connection pool, migrations from `migrations/` (shared). The
//! statements are the SQLite backend's (`statements.rs`), compiled for PostgreSQL's types.

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;

use super::StoreError;

/// The statements (`statements.rs`), compiled for this backend's types. Both backends include
/// the file on purpose: one source of SQL, two sets of sqlx types.
#[allow(clippy::duplicate_mod)]
#[path = "statements/mod.rs"]
mod statements;
pub(super) use statements::*;

type Pool = PgPool;
type Db = sqlx::Postgres;
type Conn = sqlx::PgConnection;

/// Connections in the pool.
const MAX_CONNECTIONS: u32 = 16;

pub(super) async fn open(url: &str) -> Result<PgPool, StoreError> {
    let pool = PgPoolOptions::new()
        .max_connections(MAX_CONNECTIONS)
        .connect(url)
        .await?;
    super::MIGRATOR.run(&pool).await?;
    Ok(pool)
}
