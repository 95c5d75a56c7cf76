//! Stub: being written.

use muster_proto::FunctionReport;

use crate::Context;

#[derive(Debug)]
pub struct TelemetrySampler {
    _context: Context,
}

impl TelemetrySampler {
    pub fn new(context: Context) -> Self {
        Self { _context: context }
    }

    pub fn sample(&mut self) -> FunctionReport {
        FunctionReport::failed("system_metrics", "not implemented yet")
    }
}
