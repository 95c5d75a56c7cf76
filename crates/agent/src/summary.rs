//! The short human summary of a report (`muster-agent scan --summary`).

use std::fmt::Write as _;

use muster_proto::{DaemonReport, FunctionData, FunctionReport, Worker};

/// Renders the report as a few aligned lines: host, OS, CPU, memory, disks, packages per
/// source, process and service counts, telemetry, and every collector that failed.
pub fn render(report: &DaemonReport) -> String {
    let mut out = Lines::default();
    out.line("host", host(report));
    for function in report
        .worker_reports
        .iter()
        .flat_map(|w| &w.function_reports)
    {
        match &function.data {
            FunctionData::System(items) => {
                if let Some(s) = items.first() {
                    let os = s.os_pretty_name.clone().or_else(|| s.os_name.clone());
                    out.line(
                        "os",
                        format!(
                            "{}, kernel {}, {}, up {}",
                            os.as_deref().unwrap_or("unknown"),
                            s.kernel,
                            s.arch,
                            duration(s.uptime_s)
                        ),
                    );
                    let virt = [("vm", &s.virtualization), ("container", &s.container)]
                        .iter()
                        .filter_map(|(kind, v)| v.as_ref().map(|v| format!("{kind} {v}")))
                        .collect::<Vec<_>>();
                    if !virt.is_empty() {
                        out.line("virtual", virt.join(", "));
                    }
                }
            }
            FunctionData::Cpu(items) => {
                for c in items {
                    let mut text = c.model.clone().unwrap_or_else(|| "unknown model".into());
                    let _ = write!(
                        text,
                        ": {} socket{}, {} core{}, {} thread{}",
                        c.sockets,
                        plural(c.sockets.into()),
                        c.physical_cores,
                        plural(c.physical_cores.into()),
                        c.logical_cpus,
                        plural(c.logical_cpus.into()),
                    );
                    if let Some(mhz) = c.max_mhz {
                        let _ = write!(text, ", {mhz:.0} MHz");
                    }
                    out.line("cpu", text);
                }
            }
            FunctionData::Memory(items) => {
                for m in items {
                    out.line(
                        "memory",
                        format!(
                            "{}, swap {}",
                            bytes(m.total_bytes),
                            bytes(m.swap_total_bytes)
                        ),
                    );
                }
            }
            FunctionData::Disks(items) => {
                let disks = items.iter().map(|d| {
                    let model = d
                        .model
                        .as_deref()
                        .map(|m| format!(" {m}"))
                        .unwrap_or_default();
                    format!("{} {}{model}", d.name, bytes(d.size_bytes))
                });
                out.list("disks", disks);
            }
            FunctionData::Filesystems(items) => {
                let filesystems = items.iter().map(|f| {
                    format!(
                        "{} {} {} of {} used",
                        f.mount_point,
                        f.fs_type,
                        bytes(f.used_bytes),
                        bytes(f.size_bytes)
                    )
                });
                out.list("filesystems", filesystems);
            }
            FunctionData::Network(items) => {
                let interfaces = items.iter().filter(|n| n.name != "lo").map(|n| {
                    let mut text = format!("{} {}", n.name, n.oper_state);
                    for a in &n.addresses {
                        let _ = write!(text, " {}/{}", a.address, a.prefix_len);
                    }
                    text
                });
                out.list("network", interfaces);
            }
            FunctionData::Users(items) if !items.is_empty() => {
                let mut users: Vec<&str> = items.iter().map(|u| u.user.as_str()).collect();
                users.sort_unstable();
                users.dedup();
                out.line(
                    "users",
                    format!("{} session(s): {}", items.len(), users.join(", ")),
                );
            }
            FunctionData::Processes(items) => out.line("processes", items.len().to_string()),
            FunctionData::Systemd(items) | FunctionData::WindowsServices(items) => {
                let label = format!("{} ({})", function.name(), items.len());
                match &function.unavailable {
                    Some(reason) => out.line("services", format!("unavailable: {reason}")),
                    None => {
                        let running = items.iter().filter(|s| s.sub_state == "running").count();
                        out.line("services", format!("{label}, {running} running"));
                    }
                }
            }
            FunctionData::SystemMetrics(items) => {
                for m in items {
                    let mut text = String::new();
                    if let Some(cpu) = m.cpu_usage {
                        let _ = write!(text, "cpu {cpu:.1}%, ");
                    }
                    let _ = write!(text, "memory {:.1}%", m.memory_usage);
                    if let Some(disk) = m.disk_usage {
                        let _ = write!(text, ", disk {disk:.1}%");
                    }
                    if let (Some(l1), Some(l5), Some(l15)) = (m.load_1, m.load_5, m.load_15) {
                        let _ = write!(text, ", load {l1:.2} {l5:.2} {l15:.2}");
                    }
                    out.line("telemetry", text);
                }
            }
            _ => {}
        }
    }
    if let Some(software) = report.worker(Worker::Software) {
        let sources = software
            .function_reports
            .iter()
            .map(|f| format!("{} {}", f.name(), f.data.len()))
            .collect::<Vec<_>>();
        let text = if sources.is_empty() {
            "no package source found".into()
        } else {
            sources.join(", ")
        };
        out.line("packages", text);
    }
    let problems = report
        .worker_reports
        .iter()
        .flat_map(|w| &w.function_reports)
        .filter_map(|f: &FunctionReport| f.error.as_ref().map(|e| format!("{}: {e}", f.name())));
    out.list("errors", problems);
    out.0
}

