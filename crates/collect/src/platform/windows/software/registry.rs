//! `software/registry`: installed programs from the Uninstall keys, the way Windows' "Apps"
//! list finds them: `HKLM\SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall` in both
//! registry views (64-bit programs, then 32-bit ones under WOW6432Node), then the per-user
//! installs of the current user (HKCU) and of every other loaded profile (`HKU\<sid>`).
//!
//! Entries without a DisplayName, with `SystemComponent` = 1, or with a `ParentKeyName`
//! (updates and parts of another product) are not programs of their own and are skipped, as
//! the Apps list skips them. The same program seen twice (HKCU is also `HKU\<own sid>`) is
//! reported once.
//!
//! Installed Windows updates come from the Component Based Servicing package list
//! (`...\Component Based Servicing\Packages\Package_for_KB*`, state 112 = installed): the
//! registry holds them without WMI (whose `Win32_QuickFixEngineering` reads the same store),
//! and only keys named for a KB are opened, so it stays cheap. Each KB is one item named
//! `KB<number>` with the package's version.

use std::collections::HashSet;

use jiff::Timestamp;
use jiff::civil::Date;
use muster_proto::data::Package;
use muster_proto::{FunctionData, FunctionReport};
use winreg::RegKey;
use winreg::enums::{
    HKEY_CURRENT_USER, HKEY_LOCAL_MACHINE, HKEY_USERS, KEY_READ, KEY_WOW64_32KEY, KEY_WOW64_64KEY,
};

use crate::platform::windows::win::{filetime_to_timestamp, reg_string, reg_u64};
use crate::{Collected, Context};

pub const UNINSTALL: &str = r"SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall";
pub const CBS_PACKAGES: &str =
    r"SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\Packages";
const SOURCE: &str = "registry";
/// CBS `CurrentState` of an installed package.
const CBS_INSTALLED: u64 = 112;

/// One Uninstall entry's values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UninstallEntry {
    pub display_name: Option<String>,
    pub display_version: Option<String>,
    pub publisher: Option<String>,
    /// `InstallDate`, `YYYYMMDD`.
    pub install_date: Option<String>,
    pub uninstall_string: Option<String>,
    /// `EstimatedSize`, KiB.
    pub estimated_size_kib: Option<u64>,
    pub system_component: bool,
    pub parent_key_name: Option<String>,
}

impl UninstallEntry {
    fn read(key: &RegKey) -> Self {
        UninstallEntry {
            display_name: reg_string(key, "DisplayName"),
            display_version: reg_string(key, "DisplayVersion"),
            publisher: reg_string(key, "Publisher"),
            install_date: reg_string(key, "InstallDate"),
            uninstall_string: reg_string(key, "UninstallString"),
            estimated_size_kib: reg_u64(key, "EstimatedSize"),
            system_component: reg_u64(key, "SystemComponent") == Some(1),
            parent_key_name: reg_string(key, "ParentKeyName"),
        }
    }

    /// Whether the Apps list would show this entry as a program.
    pub fn is_listed(&self) -> bool {
        self.display_name.is_some() && !self.system_component && self.parent_key_name.is_none()
    }

    /// The entry as a [`Package`], when it is listed.
    pub fn to_package(&self, architecture: Option<&str>) -> Option<Package> {
        if !self.is_listed() {
            return None;
        }
        Some(Package {
            name: self.display_name.clone()?,
            version: self.display_version.clone().unwrap_or_default(),
            architecture: architecture.map(str::to_owned),
            source: SOURCE.to_owned(),
            installed_size_bytes: self.estimated_size_kib.map(|kib| kib.saturating_mul(1024)),
            install_time: self.install_date.as_deref().and_then(parse_install_date),
            publisher: self.publisher.clone(),
            uninstall_string: self.uninstall_string.clone(),
        })
    }
}

/// `InstallDate` (`YYYYMMDD`, the date the installer ran) as that day's midnight, UTC.
pub fn parse_install_date(text: &str) -> Option<Timestamp> {
    let text = text.trim();
    if text.len() != 8 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let year: i16 = text[..4].parse().ok()?;
    let month: i8 = text[4..6].parse().ok()?;
    let day: i8 = text[6..].parse().ok()?;
    let date = Date::new(year, month, day).ok()?;
    date.to_zoned(jiff::tz::TimeZone::UTC)
        .ok()
        .map(|z| z.timestamp())
}

