//! Service life: the pidfile lock against other real processes (util-linux `flock(1)` as an
//! independent holder), and `sd_notify` datagrams sent by a child process that found the
//! socket in its environment, as under systemd.
//!
//! `--daemonize` itself is tested in the unit tests of `daemon.rs` (a re-executed test binary
//! detaches and reports on itself), since `muster-agent run` is not wired to it here.
#![cfg(unix)] // flock(1), Unix sockets and pidfile locks exist on Unix only

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use muster_agent::daemon::{self, PidFile, PidFileError};

/// Another process holding `path` under an exclusive `flock`, with its pid written in it, as a
/// running agent would. The lock goes when the value drops.
pub struct FlockHolder {
    child: Child,
    pub pid: u32,
}

impl FlockHolder {
    pub fn hold(path: &Path) -> FlockHolder {
        // flock(1) locks, then runs the shell, whose pid (kept by exec) goes in the file; `cat`
        // waits for our end of its stdin to close.
        let mut child = Command::new("flock")
            .args(["--exclusive", "--nonblock"])
            .arg(path)
            .args(["sh", "-c", "echo $$ > \"$0\"; exec cat"])
            .arg(path)
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("flock(1) from util-linux runs");
        let deadline = Instant::now() + Duration::from_secs(5);
        let pid = loop {
            if let Some(pid) = daemon::read_pid(path) {
                break pid;
            }
            if let Some(status) = child.try_wait().unwrap() {
                panic!("flock exited early: {status}");
            }
            assert!(Instant::now() < deadline, "flock never wrote its pid");
            std::thread::sleep(Duration::from_millis(5));
        };
        FlockHolder { child, pid }
    }

    /// Lets go of the lock and waits for the holder to be gone.
    pub fn release(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        drop(self.child.stdin.take());
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = self.child.kill();
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for FlockHolder {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Whether util-linux `flock(1)` can take `path` right now.
fn flock_can_take(path: &Path) -> bool {
    Command::new("flock")
        .args(["--exclusive", "--nonblock"])
        .arg(path)
        .arg("true")
        .status()
        .unwrap()
        .success()
}

fn pid_path() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("muster-agent.pid");
    (dir, path)
}

#[test]
fn a_held_pidfile_locks_out_other_processes_until_dropped() {
    use std::os::unix::fs::PermissionsExt;

    let (_dir, path) = pid_path();
    let pidfile = PidFile::acquire(&path).unwrap();
    assert_eq!(pidfile.path(), path);
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{}\n", std::process::id())
    );
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644);
    assert!(!flock_can_take(&path), "another process cannot lock it");
    assert_eq!(daemon::is_running(&path), Some(std::process::id()));

    // A second agent, even in this process (another open file), is refused with the pid.
    let err = PidFile::acquire(&path).unwrap_err();
    assert!(
        matches!(err, PidFileError::Held { pid: Some(pid), .. } if pid == std::process::id()),
        "{err:?}"
    );

    drop(pidfile);
    assert!(!path.exists(), "dropping removes the pidfile");
    assert_eq!(daemon::is_running(&path), None);
    assert!(flock_can_take(&path));
}

#[test]
fn a_pidfile_another_process_holds_is_refused_with_its_pid() {
    let (_dir, path) = pid_path();
    let holder = FlockHolder::hold(&path);
    let err = PidFile::acquire(&path).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "another muster-agent (pid {}) holds {}",
            holder.pid,
            path.display()
        )
    );
    assert_eq!(daemon::is_running(&path), Some(holder.pid));
    // The refusal left the holder's file alone.
    assert_eq!(daemon::read_pid(&path), Some(holder.pid));

    holder.release();
    assert_eq!(daemon::is_running(&path), None);
    let pidfile = PidFile::acquire(&path).unwrap();
    assert_eq!(daemon::read_pid(&path), Some(std::process::id()));
    drop(pidfile);
}

#[test]
fn a_stale_pidfile_neither_blocks_nor_claims_a_running_agent() {
    let (_dir, path) = pid_path();
    // What a crashed agent leaves: a pid (maybe reused by now) and no lock.
    std::fs::write(&path, format!("{}\n", std::process::id())).unwrap();
    assert_eq!(daemon::read_pid(&path), Some(std::process::id()));
    assert_eq!(daemon::is_running(&path), None);
    std::fs::write(&path, "4194303\n").unwrap();
    let pidfile = PidFile::acquire(&path).unwrap();
    assert_eq!(
        std::fs::read_to_string(&path).unwrap(),
        format!("{}\n", std::process::id()),
        "the old, longer pid is fully overwritten"
    );
    drop(pidfile);
}

