//! `hardware/cpu`: the model from the registry's CentralProcessor key, the topology from
//! `GetLogicalProcessorInformationEx`.

use muster_proto::data::Cpu;
use muster_proto::{FunctionData, FunctionReport};
use windows_sys::Win32::Foundation::{ERROR_INSUFFICIENT_BUFFER, GetLastError};
use windows_sys::Win32::System::SystemInformation::{
    GetLogicalProcessorInformationEx, RelationAll, SYSTEM_LOGICAL_PROCESSOR_INFORMATION_EX,
};
use windows_sys::Win32::System::Threading::{ALL_PROCESSOR_GROUPS, GetActiveProcessorCount};
use winreg::RegKey;
use winreg::enums::HKEY_LOCAL_MACHINE;

use super::win::{last_error, reg_string, reg_u64};
use crate::{CollectError, Collected, Context};

const PROCESSOR_KEY: &str = r"HARDWARE\DESCRIPTION\System\CentralProcessor\0";

/// Packages, cores and logical processors.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Topology {
    pub sockets: u32,
    pub cores: u32,
    pub logical: u32,
}

/// Counts the records of a `GetLogicalProcessorInformationEx(RelationAll)` buffer: one
/// `RelationProcessorPackage` record per socket, one `RelationProcessorCore` per core, whose
/// group masks hold its logical processors. Records are walked by their `Size`, so unknown
/// relations and truncated buffers are skipped, never read past.
pub fn parse_processor_information(buf: &[u8]) -> Topology {
    const RELATION_CORE: u32 = 0;
    const RELATION_PACKAGE: u32 = 3;
    // PROCESSOR_RELATIONSHIP after the 8-byte header: Flags, EfficiencyClass, Reserved[20],
    // GroupCount (u16 at 30), then GROUP_AFFINITY[GroupCount] (16 bytes each, from 32).
    let u32_at = |b: &[u8], at: usize| {
        b.get(at..at + 4)
            .map(|s| u32::from_le_bytes(s.try_into().unwrap_or_default()))
    };
    let mut topology = Topology::default();
    let mut rest = buf;
    while let (Some(relation), Some(size)) = (u32_at(rest, 0), u32_at(rest, 4)) {
        let size = size as usize;
        if size < 8 || size > rest.len() {
            break;
        }
        let record = &rest[..size];
        match relation {
            RELATION_PACKAGE => topology.sockets += 1,
            RELATION_CORE => {
                topology.cores += 1;
                let groups = record
                    .get(30..32)
                    .map_or(0, |g| u16::from_le_bytes([g[0], g[1]]) as usize);
                for group in 0..groups {
                    let at = 32 + group * 16;
                    if let Some(mask) = record.get(at..at + 8) {
                        let mask = u64::from_le_bytes(mask.try_into().unwrap_or_default());
                        topology.logical += mask.count_ones();
                    }
                }
            }
            _ => {}
        }
        rest = &rest[size..];
    }
    topology
}

fn processor_information() -> Result<Vec<u8>, CollectError> {
    let mut len = 0u32;
    // SAFETY: a null buffer with length 0 asks for the size needed.
    let ok =
        unsafe { GetLogicalProcessorInformationEx(RelationAll, std::ptr::null_mut(), &mut len) };
    // SAFETY: no arguments.
    if ok == 0 && unsafe { GetLastError() } != ERROR_INSUFFICIENT_BUFFER {
        return Err(last_error("GetLogicalProcessorInformationEx"));
    }
    // u64 words keep the records 8-byte aligned, as the structure wants.
    let mut buf = vec![0u64; (len as usize).div_ceil(8)];
    // SAFETY: `buf` has room for `len` bytes.
    let ok = unsafe {
        GetLogicalProcessorInformationEx(
            RelationAll,
            buf.as_mut_ptr()
                .cast::<SYSTEM_LOGICAL_PROCESSOR_INFORMATION_EX>(),
            &mut len,
        )
    };
    if ok == 0 {
        return Err(last_error("GetLogicalProcessorInformationEx"));
    }
    let bytes: Vec<u8> = buf.iter().flat_map(|w| w.to_le_bytes()).collect();
    Ok(bytes[..(len as usize).min(bytes.len())].to_vec())
}

pub fn collect(_: &Context) -> Collected {
    let key = RegKey::predef(HKEY_LOCAL_MACHINE)
        .open_subkey(PROCESSOR_KEY)
        .ok();
    let value = |name: &str| key.as_ref().and_then(|k| reg_string(k, name));
    let mut topology = parse_processor_information(&processor_information()?);
    if topology.logical == 0 {
        // SAFETY: no pointers; returns 0 on failure.
        topology.logical = unsafe { GetActiveProcessorCount(ALL_PROCESSOR_GROUPS) };
    }
    Ok(Some(FunctionReport::new(FunctionData::Cpu(vec![Cpu {
        model: value("ProcessorNameString"),
        vendor: value("VendorIdentifier"),
        sockets: topology.sockets.max(1),
        physical_cores: topology.cores.max(1),
        logical_cpus: topology.logical.max(1),
        max_mhz: key
            .as_ref()
            .and_then(|k| reg_u64(k, "~MHz"))
            .filter(|&mhz| mhz > 0)
            .map(|mhz| mhz as f64),
    }]))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn record(relation: u32, masks: &[u64]) -> Vec<u8> {
        let size = 32 + masks.len() * 16;
        let mut r = vec![0u8; size];
        r[0..4].copy_from_slice(&relation.to_le_bytes());
        r[4..8].copy_from_slice(&(size as u32).to_le_bytes());
        r[30..32].copy_from_slice(&(masks.len() as u16).to_le_bytes());
        for (i, mask) in masks.iter().enumerate() {
            r[32 + i * 16..40 + i * 16].copy_from_slice(&mask.to_le_bytes());
        }
        r
    }

    #[test]
    fn counts_packages_cores_and_threads() {
        // One package, two cores with two hyper-threads each, plus a cache record (2).
        let mut buf = record(3, &[0b1111]);
        buf.extend(record(0, &[0b0011]));
        buf.extend(record(0, &[0b1100]));
        buf.extend(record(2, &[]));
        assert_eq!(
            parse_processor_information(&buf),
            Topology {
                sockets: 1,
                cores: 2,
                logical: 4
            }
        );
        // A truncated last record is dropped, not read past.
        buf.extend(&record(0, &[1])[..20]);
        assert_eq!(parse_processor_information(&buf).cores, 2);
    }

    #[test]
    fn this_hosts_topology_matches_the_processor_count() {
        let topology = parse_processor_information(&processor_information().unwrap());
        let threads = std::thread::available_parallelism().unwrap().get() as u32;
        assert_eq!(topology.logical, threads, "{topology:?}");
        assert!(
            topology.cores >= 1 && topology.cores <= topology.logical,
            "{topology:?}"
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_any_buffer(buf in proptest::collection::vec(any::<u8>(), 0..512)) {
            parse_processor_information(&buf);
        }
    }
}
