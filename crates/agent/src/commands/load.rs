//! How busy the host is, for the load-aware queue: a [`LoadSource`] gives CPU and memory use
//! now; [`LoadMonitor`] averages the samples of the last `load_check_interval` so one spike does
//! not defer a command and one idle moment does not start a batch of them.

use std::collections::VecDeque;
use std::time::Duration;

use jiff::Timestamp;

/// CPU and memory in use, percent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadSample {
    pub cpu: f64,
    pub memory: f64,
}

/// Where load samples come from (the host, or a test's script).
pub trait LoadSource: Send {
    /// The load now; `None` when it cannot be read (the queue then does not defer for load).
    fn sample(&mut self) -> Option<LoadSample>;
}

/// The host's load: CPU use is the busy share of the CPU time since the previous sample,
/// memory use the share of physical memory not available. On Linux (and other non-Windows
/// platforms) through the telemetry collector (`/proc/stat`, `/proc/meminfo`); on Windows from
/// `GetSystemTimes` and `GlobalMemoryStatusEx` ([`windows`]). When the previous sample is
/// older than [`HostLoad::FRESH`] (the queue was idle), CPU use since then says nothing about
/// now: the counters are read twice, [`HostLoad::PRIME`] apart, instead.
#[derive(Debug)]
pub struct HostLoad {
    #[cfg(not(windows))]
    sampler: muster_collect::TelemetrySampler,
    #[cfg(windows)]
    sampler: windows::Counters,
    last: std::time::Instant,
}

impl HostLoad {
    /// The longest gap over which CPU use since the previous sample still counts as "now".
    pub const FRESH: Duration = Duration::from_secs(10);
    /// The gap between the two reads after a longer pause (the agent's thread waits it).
    pub const PRIME: Duration = Duration::from_millis(250);

    pub fn new() -> Self {
        #[cfg(not(windows))]
        let mut sampler = muster_collect::TelemetrySampler::new(muster_collect::Context::default());
        #[cfg(windows)]
        let mut sampler = windows::Counters::default();
        // Primes the CPU counters so the first real sample has a usage.
        sampler.sample();
        HostLoad {
            sampler,
            last: std::time::Instant::now(),
        }
    }

    /// One reading of the counters: the load since the previous one.
    #[cfg(not(windows))]
    fn read(&mut self) -> Option<LoadSample> {
        let report = self.sampler.sample();
        let muster_proto::FunctionData::SystemMetrics(metrics) = report.data else {
            return None;
        };
        let m = metrics.first()?;
        Some(LoadSample {
            cpu: m.cpu_usage?,
            memory: m.memory_usage,
        })
    }

    #[cfg(windows)]
    fn read(&mut self) -> Option<LoadSample> {
        self.sampler.sample()
    }
}

impl Default for HostLoad {
    fn default() -> Self {
        Self::new()
    }
}

impl LoadSource for HostLoad {
    fn sample(&mut self) -> Option<LoadSample> {
        if self.last.elapsed() > Self::FRESH {
            self.read();
            std::thread::sleep(Self::PRIME);
        }
        self.last = std::time::Instant::now();
        self.read()
    }
}

/// The Windows counters.
#[cfg(windows)]
#[allow(unsafe_code)] // Win32 FFI; each block says why it is sound.
pub mod windows {
    use super::LoadSample;

