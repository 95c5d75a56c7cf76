//! Integration tests of `muster_collect::scan` through its public surface.

// The fixture-tree scan is of Linux's collectors (`/proc`, `/sys` under a root); Windows reads
// APIs, not files, and has its own tests against what Wine's Windows reports.
#[cfg(target_os = "linux")]
mod scan;
#[cfg(windows)]
mod windows;
