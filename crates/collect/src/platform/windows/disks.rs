//! `hardware/disks`: the physical drives `\\.\PhysicalDriveN`, opened without read access
//! (which any user may do) and asked for their size (`IOCTL_DISK_GET_DRIVE_GEOMETRY_EX`),
//! identity (`IOCTL_STORAGE_QUERY_PROPERTY`) and seek penalty. Telemetry reads their I/O
//! counters (`IOCTL_DISK_PERFORMANCE`) through the same handles.

use std::io;

use muster_proto::data::Disk;
use muster_proto::{FunctionData, FunctionReport};
use windows_sys::Win32::Storage::FileSystem::{
    CreateFileW, FILE_SHARE_READ, FILE_SHARE_WRITE, OPEN_EXISTING,
};
use windows_sys::Win32::System::IO::DeviceIoControl;
use windows_sys::Win32::System::Ioctl::{
    DEVICE_SEEK_PENALTY_DESCRIPTOR, DISK_GEOMETRY_EX, DISK_PERFORMANCE,
    IOCTL_DISK_GET_DRIVE_GEOMETRY_EX, IOCTL_DISK_PERFORMANCE, IOCTL_STORAGE_QUERY_PROPERTY,
    PropertyStandardQuery, STORAGE_PROPERTY_QUERY, StorageDeviceProperty,
    StorageDeviceSeekPenaltyProperty,
};

use super::win::{Handle, wide};
use crate::{Collected, Context};

/// Drive numbers are dense in practice; a gap this long ends the search.
const MAX_GAP: u32 = 4;
const MAX_DRIVES: u32 = 256;

/// The opened physical drives, by name (`PhysicalDrive0`), and the error of the first drive
/// number that could not be opened (when none could, it says why).
pub fn open_drives() -> (Vec<(String, Handle)>, Option<io::Error>) {
    let mut drives = Vec::new();
    let mut first_error = None;
    let mut gap = 0;
    for n in 0..MAX_DRIVES {
        let name = format!("PhysicalDrive{n}");
        let path = wide(&format!(r"\\.\{name}"));
        // SAFETY: `path` is NUL-terminated; no security attributes or template. Access 0
        // opens the device for IOCTLs only.
        let raw = unsafe {
            CreateFileW(
                path.as_ptr(),
                0,
                FILE_SHARE_READ | FILE_SHARE_WRITE,
                std::ptr::null(),
                OPEN_EXISTING,
                0,
                std::ptr::null_mut(),
            )
        };
        match Handle::new(raw) {
            Some(handle) => {
                gap = 0;
                drives.push((name, handle));
            }
            None => {
                first_error.get_or_insert_with(io::Error::last_os_error);
                gap += 1;
                if gap >= MAX_GAP {
                    break;
                }
            }
        }
    }
    (drives, first_error)
}

/// `DeviceIoControl` into `out`; the bytes returned.
fn ioctl<T>(handle: &Handle, code: u32, input: &[u8], out: &mut [T]) -> Option<usize> {
    let mut returned = 0u32;
    // SAFETY: `input` and `out` are valid for the lengths passed; the call is synchronous (no
    // OVERLAPPED) and writes at most `size_of_val(out)` bytes.
    let ok = unsafe {
        DeviceIoControl(
            handle.raw(),
            code,
            input.as_ptr().cast(),
            input.len() as u32,
            out.as_mut_ptr().cast(),
            size_of_val(out) as u32,
            &mut returned,
            std::ptr::null_mut(),
        )
    };
    (ok != 0).then_some(returned as usize)
}

fn property_query(id: i32) -> Vec<u8> {
    let query = STORAGE_PROPERTY_QUERY {
        PropertyId: id,
        QueryType: PropertyStandardQuery,
        AdditionalParameters: [0],
    };
    // SAFETY: STORAGE_PROPERTY_QUERY is plain data; its bytes are what the IOCTL reads.
    unsafe {
        std::slice::from_raw_parts(
            (&raw const query).cast::<u8>(),
            size_of::<STORAGE_PROPERTY_QUERY>(),
        )
    }
    .to_vec()
}

/// The identity in a `STORAGE_DEVICE_DESCRIPTOR`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceDescriptor {
    pub vendor: Option<String>,
    pub model: Option<String>,
    pub serial: Option<String>,
    pub removable: bool,
}

