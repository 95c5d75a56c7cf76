//! Windows: scripts in `cmd` and PowerShell, the Job Object around a command's process tree
//! (timeout, cancel, the agent crashing), the Windows Installer mutex, all with real processes
//! (under Wine in CI).

// The Win32 calls (Wine detection, holding a mutex) are FFI; each block says why it is sound.
#![allow(unsafe_code)]

use std::path::Path;

use super::*;
use crate::commands::exec::{self, ExecSpec, Role, ScriptDir};
use crate::commands::job;

/// Whether this runs under Wine (which exports `wine_get_version` from ntdll).
fn wine() -> bool {
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleA, GetProcAddress};
    // SAFETY: NUL-terminated names; ntdll is loaded in every process.
    unsafe {
        let ntdll = GetModuleHandleA(c"ntdll.dll".as_ptr().cast());
        !ntdll.is_null() && GetProcAddress(ntdll, c"wine_get_version".as_ptr().cast()).is_some()
    }
}

fn script(id: i64, interpreter: &str, body: &str) -> Command {
    Command {
        kind: "script".into(),
        command: body.into(),
        parameters: json!({"interpreter": interpreter, "env": {"GREETING": "hello"}}),
        ..exec(id, "")
    }
}

#[tokio::test]
async fn a_cmd_script_runs_from_a_private_file_with_its_env_and_output() {
    let rig = Rig::new();
    let mut rt = rig.runtime();
    let body = "echo %GREETING% from %~nx0\r\nset\r\necho oops 1>&2\r\nexit /b 2\r\n";
    rt.accept(leased(vec![script(1, "cmd", body)]));
    until(&mut rt, |rt| rt.queue_depth() == 0).await;
    let u = rig.api.last(1);
    assert_eq!((u.status, u.exit_code), (CommandState::Failed, Some(2)));
    let out = u.stdout.unwrap();
    // Echo is off (`cmd /Q`): the output is the script's own.
    assert!(out.starts_with("hello from script.cmd\r\n"), "{out}");
    let names: Vec<&str> = out
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once('=').map(|(k, _)| k))
        .collect();
    assert!(
        names.contains(&"GREETING") && names.contains(&"SystemRoot"),
        "{names:?}"
    );
    // The agent's own environment (cargo's variables here) does not leak.
    assert!(!names.iter().any(|n| n.starts_with("CARGO")), "{names:?}");
    assert_eq!(u.stderr.as_deref().map(str::trim_end), Some("oops"));
    let tmp = rig.dir.path().join("commands/tmp");
    assert_eq!(
        std::fs::read_dir(&tmp).unwrap().count(),
        0,
        "the private directory is removed"
    );
}

/// Wine 8 has no PowerShell: its `powershell.exe` is a stub that runs nothing and exits 0,
/// and there is no `pwsh.exe`. Under Wine the test asserts exactly that (a missing `pwsh` is
/// the clean failure "interpreter not found"); on Windows, that the script ran.
#[tokio::test]
async fn powershell_scripts_run_or_fail_cleanly_when_there_is_no_powershell() {
    let rig = Rig::new();
    let mut rt = rig.runtime();
    let body = "Write-Output \"$env:GREETING from $(Split-Path -Leaf $PSCommandPath)\"\nexit 3\n";
    rt.accept(leased(vec![
        script(1, "powershell", body),
        script(2, "pwsh", body),
    ]));
    until(&mut rt, |rt| rt.queue_depth() == 0).await;
    let powershell = rig.api.last(1);
    let pwsh = rig.api.last(2);
    if wine() {
        assert_eq!(
            (powershell.status, powershell.stdout.as_deref()),
            (CommandState::Succeeded, Some("")),
            "Wine's powershell.exe stub: {powershell:?}"
        );
        assert_eq!(pwsh.status, CommandState::Failed);
        let reason = pwsh.reason.unwrap();
        assert!(
            reason.starts_with("interpreter not found: pwsh.exe"),
            "{reason}"
        );
    } else {
        assert_eq!(
            (powershell.status, powershell.exit_code),
            (CommandState::Failed, Some(3))
        );
        assert_eq!(
            powershell.stdout.as_deref().map(str::trim_end),
            Some("hello from script.ps1")
        );
        assert!(
            pwsh.exit_code == Some(3)
                || pwsh
                    .reason
                    .is_some_and(|r| r.starts_with("interpreter not found")),
        );
    }
}

#[tokio::test]
async fn sh_is_not_an_interpreter_on_windows() {
    let rig = Rig::new();
    let mut rt = rig.runtime();
    let mut no_interpreter = script(1, "sh", "echo hi");
    no_interpreter.parameters = json!({});
    rt.accept(leased(vec![script(2, "sh", "echo hi"), no_interpreter]));
    rt.step().await;
    assert_eq!(
        rig.api.states(2),
        [CommandState::Received, CommandState::Rejected]
    );
    assert!(
        rig.api
            .last(2)
            .reason
            .unwrap()
            .contains("cmd, powershell, pwsh")
    );
    // The default interpreter on Windows is cmd.
    until(&mut rt, |rt| rt.queue_depth() == 0).await;
    let u = rig.api.last(1);
    assert_eq!(u.status, CommandState::Succeeded);
    assert_eq!(u.stdout.as_deref(), Some("hi\r\n"));
}

