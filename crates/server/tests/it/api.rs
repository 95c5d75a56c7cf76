//! The agents' API end to end: register, heartbeat, inventory in every mode, metrics, and the
//! seed's flat system report.

use jiff::Timestamp;
use muster_proto::api::InventoryUpload;
use muster_proto::data::{Memory, SystemMetrics};
use muster_proto::inventory::inventory_hash;
use muster_proto::{
    DaemonReport, FunctionData, FunctionReport, HostIdentity, Worker, WorkerReport,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::support::{TestServer, assert_error, backends, public_key};

fn memory(total: u64) -> FunctionReport {
    FunctionReport::new(FunctionData::Memory(vec![Memory {
        total_bytes: total,
        swap_total_bytes: 0,
    }]))
}

pub fn report(agent_id: &str, workers: Vec<WorkerReport>) -> DaemonReport {
    let mut report = DaemonReport::new(
        HostIdentity {
            hostname: "web-1".into(),
            machine_id: Some("m-1".into()),
        },
        workers,
    );
    report.agent_id = Some(agent_id.to_owned());
    report
}

pub fn metrics(cpu: f64) -> SystemMetrics {
    SystemMetrics {
        cpu_usage: Some(cpu),
        memory_usage: 40.0,
        disk_usage: Some(70.0),
        load_1: None,
        load_5: None,
        load_15: None,
        memory_total_bytes: 1 << 30,
        memory_available_bytes: 1 << 29,
        swap_total_bytes: 0,
        swap_used_bytes: 0,
        swap_usage: 0.0,
        net_rx_bytes: 0,
        net_tx_bytes: 0,
        net_rx_bytes_per_s: None,
        net_tx_bytes_per_s: None,
        disk_read_bytes: 0,
        disk_write_bytes: 0,
        disk_read_bytes_per_s: None,
        disk_write_bytes_per_s: None,
        interval_s: Some(60.0),
    }
}

fn to_json(upload: &InventoryUpload) -> Value {
    serde_json::to_value(upload).unwrap()
}

#[tokio::test]
async fn health_and_readiness() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let client = crate::support::client();
        for path in ["/healthz", "/readyz"] {
            let (status, body) = crate::support::send(client.get(server.url(path))).await;
            assert_eq!(status, StatusCode::OK, "{path}: {body}");
        }
    }
}

#[tokio::test]
async fn registration_is_idempotent_and_issues_a_fresh_token() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let body = json!({"hostname": "web-1", "machine_id": "m-1", "public_key": public_key(1)});
        let (id, first) = server.register(&tenant, body.clone()).await;
        let (again, second) = server.register(&tenant, body).await;
        assert_eq!(id, again);
        assert_ne!(first, second);
        assert!(second.starts_with("mst_agent_"));

        // The earlier token is revoked: an agent has one live token.
        let heartbeat = json!({
            "agent_id": id, "datetime": Timestamp::now(), "agent_version": "0.1.0", "uptime_s": 5,
            "health": {"scans_completed": 1, "errors": 0, "spool_items": 0, "spool_bytes": 0,
                       "dropped_reports": 0, "queue_depth": 0, "last_inventory": null,
                       "last_telemetry": null}
        });
        let answer = server
            .post("/api/agents/heartbeat", &first, &heartbeat)
            .await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
        let (status, answer) = server
            .post("/api/agents/heartbeat", &second, &heartbeat)
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        assert_eq!(answer["pending_commands"], 0);

        server
            .heartbeat_stored(&tenant.tenant.id, &id, "0.1.0")
            .await;
        let agent = server
            .store
            .agent(&tenant.tenant.id, &id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(agent.hostname, "web-1");
        assert_eq!(agent.agent_version.as_deref(), Some("0.1.0"));
        assert!(agent.last_seen.is_some());
        assert!(agent.health.unwrap().contains("\"scans_completed\":1"));

        // Seed agents send no key: the machine id identifies them, else the hostname.
        let (a, _) = server
            .register(&tenant, json!({"hostname": "old-1", "machine_id": "m-9"}))
            .await;
        let (b, _) = server
            .register(&tenant, json!({"hostname": "renamed", "machine_id": "m-9"}))
            .await;
        assert_eq!(a, b);
        let (c, _) = server
            .register(&tenant, json!({"hostname": "nokey", "machine_id": null}))
            .await;
        let (d, _) = server
            .register(&tenant, json!({"hostname": "nokey", "machine_id": null}))
            .await;
        assert_eq!(c, d);
        assert_ne!(a, c);
        assert_eq!(
            server
                .store
                .list_agents(&tenant.tenant.id)
                .await
                .unwrap()
                .len(),
            3
        );

        let bad = json!({"tenant_id": tenant.tenant.id, "hostname": "x", "machine_id": null,
                         "public_key": "not base64"});
        let answer = server
            .post("/api/agents/register", tenant.enrol_token.expose(), &bad)
            .await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    }
}

