//! A command's process tree, found through `/proc`, and stopping it: SIGTERM, a grace period,
//! SIGKILL.
//!
//! A command runs in its own process group, so one `killpg` reaches everything that stayed in
//! it. Descendants that left the group (`setsid`, `setpgid`) are found by walking `/proc`:
//! every process whose parent is in the tree, or whose group is the command's, or whose session
//! was started by a process of the tree. The walk is repeated through the grace period and what
//! it found is remembered (pid and start time, so a reused pid is never signalled), so a
//! descendant orphaned by the SIGTERM still gets the SIGKILL. What escapes: a process that
//! double-forked out of both the group and every session of the tree, and whose parents are
//! all gone, before the stop began (the kernel keeps no link back to the command then).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// One line of `/proc/<pid>/stat`, the fields the walk needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcStat {
    pub pid: i32,
    pub state: char,
    pub ppid: i32,
    pub pgrp: i32,
    pub session: i32,
    /// Clock ticks after boot: with the pid, it names one process for good.
    pub starttime: u64,
}

/// Parses `/proc/<pid>/stat`. The command name is in parentheses and may hold spaces and
/// parentheses itself, so the fields are counted from the last `)`.
pub fn parse_stat(text: &str) -> Option<ProcStat> {
    let (head, rest) = text.rsplit_once(')')?;
    let pid = head.split_once('(')?.0.trim().parse().ok()?;
    let fields: Vec<&str> = rest.split_ascii_whitespace().collect();
    Some(ProcStat {
        pid,
        state: fields.first()?.chars().next()?,
        ppid: fields.get(1)?.parse().ok()?,
        pgrp: fields.get(2)?.parse().ok()?,
        session: fields.get(3)?.parse().ok()?,
        starttime: fields.get(19)?.parse().ok()?,
    })
}

/// Every live (not zombie) process under `proc_root`.
pub fn snapshot(proc_root: &Path) -> Vec<ProcStat> {
    let Ok(entries) = std::fs::read_dir(proc_root) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter_map(|t| parse_stat(&t))
        .filter(|s| s.state != 'Z' && s.state != 'X')
        .collect()
}

/// The processes of `root`'s tree in `procs` (see the module docs), `root` included.
pub fn tree(root: i32, procs: &[ProcStat]) -> BTreeMap<i32, u64> {
    let mut members: BTreeMap<i32, u64> = BTreeMap::new();
    let mut sessions: BTreeSet<i32> = BTreeSet::new();
    if let Some(r) = procs.iter().find(|p| p.pid == root) {
        members.insert(root, r.starttime);
    }
    loop {
        let mut grew = false;
        for p in procs {
            if members.contains_key(&p.pid) {
                continue;
            }
            if members.contains_key(&p.ppid) || p.pgrp == root || sessions.contains(&p.session) {
                members.insert(p.pid, p.starttime);
                grew = true;
            }
        }
        for p in procs {
            if members.contains_key(&p.pid) && p.session == p.pid && sessions.insert(p.pid) {
                grew = true;
            }
        }
        if !grew {
            return members;
        }
    }
}

/// Whether the process group `pgid` recorded with its leader's start time `start` is still
/// that group: its leader alive with that start time, or, the leader gone, any process still in
/// the group (the kernel does not reuse a pid while a group bears its number).
pub fn still_ours(pgid: i32, start: u64, procs: &[ProcStat]) -> bool {
    match procs.iter().find(|p| p.pid == pgid) {
        Some(leader) => leader.starttime == start,
        None => procs.iter().any(|p| p.pgrp == pgid),
    }
}

/// The start time of process `pid`, if it is alive.
pub fn start_time(pid: i32) -> Option<u64> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_stat(&text).map(|s| s.starttime)
}

