//! `software/snap`: the snaps snapd has installed.
//!
//! Each mounted snap shows its metadata at `<mount dir>/<instance>/current/meta/snap.yaml`
//! (`/snap` on Debian and Ubuntu, `/var/lib/snapd/snap` on Fedora and Arch). The snap files
//! themselves, `/var/lib/snapd/snaps/<instance>_<revision>.snap`, give the installed size and,
//! by their modification time, when that revision was installed. A snap that is not mounted
//! (snapd not running, a container) is still reported from its file, with its revision
//! standing in for the version it does not show.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use muster_proto::data::Package;
use muster_proto::{FunctionData, FunctionReport};

use super::{sort_packages, system_time};
use crate::{Collected, Context};

const MOUNT_DIRS: [&str; 2] = ["/snap", "/var/lib/snapd/snap"];
const SNAPS: &str = "/var/lib/snapd/snaps";

/// The top-level fields Muster reads from `meta/snap.yaml`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapYaml {
    pub name: Option<String>,
    pub version: Option<String>,
    /// The first of `architectures`.
    pub architecture: Option<String>,
}

/// A plain or quoted YAML scalar, unquoted. Good enough for the names and versions snapcraft
/// writes; not a YAML parser.
fn scalar(value: &str) -> Option<String> {
    let value = value.trim();
    let unquoted = if let Some(inner) = value.strip_prefix('\'') {
        let end = inner.rfind('\'')?;
        inner.get(..end)?.replace("''", "'")
    } else if let Some(inner) = value.strip_prefix('"') {
        let end = inner.rfind('"')?;
        inner
            .get(..end)?
            .replace("\\\"", "\"")
            .replace("\\\\", "\\")
    } else {
        // A plain scalar ends at a comment.
        let plain = value.find(" #").map_or(value, |at| &value[..at]).trim_end();
        plain.to_owned()
    };
    (!unquoted.is_empty()).then_some(unquoted)
}

/// Reads `name`, `version` and the first `architectures` item from a `snap.yaml`. Only
/// top-level (unindented) keys count, so nested `apps:` entries and block scalars are skipped.
pub fn parse_snap_yaml(text: &str) -> SnapYaml {
    let mut yaml = SnapYaml::default();
    let mut in_architectures = false;
    for line in text.lines() {
        let trimmed = line.trim_start();
        if in_architectures {
            // Block sequence items may sit at the key's indentation or deeper.
            if let Some(item) = trimmed.strip_prefix("- ") {
                yaml.architecture = scalar(item);
                in_architectures = false;
                continue;
            }
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            in_architectures = false;
        }
        if trimmed.len() != line.len() {
            continue;
        }
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        match key {
            "name" => yaml.name = scalar(value),
            "version" => yaml.version = scalar(value),
            "architectures" => {
                let value = value.trim();
                if let Some(flow) = value.strip_prefix('[') {
                    let first = flow.split([',', ']']).next().unwrap_or_default();
                    yaml.architecture = scalar(first);
                } else if value.is_empty() {
                    in_architectures = true;
                }
            }
            _ => {}
        }
    }
    yaml
}

/// Splits a snap file's name, `<instance>_<revision>.snap`, into instance and revision.
pub fn parse_snap_file_name(file_name: &str) -> Option<(&str, &str)> {
    let (instance, revision) = file_name.strip_suffix(".snap")?.rsplit_once('_')?;
    (!instance.is_empty() && !revision.is_empty()).then_some((instance, revision))
}

/// Orders revisions: store revisions are numbers, local installs `x1`, `x2`, ... come later.
fn revision_key(revision: &str) -> (bool, u64) {
    match revision.strip_prefix('x') {
        Some(local) => (true, local.parse().unwrap_or(0)),
        None => (false, revision.parse().unwrap_or(0)),
    }
}

/// Size and modification time of the snap file of one revision.
fn snap_file(
    snaps: &Path,
    instance: &str,
    revision: &str,
) -> (Option<u64>, Option<jiff::Timestamp>) {
    match fs::metadata(snaps.join(format!("{instance}_{revision}.snap"))) {
        Ok(meta) => (Some(meta.len()), meta.modified().ok().and_then(system_time)),
        Err(_) => (None, None),
    }
}

fn package(
    name: String,
    version: String,
    architecture: Option<String>,
    (size, time): (Option<u64>, Option<jiff::Timestamp>),
) -> Package {
    Package {
        name,
        version,
        architecture,
        source: "snap".to_owned(),
        installed_size_bytes: size,
        install_time: time,
        publisher: None,
        uninstall_string: None,
    }
}

