//! Integration tests of the `muster-agent` binary: real child processes, real files, and the
//! system's own tools as oracles.

mod cli;
mod client;
#[cfg(unix)] // uses run::Setup (Unix-only so far)
mod commands;
mod config;
mod daemon;
mod fake_server;
mod logs;
// Linux's own tools and /proc as oracles; the Windows collectors are tested in muster-collect.
#[cfg(unix)]
mod oracles;
#[cfg(unix)] // signals, /proc and Unix modes throughout
mod run;
mod service;
#[cfg(unix)] // file modes
mod spool;
mod status;
mod winservice;

use std::process::{Command, Output};

/// A finished command's exit status and both its outputs, for assertion messages.
pub fn text(out: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `muster-agent` with `args`.
pub fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_muster-agent"))
        .args(args)
        .output()
        .expect("muster-agent runs")
}

/// Runs `muster-agent scan` with `args`, asserts success and parses the JSON report.
pub fn scan_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["scan"];
    all.extend_from_slice(args);
    let out = agent(&all);
    assert!(
        out.status.success(),
        "scan failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("scan prints one JSON document")
}

/// The `data` items of function `name` in a report, asserting the function ran cleanly.
pub fn function_data<'a>(report: &'a serde_json::Value, name: &str) -> &'a [serde_json::Value] {
    let function = report["worker_reports"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|w| w["function_reports"].as_array().unwrap())
        .find(|f| f["name"] == name)
        .unwrap_or_else(|| panic!("no function report `{name}`"));
    assert!(
        function.get("error").is_none(),
        "{name} failed: {}",
        function["error"]
    );
    function["data"].as_array().unwrap()
}
