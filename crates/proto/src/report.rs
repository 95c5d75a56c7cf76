//! The report model: the system-health daemon's three nested reports plus Muster's envelope.
//!
//! ```json
//! { "name": "Daemon report", "datetime": "...", "worker_reports": [
//!     { "name": "hardware", "datetime": "...", "function_reports": [
//!         { "name": "cpu", "datetime": "...", "data": [ { ... } ] } ] } ],
//!   "report_id": "...", "schema_version": 1, "host": { ... } }
//! ```

use std::borrow::Cow;
use std::fmt;

use jiff::Timestamp;
use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::de::Error as _;
use serde::ser::SerializeMap;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use uuid::Uuid;

use crate::data::*;

/// Version of the report's shape. Bumped only for changes an older reader cannot ignore.
pub const SCHEMA_VERSION: u32 = 1;

/// The `name` of every daemon report, as the system-health daemon writes it.
pub const DAEMON_REPORT_NAME: &str = "Daemon report";

/// One scan of a host: the worker reports plus the envelope that makes delivery idempotent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct DaemonReport {
    /// Always `"Daemon report"`.
    pub name: String,
    /// When the report was composed (RFC 3339, UTC).
    pub datetime: Timestamp,
    pub worker_reports: Vec<WorkerReport>,
    /// A UUIDv7, unique per report; the server stores a report once per id.
    pub report_id: Uuid,
    pub schema_version: u32,
    /// The id the server gave this agent at enrolment; absent before enrolment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<String>,
    pub host: HostIdentity,
}

impl DaemonReport {
    /// A new report stamped now, with a fresh UUIDv7.
    pub fn new(host: HostIdentity, worker_reports: Vec<WorkerReport>) -> Self {
        Self {
            name: DAEMON_REPORT_NAME.to_owned(),
            datetime: Timestamp::now(),
            worker_reports,
            report_id: Uuid::now_v7(),
            schema_version: SCHEMA_VERSION,
            agent_id: None,
            host,
        }
    }

    /// The worker report of this kind, if the scan ran it.
    pub fn worker(&self, worker: Worker) -> Option<&WorkerReport> {
        self.worker_reports.iter().find(|w| w.name == worker)
    }

    /// The function report of this name in any worker.
    pub fn function(&self, name: &str) -> Option<&FunctionReport> {
        self.worker_reports.iter().find_map(|w| w.function(name))
    }
}

/// Who sent a report, independent of enrolment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct HostIdentity {
    pub hostname: String,
    pub machine_id: Option<String>,
}

/// The five workers. Their names are part of the report contract.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum Worker {
    Hardware,
    Software,
    Processes,
    Services,
    Telemetry,
}

impl Worker {
    /// Every worker, in report order.
    pub const ALL: [Worker; 5] = [
        Worker::Hardware,
        Worker::Software,
        Worker::Processes,
        Worker::Services,
        Worker::Telemetry,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Worker::Hardware => "hardware",
            Worker::Software => "software",
            Worker::Processes => "processes",
            Worker::Services => "services",
            Worker::Telemetry => "telemetry",
        }
    }
}

impl fmt::Display for Worker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Worker {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Worker::ALL
            .into_iter()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| format!("unknown worker `{s}`"))
    }
}

/// The function reports of one worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct WorkerReport {
    pub name: Worker,
    pub datetime: Timestamp,
    pub function_reports: Vec<FunctionReport>,
}

impl WorkerReport {
    pub fn new(name: Worker, function_reports: Vec<FunctionReport>) -> Self {
        Self {
            name,
            datetime: Timestamp::now(),
            function_reports,
        }
    }

    pub fn function(&self, name: &str) -> Option<&FunctionReport> {
        self.function_reports.iter().find(|f| f.data.name() == name)
    }
}

/// One collector's output: `{ name, datetime, data: [...] }`, plus `error` when the
/// collector failed and `unavailable` when its source does not exist on this host (no DMI
/// table, systemd not running). Either way `data` is then empty or partial and the scan goes on.
#[derive(Debug, Clone, PartialEq)]
pub struct FunctionReport {
    pub datetime: Timestamp,
    /// The function's name and its typed items.
    pub data: FunctionData,
    pub error: Option<String>,
    pub unavailable: Option<String>,
}

impl FunctionReport {
    pub fn new(data: FunctionData) -> Self {
        Self {
            datetime: Timestamp::now(),
            data,
            error: None,
            unavailable: None,
        }
    }

    /// The report of a collector that failed: no items, the error's message.
    pub fn failed(name: &str, error: impl fmt::Display) -> Self {
        Self {
            error: Some(error.to_string()),
            ..Self::new(FunctionData::empty(name))
        }
    }

    /// The report of a collector whose source this host does not have.
    pub fn unavailable(name: &str, reason: impl fmt::Display) -> Self {
        Self {
            unavailable: Some(reason.to_string()),
            ..Self::new(FunctionData::empty(name))
        }
    }

    pub fn name(&self) -> &str {
        self.data.name()
    }
}

