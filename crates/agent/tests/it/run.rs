//! `muster-agent run` as a real child process against a real HTTP server on 127.0.0.1:0.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub use crate::fake_server::until;
use crate::fake_server::{ENROL_TOKEN, FakeServer, TENANT, until_reporting};

/// An agent's state directory and configuration file, in a temporary directory.
pub struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    pub fn new(server_url: &str, heartbeat_s: u64, telemetry_s: u64) -> Setup {
        let setup = Setup {
            dir: tempfile::tempdir().unwrap(),
        };
        setup.write_config(server_url, heartbeat_s, telemetry_s);
        setup
    }

    fn write_config(&self, server_url: &str, heartbeat_s: u64, telemetry_s: u64) {
        let config = format!(
            "[agent]\n\
             heartbeat_interval = {heartbeat_s}\n\
             collection_interval = {telemetry_s}\n\
             inventory_interval = 3600\n\
             splay = 0\n\
             log_level = \"debug\"\n\
             state_dir = \"{state}\"\n\
             pid_file = \"{pid}\"\n\
             log_file = \"{log}\"\n\
             \n\
             [api]\n\
             base_url = \"{server_url}\"\n\
             auth_token = \"{ENROL_TOKEN}\"\n\
             tenant_id = \"{TENANT}\"\n\
             timeout = 2\n\
             retry_attempts = 0\n\
             retry_delay = 1\n",
            state = self.state_dir().display(),
            pid = self.dir.path().join("agent.pid").display(),
            log = self.dir.path().join("agent.log").display(),
        );
        std::fs::write(self.config(), config).unwrap();
    }

    /// A directory for the test's own files, beside the agent's.
    pub fn append_dir(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// Adds `text` (whole sections) to the end of the configuration file.
    pub fn append_config(&self, text: &str) {
        let mut config = std::fs::read_to_string(self.config()).unwrap();
        config.push_str(text);
        std::fs::write(self.config(), config).unwrap();
    }

    fn config(&self) -> PathBuf {
        self.dir.path().join("agent.toml")
    }

    fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state")
    }

    pub fn start(&self) -> Agent {
        let log = self
            .dir
            .path()
            .join(format!("stderr-{}.log", uuid::Uuid::now_v7()));
        let child = Command::new(env!("CARGO_BIN_EXE_muster-agent"))
            .args(["run", "--config"])
            .arg(self.config())
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Agent {
            child: Some(child),
            log,
        }
    }
}

/// A running agent; killed if a test fails before stopping it.
pub struct Agent {
    child: Option<Child>,
    /// Its standard error (the foreground agent's log), readable while it runs.
    log: PathBuf,
}

impl Agent {
    fn pid(&self) -> i32 {
        self.child.as_ref().unwrap().id() as i32
    }

