//! `software/rpm` from the rpm database.
//!
//! rpm 4.16+ keeps its database in SQLite (RHEL 9, Fedora 33+, openSUSE), one header blob per
//! package, which Muster reads itself. Older databases (Berkeley DB on RHEL 7/8, ndb) are
//! left to `rpm -qa`: slower, but the only reader of those formats Muster has.

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::process::Command;

use muster_proto::data::Package;
use muster_proto::{FunctionData, FunctionReport};
use rusqlite::{Connection, OpenFlags};

use super::{sort_packages, timestamp};
use crate::{CollectError, Collected, Context};

/// Where rpm keeps its SQLite database: Fedora 36+ and openSUSE moved it to `/usr` and left a
/// symlink at the old place, which other distributions still use.
const SQLITE_PATHS: [&str; 2] = [
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    "/var/lib/rpm/rpmdb.sqlite",
];
const DB_DIRS: [&str; 2] = ["/usr/lib/sysimage/rpm", "/var/lib/rpm"];

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_INSTALLTIME: u32 = 1008;
const TAG_SIZE: u32 = 1009;
const TAG_VENDOR: u32 = 1011;
const TAG_ARCH: u32 = 1022;
const TAG_LONGSIZE: u32 = 5009;

const TYPE_INT32: u32 = 4;
const TYPE_INT64: u32 = 5;
const TYPE_STRING: u32 = 6;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

/// rpm's own limits on a header (`hdrchkTags`, `hdrchkData`): anything larger is corrupt.
const MAX_ENTRIES: u32 = 0xffff;
const MAX_DATA: u32 = 0x00ff_ffff;

/// The fields Muster reads from a package's header.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RpmHeader {
    pub name: String,
    pub version: String,
    pub release: String,
    pub epoch: Option<u32>,
    pub arch: Option<String>,
    /// `LONGSIZE` where the header has it, else `SIZE`: the installed size in bytes.
    pub size: Option<u64>,
    /// Seconds since the Unix epoch.
    pub install_time: Option<u32>,
    pub vendor: Option<String>,
}

impl RpmHeader {
    /// `[epoch:]version-release`, the epoch written whenever the header has one (even 0),
    /// as rpm's `%{EVR}` does.
    pub fn evr(&self) -> String {
        match self.epoch {
            Some(epoch) => format!("{epoch}:{}-{}", self.version, self.release),
            None => format!("{}-{}", self.version, self.release),
        }
    }

    pub fn into_package(self) -> Package {
        Package {
            version: self.evr(),
            name: self.name,
            architecture: self.arch,
            source: "rpm".to_owned(),
            installed_size_bytes: self.size,
            install_time: self.install_time.and_then(|t| timestamp(t.into())),
            publisher: self.vendor,
            uninstall_string: None,
        }
    }
}

fn be32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes(word.try_into().ok()?))
}

fn be64(bytes: &[u8], at: usize) -> Option<u64> {
    let word = bytes.get(at..at.checked_add(8)?)?;
    Some(u64::from_be_bytes(word.try_into().ok()?))
}

/// One index entry: where a tag's value sits in the data store.
#[derive(Clone, Copy)]
struct Entry {
    tag: u32,
    kind: u32,
    offset: usize,
    count: u32,
}

impl Entry {
    fn string(self, data: &[u8]) -> Result<String, String> {
        if !matches!(self.kind, TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18NSTRING)
            || self.count == 0
        {
            return Err(format!("tag {} is not a string", self.tag));
        }
        // Arrays and translated strings hold NUL-separated values: the first is the one wanted
        // (for I18NSTRING, the untranslated one).
        let bytes = data
            .get(self.offset..)
            .and_then(|rest| {
                rest.split(|&b| b == 0)
                    .next()
                    .filter(|s| s.len() < rest.len())
            })
            .ok_or_else(|| format!("tag {}: string out of bounds", self.tag))?;
        Ok(String::from_utf8_lossy(bytes).into_owned())
    }

    fn number(self, data: &[u8]) -> Result<u64, String> {
        let value = match (self.kind, self.count) {
            (_, 0) => None,
            (TYPE_INT32, _) => be32(data, self.offset).map(u64::from),
            (TYPE_INT64, _) => be64(data, self.offset),
            _ => return Err(format!("tag {} is not a number", self.tag)),
        };
        value.ok_or_else(|| format!("tag {}: number out of bounds", self.tag))
    }
}

