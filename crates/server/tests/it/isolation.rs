//! A token of tenant A can neither see nor change anything of tenant B.

use muster_proto::api::InventoryUpload;
use muster_proto::inventory::inventory_hash;
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api::{metrics, report};
use crate::support::{TestServer, assert_error, backends, heartbeat, public_key};

#[tokio::test]
async fn tenants_are_isolated() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let a = server.tenant("tenant-a").await;
        let b = server.tenant("tenant-b").await;

        // An enrolment token enrols only into its own tenant.
        for (token, tenant_id) in [
            (&a.enrol_token, &b.tenant.id),
            (&b.enrol_token, &a.tenant.id),
        ] {
            let body = json!({"tenant_id": tenant_id, "hostname": "h", "machine_id": null});
            let answer = server
                .post("/api/agents/register", token.expose(), &body)
                .await;
            assert_error(&answer, StatusCode::FORBIDDEN, "forbidden");
        }
        assert!(
            server
                .store
                .list_agents(&a.tenant.id)
                .await
                .unwrap()
                .is_empty()
        );
        assert!(
            server
                .store
                .list_agents(&b.tenant.id)
                .await
                .unwrap()
                .is_empty()
        );

        // The same machine (same key) enrolled in both tenants is two agents.
        let body = json!({"hostname": "h", "machine_id": "m", "public_key": public_key(9)});
        let (agent_a, token_a) = server.register(&a, body.clone()).await;
        let (agent_b, token_b) = server.register(&b, body).await;
        assert_ne!(agent_a, agent_b);

        // B's agent cannot act as A's.
        let heartbeat = heartbeat(&agent_a, None);
        let answer = server
            .post("/api/agents/heartbeat", &token_b, &heartbeat)
            .await;
        assert_error(&answer, StatusCode::FORBIDDEN, "forbidden");
        let metrics_body = json!({
            "report_id": Uuid::now_v7(), "agent_id": agent_a,
            "samples": [{"datetime": jiff::Timestamp::now(), "metrics": metrics(1.0)}]
        });
        let answer = server
            .post("/api/metrics/report", &token_b, &metrics_body)
            .await;
        assert_error(&answer, StatusCode::FORBIDDEN, "forbidden");
        let full_a = report(&agent_a, vec![]);
        let upload = serde_json::to_value(InventoryUpload::Full {
            hash: inventory_hash(&full_a),
            report: full_a.clone(),
        })
        .unwrap();
        let answer = server.post("/api/system/report", &token_b, &upload).await;
        assert_error(&answer, StatusCode::FORBIDDEN, "forbidden");

        // A's report stored; B re-using its report id is a conflict, not a duplicate that would
        // answer with A's inventory hash.
        let (status, _) = server.post("/api/system/report", &token_a, &upload).await;
        assert_eq!(status, StatusCode::OK);
        let mut full_b = full_a.clone();
        full_b.agent_id = Some(agent_b.clone());
        let upload_b = serde_json::to_value(InventoryUpload::Full {
            hash: inventory_hash(&full_b),
            report: full_b,
        })
        .unwrap();
        let answer = server.post("/api/system/report", &token_b, &upload_b).await;
        assert_error(&answer, StatusCode::CONFLICT, "conflict");
        assert!(
            server
                .store
                .inventory(&b.tenant.id, &agent_b)
                .await
                .unwrap()
                .is_none()
        );

        // Nothing of A is visible through B's tenant id.
        assert!(
            server
                .store
                .agent(&b.tenant.id, &agent_a)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            server
                .store
                .inventory(&b.tenant.id, &agent_a)
                .await
                .unwrap()
                .is_none()
        );
        assert!(
            server
                .store
                .inventory(&a.tenant.id, &agent_a)
                .await
                .unwrap()
                .is_some()
        );

        // Tokens of other kinds do not work as agent tokens, nor agent tokens for enrolment.
        for token in [a.admin_token.expose(), a.enrol_token.expose()] {
            let answer = server
                .post("/api/agents/heartbeat", token, &heartbeat)
                .await;
            assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
        }
        let body = json!({"tenant_id": a.tenant.id, "hostname": "h2", "machine_id": null});
        let answer = server.post("/api/agents/register", &token_a, &body).await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    }
}

