//! Commands: creation, leasing, status reports, cancellation, locks, jobs, signing keys.
//!
//! The lease statement differs by backend only in its row-locking clause (`SKIP_LOCKED`, from
//! the backend file), and a command's target list binds one parameter per agent; both are
//! assembled from fixed fragments (every value bound), hence `AssertSqlSafe`.

use uuid::Uuid;

use super::super::SKIP_LOCKED;
use super::Pool;
use crate::commands::{TargetState, Transition, transition};
use crate::store::StoreError;
use crate::store::commands::{
    Cancelled, CommandFilter, CommandPage, CommandRecord, CommandSummary, CommandsSwept, Leased,
    LockOutcome, LockRecord, NewCommand, SigningKeyPair, StatusChange, StatusOutcome, TargetRecord,
};

/// Agents per target-insert statement (a bound parameter each).
const TARGET_CHUNK: usize = 500;

const COMMAND_COLUMNS: &str = "c.id, c.tenant_id, c.kind, c.command, c.parameters, c.priority, \
     c.scheduled_for, c.timeout_s, c.maintenance_window, c.locks, c.package_manager, \
     c.expires_at, c.created_by, c.created_at, c.target_count";

/// States in which an agent holds the command (it was delivered and has not ended).
const HELD_STATES: &str = "('leased', 'received', 'deferred', 'running')";

pub(in crate::store) async fn create_command(
    pool: &Pool,
    tenant_id: &str,
    command: &NewCommand,
    agent_ids: &[String],
) -> Result<i64, StoreError> {
    let mut tx = pool.begin().await?;
    let id: i64 = sqlx::query_scalar(
        "UPDATE command_ids SET next_id = next_id + 1 WHERE id = 1 RETURNING next_id - 1",
    )
    .fetch_one(&mut *tx)
    .await?;
    let locks = serde_json::to_string(&command.locks).expect("strings serialize");
    sqlx::query(
        "INSERT INTO commands (id, tenant_id, kind, command, parameters, priority, \
             scheduled_for, timeout_s, maintenance_window, locks, package_manager, expires_at, \
             created_by, created_at, target_count) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
    )
    .bind(id)
    .bind(tenant_id)
    .bind(&command.kind)
    .bind(&command.command)
    .bind(&command.parameters)
    .bind(i64::from(command.priority))
    .bind(command.scheduled_for)
    .bind(command.timeout_s)
    .bind(command.maintenance_window)
    .bind(&locks)
    .bind(command.package_manager)
    .bind(command.expires_at)
    .bind(&command.created_by)
    .bind(command.created_at)
    .bind(i64::try_from(agent_ids.len()).unwrap_or(i64::MAX))
    .execute(&mut *tx)
    .await?;
    let due_at = command.scheduled_for.unwrap_or(command.created_at);
    let mut inserted = 0;
    for chunk in agent_ids.chunks(TARGET_CHUNK) {
        // Only the tenant's agents are selected: an id of another tenant inserts nothing.
        let placeholders: Vec<String> = (0..chunk.len()).map(|i| format!("${}", i + 7)).collect();
        let sql = format!(
            "INSERT INTO command_targets (command_id, tenant_id, agent_id, state, due_at, \
                 expires_at, priority, updated_at) \
             SELECT $1, tenant_id, id, 'pending', $3, $4, $5, $6 FROM agents \
             WHERE tenant_id = $2 AND id IN ({})",
            placeholders.join(", ")
        );
        let mut query = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(id)
            .bind(tenant_id)
            .bind(due_at)
            .bind(command.expires_at)
            .bind(i64::from(command.priority))
            .bind(command.created_at);
        for agent_id in chunk {
            query = query.bind(agent_id);
        }
        inserted += query.execute(&mut *tx).await?.rows_affected();
    }
    if inserted != agent_ids.len() as u64 {
        return Err(StoreError::NotFound("agent"));
    }
    tx.commit().await?;
    Ok(id)
}

pub(in crate::store) async fn command(
    pool: &Pool,
    tenant_id: &str,
    id: i64,
) -> Result<Option<CommandRecord>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COMMAND_COLUMNS} FROM commands c WHERE c.tenant_id = $1 AND c.id = $2"
    )))
    .bind(tenant_id)
    .bind(id)
    .fetch_optional(pool)
    .await?)
}