    /// CPU times, in 100 ns units, summed over all processors.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct CpuTimes {
        pub idle: u64,
        /// Kernel time, idle time included (as `GetSystemTimes` counts it).
        pub kernel: u64,
        pub user: u64,
    }

    /// The busy share of the CPU time between two readings, percent; `None` when no time
    /// passed (or the counters went backwards).
    pub fn cpu_usage(before: CpuTimes, now: CpuTimes) -> Option<f64> {
        let idle = now.idle.checked_sub(before.idle)?;
        let total = (now.kernel.checked_sub(before.kernel)?)
            .checked_add(now.user.checked_sub(before.user)?)?;
        if total == 0 {
            return None;
        }
        let busy = total.saturating_sub(idle);
        Some((busy as f64 * 100.0 / total as f64).clamp(0.0, 100.0))
    }

    /// The CPU times now.
    pub fn cpu_times() -> std::io::Result<CpuTimes> {
        use windows_sys::Win32::Foundation::FILETIME;
        use windows_sys::Win32::System::Threading::GetSystemTimes;

        let zero = FILETIME {
            dwLowDateTime: 0,
            dwHighDateTime: 0,
        };
        let (mut idle, mut kernel, mut user) = (zero, zero, zero);
        // SAFETY: three valid FILETIME out-pointers for the duration of the call.
        let ok = unsafe { GetSystemTimes(&raw mut idle, &raw mut kernel, &raw mut user) };
        if ok == 0 {
            return Err(std::io::Error::last_os_error());
        }
        let t = |f: FILETIME| (u64::from(f.dwHighDateTime) << 32) | u64::from(f.dwLowDateTime);
        Ok(CpuTimes {
            idle: t(idle),
            kernel: t(kernel),
            user: t(user),
        })
    }

    /// Physical memory in use (not available), percent.
    pub fn memory_usage() -> std::io::Result<f64> {
        use windows_sys::Win32::System::SystemInformation::{GlobalMemoryStatusEx, MEMORYSTATUSEX};

        // SAFETY: an all-zero MEMORYSTATUSEX is valid once dwLength is set.
        let mut status: MEMORYSTATUSEX = unsafe { std::mem::zeroed() };
        status.dwLength = size_of::<MEMORYSTATUSEX>() as u32;
        // SAFETY: `status` is a MEMORYSTATUSEX with its length set.
        if unsafe { GlobalMemoryStatusEx(&raw mut status) } == 0 {
            return Err(std::io::Error::last_os_error());
        }
        if status.ullTotalPhys == 0 {
            return Err(std::io::Error::other("no physical memory reported"));
        }
        let used = status.ullTotalPhys.saturating_sub(status.ullAvailPhys);
        Ok(used as f64 * 100.0 / status.ullTotalPhys as f64)
    }

    /// The previous CPU reading, for the next usage.
    #[derive(Debug, Default)]
    pub struct Counters {
        last: Option<CpuTimes>,
    }

    impl Counters {
        /// The load since the previous call (`None` the first time, or when a counter
        /// cannot be read).
        pub fn sample(&mut self) -> Option<LoadSample> {
            let now = match cpu_times() {
                Ok(now) => now,
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the CPU times");
                    return None;
                }
            };
            let before = self.last.replace(now)?;
            let cpu = cpu_usage(before, now)?;
            match memory_usage() {
                Ok(memory) => Some(LoadSample { cpu, memory }),
                Err(e) => {
                    tracing::debug!(error = %e, "cannot read the memory status");
                    None
                }
            }
        }
    }
}

/// The samples of the last `window`, averaged.
#[derive(Debug)]
pub struct LoadMonitor {
    window: Duration,
    samples: VecDeque<(Timestamp, LoadSample)>,
}

/// Samples kept at most, whatever the window: the queue samples a few times per window.
const MAX_SAMPLES: usize = 64;

impl LoadMonitor {
    pub fn new(window: Duration) -> Self {
        LoadMonitor {
            window,
            samples: VecDeque::new(),
        }
    }

    /// How often a sample should be taken: six per window, at least one a second.
    pub fn sample_every(&self) -> Duration {
        (self.window / 6).max(Duration::from_secs(1))
    }

    /// Whether the newest sample is older than [`LoadMonitor::sample_every`] at `now`.
    pub fn wants_sample(&self, now: Timestamp) -> bool {
        match self.samples.back() {
            None => true,
            Some((at, _)) => {
                let age = now.duration_since(*at);
                age.is_negative() || age.unsigned_abs() >= self.sample_every()
            }
        }
    }

    pub fn observe(&mut self, now: Timestamp, sample: LoadSample) {
        self.samples.push_back((now, sample));
        while self.samples.len() > MAX_SAMPLES {
            self.samples.pop_front();
        }
        self.trim(now);
    }

