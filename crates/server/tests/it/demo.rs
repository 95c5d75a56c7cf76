//! `muster-server demo` end to end: the real binary, its real agent child reporting this
//! machine, a clean stop on SIGTERM, and a second run that finds everything again.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use muster_server::store::Store;

/// How long the first report may take: a debug build scans this machine more slowly than
/// the release build the quickstart runs (which shows it within a couple of seconds).
const FIRST_REPORT_TIMEOUT: Duration = Duration::from_secs(60);

struct Demo {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Demo {
    fn start(data_dir: &std::path::Path) -> Demo {
        let mut child = Command::new(env!("CARGO_BIN_EXE_muster-server"))
            .args(["demo", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(data_dir)
            // The demo's agent must not take these from the caller.
            .env("API_BASE_URL", "http://127.0.0.1:9/api")
            .env("MUSTER_API_TENANT_ID", "someone-else")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (send, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if send.send(line).is_err() {
                    break;
                }
            }
        });
        Demo {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// Reads lines until one contains `needle`; returns it.
    fn wait_for(&mut self, needle: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no line with {needle:?} within {timeout:?}; output:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The value after `label:` on the line holding it.
    fn field(&mut self, label: &str) -> String {
        let line = self.wait_for(label, Duration::from_secs(30));
        line.split_once(label)
            .unwrap()
            .1
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    }

    /// SIGTERM, then the exit status within 20 s.
    fn stop(&mut self) -> std::process::ExitStatus {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "the demo did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Demo {
    /// A failed test must not leave a demo (and its agent) running.
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
            let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
            let _ = self.child.wait();
        }
    }
}

fn process_exists(pid: u32) -> bool {
    std::path::Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_demo_shows_this_machine_and_stops_cleanly_and_runs_again() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("muster-data");

    let mut demo = Demo::start(&data_dir);
    let dashboard = demo.field("dashboard:");
    let admin_token = demo.field("admin token:");
    let agent_pid: u32 = demo.field("pid").trim_end_matches(',').parse().unwrap();
    let commands = demo.wait_for("commands:", Duration::from_secs(30));
    assert!(
        commands.contains("`exec`") && commands.contains("`script`"),
        "{commands}"
    );
    assert!(dashboard.starts_with("http://127.0.0.1:"), "{dashboard}");
    assert!(admin_token.starts_with("mst_admin_"), "{admin_token}");
    let reported = demo.wait_for("reported its inventory", FIRST_REPORT_TIMEOUT);
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(reported.contains(hostname.trim()), "{reported}");
    assert!(process_exists(agent_pid));

    // What the dashboard reads: this machine, its inventory, a first telemetry sample.
    let database = data_dir.join("muster.db");
    let store = Store::open(database.to_str().unwrap()).await.unwrap();
    let tenant = store
        .list_tenants()
        .await
        .unwrap()
        .into_iter()
        .find(|t| t.name == "demo")
        .unwrap();
    // Its agent may run `exec` and `script`, and pins the tenant's signing key.
    let agent_config = std::fs::read_to_string(data_dir.join("agent/agent.toml")).unwrap();
    assert!(
        agent_config.contains(r#"allowed_command_types = ["builtin", "exec", "script"]"#),
        "{agent_config}"
    );
    let key = muster_server::commands::tenant_key(&store, &tenant.id)
        .await
        .unwrap()
        .public_key;
    assert!(
        agent_config.contains(&format!("command_signing_key = \"{key}\"")),
        "{agent_config}"
    );
    let agents = store.list_agents(&tenant.id).await.unwrap();
    assert_eq!(agents.len(), 1);
    assert_eq!(agents[0].hostname, hostname.trim());
    let agent_id = agents[0].id.clone();
    assert!(
        store
            .inventory(&tenant.id, &agent_id)
            .await
            .unwrap()
            .is_some()
    );
    let deadline = Instant::now() + FIRST_REPORT_TIMEOUT;
    while store
        .metrics(&tenant.id, &agent_id, 0, i64::MAX)
        .await
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "no telemetry sample arrived");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    store.close().await;

    // The dashboard, as a browser sees it: log in with the printed token, find this machine
    // in the fleet and on its own page.
    let browser = crate::dashboard::browser();
    let login = browser
        .post(format!("{dashboard}login"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("token={admin_token}"))
        .send()
        .await
        .unwrap();
    assert_eq!(login.status(), reqwest::StatusCode::SEE_OTHER);
    let cookie = login.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .split(';')
        .next()
        .unwrap()
        .to_owned();
    for page in [String::new(), format!("agents/{agent_id}")] {
        let response = browser
            .get(format!("{dashboard}{page}"))
            .header("cookie", &cookie)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), reqwest::StatusCode::OK, "/{page}");
        let html = response.text().await.unwrap();
        assert!(html.contains(hostname.trim()), "/{page}: {html}");
    }

    let status = demo.stop();
    assert!(status.success(), "{status:?}");
    assert!(!process_exists(agent_pid), "the agent outlived the demo");

    // A second run: the same admin token, the same machine (registration is idempotent).
    let mut again = Demo::start(&data_dir);
    assert_eq!(again.field("admin token:"), admin_token);
    again.wait_for("reported its inventory", FIRST_REPORT_TIMEOUT);
    let status = again.stop();
    assert!(status.success(), "{status:?}");
    let store = Store::open(database.to_str().unwrap()).await.unwrap();
    assert_eq!(store.list_agents(&tenant.id).await.unwrap().len(), 1);
    store.close().await;
}
