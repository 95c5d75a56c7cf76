//! The software index and the inventory history, fed through the agents' API and read through
//! the store: fleet search by name and version ordering, an agent's packages, the changes
//! between inventories, and tenants that never see each other's software.

use std::sync::atomic::{AtomicUsize, Ordering};

use muster_proto::api::InventoryUpload;
use muster_proto::data::{Memory, Package};
use muster_proto::inventory::inventory_hash;
use muster_proto::{DaemonReport, FunctionData, FunctionReport, Worker, WorkerReport};
use muster_server::store::inventory::{InventoryChange, SoftwareQuery};
use muster_server::store::{NewInventory, ReportKind, ReportMeta};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api::report;
use crate::support::{TestServer, backends, client, public_key, send};

fn dpkg(packages: &[(&str, &str)]) -> FunctionReport {
    FunctionReport::new(FunctionData::Dpkg(
        packages
            .iter()
            .map(|(name, version)| Package {
                name: (*name).into(),
                version: (*version).into(),
                architecture: Some("amd64".into()),
                source: "dpkg".into(),
                installed_size_bytes: None,
                install_time: None,
                publisher: None,
                uninstall_string: None,
            })
            .collect(),
    ))
}

fn memory(total: u64) -> FunctionReport {
    FunctionReport::new(FunctionData::Memory(vec![Memory {
        total_bytes: total,
        swap_total_bytes: 0,
    }]))
}

fn inventory(agent_id: &str, memory_bytes: u64, packages: &[(&str, &str)]) -> DaemonReport {
    report(
        agent_id,
        vec![
            WorkerReport::new(Worker::Hardware, vec![memory(memory_bytes)]),
            WorkerReport::new(Worker::Software, vec![dpkg(packages)]),
        ],
    )
}

fn full(report: &DaemonReport) -> Value {
    serde_json::to_value(InventoryUpload::Full {
        hash: inventory_hash(report),
        report: report.clone(),
    })
    .unwrap()
}

fn query(name: &str, below: Option<&str>) -> SoftwareQuery {
    SoftwareQuery {
        name: name.into(),
        below: below.map(Into::into),
        source: None,
        limit: 50,
        offset: 0,
    }
}

async fn post_ok(server: &TestServer, token: &str, body: &Value) -> Value {
    let (status, ack) = server.post("/api/system/report", token, body).await;
    assert_eq!(status, StatusCode::OK, "{ack}");
    ack
}

const GIB: u64 = 1 << 30;

/// (category, change, item, old, new)
type ChangeRow = (String, String, String, Option<String>, Option<String>);