pub(in crate::store) async fn command_state_counts(
    pool: &Pool,
    tenant_id: &str,
    id: i64,
) -> Result<Vec<(String, i64)>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT state, CAST(COUNT(*) AS BIGINT) FROM command_targets \
         WHERE tenant_id = $1 AND command_id = $2 GROUP BY state ORDER BY state",
    )
    .bind(tenant_id)
    .bind(id)
    .fetch_all(pool)
    .await?)
}

pub(in crate::store) async fn command_targets(
    pool: &Pool,
    tenant_id: &str,
    id: i64,
    limit: u32,
    offset: u32,
) -> Result<Vec<TargetRecord>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT t.command_id, t.agent_id, a.hostname, t.state, t.attempts, t.cancel_requested, \
             t.lease_expires_at, t.reason, t.exit_code, t.stdout, t.stderr, t.stdout_truncated, \
             t.stderr_truncated, t.started_at, t.finished_at, t.delivered_at, t.updated_at \
         FROM command_targets t \
         LEFT JOIN agents a ON a.tenant_id = t.tenant_id AND a.id = t.agent_id \
         WHERE t.tenant_id = $1 AND t.command_id = $2 \
         ORDER BY a.hostname, t.agent_id LIMIT $3 OFFSET $4",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(i64::from(limit))
    .bind(i64::from(offset))
    .fetch_all(pool)
    .await?)
}

pub(in crate::store) async fn list_commands(
    pool: &Pool,
    tenant_id: &str,
    filter: &CommandFilter,
) -> Result<CommandPage, StoreError> {
    let mut conditions = vec!["c.tenant_id = $1".to_owned()];
    let mut texts: Vec<&str> = Vec::new();
    if let Some(agent_id) = &filter.agent_id {
        texts.push(agent_id);
        conditions.push(format!(
            "EXISTS (SELECT 1 FROM command_targets t WHERE t.tenant_id = c.tenant_id \
             AND t.command_id = c.id AND t.agent_id = ${})",
            texts.len() + 1
        ));
    }
    if let Some(state) = &filter.state {
        texts.push(state);
        conditions.push(format!(
            "EXISTS (SELECT 1 FROM command_targets t WHERE t.tenant_id = c.tenant_id \
             AND t.command_id = c.id AND t.state = ${})",
            texts.len() + 1
        ));
    }
    let clause = conditions.join(" AND ");
    let next = texts.len() + 2;
    let count_sql = format!("SELECT CAST(COUNT(*) AS BIGINT) FROM commands c WHERE {clause}");
    let page_sql = format!(
        "SELECT {COMMAND_COLUMNS} FROM commands c WHERE {clause} \
         ORDER BY c.id DESC LIMIT ${next} OFFSET ${}",
        next + 1
    );
    let mut count = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(count_sql)).bind(tenant_id);
    let mut page =
        sqlx::query_as::<_, CommandRecord>(sqlx::AssertSqlSafe(page_sql)).bind(tenant_id);
    for text in &texts {
        count = count.bind(*text);
        page = page.bind(*text);
    }
    let total = count.fetch_one(pool).await?;
    let rows = page
        .bind(i64::from(filter.limit))
        .bind(i64::from(filter.offset))
        .fetch_all(pool)
        .await?;
    let mut commands: Vec<CommandSummary> = rows
        .into_iter()
        .map(|command| CommandSummary {
            command,
            states: Vec::new(),
        })
        .collect();
    if let (Some(first), Some(last)) = (commands.last(), commands.first()) {
        let counts: Vec<(i64, String, i64)> = sqlx::query_as(
            "SELECT command_id, state, CAST(COUNT(*) AS BIGINT) FROM command_targets \
             WHERE tenant_id = $1 AND command_id >= $2 AND command_id <= $3 \
             GROUP BY command_id, state ORDER BY command_id, state",
        )
        .bind(tenant_id)
        .bind(first.command.id)
        .bind(last.command.id)
        .fetch_all(pool)
        .await?;
        for (id, state, n) in counts {
            if let Some(summary) = commands.iter_mut().find(|c| c.command.id == id) {
                summary.states.push((state, n));
            }
        }
    }
    Ok(CommandPage {
        total: u64::try_from(total).unwrap_or_default(),
        commands,
    })
}

/// The condition of a target the agent can lease at `$n`.
fn leasable(n: usize) -> String {
    format!(
        "(state = 'pending' OR (state = 'leased' AND lease_expires_at <= ${n})) \
         AND due_at <= ${n} AND (expires_at IS NULL OR expires_at > ${n}) \
         AND cancel_requested = FALSE"
    )
}

