//! Admin reads and writes: tokens, agent listings, alerts.
//!
//! The agent listing's WHERE clause depends on which filters are set; it is assembled from
//! fixed fragments only (every value is a bound parameter), hence `AssertSqlSafe`.

use sqlx::Row;

use super::Pool;
use crate::store::admin::{
    AgentFilter, AgentPage, AgentSummary, Alert, AlertMetric, AlertPage,
    DEFAULT_HEARTBEAT_INTERVAL_S, OFFLINE_AFTER_INTERVALS, Thresholds, TokenFilter, TokenInfo,
    TokenPage, is_online,
};
use crate::store::{AgentRecord, MetricsRow, NewToken, StoreError};
use crate::token::TokenKind;

/// The columns of an agent summary, `a` being `agents`.
const SUMMARY_COLUMNS: &str = "a.id, a.tenant_id, a.identity, a.public_key, a.machine_id, \
     a.hostname, a.platform, a.os_name, a.os_version, a.arch, a.agent_version, a.created_at, \
     a.last_seen, a.health, a.heartbeat_interval_s, a.cpu_usage, a.memory_usage, a.disk_usage, \
     a.metrics_at";

/// An agent row with the listing's extra columns.
#[derive(sqlx::FromRow)]
struct SummaryRow {
    #[sqlx(flatten)]
    agent: AgentRecord,
    heartbeat_interval_s: Option<i64>,
    cpu_usage: Option<f64>,
    memory_usage: Option<f64>,
    disk_usage: Option<f64>,
    metrics_at: Option<i64>,
}

impl SummaryRow {
    fn into_summary(self, now: i64) -> AgentSummary {
        AgentSummary {
            online: is_online(self.agent.last_seen, self.heartbeat_interval_s, now),
            agent: self.agent,
            cpu_usage: self.cpu_usage,
            memory_usage: self.memory_usage,
            disk_usage: self.disk_usage,
            metrics_at: self.metrics_at,
        }
    }
}

/// `$n` is the moment before which an agent last seen is offline; the condition is true for
/// online agents.
fn online_condition(n: usize) -> String {
    format!(
        "(a.last_seen IS NOT NULL AND a.last_seen > ${n} - {OFFLINE_AFTER_INTERVALS} * \
         COALESCE(a.heartbeat_interval_s, {DEFAULT_HEARTBEAT_INTERVAL_S}))"
    )
}

