//! A whole scan on Windows: every function of every worker reports data or a clean error.

use std::time::Duration;

use muster_collect::ScanOptions;
use muster_proto::{FunctionData, Worker};

use super::is_wine;

#[test]
fn a_whole_scan_reports_every_function() {
    let options = ScanOptions {
        telemetry_interval: Duration::from_millis(200),
        ..ScanOptions::default()
    };
    let report = muster_collect::scan(&options);
    let workers: Vec<Worker> = report.worker_reports.iter().map(|w| w.name).collect();
    assert_eq!(workers, Worker::ALL);
    let names: Vec<&str> = report
        .worker_reports
        .iter()
        .flat_map(|w| w.function_reports.iter().map(|f| f.name()))
        .collect();
    assert_eq!(
        names,
        [
            "system",
            "cpu",
            "memory",
            "disks",
            "filesystems",
            "network",
            "dmi",
            "users",
            "registry",
            "processes",
            "windows_services",
            "system_metrics"
        ]
    );
    // What Wine 8 lacks, each reported as such; everything else must succeed.
    let allowed_to_lack: &[&str] = if is_wine() { &["disks", "dmi"] } else { &[] };
    for function in report
        .worker_reports
        .iter()
        .flat_map(|w| &w.function_reports)
    {
        let name = function.name();
        if allowed_to_lack.contains(&name) {
            assert!(
                !function.data.is_empty()
                    || function.error.is_some()
                    || function.unavailable.is_some(),
                "{function:?}"
            );
            continue;
        }
        assert_eq!(function.error, None, "{name}");
        assert_eq!(function.unavailable, None, "{name}");
        // A fresh Wine prefix has no installed programs and no logged-on WTS session.
        let may_be_empty = name == "users" || (is_wine() && name == "registry");
        if !may_be_empty {
            assert!(!function.data.is_empty(), "{name} has no items");
        }
    }
    assert_eq!(report.host.hostname, {
        let Some(FunctionData::System(s)) = report.function("system").map(|f| &f.data) else {
            panic!()
        };
        s[0].hostname.clone()
    });
    assert!(report.host.machine_id.is_some());
    let Some(FunctionData::SystemMetrics(m)) = report.function("system_metrics").map(|f| &f.data)
    else {
        panic!()
    };
    assert!(
        m[0].cpu_usage.is_some() && m[0].interval_s.is_some(),
        "{m:?}"
    );
    // The report serializes to the contract's JSON.
    serde_json::to_string(&report).unwrap();
}
