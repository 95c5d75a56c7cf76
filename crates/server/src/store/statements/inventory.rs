//! Inventory history and the fleet-wide software index (tables of `0002_inventory.sql`).
//!
//! Written by [`index_inventory`], which the ingest transaction calls when an agent's
//! inventory hash changes: the agent's package links are brought to the new inventory's
//! packages by difference (an upgrade of three packages is three deletes and three inserts,
//! not 800 of each), and the changes from the previous inventory are recorded. Reports whose
//! hash did not change never come here.
//!
//! Statements whose shape depends on a count (multi-row inserts, `IN` lists) are built at run
//! time and not kept in the connection's statement cache; integer ids are written into them
//! as literals (they come from the database, never from a request), text is always bound.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use sqlx::Row;

use super::super::{Conn, Pool};
use crate::inventory::{self, Package};
use crate::store::inventory::{
    InstalledPackage, InventoryChange, SoftwareHit, SoftwarePage, SoftwareQuery,
};
use crate::store::{IndexWork, ReportMeta, StoreError};

/// Rows per multi-row statement: 7 bound values a package row, 8 a change row.
const PACKAGE_ROWS: usize = 200;
const CHANGE_ROWS: usize = 100;
const LINK_ROWS: usize = 1000;
/// Names per `IN` list when looking packages up.
const NAME_LOOKUP: usize = 500;
/// How often rows another transaction inserted first (PostgreSQL) are looked up again.
const ID_ATTEMPTS: usize = 8;

/// A package's identity in the `packages` table (`arch` '' for none).
type Key = (String, String, String, String);

fn key(p: &Package) -> Key {
    (
        p.name.clone(),
        p.source.clone(),
        p.version.clone(),
        p.arch.clone().unwrap_or_default(),
    )
}

/// A statement built at run time: not kept in the connection's statement cache.
macro_rules! dynamic {
    ($sql:expr) => {
        sqlx::query(sqlx::AssertSqlSafe($sql)).persistent(false)
    };
}

fn id_list(ids: impl IntoIterator<Item = i64>) -> String {
    let mut out = String::new();
    for (k, id) in ids.into_iter().enumerate() {
        if k > 0 {
            out.push(',');
        }
        out.push_str(&id.to_string());
    }
    out
}

/// Brings the software index and the change history of `meta.agent_id` to the inventory
/// `work` was prepared from (outside the transaction: `Store::ingest_inventory`). Runs inside
/// the ingest transaction.
pub(in crate::store) async fn index_inventory(
    tx: &mut Conn,
    meta: &ReportMeta,
    work: &IndexWork,
) -> Result<(), StoreError> {
    let host_id = host(tx, &meta.tenant_id, &meta.agent_id).await?;
    relink(tx, &meta.tenant_id, host_id, &work.packages).await?;
    insert_changes(tx, meta, &work.changes).await?;
    Ok(())
}

/// The agent's key in `software_hosts`, created when missing; its hostname is brought to the
/// agent's.
async fn host(tx: &mut Conn, tenant_id: &str, agent_id: &str) -> Result<i64, StoreError> {
    let hostname: String =
        sqlx::query_scalar("SELECT hostname FROM agents WHERE tenant_id = $1 AND id = $2")
            .bind(tenant_id)
            .bind(agent_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound("agent"))?;
    for _ in 0..ID_ATTEMPTS {
        let found = sqlx::query(
            "SELECT CAST(id AS BIGINT) AS id, hostname FROM software_hosts \
             WHERE tenant_id = $1 AND agent_id = $2",
        )
        .bind(tenant_id)
        .bind(agent_id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(row) = found {
            let id: i64 = row.try_get("id")?;
            let held: String = row.try_get("hostname")?;
            if held != hostname {
                sqlx::query("UPDATE software_hosts SET hostname = $1 WHERE id = $2")
                    .bind(&hostname)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            }
            return Ok(id);
        }
        // Another transaction may insert the agent's row first (a retry racing its original):
        // nothing is inserted then, and the loop reads that row.
        let id = next_ids(tx, "software_hosts", 1).await?[0];
        sqlx::query(
            "INSERT INTO software_hosts (id, tenant_id, agent_id, hostname) \
             VALUES ($4, $1, $2, $3) ON CONFLICT DO NOTHING",
        )
        .bind(tenant_id)
        .bind(agent_id)
        .bind(&hostname)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    }
    Err(StoreError::Conflict(
        "the software index is busy; try again".into(),
    ))
}

/// Keeps `software_hosts.hostname` equal to the agent's (registration may rename a host).
pub(in crate::store) async fn sync_software_hostname(
    tx: &mut Conn,
    tenant_id: &str,
    agent_id: &str,
    hostname: &str,
) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE software_hosts SET hostname = $1 \
         WHERE tenant_id = $2 AND agent_id = $3 AND hostname <> $1",
    )
    .bind(hostname)
    .bind(tenant_id)
    .bind(agent_id)
    .execute(tx)
    .await?;
    Ok(())
}