/// Whether the tenant has a target that a pending count could find (a superset of what it
/// counts: open targets in any agent).
pub(in crate::store) async fn tenant_has_open_commands(
    pool: &Pool,
    tenant_id: &str,
) -> Result<bool, StoreError> {
    let found: Option<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(1 AS BIGINT) FROM command_targets \
         WHERE tenant_id = $1 AND (state IN ('pending', 'leased') \
             OR (cancel_requested = TRUE AND state IN {HELD_STATES})) \
         LIMIT 1"
    )))
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?;
    Ok(found.is_some())
}

pub(in crate::store) async fn lease_commands(
    pool: &Pool,
    tenant_id: &str,
    agent_id: &str,
    now: i64,
    lease_until: i64,
    limit: u32,
) -> Result<Leased, StoreError> {
    let lease_id = Uuid::now_v7().to_string();
    let mut tx = pool.begin().await?;
    // The rows are chosen and locked by the inner select: on PostgreSQL another replica's
    // lease of the same rows skips them (`SKIP_LOCKED`) rather than leasing them twice.
    let sql = format!(
        "UPDATE command_targets SET state = 'leased', lease_id = $3, lease_expires_at = $4, \
             attempts = attempts + 1, delivered_at = $5, updated_at = $5 \
         WHERE tenant_id = $1 AND agent_id = $2 AND command_id IN ( \
             SELECT command_id FROM command_targets \
             WHERE tenant_id = $1 AND agent_id = $2 AND {} \
             ORDER BY due_at, priority, command_id LIMIT $6{SKIP_LOCKED})",
        leasable(5)
    );
    let leased = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant_id)
        .bind(agent_id)
        .bind(&lease_id)
        .bind(lease_until)
        .bind(now)
        .bind(i64::from(limit))
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let commands = if leased == 0 {
        Vec::new()
    } else {
        sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT {COMMAND_COLUMNS} FROM command_targets t \
             JOIN commands c ON c.id = t.command_id \
             WHERE t.tenant_id = $1 AND t.agent_id = $2 AND t.lease_id = $3 \
             ORDER BY t.due_at, t.priority, t.command_id"
        )))
        .bind(tenant_id)
        .bind(agent_id)
        .bind(&lease_id)
        .fetch_all(&mut *tx)
        .await?
    };
    let cancel: Vec<i64> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT command_id FROM command_targets \
         WHERE tenant_id = $1 AND agent_id = $2 AND cancel_requested = TRUE \
         AND state IN {HELD_STATES} ORDER BY command_id"
    )))
    .bind(tenant_id)
    .bind(agent_id)
    .fetch_all(&mut *tx)
    .await?;
    let next_due: Option<i64> = if commands.is_empty() {
        sqlx::query_scalar(
            "SELECT MIN(due_at) FROM command_targets \
             WHERE tenant_id = $1 AND agent_id = $2 AND state = 'pending' AND due_at > $3 \
             AND cancel_requested = FALSE",
        )
        .bind(tenant_id)
        .bind(agent_id)
        .bind(now)
        .fetch_one(&mut *tx)
        .await?
    } else {
        None
    };
    tx.commit().await?;
    Ok(Leased {
        commands,
        cancel,
        next_due,
    })
}

pub(in crate::store) async fn pending_command_count(
    pool: &Pool,
    tenant_id: &str,
    agent_id: &str,
    now: i64,
) -> Result<i64, StoreError> {
    Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM command_targets \
         WHERE tenant_id = $1 AND agent_id = $2 AND (({}) \
             OR (cancel_requested = TRUE AND state IN {HELD_STATES}))",
        leasable(3)
    )))
    .bind(tenant_id)
    .bind(agent_id)
    .bind(now)
    .fetch_one(pool)
    .await?)
}

