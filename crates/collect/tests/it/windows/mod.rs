//! The Windows collectors against the Windows they run on: Wine here (with the host's
//! disks, adapters and processes behind it), a real Windows machine elsewhere. Each test
//! makes the thing it looks for (registry entries, a child process, a service) or compares
//! with what a Windows tool of its own reports.

mod hardware;
mod processes;
mod scan;
mod services;
mod software;

use std::process::Command;

use muster_collect::{Context, run_function};
use muster_proto::{FunctionReport, Worker};

/// One collector's report, run as a scan runs it.
pub fn report(worker: Worker, name: &str) -> FunctionReport {
    let function = muster_collect::functions(worker)
        .iter()
        .find(|f| f.name == name)
        .unwrap_or_else(|| panic!("no function {name} in {worker:?}"));
    run_function(function, &Context::default()).expect("Windows has every source")
}

/// A Windows command's standard output (it must succeed).
pub fn output(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {program}: {e}"));
    assert!(out.status.success(), "{program} {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

pub fn is_wine() -> bool {
    muster_collect::platform::windows::win::is_wine()
}