#[tokio::test]
async fn fleet_search_agent_packages_and_history() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let t = tenant.tenant.id.as_str();
        let mut agents = Vec::new();
        // Registered out of hostname order: results come by hostname.
        for (k, (hostname, openssl)) in [
            ("web-2", "3.0.2-0ubuntu1.10"),
            ("db-1", "3.0.13-0ubuntu3.1"),
            ("web-1", "3.0.2-0ubuntu1.9"),
        ]
        .into_iter()
        .enumerate()
        {
            let (id, token) = server
                .register(
                    &tenant,
                    json!({"hostname": hostname, "machine_id": null, "public_key": public_key(k as u8 + 1)}),
                )
                .await;
            let inv = inventory(
                &id,
                8 * GIB,
                &[
                    ("openssl", openssl),
                    ("libc6", "2.35-0ubuntu3.6"),
                    ("curl", "7.81.0-1"),
                ],
            );
            post_ok(&server, &token, &full(&inv)).await;
            agents.push((hostname, id, token, inv));
        }
        let store = &server.store;

        // By name, case-insensitively, ordered by hostname.
        let page = store
            .software_search(t, &query("OpenSSL", None))
            .await
            .unwrap();
        assert_eq!(page.total, 3);
        let hosts: Vec<(&str, &str)> = page
            .hits
            .iter()
            .map(|h| (h.hostname.as_str(), h.version.as_str()))
            .collect();
        assert_eq!(
            hosts,
            vec![
                ("db-1", "3.0.13-0ubuntu3.1"),
                ("web-1", "3.0.2-0ubuntu1.9"),
                ("web-2", "3.0.2-0ubuntu1.10")
            ]
        );
        assert_eq!(page.hits[0].agent_id, agents[1].1);
        assert_eq!(page.hits[0].source, "dpkg");
        assert_eq!(page.hits[0].arch.as_deref(), Some("amd64"));

        // Below a version, by dpkg's ordering (3.0.13 is above 3.0.7; as text it is below).
        let page = store
            .software_search(t, &query("openssl", Some("3.0.7")))
            .await
            .unwrap();
        assert_eq!(page.total, 2);
        assert_eq!(
            page.hits
                .iter()
                .map(|h| h.hostname.as_str())
                .collect::<Vec<_>>(),
            vec!["web-1", "web-2"]
        );
        // 1.10 is above 1.9 by dpkg's ordering.
        let page = store
            .software_search(t, &query("openssl", Some("3.0.2-0ubuntu1.10")))
            .await
            .unwrap();
        assert_eq!(page.total, 1);
        assert_eq!(page.hits[0].hostname, "web-1");

        // Paging, a source filter, a name nobody has, a partial name (exact match only).
        let mut q = query("openssl", None);
        q.limit = 2;
        q.offset = 2;
        let page = store.software_search(t, &q).await.unwrap();
        assert_eq!((page.total, page.hits.len()), (3, 1));
        assert_eq!(page.hits[0].hostname, "web-2");
        q.offset = 0;
        q.source = Some("rpm".into());
        assert_eq!(store.software_search(t, &q).await.unwrap().total, 0);
        q.source = Some("dpkg".into());
        assert_eq!(store.software_search(t, &q).await.unwrap().total, 3);
        for name in ["nginx", "openss", ""] {
            let page = store.software_search(t, &query(name, None)).await.unwrap();
            assert_eq!(page.total, 0, "{name}");
            assert!(page.hits.is_empty());
        }

        // One agent's packages, by name, searchable, paged.
        let (_, web2, web2_token, web2_inv) = &agents[0];
        let (total, packages) = store.agent_software(t, web2, None, 10, 0).await.unwrap();
        assert_eq!(total, 3);
        assert_eq!(
            packages.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
            vec!["curl", "libc6", "openssl"]
        );
        let (total, packages) = store
            .agent_software(t, web2, Some("SSL"), 10, 0)
            .await
            .unwrap();
        assert_eq!(total, 1);
        assert_eq!(packages[0].version, "3.0.2-0ubuntu1.10");
        let (total, packages) = store.agent_software(t, web2, None, 1, 1).await.unwrap();
        assert_eq!((total, packages[0].name.as_str()), (3, "libc6"));
        // LIKE's own characters are matched literally.
        let (total, _) = store
            .agent_software(t, web2, Some("%"), 10, 0)
            .await
            .unwrap();
        assert_eq!(total, 0);

        // The first inventory is a baseline: no changes.
        assert!(
            store
                .inventory_history(t, web2, None, 50)
                .await
                .unwrap()
                .is_empty()
        );

        // A delta: openssl upgraded, curl removed, htop added, memory doubled.
        let delta = inventory(
            web2,
            16 * GIB,
            &[
                ("openssl", "3.0.2-0ubuntu1.12"),
                ("libc6", "2.35-0ubuntu3.6"),
                ("htop", "3.0.5-7"),
            ],
        );
        let new_hash = inventory_hash(&delta);
        post_ok(
            &server,
            web2_token,
            &serde_json::to_value(InventoryUpload::Delta {
                base_hash: inventory_hash(web2_inv),
                hash: new_hash.clone(),
                report: delta,
                removed: vec![],
            })
            .unwrap(),
        )
        .await;
        let history = store.inventory_history(t, web2, None, 50).await.unwrap();
        let mut got: Vec<ChangeRow> = history
            .iter()
            .map(|c| {
                (
                    c.category.clone(),
                    c.change.clone(),
                    c.item.clone(),
                    c.old.clone(),
                    c.new.clone(),
                )
            })
            .collect();
        got.sort();
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            got,
            vec![
                (
                    "hardware".into(),
                    "changed".into(),
                    "memory".into(),
                    s("8.0 GiB"),
                    s("16.0 GiB")
                ),
                (
                    "software".into(),
                    "added".into(),
                    "htop".into(),
                    None,
                    s("3.0.5-7")
                ),
                (
                    "software".into(),
                    "removed".into(),
                    "curl".into(),
                    s("7.81.0-1"),
                    None
                ),
                (
                    "software".into(),
                    "upgraded".into(),
                    "openssl".into(),
                    s("3.0.2-0ubuntu1.10"),
                    s("3.0.2-0ubuntu1.12")
                ),
            ]
        );
        // Software first, then hardware.
        assert_eq!(history.last().unwrap().category, "hardware");
        let (_, packages) = store.agent_software(t, web2, None, 10, 0).await.unwrap();
        assert_eq!(
            packages
                .iter()
                .map(|p| (p.name.as_str(), p.version.as_str()))
                .collect::<Vec<_>>(),
            vec![
                ("htop", "3.0.5-7"),
                ("libc6", "2.35-0ubuntu3.6"),
                ("openssl", "3.0.2-0ubuntu1.12")
            ]
        );
        let page = store
            .software_search(t, &query("openssl", Some("3.0.7")))
            .await
            .unwrap();
        let web2_hit = page.hits.iter().find(|h| h.hostname == "web-2").unwrap();
        assert_eq!(web2_hit.version, "3.0.2-0ubuntu1.12");
        assert_eq!(
            store
                .software_search(t, &query("curl", None))
                .await
                .unwrap()
                .total,
            2
        );
        assert_eq!(
            store
                .software_search(t, &query("htop", None))
                .await
                .unwrap()
                .total,
            1
        );

        // Unchanged reports, and a full resend of the held inventory, change nothing.
        let unchanged = serde_json::to_value(InventoryUpload::Unchanged {
            report_id: Uuid::now_v7(),
            agent_id: web2.clone(),
            datetime: jiff::Timestamp::now(),
            hash: new_hash.clone(),
        })
        .unwrap();
        post_ok(&server, web2_token, &unchanged).await;
        let held: DaemonReport =
            serde_json::from_str(&store.inventory(t, web2).await.unwrap().unwrap().report).unwrap();
        let mut resend = held.clone();
        resend.report_id = Uuid::now_v7();
        post_ok(&server, web2_token, &full(&resend)).await;
        assert_eq!(
            store
                .inventory_history(t, web2, None, 50)
                .await
                .unwrap()
                .len(),
            4
        );

        // Paging the history by `before`.
        let older = store
            .inventory_history(t, web2, Some(history[0].at), 50)
            .await
            .unwrap();
        assert!(older.is_empty());

        // A renamed host is found under its new name.
        let (_, db1, _, _) = &agents[1];
        server
            .register(
                &tenant,
                json!({"hostname": "zz-db-1", "machine_id": null, "public_key": public_key(2)}),
            )
            .await;
        let page = store
            .software_search(t, &query("openssl", None))
            .await
            .unwrap();
        assert_eq!(page.hits.last().unwrap().hostname, "zz-db-1");
        assert_eq!(&page.hits.last().unwrap().agent_id, db1);
    }
}

