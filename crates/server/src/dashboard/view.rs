//! An agent's stored inventory (a `DaemonReport`, JSON) read into what the agent page shows.
//!
//! Typed function reports fill the page's sections; function reports this version does not
//! type — the seed agent's `cpu_info`, `installed_software`, ... or a newer agent's — are shown
//! as plain tables, so nothing an agent reported is hidden and nothing unknown breaks the page.

use muster_proto::data::{Package, Process};
use muster_proto::{DaemonReport, FunctionData, FunctionReport};
use serde_json::Value;

use super::format::{bytes, duration};
use crate::store::dashboard::InstalledPackage;

/// How many processes the page lists.
pub const TOP_PROCESSES: usize = 25;
/// Bounds on a table of raw reported data.
const RAW_COLUMNS: usize = 10;
const RAW_ROWS: usize = 200;
const RAW_CELL_CHARS: usize = 160;

/// A labelled value in a summary list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fact {
    pub label: &'static str,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DiskRow {
    pub name: String,
    pub size: String,
    pub model: String,
    pub kind: &'static str,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FilesystemRow {
    pub mount_point: String,
    pub device: String,
    pub fs_type: String,
    pub size: String,
    pub used: String,
    pub free: String,
    /// Used, percent of used + free (what `df` shows), rounded for the meter.
    pub used_percent: u8,
    pub read_only: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterfaceRow {
    pub name: String,
    pub mac: String,
    pub state: String,
    pub mtu: String,
    pub speed: String,
    pub addresses: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessRow {
    pub pid: u32,
    pub name: String,
    pub user: String,
    pub state: String,
    pub cpu_time: String,
    pub rss: String,
    pub cmdline: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceRow {
    pub name: String,
    pub state: String,
    pub failed: bool,
    pub description: String,
}

/// Data shown as it was reported: a table of any JSON items.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawTable {
    pub name: String,
    pub columns: Vec<String>,
    pub rows: Vec<Vec<String>>,
    /// Items not shown (past the row bound).
    pub more: usize,
}

/// A function report that carries no data and says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Note {
    pub function: String,
    pub kind: &'static str,
    pub message: String,
}

/// Which order the process table is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProcessOrder {
    Cpu,
    Memory,
}

/// Everything the agent page shows from one inventory.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InventoryView {
    pub system: Vec<Fact>,
    pub hardware: Vec<Fact>,
    pub disks: Vec<DiskRow>,
    pub filesystems: Vec<FilesystemRow>,
    pub interfaces: Vec<InterfaceRow>,
    pub processes: Vec<ProcessRow>,
    pub process_count: usize,
    pub services: Vec<ServiceRow>,
    /// Whether a service manager reported at all (empty `services` then means none).
    pub services_reported: bool,
    pub other: Vec<RawTable>,
    pub notes: Vec<Note>,
    /// Every package of the inventory: the page's fallback when the software index is not
    /// available.
    pub packages: Vec<InstalledPackage>,
}

/// Reads a stored inventory's JSON.
pub fn read(report: &str) -> Result<DaemonReport, serde_json::Error> {
    serde_json::from_str(report)
}

