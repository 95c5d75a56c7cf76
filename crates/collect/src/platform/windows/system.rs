//! `hardware/system`: host name, Windows product and build from the registry's CurrentVersion
//! key, architecture, boot time, and the hypervisor (CPUID and the SMBIOS strings).

use jiff::{SignedDuration, Timestamp};
use muster_proto::data::SystemInfo;
use muster_proto::{FunctionData, FunctionReport};
use windows_sys::Win32::System::SystemInformation::{
    ComputerNamePhysicalDnsHostname, GetComputerNameExW, GetNativeSystemInfo, GetTickCount64,
    PROCESSOR_ARCHITECTURE_AMD64, PROCESSOR_ARCHITECTURE_ARM64, PROCESSOR_ARCHITECTURE_INTEL,
    SYSTEM_INFO,
};
use winreg::RegKey;
use winreg::enums::{HKEY_LOCAL_MACHINE, KEY_READ, KEY_WOW64_64KEY};

use super::win::{from_wide, os_error, reg_string, reg_u64};
use crate::platform::virt::{VirtInputs, cpuid_hypervisor_vendor, detect_virtualization};
use crate::{Collected, Context};

const CURRENT_VERSION: &str = r"SOFTWARE\Microsoft\Windows NT\CurrentVersion";

/// The values of `HKLM\SOFTWARE\Microsoft\Windows NT\CurrentVersion` that name the release.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentVersion {
    /// `ProductName`, e.g. `Windows 10 Pro` (Windows 11 still writes "Windows 10" here).
    pub product_name: Option<String>,
    /// `DisplayVersion` (`22H2`, Windows 10 20H2 and later) or else `ReleaseId` (`1909`).
    pub display_version: Option<String>,
    /// `CurrentMajorVersionNumber`.`CurrentMinorVersionNumber` (Windows 10 and later) or else
    /// `CurrentVersion` (`6.1`, `6.3`).
    pub version: Option<String>,
    /// `CurrentBuildNumber` or `CurrentBuild`, e.g. `19045`.
    pub build: Option<String>,
    /// `UBR`, the update build revision, e.g. `3803`.
    pub ubr: Option<u64>,
}

/// How the release is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Release {
    pub os_name: Option<String>,
    /// `10.0.19045.3803`: what `ver` prints, comparable part by part.
    pub os_version: Option<String>,
    pub pretty_name: Option<String>,
    /// The NT kernel version: `10.0.19045`.
    pub kernel: String,
}

/// Names the release from the CurrentVersion values.
pub fn describe(current: &CurrentVersion) -> Release {
    let build_number: Option<u64> = current.build.as_deref().and_then(|b| b.parse().ok());
    // Windows 11 kept "Windows 10" in ProductName; build 22000 is where 11 begins.
    let os_name = current.product_name.as_ref().map(|name| {
        if build_number.is_some_and(|b| b >= 22000) && name.contains("Windows 10") {
            name.replacen("Windows 10", "Windows 11", 1)
        } else {
            name.clone()
        }
    });
    let kernel = match (&current.version, &current.build) {
        (Some(v), Some(b)) => format!("{v}.{b}"),
        (Some(v), None) => v.clone(),
        (None, Some(b)) => b.clone(),
        (None, None) => String::new(),
    };
    let os_version = (!kernel.is_empty()).then(|| match current.ubr {
        Some(ubr) if current.build.is_some() => format!("{kernel}.{ubr}"),
        _ => kernel.clone(),
    });
    let build = current.build.as_ref().map(|b| match current.ubr {
        Some(ubr) => format!("build {b}.{ubr}"),
        None => format!("build {b}"),
    });
    let pretty_name = os_name.as_ref().map(|name| {
        let mut pretty = name.clone();
        if let Some(display) = &current.display_version {
            pretty = format!("{pretty} {display}");
        }
        if let Some(build) = build {
            pretty = format!("{pretty} ({build})");
        }
        pretty
    });
    Release {
        os_name,
        os_version,
        pretty_name,
        kernel,
    }
}

fn read_current_version() -> std::io::Result<CurrentVersion> {
    let key = RegKey::predef(HKEY_LOCAL_MACHINE)
        .open_subkey_with_flags(CURRENT_VERSION, KEY_READ | KEY_WOW64_64KEY)?;
    let version = match (
        reg_u64(&key, "CurrentMajorVersionNumber"),
        reg_u64(&key, "CurrentMinorVersionNumber"),
    ) {
        (Some(major), Some(minor)) => Some(format!("{major}.{minor}")),
        _ => reg_string(&key, "CurrentVersion"),
    };
    Ok(CurrentVersion {
        product_name: reg_string(&key, "ProductName"),
        display_version: reg_string(&key, "DisplayVersion")
            .or_else(|| reg_string(&key, "ReleaseId")),
        version,
        build: reg_string(&key, "CurrentBuildNumber").or_else(|| reg_string(&key, "CurrentBuild")),
        ubr: reg_u64(&key, "UBR"),
    })
}

/// The host's DNS host name (`GetComputerNameExW`), or else `COMPUTERNAME`.
pub fn hostname() -> Option<String> {
    let mut buf = [0u16; 256];
    let mut len = buf.len() as u32;
    // SAFETY: `buf` holds `len` writable UTF-16 units; the call writes at most that many.
    let ok =
        unsafe { GetComputerNameExW(ComputerNamePhysicalDnsHostname, buf.as_mut_ptr(), &mut len) };
    if ok != 0 {
        let name = from_wide(&buf[..(len as usize).min(buf.len())]);
        if !name.is_empty() {
            return Some(name);
        }
    }
    std::env::var("COMPUTERNAME").ok().filter(|n| !n.is_empty())
}

