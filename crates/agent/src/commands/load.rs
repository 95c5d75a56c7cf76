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

/// The host's load through the telemetry collector (`/proc/stat` and `/proc/meminfo` on
/// Linux): CPU use is the busy share of the ticks since the previous sample. When that sample
/// is older than [`HostLoad::FRESH`] (the queue was idle), CPU use since then says nothing
/// about now: the counters are read twice, [`HostLoad::PRIME`] apart, instead.
#[derive(Debug)]
pub struct HostLoad {
    sampler: muster_collect::TelemetrySampler,
    last: std::time::Instant,
}

impl HostLoad {
    /// The longest gap over which CPU use since the previous sample still counts as "now".
    pub const FRESH: Duration = Duration::from_secs(10);
    /// The gap between the two reads after a longer pause (the agent's thread waits it).
    pub const PRIME: Duration = Duration::from_millis(250);

    pub fn new() -> Self {
        let mut sampler = muster_collect::TelemetrySampler::new(muster_collect::Context::default());
        // Primes the CPU counters so the first real sample has a usage.
        sampler.sample();
        HostLoad {
            sampler,
            last: std::time::Instant::now(),
        }
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
            self.sampler.sample();
            std::thread::sleep(Self::PRIME);
        }
        self.last = std::time::Instant::now();
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
        if cfg!(target_os = "linux") {
            let s = sample.expect("linux always has /proc/stat and /proc/meminfo");
            assert!((0.0..=100.0).contains(&s.cpu), "{s:?}");
            assert!((0.0..=100.0).contains(&s.memory), "{s:?}");
        }
    }
}
