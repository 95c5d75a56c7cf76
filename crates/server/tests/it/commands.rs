//! Remote commands through the real surface: the admin API creates, agents lease (signed),
//! report, take locks; cancellation, lease expiry, the long poll, and several replicas on one
//! PostgreSQL database.

use std::time::{Duration, Instant};

use base64::Engine as _;
use muster_proto::api::Command;
use muster_server::Limits;
use muster_server::admin::CreatedTenant;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{Backend, TestServer, assert_error, backends, client, heartbeat, send};

/// Registers an agent; its id, token and the tenant's command signing key from the answer.
async fn enrol(
    server: &TestServer,
    tenant: &CreatedTenant,
    host: &str,
) -> (String, String, String) {
    let body = json!({"tenant_id": tenant.tenant.id, "hostname": host, "machine_id": host,
        "platform": "Linux", "os_name": "debian"});
    let (status, answer) = server
        .post("/api/agents/register", tenant.enrol_token.expose(), &body)
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    (
        answer["agent_id"].as_str().unwrap().to_owned(),
        answer["agent_token"].as_str().unwrap().to_owned(),
        answer["command_signing_key"].as_str().unwrap().to_owned(),
    )
}

async fn create(server: &TestServer, tenant: &CreatedTenant, body: Value) -> (StatusCode, Value) {
    server
        .post("/api/admin/commands", tenant.admin_token.expose(), &body)
        .await
}

/// Creates an `exec` command for `agents`; its id.
async fn create_for(server: &TestServer, tenant: &CreatedTenant, agents: &[&str]) -> i64 {
    let (status, answer) = create(
        server,
        tenant,
        json!({"agent_ids": agents, "type": "exec", "command": "/bin/echo",
            "parameters": {"args": ["hi"]}, "timeout_s": 30}),
    )
    .await;
    assert_eq!(status, StatusCode::CREATED, "{answer}");
    answer["id"].as_i64().unwrap()
}

async fn pending(server: &TestServer, token: &str) -> (Vec<Command>, Vec<i64>) {
    let (status, answer) = server.get("/api/commands/pending", token).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    let commands: Vec<Command> = serde_json::from_value(answer["commands"].clone()).unwrap();
    let cancel: Vec<i64> = serde_json::from_value(answer["cancel"].clone()).unwrap();
    (commands, cancel)
}

async fn status(server: &TestServer, token: &str, body: Value) -> (StatusCode, Value) {
    server.post("/api/commands/status", token, &body).await
}

async fn pending_count(server: &TestServer, agent: &str, token: &str) -> u64 {
    let (code, answer) = server
        .post("/api/agents/heartbeat", token, &heartbeat(agent, None))
        .await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    answer["pending_commands"].as_u64().unwrap()
}

async fn show(server: &TestServer, tenant: &CreatedTenant, id: i64) -> Value {
    let (code, answer) = server
        .get(
            &format!("/api/admin/commands/{id}"),
            tenant.admin_token.expose(),
        )
        .await;
    assert_eq!(code, StatusCode::OK, "{answer}");
    answer
}

fn verify(key_b64: &str, command: &Command, agent_id: &str) -> bool {
    let b64 = base64::engine::general_purpose::STANDARD;
    let key = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ED25519,
        b64.decode(key_b64).unwrap(),
    );
    let signature = b64.decode(command.signature.as_deref().unwrap()).unwrap();
    key.verify(&command.signing_payload(agent_id), &signature)
        .is_ok()
}