/// `HKLM\SOFTWARE\Microsoft\Cryptography\MachineGuid`, set at install time.
pub fn machine_id() -> Option<String> {
    let key = RegKey::predef(HKEY_LOCAL_MACHINE)
        .open_subkey_with_flags(
            r"SOFTWARE\Microsoft\Cryptography",
            KEY_READ | KEY_WOW64_64KEY,
        )
        .ok()?;
    reg_string(&key, "MachineGuid")
}

/// The machine's architecture in the kernel's words (`x86_64`, `aarch64`, `x86`), whatever
/// this process is built for.
pub fn arch() -> String {
    let mut info = SYSTEM_INFO::default();
    // SAFETY: `info` is a writable SYSTEM_INFO; the call cannot fail.
    unsafe { GetNativeSystemInfo(&mut info) };
    // SAFETY: both union members are plain integers; the architecture is the one documented.
    let arch = unsafe { info.Anonymous.Anonymous.wProcessorArchitecture };
    match arch {
        PROCESSOR_ARCHITECTURE_AMD64 => "x86_64".to_owned(),
        PROCESSOR_ARCHITECTURE_ARM64 => "aarch64".to_owned(),
        PROCESSOR_ARCHITECTURE_INTEL => "x86".to_owned(),
        other => format!("unknown ({other})"),
    }
}

/// Seconds since boot (`GetTickCount64` counts milliseconds).
pub fn uptime_s() -> u64 {
    // SAFETY: no arguments; cannot fail.
    let ms = unsafe { GetTickCount64() };
    ms / 1000
}

fn virtualization() -> Option<&'static str> {
    let dmi = super::dmi::read().ok();
    let field = |f: fn(&muster_proto::data::Dmi) -> &Option<String>| {
        dmi.as_ref().and_then(|d| f(d).clone())
    };
    detect_virtualization(&VirtInputs {
        dmi: [
            field(|d| &d.system_product),
            field(|d| &d.system_vendor),
            field(|d| &d.board_vendor),
            field(|d| &d.bios_vendor),
            field(|d| &d.system_version),
        ],
        cpuid_vendor: cpuid_hypervisor_vendor(),
        ..VirtInputs::default()
    })
}

pub fn collect(_: &Context) -> Collected {
    let current = read_current_version().map_err(|e| os_error(CURRENT_VERSION, e))?;
    let release = describe(&current);
    let uptime_s = uptime_s();
    let boot_time = Timestamp::now()
        .checked_sub(SignedDuration::from_secs(uptime_s as i64))
        .ok();
    Ok(Some(FunctionReport::new(FunctionData::System(vec![
        SystemInfo {
            hostname: hostname().unwrap_or_default(),
            os_name: release.os_name,
            os_version: release.os_version,
            os_id: Some("windows".to_owned()),
            os_pretty_name: release.pretty_name,
            kernel: release.kernel,
            arch: arch(),
            boot_time,
            uptime_s,
            virtualization: virtualization().map(str::to_owned),
            container: None,
            machine_id: machine_id(),
        },
    ]))))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn current(
        product: &str,
        display: Option<&str>,
        version: &str,
        build: &str,
        ubr: Option<u64>,
    ) -> CurrentVersion {
        CurrentVersion {
            product_name: Some(product.to_owned()),
            display_version: display.map(str::to_owned),
            version: Some(version.to_owned()),
            build: Some(build.to_owned()),
            ubr,
        }
    }

    #[test]
    fn names_windows_releases() {
        let win10 = describe(&current(
            "Windows 10 Pro",
            Some("22H2"),
            "10.0",
            "19045",
            Some(3803),
        ));
        assert_eq!(win10.os_name.as_deref(), Some("Windows 10 Pro"));
        assert_eq!(win10.os_version.as_deref(), Some("10.0.19045.3803"));
        assert_eq!(win10.kernel, "10.0.19045");
        assert_eq!(
            win10.pretty_name.as_deref(),
            Some("Windows 10 Pro 22H2 (build 19045.3803)")
        );
        let win11 = describe(&current(
            "Windows 10 Enterprise",
            Some("23H2"),
            "10.0",
            "22631",
            Some(2861),
        ));
        assert_eq!(win11.os_name.as_deref(), Some("Windows 11 Enterprise"));
        let win7 = describe(&current(
            "Windows 7 Professional",
            None,
            "6.1",
            "7601",
            None,
        ));
        assert_eq!(win7.os_version.as_deref(), Some("6.1.7601"));
        assert_eq!(
            win7.pretty_name.as_deref(),
            Some("Windows 7 Professional (build 7601)")
        );
        let empty = describe(&CurrentVersion::default());
        assert_eq!(
            (empty.os_name, empty.os_version, empty.kernel),
            (None, None, String::new())
        );
    }

    #[test]
    fn reads_this_hosts_release_and_identity() {
        // Wine fills CurrentVersion and MachineGuid in as Windows does.
        let current = read_current_version().unwrap();
        assert!(current.product_name.is_some(), "{current:?}");
        assert!(current.build.is_some(), "{current:?}");
        let guid = machine_id().unwrap();
        assert_eq!(guid.len(), 36, "{guid}");
        assert!(!hostname().unwrap().is_empty());
        assert_eq!(arch(), "x86_64");
    }
}
