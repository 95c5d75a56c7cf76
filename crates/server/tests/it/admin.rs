//! The admin API end to end: agents (filters, pages, online state), inventory, metrics,
//! software search, alerts, tokens, bad input, and the OpenAPI document.
//!
//! Time is injected by writing `last_seen` through the store (a heartbeat "an hour ago"),
//! never by sleeping.

use jiff::{SignedDuration, Timestamp};
use muster_proto::api::InventoryUpload;
use muster_proto::data::Package;
use muster_proto::inventory::inventory_hash;
use muster_proto::{FunctionData, FunctionReport, Worker, WorkerReport};
use muster_server::admin::CreatedTenant;
use muster_server::store::NewToken;
use muster_server::token::{Token, TokenKind};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api::{metrics, report};
use crate::support::{TestServer, assert_error, backends, client, heartbeat, send};

/// Registers `hostname` on `platform`; its id and token.
pub async fn agent(
    server: &TestServer,
    tenant: &CreatedTenant,
    hostname: &str,
    platform: &str,
) -> (String, String) {
    server
        .register(
            tenant,
            json!({"hostname": hostname, "machine_id": format!("m-{hostname}"),
                   "platform": platform, "os_name": "Debian GNU/Linux", "agent_version": "1.0"}),
        )
        .await
}

/// Posts one metrics report of samples `(seconds ago, cpu, memory, disk)`.
pub async fn post_metrics(
    server: &TestServer,
    token: &str,
    agent_id: &str,
    samples: &[(i64, f64, f64, f64)],
) {
    let now = Timestamp::now();
    let samples: Vec<Value> = samples
        .iter()
        .map(|&(ago, cpu, memory, disk)| {
            let mut m = metrics(cpu);
            m.memory_usage = memory;
            m.disk_usage = Some(disk);
            json!({"datetime": now - SignedDuration::from_secs(ago), "metrics": m})
        })
        .collect();
    let body = json!({"report_id": Uuid::now_v7(), "agent_id": agent_id, "samples": samples});
    let (status, answer) = server.post("/api/metrics/report", token, &body).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
}

fn package(name: &str, version: &str) -> Package {
    Package {
        name: name.into(),
        version: version.into(),
        architecture: Some("amd64".into()),
        source: "dpkg".into(),
        installed_size_bytes: None,
        install_time: None,
        publisher: None,
        uninstall_string: None,
    }
}

/// Posts a full inventory of `agent_id` with these dpkg packages.
pub async fn post_inventory(
    server: &TestServer,
    token: &str,
    agent_id: &str,
    packages: &[(&str, &str)],
) -> String {
    let packages = packages.iter().map(|(n, v)| package(n, v)).collect();
    let software = WorkerReport::new(
        Worker::Software,
        vec![FunctionReport::new(FunctionData::Dpkg(packages))],
    );
    let full = report(agent_id, vec![software]);
    let hash = inventory_hash(&full);
    let upload = serde_json::to_value(InventoryUpload::Full {
        hash: hash.clone(),
        report: full,
    })
    .unwrap();
    let (status, answer) = server.post("/api/system/report", token, &upload).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    hash
}

/// Sets the agent's last heartbeat `ago` seconds back, through the store.
async fn seen_ago(server: &TestServer, tenant: &CreatedTenant, agent_id: &str, ago: i64) {
    server
        .store
        .heartbeat(
            &tenant.tenant.id,
            agent_id,
            Timestamp::now().as_second() - ago,
            "1.0",
            "{}",
            None,
        )
        .await
        .unwrap();
}