pub(in crate::store) async fn update_command_status(
    pool: &Pool,
    tenant_id: &str,
    agent_id: &str,
    command_id: i64,
    change: &StatusChange,
    now: i64,
) -> Result<StatusOutcome, StoreError> {
    let to = match TargetState::parse(&change.state) {
        Some(TargetState::Agent(state)) => state,
        _ => return Err(StoreError::Corrupt(format!("state `{}`", change.state))),
    };
    // Read, decide, then write only if the state is still the one read; a concurrent change
    // makes the write miss and the decision is taken again.
    for _ in 0..3 {
        let row: Option<(String, Option<i64>)> = sqlx::query_as(
            "SELECT state, delivered_at FROM command_targets \
             WHERE tenant_id = $1 AND agent_id = $2 AND command_id = $3",
        )
        .bind(tenant_id)
        .bind(agent_id)
        .bind(command_id)
        .fetch_optional(pool)
        .await?;
        let Some((stored, delivered_at)) = row else {
            return Err(StoreError::NotFound("command"));
        };
        let mut from = TargetState::parse(&stored)
            .ok_or_else(|| StoreError::Corrupt(format!("command state `{stored}`")))?;
        // Delivered, then its lease ran out: the agent has it all the same.
        if from == TargetState::Pending && delivered_at.is_some() {
            from = TargetState::Leased;
        }
        match transition(from, to) {
            Transition::Repeat => return Ok(StatusOutcome::Repeated),
            Transition::Illegal => {
                return Ok(StatusOutcome::Illegal {
                    from: from.as_str(),
                });
            }
            Transition::Apply => {}
        }
        let updated = sqlx::query(
            "UPDATE command_targets SET state = $4, reason = COALESCE($5, reason), \
                 exit_code = COALESCE($6, exit_code), stdout = COALESCE($7, stdout), \
                 stderr = COALESCE($8, stderr), \
                 stdout_truncated = CASE WHEN $7 IS NULL THEN stdout_truncated ELSE $9 END, \
                 stderr_truncated = CASE WHEN $8 IS NULL THEN stderr_truncated ELSE $10 END, \
                 started_at = COALESCE($11, started_at), \
                 finished_at = COALESCE($12, finished_at), \
                 lease_id = NULL, lease_expires_at = NULL, updated_at = $13 \
             WHERE tenant_id = $1 AND agent_id = $2 AND command_id = $3 AND state = $14",
        )
        .bind(tenant_id)
        .bind(agent_id)
        .bind(command_id)
        .bind(&change.state)
        .bind(&change.reason)
        .bind(change.exit_code)
        .bind(&change.stdout)
        .bind(&change.stderr)
        .bind(change.stdout_truncated)
        .bind(change.stderr_truncated)
        .bind(change.started_at)
        .bind(change.finished_at)
        .bind(now)
        .bind(&stored)
        .execute(pool)
        .await?
        .rows_affected();
        if updated == 1 {
            return Ok(StatusOutcome::Applied);
        }
    }
    Err(StoreError::Conflict(
        "the command's state kept changing; send the status again".into(),
    ))
}

pub(in crate::store) async fn cancel_command(
    pool: &Pool,
    tenant_id: &str,
    id: i64,
    now: i64,
) -> Result<Option<Cancelled>, StoreError> {
    let mut tx = pool.begin().await?;
    // Not received (never sent, or sent and its lease ran out): cancelled here and now, never
    // to be delivered again.
    let cancelled = sqlx::query(
        "UPDATE command_targets SET state = 'cancelled', \
             reason = 'cancelled before the agent received it', finished_at = $3, \
             lease_id = NULL, lease_expires_at = NULL, updated_at = $3 \
         WHERE tenant_id = $1 AND command_id = $2 \
         AND (state = 'pending' OR (state = 'leased' AND lease_expires_at <= $3))",
    )
    .bind(tenant_id)
    .bind(id)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // Held by an agent: it hears of the cancellation in its next `commands/pending`.
    let requested: Vec<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "UPDATE command_targets SET cancel_requested = TRUE, updated_at = $3 \
         WHERE tenant_id = $1 AND command_id = $2 AND state IN {HELD_STATES} \
         RETURNING agent_id"
    )))
    .bind(tenant_id)
    .bind(id)
    .bind(now)
    .fetch_all(&mut *tx)
    .await?;
    let exists: Option<i64> =
        sqlx::query_scalar("SELECT id FROM commands WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    tx.commit().await?;
    Ok(exists.map(|_| Cancelled {
        cancelled,
        requested,
    }))
}

const LOCK_COLUMNS: &str = "id, scope_key, resource, holder_agent_id, command_id, expires_at";