/// Stops the process tree of `root` (a child of this process, its own group leader):
/// SIGTERM to the group and every member found, up to `grace` for them to go, then SIGKILL to
/// whatever is left. Returns when nothing of the tree is alive, or after a last SIGKILL.
#[cfg(unix)]
pub async fn stop_tree(root: i32, grace: std::time::Duration) {
    use std::time::Duration;

    use nix::sys::signal::{Signal, kill, killpg};
    use nix::unistd::Pid;

    let proc_root = Path::new("/proc");
    let mut known: BTreeMap<i32, u64> = BTreeMap::new();
    let alive = |known: &BTreeMap<i32, u64>| -> Vec<i32> {
        let now = snapshot(proc_root);
        known
            .iter()
            .filter(|(pid, start)| now.iter().any(|p| p.pid == **pid && p.starttime == **start))
            .map(|(pid, _)| *pid)
            .collect()
    };
    let signal_all = |known: &BTreeMap<i32, u64>, signal: Signal| {
        let _ = killpg(Pid::from_raw(root), signal);
        for pid in alive(known) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    };
    known.extend(tree(root, &snapshot(proc_root)));
    signal_all(&known, Signal::SIGTERM);
    let deadline = tokio::time::Instant::now() + grace;
    loop {
        // Children forked after the SIGTERM join the tree; orphans keep their place in it.
        let procs = snapshot(proc_root);
        for (&pid, &start) in known.clone().iter() {
            if procs.iter().any(|p| p.pid == pid && p.starttime == start) {
                known.extend(tree(pid, &procs));
            }
        }
        let left = alive(&known);
        if left.is_empty() {
            return;
        }
        if tokio::time::Instant::now() >= deadline {
            break;
        }
        for pid in &left {
            let _ = kill(Pid::from_raw(*pid), Signal::SIGTERM);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for _ in 0..20 {
        let procs = snapshot(proc_root);
        for (&pid, &start) in known.clone().iter() {
            if procs.iter().any(|p| p.pid == pid && p.starttime == start) {
                known.extend(tree(pid, &procs));
            }
        }
        signal_all(&known, Signal::SIGKILL);
        if alive(&known).is_empty() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_parse_even_with_odd_command_names() {
        let line = "4242 (a (weird) name) S 4241 4242 4000 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        let s = parse_stat(line).unwrap();
        assert_eq!(
            s,
            ProcStat {
                pid: 4242,
                state: 'S',
                ppid: 4241,
                pgrp: 4242,
                session: 4000,
                starttime: 987654
            }
        );
        assert_eq!(parse_stat("garbage"), None);
        assert_eq!(parse_stat("1 (x) S 0"), None);
    }

    proptest::proptest! {
        #[test]
        fn parsing_any_text_never_panics(text in ".{0,200}") {
            let _ = parse_stat(&text);
        }

        #[test]
        fn parsing_stat_like_lines_never_panics(
            comm in "[ -~]{0,20}",
            rest in "[ 0-9A-Za-z()-]{0,120}",
        ) {
            let _ = parse_stat(&format!("12 ({comm}) {rest}"));
        }
    }

    fn p(pid: i32, ppid: i32, pgrp: i32, session: i32) -> ProcStat {
        ProcStat {
            pid,
            state: 'S',
            ppid,
            pgrp,
            session,
            starttime: pid as u64,
        }
    }

    #[test]
    fn the_tree_follows_parents_the_group_and_sessions_the_tree_started() {
        let procs = [
            p(1, 0, 1, 1),
            p(50, 1, 50, 50),      // the agent
            p(100, 50, 100, 50),   // the command, its own group in the agent's session
            p(101, 100, 100, 50),  // a child
            p(102, 101, 102, 102), // a grandchild that called setsid
            p(103, 1, 102, 102),   // its child, orphaned to init, still in that session
            p(104, 1, 100, 50),    // an orphan still in the command's group
            p(200, 50, 200, 50),   // another command of the agent
            p(201, 1, 201, 201),   // an unrelated daemon
        ];
        let members: Vec<i32> = tree(100, &procs).into_keys().collect();
        assert_eq!(members, [100, 101, 102, 103, 104]);
    }
}