fn hostnames(answer: &Value) -> Vec<&str> {
    answer["agents"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["hostname"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn agents_list_with_filters_pages_and_online_state() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let admin = tenant.admin_token.expose();
        let (web1, web1_token) = agent(&server, &tenant, "web-1", "Linux").await;
        let (web2, _) = agent(&server, &tenant, "web-2", "Linux").await;
        let (db1, _) = agent(&server, &tenant, "db-1", "Linux").await;
        let (win, _) = agent(&server, &tenant, "desk_100%", "Windows 10").await;
        let (old, _) = agent(&server, &tenant, "old-box", "Linux").await;

        // Heartbeats: web-1 promises 10 s; old-box was last heard from an hour ago (default
        // interval 60 s: offline); db-1 two minutes ago (online: 3 × 60 s not yet missed).
        let (status, answer) = server
            .post(
                "/api/agents/heartbeat",
                &web1_token,
                &heartbeat(&web1, Some(10)),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        server
            .heartbeat_stored(&tenant.tenant.id, &web1, "1.2.3")
            .await;
        seen_ago(&server, &tenant, &old, 3600).await;
        seen_ago(&server, &tenant, &db1, 120).await;

        let (status, all) = server.get("/api/admin/agents", admin).await;
        assert_eq!(status, StatusCode::OK, "{all}");
        assert_eq!(all["total"], 5);
        assert_eq!(
            hostnames(&all),
            ["db-1", "desk_100%", "old-box", "web-1", "web-2"]
        );
        let web = &all["agents"][3];
        assert_eq!(web["id"], web1.as_str());
        assert_eq!(web["online"], true);
        assert_eq!(web["platform"], "Linux");
        assert_eq!(web["os_name"], "Debian GNU/Linux");
        assert_eq!(web["agent_version"], "1.2.3");
        assert!(web["last_seen"].as_str().unwrap().ends_with('Z'));
        assert!(web["cpu_usage"].is_null());
        assert_eq!(all["agents"][2]["online"], false);
        assert_eq!(all["agents"][0]["online"], true);

        let (_, one) = server
            .get(&format!("/api/admin/agents/{web1}"), admin)
            .await;
        assert_eq!(one["health"]["scans_completed"], 3, "{one}");

        // web-1 promised 10 s: 40 s of silence is three missed heartbeats.
        server
            .store
            .heartbeat(
                &tenant.tenant.id,
                &web1,
                Timestamp::now().as_second() - 40,
                "1.2.3",
                "{}",
                Some(10),
            )
            .await
            .unwrap();

        for (query, expected) in [
            ("hostname=WEB", vec!["web-1", "web-2"]),
            ("hostname=web-*", vec!["web-1", "web-2"]),
            ("hostname=*-1", vec!["db-1", "web-1"]),
            ("hostname=eb", vec!["web-1", "web-2"]),
            ("hostname=web-", vec!["web-1", "web-2"]),
            // LIKE's own wildcards are plain characters.
            ("hostname=_", vec!["desk_100%"]),
            ("hostname=%25", vec!["desk_100%"]),
            ("hostname=w_b", vec![]),
            ("os=windows", vec!["desk_100%"]),
            ("os=WINDOWS%2010", vec!["desk_100%"]),
            ("os=debian%20gnu/linux&hostname=db", vec!["db-1"]),
            ("os=linux&online=true", vec!["db-1", "web-2"]),
            ("online=false", vec!["old-box", "web-1"]),
            ("online=false&hostname=web", vec!["web-1"]),
            ("os=solaris", vec![]),
        ] {
            let (status, answer) = server
                .get(&format!("/api/admin/agents?{query}"), admin)
                .await;
            assert_eq!(status, StatusCode::OK, "{query}: {answer}");
            assert_eq!(hostnames(&answer), expected, "{query}");
            assert_eq!(answer["total"], expected.len(), "{query}");
        }

        // Pages: the total stays, the page moves.
        let (_, page) = server
            .get("/api/admin/agents?limit=2&offset=2", admin)
            .await;
        assert_eq!(page["total"], 5);
        assert_eq!(hostnames(&page), ["old-box", "web-1"]);
        let (_, page) = server
            .get("/api/admin/agents?limit=2&offset=4", admin)
            .await;
        assert_eq!(hostnames(&page), ["web-2"]);
        let (_, page) = server.get("/api/admin/agents?offset=99", admin).await;
        assert_eq!(page["total"], 5);
        assert_eq!(hostnames(&page), Vec::<&str>::new());

        // One agent, with its health.
        let (status, one) = server
            .get(&format!("/api/admin/agents/{web2}"), admin)
            .await;
        assert_eq!(status, StatusCode::OK, "{one}");
        assert_eq!(one["hostname"], "web-2");
        assert_eq!(one["online"], true);
        assert!(one["health"].is_null());
        let (_, one) = server
            .get(&format!("/api/admin/agents/{web1}"), admin)
            .await;
        assert_eq!(one["online"], false);
        let _ = win;

        for path in [
            "/api/admin/agents/nope".to_owned(),
            format!("/api/admin/agents/{}", Uuid::now_v7()),
        ] {
            let answer = server.get(&path, admin).await;
            assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
        }
    }
}

#[tokio::test]
async fn latest_figures_and_alerts_come_from_posted_metrics_and_heartbeats() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let admin = tenant.admin_token.expose();
        let (hot, hot_token) = agent(&server, &tenant, "hot", "Linux").await;
        let (full, full_token) = agent(&server, &tenant, "full", "Linux").await;
        let (calm, calm_token) = agent(&server, &tenant, "calm", "Linux").await;
        let (gone, _) = agent(&server, &tenant, "gone", "Linux").await;
        seen_ago(&server, &tenant, &gone, 7200).await;

        // hot: under, then over twice: the alert is since the first sample over.
        post_metrics(
            &server,
            &hot_token,
            &hot,
            &[(300, 50.0, 40.0, 50.0), (200, 85.0, 40.0, 50.0)],
        )
        .await;
        post_metrics(&server, &hot_token, &hot, &[(100, 95.0, 85.0, 50.0)]).await;
        // A late batch of older samples does not replace the newest figures.
        post_metrics(&server, &hot_token, &hot, &[(1000, 10.0, 10.0, 10.0)]).await;
        post_metrics(&server, &full_token, &full, &[(60, 10.0, 20.0, 95.5)]).await;
        // Exactly at a threshold is not over it.
        post_metrics(&server, &calm_token, &calm, &[(60, 80.0, 80.0, 90.0)]).await;

        let (status, list) = server.get("/api/admin/agents?hostname=hot", admin).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        let row = &list["agents"][0];
        assert_eq!(row["cpu_usage"], 95.0);
        assert_eq!(row["memory_usage"], 85.0);
        assert_eq!(row["disk_usage"], 50.0);
        let metrics_at: Timestamp = row["metrics_at"].as_str().unwrap().parse().unwrap();
        assert!(((Timestamp::now() - metrics_at).get_seconds() - 100).abs() <= 2);

        let (status, answer) = server.get("/api/admin/alerts", admin).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["total_agents"], 3, "{answer}");
        assert_eq!(
            answer["thresholds"],
            json!({"cpu": 80.0, "memory": 80.0, "disk": 90.0})
        );
        let alerts: Vec<(&str, &str)> = answer["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["hostname"].as_str().unwrap(),
                    a["metric"].as_str().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            alerts,
            [
                ("full", "disk"),
                ("gone", "offline"),
                ("hot", "cpu"),
                ("hot", "memory"),
            ]
        );
        let by = |host: &str, metric: &str| {
            answer["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .find(|a| a["hostname"] == host && a["metric"] == metric)
                .unwrap()
                .clone()
        };
        let cpu = by("hot", "cpu");
        assert_eq!(cpu["agent_id"], hot.as_str());
        assert_eq!(cpu["value"], 95.0);
        assert_eq!(cpu["threshold"], 80.0);
        let since: Timestamp = cpu["since"].as_str().unwrap().parse().unwrap();
        let ago = (Timestamp::now() - since).get_seconds();
        assert!((199..=205).contains(&ago), "cpu over since {ago} s");
        let memory_since: Timestamp = by("hot", "memory")["since"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let ago = (Timestamp::now() - memory_since).get_seconds();
        assert!((99..=105).contains(&ago), "memory over since {ago} s");
        assert_eq!(by("full", "disk")["value"], 95.5);
        let offline = by("gone", "offline");
        assert!(offline["value"].is_null());
        let since: Timestamp = offline["since"].as_str().unwrap().parse().unwrap();
        let ago = (Timestamp::now() - since).get_seconds();
        // Last seen 7200 s ago; the third missed heartbeat was due 180 s later.
        assert!((7015..=7025).contains(&ago), "offline since {ago} s");

        // Pages are of hosts.
        let (_, page) = server
            .get("/api/admin/alerts?limit=1&offset=2", admin)
            .await;
        assert_eq!(page["total_agents"], 3);
        assert_eq!(page["alerts"].as_array().unwrap().len(), 2);
        assert_eq!(page["alerts"][0]["hostname"], "hot");

        // Back under: the alert goes.
        post_metrics(&server, &hot_token, &hot, &[(10, 20.0, 20.0, 20.0)]).await;
        let (_, answer) = server.get("/api/admin/alerts", admin).await;
        assert_eq!(answer["total_agents"], 2, "{answer}");
    }
}

#[tokio::test]
async fn inventory_latest_and_metrics_over_a_window() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let admin = tenant.admin_token.expose();
        let (id, token) = agent(&server, &tenant, "web-1", "Linux").await;

        let answer = server
            .get(&format!("/api/admin/agents/{id}/inventory"), admin)
            .await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");

        let hash = post_inventory(&server, &token, &id, &[("openssl", "3.0.2-0ubuntu1")]).await;
        let (status, inventory) = server
            .get(&format!("/api/admin/agents/{id}/inventory"), admin)
            .await;
        assert_eq!(status, StatusCode::OK, "{inventory}");
        assert_eq!(inventory["agent_id"], id.as_str());
        assert_eq!(inventory["hash"], hash.as_str());
        assert!(inventory["updated_at"].is_string());
        assert_eq!(inventory["report"]["host"]["hostname"], "web-1");
        let software = &inventory["report"]["worker_reports"][0];
        assert_eq!(software["name"], "software");

        post_metrics(
            &server,
            &token,
            &id,
            &[
                (7200, 1.0, 1.0, 1.0),
                (3600, 2.0, 2.0, 2.0),
                (60, 3.0, 3.0, 3.0),
            ],
        )
        .await;
        // Older than the default 24 h window.
        post_metrics(&server, &token, &id, &[(90_000, 9.0, 9.0, 9.0)]).await;
        let path = format!("/api/admin/agents/{id}/metrics");
        let (status, window) = server.get(&path, admin).await;
        assert_eq!(status, StatusCode::OK, "{window}");
        let cpus: Vec<f64> = window["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["cpu_usage"].as_f64().unwrap())
            .collect();
        assert_eq!(cpus, [1.0, 2.0, 3.0]);
        assert_eq!(window["truncated"], false);
        assert_eq!(
            window["samples"][0]["metrics"]["memory_total_bytes"],
            1 << 30
        );

        let now = Timestamp::now().as_second();
        // Unix seconds and RFC 3339 alike. `to` stays well before the sample taken 60 s
        // before posting, however many seconds have passed since.
        let from = Timestamp::from_second(now - 4000).unwrap();
        let query = format!("{path}?from={from}&to={}", now - 600);
        let (status, window) = server.get(&query, admin).await;
        assert_eq!(status, StatusCode::OK, "{window}");
        assert_eq!(window["samples"].as_array().unwrap().len(), 1);
        assert_eq!(window["samples"][0]["cpu_usage"], 2.0);
        let query = format!("{path}?from={}&to={}", now - 100_000, now - 80_000);
        let (_, window) = server.get(&query, admin).await;
        assert_eq!(window["samples"][0]["cpu_usage"], 9.0);

        for query in [
            "from=yesterday",
            "to=2024-13-01T00:00:00Z",
            "from=99999999999999",
            "from=2024-01-02T00:00:00Z&to=2024-01-01T00:00:00Z",
            "from=2024-01-01T00:00:00Z&to=2024-03-01T00:00:00Z",
        ] {
            let answer = server.get(&format!("{path}?{query}"), admin).await;
            assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
        }
        let answer = server.get("/api/admin/agents/nope/metrics", admin).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
        let answer = server.get("/api/admin/agents/nope/inventory", admin).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
        let answer = server
            .get(
                &format!("/api/admin/agents/{id}/inventory?history=maybe"),
                admin,
            )
            .await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    }
}

