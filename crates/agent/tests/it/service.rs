//! `muster-agent service install|uninstall|status` into scratch roots, checked file by file
//! (owner, mode, contents); the units checked by `systemd-analyze verify`; the System V init
//! script run for real against a daemonized agent and its pidfile.
#![cfg(unix)]

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::text;
use muster_agent::service;

const AGENT: &str = env!("CARGO_BIN_EXE_muster-agent");

fn run(args: &[&str]) -> Output {
    Command::new(AGENT)
        .args(args)
        .output()
        .expect("muster-agent runs")
}

fn ok(out: Output) -> Output {
    assert!(out.status.success(), "{}", text(&out));
    out
}

/// Whether this process may chown files to other users, as installing needs. CI runs as root.
fn can_chown() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    eprintln!("skipped: installing sets owners, which needs root (CI runs as root)");
    false
}

/// Asserts the owner and permission bits of `path` (not following a symlink).
#[track_caller]
fn assert_file(path: &Path, mode: u32, uid: u32, gid: u32) {
    let meta =
        std::fs::symlink_metadata(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        meta.permissions().mode() & 0o7777,
        mode,
        "{}: mode {:o}",
        path.display(),
        meta.permissions().mode() & 0o7777
    );
    assert_eq!(
        (meta.uid(), meta.gid()),
        (uid, gid),
        "{}: owner",
        path.display()
    );
}

#[track_caller]
fn assert_gone(path: &Path) {
    assert!(
        std::fs::symlink_metadata(path).is_err(),
        "{} should not exist",
        path.display()
    );
}

