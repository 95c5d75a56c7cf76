//! The fallback for platforms Muster has no collectors for yet: every function reports that
//! it is unavailable, so the scan still produces a well-formed report.

use muster_proto::{FunctionReport, HostIdentity, Worker};

use crate::{Collected, Context, Function};

const REASON: &str = "not supported on this platform";

fn unsupported_system(_: &Context) -> Collected {
    Ok(Some(FunctionReport::unavailable("system", REASON)))
}

fn unsupported_processes(_: &Context) -> Collected {
    Ok(Some(FunctionReport::unavailable("processes", REASON)))
}

static HARDWARE: [Function; 1] = [Function {
    name: "system",
    collect: unsupported_system,
}];
static PROCESSES: [Function; 1] = [Function {
    name: "processes",
    collect: unsupported_processes,
}];

pub fn functions(worker: Worker) -> &'static [Function] {
    match worker {
        Worker::Hardware => &HARDWARE,
        Worker::Processes => &PROCESSES,
        Worker::Software | Worker::Services | Worker::Telemetry => &[],
    }
}

pub fn host_identity(_: &Context) -> HostIdentity {
    HostIdentity {
        hostname: String::new(),
        machine_id: None,
    }
}

/// Telemetry is not sampled on this platform.
#[derive(Debug)]
pub struct TelemetrySampler;

impl TelemetrySampler {
    pub fn new(_: Context) -> Self {
        TelemetrySampler
    }

    pub fn sample(&mut self) -> FunctionReport {
        FunctionReport::unavailable("system_metrics", REASON)
    }
}
