//! The statements, shared by both backends: this directory is compiled once inside `sqlite.rs`
//! and once inside `postgres.rs`, each of which names its own `Pool` and `Conn` types. This file
//! holds tenants, tokens, registration and ingestion; each submodule one area of the store. The SQL is
//! written once, in the dialect both accept (`$n` placeholders, `ON CONFLICT`, `RETURNING`).

mod admin;
mod commands;
mod dashboard;
mod inventory;
mod ops;

pub(in crate::store) use admin::*;
pub(in crate::store) use commands::*;
pub(in crate::store) use dashboard::*;
pub(in crate::store) use inventory::*;
pub(in crate::store) use ops::*;

use sqlx::Row;
use uuid::Uuid;

use super::{Conn, Db, Pool};
use crate::store::{
    AgentRecord, AgentRegistration, EnrolmentRefusal, HEARTBEATS_PER_STATEMENT, HeartbeatRow,
    Ingested, MetricsRow, NOT_HELD, NewToken, PreparedInventory, ReportMeta, StoreError,
    StoredInventory, Tenant, TokenRecord,
};
use crate::token::TokenKind;

pub(in crate::store) async fn ping(pool: &Pool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

pub(in crate::store) async fn create_tenant(
    pool: &Pool,
    tenant: &Tenant,
    tokens: &[NewToken],
) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let inserted = sqlx::query(
        "INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO NOTHING",
    )
    .bind(&tenant.id)
    .bind(&tenant.name)
    .bind(tenant.created_at)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 0 {
        return Err(StoreError::Conflict(format!(
            "a tenant named `{}` exists",
            tenant.name
        )));
    }
    for token in tokens {
        insert_token(&mut tx, &tenant.id, token, tenant.created_at).await?;
    }
    tx.commit().await?;
    Ok(())
}

async fn insert_token(
    tx: &mut Conn,
    tenant_id: &str,
    token: &NewToken,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO tokens (id, tenant_id, kind, hash, agent_id, created_at, expires_at, \
             max_uses) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&token.id)
    .bind(tenant_id)
    .bind(token.kind.as_str())
    .bind(&token.hash)
    .bind(&token.agent_id)
    .bind(now)
    .bind(token.expires_at)
    .bind(token.max_uses)
    .execute(tx)
    .await?;
    Ok(())
}

pub(in crate::store) async fn list_tenants(pool: &Pool) -> Result<Vec<Tenant>, StoreError> {
    let rows = sqlx::query("SELECT id, name, created_at FROM tenants ORDER BY created_at, name")
        .fetch_all(pool)
        .await?;
    rows.into_iter()
        .map(|row| {
            Ok(Tenant {
                id: row.try_get("id")?,
                name: row.try_get("name")?,
                created_at: row.try_get("created_at")?,
            })
        })
        .collect()
}

pub(in crate::store) async fn find_token(
    pool: &Pool,
    hash: &str,
) -> Result<Option<TokenRecord>, StoreError> {
    let Some(row) = sqlx::query(
        "SELECT id, tenant_id, kind, hash, agent_id, expires_at, revoked_at, last_used_at, \
             max_uses, uses \
         FROM tokens WHERE hash = $1",
    )
    .bind(hash)
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let kind: String = row.try_get("kind")?;
    Ok(Some(TokenRecord {
        id: row.try_get("id")?,
        tenant_id: row.try_get("tenant_id")?,
        kind: TokenKind::parse(&kind)
            .ok_or_else(|| StoreError::Corrupt(format!("token kind `{kind}`")))?,
        hash: row.try_get("hash")?,
        agent_id: row.try_get("agent_id")?,
        expires_at: row.try_get("expires_at")?,
        revoked_at: row.try_get("revoked_at")?,
        last_used_at: row.try_get("last_used_at")?,
        max_uses: row.try_get("max_uses")?,
        uses: row.try_get("uses")?,
    }))
}

