//! Delta inventory: send only what changed since the inventory the server acknowledged.
//!
//! The agent remembers, in `<state_dir>/inventory.json`, the hash of the last inventory the
//! server acknowledged and the hash of each of its function reports. A new scan then becomes
//! one of three uploads ([`InventoryUpload`]):
//!
//! - `unchanged`: every function hashes the same; only the hash travels.
//! - `delta`: the function reports whose hash changed, plus the names of those that vanished,
//!   on top of `base_hash`.
//! - `full`: the first time, after the server lost track (it answers 409 to a delta whose base
//!   it does not hold), and at least once every `full_every` (a day) so that any drift heals.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use jiff::Timestamp;
use muster_proto::api::InventoryUpload;
use muster_proto::inventory::{function_hash, inventory_hash};
use muster_proto::{DaemonReport, Worker};
use serde::{Deserialize, Serialize};

const FILE: &str = "inventory.json";

/// How often a full inventory is sent even when deltas would do.
pub const FULL_EVERY: Duration = Duration::from_secs(24 * 3600);

/// What the server holds of this agent's inventory, as far as the agent knows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InventoryState {
    /// The inventory hash the server acknowledged last.
    pub hash: Option<String>,
    /// `worker/function` → hash of that function report, for the acknowledged inventory.
    pub functions: BTreeMap<String, String>,
    pub last_full: Option<Timestamp>,
}

/// An upload ready to send, and the state to keep once the server acknowledges it.
#[derive(Debug, Clone)]
pub struct Planned {
    pub upload: InventoryUpload,
    pub after_ack: InventoryState,
}

impl InventoryState {
    pub fn path(state_dir: &Path) -> PathBuf {
        state_dir.join(FILE)
    }

    /// The stored state; a missing or unreadable file means "send a full inventory".
    pub fn load(state_dir: &Path) -> InventoryState {
        std::fs::read(Self::path(state_dir))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default()
    }

    pub fn save(&self, state_dir: &Path) -> std::io::Result<()> {
        let json = serde_json::to_vec(self).expect("inventory state always serializes");
        crate::identity::write_private(&Self::path(state_dir), &json)
    }

    /// Chooses the upload for `report` (a scan of the inventory workers) at `now`.
    pub fn plan(&self, mut report: DaemonReport, now: Timestamp) -> Planned {
        report
            .worker_reports
            .retain(|w| w.name != Worker::Telemetry);
        let (hash, functions) = hashes(&report);
        let due_full = self
            .last_full
            .is_none_or(|last| now.duration_since(last).unsigned_abs() >= FULL_EVERY);
        let base = match &self.hash {
            Some(base) if !due_full => base.clone(),
            _ => return self.full(report, hash, functions, now),
        };
        if base == hash {
            let upload = InventoryUpload::Unchanged {
                report_id: report.report_id,
                agent_id: report.agent_id.clone().unwrap_or_default(),
                datetime: report.datetime,
                hash: hash.clone(),
            };
            return Planned {
                upload,
                after_ack: self.clone(),
            };
        }
        let removed = self
            .functions
            .keys()
            .filter(|k| !functions.contains_key(*k))
            .cloned()
            .collect();
        for worker in &mut report.worker_reports {
            let name = worker.name;
            worker.function_reports.retain(|f| {
                let key = key(name, f.name());
                self.functions.get(&key) != functions.get(&key)
            });
        }
        report
            .worker_reports
            .retain(|w| !w.function_reports.is_empty());
        let after_ack = InventoryState {
            hash: Some(hash.clone()),
            functions,
            ..self.clone()
        };
        let upload = InventoryUpload::Delta {
            base_hash: base,
            hash,
            report,
            removed,
        };
        Planned { upload, after_ack }
    }

    /// A full upload of `report`, whatever the state.
    pub fn plan_full(&self, mut report: DaemonReport, now: Timestamp) -> Planned {
        report
            .worker_reports
            .retain(|w| w.name != Worker::Telemetry);
        let (hash, functions) = hashes(&report);
        self.full(report, hash, functions, now)
    }

    fn full(
        &self,
        report: DaemonReport,
        hash: String,
        functions: BTreeMap<String, String>,
        now: Timestamp,
    ) -> Planned {
        let after_ack = InventoryState {
            hash: Some(hash.clone()),
            functions,
            last_full: Some(now),
        };
        Planned {
            upload: InventoryUpload::Full { hash, report },
            after_ack,
        }
    }
}

