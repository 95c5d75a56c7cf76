//! The `scan` command line: flags, outputs and exit codes.

use muster_proto::DaemonReport;

use crate::{agent, scan_json};

#[test]
fn scan_prints_a_report_of_every_worker_in_order() {
    let report = scan_json(&["--telemetry-interval-ms", "50"]);
    let workers: Vec<&str> = report["worker_reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(
        workers,
        ["hardware", "software", "processes", "services", "telemetry"]
    );
    assert_eq!(report["name"], "Daemon report");
    // The output is the contract's type, not just any JSON.
    let typed: DaemonReport = serde_json::from_value(report).unwrap();
    assert!(!typed.host.hostname.is_empty());
}

#[test]
fn only_restricts_the_workers() {
    let report = scan_json(&["--only", "software,hardware"]);
    let workers: Vec<&str> = report["worker_reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(workers, ["hardware", "software"]);
}

#[test]
fn pretty_indents_and_compact_does_not() {
    let compact = agent(&["scan", "--only", "hardware"]);
    let pretty = agent(&["scan", "--only", "hardware", "--pretty"]);
    assert_eq!(
        String::from_utf8(compact.stdout).unwrap().lines().count(),
        1
    );
    let pretty = String::from_utf8(pretty.stdout).unwrap();
    assert!(pretty.lines().count() > 20);
    assert!(pretty.contains("\n  \"worker_reports\": ["));
}

#[test]
fn output_writes_the_report_to_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("report.json");
    let out = agent(&[
        "scan",
        "--only",
        "hardware",
        "--output",
        path.to_str().unwrap(),
    ]);
    assert!(out.status.success());
    assert!(
        out.stdout.is_empty(),
        "with --output nothing goes to stdout"
    );
    let report: DaemonReport = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    assert_eq!(report.worker_reports.len(), 1);
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
}

#[test]
fn output_to_an_impossible_path_fails_with_the_path() {
    let out = agent(&[
        "scan",
        "--only",
        "hardware",
        "--output",
        "/nonexistent-dir/r.json",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("/nonexistent-dir/r.json"), "{stderr}");
}

#[test]
fn summary_is_short_and_human() {
    let out = agent(&["scan", "--summary", "--telemetry-interval-ms", "50"]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for label in [
        "host",
        "os",
        "cpu",
        "memory",
        "packages",
        "processes",
        "services",
    ] {
        assert!(
            text.lines().any(|l| l.starts_with(label)),
            "summary has a `{label}` line:\n{text}"
        );
    }
    assert!(text.lines().count() < 40, "{text}");
    assert!(!text.contains('{'), "no JSON in the summary");
}

#[test]
fn usage_errors_exit_with_2() {
    for args in [
        &["scan", "--only", "firmware"][..],
        &["scan", "--no-such-flag"],
        &["frobnicate"],
        &[],
    ] {
        let out = agent(args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let out = agent(&["scan", "--only", "firmware"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown worker `firmware`"), "{stderr}");
    assert!(stderr.contains("hardware, software"), "{stderr}");
}

#[test]
#[cfg_attr(
    windows,
    ignore = "a /proc and /sys fixture tree: `scan --root` is read by the Linux collectors"
)]
fn a_broken_source_costs_only_its_own_function_report() {
    // A root whose /proc is empty and whose dpkg status is garbage: collectors fail one by
    // one, the scan still exits 0 with every worker present.
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("proc")).unwrap();
    std::fs::create_dir_all(root.path().join("var/lib/dpkg")).unwrap();
    std::fs::write(
        root.path().join("var/lib/dpkg/status"),
        b"\xff\xfe not a status file",
    )
    .unwrap();
    let out = agent(&[
        "scan",
        "--root",
        root.path().to_str().unwrap(),
        "--only",
        "hardware,software",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: DaemonReport = serde_json::from_slice(&out.stdout).unwrap();
    let memory = report.function("memory").unwrap();
    assert!(
        memory.error.as_deref().unwrap().contains("meminfo"),
        "{memory:?}"
    );
    assert!(report.function("dpkg").unwrap().error.is_some());
    assert!(report.function("cpu").is_some());
}
