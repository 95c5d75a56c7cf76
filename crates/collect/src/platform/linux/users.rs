//! `hardware/users`: logged-in sessions from utmp.

use std::io;

use jiff::Timestamp;
use muster_proto::data::UserSession;
use muster_proto::{FunctionData, FunctionReport};

use crate::{CollectError, Collected, Context};

/// Size of glibc's `struct utmp` on Linux, 32- and 64-bit alike.
pub const UTMP_RECORD_SIZE: usize = 384;

/// `ut_type` of a getty waiting for a login (utmp(5)).
pub const LOGIN_PROCESS: i32 = 6;
/// `ut_type` of a login session.
pub const USER_PROCESS: i32 = 7;
/// `ut_type` of a session that has ended.
pub const DEAD_PROCESS: i32 = 8;

// Field offsets in `struct utmp`.
const TYPE: usize = 0;
const PID: usize = 4;
const LINE: (usize, usize) = (8, 32);
const ID: (usize, usize) = (40, 4);
const USER: (usize, usize) = (44, 32);
const HOST: (usize, usize) = (76, 256);
const SESSION: usize = 336;
const TV_SEC: usize = 340;
const TV_USEC: usize = 344;

/// One utmp record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UtmpEntry {
    /// `ut_type`: [`USER_PROCESS`] for a login session, others for boot, run level, gettys
    /// and ended sessions.
    pub kind: i32,
    pub pid: i32,
    /// The terminal without `/dev/`, e.g. `pts/0`.
    pub line: String,
    pub id: String,
    pub user: String,
    pub host: String,
    pub session: i32,
    /// Seconds since the epoch. glibc stores a signed 32-bit value; read unsigned, it stays
    /// right until 2106.
    pub time_s: u32,
    pub time_us: i32,
}

/// Parses a utmp file: 384-byte `struct utmp` records in the host's byte order. A trailing
/// partial record (a write in progress) is ignored.
pub fn parse_utmp(bytes: &[u8]) -> Vec<UtmpEntry> {
    bytes
        .chunks_exact(UTMP_RECORD_SIZE)
        .map(|record| UtmpEntry {
            kind: i32_at(record, TYPE),
            pid: i32_at(record, PID),
            line: c_string(record, LINE),
            id: c_string(record, ID),
            user: c_string(record, USER),
            host: c_string(record, HOST),
            session: i32_at(record, SESSION),
            time_s: u32::from_ne_bytes(i32_at(record, TV_SEC).to_ne_bytes()),
            time_us: i32_at(record, TV_USEC),
        })
        .collect()
}

fn i32_at(record: &[u8], offset: usize) -> i32 {
    record
        .get(offset..offset + 4)
        .and_then(|b| b.try_into().ok())
        .map_or(0, i32::from_ne_bytes)
}

/// A NUL-terminated (or field-filling) string field.
fn c_string(record: &[u8], (offset, len): (usize, usize)) -> String {
    let field = record.get(offset..offset + len).unwrap_or_default();
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(field.get(..end).unwrap_or_default()).into_owned()
}

/// The login sessions among utmp records: `USER_PROCESS` entries that name a user.
pub fn sessions(entries: &[UtmpEntry]) -> Vec<UserSession> {
    let non_empty = |s: &str| (!s.is_empty()).then(|| s.to_owned());
    entries
        .iter()
        .filter(|e| e.kind == USER_PROCESS && !e.user.is_empty())
        .map(|e| UserSession {
            user: e.user.clone(),
            terminal: non_empty(&e.line),
            host: non_empty(&e.host),
            login_time: (e.time_s > 0)
                .then(|| Timestamp::from_second(i64::from(e.time_s)).ok())
                .flatten(),
            pid: u32::try_from(e.pid).ok().filter(|&pid| pid > 0),
        })
        .collect()
}

