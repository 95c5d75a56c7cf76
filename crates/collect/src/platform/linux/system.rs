//! `hardware/system`: host name, machine id, os-release, kernel, boot time, and the hypervisor
//! and container the host runs in (systemd-detect-virt's checks, minus CPUID).

use jiff::Timestamp;
use muster_proto::data::SystemInfo;
use muster_proto::{FunctionData, FunctionReport};

use crate::{CollectError, Collected, Context};

/// The os-release fields Muster reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub name: Option<String>,
    pub version_id: Option<String>,
    pub id: Option<String>,
    pub pretty_name: Option<String>,
}

/// Parses os-release(5): shell-style `KEY=value` lines, values optionally quoted.
///
/// Blank lines, comments and lines that are not assignments are skipped; an empty value counts
/// as unset.
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut release = OsRelease::default();
    for line in text.lines() {
        let line = line.trim_start();
        if line.starts_with('#') {
            continue;
        }
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let slot = match key {
            "NAME" => &mut release.name,
            "VERSION_ID" => &mut release.version_id,
            "ID" => &mut release.id,
            "PRETTY_NAME" => &mut release.pretty_name,
            _ => continue,
        };
        let value = unquote_shell(raw);
        *slot = (!value.is_empty()).then_some(value);
    }
    release
}

/// One shell word: quotes removed, escapes resolved as sh does, stopping at unquoted
/// whitespace (which is where a trailing `# comment` starts).
fn unquote_shell(raw: &str) -> String {
    #[derive(Clone, Copy, PartialEq)]
    enum Quote {
        None,
        Single,
        Double,
    }
    let mut out = String::with_capacity(raw.len());
    let mut quote = Quote::None;
    let mut chars = raw.chars();
    while let Some(c) = chars.next() {
        match (quote, c) {
            (Quote::None, c) if c.is_whitespace() => break,
            (Quote::None, '\'') => quote = Quote::Single,
            (Quote::None, '"') => quote = Quote::Double,
            (Quote::None, '\\') => out.extend(chars.next()),
            (Quote::Single, '\'') | (Quote::Double, '"') => quote = Quote::None,
            (Quote::Double, '\\') => match chars.next() {
                Some(e @ ('$' | '"' | '\\' | '`')) => out.push(e),
                Some(other) => {
                    out.push('\\');
                    out.push(other);
                }
                None => out.push('\\'),
            },
            (_, c) => out.push(c),
        }
    }
    out
}

/// The boot time in Unix seconds from the `btime` line of `/proc/stat`.
pub fn parse_btime(text: &str) -> Option<i64> {
    text.lines()
        .find_map(|line| line.strip_prefix("btime "))
        .and_then(|rest| rest.trim().parse().ok())
}

/// Whole seconds since boot from `/proc/uptime` (`<uptime> <idle>`).
pub fn parse_uptime(text: &str) -> Option<u64> {
    let seconds: f64 = text.split_whitespace().next()?.parse().ok()?;
    // `as` saturates; the range check only keeps NaN and negatives out.
    (seconds.is_finite() && seconds >= 0.0).then_some(seconds as u64)
}

/// The host name: `/proc/sys/kernel/hostname`, else `/etc/hostname`.
pub fn hostname(context: &Context) -> Option<String> {
    // "(none)" is the kernel's name for a host nobody has named yet.
    let kernel = context
        .attr("/proc/sys/kernel/hostname")
        .filter(|name| name != "(none)");
    kernel.or_else(|| {
        let text = context.read_optional("/etc/hostname").ok()??;
        text.lines()
            .map(str::trim)
            .find(|line| !line.is_empty() && !line.starts_with('#'))
            .map(str::to_owned)
    })
}

/// The machine id: `/etc/machine-id`, else D-Bus's copy in `/var/lib/dbus/machine-id`.
pub fn machine_id(context: &Context) -> Option<String> {
    // systemd writes "uninitialized" while first boot is still under way.
    let valid = |id: &String| id != "uninitialized";
    context
        .attr("/etc/machine-id")
        .filter(valid)
        .or_else(|| context.attr("/var/lib/dbus/machine-id").filter(valid))
}