/// Links `host_id` to exactly `packages`: removes the links the new inventory lacks, adds the
/// ones it brings (creating package rows as needed).
async fn relink(
    tx: &mut Conn,
    tenant_id: &str,
    host_id: i64,
    packages: &[Package],
) -> Result<(), StoreError> {
    let rows = sqlx::query(
        "SELECT CAST(p.id AS BIGINT) AS id, p.name, p.source, p.version, p.arch \
         FROM software_links l JOIN packages p ON p.id = l.package_id WHERE l.host_id = $1",
    )
    .bind(host_id)
    .fetch_all(&mut *tx)
    .await?;
    let mut linked: HashMap<Key, i64> = HashMap::with_capacity(rows.len());
    for row in rows {
        linked.insert(
            (
                row.try_get("name")?,
                row.try_get("source")?,
                row.try_get("version")?,
                row.try_get("arch")?,
            ),
            row.try_get("id")?,
        );
    }
    let wanted: BTreeMap<Key, &Package> = packages.iter().map(|p| (key(p), p)).collect();
    let stale: Vec<i64> = linked
        .iter()
        .filter(|(k, _)| !wanted.contains_key(*k))
        .map(|(_, id)| *id)
        .collect();
    for chunk in stale.chunks(LINK_ROWS) {
        dynamic!(format!(
            "DELETE FROM software_links WHERE host_id = {host_id} AND package_id IN ({})",
            id_list(chunk.iter().copied())
        ))
        .execute(&mut *tx)
        .await?;
    }
    let missing: Vec<&Package> = wanted
        .iter()
        .filter(|(k, _)| !linked.contains_key(*k))
        .map(|(_, p)| *p)
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let ids = package_ids(tx, tenant_id, &missing).await?;
    for chunk in ids.chunks(LINK_ROWS) {
        let values: Vec<String> = chunk.iter().map(|id| format!("({host_id},{id})")).collect();
        dynamic!(format!(
            "INSERT INTO software_links (host_id, package_id) VALUES {} ON CONFLICT DO NOTHING",
            values.join(",")
        ))
        .execute(&mut *tx)
        .await?;
    }
    Ok(())
}

/// The ids of `packages` in the tenant's `packages` table, inserting those not there yet.
async fn package_ids(
    tx: &mut Conn,
    tenant_id: &str,
    packages: &[&Package],
) -> Result<Vec<i64>, StoreError> {
    let mut ids: Vec<i64> = Vec::with_capacity(packages.len());
    let mut found = lookup(tx, tenant_id, packages).await?;
    let mut absent: Vec<&Package> = packages
        .iter()
        .copied()
        .filter(|p| !found.contains_key(&key(p)))
        .collect();
    for _ in 0..ID_ATTEMPTS {
        if absent.is_empty() {
            break;
        }
        let fresh = next_ids(tx, "packages", absent.len()).await?;
        let mut fresh = fresh.into_iter();
        let mut inserted = 0;
        let mut allocated = Vec::with_capacity(absent.len());
        for chunk in absent.chunks(PACKAGE_ROWS) {
            let mut sql = String::from(
                "INSERT INTO packages (id, tenant_id, name, name_lower, source, version, arch) \
                 VALUES ",
            );
            for (k, _) in chunk.iter().enumerate() {
                let id = fresh.next().expect("one fresh id per absent package");
                allocated.push(id);
                let b = k * 6;
                if k > 0 {
                    sql.push(',');
                }
                sql.push_str(&format!(
                    "({id},${},${},${},${},${},${})",
                    b + 1,
                    b + 2,
                    b + 3,
                    b + 4,
                    b + 5,
                    b + 6
                ));
            }
            sql.push_str(" ON CONFLICT DO NOTHING");
            let mut query = dynamic!(sql);
            for p in chunk {
                query = query
                    .bind(tenant_id.to_owned())
                    .bind(p.name.clone())
                    .bind(p.name.to_lowercase())
                    .bind(p.source.clone())
                    .bind(p.version.clone())
                    .bind(p.arch.clone().unwrap_or_default());
            }
            inserted += query.execute(&mut *tx).await?.rows_affected();
        }
        if inserted == absent.len() as u64 {
            // Every row went in under the id it was given.
            for (p, id) in absent.iter().zip(allocated) {
                found.insert(key(p), id);
            }
            absent.clear();
            break;
        }
        // Some ids or rows were taken concurrently: read back what is there now.
        found.extend(lookup(tx, tenant_id, &absent).await?);
        absent.retain(|p| !found.contains_key(&key(p)));
    }
    if !absent.is_empty() {
        return Err(StoreError::Conflict(
            "the software index is busy; try again".into(),
        ));
    }
    for p in packages {
        ids.push(found[&key(p)]);
    }
    Ok(ids)
}