#[tokio::test]
async fn a_command_is_leased_signed_reported_and_its_results_shown() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let (agent, token, key) = enrol(&server, &tenant, "web-1").await;
        assert_eq!(pending_count(&server, &agent, &token).await, 0);

        let id = create_for(&server, &tenant, &[&agent]).await;
        assert_eq!(pending_count(&server, &agent, &token).await, 1);
        let (commands, cancel) = pending(&server, &token).await;
        assert!(cancel.is_empty());
        assert_eq!(commands.len(), 1);
        let command = &commands[0];
        assert_eq!(command.id, id);
        assert_eq!(command.kind, "exec");
        assert_eq!(command.parameters, json!({"args": ["hi"]}));
        assert_eq!(command.timeout_s, Some(30));
        assert!(
            verify(&key, command, &agent),
            "the signature does not verify"
        );
        assert!(!verify(&key, command, "another-agent"));
        let mut tampered = command.clone();
        tampered.command = "/bin/rm".into();
        assert!(!verify(&key, &tampered, &agent));

        // Leased: not handed out again, not counted as pending.
        assert!(pending(&server, &token).await.0.is_empty());
        assert_eq!(pending_count(&server, &agent, &token).await, 0);
        assert_eq!(
            show(&server, &tenant, id).await["targets"][0]["state"],
            "leased"
        );

        for step in [
            json!({"command_id": id, "status": "received"}),
            json!({"command_id": id, "status": "running", "started_at": "2026-01-01T00:00:00Z"}),
            json!({"command_id": id, "status": "succeeded", "exit_code": 0, "stdout": "hi\n",
                "stderr": "", "stdout_truncated": true, "finished_at": "2026-01-01T00:00:02Z"}),
        ] {
            let answer = status(&server, &token, step).await;
            assert_eq!(answer.0, StatusCode::NO_CONTENT, "{}", answer.1);
        }
        let shown = show(&server, &tenant, id).await;
        let target = &shown["targets"][0];
        assert_eq!(target["agent_id"], agent.as_str());
        assert_eq!(target["hostname"], "web-1");
        assert_eq!(target["state"], "succeeded");
        assert_eq!(target["terminal"], true);
        assert_eq!(target["exit_code"], 0);
        assert_eq!(target["stdout"], "hi\n");
        assert_eq!(target["stdout_truncated"], true);
        assert_eq!(target["stderr_truncated"], false);
        assert_eq!(target["started_at"], "2026-01-01T00:00:00Z");
        assert_eq!(target["finished_at"], "2026-01-01T00:00:02Z");
        assert_eq!(target["attempts"], 1);
        assert_eq!(shown["states"], json!({"succeeded": 1}));

        // The public key agents get is the one the operator's command prints.
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_muster-server"))
            .args(["admin", "--database-url", &server.database_url])
            .args(["tenant", "signing-key", "acme"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8(out.stdout).unwrap().trim(), key);
    }
}

#[tokio::test]
async fn an_unacknowledged_lease_runs_out_and_the_command_is_delivered_again() {
    for backend in backends() {
        let limits = Limits {
            command_lease: Duration::from_secs(1),
            ..Limits::default()
        };
        let server = TestServer::start_with_on(&backend, limits).await;
        let tenant = server.tenant("acme").await;
        let (agent, token, _) = enrol(&server, &tenant, "h").await;
        let id = create_for(&server, &tenant, &[&agent]).await;
        assert_eq!(pending(&server, &token).await.0.len(), 1);
        assert!(pending(&server, &token).await.0.is_empty());
        // A 1 s lease ends at the next whole second after 1 s: within 2 s.
        tokio::time::sleep(Duration::from_millis(2050)).await;
        // The lease ran out: pending again (counted), and delivered again.
        assert_eq!(pending_count(&server, &agent, &token).await, 1);
        let again = pending(&server, &token).await.0;
        assert_eq!(again.iter().map(|c| c.id).collect::<Vec<_>>(), [id]);
        assert_eq!(
            show(&server, &tenant, id).await["targets"][0]["attempts"],
            2
        );

        // Acknowledged: the lease no longer matters (the job, run later, leaves it alone).
        let answer = status(
            &server,
            &token,
            json!({"command_id": id, "status": "received"}),
        )
        .await;
        assert_eq!(answer.0, StatusCode::NO_CONTENT);
        let later = jiff::Timestamp::now().as_second() + 600;
        assert_eq!(
            server.store.sweep_commands(later).await.unwrap().returned,
            0
        );
        assert!(pending(&server, &token).await.0.is_empty());

        // The job puts a run-out lease back to pending; a late acknowledgement is accepted.
        let second = create_for(&server, &tenant, &[&agent]).await;
        assert_eq!(pending(&server, &token).await.0.len(), 1);
        let later = jiff::Timestamp::now().as_second() + 5;
        let swept = server.store.sweep_commands(later).await.unwrap();
        assert_eq!(swept.returned, 1);
        assert_eq!(
            show(&server, &tenant, second).await["targets"][0]["state"],
            "pending"
        );
        let answer = status(
            &server,
            &token,
            json!({"command_id": second, "status": "received"}),
        )
        .await;
        assert_eq!(answer.0, StatusCode::NO_CONTENT, "{}", answer.1);
    }
}

#[tokio::test]
async fn expired_commands_are_never_delivered_and_the_job_marks_them() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let (agent, token, _) = enrol(&server, &tenant, "h").await;
        let soon = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60);
        let (code, answer) = create(
            &server,
            &tenant,
            json!({"agent_id": agent, "type": "builtin", "command": "scan_now",
                "expires_at": soon}),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "{answer}");
        let id = answer["id"].as_i64().unwrap();
        // A later one is not yet due.
        let (code, answer) = create(
            &server,
            &tenant,
            json!({"agent_id": agent, "type": "builtin", "command": "scan_now",
                "scheduled_for": soon}),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "{answer}");
        let swept = server
            .store
            .sweep_commands(soon.as_second() + 1)
            .await
            .unwrap();
        assert_eq!(swept.expired, 1);
        let shown = show(&server, &tenant, id).await;
        assert_eq!(shown["targets"][0]["state"], "expired");
        // Neither the expired nor the scheduled one is delivered now.
        assert!(pending(&server, &token).await.0.is_empty());
        assert_eq!(pending_count(&server, &agent, &token).await, 0);
    }
}