/// The page's view of `report`, processes in `order`.
pub fn inventory(report: &DaemonReport, order: ProcessOrder) -> InventoryView {
    let mut view = InventoryView::default();
    let mut processes: Vec<&Process> = Vec::new();
    for function in report
        .worker_reports
        .iter()
        .flat_map(|w| &w.function_reports)
    {
        note(&mut view, function);
        match &function.data {
            FunctionData::System(items) => {
                if let Some(s) = items.first() {
                    let os = s
                        .os_pretty_name
                        .clone()
                        .or_else(|| join(&[s.os_name.as_deref(), s.os_version.as_deref()]))
                        .unwrap_or_default();
                    push(&mut view.system, "Hostname", s.hostname.clone());
                    push(&mut view.system, "Operating system", os);
                    push(&mut view.system, "Kernel", s.kernel.clone());
                    push(&mut view.system, "Architecture", s.arch.clone());
                    push(&mut view.system, "Uptime", duration(s.uptime_s));
                    if let Some(boot) = s.boot_time {
                        push(
                            &mut view.system,
                            "Booted",
                            boot.strftime("%Y-%m-%d %H:%M UTC").to_string(),
                        );
                    }
                    let virt = join(&[s.virtualization.as_deref(), s.container.as_deref()]);
                    push(
                        &mut view.system,
                        "Virtualization",
                        virt.unwrap_or_else(|| "none".into()),
                    );
                    if let Some(id) = &s.machine_id {
                        push(&mut view.system, "Machine id", id.clone());
                    }
                }
            }
            FunctionData::Dmi(items) => {
                if let Some(d) = items.first() {
                    let machine = join(&[d.system_vendor.as_deref(), d.system_product.as_deref()]);
                    push(&mut view.system, "Machine", machine.unwrap_or_default());
                    if let Some(serial) = &d.system_serial {
                        push(&mut view.system, "Serial", serial.clone());
                    }
                    let bios = join(&[d.bios_vendor.as_deref(), d.bios_version.as_deref()]);
                    push(&mut view.system, "BIOS", bios.unwrap_or_default());
                }
            }
            FunctionData::Cpu(items) => {
                for c in items {
                    push(
                        &mut view.hardware,
                        "CPU",
                        c.model.clone().unwrap_or_default(),
                    );
                    push(
                        &mut view.hardware,
                        "Cores",
                        [
                            counted(c.sockets, "socket"),
                            counted(c.physical_cores, "core"),
                            counted(c.logical_cpus, "thread"),
                        ]
                        .join(", "),
                    );
                    if let Some(mhz) = c.max_mhz {
                        push(&mut view.hardware, "Max clock", format!("{mhz:.0} MHz"));
                    }
                }
            }
            FunctionData::Memory(items) => {
                for m in items {
                    push(&mut view.hardware, "Memory", bytes(m.total_bytes));
                    push(&mut view.hardware, "Swap", bytes(m.swap_total_bytes));
                }
            }
            FunctionData::Disks(items) => {
                view.disks.extend(items.iter().map(|d| DiskRow {
                    name: d.name.clone(),
                    size: bytes(d.size_bytes),
                    model: join(&[d.vendor.as_deref(), d.model.as_deref()]).unwrap_or_default(),
                    kind: match (d.removable, d.rotational) {
                        (true, _) => "removable",
                        (false, true) => "rotational",
                        (false, false) => "solid state",
                    },
                }));
            }
            FunctionData::Filesystems(items) => {
                view.filesystems.extend(items.iter().map(|f| {
                    let usable = f.used_bytes.saturating_add(f.free_bytes);
                    let used_percent = if usable == 0 {
                        0
                    } else {
                        (f.used_bytes as f64 / usable as f64 * 100.0).round() as u8
                    };
                    FilesystemRow {
                        mount_point: f.mount_point.clone(),
                        device: f.device.clone(),
                        fs_type: f.fs_type.clone(),
                        size: bytes(f.size_bytes),
                        used: bytes(f.used_bytes),
                        free: bytes(f.free_bytes),
                        used_percent: used_percent.min(100),
                        read_only: f.read_only,
                    }
                }));
            }
            FunctionData::Network(items) => {
                view.interfaces.extend(items.iter().map(|n| {
                    InterfaceRow {
                        name: n.name.clone(),
                        mac: n.mac.clone().unwrap_or_default(),
                        state: n.oper_state.clone(),
                        mtu: n.mtu.map(|m| m.to_string()).unwrap_or_default(),
                        speed: n
                            .speed_mbps
                            .map(|s| format!("{s} Mb/s"))
                            .unwrap_or_default(),
                        addresses: n
                            .addresses
                            .iter()
                            .map(|a| format!("{}/{}", a.address, a.prefix_len))
                            .collect(),
                    }
                }));
            }
            FunctionData::Dpkg(items)
            | FunctionData::Rpm(items)
            | FunctionData::Apk(items)
            | FunctionData::Pacman(items)
            | FunctionData::Flatpak(items)
            | FunctionData::Snap(items)
            | FunctionData::Registry(items) => {
                view.packages.extend(items.iter().map(installed));
            }
            FunctionData::Processes(items) => processes.extend(items),
            FunctionData::Systemd(items) | FunctionData::WindowsServices(items) => {
                view.services_reported = true;
                view.services.extend(items.iter().map(|s| ServiceRow {
                    name: s.name.clone(),
                    state: format!("{} ({})", s.active_state, s.sub_state),
                    failed: s.active_state == "failed",
                    description: s.description.clone().unwrap_or_default(),
                }));
            }
            // Telemetry is charted from the stored samples; users are not shown.
            FunctionData::SystemMetrics(_) | FunctionData::Users(_) => {}
            FunctionData::Other { name, data } => {
                if name == "installed_software" {
                    view.packages.extend(data.iter().filter_map(seed_package));
                }
                view.other.push(raw_table(name, data));
            }
        }
    }
    view.process_count = processes.len();
    match order {
        ProcessOrder::Cpu => processes.sort_by(|a, b| b.cpu_time_s.total_cmp(&a.cpu_time_s)),
        ProcessOrder::Memory => processes.sort_by_key(|p| std::cmp::Reverse(p.rss_bytes)),
    }
    view.processes = processes
        .into_iter()
        .take(TOP_PROCESSES)
        .map(|p| ProcessRow {
            pid: p.pid,
            name: p.name.clone(),
            user: p.user.clone().unwrap_or_default(),
            state: p.state.clone(),
            cpu_time: format!("{:.1} s", p.cpu_time_s),
            rss: bytes(p.rss_bytes),
            cmdline: truncate(&p.cmdline.join(" "), RAW_CELL_CHARS),
        })
        .collect();
    view.services
        .sort_by(|a, b| b.failed.cmp(&a.failed).then_with(|| a.name.cmp(&b.name)));
    view.packages.sort_by(|a, b| a.name.cmp(&b.name));
    view
}

