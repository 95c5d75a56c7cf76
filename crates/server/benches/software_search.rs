//! The fleet software search at scale: 50,000 hosts × ~800 packages in one SQLite database,
//! searched through `Store::software_search` as the admin API calls it.
//!
//! ```text
//! cargo bench -p muster-server --bench software_search
//! ```
//!
//! The database is built once (about two minutes; ~2.5 GB) at
//! `target/bench-data/software_search.db` — or `MUSTER_BENCH_DB` — and reused while its
//! parameters match. It is migrated by the store itself, then bulk-loaded with direct SQL in
//! one transaction (the search's index created after the rows). Package names and versions are
//! this machine's `dpkg-query -W` list (synthetic names when there is none), each package in
//! one to six versions across the fleet; `openssl` is on every host in eleven versions, six
//! below 3.0.7, and `rare-tool` on one host in 500.
//!
//! Printed first: p50/p99/max over 300 timed calls of each search (after a warm-up), then
//! what ingesting a changed inventory costs on this database (20 new agents' first
//! inventories, 200 three-package upgrades, 200 unchanged reports; the agents are removed
//! afterwards); then criterion's own estimates of the searches. Set `MUSTER_BENCH_HOSTS` for a smaller fleet.

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::Criterion;
use muster_proto::data::Package;
use muster_proto::inventory::inventory_hash;
use muster_proto::{
    DaemonReport, FunctionData, FunctionReport, HostIdentity, Worker, WorkerReport,
};
use muster_server::store::inventory::SoftwareQuery;
use muster_server::store::{AgentRegistration, NewInventory, ReportKind, ReportMeta, Store};
use uuid::Uuid;

const TENANT: &str = "01900000-0000-7000-8000-000000000001";
const DEFAULT_HOSTS: u64 = 50_000;
const PACKAGES_PER_HOST: usize = 800;
/// Bump when the generated data changes, so an old database is rebuilt.
const DATA_VERSION: i64 = 2;

const OPENSSL_VERSIONS: &[&str] = &[
    "1.1.1f-1ubuntu2.22",
    "1.1.1n-0+deb11u5",
    "3.0.2-0ubuntu1.10",
    "3.0.2-0ubuntu1.12",
    "3.0.2-0ubuntu1.15",
    "3.0.2-0ubuntu1.9",
    "3.0.7-1",
    "3.0.11-1~deb12u2",
    "3.0.13-0ubuntu3.1",
    "3.0.13-0ubuntu3.4",
    "3.0.15-1~deb12u1",
];