pub fn collect(context: &Context) -> Collected {
    let snaps = context.path(SNAPS);
    let mounts: Vec<_> = MOUNT_DIRS
        .iter()
        .map(|d| context.path(d))
        .filter(|d| d.is_dir())
        .collect();
    if mounts.is_empty() && !snaps.is_dir() {
        return Ok(None);
    }

    // By instance name: `/snap` is often a symlink to `/var/lib/snapd/snap` or the reverse.
    let mut found: BTreeMap<String, Package> = BTreeMap::new();
    for mount in &mounts {
        let Ok(entries) = fs::read_dir(mount) else {
            continue;
        };
        for entry in entries.filter_map(Result::ok) {
            let Ok(instance) = entry.file_name().into_string() else {
                continue;
            };
            if instance == "bin" || found.contains_key(&instance) {
                continue;
            }
            let current = entry.path().join("current");
            let Ok(text) = fs::read_to_string(current.join("meta/snap.yaml")) else {
                continue;
            };
            let yaml = parse_snap_yaml(&text);
            let revision = fs::read_link(&current)
                .ok()
                .and_then(|target| Some(target.file_name()?.to_str()?.to_owned()));
            let file = revision
                .as_deref()
                .map_or((None, None), |rev| snap_file(&snaps, &instance, rev));
            let Some(version) = yaml.version.or(revision) else {
                continue;
            };
            let package = package(instance.clone(), version, yaml.architecture, file);
            found.insert(instance, package);
        }
    }

    // Snaps installed but not mounted: their newest file.
    let mut unmounted: BTreeMap<String, String> = BTreeMap::new();
    if let Ok(entries) = fs::read_dir(&snaps) {
        for entry in entries.filter_map(Result::ok) {
            let file_name = entry.file_name();
            let Some((instance, revision)) = file_name.to_str().and_then(parse_snap_file_name)
            else {
                continue;
            };
            if found.contains_key(instance) {
                continue;
            }
            let newer = unmounted
                .get(instance)
                .is_none_or(|known| revision_key(revision) > revision_key(known));
            if newer {
                unmounted.insert(instance.to_owned(), revision.to_owned());
            }
        }
    }
    for (instance, revision) in unmounted {
        let file = snap_file(&snaps, &instance, &revision);
        found.insert(instance.clone(), package(instance, revision, None, file));
    }

    let mut packages: Vec<Package> = found.into_values().collect();
    sort_packages(&mut packages);
    Ok(Some(FunctionReport::new(FunctionData::Snap(packages))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIXTURE_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/software/snap");
    const CORE22: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/software/snap/snap/core22/1122/meta/snap.yaml"
    ));
    const FIREFOX: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/software/snap/snap/firefox/4033/meta/snap.yaml"
    ));

    #[test]
    fn reads_top_level_fields() {
        assert_eq!(
            parse_snap_yaml(CORE22),
            SnapYaml {
                name: Some("core22".into()),
                version: Some("20240111".into()),
                architecture: Some("amd64".into()),
            }
        );
        // Indented sequence, and a nested `version:` under `apps:` that must not win.
        assert_eq!(
            parse_snap_yaml(FIREFOX),
            SnapYaml {
                name: Some("firefox".into()),
                version: Some("124.0.1-1".into()),
                architecture: Some("amd64".into()),
            }
        );
    }

    #[test]
    fn flow_sequences_quotes_and_comments() {
        let text = "name: \"hello\"\nversion: 'it''s 2.10' # tag\narchitectures: [arm64, amd64]\n";
        assert_eq!(
            parse_snap_yaml(text),
            SnapYaml {
                name: Some("hello".into()),
                version: Some("it's 2.10".into()),
                architecture: Some("arm64".into()),
            }
        );
        let text = "version: 2.0 # comment\narchitectures:\nbase: core22\n";
        let yaml = parse_snap_yaml(text);
        assert_eq!(yaml.version.as_deref(), Some("2.0"));
        assert_eq!(yaml.architecture, None);
    }

    #[test]
    fn splits_snap_file_names() {
        assert_eq!(
            parse_snap_file_name("core22_1122.snap"),
            Some(("core22", "1122"))
        );
        assert_eq!(
            parse_snap_file_name("foo_bar_x1.snap"),
            Some(("foo_bar", "x1"))
        );
        assert_eq!(parse_snap_file_name("lxd_27948.snap.partial"), None);
        assert_eq!(parse_snap_file_name("_1.snap"), None);
        assert!(revision_key("x1") > revision_key("29"));
        assert!(revision_key("29") > revision_key("27"));
    }

    #[test]
    fn collects_mounted_and_unmounted_snaps() {
        let report = collect(&Context::new(FIXTURE_ROOT)).unwrap().unwrap();
        let FunctionData::Snap(packages) = report.data else {
            panic!("expected snap data");
        };
        let summary: Vec<_> = packages
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.version.as_str(),
                    p.architecture.as_deref(),
                    p.installed_size_bytes,
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("core22", "20240111", Some("amd64"), Some(16)),
                ("firefox", "124.0.1-1", Some("amd64"), Some(23)),
                ("hello-world", "29", None, Some(19)),
            ]
        );
        assert!(packages.iter().all(|p| p.install_time.is_some()));
    }

    #[test]
    fn absent_snapd_leaves_snap_out() {
        let root = tempfile::tempdir().unwrap();
        assert!(collect(&Context::new(root.path())).unwrap().is_none());
        std::fs::create_dir_all(root.path().join("var/lib/snapd/snaps")).unwrap();
        let report = collect(&Context::new(root.path())).unwrap().unwrap();
        assert!(report.data.is_empty());
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC*") {
            let _ = parse_snap_yaml(&text);
            let _ = parse_snap_file_name(&text);
        }

        #[test]
        fn never_panics_on_yaml_like_lines(lines in proptest::collection::vec(
            "( *)(name|version|architectures|- )?(:)? ?(\\[|'|\"|#)?[a-z0-9 ,'\"\\]#]{0,10}", 0..12)) {
            let _ = parse_snap_yaml(&lines.join("\n"));
        }
    }
}