/// `n` ids for new rows of `table` (`packages` or `software_hosts`), which no other
/// transaction is given. PostgreSQL takes them from the table's sequence (`postgres.rs` creates
/// it), which concurrent transactions draw from without waiting on each other; SQLite has one
/// writer, so the ids above the largest are free until it commits.
async fn next_ids(tx: &mut Conn, table: &str, n: usize) -> Result<Vec<i64>, StoreError> {
    if super::super::SEQUENCES {
        let ids: Vec<i64> = dynamic!(format!(
            "SELECT nextval('{table}_id_seq') FROM generate_series(1, {n})"
        ))
        .fetch_all(&mut *tx)
        .await?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()?;
        return Ok(ids);
    }
    let max: i64 = dynamic!(format!(
        "SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM {table}"
    ))
    .fetch_one(&mut *tx)
    .await?
    .try_get(0)?;
    Ok((1..=n as i64).map(|k| max + k).collect())
}

/// The tenant's package rows for `packages`, by key.
async fn lookup(
    tx: &mut Conn,
    tenant_id: &str,
    packages: &[&Package],
) -> Result<HashMap<Key, i64>, StoreError> {
    let wanted: BTreeSet<Key> = packages.iter().map(|p| key(p)).collect();
    let names: Vec<&String> = packages
        .iter()
        .map(|p| &p.name)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut found = HashMap::with_capacity(packages.len());
    for chunk in names.chunks(NAME_LOOKUP) {
        let placeholders: Vec<String> = (0..chunk.len()).map(|k| format!("${}", k + 2)).collect();
        let mut query = dynamic!(format!(
            "SELECT CAST(id AS BIGINT) AS id, name, source, version, arch FROM packages \
             WHERE tenant_id = $1 AND name IN ({})",
            placeholders.join(",")
        ))
        .bind(tenant_id.to_owned());
        for name in chunk {
            query = query.bind((*name).clone());
        }
        for row in query.fetch_all(&mut *tx).await? {
            let k: Key = (
                row.try_get("name")?,
                row.try_get("source")?,
                row.try_get("version")?,
                row.try_get("arch")?,
            );
            if wanted.contains(&k) {
                found.insert(k, row.try_get("id")?);
            }
        }
    }
    Ok(found)
}

