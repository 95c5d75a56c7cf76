//! The typed `data` items of each function report.
//!
//! Every item serializes every field, `null` included, so consumers see one shape per
//! function. Sizes are bytes, durations seconds, rates per second, percentages 0–100.

use std::net::IpAddr;

use jiff::Timestamp;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `hardware/system`: the host's identity and operating system.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SystemInfo {
    pub hostname: String,
    /// `NAME` from os-release (Windows: the product name).
    pub os_name: Option<String>,
    /// `VERSION_ID` from os-release (Windows: version and build).
    pub os_version: Option<String>,
    /// `ID` from os-release, e.g. `debian`, `rhel`, `alpine`.
    pub os_id: Option<String>,
    /// `PRETTY_NAME` from os-release.
    pub os_pretty_name: Option<String>,
    /// Kernel release, e.g. `6.1.0-18-amd64`.
    pub kernel: String,
    /// Machine architecture as the kernel names it, e.g. `x86_64`, `aarch64`.
    pub arch: String,
    pub boot_time: Option<Timestamp>,
    pub uptime_s: u64,
    /// The hypervisor this host runs under (`kvm`, `vmware`, `microsoft`, `xen`, ...), in
    /// systemd-detect-virt's vocabulary; `null` on bare metal or when it cannot be told.
    pub virtualization: Option<String>,
    /// The container this host runs in (`docker`, `podman`, `lxc`, `wsl`, ...); `null` if none.
    pub container: Option<String>,
    /// `/etc/machine-id` (Windows: the MachineGuid).
    pub machine_id: Option<String>,
}

/// `hardware/cpu`: one item describing all processors.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Cpu {
    pub model: Option<String>,
    pub vendor: Option<String>,
    pub sockets: u32,
    pub physical_cores: u32,
    pub logical_cpus: u32,
    pub max_mhz: Option<f64>,
}

/// `hardware/memory`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Memory {
    pub total_bytes: u64,
    pub swap_total_bytes: u64,
}

/// `hardware/disks`: one item per block device (whole disks, not partitions).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Disk {
    /// Kernel name, e.g. `sda`, `nvme0n1`, `vda`.
    pub name: String,
    pub size_bytes: u64,
    pub model: Option<String>,
    pub vendor: Option<String>,
    pub serial: Option<String>,
    pub rotational: bool,
    pub removable: bool,
}

/// `hardware/filesystems`: one item per mounted real (non-pseudo) filesystem.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Filesystem {
    pub mount_point: String,
    pub device: String,
    pub fs_type: String,
    pub read_only: bool,
    pub size_bytes: u64,
    /// Blocks in use, as `df` counts them (total minus free, reserved blocks included).
    pub used_bytes: u64,
    /// Space available to unprivileged users (`df`'s "Avail").
    pub free_bytes: u64,
    pub inodes_total: u64,
    pub inodes_used: u64,
    pub inodes_free: u64,
}

/// `hardware/network`: one item per network interface.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct NetworkInterface {
    pub name: String,
    /// Hardware address, lowercase colon-separated; `null` for interfaces without one.
    pub mac: Option<String>,
    pub mtu: Option<u32>,
    /// `up`, `down`, `unknown`, `dormant`, `lowerlayerdown`, ... (the kernel's operstate).
    pub oper_state: String,
    /// Link speed in Mbit/s where the driver reports one.
    pub speed_mbps: Option<u64>,
    pub addresses: Vec<IpAddress>,
}

/// One address of a network interface.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema)]
pub struct IpAddress {
    pub address: IpAddr,
    pub prefix_len: u8,
}

/// `hardware/dmi`: the SMBIOS/DMI identity of the machine.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Dmi {
    pub system_vendor: Option<String>,
    pub system_product: Option<String>,
    pub system_version: Option<String>,
    /// Readable by root only on Linux; `null` otherwise.
    pub system_serial: Option<String>,
    pub system_uuid: Option<String>,
    pub bios_vendor: Option<String>,
    pub bios_version: Option<String>,
    pub bios_date: Option<String>,
    pub board_vendor: Option<String>,
    pub board_name: Option<String>,
    pub board_serial: Option<String>,
    /// SMBIOS chassis type, as a name (`desktop`, `laptop`, `rack mount chassis`, ...).
    pub chassis_type: Option<String>,
    pub chassis_vendor: Option<String>,
}

