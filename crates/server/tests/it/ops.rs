//! Operations: the per-agent rate limit, `/metrics`, retention, the configuration file.

use std::num::NonZeroU32;
use std::process::Command;
use std::time::Duration;

use jiff::Timestamp;
use muster_server::config::Retention;
use muster_server::{Limits, ServerConfig};
use reqwest::StatusCode;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::api::metrics;
use crate::support::{TestServer, assert_error, backends, client, heartbeat, public_key};

#[tokio::test]
async fn an_agent_over_its_rate_is_answered_429_with_retry_after_and_others_are_not() {
    for backend in backends() {
        let limits = Limits {
            agent_requests_per_minute: NonZeroU32::new(6),
            agent_burst: NonZeroU32::new(3).unwrap(),
            ..Limits::default()
        };
        let server = TestServer::start_with_on(&backend, limits).await;
        let tenant = server.tenant("acme").await;
        let (a, a_token) = server
            .register(
                &tenant,
                json!({"hostname": "a", "public_key": public_key(1)}),
            )
            .await;
        let (b, b_token) = server
            .register(
                &tenant,
                json!({"hostname": "b", "public_key": public_key(2)}),
            )
            .await;
        for _ in 0..3 {
            let (status, answer) = server
                .post("/api/agents/heartbeat", &a_token, &heartbeat(&a, None))
                .await;
            assert_eq!(status, StatusCode::OK, "{answer}");
        }
        let response = client()
            .post(server.url("/api/agents/heartbeat"))
            .bearer_auth(&a_token)
            .header("content-type", "application/json")
            .body(heartbeat(&a, None).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::TOO_MANY_REQUESTS);
        // 6 a minute: the next one is allowed within 10 s.
        let retry_after: u64 = response.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=10).contains(&retry_after), "{retry_after}");
        let body: Value = serde_json::from_slice(&response.bytes().await.unwrap()).unwrap();
        assert_eq!(body["error"]["code"], "rate_limited");

        let (status, answer) = server
            .post("/api/agents/heartbeat", &b_token, &heartbeat(&b, None))
            .await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        // A bad token is 401, not 429: the limit counts authenticated agents only.
        let answer = server
            .post("/api/agents/heartbeat", "mst_agent_x", &heartbeat(&a, None))
            .await;
        assert_error(&answer, StatusCode::UNAUTHORIZED, "unauthorized");
    }
}

