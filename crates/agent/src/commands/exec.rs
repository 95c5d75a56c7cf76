//! Running one `exec` or `script` command: its own process group (a Job Object on Windows),
//! stdin closed, a clean environment plus the declared variables, a timeout after which the
//! whole process tree is stopped (see [`super::proctree`], [`super::job`]), and stdout/stderr
//! captured up to a cap with the tail kept.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::time::Duration;

use muster_proto::api::Command;
use tokio::sync::watch;

/// The `PATH` of a command's otherwise empty environment (it may set its own). On Windows the
/// machine's own `PATH` is used instead (see [`base_env`]).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// How long output is still read after the command's main process ended: a background
/// descendant holding the pipes open must not hold the result back.
#[cfg_attr(not(any(unix, windows)), allow(dead_code))]
const DRAIN: Duration = Duration::from_millis(500);

/// What a spec's program is, for the message when it cannot be found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An `exec` command's program.
    Program,
    /// A `script`'s interpreter.
    Interpreter,
}

impl Role {
    pub fn noun(self) -> &'static str {
        match self {
            Role::Program => "program",
            Role::Interpreter => "interpreter",
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct ExecSpec {
    pub program: String,
    pub args: Vec<String>,
    pub env: Vec<(String, String)>,
    pub cwd: PathBuf,
    pub timeout: Duration,
    pub grace: Duration,
    pub output_cap: usize,
    pub role: Role,
}

impl ExecSpec {
    /// The spec of an `exec` command (already checked by [`super::verify`]).
    pub fn for_exec(command: &Command, timeout: Duration, grace: Duration, cap: usize) -> Self {
        let args = command
            .parameters
            .get("args")
            .and_then(|a| a.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        ExecSpec {
            program: command.command.clone(),
            args,
            env: env_of(command),
            cwd: default_cwd(),
            timeout,
            grace,
            output_cap: cap,
            role: Role::Program,
        }
    }

    /// The spec of a `script` command whose body is in `file`.
    pub fn for_script(
        command: &Command,
        interpreter: &Interpreter,
        file: &Path,
        timeout: Duration,
        grace: Duration,
        cap: usize,
    ) -> Self {
        let mut args: Vec<String> = interpreter.args.iter().map(|a| (*a).to_owned()).collect();
        args.push(file.display().to_string());
        ExecSpec {
            program: interpreter.program.to_owned(),
            args,
            env: env_of(command),
            cwd: default_cwd(),
            timeout,
            grace,
            output_cap: cap,
            role: Role::Interpreter,
        }
    }
}

/// How a `script`'s interpreter is run: `program ARGS... FILE`, the file named with
/// `extension` (Windows picks what reads a file by its extension).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interpreter {
    /// The name a command gives in `parameters.interpreter`.
    pub name: &'static str,
    pub program: &'static str,
    pub args: &'static [&'static str],
    pub extension: &'static str,
    /// Whether the file starts with a UTF-8 byte order mark (Windows PowerShell 5.1 reads a
    /// file without one in the ANSI code page).
    pub bom: bool,
}

const fn interpreter(
    name: &'static str,
    program: &'static str,
    args: &'static [&'static str],
    extension: &'static str,
) -> Interpreter {
    Interpreter {
        name,
        program,
        args,
        extension,
        bom: false,
    }
}

/// The interpreters a `script` may name on this platform; the first is the default.
#[cfg(not(windows))]
pub const INTERPRETERS: &[Interpreter] = &[
    interpreter("sh", "sh", &[], ""),
    interpreter("bash", "bash", &[], ""),
    interpreter("python3", "python3", &[], ""),
];

/// The interpreters a `script` may name on this platform; the first is the default.
/// `cmd` runs with `/D` (no AutoRun commands from the registry) and `/Q` (echo off, so the
/// output is the script's own, as with `sh`); PowerShell without profile or prompts, whatever
/// the execution policy; Python through the `py` launcher (`C:\Windows\py.exe`), on the
/// default `PATH` where Python is installed.
#[cfg(windows)]
pub const INTERPRETERS: &[Interpreter] = &[
    interpreter("cmd", "cmd.exe", &["/D", "/Q", "/C"], ".cmd"),
    Interpreter {
        bom: true,
        ..interpreter("powershell", "powershell.exe", PS_ARGS, ".ps1")
    },
    Interpreter {
        bom: true,
        ..interpreter("pwsh", "pwsh.exe", PS_ARGS, ".ps1")
    },
    interpreter("python3", "py.exe", &["-3"], ".py"),
];

