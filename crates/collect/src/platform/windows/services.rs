//! `services/windows_services`: every Win32 service the Service Control Manager knows
//! (`EnumServicesStatusExW`), with its start type (`QueryServiceConfigW`).
//!
//! The contract's fields are systemd's; a Windows service fills them as: `load_state` = the
//! start type (`auto`, `demand`, `disabled`, `boot`, `system`), `active_state` = `active`
//! while it runs or is between states and `inactive` when stopped, `sub_state` = the SCM
//! state (`running`, `stopped`, `start_pending`, ...), `description` = the display name.

use muster_proto::data::Service;
use muster_proto::{FunctionData, FunctionReport};
use windows_sys::Win32::Foundation::{ERROR_INSUFFICIENT_BUFFER, ERROR_MORE_DATA, GetLastError};
use windows_sys::Win32::System::Services::{
    CloseServiceHandle, ENUM_SERVICE_STATUS_PROCESSW, EnumServicesStatusExW, OpenSCManagerW,
    OpenServiceW, QUERY_SERVICE_CONFIGW, QueryServiceConfigW, SC_ENUM_PROCESS_INFO, SC_HANDLE,
    SC_MANAGER_CONNECT, SC_MANAGER_ENUMERATE_SERVICE, SERVICE_QUERY_CONFIG, SERVICE_STATE_ALL,
    SERVICE_WIN32,
};

use super::win::{from_wide_ptr, last_error, wide};
use crate::{CollectError, Collected, Context};

/// A service-manager handle closed on drop.
struct ScHandle(SC_HANDLE);

impl ScHandle {
    fn new(raw: SC_HANDLE) -> Option<Self> {
        (!raw.is_null()).then_some(ScHandle(raw))
    }
}

impl Drop for ScHandle {
    fn drop(&mut self) {
        // SAFETY: owned, valid, closed once.
        unsafe { CloseServiceHandle(self.0) };
    }
}

/// `SERVICE_STATUS_CURRENT_STATE` as a word.
pub fn state_name(state: u32) -> &'static str {
    match state {
        1 => "stopped",
        2 => "start_pending",
        3 => "stop_pending",
        4 => "running",
        5 => "continue_pending",
        6 => "pause_pending",
        7 => "paused",
        _ => "unknown",
    }
}

/// `SERVICE_START_TYPE` as a word.
pub fn start_type_name(start: u32) -> &'static str {
    match start {
        0 => "boot",
        1 => "system",
        2 => "auto",
        3 => "demand",
        4 => "disabled",
        _ => "unknown",
    }
}

/// One service as the SCM lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub name: String,
    pub display_name: Option<String>,
    pub state: u32,
    pub pid: u32,
    /// `SERVICE_START_TYPE`, when the configuration could be read.
    pub start_type: Option<u32>,
    pub binary_path: Option<String>,
}

fn enumerate(manager: &ScHandle) -> Result<Vec<Listed>, CollectError> {
    let mut services = Vec::new();
    let mut resume = 0u32;
    let mut buf = vec![0u64; 64 * 1024 / 8];
    loop {
        let (mut needed, mut returned) = (0u32, 0u32);
        // SAFETY: `buf` is writable for the byte length passed and aligned for the entries;
        // the other outputs are writable u32s.
        let ok = unsafe {
            EnumServicesStatusExW(
                manager.0,
                SC_ENUM_PROCESS_INFO,
                SERVICE_WIN32,
                SERVICE_STATE_ALL,
                buf.as_mut_ptr().cast(),
                (buf.len() * 8) as u32,
                &mut needed,
                &mut returned,
                &mut resume,
                std::ptr::null(),
            )
        };
        let error = if ok == 0 {
            // SAFETY: no arguments.
            unsafe { GetLastError() }
        } else {
            0
        };
        if ok == 0 && error != ERROR_MORE_DATA {
            return Err(last_error("EnumServicesStatusExW"));
        }
        let entries = buf.as_ptr().cast::<ENUM_SERVICE_STATUS_PROCESSW>();
        for i in 0..returned as usize {
            // SAFETY: the call wrote `returned` entries at the buffer's start; their strings
            // lie later in the same buffer.
            let entry = unsafe { &*entries.add(i) };
            // SAFETY: as above.
            let (name, display_name) = unsafe {
                (
                    from_wide_ptr(entry.lpServiceName),
                    from_wide_ptr(entry.lpDisplayName),
                )
            };
            services.push(Listed {
                name: name.unwrap_or_default(),
                display_name,
                state: entry.ServiceStatusProcess.dwCurrentState,
                pid: entry.ServiceStatusProcess.dwProcessId,
                start_type: None,
                binary_path: None,
            });
        }
        if ok != 0 {
            return Ok(services);
        }
        if returned == 0 {
            // Not even one entry fitted: grow to what the SCM asked for.
            let bytes = (needed as usize).max(buf.len() * 16);
            if bytes > 16 * 1024 * 1024 {
                return Err(CollectError::Other(
                    "EnumServicesStatusExW: the service list does not fit in 16 MiB".to_owned(),
                ));
            }
            buf = vec![0u64; bytes.div_ceil(8)];
        }
    }
}

