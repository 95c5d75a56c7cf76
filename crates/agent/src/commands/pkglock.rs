//! Whether another process holds the package manager's lock: a `package_manager` command
//! waits while one does.
//!
//! dpkg and apt take POSIX record locks (`fcntl(F_SETLK)`) on their lock files; rpm and dnf
//! take them on rpm's database lock. The agent asks the kernel with `F_GETLK` for a write lock
//! over the whole file, as apt does before it takes one: a conflicting lock names its holder.
//! Nothing is ever locked, so the check cannot get in the package manager's way. A file that
//! does not exist or cannot be opened is not held.
//!
//! On Windows the package manager is Windows Installer: while it installs or removes a product
//! it holds the named mutex `Global\_MSIExecute` ([`MSI_MUTEX`]), and a second installation
//! fails with 1618 (`ERROR_INSTALL_ALREADY_RUNNING`). [`mutex_held`] opens the mutex if it
//! exists and waits on it for no time at all: taken, it was free and is released at once;
//! not taken, another process holds it. The agent holds it for a few instructions at most, so
//! an installation starting at that moment waits that long (msiexec waits for the mutex).

use std::path::{Path, PathBuf};

/// The lock files of dpkg/apt and rpm/dnf.
pub const DEFAULT_LOCK_FILES: &[&str] = &[
    "/var/lib/dpkg/lock-frontend",
    "/var/lib/dpkg/lock",
    "/var/lib/apt/lists/lock",
    "/var/cache/apt/archives/lock",
    "/var/lib/rpm/.rpm.lock",
    "/var/lib/dnf/rpmdb_lock.pid",
    "/var/cache/dnf/metadata_lock.pid",
];

/// The Windows Installer's mutex, held while an installation runs.
pub const MSI_MUTEX: &str = "Global\\_MSIExecute";

/// The mutexes checked by default: Windows Installer's on Windows, none elsewhere.
pub fn default_mutexes() -> Vec<String> {
    if cfg!(windows) {
        vec![MSI_MUTEX.to_owned()]
    } else {
        Vec::new()
    }
}

/// The first of the named mutexes `names` another process (or thread) holds, as a reason
/// (`package manager mutex Global\_MSIExecute is held (Windows Installer is busy)`).
pub fn mutex_held(names: &[String]) -> Option<String> {
    names.iter().find(|n| mutex_is_held(n)).map(|n| {
        if n == MSI_MUTEX {
            format!("package manager mutex {n} is held (Windows Installer is busy)")
        } else {
            format!("package manager mutex {n} is held")
        }
    })
}

#[cfg(windows)]
#[allow(unsafe_code)] // Win32 FFI; each block says why it is sound.
fn mutex_is_held(name: &str) -> bool {
    use windows_sys::Win32::Foundation::{CloseHandle, WAIT_ABANDONED, WAIT_OBJECT_0};
    use windows_sys::Win32::System::Threading::{OpenMutexW, ReleaseMutex, WaitForSingleObject};

    /// `SYNCHRONIZE` (wait) and `MUTEX_MODIFY_STATE` (release).
    const ACCESS: u32 = 0x0010_0000 | 0x0001;

    let wide: Vec<u16> = name.encode_utf16().chain(std::iter::once(0)).collect();
    // SAFETY: `wide` is a NUL-terminated UTF-16 name that outlives the call.
    let handle = unsafe { OpenMutexW(ACCESS, 0, wide.as_ptr()) };
    if handle.is_null() {
        // It does not exist (or is not ours to see): nobody installs.
        return false;
    }
    // SAFETY: the handle is open with SYNCHRONIZE; a zero timeout never blocks.
    let wait = unsafe { WaitForSingleObject(handle, 0) };
    let taken = wait == WAIT_OBJECT_0 || wait == WAIT_ABANDONED;
    if taken {
        // SAFETY: this thread owns the mutex (the wait above took it).
        unsafe { ReleaseMutex(handle) };
    }
    // SAFETY: the handle is open and closed once.
    unsafe { CloseHandle(handle) };
    !taken
}

#[cfg(not(windows))]
fn mutex_is_held(_name: &str) -> bool {
    false
}

/// The default lock files as paths.
pub fn default_lock_files() -> Vec<PathBuf> {
    if cfg!(windows) {
        return Vec::new();
    }
    DEFAULT_LOCK_FILES.iter().map(PathBuf::from).collect()
}

/// The first of `files` another process holds a lock on, as a reason (`/var/lib/dpkg/lock
/// held by pid 1234`).
pub fn held(files: &[PathBuf]) -> Option<String> {
    files.iter().find_map(|f| {
        holder(f).map(|pid| match pid {
            Some(pid) => format!("package manager lock {} held by pid {pid}", f.display()),
            None => format!("package manager lock {} is held", f.display()),
        })
    })
}

/// `Some(holder pid)` when another process holds a lock on `path` (`Some(None)`: an open file
/// description lock, which names no process).
#[cfg(target_os = "linux")]
fn holder(path: &Path) -> Option<Option<i32>> {
    use nix::fcntl::{FcntlArg, fcntl};
    use nix::libc;

    let file = std::fs::File::open(path).ok()?;
    let mut query = libc::flock {
        l_type: libc::F_WRLCK as libc::c_short,
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: 0,
        l_len: 0,
        l_pid: 0,
    };
    fcntl(&file, FcntlArg::F_GETLK(&mut query)).ok()?;
    if query.l_type == libc::F_UNLCK as libc::c_short {
        return None;
    }
    Some((query.l_pid > 0).then_some(query.l_pid))
}

#[cfg(not(target_os = "linux"))]
fn holder(_path: &Path) -> Option<Option<i32>> {
    None
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};

    use super::*;

    #[test]
    fn a_lock_held_by_another_process_is_seen_and_its_release_too() {
        let dir = tempfile::tempdir().unwrap();
        let lock = dir.path().join("lock-frontend");
        let free = dir.path().join("free");
        std::fs::write(&lock, b"").unwrap();
        std::fs::write(&free, b"").unwrap();
        let files = vec![free.clone(), dir.path().join("missing"), lock.clone()];
        assert_eq!(held(&files), None);
        // A child holds a POSIX write lock, as apt does, until its stdin closes.
        let mut child = Command::new("python3")
            .args([
                "-c",
                "import fcntl,sys; f=open(sys.argv[1],'r+'); fcntl.lockf(f, fcntl.LOCK_EX); print('locked', flush=True); sys.stdin.read()",
            ])
            .arg(&lock)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line.trim(), "locked");
        let reason = held(&files).unwrap();
        assert_eq!(
            reason,
            format!(
                "package manager lock {} held by pid {}",
                lock.display(),
                child.id()
            )
        );
        drop(child.stdin.take());
        child.wait().unwrap();
        assert_eq!(held(&files), None);
    }
}