#[test]
fn a_pidfile_in_a_missing_directory_is_an_io_error_naming_it() {
    let (dir, _) = pid_path();
    let path = dir.path().join("absent/agent.pid");
    let err = PidFile::acquire(&path).unwrap_err();
    assert!(matches!(err, PidFileError::Io { .. }), "{err:?}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(daemon::read_pid(&path), None);
    assert_eq!(daemon::is_running(&path), None);
}

const NOTIFY_CHILD: &str = "MUSTER_IT_NOTIFY_CHILD";

/// Runs this test binary again, as the child of `sd_notify_reaches_the_socket_named_in_the_environment`,
/// with `env`.
fn notify_child(env: &[(&str, &str)]) {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([
            "--exact",
            "daemon::sd_notify_reaches_the_socket_named_in_the_environment",
            "--test-threads=1",
        ])
        .env(NOTIFY_CHILD, "1")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (name, value) in env {
        command.env(name, value);
    }
    let out = command.output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn received(socket: &UnixDatagram) -> Vec<String> {
    socket.set_nonblocking(true).unwrap();
    let mut messages = Vec::new();
    let mut buf = [0u8; 512];
    while let Ok(n) = socket.recv(&mut buf) {
        messages.push(String::from_utf8(buf[..n].to_vec()).unwrap());
    }
    messages
}

fn monotonic_usec() -> u64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    now.tv_sec() as u64 * 1_000_000 + now.tv_nsec() as u64 / 1_000
}

#[test]
fn sd_notify_reaches_the_socket_named_in_the_environment() {
    if std::env::var_os(NOTIFY_CHILD).is_some() {
        // The child: what the agent does under systemd.
        daemon::notify("READY=1");
        daemon::notify_status("inventory\nsent");
        daemon::notify(&format!("X_WATCHDOG={:?}", daemon::watchdog_interval()));
        daemon::notify_reloading();
        daemon::notify("STOPPING=1");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("notify");
    let socket = UnixDatagram::bind(&path).unwrap();
    let before = monotonic_usec();
    notify_child(&[
        ("NOTIFY_SOCKET", path.to_str().unwrap()),
        ("WATCHDOG_USEC", "20000000"),
    ]);
    let after = monotonic_usec();
    let messages = received(&socket);
    assert_eq!(messages.len(), 5, "{messages:?}");
    assert_eq!(messages[0], "READY=1");
    assert_eq!(messages[1], "STATUS=inventory sent");
    assert_eq!(messages[2], "X_WATCHDOG=Some(20s)");
    let usec: u64 = messages[3]
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("{:?}", messages[3]))
        .parse()
        .unwrap();
    assert!((before..=after).contains(&usec), "{before} {usec} {after}");
    assert_eq!(messages[4], "STOPPING=1");

    // A watchdog meant for another process (WATCHDOG_PID) is not ours to ping.
    notify_child(&[
        ("NOTIFY_SOCKET", path.to_str().unwrap()),
        ("WATCHDOG_USEC", "20000000"),
        ("WATCHDOG_PID", "1"),
    ]);
    assert_eq!(received(&socket)[2], "X_WATCHDOG=None");

    // systemd's abstract sockets (`@name`) work the same.
    #[cfg(target_os = "linux")]
    {
        use std::os::linux::net::SocketAddrExt;
        let name = format!("muster-it-notify-{}", std::process::id());
        let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let socket = UnixDatagram::bind_addr(&addr).unwrap();
        notify_child(&[("NOTIFY_SOCKET", &format!("@{name}"))]);
        assert_eq!(received(&socket)[0], "READY=1");
    }

    // Without a socket to reach the agent carries on: the child still exits 0.
    notify_child(&[("NOTIFY_SOCKET", dir.path().join("gone").to_str().unwrap())]);
}

#[test]
fn a_symlink_at_the_pidfile_path_is_refused_and_its_target_untouched() {
    let (dir, path) = pid_path();
    let target = dir.path().join("precious");
    std::fs::write(&target, "keep me\n").unwrap();
    std::os::unix::fs::symlink(&target, &path).unwrap();
    let err = PidFile::acquire(&path).unwrap_err();
    assert!(matches!(err, PidFileError::Io { .. }), "{err:?}");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep me\n");
}
