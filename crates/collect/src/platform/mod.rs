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
