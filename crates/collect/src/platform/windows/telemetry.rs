//! `telemetry/system_metrics` on Windows, with the Linux sampler's names and meanings: CPU
//! from `GetSystemTimes`, memory and the page file from `GlobalMemoryStatusEx`, the system
//! drive from `GetDiskFreeSpaceExW`, network bytes from `GetIfTable2`, disk bytes from
//! `IOCTL_DISK_PERFORMANCE`. Windows has no load average: `load_*` stay `null`.

use std::time::{Duration, Instant};

use muster_proto::FunctionReport;
use muster_proto::data::SystemMetrics;
use windows_sys::Win32::Foundation::{FILETIME, NO_ERROR};
use windows_sys::Win32::NetworkManagement::IpHelper::{FreeMibTable, GetIfTable2, MIB_IF_TABLE2};
use windows_sys::Win32::System::SystemInformation::GetSystemWindowsDirectoryW;
use windows_sys::Win32::System::Threading::GetSystemTimes;

use super::win::{filetime, from_wide, last_error, os_error, win32_error};
use crate::platform::{counter_rate, percent};
use crate::{CollectError, Context};

const IF_TYPE_SOFTWARE_LOOPBACK: u32 = 24;
/// `InterfaceAndOperStatusFlags.FilterInterface`: a filter driver's view of another
/// interface, whose counters would count that interface's bytes twice.
const FILTER_INTERFACE: u8 = 0b10;

/// CPU time since boot, in 100 ns ticks.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub idle: u64,
    /// Kernel time, idle time included (as `GetSystemTimes` counts it).
    pub kernel: u64,
    pub user: u64,
}

/// Memory figures from `GlobalMemoryStatusEx`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStatus {
    pub total: u64,
    pub available: u64,
    /// The commit limit and what is left of it: physical memory plus page files.
    pub commit_total: u64,
    pub commit_available: u64,
}

/// One reading of the counters; `None` where a source could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawSample {
    pub cpu: Option<CpuTimes>,
    pub memory: Option<MemoryStatus>,
    /// Bytes received and sent.
    pub net: Option<(u64, u64)>,
    /// Bytes read and written.
    pub disk_io: Option<(u64, u64)>,
    /// Percent of the system drive in use.
    pub disk_usage: Option<f64>,
}

/// The metrics of `current`, with CPU usage and rates over `previous` (the Linux sampler's
/// rules: a counter that went down gives no rate). `None` without memory figures.
pub fn metrics(
    current: &RawSample,
    previous: Option<(&RawSample, Duration)>,
) -> Option<SystemMetrics> {
    let memory = current.memory?;
    let previous = previous.filter(|(_, elapsed)| !elapsed.is_zero());
    let seconds = previous.map(|(_, elapsed)| elapsed.as_secs_f64());
    let rate = |now, then| counter_rate(now, then, seconds);
    let before = |f: fn(&RawSample) -> Option<(u64, u64)>| previous.and_then(|(p, _)| f(p));
    let (net, net_before) = (current.net, before(|s| s.net));
    let (disk, disk_before) = (current.disk_io, before(|s| s.disk_io));
    let cpu_usage = previous.and_then(|(p, _)| {
        let (then, now) = (p.cpu?, current.cpu?);
        let total = (now.kernel + now.user).checked_sub(then.kernel + then.user)?;
        let idle = now.idle.checked_sub(then.idle)?;
        (total > 0).then(|| (total.saturating_sub(idle) as f64 / total as f64 * 100.0).min(100.0))
    });
    // The page file is what the commit limit holds beyond physical memory; what is used of it
    // is committed memory that does not fit in physical memory.
    let swap_total = memory.commit_total.saturating_sub(memory.total);
    let committed = memory.commit_total.saturating_sub(memory.commit_available);
    let swap_used = committed
        .saturating_sub(memory.total.saturating_sub(memory.available))
        .min(swap_total);
    Some(SystemMetrics {
        cpu_usage,
        memory_usage: percent(memory.total.saturating_sub(memory.available), memory.total),
        disk_usage: current.disk_usage,
        load_1: None,
        load_5: None,
        load_15: None,
        memory_total_bytes: memory.total,
        memory_available_bytes: memory.available,
        swap_total_bytes: swap_total,
        swap_used_bytes: swap_used,
        swap_usage: percent(swap_used, swap_total),
        net_rx_bytes: net.map_or(0, |n| n.0),
        net_tx_bytes: net.map_or(0, |n| n.1),
        net_rx_bytes_per_s: rate(net.map(|n| n.0), net_before.map(|n| n.0)),
        net_tx_bytes_per_s: rate(net.map(|n| n.1), net_before.map(|n| n.1)),
        disk_read_bytes: disk.map_or(0, |d| d.0),
        disk_write_bytes: disk.map_or(0, |d| d.1),
        disk_read_bytes_per_s: rate(disk.map(|d| d.0), disk_before.map(|d| d.0)),
        disk_write_bytes_per_s: rate(disk.map(|d| d.1), disk_before.map(|d| d.1)),
        interval_s: seconds,
    })
}

