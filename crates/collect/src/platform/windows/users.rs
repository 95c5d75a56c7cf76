//! `hardware/users`: the logged-on sessions from the Remote Desktop Services (WTS) API, which
//! covers the console as well as remote sessions.

use muster_proto::data::UserSession;
use muster_proto::{FunctionData, FunctionReport};
use windows_sys::Win32::System::RemoteDesktop::{
    WTS_CURRENT_SERVER_HANDLE, WTS_INFO_CLASS, WTS_SESSION_INFOW, WTSActive, WTSClientName,
    WTSDisconnected, WTSDomainName, WTSEnumerateSessionsW, WTSFreeMemory, WTSINFOW,
    WTSQuerySessionInformationW, WTSSessionInfo, WTSUserName,
};

use super::win::{filetime_to_timestamp, from_wide_ptr, last_error, non_empty};
use crate::{Collected, Context};

/// `DOMAIN\user`, or just the user when there is no domain.
pub fn qualified_user(domain: Option<&str>, user: &str) -> String {
    match domain {
        Some(domain) if !domain.is_empty() => format!("{domain}\\{user}"),
        _ => user.to_owned(),
    }
}

/// The raw bytes of one session's information of class `class`, freed after `read` saw them.
fn query<T>(session: u32, class: WTS_INFO_CLASS, read: impl FnOnce(&[u8]) -> T) -> Option<T> {
    let mut buf: *mut u16 = std::ptr::null_mut();
    let mut len = 0u32;
    // SAFETY: both outputs are writable; on success `buf` is allocated by WTS and freed below.
    let ok = unsafe {
        WTSQuerySessionInformationW(
            WTS_CURRENT_SERVER_HANDLE,
            session,
            class,
            &mut buf,
            &mut len,
        )
    };
    if ok == 0 || buf.is_null() {
        return None;
    }
    // SAFETY: WTS returned `len` readable bytes at `buf`.
    let bytes = unsafe { std::slice::from_raw_parts(buf.cast::<u8>(), len as usize) };
    let value = read(bytes);
    // SAFETY: `buf` came from WTSQuerySessionInformationW and is freed once.
    unsafe { WTSFreeMemory(buf.cast()) };
    Some(value)
}

fn query_string(session: u32, class: WTS_INFO_CLASS) -> Option<String> {
    let text = query(session, class, |bytes| {
        let units: Vec<u16> = bytes
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .collect();
        super::win::from_wide(&units)
    });
    non_empty(text)
}

fn logon_time(session: u32) -> Option<jiff::Timestamp> {
    query(session, WTSSessionInfo, |bytes| {
        (bytes.len() >= size_of::<WTSINFOW>()).then(|| {
            // SAFETY: the buffer holds a whole WTSINFOW (checked above); it may be unaligned.
            let info = unsafe { bytes.as_ptr().cast::<WTSINFOW>().read_unaligned() };
            info.LogonTime
        })
    })
    .flatten()
    .and_then(|t| u64::try_from(t).ok())
    .and_then(filetime_to_timestamp)
}

/// One [`UserSession`] per active or disconnected session with a user.
pub fn collect(_: &Context) -> Collected {
    let mut sessions: *mut WTS_SESSION_INFOW = std::ptr::null_mut();
    let mut count = 0u32;
    // SAFETY: both outputs are writable; on success `sessions` is freed below.
    let ok = unsafe {
        WTSEnumerateSessionsW(WTS_CURRENT_SERVER_HANDLE, 0, 1, &mut sessions, &mut count)
    };
    if ok == 0 {
        return Err(last_error("WTSEnumerateSessionsW"));
    }
    let list: &[WTS_SESSION_INFOW] = if sessions.is_null() {
        &[]
    } else {
        // SAFETY: WTS returned `count` sessions at `sessions`.
        unsafe { std::slice::from_raw_parts(sessions, count as usize) }
    };
    let mut users = Vec::new();
    for session in list {
        if session.State != WTSActive && session.State != WTSDisconnected {
            continue;
        }
        let id = session.SessionId;
        let Some(user) = query_string(id, WTSUserName) else {
            continue;
        };
        let domain = query_string(id, WTSDomainName);
        // SAFETY: the station name is a NUL-terminated string inside the WTS buffer.
        let terminal = non_empty(unsafe { from_wide_ptr(session.pWinStationName) });
        users.push(UserSession {
            user: qualified_user(domain.as_deref(), &user),
            terminal,
            // The client's name is set for remote sessions only.
            host: query_string(id, WTSClientName),
            login_time: logon_time(id),
            pid: None,
        });
    }
    if !sessions.is_null() {
        // SAFETY: allocated by WTSEnumerateSessionsW, freed once, not used after.
        unsafe { WTSFreeMemory(sessions.cast()) };
    }
    Ok(Some(FunctionReport::new(FunctionData::Users(users))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualifies_users_with_their_domain() {
        assert_eq!(qualified_user(Some("CORP"), "alice"), "CORP\\alice");
        assert_eq!(qualified_user(Some(""), "alice"), "alice");
        assert_eq!(qualified_user(None, "alice"), "alice");
    }
}
