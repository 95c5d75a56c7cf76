//! `processes` finds this test process and a `cmd.exe` child it starts.

use std::io::Write;
use std::process::{Command, Stdio};

use muster_proto::data::Process;
use muster_proto::{FunctionData, Worker};

use super::report;

fn processes() -> Vec<Process> {
    let report = report(Worker::Processes, "processes");
    assert_eq!(report.error, None);
    let FunctionData::Processes(processes) = report.data else {
        panic!()
    };
    processes
}

#[test]
fn finds_itself_and_a_child_cmd_with_its_details() {
    // `cmd /k` with a piped stdin waits for commands until stdin closes.
    let mut child = Command::new("cmd.exe")
        .args(["/k", "echo", "muster-test-marker"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let processes = processes();
    let ours = std::process::id();

    let me = processes
        .iter()
        .find(|p| p.pid == ours)
        .unwrap_or_else(|| panic!("pid {ours} not in {processes:#?}"));
    let exe = std::env::current_exe().unwrap();
    let exe_name = exe.file_name().unwrap().to_string_lossy();
    assert!(
        me.name.eq_ignore_ascii_case(&exe_name),
        "{me:?} vs {exe_name}"
    );
    assert!(me.rss_bytes > 0, "{me:?}");
    assert!(me.start_time.is_some(), "{me:?}");
    assert!(me.user.as_deref().is_some_and(|u| !u.is_empty()), "{me:?}");
    assert!(
        me.cmdline.first().is_some_and(|arg0| arg0
            .to_ascii_lowercase()
            .contains(&exe_name.to_ascii_lowercase())),
        "{me:?}"
    );

    let cmd = processes.iter().find(|p| p.pid == child.id());
    let _ = child
        .stdin
        .take()
        .map(|mut stdin| stdin.write_all(b"exit\r\n"));
    let _ = child.kill();
    let _ = child.wait();
    let cmd = cmd.unwrap_or_else(|| panic!("child {} not in {processes:#?}", child.id()));
    assert!(cmd.name.eq_ignore_ascii_case("cmd.exe"), "{cmd:?}");
    assert_eq!(cmd.ppid, ours, "{cmd:?}");
    assert!(
        cmd.cmdline.iter().any(|a| a == "muster-test-marker"),
        "{cmd:?}"
    );
    assert_eq!(cmd.user, me.user);
}
