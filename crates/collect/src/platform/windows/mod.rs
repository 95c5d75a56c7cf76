//! Windows collectors. Each file reads one area of the system through the Win32 API
//! (`windows-sys`) or the registry (`winreg`); what is parsed from raw bytes (the SMBIOS
//! table, processor records, storage descriptors, command lines) is a pure `pub fn parse_*`
//! so it is tested without the API. The report names and shapes are Linux's (DESIGN.md);
//! a collector that fails reports its error and the scan goes on.
//!
//! The context's root means nothing here: Windows is read through APIs, not files.

pub mod cpu;
pub mod disks;
pub mod dmi;
pub mod filesystems;
pub mod memory;
pub mod network;
pub mod processes;
pub mod services;
pub mod software;
pub mod system;
pub mod telemetry;
pub mod users;
pub mod win;

use muster_proto::{HostIdentity, Worker};

use crate::{Context, Function};

pub use telemetry::TelemetrySampler;

static HARDWARE: [Function; 8] = [
    Function {
        name: "system",
        collect: system::collect,
    },
    Function {
        name: "cpu",
        collect: cpu::collect,
    },
    Function {
        name: "memory",
        collect: memory::collect,
    },
    Function {
        name: "disks",
        collect: disks::collect,
    },
    Function {
        name: "filesystems",
        collect: filesystems::collect,
    },
    Function {
        name: "network",
        collect: network::collect,
    },
    Function {
        name: "dmi",
        collect: dmi::collect,
    },
    Function {
        name: "users",
        collect: users::collect,
    },
];

static SOFTWARE: [Function; 1] = [Function {
    name: "registry",
    collect: software::registry::collect,
}];

static PROCESSES: [Function; 1] = [Function {
    name: "processes",
    collect: processes::collect,
}];

static SERVICES: [Function; 1] = [Function {
    name: "windows_services",
    collect: services::collect,
}];

pub fn functions(worker: Worker) -> &'static [Function] {
    match worker {
        Worker::Hardware => &HARDWARE,
        Worker::Software => &SOFTWARE,
        Worker::Processes => &PROCESSES,
        Worker::Services => &SERVICES,
        Worker::Telemetry => &[],
    }
}

pub fn host_identity(_: &Context) -> HostIdentity {
    HostIdentity {
        hostname: system::hostname().unwrap_or_default(),
        machine_id: system::machine_id(),
    }
}
