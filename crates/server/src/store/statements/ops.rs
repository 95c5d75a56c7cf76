//! Operations: retention, fleet-wide counts.

use super::Pool;
use crate::store::StoreError;
use crate::store::admin::{DEFAULT_HEARTBEAT_INTERVAL_S, OFFLINE_AFTER_INTERVALS};
use crate::store::ops::{AgentCounts, PURGE_STEP_S};

pub(in crate::store) async fn agent_counts(
    pool: &Pool,
    now: i64,
) -> Result<AgentCounts, StoreError> {
    // Online: heard from within `OFFLINE_AFTER_INTERVALS` of the agent's own heartbeat interval
    // (the admin area's rule).
    let (total, online): (i64, i64) = sqlx::query_as(
        "SELECT CAST(COUNT(*) AS BIGINT), \
             CAST(COALESCE(SUM(CASE WHEN last_seen >= \
                 $1 - $2 * COALESCE(heartbeat_interval_s, $3) THEN 1 ELSE 0 END), 0) AS BIGINT) \
         FROM agents",
    )
    .bind(now)
    .bind(OFFLINE_AFTER_INTERVALS)
    .bind(DEFAULT_HEARTBEAT_INTERVAL_S)
    .fetch_one(pool)
    .await?;
    Ok(AgentCounts { total, online })
}

pub(in crate::store) async fn purge_metrics(pool: &Pool, before: i64) -> Result<u64, StoreError> {
    let mut deleted = 0;
    loop {
        let oldest: Option<i64> = sqlx::query_scalar("SELECT MIN(sampled_at) FROM metrics")
            .fetch_one(pool)
            .await?;
        let Some(oldest) = oldest.filter(|&t| t < before) else {
            return Ok(deleted);
        };
        let upto = before.min(oldest.saturating_add(PURGE_STEP_S));
        deleted += sqlx::query("DELETE FROM metrics WHERE sampled_at < $1")
            .bind(upto)
            .execute(pool)
            .await?
            .rows_affected();
    }
}

pub(in crate::store) async fn purge_reports(pool: &Pool, before: i64) -> Result<u64, StoreError> {
    Ok(sqlx::query("DELETE FROM reports WHERE received_at < $1")
        .bind(before)
        .execute(pool)
        .await?
        .rows_affected())
}