#[tokio::test]
async fn cancelling_before_delivery_drops_it_and_after_asks_the_agent() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let (a, a_token, _) = enrol(&server, &tenant, "a").await;
        let (b, b_token, _) = enrol(&server, &tenant, "b").await;
        let id = create_for(&server, &tenant, &[&a, &b]).await;
        assert_eq!(pending(&server, &a_token).await.0.len(), 1);

        let (code, answer) = server
            .delete(
                &format!("/api/admin/commands/{id}"),
                tenant.admin_token.expose(),
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{answer}");
        assert_eq!(answer, json!({"cancelled": 1, "cancel_requested": 1}));

        // B never gets it.
        assert_eq!(pending_count(&server, &b, &b_token).await, 0);
        assert_eq!(pending(&server, &b_token).await, (vec![], vec![]));
        let answer = status(
            &server,
            &b_token,
            json!({"command_id": id, "status": "received"}),
        )
        .await;
        assert_error(&answer, StatusCode::CONFLICT, "conflict");

        // A hears of it until it reports the end.
        assert_eq!(pending_count(&server, &a, &a_token).await, 1);
        assert_eq!(pending(&server, &a_token).await, (vec![], vec![id]));
        assert_eq!(pending(&server, &a_token).await, (vec![], vec![id]));
        for step in ["running", "cancelled"] {
            let answer = status(&server, &a_token, json!({"command_id": id, "status": step})).await;
            assert_eq!(answer.0, StatusCode::NO_CONTENT, "{}", answer.1);
        }
        assert_eq!(pending(&server, &a_token).await, (vec![], vec![]));
        assert_eq!(pending_count(&server, &a, &a_token).await, 0);
        let shown = show(&server, &tenant, id).await;
        assert_eq!(shown["states"], json!({"cancelled": 2}));

        let (code, _) = server
            .delete("/api/admin/commands/999999", tenant.admin_token.expose())
            .await;
        assert_eq!(code, StatusCode::NOT_FOUND);
    }
}

#[tokio::test]
async fn illegal_moves_are_409_repeats_204_and_strangers_404() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let (a, a_token, _) = enrol(&server, &tenant, "a").await;
        let (_b, b_token, _) = enrol(&server, &tenant, "b").await;
        let id = create_for(&server, &tenant, &[&a]).await;
        // Never delivered: nothing to report on.
        let answer = status(
            &server,
            &a_token,
            json!({"command_id": id, "status": "running"}),
        )
        .await;
        assert_error(&answer, StatusCode::CONFLICT, "conflict");
        pending(&server, &a_token).await;
        let ok = |answer: (StatusCode, Value)| {
            assert_eq!(answer.0, StatusCode::NO_CONTENT, "{}", answer.1)
        };
        ok(status(
            &server,
            &a_token,
            json!({"command_id": id, "status": "received"}),
        )
        .await);
        ok(status(
            &server,
            &a_token,
            json!({"command_id": id, "status": "received"}),
        )
        .await);
        ok(status(
            &server,
            &a_token,
            json!({"command_id": id, "status": "deferred", "reason": "cpu 95%"}),
        )
        .await);
        ok(status(
            &server,
            &a_token,
            json!({"command_id": id, "status": "deferred", "reason": "cpu 97%"}),
        )
        .await);
        assert_eq!(
            show(&server, &tenant, id).await["targets"][0]["reason"],
            "cpu 97%"
        );
        let answer = status(
            &server,
            &a_token,
            json!({"command_id": id, "status": "received"}),
        )
        .await;
        assert_error(&answer, StatusCode::CONFLICT, "conflict");
        ok(status(
            &server,
            &a_token,
            json!({"command_id": id, "status": "running"}),
        )
        .await);
        ok(status(
            &server,
            &a_token,
            json!({"command_id": id, "status": "running"}),
        )
        .await);
        for illegal in ["received", "deferred", "rejected", "expired"] {
            let answer = status(
                &server,
                &a_token,
                json!({"command_id": id, "status": illegal}),
            )
            .await;
            assert_error(&answer, StatusCode::CONFLICT, "conflict");
        }
        ok(status(
            &server,
            &a_token,
            json!({"command_id": id, "status": "failed", "exit_code": 2}),
        )
        .await);
        // A retry of the end is fine; any change of it is not.
        ok(status(
            &server,
            &a_token,
            json!({"command_id": id, "status": "failed", "exit_code": 3}),
        )
        .await);
        assert_eq!(
            show(&server, &tenant, id).await["targets"][0]["exit_code"],
            2
        );
        let answer = status(
            &server,
            &a_token,
            json!({"command_id": id, "status": "succeeded"}),
        )
        .await;
        assert_error(&answer, StatusCode::CONFLICT, "conflict");
        assert!(
            answer.1["error"]["message"]
                .as_str()
                .unwrap()
                .contains("ended")
        );

        // Another agent's command and an unknown one are not found.
        let answer = status(
            &server,
            &b_token,
            json!({"command_id": id, "status": "failed"}),
        )
        .await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
        let answer = status(
            &server,
            &a_token,
            json!({"command_id": 424242, "status": "failed"}),
        )
        .await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
        let answer = status(
            &server,
            &a_token,
            json!({"command_id": id, "status": "done"}),
        )
        .await;
        assert_eq!(answer.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", answer.1);
    }
}

