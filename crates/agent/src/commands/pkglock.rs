//! Whether another process holds the package manager's lock: a `package_manager` command
//! waits while one does.
//!
//! dpkg and apt take POSIX record locks (`fcntl(F_SETLK)`) on their lock files; rpm and dnf
//! take them on rpm's database lock. The agent asks the kernel with `F_GETLK` for a write lock
//! over the whole file, as apt does before it takes one: a conflicting lock names its holder.
//! Nothing is ever locked, so the check cannot get in the package manager's way. A file that
//! does not exist or cannot be opened is not held.

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

/// The default lock files as paths.
pub fn default_lock_files() -> Vec<PathBuf> {
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
