//! `processes/processes` from `/proc/[pid]/{stat,cmdline}`.
//!
//! Per process this costs one `stat` of the directory (for the owner) and two small reads;
//! `/proc/[pid]/status` is not read, which would double the work for nothing the report needs.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use jiff::Timestamp;
use muster_proto::data::Process;
use muster_proto::{FunctionData, FunctionReport};
use nix::unistd::{SysconfVar, sysconf};

use super::passwd;
use crate::{CollectError, Collected, Context};

/// The fields of `/proc/[pid]/stat` Muster uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: u32,
    /// The command name (`comm`): the executable's name cut to 15 bytes, or what the process
    /// set with `prctl(PR_SET_NAME)`.
    pub comm: String,
    /// The one-letter state, e.g. `R`, `S`, `Z`.
    pub state: char,
    pub ppid: u32,
    /// User and system CPU time, in clock ticks.
    pub utime: u64,
    pub stime: u64,
    /// Start time in clock ticks after boot.
    pub starttime: u64,
    /// Virtual memory size in bytes.
    pub vsize: u64,
    /// Resident set size in pages.
    pub rss: u64,
}

/// Parses one `/proc/[pid]/stat` line.
///
/// The command name is wrapped in parentheses and may itself hold spaces, parentheses and even
/// newlines, so it runs from the first `(` to the *last* `)`; the numbered fields follow that.
pub fn parse_stat(text: &str) -> Result<ProcStat, String> {
    let open = text.find('(').ok_or("no `(` before the command name")?;
    let close = text.rfind(')').ok_or("no `)` after the command name")?;
    let (Some(pid), Some(comm), Some(rest)) = (
        text.get(..open),
        text.get(open + 1..close),
        text.get(close + 1..),
    ) else {
        return Err("`)` comes before `(`".into());
    };
    let pid = pid
        .trim()
        .parse()
        .map_err(|_| format!("bad pid `{}`", pid.trim()))?;

    // Fields are numbered as in proc(5): the state is field 3, right after the name.
    let mut fields = rest.split_ascii_whitespace();
    let state = fields
        .next()
        .and_then(|s| s.chars().next())
        .ok_or("no state field")?;
    let ppid = next_field(&mut fields, 0, "ppid")?;
    let utime = next_field(&mut fields, 9, "utime")?;
    let stime = next_field(&mut fields, 0, "stime")?;
    let starttime = next_field(&mut fields, 6, "starttime")?;
    let vsize = next_field(&mut fields, 0, "vsize")?;
    // A signed field; never negative in practice, but a bogus value must not wrap around.
    let rss: i64 = next_field(&mut fields, 0, "rss")?;
    Ok(ProcStat {
        pid,
        comm: comm.to_owned(),
        state,
        ppid,
        utime,
        stime,
        starttime,
        vsize,
        rss: u64::try_from(rss).unwrap_or(0),
    })
}

/// Skips `skip` fields, then parses the next one.
fn next_field<'a, T: std::str::FromStr>(
    fields: &mut impl Iterator<Item = &'a str>,
    skip: usize,
    name: &str,
) -> Result<T, String> {
    let field = fields.nth(skip).ok_or_else(|| format!("no {name} field"))?;
    field
        .parse()
        .map_err(|_| format!("bad {name} field `{field}`"))
}

/// Splits `/proc/[pid]/cmdline` into arguments. Kernel threads and zombies have none.
pub fn parse_cmdline(bytes: &[u8]) -> Vec<String> {
    // Each argument ends with a NUL; only the final one is dropped so that an empty last
    // argument (`prog ""`) survives.
    let bytes = bytes.strip_suffix(b"\0").unwrap_or(bytes);
    if bytes.is_empty() {
        return Vec::new();
    }
    bytes
        .split(|&b| b == 0)
        .map(|arg| String::from_utf8_lossy(arg).into_owned())
        .collect()
}

/// The report's word for a `/proc/[pid]/stat` state letter.
pub fn state_name(state: char) -> &'static str {
    match state {
        'R' => "running",
        'S' => "sleeping",
        'D' => "disk_sleep",
        'T' => "stopped",
        't' => "tracing_stop",
        'Z' => "zombie",
        'X' | 'x' => "dead",
        'I' => "idle",
        'P' => "parked",
        // 'W' (paging before 2.6, waking in 2.6.33–3.13) and 'K' (wakekill) have no word in
        // the report's vocabulary.
        _ => "unknown",
    }
}