/// Declares the function names, their `FunctionData` variants and item types once; the enum,
/// name lookup, (de)serialization and JSON Schema all come from this table.
macro_rules! functions {
    ($( $(#[$doc:meta])* $variant:ident => $name:literal : $ty:ty, )*) => {
        /// The items of a function report, typed by the function's name.
        #[derive(Debug, Clone, PartialEq)]
        pub enum FunctionData {
            $( $(#[$doc])* $variant(Vec<$ty>), )*
            /// A function this version does not know (sent by a newer agent), kept as JSON.
            Other { name: String, data: Vec<serde_json::Value> },
        }

        impl FunctionData {
            /// Every function name this version knows.
            pub const NAMES: &'static [&'static str] = &[$($name),*];

            pub fn name(&self) -> &str {
                match self {
                    $( Self::$variant(_) => $name, )*
                    Self::Other { name, .. } => name,
                }
            }

            /// Number of items.
            pub fn len(&self) -> usize {
                match self {
                    $( Self::$variant(items) => items.len(), )*
                    Self::Other { data, .. } => data.len(),
                }
            }

            pub fn is_empty(&self) -> bool {
                self.len() == 0
            }

            /// The function `name` with no items.
            pub fn empty(name: &str) -> Self {
                match name {
                    $( $name => Self::$variant(Vec::new()), )*
                    other => Self::Other { name: other.to_owned(), data: Vec::new() },
                }
            }

            fn serialize_items<M: SerializeMap>(&self, map: &mut M) -> Result<(), M::Error> {
                match self {
                    $( Self::$variant(items) => map.serialize_entry("data", items), )*
                    Self::Other { data, .. } => map.serialize_entry("data", data),
                }
            }

            fn from_json(name: String, data: serde_json::Value) -> serde_json::Result<Self> {
                let data = if data.is_null() { serde_json::Value::Array(Vec::new()) } else { data };
                Ok(match name.as_str() {
                    $( $name => Self::$variant(serde_json::from_value(data)?), )*
                    _ => Self::Other { name, data: serde_json::from_value(data)? },
                })
            }

            fn variant_schemas(generator: &mut SchemaGenerator) -> Vec<Schema> {
                vec![$(
                    json_schema!({
                        "properties": {
                            "name": { "const": $name },
                            "data": generator.subschema_for::<Vec<$ty>>(),
                        }
                    }),
                )*]
            }
        }
    };
}

functions! {
    System => "system": SystemInfo,
    Cpu => "cpu": Cpu,
    Memory => "memory": Memory,
    Disks => "disks": Disk,
    Filesystems => "filesystems": Filesystem,
    Network => "network": NetworkInterface,
    Dmi => "dmi": Dmi,
    Users => "users": UserSession,
    Dpkg => "dpkg": Package,
    Rpm => "rpm": Package,
    Apk => "apk": Package,
    Pacman => "pacman": Package,
    Flatpak => "flatpak": Package,
    Snap => "snap": Package,
    /// Windows: the Uninstall keys of the registry.
    Registry => "registry": Package,
    Processes => "processes": Process,
    Systemd => "systemd": Service,
    WindowsServices => "windows_services": Service,
    SystemMetrics => "system_metrics": SystemMetrics,
}

impl Serialize for FunctionReport {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let len = 3 + usize::from(self.error.is_some()) + usize::from(self.unavailable.is_some());
        let mut map = serializer.serialize_map(Some(len))?;
        map.serialize_entry("name", self.data.name())?;
        map.serialize_entry("datetime", &self.datetime)?;
        self.data.serialize_items(&mut map)?;
        if let Some(error) = &self.error {
            map.serialize_entry("error", error)?;
        }
        if let Some(reason) = &self.unavailable {
            map.serialize_entry("unavailable", reason)?;
        }
        map.end()
    }
}

impl<'de> Deserialize<'de> for FunctionReport {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        struct Raw {
            name: String,
            datetime: Timestamp,
            #[serde(default)]
            data: serde_json::Value,
            #[serde(default)]
            error: Option<String>,
            #[serde(default)]
            unavailable: Option<String>,
        }
        let raw = Raw::deserialize(deserializer)?;
        let name = raw.name.clone();
        let data = FunctionData::from_json(raw.name, raw.data)
            .map_err(|e| D::Error::custom(format_args!("function report `{name}`: {e}")))?;
        Ok(Self {
            datetime: raw.datetime,
            data,
            error: raw.error,
            unavailable: raw.unavailable,
        })
    }
}

impl JsonSchema for FunctionReport {
    fn schema_name() -> Cow<'static, str> {
        "FunctionReport".into()
    }

    fn json_schema(generator: &mut SchemaGenerator) -> Schema {
        let datetime = generator.subschema_for::<Timestamp>();
        let variants = FunctionData::variant_schemas(generator);
        json_schema!({
            "description": "One collector's output. `name` selects the type of the `data` items.",
            "type": "object",
            "required": ["name", "datetime", "data"],
            "properties": {
                "name": { "type": "string" },
                "datetime": datetime,
                "data": { "type": "array" },
                "error": {
                    "description": "Why the collector failed; `data` is then empty or partial.",
                    "type": "string"
                },
                "unavailable": {
                    "description": "Why this host has no such source (no DMI table, no systemd).",
                    "type": "string"
                }
            },
            "oneOf": variants
        })
    }
}
