//! The server and a real agent process together: the agent enrols with the tenant's
//! enrolment token, pins the command signing key the registration gives it, and runs what the
//! admin API sends it; the results come back through the admin API.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use muster_server::admin::CreatedTenant;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::support::{TestServer, backends};

/// A `muster-server agent run` child (the agent the demo runs), stopped and reaped on drop.
struct AgentProcess(Child);

impl Drop for AgentProcess {
    fn drop(&mut self) {
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.0.id() as i32),
            nix::sys::signal::Signal::SIGTERM,
        );
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An agent for `tenant` in `dir`. It never defers for load: tests run beside each other on a
/// busy machine, and the load-aware queue has tests of its own (crates/agent).
fn start_agent(dir: &Path, server: &TestServer, tenant: &CreatedTenant) -> AgentProcess {
    let config = dir.join("agent.toml");
    let text = format!(
        "[agent]\nheartbeat_interval = 10\ncollection_interval = 60\ninventory_interval = 3600\n\
         splay = 0\nstate_dir = \"{state}\"\nlog_level = \"info\"\n\n\
         [api]\nbase_url = \"{base}/api\"\ntenant_id = \"{tenant}\"\nauth_token = \"{token}\"\n\n\
         [security]\nallowed_command_types = [\"builtin\", \"script\"]\n\n\
         [scheduling]\ndefer_threshold_cpu = 100\ndefer_threshold_memory = 100\n",
        state = dir.join("state").display(),
        base = server.base,
        tenant = tenant.tenant.id,
        token = tenant.enrol_token.expose(),
    );
    std::fs::write(&config, text).unwrap();
    let log = std::fs::File::create(dir.join("agent.log")).unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_muster-server"))
        .args(["agent", "run", "--config"])
        .arg(&config)
        .env_remove("MUSTER_AGENT_CONFIG")
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    AgentProcess(child)
}

async fn admin_get(server: &TestServer, tenant: &CreatedTenant, path: &str) -> Value {
    let (status, answer) = server.get(path, tenant.admin_token.expose()).await;
    assert_eq!(status, StatusCode::OK, "{path}: {answer}");
    answer
}

/// Polls `path` until `done` holds for its answer, at most `limit`.
async fn until(
    server: &TestServer,
    tenant: &CreatedTenant,
    path: &str,
    limit: Duration,
    log: &Path,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + limit;
    loop {
        let answer = admin_get(server, tenant, path).await;
        if done(&answer) {
            return answer;
        }
        assert!(
            Instant::now() < deadline,
            "{path} not done within {limit:?}: {answer}\nagent log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_script_sent_through_the_admin_api_runs_on_a_real_agent_and_its_output_comes_back() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("agent.log");
        let _agent = start_agent(dir.path(), &server, &tenant);

        // Enrolled: the agent is listed.
        let agents = until(
            &server,
            &tenant,
            "/api/admin/agents",
            Duration::from_secs(90),
            &log,
            |a| a["total"] == 1,
        )
        .await;
        let agent_id = agents["agents"][0]["id"].as_str().unwrap().to_owned();

        // A script: output on both streams and an exit code, through the long poll.
        let (status, created) = server
            .post(
                "/api/admin/commands",
                tenant.admin_token.expose(),
                &json!({"agent_id": agent_id, "type": "script",
                    "command": "echo \"hello from $GREETING\"; echo oops >&2; exit 3",
                    "parameters": {"interpreter": "sh", "env": {"GREETING": "muster"}},
                    "timeout_s": 30}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let id = created["id"].as_i64().unwrap();
        let path = format!("/api/admin/commands/{id}");
        let shown = until(
            &server,
            &tenant,
            &path,
            Duration::from_secs(90),
            &log,
            |c| c["targets"][0]["state"] == "failed",
        )
        .await;
        let target = &shown["targets"][0];
        assert_eq!(target["agent_id"], agent_id.as_str());
        assert_eq!(target["exit_code"], 3, "{shown}");
        assert_eq!(target["stdout"], "hello from muster\n", "{shown}");
        assert_eq!(target["stderr"], "oops\n", "{shown}");
        assert!(target["started_at"].is_string() && target["finished_at"].is_string());

        // A type this agent does not allow is refused by the agent, never run.
        let marker = dir.path().join("never");
        let (status, created) = server
            .post(
                "/api/admin/commands",
                tenant.admin_token.expose(),
                &json!({"agent_id": agent_id, "type": "exec", "command": "/usr/bin/touch",
                    "parameters": {"args": [marker.display().to_string()]}}),
            )
            .await;
        assert_eq!(status, StatusCode::CREATED, "{created}");
        let path = format!("/api/admin/commands/{}", created["id"]);
        let shown = until(
            &server,
            &tenant,
            &path,
            Duration::from_secs(90),
            &log,
            |c| c["targets"][0]["state"] == "rejected",
        )
        .await;
        assert!(
            shown["targets"][0]["reason"]
                .as_str()
                .unwrap_or_default()
                .contains("not allowed"),
            "{shown}"
        );
        assert!(!marker.exists());
    }
}
