//! `hardware/cpu` from `/proc/cpuinfo` and cpufreq.

use muster_proto::data::Cpu;
use muster_proto::{FunctionData, FunctionReport};

use crate::{Collected, Context};

/// What `/proc/cpuinfo` says about the processors.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CpuInfo {
    /// `model name`; on ARM the core names decoded from `CPU implementer`/`CPU part` (joined
    /// with ` + ` on big.LITTLE systems), else the board's `Hardware` or `Model` line.
    pub model: Option<String>,
    /// `vendor_id` on x86 (`GenuineIntel`); the implementer's name on ARM.
    pub vendor: Option<String>,
    /// Distinct `physical id`s; at least 1.
    pub sockets: u32,
    /// Distinct (`physical id`, `core id`) pairs; the logical count when cpuinfo has none.
    pub physical_cores: u32,
    /// Number of `processor` entries.
    pub logical_cpus: u32,
    /// The largest `cpu MHz` (the current clock of the fastest core, x86 only).
    pub max_mhz: Option<f64>,
}

/// Parses `/proc/cpuinfo` of any architecture; lines it does not know are skipped.
pub fn parse_cpuinfo(text: &str) -> CpuInfo {
    let mut logical = 0u32;
    let (mut model_name, mut vendor_id, mut hardware, mut board) = (None, None, None, None);
    let mut max_mhz: Option<f64> = None;
    let mut implementer: Option<u32> = None;
    let mut first_implementer: Option<u32> = None;
    let mut arm_parts: Vec<(u32, u32)> = Vec::new();
    let mut sockets: Vec<&str> = Vec::new();
    let mut cores: Vec<(&str, &str)> = Vec::new();
    let (mut physical_id, mut core_id): (Option<&str>, Option<&str>) = (None, None);

    for line in text.lines() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match key.trim() {
            "processor" => {
                if let (Some(p), Some(c)) = (physical_id.take(), core_id.take()) {
                    cores.push((p, c));
                }
                logical = logical.saturating_add(1);
            }
            "model name" => keep_first(&mut model_name, value),
            "vendor_id" => keep_first(&mut vendor_id, value),
            "Hardware" => keep_first(&mut hardware, value),
            "Model" => keep_first(&mut board, value),
            "physical id" => {
                physical_id = Some(value);
                sockets.push(value);
            }
            "core id" => core_id = Some(value),
            "cpu MHz" => {
                if let Ok(mhz) = value.parse::<f64>()
                    && mhz.is_finite()
                    && mhz > 0.0
                    && max_mhz.is_none_or(|m| mhz > m)
                {
                    max_mhz = Some(mhz);
                }
            }
            "CPU implementer" => {
                implementer = parse_hex(value);
                first_implementer = first_implementer.or(implementer);
            }
            "CPU part" => {
                if let (Some(imp), Some(part)) = (implementer, parse_hex(value))
                    && !arm_parts.contains(&(imp, part))
                {
                    arm_parts.push((imp, part));
                }
            }
            _ => {}
        }
    }
    if let (Some(p), Some(c)) = (physical_id, core_id) {
        cores.push((p, c));
    }
    sockets.sort_unstable();
    sockets.dedup();
    cores.sort_unstable();
    cores.dedup();

    let model = model_name
        .map(str::to_owned)
        .or_else(|| arm_model(&arm_parts))
        .or_else(|| hardware.or(board).map(str::to_owned));
    let vendor = vendor_id.map(str::to_owned).or_else(|| {
        first_implementer
            .and_then(arm_implementer)
            .map(str::to_owned)
    });
    CpuInfo {
        model,
        vendor,
        sockets: count(sockets.len()).max(1),
        physical_cores: if cores.is_empty() {
            logical
        } else {
            count(cores.len())
        },
        logical_cpus: logical,
        max_mhz,
    }
}

fn keep_first<'a>(slot: &mut Option<&'a str>, value: &'a str) {
    if slot.is_none() && !value.is_empty() {
        *slot = Some(value);
    }
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn parse_hex(value: &str) -> Option<u32> {
    u32::from_str_radix(value.strip_prefix("0x")?, 16).ok()
}

/// The distinct core names, e.g. `Cortex-A55 + Cortex-A76`.
fn arm_model(parts: &[(u32, u32)]) -> Option<String> {
    let mut names: Vec<String> = Vec::new();
    for &(implementer, part) in parts {
        let name =
            arm_part(implementer, part).map_or_else(|| format!("{part:#05x} part"), str::to_owned);
        if !names.contains(&name) {
            names.push(name);
        }
    }
    (!names.is_empty()).then(|| names.join(" + "))
}