/// Needs the inventory work (`Store::software_search`, `Store::inventory_history`): until it
/// is merged these store methods answer an error and this test fails.
#[tokio::test]
async fn software_search_and_inventory_history() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let admin = tenant.admin_token.expose();
        let (a, a_token) = agent(&server, &tenant, "web-a", "Linux").await;
        let (b, b_token) = agent(&server, &tenant, "web-b", "Linux").await;
        let (c, c_token) = agent(&server, &tenant, "web-c", "Linux").await;
        post_inventory(
            &server,
            &a_token,
            &a,
            &[("openssl", "3.0.2-0ubuntu1"), ("curl", "7.81.0")],
        )
        .await;
        post_inventory(&server, &b_token, &b, &[("openssl", "3.0.13-0ubuntu3")]).await;
        post_inventory(&server, &c_token, &c, &[("zlib1g", "1:1.2.13")]).await;

        let (status, all) = server.get("/api/admin/software?name=OpenSSL", admin).await;
        assert_eq!(status, StatusCode::OK, "{all}");
        assert_eq!(all["total"], 2, "{all}");
        assert_eq!(all["hits"][0]["hostname"], "web-a");
        assert_eq!(all["hits"][0]["agent_id"], a.as_str());
        assert_eq!(all["hits"][0]["source"], "dpkg");
        assert_eq!(all["hits"][1]["hostname"], "web-b");

        let (status, below) = server
            .get("/api/admin/software?name=openssl&below=3.0.7", admin)
            .await;
        assert_eq!(status, StatusCode::OK, "{below}");
        assert_eq!(below["total"], 1, "{below}");
        assert_eq!(below["hits"][0]["version"], "3.0.2-0ubuntu1");
        let (_, page) = server
            .get("/api/admin/software?name=openssl&limit=1&offset=1", admin)
            .await;
        assert_eq!(page["total"], 2);
        assert_eq!(page["hits"][0]["hostname"], "web-b");
        let (_, none) = server
            .get("/api/admin/software?name=openssl&source=rpm", admin)
            .await;
        assert_eq!(none["total"], 0);

        // History: an upgrade and an addition on web-a, newest first.
        post_inventory(
            &server,
            &a_token,
            &a,
            &[
                ("openssl", "3.0.13-0ubuntu3"),
                ("curl", "7.81.0"),
                ("jq", "1.6"),
            ],
        )
        .await;
        let path = format!("/api/admin/agents/{a}/inventory?history");
        let (status, history) = server.get(&path, admin).await;
        assert_eq!(status, StatusCode::OK, "{history}");
        assert_eq!(history["agent_id"], a.as_str());
        let changes = history["changes"].as_array().unwrap();
        let upgraded = changes
            .iter()
            .find(|c| c["item"] == "openssl" && c["change"] == "upgraded")
            .unwrap_or_else(|| panic!("{history}"));
        assert_eq!(upgraded["old"], "3.0.2-0ubuntu1");
        assert_eq!(upgraded["new"], "3.0.13-0ubuntu3");
        assert!(
            changes
                .iter()
                .any(|c| c["item"] == "jq" && c["change"] == "added")
        );
        assert!(history["next_before"].is_null());
    }
}

