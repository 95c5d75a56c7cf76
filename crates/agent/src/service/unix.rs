//! `muster-agent service install|uninstall|status`: the agent as a system service on a machine
//! without the muster-agent package (seed 001's `install_linux.sh`).
//!
//! Everything is written below a root directory: `/`, or `--root DIR` for an image or a test.
//! With `--root` nothing on the running system is touched: no `systemctl`, no `useradd`; the
//! `muster` user and group are recorded in `DIR/etc/passwd` and `DIR/etc/group` as
//! `useradd --root` would, and enabling is the symlink `systemctl enable` would make. Owners
//! are always looked up in the root's own `etc/passwd` and `etc/group`.
//!
//! The unit, the init script and the logrotate file are the package's own
//! (`packaging/`), with `/usr/bin/muster-agent` replaced by `/usr/local/bin/muster-agent`, where
//! a hand-installed binary belongs.

use std::fs;
use std::io;
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

use anyhow::{Context as _, bail};

use crate::cli::{ServiceControlArgs, ServiceInstallArgs, ServiceStatusArgs, ServiceUninstallArgs};

/// The systemd unit the package installs.
pub const SYSTEMD_UNIT: &str = include_str!("../../../../packaging/systemd/muster-agent.service");
/// The System V init script the package installs.
pub const SYSV_SCRIPT: &str = include_str!("../../../../packaging/sysv/muster-agent");
/// The logrotate file for the log file of a daemonized agent.
pub const LOGROTATE: &str = include_str!("../../../../packaging/logrotate/muster-agent");
/// The commented configuration template.
pub const CONFIG_TEMPLATE: &str = include_str!("../../../../packaging/config/agent.toml");

/// The system user and group that own the configuration and, unprivileged, run the agent.
pub const SYSTEM_USER: &str = "muster";

const PACKAGE_BINARY: &str = "/usr/bin/muster-agent";
/// Where the binary goes, as seen from inside the root.
pub const BINARY: &str = "/usr/local/bin/muster-agent";
pub const UNIT: &str = "/etc/systemd/system/muster-agent.service";
pub const UNIT_WANTS: &str = "/etc/systemd/system/multi-user.target.wants/muster-agent.service";
pub const INIT_SCRIPT: &str = "/etc/init.d/muster-agent";
pub const DEFAULTS: &str = "/etc/default/muster-agent";
pub const LOGROTATE_FILE: &str = "/etc/logrotate.d/muster-agent";
pub const CONFIG_DIR: &str = "/etc/muster";
pub const CONFIG: &str = "/etc/muster/agent.toml";
pub const STATE_DIR: &str = "/var/lib/muster";
pub const LOG_DIR: &str = "/var/log/muster";

/// The runlevel links `update-rc.d muster-agent defaults` makes (LSB header: start in 2-5,
/// stop in 0, 1, 6).
const RC_LINKS: [(&str, &str); 7] = [
    ("/etc/rc0.d", "K01muster-agent"),
    ("/etc/rc1.d", "K01muster-agent"),
    ("/etc/rc2.d", "S01muster-agent"),
    ("/etc/rc3.d", "S01muster-agent"),
    ("/etc/rc4.d", "S01muster-agent"),
    ("/etc/rc5.d", "S01muster-agent"),
    ("/etc/rc6.d", "K01muster-agent"),
];

/// `service status`: not installed.
const EXIT_NOT_INSTALLED: u8 = 4;
/// `service status`: installed, not running (LSB's "program is not running").
const EXIT_NOT_RUNNING: u8 = 3;

/// A root directory and whether it is the running system's.
#[derive(Debug)]
struct Root {
    dir: PathBuf,
    live: bool,
}

impl Root {
    fn new(root: Option<&Path>) -> anyhow::Result<Root> {
        match root {
            None => Ok(Root {
                dir: PathBuf::from("/"),
                live: true,
            }),
            Some(dir) => {
                let dir = std::path::absolute(dir)
                    .with_context(|| format!("resolving {}", dir.display()))?;
                fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
                // `--root /` is the running system.
                let live = fs::canonicalize(&dir).is_ok_and(|d| d == Path::new("/"));
                Ok(Root { dir, live })
            }
        }
    }

    /// `path` (absolute, as seen inside the root) on this machine.
    fn path(&self, path: &str) -> PathBuf {
        self.dir.join(path.trim_start_matches('/'))
    }
}

/// Whether systemd is the running init (sd_booted(3)).
fn systemd_running() -> bool {
    Path::new("/run/systemd/system").is_dir()
}

