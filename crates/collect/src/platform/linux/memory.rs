//! `hardware/memory` from `/proc/meminfo`.

use muster_proto::data::Memory;
use muster_proto::{FunctionData, FunctionReport};

use crate::{CollectError, Collected, Context};

/// The `/proc/meminfo` fields Muster uses, in bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Meminfo {
    pub mem_total: u64,
    pub mem_free: u64,
    /// `MemAvailable`; on kernels before 3.14, free + buffers + cached.
    pub mem_available: u64,
    pub swap_total: u64,
    pub swap_free: u64,
}

/// Parses `/proc/meminfo`. Lines it does not know or cannot read are skipped; `MemTotal` is
/// required.
pub fn parse_meminfo(text: &str) -> Result<Meminfo, String> {
    let mut info = Meminfo::default();
    let (mut available, mut buffers, mut cached, mut total) = (None, 0, 0, None);
    for line in text.lines() {
        let Some((key, rest)) = line.split_once(':') else {
            continue;
        };
        let mut words = rest.split_whitespace();
        let Some(Ok(value)) = words.next().map(str::parse::<u64>) else {
            continue;
        };
        let bytes = match words.next() {
            Some("kB") => value.saturating_mul(1024),
            _ => value,
        };
        match key {
            "MemTotal" => total = Some(bytes),
            "MemFree" => info.mem_free = bytes,
            "MemAvailable" => available = Some(bytes),
            "Buffers" => buffers = bytes,
            "Cached" => cached = bytes,
            "SwapTotal" => info.swap_total = bytes,
            "SwapFree" => info.swap_free = bytes,
            _ => {}
        }
    }
    info.mem_total = total.ok_or("no MemTotal line")?;
    info.mem_available =
        available.unwrap_or_else(|| info.mem_free.saturating_add(buffers).saturating_add(cached));
    Ok(info)
}

/// Reads and parses `/proc/meminfo` under the context's root.
pub fn read_meminfo(context: &Context) -> Result<Meminfo, CollectError> {
    const PATH: &str = "/proc/meminfo";
    parse_meminfo(&context.read(PATH)?).map_err(|e| CollectError::parse(context.path(PATH), e))
}

pub fn collect(context: &Context) -> Collected {
    let info = read_meminfo(context)?;
    let memory = Memory {
        total_bytes: info.mem_total,
        swap_total_bytes: info.swap_total,
    };
    Ok(Some(FunctionReport::new(FunctionData::Memory(vec![
        memory,
    ]))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MEMINFO: &str = "MemTotal:       24724288 kB\nMemFree:        20123456 kB\n\
        MemAvailable:   22000000 kB\nBuffers:          100000 kB\nCached:          1500000 kB\n\
        SwapCached:            0 kB\nSwapTotal:       2097148 kB\nSwapFree:        2097148 kB\n\
        HugePages_Total:       0\nHugepagesize:       2048 kB\n";

    #[test]
    fn parses_fields_in_bytes() {
        let info = parse_meminfo(MEMINFO).unwrap();
        assert_eq!(info.mem_total, 24_724_288 * 1024);
        assert_eq!(info.mem_available, 22_000_000 * 1024);
        assert_eq!(info.swap_total, 2_097_148 * 1024);
        assert_eq!(info.swap_free, 2_097_148 * 1024);
    }

    #[test]
    fn old_kernels_estimate_available() {
        let text = "MemTotal: 1000 kB\nMemFree: 100 kB\nBuffers: 20 kB\nCached: 30 kB\n";
        assert_eq!(parse_meminfo(text).unwrap().mem_available, 150 * 1024);
    }

    #[test]
    fn missing_total_is_an_error() {
        assert!(parse_meminfo("MemFree: 1 kB\n").is_err());
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC*") {
            let _ = parse_meminfo(&text);
        }

        #[test]
        fn never_panics_on_meminfo_like_lines(lines in proptest::collection::vec(
            "(MemTotal|MemFree|SwapTotal|Cached|X):[ ]*[0-9]{0,25}( kB)?", 0..10)) {
            let _ = parse_meminfo(&lines.join("\n"));
        }
    }
}