#[cfg(windows)]
const PS_ARGS: &[&str] = &[
    "-NoProfile",
    "-NonInteractive",
    "-ExecutionPolicy",
    "Bypass",
    "-File",
];

/// The interpreter a script names (`None`: the platform's default), if this platform has it.
pub fn find_interpreter(name: Option<&str>) -> Option<&'static Interpreter> {
    match name {
        None => INTERPRETERS.first(),
        Some(name) => INTERPRETERS.iter().find(|i| i.name == name),
    }
}

/// Where commands run: `/`, or the system drive's root on Windows.
pub fn default_cwd() -> PathBuf {
    #[cfg(windows)]
    {
        let drive = std::env::var("SystemDrive").unwrap_or_else(|_| "C:".into());
        PathBuf::from(format!("{drive}\\"))
    }
    #[cfg(not(windows))]
    PathBuf::from("/")
}

/// The variables every command gets. Unix: `PATH` ([`DEFAULT_PATH`]) only. Windows programs
/// do not start in an empty environment (Winsock, COM and PowerShell need `SystemRoot` and
/// friends), so the machine-wide variables below are passed on from the agent's environment,
/// which for a service is the machine's: nothing user- or session-specific.
pub fn base_env() -> Vec<(String, String)> {
    #[cfg(windows)]
    {
        const PASSED: &[&str] = &[
            "SystemRoot",
            "SystemDrive",
            "windir",
            "ComSpec",
            "PATHEXT",
            "TEMP",
            "TMP",
            "ALLUSERSPROFILE",
            "ProgramData",
            "ProgramFiles",
            "ProgramFiles(x86)",
            "ProgramW6432",
            "CommonProgramFiles",
            "CommonProgramFiles(x86)",
            "CommonProgramW6432",
            "PSModulePath",
            "NUMBER_OF_PROCESSORS",
            "PROCESSOR_ARCHITECTURE",
            "OS",
        ];
        let mut env: Vec<(String, String)> = PASSED
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v)))
            .collect();
        let root = std::env::var("SystemRoot").unwrap_or_else(|_| "C:\\Windows".into());
        let path = std::env::var("PATH").unwrap_or_else(|_| {
            format!(
                "{root}\\system32;{root};{root}\\System32\\Wbem;{root}\\System32\\WindowsPowerShell\\v1.0\\"
            )
        });
        env.push(("PATH".to_owned(), path));
        env
    }
    #[cfg(not(windows))]
    vec![("PATH".to_owned(), DEFAULT_PATH.to_owned())]
}

/// Whether two variable names are the same (Windows: whatever their case).
fn same_name(a: &str, b: &str) -> bool {
    if cfg!(windows) {
        a.eq_ignore_ascii_case(b)
    } else {
        a == b
    }
}

/// `parameters.env` over the [`base_env`].
pub fn env_of(command: &Command) -> Vec<(String, String)> {
    let mut env = base_env();
    if let Some(vars) = command.parameters.get("env").and_then(|e| e.as_object()) {
        for (k, v) in vars {
            if let Some(v) = v.as_str() {
                env.retain(|(name, _)| !same_name(name, k));
                env.push((k.clone(), v.to_owned()));
            }
        }
    }
    env
}

/// A script's private directory (0700; on Windows it inherits the state directory's ACL) and
/// file, removed when dropped.
#[derive(Debug)]
pub struct ScriptDir {
    dir: PathBuf,
    pub file: PathBuf,
}

impl ScriptDir {
    /// Writes `body` to a new private directory under `parent` (created 0700 if missing), in a
    /// file named `script` with the interpreter's extension.
    pub fn create(
        parent: &Path,
        id: i64,
        body: &str,
        interpreter: &Interpreter,
    ) -> std::io::Result<ScriptDir> {
        let mut builder = std::fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(parent)?;
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = parent.join(format!("cmd-{id}-{}-{nanos}", std::process::id()));
        #[cfg_attr(not(unix), allow(unused_mut))] // the mode is Unix-only
        let mut builder = std::fs::DirBuilder::new();
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        // `create` fails if it exists: nobody else's directory is ever reused.
        builder.create(&dir)?;
        let file = dir.join(format!("script{}", interpreter.extension));
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let bom: &[u8] = if interpreter.bom {
            b"\xEF\xBB\xBF"
        } else {
            b""
        };
        let written = options.open(&file).and_then(|mut f| {
            std::io::Write::write_all(&mut f, bom)?;
            std::io::Write::write_all(&mut f, body.as_bytes())
        });
        let script = ScriptDir { dir, file };
        written.map(|()| script)
    }
}

