//! `muster-agent scan`: one inventory of this machine, as JSON or as a summary.

use std::io::Write;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use muster_collect::{Context, ScanOptions};
use muster_proto::{DaemonReport, Worker};

use crate::cli::ScanArgs;

pub fn run(args: &ScanArgs) -> anyhow::Result<ExitCode> {
    let report = muster_collect::scan(&options(args));
    let json = to_json(&report, args.pretty)?;
    match &args.output {
        Some(path) => crate::atomic::write(path, json.as_bytes(), None)
            .with_context(|| format!("writing {}", path.display()))?,
        None if !args.summary => write_stdout(json.as_bytes())?,
        None => {}
    }
    if args.summary {
        write_stdout(crate::summary::render(&report).as_bytes())?;
    }
    Ok(ExitCode::SUCCESS)
}

fn options(args: &ScanArgs) -> ScanOptions {
    let mut workers = if args.only.is_empty() {
        Worker::ALL.to_vec()
    } else {
        args.only.clone()
    };
    workers.sort();
    workers.dedup();
    ScanOptions {
        context: Context::new(&args.root),
        workers,
        telemetry_interval: Duration::from_millis(args.telemetry_interval_ms),
        parallel: true,
    }
}

fn to_json(report: &DaemonReport, pretty: bool) -> anyhow::Result<String> {
    let mut json = if pretty {
        serde_json::to_string_pretty(report)
    } else {
        serde_json::to_string(report)
    }
    .context("serializing the report")?;
    json.push('\n');
    Ok(json)
}

fn write_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match out.write_all(bytes).and_then(|()| out.flush()) {
        // `muster-agent scan | head` is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("writing to standard output"),
    }
}