#[tokio::test]
async fn tokens_are_created_listed_used_and_revoked() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let admin = tenant.admin_token.expose();

        let body = json!({"kind": "admin", "name": "ci", "expires_in_s": 3600});
        let (status, created) = server.post("/api/admin/tokens", admin, &body).await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let new_admin = created["token"].as_str().unwrap().to_owned();
        assert!(new_admin.starts_with("mst_admin_"));
        assert_eq!(created["kind"], "admin");
        assert_eq!(created["name"], "ci");
        let expires: Timestamp = created["expires_at"].as_str().unwrap().parse().unwrap();
        assert!((expires - Timestamp::now()).get_seconds() > 3500);

        // The new token works, and its use is recorded.
        let (status, _) = server.get("/api/admin/agents", &new_admin).await;
        assert_eq!(status, StatusCode::OK);

        let at = Timestamp::now() + SignedDuration::from_hours(24 * 30);
        let body = json!({"kind": "enrol", "expires_at": at});
        let (status, enrol) = server.post("/api/admin/tokens", admin, &body).await;
        assert_eq!(status, StatusCode::CREATED, "{enrol}");
        let enrol_token = enrol["token"].as_str().unwrap();
        assert!(enrol_token.starts_with("mst_enrol_"));
        assert!(enrol["name"].is_null());
        let register = json!({"tenant_id": tenant.tenant.id, "hostname": "h", "machine_id": "m"});
        let (status, registered) = server
            .post("/api/agents/register", enrol_token, &register)
            .await;
        assert_eq!(status, StatusCode::OK, "{registered}");
        let agent_token = registered["agent_token"].as_str().unwrap().to_owned();
        let agent_id = registered["agent_id"].as_str().unwrap().to_owned();

        // The list: every kind, never a token or a hash.
        let (status, list) = server.get("/api/admin/tokens", admin).await;
        assert_eq!(status, StatusCode::OK, "{list}");
        assert_eq!(list["total"], 5, "{list}");
        let text = list.to_string();
        assert!(!text.contains("mst_"), "{text}");
        assert!(!text.contains(&Token::parse(&new_admin).unwrap().hash()));
        let find = |list: &Value, id: &Value| {
            list["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| &t["id"] == id)
                .cloned()
                .unwrap()
        };
        let listed = find(&list, &created["id"]);
        assert_eq!(listed["name"], "ci");
        assert!(listed["last_used_at"].is_string(), "{listed}");
        assert!(listed["revoked_at"].is_null());
        let (_, agents_only) = server.get("/api/admin/tokens?kind=agent", admin).await;
        assert_eq!(agents_only["total"], 1);
        assert_eq!(agents_only["tokens"][0]["agent_id"], agent_id.as_str());
        let (_, page) = server
            .get("/api/admin/tokens?kind=admin&limit=1&offset=1", admin)
            .await;
        assert_eq!(page["total"], 2);
        assert_eq!(page["tokens"][0]["id"], created["id"]);

        // Revoked: 401 from then on. Revoking again changes nothing.
        let path = format!("/api/admin/tokens/{}", created["id"].as_str().unwrap());
        let (status, revoked) = server.delete(&path, admin).await;
        assert_eq!(status, StatusCode::OK, "{revoked}");
        assert_eq!(revoked["revoked_own_token"], false);
        let revoked_at = revoked["token"]["revoked_at"].clone();
        assert!(revoked_at.is_string());
        let answer = server.get("/api/admin/agents", &new_admin).await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
        let (status, again) = server.delete(&path, admin).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(again["token"]["revoked_at"], revoked_at);
        let (_, revoked_list) = server.get("/api/admin/tokens?revoked=true", admin).await;
        assert_eq!(revoked_list["total"], 1);
        let (_, live) = server.get("/api/admin/tokens?revoked=false", admin).await;
        assert_eq!(live["total"], 4);

        // An agent's token may be revoked too.
        let agent_token_id = agents_only["tokens"][0]["id"].as_str().unwrap();
        let (status, _) = server
            .delete(&format!("/api/admin/tokens/{agent_token_id}"), admin)
            .await;
        assert_eq!(status, StatusCode::OK);
        let answer = server
            .post(
                "/api/agents/heartbeat",
                &agent_token,
                &heartbeat(&agent_id, None),
            )
            .await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");

        // An expired token is refused.
        let expired = Token::generate(TokenKind::Admin);
        let mut new = NewToken::new(TokenKind::Admin, expired.hash(), None);
        new.expires_at = Some(Timestamp::now().as_second() - 1);
        server
            .store
            .create_token(
                &tenant.tenant.id,
                &new,
                None,
                Timestamp::now().as_second() - 100,
            )
            .await
            .unwrap();
        let answer = server.get("/api/admin/agents", expired.expose()).await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");

        // Bad requests.
        let past = Timestamp::now() - SignedDuration::from_secs(10);
        for body in [
            json!({"kind": "agent"}),
            json!({"kind": "root"}),
            json!({"kind": "admin", "expires_at": past}),
            json!({"kind": "admin", "expires_in_s": 0}),
            json!({"kind": "admin", "expires_in_s": u64::MAX}),
            json!({"kind": "admin", "expires_in_s": 10, "expires_at": Timestamp::now()}),
            json!({"kind": "admin", "name": "x".repeat(256)}),
            json!({"kind": "admin", "surprise": true}),
            json!({}),
        ] {
            let answer = server.post("/api/admin/tokens", admin, &body).await;
            assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
        }
        let answer = server
            .delete(&format!("/api/admin/tokens/{}", Uuid::now_v7()), admin)
            .await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");

        // Revoking the caller's own token is allowed, and said.
        let (_, admins) = server
            .get("/api/admin/tokens?kind=admin&revoked=false", admin)
            .await;
        // The tenant's first admin token: the live one without an expiry.
        let own = admins["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["expires_at"].is_null())
            .unwrap()["id"]
            .as_str()
            .unwrap();
        let (status, revoked) = server
            .delete(&format!("/api/admin/tokens/{own}"), admin)
            .await;
        assert_eq!(status, StatusCode::OK, "{revoked}");
        assert_eq!(revoked["revoked_own_token"], true);
        let answer = server.get("/api/admin/tokens", admin).await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    }
}

