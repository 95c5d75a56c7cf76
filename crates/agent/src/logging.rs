//! Where the agent's `tracing` events go: standard error in the foreground (journald under
//! systemd), a size-rotated file when daemonized. The level can change at runtime, for a
//! SIGHUP reload.
//!
//! Install it once, early in `run`: after [`crate::daemon::daemonize`] (which closes every
//! descriptor opened before) and before the runtime starts.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::fmt::format::{self, FormatEvent, FormatFields, Writer};
use tracing_subscriber::fmt::{FmtContext, MakeWriter};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::{Layer, Registry, filter::LevelFilter, reload};

use crate::config::LogLevel;

/// Where log lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Standard error: the foreground agent. Under systemd (`JOURNAL_STREAM` names our stderr)
    /// lines carry a `<N>` syslog priority and no timestamp, which journald adds; otherwise an
    /// RFC 3339 UTC timestamp starts each line.
    Stderr,
    /// A file rotated by size: `agent.log` becomes `agent.log.1`, `.1` becomes `.2`, ... and
    /// the file past `backups` is deleted; at most `(backups + 1) * max_size` bytes in all.
    File {
        path: PathBuf,
        max_size: u64,
        backups: u32,
    },
}

/// Keeps the log file for the process. Dropping it flushes the file to disk, so keep it alive
/// until `run` returns.
#[derive(Debug)]
#[must_use = "dropping the guard ends the flushing of the log file"]
pub struct LogGuard {
    file: Option<RotatingFile>,
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(file) = &self.file {
            file.sync();
        }
    }
}

type LevelHandle = reload::Handle<LevelFilter, Registry>;

/// The live level filter, for [`set_level`]. A process-wide value, like the subscriber it
/// belongs to.
static LEVEL: OnceLock<LevelHandle> = OnceLock::new();

/// Installs the process-wide subscriber writing to `target` at `level`. Fails when the log
/// file cannot be opened or a subscriber is already installed.
pub fn init(level: LogLevel, target: LogTarget) -> io::Result<LogGuard> {
    let (filter, handle) = reload::Layer::new(level_filter(level));
    let (output, file) = match target {
        LogTarget::Stderr if journal_is_stderr() => (journal_layer(io::stderr), None),
        LogTarget::Stderr => (text_layer(io::stderr), None),
        LogTarget::File {
            path,
            max_size,
            backups,
        } => {
            let file = RotatingFile::open(&path, max_size, backups)?;
            (text_layer(file.clone()), Some(file))
        }
    };
    let subscriber = Registry::default().with(filter).with(output);
    tracing::subscriber::set_global_default(subscriber)
        .map_err(|_| io::Error::other("a logger is already installed"))?;
    // Only the first init gets here: set_global_default succeeds once per process.
    let _ = LEVEL.set(handle);
    Ok(LogGuard { file })
}

/// Changes the level of the installed subscriber (a reloaded `log_level`). Does nothing
/// before [`init`].
pub fn set_level(level: LogLevel) {
    if let Some(handle) = LEVEL.get() {
        // Fails only when the subscriber is gone, i.e. the process is ending.
        let _ = handle.reload(level_filter(level));
    }
}

fn level_filter(level: LogLevel) -> LevelFilter {
    match level {
        LogLevel::Error => LevelFilter::ERROR,
        LogLevel::Warn => LevelFilter::WARN,
        LogLevel::Info => LevelFilter::INFO,
        LogLevel::Debug => LevelFilter::DEBUG,
        LogLevel::Trace => LevelFilter::TRACE,
    }
}

type BoxedLayer<S> = Box<dyn Layer<S> + Send + Sync + 'static>;

/// `2026-05-01T10:00:00.123456Z  INFO muster_agent::run: heartbeat sent agent_id=...`
fn text_layer<S, W>(writer: W) -> BoxedLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer().with_writer(writer).boxed()
}

/// `<6> INFO muster_agent::run: heartbeat sent agent_id=...`: journald reads the priority off
/// the prefix and stamps the time itself.
fn journal_layer<S, W>(writer: W) -> BoxedLayer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .event_format(JournalFormat(format::format().without_time()))
        .boxed()
}

/// Prefixes each line with its syslog priority (sd-daemon(3) `SD_ERR` ... `SD_DEBUG`).
struct JournalFormat<F>(F);