/// Parses a header blob as rpm stores it in its database (no lead, no magic): the number of
/// index entries and the data length (both big-endian u32), the 16-byte entries (tag, type,
/// offset, count), then the data. Tags other than the ones [`RpmHeader`] holds, such as the
/// leading region tag, are skipped; one of those that is out of bounds or of the wrong type
/// makes the header an error, as does a missing name, version or release.
pub fn parse_rpm_header(blob: &[u8]) -> Result<RpmHeader, String> {
    let (Some(il), Some(dl)) = (be32(blob, 0), be32(blob, 4)) else {
        return Err("header shorter than its preamble".into());
    };
    if il > MAX_ENTRIES || dl > MAX_DATA {
        return Err(format!(
            "header too large: {il} entries, {dl} bytes of data"
        ));
    }
    // Both bounded above, so these cannot overflow.
    let data_start = 8 + il as usize * 16;
    let index = blob
        .get(8..data_start)
        .ok_or("header index runs past the blob")?;
    let data = blob
        .get(data_start..data_start + dl as usize)
        .ok_or("header data runs past the blob")?;

    let mut header = RpmHeader::default();
    let (mut name, mut version, mut release) = (None, None, None);
    let (mut size, mut long_size) = (None, None);
    for raw in index.chunks_exact(16) {
        let field = |at| be32(raw, at).unwrap_or_default();
        let entry = Entry {
            tag: field(0),
            kind: field(4),
            offset: field(8) as usize,
            count: field(12),
        };
        match entry.tag {
            TAG_NAME => name = Some(entry.string(data)?),
            TAG_VERSION => version = Some(entry.string(data)?),
            TAG_RELEASE => release = Some(entry.string(data)?),
            TAG_ARCH => header.arch = Some(entry.string(data)?),
            TAG_VENDOR => header.vendor = Some(entry.string(data)?),
            TAG_EPOCH => header.epoch = Some(entry.number(data)? as u32),
            TAG_INSTALLTIME => header.install_time = Some(entry.number(data)? as u32),
            TAG_SIZE => size = Some(entry.number(data)?),
            TAG_LONGSIZE => long_size = Some(entry.number(data)?),
            _ => {}
        }
    }
    header.name = name.ok_or("header has no name")?;
    header.version = version.ok_or("header has no version")?;
    header.release = release.ok_or("header has no release")?;
    header.size = long_size.or(size);
    Ok(header)
}

/// The `--queryformat` of the `rpm -qa` fallback. `%|EPOCH?{...}|` writes the epoch only when
/// the tag exists, like [`RpmHeader::evr`]; `LONGSIZE` falls back to `SIZE` inside rpm.
pub const QUERY_FORMAT: &str = "%{NAME}\t%|EPOCH?{%{EPOCH}:}|%{VERSION}-%{RELEASE}\t%{ARCH}\t\
                                %{LONGSIZE}\t%{INSTALLTIME}\t%{VENDOR}\n";

/// Parses the output of `rpm -qa --queryformat QUERY_FORMAT`. rpm prints `(none)` for absent
/// tags (the architecture of `gpg-pubkey`); those become `None`. Lines without a name and
/// version are skipped.
pub fn parse_rpm_query(text: &str) -> Vec<Package> {
    let present = |value: &str| -> Option<String> {
        let value = value.trim();
        (!value.is_empty() && value != "(none)").then(|| value.to_owned())
    };
    text.lines()
        .filter_map(|line| {
            let mut fields = line.splitn(6, '\t');
            let name = fields.next()?.trim();
            let version = fields.next()?.trim();
            if name.is_empty() || version.is_empty() {
                return None;
            }
            let mut next = || fields.next().and_then(present);
            Some(Package {
                name: name.to_owned(),
                version: version.to_owned(),
                architecture: next(),
                installed_size_bytes: next().and_then(|s| s.parse().ok()),
                install_time: next().and_then(|s| s.parse().ok()).and_then(timestamp),
                publisher: next(),
                uninstall_string: None,
                source: "rpm".to_owned(),
            })
        })
        .collect()
}

