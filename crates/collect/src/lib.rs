//! Muster's collectors.
//!
//! A scan runs the collectors of the chosen workers and assembles their function reports into
//! a [`DaemonReport`]. Each collector is isolated: an error or even a panic becomes that
//! function report's `error`, and the scan goes on.
//!
//! Platform code lives in `platform/{linux,windows,unknown}`; one `cfg` switch in
//! `platform/mod.rs` picks it. Parsers there are pure functions over text so captured files are
//! the test fixtures, and every file is read through a [`Context`] that can point at a fixture
//! tree instead of `/`.

mod context;
mod error;
pub mod platform;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::time::{Duration, Instant};

use muster_proto::{DaemonReport, FunctionReport, HostIdentity, Worker, WorkerReport};

pub use context::Context;
pub use error::CollectError;
pub use platform::TelemetrySampler;

/// What one collector returns: its report, or `None` when the source does not exist on this
/// host (a package manager that is not installed), in which case the report leaves it out.
pub type Collected = Result<Option<FunctionReport>, CollectError>;

/// One collector: the function report it produces and how.
#[derive(Debug, Clone, Copy)]
pub struct Function {
    pub name: &'static str,
    pub collect: fn(&Context) -> Collected,
}

/// What to scan, and where from.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    pub context: Context,
    /// The workers to run, reported in [`Worker::ALL`] order whatever the order here.
    pub workers: Vec<Worker>,
    /// The shortest time between the two samples telemetry rates are computed from. The
    /// other workers run meanwhile, so this bounds the scan's wall time only when telemetry is
    /// asked for.
    pub telemetry_interval: Duration,
    /// Run the workers on threads of their own (lower wall time, for a one-shot scan) or one
    /// after the other on the calling thread (a daemon: no per-thread allocator arenas left
    /// holding memory after the scan).
    pub parallel: bool,
}

impl Default for ScanOptions {
    fn default() -> Self {
        Self {
            context: Context::default(),
            workers: Worker::ALL.to_vec(),
            telemetry_interval: Duration::from_millis(250),
            parallel: true,
        }
    }
}

/// The collectors of `worker` on this platform (telemetry is sampled by [`TelemetrySampler`]).
pub fn functions(worker: Worker) -> &'static [Function] {
    platform::functions(worker)
}

/// The host's name and machine id, for a report's envelope.
pub fn host_identity(context: &Context) -> HostIdentity {
    platform::host_identity(context)
}

/// Runs one collector, turning its error or panic into the function report's `error`.
pub fn run_function(function: &Function, context: &Context) -> Option<FunctionReport> {
    match catch_unwind(AssertUnwindSafe(|| (function.collect)(context))) {
        Ok(Ok(report)) => report,
        Ok(Err(e)) => Some(FunctionReport::failed(function.name, e)),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Some(FunctionReport::failed(
                function.name,
                format_args!("collector panicked: {what}"),
            ))
        }
    }
}

/// Runs every collector of one worker (not telemetry) in order.
pub fn collect_worker(worker: Worker, context: &Context) -> WorkerReport {
    let reports = functions(worker)
        .iter()
        .filter_map(|f| run_function(f, context))
        .collect();
    WorkerReport::new(worker, reports)
}

/// Runs a whole scan. Workers run on their own threads (or in turn, see
/// [`ScanOptions::parallel`]); telemetry takes its first sample
/// before they start and its second once they are done and `telemetry_interval` has passed.
pub fn scan(options: &ScanOptions) -> DaemonReport {
    let context = &options.context;
    let wants = |w: Worker| options.workers.contains(&w);
    let started = Instant::now();
    let mut sampler = wants(Worker::Telemetry).then(|| {
        let mut sampler = TelemetrySampler::new(context.clone());
        sampler.sample();
        sampler
    });

    let inventory = Worker::ALL
        .into_iter()
        .filter(|&w| w != Worker::Telemetry && wants(w));
    let mut workers: Vec<WorkerReport> = if options.parallel {
        std::thread::scope(|scope| {
            let handles: Vec<_> = inventory
                .map(|w| (w, scope.spawn(move || collect_worker(w, context))))
                .collect();
            handles
                .into_iter()
                .map(|(w, handle)| {
                    // Collectors catch their own panics, so a worker thread cannot die;
                    // should it anyway, the report still names the worker.
                    handle
                        .join()
                        .unwrap_or_else(|_| WorkerReport::new(w, Vec::new()))
                })
                .collect()
        })
    } else {
        inventory.map(|w| collect_worker(w, context)).collect()
    };

    if let Some(sampler) = sampler.as_mut() {
        if let Some(rest) = options.telemetry_interval.checked_sub(started.elapsed()) {
            std::thread::sleep(rest);
        }
        workers.push(WorkerReport::new(Worker::Telemetry, vec![sampler.sample()]));
    }
    DaemonReport::new(host_identity(context), workers)
}