/// The start type and binary path of one service.
fn config(manager: &ScHandle, name: &str) -> Option<(u32, Option<String>)> {
    let wide_name = wide(name);
    // SAFETY: `wide_name` is NUL-terminated; the handle is owned below.
    let service = ScHandle::new(unsafe {
        OpenServiceW(manager.0, wide_name.as_ptr(), SERVICE_QUERY_CONFIG)
    })?;
    let mut buf = vec![0u64; 8 * 1024 / 8];
    for _ in 0..2 {
        let mut needed = 0u32;
        // SAFETY: `buf` is writable for the length passed and aligned for the structure.
        let ok = unsafe {
            QueryServiceConfigW(
                service.0,
                buf.as_mut_ptr().cast(),
                (buf.len() * 8) as u32,
                &mut needed,
            )
        };
        if ok != 0 {
            // SAFETY: on success the buffer starts with a QUERY_SERVICE_CONFIGW whose strings
            // lie inside it.
            let config = unsafe { &*buf.as_ptr().cast::<QUERY_SERVICE_CONFIGW>() };
            // SAFETY: as above.
            let path = unsafe { from_wide_ptr(config.lpBinaryPathName) };
            return Some((config.dwStartType, path));
        }
        // SAFETY: no arguments.
        if unsafe { GetLastError() } != ERROR_INSUFFICIENT_BUFFER || needed as usize > 1 << 20 {
            return None;
        }
        buf = vec![0u64; (needed as usize).div_ceil(8)];
    }
    None
}

fn open_manager() -> Result<ScHandle, CollectError> {
    // SAFETY: null machine and database mean the local, active database.
    ScHandle::new(unsafe {
        OpenSCManagerW(
            std::ptr::null(),
            std::ptr::null(),
            SC_MANAGER_CONNECT | SC_MANAGER_ENUMERATE_SERVICE,
        )
    })
    .ok_or_else(|| last_error("OpenSCManagerW"))
}

/// Every Win32 service, listed with its start type, SCM state and pid.
pub fn list() -> Result<Vec<Listed>, CollectError> {
    let manager = open_manager()?;
    let mut services = enumerate(&manager)?;
    for service in &mut services {
        if let Some((start, path)) = config(&manager, &service.name) {
            service.start_type = Some(start);
            service.binary_path = path;
        }
    }
    Ok(services)
}

pub fn collect(_: &Context) -> Collected {
    let services = list()?
        .into_iter()
        .map(|service| Service {
            load_state: service
                .start_type
                .map_or("unknown", start_type_name)
                .to_owned(),
            active_state: if service.state == 1 {
                "inactive"
            } else {
                "active"
            }
            .to_owned(),
            sub_state: state_name(service.state).to_owned(),
            // The Services console's two columns: the display name is also the description
            // Linux readers look for.
            description: service.display_name.clone(),
            display_name: service.display_name,
            start_type: service.start_type.map(|t| start_type_name(t).to_owned()),
            pid: (service.pid != 0).then_some(service.pid),
            binary_path: service.binary_path,
            name: service.name,
        })
        .collect();
    Ok(Some(FunctionReport::new(FunctionData::WindowsServices(
        services,
    ))))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scm_lists_wines_own_services_with_their_config() {
        // Wine's prefix has the RPC and Plug and Play services, as Windows does.
        let services = list().unwrap();
        let rpcss = services
            .iter()
            .find(|s| s.name.eq_ignore_ascii_case("RpcSs"))
            .unwrap_or_else(|| panic!("no RpcSs in {services:?}"));
        assert!(rpcss.start_type.is_some_and(|t| t <= 4), "{rpcss:?}");
        assert!(
            rpcss
                .binary_path
                .as_ref()
                .is_some_and(|p| p.to_ascii_lowercase().contains("rpcss")),
            "{rpcss:?}"
        );
        assert!(
            services
                .iter()
                .any(|s| s.name.eq_ignore_ascii_case("PlugPlay"))
        );
        assert_eq!(state_name(4), "running");
        assert_eq!(start_type_name(2), "auto");
    }
}