#[tokio::test]
async fn bad_input_is_a_json_error_never_a_500() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let admin = tenant.admin_token.expose();
        let (agent_id, agent_token) = agent(&server, &tenant, "web-1", "Linux").await;

        let every_get = [
            "/api/admin/agents".to_owned(),
            format!("/api/admin/agents/{agent_id}"),
            format!("/api/admin/agents/{agent_id}/inventory"),
            format!("/api/admin/agents/{agent_id}/metrics"),
            "/api/admin/software?name=openssl".to_owned(),
            "/api/admin/alerts".to_owned(),
            "/api/admin/tokens".to_owned(),
        ];
        // No token, a malformed one, and valid tokens of the wrong kinds.
        for path in &every_get {
            let answer = send(client().get(server.url(path))).await;
            assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
            for token in [
                "garbage",
                tenant.enrol_token.expose(),
                agent_token.as_str(),
                Token::generate(TokenKind::Admin).expose(),
            ] {
                let answer = server.get(path, token).await;
                assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
            }
        }
        let answer = server
            .post(
                "/api/admin/tokens",
                tenant.enrol_token.expose(),
                &json!({"kind": "admin"}),
            )
            .await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
        let answer = server.delete("/api/admin/tokens/x", &agent_token).await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");

        // Query strings that do not parse are 400; values out of bounds 422.
        for path in [
            "/api/admin/agents?limit=abc",
            "/api/admin/agents?limit=-1",
            "/api/admin/agents?offset=1e3",
            "/api/admin/agents?online=maybe",
            "/api/admin/alerts?limit=99999999999",
            "/api/admin/tokens?kind=root",
            "/api/admin/tokens?revoked=2",
            "/api/admin/software?name=a&offset=x",
        ] {
            let answer = server.get(path, admin).await;
            assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
        }
        let long = "x".repeat(300);
        for path in [
            "/api/admin/agents?limit=0".to_owned(),
            "/api/admin/agents?limit=1001".to_owned(),
            format!("/api/admin/agents?hostname={long}"),
            "/api/admin/software".to_owned(),
            "/api/admin/software?name=%20".to_owned(),
            "/api/admin/alerts?limit=0".to_owned(),
            "/api/admin/tokens?limit=5000".to_owned(),
        ] {
            let answer = server.get(&path, admin).await;
            assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
        }
        // Odd but valid filters are plain text to the database.
        for path in [
            "/api/admin/agents?hostname=%27%3B%20DROP%20TABLE%20agents%3B--",
            "/api/admin/agents?hostname=***&os=%5C",
            "/api/admin/agents?hostname=%E2%9C%93&online=true&limit=1000&offset=4294967295",
        ] {
            let (status, answer) = server.get(path, admin).await;
            assert_eq!(status, StatusCode::OK, "{path}: {answer}");
        }
        // A body that is not JSON, and a path that is not UTF-8.
        let answer = send(
            client()
                .post(server.url("/api/admin/tokens"))
                .bearer_auth(admin)
                .header("content-type", "application/json")
                .body("{"),
        )
        .await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
        let answer = server.get("/api/admin/agents/%FF%FE", admin).await;
        assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
        let answer = server.get("/api/admin/nothing", admin).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
        let answer = server.delete("/api/admin/agents", admin).await;
        assert_error(
            &answer,
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
        );
    }
}

