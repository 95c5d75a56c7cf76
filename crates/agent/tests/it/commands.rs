//! Remote commands through the real agent process: delivered by the long-poll or after a
//! heartbeat, verified, run, reported; stopped on cancel and on SIGTERM, locks released.

use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use muster_proto::api::{Command, CommandState};
use ring::signature::{Ed25519KeyPair, KeyPair as _};

use crate::fake_server::FakeServer;
use crate::run::{Setup, until};

fn key_pair() -> Ed25519KeyPair {
    let rng = ring::rand::SystemRandom::new();
    let der = Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
    Ed25519KeyPair::from_pkcs8(der.as_ref()).unwrap()
}

fn command(id: i64, kind: &str, body: &str) -> Command {
    Command {
        id,
        kind: kind.into(),
        command: body.into(),
        parameters: serde_json::json!({"env": {"GREETING": "world"}}),
        priority: 1,
        scheduled_for: None,
        timeout_s: Some(30),
        maintenance_window: false,
        locks: Vec::new(),
        package_manager: false,
        expires_at: None,
        signature: None,
    }
}

fn signed(pair: &Ed25519KeyPair, mut c: Command, agent_id: &str) -> Command {
    c.signature = Some(BASE64.encode(pair.sign(&c.signing_payload(agent_id)).as_ref()));
    c
}

fn agent_id(server: &FakeServer) -> String {
    server.seen(|s| s.agents.values().next().unwrap().0.clone())
}

fn alive(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|t| t.rsplit_once(')').map(|(_, r)| r.trim_start().to_owned()))
        .is_some_and(|r| !r.starts_with('Z'))
}

#[tokio::test]
async fn a_signed_script_arrives_by_long_poll_runs_and_reports_and_an_unsigned_one_never_runs() {
    let server = FakeServer::start().await;
    let pair = key_pair();
    server.seen(|s| s.signing_key = Some(BASE64.encode(pair.public_key().as_ref())));
    let setup = Setup::new(&server.url, 60, 600);
    setup.append_config(
        "\n[scheduling]\nkill_grace = 1\n\n[security]\nallowed_command_types = [\"script\", \"builtin\"]\n",
    );
    let agent = setup.start();
    until(&server, "enrolment and the first heartbeat", |s| {
        s.registrations == 1 && s.heartbeats >= 1
    })
    .await;
    let id = agent_id(&server);
    // Give the long-poll a moment to be open: then the command must arrive by the nudge, not
    // by the next heartbeat (a minute away).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let queued = Instant::now();
    let script = command(1, "script", "echo hello $GREETING; echo oops >&2; exit 0");
    server.seen(|s| s.queue(signed(&pair, script, &id)));
    until(&server, "the script's end", |s| {
        s.states(1).last() == Some(&CommandState::Succeeded)
    })
    .await;
    assert!(
        queued.elapsed() < Duration::from_secs(5),
        "{:?}",
        queued.elapsed()
    );
    server.seen(|s| {
        assert_eq!(
            s.states(1),
            [
                CommandState::Received,
                CommandState::Running,
                CommandState::Succeeded
            ]
        );
        let end = s.statuses.iter().rfind(|u| u.command_id == 1).unwrap();
        assert_eq!(end.stdout.as_deref(), Some("hello world\n"));
        assert_eq!(end.stderr.as_deref(), Some("oops\n"));
        assert_eq!(end.exit_code, Some(0));
        assert!(end.started_at.is_some() && end.finished_at.is_some());
        assert!(
            s.polls.contains(&50),
            "long-polls ask the server to wait: {:?}",
            s.polls
        );
    });

    // Unsigned, or signed by another key: rejected, never run.
    let marker = setup_marker(&setup);
    let unsigned = command(2, "script", &format!("touch {}", marker.display()));
    let forged = signed(
        &key_pair(),
        command(3, "script", &format!("touch {}", marker.display())),
        &id,
    );
    server.seen(|s| {
        s.queue(unsigned);
        s.queue(forged);
    });
    until(&server, "the refusals", |s| {
        s.states(2).last() == Some(&CommandState::Rejected)
            && s.states(3).last() == Some(&CommandState::Rejected)
    })
    .await;
    assert!(!marker.exists());

    // A running command is stopped, process tree and all, when it is cancelled.
    let pid_file = marker.with_file_name("pid");
    let long = command(
        4,
        "script",
        &format!("echo $$ > {}; sleep 60", pid_file.display()),
    );
    server.seen(|s| s.queue(signed(&pair, long, &id)));
    until(&server, "the long command running", |s| {
        s.states(4).last() == Some(&CommandState::Running)
    })
    .await;
    let pid = pid_in(&pid_file).await;
    server.seen(|s| s.cancel(4));
    until(&server, "the cancellation", |s| {
        s.states(4).last() == Some(&CommandState::Cancelled)
    })
    .await;
    assert!(!alive(pid), "the cancelled command's process is gone");
    // Off the runtime's thread: the fake server must keep answering while the agent stops.
    let (code, log) = tokio::task::spawn_blocking(move || agent.stop())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{log}");
}

