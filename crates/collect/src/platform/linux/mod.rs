//! Linux collectors. Each file reads one area of the system; its parsers are pure `pub fn
//! parse_*(text) -> ...` functions so captured files serve as test fixtures and benchmarks.

pub mod cpu;
pub mod disks;
pub mod dmi;
pub mod filesystems;
pub mod memory;
pub mod network;
pub mod passwd;
pub mod processes;
pub mod services;
pub mod software;
pub mod system;
pub mod telemetry;
pub mod users;

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

static SOFTWARE: [Function; 6] = [
    Function {
        name: "dpkg",
        collect: software::dpkg::collect,
    },
    Function {
        name: "rpm",
        collect: software::rpm::collect,
    },
    Function {
        name: "apk",
        collect: software::apk::collect,
    },
    Function {
        name: "pacman",
        collect: software::pacman::collect,
    },
    Function {
        name: "flatpak",
        collect: software::flatpak::collect,
    },
    Function {
        name: "snap",
        collect: software::snap::collect,
    },
];

static PROCESSES: [Function; 1] = [Function {
    name: "processes",
    collect: processes::collect,
}];

static SERVICES: [Function; 1] = [Function {
    name: "systemd",
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

pub fn host_identity(context: &Context) -> HostIdentity {
    HostIdentity {
        hostname: system::hostname(context).unwrap_or_default(),
        machine_id: system::machine_id(context),
    }
}