pub fn install(args: &ServiceInstallArgs) -> anyhow::Result<ExitCode> {
    let root = Root::new(args.root.as_deref())?;
    if root.live && !nix::unistd::geteuid().is_root() {
        bail!("installing a service needs root (or --root DIR to prepare a directory)");
    }
    // Refuse before changing anything: a unit nobody can start is not an installed service.
    if root.live && !args.sysv && !systemd_running() {
        bail!(
            "systemd is not running on this machine (no /run/systemd/system), so the unit could \
             not be enabled or started; nothing was installed. Use --sysv for a System V init \
             script, or --root DIR to prepare a root directory"
        );
    }
    let binary = match &args.binary {
        Some(path) => path.clone(),
        None => std::env::current_exe().context("finding this executable")?,
    };
    let config_source = match &args.config {
        Some(path) => Some(fs::read(path).with_context(|| format!("reading {}", path.display()))?),
        None => None,
    };

    // The user and group first: everything below is owned by them.
    let created = ensure_system_user(&root)?;
    if created {
        println!("created system user and group {SYSTEM_USER}");
    }
    let group = lookup_id(&root.path("/etc/group"), SYSTEM_USER)?
        .with_context(|| format!("group {SYSTEM_USER} missing after creating it"))?;
    // root is 0 even in a root directory without an etc/passwd.
    let user = if args.user == "root" {
        Some(0)
    } else {
        lookup_id(&root.path("/etc/passwd"), &args.user)?
    };
    let user = user.with_context(|| {
        format!(
            "no user {} in {}: create it first",
            args.user,
            root.path("/etc/passwd").display()
        )
    })?;

    install_file(
        &root,
        BINARY,
        &fs::read(&binary)
            .with_context(|| format!("reading the agent binary {}", binary.display()))?,
        0o755,
        0,
        0,
    )?;

    make_dir(&root, CONFIG_DIR, 0o750, 0, group)?;
    let config_path = root.path(CONFIG);
    match (&config_source, config_path.exists()) {
        (Some(text), false) => install_file(&root, CONFIG, text, 0o640, 0, group)?,
        (Some(text), true) if args.force => install_file(&root, CONFIG, text, 0o640, 0, group)?,
        (Some(_), true) => {
            println!("kept the existing {CONFIG} (--force replaces it)");
            set_owner_mode(&config_path, 0o640, 0, group)?;
        }
        (None, false) => install_file(&root, CONFIG, CONFIG_TEMPLATE.as_bytes(), 0o640, 0, group)?,
        (None, true) => set_owner_mode(&config_path, 0o640, 0, group)?,
    }
    make_dir(&root, STATE_DIR, 0o750, user, group)?;
    make_dir(&root, LOG_DIR, 0o750, user, group)?;

    if args.sysv {
        install_sysv(&root, args)?;
    } else {
        install_systemd(&root, args)?;
    }
    println!(
        "installed muster-agent ({}) in {}",
        if args.sysv {
            "System V init"
        } else {
            "systemd"
        },
        root.dir.display()
    );
    if !root.live {
        println!("enabled; not started (--root)");
    }
    Ok(ExitCode::SUCCESS)
}

/// Replaces the package's binary path with the hand-installed one.
fn local_paths(text: &str) -> String {
    text.replace(PACKAGE_BINARY, BINARY)
}

/// The unit for `--user`: as the package's for root; for another user, `User=` and a
/// runtime directory for the pidfile (`/run` is root's).
pub fn unit_text(user: &str) -> String {
    let unit = local_paths(SYSTEMD_UNIT);
    if user == "root" {
        return unit;
    }
    unit.replacen(
        "[Service]\n",
        &format!(
            "[Service]\nUser={user}\nGroup={SYSTEM_USER}\nRuntimeDirectory=muster-agent\n\
             Environment=MUSTER_AGENT_PID_FILE=/run/muster-agent/muster-agent.pid\n"
        ),
        1,
    )
}

fn install_systemd(root: &Root, args: &ServiceInstallArgs) -> anyhow::Result<()> {
    install_file(root, UNIT, unit_text(&args.user).as_bytes(), 0o644, 0, 0)?;
    if !root.live {
        // What `systemctl enable` does, from the [Install] section.
        return replace_symlink(&root.path(UNIT_WANTS), Path::new(UNIT));
    }
    systemctl(&["daemon-reload"])?;
    systemctl(&["enable", "muster-agent.service"])?;
    if args.no_start {
        println!("enabled; not started (--no-start)");
    } else {
        // restart, not start: installing over a running agent (an upgrade) runs the new binary.
        systemctl(&["restart", "muster-agent.service"])?;
        println!("enabled and (re)started: systemctl status muster-agent");
    }
    Ok(())
}