impl Drop for ScriptDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// At most `cap` bytes, the newest kept.
#[derive(Debug, Default)]
pub struct Tail {
    cap: usize,
    bytes: VecDeque<u8>,
    pub truncated: bool,
}

impl Tail {
    pub fn new(cap: usize) -> Self {
        Tail {
            cap,
            bytes: VecDeque::new(),
            truncated: false,
        }
    }

    pub fn push(&mut self, chunk: &[u8]) {
        self.bytes.extend(chunk);
        if self.bytes.len() > self.cap {
            let excess = self.bytes.len() - self.cap;
            self.bytes.drain(..excess);
            self.truncated = true;
        }
    }

    /// The text kept (invalid UTF-8, e.g. a character cut by the cap, replaced).
    pub fn text(&self) -> String {
        let (a, b) = self.bytes.as_slices();
        let mut all = Vec::with_capacity(a.len() + b.len());
        all.extend_from_slice(a);
        all.extend_from_slice(b);
        String::from_utf8_lossy(&all).into_owned()
    }
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// The main process exited (`code` `None`: killed by a signal, see `signal`).
    Exited {
        code: Option<i32>,
        signal: Option<i32>,
    },
    /// The timeout passed; the tree was stopped.
    TimedOut,
    /// Asked to stop (cancelled, or the agent stopping); the tree was stopped.
    Stopped,
    /// It could not be started.
    SpawnFailed(String),
}

#[derive(Debug)]
pub struct ExecOutcome {
    pub ending: Ending,
    pub exit_code: Option<i32>,
    pub stdout: Tail,
    pub stderr: Tail,
}

/// Called with the main process's pid once it has started.
pub type OnSpawn = Box<dyn FnOnce(i32) + Send>;

/// Runs `spec` until it exits, times out, or `stop` turns true.
///
/// On Unix the command leads its own process group and a timeout or stop goes through
/// [`super::proctree::stop_tree`]. On Windows it is created suspended, bound to a Job Object
/// ([`super::job`]) and only then resumed, so everything it starts is in the job from its first
/// instruction; a timeout or stop waits the grace for the tree to end, then terminates the job.
#[cfg(any(unix, windows))]
pub async fn run(
    spec: ExecSpec,
    mut stop: watch::Receiver<bool>,
    on_spawn: OnSpawn,
) -> ExecOutcome {
    use std::process::Stdio;
    use std::sync::{Arc, Mutex, PoisonError};

    use tokio::io::AsyncReadExt;

    let stdout = Arc::new(Mutex::new(Tail::new(spec.output_cap)));
    let stderr = Arc::new(Mutex::new(Tail::new(spec.output_cap)));
    let take = |t: &Arc<Mutex<Tail>>| {
        std::mem::take(&mut *t.lock().unwrap_or_else(PoisonError::into_inner))
    };
    let failed = |why: String| ExecOutcome {
        ending: Ending::SpawnFailed(why),
        exit_code: None,
        stdout: Tail::new(0),
        stderr: Tail::new(0),
    };
    let mut cmd = tokio::process::Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&spec.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(false);
    #[cfg(unix)]
    cmd.process_group(0);
    #[cfg(windows)]
    cmd.creation_flags(super::job::CREATION_FLAGS);
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return failed(format!(
                "{} not found: {} ({e})",
                spec.role.noun(),
                spec.program
            ));
        }
        Err(e) => return failed(format!("cannot start {}: {e}", spec.program)),
    };
    // Bound before it runs a single instruction: nothing it starts can leave the job.
    #[cfg(windows)]
    let job = match super::job::bind_and_resume(&child) {
        Ok(job) => job,
        Err(e) => {
            let _ = child.start_kill();
            let _ = child.wait().await;
            return failed(format!("cannot bind {} to a job object: {e}", spec.program));
        }
    };
    let pid = child.id().and_then(|p| i32::try_from(p).ok()).unwrap_or(0);
    on_spawn(pid);
    let mut readers = Vec::new();
    for (pipe, tail) in [
        (
            child
                .stdout
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            stdout.clone(),
        ),
        (
            child
                .stderr
                .take()
                .map(|p| Box::new(p) as Box<dyn tokio::io::AsyncRead + Send + Unpin>),
            stderr.clone(),
        ),
    ] {
        if let Some(mut pipe) = pipe {
            readers.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 8192];
                loop {
                    match pipe.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => tail
                            .lock()
                            .unwrap_or_else(PoisonError::into_inner)
                            .push(&buf[..n]),
                    }
                }
            }));
        }
    }
    let ending = tokio::select! {
        status = child.wait() => exited(status),
        _ = tokio::time::sleep(spec.timeout) => Ending::TimedOut,
        _ = stop.wait_for(|s| *s) => Ending::Stopped,
    };
    let mut exit_code = match &ending {
        Ending::Exited { code, .. } => *code,
        _ => None,
    };
    if matches!(ending, Ending::TimedOut | Ending::Stopped) && pid > 0 {
        #[cfg(unix)]
        super::proctree::stop_tree(pid, spec.grace).await;
        #[cfg(windows)]
        let terminated = job.stop(spec.grace).await;
        if let Ok(status) = child.wait().await {
            exit_code = status.code();
        }
        // The code the job was terminated with says nothing about the command.
        #[cfg(windows)]
        if terminated {
            exit_code = None;
        }
    }
    // Ended by itself: what it left running goes on, as on Unix (the job no longer kills it).
    #[cfg(windows)]
    job.release();
    let drained = async {
        for r in &mut readers {
            let _ = r.await;
        }
    };
    if tokio::time::timeout(DRAIN, drained).await.is_err() {
        for r in &readers {
            r.abort();
        }
    }
    ExecOutcome {
        ending,
        exit_code,
        stdout: take(&stdout),
        stderr: take(&stderr),
    }
}