/// Kernel constants the tick and page counts of `stat` are converted with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Units {
    clk_tck: u64,
    page_size: u64,
}

impl Units {
    fn of_this_system() -> Self {
        let value = |var, fallback| match sysconf(var) {
            Ok(Some(n)) if n > 0 => u64::try_from(n).unwrap_or(fallback),
            _ => fallback,
        };
        Self {
            clk_tck: value(SysconfVar::CLK_TCK, 100),
            page_size: value(SysconfVar::PAGE_SIZE, 4096),
        }
    }
}

pub fn collect(context: &Context) -> Collected {
    read_processes(context, Units::of_this_system()).map(Some)
}

fn read_processes(context: &Context, units: Units) -> Result<FunctionReport, CollectError> {
    let users = passwd::read_users(context);
    let boot_time = context
        .read_optional("/proc/stat")?
        .as_deref()
        .and_then(super::system::parse_btime)
        .and_then(|seconds| u64::try_from(seconds).ok());

    let proc_dir = context.path("/proc");
    let entries = std::fs::read_dir(&proc_dir).map_err(|e| CollectError::io(&proc_dir, e))?;
    let mut processes = Vec::new();
    let mut problems = Problems::default();
    let mut path = proc_dir.clone();
    let (mut stat_buf, mut cmdline_buf) = (Vec::with_capacity(512), Vec::with_capacity(512));

    for entry in entries {
        let Ok(entry) = entry else {
            continue;
        };
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(|n| n.parse::<u32>().ok()) else {
            continue;
        };
        // Any failure from here on that says "no such process" is a process that exited
        // since the directory was listed: it is skipped, not reported.
        let Ok(meta) = entry.metadata() else {
            continue;
        };
        path.push(&name);
        path.push("stat");
        let stat = read_into(&path, &mut stat_buf);
        path.set_file_name("cmdline");
        let cmdline = read_into(&path, &mut cmdline_buf);
        path.pop();
        path.pop();

        match stat {
            Ok(()) if stat_buf.is_empty() => continue,
            Ok(()) => {}
            Err(e) if vanished(&e) => continue,
            Err(e) => {
                problems.add(format_args!("reading /proc/{pid}/stat: {e}"));
                continue;
            }
        }
        let cmdline = match cmdline {
            Ok(()) => parse_cmdline(&cmdline_buf),
            Err(e) if vanished(&e) => continue,
            // Readable by everyone in practice; if a hardened kernel says otherwise, the
            // process is still worth listing.
            Err(_) => Vec::new(),
        };
        let stat = match parse_stat(&String::from_utf8_lossy(&stat_buf)) {
            Ok(stat) => stat,
            Err(e) => {
                problems.add(format_args!("parsing /proc/{pid}/stat: {e}"));
                continue;
            }
        };
        processes.push(to_process(
            pid,
            meta.uid(),
            stat,
            cmdline,
            &users,
            boot_time,
            units,
        ));
    }

    processes.sort_unstable_by_key(|p| p.pid);
    let mut report = FunctionReport::new(FunctionData::Processes(processes));
    report.error = problems.message();
    Ok(report)
}

fn to_process(
    pid: u32,
    uid: u32,
    stat: ProcStat,
    cmdline: Vec<String>,
    users: &HashMap<u32, String>,
    boot_time: Option<u64>,
    units: Units,
) -> Process {
    // Whole seconds: `btime` itself is rounded to the second, so finer would be false precision.
    let start_time = boot_time
        .and_then(|boot| boot.checked_add(stat.starttime / units.clk_tck))
        .and_then(|secs| i64::try_from(secs).ok())
        .and_then(|secs| Timestamp::from_second(secs).ok());
    Process {
        pid,
        ppid: stat.ppid,
        state: state_name(stat.state).to_owned(),
        name: stat.comm,
        cmdline,
        user: users.get(&uid).cloned(),
        uid: Some(uid),
        start_time,
        cpu_time_s: stat.utime.saturating_add(stat.stime) as f64 / units.clk_tck as f64,
        rss_bytes: stat.rss.saturating_mul(units.page_size),
    }
}