/// The value of the sample `name` (with its labels, as printed) in a Prometheus text page.
fn sample(page: &str, name: &str) -> Option<f64> {
    page.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

#[tokio::test]
async fn metrics_count_requests_reports_and_agents() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let (id, token) = server
            .register(
                &tenant,
                json!({"hostname": "a", "public_key": public_key(1)}),
            )
            .await;
        let (status, _) = server
            .post("/api/agents/heartbeat", &token, &heartbeat(&id, None))
            .await;
        assert_eq!(status, StatusCode::OK);
        let body = json!({
            "report_id": Uuid::now_v7(), "agent_id": id,
            "samples": [{"datetime": Timestamp::now(), "metrics": metrics(10.0)}]
        });
        let (status, _) = server.post("/api/metrics/report", &token, &body).await;
        assert_eq!(status, StatusCode::OK);

        let response = client().get(server.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let page = response.text().await.unwrap();
        assert_eq!(
            sample(
                &page,
                r#"muster_http_requests_total{method="POST",route="/api/agents/heartbeat",status="200"}"#
            ),
            Some(1.0),
            "{page}"
        );
        assert_eq!(
            sample(&page, r#"muster_reports_ingested_total{kind="metrics"}"#),
            Some(1.0),
            "{page}"
        );
        assert_eq!(sample(&page, "muster_agents"), Some(1.0), "{page}");
        assert_eq!(sample(&page, "muster_agents_online"), Some(1.0), "{page}");
        assert!(
            page.contains(r#"muster_http_request_duration_seconds_bucket{le="#),
            "{page}"
        );
    }
}

#[tokio::test]
async fn metrics_move_to_their_own_listener_when_asked() {
    let dir = tempfile::tempdir().unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let metrics_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let main = format!("http://{}", listener.local_addr().unwrap());
    let side = format!("http://{}", metrics_listener.local_addr().unwrap());
    let config = ServerConfig {
        listen: listener.local_addr().unwrap(),
        database_url: dir.path().join("m.db").display().to_string(),
        ..ServerConfig::default()
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(muster_server::run_with_metrics(
        config,
        listener,
        Some(metrics_listener),
        async {
            let _ = stopped.await;
        },
    ));
    let mut ready = false;
    for _ in 0..100 {
        if let Ok(r) = client().get(format!("{main}/healthz")).send().await {
            ready = r.status() == StatusCode::OK;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready);
    let on_side = client()
        .get(format!("{side}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(on_side.status(), StatusCode::OK);
    assert!(on_side.text().await.unwrap().contains("muster_agents "));
    let on_main = client()
        .get(format!("{main}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(on_main.status(), StatusCode::NOT_FOUND);
    stop.send(()).unwrap();
    server.await.unwrap().unwrap();
}

#[tokio::test]
async fn retention_deletes_old_samples_and_report_records_only() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let (id, token) = server
            .register(
                &tenant,
                json!({"hostname": "a", "public_key": public_key(1)}),
            )
            .await;
        let now = Timestamp::now().as_second();
        let day = 24 * 60 * 60;
        let at = |days_ago: i64| Timestamp::from_second(now - days_ago * day).unwrap();
        let old_report = Uuid::now_v7();
        let body = json!({
            "report_id": old_report, "agent_id": id,
            "samples": [{"datetime": at(40), "metrics": metrics(1.0)},
                        {"datetime": at(35), "metrics": metrics(2.0)},
                        {"datetime": at(1), "metrics": metrics(3.0)}]
        });
        let (status, _) = server.post("/api/metrics/report", &token, &body).await;
        assert_eq!(status, StatusCode::OK);

        let purged = muster_server::ops::purge(&server.store, Retention::default(), now)
            .await
            .unwrap();
        assert_eq!(purged.metrics, 2);
        // The report itself was received now: its record stays.
        assert_eq!(purged.reports, 0);
        let left = server
            .store
            .metrics(&tenant.tenant.id, &id, 0, i64::MAX)
            .await
            .unwrap();
        assert_eq!(left.len(), 1);
        assert_eq!(left[0].cpu_usage, Some(3.0));

        // Thirty-one days later the record goes, and its last sample with it.
        let purged = muster_server::ops::purge(&server.store, Retention::default(), now + 31 * day)
            .await
            .unwrap();
        assert_eq!(
            purged,
            muster_server::ops::Purged {
                metrics: 1,
                reports: 1
            }
        );
        assert_eq!(
            server
                .store
                .report_count(&tenant.tenant.id, &id)
                .await
                .unwrap(),
            0
        );
    }
}

fn server_binary() -> Command {
    Command::new(env!("CARGO_BIN_EXE_muster-server"))
}

#[test]
fn a_configuration_file_sets_the_database_and_a_bad_one_is_refused_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    let database = dir.path().join("from-file.db");
    std::fs::write(
        &config,
        format!(
            "[server]\ndatabase_url = \"sqlite://{}\"\n",
            database.display()
        ),
    )
    .unwrap();
    let out = server_binary()
        .args(["admin", "--config"])
        .arg(&config)
        .args(["tenant", "create", "acme"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(database.exists(), "the file's database_url was not used");

    std::fs::write(&config, "[server]\nlisten = \"127.0.0.1:0\"\nport = 1\n").unwrap();
    let out = server_binary()
        .args(["serve", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("server.toml"), "{stderr}");
    assert!(stderr.contains("unknown field `port`"), "{stderr}");
}
