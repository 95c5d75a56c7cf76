//! A process's memory and CPU from `/proc`: the server's (`--server-pid`) and the load
//! generator's own, sampled through the run.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

/// Clock ticks per second in `/proc/PID/stat` (`USER_HZ`): 100 on every Linux architecture
/// the kernel exports to user space.
pub const TICKS_PER_SECOND: f64 = 100.0;

/// One reading of a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Reading {
    pub rss_kib: u64,
    /// Peak resident set (VmHWM) since the process started.
    pub hwm_kib: u64,
    /// utime + stime, all threads, in ticks.
    pub cpu_ticks: u64,
}

/// `VmRSS` and `VmHWM` (KiB) from `/proc/PID/status`.
pub fn parse_status(text: &str) -> (Option<u64>, Option<u64>) {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// utime + stime (fields 14 and 15) from `/proc/PID/stat`. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted from the last `)`.
pub fn parse_stat_cpu(text: &str) -> Option<u64> {
    let rest = &text[text.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

/// Reads `/proc/<pid>` (`self` for this process).
pub fn read(pid: &str) -> Option<Reading> {
    let dir = Path::new("/proc").join(pid);
    let status = std::fs::read_to_string(dir.join("status")).ok()?;
    let stat = std::fs::read_to_string(dir.join("stat")).ok()?;
    let (rss, hwm) = parse_status(&status);
    Some(Reading {
        rss_kib: rss?,
        hwm_kib: hwm.unwrap_or(0),
        cpu_ticks: parse_stat_cpu(&stat)?,
    })
}

/// A process watched over a run: first and last readings, and the largest RSS seen.
#[derive(Debug, Clone)]
pub struct Watch {
    pid: String,
    first: Option<(Instant, Reading)>,
    last: Option<(Instant, Reading)>,
    max_rss_kib: u64,
    /// The highest CPU use over one sampling interval, % of one core.
    max_cpu_percent: f64,
}

/// What a [`Watch`] saw, for the report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Usage {
    pub rss_start_mib: f64,
    pub rss_end_mib: f64,
    pub rss_max_mib: f64,
    /// VmHWM at the end: the peak since the process started, loading included.
    pub hwm_mib: f64,
    /// Average over the run, % of one core (200 % is both cores of this machine).
    pub cpu_percent: f64,
    pub cpu_percent_max: f64,
    pub cpu_seconds: f64,
}

impl Watch {
    pub fn new(pid: impl Into<String>) -> Watch {
        Watch {
            pid: pid.into(),
            first: None,
            last: None,
            max_rss_kib: 0,
            max_cpu_percent: 0.0,
        }
    }

    /// Takes a reading; a process that is gone (or not Linux) leaves the figures as they were.
    pub fn sample(&mut self) {
        let Some(reading) = read(&self.pid) else {
            return;
        };
        let now = Instant::now();
        if let Some((at, last)) = self.last {
            let seconds = now.duration_since(at).as_secs_f64();
            if seconds >= 0.5 {
                let ticks = reading.cpu_ticks.saturating_sub(last.cpu_ticks) as f64;
                let percent = ticks / TICKS_PER_SECOND / seconds * 100.0;
                self.max_cpu_percent = self.max_cpu_percent.max(percent);
            }
        }
        self.first.get_or_insert((now, reading));
        self.last = Some((now, reading));
        self.max_rss_kib = self.max_rss_kib.max(reading.rss_kib);
    }

    pub fn usage(&self) -> Option<Usage> {
        let ((t0, first), (t1, last)) = (self.first?, self.last?);
        let seconds = t1.duration_since(t0).as_secs_f64();
        let cpu_seconds = last.cpu_ticks.saturating_sub(first.cpu_ticks) as f64 / TICKS_PER_SECOND;
        let mib = |kib: u64| kib as f64 / 1024.0;
        Some(Usage {
            rss_start_mib: mib(first.rss_kib),
            rss_end_mib: mib(last.rss_kib),
            rss_max_mib: mib(self.max_rss_kib),
            hwm_mib: mib(last.hwm_kib),
            cpu_percent: if seconds > 0.0 {
                cpu_seconds / seconds * 100.0
            } else {
                0.0
            },
            cpu_percent_max: self.max_cpu_percent,
            cpu_seconds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_and_hwm() {
        let text =
            "Name:\tmuster-server\nVmPeak:\t  900 kB\nVmHWM:\t   52344 kB\nVmRSS:\t   51200 kB\n";
        assert_eq!(parse_status(text), (Some(51200), Some(52344)));
        assert_eq!(parse_status("Name: x\n"), (None, None));
    }

    #[test]
    fn reads_cpu_ticks_whatever_the_command_name() {
        let stat = "4242 (tokio (rt) x) S 1 4242 4242 0 -1 4194560 2000 0 0 0 1234 56 0 0 20 0 9 0 100 200 300";
        assert_eq!(parse_stat_cpu(stat), Some(1290));
        assert_eq!(parse_stat_cpu("4242 (x) S 1"), None);
        assert_eq!(parse_stat_cpu(""), None);
    }

    #[test]
    fn watches_this_process() {
        let mut w = Watch::new("self");
        w.sample();
        w.sample();
        let usage = w.usage().expect("linux has /proc/self");
        assert!(usage.rss_end_mib > 0.0 && usage.hwm_mib >= usage.rss_end_mib);
        assert!(Watch::new("0").usage().is_none());
    }
}