/// The implementer byte of the Main ID Register, as the Arm ARM and lscpu name them.
pub fn arm_implementer(id: u32) -> Option<&'static str> {
    Some(match id {
        0x41 => "ARM",
        0x42 => "Broadcom",
        0x43 => "Cavium",
        0x46 => "Fujitsu",
        0x48 => "HiSilicon",
        0x4e => "NVIDIA",
        0x50 => "APM",
        0x51 => "Qualcomm",
        0x53 => "Samsung",
        0x56 => "Marvell",
        0x61 => "Apple",
        0x69 => "Intel",
        0x6d => "Microsoft",
        0x70 => "Phytium",
        0xc0 => "Ampere",
        _ => return None,
    })
}

/// The core a (implementer, part number) pair names, for the cores servers, boards and laptops
/// commonly run on.
pub fn arm_part(implementer: u32, part: u32) -> Option<&'static str> {
    Some(match (implementer, part) {
        (0x41, 0xb76) => "ARM1176",
        (0x41, 0xc07) => "Cortex-A7",
        (0x41, 0xc08) => "Cortex-A8",
        (0x41, 0xc09) => "Cortex-A9",
        (0x41, 0xc0d | 0xc0e) => "Cortex-A17",
        (0x41, 0xc0f) => "Cortex-A15",
        (0x41, 0xd01) => "Cortex-A32",
        (0x41, 0xd03) => "Cortex-A53",
        (0x41, 0xd04) => "Cortex-A35",
        (0x41, 0xd05) => "Cortex-A55",
        (0x41, 0xd06) => "Cortex-A65",
        (0x41, 0xd07) => "Cortex-A57",
        (0x41, 0xd08) => "Cortex-A72",
        (0x41, 0xd09) => "Cortex-A73",
        (0x41, 0xd0a) => "Cortex-A75",
        (0x41, 0xd0b) => "Cortex-A76",
        (0x41, 0xd0c) => "Neoverse-N1",
        (0x41, 0xd0d) => "Cortex-A77",
        (0x41, 0xd0e) => "Cortex-A76AE",
        (0x41, 0xd40) => "Neoverse-V1",
        (0x41, 0xd41) => "Cortex-A78",
        (0x41, 0xd42) => "Cortex-A78AE",
        (0x41, 0xd44) => "Cortex-X1",
        (0x41, 0xd46) => "Cortex-A510",
        (0x41, 0xd47) => "Cortex-A710",
        (0x41, 0xd48) => "Cortex-X2",
        (0x41, 0xd49) => "Neoverse-N2",
        (0x41, 0xd4a) => "Neoverse-E1",
        (0x41, 0xd4b) => "Cortex-A78C",
        (0x41, 0xd4c) => "Cortex-X1C",
        (0x41, 0xd4d) => "Cortex-A715",
        (0x41, 0xd4e) => "Cortex-X3",
        (0x41, 0xd4f) => "Neoverse-V2",
        (0x41, 0xd80) => "Cortex-A520",
        (0x41, 0xd81) => "Cortex-A720",
        (0x41, 0xd82) => "Cortex-X4",
        (0x41, 0xd84) => "Neoverse-V3",
        (0x41, 0xd8e) => "Neoverse-N3",
        (0x42, 0x100) => "Brahma-B53",
        (0x42, 0x516) => "ThunderX2",
        (0x43, 0x0a1) => "ThunderX-88XX",
        (0x43, 0x0af) => "ThunderX2-99xx",
        (0x46, 0x001) => "A64FX",
        (0x48, 0xd01) => "Kunpeng-920",
        (0x4e, 0x004) => "Carmel",
        (0x50, 0x000) => "X-Gene",
        (0x51, 0x800) => "Falkor-V1/Kryo",
        (0x51, 0xc00) => "Falkor",
        (0x61, 0x022) => "Icestorm-M1",
        (0x61, 0x023) => "Firestorm-M1",
        (0x61, 0x032) => "Blizzard-M2",
        (0x61, 0x033) => "Avalanche-M2",
        (0xc0, 0xac3) => "Ampere-1",
        (0xc0, 0xac4) => "Ampere-1a",
        _ => return None,
    })
}

/// The number of CPUs in a kernel CPU list such as `/sys/devices/system/cpu/online`
/// (`0-3,8,10-11`); `None` when the list is malformed.
pub fn parse_cpu_list(text: &str) -> Option<u32> {
    let mut total = 0u32;
    for range in text.trim().split(',') {
        let (start, end) = match range.split_once('-') {
            Some((s, e)) => (s.parse::<u32>().ok()?, e.parse::<u32>().ok()?),
            None => {
                let n = range.parse::<u32>().ok()?;
                (n, n)
            }
        };
        let span = end.checked_sub(start)?.checked_add(1)?;
        total = total.checked_add(span)?;
    }
    Some(total)
}

