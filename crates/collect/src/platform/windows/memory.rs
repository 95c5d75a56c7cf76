//! `hardware/memory`: physical memory and the page file, from `GlobalMemoryStatusEx`.

use muster_proto::data::Memory;
use muster_proto::{FunctionData, FunctionReport};
use windows_sys::Win32::System::SystemInformation::{GlobalMemoryStatusEx, MEMORYSTATUSEX};

use super::win::last_error;
use crate::{CollectError, Collected, Context};

/// `GlobalMemoryStatusEx`'s figures.
pub fn memory_status() -> Result<MEMORYSTATUSEX, CollectError> {
    let mut status = MEMORYSTATUSEX {
        dwLength: size_of::<MEMORYSTATUSEX>() as u32,
        ..Default::default()
    };
    // SAFETY: `status` is a writable MEMORYSTATUSEX with dwLength set, as the call requires.
    if unsafe { GlobalMemoryStatusEx(&mut status) } == 0 {
        return Err(last_error("GlobalMemoryStatusEx"));
    }
    Ok(status)
}

/// The page file's size: the commit limit (`ullTotalPageFile`) counts physical memory too.
pub fn swap_total(status: &MEMORYSTATUSEX) -> u64 {
    status.ullTotalPageFile.saturating_sub(status.ullTotalPhys)
}

pub fn collect(_: &Context) -> Collected {
    let status = memory_status()?;
    Ok(Some(FunctionReport::new(FunctionData::Memory(vec![
        Memory {
            total_bytes: status.ullTotalPhys,
            swap_total_bytes: swap_total(&status),
        },
    ]))))
}