/// `path` as an SQLite URI that opens it `immutable`: SQLite then takes no locks and writes
/// no journal or WAL, so reading can neither block rpm nor touch its database. rpm
/// checkpoints its WAL when it closes the database, so the main file is complete.
fn immutable_uri(path: &Path) -> String {
    let mut uri = String::from("file:");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'-' | b'_' | b'~') {
            uri.push(char::from(b));
        } else {
            uri.push_str(&format!("%{b:02X}"));
        }
    }
    uri.push_str("?immutable=1");
    uri
}

/// The packages of an SQLite rpm database, and how many headers could not be read with the
/// first reason.
fn read_sqlite(path: &Path) -> Result<(Vec<Package>, usize, Option<String>), CollectError> {
    let sql_error = |e: rusqlite::Error| CollectError::parse(path, e.to_string());
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let connection = Connection::open_with_flags(immutable_uri(path), flags).map_err(sql_error)?;
    let mut statement = connection
        .prepare("SELECT blob FROM Packages")
        .map_err(sql_error)?;
    let mut rows = statement.query([]).map_err(sql_error)?;
    let (mut packages, mut bad, mut first_error) = (Vec::new(), 0, None);
    while let Some(row) = rows.next().map_err(sql_error)? {
        let parsed = row
            .get_ref(0)
            .map_err(|e| e.to_string())
            .and_then(|value| value.as_blob().map_err(|e| e.to_string()))
            .and_then(parse_rpm_header);
        match parsed {
            Ok(header) => packages.push(header.into_package()),
            Err(e) => {
                bad += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    Ok((packages, bad, first_error))
}

/// `rpm -qa` on the live system; `None` when there is no `rpm` to run.
fn query_rpm() -> Result<Option<Vec<Package>>, CollectError> {
    let command = |message: String| CollectError::Command {
        command: "rpm -qa".into(),
        message,
    };
    let output = match Command::new("rpm")
        .args(["-qa", "--queryformat", QUERY_FORMAT])
        .output()
    {
        Ok(output) => output,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(command(e.to_string())),
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        return Err(command(format!("{}: {}", output.status, stderr.trim())));
    }
    Ok(Some(parse_rpm_query(&String::from_utf8_lossy(
        &output.stdout,
    ))))
}

pub fn collect(context: &Context) -> Collected {
    let sqlite = SQLITE_PATHS
        .iter()
        .map(|p| context.path(p))
        .find(|p| p.is_file());
    let (mut packages, error) = if let Some(path) = sqlite {
        let (packages, bad, first_error) = read_sqlite(&path)?;
        let error = first_error.map(|e| {
            format!(
                "skipped {bad} unreadable package header(s) in {}: {e}",
                path.display()
            )
        });
        (packages, error)
    } else if context.is_live() && DB_DIRS.iter().any(|d| context.path(d).is_dir()) {
        match query_rpm()? {
            Some(packages) => (packages, None),
            None => return Ok(None),
        }
    } else {
        return Ok(None);
    };
    sort_packages(&mut packages);
    let mut report = FunctionReport::new(FunctionData::Rpm(packages));
    report.error = error;
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const TAG_HEADERIMMUTABLE: u32 = 63;
    const TYPE_BIN: u32 = 7;

    enum Value<'a> {
        Str(&'a str),
        I18n(&'a [&'a str]),
        Int32(u32),
        Int64(u64),
    }

    /// Encodes a header blob the way rpm stores it, led by a region tag like a real one.
    fn encode(tags: &[(u32, Value<'_>)]) -> Vec<u8> {
        let mut index: Vec<[u32; 4]> = Vec::new();
        let mut data: Vec<u8> = Vec::new();
        for (tag, value) in tags {
            let (kind, count, bytes, align) = match value {
                Value::Str(s) => (TYPE_STRING, 1, [s.as_bytes(), b"\0"].concat(), 1),
                Value::I18n(items) => {
                    let bytes: Vec<u8> = items
                        .iter()
                        .flat_map(|s| s.bytes().chain(std::iter::once(0)))
                        .collect();
                    (TYPE_I18NSTRING, items.len() as u32, bytes, 1)
                }
                Value::Int32(n) => (TYPE_INT32, 1, n.to_be_bytes().to_vec(), 4),
                Value::Int64(n) => (TYPE_INT64, 1, n.to_be_bytes().to_vec(), 8),
            };
            while !data.len().is_multiple_of(align) {
                data.push(0);
            }
            index.push([*tag, kind, data.len() as u32, count]);
            data.extend(bytes);
        }
        // The region trailer: a negative offset to the start of the region's index.
        let trailer_offset = data.len() as u32;
        let entries = index.len() as u32 + 1;
        data.extend(TAG_HEADERIMMUTABLE.to_be_bytes());
        data.extend(TYPE_BIN.to_be_bytes());
        data.extend((-(entries as i32 * 16)).to_be_bytes());
        data.extend(16u32.to_be_bytes());
        index.insert(0, [TAG_HEADERIMMUTABLE, TYPE_BIN, trailer_offset, 16]);

        let mut blob = Vec::new();
        blob.extend((index.len() as u32).to_be_bytes());
        blob.extend((data.len() as u32).to_be_bytes());
        for entry in &index {
            for word in entry {
                blob.extend(word.to_be_bytes());
            }
        }
        blob.extend(data);
        blob
    }

    fn bash() -> Vec<u8> {
        encode(&[
            (TAG_NAME, Value::Str("bash")),
            (TAG_VERSION, Value::Str("5.1.8")),
            (TAG_RELEASE, Value::Str("9.el9")),
            (
                1004,
                Value::I18n(&["The GNU Bourne Again shell (bash) version 5.1"]),
            ),
            (TAG_INSTALLTIME, Value::Int32(1_714_000_000)),
            (TAG_SIZE, Value::Int32(7_738_634)),
            (TAG_VENDOR, Value::Str("Red Hat, Inc.")),
            (TAG_ARCH, Value::Str("x86_64")),
        ])
    }

    fn openssl() -> Vec<u8> {
        encode(&[
            (TAG_NAME, Value::Str("openssl")),
            (TAG_VERSION, Value::Str("3.0.7")),
            (TAG_RELEASE, Value::Str("27.el9")),
            (TAG_EPOCH, Value::Int32(1)),
            (TAG_INSTALLTIME, Value::Int32(1_714_000_100)),
            (TAG_SIZE, Value::Int32(1_234)),
            (TAG_VENDOR, Value::I18n(&["Red Hat, Inc.", "ignored"])),
            (TAG_ARCH, Value::Str("x86_64")),
            (TAG_LONGSIZE, Value::Int64(5_000_000_000)),
        ])
    }

    fn gpg_pubkey() -> Vec<u8> {
        encode(&[
            (TAG_NAME, Value::Str("gpg-pubkey")),
            (TAG_VERSION, Value::Str("fd431d51")),
            (TAG_RELEASE, Value::Str("4ae0493b")),
            (TAG_INSTALLTIME, Value::Int32(1_713_999_000)),
            (TAG_SIZE, Value::Int32(0)),
        ])
    }

    #[test]
    fn parses_a_header() {
        let header = parse_rpm_header(&bash()).unwrap();
        assert_eq!(
            header,
            RpmHeader {
                name: "bash".into(),
                version: "5.1.8".into(),
                release: "9.el9".into(),
                epoch: None,
                arch: Some("x86_64".into()),
                size: Some(7_738_634),
                install_time: Some(1_714_000_000),
                vendor: Some("Red Hat, Inc.".into()),
            }
        );
        assert_eq!(header.evr(), "5.1.8-9.el9");
    }

    #[test]
    fn epoch_longsize_and_first_of_an_array() {
        let header = parse_rpm_header(&openssl()).unwrap();
        assert_eq!(header.evr(), "1:3.0.7-27.el9");
        assert_eq!(header.size, Some(5_000_000_000));
        assert_eq!(header.vendor.as_deref(), Some("Red Hat, Inc."));
    }

    #[test]
    fn zero_epoch_is_written_when_present() {
        let blob = encode(&[
            (TAG_NAME, Value::Str("a")),
            (TAG_VERSION, Value::Str("1")),
            (TAG_RELEASE, Value::Str("2")),
            (TAG_EPOCH, Value::Int32(0)),
        ]);
        assert_eq!(parse_rpm_header(&blob).unwrap().evr(), "0:1-2");
    }

    #[test]
    fn pseudo_packages_have_no_arch() {
        let package = parse_rpm_header(&gpg_pubkey()).unwrap().into_package();
        assert_eq!(package.name, "gpg-pubkey");
        assert_eq!(package.version, "fd431d51-4ae0493b");
        assert_eq!(package.architecture, None);
        assert_eq!(package.publisher, None);
    }

    #[test]
    fn rejects_broken_headers() {
        let blob = bash();
        assert!(parse_rpm_header(&blob[..4]).is_err());
        assert!(parse_rpm_header(&blob[..blob.len() - 1]).is_err());
        let no_name = encode(&[
            (TAG_VERSION, Value::Str("1")),
            (TAG_RELEASE, Value::Str("1")),
        ]);
        assert_eq!(
            parse_rpm_header(&no_name).unwrap_err(),
            "header has no name"
        );
        let mut huge = blob.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(parse_rpm_header(&huge).unwrap_err().contains("too large"));
        // The name's offset (second entry, third word) pointed past the data.
        let mut wild = blob.clone();
        wild[8 + 16 + 8..8 + 16 + 12].copy_from_slice(&0x00ff_0000u32.to_be_bytes());
        assert!(
            parse_rpm_header(&wild)
                .unwrap_err()
                .contains("out of bounds")
        );
        let wrong_type = encode(&[(TAG_NAME, Value::Int32(3))]);
        assert!(
            parse_rpm_header(&wrong_type)
                .unwrap_err()
                .contains("not a string")
        );
    }

    #[test]
    fn immutable_uri_escapes_the_path() {
        assert_eq!(
            immutable_uri(Path::new("/var/lib/rpm/rpmdb.sqlite")),
            "file:/var/lib/rpm/rpmdb.sqlite?immutable=1"
        );
        assert_eq!(
            immutable_uri(Path::new("/tmp/a b?c#d%/x")),
            "file:/tmp/a%20b%3Fc%23d%25/x?immutable=1"
        );
    }

    fn write_rpmdb(path: &Path, blobs: &[Vec<u8>]) {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        let db = Connection::open(path).unwrap();
        db.execute_batch(
            "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL);",
        )
        .unwrap();
        for blob in blobs {
            db.execute("INSERT INTO Packages (blob) VALUES (?1)", [blob])
                .unwrap();
        }
    }

    fn packages(report: &FunctionReport) -> &[Package] {
        match &report.data {
            FunctionData::Rpm(packages) => packages,
            other => panic!("expected rpm data, got {other:?}"),
        }
    }

    #[test]
    fn collects_from_an_sqlite_database() {
        // An awkward root checks the URI escaping against SQLite itself.
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("root with space?#%");
        let db = root.join("usr/lib/sysimage/rpm/rpmdb.sqlite");
        write_rpmdb(&db, &[openssl(), bash(), gpg_pubkey()]);
        let before = std::fs::read_dir(db.parent().unwrap()).unwrap().count();

        let report = collect(&Context::new(&root)).unwrap().unwrap();
        assert_eq!(report.error, None);
        let packages = packages(&report);
        let summary: Vec<_> = packages
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.version.as_str(),
                    p.architecture.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("bash", "5.1.8-9.el9", Some("x86_64")),
                ("gpg-pubkey", "fd431d51-4ae0493b", None),
                ("openssl", "1:3.0.7-27.el9", Some("x86_64")),
            ]
        );
        assert_eq!(packages[0].install_time.unwrap().as_second(), 1_714_000_000);
        assert_eq!(packages[0].installed_size_bytes, Some(7_738_634));
        assert_eq!(packages[0].source, "rpm");
        // Immutable: no journal, WAL or shared-memory file appeared next to the database.
        assert_eq!(
            std::fs::read_dir(db.parent().unwrap()).unwrap().count(),
            before
        );
    }

    #[test]
    fn reads_while_rpm_holds_an_exclusive_lock() {
        let root = tempfile::tempdir().unwrap();
        let db = root.path().join("var/lib/rpm/rpmdb.sqlite");
        write_rpmdb(&db, &[bash()]);
        let writer = Connection::open(&db).unwrap();
        writer.execute_batch("BEGIN EXCLUSIVE;").unwrap();
        // A plain reader would get SQLITE_BUSY here; an immutable one takes no lock.
        let report = collect(&Context::new(root.path())).unwrap().unwrap();
        assert_eq!(packages(&report)[0].name, "bash");
        writer.execute_batch("ROLLBACK;").unwrap();
    }

    #[test]
    fn old_location_and_unreadable_headers() {
        let root = tempfile::tempdir().unwrap();
        let db = root.path().join("var/lib/rpm/rpmdb.sqlite");
        write_rpmdb(&db, &[bash(), vec![0, 0, 0, 1], openssl()]);
        let report = collect(&Context::new(root.path())).unwrap().unwrap();
        assert_eq!(packages(&report).len(), 2);
        let error = report.error.unwrap();
        assert!(
            error.starts_with("skipped 1 unreadable package header(s)"),
            "{error}"
        );
    }

    #[test]
    fn a_database_without_packages_table_is_an_error() {
        let root = tempfile::tempdir().unwrap();
        let db = root.path().join("var/lib/rpm/rpmdb.sqlite");
        std::fs::create_dir_all(db.parent().unwrap()).unwrap();
        Connection::open(&db)
            .unwrap()
            .execute_batch("CREATE TABLE Other (x);")
            .unwrap();
        assert!(collect(&Context::new(root.path())).is_err());
    }

    #[test]
    fn absent_database_leaves_rpm_out() {
        let root = tempfile::tempdir().unwrap();
        // Not the live system, so a Berkeley DB directory does not start `rpm` either.
        std::fs::create_dir_all(root.path().join("var/lib/rpm")).unwrap();
        assert!(collect(&Context::new(root.path())).unwrap().is_none());
    }

    #[test]
    fn parses_rpm_query_output() {
        let text = "bash\t5.1.8-9.el9\tx86_64\t7738634\t1714000000\tRed Hat, Inc.\n\
                    gpg-pubkey\tfd431d51-4ae0493b\t(none)\t0\t1713999000\t(none)\n\
                    openssl\t1:3.0.7-27.el9\tx86_64\t1234\t1714000100\tRed Hat, Inc.\n\
                    \n\tbroken\n";
        let packages = parse_rpm_query(text);
        assert_eq!(packages.len(), 3);
        assert_eq!(
            packages[0],
            parse_rpm_header(&bash()).unwrap().into_package()
        );
        assert_eq!(packages[1].architecture, None);
        assert_eq!(packages[1].publisher, None);
        assert_eq!(packages[2].version, "1:3.0.7-27.el9");
    }

    proptest! {
        #[test]
        fn header_parser_never_panics(blob in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse_rpm_header(&blob);
        }

        #[test]
        fn header_parser_survives_mutations(
            which in 0..3usize,
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let mut blob = [bash(), openssl(), gpg_pubkey()][which].clone();
            for (at, byte) in edits {
                let i = at.index(blob.len());
                blob[i] = byte;
            }
            let _ = parse_rpm_header(&blob);
            let _ = parse_rpm_header(&blob[..cut.index(blob.len())]);
        }

        #[test]
        fn header_parser_survives_wild_entries(
            il in any::<u32>(),
            dl in any::<u32>(),
            entries in proptest::collection::vec(
                (prop::sample::select(vec![TAG_NAME, TAG_EPOCH, TAG_LONGSIZE, TAG_VENDOR, 63]),
                 0..12u32, any::<u32>(), any::<u32>()),
                0..6),
            data in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let mut blob = Vec::new();
            blob.extend(il.min(entries.len() as u32 + 1).to_be_bytes());
            blob.extend(dl.min(data.len() as u32 + 1).to_be_bytes());
            for (tag, kind, offset, count) in entries {
                for word in [tag, kind, offset % 80, count] {
                    blob.extend(word.to_be_bytes());
                }
            }
            blob.extend(data);
            let _ = parse_rpm_header(&blob);
        }

        #[test]
        fn query_parser_never_panics(text in "\\PC*") {
            let _ = parse_rpm_query(&text);
        }
    }
}