/// `/etc/default/muster-agent` as `service install` writes it.
pub fn defaults_text(user: &str) -> String {
    format!(
        "# Settings for /etc/init.d/muster-agent (written by muster-agent service install).\n\
         DAEMON={BINARY}\nCONFIG={CONFIG}\nRUN_AS={user}\nNICE=10\n"
    )
}

fn install_sysv(root: &Root, args: &ServiceInstallArgs) -> anyhow::Result<()> {
    install_file(
        root,
        INIT_SCRIPT,
        local_paths(SYSV_SCRIPT).as_bytes(),
        0o755,
        0,
        0,
    )?;
    if root.path(DEFAULTS).exists() {
        println!("kept the existing {DEFAULTS}");
    } else {
        install_file(
            root,
            DEFAULTS,
            defaults_text(&args.user).as_bytes(),
            0o644,
            0,
            0,
        )?;
    }
    install_file(root, LOGROTATE_FILE, LOGROTATE.as_bytes(), 0o644, 0, 0)?;
    if root.live && which("update-rc.d") {
        run_tool("update-rc.d", &["muster-agent", "defaults"])?;
    } else {
        for (dir, name) in RC_LINKS {
            replace_symlink(
                &root.path(&format!("{dir}/{name}")),
                Path::new("../init.d/muster-agent"),
            )?;
        }
    }
    if !root.live {
        return Ok(());
    }
    if args.no_start {
        println!("enabled; not started (--no-start)");
    } else {
        run_tool(INIT_SCRIPT, &["restart"])?;
        println!("enabled and (re)started: {INIT_SCRIPT} status");
    }
    Ok(())
}

pub fn uninstall(args: &ServiceUninstallArgs) -> anyhow::Result<ExitCode> {
    let root = Root::new(args.root.as_deref())?;
    if root.live && !nix::unistd::geteuid().is_root() {
        bail!("removing a service needs root (or --root DIR)");
    }
    let unit = root.path(UNIT);
    let script = root.path(INIT_SCRIPT);
    let mut problems = Vec::new();
    if unit.exists() {
        if root.live && systemd_running() {
            if let Err(e) = systemctl(&["disable", "--now", "muster-agent.service"]) {
                problems.push(format!("{e:#}"));
            }
        } else if root.live {
            println!("systemd is not running: the unit is removed without stopping anything");
        }
        remove(&root.path(UNIT_WANTS))?;
        remove(&unit)?;
        if root.live && systemd_running() {
            systemctl(&["daemon-reload"])?;
        }
    }
    if script.exists() {
        if root.live
            && let Err(e) = run_tool(&script.to_string_lossy(), &["stop"])
        {
            problems.push(format!("{e:#}"));
        }
        if root.live && which("update-rc.d") {
            run_tool("update-rc.d", &["muster-agent", "remove"])?;
        }
        remove(&script)?;
    }
    // Whatever update-rc.d left, or what install made itself.
    for (dir, name) in RC_LINKS {
        remove(&root.path(&format!("{dir}/{name}")))?;
    }
    remove(&root.path(LOGROTATE_FILE))?;
    remove(&root.path(BINARY))?;
    if args.purge {
        remove(&root.path(DEFAULTS))?;
        remove(&root.path(CONFIG))?;
        remove_tree(&root.path(STATE_DIR))?;
        remove_tree(&root.path(LOG_DIR))?;
        // Only if nothing else (config.env, a CA file, the server's configuration) is left.
        match fs::remove_dir(root.path(CONFIG_DIR)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(_) => println!("kept {CONFIG_DIR}: other files are in it"),
        }
        println!(
            "removed muster-agent with its configuration, state and logs; the {SYSTEM_USER} \
             user and group stay (files elsewhere may still be theirs)"
        );
    } else {
        println!(
            "removed muster-agent; kept {CONFIG}, {STATE_DIR} and {LOG_DIR} (--purge removes them)"
        );
    }
    if problems.is_empty() {
        Ok(ExitCode::SUCCESS)
    } else {
        bail!("removed, but: {}", problems.join("; "))
    }
}