/// The sessions in `/run/utmp` (or `/var/run/utmp`); none when there is no utmp.
pub fn collect(context: &Context) -> Collected {
    let mut items = Vec::new();
    for path in ["/run/utmp", "/var/run/utmp"] {
        let full = context.path(path);
        match std::fs::read(&full) {
            Ok(bytes) => {
                items = sessions(&parse_utmp(&bytes));
                break;
            }
            // No utmp (containers, minimal systems, distributions that dropped it): nobody is
            // logged in as far as utmp can tell.
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => return Err(CollectError::io(full, e)),
        }
    }
    Ok(Some(FunctionReport::new(FunctionData::Users(items))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `(ut_type, ut_pid, ut_line, ut_id, ut_user, ut_host, ut_tv.tv_sec)`.
    type Record<'a> = (i32, i32, &'a str, &'a str, &'a str, &'a str, i32);

    /// Encodes a record as glibc lays `struct utmp` out.
    fn encode(&(kind, pid, line, id, user, host, time_s): &Record<'_>) -> Vec<u8> {
        let mut out = vec![0u8; UTMP_RECORD_SIZE];
        let mut put = |offset: usize, bytes: &[u8]| {
            out[offset..offset + bytes.len()].copy_from_slice(bytes);
        };
        put(TYPE, &kind.to_ne_bytes());
        put(PID, &pid.to_ne_bytes());
        put(LINE.0, line.as_bytes());
        put(ID.0, id.as_bytes());
        put(USER.0, user.as_bytes());
        put(HOST.0, host.as_bytes());
        put(SESSION, &0i32.to_ne_bytes());
        put(TV_SEC, &time_s.to_ne_bytes());
        put(TV_USEC, &123_456i32.to_ne_bytes());
        // ut_addr_v6 of 192.0.2.7, as sshd writes it for IPv4 peers.
        put(348, &[192, 0, 2, 7]);
        out
    }

    /// What `/run/utmp` holds on a server after boot: boot and run-level records, a console
    /// getty, one ended and two live sessions.
    fn utmp_file() -> Vec<u8> {
        #[rustfmt::skip]
        let records: [Record<'_>; 6] = [
            (2, 0, "~", "~~", "reboot", "6.1.0-18-amd64", 1_717_000_000),
            (1, 53, "~", "~~", "runlevel", "6.1.0-18-amd64", 1_717_000_010),
            (LOGIN_PROCESS, 812, "tty1", "tty1", "LOGIN", "", 1_717_000_012),
            (USER_PROCESS, 40_211, "pts/0", "ts/0", "alice", "192.0.2.7", 1_717_171_717),
            (DEAD_PROCESS, 39_002, "pts/1", "ts/1", "", "", 1_717_100_000),
            (USER_PROCESS, 41_077, "pts/1", "ts/1", "root", "bastion.example.org", 1_717_180_000),
        ];
        records.iter().flat_map(encode).collect()
    }

    #[test]
    fn parses_every_record() {
        let entries = parse_utmp(&utmp_file());
        let kinds: Vec<i32> = entries.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [2, 1, 6, 7, 8, 7]);
        let alice = &entries[3];
        assert_eq!(alice.pid, 40_211);
        assert_eq!(alice.line, "pts/0");
        assert_eq!(alice.id, "ts/0");
        assert_eq!(alice.user, "alice");
        assert_eq!(alice.host, "192.0.2.7");
        assert_eq!(alice.time_s, 1_717_171_717);
        assert_eq!(alice.time_us, 123_456);
        assert_eq!(entries[2].user, "LOGIN");
    }

    #[test]
    fn only_user_processes_are_sessions() {
        let sessions = sessions(&parse_utmp(&utmp_file()));
        assert_eq!(
            sessions,
            vec![
                UserSession {
                    user: "alice".into(),
                    terminal: Some("pts/0".into()),
                    host: Some("192.0.2.7".into()),
                    login_time: Some(Timestamp::from_second(1_717_171_717).unwrap()),
                    pid: Some(40_211),
                },
                UserSession {
                    user: "root".into(),
                    terminal: Some("pts/1".into()),
                    host: Some("bastion.example.org".into()),
                    login_time: Some(Timestamp::from_second(1_717_180_000).unwrap()),
                    pid: Some(41_077),
                },
            ]
        );
    }

    #[test]
    fn strings_filling_their_field_and_local_logins() {
        let user = "u".repeat(32);
        let record = (USER_PROCESS, 0, "tty2", "tty2", user.as_str(), "", 0);
        let sessions = sessions(&parse_utmp(&encode(&record)));
        assert_eq!(sessions.len(), 1);
        assert_eq!(sessions[0].user, user);
        assert_eq!(sessions[0].host, None);
        assert_eq!(sessions[0].login_time, None);
        assert_eq!(sessions[0].pid, None);
    }

    #[test]
    fn ignores_a_trailing_partial_record() {
        let mut bytes = utmp_file();
        bytes.extend_from_slice(&encode(&(USER_PROCESS, 1, "pts/9", "ts/9", "half", "", 1))[..200]);
        let entries = parse_utmp(&bytes);
        assert_eq!(entries.len(), 6);
        assert!(entries.iter().all(|e| e.user != "half"));
        assert!(parse_utmp(&bytes[..383]).is_empty());
    }

    #[test]
    fn collects_from_run_utmp() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("var/run")).unwrap();
        std::fs::write(dir.path().join("var/run/utmp"), utmp_file()).unwrap();
        let report = collect(&Context::new(dir.path())).unwrap().unwrap();
        let FunctionData::Users(items) = report.data else {
            panic!("wrong data kind")
        };
        let users: Vec<&str> = items.iter().map(|s| s.user.as_str()).collect();
        assert_eq!(users, ["alice", "root"]);
    }

    #[test]
    fn missing_utmp_is_no_sessions() {
        let dir = tempfile::tempdir().unwrap();
        let report = collect(&Context::new(dir.path())).unwrap().unwrap();
        assert_eq!(report.data, FunctionData::Users(Vec::new()));
        assert_eq!((report.error, report.unavailable), (None, None));
    }

    proptest! {
        #[test]
        fn never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..2000)) {
            let entries = parse_utmp(&bytes);
            prop_assert_eq!(entries.len(), bytes.len() / UTMP_RECORD_SIZE);
            let _ = sessions(&entries);
        }
    }
}