/// Tenant A's admin token can neither see nor change anything of tenant B through the admin
/// API: B's agents, inventory, metrics, alerts and tokens are not found, as if they did not
/// exist. (The software search part needs the inventory work; see `admin_software_is_isolated`.)
#[tokio::test]
async fn admin_api_is_isolated() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let a = server.tenant("tenant-a").await;
        let b = server.tenant("tenant-b").await;
        let (agent_a, token_a) = crate::admin::agent(&server, &a, "host-a", "Linux").await;
        let (agent_b, token_b) = crate::admin::agent(&server, &b, "host-b", "Linux").await;
        for (agent, token) in [(&agent_a, &token_a), (&agent_b, &token_b)] {
            crate::admin::post_metrics(&server, token, agent, &[(60, 99.0, 99.0, 99.0)]).await;
            crate::admin::post_inventory(&server, token, agent, &[("openssl", "3.0.2")]).await;
        }
        let admin_a = a.admin_token.expose();

        // Lists show only A's.
        let (_, agents) = server.get("/api/admin/agents", admin_a).await;
        assert_eq!(agents["total"], 1);
        assert_eq!(agents["agents"][0]["id"], agent_a.as_str());
        let (_, alerts) = server.get("/api/admin/alerts", admin_a).await;
        assert_eq!(alerts["total_agents"], 1);
        assert!(
            alerts["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .all(|x| x["agent_id"] == agent_a.as_str())
        );
        let (_, tokens) = server.get("/api/admin/tokens", admin_a).await;
        let (_, tokens_b) = server
            .get("/api/admin/tokens", b.admin_token.expose())
            .await;
        assert_eq!(tokens["total"], 3);
        let ids_b: Vec<&Value> = tokens_b["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| &t["id"])
            .collect();
        assert!(
            tokens["tokens"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| !ids_b.contains(&&t["id"]))
        );

        // B's agent by id: not found, like an agent that does not exist.
        for suffix in ["", "/inventory", "/inventory?history", "/metrics"] {
            let answer = server
                .get(&format!("/api/admin/agents/{agent_b}{suffix}"), admin_a)
                .await;
            assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
            let (status, _) = server
                .get(
                    &format!("/api/admin/agents/{agent_b}{suffix}"),
                    b.admin_token.expose(),
                )
                .await;
            assert!(
                status == StatusCode::OK || suffix.contains("history"),
                "{suffix}"
            );
        }

        // B's tokens cannot be revoked by A, and still work.
        for token in tokens_b["tokens"].as_array().unwrap() {
            let id = token["id"].as_str().unwrap();
            let answer = server
                .delete(&format!("/api/admin/tokens/{id}"), admin_a)
                .await;
            assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
        }
        let (status, _) = server
            .get("/api/admin/agents", b.admin_token.expose())
            .await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = server
            .post(
                "/api/agents/heartbeat",
                &token_b,
                &heartbeat(&agent_b, None),
            )
            .await;
        assert_eq!(status, StatusCode::OK);
        let (_, live) = server
            .get("/api/admin/tokens?revoked=true", b.admin_token.expose())
            .await;
        assert_eq!(live["total"], 0);

        // A token created by A belongs to A.
        let (status, created) = server
            .post("/api/admin/tokens", admin_a, &json!({"kind": "enrol"}))
            .await;
        assert_eq!(status, StatusCode::CREATED);
        let register = json!({"tenant_id": b.tenant.id, "hostname": "x", "machine_id": "x"});
        let answer = server
            .post(
                "/api/agents/register",
                created["token"].as_str().unwrap(),
                &register,
            )
            .await;
        assert_error(&answer, StatusCode::FORBIDDEN, "forbidden");
    }
}

/// Needs the inventory work (`Store::software_search`): fails until it is merged.
#[tokio::test]
async fn admin_software_is_isolated() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let a = server.tenant("tenant-a").await;
        let b = server.tenant("tenant-b").await;
        let (agent_a, token_a) = crate::admin::agent(&server, &a, "host-a", "Linux").await;
        let (agent_b, token_b) = crate::admin::agent(&server, &b, "host-b", "Linux").await;
        crate::admin::post_inventory(&server, &token_a, &agent_a, &[("openssl", "3.0.2")]).await;
        crate::admin::post_inventory(&server, &token_b, &agent_b, &[("openssl", "3.0.2")]).await;
        let (status, hits) = server
            .get("/api/admin/software?name=openssl", a.admin_token.expose())
            .await;
        assert_eq!(status, StatusCode::OK, "{hits}");
        assert_eq!(hits["total"], 1, "{hits}");
        assert_eq!(hits["hits"][0]["agent_id"], agent_a.as_str());
    }
}