    fn signal(&self, signal: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), signal).unwrap();
    }

    /// Sends SIGTERM and waits (bounded) for the exit; returns the exit code and stderr.
    pub fn stop(mut self) -> (Option<i32>, String) {
        self.signal(nix::sys::signal::Signal::SIGTERM);
        let mut child = self.child.take().unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while child.try_wait().unwrap().is_none() {
            assert!(
                Instant::now() < deadline,
                "the agent did not stop within 10 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let code = child.wait().unwrap().code();
        (code, self.log_text())
    }

    /// Reaps an agent that was killed; returns the exit code (none: killed) and its log.
    fn stop_killed(mut self) -> (Option<i32>, String) {
        let code = self.child.take().unwrap().wait().unwrap().code();
        (code, self.log_text())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits (bounded) until the agent's log contains `text`.
    async fn until_logged(&self, text: &str) {
        let deadline = Instant::now() + Duration::from_secs(15);
        while !self.log_text().contains(text) {
            assert!(
                Instant::now() < deadline,
                "the agent never logged {text:?}:\n{}",
                self.log_text()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[cfg(unix)]
fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// No file in the state directory but the enrolment itself holds a token (status.json is
/// world-readable; spooled reports are plain JSON).
fn assert_no_secrets_in_state(state_dir: &Path, server: &FakeServer) {
    let mut secrets = server.seen(|s| s.tokens_issued.clone());
    secrets.push(ENROL_TOKEN.to_owned());
    let mut dirs = vec![state_dir.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.file_name().unwrap() != "enrolment.json" {
                let bytes = std::fs::read(&path).unwrap();
                let text = String::from_utf8_lossy(&bytes);
                for secret in &secrets {
                    assert!(
                        !text.contains(secret.as_str()),
                        "{} holds a token",
                        path.display()
                    );
                }
            }
        }
    }
}

/// Every secret a test run involved must be absent from the agent's logs.
fn assert_no_secrets(log: &str, server: &FakeServer) {
    assert!(
        !log.contains(ENROL_TOKEN),
        "the enrolment token leaked into the log"
    );
    for token in server.seen(|s| s.tokens_issued.clone()) {
        assert!(!log.contains(&token), "an agent token leaked into the log");
    }
}

#[tokio::test]
async fn enrols_reports_at_once_and_reuses_its_identity() {
    let server = FakeServer::start().await;
    let setup = Setup::new(&server.url, 60, 600);
    let agent = setup.start();
    until_reporting(&server).await;
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(server.seen(|s| s.inventories[0].1.clone()), "full");
    assert!(
        server.seen(|s| s.gzipped) >= 1,
        "the inventory body is compressed"
    );
    let state = setup.state_dir();
    #[cfg(unix)]
    for file in ["agent.key", "enrolment.json"] {
        assert_eq!(mode(&state.join(file)), 0o600, "{file}");
    }
    assert_no_secrets(&log, &server);
    assert_no_secrets_in_state(&state, &server);

    // A second start reuses the enrolment and sends only what changed.
    let agent = setup.start();
    until(&server, "the second inventory", |s| {
        s.inventories.len() == 2
    })
    .await;
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
    server.seen(|s| {
        assert_eq!(s.registrations, 1, "no second enrolment");
        assert_ne!(
            s.inventories[1].1, "full",
            "a restart sends a delta or the unchanged hash"
        );
        assert_eq!(s.duplicates, 0);
    });
    assert_no_secrets(&log, &server);
}

#[tokio::test]
async fn enrols_again_when_the_server_rejects_its_token() {
    let server = FakeServer::start().await;
    let setup = Setup::new(&server.url, 1, 600);
    let agent = setup.start();
    until(
        &server,
        "enrolment, a heartbeat and the first inventory",
        |s| s.heartbeats >= 1 && s.inventories.len() == 1,
    )
    .await;
    server.seen(|s| s.valid_tokens.clear());
    until(&server, "a second enrolment", |s| s.registrations == 2).await;
    until(&server, "a full inventory after re-enrolment", |s| {
        s.inventories
            .iter()
            .filter(|(_, mode)| mode == "full")
            .count()
            == 2
    })
    .await;
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(
        server.seen(|s| s.agents.len()),
        1,
        "the same key is the same agent"
    );
    assert_no_secrets(&log, &server);
}

#[tokio::test]
async fn spools_while_the_server_is_down_and_drains_in_order_once_it_is_back() {
    let server = FakeServer::start().await;
    // Telemetry every second, heartbeat every 3: after the outage a telemetry report is
    // usually ready before the heartbeat, and must not overtake the spooled ones.
    let setup = Setup::new(&server.url, 3, 1);
    let agent = setup.start();
    until(&server, "first telemetry", |s| !s.metrics.is_empty()).await;
    server.seen(|s| s.unavailable = true);
    let spool = setup.state_dir().join("spool");
    let spooled = |n: usize| {
        std::fs::read_dir(&spool)
            .map(|d| {
                d.filter_map(Result::ok)
                    .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
                    .count()
            })
            .unwrap_or(0)
            >= n
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while !spooled(3) {
        assert!(
            Instant::now() < deadline,
            "telemetry was not spooled while the server was down"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered_before = server.seen(|s| s.metrics.len());
    server.seen(|s| s.unavailable = false);
    until(&server, "the spool drained", |s| {
        s.metrics.len() >= delivered_before + 3
    })
    .await;
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
    server.seen(|s| {
        assert_eq!(s.duplicates, 0, "no report stored twice");
        let mut sorted = s.metrics.clone();
        sorted.sort();
        assert_eq!(
            s.metrics, sorted,
            "reports arrive oldest first (UUIDv7 order is time order)"
        );
    });
}

#[tokio::test]
async fn a_second_agent_on_the_same_state_directory_refuses_to_start() {
    let server = FakeServer::start().await;
    let setup = Setup::new(&server.url, 60, 600);
    let first = setup.start();
    until(&server, "the first agent running", |s| s.heartbeats >= 1).await;
    // The same pidfile, then the same state directory under another pidfile: the
    // state-directory lock refuses the latter.
    let config = std::fs::read_to_string(setup.config()).unwrap();
    let pid_line = format!(
        "pid_file = \"{}\"",
        setup.dir.path().join("agent.pid").display()
    );
    assert!(config.contains(&pid_line));
    let other_pid = setup.dir.path().join("other.pid");
    let other_config = setup.dir.path().join("other.toml");
    let other = config.replace(
        &pid_line,
        &format!("pid_file = \"{}\"", other_pid.display()),
    );
    std::fs::write(&other_config, other).unwrap();
    for config in [setup.config(), other_config] {
        let second = Command::new(env!("CARGO_BIN_EXE_muster-agent"))
            .args(["run", "--config"])
            .arg(&config)
            .output()
            .unwrap();
        assert!(!second.status.success());
        let stderr = String::from_utf8_lossy(&second.stderr);
        assert!(
            stderr.contains(&first.pid().to_string()),
            "names the pid holding it: {stderr}"
        );
    }
    let (code, _) = first.stop();
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn sighup_reloads_a_good_configuration_and_keeps_the_old_one_when_bad() {
    let server = FakeServer::start().await;
    let setup = Setup::new(&server.url, 60, 600);
    let agent = setup.start();
    until(&server, "the agent running", |s| s.heartbeats >= 1).await;

    std::fs::write(setup.config(), "[agent]\nheartbeat_interval = \"soon\"\n").unwrap();
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    agent.until_logged("configuration reload rejected").await;
    // A good configuration with a 1 s heartbeat: heartbeats speed up once it is loaded.
    setup.write_config(&server.url, 1, 600);
    agent.signal(nix::sys::signal::Signal::SIGHUP);
    let before = server.seen(|s| s.heartbeats);
    until(&server, "faster heartbeats after reload", |s| {
        s.heartbeats >= before + 2
    })
    .await;
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("configuration reload rejected"), "{log}");
    assert!(log.contains("configuration reloaded"), "{log}");
}

#[test]
fn a_bad_configuration_stops_the_agent_with_exit_78() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "[agent]\nheartbeat_interval = -5\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_muster-agent"))
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(78));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("agent.toml") && stderr.contains("heartbeat_interval"),
        "{stderr}"
    );
}

#[tokio::test]
async fn daemonize_detaches_writes_the_pidfile_logs_to_a_file_and_stops_on_sigterm() {
    let server = FakeServer::start().await;
    let setup = Setup::new(&server.url, 60, 600);
    let pid_file = setup.dir.path().join("agent.pid");
    // The command returns once the daemon is up; its own output is empty.
    let out = Command::new(env!("CARGO_BIN_EXE_muster-agent"))
        .args(["run", "--daemonize", "--config"])
        .arg(setup.config())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let pid: i32 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let daemon = nix::unistd::Pid::from_raw(pid);
    assert_ne!(
        nix::unistd::getsid(Some(daemon)).unwrap(),
        nix::unistd::getsid(None).unwrap()
    );
    until(&server, "the daemon enrolled and reported", |s| {
        !s.inventories.is_empty()
    })
    .await;

    // A second daemon refuses, naming the first.
    let second = Command::new(env!("CARGO_BIN_EXE_muster-agent"))
        .args(["run", "--daemonize", "--config"])
        .arg(setup.config())
        .output()
        .unwrap();
    assert!(!second.status.success());
    assert!(String::from_utf8_lossy(&second.stderr).contains(&pid.to_string()));

    let status = Command::new(env!("CARGO_BIN_EXE_muster-agent"))
        .args(["status", "--json", "--config"])
        .arg(setup.config())
        .output()
        .unwrap();
    assert_eq!(status.status.code(), Some(0));
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    assert_eq!(status["running"], true);
    assert_eq!(status["pid"], pid);

    nix::sys::signal::kill(daemon, nix::sys::signal::Signal::SIGTERM).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while pid_file.exists() {
        assert!(
            Instant::now() < deadline,
            "the daemon did not stop on SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let log = std::fs::read_to_string(setup.dir.path().join("agent.log")).unwrap();
    assert!(
        log.contains("muster-agent started") && log.contains("muster-agent stopped"),
        "{log}"
    );
    assert_no_secrets(&log, &server);
}

#[tokio::test]
async fn tells_systemd_it_is_ready_pings_the_watchdog_and_says_when_it_stops() {
    let server = FakeServer::start().await;
    let setup = Setup::new(&server.url, 60, 600);
    let socket_path = setup.dir.path().join("notify.sock");
    let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_muster-agent"))
        .args(["run", "--config"])
        .arg(setup.config())
        .env("NOTIFY_SOCKET", &socket_path)
        // A 400 ms watchdog: the agent pings every 200 ms.
        .env("WATCHDOG_USEC", "400000")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let agent = Agent {
        child: Some(child),
        log: setup.dir.path().join("none.log"),
    };
    let mut received = Vec::new();
    let mut buf = [0u8; 512];
    while !(received.iter().any(|m: &String| m.contains("READY=1"))
        && received.iter().filter(|m| m.contains("WATCHDOG=1")).count() >= 3)
    {
        let n = socket.recv(&mut buf).expect("a notification within 10 s");
        received.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
    loop {
        let n = socket.recv(&mut buf).expect("STOPPING=1 before the exit");
        let message = String::from_utf8_lossy(&buf[..n]).into_owned();
        if message.contains("STOPPING=1") {
            break;
        }
    }
}

#[tokio::test]
async fn reports_made_before_the_first_enrolment_are_kept_and_delivered_after_it() {
    let server = FakeServer::start().await;
    server.seen(|s| s.unavailable = true);
    let setup = Setup::new(&server.url, 1, 1);
    let agent = setup.start();
    let spool = setup.state_dir().join("spool");
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let items = std::fs::read_dir(&spool).map_or(0, |dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".item"))
                .count()
        });
        if items >= 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "nothing was spooled before enrolment"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(server.seen(|s| s.registrations), 0);
    server.seen(|s| s.unavailable = false);
    until(
        &server,
        "enrolment, then the spooled inventory and telemetry",
        |s| s.registrations == 1 && !s.inventories.is_empty() && s.metrics.len() >= 2,
    )
    .await;
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(server.seen(|s| s.duplicates), 0);
}

#[tokio::test]
async fn a_report_whose_answer_was_lost_is_resent_and_stored_once() {
    let server = FakeServer::start().await;
    let setup = Setup::new(&server.url, 1, 1);
    let agent = setup.start();
    until(&server, "first telemetry", |s| !s.metrics.is_empty()).await;
    server.seen(|s| s.lose_next_metrics_answer = true);
    until(&server, "the same report received again", |s| {
        s.duplicates >= 1
    })
    .await;
    until(&server, "telemetry flowing after the resend", |s| {
        s.metrics.len() >= 4
    })
    .await;
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
    server.seen(|s| {
        let mut unique = s.metrics.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), s.metrics.len(), "each report stored once");
        assert_eq!(
            s.duplicates, 1,
            "exactly the report whose answer was lost came twice"
        );
    });
}

#[tokio::test]
async fn kill_9_at_random_moments_loses_nothing_spooled_and_restarts_cleanly() {
    let server = FakeServer::start().await;
    let setup = Setup::new(&server.url, 1, 1);
    // Enrol first, then take the server away so everything goes to the spool.
    let agent = setup.start();
    until(&server, "enrolment", |s| s.heartbeats >= 1).await;
    let (code, _) = agent.stop();
    assert_eq!(code, Some(0));
    server.seen(|s| s.unavailable = true);
    for round in 0..6u64 {
        let agent = setup.start();
        // A spread of kill points: start-up, mid-scan, mid-spool-write, idle.
        let nanos = (u64::from(std::process::id()) * 7_919 + round * 310_019_999) % 2_000_000_000;
        tokio::time::sleep(Duration::from_millis(300) + Duration::from_nanos(nanos)).await;
        agent.signal(nix::sys::signal::Signal::SIGKILL);
        let (code, _) = agent.stop_killed();
        assert_eq!(code, None, "killed by a signal");
    }
    let spooled = std::fs::read_dir(setup.state_dir().join("spool"))
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().ends_with(".item"))
        .count();
    assert!(
        spooled >= 2,
        "the killed agents spooled reports ({spooled})"
    );
    server.seen(|s| s.unavailable = false);
    let agent = setup.start();
    let delivered = server.seen(|s| s.metrics.len());
    until(&server, "every spooled report delivered", |s| {
        s.metrics.len() >= delivered + 2
    })
    .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let left = std::fs::read_dir(setup.state_dir().join("spool"))
            .unwrap()
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.ends_with(".item") || name.ends_with(".tmp")
            })
            .count();
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} items stayed in the spool"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
    assert_eq!(server.seen(|s| s.duplicates), 0, "nothing stored twice");
}