#[tokio::test]
async fn heartbeat_interval_is_optional_and_decides_online() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let admin = tenant.admin_token.expose();
        let (id, token) = agent(&server, &tenant, "web-1", "Linux").await;
        // A seed agent's heartbeat has no interval; an absurd one is clamped, not refused.
        for interval in [None, Some(0), Some(u64::MAX), Some(30)] {
            let (status, answer) = server
                .post("/api/agents/heartbeat", &token, &heartbeat(&id, interval))
                .await;
            assert_eq!(status, StatusCode::OK, "{interval:?}: {answer}");
        }
        // 30 s promised: offline after 90 s, online before.
        for (ago, online) in [(80, true), (100, false)] {
            server
                .store
                .heartbeat(
                    &tenant.tenant.id,
                    &id,
                    Timestamp::now().as_second() - ago,
                    "1.0",
                    "{}",
                    Some(30),
                )
                .await
                .unwrap();
            let (_, one) = server.get(&format!("/api/admin/agents/{id}"), admin).await;
            assert_eq!(one["online"], online, "{ago}");
            let (_, listed) = server
                .get(&format!("/api/admin/agents?online={online}"), admin)
                .await;
            assert_eq!(listed["total"], 1, "{ago}");
        }
    }
}

#[tokio::test]
async fn openapi_is_served_and_the_checked_in_copy_is_current() {
    let generated = muster_server::openapi::document_json();
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json");
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let checked_in = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        checked_in == generated,
        "docs/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo test -p muster-server --test it \
         openapi` and commit the result"
    );

    let document: Value = serde_json::from_str(&generated).unwrap();
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let paths = document["paths"].as_object().unwrap();
    for path in [
        "/api/agents/register",
        "/api/agents/heartbeat",
        "/api/system/report",
        "/api/metrics/report",
        "/api/admin/agents",
        "/api/admin/agents/{id}",
        "/api/admin/agents/{id}/inventory",
        "/api/admin/agents/{id}/metrics",
        "/api/admin/software",
        "/api/admin/alerts",
        "/api/admin/tokens",
        "/api/admin/tokens/{id}",
    ] {
        assert!(paths.contains_key(path), "{path}");
    }
    let schemes = &document["components"]["securitySchemes"]["bearer"];
    assert_eq!(schemes["scheme"], "bearer");
    assert!(document["components"]["schemas"]["ApiError"].is_object());

    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let response = client()
            .get(server.url("/api/openapi.json"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert_eq!(response.text().await.unwrap(), generated);
    }
}
