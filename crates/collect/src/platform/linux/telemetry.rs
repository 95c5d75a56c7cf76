//! `telemetry/system_metrics`: CPU, memory, load, network and disk activity.
//!
//! The kernel exposes counters since boot; rates and CPU usage are the difference between two
//! samples. A [`TelemetrySampler`] keeps only the previous raw sample, so a daemon can call it
//! every few minutes for months without it growing. Computing the metrics from two raw samples
//! and the time between them is the pure function [`metrics`], so tests need no sleeping.

use std::fs::File;
use std::io::Read;
use std::time::{Duration, Instant};

use muster_proto::FunctionReport;
use muster_proto::data::SystemMetrics;

use super::memory::{Meminfo, parse_meminfo};
use crate::platform::{counter_rate, percent};
use crate::{CollectError, Context};

/// The aggregate `cpu` line of `/proc/stat`, in clock ticks. `guest` and `guest_nice` are
/// left out: the kernel already counts them in `user` and `nice`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CpuTimes {
    pub user: u64,
    pub nice: u64,
    pub system: u64,
    pub idle: u64,
    pub iowait: u64,
    pub irq: u64,
    pub softirq: u64,
    pub steal: u64,
}

impl CpuTimes {
    /// All ticks counted, idle included.
    pub fn total(&self) -> u64 {
        [
            self.user,
            self.nice,
            self.system,
            self.idle,
            self.iowait,
            self.irq,
            self.softirq,
            self.steal,
        ]
        .into_iter()
        .fold(0, u64::saturating_add)
    }

    /// Ticks neither idle nor waiting for I/O.
    pub fn busy(&self) -> u64 {
        self.total()
            .saturating_sub(self.idle)
            .saturating_sub(self.iowait)
    }
}

/// Parses the first (all-CPU) `cpu ` line of `/proc/stat`. Kernels before 2.6 lack the fields
/// after `idle`; they count as zero.
pub fn parse_proc_stat_cpu(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find_map(|l| l.strip_prefix("cpu "))?;
    let mut values = [0u64; 8];
    let mut count = 0;
    for (slot, field) in values.iter_mut().zip(line.split_ascii_whitespace()) {
        *slot = field.parse().ok()?;
        count += 1;
    }
    if count < 4 {
        return None;
    }
    let [user, nice, system, idle, iowait, irq, softirq, steal] = values;
    Some(CpuTimes {
        user,
        nice,
        system,
        idle,
        iowait,
        irq,
        softirq,
        steal,
    })
}

/// The three load averages of `/proc/loadavg`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadAvg {
    pub one: f64,
    pub five: f64,
    pub fifteen: f64,
}

/// Parses the first three fields of `/proc/loadavg`.
pub fn parse_loadavg(text: &str) -> Option<LoadAvg> {
    let mut fields = text
        .split_ascii_whitespace()
        .map(|f| f.parse::<f64>().ok().filter(|v| v.is_finite() && *v >= 0.0));
    Some(LoadAvg {
        one: fields.next()??,
        five: fields.next()??,
        fifteen: fields.next()??,
    })
}

/// Bytes received and sent since boot, summed over interfaces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NetTotals {
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// Sums the byte counters of `/proc/net/dev` over every interface but `lo`. Header lines and
/// lines it cannot read are skipped.
pub fn parse_net_dev(text: &str) -> NetTotals {
    let mut totals = NetTotals::default();
    for line in text.lines() {
        // Interface names cannot contain ':'; old kernels put no space after it
        // (`eth0:1234`) once the counter fills its column.
        let Some((name, counters)) = line.split_once(':') else {
            continue;
        };
        if name.trim() == "lo" {
            continue;
        }
        // Receive bytes is the first column, transmit bytes the ninth.
        let mut fields = counters.split_ascii_whitespace();
        let (Some(Ok(rx)), Some(Ok(tx))) = (
            fields.next().map(str::parse::<u64>),
            fields.nth(7).map(str::parse::<u64>),
        ) else {
            continue;
        };
        totals.rx_bytes = totals.rx_bytes.saturating_add(rx);
        totals.tx_bytes = totals.tx_bytes.saturating_add(tx);
    }
    totals
}

/// One device's line of `/proc/diskstats`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskCounters<'a> {
    pub name: &'a str,
    pub read_bytes: u64,
    pub write_bytes: u64,
}