pub(in crate::store) async fn register_agent(
    pool: &Pool,
    tenant_id: &str,
    agent: &AgentRegistration,
    enrol_token_id: &str,
    token_hash: &str,
    now: i64,
) -> Result<(String, bool), StoreError> {
    let new_id = Uuid::now_v7().to_string();
    let mut tx = pool.begin().await?;
    // The upsert is the transaction's first statement, so SQLite takes the write lock at once.
    let agent_id: String = sqlx::query_scalar(
        "INSERT INTO agents (id, tenant_id, identity, public_key, machine_id, hostname, platform, \
             os_name, os_version, arch, agent_version, created_at, last_seen) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $12) \
         ON CONFLICT (tenant_id, identity) DO UPDATE SET \
             machine_id = excluded.machine_id, hostname = excluded.hostname, \
             platform = excluded.platform, os_name = excluded.os_name, \
             os_version = excluded.os_version, arch = excluded.arch, \
             agent_version = excluded.agent_version, last_seen = excluded.last_seen \
         RETURNING id",
    )
    .bind(&new_id)
    .bind(tenant_id)
    .bind(&agent.identity)
    .bind(&agent.public_key)
    .bind(&agent.machine_id)
    .bind(&agent.hostname)
    .bind(&agent.platform)
    .bind(&agent.os_name)
    .bind(&agent.os_version)
    .bind(&agent.arch)
    .bind(&agent.agent_version)
    .bind(now)
    .fetch_one(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE tokens SET revoked_at = $1 \
         WHERE tenant_id = $2 AND agent_id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(tenant_id)
    .bind(&agent_id)
    .execute(&mut *tx)
    .await?;
    let token = NewToken::new(
        TokenKind::Agent,
        token_hash.to_owned(),
        Some(agent_id.clone()),
    );
    insert_token(&mut tx, tenant_id, &token, now).await?;
    sync_software_hostname(&mut tx, tenant_id, &agent_id, &agent.hostname).await?;
    // Last before the commit: on PostgreSQL a use takes the enrolment token's row lock, which
    // every registration with that token waits for, so it is held for the commit only.
    use_enrolment_token(
        &mut tx,
        tenant_id,
        enrol_token_id,
        &agent.identity,
        &agent_id,
        now,
    )
    .await?;
    tx.commit().await?;
    let created = agent_id == new_id;
    Ok((agent_id, created))
}

/// Counts the registration of `identity` as a use of the enrolment token, unless that identity
/// registered with it before. A new use is taken only while the token is live and has uses
/// left, by one conditional `UPDATE` of the token's row: on PostgreSQL a second registration
/// racing for the last use waits for the first's row lock and then finds the condition false;
/// on SQLite the one writer serializes them. A refusal is an `Err`, which drops (rolls back)
/// the caller's transaction, agent row included.
async fn use_enrolment_token(
    tx: &mut Conn,
    tenant_id: &str,
    token_id: &str,
    identity: &str,
    agent_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    let first = sqlx::query(
        "INSERT INTO enrolment_uses (token_id, tenant_id, identity, agent_id, used_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (token_id, identity) DO NOTHING",
    )
    .bind(token_id)
    .bind(tenant_id)
    .bind(identity)
    .bind(agent_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if first.rows_affected() == 0 {
        // Registered with this token before: idempotent, no use taken. The caller checked
        // that the token is live.
        return Ok(());
    }
    let taken = sqlx::query(
        "UPDATE tokens SET uses = uses + 1 \
         WHERE id = $1 AND tenant_id = $2 AND kind = 'enrol' AND revoked_at IS NULL \
             AND (expires_at IS NULL OR expires_at > $3) \
             AND (max_uses IS NULL OR uses < max_uses)",
    )
    .bind(token_id)
    .bind(tenant_id)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    if taken.rows_affected() == 1 {
        return Ok(());
    }
    let row = sqlx::query("SELECT expires_at, revoked_at FROM tokens WHERE id = $1")
        .bind(token_id)
        .fetch_optional(&mut *tx)
        .await?;
    let refusal = match row {
        None => EnrolmentRefusal::Revoked,
        Some(row) => {
            let expires_at: Option<i64> = row.try_get("expires_at")?;
            let revoked_at: Option<i64> = row.try_get("revoked_at")?;
            if revoked_at.is_some() {
                EnrolmentRefusal::Revoked
            } else if expires_at.is_some_and(|at| at <= now) {
                EnrolmentRefusal::Expired
            } else {
                EnrolmentRefusal::UsedUp
            }
        }
    };
    Err(StoreError::Enrolment(refusal))
}

/// Takes a connection, then the heartbeats `gather` hands over (their number is the caller's
/// to bound; `heartbeats.rs`), and updates them all in one transaction; returns the agents it
/// found.
///
/// A group is cut into pieces of a power of two rows (300 = 256 + 32 + 8 + 4), so that only
/// nine statement texts exist and each is prepared once per connection: preparing one of 256
/// rows (1,536 parameters) took longer than running it, and a fleet's heartbeats run ten
/// such statements a second.
pub(in crate::store) async fn heartbeats(
    pool: &Pool,
    gather: &mut (dyn FnMut() -> Vec<HeartbeatRow> + Send),
) -> Result<Vec<(String, String)>, StoreError> {
    let mut conn = pool.acquire().await?;
    let rows = gather();
    if rows.is_empty() {
        return Ok(Vec::new());
    }
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    let mut found = Vec::with_capacity(rows.len());
    let mut rest = &rows[..];
    while !rest.is_empty() {
        let size = piece(rest.len());
        let (now, later) = rest.split_at(size);
        rest = later;
        let mut query = sqlx::query(sqlx::AssertSqlSafe(heartbeat_sql(size)));
        for row in now {
            query = query
                .bind(&row.tenant_id)
                .bind(&row.agent_id)
                .bind(row.seen_at)
                .bind(&row.agent_version)
                .bind(&row.health)
                .bind(row.interval_s);
        }
        for row in query.fetch_all(&mut *tx).await? {
            found.push((row.try_get("tenant_id")?, row.try_get("id")?));
        }
    }
    tx.commit().await?;
    Ok(found)
}

/// The largest power of two not over `len` nor [`HEARTBEATS_PER_STATEMENT`].
fn piece(len: usize) -> usize {
    debug_assert!(len > 0);
    let below = 1 << (usize::BITS - 1 - len.leading_zeros());
    below.min(HEARTBEATS_PER_STATEMENT)
}

/// The statement that updates `size` agents from their heartbeats (6 parameters a row), built
/// once per size.
fn heartbeat_sql(size: usize) -> &'static str {
    static SQL: [std::sync::OnceLock<String>; 9] = [const { std::sync::OnceLock::new() }; 9];
    debug_assert!(size.is_power_of_two() && size <= HEARTBEATS_PER_STATEMENT);
    SQL[size.trailing_zeros() as usize].get_or_init(|| {
        // Named apart from the table's columns, so `RETURNING` is unambiguous on PostgreSQL;
        // the casts give PostgreSQL the parameters' types.
        let mut sql =
            String::from("WITH v (tenant, agent, seen, version, health, interval_s) AS (VALUES ");
        for k in 0..size {
            let b = k * 6;
            if k > 0 {
                sql.push(',');
            }
            // `?N` on SQLite: it looks `$N` up by name in a list, which costs the square of
            // the parameters in a statement of thousands.
            let p = super::PARAMETER;
            sql.push_str(&format!(
                "(CAST({p}{} AS TEXT), CAST({p}{} AS TEXT), CAST({p}{} AS BIGINT), \
                  CAST({p}{} AS TEXT), CAST({p}{} AS TEXT), CAST({p}{} AS BIGINT))",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5,
                b + 6
            ));
        }
        sql.push_str(
            ") UPDATE agents SET last_seen = v.seen, agent_version = v.version, \
                 health = v.health, heartbeat_interval_s = v.interval_s \
             FROM v WHERE agents.tenant_id = v.tenant AND agents.id = v.agent \
             RETURNING tenant_id, id",
        );
        sql
    })
}

/// Records the report id; `false` when it was stored before by this agent. A report id stored
/// by anyone else is a conflict, not a duplicate.
async fn record_report(tx: &mut Conn, meta: &ReportMeta) -> Result<bool, StoreError> {
    let report_id = meta.report_id.to_string();
    let inserted = sqlx::query(
        "INSERT INTO reports (report_id, tenant_id, agent_id, kind, received_at) \
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (report_id) DO NOTHING",
    )
    .bind(&report_id)
    .bind(&meta.tenant_id)
    .bind(&meta.agent_id)
    .bind(meta.kind.as_str())
    .bind(meta.received_at)
    .execute(&mut *tx)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(true);
    }
    // Only whether a row exists: the row itself is not decoded, because `SELECT 1` is an
    // INT4 on PostgreSQL and an INTEGER (i64) on SQLite.
    let ours = sqlx::query(
        "SELECT 1 FROM reports WHERE report_id = $1 AND tenant_id = $2 AND agent_id = $3",
    )
    .bind(&report_id)
    .bind(&meta.tenant_id)
    .bind(&meta.agent_id)
    .fetch_optional(&mut *tx)
    .await?;
    match ours {
        Some(_) => Ok(false),
        None => Err(StoreError::Conflict(format!(
            "report id {report_id} is already in use"
        ))),
    }
}

