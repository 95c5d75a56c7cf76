//! The one place that picks the platform. Each platform module offers the same items:
//! `functions(worker)`, `host_identity(context)` and `TelemetrySampler`.

#[cfg(target_os = "linux")]
pub mod linux;
#[cfg(target_os = "linux")]
pub use linux::{TelemetrySampler, functions, host_identity};

#[cfg(windows)]
mod windows;
#[cfg(windows)]
pub use windows::{TelemetrySampler, functions, host_identity};

#[cfg(not(any(target_os = "linux", windows)))]
mod unknown;
#[cfg(not(any(target_os = "linux", windows)))]
pub use unknown::{TelemetrySampler, functions, host_identity};
