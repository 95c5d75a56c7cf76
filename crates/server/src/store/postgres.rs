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

/// Whether `packages` and `software_hosts` take their ids from sequences: here they do, so
/// concurrent ingests do not race for the next id (see `statements/inventory.rs`).
const SEQUENCES: bool = true;

/// The tables whose ids come from a sequence named `<table>_id_seq`.
const SEQUENCED_TABLES: [&str; 2] = ["packages", "software_hosts"];

/// How statements built with many parameters number them: numbered by `$N`.
const PARAMETER: &str = "$";

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
    create_sequences(&pool).await?;
    Ok(pool)
}

/// Creates the id sequences if missing (the migrations are shared with SQLite, which has no
/// sequences) and moves each past its table's largest id, so ids written before the sequence
/// existed are not handed out again. Replicas starting together take turns under an advisory
/// lock. A sequence set back by a replica starting while another allocates only costs that
/// other a retry: its insert finds the id taken and draws again.
async fn create_sequences(pool: &PgPool) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    // An arbitrary key, this function's alone.
    sqlx::query("SELECT pg_advisory_xact_lock(7311020426)")
        .execute(&mut *tx)
        .await?;
    for table in SEQUENCED_TABLES {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "CREATE SEQUENCE IF NOT EXISTS {table}_id_seq AS BIGINT"
        )))
        .execute(&mut *tx)
        .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT setval('{table}_id_seq', GREATEST(\
                 (SELECT last_value FROM {table}_id_seq), \
                 (SELECT COALESCE(MAX(id), 0) + 1 FROM {table})))"
        )))
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
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