/// Reads a `STORAGE_DEVICE_DESCRIPTOR`: its strings are NUL-terminated ASCII at the offsets
/// it gives (0 for none); every offset is checked against the bytes returned.
pub fn parse_device_descriptor(buf: &[u8]) -> DeviceDescriptor {
    let u32_at = |at: usize| {
        buf.get(at..at + 4)
            .map_or(0, |b| u32::from_le_bytes([b[0], b[1], b[2], b[3]])) as usize
    };
    let string_at = |offset: usize| {
        if offset == 0 || offset >= buf.len() {
            return None;
        }
        let bytes = &buf[offset..];
        let end = bytes.iter().position(|&b| b == 0).unwrap_or(bytes.len());
        let text = String::from_utf8_lossy(&bytes[..end]).trim().to_owned();
        (!text.is_empty()).then_some(text)
    };
    // Version, Size, DeviceType, DeviceTypeModifier, RemovableMedia (10), CommandQueueing,
    // then the offsets of vendor (12), product (16), revision (20) and serial (24).
    DeviceDescriptor {
        vendor: string_at(u32_at(12)),
        model: string_at(u32_at(16)),
        serial: string_at(u32_at(24)),
        removable: buf.get(10).is_some_and(|&b| b != 0),
    }
}

fn describe(name: String, handle: &Handle) -> Option<Disk> {
    let mut geometry = [DISK_GEOMETRY_EX::default()];
    ioctl(handle, IOCTL_DISK_GET_DRIVE_GEOMETRY_EX, &[], &mut geometry)?;
    let mut descriptor = vec![0u8; 1024];
    let descriptor = match ioctl(
        handle,
        IOCTL_STORAGE_QUERY_PROPERTY,
        &property_query(StorageDeviceProperty),
        &mut descriptor,
    ) {
        Some(len) => parse_device_descriptor(&descriptor[..len.min(descriptor.len())]),
        None => DeviceDescriptor::default(),
    };
    let mut penalty = [DEVICE_SEEK_PENALTY_DESCRIPTOR::default()];
    let rotational = ioctl(
        handle,
        IOCTL_STORAGE_QUERY_PROPERTY,
        &property_query(StorageDeviceSeekPenaltyProperty),
        &mut penalty,
    )
    .is_some()
        && penalty[0].IncursSeekPenalty;
    Some(Disk {
        name,
        size_bytes: u64::try_from(geometry[0].DiskSize).unwrap_or(0),
        model: descriptor.model,
        vendor: descriptor.vendor,
        serial: descriptor.serial,
        rotational,
        removable: descriptor.removable,
    })
}

/// Bytes read and written by one drive since boot (`IOCTL_DISK_PERFORMANCE`).
pub fn io_counters(handle: &Handle) -> Option<(u64, u64)> {
    let mut perf = [DISK_PERFORMANCE::default()];
    ioctl(handle, IOCTL_DISK_PERFORMANCE, &[], &mut perf)?;
    Some((
        u64::try_from(perf[0].BytesRead).unwrap_or(0),
        u64::try_from(perf[0].BytesWritten).unwrap_or(0),
    ))
}

/// One [`Disk`] per physical drive; `unavailable` when no drive can be opened at all (Wine
/// has no `\\.\PhysicalDriveN` devices).
pub fn collect(_: &Context) -> Collected {
    let (drives, error) = open_drives();
    if drives.is_empty() {
        let why = error.map_or_else(|| "none found".to_owned(), |e| e.to_string());
        return Ok(Some(FunctionReport::unavailable(
            "disks",
            format_args!(r"no physical drive can be opened (\\.\PhysicalDrive0: {why})"),
        )));
    }
    let disks = drives
        .into_iter()
        .filter_map(|(name, handle)| describe(name, &handle))
        .collect();
    Ok(Some(FunctionReport::new(FunctionData::Disks(disks))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn reads_a_device_descriptor() {
        let mut buf = vec![0u8; 64];
        buf[10] = 1;
        buf[12..16].copy_from_slice(&40u32.to_le_bytes());
        buf[16..20].copy_from_slice(&46u32.to_le_bytes());
        buf[24..28].copy_from_slice(&200u32.to_le_bytes()); // out of range: no serial
        buf[40..45].copy_from_slice(b"ATA \0");
        buf[46..58].copy_from_slice(b"Samsung SSD\0");
        let d = parse_device_descriptor(&buf);
        assert_eq!(d.vendor.as_deref(), Some("ATA"));
        assert_eq!(d.model.as_deref(), Some("Samsung SSD"));
        assert_eq!(d.serial, None);
        assert!(d.removable);
    }

    proptest! {
        #[test]
        fn never_panics_on_any_descriptor(buf in proptest::collection::vec(any::<u8>(), 0..256)) {
            parse_device_descriptor(&buf);
        }
    }
}