/// The devices of `/proc/diskstats` (whole disks and partitions alike) with the bytes read
/// and written. Sectors there are always 512 bytes, whatever the device's own sector size.
/// Lines it cannot read are skipped.
pub fn parse_diskstats(text: &str) -> impl Iterator<Item = DiskCounters<'_>> {
    text.lines().filter_map(|line| {
        // major minor name reads merged sectors_read ms writes merged sectors_written ...
        let mut fields = line.split_ascii_whitespace();
        let name = fields.nth(2)?;
        let read: u64 = fields.nth(2)?.parse().ok()?;
        let written: u64 = fields.nth(3)?.parse().ok()?;
        Some(DiskCounters {
            name,
            read_bytes: read.saturating_mul(512),
            write_bytes: written.saturating_mul(512),
        })
    })
}

/// Whether a block device of `/sys/block` counts as a disk for I/O totals. RAM-backed and
/// loop devices are not disks, and device-mapper and md devices sit on top of disks already
/// counted, so counting them too would count the same I/O twice.
pub fn is_counted_disk(name: &str) -> bool {
    !["loop", "ram", "zram", "dm-", "md"]
        .iter()
        .any(|prefix| name.starts_with(prefix))
}

/// Bytes read from and written to disks since boot.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DiskTotals {
    pub read_bytes: u64,
    pub write_bytes: u64,
}

/// Sums the diskstats lines of the devices in `disks` (names as `/sys/block` spells them).
pub fn sum_disks(diskstats: &str, disks: &[String]) -> DiskTotals {
    let mut totals = DiskTotals::default();
    for counters in parse_diskstats(diskstats) {
        if disks.iter().any(|d| same_device(d, counters.name)) {
            totals.read_bytes = totals.read_bytes.saturating_add(counters.read_bytes);
            totals.write_bytes = totals.write_bytes.saturating_add(counters.write_bytes);
        }
    }
    totals
}

/// `/sys/block` writes a `/` of a kernel name as `!` (`cciss!c0d0` is `cciss/c0d0`).
fn same_device(sys_name: &str, stat_name: &str) -> bool {
    sys_name.len() == stat_name.len()
        && sys_name
            .bytes()
            .zip(stat_name.bytes())
            .all(|(s, d)| s == d || (s == b'!' && d == b'/'))
}

/// One reading of the counters; `None` where a source could not be read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RawSample {
    pub cpu: Option<CpuTimes>,
    pub memory: Option<Meminfo>,
    pub load: Option<LoadAvg>,
    pub net: Option<NetTotals>,
    pub disk_io: Option<DiskTotals>,
    /// Percent of the root filesystem in use.
    pub disk_usage: Option<f64>,
}

/// The metrics of `current`, with CPU usage and rates over `previous` when there is one and
/// some time has passed. `None` without memory figures, which the report cannot leave out.
///
/// A counter that went down (wrapped, reset, or summed over an interface that went away) gives
/// no rate rather than a negative one.
pub fn metrics(
    current: &RawSample,
    previous: Option<(&RawSample, Duration)>,
) -> Option<SystemMetrics> {
    let memory = current.memory?;
    let previous = previous.filter(|(_, elapsed)| !elapsed.is_zero());
    let seconds = previous.map(|(_, elapsed)| elapsed.as_secs_f64());
    let rate = |now, then| counter_rate(now, then, seconds);
    let (net, net_before) = (current.net, previous.and_then(|(p, _)| p.net));
    let (disk, disk_before) = (current.disk_io, previous.and_then(|(p, _)| p.disk_io));
    let cpu_before = previous.and_then(|(p, _)| p.cpu);

    let swap_used = memory.swap_total.saturating_sub(memory.swap_free);
    Some(SystemMetrics {
        cpu_usage: cpu_usage(cpu_before, current.cpu),
        memory_usage: percent(
            memory.mem_total.saturating_sub(memory.mem_available),
            memory.mem_total,
        ),
        disk_usage: current.disk_usage,
        load_1: current.load.map(|l| l.one),
        load_5: current.load.map(|l| l.five),
        load_15: current.load.map(|l| l.fifteen),
        memory_total_bytes: memory.mem_total,
        memory_available_bytes: memory.mem_available,
        swap_total_bytes: memory.swap_total,
        swap_used_bytes: swap_used,
        swap_usage: percent(swap_used, memory.swap_total),
        net_rx_bytes: net.map_or(0, |n| n.rx_bytes),
        net_tx_bytes: net.map_or(0, |n| n.tx_bytes),
        net_rx_bytes_per_s: rate(net.map(|n| n.rx_bytes), net_before.map(|n| n.rx_bytes)),
        net_tx_bytes_per_s: rate(net.map(|n| n.tx_bytes), net_before.map(|n| n.tx_bytes)),
        disk_read_bytes: disk.map_or(0, |d| d.read_bytes),
        disk_write_bytes: disk.map_or(0, |d| d.write_bytes),
        disk_read_bytes_per_s: rate(
            disk.map(|d| d.read_bytes),
            disk_before.map(|d| d.read_bytes),
        ),
        disk_write_bytes_per_s: rate(
            disk.map(|d| d.write_bytes),
            disk_before.map(|d| d.write_bytes),
        ),
        interval_s: seconds,
    })
}