/// The packages whose name contains `search` (case-insensitive): one page and the total.
pub fn package_page(
    packages: &[InstalledPackage],
    search: Option<&str>,
    limit: u32,
    offset: u32,
) -> (u64, Vec<InstalledPackage>) {
    let needle = search.map(str::to_lowercase);
    let matching: Vec<&InstalledPackage> = packages
        .iter()
        .filter(|p| {
            needle
                .as_deref()
                .is_none_or(|n| p.name.to_lowercase().contains(n))
        })
        .collect();
    let page = matching
        .iter()
        .skip(offset as usize)
        .take(limit as usize)
        .map(|p| (*p).clone())
        .collect();
    (matching.len() as u64, page)
}

fn installed(p: &Package) -> InstalledPackage {
    InstalledPackage {
        name: p.name.clone(),
        version: p.version.clone(),
        source: p.source.clone(),
        arch: p.architecture.clone(),
    }
}

/// A seed `installed_software` item: `{"name", "version"}` (or a bare name).
fn seed_package(item: &Value) -> Option<InstalledPackage> {
    let (name, version) = match item {
        Value::String(name) => (name.clone(), String::new()),
        Value::Object(map) => (
            map.get("name")?.as_str()?.to_owned(),
            map.get("version").map(cell).unwrap_or_default().to_owned(),
        ),
        _ => return None,
    };
    Some(InstalledPackage {
        name,
        version,
        source: "seed".into(),
        arch: None,
    })
}

fn note(view: &mut InventoryView, function: &FunctionReport) {
    if let Some(error) = &function.error {
        view.notes.push(Note {
            function: function.name().to_owned(),
            kind: "error",
            message: error.clone(),
        });
    }
    if let Some(reason) = &function.unavailable {
        view.notes.push(Note {
            function: function.name().to_owned(),
            kind: "unavailable",
            message: reason.clone(),
        });
    }
}

/// `1 socket`, `2 cores`.
fn counted(n: u32, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}

fn push(facts: &mut Vec<Fact>, label: &'static str, value: String) {
    if !value.trim().is_empty() {
        facts.push(Fact { label, value });
    }
}