pub use crate::platform::virt::{VirtInputs, cpuid_hypervisor_vendor, detect_virtualization};

/// Whether the first `flags` line of `/proc/cpuinfo` lists `hypervisor` (x86 only).
pub fn cpuinfo_has_hypervisor_flag(cpuinfo: &str) -> bool {
    cpuinfo
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(':')?;
            (key.trim_end() == "flags").then_some(value)
        })
        .is_some_and(|flags| flags.split_whitespace().any(|f| f == "hypervisor"))
}

/// What the container check looks at.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerInputs {
    /// `/proc/vz` exists and `/proc/bc` does not (the latter only exists on the OpenVZ host).
    pub openvz: bool,
    /// `/proc/sys/kernel/osrelease`.
    pub kernel_release: Option<String>,
    /// `/proc/sys/fs/binfmt_misc/WSLInterop` (or `WSLInterop-late`) exists.
    pub wsl_interop: bool,
    /// `/run/host/container-manager`.
    pub host_container_manager: Option<String>,
    /// `/run/systemd/container`, written by systemd from its `container=` variable.
    pub systemd_container: Option<String>,
    /// `container=` from PID 1's environment.
    pub pid1_container: Option<String>,
    /// `/run/.containerenv` exists.
    pub containerenv: bool,
    /// `/.dockerenv` exists.
    pub dockerenv: bool,
}

/// The container named in systemd-detect-virt's vocabulary, or `None` when not in one.
///
/// Explicit statements from the container manager win over marker files, since a
/// `/.dockerenv` may have come along in an image built with Docker and run elsewhere.
pub fn detect_container(inputs: &ContainerInputs) -> Option<&'static str> {
    if inputs.openvz {
        return Some("openvz");
    }
    let wsl_kernel = inputs
        .kernel_release
        .as_deref()
        .is_some_and(|r| r.contains("Microsoft") || r.contains("microsoft") || r.contains("WSL"));
    if wsl_kernel || inputs.wsl_interop {
        return Some("wsl");
    }
    let from_files = || {
        if inputs.containerenv {
            Some("podman")
        } else if inputs.dockerenv {
            Some("docker")
        } else {
            None
        }
    };
    let declared = [
        &inputs.host_container_manager,
        &inputs.systemd_container,
        &inputs.pid1_container,
    ]
    .into_iter()
    .flatten()
    .map(|s| s.trim())
    .find(|s| !s.is_empty());
    match declared {
        Some("oci") => Some(from_files().unwrap_or("container-other")),
        Some(name) => Some(container_name(name)),
        None => from_files(),
    }
}

fn container_name(declared: &str) -> &'static str {
    match declared {
        "lxc" => "lxc",
        "lxc-libvirt" => "lxc-libvirt",
        "systemd-nspawn" => "systemd-nspawn",
        "docker" => "docker",
        "podman" => "podman",
        "rkt" => "rkt",
        "wsl" => "wsl",
        "proot" => "proot",
        "pouch" => "pouch",
        _ => "container-other",
    }
}

/// The value of `name` in a NUL-separated environment block such as `/proc/<pid>/environ`.
pub fn environ_var(environ: &[u8], name: &str) -> Option<String> {
    environ.split(|&b| b == 0).find_map(|entry| {
        let value = entry.strip_prefix(name.as_bytes())?.strip_prefix(b"=")?;
        Some(String::from_utf8_lossy(value).into_owned())
    })
}

fn read_os_release(context: &Context) -> Result<OsRelease, CollectError> {
    for path in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Some(text) = context.read_optional(path)? {
            return Ok(parse_os_release(&text));
        }
    }
    Ok(OsRelease::default())
}

fn arch(context: &Context) -> String {
    let live = context
        .is_live()
        .then(|| nix::sys::utsname::uname().ok())
        .flatten()
        .map(|uts| uts.machine().to_string_lossy().into_owned())
        .filter(|m| !m.is_empty());
    live.or_else(|| context.attr("/proc/sys/kernel/arch"))
        .unwrap_or_else(|| std::env::consts::ARCH.to_owned())
}