#[tokio::test]
async fn inventory_full_delta_unchanged_and_conflicts() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let (id, token) = server
            .register(
                &tenant,
                json!({"hostname": "web-1", "machine_id": "m-1", "public_key": public_key(1)}),
            )
            .await;
        let post = |body: Value| {
            let server = &server;
            let token = token.clone();
            async move { server.post("/api/system/report", &token, &body).await }
        };

        // Full.
        let dmi = FunctionReport::unavailable("dmi", "none");
        let dpkg = FunctionReport::new(FunctionData::Dpkg(vec![]));
        let full = report(
            &id,
            vec![
                WorkerReport::new(Worker::Hardware, vec![memory(1), dmi.clone()]),
                WorkerReport::new(Worker::Software, vec![dpkg]),
            ],
        );
        let hash = inventory_hash(&full);
        let upload = to_json(&InventoryUpload::Full {
            hash: hash.clone(),
            report: full.clone(),
        });
        let (status, ack) = post(upload.clone()).await;
        assert_eq!(status, StatusCode::OK, "{ack}");
        assert_eq!(ack["hash"], hash.as_str());
        assert_eq!(ack["duplicate"], false);
        assert_eq!(ack["report_id"], full.report_id.to_string());

        // The same report again (a retry after a lost answer) is stored once.
        let (status, ack) = post(upload).await;
        assert_eq!(status, StatusCode::OK, "{ack}");
        assert_eq!(ack["duplicate"], true);
        assert_eq!(ack["hash"], hash.as_str());

        // Delta: memory changed, dpkg gone.
        let delta = report(
            &id,
            vec![WorkerReport::new(Worker::Hardware, vec![memory(2)])],
        );
        let expected = report(
            &id,
            vec![WorkerReport::new(Worker::Hardware, vec![memory(2), dmi])],
        );
        let new_hash = inventory_hash(&expected);
        let (status, ack) = post(to_json(&InventoryUpload::Delta {
            base_hash: hash.clone(),
            hash: new_hash.clone(),
            report: delta.clone(),
            removed: vec!["software/dpkg".into()],
        }))
        .await;
        assert_eq!(status, StatusCode::OK, "{ack}");
        assert_eq!(
            ack["hash"],
            new_hash.as_str(),
            "the server's merge agrees with the agent"
        );
        let stored = server
            .store
            .inventory(&tenant.tenant.id, &id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.hash, new_hash);
        let stored: DaemonReport = serde_json::from_str(&stored.report).unwrap();
        assert_eq!(inventory_hash(&stored), new_hash);
        assert!(stored.function("dpkg").is_none());

        // A delta on a base the server does not hold: 409, nothing stored.
        let stale = report(
            &id,
            vec![WorkerReport::new(Worker::Hardware, vec![memory(3)])],
        );
        let answer = post(to_json(&InventoryUpload::Delta {
            base_hash: hash.clone(),
            hash: "whatever".into(),
            report: stale.clone(),
            removed: vec![],
        }))
        .await;
        assert_error(&answer, StatusCode::CONFLICT, "conflict");

        // Unchanged: on the held hash it is acknowledged, on another it is 409.
        let unchanged = |hash: &str| {
            to_json(&InventoryUpload::Unchanged {
                report_id: Uuid::now_v7(),
                agent_id: id.clone(),
                datetime: Timestamp::now(),
                hash: hash.to_owned(),
            })
        };
        let (status, ack) = post(unchanged(&new_hash)).await;
        assert_eq!(status, StatusCode::OK, "{ack}");
        assert_eq!(ack["hash"], new_hash.as_str());
        let answer = post(unchanged(&hash)).await;
        assert_error(&answer, StatusCode::CONFLICT, "conflict");

        // Full, delta, unchanged: three reports stored; the conflicts left nothing behind, so the
        // refused delta's id can be sent again in full.
        assert_eq!(
            server
                .store
                .report_count(&tenant.tenant.id, &id)
                .await
                .unwrap(),
            3
        );
        let (status, ack) = post(to_json(&InventoryUpload::Full {
            hash: inventory_hash(&stale),
            report: stale.clone(),
        }))
        .await;
        assert_eq!(status, StatusCode::OK, "{ack}");
        assert_eq!(ack["duplicate"], false);
    }
}