#[tokio::test]
async fn a_page_of_history_never_splits_one_inventory() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let t = tenant.tenant.id.as_str();
        let (id, token) = server
            .register(&tenant, json!({"hostname": "h", "machine_id": "m"}))
            .await;
        let names: Vec<String> = (0..5).map(|k| format!("pkg{k}")).collect();
        let with = |version: &str| {
            let packages: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), version)).collect();
            inventory(&id, GIB, &packages)
        };
        post_ok(&server, &token, &full(&with("1.0"))).await;
        post_ok(&server, &token, &full(&with("2.0"))).await;
        // Five upgrades, all at one `at` (same second or not, they are one group).
        let all = server
            .store
            .inventory_history(t, &id, None, 50)
            .await
            .unwrap();
        assert_eq!(all.len(), 5);
        assert!(
            all.iter()
                .all(|c| c.change == "upgraded" && c.at == all[0].at)
        );
        // A limit below the group's size still gives the whole group.
        let page = server
            .store
            .inventory_history(t, &id, None, 2)
            .await
            .unwrap();
        assert_eq!(page, all);
        // A third inventory some seconds later: a limit that would cut the older group stops
        // before it.
        let later: Vec<InventoryChange> = {
            tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
            post_ok(&server, &token, &full(&with("3.0"))).await;
            server
                .store
                .inventory_history(t, &id, None, 7)
                .await
                .unwrap()
        };
        assert_eq!(later.len(), 5);
        assert!(later.iter().all(|c| c.new.as_deref() == Some("3.0")));
        let next = server
            .store
            .inventory_history(t, &id, Some(later[0].at), 7)
            .await
            .unwrap();
        assert_eq!(next, all);
    }
}