fn virtualization(context: &Context) -> Option<&'static str> {
    let dmi = |name: &str| context.attr(format!("/sys/class/dmi/id/{name}"));
    let mut inputs = VirtInputs {
        dmi: [
            dmi("product_name"),
            dmi("sys_vendor"),
            dmi("board_vendor"),
            dmi("bios_vendor"),
            dmi("product_version"),
        ],
        hypervisor_type: context.attr("/sys/hypervisor/type"),
        xen_capabilities: context.attr("/proc/xen/capabilities"),
        device_tree_hypervisor: context.attr("/proc/device-tree/hypervisor/compatible"),
        cpu_hypervisor_flag: false,
        // CPUID describes the machine we run on, not a fixture tree.
        cpuid_vendor: context.is_live().then(cpuid_hypervisor_vendor).flatten(),
    };
    // cpuinfo is the costliest input and only the last resort, so it is read only when the
    // cheap ones said nothing.
    if let found @ Some(_) = detect_virtualization(&inputs) {
        return found;
    }
    inputs.cpu_hypervisor_flag = context
        .read_optional("/proc/cpuinfo")
        .ok()
        .flatten()
        .is_some_and(|text| cpuinfo_has_hypervisor_flag(&text));
    detect_virtualization(&inputs)
}

fn container(context: &Context, kernel_release: &str) -> Option<&'static str> {
    // PID 1's environment is root-only unless we are PID 1's user; unreadable means unknown.
    let pid1_container = std::fs::read(context.path("/proc/1/environ"))
        .ok()
        .and_then(|environ| environ_var(&environ, "container"));
    let inputs = ContainerInputs {
        openvz: context.exists("/proc/vz") && !context.exists("/proc/bc"),
        kernel_release: Some(kernel_release.to_owned()),
        wsl_interop: context.exists("/proc/sys/fs/binfmt_misc/WSLInterop")
            || context.exists("/proc/sys/fs/binfmt_misc/WSLInterop-late"),
        host_container_manager: context.attr("/run/host/container-manager"),
        systemd_container: context.attr("/run/systemd/container"),
        pid1_container,
        containerenv: context.exists("/run/.containerenv"),
        dockerenv: context.exists("/.dockerenv"),
    };
    detect_container(&inputs)
}

