//! `services/systemd` from `systemctl list-units`.
//!
//! systemctl is the one stable interface to the unit states (the alternative is D-Bus, which
//! would need a client library); it runs with a deadline so a hung manager cannot stall the
//! scan.

use std::io::Read;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use muster_proto::data::Service;
use muster_proto::{FunctionData, FunctionReport};

use crate::{CollectError, Collected, Context};

const SYSTEMCTL: &str = "systemctl";
const ARGS: [&str; 7] = [
    "list-units",
    "--all",
    "--type=service",
    "--plain",
    "--no-legend",
    "--no-pager",
    "--full",
];
/// systemctl answers in tens of milliseconds; a manager that takes longer than this is stuck
/// (or reloading), and the scan should not wait for it.
const TIMEOUT: Duration = Duration::from_secs(5);

/// Parses the output of `systemctl list-units --plain --no-legend --full`: one unit a line,
/// columns UNIT LOAD ACTIVE SUB DESCRIPTION, the description being the rest of the line.
///
/// Some systemd versions print a marker column even with `--plain`: `●` before failed and
/// not-found units (`*` when the locale is not UTF-8), blank otherwise; it is skipped. Lines
/// that are not units (a legend, if one slipped through) are skipped too.
pub fn parse_list_units(text: &str) -> Vec<Service> {
    text.lines().filter_map(parse_unit_line).collect()
}

fn parse_unit_line(line: &str) -> Option<Service> {
    let line = line.trim_start();
    // Unit names cannot contain either marker, so stripping them cannot eat a name.
    let line = line
        .strip_prefix('●')
        .or_else(|| line.strip_prefix('*'))
        .unwrap_or(line);
    let (name, rest) = next_word(line)?;
    let (load_state, rest) = next_word(rest)?;
    let (active_state, rest) = next_word(rest)?;
    let (sub_state, rest) = next_word(rest)?;
    // Every unit name has a type suffix; legend lines ("LOAD   = ...", "12 loaded units
    // listed.") have none.
    if !name.contains('.') {
        return None;
    }
    let description = rest.trim();
    Some(Service {
        name: name.to_owned(),
        load_state: load_state.to_owned(),
        active_state: active_state.to_owned(),
        sub_state: sub_state.to_owned(),
        description: (!description.is_empty()).then(|| description.to_owned()),
        display_name: None,
        start_type: None,
        pid: None,
        binary_path: None,
    })
}

/// The first whitespace-separated word of `text` and what follows it.
fn next_word(text: &str) -> Option<(&str, &str)> {
    let text = text.trim_start();
    if text.is_empty() {
        return None;
    }
    match text.find(char::is_whitespace) {
        Some(end) => text.split_at_checked(end),
        None => Some((text, "")),
    }
}

pub fn collect(context: &Context) -> Collected {
    collect_with(context, Path::new(SYSTEMCTL), TIMEOUT)
}

fn collect_with(context: &Context, systemctl: &Path, timeout: Duration) -> Collected {
    // sd_booted(3)'s test: the directory exists only while systemd is PID 1.
    if !context.exists("/run/systemd/system") {
        return Ok(Some(FunctionReport::unavailable(
            "systemd",
            "systemd is not running (no /run/systemd/system): this host uses another init \
             system, or is a container without one",
        )));
    }
    let output =
        run_bounded(systemctl, &ARGS, timeout).map_err(|message| CollectError::Command {
            command: format!("{} {}", systemctl.display(), ARGS.join(" ")),
            message,
        })?;
    Ok(Some(FunctionReport::new(FunctionData::Systemd(
        parse_list_units(&output),
    ))))
}

/// Runs `program` and returns its standard output, killing it if it has not finished within
/// `timeout`. Output is read on helper threads so a child that writes more than a pipe holds
/// cannot block on us while we wait for it.
fn run_bounded(program: &Path, args: &[&str], timeout: Duration) -> Result<String, String> {
    let deadline = Instant::now() + timeout;
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| e.to_string())?;

    let (stdout_tx, stdout_rx) = mpsc::channel();
    let stdout = child.stdout.take();
    let stderr = child.stderr.take();
    let spawned = thread::Builder::new()
        .name("systemctl-stdout".into())
        .spawn(move || {
            let _ = stdout_tx.send(read_all(stdout));
        });
    if let Err(e) = spawned {
        kill(&mut child);
        return Err(format!("starting a reader thread: {e}"));
    }
    let stderr = thread::Builder::new()
        .name("systemctl-stderr".into())
        .spawn(move || read_all(stderr));

    // The end of standard output means the child is exiting.
    let stdout = match stdout_rx.recv_timeout(timeout) {
        Ok(Ok(stdout)) => stdout,
        Ok(Err(e)) => {
            kill(&mut child);
            return Err(format!("reading its output: {e}"));
        }
        Err(_) => {
            kill(&mut child);
            return Err(format!("no answer within {}s", timeout.as_secs_f64()));
        }
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(1)),
            Ok(None) => {
                kill(&mut child);
                return Err(format!("did not exit within {}s", timeout.as_secs_f64()));
            }
            Err(e) => {
                kill(&mut child);
                return Err(e.to_string());
            }
        }
    };
    if !status.success() {
        let stderr = stderr
            .ok()
            .and_then(|handle| handle.join().ok())
            .and_then(Result::ok)
            .unwrap_or_default();
        let stderr = String::from_utf8_lossy(&stderr);
        let reason = stderr.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
        return Err(if reason.is_empty() {
            status.to_string()
        } else {
            format!("{status}: {}", reason.trim())
        });
    }
    Ok(String::from_utf8_lossy(&stdout).into_owned())
}