#[tokio::test]
async fn seed_reports_are_indexed_and_tenants_never_see_each_other() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let a = server.tenant("tenant-a").await;
        let b = server.tenant("tenant-b").await;
        let (agent_a, token_a) = server
            .register(&a, json!({"hostname": "SERVER-01", "machine_id": "m"}))
            .await;
        let (agent_b, token_b) = server
            .register(&b, json!({"hostname": "SERVER-01", "machine_id": "m"}))
            .await;
        let seed = |software: Value| {
            json!({
                "hostname": "SERVER-01", "platform": "Windows 10",
                "cpu_info": "Intel Core i7-8700K", "memory_total": 16777216,
                "installed_software": software,
            })
        };
        post_ok(
            &server,
            &token_a,
            &seed(json!([{"name": "7-Zip", "version": "22.01"}, {"name": "Git", "version": "2.43.0"}])),
        )
        .await;
        post_ok(
            &server,
            &token_b,
            &seed(json!([{"name": "7-Zip", "version": "23.01"}])),
        )
        .await;

        let page = server
            .store
            .software_search(&a.tenant.id, &query("7-zip", None))
            .await
            .unwrap();
        assert_eq!(page.total, 1);
        assert_eq!(page.hits[0].agent_id, agent_a);
        assert_eq!(
            (
                page.hits[0].name.as_str(),
                page.hits[0].version.as_str(),
                page.hits[0].source.as_str()
            ),
            ("7-Zip", "22.01", "seed")
        );
        assert_eq!(page.hits[0].arch, None);
        let page = server
            .store
            .software_search(&b.tenant.id, &query("7-zip", None))
            .await
            .unwrap();
        assert_eq!(page.total, 1);
        assert_eq!(page.hits[0].agent_id, agent_b);
        assert_eq!(
            server
                .store
                .software_search(&b.tenant.id, &query("git", None))
                .await
                .unwrap()
                .total,
            0
        );
        // Another tenant's agent id reads as nothing.
        let (total, packages) = server
            .store
            .agent_software(&b.tenant.id, &agent_a, None, 50, 0)
            .await
            .unwrap();
        assert_eq!((total, packages.len()), (0, 0));

        // A second seed report: the upgrade is a change of A only.
        post_ok(
            &server,
            &token_a,
            &seed(json!([{"name": "7-Zip", "version": "23.01"}, {"name": "Git", "version": "2.43.0"}])),
        )
        .await;
        let history = server
            .store
            .inventory_history(&a.tenant.id, &agent_a, None, 50)
            .await
            .unwrap();
        assert_eq!(history.len(), 1);
        assert_eq!(
            (history[0].change.as_str(), history[0].item.as_str()),
            ("upgraded", "7-Zip")
        );
        assert!(
            server
                .store
                .inventory_history(&b.tenant.id, &agent_a, None, 50)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            server
                .store
                .inventory_history(&b.tenant.id, &agent_b, None, 50)
                .await
                .unwrap()
                .is_empty()
        );
        let page = server
            .store
            .software_search(&a.tenant.id, &query("7-Zip", Some("23.01")))
            .await
            .unwrap();
        assert_eq!(page.total, 0);
    }
}