#[tokio::test]
async fn locks_conflict_renew_release_and_expire() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let (a, a_token, _) = enrol(&server, &tenant, "a").await;
        let (_b, b_token, _) = enrol(&server, &tenant, "b").await;
        let lock = |resource: &str, command: i64, ttl: u64, scope: &str| json!({"resource": resource, "command_id": command, "ttl_s": ttl, "scope": scope});

        let (code, held) = server
            .post("/api/locks/create", &a_token, &lock("apt", 1, 60, "agent"))
            .await;
        assert_eq!(code, StatusCode::CREATED, "{held}");
        assert_eq!(held["holder_agent_id"], a.as_str());
        assert_eq!(held["scope"], "agent");
        // The same agent and command: renewed, same lock.
        let (code, renewed) = server
            .post("/api/locks/create", &a_token, &lock("apt", 1, 600, "agent"))
            .await;
        assert_eq!(code, StatusCode::CREATED, "{renewed}");
        assert_eq!(renewed["id"], held["id"]);
        assert!(renewed["expires_at"].as_str().unwrap() > held["expires_at"].as_str().unwrap());
        // Another command of the same agent: held.
        let answer = server
            .post("/api/locks/create", &a_token, &lock("apt", 2, 60, "agent"))
            .await;
        assert_error(&answer, StatusCode::CONFLICT, "conflict");
        // An agent-scoped name is per machine: B has its own `apt`.
        let (code, _) = server
            .post("/api/locks/create", &b_token, &lock("apt", 1, 60, "agent"))
            .await;
        assert_eq!(code, StatusCode::CREATED);

        // A tenant-scoped lock has one holder across the fleet; the 409 names it.
        let (code, reboot) = server
            .post(
                "/api/locks/create",
                &a_token,
                &lock("reboot", 7, 60, "tenant"),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{reboot}");
        let answer = server
            .post(
                "/api/locks/create",
                &b_token,
                &lock("reboot", 8, 60, "tenant"),
            )
            .await;
        assert_error(&answer, StatusCode::CONFLICT, "conflict");
        let message = answer.1["error"]["message"].as_str().unwrap();
        assert!(
            message.contains(&a) && message.contains("command 7"),
            "{message}"
        );
        // Only its holder releases it.
        let path = format!("/api/locks/{}", reboot["id"].as_str().unwrap());
        let answer = server.delete(&path, &b_token).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
        let (code, _) = server.delete(&path, &a_token).await;
        assert_eq!(code, StatusCode::NO_CONTENT);
        let (code, _) = server.delete(&path, &a_token).await;
        assert_eq!(code, StatusCode::NOT_FOUND);
        let (code, _) = server
            .post(
                "/api/locks/create",
                &b_token,
                &lock("reboot", 8, 1, "tenant"),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED);

        // Expired locks are free (and the job deletes them).
        tokio::time::sleep(Duration::from_millis(2050)).await;
        let (code, answer) = server
            .post(
                "/api/locks/create",
                &a_token,
                &lock("reboot", 9, 1, "tenant"),
            )
            .await;
        assert_eq!(code, StatusCode::CREATED, "{answer}");
        let swept = server
            .store
            .sweep_commands(jiff::Timestamp::now().as_second() + 5)
            .await
            .unwrap();
        assert_eq!(swept.locks, 1, "only `reboot` (1 s) has expired");
        let swept = server
            .store
            .sweep_commands(jiff::Timestamp::now().as_second() + 700)
            .await
            .unwrap();
        assert_eq!(swept.locks, 2, "both `apt` locks have expired by then");

        for bad in [
            lock("", 1, 60, "agent"),
            lock("x", 1, 0, "agent"),
            lock("x", 1, 90_000, "agent"),
        ] {
            let answer = server.post("/api/locks/create", &a_token, &bad).await;
            assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
        }
    }
}