impl<S, N, F> FormatEvent<S, N> for JournalFormat<F>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
    F: FormatEvent<S, N>,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        let priority = match *event.metadata().level() {
            Level::ERROR => 3,
            Level::WARN => 4,
            Level::INFO => 6,
            Level::DEBUG | Level::TRACE => 7,
        };
        write!(writer, "<{priority}>")?;
        self.0.format_event(ctx, writer, event)
    }
}

/// Whether standard error is the journal stream systemd connected (`JOURNAL_STREAM` is
/// `device:inode` of it). Comparing with our own stderr matters: a process started from the
/// agent inherits the variable even when its stderr goes elsewhere.
fn journal_is_stderr() -> bool {
    std::env::var("JOURNAL_STREAM")
        .ok()
        .is_some_and(|value| stream_is_stderr(&value))
}

#[cfg(unix)]
fn stream_is_stderr(journal_stream: &str) -> bool {
    use std::os::fd::AsFd;
    use std::os::unix::fs::MetadataExt;

    let Some((dev, ino)) = journal_stream.split_once(':') else {
        return false;
    };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else {
        return false;
    };
    let Ok(stderr) = io::stderr().as_fd().try_clone_to_owned() else {
        return false;
    };
    File::from(stderr)
        .metadata()
        .is_ok_and(|m| m.dev() == dev && m.ino() == ino)
}

#[cfg(not(unix))]
fn stream_is_stderr(_journal_stream: &str) -> bool {
    false
}

/// A log file rotated by size, as a `tracing-subscriber` writer. One open handle and a byte
/// count: a line costs one `write`, a rotation a few renames.
///
/// Each line goes whole into one file: the file rotates before a line that would take it past
/// `max_size`, so files stay within `max_size` unless a single line is longer. With
/// `backups == 0` the file is emptied instead of renamed. Files are created 0640 and the
/// directory 0750.
#[derive(Debug, Clone)]
pub struct RotatingFile {
    inner: Arc<Mutex<Rotating>>,
}

#[derive(Debug)]
struct Rotating {
    path: PathBuf,
    max_size: u64,
    backups: u32,
    /// `None` after a failed reopen: the next write tries again.
    file: Option<File>,
    /// Bytes in the current file.
    size: u64,
}