    fn trim(&mut self, now: Timestamp) {
        let window =
            jiff::SignedDuration::try_from(self.window).unwrap_or(jiff::SignedDuration::MAX);
        while let Some((at, _)) = self.samples.front() {
            // Keep the newest sample whatever its age: it is the best there is.
            if self.samples.len() > 1 && now.duration_since(*at) > window {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// The mean of the samples in the window, if there is any.
    pub fn smoothed(&self) -> Option<LoadSample> {
        if self.samples.is_empty() {
            return None;
        }
        let n = self.samples.len() as f64;
        let (cpu, memory) = self
            .samples
            .iter()
            .fold((0.0, 0.0), |(c, m), (_, s)| (c + s.cpu, m + s.memory));
        Some(LoadSample {
            cpu: cpu / n,
            memory: memory / n,
        })
    }

    /// Why a command of priority 2..5 must wait now, e.g. `cpu 91% > 75%`; `None` when it
    /// need not.
    pub fn over(&self, cpu_threshold: f64, memory_threshold: f64) -> Option<String> {
        let load = self.smoothed()?;
        let mut reasons = Vec::new();
        if load.cpu > cpu_threshold {
            reasons.push(format!("cpu {:.0}% > {cpu_threshold}%", load.cpu));
        }
        if load.memory > memory_threshold {
            reasons.push(format!("memory {:.0}% > {memory_threshold}%", load.memory));
        }
        (!reasons.is_empty()).then(|| reasons.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn load(cpu: f64, memory: f64) -> LoadSample {
        LoadSample { cpu, memory }
    }

    #[test]
    fn load_is_averaged_over_the_window_and_old_samples_leave_it() {
        let mut m = LoadMonitor::new(Duration::from_secs(30));
        m.observe(at(0), load(100.0, 10.0));
        m.observe(at(10), load(50.0, 10.0));
        m.observe(at(20), load(60.0, 10.0));
        assert_eq!(m.smoothed().unwrap().cpu, 70.0);
        assert_eq!(m.over(75.0, 75.0), None, "one spike does not defer");
        m.observe(at(40), load(90.0, 80.0));
        // The sample at 0 s is more than 30 s old at 40 s.
        assert_eq!(m.smoothed().unwrap().cpu, (50.0 + 60.0 + 90.0) / 3.0);
        m.observe(at(45), load(100.0, 90.0));
        assert_eq!(
            m.over(60.0, 45.0).as_deref(),
            Some("cpu 83% > 60%, memory 60% > 45%")
        );
    }

    #[test]
    fn samples_are_wanted_a_few_times_per_window() {
        let mut m = LoadMonitor::new(Duration::from_secs(30));
        assert!(m.wants_sample(at(0)));
        m.observe(at(0), load(1.0, 1.0));
        assert!(!m.wants_sample(at(4)));
        assert!(m.wants_sample(at(5)));
    }

    #[test]
    fn the_host_source_reads_plausible_percentages() {
        let mut host = HostLoad::new();
        std::thread::sleep(Duration::from_millis(50));
        let sample = host.sample();
        if cfg!(any(target_os = "linux", windows)) {
            let s = sample.expect("linux has /proc/stat and /proc/meminfo, Windows its counters");
            assert!((0.0..=100.0).contains(&s.cpu), "{s:?}");
            assert!(s.memory > 0.0 && s.memory <= 100.0, "{s:?}");
        }
    }

    /// Under Wine too the counters move: CPU time passes, memory is in use. A busy thread
    /// shows as CPU use.
    #[cfg(windows)]
    #[test]
    fn the_windows_counters_are_sane_and_see_a_busy_thread() {
        use super::windows::{CpuTimes, cpu_times, cpu_usage, memory_usage};

        let t = |idle, kernel, user| CpuTimes { idle, kernel, user };
        assert_eq!(cpu_usage(t(0, 100, 100), t(50, 200, 200)), Some(75.0));
        assert_eq!(
            cpu_usage(t(0, 100, 100), t(0, 100, 100)),
            None,
            "no time passed"
        );
        assert_eq!(
            cpu_usage(t(10, 100, 100), t(0, 200, 200)),
            None,
            "backwards"
        );
        let before = cpu_times().unwrap();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let spin = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            })
        };
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        spin.join().unwrap();
        let now = cpu_times().unwrap();
        assert!(
            now.kernel + now.user > before.kernel + before.user,
            "{before:?} {now:?}"
        );
        let cpu = cpu_usage(before, now).unwrap();
        // One spinning thread of `n` processors, the rest of the machine as it is.
        let n = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
        assert!(
            cpu >= 100.0 / n / 3.0 && cpu <= 100.0,
            "cpu {cpu}% with {n} processors"
        );
        let memory = memory_usage().unwrap();
        assert!(memory > 0.0 && memory < 100.0, "memory {memory}%");
    }
}
