//! `processes/processes`: a Toolhelp32 snapshot of the processes, then per process (where
//! this user may open it) its command line, start and CPU times, working set and owner.

use std::collections::HashMap;

use muster_proto::data::Process;
use muster_proto::{FunctionData, FunctionReport};
use windows_sys::Wdk::System::Threading::{
    NtQueryInformationProcess, ProcessBasicInformation, ProcessCommandLineInformation,
};
use windows_sys::Win32::Foundation::{FILETIME, UNICODE_STRING};
use windows_sys::Win32::Security::{
    GetTokenInformation, LookupAccountSidW, PSID, SID_NAME_USE, TOKEN_QUERY, TOKEN_USER, TokenUser,
};
use windows_sys::Win32::System::Diagnostics::Debug::ReadProcessMemory;
use windows_sys::Win32::System::Diagnostics::ToolHelp::{
    CreateToolhelp32Snapshot, PROCESSENTRY32W, Process32FirstW, Process32NextW, TH32CS_SNAPPROCESS,
};
use windows_sys::Win32::System::ProcessStatus::{K32GetProcessMemoryInfo, PROCESS_MEMORY_COUNTERS};
use windows_sys::Win32::System::Threading::{
    GetProcessTimes, OpenProcess, OpenProcessToken, PROCESS_QUERY_INFORMATION,
    PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_VM_READ,
};

use super::users::qualified_user;
use super::win::{Handle, filetime, filetime_to_timestamp, from_wide, last_error};
use crate::{Collected, Context};

/// Splits a Windows command line into its arguments the way the Microsoft C runtime does:
/// whitespace separates; double quotes group; `2n` backslashes before a quote are `n`
/// backslashes and the quote toggles grouping, `2n+1` are `n` and a literal quote; `""`
/// inside a group is a literal quote. The program name (first argument) ends at the first
/// whitespace outside quotes, and backslashes in it are literal.
pub fn split_command_line(line: &str) -> Vec<String> {
    let mut args = Vec::new();
    let mut chars = line.chars().peekable();
    // The program name.
    let mut program = String::new();
    let mut quoted = false;
    while let Some(&c) = chars.peek() {
        if c == '"' {
            quoted = !quoted;
        } else if !quoted && (c == ' ' || c == '\t') {
            break;
        } else {
            program.push(c);
        }
        chars.next();
    }
    if program.is_empty() && line.trim().is_empty() {
        return args;
    }
    args.push(program);
    loop {
        while chars.next_if(|&c| c == ' ' || c == '\t').is_some() {}
        if chars.peek().is_none() {
            break;
        }
        let mut arg = String::new();
        let mut quoted = false;
        while let Some(&c) = chars.peek() {
            match c {
                ' ' | '\t' if !quoted => break,
                '\\' => {
                    let mut backslashes = 0;
                    while chars.next_if_eq(&'\\').is_some() {
                        backslashes += 1;
                    }
                    if chars.peek() == Some(&'"') {
                        arg.extend(std::iter::repeat_n('\\', backslashes / 2));
                        if backslashes % 2 == 1 {
                            arg.push('"');
                            chars.next();
                        }
                    } else {
                        arg.extend(std::iter::repeat_n('\\', backslashes));
                    }
                    continue;
                }
                '"' => {
                    chars.next();
                    if quoted && chars.peek() == Some(&'"') {
                        arg.push('"');
                        chars.next();
                    } else {
                        quoted = !quoted;
                    }
                    continue;
                }
                _ => arg.push(c),
            }
            chars.next();
        }
        args.push(arg);
    }
    args
}

fn command_line(process: &Handle) -> Option<String> {
    // UNICODE_STRING followed by its text; 32 KiB units is the longest command line.
    let mut buf = vec![0u64; (size_of::<UNICODE_STRING>() + 65_536) / 8 + 1];
    let mut len = 0u32;
    // SAFETY: `buf` is writable for the length passed and aligned for UNICODE_STRING.
    let status = unsafe {
        NtQueryInformationProcess(
            process.raw(),
            ProcessCommandLineInformation,
            buf.as_mut_ptr().cast(),
            (buf.len() * 8) as u32,
            &mut len,
        )
    };
    if status < 0 {
        return None;
    }
    // SAFETY: on success the buffer starts with a UNICODE_STRING.
    let string = unsafe { &*buf.as_ptr().cast::<UNICODE_STRING>() };
    if string.Buffer.is_null() {
        return None;
    }
    let start = buf.as_ptr() as usize;
    let end = start + buf.len() * 8;
    let text = string.Buffer as usize;
    let bytes = usize::from(string.Length);
    // The text must lie inside our buffer, where the call put it.
    if text < start || text + bytes > end {
        return None;
    }
    // SAFETY: checked just above: `bytes` readable bytes inside `buf`.
    let units = unsafe { std::slice::from_raw_parts(string.Buffer, bytes / 2) };
    Some(String::from_utf16_lossy(units))
}