/// Reads a whole file into `buf`, reusing its allocation from one process to the next.
fn read_into(path: &Path, buf: &mut Vec<u8>) -> io::Result<()> {
    buf.clear();
    File::open(path)?.read_to_end(buf).map(drop)
}

/// Whether an error means the process is gone: its directory vanished (`ENOENT`) or the
/// task was reaped while its file was open (`ESRCH`).
fn vanished(error: &io::Error) -> bool {
    error.kind() == io::ErrorKind::NotFound || error.raw_os_error() == Some(nix::libc::ESRCH)
}

/// Per-process failures that are not races: the report keeps the other processes and names
/// the first failure and how many there were.
#[derive(Debug, Default)]
struct Problems {
    first: Option<String>,
    count: usize,
}

impl Problems {
    fn add(&mut self, problem: std::fmt::Arguments<'_>) {
        self.count += 1;
        if self.first.is_none() {
            self.first = Some(problem.to_string());
        }
    }

    fn message(self) -> Option<String> {
        let first = self.first?;
        Some(match self.count {
            1 => first,
            n => format!("{first} (and {} more processes)", n - 1),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::fs;

    // Captured on Debian 12 (6.1 kernel) in a VM whose PID 1 is not systemd.
    const INIT: &str = "1 (process_api) S 0 0 0 0 -1 4194560 47805 335639 0 178 101 166 838 241 20 0 13 0 6 44703744 3452 18446744073709551615 1 1 0 0 0 0 0 4096 1256 0 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
    const KTHREADD: &str = "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 6 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
    const KWORKER: &str = "10 (kworker/0:0H-events_highpri) I 2 0 0 0 -1 69238880 0 0 0 0 0 0 0 0 0 -20 1 0 6 0 0 18446744073709551615 0 0 0 0 0 0 0 2147483647 0 1 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
    const WEIRD: &str = "9325 (my (weird) prog) S 1 9321 5755 0 -1 4194304 130 0 0 0 0 0 0 0 20 0 1 0 53414 2990080 410 18446744073709551615 94543828881408 94543828899337 140721322124208 0 0 0 0 6 0 1 0 0 17 0 0 0 0 0 0 94543828913424 94543828914688 94544281243648 140721322126027 140721322126051 140721322126051 140721322127331 0\n";
    const UNBALANCED: &str = "9328 (a) b) (c) S 1 9321 5755 0 -1 4194304 130 0 0 0 0 0 0 0 20 0 1 0 53414 2990080 410 18446744073709551615 94715140055040 94715140072969 140730410204448 0 0 0 0 6 0 1 0 0 17 0 0 0 0 0 0 94715140087056 94715140088320 94715316289536 140730410207968 140730410207985 140730410207985 140730410209258 0\n";
    const ZOMBIE: &str = "9396 (python3) Z 9350 9321 5755 0 -1 4227148 232 0 0 0 3 1 0 0 20 0 1 0 53466 0 0 18446744073709551615 0 0 0 0 0 0 0 16781312 2 1 0 0 17 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n";
    // RHEL 7 (3.10): fewer trailing fields.
    const RHEL7_SSHD: &str = "1123 (sshd) S 1 1123 1123 0 -1 1077944576 1342 0 2 0 12 31 0 0 20 0 1 0 1580 115552256 1080 18446744073709551615 94085355184128 94085355993136 140725557441040 140725557440232 139850932297891 0 0 4096 81925 18446744071579816313 0 0 17 1 0 0 3 0 0\n";

    #[test]
    fn parses_a_plain_line() {
        let stat = parse_stat(INIT).unwrap();
        assert_eq!(
            stat,
            ProcStat {
                pid: 1,
                comm: "process_api".into(),
                state: 'S',
                ppid: 0,
                utime: 101,
                stime: 166,
                starttime: 6,
                vsize: 44_703_744,
                rss: 3452,
            }
        );
    }

    #[test]
    fn name_with_spaces_and_parentheses() {
        let stat = parse_stat(WEIRD).unwrap();
        assert_eq!(stat.comm, "my (weird) prog");
        assert_eq!((stat.pid, stat.ppid, stat.state), (9325, 1, 'S'));
        assert_eq!(
            (stat.starttime, stat.vsize, stat.rss),
            (53414, 2_990_080, 410)
        );

        let stat = parse_stat(UNBALANCED).unwrap();
        assert_eq!(stat.comm, "a) b) (c");
        assert_eq!((stat.pid, stat.ppid, stat.rss), (9328, 1, 410));
    }

    #[test]
    fn name_with_a_newline() {
        let line = "77 (two\nlines) R 5 77 77 0 -1 0 0 0 0 0 7 8 0 0 20 0 1 0 900 1000 2\n";
        let stat = parse_stat(line).unwrap();
        assert_eq!(stat.comm, "two\nlines");
        assert_eq!(
            (stat.utime, stat.stime, stat.starttime, stat.rss),
            (7, 8, 900, 2)
        );
    }

    #[test]
    fn kernel_threads() {
        let stat = parse_stat(KTHREADD).unwrap();
        assert_eq!(
            (stat.comm.as_str(), stat.ppid, stat.rss),
            ("kthreadd", 0, 0)
        );
        let stat = parse_stat(KWORKER).unwrap();
        assert_eq!(stat.comm, "kworker/0:0H-events_highpri");
        assert_eq!((stat.state, stat.ppid), ('I', 2));
        assert_eq!(state_name(stat.state), "idle");
    }

    #[test]
    fn zombie() {
        let stat = parse_stat(ZOMBIE).unwrap();
        assert_eq!((stat.state, stat.ppid), ('Z', 9350));
        assert_eq!((stat.utime, stat.stime, stat.vsize, stat.rss), (3, 1, 0, 0));
        assert_eq!(state_name(stat.state), "zombie");
    }

    #[test]
    fn older_kernels() {
        let stat = parse_stat(RHEL7_SSHD).unwrap();
        assert_eq!((stat.pid, stat.comm.as_str()), (1123, "sshd"));
        assert_eq!((stat.utime, stat.stime), (12, 31));
        assert_eq!((stat.starttime, stat.rss), (1580, 1080));
    }

    #[test]
    fn negative_rss_is_zero() {
        let line = "5 (x) S 1 0 0 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 1 0 -1\n";
        assert_eq!(parse_stat(line).unwrap().rss, 0);
    }

    #[test]
    fn malformed_lines_are_errors() {
        assert_eq!(
            parse_stat("").unwrap_err(),
            "no `(` before the command name"
        );
        assert_eq!(
            parse_stat("12 (x").unwrap_err(),
            "no `)` after the command name"
        );
        assert_eq!(parse_stat("1 )x( S").unwrap_err(), "`)` comes before `(`");
        assert_eq!(parse_stat("x (a) S 1").unwrap_err(), "bad pid `x`");
        assert_eq!(parse_stat("1 (a)").unwrap_err(), "no state field");
        assert_eq!(parse_stat("1 (a) S 1 2 3").unwrap_err(), "no utime field");
        assert_eq!(parse_stat("1 (a) S -4").unwrap_err(), "bad ppid field `-4`");
    }

    #[test]
    fn state_words() {
        let words: Vec<_> = "RSDTtZXxIPWK?".chars().map(state_name).collect();
        assert_eq!(
            words,
            [
                "running",
                "sleeping",
                "disk_sleep",
                "stopped",
                "tracing_stop",
                "zombie",
                "dead",
                "dead",
                "idle",
                "parked",
                "unknown",
                "unknown",
                "unknown"
            ]
        );
    }

    #[test]
    fn cmdline_splitting() {
        assert_eq!(
            parse_cmdline(b"/tmp/my (weird) prog\x0030\x00"),
            ["/tmp/my (weird) prog", "30"]
        );
        assert!(parse_cmdline(b"").is_empty());
        assert_eq!(parse_cmdline(b"prog\0\0"), ["prog", ""]);
        // A process that rewrote its arguments with setproctitle() and no terminator.
        assert_eq!(
            parse_cmdline(b"postgres: checkpointer "),
            ["postgres: checkpointer "]
        );
        assert_eq!(parse_cmdline(b"caf\xe9\0"), ["caf\u{fffd}"]);
    }

    /// A `/proc` tree with three processes, a process that exited while being listed and
    /// entries that are not processes.
    fn fixture_tree() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let write = |path: &str, contents: &[u8]| {
            let full = root.join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(full, contents).unwrap();
        };
        write(
            "proc/stat",
            b"cpu  1 2 3 4\nbtime 1700000000\nprocesses 99\n",
        );
        write("proc/1/stat", INIT.as_bytes());
        write("proc/1/cmdline", b"/usr/bin/process_api\0--port\x008080\0");
        write("proc/2/stat", KTHREADD.as_bytes());
        write("proc/2/cmdline", b"");
        write("proc/9325/stat", WEIRD.as_bytes());
        write("proc/9325/cmdline", b"/tmp/my (weird) prog\x0030\x00");
        // Listed, then gone before its files were read.
        fs::create_dir_all(root.join("proc/4242")).unwrap();
        write("proc/sys/kernel/pid_max", b"4194304\n");
        write("proc/self", b"not a process\n");
        write("proc/meminfo", b"MemTotal: 1 kB\n");
        let uid = fs::metadata(root).unwrap().uid();
        write(
            "etc/passwd",
            // First, so it is the name of uid 0 too when the tests run as root.
            format!("fixture-user:x:{uid}:{uid}::/:/bin/sh\nroot:x:0:0::/root:/bin/sh\n")
                .as_bytes(),
        );
        dir
    }

    const UNITS: Units = Units {
        clk_tck: 100,
        page_size: 4096,
    };

    #[test]
    fn reads_a_proc_tree() {
        let dir = fixture_tree();
        let uid = fs::metadata(dir.path()).unwrap().uid();
        let report = read_processes(&Context::new(dir.path()), UNITS).unwrap();
        assert_eq!(report.error, None);
        let FunctionData::Processes(processes) = report.data else {
            panic!("wrong function data: {:?}", report.data);
        };
        let user = Some("fixture-user".to_owned());
        let expected = vec![
            Process {
                pid: 1,
                ppid: 0,
                name: "process_api".into(),
                cmdline: vec![
                    "/usr/bin/process_api".into(),
                    "--port".into(),
                    "8080".into(),
                ],
                user: user.clone(),
                uid: Some(uid),
                state: "sleeping".into(),
                start_time: Some(Timestamp::from_second(1_700_000_000).unwrap()),
                cpu_time_s: 2.67,
                rss_bytes: 3452 * 4096,
            },
            Process {
                pid: 2,
                ppid: 0,
                name: "kthreadd".into(),
                cmdline: vec![],
                user: user.clone(),
                uid: Some(uid),
                state: "sleeping".into(),
                start_time: Some(Timestamp::from_second(1_700_000_000).unwrap()),
                cpu_time_s: 0.0,
                rss_bytes: 0,
            },
            Process {
                pid: 9325,
                ppid: 1,
                name: "my (weird) prog".into(),
                cmdline: vec!["/tmp/my (weird) prog".into(), "30".into()],
                user,
                uid: Some(uid),
                state: "sleeping".into(),
                start_time: Some(Timestamp::from_second(1_700_000_534).unwrap()),
                cpu_time_s: 0.0,
                rss_bytes: 410 * 4096,
            },
        ];
        assert_eq!(processes, expected);
    }

    #[test]
    fn unknown_owner_and_no_boot_time() {
        let dir = fixture_tree();
        fs::remove_file(dir.path().join("etc/passwd")).unwrap();
        fs::remove_file(dir.path().join("proc/stat")).unwrap();
        let report = read_processes(&Context::new(dir.path()), UNITS).unwrap();
        let FunctionData::Processes(processes) = report.data else {
            panic!("wrong function data");
        };
        assert_eq!(processes.len(), 3);
        assert!(
            processes
                .iter()
                .all(|p| p.user.is_none() && p.uid.is_some())
        );
        assert!(processes.iter().all(|p| p.start_time.is_none()));
    }

    #[test]
    fn a_corrupt_stat_is_reported_and_the_rest_kept() {
        let dir = fixture_tree();
        fs::write(dir.path().join("proc/2/stat"), "garbage").unwrap();
        let report = read_processes(&Context::new(dir.path()), UNITS).unwrap();
        assert_eq!(
            report.error.as_deref(),
            Some("parsing /proc/2/stat: no `(` before the command name")
        );
        assert_eq!(report.data.len(), 2);
    }

    #[test]
    fn no_proc_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let error = read_processes(&Context::new(dir.path()), UNITS).unwrap_err();
        assert!(error.to_string().starts_with("reading "), "{error}");
    }

    /// `/proc/self/stat`'s name and parent, found without `parse_stat`.
    fn own_name_and_ppid() -> (String, u32) {
        let text = fs::read_to_string("/proc/self/stat").unwrap();
        let (open, close) = (text.find('(').unwrap(), text.rfind(')').unwrap());
        let ppid = text[close + 1..].split_whitespace().nth(1).unwrap();
        (text[open + 1..close].to_owned(), ppid.parse().unwrap())
    }

    fn live_processes() -> Vec<Process> {
        match collect(&Context::default()).unwrap().unwrap().data {
            FunctionData::Processes(processes) => processes,
            other => panic!("wrong function data: {other:?}"),
        }
    }

    #[test]
    fn live_list_contains_this_process() {
        let processes = live_processes();
        let pid = std::process::id();
        let me = processes.iter().find(|p| p.pid == pid).expect("own pid");
        let (name, ppid) = own_name_and_ppid();
        assert_eq!(me.name, name);
        assert_eq!(me.ppid, ppid);
        assert_eq!(me.ppid, std::os::unix::process::parent_id());
        assert_eq!(me.uid, Some(nix::unistd::geteuid().as_raw()));
        assert!(me.rss_bytes > 0);
        let exe = std::env::current_exe().unwrap();
        let argv0 = me.cmdline.first().map(Path::new).and_then(Path::file_name);
        assert_eq!(argv0, exe.file_name());
        assert!(processes.windows(2).all(|w| w[0].pid < w[1].pid));
        assert!(processes.iter().any(|p| p.pid == 1));
    }

    #[test]
    fn live_count_matches_ps() {
        let before = live_processes().len();
        let ps = match std::process::Command::new("ps")
            .args(["-e", "--no-headers"])
            .output()
        {
            Ok(output) => output,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                eprintln!("skipped: procps `ps` is not installed here to compare with");
                return;
            }
            Err(e) => panic!("running ps: {e}"),
        };
        let after = live_processes().len();
        let from_ps = String::from_utf8_lossy(&ps.stdout).lines().count();
        // Other processes start and stop meanwhile (ps counts itself too).
        let (low, high) = (before.min(after), before.max(after));
        assert!(
            from_ps + 10 >= low && from_ps <= high + 10,
            "ps saw {from_ps} processes, we saw {before} then {after}"
        );
    }

    proptest! {
        #[test]
        fn stat_never_panics(text in "\\PC*") {
            let _ = parse_stat(&text);
        }

        #[test]
        fn stat_never_panics_on_stat_like_lines(
            pid in "[0-9]{0,12}",
            name in "[a-z() \n]{0,16}",
            fields in proptest::collection::vec("-?[0-9]{0,22}|[RSZ]", 0..30),
        ) {
            let _ = parse_stat(&format!("{pid} ({name}) {}", fields.join(" ")));
        }

        #[test]
        fn names_round_trip(name in "[^\0]{0,15}", rss in 0u64..u64::MAX / 2) {
            let line = format!("42 ({name}) S 1 0 0 0 -1 0 0 0 0 0 5 6 0 0 20 0 1 0 7 8 {rss}\n");
            let stat = parse_stat(&line).unwrap();
            prop_assert_eq!(stat.comm, name);
            prop_assert_eq!((stat.utime, stat.stime, stat.starttime, stat.vsize), (5, 6, 7, 8));
            prop_assert_eq!(stat.rss, rss);
        }

        #[test]
        fn cmdline_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..64)) {
            let _ = parse_cmdline(&bytes);
        }
    }
}