/// One [`SystemInfo`]; the kernel release and `/proc/uptime` are required, the rest optional.
pub fn collect(context: &Context) -> Collected {
    const OSRELEASE: &str = "/proc/sys/kernel/osrelease";
    const UPTIME: &str = "/proc/uptime";
    let os = read_os_release(context)?;
    let kernel = context.read(OSRELEASE)?.trim().to_owned();
    let uptime_s = parse_uptime(&context.read(UPTIME)?)
        .ok_or_else(|| CollectError::parse(context.path(UPTIME), "no uptime in seconds"))?;
    let boot_time = context
        .read_optional("/proc/stat")?
        .as_deref()
        .and_then(parse_btime)
        .and_then(|secs| Timestamp::from_second(secs).ok());
    let info = SystemInfo {
        hostname: hostname(context).unwrap_or_default(),
        os_name: os.name,
        os_version: os.version_id,
        os_id: os.id,
        os_pretty_name: os.pretty_name,
        arch: arch(context),
        boot_time,
        uptime_s,
        virtualization: virtualization(context).map(str::to_owned),
        container: container(context, &kernel).map(str::to_owned),
        kernel,
        machine_id: machine_id(context),
    };
    Ok(Some(FunctionReport::new(FunctionData::System(vec![info]))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hardware-a");

    fn os(name: &str, version: Option<&str>, id: &str, pretty: &str) -> OsRelease {
        OsRelease {
            name: Some(name.to_owned()),
            version_id: version.map(str::to_owned),
            id: Some(id.to_owned()),
            pretty_name: Some(pretty.to_owned()),
        }
    }

    #[test]
    fn parses_real_os_release_files() {
        let cases = [
            (
                include_str!("../../../tests/fixtures/hardware-a/os-release/debian-12"),
                os(
                    "Debian GNU/Linux",
                    Some("12"),
                    "debian",
                    "Debian GNU/Linux 12 (bookworm)",
                ),
            ),
            (
                include_str!("../../../tests/fixtures/hardware-a/os-release/ubuntu-22.04"),
                os("Ubuntu", Some("22.04"), "ubuntu", "Ubuntu 22.04.4 LTS"),
            ),
            (
                include_str!("../../../tests/fixtures/hardware-a/os-release/rhel-9"),
                os(
                    "Red Hat Enterprise Linux",
                    Some("9.3"),
                    "rhel",
                    "Red Hat Enterprise Linux 9.3 (Plow)",
                ),
            ),
            (
                include_str!("../../../tests/fixtures/hardware-a/os-release/alpine-3.19"),
                os(
                    "Alpine Linux",
                    Some("3.19.1"),
                    "alpine",
                    "Alpine Linux v3.19",
                ),
            ),
            (
                include_str!("../../../tests/fixtures/hardware-a/os-release/arch"),
                os("Arch Linux", None, "arch", "Arch Linux"),
            ),
        ];
        for (text, expected) in cases {
            assert_eq!(parse_os_release(text), expected);
        }
    }

    #[test]
    fn os_release_quoting_follows_the_shell() {
        let text = "# a comment\n\n  NAME='It''s \"single\"'\nID=plain # trailing comment\n\
            PRETTY_NAME=\"say \\\"hi\\\" \\$HOME \\\\ \\n\"\nVERSION_ID=\"\"\nbogus line\n";
        let release = parse_os_release(text);
        assert_eq!(release.name.as_deref(), Some("Its \"single\""));
        assert_eq!(release.id.as_deref(), Some("plain"));
        assert_eq!(
            release.pretty_name.as_deref(),
            Some("say \"hi\" $HOME \\ \\n")
        );
        assert_eq!(release.version_id, None);
        assert_eq!(parse_os_release("ID=a\\ b\n").id.as_deref(), Some("a b"));
        assert_eq!(
            parse_os_release("ID=\"unterminated\n").id.as_deref(),
            Some("unterminated")
        );
    }

    #[test]
    fn parses_btime_and_uptime() {
        let stat = "cpu  1 2 3 4 5 6 7 0 0 0\ncpu0 1 2 3 4 5 6 7 0 0 0\nintr 12 0 9\n\
            ctxt 2345\nbtime 1795301557\nprocesses 4567\n";
        assert_eq!(parse_btime(stat), Some(1_795_301_557));
        assert_eq!(parse_btime("cpu 1 2 3\n"), None);
        assert_eq!(parse_uptime("497.68 753.25\n"), Some(497));
        assert_eq!(parse_uptime("-1.0 2.0"), None);
        assert_eq!(parse_uptime("NaN 2.0"), None);
        assert_eq!(parse_uptime(""), None);
    }

    /// Inputs from a `product_name|sys_vendor|board_vendor|bios_vendor|product_version` line,
    /// `-` for a missing attribute.
    fn vm(dmi: &str) -> VirtInputs {
        let mut fields = dmi.split('|').map(|f| (f != "-").then(|| f.to_owned()));
        VirtInputs {
            dmi: std::array::from_fn(|_| fields.next().flatten()),
            ..VirtInputs::default()
        }
    }

    #[test]
    fn detects_hypervisors_from_dmi() {
        let cases = [
            (
                "Standard PC (Q35 + ICH9, 2009)|QEMU|-|SeaBIOS|pc-q35-7.2",
                Some("qemu"),
            ),
            (
                "KVM|Red Hat|-|SeaBIOS|RHEL 7.6.0 PC (i440FX + PIIX, 1996)",
                Some("kvm"),
            ),
            (
                "OpenStack Compute|OpenStack Foundation|-|SeaBIOS|23.2.1",
                Some("kvm"),
            ),
            (
                "VMware Virtual Platform|VMware, Inc.|Intel Corporation|\
                 Phoenix Technologies LTD|None",
                Some("vmware"),
            ),
            (
                "VirtualBox|innotek GmbH|Oracle Corporation|innotek GmbH|1.2",
                Some("oracle"),
            ),
            ("HVM domU|Xen|-|Xen|4.11.amazon", Some("xen")),
            (
                "m6i.large|Amazon EC2|Amazon EC2|Amazon EC2|-",
                Some("amazon"),
            ),
            ("m6i.metal|Amazon EC2|Amazon EC2|Amazon EC2|-", None),
            (
                "Google Compute Engine|Google|Google|Google|-",
                Some("google"),
            ),
            (
                "Virtual Machine|Microsoft Corporation|Microsoft Corporation|\
                 Microsoft Corporation|Hyper-V UEFI Release v4.1",
                Some("microsoft"),
            ),
            (
                "Virtual Machine|Microsoft Corporation|Microsoft Corporation|\
                 American Megatrends Inc.|7.0",
                Some("microsoft"),
            ),
            (
                "Parallels Virtual Platform|Parallels Software International Inc.|-|\
                 Parallels Software International Inc.|-",
                Some("parallels"),
            ),
            ("Bochs|Bochs|-|Bochs|-", Some("bochs")),
            ("PowerEdge R740|Dell Inc.|Dell Inc.|Dell Inc.|-", None),
            (
                "20XW0055GE|LENOVO|LENOVO|LENOVO|ThinkPad X1 Carbon Gen 9",
                None,
            ),
            // A Chromebook (Pixelbook) running a native Linux.
            ("Eve|Google|Google|coreboot|1.0", None),
            ("-|-|-|-|-", None),
        ];
        for (dmi, expected) in cases {
            assert_eq!(detect_virtualization(&vm(dmi)), expected, "{dmi}");
        }
    }

    #[test]
    fn detects_hypervisors_without_dmi() {
        let xen_domu = VirtInputs {
            hypervisor_type: Some("xen".into()),
            xen_capabilities: Some(String::new()),
            cpu_hypervisor_flag: true,
            ..VirtInputs::default()
        };
        assert_eq!(detect_virtualization(&xen_domu), Some("xen"));
        let xen_dom0 = VirtInputs {
            xen_capabilities: Some("control_d".into()),
            ..xen_domu
        };
        assert_eq!(detect_virtualization(&xen_dom0), None);
        let arm_kvm = VirtInputs {
            device_tree_hypervisor: Some("linux,kvm".into()),
            ..VirtInputs::default()
        };
        assert_eq!(detect_virtualization(&arm_kvm), Some("kvm"));
        let flag_only = VirtInputs {
            cpu_hypervisor_flag: true,
            ..VirtInputs::default()
        };
        assert_eq!(detect_virtualization(&flag_only), Some("vm-other"));
        assert_eq!(detect_virtualization(&VirtInputs::default()), None);
    }

    #[test]
    fn cpuid_tells_kvm_from_plain_qemu_but_named_platforms_keep_their_name() {
        let with_cpuid = |dmi: &str, vendor: &str| VirtInputs {
            cpuid_vendor: Some(vendor.into()),
            cpu_hypervisor_flag: true,
            ..vm(dmi)
        };
        let qemu_dmi = "Standard PC (Q35 + ICH9, 2009)|QEMU|-|SeaBIOS|pc-q35-7.2";
        assert_eq!(
            detect_virtualization(&with_cpuid(qemu_dmi, "KVMKVMKVM")),
            Some("kvm")
        );
        assert_eq!(
            detect_virtualization(&with_cpuid(qemu_dmi, "TCGTCGTCGTCG")),
            Some("qemu")
        );
        let ec2 = "m6i.large|Amazon EC2|Amazon EC2|Amazon EC2|-";
        assert_eq!(
            detect_virtualization(&with_cpuid(ec2, "KVMKVMKVM")),
            Some("amazon")
        );
        let vbox = "VirtualBox|innotek GmbH|Oracle Corporation|innotek GmbH|1.2";
        assert_eq!(
            detect_virtualization(&with_cpuid(vbox, "KVMKVMKVM")),
            Some("oracle")
        );
        // No DMI at all (Firecracker, cloud-hypervisor): CPUID alone names it.
        assert_eq!(
            detect_virtualization(&with_cpuid("-|-|-|-|-", "KVMKVMKVM")),
            Some("kvm")
        );
        assert_eq!(
            detect_virtualization(&with_cpuid("-|-|-|-|-", "Microsoft Hv")),
            Some("microsoft")
        );
        assert_eq!(
            detect_virtualization(&with_cpuid("-|-|-|-|-", "SomethingNew")),
            Some("vm-other")
        );
    }

    #[test]
    fn finds_the_hypervisor_cpu_flag() {
        let text = "processor\t: 0\nflags\t\t: fpu vme hypervisor lahf_lm\n\n\
            processor\t: 1\nflags\t\t: fpu vme\n";
        assert!(cpuinfo_has_hypervisor_flag(text));
        assert!(!cpuinfo_has_hypervisor_flag("flags\t: fpu hypervisor_x\n"));
        assert!(!cpuinfo_has_hypervisor_flag("Features\t: fp asimd\n"));
    }

    #[test]
    fn detects_containers() {
        let none = ContainerInputs::default();
        assert_eq!(detect_container(&none), None);
        let docker = ContainerInputs {
            dockerenv: true,
            ..ContainerInputs::default()
        };
        assert_eq!(detect_container(&docker), Some("docker"));
        let podman = ContainerInputs {
            containerenv: true,
            pid1_container: Some("oci".into()),
            ..ContainerInputs::default()
        };
        assert_eq!(detect_container(&podman), Some("podman"));
        let lxc = ContainerInputs {
            pid1_container: Some("lxc".into()),
            dockerenv: true,
            ..ContainerInputs::default()
        };
        assert_eq!(detect_container(&lxc), Some("lxc"));
        let nspawn = ContainerInputs {
            systemd_container: Some("systemd-nspawn".into()),
            ..ContainerInputs::default()
        };
        assert_eq!(detect_container(&nspawn), Some("systemd-nspawn"));
        let other = ContainerInputs {
            host_container_manager: Some("something-new".into()),
            ..ContainerInputs::default()
        };
        assert_eq!(detect_container(&other), Some("container-other"));
        let oci_alone = ContainerInputs {
            pid1_container: Some("oci".into()),
            ..ContainerInputs::default()
        };
        assert_eq!(detect_container(&oci_alone), Some("container-other"));
        let wsl2 = ContainerInputs {
            kernel_release: Some("5.15.153.1-microsoft-standard-WSL2".into()),
            ..ContainerInputs::default()
        };
        assert_eq!(detect_container(&wsl2), Some("wsl"));
        let wsl_interop = ContainerInputs {
            wsl_interop: true,
            ..ContainerInputs::default()
        };
        assert_eq!(detect_container(&wsl_interop), Some("wsl"));
        let openvz = ContainerInputs {
            openvz: true,
            ..ContainerInputs::default()
        };
        assert_eq!(detect_container(&openvz), Some("openvz"));
    }

    #[test]
    fn reads_container_from_environ() {
        let environ = b"HOME=/\0TERM=linux\0container=lxc\0PATH=/usr/bin\0";
        assert_eq!(environ_var(environ, "container").as_deref(), Some("lxc"));
        assert_eq!(environ_var(environ, "contain"), None);
        assert_eq!(environ_var(b"", "container"), None);
    }

    /// The committed tree: Debian 12 on a bare-metal Dell PowerEdge R630 with two Xeons.
    fn fixture_root() -> Context {
        Context::new(format!("{FIXTURES}/root-debian12-r630"))
    }

    #[test]
    fn collects_a_fixture_root() {
        let report = collect(&fixture_root()).unwrap().unwrap();
        let FunctionData::System(items) = report.data else {
            panic!("wrong data kind: {:?}", report.data)
        };
        let expected = SystemInfo {
            hostname: "db-01".into(),
            os_name: Some("Debian GNU/Linux".into()),
            os_version: Some("12".into()),
            os_id: Some("debian".into()),
            os_pretty_name: Some("Debian GNU/Linux 12 (bookworm)".into()),
            kernel: "6.1.0-18-amd64".into(),
            arch: "x86_64".into(),
            boot_time: Some(Timestamp::from_second(1_706_690_641).unwrap()),
            uptime_s: 1_209_871,
            virtualization: None,
            container: None,
            machine_id: Some("5f6c0e1b8a3e4d2f9c7b1a0e3d5f7a9c".into()),
        };
        assert_eq!(items, vec![expected]);
    }

    #[test]
    fn falls_back_when_primary_files_are_missing() {
        let dir = tempfile::tempdir().unwrap();
        let write = |path: &str, text: &[u8]| {
            let full = dir.path().join(path);
            std::fs::create_dir_all(full.parent().unwrap()).unwrap();
            std::fs::write(full, text).unwrap();
        };
        write("usr/lib/os-release", b"NAME=\"Alpine Linux\"\nID=alpine\n");
        write("proc/sys/kernel/hostname", b"(none)\n");
        write("etc/hostname", b"# set by installer\n\nbox.example.org\n");
        write("etc/machine-id", b"uninitialized\n");
        write(
            "var/lib/dbus/machine-id",
            b"0123abcd0123abcd0123abcd0123abcd\n",
        );
        write("proc/sys/kernel/osrelease", b"6.6.14-0-lts\n");
        write("proc/uptime", b"12.5 20.1\n");
        // An LXC container on a QEMU guest.
        write("proc/1/environ", b"container=lxc\0");
        write(
            "sys/class/dmi/id/product_name",
            b"Standard PC (i440FX + PIIX, 1996)\n",
        );
        write("sys/class/dmi/id/sys_vendor", b"QEMU\n");
        let context = Context::new(dir.path());
        let report = collect(&context).unwrap().unwrap();
        let FunctionData::System(items) = report.data else {
            panic!("wrong data kind")
        };
        let info = &items[0];
        assert_eq!(info.hostname, "box.example.org");
        assert_eq!(info.os_id.as_deref(), Some("alpine"));
        assert_eq!(info.os_version, None);
        assert_eq!(
            info.machine_id.as_deref(),
            Some("0123abcd0123abcd0123abcd0123abcd")
        );
        assert_eq!(info.arch, std::env::consts::ARCH);
        assert_eq!(info.boot_time, None);
        assert_eq!(info.uptime_s, 12);
        assert_eq!(info.virtualization.as_deref(), Some("qemu"));
        assert_eq!(info.container.as_deref(), Some("lxc"));
    }

    #[test]
    fn missing_uptime_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc/sys/kernel")).unwrap();
        std::fs::write(dir.path().join("proc/sys/kernel/osrelease"), "6.1.0\n").unwrap();
        let error = collect(&Context::new(dir.path())).unwrap_err();
        assert!(error.to_string().contains("proc/uptime"), "{error}");
    }

    proptest! {
        #[test]
        fn os_release_never_panics(text in "\\PC*") {
            let _ = parse_os_release(&text);
        }

        #[test]
        fn os_release_like_lines_never_panic(lines in proptest::collection::vec(
            "(NAME|ID|VERSION_ID|PRETTY_NAME|#)=[\"'\\\\a-z $`]{0,12}", 0..8)) {
            let _ = parse_os_release(&lines.join("\n"));
        }

        #[test]
        fn btime_and_uptime_never_panic(text in "\\PC*") {
            let _ = parse_btime(&text);
            let _ = parse_uptime(&text);
            let _ = cpuinfo_has_hypervisor_flag(&text);
        }

        #[test]
        fn btime_like_lines_never_panic(n in "-?[0-9]{0,25}(\\.[0-9]{0,5})?") {
            let _ = parse_btime(&format!("btime {n}\n"));
            let _ = parse_uptime(&format!("{n} {n}\n"));
        }

        #[test]
        fn environ_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = environ_var(&bytes, "container");
        }
    }
}