pub fn status(args: &ServiceStatusArgs) -> anyhow::Result<ExitCode> {
    let root = Root::new(args.root.as_deref())?;
    let unit = root.path(UNIT).exists();
    let script = root.path(INIT_SCRIPT).exists();
    let show = |path: &str| {
        let on = root.path(path);
        if on.exists() {
            println!("{path}: present");
        } else {
            println!("{path}: missing");
        }
    };
    show(BINARY);
    show(CONFIG);
    if !unit && !script {
        println!("muster-agent is not installed as a service (no {UNIT}, no {INIT_SCRIPT})");
        return Ok(ExitCode::from(EXIT_NOT_INSTALLED));
    }
    if unit {
        let enabled = fs::symlink_metadata(root.path(UNIT_WANTS)).is_ok();
        println!(
            "{UNIT}: installed, {}",
            if enabled { "enabled" } else { "disabled" }
        );
    }
    if script {
        let enabled = fs::symlink_metadata(root.path("/etc/rc2.d/S01muster-agent")).is_ok();
        println!(
            "{INIT_SCRIPT}: installed{}",
            if enabled { ", enabled" } else { "" }
        );
    }
    if !root.live {
        return Ok(ExitCode::SUCCESS);
    }
    let running = if unit && systemd_running() {
        Command::new("systemctl")
            .args(["is-active", "--quiet", "muster-agent.service"])
            .status()
            .is_ok_and(|s| s.success())
    } else {
        Command::new(root.path(BINARY))
            .args(["status", "--config", CONFIG])
            .stdout(std::process::Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    println!("running: {}", if running { "yes" } else { "no" });
    Ok(if running {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(EXIT_NOT_RUNNING)
    })
}

/// `service start`: `systemctl start` where systemd runs the unit, else the init script
/// (both wait for the agent to be up; `--timeout` is the Windows side's).
pub fn start(_args: &ServiceControlArgs) -> anyhow::Result<ExitCode> {
    control("start")
}

/// `service stop`: `systemctl stop`, else the init script.
pub fn stop(_args: &ServiceControlArgs) -> anyhow::Result<ExitCode> {
    control("stop")
}

fn control(action: &str) -> anyhow::Result<ExitCode> {
    let unit =
        Path::new(UNIT).exists() || Path::new("/lib/systemd/system/muster-agent.service").exists();
    if unit && systemd_running() {
        systemctl(&[action, "muster-agent.service"])?;
    } else if Path::new(INIT_SCRIPT).exists() {
        run_tool(INIT_SCRIPT, &[action])?;
    } else {
        println!("muster-agent is not installed as a service (no {UNIT}, no {INIT_SCRIPT})");
        return Ok(ExitCode::from(EXIT_NOT_INSTALLED));
    }
    Ok(ExitCode::SUCCESS)
}

/// Makes sure the `muster` group and user exist in the root: `useradd --system` on the live
/// system, lines in `etc/group` and `etc/passwd` (and `etc/shadow`, `etc/gshadow` if they
/// exist) otherwise. Returns whether they were created.
fn ensure_system_user(root: &Root) -> anyhow::Result<bool> {
    let passwd = root.path("/etc/passwd");
    let group = root.path("/etc/group");
    let have_user = lookup_id(&passwd, SYSTEM_USER)?.is_some();
    let have_group = lookup_id(&group, SYSTEM_USER)?.is_some();
    if have_user && have_group {
        return Ok(false);
    }
    if root.live {
        if !have_group {
            run_tool("groupadd", &["--system", SYSTEM_USER])?;
        }
        if !have_user {
            run_tool(
                "useradd",
                &[
                    "--system",
                    "--gid",
                    SYSTEM_USER,
                    "--home-dir",
                    STATE_DIR,
                    "--no-create-home",
                    "--shell",
                    "/usr/sbin/nologin",
                    "--comment",
                    "Muster",
                    SYSTEM_USER,
                ],
            )?;
        }
        return Ok(true);
    }
    fs::create_dir_all(root.path("/etc")).context("creating etc in the root")?;
    let gid = match lookup_id(&group, SYSTEM_USER)? {
        Some(gid) => gid,
        None => {
            let gid = free_system_id(&group)?;
            append_line(&group, &format!("{SYSTEM_USER}:x:{gid}:"), 0o644)?;
            let gshadow = root.path("/etc/gshadow");
            if gshadow.exists() {
                append_line(&gshadow, &format!("{SYSTEM_USER}:!::"), 0o640)?;
            }
            gid
        }
    };
    if lookup_id(&passwd, SYSTEM_USER)?.is_none() {
        // useradd --system gives the user the group's id when it is free, as here.
        let uid = if id_taken(&passwd, gid)? {
            free_system_id(&passwd)?
        } else {
            gid
        };
        append_line(
            &passwd,
            &format!("{SYSTEM_USER}:x:{uid}:{gid}:Muster:{STATE_DIR}:/usr/sbin/nologin"),
            0o644,
        )?;
        let shadow = root.path("/etc/shadow");
        if shadow.exists() {
            append_line(&shadow, &format!("{SYSTEM_USER}:!:::::::"), 0o640)?;
        }
    }
    Ok(true)
}

/// The id (third field) of `name` in a passwd- or group-format file.
pub fn lookup_id(file: &Path, name: &str) -> anyhow::Result<Option<u32>> {
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    Ok(text.lines().find_map(|line| {
        let mut fields = line.split(':');
        (fields.next() == Some(name))
            .then(|| fields.nth(1).and_then(|id| id.parse().ok()))
            .flatten()
    }))
}

fn ids(file: &Path) -> anyhow::Result<Vec<u32>> {
    let text = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e).with_context(|| format!("reading {}", file.display())),
    };
    Ok(text
        .lines()
        .filter_map(|line| line.split(':').nth(2)?.parse().ok())
        .collect())
}