fn read_all(pipe: Option<impl Read>) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    if let Some(mut pipe) = pipe {
        pipe.read_to_end(&mut bytes)?;
    }
    Ok(bytes)
}

fn kill(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    // The layouts of `systemctl list-units --all --type=service --plain --no-legend --full`:
    // systemd 252 (no marker column); a systemd that keeps the `●` column and pads every line;
    // and the `*` marker a non-UTF-8 locale gets.
    const DEBIAN12: &str =
        include_str!("../../../tests/fixtures/processes/list-units-debian12.txt");
    const UBUNTU2004: &str =
        include_str!("../../../tests/fixtures/processes/list-units-ubuntu2004.txt");
    const RHEL8_POSIX: &str =
        include_str!("../../../tests/fixtures/processes/list-units-rhel8-posix-locale.txt");

    fn service(name: &str, load: &str, active: &str, sub: &str, description: &str) -> Service {
        Service {
            name: name.into(),
            load_state: load.into(),
            active_state: active.into(),
            sub_state: sub.into(),
            description: Some(description.into()),
            display_name: None,
            start_type: None,
            pid: None,
            binary_path: None,
        }
    }

    #[test]
    fn plain_output() {
        let services = parse_list_units(DEBIAN12);
        assert_eq!(services.len(), 21);
        assert_eq!(
            services[0],
            service(
                "apparmor.service",
                "loaded",
                "active",
                "exited",
                "Load AppArmor profiles"
            )
        );
        assert_eq!(
            services[3],
            service(
                "auditd.service",
                "not-found",
                "inactive",
                "dead",
                "auditd.service"
            )
        );
        assert_eq!(
            services[12],
            service(
                "nginx.service",
                "loaded",
                "failed",
                "failed",
                "A high performance web server and a reverse proxy server"
            )
        );
        assert_eq!(
            services[15],
            service(
                "systemd-fsck@dev-disk-by\\x2duuid-7B3A\\x2d1C2F.service",
                "loaded",
                "active",
                "exited",
                "File System Check on /dev/disk/by-uuid/7B3A-1C2F"
            )
        );
        assert_eq!(
            services[18],
            service(
                "systemd-timesyncd.service",
                "loaded",
                "activating",
                "start",
                "Network Time Synchronization"
            )
        );
    }

    #[test]
    fn marker_column_and_padding() {
        let services = parse_list_units(UBUNTU2004);
        assert_eq!(services.len(), 11);
        assert_eq!(
            services[0],
            service(
                "accounts-daemon.service",
                "loaded",
                "active",
                "running",
                "Accounts Service"
            )
        );
        assert_eq!(
            services[3],
            service(
                "mysql.service",
                "loaded",
                "failed",
                "failed",
                "MySQL Community Server"
            )
        );
        assert_eq!(
            services[7],
            service(
                "sssd.service",
                "not-found",
                "inactive",
                "dead",
                "sssd.service"
            )
        );
        assert_eq!(
            services[10],
            service(
                "whoopsie.service",
                "masked",
                "inactive",
                "dead",
                "whoopsie.service"
            )
        );
        assert_eq!(
            services[1].description.as_deref(),
            Some("Initial cloud-init job (pre-networking)")
        );
    }

    #[test]
    fn ascii_marker() {
        let services = parse_list_units(RHEL8_POSIX);
        let names: Vec<_> = services.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "chronyd.service",
                "firewalld.service",
                "kdump.service",
                "ntpd.service",
                "sshd.service",
                "tuned.service"
            ]
        );
        assert_eq!(services[2].active_state, "failed");
        assert_eq!(services[3].load_state, "not-found");
        assert_eq!(
            services[1].description.as_deref(),
            Some("firewalld - dynamic firewall daemon")
        );
    }

    #[test]
    fn legend_and_short_lines_are_skipped() {
        let text = "UNIT LOAD ACTIVE SUB DESCRIPTION\n\
            ssh.service loaded active running OpenBSD Secure Shell server\n\
            odd.service loaded active\n\
            bare.service loaded inactive dead\n\n\
            LOAD   = Reflects whether the unit definition was properly loaded.\n\
            ACTIVE = The high-level unit activation state, i.e. generalization of SUB.\n\
            2 loaded units listed.\n";
        let services = parse_list_units(text);
        assert_eq!(services.len(), 2, "{services:?}");
        assert_eq!(services[0].name, "ssh.service");
        assert_eq!(services[1].name, "bare.service");
        assert_eq!(services[1].description, None);
    }

    #[test]
    fn no_systemd_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("run/systemd")).unwrap();
        let report = collect(&Context::new(dir.path())).unwrap().unwrap();
        assert_eq!(report.name(), "systemd");
        assert!(report.data.is_empty());
        assert_eq!(report.error, None);
        assert!(
            report
                .unavailable
                .as_deref()
                .unwrap()
                .starts_with("systemd is not running (no /run/systemd/system)")
        );
    }

    /// A fixture root where systemd looks booted, and a fake `systemctl` script.
    fn booted_root(script: &str) -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join("run/systemd/system")).unwrap();
        let program = dir.path().join("systemctl");
        fs::write(&program, script).unwrap();
        fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
        (dir, program)
    }

    /// `collect_with`, retrying while the script is "busy": a process another test forks at
    /// the moment the script is written briefly holds it open for writing, and exec fails.
    fn run(dir: &Path, program: &Path, timeout: Duration) -> Collected {
        for _ in 0..10 {
            match collect_with(&Context::new(dir), program, timeout) {
                Err(e) if e.to_string().contains("Text file busy") => {
                    thread::sleep(Duration::from_millis(20));
                }
                result => return result,
            }
        }
        panic!("{} stayed busy", program.display());
    }

    #[test]
    fn runs_systemctl_and_parses_its_output() {
        let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/processes");
        // The script checks it was asked the right question before answering.
        let script = format!(
            "#!/bin/sh\n[ \"$*\" = \"{}\" ] || {{ echo \"bad args: $*\" >&2; exit 2; }}\n\
             exec cat '{fixture}/list-units-debian12.txt'\n",
            ARGS.join(" ")
        );
        let (dir, program) = booted_root(&script);
        let report = run(dir.path(), &program, TIMEOUT).unwrap().unwrap();
        assert_eq!((report.error, report.unavailable), (None, None));
        assert_eq!(
            report.data,
            FunctionData::Systemd(parse_list_units(DEBIAN12))
        );
        assert_eq!(report.data.len(), 21);
    }

    #[test]
    fn large_output_does_not_block() {
        // Far more than a pipe buffer, on both streams.
        let script = "#!/bin/sh\ni=0\nwhile [ $i -lt 4000 ]; do\n\
            echo \"unit$i.service loaded active running Unit number $i with a long description\"\n\
            echo \"warning $i\" >&2\ni=$((i+1))\ndone\n";
        let (dir, program) = booted_root(script);
        let report = run(dir.path(), &program, TIMEOUT).unwrap().unwrap();
        assert_eq!(report.data.len(), 4000);
    }

    #[test]
    fn failing_systemctl_is_an_error() {
        let script = "#!/bin/sh\necho 'System has not been booted with systemd as init system \
            (PID 1). Can'\\''t operate.' >&2\necho 'Failed to connect to bus: Host is down' >&2\n\
            exit 1\n";
        let (dir, program) = booted_root(script);
        let error = run(dir.path(), &program, TIMEOUT).unwrap_err();
        let message = error.to_string();
        assert!(message.starts_with("running "), "{message}");
        assert!(
            message.ends_with(
                "exit status: 1: System has not been booted with systemd as init system \
                 (PID 1). Can't operate."
            ),
            "{message}"
        );
    }

    #[test]
    fn hung_systemctl_is_killed() {
        let (dir, program) = booted_root("#!/bin/sh\nexec sleep 30\n");
        let started = Instant::now();
        let error = run(dir.path(), &program, Duration::from_millis(200)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(
            error.to_string().ends_with(": no answer within 0.2s"),
            "{error}"
        );
    }

    #[test]
    fn missing_systemctl_is_an_error() {
        let (dir, _) = booted_root("");
        let missing = dir.path().join("no-such-systemctl");
        let error = run(dir.path(), &missing, TIMEOUT).unwrap_err();
        assert!(matches!(error, CollectError::Command { .. }), "{error}");
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC*") {
            let _ = parse_list_units(&text);
        }

        #[test]
        fn never_panics_on_unit_like_lines(lines in proptest::collection::vec(
            "[●* ]{0,3}[a-z@.\\\\-]{0,12}( +[a-z-]{0,9}){0,6} *", 0..10)) {
            let _ = parse_list_units(&lines.join("\n"));
        }

        #[test]
        fn descriptions_keep_inner_spaces(
            description in "[A-Za-z0-9()/-]{1,8}( {1,3}[A-Za-z0-9()/-]{1,8}){0,5}",
            marker in "(● |\\* |  )?",
        ) {
            let line = format!("{marker}x.service  loaded  active  running  {description}  ");
            let services = parse_list_units(&line);
            prop_assert_eq!(services.len(), 1);
            prop_assert_eq!(services[0].description.as_deref(), Some(description.as_str()));
        }
    }
}