fn cpu_times() -> Result<CpuTimes, CollectError> {
    let (mut idle, mut kernel, mut user) = (
        FILETIME::default(),
        FILETIME::default(),
        FILETIME::default(),
    );
    // SAFETY: three writable FILETIMEs.
    if unsafe { GetSystemTimes(&mut idle, &mut kernel, &mut user) } == 0 {
        return Err(last_error("GetSystemTimes"));
    }
    Ok(CpuTimes {
        idle: filetime(&idle),
        kernel: filetime(&kernel),
        user: filetime(&user),
    })
}

/// Bytes received and sent by every interface that is neither loopback nor a filter's copy
/// of another.
fn net_totals() -> Result<(u64, u64), CollectError> {
    let mut table: *mut MIB_IF_TABLE2 = std::ptr::null_mut();
    // SAFETY: `table` is writable; on success it is freed with FreeMibTable below.
    let code = unsafe { GetIfTable2(&mut table) };
    if code != NO_ERROR || table.is_null() {
        return Err(os_error("GetIfTable2", win32_error(code)));
    }
    // SAFETY: the table holds NumEntries rows.
    let rows = unsafe {
        std::slice::from_raw_parts((*table).Table.as_ptr(), (*table).NumEntries as usize)
    };
    let totals = rows
        .iter()
        .filter(|row| {
            row.Type != IF_TYPE_SOFTWARE_LOOPBACK
                && row.InterfaceAndOperStatusFlags._bitfield & FILTER_INTERFACE == 0
        })
        .fold((0u64, 0u64), |(rx, tx), row| {
            (
                rx.saturating_add(row.InOctets),
                tx.saturating_add(row.OutOctets),
            )
        });
    // SAFETY: allocated by GetIfTable2, freed once, `rows` not used after.
    unsafe { FreeMibTable(table.cast()) };
    Ok(totals)
}

/// Bytes read and written by all physical drives; `None` when none can be opened (Wine).
fn disk_io() -> Option<(u64, u64)> {
    let (drives, _) = super::disks::open_drives();
    let counters: Vec<(u64, u64)> = drives
        .iter()
        .filter_map(|(_, handle)| super::disks::io_counters(handle))
        .collect();
    (!counters.is_empty()).then(|| {
        counters
            .iter()
            .fold((0, 0), |(r, w), (dr, dw)| (r + dr, w + dw))
    })
}

/// The system drive's root, e.g. `C:\`.
pub fn system_drive() -> Option<String> {
    let mut buf = [0u16; 261];
    // SAFETY: `buf` holds the length passed.
    let len = unsafe { GetSystemWindowsDirectoryW(buf.as_mut_ptr(), buf.len() as u32) } as usize;
    let dir = from_wide(&buf[..len.min(buf.len())]);
    (dir.len() >= 2 && dir.as_bytes()[1] == b':').then(|| format!("{}\\", &dir[..2]))
}

fn system_drive_usage() -> Result<Option<f64>, CollectError> {
    let Some(root) = system_drive() else {
        return Ok(None);
    };
    let space = super::filesystems::disk_space(&root)?;
    let used = space.total.saturating_sub(space.free);
    let usable = used.saturating_add(space.available);
    Ok((usable > 0).then(|| used as f64 / usable as f64 * 100.0))
}

