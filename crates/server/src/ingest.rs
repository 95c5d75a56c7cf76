//! Turning what agents send into what the store keeps. Pure functions, no I/O: applying a
//! delta to the stored inventory, pulling telemetry samples out of a report, and reading the
//! seed agent's flat system report into the same `DaemonReport` shape.

use jiff::Timestamp;
use muster_proto::data::SystemMetrics;
use muster_proto::{
    DaemonReport, FunctionData, FunctionReport, HostIdentity, Worker, WorkerReport,
};
use serde_json::{Map, Value};
use uuid::Uuid;

use crate::error::ApiError;
use crate::store::MetricsRow;

/// Applies a delta upload to the inventory it was based on: `delta`'s function reports replace
/// (or join) those of the same worker and name, and `removed` entries — `worker/function`, or a
/// bare function name for every worker — leave. The envelope is the delta's.
pub fn apply_delta(
    mut base: DaemonReport,
    delta: DaemonReport,
    removed: &[String],
) -> DaemonReport {
    for entry in removed {
        let (worker, function) = match entry.split_once('/') {
            Some((w, f)) => (w.parse::<Worker>().ok(), f),
            None => (None, entry.as_str()),
        };
        for w in &mut base.worker_reports {
            if worker.is_none_or(|only| only == w.name) {
                w.function_reports.retain(|f| f.name() != function);
            }
        }
    }
    for changed in delta.worker_reports {
        let index = match base
            .worker_reports
            .iter()
            .position(|w| w.name == changed.name)
        {
            Some(i) => i,
            None => {
                base.worker_reports.push(WorkerReport {
                    function_reports: Vec::new(),
                    ..changed.clone()
                });
                base.worker_reports.len() - 1
            }
        };
        let worker = &mut base.worker_reports[index];
        worker.datetime = changed.datetime;
        for function in changed.function_reports {
            match worker
                .function_reports
                .iter_mut()
                .find(|f| f.name() == function.name())
            {
                Some(slot) => *slot = function,
                None => worker.function_reports.push(function),
            }
        }
    }
    base.worker_reports
        .retain(|w| !w.function_reports.is_empty());
    base.name = delta.name;
    base.datetime = delta.datetime;
    base.report_id = delta.report_id;
    base.schema_version = delta.schema_version;
    base.agent_id = delta.agent_id;
    base.host = delta.host;
    base
}

/// Takes the telemetry worker out of `report` (telemetry is not inventory) and returns its
/// `system_metrics` items as samples.
pub fn take_telemetry(report: &mut DaemonReport) -> Vec<MetricsRow> {
    let mut samples = Vec::new();
    for worker in report
        .worker_reports
        .iter()
        .filter(|w| w.name == Worker::Telemetry)
    {
        for function in &worker.function_reports {
            if let FunctionData::SystemMetrics(items) = &function.data {
                samples.extend(items.iter().map(|m| sample(function.datetime, m)));
            }
        }
    }
    report
        .worker_reports
        .retain(|w| w.name != Worker::Telemetry);
    samples
}

/// One stored sample of Muster's `SystemMetrics`.
pub fn sample(at: Timestamp, metrics: &SystemMetrics) -> MetricsRow {
    MetricsRow {
        sampled_at: at.as_second(),
        cpu_usage: metrics.cpu_usage,
        memory_usage: Some(metrics.memory_usage),
        disk_usage: metrics.disk_usage,
        data: serde_json::to_string(metrics).expect("metrics always serialize"),
    }
}

/// The seed's flat keys, the worker each is kept under, in the seed's order.
const SEED_FUNCTIONS: &[(&str, Worker)] = &[
    ("platform", Worker::Hardware),
    ("cpu_info", Worker::Hardware),
    ("memory_total", Worker::Hardware),
    ("disk_info", Worker::Hardware),
    ("network_info", Worker::Hardware),
    ("installed_software", Worker::Software),
    ("running_processes", Worker::Processes),
];

/// Whether a system report body is the seed's flat form.
pub fn is_seed_report(body: &Map<String, Value>) -> bool {
    body.contains_key("hostname")
        && (SEED_FUNCTIONS.iter().any(|(k, _)| body.contains_key(*k))
            || body.contains_key("system_metrics"))
}