#[tokio::test]
async fn a_long_poll_is_answered_within_a_second_of_the_command_creation() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let (agent, token, _) = enrol(&server, &tenant, "h").await;

        // Nothing comes: an empty answer when the time is up.
        let started = Instant::now();
        assert_eq!(
            send(
                client()
                    .get(server.url("/api/commands/pending?wait_s=1"))
                    .bearer_auth(&token)
            )
            .await,
            (StatusCode::OK, json!({"commands": [], "cancel": []}))
        );
        assert!(started.elapsed() >= Duration::from_millis(950));

        let url = server.url("/api/commands/pending?wait_s=30");
        let poll = tokio::spawn({
            let token = token.clone();
            async move {
                let answer = send(client().get(url).bearer_auth(&token)).await;
                (answer, Instant::now())
            }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!poll.is_finished());
        let created = Instant::now();
        let id = create_for(&server, &tenant, &[&agent]).await;
        let ((code, answer), answered) = tokio::time::timeout(Duration::from_secs(2), poll)
            .await
            .expect("the long poll was not answered within 2 s")
            .unwrap();
        assert_eq!(code, StatusCode::OK);
        assert_eq!(answer["commands"][0]["id"], id);
        let latency = answered.duration_since(created);
        assert!(
            latency < Duration::from_secs(1),
            "answered {latency:?} after creation"
        );

        // A cancellation of a held command nudges too.
        let url = server.url("/api/commands/pending?wait_s=30");
        let poll = tokio::spawn({
            let token = token.clone();
            async move { send(client().get(url).bearer_auth(&token)).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        server
            .delete(
                &format!("/api/admin/commands/{id}"),
                tenant.admin_token.expose(),
            )
            .await;
        let (_, answer) = tokio::time::timeout(Duration::from_secs(2), poll)
            .await
            .expect("the cancellation did not wake the long poll")
            .unwrap();
        assert_eq!(answer["cancel"], json!([id]));
    }
}

/// A command scheduled for later is delivered to a waiting long poll when it comes due, not
/// at the end of the wait (nothing announces it then).
#[tokio::test]
async fn a_long_poll_wakes_when_a_scheduled_command_comes_due() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let (agent, token, _) = enrol(&server, &tenant, "h").await;
        let due = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(2);
        let (code, answer) = create(
            &server,
            &tenant,
            json!({"agent_ids": [agent], "type": "exec", "command": "/bin/true",
                "scheduled_for": due.to_string()}),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "{answer}");
        let id = answer["id"].as_i64().unwrap();

        let started = Instant::now();
        let (code, answer) = server.get("/api/commands/pending?wait_s=30", &token).await;
        assert_eq!(code, StatusCode::OK, "{answer}");
        assert_eq!(answer["commands"][0]["id"], id, "{answer}");
        let waited = started.elapsed();
        assert!(
            waited >= Duration::from_millis(900) && waited < Duration::from_secs(5),
            "answered after {waited:?}; due in 1..2 s"
        );
        assert!(jiff::Timestamp::now().as_second() >= due.as_second());
    }
}

/// The agent pays for what it asks, the commands for what they cause: an operator's burst of
/// commands to one agent is delivered and reported past the agent's request limit, while
/// polls that find nothing, repeats and deferrals still count against it.
#[tokio::test]
async fn command_deliveries_and_progress_reports_are_not_held_to_the_agent_rate() {
    for backend in backends() {
        let limits = Limits {
            agent_requests_per_minute: std::num::NonZeroU32::new(1),
            agent_burst: std::num::NonZeroU32::new(3).unwrap(),
            ..Limits::default()
        };
        let server = TestServer::start_with_on(&backend, limits).await;
        let tenant = server.tenant("acme").await;
        let (agent, token, _) = enrol(&server, &tenant, "h").await;

        // Five commands, four requests each: 20 requests on a burst of 3, none refused.
        let mut ids = Vec::new();
        for _ in 0..5 {
            let id = create_for(&server, &tenant, &[&agent]).await;
            ids.push(id);
            let (code, answer) = server.get("/api/commands/pending?wait_s=5", &token).await;
            assert_eq!(code, StatusCode::OK, "{answer}");
            assert_eq!(answer["commands"][0]["id"], id);
            for step in [
                json!({"command_id": id, "status": "received"}),
                json!({"command_id": id, "status": "running"}),
                json!({"command_id": id, "status": "succeeded", "exit_code": 0}),
            ] {
                let answer = status(&server, &token, step).await;
                assert_eq!(answer.0, StatusCode::NO_CONTENT, "{}", answer.1);
            }
        }

        // What brings nothing counts: a repeat, a deferral, a poll without a wait.
        let repeat = json!({"command_id": ids[0], "status": "succeeded", "exit_code": 0});
        let answer = status(&server, &token, repeat.clone()).await;
        assert_eq!(answer.0, StatusCode::NO_CONTENT, "{}", answer.1);
        let id = create_for(&server, &tenant, &[&agent]).await;
        let (code, answer) = server.get("/api/commands/pending?wait_s=5", &token).await;
        assert_eq!(code, StatusCode::OK, "{answer}");
        assert_eq!(answer["commands"][0]["id"], id);
        for step in [
            json!({"command_id": id, "status": "received"}),
            json!({"command_id": id, "status": "deferred", "reason": "cpu 99% > 75%"}),
        ] {
            let answer = status(&server, &token, step).await;
            assert_eq!(answer.0, StatusCode::NO_CONTENT, "{}", answer.1);
        }
        let (code, answer) = server.get("/api/commands/pending", &token).await;
        assert_eq!(code, StatusCode::OK, "{answer}");
        // The burst is spent: each kind of request that brings nothing is now refused.
        let (code, _) = server.get("/api/commands/pending", &token).await;
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
        let (code, _) = server.get("/api/commands/pending?wait_s=1", &token).await;
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "an empty long poll");
        let (code, _) = status(&server, &token, repeat).await;
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS, "a repeat");
        let (code, _) = server
            .post("/api/agents/heartbeat", &token, &heartbeat(&agent, None))
            .await;
        assert_eq!(code, StatusCode::TOO_MANY_REQUESTS);
        // Progress is still free: the deferred command runs and ends.
        for step in [
            json!({"command_id": id, "status": "running"}),
            json!({"command_id": id, "status": "failed", "exit_code": 1}),
        ] {
            let answer = status(&server, &token, step).await;
            assert_eq!(answer.0, StatusCode::NO_CONTENT, "{}", answer.1);
        }
        assert_eq!(
            show(&server, &tenant, id).await["targets"][0]["state"],
            "failed"
        );
    }
}

