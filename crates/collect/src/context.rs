use std::io;
use std::path::{Path, PathBuf};

use crate::CollectError;

/// Where collectors read the system from.
///
/// Every path a collector reads (`/proc`, `/sys`, `/etc`, `/var/lib/...`) goes through
/// [`Context::path`], so a test can point the whole scan at a fixture tree. What is not a file
/// (addresses from the kernel, `statvfs` of a mount point, a `systemctl` child) comes from the
/// running system whatever the root.
#[derive(Debug, Clone)]
pub struct Context {
    root: PathBuf,
}

impl Default for Context {
    fn default() -> Self {
        Self::new("/")
    }
}

impl Context {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether this context reads the running system rather than a fixture tree.
    pub fn is_live(&self) -> bool {
        self.root == Path::new("/")
    }

    /// `path` (absolute, as on the live system) under this context's root.
    pub fn path(&self, path: &str) -> PathBuf {
        self.root.join(path.trim_start_matches('/'))
    }

    /// Reads a text file under the root; the error names the path.
    pub fn read(&self, path: &str) -> Result<String, CollectError> {
        let full = self.path(path);
        std::fs::read_to_string(&full).map_err(|e| CollectError::io(full, e))
    }

    /// Reads a text file under the root; `None` when it does not exist.
    pub fn read_optional(&self, path: &str) -> Result<Option<String>, CollectError> {
        let full = self.path(path);
        match std::fs::read_to_string(&full) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(CollectError::io(full, e)),
        }
    }

    /// Reads a small sysfs-style attribute: trimmed, `None` if missing, unreadable or empty.
    pub fn attr(&self, path: impl AsRef<Path>) -> Option<String> {
        let full = self
            .root
            .join(path.as_ref().strip_prefix("/").unwrap_or(path.as_ref()));
        let text = std::fs::read_to_string(full).ok()?;
        let text = text.trim();
        (!text.is_empty()).then(|| text.to_owned())
    }

    pub fn exists(&self, path: &str) -> bool {
        self.path(path).exists()
    }
}