async fn insert_changes(
    tx: &mut Conn,
    meta: &ReportMeta,
    changes: &[inventory::Change],
) -> Result<(), StoreError> {
    for chunk in changes.chunks(CHANGE_ROWS) {
        let mut sql = String::from(
            "INSERT INTO inventory_changes (tenant_id, agent_id, changed_at, category, \
             change_kind, item, old_value, new_value) VALUES ",
        );
        for k in 0..chunk.len() {
            let b = k * 5 + 3;
            if k > 0 {
                sql.push(',');
            }
            sql.push_str(&format!(
                "($1,$2,$3,${},${},${},${},${})",
                b + 1,
                b + 2,
                b + 3,
                b + 4,
                b + 5
            ));
        }
        let mut query = dynamic!(sql)
            .bind(meta.tenant_id.clone())
            .bind(meta.agent_id.clone())
            .bind(meta.received_at);
        for c in chunk {
            query = query
                .bind(c.category.to_owned())
                .bind(c.change.to_owned())
                .bind(c.item.clone())
                .bind(c.old.clone())
                .bind(c.new.clone());
        }
        query.execute(&mut *tx).await?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// reads

/// One distinct package row of a search.
struct Candidate {
    name: String,
    version: String,
    source: String,
    arch: String,
}

fn arch(arch: String) -> Option<String> {
    (!arch.is_empty()).then_some(arch)
}

pub(in crate::store) async fn software_search(
    pool: &Pool,
    tenant_id: &str,
    query: &SoftwareQuery,
) -> Result<SoftwarePage, StoreError> {
    let name = query.name.trim().to_lowercase();
    let empty = SoftwarePage {
        total: 0,
        hits: Vec::new(),
    };
    if name.is_empty() {
        return Ok(empty);
    }
    let mut conn = pool.acquire().await?;
    // The distinct rows of that name (a few: one per version, source and arch in the fleet),
    // filtered by the version ordering of each row's source.
    let rows = sqlx::query(
        "SELECT CAST(id AS BIGINT) AS id, name, source, version, arch FROM packages \
         WHERE tenant_id = $1 AND name_lower = $2 AND ($3 IS NULL OR source = $3)",
    )
    .bind(tenant_id)
    .bind(&name)
    .bind(query.source.as_deref())
    .fetch_all(&mut *conn)
    .await?;
    let mut candidates: HashMap<i64, Candidate> = HashMap::with_capacity(rows.len());
    for row in rows {
        let candidate = Candidate {
            name: row.try_get("name")?,
            version: row.try_get("version")?,
            source: row.try_get("source")?,
            arch: row.try_get("arch")?,
        };
        let below = query.below.as_deref().is_none_or(|below| {
            crate::version::compare(&candidate.source, &candidate.version, below).is_lt()
        });
        if below {
            candidates.insert(row.try_get("id")?, candidate);
        }
    }
    if candidates.is_empty() {
        return Ok(empty);
    }
    let mut ids: Vec<i64> = candidates.keys().copied().collect();
    ids.sort_unstable();
    let ids = id_list(ids);
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(COUNT(*) AS BIGINT) FROM software_links WHERE package_id IN ({ids})"
    )))
    .persistent(false)
    .fetch_one(&mut *conn)
    .await?;
    // Two ways to the page, chosen by what each would read. Walking the tenant's hosts in
    // hostname order and probing each for the packages stops after the page; it wins when the
    // package is common and the page early (the usual search). Reading every matching link
    // and sorting the hosts wins when the package is rare or the page deep: it costs `total`.
    // `CROSS JOIN` makes SQLite keep the join order as written; PostgreSQL plans both alike
    // from its statistics.
    let window = i64::from(query.offset) + i64::from(query.limit);
    // The tenant's host count is bounded by the largest host id (an index's last entry;
    // counting the tenant's hosts would cost as much as the page): overestimating it only
    // leans towards reading the links, whose cost is bounded by `total`.
    let host_driven = total > 0 && {
        let hosts: i64 =
            sqlx::query_scalar("SELECT CAST(COALESCE(MAX(id), 0) AS BIGINT) FROM software_hosts")
                .fetch_one(&mut *conn)
                .await?;
        let walked = (window.saturating_mul(hosts) / total + 1).min(hosts);
        let probes = walked.saturating_mul(candidates.len() as i64);
        probes.saturating_mul(2) < total
    };
    let from = if host_driven {
        "software_hosts h CROSS JOIN software_links l"
    } else {
        "software_links l CROSS JOIN software_hosts h"
    };
    let rows = dynamic!(format!(
        "SELECT h.agent_id, h.hostname, CAST(l.package_id AS BIGINT) AS package_id \
         FROM {from} WHERE h.id = l.host_id AND l.package_id IN ({ids}) AND h.tenant_id = $1 \
         ORDER BY h.hostname, h.agent_id, l.package_id LIMIT $2 OFFSET $3"
    ))
    .bind(tenant_id.to_owned())
    .bind(i64::from(query.limit))
    .bind(i64::from(query.offset))
    .fetch_all(&mut *conn)
    .await?;
    let mut hits = Vec::with_capacity(rows.len());
    for row in rows {
        let package_id: i64 = row.try_get("package_id")?;
        let c = &candidates[&package_id];
        hits.push(SoftwareHit {
            agent_id: row.try_get("agent_id")?,
            hostname: row.try_get("hostname")?,
            name: c.name.clone(),
            version: c.version.clone(),
            source: c.source.clone(),
            arch: arch(c.arch.clone()),
        });
    }
    Ok(SoftwarePage {
        total: u64::try_from(total).unwrap_or(0),
        hits,
    })
}