#[tokio::test]
async fn the_admin_api_targets_lists_and_refuses_bad_commands() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let other = server.tenant("other").await;
        let (w1, w1_token, _) = enrol(&server, &tenant, "web-1").await;
        let (w2, _, _) = enrol(&server, &tenant, "web-2").await;
        let (db, _, _) = enrol(&server, &tenant, "db-1").await;
        let (foreign, _, _) = enrol(&server, &other, "web-9").await;

        let (code, answer) = create(
            &server,
            &tenant,
            json!({"filter": {"hostname": "web-*"}, "type": "script", "command": "uptime",
                "parameters": {"interpreter": "sh"}, "priority": 1, "locks": ["tenant:web"]}),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "{answer}");
        let mut targets: Vec<&str> = answer["targets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["agent_id"].as_str().unwrap())
            .collect();
        targets.sort();
        let mut expected = vec![w1.as_str(), w2.as_str()];
        expected.sort();
        assert_eq!(targets, expected);
        assert_eq!(answer["states"], json!({"pending": 2}));
        assert_eq!(answer["locks"], json!(["tenant:web"]));
        let filtered = answer["id"].as_i64().unwrap();

        let (code, answer) = create(
            &server,
            &tenant,
            json!({"filter": {"os": "linux", "hostname": "db-*", "online": true},
                "type": "builtin", "command": "telemetry_now"}),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "{answer}");
        assert_eq!(answer["target_count"], 1);
        assert_eq!(answer["targets"][0]["agent_id"], db.as_str());
        let one = create_for(&server, &tenant, &[&db]).await;

        for (body, why) in [
            (json!({"type": "exec", "command": "x"}), "exactly one"),
            (
                json!({"agent_id": db, "agent_ids": [db], "type": "exec", "command": "x"}),
                "exactly one",
            ),
            (
                json!({"agent_id": db, "type": "shell", "command": "x"}),
                "`type`",
            ),
            (
                json!({"agent_id": db, "type": "exec", "command": " "}),
                "`command`",
            ),
            (
                json!({"agent_id": db, "type": "builtin", "command": "format_disk"}),
                "builtin",
            ),
            (
                json!({"agent_id": db, "type": "exec", "command": "x", "priority": 9}),
                "`priority`",
            ),
            (
                json!({"agent_id": db, "type": "exec", "command": "x", "timeout_s": 0}),
                "`timeout_s`",
            ),
            (
                json!({"agent_id": db, "type": "exec", "command": "x", "parameters": {"args": [1]}}),
                "args",
            ),
            (
                json!({"agent_id": db, "type": "exec", "command": "x", "parameters": [1]}),
                "`parameters`",
            ),
            (
                json!({"agent_id": db, "type": "exec", "command": "x", "locks": ["tenant:"]}),
                "lock",
            ),
            (
                json!({"agent_id": db, "type": "exec", "command": "x", "expires_at": "2001-01-01T00:00:00Z"}),
                "`expires_at`",
            ),
            (
                json!({"agent_id": foreign, "type": "exec", "command": "x"}),
                "tenant's agents",
            ),
            (
                json!({"agent_ids": [db, "nope"], "type": "exec", "command": "x"}),
                "tenant's agents",
            ),
            (
                json!({"filter": {"hostname": "mail-*"}, "type": "exec", "command": "x"}),
                "no agent",
            ),
            (
                json!({"filter": {"online": false}, "type": "exec", "command": "x"}),
                "no agent",
            ),
            (
                json!({"agent_id": db, "type": "exec", "command": "x".repeat(70_000)}),
                "`command`",
            ),
        ] {
            let answer = create(&server, &tenant, body).await;
            assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
            let message = answer.1["error"]["message"].as_str().unwrap();
            assert!(message.contains(why), "{why}: {message}");
        }
        let answer = server
            .post(
                "/api/admin/commands",
                tenant.admin_token.expose(),
                &json!({"agent_id": db, "type": "exec", "command": "x", "bogus": 1}),
            )
            .await;
        assert!(answer.0.is_client_error(), "{}", answer.1);

        // Nothing refused was stored; the list is newest first, filtered and paged.
        let admin = tenant.admin_token.expose();
        let (_, list) = server.get("/api/admin/commands", admin).await;
        assert_eq!(list["total"], 3);
        let ids: Vec<i64> = list["commands"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_i64().unwrap())
            .collect();
        assert_eq!(ids[0], one);
        assert_eq!(ids[2], filtered);
        assert_eq!(list["commands"][2]["states"], json!({"pending": 2}));
        let (_, list) = server
            .get(&format!("/api/admin/commands?agent_id={db}"), admin)
            .await;
        assert_eq!(list["total"], 2);
        assert_eq!(list["commands"][0]["id"], one);
        let (_, list) = server
            .get("/api/admin/commands?limit=1&offset=1", admin)
            .await;
        assert_eq!(list["total"], 3);
        assert_eq!(list["commands"].as_array().unwrap().len(), 1);
        assert_eq!(list["commands"][0]["id"], ids[1]);
        pending(&server, &w1_token).await;
        let (_, list) = server.get("/api/admin/commands?state=leased", admin).await;
        assert_eq!(list["total"], 1);
        assert_eq!(list["commands"][0]["id"], filtered);
        let answer = server.get("/api/admin/commands?state=bogus", admin).await;
        assert_error(&answer, StatusCode::UNPROCESSABLE_ENTITY, "invalid_request");
        let answer = server.get("/api/admin/commands/123456", admin).await;
        assert_error(&answer, StatusCode::NOT_FOUND, "not_found");
        // A command's targets come a page at a time; the counts by state cover all of them.
        let every = create_for(&server, &tenant, &[&w1, &w2, &db]).await;
        let (code, page) = server
            .get(
                &format!("/api/admin/commands/{every}?targets_limit=2"),
                admin,
            )
            .await;
        assert_eq!(code, StatusCode::OK, "{page}");
        assert_eq!(page["target_count"], 3);
        assert_eq!(page["states"], json!({"pending": 3}));
        let hosts = |page: &Value| -> Vec<String> {
            page["targets"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["hostname"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(hosts(&page), ["db-1", "web-1"]);
        let (_, rest) = server
            .get(
                &format!("/api/admin/commands/{every}?targets_limit=2&targets_offset=2"),
                admin,
            )
            .await;
        assert_eq!(hosts(&rest), ["web-2"]);
        for bad in ["targets_limit=0", "targets_limit=1001", "targets_offset=-1"] {
            let answer = server
                .get(&format!("/api/admin/commands/{every}?{bad}"), admin)
                .await;
            assert_error(&answer, StatusCode::BAD_REQUEST, "bad_request");
        }
    }
}

/// Two real `muster-server serve` processes on one PostgreSQL database, agents spread over
/// both and long-polling: every (command, agent) is leased and completed exactly once, and a
/// command created on one replica wakes an agent waiting on the other.
#[tokio::test]
async fn two_replicas_on_one_database_run_each_command_exactly_once() {
    let Some(backend) = backends()
        .into_iter()
        .find(|b| matches!(b, Backend::Postgres(_)))
    else {
        // Needs PostgreSQL (MUSTER_TEST_DATABASE_URL); SQLite has one server by design.
        return;
    };
    let server = TestServer::start_on(&backend).await;
    let tenant = server.tenant("acme").await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\ndatabase_url = \"{}\"\n[limits]\nagent_requests_per_minute = 0\n",
            server.database_url
        ),
    )
    .unwrap();
    let mut replicas = Vec::new();
    let mut bases = Vec::new();
    for _ in 0..2 {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_muster-server"))
            .args(["serve", "--config"])
            .arg(&config)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        replicas.push(child);
        bases.push(format!("http://127.0.0.1:{port}"));
    }
    for base in &bases {
        let deadline = Instant::now() + Duration::from_secs(20);
        while client().get(format!("{base}/readyz")).send().await.is_err() {
            assert!(Instant::now() < deadline, "replica {base} did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    const AGENTS: usize = 8;
    const COMMANDS: usize = 30;
    let mut agents = Vec::new();
    for i in 0..AGENTS {
        let (id, token, key) = enrol(&server, &tenant, &format!("host-{i}")).await;
        agents.push((id, token, key));
    }
    let ids: Vec<String> = agents.iter().map(|a| a.0.clone()).collect();

    // A command created through replica 0 wakes an agent long-polling replica 1.
    let (_, token_1, _) = agents[1].clone();
    let poll = tokio::spawn({
        let url = format!("{}/api/commands/pending?wait_s=30", bases[1]);
        async move { send(client().get(url).bearer_auth(token_1)).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let created = Instant::now();
    let (code, answer) = send(
        client()
            .post(format!("{}/api/admin/commands", bases[0]))
            .bearer_auth(tenant.admin_token.expose())
            .header("content-type", "application/json")
            .body(
                json!({"agent_id": ids[1], "type": "builtin", "command": "scan_now"}).to_string(),
            ),
    )
    .await;
    assert_eq!(code, StatusCode::CREATED, "{answer}");
    let first = answer["id"].as_i64().unwrap();
    let (_, polled) = tokio::time::timeout(Duration::from_secs(3), poll)
        .await
        .expect("the other replica's long poll was not woken")
        .unwrap();
    assert!(created.elapsed() < Duration::from_secs(2));
    assert_eq!(polled["commands"][0]["id"], first);
    let (code, _) = send(
        client()
            .post(format!("{}/api/commands/status", bases[1]))
            .bearer_auth(&agents[1].1)
            .header("content-type", "application/json")
            .body(json!({"command_id": first, "status": "succeeded"}).to_string()),
    )
    .await;
    assert_eq!(code, StatusCode::NO_CONTENT);

    // Every agent runs two workers, one per replica, racing for the same rows.
    for _ in 0..COMMANDS {
        let (code, answer) = create(
            &server,
            &tenant,
            json!({"agent_ids": ids, "type": "builtin", "command": "scan_now"}),
        )
        .await;
        assert_eq!(code, StatusCode::CREATED, "{answer}");
    }
    let mut workers = Vec::new();
    for (agent_id, token, key) in &agents {
        for base in &bases {
            let (agent_id, token, key, base) =
                (agent_id.clone(), token.clone(), key.clone(), base.clone());
            workers.push(tokio::spawn(async move {
                let mut done = Vec::new();
                let mut idle = 0;
                while idle < 3 {
                    let (code, answer) = send(
                        client()
                            .get(format!("{base}/api/commands/pending"))
                            .bearer_auth(&token),
                    )
                    .await;
                    assert_eq!(code, StatusCode::OK, "{answer}");
                    let commands: Vec<Command> =
                        serde_json::from_value(answer["commands"].clone()).unwrap();
                    if commands.is_empty() {
                        idle += 1;
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                    idle = 0;
                    for command in commands {
                        assert!(verify(&key, &command, &agent_id));
                        for step in ["received", "running", "succeeded"] {
                            let (code, answer) = send(
                                client()
                                    .post(format!("{base}/api/commands/status"))
                                    .bearer_auth(&token)
                                    .header("content-type", "application/json")
                                    .body(
                                        json!({"command_id": command.id, "status": step})
                                            .to_string(),
                                    ),
                            )
                            .await;
                            assert_eq!(code, StatusCode::NO_CONTENT, "{answer}");
                        }
                        done.push((agent_id.clone(), command.id));
                    }
                }
                done
            }));
        }
    }
    let mut executed = Vec::new();
    for worker in workers {
        executed.extend(worker.await.unwrap());
    }
    let total = executed.len();
    executed.sort();
    executed.dedup();
    assert_eq!(executed.len(), total, "a command ran twice on one agent");
    assert_eq!(total, AGENTS * COMMANDS, "some commands never ran");
    let (_, list) = server
        .get(
            "/api/admin/commands?state=succeeded&limit=1000",
            tenant.admin_token.expose(),
        )
        .await;
    assert_eq!(list["total"], COMMANDS + 1);
    for command in list["commands"].as_array().unwrap() {
        let count = command["states"]["succeeded"].as_i64().unwrap();
        assert_eq!(command["states"].as_object().unwrap().len(), 1, "{command}");
        assert!(count == AGENTS as i64 || command["id"] == first);
        // Each (command, agent) was leased once.
        let shown = show(&server, &tenant, command["id"].as_i64().unwrap()).await;
        for target in shown["targets"].as_array().unwrap() {
            assert_eq!(target["attempts"], 1, "{target}");
        }
    }
    for child in &mut replicas {
        child.start_kill().unwrap();
        child.wait().await.unwrap();
    }
}
