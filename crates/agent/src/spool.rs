//! A bounded on-disk spool of reports that could not be delivered, sent oldest-first when the
//! server answers again.
//!
//! One file per item, `<sequence, 20 digits>-<kind>.item`, so the names' lexical order is the
//! arrival order. An item is written to `<name>.tmp`, fsynced, renamed to its final name and the
//! directory fsynced: a `kill -9` or a power cut leaves either the whole item or at most a
//! `*.tmp` file, which [`Spool::open`] deletes. Each item starts with a one-line header giving
//! its kind, its body's length, a SHA-256 over kind, API path and body, and the API path; an
//! item whose header or body does not check out (disk corruption, an outside edit) is skipped, deleted and counted as dropped
//! instead of being sent.
//!
//! Bounds: past `max_bytes` (file sizes, header included) or `max_items`, the oldest telemetry
//! goes first, then the oldest item of any kind. The number dropped is kept in the `dropped`
//! file so a restart does not lose it; the heartbeat reports and resets it
//! ([`Spool::take_dropped`]).
//!
//! The methods do blocking file I/O (fsync included): from async code call them through
//! `tokio::task::spawn_blocking` or accept a short block of the thread. Removal does not fsync:
//! an item that reappears after a crash is resent and the server deduplicates it by its
//! `report_id`.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tracing::warn;

/// The first word of every item file; the version changes if the format does.
const MAGIC: &str = "muster-spool/1";
const ITEM_SUFFIX: &str = ".item";
const TMP_SUFFIX: &str = ".tmp";
const DROPPED_FILE: &str = "dropped";
/// The longest header line read (the API path is at most [`MAX_API_PATH`]).
const MAX_HEADER: usize = 2048;
/// The longest API path an item may carry.
pub const MAX_API_PATH: usize = 1024;

/// What an item is, which decides what is dropped first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SpoolKind {
    /// Metrics: the first to go when the spool is full (a newer sample supersedes it).
    Telemetry,
    Inventory,
    Other,
}

impl SpoolKind {
    /// The kind's name in file names and headers.
    pub fn as_str(self) -> &'static str {
        match self {
            SpoolKind::Telemetry => "telemetry",
            SpoolKind::Inventory => "inventory",
            SpoolKind::Other => "other",
        }
    }

    fn parse(s: &str) -> Option<SpoolKind> {
        match s {
            "telemetry" => Some(SpoolKind::Telemetry),
            "inventory" => Some(SpoolKind::Inventory),
            "other" => Some(SpoolKind::Other),
            _ => None,
        }
    }
}

impl fmt::Display for SpoolKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An item's identity: its arrival sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SpoolId(pub u64);

impl fmt::Display for SpoolId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A spooled report, as pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolItem {
    pub id: SpoolId,
    pub kind: SpoolKind,
    /// The API path to POST it to, as given to [`Spool::push`] (e.g. `metrics/report`).
    pub api_path: String,
    pub body: Vec<u8>,
}

/// What a push cost.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PushOutcome {
    /// Older items dropped to make room for this one.
    pub dropped: u64,
}

/// How full the spool is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpoolStats {
    pub items: u64,
    /// Bytes on disk, headers included.
    pub bytes: u64,
}

/// The spool in one directory. Operations are serialised by an internal lock; one process
/// should own a directory at a time (the daemon's pidfile sees to that).
#[derive(Debug)]
pub struct Spool {
    dir: PathBuf,
    max_bytes: u64,
    max_items: u64,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    /// Sequence → entry; the directory's items, in arrival order.
    items: BTreeMap<u64, Entry>,
    bytes: u64,
    next_seq: u64,
    dropped: u64,
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    kind: SpoolKind,
    size: u64,
}