/// `Package_for_KB5034441~31bf3856ad364e35~amd64~~19041.3920.1.2` as
/// (`KB5034441`, `amd64`, `19041.3920.1.2`).
pub fn parse_cbs_package_name(name: &str) -> Option<(String, String, String)> {
    let rest = name.strip_prefix("Package_for_")?;
    let mut parts = rest.split('~');
    let kb = parts.next()?;
    let digits = kb.strip_prefix("KB").or_else(|| kb.strip_prefix("kb"))?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let _public_key = parts.next()?;
    let arch = parts.next()?.to_owned();
    let _language = parts.next()?;
    let version = parts.next()?.to_owned();
    Some((format!("KB{digits}"), arch, version))
}

/// Where Uninstall entries live, and the architecture their programs are built for.
struct Location {
    root: RegKey,
    path: String,
    flags: u32,
    architecture: Option<&'static str>,
    label: String,
}

fn locations() -> Vec<Location> {
    let native = match crate::platform::windows::system::arch().as_str() {
        "aarch64" => "arm64",
        "x86" => "x86",
        _ => "x64",
    };
    let hklm = || RegKey::predef(HKEY_LOCAL_MACHINE);
    let mut locations = vec![Location {
        root: hklm(),
        path: UNINSTALL.to_owned(),
        flags: KEY_READ | KEY_WOW64_64KEY,
        architecture: Some(native),
        label: format!(r"HKLM\{UNINSTALL} (64-bit view)"),
    }];
    if native != "x86" {
        locations.push(Location {
            root: hklm(),
            path: UNINSTALL.to_owned(),
            flags: KEY_READ | KEY_WOW64_32KEY,
            architecture: Some("x86"),
            label: format!(r"HKLM\{UNINSTALL} (32-bit view)"),
        });
    }
    // Per-user installs may be of either architecture; the registry does not say which.
    locations.push(Location {
        root: RegKey::predef(HKEY_CURRENT_USER),
        path: UNINSTALL.to_owned(),
        flags: KEY_READ,
        architecture: None,
        label: format!(r"HKCU\{UNINSTALL}"),
    });
    let users = RegKey::predef(HKEY_USERS);
    for sid in users.enum_keys().filter_map(Result::ok) {
        if sid.ends_with("_Classes") {
            continue;
        }
        locations.push(Location {
            root: RegKey::predef(HKEY_USERS),
            path: format!(r"{sid}\{UNINSTALL}"),
            flags: KEY_READ,
            architecture: None,
            label: format!(r"HKU\{sid}\{UNINSTALL}"),
        });
    }
    locations
}

/// The listed programs under one Uninstall key; a missing key has none.
fn read_location(location: &Location, problems: &mut Vec<String>) -> Vec<Package> {
    let key = match location
        .root
        .open_subkey_with_flags(&location.path, location.flags)
    {
        Ok(key) => key,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            problems.push(format!("{}: {e}", location.label));
            return Vec::new();
        }
    };
    key.enum_keys()
        .filter_map(Result::ok)
        .filter_map(|name| key.open_subkey_with_flags(&name, location.flags).ok())
        .filter_map(|entry| UninstallEntry::read(&entry).to_package(location.architecture))
        .collect()
}

