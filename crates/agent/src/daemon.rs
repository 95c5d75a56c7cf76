//! Service life on Unix: `sd_notify` for systemd, the PEP 3143 steps of `--daemonize` for SysV
//! init, and the locked pidfile that keeps a second agent from starting.
//!
//! The order `run --daemonize` follows:
//!
//! 1. load the configuration (errors still reach the terminal);
//! 2. [`PidFile::acquire`] (a second instance stops here with "another muster-agent (pid N)
//!    holds ...");
//! 3. [`daemonize`] with that pidfile, before any thread or tokio runtime exists; only the
//!    final daemon process returns from it;
//! 4. set up logging to the file, then [`Detached::ready`] (or [`Detached::fail`]), which lets
//!    the process the user started exit 0 (or 1 with the message).
//!
//! Under systemd the agent stays in the foreground and talks through [`notify`].

use std::ffi::OsStr;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Why the agent could not become a daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// `fork` only copies the calling thread, so a daemon forked from a multi-threaded process
    /// would miss threads (and could inherit locks they held).
    #[error(
        "cannot daemonize: {threads} threads already run (daemonize must come before any thread or runtime starts)"
    )]
    Threaded { threads: usize },
    /// A system call of the PEP 3143 sequence failed.
    #[error("cannot daemonize: {step} failed")]
    Step {
        step: &'static str,
        #[source]
        source: io::Error,
    },
    /// Detaching needs `fork`; Windows has its service manager instead.
    #[error("--daemonize is not supported on this platform")]
    Unsupported,
}

/// Why the pidfile could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum PidFileError {
    /// Another live process holds the lock.
    #[error("another muster-agent{} holds {}", fmt_pid(*.pid), .path.display())]
    Held { pid: Option<u32>, path: PathBuf },
    #[error("cannot lock pid file {}", .path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

fn fmt_pid(pid: Option<u32>) -> String {
    pid.map(|p| format!(" (pid {p})")).unwrap_or_default()
}

/// Sends one `sd_notify` message (`READY=1`, `STOPPING=1`, `WATCHDOG=1`, `STATUS=...`) to the
/// socket systemd names in `NOTIFY_SOCKET`. Without that variable (not under systemd, or not
/// `Type=notify`) it does nothing; a failure is logged at debug level and never stops the
/// agent, because the service works the same whether or not systemd hears about it.
pub fn notify(state: &str) {
    let Some(socket) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    if let Err(e) = notify_to(&socket, state) {
        tracing::debug!(error = %e, socket = ?socket, "sd_notify failed");
    }
}

/// `STATUS=<text>`: the one-line status `systemctl status` shows. Newlines would start new
/// assignments, so they become spaces.
pub fn notify_status(text: &str) {
    notify(&format!("STATUS={}", text.replace(['\n', '\r'], " ")));
}

/// `RELOADING=1` with the `MONOTONIC_USEC` timestamp systemd (`Type=notify-reload`) requires;
/// send `READY=1` when the reload is over.
pub fn notify_reloading() {
    match monotonic_usec() {
        Some(usec) => notify(&format!("RELOADING=1\nMONOTONIC_USEC={usec}")),
        None => notify("RELOADING=1"),
    }
}

/// Sends `state` as one datagram to `socket`: a filesystem path, or `@name` for a Linux
/// abstract socket. The building block of [`notify`], public so it can be tested without
/// touching the process environment.
#[cfg(unix)]
pub fn notify_to(socket: &OsStr, state: &str) -> io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::net::UnixDatagram;

    let sock = UnixDatagram::unbound()?;
    // A stuck systemd must not stall the agent's runtime thread.
    sock.set_write_timeout(Some(Duration::from_secs(1)))?;
    let sent = match socket.as_bytes().strip_prefix(b"@") {
        Some(name) => send_abstract(&sock, name, state.as_bytes())?,
        None => sock.send_to(state.as_bytes(), Path::new(socket))?,
    };
    if sent != state.len() {
        return Err(io::Error::other("sd_notify datagram truncated"));
    }
    Ok(())
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn send_abstract(
    sock: &std::os::unix::net::UnixDatagram,
    name: &[u8],
    message: &[u8],
) -> io::Result<usize> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;

    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
    sock.send_to_addr(message, &addr)
}