impl Spool {
    /// Opens (creating, mode 0700) the spool in `dir`: deletes leftover temp files, indexes
    /// the items, and drops items if the bounds have shrunk since they were written.
    pub fn open(dir: &Path, max_bytes: u64, max_items: u64) -> io::Result<Spool> {
        create_private_dir(dir)?;
        let mut items = BTreeMap::new();
        let mut bytes = 0;
        let mut cleaned = false;
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(TMP_SUFFIX) {
                // A write that never reached its rename: the item was never pushed.
                match fs::remove_file(entry.path()) {
                    Ok(()) => cleaned = true,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
                continue;
            }
            let Some((seq, kind)) = parse_item_name(name) else {
                continue;
            };
            let size = entry.metadata()?.len();
            bytes += size;
            items.insert(seq, Entry { kind, size });
        }
        if cleaned {
            sync_dir(dir)?;
        }
        let dropped = read_dropped(&dir.join(DROPPED_FILE));
        let next_seq = items.last_key_value().map_or(0, |(seq, _)| seq + 1);
        let spool = Spool {
            dir: dir.to_owned(),
            max_bytes,
            max_items,
            inner: Mutex::new(Inner {
                items,
                bytes,
                next_seq,
                dropped,
            }),
        };
        {
            let mut inner = spool.lock();
            let (dropped, room) = spool.make_room(&mut inner, 0, 0);
            if dropped > 0 {
                warn!(
                    dropped,
                    "spool over its bounds at start, oldest items dropped"
                );
                inner.dropped += dropped;
                spool.persist_dropped(&inner);
            }
            room?;
        }
        Ok(spool)
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes an item durably (temp file, fsync, rename, directory fsync), first dropping the
    /// oldest telemetry, then the oldest items, while the bounds would be exceeded.
    ///
    /// An item that alone exceeds `max_bytes` (or any item when `max_items` is 0) is not
    /// stored: it is counted as dropped and the call fails with `InvalidInput`, as it does for
    /// an empty API path or one with whitespace or control characters.
    pub fn push(&self, kind: SpoolKind, api_path: &str, body: &[u8]) -> io::Result<PushOutcome> {
        check_api_path(api_path)?;
        let header = header_line(kind, api_path, body);
        let size = (header.len() + body.len()) as u64;
        let mut inner = self.lock();
        if size > self.max_bytes || self.max_items == 0 {
            inner.dropped += 1;
            self.persist_dropped(&inner);
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a {size}-byte item does not fit a spool of {} bytes and {} items",
                    self.max_bytes, self.max_items
                ),
            ));
        }
        let seq = inner.next_seq;
        inner.next_seq += 1;
        let name = item_name(seq, kind);
        let tmp = self.dir.join(format!("{name}{TMP_SUFFIX}"));
        // Written before anything is evicted: a full disk costs the new item, not old ones.
        if let Err(e) = write_synced(&tmp, &[header.as_bytes(), body]) {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        let (dropped, room) = self.make_room(&mut inner, size, 1);
        if dropped > 0 {
            inner.dropped += dropped;
            self.persist_dropped(&inner);
        }
        let result = room
            .and_then(|()| fs::rename(&tmp, self.dir.join(&name)))
            .and_then(|()| sync_dir(&self.dir));
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
        inner.items.insert(seq, Entry { kind, size });
        inner.bytes += size;
        Ok(PushOutcome { dropped })
    }

    /// The oldest readable item, without removing it. Items that fail their checks are
    /// deleted, counted as dropped and skipped.
    pub fn oldest(&self) -> io::Result<Option<SpoolItem>> {
        let mut inner = self.lock();
        loop {
            let Some((&seq, &entry)) = inner.items.first_key_value() else {
                return Ok(None);
            };
            let path = self.dir.join(item_name(seq, entry.kind));
            let problem = match read_at_most(&path, self.max_bytes) {
                Ok(None) => Some("larger than the spool"),
                Ok(Some(content)) => match parse_item(&content, entry.kind) {
                    Ok((api_path, body)) => {
                        return Ok(Some(SpoolItem {
                            id: SpoolId(seq),
                            kind: entry.kind,
                            api_path,
                            body,
                        }));
                    }
                    Err(reason) => Some(reason),
                },
                // Removed behind our back: nothing to send, nothing lost by us.
                Err(e) if e.kind() == io::ErrorKind::NotFound => None,
                Err(e) => return Err(e),
            };
            if let Some(reason) = problem {
                warn!(item = %path.display(), reason, "corrupt spool item dropped");
                remove_if_exists(&path)?;
                inner.dropped += 1;
                self.persist_dropped(&inner);
            }
            inner.items.remove(&seq);
            inner.bytes -= entry.size;
        }
    }

    /// Deletes an item (after it was delivered, or rejected for good). Unknown ids are a no-op.
    pub fn remove(&self, id: SpoolId) -> io::Result<()> {
        let mut inner = self.lock();
        let Some(&entry) = inner.items.get(&id.0) else {
            return Ok(());
        };
        remove_if_exists(&self.dir.join(item_name(id.0, entry.kind)))?;
        inner.items.remove(&id.0);
        inner.bytes -= entry.size;
        Ok(())
    }

    /// The number of items dropped (to bounds or corruption) since the last call, which resets
    /// it.
    pub fn take_dropped(&self) -> u64 {
        let mut inner = self.lock();
        let dropped = std::mem::take(&mut inner.dropped);
        if dropped > 0 {
            self.persist_dropped(&inner);
        }
        dropped
    }

    /// The number of items dropped since the last [`Spool::take_dropped`], without resetting
    /// it (for `status`).
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Adds back a count taken by [`Spool::take_dropped`] that could not be reported (the
    /// heartbeat carrying it failed).
    pub fn restore_dropped(&self, count: u64) {
        if count == 0 {
            return;
        }
        let mut inner = self.lock();
        inner.dropped = inner.dropped.saturating_add(count);
        self.persist_dropped(&inner);
    }

    /// Items and bytes held.
    pub fn stats(&self) -> SpoolStats {
        let inner = self.lock();
        SpoolStats {
            items: inner.items.len() as u64,
            bytes: inner.bytes,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every update leaves the index consistent with the files before it can panic, so a
        // poisoned lock's state is usable.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops items until `extra_bytes` and `extra_items` more fit the bounds; returns how many.
    /// Evicts until `extra_bytes` and `extra_items` fit; returns how many were evicted even
    /// when a removal failed part-way, so the count is never lost.
    fn make_room(
        &self,
        inner: &mut Inner,
        extra_bytes: u64,
        extra_items: u64,
    ) -> (u64, io::Result<()>) {
        let mut dropped = 0;
        while !inner.items.is_empty()
            && (inner.items.len() as u64 + extra_items > self.max_items
                || inner.bytes + extra_bytes > self.max_bytes)
        {
            let victim = inner
                .items
                .iter()
                .find(|(_, e)| e.kind == SpoolKind::Telemetry)
                .or_else(|| inner.items.first_key_value())
                .map(|(&seq, &entry)| (seq, entry));
            let Some((seq, entry)) = victim else { break };
            if let Err(e) = remove_if_exists(&self.dir.join(item_name(seq, entry.kind))) {
                return (dropped, Err(e));
            }
            inner.items.remove(&seq);
            inner.bytes -= entry.size;
            dropped += 1;
        }
        (dropped, Ok(()))
    }

    /// Saves the dropped count (temp file, fsync, rename). A failure is logged, not returned:
    /// the count is a statistic and the item operations matter more.
    fn persist_dropped(&self, inner: &Inner) {
        let tmp = self.dir.join(format!("{DROPPED_FILE}{TMP_SUFFIX}"));
        let text = format!("{}\n", inner.dropped);
        let result = write_synced(&tmp, &[text.as_bytes()])
            .and_then(|()| fs::rename(&tmp, self.dir.join(DROPPED_FILE)));
        if let Err(e) = result {
            let _ = fs::remove_file(&tmp);
            warn!(error = %e, "saving the spool's dropped count failed");
        }
    }
}

fn item_name(seq: u64, kind: SpoolKind) -> String {
    format!("{seq:020}-{kind}{ITEM_SUFFIX}")
}

fn parse_item_name(name: &str) -> Option<(u64, SpoolKind)> {
    let (seq, kind) = name.strip_suffix(ITEM_SUFFIX)?.split_once('-')?;
    if seq.len() != 20 || !seq.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((seq.parse().ok()?, SpoolKind::parse(kind)?))
}

fn check_api_path(api_path: &str) -> io::Result<()> {
    if api_path.is_empty()
        || api_path.len() > MAX_API_PATH
        || api_path
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("unusable spool api path {api_path:?}"),
        ));
    }
    Ok(())
}