/// Every (pid, parent) link seen over `during`, sampled often: `start` under Wine goes through
/// a short-lived `start.exe`, so the links of a tree are collected while they exist.
async fn tree_of(root: u32, during: Duration) -> Vec<u32> {
    let mut links: Vec<(u32, u32)> = Vec::new();
    let until = std::time::Instant::now() + during;
    while std::time::Instant::now() < until {
        for link in job::processes().unwrap() {
            if !links.contains(&link) {
                links.push(link);
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let parent = found[i];
        for (pid, ppid) in &links {
            if *ppid == parent && !found.contains(pid) {
                found.push(*pid);
            }
        }
        i += 1;
    }
    found
}

/// A script that starts a child (`start /b`), a grandchild (a `cmd` started in the
/// background that starts another `ping`) and waits in the foreground.
const TREE: &str = "start /b ping -n 100 127.0.0.1 > nul\r\n\
start /b cmd /d /c ping -n 101 127.0.0.1 ^> nul\r\n\
ping -n 102 127.0.0.1 > nul\r\n";

fn tree_spec(dir: &Path, timeout: Duration) -> (ExecSpec, ScriptDir) {
    let cmd = exec::find_interpreter(Some("cmd")).unwrap();
    let script = ScriptDir::create(dir, 1, TREE, cmd).unwrap();
    let command = Command {
        kind: "script".into(),
        command: TREE.into(),
        parameters: json!({}),
        ..exec(1, "")
    };
    let spec = ExecSpec::for_script(
        &command,
        cmd,
        &script.file,
        timeout,
        Duration::from_millis(300),
        4096,
    );
    assert_eq!(spec.role, Role::Interpreter);
    (spec, script)
}

/// Runs `spec`, waits for its first process and returns the run with the tree's pids (seen
/// over three seconds: Wine's `start.exe` comes and goes).
async fn start_tree(
    spec: ExecSpec,
    stop: tokio::sync::watch::Receiver<bool>,
) -> (tokio::task::JoinHandle<exec::ExecOutcome>, Vec<u32>) {
    let (root_tx, root_rx) = std::sync::mpsc::channel();
    let run = tokio::spawn(exec::run(
        spec,
        stop,
        Box::new(move |pid| {
            let _ = root_tx.send(pid);
        }),
    ));
    let root = loop {
        if let Ok(pid) = root_rx.try_recv() {
            break u32::try_from(pid).unwrap();
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    (run, tree_of(root, Duration::from_secs(3)).await)
}

/// Waits (a few seconds at most) until none of `pids` runs.
async fn all_gone(pids: &[u32]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left: Vec<u32> = pids.iter().copied().filter(|p| job::alive(*p)).collect();
        if left.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still running: {left:?} of {pids:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_script_s_children_and_grandchildren_all_die_at_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, _script) = tree_spec(dir.path(), Duration::from_secs(6));
    let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let started = std::time::Instant::now();
    let (run, tree) = start_tree(spec, stop_rx).await;
    // cmd, its two pings, the background cmd and its ping (and Wine's start.exe, twice).
    assert!(tree.len() >= 5, "{tree:?}");
    let running: Vec<u32> = tree.iter().copied().filter(|p| job::alive(*p)).collect();
    assert!(running.len() >= 5, "{running:?} of {tree:?}");
    let out = run.await.unwrap();
    assert_eq!(out.ending, exec::Ending::TimedOut);
    assert_eq!(out.exit_code, None, "terminated, no exit code of its own");
    assert!(started.elapsed() < Duration::from_secs(15));
    all_gone(&tree).await;
}

#[tokio::test]
async fn a_stop_request_stops_the_whole_tree() {
    let dir = tempfile::tempdir().unwrap();
    let (spec, _script) = tree_spec(dir.path(), Duration::from_secs(60));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (run, tree) = start_tree(spec, stop_rx).await;
    assert!(tree.len() >= 5, "{tree:?}");
    let asked = std::time::Instant::now();
    stop_tx.send(true).unwrap();
    let out = tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(out.ending, exec::Ending::Stopped);
    assert!(
        asked.elapsed() < Duration::from_secs(5),
        "{:?}",
        asked.elapsed()
    );
    all_gone(&tree).await;
}

#[tokio::test]
async fn a_cancelled_script_is_reported_with_its_tree_stopped() {
    let rig = Rig::new();
    let mut rt = rig.runtime();
    let mut c = script(1, "cmd", TREE);
    c.timeout_s = Some(60);
    rt.accept(leased(vec![c]));
    rt.step().await;
    assert_eq!(rt.running_ids(), [1]);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rt.cancel(1);
    let started = std::time::Instant::now();
    until(&mut rt, |rt| rt.queue_depth() == 0).await;
    assert!(started.elapsed() < Duration::from_secs(5));
    let u = rig.api.last(1);
    assert_eq!(u.status, CommandState::Cancelled);
}

/// The environment variable that makes the crash test's child the "agent".
const CRASH_CHILD: &str = "MUSTER_TEST_CRASH_CHILD_PIDS";

/// The agent dies without stopping anything (here: `TerminateProcess`, as `taskkill /F` or a
/// crash): the job's last handle closes with it and Windows kills the command's whole tree.
/// The test runs itself as that agent in a child process, which starts the tree, writes its
/// pids and waits to be killed.
#[tokio::test]
async fn a_crashed_agent_takes_its_running_commands_with_it() {
    if let Ok(pids_file) = std::env::var(CRASH_CHILD) {
        let dir = tempfile::tempdir().unwrap();
        let (spec, _script) = tree_spec(dir.path(), Duration::from_secs(120));
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (run, tree) = start_tree(spec, stop_rx).await;
        let text: Vec<String> = tree.iter().map(u32::to_string).collect();
        let partial = format!("{pids_file}.part");
        std::fs::write(&partial, text.join("\n")).unwrap();
        std::fs::rename(&partial, &pids_file).unwrap();
        let _ = run.await;
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let pids_file = dir.path().join("pids");
    let mut agent = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "commands::tests::windows::a_crashed_agent_takes_its_running_commands_with_it",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CRASH_CHILD, &pids_file)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let tree: Vec<u32> = loop {
        if let Ok(text) = std::fs::read_to_string(&pids_file) {
            break text.lines().map(|l| l.parse().unwrap()).collect();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the child agent never started its command"
        );
        assert!(agent.try_wait().unwrap().is_none(), "the child agent ended");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let running: Vec<u32> = tree.iter().copied().filter(|p| job::alive(*p)).collect();
    assert!(running.len() >= 5, "{running:?} of {tree:?}");
    agent.kill().unwrap();
    agent.wait().unwrap();
    all_gone(&tree).await;
}

/// Holds `Global\_MSIExecute` from its own thread (a mutex is re-entrant for its owner, so the
/// check must run elsewhere, as it does for a real msiexec) until told to let go.
fn hold_msi_mutex() -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    use windows_sys::Win32::Foundation::CloseHandle;
    use windows_sys::Win32::System::Threading::{CreateMutexW, ReleaseMutex};

    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let holder = std::thread::spawn(move || {
        let name: Vec<u16> = pkglock::MSI_MUTEX
            .encode_utf16()
            .chain(std::iter::once(0))
            .collect();
        // SAFETY: a NUL-terminated name; initially owned by this thread.
        let handle = unsafe { CreateMutexW(std::ptr::null(), 1, name.as_ptr()) };
        assert!(!handle.is_null());
        held_tx.send(()).unwrap();
        let _ = release_rx.recv();
        // SAFETY: this thread owns the mutex; the handle is closed once.
        unsafe {
            ReleaseMutex(handle);
            CloseHandle(handle);
        }
    });
    held_rx.recv().unwrap();
    (release_tx, holder)
}

#[tokio::test]
async fn a_package_manager_command_waits_while_windows_installer_runs() {
    let rig = Rig::new();
    assert_eq!(rig.settings.package_mutexes, [pkglock::MSI_MUTEX]);
    let mut rt = rig.runtime();
    let (release, holder) = hold_msi_mutex();
    assert!(pkglock::mutex_held(&rig.settings.package_mutexes).is_some());
    let mut c = exec(1, TRUE);
    c.package_manager = true;
    rt.accept(leased(vec![c, exec(2, TRUE)]));
    until(&mut rt, |rt| {
        rt.queued_ids() == [1] && rt.running_ids().is_empty()
    })
    .await;
    rt.step().await;
    assert_eq!(
        rig.api.states(1),
        [CommandState::Received, CommandState::Deferred]
    );
    assert_eq!(
        rig.api.last(1).reason.as_deref(),
        Some("package manager mutex Global\\_MSIExecute is held (Windows Installer is busy)")
    );
    assert_eq!(
        rig.api.last(2).status,
        CommandState::Succeeded,
        "not held up"
    );
    release.send(()).unwrap();
    holder.join().unwrap();
    until(&mut rt, |rt| rt.queue_depth() == 0).await;
    assert_eq!(rig.api.last(1).status, CommandState::Succeeded);
    assert_eq!(pkglock::mutex_held(&rig.settings.package_mutexes), None);
}

#[test]
fn a_mutex_that_does_not_exist_is_not_held() {
    assert_eq!(
        pkglock::mutex_held(&["Global\\muster-test-no-such-mutex".to_owned()]),
        None
    );
}
