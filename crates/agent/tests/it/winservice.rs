//! The agent as a real Windows service, through its own `service` commands and the real
//! Service Control Manager (Wine's, in CI): install → Running with a pid → the agent enrols and
//! reports to a fake server → stop (the SCM's Stop control, the agent's one shutdown path) →
//! uninstall → the service is gone and the state is kept.
//!
//! `ProgramData` is pointed at a scratch directory for the `service` commands, so the
//! configuration, state and logs land there; the service is always told its `--config`. The
//! binary goes to the Wine prefix's own Program Files (see [`Scratch::layout`]).
#![cfg(windows)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use muster_agent::service;

use crate::fake_server::until;
use crate::fake_server::{ENROL_TOKEN, FakeServer, TENANT, until_reporting};
use crate::text;

/// `CARGO_BIN_EXE_*` is the host's path (`/work/...`); Windows APIs (the SCM's binary path)
/// need Wine's mapping of `/`, `Z:\`.
fn windows_path(path: &str) -> PathBuf {
    match path.strip_prefix('/') {
        Some(rest) => PathBuf::from(format!(r"Z:\{}", rest.replace('/', r"\"))),
        None => PathBuf::from(path),
    }
}

fn agent_exe() -> PathBuf {
    windows_path(env!("CARGO_BIN_EXE_muster-agent"))
}

fn real_program_files() -> PathBuf {
    std::env::var_os("ProgramFiles")
        .map_or_else(|| PathBuf::from(r"C:\Program Files"), PathBuf::from)
}

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn program_data(&self) -> PathBuf {
        self.dir.path().join("ProgramData")
    }

    /// Where `service install` puts things: ProgramData is the scratch one; ProgramFiles is
    /// the prefix's real one, since Wine gives every process its own `ProgramFiles` whatever
    /// the parent passed (the binary lands in `C:\Program Files\Muster`, and uninstall
    /// removes it).
    fn layout(&self) -> service::Layout {
        service::Layout::new(&real_program_files(), &self.program_data())
    }

    /// `muster-agent service ARGS` with this scratch's ProgramData. Async, so
    /// the fake server on this test's runtime keeps answering the service meanwhile.
    async fn service(&self, args: &[&str]) -> Output {
        tokio::process::Command::new(agent_exe())
            .arg("service")
            .args(args)
            .env("ProgramData", self.program_data())
            .output()
            .await
            .expect("muster-agent runs")
    }
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Removes a service left by an interrupted earlier run (the SCM outlives the test).
async fn clean_slate(scratch: &Scratch) {
    let out = scratch.service(&["uninstall"]).await;
    assert!(out.status.success(), "{}", text(&out));
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[tokio::test]
async fn installs_runs_reports_stops_and_uninstalls_as_a_real_service() {
    let server = FakeServer::start().await;
    let scratch = Scratch {
        dir: tempfile::tempdir().unwrap(),
    };
    clean_slate(&scratch).await;
    let layout = scratch.layout();
    // The configuration to install: the fake server, the Windows layout's own paths.
    let given = scratch.dir.path().join("given.toml");
    let log_file = layout.log_dir.join("agent.log");
    std::fs::write(
        &given,
        format!(
            "[agent]\nheartbeat_interval = 60\nsplay = 0\nlog_level = \"debug\"\n\
             state_dir = '{state}'\nlog_file = '{log}'\npid_file = '{pid}'\n\n\
             [api]\nbase_url = \"{url}\"\nauth_token = \"{ENROL_TOKEN}\"\n\
             tenant_id = \"{TENANT}\"\ntimeout = 2\nretry_attempts = 0\nretry_delay = 1\n",
            state = layout.state_dir.display(),
            log = log_file.display(),
            pid = layout.state_dir.join("agent.pid").display(),
            url = server.url,
        ),
    )
    .unwrap();

    // Install: binary copied, configuration installed, service created and started.
    let binary = agent_exe();
    let out = scratch
        .service(&[
            "install",
            "--binary",
            binary.to_str().unwrap(),
            "--config",
            given.to_str().unwrap(),
        ])
        .await;
    assert!(out.status.success(), "{}", text(&out));
    let said = stdout(&out);
    assert!(said.contains("service muster-agent: created"), "{said}");
    assert!(said.contains("running (pid "), "{said}");
    assert!(
        layout.binary.is_file(),
        "{}: {said}",
        layout.binary.display()
    );
    assert_eq!(read(&layout.config), read(&given));
    assert!(layout.state_dir.is_dir() && layout.log_dir.is_dir());

    // The SCM says Running, with the pid of the installed binary's process.
    let out = scratch.service(&["status"]).await;
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let said = stdout(&out);
    assert!(said.contains("state: Running (pid "), "{said}");
    assert!(said.contains("AutoStart"), "{said}");
    assert!(
        said.contains(&layout.binary.display().to_string()),
        "the service runs the installed copy: {said}"
    );
    let pid: u32 = said
        .split("(pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {said}"));
    assert_ne!(pid, 0);

    // The service is the agent: it enrols and reports.
    until_reporting(&server).await;
    // The agent's own pidfile names the process the SCM reports.
    let pid_file = layout.state_dir.join("agent.pid");
    assert_eq!(read(&pid_file).trim(), pid.to_string());

    // Stop: the SCM's Stop control goes through the agent's shutdown path.
    let out = scratch.service(&["stop"]).await;
    assert!(out.status.success(), "{}", text(&out));
    let out = scratch.service(&["status"]).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(stdout(&out).contains("state: Stopped"), "{}", text(&out));
    let log = read(&log_file);
    assert!(log.contains("stopping") || log.contains("stopped"), "{log}");
    assert!(!log.contains("muster-agent failed"), "{log}");
    assert!(!log.contains(ENROL_TOKEN), "no secret in the log");
    assert!(!pid_file.exists(), "the pidfile goes with a clean stop");
    assert!(layout.state_dir.join("enrolment.json").is_file());

    // Start again from the SCM, then uninstall while it runs.
    let out = scratch.service(&["start"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(stdout(&out).contains("running (pid "), "{}", text(&out));
    until(&server, "the second heartbeat", |s| s.heartbeats >= 2).await;
    assert_eq!(
        server.seen(|s| s.registrations),
        1,
        "the identity is reused"
    );

    let out = scratch.service(&["uninstall"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        stdout(&out).contains("service muster-agent: deleted"),
        "{}",
        text(&out)
    );
    let out = scratch.service(&["status"]).await;
    assert_eq!(out.status.code(), Some(4), "not installed: {}", text(&out));
    assert!(!layout.binary.exists(), "the binary is removed");
    assert!(
        layout.state_dir.join("enrolment.json").is_file(),
        "the state stays without --purge"
    );
    assert!(
        layout.config.is_file(),
        "the configuration stays without --purge"
    );

    // --purge removes ProgramData\Muster too.
    let out = scratch.service(&["uninstall", "--purge"]).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(!layout.data_dir.exists());
}

/// `%ProgramData%\Muster` is SYSTEM and Administrators only, and what is created below inherits
/// that.
#[test]
fn the_data_directory_is_restricted_to_system_and_administrators() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("Muster");
    std::fs::create_dir(&data).unwrap();
    service::restrict_dir(&data).expect("setting the DACL");
    let sddl = service::dacl_sddl(&data).expect("reading the DACL back");
    let entries = |sddl: &str| sddl.matches("(A;").count();
    if service::running_under_wine() && !sddl.starts_with("D:P") {
        // Wine 8 accepts SetNamedSecurityInfoW on a file but does not keep the DACL (it
        // reports its default owner-based one again): the ACL cannot be checked under Wine.
        // What can be: both calls succeed and the answer is a DACL.
        assert!(sddl.starts_with("D:") && entries(&sddl) >= 1, "{sddl}");
        return;
    }
    assert!(
        sddl.starts_with("D:P"),
        "protected from inheritance: {sddl}"
    );
    assert!(sddl.contains("(A;OICI;FA;;;SY)"), "{sddl}");
    assert!(sddl.contains("(A;OICI;FA;;;BA)"), "{sddl}");
    assert_eq!(entries(&sddl), 2, "no other entry: {sddl}");
    // Inherited by what is created below it.
    let state = data.join("state");
    std::fs::create_dir(&state).unwrap();
    let below = service::dacl_sddl(&state).unwrap();
    assert!(below.contains(";SY)") && below.contains(";BA)"), "{below}");
    assert_eq!(entries(&below), 2, "{below}");
}

#[test]
fn run_service_outside_the_scm_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("agent.toml");
    std::fs::write(&config, "[api]\nbase_url = \"http://127.0.0.1:9/api\"\n").unwrap();
    let started = Instant::now();
    let out = Command::new(agent_exe())
        .args(["run", "--service", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is for the Service Control Manager"),
        "{}",
        text(&out)
    );
    assert!(started.elapsed() < Duration::from_secs(20));
}

#[test]
fn the_default_paths_are_under_program_data() {
    let paths = muster_agent::config::DefaultPaths::windows(Path::new(r"C:\ProgramData"));
    assert_eq!(paths.config, Path::new(r"C:\ProgramData\Muster\agent.toml"));
    assert_eq!(paths.state_dir, Path::new(r"C:\ProgramData\Muster\state"));
    assert_eq!(
        paths.log_file,
        Path::new(r"C:\ProgramData\Muster\logs\agent.log")
    );
    let layout = service::Layout::new(Path::new(r"C:\Program Files"), Path::new(r"C:\ProgramData"));
    assert_eq!(
        layout.binary,
        Path::new(r"C:\Program Files\Muster\muster-agent.exe")
    );
    assert_eq!(
        service::launch_arguments(&layout.config),
        [
            "run",
            "--service",
            "--config",
            r"C:\ProgramData\Muster\agent.toml"
        ]
    );
}
