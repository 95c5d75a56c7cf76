//! `software/registry` finds Uninstall entries the test writes in every place Windows keeps
//! them, skips those the Apps list hides, and no longer lists them once they are removed.

use muster_proto::data::Package;
use muster_proto::{FunctionData, Worker};
use winreg::enums::{
    HKEY_CURRENT_USER, HKEY_LOCAL_MACHINE, KEY_ALL_ACCESS, KEY_WOW64_32KEY, KEY_WOW64_64KEY,
};
use winreg::{HKEY, RegKey};

use super::report;

const UNINSTALL: &str = r"SOFTWARE\Microsoft\Windows\CurrentVersion\Uninstall";
const CBS_PACKAGES: &str =
    r"SOFTWARE\Microsoft\Windows\CurrentVersion\Component Based Servicing\Packages";

/// Registry keys this test made, deleted on drop (even when an assertion fails).
struct Written(Vec<(RegKey, u32, String)>);

impl Written {
    fn key(&mut self, root: HKEY, flags: u32, path: String) -> RegKey {
        let parent = RegKey::predef(root);
        let (key, _) = parent
            .create_subkey_with_flags(&path, KEY_ALL_ACCESS | flags)
            .unwrap_or_else(|e| panic!("creating {path}: {e}"));
        self.0.push((RegKey::predef(root), flags, path));
        key
    }

    fn remove(&mut self) {
        for (root, flags, path) in self.0.drain(..) {
            let (parent, name) = path.rsplit_once('\\').unwrap();
            if let Ok(parent) = root.open_subkey_with_flags(parent, KEY_ALL_ACCESS | flags) {
                let _ = parent.delete_subkey_all(name);
            }
        }
    }
}

impl Drop for Written {
    fn drop(&mut self) {
        self.remove();
    }
}

fn entry(key: &RegKey, name: &str, version: &str) {
    key.set_value("DisplayName", &name).unwrap();
    key.set_value("DisplayVersion", &version).unwrap();
    key.set_value("Publisher", &"Muster Tests Ltd").unwrap();
    key.set_value("InstallDate", &"20240131").unwrap();
    key.set_value(
        "UninstallString",
        &r#""C:\Program Files\Muster Test\uninstall.exe" /S"#,
    )
    .unwrap();
    key.set_value("EstimatedSize", &2048u32).unwrap();
}

fn packages() -> Vec<Package> {
    let report = report(Worker::Software, "registry");
    assert_eq!(report.error, None);
    let FunctionData::Registry(packages) = report.data else {
        panic!("{report:?}")
    };
    packages
}