/// `hardware/users`: one item per logged-in session.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct UserSession {
    pub user: String,
    /// The terminal line, e.g. `pts/0`, `tty1`.
    pub terminal: Option<String>,
    /// The remote host for remote logins.
    pub host: Option<String>,
    pub login_time: Option<Timestamp>,
    pub pid: Option<u32>,
}

/// `software/*`: one installed package, whichever source it comes from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Package {
    pub name: String,
    /// The version as the source writes it (dpkg: `[epoch:]upstream[-revision]`;
    /// rpm: `[epoch:]version-release`), so it compares by that source's rules.
    pub version: String,
    pub architecture: Option<String>,
    /// The function name of the source: `dpkg`, `rpm`, `apk`, `pacman`, `flatpak`, `snap`,
    /// `registry`.
    pub source: String,
    pub installed_size_bytes: Option<u64>,
    pub install_time: Option<Timestamp>,
    /// Vendor or publisher where the source records one.
    pub publisher: Option<String>,
    /// The command that removes it, where the source records one (Windows: the Uninstall
    /// key's `UninstallString`). Absent otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uninstall_string: Option<String>,
}

/// `processes/processes`: one running process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Process {
    pub pid: u32,
    pub ppid: u32,
    pub name: String,
    /// The argument vector; empty for kernel threads and zombies.
    pub cmdline: Vec<String>,
    pub user: Option<String>,
    pub uid: Option<u32>,
    /// `running`, `sleeping`, `disk_sleep`, `stopped`, `tracing_stop`, `zombie`, `dead`,
    /// `idle`, `parked`, or `unknown`.
    pub state: String,
    pub start_time: Option<Timestamp>,
    /// User plus system CPU time consumed so far.
    pub cpu_time_s: f64,
    pub rss_bytes: u64,
}

/// `services/systemd` and `services/windows_services`: one service unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct Service {
    pub name: String,
    pub load_state: String,
    pub active_state: String,
    pub sub_state: String,
    pub description: Option<String>,
    /// Windows: the name the Services console shows. Absent on Linux.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
    /// Windows: `boot`, `system`, `auto`, `demand` (manual) or `disabled`, as `sc qc` names
    /// them. Absent on Linux.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_type: Option<String>,
    /// Windows: the process a running service lives in (services can share one). Absent on
    /// Linux and for a stopped service.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// Windows: the command line the SCM starts (`ImagePath`). Absent on Linux.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary_path: Option<String>,
}

/// `telemetry/system_metrics`: one sample of the machine's load.
///
/// `cpu_usage`, `memory_usage` and `disk_usage` keep the seed agents' names and meaning
/// (percent busy CPU, percent memory in use, percent of the root filesystem used).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SystemMetrics {
    /// Percent of all CPUs busy over `interval_s`; `null` when there is no earlier sample.
    pub cpu_usage: Option<f64>,
    pub memory_usage: f64,
    /// Percent of the root filesystem (Windows: the system drive) in use.
    pub disk_usage: Option<f64>,
    pub load_1: Option<f64>,
    pub load_5: Option<f64>,
    pub load_15: Option<f64>,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub swap_total_bytes: u64,
    pub swap_used_bytes: u64,
    pub swap_usage: f64,
    /// Bytes received and sent by all non-loopback interfaces since boot.
    pub net_rx_bytes: u64,
    pub net_tx_bytes: u64,
    pub net_rx_bytes_per_s: Option<f64>,
    pub net_tx_bytes_per_s: Option<f64>,
    /// Bytes read from and written to whole disks since boot.
    pub disk_read_bytes: u64,
    pub disk_write_bytes: u64,
    pub disk_read_bytes_per_s: Option<f64>,
    pub disk_write_bytes_per_s: Option<f64>,
    /// Seconds between the two samples the rates and `cpu_usage` were taken from.
    pub interval_s: Option<f64>,
}