fn read_raw(problems: &mut Vec<String>) -> RawSample {
    let mut note = |e: CollectError| problems.push(e.to_string());
    let mut sample = RawSample::default();
    match cpu_times() {
        Ok(cpu) => sample.cpu = Some(cpu),
        Err(e) => note(e),
    }
    match super::memory::memory_status() {
        Ok(m) => {
            sample.memory = Some(MemoryStatus {
                total: m.ullTotalPhys,
                available: m.ullAvailPhys,
                commit_total: m.ullTotalPageFile,
                commit_available: m.ullAvailPageFile,
            })
        }
        Err(e) => note(e),
    }
    match net_totals() {
        Ok(net) => sample.net = Some(net),
        Err(e) => note(e),
    }
    match system_drive_usage() {
        Ok(usage) => sample.disk_usage = usage,
        Err(e) => note(e),
    }
    sample.disk_io = disk_io();
    sample
}

/// Takes telemetry samples, keeping the previous one to compute CPU usage and rates from.
#[derive(Debug)]
pub struct TelemetrySampler {
    previous: Option<(RawSample, Instant)>,
}

impl TelemetrySampler {
    /// A sampler of this machine (the context's root means nothing on Windows).
    pub fn new(_: Context) -> Self {
        Self { previous: None }
    }

    /// Reads the counters now. The first sample has no CPU usage, rates or interval; each
    /// later one computes them over the time since the one before.
    pub fn sample(&mut self) -> FunctionReport {
        let now = Instant::now();
        let mut problems = Vec::new();
        let raw = read_raw(&mut problems);
        let previous = self
            .previous
            .as_ref()
            .map(|(sample, at)| (sample, now.saturating_duration_since(*at)));
        let metrics = metrics(&raw, previous);
        self.previous = Some((raw, now));
        crate::platform::metrics_report(metrics, &problems)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_proto::FunctionData;

    fn raw(busy: u64, idle: u64, rx: u64) -> RawSample {
        RawSample {
            cpu: Some(CpuTimes {
                idle,
                kernel: idle + busy / 2,
                user: busy / 2,
            }),
            memory: Some(MemoryStatus {
                total: 8 << 30,
                available: 2 << 30,
                commit_total: 10 << 30,
                commit_available: 3 << 30,
            }),
            net: Some((rx, 0)),
            disk_io: None,
            disk_usage: Some(40.0),
        }
    }

    #[test]
    fn computes_usage_and_rates_between_samples() {
        let first = raw(1000, 3000, 10_000);
        let second = raw(1600, 3400, 30_000);
        let m = metrics(&second, Some((&first, Duration::from_secs(2)))).unwrap();
        // 600 busy of 1000 ticks.
        assert_eq!(m.cpu_usage, Some(60.0));
        assert_eq!(m.memory_usage, 75.0);
        // 2 GiB page file; 7 GiB committed, 6 GiB of it in memory: 1 GiB paged.
        assert_eq!((m.swap_total_bytes, m.swap_used_bytes), (2 << 30, 1 << 30));
        assert_eq!(m.net_rx_bytes_per_s, Some(10_000.0));
        assert_eq!(m.disk_read_bytes_per_s, None);
        assert_eq!((m.load_1, m.disk_usage), (None, Some(40.0)));
        // The first sample has no usage or rates; a counter going down gives no rate.
        assert_eq!(metrics(&first, None).unwrap().cpu_usage, None);
        let m = metrics(&first, Some((&second, Duration::from_secs(1)))).unwrap();
        assert_eq!((m.cpu_usage, m.net_rx_bytes_per_s), (None, None));
    }

    #[test]
    fn samples_this_machine() {
        let mut sampler = TelemetrySampler::new(Context::default());
        sampler.sample();
        std::thread::sleep(Duration::from_millis(100));
        let report = sampler.sample();
        assert_eq!(report.error, None);
        let FunctionData::SystemMetrics(m) = report.data else {
            panic!()
        };
        let m = &m[0];
        assert!(
            m.cpu_usage.is_some_and(|c| (0.0..=100.0).contains(&c)),
            "{m:?}"
        );
        assert!(m.memory_total_bytes > 0 && m.memory_usage > 0.0, "{m:?}");
        assert!(m.disk_usage.is_some_and(|d| d > 0.0 && d <= 100.0), "{m:?}");
        assert!(m.interval_s.is_some_and(|s| s >= 0.1), "{m:?}");
        assert_eq!(system_drive().as_deref(), Some("C:\\"));
    }
}
