//! Small safe wrappers over the Win32 calls several collectors share: UTF-16 strings, owned
//! handles, `FILETIME`s, registry values and the last error.

use std::io;

use jiff::Timestamp;
use windows_sys::Win32::Foundation::{CloseHandle, FILETIME, HANDLE, INVALID_HANDLE_VALUE};
use winreg::RegKey;
use winreg::enums::RegType;

use crate::CollectError;

/// `s` as a NUL-terminated UTF-16 string for a `PCWSTR` argument.
pub fn wide(s: &str) -> Vec<u16> {
    s.encode_utf16().chain(Some(0)).collect()
}

/// The UTF-16 text in `buf` up to its first NUL (or its end).
pub fn from_wide(buf: &[u16]) -> String {
    let end = buf.iter().position(|&c| c == 0).unwrap_or(buf.len());
    String::from_utf16_lossy(&buf[..end])
}

/// The NUL-terminated UTF-16 string at `p`; `None` for a null pointer.
///
/// # Safety
/// `p` is null or points to a readable, NUL-terminated UTF-16 string.
pub unsafe fn from_wide_ptr(p: *const u16) -> Option<String> {
    if p.is_null() {
        return None;
    }
    let mut len = 0;
    // SAFETY: the caller promises a NUL-terminated string, so every unit up to the NUL is
    // readable.
    unsafe {
        while *p.add(len) != 0 {
            len += 1;
        }
        Some(String::from_utf16_lossy(std::slice::from_raw_parts(p, len)))
    }
}

/// `Some(text)` when it is not empty after trimming.
pub fn non_empty(text: Option<String>) -> Option<String> {
    text.map(|t| t.trim().to_owned()).filter(|t| !t.is_empty())
}

/// A kernel handle closed on drop.
#[derive(Debug)]
pub struct Handle(HANDLE);

impl Handle {
    /// Owns `raw`, or `None` when it is null or `INVALID_HANDLE_VALUE` (the two ways Win32
    /// reports a failed open).
    pub fn new(raw: HANDLE) -> Option<Self> {
        (!raw.is_null() && raw != INVALID_HANDLE_VALUE).then_some(Handle(raw))
    }

    pub fn raw(&self) -> HANDLE {
        self.0
    }
}

// SAFETY: a kernel handle is a process-wide value; Windows lets any thread use and close it.
unsafe impl Send for Handle {}
// SAFETY: as above; the calls made through it are thread-safe.
unsafe impl Sync for Handle {}

impl Drop for Handle {
    fn drop(&mut self) {
        // SAFETY: the handle is owned by this value and valid until now; it is closed once.
        unsafe {
            CloseHandle(self.0);
        }
    }
}

/// The calling thread's last Win32 error, as a collector error naming what failed.
pub fn last_error(what: &str) -> CollectError {
    os_error(what, io::Error::last_os_error())
}

/// A collector error naming what failed and why.
pub fn os_error(what: &str, error: io::Error) -> CollectError {
    CollectError::Other(format!("{what}: {error}"))
}

/// A Win32 error code (as `GetAdaptersAddresses` and friends return) as an `io::Error`.
pub fn win32_error(code: u32) -> io::Error {
    io::Error::from_raw_os_error(code as i32)
}

/// A `FILETIME` as one number of 100 ns ticks.
pub fn filetime(ft: &FILETIME) -> u64 {
    (u64::from(ft.dwHighDateTime) << 32) | u64::from(ft.dwLowDateTime)
}

/// Ticks of 100 ns since 1601-01-01 UTC (a `FILETIME`) as a timestamp; `None` for zero
/// (Windows' "never") or what is out of range.
pub fn filetime_to_timestamp(ticks: u64) -> Option<Timestamp> {
    const UNIX_EPOCH_TICKS: i128 = 116_444_736_000_000_000;
    if ticks == 0 {
        return None;
    }
    Timestamp::from_nanosecond((i128::from(ticks) - UNIX_EPOCH_TICKS) * 100).ok()
}

/// A registry value as text: strings as they are, numbers in decimal; `None` when missing,
/// empty or of another type.
pub fn reg_string(key: &RegKey, name: &str) -> Option<String> {
    let value = key.get_raw_value(name).ok()?;
    let text = match value.vtype {
        RegType::REG_SZ | RegType::REG_EXPAND_SZ => {
            let units: Vec<u16> = value
                .bytes
                .chunks_exact(2)
                .map(|c| u16::from_le_bytes([c[0], c[1]]))
                .collect();
            from_wide(&units)
        }
        RegType::REG_DWORD => {
            u32::from_le_bytes(value.bytes.get(..4)?.try_into().ok()?).to_string()
        }
        RegType::REG_QWORD => {
            u64::from_le_bytes(value.bytes.get(..8)?.try_into().ok()?).to_string()
        }
        _ => return None,
    };
    non_empty(Some(text))
}

/// A registry value as a number: a DWORD or QWORD, or a string holding a decimal number.
pub fn reg_u64(key: &RegKey, name: &str) -> Option<u64> {
    reg_string(key, name)?.parse().ok()
}

/// Whether this process runs under Wine (which exports `wine_get_version` from ntdll): tests
/// use it to tell a Windows API Wine lacks from a bug.
pub fn is_wine() -> bool {
    use windows_sys::Win32::System::LibraryLoader::{GetModuleHandleW, GetProcAddress};
    let ntdll = wide("ntdll.dll");
    // SAFETY: both strings are NUL-terminated; ntdll is always loaded, and the module handle
    // is not freed (GetModuleHandleW does not add a reference).
    unsafe {
        let module = GetModuleHandleW(ntdll.as_ptr());
        !module.is_null() && GetProcAddress(module, c"wine_get_version".as_ptr().cast()).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filetimes_convert_to_unix_time() {
        assert_eq!(filetime_to_timestamp(0), None);
        assert_eq!(
            filetime_to_timestamp(116_444_736_000_000_000),
            Some(Timestamp::UNIX_EPOCH)
        );
        // 2024-01-01T00:00:00Z
        assert_eq!(
            filetime_to_timestamp(133_485_408_000_000_000).map(|t| t.as_second()),
            Some(1_704_067_200)
        );
    }

    #[test]
    fn wide_strings_round_trip() {
        let w = wide("C:\\Windows");
        assert_eq!(w.last(), Some(&0));
        assert_eq!(from_wide(&w), "C:\\Windows");
        // SAFETY: `w` is NUL-terminated.
        let back = unsafe { from_wide_ptr(w.as_ptr()) };
        assert_eq!(back.as_deref(), Some("C:\\Windows"));
        // SAFETY: null is allowed.
        assert_eq!(unsafe { from_wide_ptr(std::ptr::null()) }, None);
    }
}