#[cfg(all(unix, not(any(target_os = "linux", target_os = "android"))))]
fn send_abstract(
    _sock: &std::os::unix::net::UnixDatagram,
    _name: &[u8],
    _message: &[u8],
) -> io::Result<usize> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract sockets exist only on linux",
    ))
}

/// Not on Unix: there is no systemd to notify.
#[cfg(not(unix))]
pub fn notify_to(_socket: &OsStr, _state: &str) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "sd_notify needs unix sockets",
    ))
}

#[cfg(unix)]
fn monotonic_usec() -> Option<u64> {
    use nix::time::{ClockId, clock_gettime};
    let now = clock_gettime(ClockId::CLOCK_MONOTONIC).ok()?;
    let secs = u64::try_from(now.tv_sec()).ok()?;
    let nanos = u64::try_from(now.tv_nsec()).ok()?;
    Some(secs * 1_000_000 + nanos / 1_000)
}

#[cfg(not(unix))]
fn monotonic_usec() -> Option<u64> {
    None
}

/// The watchdog timeout systemd expects pings within (`WatchdogSec=`), from `WATCHDOG_USEC`;
/// `None` when there is none or `WATCHDOG_PID` names another process. Ping (`WATCHDOG=1`) at
/// half of it.
pub fn watchdog_interval() -> Option<Duration> {
    let usec = std::env::var("WATCHDOG_USEC").ok();
    let pid = std::env::var("WATCHDOG_PID").ok();
    parse_watchdog(usec.as_deref(), pid.as_deref(), std::process::id())
}

fn parse_watchdog(usec: Option<&str>, pid: Option<&str>, our_pid: u32) -> Option<Duration> {
    let usec: u64 = usec?.trim().parse().ok()?;
    if usec == 0 {
        return None;
    }
    if let Some(pid) = pid {
        // systemd sets WATCHDOG_PID so a child that inherits the variables doesn't ping for us.
        if pid.trim().parse::<u32>().ok()? != our_pid {
            return None;
        }
    }
    Some(Duration::from_micros(usec))
}

/// The pid recorded in a pidfile, whether or not its process still runs.
pub fn read_pid(path: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(path).ok()?;
    text.trim().parse().ok().filter(|&pid| pid > 0)
}

/// The pid of the running agent that holds the pidfile's lock, `None` when nobody holds it.
///
/// It asks the lock, not `kill(pid, 0)`: a stale pidfile left by a crash (or a pid the kernel
/// gave to another program since) holds no lock, so it cannot claim a dead agent runs. A holder
/// that has not written its pid yet reads as pid 0.
pub fn is_running(path: &Path) -> Option<u32> {
    lock_holder(path).ok().flatten()
}