/// `text` with LIKE's wildcards escaped (`\` is the escape character).
fn escape_like(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// The LIKE pattern of a hostname filter, lowercase: `*` is any run of characters and the
/// pattern is anchored; without `*`, a substring.
fn hostname_pattern(filter: &str) -> String {
    let filter = filter.to_lowercase();
    if filter.contains('*') {
        filter
            .split('*')
            .map(escape_like)
            .collect::<Vec<_>>()
            .join("%")
    } else {
        format!("%{}%", escape_like(&filter))
    }
}

pub(in crate::store) async fn list_agents_page(
    pool: &Pool,
    tenant_id: &str,
    filter: &AgentFilter,
    now: i64,
) -> Result<AgentPage, StoreError> {
    // Parameters: $1 tenant, then the filters' texts, then `now` if the online filter needs
    // it, then limit and offset. PostgreSQL wants every parameter numbered below the highest
    // one to appear in the statement, so `now` gets a number only when it is used.
    let mut conditions = vec!["a.tenant_id = $1".to_owned()];
    let mut texts: Vec<String> = Vec::new();
    if let Some(hostname) = &filter.hostname {
        texts.push(hostname_pattern(hostname));
        conditions.push(format!(
            "LOWER(a.hostname) LIKE ${} ESCAPE '\\'",
            texts.len() + 1
        ));
    }
    if let Some(os) = &filter.os {
        let os = os.to_lowercase();
        texts.push(os.clone());
        let exact = texts.len() + 1;
        texts.push(format!("{} %", escape_like(&os)));
        let prefix = texts.len() + 1;
        conditions.push(format!(
            "(LOWER(a.platform) = ${exact} OR LOWER(a.os_name) = ${exact} \
             OR LOWER(a.platform) LIKE ${prefix} ESCAPE '\\')"
        ));
    }
    let mut next = texts.len() + 2;
    if let Some(online) = filter.online {
        let condition = online_condition(next);
        next += 1;
        conditions.push(if online {
            condition
        } else {
            format!("NOT {condition}")
        });
    }
    let clause = conditions.join(" AND ");
    let count_sql = format!("SELECT CAST(COUNT(*) AS BIGINT) FROM agents a WHERE {clause}");
    let page_sql = format!(
        "SELECT {SUMMARY_COLUMNS} FROM agents a WHERE {clause} \
         ORDER BY a.hostname, a.id LIMIT ${next} OFFSET ${}",
        next + 1
    );

    let mut count = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(count_sql)).bind(tenant_id);
    let mut page = sqlx::query_as::<_, SummaryRow>(sqlx::AssertSqlSafe(page_sql)).bind(tenant_id);
    for text in &texts {
        count = count.bind(text);
        page = page.bind(text);
    }
    if filter.online.is_some() {
        count = count.bind(now);
        page = page.bind(now);
    }
    let total = count.fetch_one(pool).await?;
    let rows = page
        .bind(i64::from(filter.limit))
        .bind(i64::from(filter.offset))
        .fetch_all(pool)
        .await?;
    Ok(AgentPage {
        total: u64::try_from(total).unwrap_or_default(),
        agents: rows.into_iter().map(|r| r.into_summary(now)).collect(),
    })
}

pub(in crate::store) async fn agent_summary(
    pool: &Pool,
    tenant_id: &str,
    agent_id: &str,
    now: i64,
) -> Result<Option<AgentSummary>, StoreError> {
    let row: Option<SummaryRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {SUMMARY_COLUMNS} FROM agents a WHERE a.tenant_id = $1 AND a.id = $2"
    )))
    .bind(tenant_id)
    .bind(agent_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| r.into_summary(now)))
}

pub(in crate::store) async fn metrics_window(
    pool: &Pool,
    tenant_id: &str,
    agent_id: &str,
    from: i64,
    to: i64,
    limit: u32,
) -> Result<Vec<MetricsRow>, StoreError> {
    Ok(sqlx::query_as(
        "SELECT sampled_at, cpu_usage, memory_usage, disk_usage, data FROM metrics \
         WHERE tenant_id = $1 AND agent_id = $2 AND sampled_at >= $3 AND sampled_at < $4 \
         ORDER BY sampled_at LIMIT $5",
    )
    .bind(tenant_id)
    .bind(agent_id)
    .bind(from)
    .bind(to)
    .bind(i64::from(limit))
    .fetch_all(pool)
    .await?)
}

const TOKEN_COLUMNS: &str =
    "id, kind, name, agent_id, created_at, expires_at, revoked_at, last_used_at, max_uses, uses";

/// A token row; `kind` is checked on the way out.
#[derive(sqlx::FromRow)]
struct TokenRow {
    id: String,
    kind: String,
    name: Option<String>,
    agent_id: Option<String>,
    created_at: i64,
    expires_at: Option<i64>,
    revoked_at: Option<i64>,
    last_used_at: Option<i64>,
    max_uses: Option<i64>,
    uses: i64,
}

impl TryFrom<TokenRow> for TokenInfo {
    type Error = StoreError;

    fn try_from(row: TokenRow) -> Result<TokenInfo, StoreError> {
        Ok(TokenInfo {
            kind: TokenKind::parse(&row.kind)
                .ok_or_else(|| StoreError::Corrupt(format!("token kind `{}`", row.kind)))?,
            id: row.id,
            name: row.name,
            agent_id: row.agent_id,
            created_at: row.created_at,
            expires_at: row.expires_at,
            revoked_at: row.revoked_at,
            last_used_at: row.last_used_at,
            max_uses: row.max_uses,
            uses: row.uses,
        })
    }
}