/// A cheap deterministic mix (splitmix64).
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// ~800 (name, versions) pairs: this machine's packages, topped up with synthetic ones.
fn catalogue() -> Vec<(String, Vec<String>)> {
    let installed = std::process::Command::new("dpkg-query")
        .args(["-W", "-f", "${Package}\t${Version}\n"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    let mut base: Vec<(String, String)> = installed
        .lines()
        .filter_map(|l| l.split_once('\t'))
        .filter(|(n, v)| !n.is_empty() && !v.is_empty() && *n != "openssl")
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    base.sort();
    base.dedup_by(|a, b| a.0 == b.0);
    base.truncate(PACKAGES_PER_HOST - 1);
    let mut k = 0;
    while base.len() < PACKAGES_PER_HOST - 1 {
        base.push((
            format!("libsynthetic{k}"),
            format!("1.{}.{}-{}", k % 7, k % 13, 1 + k % 3),
        ));
        k += 1;
    }
    let mut catalogue: Vec<(String, Vec<String>)> = base
        .into_iter()
        .map(|(name, version)| {
            // One to six versions in the fleet: the installed one and revision bumps.
            let n = 1 + (name_hash(&name) % 6) as usize;
            let mut versions = vec![version.clone()];
            versions.extend((1..n).map(|k| format!("{version}.{k}")));
            (name, versions)
        })
        .collect();
    catalogue.push((
        "openssl".to_owned(),
        OPENSSL_VERSIONS.iter().map(|v| (*v).to_owned()).collect(),
    ));
    // On one host in 500.
    catalogue.push(("rare-tool".to_owned(), vec!["1.0-1".into(), "2.0-1".into()]));
    catalogue
}

fn database_path() -> PathBuf {
    std::env::var_os("MUSTER_BENCH_DB").map_or_else(
        || {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../target/bench-data/software_search.db")
        },
        PathBuf::from,
    )
}

/// Whether the database at `path` holds the data these parameters make.
fn is_current(path: &std::path::Path, hosts: u64) -> bool {
    let Ok(conn) = rusqlite::Connection::open(path) else {
        return false;
    };
    conn.query_row("SELECT hosts, version FROM bench_meta", [], |row| {
        Ok((row.get::<_, i64>(0)?, row.get::<_, i64>(1)?))
    })
    .is_ok_and(|(h, v)| h == hosts as i64 && v == DATA_VERSION)
}

fn agent_id(h: u64) -> String {
    format!("01900000-0000-7000-9000-{h:012x}")
}

/// Hostnames sort in another order than the hosts were added.
fn hostname(h: u64) -> String {
    const ROLES: &[&str] = &["app", "cache", "db", "edge", "mq", "search", "web"];
    format!(
        "{}-{:06}",
        ROLES[(mix(h) % 7) as usize],
        mix(h ^ 0xabcdef) % 1_000_000
    )
}

/// The packages of host `h` (`counts`: versions of each catalogue entry): (entry, version
/// index). Most hosts have most packages; `openssl` (next to last) is everywhere,
/// `rare-tool` (last) on one host in 500.
fn host_packages(counts: &[usize], h: u64) -> Vec<(usize, usize)> {
    let (openssl, rare) = (counts.len() - 2, counts.len() - 1);
    (0..counts.len())
        .filter_map(|i| {
            let r = mix(h.wrapping_mul(1_000_003) ^ i as u64);
            if (i == rare && !r.is_multiple_of(500)) || (i != openssl && r % 100 >= 96) {
                return None;
            }
            Some((i, (r >> 8) as usize % counts[i]))
        })
        .collect()
}

fn build(path: &std::path::Path, hosts: u64) -> rusqlite::Result<()> {
    let started = Instant::now();
    let mut conn = rusqlite::Connection::open(path)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = OFF; PRAGMA cache_size = -1000000;
         PRAGMA foreign_keys = OFF; DROP INDEX IF EXISTS software_links_package;",
    )?;
    let catalogue = catalogue();
    let tx = conn.transaction()?;
    tx.execute(
        "INSERT INTO tenants (id, name, created_at) VALUES (?1, 'bench', 0)",
        [TENANT],
    )?;
    // Package ids: catalogue entry i, version j.
    let mut ids: Vec<Vec<i64>> = Vec::with_capacity(catalogue.len());
    {
        let mut insert = tx.prepare(
            "INSERT INTO packages (id, tenant_id, name, name_lower, source, version, arch) \
             VALUES (?1, ?2, ?3, ?4, 'dpkg', ?5, 'amd64')",
        )?;
        let mut id = 0i64;
        for (name, versions) in &catalogue {
            let mut row = Vec::with_capacity(versions.len());
            for version in versions {
                id += 1;
                insert.execute(rusqlite::params![
                    id,
                    TENANT,
                    name,
                    name.to_lowercase(),
                    version
                ])?;
                row.push(id);
            }
            ids.push(row);
        }
    }
    {
        let mut agent = tx.prepare(
            "INSERT INTO agents (id, tenant_id, identity, hostname, platform, created_at) \
             VALUES (?1, ?2, ?3, ?4, 'linux', 0)",
        )?;
        let mut host = tx.prepare(
            "INSERT INTO software_hosts (id, tenant_id, agent_id, hostname) VALUES (?1, ?2, ?3, ?4)",
        )?;
        let mut link =
            tx.prepare("INSERT INTO software_links (host_id, package_id) VALUES (?1, ?2)")?;
        let counts: Vec<usize> = ids.iter().map(Vec::len).collect();
        for h in 0..hosts {
            let id = agent_id(h);
            let name = hostname(h);
            agent.execute(rusqlite::params![id, TENANT, format!("host:{h}"), name])?;
            host.execute(rusqlite::params![h as i64 + 1, TENANT, id, name])?;
            let mut linked: Vec<i64> = host_packages(&counts, h)
                .into_iter()
                .map(|(i, j)| ids[i][j])
                .collect();
            linked.sort_unstable();
            for package in linked {
                link.execute(rusqlite::params![h as i64 + 1, package])?;
            }
            if h % 10_000 == 9_999 {
                eprintln!("  {} hosts loaded ({:.0?})", h + 1, started.elapsed());
            }
        }
    }
    tx.commit()?;
    eprintln!("  creating the search index ({:.0?})", started.elapsed());
    conn.execute_batch(
        "CREATE INDEX software_links_package ON software_links (package_id, host_id);
         CREATE TABLE bench_meta (hosts INTEGER, version INTEGER);",
    )?;
    conn.execute(
        "INSERT INTO bench_meta (hosts, version) VALUES (?1, ?2)",
        rusqlite::params![hosts as i64, DATA_VERSION],
    )?;
    conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
    eprintln!("  built in {:.0?}", started.elapsed());
    Ok(())
}

fn percentiles(label: &str, mut samples: Vec<Duration>) {
    samples.sort();
    let at = |q: f64| samples[((samples.len() as f64 - 1.0) * q).round() as usize];
    println!(
        "{label:<44} p50 {:>9.2?}  p99 {:>9.2?}  max {:>9.2?}  (n = {})",
        at(0.50),
        at(0.99),
        samples[samples.len() - 1],
        samples.len()
    );
}

/// A dpkg inventory of these packages.
fn inventory(agent_id: &str, packages: &[(String, String)]) -> DaemonReport {
    let dpkg = FunctionReport::new(FunctionData::Dpkg(
        packages
            .iter()
            .map(|(name, version)| Package {
                name: name.clone(),
                version: version.clone(),
                architecture: Some("amd64".into()),
                source: "dpkg".into(),
                installed_size_bytes: None,
                install_time: None,
                publisher: None,
                uninstall_string: None,
            })
            .collect(),
    ));
    let mut report = DaemonReport::new(
        HostIdentity {
            hostname: "bench".into(),
            machine_id: None,
        },
        vec![WorkerReport::new(Worker::Software, vec![dpkg])],
    );
    report.agent_id = Some(agent_id.to_owned());
    report
}

/// Ingests `report` as a full upload, or, when `unchanged`, as an unchanged-hash upload of it
/// (the agent's steady state); the time the store took.
async fn ingest(store: &Store, agent_id: &str, report: &DaemonReport, unchanged: bool) -> Duration {
    let meta = ReportMeta {
        report_id: Uuid::now_v7(),
        tenant_id: TENANT.into(),
        agent_id: agent_id.into(),
        kind: if unchanged {
            ReportKind::InventoryUnchanged
        } else {
            ReportKind::InventoryFull
        },
        received_at: jiff::Timestamp::now().as_second(),
    };
    let hash = inventory_hash(report);
    let started;
    if unchanged {
        started = Instant::now();
        store.ingest_unchanged(&meta, &hash).await.unwrap();
    } else {
        let new = NewInventory {
            hash,
            report: serde_json::to_string(report).unwrap(),
        };
        started = Instant::now();
        store
            .ingest_inventory(&meta, &[], |_| Ok(new.clone()))
            .await
            .unwrap();
    }
    started.elapsed()
}

/// What a changed inventory costs on this database: an agent's first (800 packages, all
/// already known to the tenant), a three-package upgrade, and an unchanged report. The agents
/// made here are removed afterwards, so the database stays as built.
async fn ingest_costs(store: &Store, path: &std::path::Path) {
    let catalogue = catalogue();
    let counts: Vec<usize> = catalogue.iter().map(|(_, v)| v.len()).collect();
    let packages = |h: u64| -> Vec<(String, String)> {
        host_packages(&counts, h)
            .into_iter()
            .map(|(i, j)| (catalogue[i].0.clone(), catalogue[i].1[j].clone()))
            .collect()
    };
    let mut first = Vec::new();
    let mut delta = Vec::new();
    let mut unchanged = Vec::new();
    let mut made = Vec::new();
    // Registration counts its uses of an enrolment token, which must exist.
    let enrol = muster_server::store::NewToken::new(
        muster_server::token::TokenKind::Enrol,
        format!("{:064x}", u64::MAX),
        None,
    );
    store
        .create_token(TENANT, &enrol, Some("bench"), 0)
        .await
        .unwrap();
    for k in 0..20u64 {
        let registration = AgentRegistration {
            identity: format!("bench-ingest:{k}"),
            public_key: None,
            machine_id: None,
            hostname: format!("bench-ingest-{k}"),
            platform: Some("linux".into()),
            os_name: None,
            os_version: None,
            arch: None,
            agent_version: None,
        };
        let (agent, _) = store
            .register_agent(TENANT, &registration, &enrol.id, &format!("{k:064x}"), 0)
            .await
            .unwrap();
        made.push(agent.clone());
        let mut held = packages(1_000_000 + k);
        first.push(ingest(store, &agent, &inventory(&agent, &held), false).await);
        for round in 0..10 {
            // Three packages move to another version of theirs (or back).
            for p in held.iter_mut().skip(round * 3).take(3) {
                let versions = &catalogue.iter().find(|(n, _)| *n == p.0).unwrap().1;
                let at = versions.iter().position(|v| *v == p.1).unwrap();
                p.1 = versions[(at + 1) % versions.len()].clone();
            }
            delta.push(ingest(store, &agent, &inventory(&agent, &held), false).await);
            unchanged.push(ingest(store, &agent, &inventory(&agent, &held), true).await);
        }
    }
    percentiles("ingest: first inventory (~770 packages)", first);
    percentiles("ingest: changed inventory (3 packages)", delta);
    percentiles("ingest: unchanged inventory", unchanged);
    // Leave the database as it was built.
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA foreign_keys = ON;").unwrap();
    for agent in made {
        conn.execute("DELETE FROM agents WHERE id = ?1", [agent])
            .unwrap();
    }
}

fn main() {
    let hosts: u64 = std::env::var("MUSTER_BENCH_HOSTS")
        .ok()
        .and_then(|h| h.parse().ok())
        .unwrap_or(DEFAULT_HOSTS);
    let path = database_path();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let url = format!("sqlite://{}", path.display());
    if !is_current(&path, hosts) {
        eprintln!("building {} ({hosts} hosts)", path.display());
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
        // The store creates the schema, as in production.
        runtime.block_on(async {
            Store::open(&url).await.unwrap().close().await;
        });
        build(&path, hosts).unwrap();
    }
    let store = runtime.block_on(Store::open(&url)).unwrap();

    let searches: Vec<(&str, SoftwareQuery)> = vec![
        (
            "openssl below 3.0.7, first page",
            SoftwareQuery {
                name: "openssl".into(),
                below: Some("3.0.7".into()),
                source: None,
                limit: 50,
                offset: 0,
            },
        ),
        (
            "openssl (name only), first page",
            SoftwareQuery {
                name: "openssl".into(),
                below: None,
                source: None,
                limit: 50,
                offset: 0,
            },
        ),
        (
            "openssl below 3.0.7, page 200",
            SoftwareQuery {
                name: "openssl".into(),
                below: Some("3.0.7".into()),
                source: None,
                limit: 50,
                offset: 10_000,
            },
        ),
        (
            "openssl below 1.1.1g (one version)",
            SoftwareQuery {
                name: "openssl".into(),
                below: Some("1.1.1g".into()),
                source: None,
                limit: 50,
                offset: 0,
            },
        ),
        (
            "rare-tool (one host in 500)",
            SoftwareQuery {
                name: "rare-tool".into(),
                below: None,
                source: None,
                limit: 50,
                offset: 0,
            },
        ),
        (
            "openssl (name only), page 200",
            SoftwareQuery {
                name: "openssl".into(),
                below: None,
                source: None,
                limit: 50,
                offset: 10_000,
            },
        ),
        (
            "a name nobody has",
            SoftwareQuery {
                name: "no-such-package".into(),
                below: None,
                source: None,
                limit: 50,
                offset: 0,
            },
        ),
    ];

    for (label, query) in &searches {
        let page = runtime
            .block_on(store.software_search(TENANT, query))
            .unwrap();
        let mut samples = Vec::new();
        for k in 0..320 {
            let started = Instant::now();
            let page = runtime
                .block_on(store.software_search(TENANT, query))
                .unwrap();
            let took = started.elapsed();
            black_box(page);
            // The first 20 calls warm the caches.
            if k >= 20 {
                samples.push(took);
            }
        }
        percentiles(&format!("{label} [{} hits]", page.total), samples);
    }

    runtime.block_on(ingest_costs(&store, &path));

    let mut criterion = Criterion::default()
        .sample_size(30)
        .measurement_time(Duration::from_secs(5))
        .configure_from_args();
    let mut group = criterion.benchmark_group("software_search");
    for (label, query) in &searches {
        group.bench_function(*label, |b| {
            b.iter(|| {
                black_box(
                    runtime
                        .block_on(store.software_search(TENANT, query))
                        .unwrap(),
                )
            })
        });
    }
    group.finish();
    criterion.final_summary();
    runtime.block_on(store.close());
}