#[derive(Default)]
struct Lines(String);

impl Lines {
    fn line(&mut self, label: &str, text: impl AsRef<str>) {
        let _ = writeln!(self.0, "{label:<12}{}", text.as_ref());
    }

    /// One line per item, the label on the first.
    fn list(&mut self, label: &str, items: impl Iterator<Item = String>) {
        for (i, item) in items.enumerate() {
            self.line(if i == 0 { label } else { "" }, item);
        }
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Binary units with one decimal: `23.6 GiB`.
fn bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// `3d 4h`, `5h 12m`, `42m`.
fn duration(seconds: u64) -> String {
    let (days, hours, minutes) = (seconds / 86_400, seconds / 3_600 % 24, seconds / 60 % 60);
    match (days, hours) {
        (0, 0) => format!("{minutes}m"),
        (0, _) => format!("{hours}h {minutes}m"),
        _ => format!("{days}d {hours}h"),
    }
}

fn host(report: &DaemonReport) -> String {
    match &report.host.machine_id {
        Some(id) => format!("{} (machine-id {id})", report.host.hostname),
        None => report.host.hostname.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use muster_proto::data::*;
    use muster_proto::{HostIdentity, WorkerReport};

    fn report() -> DaemonReport {
        let system = SystemInfo {
            hostname: "web-01".into(),
            os_name: Some("Debian GNU/Linux".into()),
            os_version: Some("12".into()),
            os_id: Some("debian".into()),
            os_pretty_name: Some("Debian GNU/Linux 12 (bookworm)".into()),
            kernel: "6.1.0-18-amd64".into(),
            arch: "x86_64".into(),
            boot_time: None,
            uptime_s: 3 * 86_400 + 4 * 3_600 + 5,
            virtualization: Some("kvm".into()),
            container: None,
            machine_id: Some("abc".into()),
        };
        let cpu = Cpu {
            model: Some("AMD EPYC 7B13".into()),
            vendor: Some("AuthenticAMD".into()),
            sockets: 1,
            physical_cores: 2,
            logical_cpus: 4,
            max_mhz: Some(3049.0),
        };
        let disk = Disk {
            name: "vda".into(),
            size_bytes: 100 << 30,
            model: None,
            vendor: None,
            serial: None,
            rotational: false,
            removable: false,
        };
        let package = |name: &str, source: &str| Package {
            name: name.into(),
            version: "1".into(),
            architecture: None,
            source: source.into(),
            installed_size_bytes: None,
            install_time: None,
            publisher: None,
            uninstall_string: None,
        };
        DaemonReport::new(
            HostIdentity {
                hostname: "web-01".into(),
                machine_id: Some("abc".into()),
            },
            vec![
                WorkerReport::new(
                    Worker::Hardware,
                    vec![
                        FunctionReport::new(FunctionData::System(vec![system])),
                        FunctionReport::new(FunctionData::Cpu(vec![cpu])),
                        FunctionReport::new(FunctionData::Memory(vec![Memory {
                            total_bytes: 24_724_288 * 1024,
                            swap_total_bytes: 0,
                        }])),
                        FunctionReport::new(FunctionData::Disks(vec![disk])),
                        FunctionReport::failed("users", "reading /run/utmp: permission denied"),
                    ],
                ),
                WorkerReport::new(
                    Worker::Software,
                    vec![
                        FunctionReport::new(FunctionData::Dpkg(vec![
                            package("bash", "dpkg"),
                            package("curl", "dpkg"),
                        ])),
                        FunctionReport::new(FunctionData::Snap(vec![package("lxd", "snap")])),
                    ],
                ),
                WorkerReport::new(
                    Worker::Services,
                    vec![FunctionReport::unavailable(
                        "systemd",
                        "systemd is not running",
                    )],
                ),
            ],
        )
    }

    #[test]
    fn summary_lists_the_essentials_and_the_failures() {
        insta::assert_snapshot!(render(&report()));
    }

    #[test]
    fn sizes_and_durations_read_naturally() {
        assert_eq!(bytes(512), "512 B");
        assert_eq!(bytes(1536), "1.5 KiB");
        assert_eq!(bytes(100 << 30), "100.0 GiB");
        assert_eq!(duration(59), "0m");
        assert_eq!(duration(3_660), "1h 1m");
        assert_eq!(duration(90_000), "1d 1h");
    }
}