#[tokio::test]
async fn metrics_are_stored_once_per_report_id() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let (id, token) = server
            .register(
                &tenant,
                json!({"hostname": "web-1", "machine_id": "m-1", "public_key": public_key(1)}),
            )
            .await;
        let t0 = Timestamp::from_second(1_700_000_000).unwrap();
        let t1 = Timestamp::from_second(1_700_000_060).unwrap();
        let body = json!({
            "report_id": Uuid::now_v7(), "agent_id": id,
            "samples": [{"datetime": t0, "metrics": metrics(10.0)},
                        {"datetime": t1, "metrics": metrics(20.0)}]
        });
        let (status, ack) = server.post("/api/metrics/report", &token, &body).await;
        assert_eq!(status, StatusCode::OK, "{ack}");
        assert_eq!(ack["accepted"], 2);
        assert_eq!(ack["duplicate"], false);
        let (status, ack) = server.post("/api/metrics/report", &token, &body).await;
        assert_eq!(status, StatusCode::OK, "{ack}");
        assert_eq!(ack["accepted"], 0);
        assert_eq!(ack["duplicate"], true);

        let rows = server
            .store
            .metrics(&tenant.tenant.id, &id, 0, i64::MAX)
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].sampled_at, t0.as_second());
        assert_eq!(rows[1].cpu_usage, Some(20.0));
        let one = server
            .store
            .metrics(&tenant.tenant.id, &id, t1.as_second(), i64::MAX)
            .await
            .unwrap();
        assert_eq!(one.len(), 1);
    }
}

#[tokio::test]
async fn the_seed_flat_report_and_a_bare_daemon_report_are_stored_as_inventory() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let (id, token) = server
            .register(
                &tenant,
                json!({"hostname": "SERVER-01", "machine_id": null}),
            )
            .await;
        let seed = json!({
            "hostname": "SERVER-01",
            "platform": "Windows 10",
            "cpu_info": "Intel Core i7-8700K",
            "memory_total": 16777216,
            "disk_info": [{"device": "C:", "total": 512}],
            "network_info": [{"name": "eth0"}],
            "installed_software": [{"name": "7-Zip", "version": "23.01"}],
            "running_processes": [{"pid": 4, "name": "System"}],
            "system_metrics": {"cpu_usage": 15.2, "memory_usage": 45.8, "disk_usage": 67.3}
        });
        let (status, ack) = server.post("/api/system/report", &token, &seed).await;
        assert_eq!(status, StatusCode::OK, "{ack}");
        let stored = server
            .store
            .inventory(&tenant.tenant.id, &id)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(ack["hash"], stored.hash.as_str());
        let report: DaemonReport = serde_json::from_str(&stored.report).unwrap();
        assert_eq!(report.host.hostname, "SERVER-01");
        assert_eq!(report.function("installed_software").unwrap().data.len(), 1);
        let rows = server
            .store
            .metrics(&tenant.tenant.id, &id, 0, i64::MAX)
            .await
            .unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].cpu_usage, Some(15.2));
        assert_eq!(rows[0].disk_usage, Some(67.3));

        // A bare DaemonReport: its inventory replaces the stored one, its telemetry becomes samples.
        let bare = report_with_telemetry(&id);
        let (status, ack) = server
            .post(
                "/api/system/report",
                &token,
                &serde_json::to_value(&bare).unwrap(),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{ack}");
        let mut without_telemetry = bare.clone();
        without_telemetry
            .worker_reports
            .retain(|w| w.name != Worker::Telemetry);
        assert_eq!(ack["hash"], inventory_hash(&without_telemetry).as_str());
        let rows = server
            .store
            .metrics(&tenant.tenant.id, &id, 0, i64::MAX)
            .await
            .unwrap();
        assert_eq!(rows.len(), 2);

        let answer = server
            .post("/api/system/report", &token, &json!({"something": "else"}))
            .await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
    }
}

fn report_with_telemetry(id: &str) -> DaemonReport {
    report(
        id,
        vec![
            WorkerReport::new(Worker::Hardware, vec![memory(8)]),
            WorkerReport::new(
                Worker::Telemetry,
                vec![FunctionReport::new(FunctionData::SystemMetrics(vec![
                    metrics(5.0),
                ]))],
            ),
        ],
    )
}