fn id_taken(file: &Path, id: u32) -> anyhow::Result<bool> {
    Ok(ids(file)?.contains(&id))
}

/// The highest free id in 100..=999, Debian's system range, as `useradd --system` picks.
fn free_system_id(file: &Path) -> anyhow::Result<u32> {
    let taken = ids(file)?;
    (100..=999)
        .rev()
        .find(|id| !taken.contains(id))
        .with_context(|| format!("no free system id in {}", file.display()))
}

fn append_line(file: &Path, line: &str, mode: u32) -> anyhow::Result<()> {
    use std::io::Write as _;
    let existed = file.exists();
    let text = fs::read_to_string(file).unwrap_or_default();
    let separator = if text.is_empty() || text.ends_with('\n') {
        ""
    } else {
        "\n"
    };
    let mut out = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(file)
        .with_context(|| format!("opening {}", file.display()))?;
    writeln!(out, "{separator}{line}").with_context(|| format!("writing {}", file.display()))?;
    if !existed {
        fs::set_permissions(file, fs::Permissions::from_mode(mode))?;
    }
    Ok(())
}

/// Writes `contents` to `path` in the root through a temporary file and a rename, then sets
/// owner and mode.
fn install_file(
    root: &Root,
    path: &str,
    contents: &[u8],
    mode: u32,
    uid: u32,
    gid: u32,
) -> anyhow::Result<()> {
    let target = root.path(path);
    let dir = target.parent().context("a file path has a parent")?;
    fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.muster-tmp",
        target.file_name().unwrap_or_default().to_string_lossy()
    ));
    fs::write(&tmp, contents).with_context(|| format!("writing {}", tmp.display()))?;
    set_owner_mode(&tmp, mode, uid, gid)?;
    fs::rename(&tmp, &target).with_context(|| format!("writing {}", target.display()))?;
    Ok(())
}

fn make_dir(root: &Root, path: &str, mode: u32, uid: u32, gid: u32) -> anyhow::Result<()> {
    let dir = root.path(path);
    fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    set_owner_mode(&dir, mode, uid, gid)
}

fn set_owner_mode(path: &Path, mode: u32, uid: u32, gid: u32) -> anyhow::Result<()> {
    let meta = fs::symlink_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    if meta.uid() != uid || meta.gid() != gid {
        std::os::unix::fs::lchown(path, Some(uid), Some(gid))
            .with_context(|| format!("changing the owner of {} to {uid}:{gid}", path.display()))?;
    }
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("changing the mode of {}", path.display()))
}

fn replace_symlink(link: &Path, target: &Path) -> anyhow::Result<()> {
    if let Some(dir) = link.parent() {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    remove(link)?;
    symlink(target, link).with_context(|| format!("linking {}", link.display()))
}

/// Removes a file or symlink; a missing one is fine.
fn remove(path: &Path) -> anyhow::Result<()> {
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

fn remove_tree(path: &Path) -> anyhow::Result<()> {
    match fs::remove_dir_all(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e).with_context(|| format!("removing {}", path.display())),
    }
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()))
}

fn systemctl(args: &[&str]) -> anyhow::Result<()> {
    run_tool("systemctl", args)
}

fn run_tool(tool: &str, args: &[&str]) -> anyhow::Result<()> {
    let status = Command::new(tool)
        .args(args)
        .status()
        .with_context(|| format!("running {tool}"))?;
    if !status.success() {
        bail!("{tool} {} failed ({status})", args.join(" "));
    }
    Ok(())
}