pub(in crate::store) async fn create_token(
    pool: &Pool,
    tenant_id: &str,
    token: &NewToken,
    name: Option<&str>,
    now: i64,
) -> Result<TokenInfo, StoreError> {
    let row: TokenRow = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "INSERT INTO tokens (id, tenant_id, kind, hash, agent_id, created_at, expires_at, name, \
             max_uses) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) RETURNING {TOKEN_COLUMNS}"
    )))
    .bind(&token.id)
    .bind(tenant_id)
    .bind(token.kind.as_str())
    .bind(&token.hash)
    .bind(&token.agent_id)
    .bind(now)
    .bind(token.expires_at)
    .bind(name)
    .bind(token.max_uses)
    .fetch_one(pool)
    .await?;
    row.try_into()
}

pub(in crate::store) async fn list_tokens(
    pool: &Pool,
    tenant_id: &str,
    filter: &TokenFilter,
) -> Result<TokenPage, StoreError> {
    // $2 kind and $3 revoked are NULL when not filtered on.
    let clause = "tenant_id = $1 AND ($2 IS NULL OR kind = $2) \
         AND ($3 IS NULL OR (revoked_at IS NOT NULL) = $3)";
    let kind = filter.kind.map(TokenKind::as_str);
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM tokens WHERE {clause}"
    )))
    .bind(tenant_id)
    .bind(kind)
    .bind(filter.revoked)
    .fetch_one(pool)
    .await?;
    let rows: Vec<TokenRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {TOKEN_COLUMNS} FROM tokens WHERE {clause} \
         ORDER BY created_at, id LIMIT $4 OFFSET $5"
    )))
    .bind(tenant_id)
    .bind(kind)
    .bind(filter.revoked)
    .bind(i64::from(filter.limit))
    .bind(i64::from(filter.offset))
    .fetch_all(pool)
    .await?;
    Ok(TokenPage {
        total: u64::try_from(total).unwrap_or_default(),
        tokens: rows
            .into_iter()
            .map(TokenInfo::try_from)
            .collect::<Result<_, _>>()?,
    })
}

pub(in crate::store) async fn revoke_token(
    pool: &Pool,
    tenant_id: &str,
    token_id: &str,
    now: i64,
) -> Result<Option<TokenInfo>, StoreError> {
    // A token revoked before keeps its first revocation time.
    let row: Option<TokenRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "UPDATE tokens SET revoked_at = COALESCE(revoked_at, $1) \
         WHERE tenant_id = $2 AND id = $3 RETURNING {TOKEN_COLUMNS}"
    )))
    .bind(now)
    .bind(tenant_id)
    .bind(token_id)
    .fetch_optional(pool)
    .await?;
    row.map(TokenInfo::try_from).transpose()
}