/// The pid a command's script wrote to `file`, waited for at most 20 s.
async fn pid_in(file: &std::path::Path) -> i32 {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(text) = std::fs::read_to_string(file)
            && let Ok(pid) = text.trim().parse::<i32>()
        {
            return pid;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pid in {} after 20 s",
            file.display()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn setup_marker(setup: &Setup) -> std::path::PathBuf {
    let dir = setup.append_dir();
    dir.join("marker")
}

#[tokio::test]
async fn without_long_poll_a_heartbeat_saying_commands_wait_fetches_them() {
    let server = FakeServer::start().await;
    let setup = Setup::new(&server.url, 1, 600);
    setup.append_config("\n[scheduling]\nlong_poll = false\n");
    let agent = setup.start();
    until(&server, "enrolment and telemetry", |s| {
        s.registrations == 1 && s.metrics.len() == 1
    })
    .await;
    // Builtins are allowed by default; no key is known, so unsigned commands are taken.
    server.seen(|s| s.queue(command(7, "builtin", "telemetry_now")));
    until(&server, "the builtin's end", |s| {
        s.states(7).last() == Some(&CommandState::Succeeded)
    })
    .await;
    server.seen(|s| {
        assert_eq!(s.metrics.len(), 2, "telemetry_now sent telemetry");
        assert!(
            s.polls.iter().all(|w| *w == 0),
            "no long-poll: {:?}",
            s.polls
        );
    });
    // A command due in an hour waits in the queue: the heartbeat and the status file say so.
    let mut later = command(8, "builtin", "scan_now");
    later.scheduled_for = Some(jiff::Timestamp::now() + jiff::SignedDuration::from_hours(1));
    server.seen(|s| s.queue(later));
    until(&server, "a heartbeat with the queued command", |s| {
        s.states(8) == [CommandState::Received] && s.queue_depth == 1
    })
    .await;
    let status: serde_json::Value = serde_json::from_slice(
        &std::fs::read(setup.append_dir().join("state/status.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(status["queue_depth"], 1, "{status}");
    // Off the runtime's thread: the fake server must keep answering while the agent stops.
    let (code, log) = tokio::task::spawn_blocking(move || agent.stop())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{log}");
}

#[tokio::test]
async fn sigterm_stops_a_running_command_reports_it_and_releases_its_lock() {
    let server = FakeServer::start().await;
    let setup = Setup::new(&server.url, 60, 600);
    setup.append_config(
        "\n[scheduling]\nkill_grace = 1\n\n[security]\nallowed_command_types = [\"exec\"]\n",
    );
    let agent = setup.start();
    until(&server, "enrolment", |s| {
        s.registrations == 1 && s.heartbeats >= 1
    })
    .await;
    let pid_file = setup.append_dir().join("pid");
    let mut long = command(9, "exec", "sh");
    long.parameters = serde_json::json!({
        "args": ["-c", format!("echo $$ > {}; sleep 60", pid_file.display())]
    });
    long.locks = vec!["tenant:deploy".into()];
    server.seen(|s| s.queue(long));
    until(&server, "the command running", |s| {
        s.states(9).last() == Some(&CommandState::Running)
    })
    .await;
    assert_eq!(server.seen(|s| s.locks.len()), 1);
    let pid = pid_in(&pid_file).await;
    // The server must answer while the agent stops (it reports and releases then): wait for
    // the exit off the runtime's thread.
    let (code, log) = tokio::task::spawn_blocking(move || agent.stop())
        .await
        .unwrap();
    assert_eq!(code, Some(0), "{log}");
    assert!(!alive(pid), "the command's process was stopped");
    server.seen(|s| {
        let end = s.statuses.iter().rfind(|u| u.command_id == 9).unwrap();
        assert_eq!(end.status, CommandState::Failed, "{log}");
        assert!(
            end.reason.as_deref().unwrap().contains("shutting down"),
            "{end:?}"
        );
        assert!(s.locks.is_empty(), "the lock was released");
        assert_eq!(s.released.len(), 1);
    });
}