/// `%text%` for LIKE, with LIKE's own characters escaped (by `\`).
fn contains_pattern(text: &str) -> String {
    let mut pattern = String::from("%");
    for c in text.to_lowercase().chars() {
        if matches!(c, '%' | '_' | '\\') {
            pattern.push('\\');
        }
        pattern.push(c);
    }
    pattern.push('%');
    pattern
}

pub(in crate::store) async fn agent_software(
    pool: &Pool,
    tenant_id: &str,
    agent_id: &str,
    search: Option<&str>,
    limit: u32,
    offset: u32,
) -> Result<(u64, Vec<InstalledPackage>), StoreError> {
    let pattern = search
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(contains_pattern);
    let mut conn = pool.acquire().await?;
    const FROM: &str = "FROM software_hosts h \
         JOIN software_links l ON l.host_id = h.id \
         JOIN packages p ON p.id = l.package_id \
         WHERE h.tenant_id = $1 AND h.agent_id = $2 \
             AND ($3 IS NULL OR p.name_lower LIKE $3 ESCAPE '\\')";
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT CAST(COUNT(*) AS BIGINT) {FROM}"
    )))
    .bind(tenant_id)
    .bind(agent_id)
    .bind(pattern.as_deref())
    .fetch_one(&mut *conn)
    .await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT p.name, p.version, p.source, p.arch {FROM} \
         ORDER BY p.name_lower, p.name, p.source, p.arch, p.version LIMIT $4 OFFSET $5"
    )))
    .bind(tenant_id)
    .bind(agent_id)
    .bind(pattern.as_deref())
    .bind(i64::from(limit))
    .bind(i64::from(offset))
    .fetch_all(&mut *conn)
    .await?;
    let mut packages = Vec::with_capacity(rows.len());
    for row in rows {
        packages.push(InstalledPackage {
            name: row.try_get("name")?,
            version: row.try_get("version")?,
            source: row.try_get("source")?,
            arch: arch(row.try_get("arch")?),
        });
    }
    Ok((u64::try_from(total).unwrap_or(0), packages))
}

const HISTORY_COLUMNS: &str = "SELECT changed_at, category, change_kind, item, old_value, \
     new_value FROM inventory_changes WHERE tenant_id = $1 AND agent_id = $2";
const HISTORY_ORDER: &str =
    "ORDER BY changed_at DESC, category DESC, item, change_kind, old_value, new_value";

/// The `InventoryChange`s of rows selected with `HISTORY_COLUMNS`.
macro_rules! history_rows {
    ($rows:expr) => {
        $rows
            .into_iter()
            .map(|row| {
                Ok::<_, StoreError>(InventoryChange {
                    at: row.try_get("changed_at")?,
                    category: row.try_get("category")?,
                    change: row.try_get("change_kind")?,
                    item: row.try_get("item")?,
                    old: row.try_get("old_value")?,
                    new: row.try_get("new_value")?,
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
}

pub(in crate::store) async fn inventory_history(
    pool: &Pool,
    tenant_id: &str,
    agent_id: &str,
    before: Option<i64>,
    limit: u32,
) -> Result<Vec<InventoryChange>, StoreError> {
    if limit == 0 {
        return Ok(Vec::new());
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut conn = pool.acquire().await?;
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{HISTORY_COLUMNS} AND changed_at < $3 {HISTORY_ORDER} LIMIT $4"
    )))
    .bind(tenant_id)
    .bind(agent_id)
    .bind(before.unwrap_or(i64::MAX))
    .bind(i64::try_from(limit.saturating_add(1)).unwrap_or(i64::MAX))
    .fetch_all(&mut *conn)
    .await?;
    let mut changes = history_rows!(rows)?;
    if changes.len() <= limit {
        return Ok(changes);
    }
    // One inventory's changes (one `at`) are never split across pages, so paging by the last
    // `at` shown loses nothing: a group the limit would cut is left for the next page...
    let last = changes[limit - 1].at;
    if changes[limit].at != last {
        changes.truncate(limit);
        return Ok(changes);
    }
    changes.retain(|c| c.at > last);
    if !changes.is_empty() {
        return Ok(changes);
    }
    // ...unless it alone fills the page: then it comes whole.
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "{HISTORY_COLUMNS} AND changed_at = $3 {HISTORY_ORDER}"
    )))
    .bind(tenant_id)
    .bind(agent_id)
    .bind(last)
    .fetch_all(&mut *conn)
    .await?;
    history_rows!(rows)
}
