//! What an inventory says about software and hardware, and what changed between two of them.
//! Pure functions, no I/O: the store calls them inside the ingest transaction.
//!
//! Packages come from the software worker's `dpkg`, `rpm`, `apk`, `pacman`, `flatpak`, `snap`
//! and `registry` functions, and from the seed's `installed_software` (its raw objects:
//! `name`, `version`, optionally `architecture`/`arch`; source `seed`). Hardware items are
//! `cpu`, `memory`, `disk:<name>`, `network:<name>`, `system` (DMI vendor and product) and
//! `bios` (DMI BIOS vendor and version), from Muster's typed functions or the seed's
//! `cpu_info`, `memory_total`, `disk_info` and `network_info`.
//!
//! A source or hardware function is compared only when both inventories hold it without an
//! `error`: a collector that failed once (no items, or some) must not read as "everything was
//! removed", and a source one inventory lacks (a seed report followed by Muster's) says
//! nothing about change. A function reported `unavailable` counts as held and empty (snapd
//! removed: its snaps are removed).

use std::collections::{BTreeMap, BTreeSet};

use muster_proto::{DaemonReport, FunctionData, FunctionReport, Worker};
use serde_json::Value;

use crate::version;

/// The software functions, in report order.
pub const SOFTWARE_SOURCES: &[&str] = &[
    "dpkg", "rpm", "apk", "pacman", "flatpak", "snap", "registry",
];

/// The seed's software function and the source its packages are given.
pub const SEED_SOFTWARE: &str = "installed_software";
pub const SEED_SOURCE: &str = "seed";

/// One installed package, normalised.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// `dpkg`, `rpm`, `apk`, `pacman`, `flatpak`, `snap`, `registry` or `seed`.
    pub source: String,
    pub arch: Option<String>,
}

/// One change between two inventories.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// `software` or `hardware`.
    pub category: &'static str,
    /// Software: `added`, `removed`, `upgraded`, `downgraded`, or `changed` (two spellings the
    /// source orders as equal). Hardware: `added`, `removed`, `changed`.
    pub change: &'static str,
    pub item: String,
    pub old: Option<String>,
    pub new: Option<String>,
}

/// The package source of a function name, if it is one.
fn source_of(function: &str) -> Option<&'static str> {
    if function == SEED_SOFTWARE {
        return Some(SEED_SOURCE);
    }
    SOFTWARE_SOURCES.iter().copied().find(|s| *s == function)
}

/// The function reports of the software worker (and of any worker, for the seed's function).
fn software_functions(
    report: &DaemonReport,
) -> impl Iterator<Item = (&'static str, &FunctionReport)> {
    report
        .worker_reports
        .iter()
        .filter(|w| w.name == Worker::Software)
        .flat_map(|w| &w.function_reports)
        .filter_map(|f| source_of(f.name()).map(|s| (s, f)))
}

