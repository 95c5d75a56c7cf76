//! What the dashboard reads beyond the admin and inventory areas, and its sessions.

use sqlx::Row;

use super::Pool;
use crate::store::StoreError;
use crate::store::dashboard::{FleetOverview, NewSession, OS_MIX_ROWS, SessionRecord, Thresholds};

pub(in crate::store) async fn create_session(
    pool: &Pool,
    session: &NewSession,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO dashboard_sessions (hash, tenant_id, token_id, created_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(&session.hash)
    .bind(&session.tenant_id)
    .bind(&session.token_id)
    .bind(session.created_at)
    .bind(session.expires_at)
    .execute(pool)
    .await?;
    Ok(())
}

pub(in crate::store) async fn find_session(
    pool: &Pool,
    hash: &str,
    now: i64,
) -> Result<Option<SessionRecord>, StoreError> {
    // The token is joined on its tenant too: a session can never carry a tenant other than its
    // token's.
    let row = sqlx::query(
        "SELECT s.hash, s.tenant_id, s.token_id, s.expires_at \
         FROM dashboard_sessions s \
         JOIN tokens t ON t.id = s.token_id AND t.tenant_id = s.tenant_id \
         WHERE s.hash = $1 AND s.expires_at > $2 AND t.kind = 'admin' \
             AND t.revoked_at IS NULL AND (t.expires_at IS NULL OR t.expires_at > $2)",
    )
    .bind(hash)
    .bind(now)
    .fetch_optional(pool)
    .await?;
    row.map(|row| {
        Ok(SessionRecord {
            hash: row.try_get("hash")?,
            tenant_id: row.try_get("tenant_id")?,
            token_id: row.try_get("token_id")?,
            expires_at: row.try_get("expires_at")?,
        })
    })
    .transpose()
}

pub(in crate::store) async fn delete_session(pool: &Pool, hash: &str) -> Result<(), StoreError> {
    sqlx::query("DELETE FROM dashboard_sessions WHERE hash = $1")
        .bind(hash)
        .execute(pool)
        .await?;
    Ok(())
}

pub(in crate::store) async fn delete_expired_sessions(
    pool: &Pool,
    now: i64,
) -> Result<u64, StoreError> {
    let done = sqlx::query("DELETE FROM dashboard_sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(pool)
        .await?;
    Ok(done.rows_affected())
}

pub(in crate::store) async fn fleet_overview(
    pool: &Pool,
    tenant_id: &str,
    recent_since: i64,
    thresholds: Thresholds,
) -> Result<FleetOverview, StoreError> {
    // COUNT is BIGINT on PostgreSQL and INTEGER (i64) on SQLite: both read as i64.
    let total: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM agents WHERE tenant_id = $1")
        .bind(tenant_id)
        .fetch_one(pool)
        .await?;
    let os_mix = sqlx::query(
        "SELECT COALESCE(os_name, platform, 'unknown') AS os, COUNT(*) AS agents \
         FROM agents WHERE tenant_id = $1 \
         GROUP BY COALESCE(os_name, platform, 'unknown') \
         ORDER BY agents DESC, os LIMIT $2",
    )
    .bind(tenant_id)
    .bind(i64::from(OS_MIX_ROWS))
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|row| Ok((row.try_get("os")?, count(row.try_get("agents")?))))
    .collect::<Result<Vec<_>, StoreError>>()?;
    // The latest figures sit on the agent's row (kept at ingestion), so this is one pass over
    // the tenant's agents. Figures older than `recent_since` say nothing about "now".
    let over = sqlx::query(
        "SELECT \
             COUNT(CASE WHEN cpu_usage > $3 OR memory_usage > $4 OR disk_usage > $5 \
                 THEN 1 END) AS over_any, \
             COUNT(CASE WHEN cpu_usage > $3 THEN 1 END) AS over_cpu, \
             COUNT(CASE WHEN memory_usage > $4 THEN 1 END) AS over_memory, \
             COUNT(CASE WHEN disk_usage > $5 THEN 1 END) AS over_disk \
         FROM agents WHERE tenant_id = $1 AND metrics_at >= $2",
    )
    .bind(tenant_id)
    .bind(recent_since)
    .bind(thresholds.cpu)
    .bind(thresholds.memory)
    .bind(thresholds.disk)
    .fetch_one(pool)
    .await?;
    Ok(FleetOverview {
        total: count(total),
        os_mix,
        over_any: count(over.try_get("over_any")?),
        over_cpu: count(over.try_get("over_cpu")?),
        over_memory: count(over.try_get("over_memory")?),
        over_disk: count(over.try_get("over_disk")?),
    })
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
}