/// `T` read from another process's memory at `address`.
fn read_remote<T: Copy + Default>(process: &Handle, address: usize) -> Option<T> {
    let mut value = T::default();
    let mut read = 0usize;
    // SAFETY: `value` is writable for size_of::<T>() bytes; the address is in the other
    // process, which ReadProcessMemory checks (it fails rather than faults).
    let ok = unsafe {
        ReadProcessMemory(
            process.raw(),
            address as *const _,
            (&raw mut value).cast(),
            size_of::<T>(),
            &mut read,
        )
    };
    (ok != 0 && read == size_of::<T>()).then_some(value)
}

/// The command line from the process's PEB (`ProcessParameters->CommandLine`), for systems
/// without `ProcessCommandLineInformation` (Windows before 8.1, Wine 8). Needs the
/// `PROCESS_VM_READ` right, which only processes of the same user (or an admin) grant.
#[cfg(target_pointer_width = "64")]
fn command_line_from_peb(pid: u32) -> Option<String> {
    // x64 offsets: PEB.ProcessParameters at 0x20; RTL_USER_PROCESS_PARAMETERS.CommandLine
    // (a UNICODE_STRING: Length u16, MaximumLength u16, padding, Buffer) at 0x70.
    const PROCESS_PARAMETERS: usize = 0x20;
    const COMMAND_LINE: usize = 0x70;
    // SAFETY: no pointers; the handle is owned by the Handle.
    let process =
        Handle::new(unsafe { OpenProcess(PROCESS_QUERY_INFORMATION | PROCESS_VM_READ, 0, pid) })?;
    // PROCESS_BASIC_INFORMATION: ExitStatus, PebBaseAddress, then four more words.
    let mut info = [0usize; 6];
    let mut len = 0u32;
    // SAFETY: `info` is writable for the length passed and has the structure's size and
    // alignment.
    let status = unsafe {
        NtQueryInformationProcess(
            process.raw(),
            ProcessBasicInformation,
            info.as_mut_ptr().cast(),
            size_of_val(&info) as u32,
            &mut len,
        )
    };
    let peb = info[1];
    if status < 0 || peb == 0 {
        return None;
    }
    let parameters: usize = read_remote(&process, peb + PROCESS_PARAMETERS)?;
    let string: [usize; 2] = read_remote(&process, parameters.checked_add(COMMAND_LINE)?)?;
    let length = string[0] & 0xffff;
    let buffer = string[1];
    if buffer == 0 || length == 0 {
        return None;
    }
    let mut units = vec![0u16; length / 2];
    let mut read = 0usize;
    // SAFETY: `units` is writable for `length` bytes (at most 64 KiB: Length is a u16).
    let ok = unsafe {
        ReadProcessMemory(
            process.raw(),
            buffer as *const _,
            units.as_mut_ptr().cast(),
            units.len() * 2,
            &mut read,
        )
    };
    (ok != 0).then(|| String::from_utf16_lossy(&units[..read / 2]))
}

#[cfg(not(target_pointer_width = "64"))]
fn command_line_from_peb(_: u32) -> Option<String> {
    None
}

/// `(user + kernel CPU seconds, start time)` from `GetProcessTimes`.
fn times(process: &Handle) -> Option<(f64, Option<jiff::Timestamp>)> {
    let mut t = [FILETIME::default(); 4];
    let [creation, exit, kernel, user] = &mut t;
    // SAFETY: four writable FILETIMEs.
    let ok = unsafe { GetProcessTimes(process.raw(), creation, exit, kernel, user) };
    (ok != 0).then(|| {
        let cpu = (filetime(&t[2]) + filetime(&t[3])) as f64 / 1e7;
        (cpu, filetime_to_timestamp(filetime(&t[0])))
    })
}

fn working_set(process: &Handle) -> Option<u64> {
    let mut counters = PROCESS_MEMORY_COUNTERS {
        cb: size_of::<PROCESS_MEMORY_COUNTERS>() as u32,
        ..Default::default()
    };
    // SAFETY: `counters` is writable and its size is passed.
    let ok = unsafe { K32GetProcessMemoryInfo(process.raw(), &mut counters, counters.cb) };
    (ok != 0).then_some(counters.WorkingSetSize as u64)
}

/// The account a SID names, as `DOMAIN\user`.
fn account_name(sid: PSID) -> Option<String> {
    let mut name = [0u16; 256];
    let mut domain = [0u16; 256];
    let (mut name_len, mut domain_len) = (name.len() as u32, domain.len() as u32);
    let mut kind: SID_NAME_USE = 0;
    // SAFETY: `sid` is a valid SID from the token; both buffers are as long as passed.
    let ok = unsafe {
        LookupAccountSidW(
            std::ptr::null(),
            sid,
            name.as_mut_ptr(),
            &mut name_len,
            domain.as_mut_ptr(),
            &mut domain_len,
            &mut kind,
        )
    };
    (ok != 0).then(|| qualified_user(Some(&from_wide(&domain)), &from_wide(&name)))
}