/// Commands and locks: tenant A's admin token and agents reach nothing of tenant B's, and a
/// tenant-scoped lock of A does not hold B back.
#[tokio::test]
async fn commands_and_locks_are_isolated() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let a = server.tenant("tenant-a").await;
        let b = server.tenant("tenant-b").await;
        let (agent_a, token_a) = crate::admin::agent(&server, &a, "host-a", "Linux").await;
        let (agent_b, token_b) = crate::admin::agent(&server, &b, "host-b", "Linux").await;
        let admin_a = a.admin_token.expose();
        let admin_b = b.admin_token.expose();

        // Each tenant signs with its own key.
        let key = |tenant: &str| {
            let server = &server;
            let tenant = tenant.to_owned();
            async move {
                muster_server::commands::tenant_key(&server.store, &tenant)
                    .await
                    .unwrap()
                    .public_key
            }
        };
        assert_ne!(key(&a.tenant.id).await, key(&b.tenant.id).await);

        // A cannot send a command to B's agent, by id or by filter.
        let answer = server
            .post(
                "/api/admin/commands",
                admin_a,
                &json!({"agent_id": agent_b, "type": "builtin", "command": "scan_now"}),
            )
            .await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
        let answer = server
            .post(
                "/api/admin/commands",
                admin_a,
                &json!({"filter": {"hostname": "host-*"}, "type": "builtin", "command": "scan_now"}),
            )
            .await;
        assert_eq!(answer.0, StatusCode::CREATED, "{}", answer.1);
        assert_eq!(answer.1["target_count"], 1);
        assert_eq!(answer.1["targets"][0]["agent_id"], agent_a.as_str());
        let id = answer.1["id"].as_i64().unwrap();

        // B sees nothing of it, cannot cancel it, its agent cannot lease or report on it.
        let (_, list) = server.get("/api/admin/commands", admin_b).await;
        assert_eq!(list["total"], 0);
        let path = format!("/api/admin/commands/{id}");
        assert_error(
            &server.get(&path, admin_b).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
        assert_error(
            &server.delete(&path, admin_b).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
        let (_, pending) = server.get("/api/commands/pending", &token_b).await;
        assert_eq!(pending, json!({"commands": [], "cancel": []}));
        let (_, pending) = server.get("/api/commands/pending", &token_a).await;
        assert_eq!(pending["commands"][0]["id"], id);
        let answer = server
            .post(
                "/api/commands/status",
                &token_b,
                &json!({"command_id": id, "status": "succeeded"}),
            )
            .await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
        // A's command is untouched.
        let (_, shown) = server.get(&path, admin_a).await;
        assert_eq!(shown["targets"][0]["state"], "leased");

        // Tenant-scoped locks are per tenant; B cannot release A's.
        let lock = json!({"resource": "reboot", "ttl_s": 60, "scope": "tenant"});
        let (code, held) = server.post("/api/locks/create", &token_a, &lock).await;
        assert_eq!(code, StatusCode::CREATED, "{held}");
        let (code, other) = server.post("/api/locks/create", &token_b, &lock).await;
        assert_eq!(code, StatusCode::CREATED, "{other}");
        let lock_path = format!("/api/locks/{}", held["id"].as_str().unwrap());
        assert_error(
            &server.delete(&lock_path, &token_b).await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
        assert_error(
            &server.delete(&lock_path, admin_a).await,
            StatusCode::UNAUTHORIZED,
            "unauthorized",
        );
        let (code, _) = server.delete(&lock_path, &token_a).await;
        assert_eq!(code, StatusCode::NO_CONTENT);

        // An agent token is not an admin token, and the other way round.
        let answer = server.get("/api/admin/commands", &token_a).await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
        let answer = server.get("/api/commands/pending", admin_a).await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    }
}