/// `muster-spool/1 <kind> <body length> <checksum> <api path>\n`
fn header_line(kind: SpoolKind, api_path: &str, body: &[u8]) -> String {
    format!(
        "{MAGIC} {kind} {} {} {api_path}\n",
        body.len(),
        checksum(kind, api_path, body)
    )
}

/// SHA-256 (hex) over the kind, the API path and the body: damage to any of them shows.
fn checksum(kind: SpoolKind, api_path: &str, body: &[u8]) -> String {
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(kind.as_str().as_bytes());
    ctx.update(b" ");
    ctx.update(api_path.as_bytes());
    ctx.update(b"\n");
    ctx.update(body);
    ctx.finish()
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks an item file's content against its header; returns the API path and the body.
fn parse_item(content: &[u8], expected: SpoolKind) -> Result<(String, Vec<u8>), &'static str> {
    let end = content
        .iter()
        .take(MAX_HEADER)
        .position(|&b| b == b'\n')
        .ok_or("no header line")?;
    let header = std::str::from_utf8(&content[..end]).map_err(|_| "header is not utf-8")?;
    let body = &content[end + 1..];
    let mut fields = header.split(' ');
    if fields.next() != Some(MAGIC) {
        return Err("not a spool item or an unknown version");
    }
    let kind = fields.next().and_then(SpoolKind::parse).ok_or("bad kind")?;
    if kind != expected {
        return Err("kind differs from the file name");
    }
    let len: usize = fields
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or("bad length")?;
    let sha = fields.next().ok_or("no checksum")?;
    let api_path = fields.next().ok_or("no api path")?;
    if fields.next().is_some() || check_api_path(api_path).is_err() {
        return Err("bad api path");
    }
    if body.len() != len {
        return Err("truncated or overlong body");
    }
    if checksum(kind, api_path, body) != sha {
        return Err("checksum mismatch");
    }
    Ok((api_path.to_owned(), body.to_vec()))
}

