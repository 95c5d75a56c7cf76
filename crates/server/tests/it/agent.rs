//! The real `muster-agent run` enrolling with the server and reporting to it.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use muster_proto::DaemonReport;
use muster_proto::inventory::inventory_hash;

use crate::support::{TestServer, backends};

/// The `muster-agent` binary beside this test's, built once if it is not there yet.
fn agent_binary() -> PathBuf {
    static BUILT: Mutex<Option<PathBuf>> = Mutex::new(None);
    let mut built = BUILT.lock().unwrap();
    if let Some(path) = &*built {
        return path.clone();
    }
    // target/<profile>/deps/it-<hash> → target/<profile>/muster-agent
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().unwrap().parent().unwrap().to_owned();
    let path = profile_dir.join(format!("muster-agent{}", std::env::consts::EXE_SUFFIX));
    if !path.exists() {
        let target_dir = profile_dir.parent().unwrap();
        let mut cargo = Command::new(env!("CARGO"));
        cargo
            .args(["build", "-p", "muster-agent", "--target-dir"])
            .arg(target_dir);
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            cargo.arg("--release");
        }
        let status = cargo.status().unwrap();
        assert!(status.success(), "building muster-agent failed");
    }
    assert!(path.exists(), "no agent binary at {}", path.display());
    *built = Some(path.clone());
    path
}

struct Agent(Child);

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_agent_enrols_and_reports() {
    for backend in backends() {
        let server = TestServer::start_on(&backend).await;
        let tenant = server.tenant("acme").await;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            format!(
                "[agent]\n\
                 heartbeat_interval = 1\n\
                 collection_interval = 1\n\
                 inventory_interval = 3600\n\
                 splay = 0\n\
                 log_level = \"debug\"\n\
                 state_dir = \"{state}\"\n\
                 pid_file = \"{pid}\"\n\
                 log_file = \"{log}\"\n\
                 \n\
                 [api]\n\
                 base_url = \"{base}/api\"\n\
                 auth_token = \"{token}\"\n\
                 tenant_id = \"{tenant_id}\"\n\
                 timeout = 5\n\
                 retry_attempts = 0\n\
                 retry_delay = 1\n",
                state = state.display(),
                pid = dir.path().join("agent.pid").display(),
                log = dir.path().join("agent.log").display(),
                base = server.base,
                token = tenant.enrol_token.expose(),
                tenant_id = tenant.tenant.id,
            ),
        )
        .unwrap();
        let child = Command::new(agent_binary())
            .args(["run", "--config"])
            .arg(&config)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut agent = Agent(child);

        let tenant_id = tenant.tenant.id.clone();
        let deadline = Instant::now() + Duration::from_secs(30);
        let (agent_id, inventory) = loop {
            let agents = server.store.list_agents(&tenant_id).await.unwrap();
            if let Some(a) = agents.iter().find(|a| a.health.is_some()) {
                let inventory = server.store.inventory(&tenant_id, &a.id).await.unwrap();
                let samples = server
                    .store
                    .metrics(&tenant_id, &a.id, 0, i64::MAX)
                    .await
                    .unwrap();
                if let (Some(inventory), false) = (inventory, samples.is_empty()) {
                    break (a.id.clone(), inventory);
                }
            }
            if Instant::now() >= deadline || agent.0.try_wait().unwrap().is_some() {
                let _ = agent.0.kill();
                let out = std::mem::replace(&mut agent.0, Command::new("true").spawn().unwrap())
                    .wait_with_output()
                    .unwrap();
                panic!(
                    "the agent did not enrol and report within 30 s; its stderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };

        let record = server
            .store
            .agent(&tenant_id, &agent_id)
            .await
            .unwrap()
            .unwrap();
        assert!(record.public_key.is_some(), "the agent enrols with its key");
        assert!(record.last_seen.is_some());
        let report: DaemonReport = serde_json::from_str(&inventory.report).unwrap();
        assert_eq!(inventory_hash(&report), inventory.hash);
        assert_eq!(report.agent_id.as_deref(), Some(agent_id.as_str()));
        assert!(report.function("memory").is_some(), "a real scan arrived");

        // The agent holds the hash the server acknowledged: they agree on the inventory.
        let held: serde_json::Value =
            serde_json::from_slice(&std::fs::read(state.join("inventory.json")).unwrap()).unwrap();
        assert_eq!(held["hash"], inventory.hash.as_str());
    }
}