pub(in crate::store) async fn touch_token(
    pool: &Pool,
    token_id: &str,
    now: i64,
) -> Result<(), StoreError> {
    sqlx::query("UPDATE tokens SET last_used_at = $1 WHERE id = $2")
        .bind(now)
        .bind(token_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// The `since` of a threshold alert on `column`: the first sample of the current run over
/// `$3`, i.e. the oldest sample newer than the last one at or under it.
fn over_since(column: &str) -> String {
    format!(
        "(SELECT m.sampled_at FROM metrics m \
          WHERE m.tenant_id = a.tenant_id AND m.agent_id = a.id AND m.sampled_at > COALESCE(\
              (SELECT n.sampled_at FROM metrics n \
               WHERE n.tenant_id = a.tenant_id AND n.agent_id = a.id \
                 AND (n.{column} IS NULL OR n.{column} <= $T) \
               ORDER BY n.sampled_at DESC LIMIT 1), -1) \
          ORDER BY m.sampled_at LIMIT 1)"
    )
}

pub(in crate::store) async fn alerts(
    pool: &Pool,
    tenant_id: &str,
    thresholds: &Thresholds,
    now: i64,
    limit: u32,
    offset: u32,
) -> Result<AlertPage, StoreError> {
    // $1 tenant, $2 now, $3 cpu, $4 memory, $5 disk threshold.
    let online = online_condition(2);
    let clause = format!(
        "a.tenant_id = $1 AND (a.cpu_usage > $3 OR a.memory_usage > $4 OR a.disk_usage > $5 \
         OR NOT {online})"
    );
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM agents a WHERE {clause}"
    )))
    .bind(tenant_id)
    .bind(now)
    .bind(thresholds.cpu)
    .bind(thresholds.memory)
    .bind(thresholds.disk)
    .fetch_one(pool)
    .await?;
    let sql = format!(
        "SELECT a.id, a.hostname, a.last_seen, a.heartbeat_interval_s, a.created_at, \
             a.cpu_usage, a.memory_usage, a.disk_usage, a.metrics_at, \
             CASE WHEN a.cpu_usage > $3 THEN {cpu} END AS cpu_since, \
             CASE WHEN a.memory_usage > $4 THEN {memory} END AS memory_since, \
             CASE WHEN a.disk_usage > $5 THEN {disk} END AS disk_since \
         FROM agents a WHERE {clause} ORDER BY a.hostname, a.id LIMIT $6 OFFSET $7",
        cpu = over_since("cpu_usage").replace("$T", "$3"),
        memory = over_since("memory_usage").replace("$T", "$4"),
        disk = over_since("disk_usage").replace("$T", "$5"),
    );
    let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(tenant_id)
        .bind(now)
        .bind(thresholds.cpu)
        .bind(thresholds.memory)
        .bind(thresholds.disk)
        .bind(i64::from(limit))
        .bind(i64::from(offset))
        .fetch_all(pool)
        .await?;
    let mut alerts = Vec::new();
    for row in &rows {
        let agent_id: String = row.try_get("id")?;
        let hostname: String = row.try_get("hostname")?;
        let last_seen: Option<i64> = row.try_get("last_seen")?;
        let interval: Option<i64> = row.try_get("heartbeat_interval_s")?;
        let metrics_at: Option<i64> = row.try_get("metrics_at")?;
        let mut push = |metric, value, threshold, since| {
            alerts.push(Alert {
                agent_id: agent_id.clone(),
                hostname: hostname.clone(),
                metric,
                value,
                threshold,
                since,
            })
        };
        for (metric, column, threshold) in [
            (AlertMetric::Cpu, "cpu_usage", thresholds.cpu),
            (AlertMetric::Memory, "memory_usage", thresholds.memory),
            (AlertMetric::Disk, "disk_usage", thresholds.disk),
        ] {
            let value: Option<f64> = row.try_get(column)?;
            if let Some(value) = value.filter(|v| *v > threshold) {
                let since_column = format!("{}_since", metric.as_str());
                let since: Option<i64> = row.try_get(since_column.as_str())?;
                // No sample row (metrics past retention): the figure's own time.
                let since = since.or(metrics_at).unwrap_or(now);
                push(metric, Some(value), Some(threshold), since);
            }
        }
        if !is_online(last_seen, interval, now) {
            let interval = interval.unwrap_or(DEFAULT_HEARTBEAT_INTERVAL_S);
            let since = match last_seen {
                Some(seen) => seen.saturating_add(OFFLINE_AFTER_INTERVALS.saturating_mul(interval)),
                None => row.try_get("created_at")?,
            };
            push(AlertMetric::Offline, None, None, since);
        }
    }
    Ok(AlertPage {
        total_agents: u64::try_from(total).unwrap_or_default(),
        alerts,
    })
}