/// A file's content, or `None` when it is longer than `limit` (an outside file must not make
/// the agent allocate without bound).
fn read_at_most(path: &Path, limit: u64) -> io::Result<Option<Vec<u8>>> {
    use std::io::Read;
    let mut content = Vec::new();
    fs::File::open(path)?
        .take(limit.saturating_add(1))
        .read_to_end(&mut content)?;
    Ok((content.len() as u64 <= limit).then_some(content))
}

fn read_dropped(path: &Path) -> u64 {
    match fs::read_to_string(path) {
        Ok(text) => text.trim().parse().unwrap_or_else(|_| {
            warn!(file = %path.display(), "unreadable spool dropped count, starting from 0");
            0
        }),
        Err(_) => 0,
    }
}

/// Creates `path` with `parts` as content, mode 0600, and fsyncs it.
fn write_synced(path: &Path, parts: &[&[u8]]) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    for part in parts {
        file.write_all(part)?;
    }
    file.sync_all()
}

fn create_private_dir(dir: &Path) -> io::Result<()> {
    fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Makes renames and deletions in `dir` durable. Windows cannot open a directory for this;
/// NTFS journals the metadata.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    fs::File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn item_names_sort_in_arrival_order_and_parse_back() {
        let a = item_name(9, SpoolKind::Inventory);
        let b = item_name(10, SpoolKind::Telemetry);
        assert!(a < b, "{a} < {b}");
        assert_eq!(a, "00000000000000000009-inventory.item");
        assert_eq!(parse_item_name(&a), Some((9, SpoolKind::Inventory)));
        assert_eq!(
            parse_item_name(&item_name(u64::MAX, SpoolKind::Other)),
            Some((u64::MAX, SpoolKind::Other))
        );
        for bad in [
            "9-inventory.item",
            "0000000000000000000x-inventory.item",
            "00000000000000000009-metrics.item",
            "00000000000000000009-inventory.item.tmp",
            "00000000000000000009-inventory",
            "dropped",
        ] {
            assert_eq!(parse_item_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn items_round_trip_and_every_damage_is_detected() {
        let body = br#"{"report_id":"x","n":1}"#;
        let mut content = header_line(SpoolKind::Telemetry, "metrics/report", body).into_bytes();
        content.extend_from_slice(body);
        assert_eq!(
            parse_item(&content, SpoolKind::Telemetry),
            Ok(("metrics/report".to_owned(), body.to_vec()))
        );
        assert!(parse_item(&content, SpoolKind::Inventory).is_err());
        // Every truncation and every single-byte change is caught.
        for cut in 0..content.len() {
            assert!(
                parse_item(&content[..cut], SpoolKind::Telemetry).is_err(),
                "cut {cut}"
            );
        }
        for i in 0..content.len() {
            let mut damaged = content.clone();
            damaged[i] ^= 0x01;
            assert!(
                parse_item(&damaged, SpoolKind::Telemetry).is_err(),
                "byte {i}"
            );
        }
        let mut longer = content.clone();
        longer.push(b'\n');
        assert!(parse_item(&longer, SpoolKind::Telemetry).is_err());
    }

    #[test]
    fn api_paths_are_checked() {
        assert!(check_api_path("metrics/report").is_ok());
        for bad in ["", "a b", "a\nb", "a\tb", &"x".repeat(MAX_API_PATH + 1)] {
            assert!(check_api_path(bad).is_err(), "{bad:?}");
        }
    }
}