#[tokio::test]
async fn a_spooled_report_the_server_keeps_failing_is_set_aside_not_blocking_the_rest() {
    let server = FakeServer::start().await;
    let setup = Setup::new(&server.url, 1, 1);
    let agent = setup.start();
    until(&server, "enrolment", |s| s.heartbeats >= 1).await;
    server.seen(|s| s.unavailable = true);
    let spool = setup.state_dir().join("spool");
    let items = || {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&spool)
            .unwrap()
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.to_string_lossy().ends_with("-telemetry.item"))
            .collect();
        names.sort();
        names
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while items().len() < 2 {
        assert!(Instant::now() < deadline, "telemetry was not spooled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // The oldest spooled report will make the server fail every time.
    let oldest = String::from_utf8_lossy(&std::fs::read(&items()[0]).unwrap()).into_owned();
    let at = oldest.find("\"report_id\":\"").unwrap() + "\"report_id\":\"".len();
    let poison: uuid::Uuid = oldest[at..at + 36].parse().unwrap();
    server.seen(|s| {
        s.failing_metrics.insert(poison);
        s.unavailable = false;
    });
    let before = server.seen(|s| s.metrics.len());
    until(&server, "the reports behind it delivered", |s| {
        s.metrics.len() >= before + 2
    })
    .await;
    let (code, log) = agent.stop();
    assert_eq!(code, Some(0), "{log}");
    assert!(log.contains("setting aside a spooled report"), "{log}");
    assert!(!server.seen(|s| s.metrics.contains(&poison)));
    let status: serde_json::Value =
        serde_json::from_slice(&std::fs::read(setup.state_dir().join("status.json")).unwrap())
            .unwrap();
    assert!(status["dropped_reports"].as_u64().unwrap() >= 1, "{status}");
}