async fn insert_samples(
    tx: &mut Conn,
    meta: &ReportMeta,
    samples: &[MetricsRow],
) -> Result<(), StoreError> {
    let report_id = meta.report_id.to_string();
    for sample in samples {
        sqlx::query(
            "INSERT INTO metrics (tenant_id, agent_id, report_id, sampled_at, cpu_usage, \
                 memory_usage, disk_usage, data) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(&meta.tenant_id)
        .bind(&meta.agent_id)
        .bind(&report_id)
        .bind(sample.sampled_at)
        .bind(sample.cpu_usage)
        .bind(sample.memory_usage)
        .bind(sample.disk_usage)
        .bind(&sample.data)
        .execute(&mut *tx)
        .await?;
    }
    // The agent row keeps the newest figures, so the fleet list and the alerts never scan
    // the metrics table; a batch arriving late does not overwrite a newer sample.
    if let Some(latest) = samples.iter().max_by_key(|s| s.sampled_at) {
        sqlx::query(
            "UPDATE agents SET cpu_usage = $1, memory_usage = $2, disk_usage = $3, \
                 metrics_at = $4 \
             WHERE tenant_id = $5 AND id = $6 AND (metrics_at IS NULL OR metrics_at <= $4)",
        )
        .bind(latest.cpu_usage)
        .bind(latest.memory_usage)
        .bind(latest.disk_usage)
        .bind(latest.sampled_at)
        .bind(&meta.tenant_id)
        .bind(&meta.agent_id)
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

async fn inventory_in(
    conn: &mut Conn,
    tenant_id: &str,
    agent_id: &str,
) -> Result<Option<StoredInventory>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT hash, report, report_id, updated_at FROM inventory \
         WHERE tenant_id = $1 AND agent_id = $2",
    )
    .bind(tenant_id)
    .bind(agent_id)
    .fetch_optional(conn)
    .await?)
}