#[test]
fn finds_uninstall_entries_in_both_views_and_per_user_then_not_after_removal() {
    let tag = format!("MusterTest{}", std::process::id());
    let mut written = Written(Vec::new());
    let hklm = HKEY_LOCAL_MACHINE;
    let k = written.key(hklm, KEY_WOW64_64KEY, format!(r"{UNINSTALL}\{tag}-64"));
    entry(&k, &format!("{tag} Machine 64"), "1.2.3.4");
    let k = written.key(hklm, KEY_WOW64_32KEY, format!(r"{UNINSTALL}\{tag}-32"));
    entry(&k, &format!("{tag} Machine 32"), "10.0.1");
    let k = written.key(HKEY_CURRENT_USER, 0, format!(r"{UNINSTALL}\{tag}-user"));
    entry(&k, &format!("{tag} User"), "2024.1");
    // The same per-user program under a second key name: reported once.
    let k = written.key(
        HKEY_CURRENT_USER,
        0,
        format!(r"{UNINSTALL}\{tag}-user-again"),
    );
    entry(&k, &format!("{tag} User"), "2024.1");
    // What the Apps list hides.
    let k = written.key(
        hklm,
        KEY_WOW64_64KEY,
        format!(r"{UNINSTALL}\{tag}-component"),
    );
    entry(&k, &format!("{tag} Hidden component"), "1.0");
    k.set_value("SystemComponent", &1u32).unwrap();
    let k = written.key(hklm, KEY_WOW64_64KEY, format!(r"{UNINSTALL}\{tag}-update"));
    entry(&k, &format!("{tag} Hidden update"), "1.0");
    k.set_value("ParentKeyName", &"SomeProduct").unwrap();
    let k = written.key(
        hklm,
        KEY_WOW64_64KEY,
        format!(r"{UNINSTALL}\{tag}-nameless"),
    );
    k.set_value("DisplayVersion", &"9.9").unwrap();
    k.set_value("Publisher", &tag.as_str()).unwrap();

    let found: Vec<Package> = packages()
        .into_iter()
        .filter(|p| p.name.starts_with(&tag) || p.publisher.as_deref() == Some(&tag))
        .collect();
    let find = |name: &str| {
        let name = format!("{tag} {name}");
        let matches: Vec<&Package> = found.iter().filter(|p| p.name == name).collect();
        assert_eq!(matches.len(), 1, "{name} once in {found:#?}");
        matches[0].clone()
    };
    let machine64 = find("Machine 64");
    assert_eq!(machine64.version, "1.2.3.4");
    assert_eq!(machine64.architecture.as_deref(), Some("x64"));
    assert_eq!(machine64.source, "registry");
    assert_eq!(machine64.publisher.as_deref(), Some("Muster Tests Ltd"));
    assert_eq!(machine64.installed_size_bytes, Some(2048 * 1024));
    assert_eq!(
        machine64.uninstall_string.as_deref(),
        Some(r#""C:\Program Files\Muster Test\uninstall.exe" /S"#)
    );
    assert_eq!(
        machine64.install_time.map(|t| t.to_string()).as_deref(),
        Some("2024-01-31T00:00:00Z")
    );
    let machine32 = find("Machine 32");
    assert_eq!(
        (
            machine32.version.as_str(),
            machine32.architecture.as_deref()
        ),
        ("10.0.1", Some("x86"))
    );
    let user = find("User");
    assert_eq!((user.version.as_str(), user.architecture), ("2024.1", None));
    assert_eq!(found.len(), 3, "hidden entries are skipped: {found:#?}");

    written.remove();
    let left: Vec<Package> = packages()
        .into_iter()
        .filter(|p| p.name.starts_with(&tag))
        .collect();
    assert!(left.is_empty(), "{left:#?}");
}

#[test]
fn finds_installed_windows_updates_in_the_servicing_store() {
    let kb = format!("KB9{}", std::process::id());
    let mut written = Written(Vec::new());
    let installed = written.key(
        HKEY_LOCAL_MACHINE,
        KEY_WOW64_64KEY,
        format!(r"{CBS_PACKAGES}\Package_for_{kb}~31bf3856ad364e35~amd64~~10.0.1.2"),
    );
    installed.set_value("CurrentState", &112u32).unwrap();
    // 2024-01-01T00:00:00Z as a FILETIME, split as CBS stores it.
    let ticks: u64 = 133_485_408_000_000_000;
    installed
        .set_value("InstallTimeHigh", &((ticks >> 32) as u32))
        .unwrap();
    installed
        .set_value("InstallTimeLow", &(ticks as u32))
        .unwrap();
    let staged = written.key(
        HKEY_LOCAL_MACHINE,
        KEY_WOW64_64KEY,
        format!(r"{CBS_PACKAGES}\Package_for_{kb}1~31bf3856ad364e35~amd64~~10.0.1.2"),
    );
    // 0x20 = staged, not installed.
    staged.set_value("CurrentState", &0x20u32).unwrap();

    let updates: Vec<Package> = packages()
        .into_iter()
        .filter(|p| p.name.starts_with(&kb))
        .collect();
    assert_eq!(updates.len(), 1, "{updates:#?}");
    let update = &updates[0];
    assert_eq!(update.name, kb);
    assert_eq!(update.version, "10.0.1.2");
    assert_eq!(update.architecture.as_deref(), Some("amd64"));
    assert_eq!(
        update.install_time.map(|t| t.as_second()),
        Some(1_704_067_200)
    );
}
