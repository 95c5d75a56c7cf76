//! Replacing a file whole: a reader (or a crash) sees the old contents or the new, never part.

use std::io::{self, Write};
use std::path::Path;

/// Writes `bytes` to `.<name>.tmp` beside `path`, syncs it, renames it over `path` and syncs
/// the directory. `mode`, when given, is the file's exact permission bits whatever the umask
/// (`0o600` for secrets; `0o644` for a file every user may read, even from a daemon whose umask
/// is 027); without it the file gets the usual `0o666 & !umask`.
///
/// The temporary name is fixed, so a temporary file left by a kill is replaced by the next
/// write instead of accumulating; two processes must not write the same path at once.
pub fn write(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    replace(path, bytes, mode, true)
}

/// [`write`] without the fsyncs: still never half a file for a reader, but after a power loss
/// the file may hold older contents (or, on some filesystems, none). For files rewritten after
/// every job whose loss costs nothing (the status file): each fsync is an I/O wait that wakes
/// the otherwise idle agent.
pub fn write_unsynced(path: &Path, bytes: &[u8], mode: Option<u32>) -> io::Result<()> {
    replace(path, bytes, mode, false)
}

fn replace(path: &Path, bytes: &[u8], mode: Option<u32>, durable: bool) -> io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let name = path.file_name().ok_or(io::ErrorKind::InvalidInput)?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(".tmp");
    let tmp = dir.join(tmp_name);
    #[cfg(not(unix))]
    let _ = mode;
    let result = (|| {
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if let Some(mode) = mode {
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, mode);
        }
        let mut file = options.open(&tmp)?;
        #[cfg(unix)]
        if let Some(mode) = mode {
            use std::os::unix::fs::PermissionsExt;
            // The umask narrowed the mode given at creation; the caller asked for exactly this.
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
        }
        file.write_all(bytes)?;
        if durable {
            file.sync_all()?;
        }
        std::fs::rename(&tmp, path)?;
        #[cfg(unix)]
        if durable {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    fn mode_of(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn replaces_the_file_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write(&path, b"one", Some(0o600)).unwrap();
        write(&path, b"two", Some(0o600)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        #[cfg(unix)]
        assert_eq!(mode_of(&path), 0o600);
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["state.json"]);
    }

    #[cfg(unix)]
    #[test]
    fn an_exact_mode_wins_over_a_narrow_umask_only_when_asked() {
        let dir = tempfile::tempdir().unwrap();
        let readable = dir.path().join("status.json");
        write(&readable, b"{}", Some(0o644)).unwrap();
        assert_eq!(mode_of(&readable), 0o644);
        std::fs::set_permissions(
            &readable,
            std::os::unix::fs::PermissionsExt::from_mode(0o600),
        )
        .unwrap();
        write(&readable, b"{}", Some(0o644)).unwrap();
        assert_eq!(mode_of(&readable), 0o644, "a rewrite restores the mode");
    }

    #[test]
    fn a_stale_temporary_file_from_a_kill_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(".r.json.tmp"), b"half a rep").unwrap();
        write(&dir.path().join("r.json"), b"whole", None).unwrap();
        assert_eq!(std::fs::read(dir.path().join("r.json")).unwrap(), b"whole");
        assert!(!dir.path().join(".r.json.tmp").exists());
    }

    #[test]
    fn the_unsynced_write_replaces_whole_files_too() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("status.json");
        write_unsynced(&path, b"one", Some(0o644)).unwrap();
        write_unsynced(&path, b"two", Some(0o644)).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"two");
        assert!(!dir.path().join(".status.json.tmp").exists());
    }

    #[test]
    fn a_missing_directory_is_an_error_and_creates_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("no/such/dir/r.json");
        assert!(write(&path, b"x", None).is_err());
        assert!(!dir.path().join("no").exists());
    }
}
