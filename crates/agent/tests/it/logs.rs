//! `muster-agent logs` in file mode: the last lines across the rotated copies, and `-f`
//! following the file as the agent's own rotation ([`RotatingFile`]) and logrotate's
//! `copytruncate` replace it. (Under systemd it runs `journalctl`, which needs a running
//! systemd: not here.)
#![cfg(unix)]

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use muster_agent::logging::RotatingFile;
use tracing_subscriber::fmt::MakeWriter;

const AGENT: &str = env!("CARGO_BIN_EXE_muster-agent");

fn config(dir: &Path, backups: u32) -> String {
    let path = dir.join("agent.toml");
    std::fs::write(
        &path,
        format!(
            "[agent]\nlog_file = \"{}/log/agent.log\"\nlog_backup_count = {backups}\n",
            dir.display()
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

/// Writes `line` (and a newline) through the agent's own rotating writer.
fn log(file: &RotatingFile, line: &str) {
    file.make_writer()
        .write_all(format!("{line}\n").as_bytes())
        .unwrap();
}

fn logs(args: &[&str]) -> std::process::Output {
    Command::new(AGENT)
        .arg("logs")
        .arg("--file")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn the_last_lines_reach_into_the_rotated_copies() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 3);
    let path = dir.path().join("log/agent.log");
    // 40-byte lines, 200-byte files: five lines a file, rotated by the agent's own writer.
    let file = RotatingFile::open(&path, 200, 3).unwrap();
    let lines: Vec<String> = (0..22)
        .map(|i| format!("line {i:02} {}", "x".repeat(31)))
        .collect();
    for line in &lines {
        log(&file, line);
    }
    assert!(dir.path().join("log/agent.log.3").exists());

    let out = logs(&["--config", &config, "-n", "8"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected: String = lines[14..].iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);

    // More than everything kept: all that is left, oldest first (five per file: 20 and 21
    // in the current one, 5 to 19 in .3 to .1; 0 to 4 went with a fourth copy).
    let out = logs(&["--config", &config, "-n", "100"]);
    let expected: String = lines[5..].iter().map(|l| format!("{l}\n")).collect();
    assert_eq!(String::from_utf8_lossy(&out.stdout), expected);
}

#[test]
fn a_missing_log_file_is_explained() {
    let dir = tempfile::tempdir().unwrap();
    let out = logs(&["--config", &config(dir.path(), 3)]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no log file") && stderr.contains("daemonized"),
        "{stderr}"
    );
}

/// `logs -f` as a child; its lines arrive on a channel.
struct Follower {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Follower {
    fn start(config: &str) -> Follower {
        let mut child = Command::new(AGENT)
            .args(["logs", "--file", "-f", "-n", "2", "--config", config])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Follower { child, lines }
    }

    #[track_caller]
    fn expect(&self, wanted: &[String]) {
        for want in wanted {
            let got = self
                .lines
                .recv_timeout(Duration::from_secs(10))
                .unwrap_or_else(|_| panic!("logs -f never printed {want:?}"));
            assert_eq!(&got, want);
        }
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn follow_prints_new_lines_across_rotations_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), 2);
    let path = dir.path().join("log/agent.log");
    let file = RotatingFile::open(&path, 200, 2).unwrap();
    let line = |i: usize| format!("line {i:02} {}", "x".repeat(31));
    for i in 0..3 {
        log(&file, &line(i));
    }
    let follower = Follower::start(&config);
    // The last two lines first.
    follower.expect(&[line(1), line(2)]);

    // Lines written from then on, through two of the agent's own rotations (five lines a
    // file): every one exactly once, in order.
    let batch: Vec<String> = (3..14).map(line).collect();
    for (n, l) in batch.iter().enumerate() {
        log(&file, l);
        if n % 4 == 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    follower.expect(&batch);
    assert!(dir.path().join("log/agent.log.2").exists(), "it did rotate");

    // logrotate's copytruncate: the file is emptied in place and written again.
    std::thread::sleep(Duration::from_millis(400));
    std::fs::OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(0)
        .unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let after: Vec<String> = (20..22).map(line).collect();
    for l in &after {
        log(&file, l);
    }
    follower.expect(&after);
}