impl RotatingFile {
    /// Opens (appending) or creates `path` and its directory.
    pub fn open(path: &Path, max_size: u64, backups: u32) -> io::Result<RotatingFile> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            create_dir(dir)?;
        }
        let file = open_log(path, false)?;
        let size = file.metadata()?.len();
        Ok(RotatingFile {
            inner: Arc::new(Mutex::new(Rotating {
                path: path.to_owned(),
                max_size: max_size.max(1),
                backups,
                file: Some(file),
                size,
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Rotating> {
        // A panic while writing a log line leaves nothing half-updated worth refusing over.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Pushes the written lines to disk (at shutdown).
    pub fn sync(&self) {
        if let Some(file) = &self.lock().file {
            let _ = file.sync_data();
        }
    }
}

impl Rotating {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let len = buf.len() as u64;
        if self.size > 0 && self.size.saturating_add(len) > self.max_size {
            // logrotate's `copytruncate` may have emptied the file behind our back: believe
            // the file, so the next rotation is not an early one of a nearly empty file.
            if let Some(Ok(meta)) = self.file.as_ref().map(File::metadata) {
                self.size = meta.len();
            }
            if self.size > 0 && self.size.saturating_add(len) > self.max_size {
                self.rotate();
            }
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                let file = open_log(&self.path, false)?;
                self.size = file.metadata()?.len();
                self.file.insert(file)
            }
        };
        let written = file.write(buf)?;
        self.size += written as u64;
        Ok(written)
    }

    /// Shifts `path.(n-1)` to `path.n` down to `path` to `path.1`; the rename onto
    /// `path.<backups>` deletes the oldest. When renaming is impossible the file is emptied,
    /// so the log stays bounded whatever happens.
    fn rotate(&mut self) {
        self.file = None;
        let renamed = self.backups > 0 && {
            for n in (1..self.backups).rev() {
                let _ = std::fs::rename(backup_path(&self.path, n), backup_path(&self.path, n + 1));
            }
            std::fs::rename(&self.path, backup_path(&self.path, 1)).is_ok()
        };
        if let Ok(file) = open_log(&self.path, !renamed) {
            self.file = Some(file);
            self.size = 0;
        }
    }
}

fn backup_path(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

#[cfg(unix)]
fn open_log(path: &Path, truncate: bool) -> io::Result<File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut options = OpenOptions::new();
    options.create(true).mode(0o640);
    if truncate {
        options.write(true).truncate(true);
    } else {
        options.append(true);
    }
    let file = options.open(path)?;
    // The mode above only applies to a new file, narrowed by the umask; logs may name hosts
    // and errors, so they are not for every user.
    file.set_permissions(std::fs::Permissions::from_mode(0o640))?;
    Ok(file)
}

#[cfg(not(unix))]
fn open_log(path: &Path, truncate: bool) -> io::Result<File> {
    let mut options = OpenOptions::new();
    options.create(true);
    if truncate {
        options.write(true).truncate(true);
    } else {
        options.append(true);
    }
    options.open(path)
}

#[cfg(unix)]
fn create_dir(dir: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o750)
        .create(dir)
}

#[cfg(not(unix))]
fn create_dir(dir: &Path) -> io::Result<()> {
    std::fs::create_dir_all(dir)
}

/// One event's writer: holds the lock for the one `write_all` the formatter makes, so lines
/// from different threads never interleave.
#[derive(Debug)]
pub struct RotatingWriter<'a>(MutexGuard<'a, Rotating>);

impl Write for RotatingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Unbuffered: every write already reached the kernel.
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for RotatingFile {
    type Writer = RotatingWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        RotatingWriter(self.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_lines(file: &RotatingFile, count: usize, width: usize) -> Vec<String> {
        (0..count)
            .map(|i| {
                let line = format!("{i:06} {}\n", "x".repeat(width - 8));
                file.make_writer().write_all(line.as_bytes()).unwrap();
                line
            })
            .collect()
    }

    fn files_in(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn rotation_keeps_the_newest_lines_in_bounded_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/agent.log");
        let file = RotatingFile::open(&path, 1000, 3).unwrap();
        let lines = write_lines(&file, 500, 50);

        assert_eq!(
            files_in(&dir.path().join("logs")),
            ["agent.log", "agent.log.1", "agent.log.2", "agent.log.3"]
        );
        let mut kept = String::new();
        for name in ["agent.log.3", "agent.log.2", "agent.log.1", "agent.log"] {
            let text = std::fs::read_to_string(dir.path().join("logs").join(name)).unwrap();
            assert!(text.len() <= 1000, "{name}: {} bytes", text.len());
            assert!(text.ends_with('\n'), "{name} holds whole lines");
            kept.push_str(&text);
        }
        // The files, oldest first, are exactly the last lines written, none lost in between.
        let expected: String = lines[lines.len() - kept.len() / 50..].concat();
        assert_eq!(kept, expected);
        // 1000-byte files of 50-byte lines hold 20 each; 500 is a multiple of 20, so the
        // current file is full as well (it rotates before the next line, not after this one).
        assert_eq!(kept.len() / 50, 4 * 20);
    }

    #[test]
    fn without_backups_the_file_is_emptied_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        let file = RotatingFile::open(&path, 100, 0).unwrap();
        let lines = write_lines(&file, 7, 30);
        assert_eq!(files_in(dir.path()), ["agent.log"]);
        // 3 lines fit in 100 bytes: lines 6 and 7 started the current file.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), lines[6..].concat());
    }

    #[test]
    fn reopening_counts_what_the_file_already_holds() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        std::fs::write(&path, "a".repeat(90)).unwrap();
        let file = RotatingFile::open(&path, 100, 2).unwrap();
        write_lines(&file, 1, 20);
        assert_eq!(
            std::fs::read_to_string(backup_path(&path, 1)).unwrap(),
            "a".repeat(90)
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 20);
    }

    #[test]
    fn a_line_longer_than_the_limit_still_goes_out_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        let file = RotatingFile::open(&path, 100, 1).unwrap();
        write_lines(&file, 1, 10);
        let long = write_lines(&file, 1, 250);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), long[0]);
        assert_eq!(std::fs::metadata(backup_path(&path, 1)).unwrap().len(), 10);
    }

    #[test]
    fn a_vanished_directory_costs_lines_not_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("logs/agent.log");
        let file = RotatingFile::open(&path, 50, 1).unwrap();
        let removed = std::fs::remove_dir_all(dir.path().join("logs"));
        // Windows does not delete a directory holding an open file (ERROR_DIR_NOT_EMPTY): the
        // log directory cannot vanish under the agent there, and the writer goes on.
        #[cfg(windows)]
        {
            assert!(removed.is_err(), "the open log keeps its directory");
            file.make_writer().write_all(b"still\n").unwrap();
            assert_eq!(std::fs::read_to_string(&path).unwrap(), "still\n");
            return;
        }
        #[allow(unreachable_code)]
        removed.unwrap();
        // The open handle still takes lines; the rotation fails and later writes report it.
        file.make_writer().write_all(&[b'x'; 40]).unwrap();
        assert!(file.make_writer().write_all(&[b'x'; 40]).is_err());
        std::fs::create_dir(dir.path().join("logs")).unwrap();
        file.make_writer().write_all(b"back\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "back\n");
    }

    #[cfg(unix)]
    #[test]
    fn log_files_are_0640_in_a_0750_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("var/log/muster/agent.log");
        let file = RotatingFile::open(&path, 40, 1).unwrap();
        write_lines(&file, 3, 30);
        for p in [path.clone(), backup_path(&path, 1)] {
            let mode = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
            assert_eq!(mode, 0o640, "{}", p.display());
        }
        let mode = std::fs::metadata(path.parent().unwrap())
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        // Created under the test's umask, which may narrow 0750 but never widen it.
        assert_eq!(mode & !0o750, 0, "{mode:o}");
    }

    /// A `MakeWriter` into memory, to read what a layer formats.
    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buffer {
        type Writer = Buffer;
        fn make_writer(&'a self) -> Buffer {
            self.clone()
        }
    }

    impl Buffer {
        fn text(&self) -> String {
            String::from_utf8(self.0.lock().unwrap().clone()).unwrap()
        }
    }

    #[test]
    fn journal_lines_carry_the_priority_and_no_time() {
        let buffer = Buffer::default();
        let subscriber = Registry::default().with(journal_layer(buffer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(code = 7, "spool unreadable");
            tracing::warn!("heartbeat failed");
            tracing::info!("started");
            tracing::debug!("tick");
        });
        let text = buffer.text();
        let prefixes: Vec<&str> = text.lines().map(|l| &l[..3]).collect();
        assert_eq!(prefixes, ["<3>", "<4>", "<6>", "<7>"], "{text}");
        let first = text.lines().next().unwrap();
        assert!(first.contains("ERROR"), "{first}");
        assert!(first.contains("spool unreadable code=7"), "{first}");
        assert!(!first.contains("20"), "no timestamp: {first}");
    }

    #[test]
    fn text_lines_start_with_an_rfc3339_time() {
        let buffer = Buffer::default();
        let subscriber = Registry::default().with(text_layer(buffer.clone()));
        tracing::subscriber::with_default(subscriber, || {
            tracing::warn!(attempt = 2, "heartbeat failed");
        });
        let text = buffer.text();
        let (time, rest) = text.trim_start().split_once(' ').unwrap();
        let time: jiff::Timestamp = time.parse().unwrap();
        let age = jiff::Timestamp::now().duration_since(time);
        assert!(age.as_secs() < 60, "{time}");
        assert!(rest.contains("WARN"), "{rest}");
        assert!(rest.ends_with("heartbeat failed attempt=2\n"), "{rest}");
    }

    #[cfg(unix)]
    #[test]
    fn journal_stream_must_be_our_stderr() {
        use std::os::fd::AsFd;
        use std::os::unix::fs::MetadataExt;
        let meta = File::from(io::stderr().as_fd().try_clone_to_owned().unwrap())
            .metadata()
            .unwrap();
        assert!(stream_is_stderr(&format!("{}:{}", meta.dev(), meta.ino())));
        assert!(!stream_is_stderr(&format!(
            "{}:{}",
            meta.dev(),
            meta.ino() + 1
        )));
        assert!(!stream_is_stderr("garbage"));
    }

    /// The only test that installs the process-wide subscriber (there can be one).
    #[test]
    fn init_logs_to_the_file_and_set_level_takes_effect_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.log");
        let guard = init(
            LogLevel::Info,
            LogTarget::File {
                path: path.clone(),
                max_size: 1 << 20,
                backups: 2,
            },
        )
        .unwrap();
        tracing::info!(marker = "first", "logging test");
        tracing::debug!(marker = "hidden", "logging test");
        set_level(LogLevel::Debug);
        tracing::debug!(marker = "shown", "logging test");
        set_level(LogLevel::Error);
        tracing::warn!(marker = "quiet", "logging test");

        let again = init(LogLevel::Info, LogTarget::Stderr).unwrap_err();
        assert!(again.to_string().contains("already installed"), "{again}");
        drop(guard);
        let text = std::fs::read_to_string(&path).unwrap();
        let markers: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("logging test"))
            .filter_map(|l| l.split("marker=").nth(1))
            .collect();
        assert_eq!(markers, ["\"first\"", "\"shown\""], "{text}");
    }
}
