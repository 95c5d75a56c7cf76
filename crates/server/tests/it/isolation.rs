//! A token of tenant A can neither see nor change anything of tenant B.

use muster_proto::api::InventoryUpload;
use muster_proto::inventory::inventory_hash;
use reqwest::StatusCode;
use serde_json::json;
use uuid::Uuid;

use crate::api::{metrics, report};
use crate::support::{TestServer, assert_error, backends, public_key};

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
        let heartbeat = json!({
            "agent_id": agent_a, "datetime": jiff::Timestamp::now(), "agent_version": "x",
            "uptime_s": 1, "health": {"scans_completed": 0, "errors": 0, "spool_items": 0,
            "spool_bytes": 0, "dropped_reports": 0, "queue_depth": 0, "last_inventory": null,
            "last_telemetry": null}
        });
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