/// A cpufreq attribute in kHz, as MHz.
pub fn parse_khz(text: &str) -> Option<f64> {
    let khz: u64 = text.trim().parse().ok()?;
    (khz > 0).then(|| khz as f64 / 1000.0)
}

/// One [`Cpu`] describing all processors; `max_mhz` prefers cpufreq's rated maximum.
pub fn collect(context: &Context) -> Collected {
    let mut info = parse_cpuinfo(&context.read("/proc/cpuinfo")?);
    // Architectures whose cpuinfo has no `processor` lines (s390x) still list online CPUs.
    if info.logical_cpus == 0
        && let Some(n) = context
            .attr("/sys/devices/system/cpu/online")
            .as_deref()
            .and_then(parse_cpu_list)
    {
        info.logical_cpus = n;
        info.physical_cores = info.physical_cores.max(n);
    }
    let max_mhz = context
        .attr("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq")
        .as_deref()
        .and_then(parse_khz)
        .or(info.max_mhz);
    let cpu = Cpu {
        model: info.model,
        vendor: info.vendor,
        sockets: info.sockets,
        physical_cores: info.physical_cores,
        logical_cpus: info.logical_cpus,
        max_mhz,
    };
    Ok(Some(FunctionReport::new(FunctionData::Cpu(vec![cpu]))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hardware-a");
    const DUAL_XEON: &str =
        include_str!("../../../tests/fixtures/hardware-a/cpuinfo/x86_64-dual-xeon-e5-2623v4");
    const RPI4: &str =
        include_str!("../../../tests/fixtures/hardware-a/cpuinfo/aarch64-raspberry-pi-4");
    const GRAVITON2: &str =
        include_str!("../../../tests/fixtures/hardware-a/cpuinfo/aarch64-graviton2");

    #[test]
    fn parses_dual_socket_hyperthreaded_x86() {
        let info = parse_cpuinfo(DUAL_XEON);
        assert_eq!(
            info,
            CpuInfo {
                model: Some("Intel(R) Xeon(R) CPU E5-2623 v4 @ 2.60GHz".into()),
                vendor: Some("GenuineIntel".into()),
                sockets: 2,
                physical_cores: 8,
                logical_cpus: 16,
                max_mhz: Some(3099.877),
            }
        );
    }

    #[test]
    fn parses_raspberry_pi_4() {
        let info = parse_cpuinfo(RPI4);
        assert_eq!(info.model.as_deref(), Some("Cortex-A72"));
        assert_eq!(info.vendor.as_deref(), Some("ARM"));
        assert_eq!(
            (info.sockets, info.physical_cores, info.logical_cpus),
            (1, 4, 4)
        );
        assert_eq!(info.max_mhz, None);
    }

    #[test]
    fn parses_graviton2() {
        let info = parse_cpuinfo(GRAVITON2);
        assert_eq!(info.model.as_deref(), Some("Neoverse-N1"));
        assert_eq!(info.vendor.as_deref(), Some("ARM"));
        assert_eq!(
            (info.sockets, info.physical_cores, info.logical_cpus),
            (1, 4, 4)
        );
    }

    #[test]
    fn names_big_little_and_unknown_parts() {
        let block = |n: u32, imp: &str, part: &str| {
            format!(
                "processor\t: {n}\nBogoMIPS\t: 48.00\nCPU implementer\t: {imp}\n\
                 CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 4\n\n"
            )
        };
        // RK3399: four Cortex-A53 then two Cortex-A72.
        let rk3399: String = (0..6)
            .map(|n| block(n, "0x41", if n < 4 { "0xd03" } else { "0xd08" }))
            .collect();
        let info = parse_cpuinfo(&rk3399);
        assert_eq!(info.model.as_deref(), Some("Cortex-A53 + Cortex-A72"));
        assert_eq!(info.logical_cpus, 6);

        let unknown = block(0, "0x41", "0xd8f");
        assert_eq!(parse_cpuinfo(&unknown).model.as_deref(), Some("0xd8f part"));
        let ampere = block(0, "0xc0", "0xac3");
        let info = parse_cpuinfo(&ampere);
        assert_eq!(info.model.as_deref(), Some("Ampere-1"));
        assert_eq!(info.vendor.as_deref(), Some("Ampere"));
        let apple = block(0, "0x61", "0x023");
        assert_eq!(parse_cpuinfo(&apple).vendor.as_deref(), Some("Apple"));
        assert_eq!(parse_cpuinfo(&block(0, "0x99", "0x001")).vendor, None);
    }

    #[test]
    fn arm32_and_board_lines() {
        // A 32-bit Raspberry Pi kernel prints `model name` itself.
        let armv7 = "processor\t: 0\nmodel name\t: ARMv7 Processor rev 4 (v7l)\nBogoMIPS\t: 38.40\n\
            CPU implementer\t: 0x41\nCPU part\t: 0xd03\n\nHardware\t: BCM2835\n\
            Model\t\t: Raspberry Pi 3 Model B Rev 1.2\n";
        let info = parse_cpuinfo(armv7);
        assert_eq!(info.model.as_deref(), Some("ARMv7 Processor rev 4 (v7l)"));
        assert_eq!(info.vendor.as_deref(), Some("ARM"));
        // Without implementer lines, the board names the machine.
        let board = "processor\t: 0\nBogoMIPS\t: 50.00\n\nHardware\t: Allwinner sun8i Family\n";
        assert_eq!(
            parse_cpuinfo(board).model.as_deref(),
            Some("Allwinner sun8i Family")
        );
        let model_only = "processor\t: 0\n\nModel\t: Some Board\n";
        assert_eq!(
            parse_cpuinfo(model_only).model.as_deref(),
            Some("Some Board")
        );
    }

    #[test]
    fn vm_without_topology_counts_logical_as_cores() {
        let text = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n\
            cpu MHz\t\t: 2449.998\n\nprocessor\t: 1\nvendor_id\t: AuthenticAMD\n\
            model name\t: AMD EPYC 7B13\ncpu MHz\t\t: 2449.998\n";
        let info = parse_cpuinfo(text);
        assert_eq!(
            (info.sockets, info.physical_cores, info.logical_cpus),
            (1, 2, 2)
        );
        assert_eq!(info.max_mhz, Some(2449.998));
    }

    #[test]
    fn empty_cpuinfo() {
        let info = parse_cpuinfo("");
        assert_eq!(
            (info.sockets, info.physical_cores, info.logical_cpus),
            (1, 0, 0)
        );
        assert_eq!((info.model, info.vendor, info.max_mhz), (None, None, None));
    }

    #[test]
    fn parses_cpu_lists_and_khz() {
        assert_eq!(parse_cpu_list("0-3\n"), Some(4));
        assert_eq!(parse_cpu_list("0-3,8,10-11"), Some(7));
        assert_eq!(parse_cpu_list("0"), Some(1));
        assert_eq!(parse_cpu_list("3-1"), None);
        assert_eq!(parse_cpu_list(""), None);
        assert_eq!(parse_cpu_list("0-4294967295"), None);
        assert_eq!(parse_khz("3200000\n"), Some(3200.0));
        assert_eq!(parse_khz("1500000"), Some(1500.0));
        assert_eq!(parse_khz("0"), None);
        assert_eq!(parse_khz("x"), None);
    }

    #[test]
    fn collects_a_fixture_root() {
        let context = Context::new(format!("{FIXTURES}/root-debian12-r630"));
        let report = collect(&context).unwrap().unwrap();
        let expected = Cpu {
            model: Some("Intel(R) Xeon(R) CPU E5-2623 v4 @ 2.60GHz".into()),
            vendor: Some("GenuineIntel".into()),
            sockets: 2,
            physical_cores: 8,
            logical_cpus: 16,
            max_mhz: Some(3200.0),
        };
        assert_eq!(report.data, FunctionData::Cpu(vec![expected]));
    }

    #[test]
    fn collect_falls_back_to_online_list() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::create_dir_all(dir.path().join("sys/devices/system/cpu")).unwrap();
        let s390x = "vendor_id       : IBM/S390\n# processors    : 2\n\
            processor 0: version = FF,  identification = 0133E8,  machine = 8561\n\
            processor 1: version = FF,  identification = 0133E8,  machine = 8561\n";
        std::fs::write(dir.path().join("proc/cpuinfo"), s390x).unwrap();
        std::fs::write(dir.path().join("sys/devices/system/cpu/online"), "0-1\n").unwrap();
        let report = collect(&Context::new(dir.path())).unwrap().unwrap();
        let FunctionData::Cpu(items) = report.data else {
            panic!("wrong data kind")
        };
        assert_eq!(items[0].vendor.as_deref(), Some("IBM/S390"));
        assert_eq!((items[0].logical_cpus, items[0].physical_cores), (2, 2));
        assert_eq!(items[0].max_mhz, None);
    }

    proptest! {
        #[test]
        fn cpuinfo_never_panics(text in "\\PC*") {
            let _ = parse_cpuinfo(&text);
            let _ = parse_cpu_list(&text);
            let _ = parse_khz(&text);
        }

        #[test]
        fn cpuinfo_like_lines_never_panic(lines in proptest::collection::vec(
            "(processor|physical id|core id|cpu MHz|CPU implementer|CPU part|model name|Model)\
             [ \t]*:[ ]*(0x)?[0-9a-fA-F.e+-]{0,12}", 0..20)) {
            prop_assert!(parse_cpuinfo(&lines.join("\n")).sockets >= 1);
        }
    }
}