fn at(root: &Path, path: &str) -> PathBuf {
    root.join(path.trim_start_matches('/'))
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The `muster` group's id as the root's `etc/group` records it.
fn muster_gid(root: &Path) -> u32 {
    service::lookup_id(&at(root, "/etc/group"), "muster")
        .unwrap()
        .expect("group muster recorded")
}

struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        Scratch {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    fn root(&self) -> PathBuf {
        self.dir.path().join("root")
    }

    fn root_str(&self) -> String {
        self.root().to_str().unwrap().to_owned()
    }

    /// `muster-agent service ACTION --root ROOT [FLAGS]`, which must succeed.
    fn service(&self, action: &str, flags: &[&str]) -> Output {
        let root = self.root_str();
        let mut args = vec!["service", action, "--root", &root];
        args.extend_from_slice(flags);
        ok(run(&args))
    }

    /// A configuration file outside the root.
    fn config(&self, name: &str, body: &str) -> String {
        let path = self.dir.path().join(name);
        std::fs::write(&path, body).unwrap();
        path.to_str().unwrap().to_owned()
    }
}

#[test]
fn install_into_a_root_writes_every_file_with_its_owner_and_mode() {
    if !can_chown() {
        return;
    }
    let scratch = Scratch::new();
    let root = scratch.root();
    // An existing system user on the highest system id: the new one must not take it.
    std::fs::create_dir_all(at(&root, "/etc")).unwrap();
    std::fs::write(
        at(&root, "/etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\n_apt:x:999:65534::/nonexistent:/usr/sbin/nologin\n",
    )
    .unwrap();
    std::fs::write(
        at(&root, "/etc/group"),
        "root:x:0:\nsystemd-journal:x:999:\n",
    )
    .unwrap();
    let config = scratch.config(
        "agent.toml",
        "[api]\nbase_url = \"https://m.example/api\"\n",
    );
    let out = scratch.service("install", &["--binary", AGENT, "--config", &config]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("not started (--root)"), "{stdout}");

    // The user and group, recorded as useradd --system would: the highest free system id.
    let passwd = read(&at(&root, "/etc/passwd"));
    assert!(
        passwd.ends_with("muster:x:998:998:Muster:/var/lib/muster:/usr/sbin/nologin\n"),
        "{passwd}"
    );
    assert!(read(&at(&root, "/etc/group")).ends_with("muster:x:998:\n"));
    let gid = muster_gid(&root);
    assert_eq!(gid, 998);

    let binary = at(&root, "/usr/local/bin/muster-agent");
    assert_file(&binary, 0o755, 0, 0);
    assert_eq!(
        std::fs::read(&binary).unwrap(),
        std::fs::read(AGENT).unwrap()
    );
    assert_file(&at(&root, "/etc/muster"), 0o750, 0, gid);
    let installed_config = at(&root, "/etc/muster/agent.toml");
    assert_file(&installed_config, 0o640, 0, gid);
    assert_eq!(read(&installed_config), read(Path::new(&config)));
    assert_file(&at(&root, "/var/lib/muster"), 0o750, 0, gid);
    assert_file(&at(&root, "/var/log/muster"), 0o750, 0, gid);

    let unit = at(&root, "/etc/systemd/system/muster-agent.service");
    assert_file(&unit, 0o644, 0, 0);
    let unit_text = read(&unit);
    assert_eq!(unit_text, service::unit_text("root"));
    assert!(
        unit_text.contains(
            "\nExecStart=/usr/local/bin/muster-agent run --config /etc/muster/agent.toml\n"
        )
    );
    assert!(!unit_text.contains("/usr/bin/muster-agent"), "{unit_text}");
    assert!(!unit_text.contains("\nUser="), "root runs it: no User=");
    let wants = at(
        &root,
        "/etc/systemd/system/multi-user.target.wants/muster-agent.service",
    );
    assert_eq!(
        std::fs::read_link(&wants).unwrap(),
        Path::new("/etc/systemd/system/muster-agent.service")
    );
    // Nothing of the System V kind.
    assert_gone(&at(&root, "/etc/init.d/muster-agent"));
    assert_gone(&at(&root, "/etc/rc2.d/S01muster-agent"));

    // `service status` in the root: installed and enabled.
    let status = ok(run(&["service", "status", "--root", &scratch.root_str()]));
    let shown = String::from_utf8_lossy(&status.stdout);
    assert!(
        shown.contains("/etc/systemd/system/muster-agent.service: installed, enabled"),
        "{shown}"
    );

    // Again with another configuration: the installed one is kept, unless --force; the user
    // is not added twice.
    let other = scratch.config("other.toml", "[agent]\nheartbeat_interval = 30\n");
    let args = [
        "service",
        "install",
        "--root",
        &scratch.root_str(),
        "--binary",
        AGENT,
    ];
    let out = ok(run(&[&args[..], &["--config", &other]].concat()));
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept the existing"));
    assert_eq!(read(&installed_config), read(Path::new(&config)));
    ok(run(&[&args[..], &["--config", &other, "--force"]].concat()));
    assert_eq!(read(&installed_config), read(Path::new(&other)));
    assert_file(&installed_config, 0o640, 0, gid);
    let entries = |file: &str| {
        read(&at(&root, file))
            .lines()
            .filter(|l| l.starts_with("muster:"))
            .count()
    };
    assert_eq!((entries("/etc/passwd"), entries("/etc/group")), (1, 1));

    // Uninstall keeps configuration, state and logs.
    std::fs::write(at(&root, "/var/lib/muster/agent.key"), "key").unwrap();
    std::fs::write(at(&root, "/var/log/muster/agent.log"), "log").unwrap();
    let out = scratch.service("uninstall", &[]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("kept /etc/muster/agent.toml"));
    assert_gone(&binary);
    assert_gone(&unit);
    assert_gone(&wants);
    assert_eq!(read(&installed_config), read(Path::new(&other)));
    assert_eq!(read(&at(&root, "/var/lib/muster/agent.key")), "key");
    assert_eq!(read(&at(&root, "/var/log/muster/agent.log")), "log");
    let status = run(&["service", "status", "--root", &scratch.root_str()]);
    assert_eq!(status.status.code(), Some(4), "{}", text(&status));

    // --purge removes them; the user stays (Debian's rule for system users).
    scratch.service("uninstall", &["--purge"]);
    assert_gone(&installed_config);
    assert_gone(&at(&root, "/etc/muster"));
    assert_gone(&at(&root, "/var/lib/muster"));
    assert_gone(&at(&root, "/var/log/muster"));
    assert!(read(&at(&root, "/etc/passwd")).contains("\nmuster:x:998:"));
}

#[test]
fn install_without_a_configuration_writes_the_template_and_an_empty_root_gets_passwd() {
    if !can_chown() {
        return;
    }
    let scratch = Scratch::new();
    let root = scratch.root();
    scratch.service("install", &["--binary", AGENT]);
    // No passwd at all before: the files are created, the first system id taken.
    assert_eq!(
        read(&at(&root, "/etc/passwd")),
        "muster:x:999:999:Muster:/var/lib/muster:/usr/sbin/nologin\n"
    );
    assert_eq!(read(&at(&root, "/etc/group")), "muster:x:999:\n");
    assert_file(&at(&root, "/etc/passwd"), 0o644, 0, 0);
    let config = at(&root, "/etc/muster/agent.toml");
    assert_eq!(read(&config), service::CONFIG_TEMPLATE);
    assert_file(&config, 0o640, 0, 999);
    // The template is a valid configuration.
    ok(run(&[
        "config",
        "check",
        "--quiet",
        "--config",
        config.to_str().unwrap(),
    ]));
}

#[test]
fn install_for_an_unprivileged_user_gives_it_the_state_and_a_runtime_directory() {
    if !can_chown() {
        return;
    }
    let scratch = Scratch::new();
    let root = scratch.root();
    let args = [
        "service",
        "install",
        "--root",
        &scratch.root_str(),
        "--binary",
        AGENT,
    ];
    // A user that does not exist is refused.
    let out = run(&[&args[..], &["--user", "nobody-here"]].concat());
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("no user nobody-here"),
        "{}",
        text(&out)
    );
    ok(run(&[&args[..], &["--user", "muster"]].concat()));
    let uid = service::lookup_id(&at(&root, "/etc/passwd"), "muster")
        .unwrap()
        .unwrap();
    let gid = muster_gid(&root);
    assert_file(&at(&root, "/var/lib/muster"), 0o750, uid, gid);
    assert_file(&at(&root, "/var/log/muster"), 0o750, uid, gid);
    // The configuration stays root's: the agent may read it, not change it.
    assert_file(&at(&root, "/etc/muster/agent.toml"), 0o640, 0, gid);
    let unit = read(&at(&root, "/etc/systemd/system/muster-agent.service"));
    assert!(
        unit.contains(
            "[Service]\nUser=muster\nGroup=muster\nRuntimeDirectory=muster-agent\n\
             Environment=MUSTER_AGENT_PID_FILE=/run/muster-agent/muster-agent.pid\n"
        ),
        "{unit}"
    );
}

#[test]
fn sysv_install_writes_the_script_its_defaults_logrotate_and_runlevel_links() {
    if !can_chown() {
        return;
    }
    let scratch = Scratch::new();
    let root = scratch.root();
    scratch.service("install", &["--sysv", "--binary", AGENT]);
    let script = at(&root, "/etc/init.d/muster-agent");
    assert_file(&script, 0o755, 0, 0);
    let body = read(&script);
    assert!(
        body.starts_with("#!/bin/sh\n### BEGIN INIT INFO\n# Provides:          muster-agent\n")
    );
    assert!(body.contains("\nDAEMON=/usr/local/bin/muster-agent\n"));
    let defaults = at(&root, "/etc/default/muster-agent");
    assert_file(&defaults, 0o644, 0, 0);
    assert_eq!(read(&defaults), service::defaults_text("root"));
    let logrotate = at(&root, "/etc/logrotate.d/muster-agent");
    assert_file(&logrotate, 0o644, 0, 0);
    assert_eq!(read(&logrotate), service::LOGROTATE);
    for (dir, name) in [
        ("rc0.d", "K01"),
        ("rc1.d", "K01"),
        ("rc2.d", "S01"),
        ("rc3.d", "S01"),
        ("rc4.d", "S01"),
        ("rc5.d", "S01"),
        ("rc6.d", "K01"),
    ] {
        let link = at(&root, &format!("/etc/{dir}/{name}muster-agent"));
        assert_eq!(
            std::fs::read_link(&link).unwrap(),
            Path::new("../init.d/muster-agent")
        );
    }
    assert_gone(&at(&root, "/etc/systemd/system/muster-agent.service"));

    scratch.service("uninstall", &[]);
    assert_gone(&script);
    assert_gone(&logrotate);
    assert_gone(&at(&root, "/etc/rc2.d/S01muster-agent"));
    assert_gone(&at(&root, "/etc/rc0.d/K01muster-agent"));
    // The defaults are configuration: kept until purge.
    assert!(defaults.exists());
    scratch.service("uninstall", &["--purge"]);
    assert_gone(&defaults);
}

#[test]
fn install_on_the_live_system_without_systemd_says_so_and_changes_nothing() {
    if Path::new("/run/systemd/system").is_dir() {
        eprintln!("skipped: systemd runs here, so a live install would really install");
        return;
    }
    let before = std::fs::symlink_metadata("/usr/local/bin/muster-agent").is_ok();
    let unit_before = std::fs::symlink_metadata(service::UNIT).is_ok();
    let out = run(&["service", "install", "--binary", AGENT]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    if nix::unistd::geteuid().is_root() {
        assert!(stderr.contains("systemd is not running"), "{stderr}");
        assert!(stderr.contains("nothing was installed"), "{stderr}");
    } else {
        assert!(stderr.contains("needs root"), "{stderr}");
    }
    assert_eq!(
        std::fs::symlink_metadata("/usr/local/bin/muster-agent").is_ok(),
        before
    );
    assert_eq!(
        std::fs::symlink_metadata(service::UNIT).is_ok(),
        unit_before
    );
}

/// Runs `systemd-analyze verify` on units inside `root` (whose `usr/lib/systemd/system` holds
/// the system's units, so dependencies such as `multi-user.target` resolve). verify resolves
/// `ExecStart=` and the other commands inside `--root`: the binaries must be there.
fn verify(root: &Path, units: &[&str]) -> Output {
    Command::new("systemd-analyze")
        .arg("verify")
        .arg(format!("--root={}", root.display()))
        .args(units)
        .output()
        .expect("systemd-analyze runs")
}

/// Copies the system's unit directory and `kill` (ExecReload) into `root`.
fn prepare_verify_root(root: &Path) {
    let units = at(root, "/usr/lib/systemd");
    std::fs::create_dir_all(&units).unwrap();
    let copied = Command::new("cp")
        .args(["-a", "/lib/systemd/system"])
        .arg(&units)
        .status()
        .unwrap();
    assert!(copied.success());
    std::fs::create_dir_all(at(root, "/bin")).unwrap();
    std::fs::copy("/bin/kill", at(root, "/bin/kill")).unwrap();
}

#[test]
fn systemd_analyze_verifies_both_units() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        panic!("systemd-analyze is missing: install the systemd package (.ci/run does)");
    }
    if !can_chown() {
        return;
    }
    let scratch = Scratch::new();
    let root = scratch.root();
    scratch.service("install", &["--binary", AGENT]);
    prepare_verify_root(&root);
    // The server's unit as the package installs it, with a stand-in binary: this crate's tests
    // have no muster-server (packaging/check-debs.sh verifies it with the real one).
    let server_unit =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../packaging/systemd/muster-server.service");
    std::fs::copy(
        &server_unit,
        at(&root, "/etc/systemd/system/muster-server.service"),
    )
    .unwrap();
    std::fs::create_dir_all(at(&root, "/usr/bin")).unwrap();
    std::fs::copy("/bin/true", at(&root, "/usr/bin/muster-server")).unwrap();

    let units = [
        "/etc/systemd/system/muster-agent.service",
        "/etc/systemd/system/muster-server.service",
    ];
    let out = verify(&root, &units);
    assert!(out.status.success(), "{}", text(&out));
    // verify reports unknown keys and bad values as warnings and still exits 0: any output
    // is a failure.
    assert!(
        out.stderr.is_empty() && out.stdout.is_empty(),
        "{}",
        text(&out)
    );

    // The check can fail: a misspelt key is reported, a missing binary fails it.
    let agent_unit = at(&root, units[0]);
    let good = read(&agent_unit);
    std::fs::write(&agent_unit, good.replace("WatchdogSec=", "WatchdogSecs=")).unwrap();
    let out = verify(&root, &units[..1]);
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Unknown key 'WatchdogSecs'"),
        "{}",
        text(&out)
    );
    std::fs::write(&agent_unit, good).unwrap();
    std::fs::remove_file(at(&root, "/usr/local/bin/muster-agent")).unwrap();
    let out = verify(&root, &units[..1]);
    assert!(!out.status.success(), "{}", text(&out));
}

