//! The report's JSON shape: the system-health daemon's nesting and names, plus the envelope.

use muster_proto::data::{Cpu, Package};
use muster_proto::{
    DaemonReport, FunctionData, FunctionReport, HostIdentity, SCHEMA_VERSION, Worker, WorkerReport,
};
use serde_json::{Value, json};

fn sample() -> DaemonReport {
    let cpu = Cpu {
        model: Some("Intel(R) Xeon(R) Processor".into()),
        vendor: Some("GenuineIntel".into()),
        sockets: 1,
        physical_cores: 2,
        logical_cpus: 4,
        max_mhz: Some(2100.0),
    };
    let package = Package {
        name: "libc6".into(),
        version: "2.36-9+deb12u4".into(),
        architecture: Some("amd64".into()),
        source: "dpkg".into(),
        installed_size_bytes: Some(12_345 * 1024),
        install_time: None,
        publisher: None,
        uninstall_string: None,
    };
    DaemonReport::new(
        HostIdentity {
            hostname: "web-01".into(),
            machine_id: Some("0123abcd".into()),
        },
        vec![
            WorkerReport::new(
                Worker::Hardware,
                vec![
                    FunctionReport::new(FunctionData::Cpu(vec![cpu])),
                    FunctionReport::unavailable("dmi", "no DMI table"),
                ],
            ),
            WorkerReport::new(
                Worker::Software,
                vec![
                    FunctionReport::new(FunctionData::Dpkg(vec![package])),
                    FunctionReport::failed("rpm", "reading /var/lib/rpm: permission denied"),
                ],
            ),
        ],
    )
}

#[test]
fn json_has_the_seed_shape_and_the_envelope() {
    let report = sample();
    let value = serde_json::to_value(&report).unwrap();
    insta::assert_json_snapshot!(value, {
        ".datetime" => "[datetime]",
        ".report_id" => "[report_id]",
        ".worker_reports[].datetime" => "[datetime]",
        ".worker_reports[].function_reports[].datetime" => "[datetime]",
    });
    assert_eq!(value["name"], "Daemon report");
    assert_eq!(value["schema_version"], SCHEMA_VERSION);
    let id = uuid::Uuid::parse_str(value["report_id"].as_str().unwrap()).unwrap();
    assert_eq!(id.get_version_num(), 7, "report ids are UUIDv7");
    let datetime = value["datetime"].as_str().unwrap();
    assert!(
        datetime.ends_with('Z'),
        "datetime is RFC 3339 UTC: {datetime}"
    );
    datetime.parse::<jiff::Timestamp>().unwrap();
}

#[test]
fn round_trips_through_json() {
    let report = sample();
    let text = serde_json::to_string(&report).unwrap();
    let back: DaemonReport = serde_json::from_str(&text).unwrap();
    assert_eq!(back, report);
    assert_eq!(
        back.function("rpm").unwrap().error.as_deref(),
        Some(report_error())
    );
    assert!(back.function("dmi").unwrap().data.is_empty());
}

fn report_error() -> &'static str {
    "reading /var/lib/rpm: permission denied"
}

#[test]
fn unknown_functions_from_newer_agents_are_kept() {
    let value = json!({
        "name": "gpu", "datetime": "2026-01-01T00:00:00Z", "data": [{ "model": "X" }]
    });
    let report: FunctionReport = serde_json::from_value(value.clone()).unwrap();
    assert_eq!(report.name(), "gpu");
    assert_eq!(serde_json::to_value(&report).unwrap(), value);
}

#[test]
fn malformed_items_of_a_known_function_are_rejected_with_its_name() {
    let value = json!({
        "name": "cpu", "datetime": "2026-01-01T00:00:00Z", "data": [{ "model": 5 }]
    });
    let err = serde_json::from_value::<FunctionReport>(value)
        .unwrap_err()
        .to_string();
    assert!(err.contains("function report `cpu`"), "{err}");
}

#[test]
fn missing_data_reads_as_empty() {
    let value = json!({ "name": "users", "datetime": "2026-01-01T00:00:00Z" });
    let report: FunctionReport = serde_json::from_value(value).unwrap();
    assert_eq!(report.data, FunctionData::Users(Vec::new()));
}

#[test]
fn worker_names_parse_and_reject_unknown_ones() {
    for worker in Worker::ALL {
        assert_eq!(worker.as_str().parse::<Worker>().unwrap(), worker);
        assert_eq!(
            serde_json::to_value(worker).unwrap(),
            Value::from(worker.as_str())
        );
    }
    assert!("firmware".parse::<Worker>().is_err());
}

/// The Windows-only fields are left out where a source has none (a Linux report's JSON is as
/// before), and carried when set.
#[test]
fn windows_only_fields_are_absent_unless_set() {
    let mut package = Package {
        name: "7-Zip 23.01 (x64)".into(),
        version: "23.01".into(),
        architecture: Some("x64".into()),
        source: "registry".into(),
        installed_size_bytes: None,
        install_time: None,
        publisher: Some("Igor Pavlov".into()),
        uninstall_string: None,
    };
    let json = serde_json::to_value(&package).unwrap();
    assert!(json.get("uninstall_string").is_none(), "{json}");
    package.uninstall_string = Some(r#""C:\Program Files\7-Zip\Uninstall.exe""#.into());
    let json = serde_json::to_value(&package).unwrap();
    assert_eq!(
        json["uninstall_string"],
        r#""C:\Program Files\7-Zip\Uninstall.exe""#
    );
    assert_eq!(serde_json::from_value::<Package>(json).unwrap(), package);

    let service: muster_proto::data::Service = serde_json::from_value(json!({
        "name": "ssh.service", "load_state": "loaded", "active_state": "active",
        "sub_state": "running", "description": "OpenBSD Secure Shell server"
    }))
    .unwrap();
    assert_eq!(service.display_name, None);
    assert_eq!(service.pid, None);
    let back = serde_json::to_value(&service).unwrap();
    for absent in ["display_name", "start_type", "pid", "binary_path"] {
        assert!(back.get(absent).is_none(), "{back}");
    }
}