/// Percent of ticks busy between two readings. Busy ticks only grow; the idle and iowait
/// counters can step back on some kernels, so the share is clamped to 100.
fn cpu_usage(then: Option<CpuTimes>, now: Option<CpuTimes>) -> Option<f64> {
    let (then, now) = (then?, now?);
    let total = now.total().checked_sub(then.total())?;
    let busy = now.busy().checked_sub(then.busy())?;
    (total > 0).then(|| (busy as f64 / total as f64 * 100.0).min(100.0))
}

/// Takes telemetry samples, keeping the previous one to compute CPU usage and rates from.
#[derive(Debug)]
pub struct TelemetrySampler {
    context: Context,
    previous: Option<(RawSample, Instant)>,
    /// Reused for every file read, so a sample allocates little.
    buf: Vec<u8>,
}

impl TelemetrySampler {
    /// A sampler reading the system under `context`'s root.
    pub fn new(context: Context) -> Self {
        Self {
            context,
            previous: None,
            buf: Vec::new(),
        }
    }

    /// Reads the counters now. The first sample has no CPU usage, rates or interval; each
    /// later one computes them over the time since the one before.
    pub fn sample(&mut self) -> FunctionReport {
        self.sample_at(Instant::now())
    }

    fn sample_at(&mut self, now: Instant) -> FunctionReport {
        let mut problems = Vec::new();
        let raw = read_raw(&self.context, &mut self.buf, &mut problems);
        let previous = self
            .previous
            .as_ref()
            .map(|(sample, at)| (sample, now.saturating_duration_since(*at)));
        let metrics = metrics(&raw, previous);
        self.previous = Some((raw, now));
        crate::platform::metrics_report(metrics, &problems)
    }
}

fn read_raw(context: &Context, buf: &mut Vec<u8>, problems: &mut Vec<String>) -> RawSample {
    let mut read = |path: &str, parse: &mut dyn FnMut(&str) -> Result<(), String>| {
        let full = context.path(path);
        buf.clear();
        let result = File::open(&full).and_then(|mut file| file.read_to_end(buf));
        if let Err(e) = result {
            problems.push(CollectError::io(full, e).to_string());
        } else if let Err(e) = parse(&String::from_utf8_lossy(buf)) {
            problems.push(CollectError::parse(full, e).to_string());
        }
    };
    let mut sample = RawSample::default();
    read("/proc/stat", &mut |text| {
        sample.cpu = Some(parse_proc_stat_cpu(text).ok_or("no readable cpu line")?);
        Ok(())
    });
    read("/proc/meminfo", &mut |text| {
        sample.memory = Some(parse_meminfo(text)?);
        Ok(())
    });
    read("/proc/loadavg", &mut |text| {
        sample.load = Some(parse_loadavg(text).ok_or("no load averages")?);
        Ok(())
    });
    read("/proc/net/dev", &mut |text| {
        sample.net = Some(parse_net_dev(text));
        Ok(())
    });
    match whole_disks(context) {
        Ok(disks) => read("/proc/diskstats", &mut |text| {
            sample.disk_io = Some(sum_disks(text, &disks));
            Ok(())
        }),
        Err(e) => problems.push(e.to_string()),
    }
    match root_usage(context) {
        Ok(usage) => sample.disk_usage = usage,
        Err(e) => problems.push(e.to_string()),
    }
    sample
}