/// A `--sysv` install in a scratch root, its `/etc/default/muster-agent` pointed at the
/// root's binary and a configuration whose pidfile, state and log are in the scratch
/// directory.
struct SysvSetup {
    scratch: Scratch,
    defaults: PathBuf,
    pid_file: PathBuf,
}

impl SysvSetup {
    fn new() -> SysvSetup {
        let scratch = Scratch::new();
        let dir = scratch.dir.path();
        let pid_file = dir.join("run/muster-agent.pid");
        std::fs::create_dir_all(dir.join("run")).unwrap();
        let config = scratch.config(
            "agent.toml",
            &format!(
                "[agent]\nstate_dir = \"{d}/state\"\npid_file = \"{d}/run/muster-agent.pid\"\n\
                 log_file = \"{d}/log/agent.log\"\nsplay = 0\n\
                 [api]\nbase_url = \"http://127.0.0.1:9/api\"\n",
                d = dir.display()
            ),
        );
        scratch.service(
            "install",
            &["--sysv", "--binary", AGENT, "--config", &config],
        );
        let root = scratch.root();
        let defaults = at(&root, "/etc/default/muster-agent");
        std::fs::write(
            &defaults,
            format!(
                "DAEMON={}\nCONFIG={}\n",
                at(&root, "/usr/local/bin/muster-agent").display(),
                at(&root, "/etc/muster/agent.toml").display()
            ),
        )
        .unwrap();
        SysvSetup {
            scratch,
            defaults,
            pid_file,
        }
    }