/// The installed Windows updates (see the module's documentation).
fn hotfixes(problems: &mut Vec<String>) -> Vec<Package> {
    let packages = match RegKey::predef(HKEY_LOCAL_MACHINE)
        .open_subkey_with_flags(CBS_PACKAGES, KEY_READ | KEY_WOW64_64KEY)
    {
        Ok(key) => key,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            problems.push(format!(r"HKLM\{CBS_PACKAGES}: {e}"));
            return Vec::new();
        }
    };
    let mut seen = HashSet::new();
    let mut updates = Vec::new();
    for name in packages.enum_keys().filter_map(Result::ok) {
        let Some((kb, arch, version)) = parse_cbs_package_name(&name) else {
            continue;
        };
        if seen.contains(&kb) {
            continue;
        }
        let Ok(key) = packages.open_subkey_with_flags(&name, KEY_READ | KEY_WOW64_64KEY) else {
            continue;
        };
        if reg_u64(&key, "CurrentState") != Some(CBS_INSTALLED) {
            continue;
        }
        let installed = match (
            reg_u64(&key, "InstallTimeHigh"),
            reg_u64(&key, "InstallTimeLow"),
        ) {
            (Some(high), Some(low)) => filetime_to_timestamp((high << 32) | (low & 0xffff_ffff)),
            _ => None,
        };
        seen.insert(kb.clone());
        updates.push(Package {
            name: kb,
            version,
            architecture: Some(arch),
            source: SOURCE.to_owned(),
            installed_size_bytes: None,
            install_time: installed,
            publisher: Some("Microsoft Corporation".to_owned()),
            uninstall_string: None,
        });
    }
    updates
}

/// Drops repeats of the same program (name, version, architecture, publisher), keeping the
/// first: machine-wide before per-user, as the locations are read.
pub fn dedupe(packages: Vec<Package>) -> Vec<Package> {
    let mut seen = HashSet::new();
    packages
        .into_iter()
        .filter(|p| {
            seen.insert((
                p.name.to_lowercase(),
                p.version.clone(),
                p.architecture.clone(),
                p.publisher.clone(),
            ))
        })
        .collect()
}

pub fn collect(_: &Context) -> Collected {
    let mut problems = Vec::new();
    let mut packages: Vec<Package> = locations()
        .iter()
        .flat_map(|location| read_location(location, &mut problems))
        .collect();
    packages.extend(hotfixes(&mut problems));
    let mut report = FunctionReport::new(FunctionData::Registry(dedupe(packages)));
    report.error = (!problems.is_empty()).then(|| problems.join("; "));
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(name: Option<&str>) -> UninstallEntry {
        UninstallEntry {
            display_name: name.map(str::to_owned),
            display_version: Some("1.2.3".to_owned()),
            ..UninstallEntry::default()
        }
    }

    #[test]
    fn lists_what_the_apps_list_shows() {
        assert!(entry(Some("7-Zip")).is_listed());
        assert!(!entry(None).is_listed());
        let hidden = UninstallEntry {
            system_component: true,
            ..entry(Some("Runtime part"))
        };
        assert!(!hidden.is_listed());
        let update = UninstallEntry {
            parent_key_name: Some("OfficeXX".to_owned()),
            ..entry(Some("Update for Office"))
        };
        assert!(!update.is_listed());
        assert_eq!(update.to_package(Some("x64")), None);
        let p = entry(Some("7-Zip")).to_package(Some("x64")).unwrap();
        assert_eq!(
            (p.name.as_str(), p.version.as_str(), p.source.as_str()),
            ("7-Zip", "1.2.3", "registry")
        );
    }

    #[test]
    fn parses_install_dates_and_cbs_names() {
        assert_eq!(
            parse_install_date("20240131")
                .map(|t| t.to_string())
                .as_deref(),
            Some("2024-01-31T00:00:00Z")
        );
        for bad in ["2024013", "20241340", "2024-01-", "", "abcdefgh"] {
            assert_eq!(parse_install_date(bad), None, "{bad}");
        }
        assert_eq!(
            parse_cbs_package_name("Package_for_KB5034441~31bf3856ad364e35~amd64~~19041.3920.1.2"),
            Some((
                "KB5034441".to_owned(),
                "amd64".to_owned(),
                "19041.3920.1.2".to_owned()
            ))
        );
        assert_eq!(
            parse_cbs_package_name("Package_for_RollupFix~31bf3856ad364e35~amd64~~1.2"),
            None
        );
        assert_eq!(
            parse_cbs_package_name("Microsoft-Windows-Foo~31bf~amd64~~1.0"),
            None
        );
    }

    #[test]
    fn dedupes_the_same_program_seen_twice() {
        let a = entry(Some("App")).to_package(None).unwrap();
        let b = Package {
            name: "APP".to_owned(),
            ..a.clone()
        };
        let c = Package {
            version: "2.0".to_owned(),
            ..a.clone()
        };
        assert_eq!(dedupe(vec![a.clone(), b, c.clone()]), vec![a, c]);
    }
}