/// The process's owner, looked up once per SID (account lookups are slow).
fn owner(process: &Handle, cache: &mut HashMap<Vec<u8>, Option<String>>) -> Option<String> {
    let mut raw = std::ptr::null_mut();
    // SAFETY: `raw` is writable; the token is owned by the Handle below.
    if unsafe { OpenProcessToken(process.raw(), TOKEN_QUERY, &mut raw) } == 0 {
        return None;
    }
    let token = Handle::new(raw)?;
    let mut buf = vec![0u64; 64];
    let mut len = 0u32;
    // SAFETY: `buf` is writable and aligned for TOKEN_USER; its size is passed.
    let ok = unsafe {
        GetTokenInformation(
            token.raw(),
            TokenUser,
            buf.as_mut_ptr().cast(),
            (buf.len() * 8) as u32,
            &mut len,
        )
    };
    if ok == 0 {
        return None;
    }
    // SAFETY: on success the buffer starts with a TOKEN_USER whose SID lies inside it.
    let sid = unsafe { (*buf.as_ptr().cast::<TOKEN_USER>()).User.Sid };
    // The SID's bytes are the cache key: revision, count, authority, then 4 bytes per
    // sub-authority (the count is byte 1; at most 15).
    // SAFETY: a SID is at least 8 bytes and its sub-authority count says how long it is.
    let key = unsafe {
        let count = usize::from(*sid.cast::<u8>().add(1)).min(15);
        std::slice::from_raw_parts(sid.cast::<u8>(), 8 + 4 * count).to_vec()
    };
    cache
        .entry(key)
        .or_insert_with(|| account_name(sid))
        .clone()
}

fn entries() -> Result<Vec<PROCESSENTRY32W>, crate::CollectError> {
    // SAFETY: no pointers; the snapshot handle is owned below.
    let snapshot = Handle::new(unsafe { CreateToolhelp32Snapshot(TH32CS_SNAPPROCESS, 0) })
        .ok_or_else(|| last_error("CreateToolhelp32Snapshot"))?;
    let mut list = Vec::new();
    let mut entry = PROCESSENTRY32W {
        dwSize: size_of::<PROCESSENTRY32W>() as u32,
        ..Default::default()
    };
    // SAFETY: `entry` is writable with dwSize set.
    let mut more = unsafe { Process32FirstW(snapshot.raw(), &mut entry) } != 0;
    while more {
        list.push(entry);
        // SAFETY: as above.
        more = unsafe { Process32NextW(snapshot.raw(), &mut entry) } != 0;
    }
    Ok(list)
}

/// One [`Process`] per process in the snapshot. What cannot be read for a process this user
/// may not open (the System process, other users' services) stays empty.
pub fn collect(_: &Context) -> Collected {
    let mut owners = HashMap::new();
    let processes = entries()?
        .into_iter()
        .map(|entry| {
            let pid = entry.th32ProcessID;
            let name = from_wide(&entry.szExeFile);
            // SAFETY: no pointers; the handle is owned by the Handle.
            let handle =
                Handle::new(unsafe { OpenProcess(PROCESS_QUERY_LIMITED_INFORMATION, 0, pid) });
            let (cpu_time_s, start_time) = handle.as_ref().and_then(times).unwrap_or((0.0, None));
            Process {
                pid,
                ppid: entry.th32ParentProcessID,
                cmdline: handle
                    .as_ref()
                    .and_then(command_line)
                    .or_else(|| {
                        if pid == 0 {
                            None
                        } else {
                            command_line_from_peb(pid)
                        }
                    })
                    .map(|line| split_command_line(&line))
                    .unwrap_or_default(),
                user: handle.as_ref().and_then(|h| owner(h, &mut owners)),
                uid: None,
                // Windows has no run state per process; what is listed is running.
                state: "running".to_owned(),
                start_time,
                cpu_time_s,
                rss_bytes: handle.as_ref().and_then(working_set).unwrap_or(0),
                name,
            }
        })
        .collect();
    Ok(Some(FunctionReport::new(FunctionData::Processes(
        processes,
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn splits_command_lines_like_the_c_runtime() {
        let cases: [(&str, &[&str]); 8] = [
            ("", &[]),
            ("notepad.exe", &["notepad.exe"]),
            (
                r#""C:\Program Files\A\a.exe" -x  "two words""#,
                &[r"C:\Program Files\A\a.exe", "-x", "two words"],
            ),
            (r#"a.exe a\\\"b c"#, &["a.exe", r#"a\"b"#, "c"]),
            (r#"a.exe "a\\" b"#, &["a.exe", r"a\", "b"]),
            (r"C:\dir\a.exe C:\path\", &[r"C:\dir\a.exe", r"C:\path\"]),
            (r#"a.exe "say ""hi""""#, &["a.exe", r#"say "hi""#]),
            ("a.exe\tx\t\t", &["a.exe", "x"]),
        ];
        for (line, expected) in cases {
            assert_eq!(split_command_line(line), expected, "{line}");
        }
    }

    proptest! {
        #[test]
        fn never_panics_on_any_command_line(line in "\\PC*") {
            split_command_line(&line);
        }
    }
}
