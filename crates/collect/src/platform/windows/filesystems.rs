//! `hardware/filesystems`: the mounted volumes (drive letters) with their file system, size and
//! free space: `GetLogicalDriveStringsW`, `GetVolumeInformationW`, `GetDiskFreeSpaceExW`.

use muster_proto::data::Filesystem;
use muster_proto::{FunctionData, FunctionReport};
use windows_sys::Win32::Storage::FileSystem::{
    GetDiskFreeSpaceExW, GetDriveTypeW, GetLogicalDriveStringsW, GetVolumeInformationW,
    GetVolumeNameForVolumeMountPointW,
};

use super::win::{from_wide, last_error, wide};
use crate::{CollectError, Collected, Context};

const FILE_READ_ONLY_VOLUME: u32 = 0x0008_0000;
// GetDriveTypeW's answers (winbase.h).
const DRIVE_UNKNOWN: u32 = 0;
const DRIVE_NO_ROOT_DIR: u32 = 1;
const DRIVE_REMOVABLE: u32 = 2;
const DRIVE_CDROM: u32 = 5;

/// Space on a volume, as `GetDiskFreeSpaceExW` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Space {
    pub total: u64,
    /// Free to the calling user (quotas apply): `df`'s "Avail".
    pub available: u64,
    pub free: u64,
}

/// `GetDiskFreeSpaceExW` for a root such as `C:\`.
pub fn disk_space(root: &str) -> Result<Space, CollectError> {
    let path = wide(root);
    let (mut available, mut total, mut free) = (0u64, 0u64, 0u64);
    // SAFETY: `path` is NUL-terminated; the three outputs are writable u64s.
    let ok = unsafe { GetDiskFreeSpaceExW(path.as_ptr(), &mut available, &mut total, &mut free) };
    if ok == 0 {
        return Err(last_error(&format!("GetDiskFreeSpaceExW({root})")));
    }
    Ok(Space {
        total,
        available,
        free,
    })
}

/// Splits `GetLogicalDriveStringsW`'s `C:\␀D:\␀␀` list.
pub fn split_multi_string(buf: &[u16]) -> Vec<String> {
    buf.split(|&c| c == 0)
        .filter(|s| !s.is_empty())
        .map(String::from_utf16_lossy)
        .collect()
}

/// The drive roots, `C:\` first.
pub fn drive_roots() -> Result<Vec<String>, CollectError> {
    let mut buf = vec![0u16; 512];
    // SAFETY: `buf` holds `buf.len()` writable units.
    let len = unsafe { GetLogicalDriveStringsW(buf.len() as u32, buf.as_mut_ptr()) } as usize;
    if len == 0 {
        return Err(last_error("GetLogicalDriveStringsW"));
    }
    if len > buf.len() {
        buf = vec![0u16; len + 1];
        // SAFETY: as above, with the size the first call asked for.
        let again = unsafe { GetLogicalDriveStringsW(buf.len() as u32, buf.as_mut_ptr()) } as usize;
        if again == 0 || again > buf.len() {
            return Err(last_error("GetLogicalDriveStringsW"));
        }
    }
    Ok(split_multi_string(&buf))
}

/// A volume's label, file system name and flags.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeInformation {
    pub label: String,
    pub fs_type: String,
    pub flags: u32,
}

pub fn volume_information(root: &str) -> Result<VolumeInformation, CollectError> {
    let path = wide(root);
    let mut label = [0u16; 261];
    let mut fs = [0u16; 261];
    let (mut serial, mut max_component, mut flags) = (0u32, 0u32, 0u32);
    // SAFETY: `path` is NUL-terminated; both name buffers are as long as passed; the numbers
    // are writable u32s.
    let ok = unsafe {
        GetVolumeInformationW(
            path.as_ptr(),
            label.as_mut_ptr(),
            label.len() as u32,
            &mut serial,
            &mut max_component,
            &mut flags,
            fs.as_mut_ptr(),
            fs.len() as u32,
        )
    };
    if ok == 0 {
        return Err(last_error(&format!("GetVolumeInformationW({root})")));
    }
    Ok(VolumeInformation {
        label: from_wide(&label),
        fs_type: from_wide(&fs),
        flags,
    })
}

/// The volume GUID path (`\\?\Volume{...}\`) of a mount point, when the volume has one.
fn volume_name(root: &str) -> Option<String> {
    let path = wide(root);
    let mut name = [0u16; 64];
    // SAFETY: `path` is NUL-terminated; `name` holds the 50 units a volume GUID path needs.
    let ok = unsafe {
        GetVolumeNameForVolumeMountPointW(path.as_ptr(), name.as_mut_ptr(), name.len() as u32)
    };
    (ok != 0)
        .then(|| from_wide(&name))
        .filter(|n| !n.is_empty())
}

fn drive_type(root: &str) -> u32 {
    let path = wide(root);
    // SAFETY: `path` is NUL-terminated.
    unsafe { GetDriveTypeW(path.as_ptr()) }
}

/// One [`Filesystem`] per drive letter with a mounted, readable volume. Empty drives (a CD
/// drive without a disc) are left out; a volume that fails otherwise is named in the error.
pub fn collect(_: &Context) -> Collected {
    let mut filesystems = Vec::new();
    let mut problems = Vec::new();
    for root in drive_roots()? {
        let kind = drive_type(&root);
        if matches!(kind, DRIVE_UNKNOWN | DRIVE_NO_ROOT_DIR) {
            continue;
        }
        let info = match volume_information(&root) {
            Ok(info) => info,
            // No medium in a removable or optical drive is not a problem.
            Err(_) if matches!(kind, DRIVE_CDROM | DRIVE_REMOVABLE) => continue,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        let space = match disk_space(&root) {
            Ok(space) => space,
            Err(e) => {
                problems.push(e.to_string());
                continue;
            }
        };
        let mount_point = root.trim_end_matches('\\').to_owned();
        filesystems.push(Filesystem {
            device: volume_name(&root).unwrap_or_else(|| mount_point.clone()),
            mount_point,
            fs_type: info.fs_type,
            read_only: info.flags & FILE_READ_ONLY_VOLUME != 0,
            size_bytes: space.total,
            used_bytes: space.total.saturating_sub(space.free),
            free_bytes: space.available,
            inodes_total: 0,
            inodes_used: 0,
            inodes_free: 0,
        });
    }
    let mut report = FunctionReport::new(FunctionData::Filesystems(filesystems));
    report.error = (!problems.is_empty()).then(|| problems.join("; "));
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_drive_lists() {
        let buf: Vec<u16> = "C:\\\0D:\\\0Z:\\\0\0\0\0".encode_utf16().collect();
        assert_eq!(split_multi_string(&buf), ["C:\\", "D:\\", "Z:\\"]);
        assert!(split_multi_string(&[0, 0]).is_empty());
    }
}
