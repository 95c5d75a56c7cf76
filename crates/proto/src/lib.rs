//! Muster's wire types.
//!
//! This crate is the only place whose types cross the network: the report an agent sends
//! (`DaemonReport` → `WorkerReport` → `FunctionReport`, the system-health daemon's shape), the
//! agent API's requests and responses (`api`), and the inventory hashes both sides compute
//! (`inventory`). It does no I/O and depends on nothing heavy, so the agent, the server and
//! third-party clients can all use it.
//!
//! The names here are a contract: worker names, function names and data fields are read by
//! other tools. Add fields, never rename them; bump [`SCHEMA_VERSION`] on a breaking change.

pub mod api;
pub mod data;
pub mod inventory;
pub mod report;

pub use report::{
    DAEMON_REPORT_NAME, DaemonReport, FunctionData, FunctionReport, HostIdentity, SCHEMA_VERSION,
    Worker, WorkerReport,
};

/// The JSON Schema of [`DaemonReport`], as checked in at `docs/report.schema.json`.
pub fn report_schema() -> serde_json::Value {
    let schema = schemars::schema_for!(DaemonReport);
    serde_json::to_value(schema).expect("a schema always serializes")
}