/// The inventory hash and each function report's hash, keyed `worker/function`.
fn hashes(report: &DaemonReport) -> (String, BTreeMap<String, String>) {
    let functions = report
        .worker_reports
        .iter()
        .flat_map(|w| {
            w.function_reports
                .iter()
                .map(move |f| (key(w.name, f.name()), function_hash(f)))
        })
        .collect();
    (inventory_hash(report), functions)
}

/// `worker/function`: how deltas name a function report (`removed` uses it too).
pub fn key(worker: Worker, function: &str) -> String {
    format!("{worker}/{function}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_proto::data::Memory;
    use muster_proto::{FunctionData, FunctionReport, HostIdentity, WorkerReport};

    fn memory(total: u64) -> FunctionReport {
        FunctionReport::new(FunctionData::Memory(vec![Memory {
            total_bytes: total,
            swap_total_bytes: 0,
        }]))
    }

    fn scan(total: u64, with_snap: bool) -> DaemonReport {
        let mut software = vec![FunctionReport::new(FunctionData::Dpkg(vec![]))];
        if with_snap {
            software.push(FunctionReport::new(FunctionData::Snap(vec![])));
        }
        DaemonReport::new(
            HostIdentity {
                hostname: "h".into(),
                machine_id: None,
            },
            vec![
                WorkerReport::new(Worker::Hardware, vec![memory(total)]),
                WorkerReport::new(Worker::Software, software),
                WorkerReport::new(
                    Worker::Telemetry,
                    vec![FunctionReport::failed("system_metrics", "x")],
                ),
            ],
        )
    }

    fn at(seconds: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + seconds).unwrap()
    }

    #[test]
    fn first_upload_is_full_then_unchanged_then_delta() {
        let state = InventoryState::default();
        let first = state.plan(scan(1, true), at(0));
        let InventoryUpload::Full { report, hash } = &first.upload else {
            panic!("{first:?}")
        };
        assert!(
            report.worker(Worker::Telemetry).is_none(),
            "telemetry is not inventory"
        );
        assert_eq!(first.after_ack.hash.as_ref(), Some(hash));
        let state = first.after_ack;

        let same = state.plan(scan(1, true), at(60));
        assert!(
            matches!(&same.upload, InventoryUpload::Unchanged { hash, .. } if Some(hash) == state.hash.as_ref()),
            "{same:?}"
        );

        let changed = state.plan(scan(2, false), at(120));
        let InventoryUpload::Delta {
            base_hash,
            report,
            removed,
            hash,
        } = &changed.upload
        else {
            panic!("{changed:?}")
        };
        assert_eq!(Some(base_hash), state.hash.as_ref());
        assert_ne!(base_hash, hash);
        let names: Vec<&str> = report
            .worker_reports
            .iter()
            .flat_map(|w| w.function_reports.iter().map(|f| f.name()))
            .collect();
        assert_eq!(names, ["memory"], "only what changed travels");
        assert_eq!(removed, &["software/snap".to_owned()]);
        assert_eq!(changed.after_ack.hash.as_ref(), Some(hash));
        assert_eq!(changed.after_ack.last_full, Some(at(0)));
    }

    #[test]
    fn a_full_inventory_goes_at_least_daily() {
        let state = InventoryState::default()
            .plan(scan(1, true), at(0))
            .after_ack;
        let day = FULL_EVERY.as_secs() as i64;
        assert!(matches!(
            state.plan(scan(1, true), at(day - 1)).upload,
            InventoryUpload::Unchanged { .. }
        ));
        assert!(matches!(
            state.plan(scan(1, true), at(day)).upload,
            InventoryUpload::Full { .. }
        ));
    }

    #[test]
    fn state_survives_a_restart_and_a_bad_file_means_full() {
        let dir = tempfile::tempdir().unwrap();
        let state = InventoryState::default()
            .plan(scan(1, true), at(0))
            .after_ack;
        state.save(dir.path()).unwrap();
        assert_eq!(InventoryState::load(dir.path()), state);
        std::fs::write(InventoryState::path(dir.path()), b"{garbage").unwrap();
        assert_eq!(InventoryState::load(dir.path()), InventoryState::default());
        assert!(matches!(
            InventoryState::load(dir.path())
                .plan(scan(1, true), at(5))
                .upload,
            InventoryUpload::Full { .. }
        ));
    }
}