    fn script(&self, action: &str, path: &str) -> Output {
        Command::new("sh")
            .arg(at(&self.scratch.root(), "/etc/init.d/muster-agent"))
            .arg(action)
            .env("MUSTER_AGENT_DEFAULTS", &self.defaults)
            .env("PATH", path)
            .output()
            .unwrap()
    }

    fn pid(&self) -> u32 {
        read(&self.pid_file)
            .trim()
            .parse()
            .expect("a pid in the pidfile")
    }
}

fn alive(pid: u32) -> bool {
    // A zombie is not running; /proc/PID/stat's state field says Z.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z'))
    })
}

fn sysv_life(path: &str) {
    if !can_chown() {
        return;
    }
    let setup = SysvSetup::new();
    let status = setup.script("status", path);
    assert_eq!(
        status.status.code(),
        Some(3),
        "not running yet: {}",
        text(&status)
    );

    ok(setup.script("start", path));
    let pid = setup.pid();
    assert!(alive(pid));
    // It is the installed binary that runs, daemonized (its parent is init, not us), at the
    // init script's nice level.
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/exe")).unwrap(),
        at(&setup.scratch.root(), "/usr/local/bin/muster-agent")
    );
    let stat = read(Path::new(&format!("/proc/{pid}/stat")));
    let fields: Vec<&str> = stat.rsplit_once(") ").unwrap().1.split(' ').collect();
    assert_ne!(fields[1].parse::<u32>().unwrap(), std::process::id());
    // nice(1) adds to the caller's level (cargo may run under nice 19); the kernel caps at 19.
    let own = read(Path::new("/proc/self/stat"));
    let own_nice: i32 = own
        .rsplit_once(") ")
        .unwrap()
        .1
        .split(' ')
        .nth(16)
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(
        fields[16].parse::<i32>().unwrap(),
        (own_nice + 10).min(19),
        "nice level"
    );
    let status = ok(setup.script("status", path));
    assert!(
        String::from_utf8_lossy(&status.stdout).contains(&pid.to_string()),
        "{}",
        text(&status)
    );

    // Starting again leaves the one agent; reload (SIGHUP) keeps it running.
    let again = ok(setup.script("start", path));
    assert!(String::from_utf8_lossy(&again.stdout).contains("already running"));
    assert_eq!(setup.pid(), pid);
    ok(setup.script("reload", path));
    std::thread::sleep(Duration::from_millis(200));
    assert!(alive(pid), "SIGHUP reloads, it does not stop the agent");
    ok(setup.script("status", path));

    ok(setup.script("stop", path));
    let deadline = Instant::now() + Duration::from_secs(10);
    while alive(pid) {
        assert!(Instant::now() < deadline, "the agent did not stop");
        std::thread::sleep(Duration::from_millis(20));
    }
    let status = setup.script("status", path);
    assert_eq!(status.status.code(), Some(3), "{}", text(&status));
    // Stopping what is stopped is fine.
    ok(setup.script("stop", path));
    let log = read(&setup.scratch.dir.path().join("log/agent.log"));
    assert!(log.contains("INFO"), "the daemon logged to its file: {log}");
}

#[test]
fn sysv_script_starts_stops_and_reports_a_daemonized_agent_with_start_stop_daemon() {
    if !Path::new("/usr/sbin/start-stop-daemon").exists() {
        eprintln!("skipped: no start-stop-daemon (dpkg's) here; the plain-shell test still runs");
        return;
    }
    sysv_life("/usr/sbin:/usr/bin:/sbin:/bin");
}

#[test]
fn sysv_script_starts_stops_and_reports_a_daemonized_agent_in_plain_shell() {
    // Without /usr/sbin in PATH the script finds no start-stop-daemon.
    sysv_life("/usr/bin:/bin");
}
