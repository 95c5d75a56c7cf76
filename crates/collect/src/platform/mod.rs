//! The one place that picks the platform. Each platform module offers the same items:
//! `functions(worker)`, `host_identity(context)` and `TelemetrySampler`.

// Pure pieces both real platforms use.
#[cfg(any(target_os = "linux", windows))]
mod dmi_strings;
#[cfg(any(target_os = "linux", windows))]
mod virt;

/// The telemetry function's report on both real platforms: the sample, with what could not
/// be read beside it, or only what went wrong when there is no sample.
#[cfg(any(target_os = "linux", windows))]
fn metrics_report(
    metrics: Option<muster_proto::data::SystemMetrics>,
    problems: &[String],
) -> muster_proto::FunctionReport {
    use muster_proto::{FunctionData, FunctionReport};
    let problems = (!problems.is_empty()).then(|| problems.join("; "));
    match metrics {
        Some(metrics) => {
            let mut report = FunctionReport::new(FunctionData::SystemMetrics(vec![metrics]));
            report.error = problems;
            report
        }
        None => FunctionReport::failed("system_metrics", problems.unwrap_or_default()),
    }
}

/// `part` as a percentage of `whole`; 0 when `whole` is.
#[cfg(any(target_os = "linux", windows))]
fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 / whole as f64 * 100.0
    }
}

/// A counter's growth per second between two readings `seconds` apart. `None` without both
/// readings and the time between them, or when the counter went down (wrapped, reset, or
/// summed over a device that went away): no rate rather than a negative one.
#[cfg(any(target_os = "linux", windows))]
fn counter_rate(now: Option<u64>, then: Option<u64>, seconds: Option<f64>) -> Option<f64> {
    Some(now?.checked_sub(then?)? as f64 / seconds?)
}

#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "linux")]
pub use linux::{TelemetrySampler, functions, host_identity};

// The Win32 API is FFI: this tree is where the workspace lets `unsafe` in, each block with
// its `// SAFETY:` reason.
#[cfg(windows)]
#[allow(unsafe_code)]
pub mod windows;
#[cfg(windows)]
pub use windows::{TelemetrySampler, functions, host_identity};

#[cfg(not(any(target_os = "linux", windows)))]
mod unknown;
#[cfg(not(any(target_os = "linux", windows)))]
pub use unknown::{TelemetrySampler, functions, host_identity};
