//! Content hashes of an inventory, for delta uploads.
//!
//! A function report's hash covers its name, items, `error` and `unavailable`, not its
//! `datetime`: two scans that found the same things hash the same. The inventory hash covers
//! every function report of the hardware, software, processes and services workers (telemetry
//! is not inventory), in a fixed order. Both sides compute them with these functions, from the
//! typed values, so the agent and the server agree on what "unchanged" means.

use sha2::{Digest, Sha256};

use crate::{DaemonReport, FunctionReport, Worker};

/// Lowercase hex SHA-256 of one function report's content.
pub fn function_hash(report: &FunctionReport) -> String {
    let mut content = report.clone();
    content.datetime = jiff::Timestamp::UNIX_EPOCH;
    let json = serde_json::to_vec(&content).expect("a function report always serializes");
    hex(&Sha256::digest(json))
}

/// Lowercase hex SHA-256 over the (worker, function, function hash) triples of the inventory
/// workers, sorted, so the order collectors ran in does not matter.
pub fn inventory_hash(report: &DaemonReport) -> String {
    let mut entries: Vec<(Worker, &str, String)> = report
        .worker_reports
        .iter()
        .filter(|w| w.name != Worker::Telemetry)
        .flat_map(|w| {
            w.function_reports
                .iter()
                .map(move |f| (w.name, f.name(), function_hash(f)))
        })
        .collect();
    entries.sort();
    let mut hasher = Sha256::new();
    for (worker, name, hash) in entries {
        hasher.update(worker.as_str());
        hasher.update(b"/");
        hasher.update(name);
        hasher.update(b"=");
        hasher.update(hash);
        hasher.update(b"\n");
    }
    hex(&hasher.finalize())
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Memory;
    use crate::{FunctionData, HostIdentity, WorkerReport};

    fn memory(total: u64) -> FunctionReport {
        FunctionReport::new(FunctionData::Memory(vec![Memory {
            total_bytes: total,
            swap_total_bytes: 0,
        }]))
    }

    fn report(functions: Vec<FunctionReport>) -> DaemonReport {
        DaemonReport::new(
            HostIdentity {
                hostname: "h".into(),
                machine_id: None,
            },
            vec![WorkerReport::new(Worker::Hardware, functions)],
        )
    }

    #[test]
    fn time_does_not_change_a_hash_but_content_does() {
        let mut a = memory(1024);
        let b = memory(1024);
        a.datetime = jiff::Timestamp::from_second(1).unwrap();
        assert_eq!(function_hash(&a), function_hash(&b));
        assert_ne!(function_hash(&a), function_hash(&memory(2048)));
        let failed = FunctionReport::failed("memory", "boom");
        assert_ne!(
            function_hash(&failed),
            function_hash(&FunctionReport::new(FunctionData::Memory(vec![])))
        );
        assert_eq!(function_hash(&a).len(), 64);
    }

    #[test]
    fn inventory_hash_ignores_order_and_telemetry() {
        let dmi = FunctionReport::unavailable("dmi", "none");
        let one = report(vec![memory(1), dmi.clone()]);
        let two = report(vec![dmi.clone(), memory(1)]);
        assert_eq!(inventory_hash(&one), inventory_hash(&two));
        let mut with_telemetry = one.clone();
        with_telemetry.worker_reports.push(WorkerReport::new(
            Worker::Telemetry,
            vec![FunctionReport::failed("system_metrics", "x")],
        ));
        assert_eq!(inventory_hash(&one), inventory_hash(&with_telemetry));
        assert_ne!(
            inventory_hash(&one),
            inventory_hash(&report(vec![memory(2), dmi]))
        );
    }
}