fn join(parts: &[Option<&str>]) -> Option<String> {
    let parts: Vec<&str> = parts
        .iter()
        .flatten()
        .map(|p| p.trim())
        .filter(|p| !p.is_empty())
        .collect();
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// Any JSON items as a table: objects by their keys (the first [`RAW_COLUMNS`] met), other
/// values in one column.
fn raw_table(name: &str, items: &[Value]) -> RawTable {
    let mut columns: Vec<String> = Vec::new();
    if items.iter().all(Value::is_object) {
        for map in items.iter().filter_map(Value::as_object).take(RAW_ROWS) {
            for key in map.keys() {
                if columns.len() < RAW_COLUMNS && !columns.contains(key) {
                    columns.push(key.clone());
                }
            }
        }
    }
    let rows = items
        .iter()
        .take(RAW_ROWS)
        .map(|item| match item.as_object() {
            Some(map) if !columns.is_empty() => columns
                .iter()
                .map(|c| map.get(c).map(cell).unwrap_or_default())
                .collect(),
            _ => vec![cell(item)],
        })
        .collect();
    if columns.is_empty() {
        columns.push("value".into());
    }
    RawTable {
        name: name.to_owned(),
        columns,
        rows,
        more: items.len().saturating_sub(RAW_ROWS),
    }
}

/// A JSON value as table text: strings as they are, null as nothing, the rest as compact
/// JSON, all bounded.
fn cell(value: &Value) -> String {
    let text = match value {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    truncate(&text, RAW_CELL_CHARS)
}

fn truncate(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FIXTURE: &str = include_str!("../../tests/it/fixtures/scan.json");

    #[test]
    fn a_real_scan_fills_every_section() {
        let report = read(FIXTURE).unwrap();
        let view = inventory(&report, ProcessOrder::Cpu);
        let label =
            |facts: &[Fact], l: &str| facts.iter().find(|f| f.label == l).map(|f| f.value.clone());
        assert_eq!(label(&view.system, "Hostname").as_deref(), Some("vm"));
        assert!(label(&view.system, "Kernel").is_some());
        assert!(label(&view.hardware, "Memory").is_some());
        assert_eq!(view.disks.len(), 1);
        assert!(view.filesystems.iter().any(|f| f.mount_point == "/"));
        assert!(
            view.interfaces
                .iter()
                .any(|i| i.addresses.contains(&"127.0.0.1/8".into()))
        );
        assert!(view.packages.iter().any(|p| p.name == "openssl"));
        assert!(view.processes.len() <= TOP_PROCESSES);
        let Some(FunctionData::Processes(all)) = report.function("processes").map(|f| &f.data)
        else {
            panic!("the fixture has processes");
        };
        let busiest = all
            .iter()
            .max_by(|a, b| a.cpu_time_s.total_cmp(&b.cpu_time_s));
        assert_eq!(
            view.processes.first().map(|p| p.pid),
            busiest.map(|p| p.pid)
        );
        assert_eq!(view.process_count, all.len());
        assert_eq!(view.services.first().map(|s| s.failed), Some(true));
        assert!(
            view.notes
                .iter()
                .any(|n| n.function == "dmi" && n.kind == "unavailable")
        );
        assert!(view.other.is_empty());
        let by_memory = inventory(&report, ProcessOrder::Memory);
        let biggest = all.iter().max_by_key(|p| p.rss_bytes);
        assert_eq!(
            by_memory.processes.first().map(|p| p.pid),
            biggest.map(|p| p.pid)
        );
    }

    #[test]
    fn seed_reports_show_as_tables_and_packages() {
        let body = serde_json::json!({
            "hostname": "old-1",
            "platform": "Linux-5.10",
            "cpu_info": {"cores": 4, "model": "Xeon"},
            "memory_total": 8_000_000_000u64,
            "installed_software": [{"name": "nginx", "version": "1.18"}, "curl", 7],
        });
        let (report, _) = crate::ingest::seed_report(
            body.as_object().unwrap(),
            "a1",
            jiff::Timestamp::UNIX_EPOCH,
        )
        .unwrap();
        let report = read(&serde_json::to_string(&report).unwrap()).unwrap();
        let view = inventory(&report, ProcessOrder::Cpu);
        let names: Vec<_> = view.other.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(
            names,
            ["platform", "cpu_info", "memory_total", "installed_software"]
        );
        assert_eq!(view.other[1].columns, ["cores", "model"]);
        assert_eq!(view.other[1].rows, [["4", "Xeon"]]);
        assert_eq!(view.other[2].rows, [["8000000000"]]);
        assert_eq!(view.other[3].columns, ["value"]);
        let packages: Vec<_> = view.packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(packages, ["curl", "nginx"]);
    }

    #[test]
    fn package_pages_search_case_insensitively() {
        let packages: Vec<_> = ["libssl3", "OpenSSL", "zlib"]
            .into_iter()
            .map(|n| InstalledPackage {
                name: n.into(),
                version: "1".into(),
                source: "dpkg".into(),
                arch: None,
            })
            .collect();
        let (total, page) = package_page(&packages, Some("ssl"), 1, 1);
        assert_eq!(total, 2);
        assert_eq!(page[0].name, "OpenSSL");
        assert_eq!(package_page(&packages, None, 50, 0).0, 3);
        assert_eq!(package_page(&packages, None, 50, 10).1, []);
    }

    #[test]
    fn cells_are_bounded() {
        let long = "é".repeat(1000);
        assert_eq!(truncate(&long, 3), "ééé…");
        assert_eq!(cell(&Value::Null), "");
        assert_eq!(cell(&serde_json::json!({"a": 1})), "{\"a\":1}");
    }
}