async fn current_hash(
    conn: &mut Conn,
    tenant_id: &str,
    agent_id: &str,
) -> Result<Option<String>, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT hash FROM inventory WHERE tenant_id = $1 AND agent_id = $2")
            .bind(tenant_id)
            .bind(agent_id)
            .fetch_optional(conn)
            .await?,
    )
}

/// The answer to a report id this agent stored before: nothing changes.
async fn duplicate(
    tx: sqlx::Transaction<'static, Db>,
    meta: &ReportMeta,
) -> Result<Ingested, StoreError> {
    let mut tx = tx;
    let hash = current_hash(&mut tx, &meta.tenant_id, &meta.agent_id).await?;
    tx.rollback().await?;
    Ok(Ingested {
        duplicate: true,
        hash,
    })
}

/// Stores `prepared` (made outside the transaction) if the held inventory is still the one it
/// was made from; [`StoreError::Stale`] otherwise, with nothing recorded.
pub(in crate::store) async fn ingest_inventory(
    pool: &Pool,
    meta: &ReportMeta,
    samples: &[MetricsRow],
    prepared: PreparedInventory,
) -> Result<Ingested, StoreError> {
    let mut tx = pool.begin().await?;
    if !record_report(&mut tx, meta).await? {
        return duplicate(tx, meta).await;
    }
    // Only the hash is read: the stored report (hundreds of KB) was read and worked on before.
    let held = current_hash(&mut tx, &meta.tenant_id, &meta.agent_id).await?;
    // Each `Err` drops the transaction, which rolls the report's record back too.
    if held != prepared.base_hash {
        return Err(StoreError::Stale);
    }
    let new = prepared.new?;
    // A new inventory (not a resend of the held one) moves the software index and records
    // its changes.
    if let Some(work) = &prepared.index {
        index_inventory(&mut tx, meta, work).await?;
    }
    sqlx::query(
        "INSERT INTO inventory (agent_id, tenant_id, hash, report, report_id, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (agent_id) DO UPDATE SET hash = excluded.hash, \
             report = excluded.report, report_id = excluded.report_id, \
             updated_at = excluded.updated_at",
    )
    .bind(&meta.agent_id)
    .bind(&meta.tenant_id)
    .bind(&new.hash)
    .bind(&new.report)
    .bind(meta.report_id.to_string())
    .bind(meta.received_at)
    .execute(&mut *tx)
    .await?;
    insert_samples(&mut tx, meta, samples).await?;
    tx.commit().await?;
    Ok(Ingested {
        duplicate: false,
        hash: Some(new.hash),
    })
}