/// A seed item's text field, among a few spellings; numbers are written out.
fn seed_text(item: &serde_json::Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match item.get(*k) {
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

fn function_packages(source: &'static str, function: &FunctionReport) -> Vec<Package> {
    let nonempty = |s: &Option<String>| s.clone().filter(|s| !s.is_empty());
    match &function.data {
        FunctionData::Dpkg(items)
        | FunctionData::Rpm(items)
        | FunctionData::Apk(items)
        | FunctionData::Pacman(items)
        | FunctionData::Flatpak(items)
        | FunctionData::Snap(items)
        | FunctionData::Registry(items) => items
            .iter()
            .filter(|p| !p.name.is_empty())
            .map(|p| Package {
                name: p.name.clone(),
                version: p.version.clone(),
                source: source.to_owned(),
                arch: nonempty(&p.architecture),
            })
            .collect(),
        FunctionData::Other { data, .. } => data
            .iter()
            .filter_map(|item| match item {
                Value::Object(item) => Some(Package {
                    name: seed_text(item, &["name", "display_name", "DisplayName"])?,
                    version: seed_text(item, &["version", "display_version", "DisplayVersion"])
                        .unwrap_or_default(),
                    source: source.to_owned(),
                    arch: seed_text(item, &["architecture", "arch"]),
                }),
                Value::String(name) if !name.trim().is_empty() => Some(Package {
                    name: name.trim().to_owned(),
                    version: String::new(),
                    source: source.to_owned(),
                    arch: None,
                }),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    }
}

/// Every package of the inventory, each (name, version, source, arch) once, sorted.
pub fn packages(report: &DaemonReport) -> Vec<Package> {
    let set: BTreeSet<Package> = software_functions(report)
        .flat_map(|(source, f)| function_packages(source, f))
        .collect();
    set.into_iter().collect()
}

/// Which sources an inventory holds without an error, with their packages.
fn comparable_software(report: &DaemonReport) -> BTreeMap<&'static str, Vec<Package>> {
    let mut sources: BTreeMap<&'static str, Vec<Package>> = BTreeMap::new();
    let mut failed = BTreeSet::new();
    for (source, f) in software_functions(report) {
        if f.error.is_some() {
            failed.insert(source);
        }
        sources
            .entry(source)
            .or_default()
            .extend(function_packages(source, f));
    }
    sources.retain(|s, _| !failed.contains(s));
    sources
}

/// Package key without the version: what an upgrade keeps.
type SlotKey = (String, String, Option<String>);

fn software_changes(old: &DaemonReport, new: &DaemonReport) -> Vec<Change> {
    let (old, new) = (comparable_software(old), comparable_software(new));
    let mut slots: BTreeMap<SlotKey, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for (source, packages) in &old {
        if !new.contains_key(source) {
            continue;
        }
        for p in packages {
            let key = (p.name.clone(), p.source.clone(), p.arch.clone());
            slots.entry(key).or_default().0.insert(p.version.clone());
        }
    }
    for (source, packages) in &new {
        if !old.contains_key(source) {
            continue;
        }
        for p in packages {
            let key = (p.name.clone(), p.source.clone(), p.arch.clone());
            slots.entry(key).or_default().1.insert(p.version.clone());
        }
    }
    // A name held under several sources or architectures is qualified in the item.
    let mut sources_of: BTreeMap<&str, BTreeSet<&str>> = BTreeMap::new();
    let mut arches_of: BTreeMap<(&str, &str), BTreeSet<Option<&str>>> = BTreeMap::new();
    for (name, source, arch) in slots.keys() {
        sources_of.entry(name).or_default().insert(source);
        arches_of
            .entry((name, source))
            .or_default()
            .insert(arch.as_deref());
    }
    let item = |(name, source, arch): &SlotKey| {
        let sources = &sources_of[name.as_str()];
        let arches = &arches_of[&(name.as_str(), source.as_str())];
        let mut item = name.clone();
        if arches.len() > 1
            && let Some(arch) = arch
        {
            item = format!("{item}:{arch}");
        }
        if sources.len() > 1 {
            item = format!("{item} ({source})");
        }
        item
    };
    let mut changes = Vec::new();
    for (key, (before, after)) in &slots {
        if before == after {
            continue;
        }
        let removed: Vec<&String> = before.difference(after).collect();
        let added: Vec<&String> = after.difference(before).collect();
        let item = item(key);
        // One version replaced by another is an upgrade or a downgrade; where several are
        // installed side by side (kernels), versions come and go on their own.
        if let ([old], [new]) = (removed.as_slice(), added.as_slice())
            && before.len() == 1
            && after.len() == 1
        {
            let change = match version::compare(&key.1, old, new) {
                std::cmp::Ordering::Less => "upgraded",
                std::cmp::Ordering::Greater => "downgraded",
                std::cmp::Ordering::Equal => "changed",
            };
            changes.push(Change {
                category: "software",
                change,
                item,
                old: Some((*old).clone()),
                new: Some((*new).clone()),
            });
            continue;
        }
        for old in removed {
            changes.push(Change {
                category: "software",
                change: "removed",
                item: item.clone(),
                old: Some(old.clone()),
                new: None,
            });
        }
        for new in added {
            changes.push(Change {
                category: "software",
                change: "added",
                item: item.clone(),
                old: None,
                new: Some(new.clone()),
            });
        }
    }
    changes
}

// ---------------------------------------------------------------------------------------------
// hardware

/// Bytes as a person reads them: binary units, one decimal.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: &[&str] = &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

fn join_present(parts: &[Option<&str>]) -> Option<String> {
    let words: Vec<&str> = parts
        .iter()
        .flatten()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

/// The hardware items one function describes: (item, value).
fn hardware_items(function: &FunctionReport) -> Vec<(String, String)> {
    match &function.data {
        FunctionData::Cpu(items) => items
            .first()
            .map(|cpu| {
                let model = cpu.model.as_deref().unwrap_or("unknown model");
                vec![("cpu".into(), format!("{model} ({} CPUs)", cpu.logical_cpus))]
            })
            .unwrap_or_default(),
        FunctionData::Memory(items) => items
            .first()
            .map(|m| vec![("memory".into(), human_bytes(m.total_bytes))])
            .unwrap_or_default(),
        FunctionData::Disks(items) => items
            .iter()
            .map(|d| {
                let mut value = human_bytes(d.size_bytes);
                if let Some(model) = join_present(&[d.vendor.as_deref(), d.model.as_deref()]) {
                    value = format!("{value} {model}");
                }
                (format!("disk:{}", d.name), value)
            })
            .collect(),
        FunctionData::Network(items) => items
            .iter()
            .filter(|n| n.name != "lo")
            .map(|n| {
                let mac = n
                    .mac
                    .clone()
                    .unwrap_or_else(|| "no hardware address".into());
                (format!("network:{}", n.name), mac)
            })
            .collect(),
        FunctionData::Dmi(items) => items
            .first()
            .map(|dmi| {
                let mut out = Vec::new();
                if let Some(system) =
                    join_present(&[dmi.system_vendor.as_deref(), dmi.system_product.as_deref()])
                {
                    out.push(("system".into(), system));
                }
                if let Some(bios) =
                    join_present(&[dmi.bios_vendor.as_deref(), dmi.bios_version.as_deref()])
                {
                    out.push(("bios".into(), bios));
                }
                out
            })
            .unwrap_or_default(),
        FunctionData::Other { name, data } => seed_hardware(name, data),
        _ => Vec::new(),
    }
}

/// The seed's flat hardware keys (raw JSON, units as the seed sent them).
fn seed_hardware(name: &str, data: &[Value]) -> Vec<(String, String)> {
    let text = |v: &Value| match v {
        Value::String(s) => Some(s.trim().to_owned()).filter(|s| !s.is_empty()),
        Value::Number(n) => Some(n.to_string()),
        Value::Object(o) => seed_text(o, &["model", "name", "brand", "processor"]),
        _ => None,
    };
    match name {
        "cpu_info" => data
            .first()
            .and_then(text)
            .map(|v| vec![("cpu".into(), v)])
            .unwrap_or_default(),
        "memory_total" => data
            .first()
            .and_then(text)
            .map(|v| vec![("memory".into(), v)])
            .unwrap_or_default(),
        "disk_info" => data
            .iter()
            .filter_map(|d| {
                let d = d.as_object()?;
                let name = seed_text(d, &["device", "drive", "name", "mountpoint", "mount"])?;
                let size = seed_text(d, &["total", "size", "total_bytes", "size_bytes"])
                    .unwrap_or_else(|| "unknown size".into());
                Some((format!("disk:{name}"), size))
            })
            .collect(),
        "network_info" => data
            .iter()
            .filter_map(|n| {
                let n = n.as_object()?;
                let name = seed_text(n, &["name", "interface", "adapter"])?;
                let mac = seed_text(n, &["mac", "mac_address", "macaddress", "hw_address"])
                    .unwrap_or_else(|| "no hardware address".into());
                Some((format!("network:{name}"), mac))
            })
            .collect(),
        _ => Vec::new(),
    }
}

const HARDWARE_FUNCTIONS: &[&str] = &[
    "cpu",
    "memory",
    "disks",
    "network",
    "dmi",
    "cpu_info",
    "memory_total",
    "disk_info",
    "network_info",
];

/// The hardware items of each function held without an error.
fn comparable_hardware(report: &DaemonReport) -> BTreeMap<&str, BTreeMap<String, String>> {
    report
        .worker_reports
        .iter()
        .filter(|w| w.name == Worker::Hardware)
        .flat_map(|w| &w.function_reports)
        .filter(|f| HARDWARE_FUNCTIONS.contains(&f.name()) && f.error.is_none())
        .map(|f| (f.name(), hardware_items(f).into_iter().collect()))
        .collect()
}

fn hardware_changes(old: &DaemonReport, new: &DaemonReport) -> Vec<Change> {
    let (old, new) = (comparable_hardware(old), comparable_hardware(new));
    let mut changes = Vec::new();
    for (function, before) in &old {
        let Some(after) = new.get(function) else {
            continue;
        };
        for (item, value) in before {
            match after.get(item) {
                None => changes.push(Change {
                    category: "hardware",
                    change: "removed",
                    item: item.clone(),
                    old: Some(value.clone()),
                    new: None,
                }),
                Some(now) if now != value => changes.push(Change {
                    category: "hardware",
                    change: "changed",
                    item: item.clone(),
                    old: Some(value.clone()),
                    new: Some(now.clone()),
                }),
                Some(_) => {}
            }
        }
        for (item, value) in after {
            if !before.contains_key(item) {
                changes.push(Change {
                    category: "hardware",
                    change: "added",
                    item: item.clone(),
                    old: None,
                    new: Some(value.clone()),
                });
            }
        }
    }
    changes.sort_by(|a, b| a.item.cmp(&b.item));
    changes
}

/// What changed from `old` to `new`: software (by package, ordered by item), then hardware.
pub fn diff(old: &DaemonReport, new: &DaemonReport) -> Vec<Change> {
    let mut changes = software_changes(old, new);
    changes.extend(hardware_changes(old, new));
    changes
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_proto::data::{Cpu, Disk, Dmi, Memory, NetworkInterface, Package as Pkg};
    use muster_proto::{HostIdentity, WorkerReport};
    use serde_json::json;

    fn pkg(name: &str, version: &str, source: &str, arch: Option<&str>) -> Pkg {
        Pkg {
            name: name.into(),
            version: version.into(),
            architecture: arch.map(Into::into),
            source: source.into(),
            installed_size_bytes: None,
            install_time: None,
            publisher: None,
            uninstall_string: None,
        }
    }

    fn report(hardware: Vec<FunctionReport>, software: Vec<FunctionReport>) -> DaemonReport {
        DaemonReport::new(
            HostIdentity {
                hostname: "h".into(),
                machine_id: None,
            },
            vec![
                WorkerReport::new(Worker::Hardware, hardware),
                WorkerReport::new(Worker::Software, software),
            ],
        )
    }

    fn dpkg(items: &[(&str, &str, &str)]) -> FunctionReport {
        FunctionReport::new(FunctionData::Dpkg(
            items
                .iter()
                .map(|(n, v, a)| pkg(n, v, "dpkg", Some(a)))
                .collect(),
        ))
    }

    fn disk(name: &str, size: u64) -> Disk {
        Disk {
            name: name.into(),
            size_bytes: size,
            model: Some("QEMU HARDDISK".into()),
            vendor: None,
            serial: None,
            rotational: false,
            removable: false,
        }
    }

    fn nic(name: &str, mac: &str) -> NetworkInterface {
        NetworkInterface {
            name: name.into(),
            mac: Some(mac.into()),
            mtu: Some(1500),
            oper_state: "up".into(),
            speed_mbps: None,
            addresses: vec![],
        }
    }

    fn cpu(model: &str, n: u32) -> FunctionReport {
        FunctionReport::new(FunctionData::Cpu(vec![Cpu {
            model: Some(model.into()),
            vendor: None,
            sockets: 1,
            physical_cores: n,
            logical_cpus: n,
            max_mhz: None,
        }]))
    }

    fn memory(total: u64) -> FunctionReport {
        FunctionReport::new(FunctionData::Memory(vec![Memory {
            total_bytes: total,
            swap_total_bytes: 0,
        }]))
    }

    fn change(
        category: &'static str,
        change: &'static str,
        item: &str,
        old: Option<&str>,
        new: Option<&str>,
    ) -> Change {
        Change {
            category,
            change,
            item: item.into(),
            old: old.map(Into::into),
            new: new.map(Into::into),
        }
    }

    #[test]
    fn packages_from_every_source_and_the_seed() {
        let snap = FunctionReport::new(FunctionData::Snap(vec![pkg(
            "core22", "20240111", "snap", None,
        )]));
        let mut r = report(
            vec![],
            vec![
                dpkg(&[
                    ("openssl", "3.0.2-0ubuntu1.10", "amd64"),
                    ("libc6", "2.35-0ubuntu3", "amd64"),
                ]),
                snap,
                FunctionReport::unavailable("rpm", "no rpm database"),
            ],
        );
        r.worker_reports.push(WorkerReport::new(
            Worker::Processes,
            vec![FunctionReport::new(FunctionData::Processes(vec![]))],
        ));
        let got = packages(&r);
        assert_eq!(
            got,
            vec![
                Package {
                    name: "core22".into(),
                    version: "20240111".into(),
                    source: "snap".into(),
                    arch: None
                },
                Package {
                    name: "libc6".into(),
                    version: "2.35-0ubuntu3".into(),
                    source: "dpkg".into(),
                    arch: Some("amd64".into())
                },
                Package {
                    name: "openssl".into(),
                    version: "3.0.2-0ubuntu1.10".into(),
                    source: "dpkg".into(),
                    arch: Some("amd64".into())
                },
            ]
        );

        let seed = FunctionReport::new(FunctionData::Other {
            name: SEED_SOFTWARE.into(),
            data: vec![
                json!({"name": "7-Zip", "version": "23.01", "publisher": "Igor Pavlov"}),
                json!({"name": "Notepad++", "version": 8.6}),
                json!({"name": "", "version": "1"}),
                json!({"version": "1"}),
                json!("Legacy Tool"),
            ],
        });
        let got = packages(&report(vec![], vec![seed]));
        let names: Vec<(&str, &str, &str)> = got
            .iter()
            .map(|p| (p.name.as_str(), p.version.as_str(), p.source.as_str()))
            .collect();
        assert_eq!(
            names,
            vec![
                ("7-Zip", "23.01", "seed"),
                ("Legacy Tool", "", "seed"),
                ("Notepad++", "8.6", "seed")
            ]
        );
    }

    #[test]
    fn software_changes_by_the_sources_ordering() {
        let old = report(
            vec![],
            vec![dpkg(&[
                ("openssl", "3.0.2-0ubuntu1.10", "amd64"),
                ("curl", "7.81.0-1ubuntu1.15", "amd64"),
                ("vim", "2:8.2.3995-1ubuntu2", "amd64"),
                ("libc6", "2.35-0ubuntu3", "amd64"),
                ("libc6", "2.35-0ubuntu3", "i386"),
                ("unchanged", "1.0", "all"),
            ])],
        );
        let new = report(
            vec![],
            vec![dpkg(&[
                // 1.10 → 1.12: upgraded (a string compare would say downgraded).
                ("openssl", "3.0.2-0ubuntu1.12", "amd64"),
                // A revision bump under an epoch.
                ("vim", "2:8.2.3995-1ubuntu2.15", "amd64"),
                ("libc6", "2.35-0ubuntu3.6", "amd64"),
                ("libc6", "2.35-0ubuntu3", "i386"),
                ("unchanged", "1.0", "all"),
                ("htop", "3.0.5-7build2", "amd64"),
            ])],
        );
        assert_eq!(
            diff(&old, &new),
            vec![
                change(
                    "software",
                    "removed",
                    "curl",
                    Some("7.81.0-1ubuntu1.15"),
                    None
                ),
                change("software", "added", "htop", None, Some("3.0.5-7build2")),
                change(
                    "software",
                    "upgraded",
                    "libc6:amd64",
                    Some("2.35-0ubuntu3"),
                    Some("2.35-0ubuntu3.6")
                ),
                change(
                    "software",
                    "upgraded",
                    "openssl",
                    Some("3.0.2-0ubuntu1.10"),
                    Some("3.0.2-0ubuntu1.12")
                ),
                change(
                    "software",
                    "upgraded",
                    "vim",
                    Some("2:8.2.3995-1ubuntu2"),
                    Some("2:8.2.3995-1ubuntu2.15")
                ),
            ]
        );
        // And back again.
        let back = diff(&new, &old);
        assert!(back.contains(&change(
            "software",
            "downgraded",
            "openssl",
            Some("3.0.2-0ubuntu1.12"),
            Some("3.0.2-0ubuntu1.10")
        )));
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn several_versions_and_sources_of_one_name() {
        let rpm = |versions: &[&str]| {
            FunctionReport::new(FunctionData::Rpm(
                versions
                    .iter()
                    .map(|v| pkg("kernel", v, "rpm", Some("x86_64")))
                    .collect(),
            ))
        };
        let snap =
            |v: &str| FunctionReport::new(FunctionData::Snap(vec![pkg("kernel", v, "snap", None)]));
        let old = report(
            vec![],
            vec![rpm(&["5.14.0-1.el9", "5.14.0-2.el9"]), snap("1")],
        );
        let new = report(
            vec![],
            vec![rpm(&["5.14.0-2.el9", "5.14.0-3.el9"]), snap("2")],
        );
        assert_eq!(
            diff(&old, &new),
            vec![
                change(
                    "software",
                    "removed",
                    "kernel (rpm)",
                    Some("5.14.0-1.el9"),
                    None
                ),
                change(
                    "software",
                    "added",
                    "kernel (rpm)",
                    None,
                    Some("5.14.0-3.el9")
                ),
                change(
                    "software",
                    "upgraded",
                    "kernel (snap)",
                    Some("1"),
                    Some("2")
                ),
            ]
        );
    }

    #[test]
    fn a_failed_or_missing_source_is_not_a_mass_removal() {
        let old = report(
            vec![memory(8 << 30)],
            vec![dpkg(&[("openssl", "3.0.2", "amd64")])],
        );
        let failed = report(
            vec![memory(8 << 30)],
            vec![FunctionReport::failed("dpkg", "dpkg-query: killed")],
        );
        assert!(diff(&old, &failed).is_empty());
        assert!(diff(&failed, &old).is_empty());
        let without = report(vec![], vec![]);
        assert!(diff(&old, &without).is_empty());
        // An unavailable source is an empty one: its packages were removed.
        let snapless_old = report(
            vec![],
            vec![FunctionReport::new(FunctionData::Snap(vec![pkg(
                "lxd", "5.0", "snap", None,
            )]))],
        );
        let snapless = report(
            vec![],
            vec![FunctionReport::unavailable(
                "snap",
                "snapd is not installed",
            )],
        );
        assert_eq!(
            diff(&snapless_old, &snapless),
            vec![change("software", "removed", "lxd", Some("5.0"), None)]
        );
    }

    #[test]
    fn hardware_changes_a_person_would_list() {
        let dmi = |bios: &str| {
            FunctionReport::new(FunctionData::Dmi(vec![Dmi {
                system_vendor: Some("Dell Inc.".into()),
                system_product: Some("PowerEdge R640".into()),
                bios_vendor: Some("Dell Inc.".into()),
                bios_version: Some(bios.into()),
                ..Dmi::default()
            }]))
        };
        let old = report(
            vec![
                cpu("Intel Xeon Gold 6130", 16),
                memory(16 << 30),
                FunctionReport::new(FunctionData::Disks(vec![
                    disk("sda", 500 << 30),
                    disk("sdb", 1 << 40),
                ])),
                FunctionReport::new(FunctionData::Network(vec![
                    nic("lo", "00:00:00:00:00:00"),
                    nic("eth0", "52:54:00:12:34:56"),
                    nic("eth1", "52:54:00:12:34:57"),
                ])),
                dmi("2.1.7"),
            ],
            vec![],
        );
        let new = report(
            vec![
                cpu("Intel Xeon Gold 6130", 32),
                // A few MiB less after a kernel update: not a change a person wants listed.
                memory((16 << 30) - (3 << 20)),
                FunctionReport::new(FunctionData::Disks(vec![
                    disk("sda", 1000 << 30),
                    disk("nvme0n1", 2 << 40),
                ])),
                FunctionReport::new(FunctionData::Network(vec![
                    nic("lo", "00:00:00:00:00:00"),
                    nic("eth0", "52:54:00:ab:cd:ef"),
                    nic("eth1", "52:54:00:12:34:57"),
                ])),
                dmi("2.19.1"),
            ],
            vec![],
        );
        assert_eq!(
            diff(&old, &new),
            vec![
                change(
                    "hardware",
                    "changed",
                    "bios",
                    Some("Dell Inc. 2.1.7"),
                    Some("Dell Inc. 2.19.1")
                ),
                change(
                    "hardware",
                    "changed",
                    "cpu",
                    Some("Intel Xeon Gold 6130 (16 CPUs)"),
                    Some("Intel Xeon Gold 6130 (32 CPUs)")
                ),
                change(
                    "hardware",
                    "added",
                    "disk:nvme0n1",
                    None,
                    Some("2.0 TiB QEMU HARDDISK")
                ),
                change(
                    "hardware",
                    "changed",
                    "disk:sda",
                    Some("500.0 GiB QEMU HARDDISK"),
                    Some("1000.0 GiB QEMU HARDDISK")
                ),
                change(
                    "hardware",
                    "removed",
                    "disk:sdb",
                    Some("1.0 TiB QEMU HARDDISK"),
                    None
                ),
                change(
                    "hardware",
                    "changed",
                    "network:eth0",
                    Some("52:54:00:12:34:56"),
                    Some("52:54:00:ab:cd:ef")
                ),
            ]
        );
        let more_memory = report(vec![memory(32 << 30)], vec![]);
        let less_memory = report(vec![memory(16 << 30)], vec![]);
        assert_eq!(
            diff(&less_memory, &more_memory),
            vec![change(
                "hardware",
                "changed",
                "memory",
                Some("16.0 GiB"),
                Some("32.0 GiB")
            )]
        );
    }

    #[test]
    fn seed_hardware_and_software_changes() {
        let seed = |cpu: &str, nics: Value, software: Value| {
            let body = json!({
                "hostname": "SERVER-01", "cpu_info": cpu, "memory_total": 16777216,
                "disk_info": [{"device": "C:", "total": 512}],
                "network_info": nics, "installed_software": software,
            });
            let (report, _) = crate::ingest::seed_report(
                body.as_object().unwrap(),
                "a1",
                jiff::Timestamp::UNIX_EPOCH,
            )
            .unwrap();
            report
        };
        let old = seed(
            "Intel Core i7-8700K",
            json!([{"name": "Ethernet", "mac": "AA-BB-CC-DD-EE-FF"}]),
            json!([{"name": "7-Zip", "version": "22.01"}, {"name": "Git", "version": "2.43.0"}]),
        );
        let new = seed(
            "Intel Core i9-9900K",
            json!([{"name": "Ethernet", "mac": "AA-BB-CC-DD-EE-FF"}, {"name": "Wi-Fi", "mac": "11-22-33-44-55-66"}]),
            json!([{"name": "7-Zip", "version": "23.01"}, {"name": "Git", "version": "2.43.0"}]),
        );
        assert_eq!(
            diff(&old, &new),
            vec![
                change(
                    "software",
                    "upgraded",
                    "7-Zip",
                    Some("22.01"),
                    Some("23.01")
                ),
                change(
                    "hardware",
                    "changed",
                    "cpu",
                    Some("Intel Core i7-8700K"),
                    Some("Intel Core i9-9900K")
                ),
                change(
                    "hardware",
                    "added",
                    "network:Wi-Fi",
                    None,
                    Some("11-22-33-44-55-66")
                ),
            ]
        );
    }

    #[test]
    fn bytes_read_as_a_person_reads_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(16 << 30), "16.0 GiB");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(u64::MAX), "16.0 EiB");
    }
}