#[tokio::test]
async fn concurrent_first_inventories_share_one_package_table() {
    // As many at once as an enrolling fleet sends (the load generator keeps 32 in flight).
    const AGENTS: usize = 24;
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let t = tenant.tenant.id.as_str();
        let mut agents = Vec::new();
        for k in 0..AGENTS {
            let (id, token) = server
                .register(
                    &tenant,
                    json!({"hostname": format!("host-{k}"), "machine_id": format!("m-{k}")}),
                )
                .await;
            agents.push((id, token));
        }
        // Every agent brings 300 packages, half of them shared with all the others, half its
        // own: on PostgreSQL the transactions race for the same package rows and for ids.
        let mut posts = tokio::task::JoinSet::new();
        for (k, (id, token)) in agents.iter().enumerate() {
            let names: Vec<(String, String)> = (0..300)
                .map(|p| {
                    if p % 2 == 0 {
                        (format!("shared-{p}"), "1.0-1".to_owned())
                    } else {
                        (format!("own-{k}-{p}"), format!("{k}.0"))
                    }
                })
                .collect();
            let packages: Vec<(&str, &str)> = names
                .iter()
                .map(|(n, v)| (n.as_str(), v.as_str()))
                .collect();
            let body = full(&inventory(id, GIB, &packages));
            let request = client()
                .post(server.url("/api/system/report"))
                .bearer_auth(token)
                .header("content-type", "application/json")
                .body(body.to_string());
            posts.spawn(send(request));
        }
        while let Some(answer) = posts.join_next().await {
            let (status, ack) = answer.unwrap();
            assert_eq!(status, StatusCode::OK, "{ack}");
        }
        let page = server
            .store
            .software_search(t, &query("shared-0", None))
            .await
            .unwrap();
        assert_eq!(page.total, AGENTS as u64);
        let page = server
            .store
            .software_search(t, &query("own-3-1", None))
            .await
            .unwrap();
        assert_eq!(page.total, 1);
        assert_eq!(page.hits[0].agent_id, agents[3].0);
        for (id, _) in &agents {
            let (total, _) = server
                .store
                .agent_software(t, id, None, 1, 0)
                .await
                .unwrap();
            assert_eq!(total, 300);
        }
    }
}

/// An inventory is worked out outside the write transaction; when another report of the same
/// agent replaces the stored inventory meanwhile, it is worked out again against the new one:
/// its changes are recorded against what it really replaced, and the software index is the
/// last inventory's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_inventory_stored_meanwhile_is_worked_out_again() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let t = tenant.tenant.id.clone();
        let (agent, token) = server
            .register(
                &tenant,
                json!({"hostname": "web1", "public_key": public_key(1)}),
            )
            .await;
        let a = inventory(&agent, GIB, &[("curl", "7.81.0-1")]);
        post_ok(&server, &token, &full(&a)).await;
        let b = inventory(&agent, GIB, &[("curl", "7.81.0-1"), ("htop", "3.0.5-7")]);
        let c = inventory(&agent, GIB, &[("curl", "7.88.1-10")]);
        let meta = |report: &DaemonReport| ReportMeta {
            report_id: report.report_id,
            tenant_id: t.clone(),
            agent_id: agent.clone(),
            kind: ReportKind::InventoryFull,
            received_at: 1_000,
        };
        let new = |report: &DaemonReport| NewInventory {
            hash: inventory_hash(report),
            report: serde_json::to_string(report).unwrap(),
        };
        let calls = AtomicUsize::new(0);
        let store = server.store.clone();
        let ingested = server
            .store
            .ingest_inventory(&meta(&c), &[], |stored| {
                let held = stored.map(|s| s.hash.clone());
                if calls.fetch_add(1, Ordering::SeqCst) == 0 {
                    assert_eq!(held, Some(inventory_hash(&a)));
                    // B is stored while C is being worked out, as another request would.
                    let (meta_b, new_b) = (meta(&b), new(&b));
                    tokio::task::block_in_place(|| {
                        tokio::runtime::Handle::current().block_on(async {
                            store
                                .ingest_inventory(&meta_b, &[], |_| Ok(new_b.clone()))
                                .await
                                .unwrap()
                        })
                    });
                } else {
                    assert_eq!(held, Some(inventory_hash(&b)));
                }
                Ok(new(&c))
            })
            .await
            .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 2, "worked out again once");
        assert_eq!(ingested.hash, Some(inventory_hash(&c)));

        let mut history: Vec<(String, String, Option<String>)> = server
            .store
            .inventory_history(&t, &agent, None, 50)
            .await
            .unwrap()
            .into_iter()
            .map(|c| (c.item, c.change, c.new))
            .collect();
        history.sort();
        let s = |v: &str| Some(v.to_owned());
        assert_eq!(
            history,
            vec![
                // C against B (not against A, which C's first working-out saw).
                ("curl".into(), "upgraded".into(), s("7.88.1-10")),
                // B against A.
                ("htop".into(), "added".into(), s("3.0.5-7")),
                ("htop".into(), "removed".into(), None),
            ]
        );
        let (total, packages) = server
            .store
            .agent_software(&t, &agent, None, 10, 0)
            .await
            .unwrap();
        assert_eq!(total, 1);
        assert_eq!(
            (packages[0].name.as_str(), packages[0].version.as_str()),
            ("curl", "7.88.1-10")
        );
    }
}
