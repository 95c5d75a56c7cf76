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

/// How leasing picks its rows: a row another replica's transaction is leasing is skipped,
/// not waited for.
const SKIP_LOCKED: &str = " FOR UPDATE SKIP LOCKED";

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

/// `NOTIFY`s the agents' ids on the commands channel, as many per notification as fit well
/// under PostgreSQL's 8000-byte payload limit.
pub(super) async fn announce(pool: &PgPool, agent_ids: &[String]) -> Result<(), StoreError> {
    const MAX_PAYLOAD: usize = 7000;
    let mut payload = String::new();
    let mut batches = Vec::new();
    for id in agent_ids {
        if !payload.is_empty() && payload.len() + id.len() + 1 > MAX_PAYLOAD {
            batches.push(std::mem::take(&mut payload));
        }
        if !payload.is_empty() {
            payload.push(',');
        }
        payload.push_str(id);
    }
    if !payload.is_empty() {
        batches.push(payload);
    }
    for batch in batches {
        sqlx::query("SELECT pg_notify($1, $2)")
            .bind(super::commands::NUDGE_CHANNEL)
            .bind(batch)
            .execute(pool)
            .await?;
    }
    Ok(())
}