#[allow(clippy::too_many_arguments)]
pub(in crate::store) async fn create_lock(
    pool: &Pool,
    tenant_id: &str,
    scope_key: &str,
    resource: &str,
    agent_id: &str,
    command_id: Option<i64>,
    expires_at: i64,
    now: i64,
) -> Result<LockOutcome, StoreError> {
    let mut tx = pool.begin().await?;
    // An expired lock is free: it goes before the new one is taken.
    sqlx::query(
        "DELETE FROM command_locks \
         WHERE tenant_id = $1 AND scope_key = $2 AND resource = $3 AND expires_at <= $4",
    )
    .bind(tenant_id)
    .bind(scope_key)
    .bind(resource)
    .bind(now)
    .execute(&mut *tx)
    .await?;
    // Taken, or renewed when the same agent and command hold it; another holder's row stays
    // as it is and nothing is returned.
    let held: Option<LockRecord> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO command_locks (id, tenant_id, scope_key, resource, holder_agent_id, \
             command_id, expires_at, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
         ON CONFLICT (tenant_id, scope_key, resource) DO UPDATE SET expires_at = excluded.expires_at \
         WHERE command_locks.holder_agent_id = excluded.holder_agent_id \
         AND COALESCE(command_locks.command_id, -1) = COALESCE(excluded.command_id, -1) \
         RETURNING {LOCK_COLUMNS}"
    )))
    .bind(Uuid::now_v7().to_string())
    .bind(tenant_id)
    .bind(scope_key)
    .bind(resource)
    .bind(agent_id)
    .bind(command_id)
    .bind(expires_at)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let outcome = match held {
        Some(lock) => LockOutcome::Held(lock),
        None => LockOutcome::Taken(
            sqlx::query_as(sqlx::AssertSqlSafe(format!(
                "SELECT {LOCK_COLUMNS} FROM command_locks \
                 WHERE tenant_id = $1 AND scope_key = $2 AND resource = $3"
            )))
            .bind(tenant_id)
            .bind(scope_key)
            .bind(resource)
            .fetch_one(&mut *tx)
            .await?,
        ),
    };
    tx.commit().await?;
    Ok(outcome)
}

pub(in crate::store) async fn delete_lock(
    pool: &Pool,
    tenant_id: &str,
    agent_id: &str,
    id: &str,
) -> Result<bool, StoreError> {
    Ok(sqlx::query(
        "DELETE FROM command_locks WHERE tenant_id = $1 AND holder_agent_id = $2 AND id = $3",
    )
    .bind(tenant_id)
    .bind(agent_id)
    .bind(id)
    .execute(pool)
    .await?
    .rows_affected()
        == 1)
}

pub(in crate::store) async fn sweep_commands(
    pool: &Pool,
    now: i64,
) -> Result<CommandsSwept, StoreError> {
    let returned = sqlx::query(
        "UPDATE command_targets SET \
             state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'pending' END, \
             lease_id = NULL, lease_expires_at = NULL, updated_at = $1 \
         WHERE state = 'leased' AND lease_expires_at <= $1",
    )
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected();
    let expired = sqlx::query(
        "UPDATE command_targets SET state = 'expired', \
             reason = 'expired before the agent received it', updated_at = $1 \
         WHERE state = 'pending' AND expires_at IS NOT NULL AND expires_at <= $1",
    )
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected();
    let locks = sqlx::query("DELETE FROM command_locks WHERE expires_at <= $1")
        .bind(now)
        .execute(pool)
        .await?
        .rows_affected();
    Ok(CommandsSwept {
        returned,
        expired,
        locks,
    })
}

pub(in crate::store) async fn signing_key(
    pool: &Pool,
    tenant_id: &str,
    generated: &SigningKeyPair,
    now: i64,
) -> Result<SigningKeyPair, StoreError> {
    sqlx::query(
        "INSERT INTO tenant_signing_keys (tenant_id, private_key, public_key, created_at) \
         VALUES ($1, $2, $3, $4) ON CONFLICT (tenant_id) DO NOTHING",
    )
    .bind(tenant_id)
    .bind(&generated.private_pkcs8)
    .bind(&generated.public_key)
    .bind(now)
    .execute(pool)
    .await?;
    stored_signing_key(pool, tenant_id)
        .await?
        .ok_or(StoreError::NotFound("tenant"))
}

pub(in crate::store) async fn stored_signing_key(
    pool: &Pool,
    tenant_id: &str,
) -> Result<Option<SigningKeyPair>, StoreError> {
    let row: Option<(String, String)> = sqlx::query_as(
        "SELECT private_key, public_key FROM tenant_signing_keys WHERE tenant_id = $1",
    )
    .bind(tenant_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(private_pkcs8, public_key)| SigningKeyPair {
        private_pkcs8,
        public_key,
    }))
}