/// The disks of `/sys/block` whose I/O counts: those [`is_counted_disk`] accepts that are not
/// software devices either. The kernel files every software block device (ZFS zvols, DRBD,
/// nbd, bcache as well as loop, dm and md) under `/sys/devices/virtual`, so the link target
/// catches those the name list does not know.
fn whole_disks(context: &Context) -> Result<Vec<String>, CollectError> {
    let path = context.path("/sys/block");
    let entries = std::fs::read_dir(&path).map_err(|e| CollectError::io(&path, e))?;
    Ok(entries
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let virtual_device = std::fs::read_link(entry.path())
                .is_ok_and(|target| target.components().any(|c| c.as_os_str() == "virtual"));
            (is_counted_disk(&name) && !virtual_device).then_some(name)
        })
        .collect())
}

/// Percent of the root filesystem in use, as `df` counts it: used blocks over the blocks an
/// unprivileged user could have (used plus available), so reserved blocks do not count as free.
fn root_usage(context: &Context) -> Result<Option<f64>, CollectError> {
    let path = context.path("/");
    let stat = nix::sys::statvfs::statvfs(&path)
        .map_err(|e| CollectError::io(&path, std::io::Error::from(e)))?;
    let used = stat.blocks().saturating_sub(stat.blocks_free());
    let usable = used.saturating_add(stat.blocks_available());
    Ok((usable > 0).then(|| used as f64 / usable as f64 * 100.0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_proto::FunctionData;
    use proptest::prelude::*;
    use std::fs;
    use std::path::Path;

    // Debian 12 VM, 2 CPUs.
    const STAT: &str = "cpu  19417 0 3479 77707 926 0 72 261 0 0\n\
        cpu0 9714 0 1667 38938 466 0 29 114 0 0\ncpu1 9702 0 1812 38768 459 0 43 147 0 0\n\
        intr 1404551 0 9 0 0 0\nctxt 2553826\nbtime 1795301557\nprocesses 9409\n\
        procs_running 2\nprocs_blocked 0\nsoftirq 1197451 0 255063 3 136187 40497 0 2043\n";
    const NET_DEV: &str = "Inter-|   Receive                                                |  Transmit
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed
    lo:    3245      30    0    0    0     0          0         0     3245      30    0    0    0     0       0          0
  ifb0:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
  ifb1:       0       0    0    0    0     0          0         0        0       0    0    0    0     0       0          0
  eth0: 69054929    5183    0    0    0     0          0         0   467723    5049    0    0    0     0       0          0
";
    // A laptop with an NVMe disk, a SATA disk, LVM, a CD drive and snap loop devices, on a
    // kernel with the 20-field format; loop0 in the 14-field format of kernels before 4.18.
    const DISKSTATS: &str = include_str!("../../../tests/fixtures/processes/diskstats");

    #[test]
    fn cpu_line() {
        let cpu = parse_proc_stat_cpu(STAT).unwrap();
        assert_eq!(
            cpu,
            CpuTimes {
                user: 19417,
                nice: 0,
                system: 3479,
                idle: 77707,
                iowait: 926,
                irq: 0,
                softirq: 72,
                steal: 261,
            }
        );
        assert_eq!(cpu.total(), 101_862);
        assert_eq!(cpu.busy(), 101_862 - 77707 - 926);
    }

    #[test]
    fn cpu_line_of_old_kernels_and_garbage() {
        let cpu = parse_proc_stat_cpu("cpu  10 20 30 40\n").unwrap();
        assert_eq!((cpu.total(), cpu.busy(), cpu.steal), (100, 60, 0));
        assert_eq!(parse_proc_stat_cpu("cpu  1 2 3\n"), None);
        assert_eq!(parse_proc_stat_cpu("cpu0 1 2 3 4\n"), None);
        assert_eq!(parse_proc_stat_cpu("cpu  1 2 x 4 5\n"), None);
    }

    #[test]
    fn loadavg() {
        let load = parse_loadavg("0.64 0.56 0.25 1/87 8853\n").unwrap();
        assert_eq!(
            load,
            LoadAvg {
                one: 0.64,
                five: 0.56,
                fifteen: 0.25
            }
        );
        assert_eq!(parse_loadavg("0.64 0.56\n"), None);
        assert_eq!(parse_loadavg("0.64 NaN 0.25\n"), None);
        assert_eq!(parse_loadavg("0.64 -1 0.25\n"), None);
    }

    #[test]
    fn net_dev_skips_loopback() {
        assert_eq!(
            parse_net_dev(NET_DEV),
            NetTotals {
                rx_bytes: 69_054_929,
                tx_bytes: 467_723
            }
        );
    }

    #[test]
    fn net_dev_of_old_kernels() {
        // 2.6-era layout: a counter that fills its column touches the colon.
        let text = "Inter-|   Receive |  Transmit\n face |bytes packets|bytes packets\n\
            lo:1234 5 0 0 0 0 0 0 1234 5 0 0 0 0 0 0\n\
            eth0:4294967290 100 0 0 0 0 0 0 10 2 0 0 0 0 0 0\n\
            wlan0: 10 1 0 0 0 0 0 0 20 2 0 0 0 0 0 0\n\
            broken: 1 2 3\n";
        assert_eq!(
            parse_net_dev(text),
            NetTotals {
                rx_bytes: 4_294_967_300,
                tx_bytes: 30
            }
        );
    }

    #[test]
    fn diskstats_lines() {
        let all: Vec<_> = parse_diskstats(DISKSTATS).collect();
        // Every line but the truncated `sdb` one.
        assert_eq!(all.len(), 12);
        assert_eq!(
            all[0],
            DiskCounters {
                name: "nvme0n1",
                read_bytes: 21_562_410 * 512,
                write_bytes: 33_419_576 * 512
            }
        );
        let loop0 = all.iter().find(|d| d.name == "loop0").unwrap();
        assert_eq!((loop0.read_bytes, loop0.write_bytes), (2_280 * 512, 0));
    }

    #[test]
    fn diskstats_sums_whole_disks_only() {
        let disks: Vec<String> = ["nvme0n1", "sda", "sr0", "loop0", "dm-0", "md127", "zram0"]
            .into_iter()
            .filter(|d| is_counted_disk(d))
            .map(String::from)
            .collect();
        assert_eq!(disks, ["nvme0n1", "sda", "sr0"]);
        assert_eq!(
            sum_disks(DISKSTATS, &disks),
            DiskTotals {
                read_bytes: (21_562_410 + 1_083_412 + 2_128) * 512,
                write_bytes: (33_419_576 + 8_204_488) * 512,
            }
        );
    }

    #[test]
    fn sys_block_names_use_bangs() {
        let text = " 104 0 cciss/c0d0 100 0 800 10 50 0 400 5 0 15 15\n\
            104 1 cciss/c0d0p1 100 0 800 10 50 0 400 5 0 15 15\n";
        assert_eq!(
            sum_disks(text, &["cciss!c0d0".to_owned()]),
            DiskTotals {
                read_bytes: 800 * 512,
                write_bytes: 400 * 512
            }
        );
    }

    fn memory(total_kb: u64, available_kb: u64, swap_kb: u64, swap_free_kb: u64) -> Meminfo {
        Meminfo {
            mem_total: total_kb * 1024,
            mem_free: 0,
            mem_available: available_kb * 1024,
            swap_total: swap_kb * 1024,
            swap_free: swap_free_kb * 1024,
        }
    }

    fn raw(cpu: (u64, u64), net: (u64, u64), disk: (u64, u64)) -> RawSample {
        RawSample {
            // (busy, idle) split over user/system and idle/iowait.
            cpu: Some(CpuTimes {
                user: cpu.0 / 2,
                system: cpu.0 - cpu.0 / 2,
                idle: cpu.1 / 2,
                iowait: cpu.1 - cpu.1 / 2,
                ..CpuTimes::default()
            }),
            memory: Some(memory(1000, 250, 0, 0)),
            load: None,
            net: Some(NetTotals {
                rx_bytes: net.0,
                tx_bytes: net.1,
            }),
            disk_io: Some(DiskTotals {
                read_bytes: disk.0,
                write_bytes: disk.1,
            }),
            disk_usage: Some(40.0),
        }
    }

    #[test]
    fn first_sample_has_no_rates() {
        let m = metrics(&raw((10, 90), (1, 2), (3, 4)), None).unwrap();
        assert_eq!((m.cpu_usage, m.interval_s), (None, None));
        assert_eq!(
            (m.net_rx_bytes_per_s, m.disk_write_bytes_per_s),
            (None, None)
        );
        assert_eq!((m.net_rx_bytes, m.net_tx_bytes), (1, 2));
        assert_eq!((m.disk_read_bytes, m.disk_write_bytes), (3, 4));
        assert_eq!((m.memory_usage, m.swap_usage), (75.0, 0.0));
        assert_eq!(m.disk_usage, Some(40.0));
    }

    #[test]
    fn rates_over_two_samples() {
        let before = raw((100, 900), (1000, 2000), (0, 512));
        let now = raw((350, 1650), (11_240, 2500), (5120, 512));
        let m = metrics(&now, Some((&before, Duration::from_secs(10)))).unwrap();
        assert_eq!(m.cpu_usage, Some(25.0));
        assert_eq!(m.net_rx_bytes_per_s, Some(1024.0));
        assert_eq!(m.net_tx_bytes_per_s, Some(50.0));
        assert_eq!(m.disk_read_bytes_per_s, Some(512.0));
        assert_eq!(m.disk_write_bytes_per_s, Some(0.0));
        assert_eq!(m.interval_s, Some(10.0));
    }

    #[test]
    fn counters_that_go_back_give_no_rate() {
        let before = raw((100, 900), (5000, 5000), (5000, 5000));
        let now = raw((50, 950), (10, 6000), (4000, 6000));
        let m = metrics(&now, Some((&before, Duration::from_secs(1)))).unwrap();
        assert_eq!(m.cpu_usage, None);
        assert_eq!(
            (m.net_rx_bytes_per_s, m.net_tx_bytes_per_s),
            (None, Some(1000.0))
        );
        assert_eq!(
            (m.disk_read_bytes_per_s, m.disk_write_bytes_per_s),
            (None, Some(1000.0))
        );
        assert_eq!(m.interval_s, Some(1.0));
    }

    #[test]
    fn idle_stepping_back_is_clamped() {
        let mut before = raw((100, 900), (0, 0), (0, 0));
        let mut now = raw((110, 900), (0, 0), (0, 0));
        before.cpu.as_mut().unwrap().iowait = 500;
        now.cpu.as_mut().unwrap().iowait = 497;
        let m = metrics(&now, Some((&before, Duration::from_secs(1)))).unwrap();
        assert_eq!(m.cpu_usage, Some(100.0));
    }

    #[test]
    fn no_time_no_ticks_no_rates() {
        let sample = raw((100, 900), (1, 1), (1, 1));
        let m = metrics(&sample, Some((&sample, Duration::ZERO))).unwrap();
        assert_eq!(
            (m.cpu_usage, m.net_rx_bytes_per_s, m.interval_s),
            (None, None, None)
        );
        let m = metrics(&sample, Some((&sample, Duration::from_secs(2)))).unwrap();
        assert_eq!(m.cpu_usage, None);
        assert_eq!(m.net_rx_bytes_per_s, Some(0.0));
    }

    #[test]
    fn missing_sources_leave_gaps() {
        let before = RawSample {
            net: None,
            ..raw((1, 1), (1, 1), (1, 1))
        };
        let now = raw((2, 2), (5, 5), (5, 5));
        let m = metrics(&now, Some((&before, Duration::from_secs(1)))).unwrap();
        assert_eq!(m.net_rx_bytes_per_s, None);
        assert_eq!(m.disk_read_bytes_per_s, Some(4.0));
        let no_memory = RawSample {
            memory: None,
            ..now
        };
        assert_eq!(metrics(&no_memory, None), None);
    }

    #[test]
    fn swap_usage() {
        let sample = RawSample {
            memory: Some(memory(1000, 1000, 2048, 1536)),
            ..RawSample::default()
        };
        let m = metrics(&sample, None).unwrap();
        assert_eq!(
            (m.swap_total_bytes, m.swap_used_bytes),
            (2048 * 1024, 512 * 1024)
        );
        assert_eq!((m.swap_usage, m.memory_usage), (25.0, 0.0));
    }

    /// Writes the files a sample reads under `root`.
    fn write_sources(root: &Path, cpu: &str, net_eth0: (u64, u64), sda: (u64, u64)) {
        let write = |path: &str, contents: String| {
            let full = root.join(path);
            fs::create_dir_all(full.parent().unwrap()).unwrap();
            fs::write(full, contents).unwrap();
        };
        write(
            "proc/stat",
            format!("{cpu}\ncpu0 1 1 1 1 1 1 1 1 0 0\nbtime 1700000000\n"),
        );
        write(
            "proc/meminfo",
            "MemTotal:        8000000 kB\nMemFree:  1000000 kB\nMemAvailable:    6000000 kB\n\
             SwapTotal:       2000000 kB\nSwapFree:        1500000 kB\n"
                .into(),
        );
        write("proc/loadavg", "1.50 0.75 0.25 3/412 9000\n".into());
        write(
            "proc/net/dev",
            format!(
                "Inter-|   Receive |  Transmit\n face |bytes packets|bytes packets\n\
                 lo: 999999 1 0 0 0 0 0 0 999999 1 0 0 0 0 0 0\n\
                 eth0: {} 1 0 0 0 0 0 0 {} 1 0 0 0 0 0 0\n",
                net_eth0.0, net_eth0.1
            ),
        );
        write(
            "proc/diskstats",
            format!(
                "   8 0 sda 10 0 {} 0 10 0 {} 0 0 0 0\n   8 1 sda1 10 0 {} 0 10 0 {} 0 0 0 0\n\
                 7 0 loop0 1 0 999 0 0 0 0 0 0 0 0\n\
                 230 0 zd0 1 0 777 0 1 0 777 0 0 0 0\n",
                sda.0, sda.1, sda.0, sda.1
            ),
        );
        for disk in ["sda", "loop0"] {
            fs::create_dir_all(root.join("sys/block").join(disk)).unwrap();
        }
        // A ZFS volume: a name the prefix list does not know, under /sys/devices/virtual.
        fs::create_dir_all(root.join("sys/devices/virtual/block/zd0")).unwrap();
        let zd0 = root.join("sys/block/zd0");
        if !zd0.exists() {
            std::os::unix::fs::symlink("../devices/virtual/block/zd0", zd0).unwrap();
        }
    }

    #[test]
    fn sampler_over_a_fixture_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write_sources(
            root,
            "cpu  1000 0 500 8000 500 0 0 0 0 0",
            (10_000, 5_000),
            (100, 200),
        );
        let mut sampler = TelemetrySampler::new(Context::new(root));
        let start = Instant::now();

        let first = sampler.sample_at(start);
        assert_eq!(first.error, None);
        let FunctionData::SystemMetrics(items) = &first.data else {
            panic!("wrong function data: {:?}", first.data);
        };
        let m = &items[0];
        assert_eq!(
            (m.cpu_usage, m.interval_s, m.net_rx_bytes_per_s),
            (None, None, None)
        );
        assert_eq!(
            (m.load_1, m.load_5, m.load_15),
            (Some(1.5), Some(0.75), Some(0.25))
        );
        assert_eq!(m.memory_total_bytes, 8_000_000 * 1024);
        assert_eq!(m.memory_available_bytes, 6_000_000 * 1024);
        assert_eq!(m.memory_usage, 25.0);
        assert_eq!((m.swap_used_bytes, m.swap_usage), (500_000 * 1024, 25.0));
        assert_eq!((m.net_rx_bytes, m.net_tx_bytes), (10_000, 5_000));
        assert_eq!(
            (m.disk_read_bytes, m.disk_write_bytes),
            (100 * 512, 200 * 512)
        );
        let usage = m.disk_usage.unwrap();
        assert!((0.0..=100.0).contains(&usage), "{usage}");

        // 10 s later: 1000 ticks passed, 300 of them busy (guest time is inside user).
        write_sources(
            root,
            "cpu  1200 0 600 8600 600 0 0 0 50 0",
            (30_480, 5_000),
            (2_100, 200),
        );
        let second = sampler.sample_at(start + Duration::from_secs(10));
        assert_eq!(second.error, None);
        let FunctionData::SystemMetrics(items) = &second.data else {
            panic!("wrong function data: {:?}", second.data);
        };
        let m = &items[0];
        assert_eq!(m.cpu_usage, Some(30.0));
        assert_eq!(m.interval_s, Some(10.0));
        assert_eq!(m.net_rx_bytes_per_s, Some(2048.0));
        assert_eq!(m.net_tx_bytes_per_s, Some(0.0));
        assert_eq!(m.disk_read_bytes_per_s, Some(102_400.0));
        assert_eq!(m.disk_write_bytes_per_s, Some(0.0));

        // The machine rebooted: counters restarted from zero.
        write_sources(root, "cpu  10 0 5 80 5 0 0 0 0 0", (100, 100), (10, 10));
        let third = sampler.sample_at(start + Duration::from_secs(20));
        let FunctionData::SystemMetrics(items) = &third.data else {
            panic!("wrong function data");
        };
        let m = &items[0];
        assert_eq!((m.cpu_usage, m.net_rx_bytes_per_s), (None, None));
        assert_eq!((m.disk_read_bytes_per_s, m.interval_s), (None, Some(10.0)));
    }

    #[test]
    fn partial_sources_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        write_sources(dir.path(), "cpu  1 2 3 4", (1, 1), (1, 1));
        fs::remove_file(dir.path().join("proc/net/dev")).unwrap();
        fs::remove_dir_all(dir.path().join("sys/block")).unwrap();
        let report = TelemetrySampler::new(Context::new(dir.path())).sample();
        let error = report.error.unwrap();
        assert!(error.contains("proc/net/dev: No such file"), "{error}");
        assert!(error.contains("sys/block: No such file"), "{error}");
        assert_eq!(report.data.len(), 1);

        fs::remove_file(dir.path().join("proc/meminfo")).unwrap();
        let report = TelemetrySampler::new(Context::new(dir.path())).sample();
        assert!(report.data.is_empty());
        assert!(report.error.unwrap().contains("proc/meminfo"));
    }

    fn only(report: &FunctionReport) -> &SystemMetrics {
        match &report.data {
            FunctionData::SystemMetrics(items) if items.len() == 1 => &items[0],
            other => panic!("wrong function data: {other:?}"),
        }
    }

    #[test]
    fn live_samples() {
        let mut sampler = TelemetrySampler::new(Context::default());
        let first = sampler.sample();
        std::thread::sleep(Duration::from_millis(100));
        let second = sampler.sample();
        assert_eq!(second.error, None);
        let (a, b) = (only(&first), only(&second));

        let meminfo = fs::read_to_string("/proc/meminfo").unwrap();
        let total_kb: u64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().strip_suffix("kB"))
            .map(|v| v.trim().parse().unwrap())
            .unwrap();
        assert_eq!(b.memory_total_bytes, total_kb * 1024);
        assert!(b.memory_available_bytes <= b.memory_total_bytes);

        assert_eq!(a.cpu_usage, None);
        let cpu = b.cpu_usage.expect("cpu usage over 100 ms");
        for value in [cpu, b.memory_usage, b.swap_usage, b.disk_usage.unwrap()] {
            assert!((0.0..=100.0).contains(&value), "{value} out of range");
        }
        let interval = b.interval_s.unwrap();
        assert!((0.1..5.0).contains(&interval), "{interval}");
        assert!(b.load_1.unwrap() >= 0.0);
        assert!(b.net_rx_bytes >= a.net_rx_bytes);
        assert!(b.disk_read_bytes >= a.disk_read_bytes);
        assert!(b.net_rx_bytes_per_s.unwrap() >= 0.0);
        assert!(b.disk_write_bytes_per_s.unwrap() >= 0.0);
    }

    proptest! {
        #[test]
        fn parsers_never_panic(text in "\\PC*") {
            let _ = parse_proc_stat_cpu(&text);
            let _ = parse_loadavg(&text);
            let _ = parse_net_dev(&text);
            let _ = parse_diskstats(&text).count();
            let _ = sum_disks(&text, &["sda".to_owned()]);
        }

        #[test]
        fn parsers_never_panic_on_numeric_lines(lines in proptest::collection::vec(
            "(cpu |[a-z]{1,4}[0-9]?:? ?)?( {1,3}-?[0-9]{0,21}(\\.[0-9]{0,3})?){0,22}", 0..8)) {
            let text = lines.join("\n");
            let _ = parse_proc_stat_cpu(&text);
            let _ = parse_loadavg(&text);
            let _ = parse_net_dev(&text);
            let _ = sum_disks(&text, &["sda".to_owned(), "x".to_owned()]);
        }

        #[test]
        fn rates_are_never_negative(
            a in any::<[u64; 6]>(), b in any::<[u64; 6]>(), millis in 0u64..10_000_000,
        ) {
            let sample = |v: [u64; 6]| raw((v[0] >> 2, v[1] >> 2), (v[2], v[3]), (v[4], v[5]));
            let (before, now) = (sample(a), sample(b));
            let m = metrics(&now, Some((&before, Duration::from_millis(millis)))).unwrap();
            for rate in [m.net_rx_bytes_per_s, m.net_tx_bytes_per_s,
                         m.disk_read_bytes_per_s, m.disk_write_bytes_per_s].into_iter().flatten() {
                prop_assert!(rate >= 0.0 && rate.is_finite());
            }
            if let Some(cpu) = m.cpu_usage {
                prop_assert!((0.0..=100.0).contains(&cpu));
            }
        }
    }
}