/// Reads the seed agent's flat system report into a `DaemonReport` whose function reports are
/// named by the seed's keys (`cpu_info`, `installed_software`, ...; kept as raw JSON), plus the
/// sample of its `system_metrics`. The seed sends no report id, so one is made unless the body
/// carries a `report_id`.
pub fn seed_report(
    body: &Map<String, Value>,
    agent_id: &str,
    now: Timestamp,
) -> Result<(DaemonReport, Option<MetricsRow>), ApiError> {
    let hostname = match body.get("hostname") {
        Some(Value::String(h)) if !h.trim().is_empty() => h.clone(),
        _ => {
            return Err(ApiError::Unprocessable(
                "`hostname` must be a non-empty string".into(),
            ));
        }
    };
    let report_id = match body.get("report_id") {
        None | Some(Value::Null) => Uuid::now_v7(),
        Some(Value::String(id)) => id
            .parse()
            .map_err(|_| ApiError::Unprocessable("`report_id` must be a uuid".into()))?,
        Some(_) => return Err(ApiError::Unprocessable("`report_id` must be a uuid".into())),
    };
    let mut workers: Vec<WorkerReport> = Vec::new();
    for (key, worker) in SEED_FUNCTIONS {
        let items = match body.get(*key) {
            None | Some(Value::Null) => continue,
            Some(Value::Array(items)) => items.clone(),
            Some(other) => vec![other.clone()],
        };
        let function = FunctionReport {
            datetime: now,
            data: FunctionData::Other {
                name: (*key).to_owned(),
                data: items,
            },
            error: None,
            unavailable: None,
        };
        match workers.iter_mut().find(|w| w.name == *worker) {
            Some(w) => w.function_reports.push(function),
            None => workers.push(WorkerReport {
                name: *worker,
                datetime: now,
                function_reports: vec![function],
            }),
        }
    }
    let mut report = DaemonReport::new(
        HostIdentity {
            hostname,
            machine_id: None,
        },
        workers,
    );
    report.datetime = now;
    report.report_id = report_id;
    report.agent_id = Some(agent_id.to_owned());
    let metrics = match body.get("system_metrics") {
        None | Some(Value::Null) => None,
        Some(Value::Object(m)) => Some(MetricsRow {
            sampled_at: now.as_second(),
            cpu_usage: seed_figure(m, "cpu_usage")?,
            memory_usage: seed_figure(m, "memory_usage")?,
            disk_usage: seed_figure(m, "disk_usage")?,
            data: Value::Object(m.clone()).to_string(),
        }),
        Some(_) => {
            return Err(ApiError::Unprocessable(
                "`system_metrics` must be an object".into(),
            ));
        }
    };
    Ok((report, metrics))
}

