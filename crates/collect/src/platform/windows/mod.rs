//! Windows collectors. The Windows agent issue fills this module in (registry, SCM, SMBIOS,
//! performance counters); until then Windows builds use the `unknown` fallback so the agent
//! compiles and reports what it cannot collect.

#[path = "../unknown/mod.rs"]
mod unknown;

pub use unknown::{TelemetrySampler, functions, host_identity};