pub(in crate::store) async fn ingest_unchanged(
    pool: &Pool,
    meta: &ReportMeta,
    hash: &str,
) -> Result<Ingested, StoreError> {
    let mut tx = pool.begin().await?;
    if !record_report(&mut tx, meta).await? {
        return duplicate(tx, meta).await;
    }
    // Only the hash is read: the stored report (hundreds of KB) is not needed to confirm it.
    let held = current_hash(&mut tx, &meta.tenant_id, &meta.agent_id).await?;
    if held.as_deref() != Some(hash) {
        // Dropping the transaction rolls the report's record back, so the full retry is stored.
        return Err(StoreError::Conflict(NOT_HELD.into()));
    }
    sqlx::query("UPDATE inventory SET updated_at = $1 WHERE tenant_id = $2 AND agent_id = $3")
        .bind(meta.received_at)
        .bind(&meta.tenant_id)
        .bind(&meta.agent_id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(Ingested {
        duplicate: false,
        hash: held,
    })
}

pub(in crate::store) async fn ingest_metrics(
    pool: &Pool,
    meta: &ReportMeta,
    samples: &[MetricsRow],
) -> Result<Ingested, StoreError> {
    let mut tx = pool.begin().await?;
    if !record_report(&mut tx, meta).await? {
        tx.rollback().await?;
        return Ok(Ingested {
            duplicate: true,
            hash: None,
        });
    }
    insert_samples(&mut tx, meta, samples).await?;
    tx.commit().await?;
    Ok(Ingested {
        duplicate: false,
        hash: None,
    })
}

pub(in crate::store) async fn agent(
    pool: &Pool,
    tenant_id: &str,
    agent_id: &str,
) -> Result<Option<AgentRecord>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, identity, public_key, machine_id, hostname, platform, \
             os_name, os_version, arch, agent_version, created_at, last_seen, health \
         FROM agents WHERE tenant_id = $1 AND id = $2",
    )
    .bind(tenant_id)
    .bind(agent_id)
    .fetch_optional(pool)
    .await?)
}

pub(in crate::store) async fn list_agents(
    pool: &Pool,
    tenant_id: &str,
) -> Result<Vec<AgentRecord>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT id, tenant_id, identity, public_key, machine_id, hostname, platform, \
             os_name, os_version, arch, agent_version, created_at, last_seen, health \
         FROM agents WHERE tenant_id = $1 ORDER BY hostname, id",
    )
    .bind(tenant_id)
    .fetch_all(pool)
    .await?)
}

pub(in crate::store) async fn inventory(
    pool: &Pool,
    tenant_id: &str,
    agent_id: &str,
) -> Result<Option<StoredInventory>, StoreError> {
    let mut conn = pool.acquire().await?;
    inventory_in(&mut conn, tenant_id, agent_id).await
}

pub(in crate::store) async fn metrics(
    pool: &Pool,
    tenant_id: &str,
    agent_id: &str,
    from: i64,
    to: i64,
) -> Result<Vec<MetricsRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT sampled_at, cpu_usage, memory_usage, disk_usage, data FROM metrics \
         WHERE tenant_id = $1 AND agent_id = $2 AND sampled_at >= $3 AND sampled_at < $4 \
         ORDER BY sampled_at",
    )
    .bind(tenant_id)
    .bind(agent_id)
    .bind(from)
    .bind(to)
    .fetch_all(pool)
    .await?)
}

pub(in crate::store) async fn report_count(
    pool: &Pool,
    tenant_id: &str,
    agent_id: &str,
) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT COUNT(*) FROM reports WHERE tenant_id = $1 AND agent_id = $2")
            .bind(tenant_id)
            .bind(agent_id)
            .fetch_one(pool)
            .await?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_are_cut_into_powers_of_two_up_to_the_largest_statement() {
        let cut = |mut len: usize| {
            let mut pieces = Vec::new();
            while len > 0 {
                pieces.push(piece(len));
                len -= piece(len);
            }
            pieces
        };
        assert_eq!(cut(1), [1]);
        assert_eq!(cut(300), [256, 32, 8, 4]);
        assert_eq!(cut(600), [256, 256, 64, 16, 8]);
        assert_eq!(cut(255), [128, 64, 32, 16, 8, 4, 2, 1]);
        for size in (0..9).map(|k| 1 << k) {
            assert_eq!(heartbeat_sql(size).matches("CAST(").count(), size * 6);
        }
    }
}