fn seed_figure(metrics: &Map<String, Value>, key: &str) -> Result<Option<f64>, ApiError> {
    match metrics.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => Ok(n.as_f64()),
        Some(_) => Err(ApiError::Unprocessable(format!(
            "`system_metrics.{key}` must be a number"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_proto::data::Memory;
    use muster_proto::inventory::inventory_hash;

    fn memory(total: u64) -> FunctionReport {
        FunctionReport::new(FunctionData::Memory(vec![Memory {
            total_bytes: total,
            swap_total_bytes: 0,
        }]))
    }

    fn report(workers: Vec<WorkerReport>) -> DaemonReport {
        DaemonReport::new(
            HostIdentity {
                hostname: "h".into(),
                machine_id: None,
            },
            workers,
        )
    }

    #[test]
    fn a_delta_replaces_adds_and_removes_function_reports() {
        let dmi = FunctionReport::unavailable("dmi", "none");
        let dpkg = FunctionReport::new(FunctionData::Dpkg(vec![]));
        let base = report(vec![
            WorkerReport::new(Worker::Hardware, vec![memory(1), dmi.clone()]),
            WorkerReport::new(Worker::Software, vec![dpkg]),
        ]);
        let snap = FunctionReport::new(FunctionData::Snap(vec![]));
        let delta = report(vec![
            WorkerReport::new(Worker::Hardware, vec![memory(2)]),
            WorkerReport::new(
                Worker::Services,
                vec![FunctionReport::new(FunctionData::Systemd(vec![]))],
            ),
            WorkerReport::new(Worker::Software, vec![snap.clone()]),
        ]);
        let merged = apply_delta(base, delta.clone(), &["software/dpkg".into()]);
        let expected = report(vec![
            WorkerReport::new(Worker::Hardware, vec![memory(2), dmi]),
            WorkerReport::new(Worker::Software, vec![snap]),
            WorkerReport::new(
                Worker::Services,
                vec![FunctionReport::new(FunctionData::Systemd(vec![]))],
            ),
        ]);
        assert_eq!(inventory_hash(&merged), inventory_hash(&expected));
        assert_eq!(merged.report_id, delta.report_id);
    }

    #[test]
    fn telemetry_is_taken_out_as_samples() {
        let metrics = SystemMetrics {
            cpu_usage: Some(12.5),
            memory_usage: 40.0,
            disk_usage: Some(70.0),
            load_1: None,
            load_5: None,
            load_15: None,
            memory_total_bytes: 1,
            memory_available_bytes: 1,
            swap_total_bytes: 0,
            swap_used_bytes: 0,
            swap_usage: 0.0,
            net_rx_bytes: 0,
            net_tx_bytes: 0,
            net_rx_bytes_per_s: None,
            net_tx_bytes_per_s: None,
            disk_read_bytes: 0,
            disk_write_bytes: 0,
            disk_read_bytes_per_s: None,
            disk_write_bytes_per_s: None,
            interval_s: None,
        };
        let mut r = report(vec![
            WorkerReport::new(Worker::Hardware, vec![memory(1)]),
            WorkerReport::new(
                Worker::Telemetry,
                vec![FunctionReport::new(FunctionData::SystemMetrics(vec![
                    metrics,
                ]))],
            ),
        ]);
        let samples = take_telemetry(&mut r);
        assert_eq!(samples.len(), 1);
        assert_eq!(samples[0].cpu_usage, Some(12.5));
        assert!(r.worker(Worker::Telemetry).is_none());
    }

    #[test]
    fn seed_reports_become_daemon_reports() {
        let body = serde_json::json!({
            "hostname": "SERVER-01", "platform": "Windows 10", "cpu_info": "Intel Core i7-8700K",
            "memory_total": 16777216, "disk_info": [{"drive": "C:"}], "network_info": [],
            "installed_software": [{"name": "7-Zip"}], "running_processes": [],
            "system_metrics": {"cpu_usage": 15.2, "memory_usage": 45.8, "disk_usage": 67.3}
        });
        let body = body.as_object().unwrap();
        assert!(is_seed_report(body));
        let (report, metrics) = seed_report(body, "a1", Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(report.host.hostname, "SERVER-01");
        let cpu = report.function("cpu_info").unwrap();
        assert_eq!(cpu.data.len(), 1);
        assert_eq!(report.function("installed_software").unwrap().data.len(), 1);
        assert_eq!(metrics.unwrap().disk_usage, Some(67.3));
        // It survives the JSON round trip the store puts it through.
        let json = serde_json::to_string(&report).unwrap();
        let back: DaemonReport = serde_json::from_str(&json).unwrap();
        assert_eq!(inventory_hash(&back), inventory_hash(&report));
    }

    #[test]
    fn malformed_seed_reports_are_refused() {
        for body in [
            serde_json::json!({"hostname": "", "cpu_info": "x"}),
            serde_json::json!({"hostname": 3, "cpu_info": "x"}),
            serde_json::json!({"hostname": "h", "system_metrics": {"cpu_usage": "high"}}),
            serde_json::json!({"hostname": "h", "system_metrics": 5}),
            serde_json::json!({"hostname": "h", "report_id": "nope"}),
        ] {
            assert!(seed_report(body.as_object().unwrap(), "a", Timestamp::UNIX_EPOCH).is_err());
        }
    }

    fn json() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<f64>().prop_map(|f| json!(f)),
            any::<i64>().prop_map(|i| json!(i)),
            "[a-z_ ]{0,12}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(
                    prop_oneof![
                        Just("hostname".to_owned()),
                        Just("cpu_info".to_owned()),
                        Just("system_metrics".to_owned()),
                        Just("cpu_usage".to_owned()),
                        Just("report_id".to_owned()),
                        "[a-z_]{1,10}",
                    ],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    use serde_json::json;

    proptest::proptest! {
        /// The seed's report is outside input: any JSON object is read or refused, never a
        /// panic, and what is read survives the store's JSON round trip.
        #[test]
        fn any_seed_report_is_read_or_refused(value in json()) {
            if let Value::Object(map) = value
                && let Ok((report, _)) = seed_report(&map, "a", Timestamp::UNIX_EPOCH) {
                    let text = serde_json::to_string(&report).unwrap();
                    let back: DaemonReport = serde_json::from_str(&text).unwrap();
                    proptest::prop_assert_eq!(inventory_hash(&back), inventory_hash(&report));
                }
        }

        /// `removed` comes from the agent: any text is harmless.
        #[test]
        fn any_removed_list_applies(removed in proptest::collection::vec("[a-z/]{0,20}", 0..8)) {
            let base = report(vec![WorkerReport::new(Worker::Hardware, vec![memory(1)])]);
            let delta = report(vec![]);
            let merged = apply_delta(base, delta, &removed);
            proptest::prop_assert!(merged.worker_reports.len() <= 1);
        }
    }
}