#[cfg(unix)]
fn exited(status: std::io::Result<std::process::ExitStatus>) -> Ending {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => Ending::Exited {
            code: s.code(),
            signal: s.signal(),
        },
        Err(e) => Ending::SpawnFailed(format!("waiting for the command: {e}")),
    }
}

#[cfg(windows)]
fn exited(status: std::io::Result<std::process::ExitStatus>) -> Ending {
    match status {
        Ok(s) => Ending::Exited {
            code: s.code(),
            signal: None,
        },
        Err(e) => Ending::SpawnFailed(format!("waiting for the command: {e}")),
    }
}

/// Other platforms run no processes yet.
#[cfg(not(any(unix, windows)))]
pub async fn run(spec: ExecSpec, _stop: watch::Receiver<bool>, _on_spawn: OnSpawn) -> ExecOutcome {
    ExecOutcome {
        ending: Ending::SpawnFailed(format!(
            "running {} is not supported on this platform yet",
            spec.program
        )),
        exit_code: None,
        stdout: Tail::new(0),
        stderr: Tail::new(0),
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    fn spec(program: &str, args: &[&str]) -> ExecSpec {
        ExecSpec {
            program: program.into(),
            args: args.iter().map(|s| s.to_string()).collect(),
            env: vec![
                ("PATH".into(), DEFAULT_PATH.into()),
                ("GREETING".into(), "hi".into()),
            ],
            cwd: PathBuf::from("/"),
            timeout: Duration::from_secs(10),
            grace: Duration::from_millis(500),
            output_cap: 1024,
            role: Role::Program,
        }
    }

    fn never() -> watch::Receiver<bool> {
        let (tx, rx) = watch::channel(false);
        std::mem::forget(tx);
        rx
    }

    #[test]
    fn the_tail_keeps_the_newest_bytes_and_says_it_cut() {
        let mut t = Tail::new(4);
        t.push(b"ab");
        assert!(!t.truncated);
        t.push(b"cdef");
        assert_eq!(t.text(), "cdef");
        assert!(t.truncated);
    }

    #[tokio::test]
    async fn exec_runs_an_argv_without_a_shell_in_a_clean_environment() {
        let out = run(
            spec(
                "sh",
                &[
                    "-c",
                    "echo \"$GREETING $HOME [$1]\"; echo err >&2; exit 3",
                    "x",
                    "a b;c",
                ],
            ),
            never(),
            Box::new(|_| {}),
        )
        .await;
        assert_eq!(
            out.ending,
            Ending::Exited {
                code: Some(3),
                signal: None
            }
        );
        assert_eq!(out.exit_code, Some(3));
        assert_eq!(out.stdout.text(), "hi  [a b;c]\n");
        assert_eq!(out.stderr.text(), "err\n");
        let no_shell = run(
            spec("echo", &["$HOME", "&&", "false"]),
            never(),
            Box::new(|_| {}),
        )
        .await;
        assert_eq!(no_shell.stdout.text(), "$HOME && false\n");
    }

    #[tokio::test]
    async fn stdin_is_closed_and_the_command_has_its_own_process_group() {
        let out = run(
            spec("sh", &["-c", "cat; cut -d' ' -f5 /proc/$$/stat; echo $$"]),
            never(),
            Box::new(|_| {}),
        )
        .await;
        let text = out.stdout.text();
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        assert_eq!(lines.len(), 2, "{lines:?}");
        assert_eq!(lines[0], lines[1], "pgid == pid");
    }

    #[tokio::test]
    async fn output_over_the_cap_keeps_the_tail() {
        let out = run(spec("sh", &["-c", "seq 1 2000"]), never(), Box::new(|_| {})).await;
        assert!(out.stdout.truncated);
        assert!(out.stdout.text().ends_with("1999\n2000\n"));
        assert!(out.stdout.text().len() <= 1024);
        assert!(!out.stderr.truncated);
    }

    #[tokio::test]
    async fn a_program_that_does_not_exist_fails_to_start() {
        let out = run(spec("/nonexistent/program", &[]), never(), Box::new(|_| {})).await;
        assert!(
            matches!(out.ending, Ending::SpawnFailed(ref m) if m.starts_with("program not found: /nonexistent/program (")),
            "{:?}",
            out.ending
        );
    }

    fn alive(pid: i32) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|t| super::super::proctree::parse_stat(&t))
            .is_some_and(|s| s.state != 'Z' && s.state != 'X')
    }

    /// A script that forks children, grandchildren, one that leaves for its own session
    /// (setsid) with a child of its own, and one that ignores SIGTERM: after the timeout every
    /// one of them is gone.
    #[tokio::test]
    async fn a_timeout_stops_the_whole_tree_including_setsid_descendants() {
        let dir = tempfile::tempdir().unwrap();
        let pids = dir.path().join("pids");
        let script = format!(
            r#"
            echo $$ >> {p}
            (echo $BASHPID >> {p}; sleep 60 & echo $! >> {p}; wait) &
            setsid bash -c 'echo $$ >> {p}; sleep 61 & echo $! >> {p}; wait' &
            bash -c 'trap "" TERM; echo $$ >> {p}; while :; do sleep 0.1; done' &
            sleep 62 &
            echo $! >> {p}
            wait
            "#,
            p = pids.display()
        );
        let mut s = spec("bash", &["-c", &script]);
        s.timeout = Duration::from_millis(800);
        s.grace = Duration::from_millis(300);
        let started = std::time::Instant::now();
        let out = run(s, never(), Box::new(|_| {})).await;
        assert_eq!(out.ending, Ending::TimedOut);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        let recorded: Vec<i32> = std::fs::read_to_string(&pids)
            .unwrap()
            .lines()
            .map(|l| l.trim().parse().unwrap())
            .collect();
        assert_eq!(
            recorded.len(),
            7,
            "every process wrote its pid: {recorded:?}"
        );
        // Orphans are reaped by init; give it a moment.
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        loop {
            let left: Vec<i32> = recorded.iter().copied().filter(|p| alive(*p)).collect();
            if left.is_empty() {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still alive: {left:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    #[tokio::test]
    async fn a_stop_request_stops_the_tree_at_once() {
        let (tx, rx) = watch::channel(false);
        let task = tokio::spawn(run(
            spec("sh", &["-c", "sleep 30 & wait"]),
            rx,
            Box::new(|_| {}),
        ));
        tokio::time::sleep(Duration::from_millis(200)).await;
        tx.send(true).unwrap();
        let out = tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(out.ending, Ending::Stopped);
    }
}