/// Like [`is_running`], but says when the pidfile cannot be opened (e.g. permissions) instead
/// of answering "not running".
#[cfg(unix)]
pub fn lock_holder(path: &Path) -> io::Result<Option<u32>> {
    use nix::errno::Errno;
    use nix::fcntl::{Flock, FlockArg};

    let file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    // A shared lock is enough to test for the agent's exclusive one, and two `status` runs at
    // once don't disturb each other.
    match Flock::lock(file, FlockArg::LockSharedNonblock) {
        Ok(_free) => Ok(None),
        Err((_, Errno::EWOULDBLOCK)) => {
            // The holder truncates then writes: give it a moment if we caught it in between.
            for _ in 0..5 {
                if let Some(pid) = read_pid(path) {
                    return Ok(Some(pid));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(Some(0))
        }
        Err((_, errno)) => Err(errno.into()),
    }
}

/// Windows: the agent holds its pidfile open for writing and shares it for reading only, so
/// a write open that fails with a sharing violation means an agent holds it.
#[cfg(windows)]
pub fn lock_holder(path: &Path) -> io::Result<Option<u32>> {
    let probe = std::fs::OpenOptions::new().write(true).open(path);
    match probe {
        Ok(_free) => Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) if e.raw_os_error() == Some(windows_lock::ERROR_SHARING_VIOLATION) => {
            for _ in 0..5 {
                if let Some(pid) = read_pid(path) {
                    return Ok(Some(pid));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            Ok(Some(0))
        }
        Err(e) => Err(e),
    }
}

/// Without `flock` the pidfile only records a pid; whether it runs is unknown.
#[cfg(not(any(unix, windows)))]
pub fn lock_holder(_path: &Path) -> io::Result<Option<u32>> {
    Ok(None)
}

/// The pidfile lock on Windows is the file's share mode: `FILE_SHARE_READ | FILE_SHARE_DELETE`
/// lets `status` read the pid and the holder delete the file on exit, and makes a second
/// writer's open fail with a sharing violation.
#[cfg(windows)]
mod windows_lock {
    pub const SHARE_READ_DELETE: u32 = 0x1 | 0x4;
    pub const ERROR_SHARING_VIOLATION: i32 = 32;
}

/// The agent's pidfile, holding an exclusive `flock` for as long as the value lives (keep it
/// for the whole process). Dropping it removes the file.
#[derive(Debug)]
pub struct PidFile {
    path: PathBuf,
    #[cfg(unix)]
    file: nix::fcntl::Flock<File>,
    #[cfg(not(unix))]
    file: File,
}

impl PidFile {
    /// Creates (0644) or opens `path`, locks it without waiting and writes our pid.
    #[cfg(unix)]
    pub fn acquire(path: &Path) -> Result<PidFile, PidFileError> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};

        use nix::errno::Errno;
        use nix::fcntl::{Flock, FlockArg};

        let io_err = |source: io::Error| PidFileError::Io {
            path: path.to_owned(),
            source,
        };
        // Bounded: each retry means another agent removed the file under us, which only
        // happens while one stops.
        for _ in 0..10 {
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o644)
                // A symlink planted at the path must not make us truncate its target.
                .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
                .open(path)
                .map_err(io_err)?;
            let file = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
                Ok(locked) => locked,
                Err((_, Errno::EWOULDBLOCK)) => {
                    return Err(PidFileError::Held {
                        pid: read_pid(path),
                        path: path.to_owned(),
                    });
                }
                Err((_, errno)) => return Err(io_err(errno.into())),
            };
            // The previous holder may have unlinked the file between our open and our lock:
            // that lock is on a file nobody else can find, so a third agent could lock a new
            // one. Only a lock on the file the path names counts.
            if !names_same_file(path, &file) {
                continue;
            }
            // The umask may have narrowed the mode; `status` run by any user reads this.
            file.set_permissions(std::fs::Permissions::from_mode(0o644))
                .map_err(io_err)?;
            let mut pidfile = PidFile {
                path: path.to_owned(),
                file,
            };
            pidfile.write_pid(std::process::id()).map_err(io_err)?;
            return Ok(pidfile);
        }
        Err(io_err(io::Error::other("the file keeps being replaced")))
    }

    /// Opens `path` for writing shared for reading only (the Windows lock, see
    /// [`lock_holder`]) and writes our pid; a second agent gets [`PidFileError::Held`].
    #[cfg(windows)]
    pub fn acquire(path: &Path) -> Result<PidFile, PidFileError> {
        use std::os::windows::fs::OpenOptionsExt as _;
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .share_mode(windows_lock::SHARE_READ_DELETE)
            .open(path);
        let file = match file {
            Ok(file) => file,
            Err(e) if e.raw_os_error() == Some(windows_lock::ERROR_SHARING_VIOLATION) => {
                return Err(PidFileError::Held {
                    pid: read_pid(path),
                    path: path.to_owned(),
                });
            }
            Err(source) => {
                return Err(PidFileError::Io {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        PidFile::holding(path, file)
    }

    /// Writes our pid without a lock: there is no `flock` here.
    #[cfg(not(any(unix, windows)))]
    pub fn acquire(path: &Path) -> Result<PidFile, PidFileError> {
        let file = File::create(path).map_err(|source| PidFileError::Io {
            path: path.to_owned(),
            source,
        })?;
        PidFile::holding(path, file)
    }

    /// The pidfile at `path`, opened as `file`, with our pid written in it.
    #[cfg(not(unix))]
    fn holding(path: &Path, file: File) -> Result<PidFile, PidFileError> {
        let mut pidfile = PidFile {
            path: path.to_owned(),
            file,
        };
        pidfile
            .write_pid(std::process::id())
            .map_err(|source| PidFileError::Io {
                path: path.to_owned(),
                source,
            })?;
        Ok(pidfile)
    }

    /// The path the pidfile was taken at.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn write_pid(&mut self, pid: u32) -> io::Result<()> {
        use std::io::{Seek, SeekFrom, Write};
        let file: &mut File = &mut self.file;
        file.set_len(0)?;
        file.seek(SeekFrom::Start(0))?;
        file.write_all(format!("{pid}\n").as_bytes())
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        // Remove only our own file: if someone replaced it, it is not ours to delete. The lock
        // goes when `file` drops, after the unlink, so no one can lock the old inode meanwhile
        // and think it holds the pidfile.
        if names_same_file(&self.path, &self.file) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[cfg(unix)]
fn names_same_file(path: &Path, file: &File) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(path), file.metadata()) {
        (Ok(a), Ok(b)) => a.dev() == b.dev() && a.ino() == b.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn names_same_file(path: &Path, _file: &File) -> bool {
    path.exists()
}

/// The daemon's end of the line back to the process the user started, which waits (so an
/// init script sees a failed start as a failed command) until the daemon reports [`ready`]
/// or [`fail`]ure. Dropping it unreported counts as a failed start.
///
/// [`ready`]: Detached::ready
/// [`fail`]: Detached::fail
#[derive(Debug)]
pub struct Detached {
    channel: Option<File>,
}

impl Detached {
    /// Startup is done: the original process exits 0.
    pub fn ready(mut self) {
        self.send(b"ok");
    }

    /// Startup failed: the original process prints `message` on its standard error and exits
    /// 1. The caller exits too.
    pub fn fail(mut self, message: &str) {
        let mut line = b"E".to_vec();
        line.extend_from_slice(message.as_bytes());
        self.send(&line);
    }

    fn send(&mut self, message: &[u8]) {
        use std::io::Write;
        if let Some(mut channel) = self.channel.take() {
            // The original process may be gone (killed): nothing to tell then.
            let _ = channel.write_all(message);
        }
    }
}

/// Detaches the agent from its terminal and session: the PEP 3143 steps of seed 002.
///
/// It closes every file descriptor beyond stdin/stdout/stderr (except the pidfile's), forks
/// (the process the user started waits for [`Detached::ready`] and exits), calls `setsid`,
/// ignores the terminal signals SIGTTOU/SIGTTIN/SIGTSTP, forks again so the daemon is no
/// session leader and can never reacquire a controlling terminal, changes to `/`, sets umask
/// 027, points stdin/stdout/stderr at `/dev/null`, resets SIGCHLD to its default so the
/// children it runs are reaped normally, and rewrites the pidfile with the daemon's pid.
/// Only the daemon returns; an `Err` comes back only from before the first fork, in the
/// process that called it. A step that fails later is printed by the original process, which
/// exits 1 and removes the pidfile.
///
/// Call it before any thread starts (no tokio runtime yet, no logging to a file yet): `fork`
/// copies only the calling thread, so it refuses with [`DaemonError::Threaded`] otherwise.
/// Any file opened earlier is closed under its owner, so drop such files first.
#[cfg(unix)]
pub fn daemonize(pid_file: Option<&mut PidFile>) -> Result<Detached, DaemonError> {
    let threads = thread_count();
    if threads > 1 {
        return Err(DaemonError::Threaded { threads });
    }
    detach(pid_file)
}

/// Not on this platform: see [`DaemonError::Unsupported`].
#[cfg(not(unix))]
pub fn daemonize(_pid_file: Option<&mut PidFile>) -> Result<Detached, DaemonError> {
    Err(DaemonError::Unsupported)
}

/// The number of threads of this process (1 where it cannot be counted).
#[cfg(unix)]
fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|dir| dir.count())
        .unwrap_or(1)
}

#[cfg(unix)]
fn detach(pid_file: Option<&mut PidFile>) -> Result<Detached, DaemonError> {
    use std::io::Read;
    use std::os::unix::net::UnixStream;

    use nix::unistd::ForkResult;

    // A close-on-exec pair (std sets CLOEXEC), so the commands the daemon runs cannot keep
    // the original process waiting.
    let (waiter, reporter) = UnixStream::pair().map_err(step("socketpair"))?;
    match sys::fork().map_err(nix_step("fork"))? {
        ForkResult::Parent { child } => {
            drop(reporter);
            // Reap the intermediate child, which exits as soon as it has forked the daemon.
            let _ = nix::sys::wait::waitpid(child, None);
            let mut answer = Vec::new();
            let _ = (&waiter).take(4096).read_to_end(&mut answer);
            let code = report_startup(&answer);
            if code != 0 {
                // Still locked through our descriptor: no other agent can have taken it.
                if let Some(pid_file) = pid_file {
                    let _ = std::fs::remove_file(&pid_file.path);
                }
            }
            std::process::exit(code);
        }
        ForkResult::Child => drop(waiter),
    }
    let mut detached = Detached {
        channel: Some(File::from(std::os::fd::OwnedFd::from(reporter))),
    };
    if let Err(e) = become_daemon(pid_file, &detached) {
        // The original process prints it: our stderr may be /dev/null by now.
        detached.send(format!("E{}", error_chain(&e)).as_bytes());
        std::process::exit(1);
    }
    Ok(detached)
}

/// What the process the user started prints and exits with, given the daemon's answer.
#[cfg(unix)]
fn report_startup(answer: &[u8]) -> i32 {
    match answer {
        b"ok" => 0,
        [b'E', message @ ..] => {
            eprintln!("muster-agent: {}", String::from_utf8_lossy(message));
            1
        }
        _ => {
            eprintln!("muster-agent: the daemon exited before it was ready (see its log file)");
            1
        }
    }
}

#[cfg(unix)]
fn error_chain(e: &DaemonError) -> String {
    use std::error::Error;
    match e.source() {
        Some(source) => format!("{e}: {source}"),
        None => e.to_string(),
    }
}

/// Everything after the first fork, in the child.
#[cfg(unix)]
fn become_daemon(pid_file: Option<&mut PidFile>, detached: &Detached) -> Result<(), DaemonError> {
    use std::os::fd::AsRawFd;

    use nix::sys::signal::Signal;
    use nix::sys::stat::{Mode, umask};
    use nix::unistd::{ForkResult, chdir, setsid};

    setsid().map_err(nix_step("setsid"))?;
    for signal in [Signal::SIGTTOU, Signal::SIGTTIN, Signal::SIGTSTP] {
        sys::set_disposition(signal, sys::Disposition::Ignore)
            .map_err(nix_step("ignoring terminal signals"))?;
    }
    // The session leader could acquire a controlling terminal by opening one; its child,
    // which is no session leader, never can.
    match sys::fork().map_err(nix_step("second fork"))? {
        ForkResult::Parent { .. } => std::process::exit(0),
        ForkResult::Child => {}
    }
    chdir("/").map_err(nix_step("chdir /"))?;
    umask(Mode::from_bits_truncate(0o027));

    let mut keep = Vec::new();
    if let Some(channel) = &detached.channel {
        keep.push(channel.as_raw_fd());
    }
    if let Some(pid_file) = &pid_file {
        keep.push(pid_file.file.as_raw_fd());
    }
    close_fds_except(&keep);
    redirect_stdio().map_err(step("redirecting stdio to /dev/null"))?;
    // An inherited SIG_IGN on SIGCHLD would make the kernel reap children itself and every
    // wait for a command's exit status fail.
    sys::set_disposition(Signal::SIGCHLD, sys::Disposition::Default)
        .map_err(nix_step("resetting SIGCHLD"))?;
    if let Some(pid_file) = pid_file {
        pid_file
            .write_pid(std::process::id())
            .map_err(step("writing the pid file"))?;
    }
    Ok(())
}

/// Closes every descriptor above 2 not in `keep`: the ones the daemon inherited (a terminal, a
/// socket of the shell that started it) would otherwise stay open for its lifetime.
#[cfg(unix)]
fn close_fds_except(keep: &[std::os::fd::RawFd]) {
    let listed: Option<Vec<i32>> = ["/proc/self/fd", "/dev/fd"].iter().find_map(|dir| {
        let entries = std::fs::read_dir(dir).ok()?;
        Some(
            entries
                .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect(),
        )
    });
    // Without a listing, try every descriptor the process may have (capped: a huge limit
    // would make this loop crawl).
    let fds = listed.unwrap_or_else(|| {
        let max = nix::unistd::sysconf(nix::unistd::SysconfVar::OPEN_MAX)
            .ok()
            .flatten()
            .map_or(1024, |max| max.clamp(3, 65_536) as i32);
        (3..max).collect()
    });
    for fd in fds {
        if fd > 2 && !keep.contains(&fd) {
            // EBADF is expected for the listing's own descriptor, closed by now.
            let _ = nix::unistd::close(fd);
        }
    }
}

#[cfg(unix)]
fn redirect_stdio() -> io::Result<()> {
    use nix::unistd::{dup2_stderr, dup2_stdin, dup2_stdout};
    let null = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    dup2_stdin(&null)?;
    dup2_stdout(&null)?;
    dup2_stderr(&null)?;
    Ok(())
}

#[cfg(unix)]
fn step(step: &'static str) -> impl FnOnce(io::Error) -> DaemonError {
    move |source| DaemonError::Step { step, source }
}

#[cfg(unix)]
fn nix_step(step: &'static str) -> impl FnOnce(nix::errno::Errno) -> DaemonError {
    move |errno| DaemonError::Step {
        step,
        source: errno.into(),
    }
}

/// The only unsafe code of the agent's service life: nix marks `fork` and `signal` unsafe.
#[cfg(unix)]
#[allow(unsafe_code)]
mod sys {
    use nix::sys::signal::{SigHandler, Signal, signal};
    use nix::unistd::ForkResult;

    /// What a signal does.
    #[derive(Debug, Clone, Copy)]
    pub(super) enum Disposition {
        Ignore,
        Default,
    }

    /// `fork(2)`, for [`super::detach`] only.
    pub(super) fn fork() -> nix::Result<ForkResult> {
        // SAFETY: the child of a multi-threaded process may only run async-signal-safe code,
        // since locks held by the threads that were not copied stay locked. `detach` runs
        // while this process has a single thread: `daemonize` counts /proc/self/task first
        // and refuses otherwise, and the unit test that calls `detach` directly has only
        // libtest's main thread besides, parked on a channel and holding no lock the child
        // uses (glibc's fork also resets the allocator's locks).
        unsafe { nix::unistd::fork() }
    }

    /// Sets `sig` to be ignored or to its default action.
    pub(super) fn set_disposition(sig: Signal, disposition: Disposition) -> nix::Result<()> {
        let handler = match disposition {
            Disposition::Ignore => SigHandler::SigIgn,
            Disposition::Default => SigHandler::SigDfl,
        };
        // SAFETY: SIG_IGN and SIG_DFL install no function of ours, so no code runs in signal
        // context; and nothing this replaces was installed by other code (daemonize runs
        // before tokio sets up its signal handling).
        unsafe { signal(sig, handler) }.map(drop)
    }
}

/// Returns the allocator's free memory to the operating system (glibc's `malloc_trim`), so an
/// agent idle between scans does not keep a scan's peak resident. A no-op elsewhere.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    {
        unsafe extern "C" {
            fn malloc_trim(pad: usize) -> std::ffi::c_int;
        }
        // SAFETY: malloc_trim takes no pointers and may be called at any time from any
        // thread; glibc serializes it with the allocator's own locks.
        unsafe {
            malloc_trim(0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn watchdog_is_the_usec_value_for_our_pid_only() {
        assert_eq!(
            parse_watchdog(Some("30000000"), None, 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_watchdog(Some("30000000"), Some("7"), 7),
            Some(Duration::from_secs(30))
        );
        assert_eq!(parse_watchdog(Some("30000000"), Some("8"), 7), None);
        assert_eq!(parse_watchdog(Some("30000000"), Some("x"), 7), None);
        assert_eq!(parse_watchdog(Some("0"), None, 7), None);
        assert_eq!(parse_watchdog(Some("-5"), None, 7), None);
        assert_eq!(parse_watchdog(None, Some("7"), 7), None);
    }

    #[test]
    fn held_message_names_the_pid_and_the_path() {
        let held = PidFileError::Held {
            pid: Some(4242),
            path: "/run/muster-agent.pid".into(),
        };
        assert_eq!(
            held.to_string(),
            "another muster-agent (pid 4242) holds /run/muster-agent.pid"
        );
        let unknown = PidFileError::Held {
            pid: None,
            path: "/run/x.pid".into(),
        };
        assert_eq!(unknown.to_string(), "another muster-agent holds /run/x.pid");
    }

    #[cfg(unix)]
    #[test]
    fn notify_sends_exactly_one_datagram_to_a_path_socket() {
        use std::os::unix::net::UnixDatagram;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("notify.sock");
        let server = UnixDatagram::bind(&path).unwrap();
        notify_to(path.as_os_str(), "READY=1").unwrap();
        notify_to(path.as_os_str(), "STATUS=idle").unwrap();
        let mut buf = [0u8; 256];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1");
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"STATUS=idle");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn notify_reaches_an_abstract_socket() {
        use std::os::linux::net::SocketAddrExt;
        use std::os::unix::net::{SocketAddr, UnixDatagram};
        let name = format!("muster-agent-test-{}", std::process::id());
        let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
        let server = UnixDatagram::bind_addr(&addr).unwrap();
        notify_to(OsStr::new(&format!("@{name}")), "WATCHDOG=1").unwrap();
        let mut buf = [0u8; 64];
        let n = server.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"WATCHDOG=1");
    }

    #[cfg(unix)]
    #[test]
    fn notify_to_a_missing_socket_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let err = notify_to(dir.path().join("absent").as_os_str(), "READY=1").unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
    }

    #[cfg(unix)]
    #[test]
    fn monotonic_clock_moves_forward() {
        let a = monotonic_usec().unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let b = monotonic_usec().unwrap();
        assert!(b >= a + 2_000, "{a} {b}");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn thread_count_sees_every_thread() {
        // What daemonize checks. Counting, not calling daemonize: were the count wrong, the
        // call would fork the test harness. libtest runs this test on a thread of its own,
        // besides its main thread, and here is one more.
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let extra = std::thread::spawn(move || rx.recv());
        assert!(thread_count() >= 3, "{}", thread_count());
        let err = DaemonError::Threaded {
            threads: thread_count(),
        };
        assert!(err.to_string().contains("before any thread"), "{err}");
        drop(tx);
        extra.join().unwrap().unwrap_err();
    }

    #[cfg(unix)]
    #[test]
    fn startup_answers_map_to_exit_codes() {
        assert_eq!(report_startup(b"ok"), 0);
        assert_eq!(report_startup(b"Ecannot bind"), 1);
        assert_eq!(report_startup(b""), 1);
    }

    /// The daemon side of [`daemonize_detaches_from_session_terminal_and_files`]: runs in a
    /// re-executed copy of this test binary, detaches, records what the daemon looks like and
    /// waits for the test to say stop.
    #[cfg(target_os = "linux")]
    fn daemon_child(dir: &Path, fail: bool) -> ! {
        use std::os::fd::IntoRawFd;

        let mut pid_file = PidFile::acquire(&dir.join("agent.pid")).unwrap();
        // A descriptor the daemon must not keep (leaked on purpose: daemonize closes it under
        // any owner).
        let stray_path = dir.join("stray");
        std::fs::write(&stray_path, b"").unwrap();
        let _stray = File::open(&stray_path).unwrap().into_raw_fd();
        let detached = detach(Some(&mut pid_file)).unwrap();
        if fail {
            detached.fail("startup went wrong on purpose");
            std::process::exit(1);
        }
        let status = std::fs::read_to_string("/proc/self/status").unwrap();
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .trim()
                .to_owned()
        };
        let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
        // Fields after the command name in parentheses: state ppid pgrp session tty_nr ...
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        let mut fds: Vec<String> = std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let target = std::fs::read_link(e.path())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default();
                format!("{}={}", e.file_name().to_string_lossy(), target)
            })
            .collect();
        fds.sort();
        let report = serde_json::json!({
            "pid": std::process::id(),
            "pgrp": fields[2],
            "session": fields[3],
            "tty_nr": fields[4],
            "cwd": std::fs::read_link("/proc/self/cwd").unwrap(),
            "umask": field("Umask:"),
            "sig_ign": field("SigIgn:"),
            "fds": fds,
            "dev_tty": File::open("/dev/tty").is_ok(),
        });
        std::fs::write(dir.join("report.json.tmp"), report.to_string()).unwrap();
        std::fs::rename(dir.join("report.json.tmp"), dir.join("report.json")).unwrap();
        detached.ready();
        // Bounded: the test tells us to stop within seconds; never outlive it by much.
        for _ in 0..1000 {
            if dir.join("stop").exists() {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        drop(pid_file);
        std::process::exit(0);
    }

    #[cfg(target_os = "linux")]
    fn run_daemon_child(dir: &Path, mode: &str) -> std::process::Output {
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "daemon::tests::daemonize_detaches_from_session_terminal_and_files",
                "--nocapture",
                "--test-threads=1",
            ])
            .env("MUSTER_TEST_DAEMON_DIR", dir)
            .env("MUSTER_TEST_DAEMON_MODE", mode)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn daemonize_detaches_from_session_terminal_and_files() {
        if let Some(dir) = std::env::var_os("MUSTER_TEST_DAEMON_DIR") {
            let fail = std::env::var("MUSTER_TEST_DAEMON_MODE").as_deref() == Ok("fail");
            daemon_child(Path::new(&dir), fail);
        }
        let dir = tempfile::tempdir().unwrap();
        let started = run_daemon_child(dir.path(), "ok");
        // The process we started exits 0 only once the daemon said ready, so the report is
        // there without waiting.
        assert!(
            started.status.success(),
            "{}",
            String::from_utf8_lossy(&started.stderr)
        );
        let report: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap())
                .unwrap();
        let pid = report["pid"].as_u64().unwrap() as u32;
        // Not the session leader (second fork), in a session of its own (setsid).
        assert_ne!(report["session"], pid.to_string(), "{report}");
        assert_ne!(report["session"], std::process::id().to_string());
        assert_eq!(report["pgrp"], report["session"], "{report}");
        assert_eq!(report["tty_nr"], "0", "no controlling terminal: {report}");
        assert_eq!(report["dev_tty"], false, "{report}");
        assert_eq!(report["cwd"], "/");
        assert_eq!(report["umask"], "0027");
        // SIGTTIN (21), SIGTTOU (22), SIGTSTP (20) ignored: bits 19, 20, 21 of the mask.
        let ignored = u64::from_str_radix(report["sig_ign"].as_str().unwrap(), 16).unwrap();
        for signal in [20, 21, 22] {
            assert_ne!(
                ignored & (1 << (signal - 1)),
                0,
                "signal {signal}: {report}"
            );
        }
        assert_eq!(
            ignored & (1 << (17 - 1)),
            0,
            "SIGCHLD not ignored: {report}"
        );
        let fds: Vec<&str> = report["fds"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f.as_str().unwrap())
            .collect();
        for fd in ["0", "1", "2"] {
            assert!(fds.contains(&format!("{fd}=/dev/null").as_str()), "{fds:?}");
        }
        assert!(
            !fds.iter().any(|f| f.ends_with("/stray")),
            "an inherited descriptor is closed: {fds:?}"
        );
        let pid_path = dir.path().join("agent.pid");
        assert!(
            fds.iter()
                .any(|f| f.ends_with(&pid_path.display().to_string())),
            "the pidfile stays open: {fds:?}"
        );
        // stdio, the pidfile, the line back, the directory listing itself: nothing else.
        assert!(fds.len() <= 6, "{fds:?}");
        // The pidfile names the daemon, not the process we started, and is locked.
        assert_eq!(read_pid(&pid_path), Some(pid));
        assert_eq!(is_running(&pid_path), Some(pid));

        std::fs::write(dir.path().join("stop"), b"").unwrap();
        let mut gone = false;
        for _ in 0..500 {
            if !pid_path.exists() {
                gone = true;
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(gone, "the daemon removes its pidfile when it ends");
        assert_eq!(is_running(&pid_path), None);

        // A daemon that fails its startup makes the started process fail with its message.
        let failing = tempfile::tempdir().unwrap();
        let started = run_daemon_child(failing.path(), "fail");
        assert_eq!(started.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&started.stderr);
        assert!(
            stderr.contains("muster-agent: startup went wrong on purpose"),
            "{stderr}"
        );
        assert!(
            !failing.path().join("agent.pid").exists(),
            "a failed start leaves no pidfile"
        );
    }
}
