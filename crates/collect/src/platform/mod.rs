//! The one place that picks the platform. Each platform module offers the same items:
//! `functions(worker)`, `host_identity(context)` and `TelemetrySampler`.

// Pure pieces both real platforms use.
#[cfg(any(target_os = "linux", windows))]
mod dmi_strings;
#[cfg(any(target_os = "linux", windows))]
mod virt;

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
