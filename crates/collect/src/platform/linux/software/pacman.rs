//! `software/pacman` from pacman's local database: `/var/lib/pacman/local/<name>-<version>/desc`,
//! one directory per installed package.

use muster_proto::data::Package;
use muster_proto::{FunctionData, FunctionReport};

use super::{lines, non_empty, sort_packages, timestamp};
use crate::{CollectError, Collected, Context};

const LOCAL: &str = "/var/lib/pacman/local";

/// Parses one `desc` file: `%KEY%` lines each followed by one value a line and a blank line.
/// Keys with several values (`%LICENSE%`, `%DEPENDS%`) give their first. `None` without a
/// name or version.
pub fn parse_pacman_desc(text: &str) -> Option<Package> {
    let (mut name, mut version, mut arch, mut installed, mut size, mut packager) =
        (None, None, None, None, None, None);
    let mut key = "";
    for line in lines(text) {
        if line.len() > 2 && line.starts_with('%') && line.ends_with('%') {
            key = line;
            continue;
        }
        let slot = match key {
            "%NAME%" => &mut name,
            "%VERSION%" => &mut version,
            "%ARCH%" => &mut arch,
            "%INSTALLDATE%" => &mut installed,
            "%SIZE%" => &mut size,
            "%PACKAGER%" => &mut packager,
            _ => {
                key = "";
                continue;
            }
        };
        if slot.is_none() {
            *slot = non_empty(line);
        }
        // The value's first line has been taken; a blank line ends the key anyway.
        key = "";
    }
    Some(Package {
        name: name?,
        version: version?,
        architecture: arch,
        source: "pacman".to_owned(),
        installed_size_bytes: size.and_then(|s| s.parse().ok()),
        install_time: installed.and_then(|s| s.parse().ok()).and_then(timestamp),
        publisher: packager,
        uninstall_string: None,
    })
}

pub fn collect(context: &Context) -> Collected {
    let local = context.path(LOCAL);
    let entries = match std::fs::read_dir(&local) {
        Ok(entries) => entries,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CollectError::io(local, e)),
    };
    let (mut packages, mut unreadable) = (Vec::new(), Vec::new());
    for entry in entries {
        let entry = entry.map_err(|e| CollectError::io(&local, e))?;
        // `ALPM_DB_VERSION` is the only file; each package is a directory.
        if !entry.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let name = || entry.file_name().to_string_lossy().into_owned();
        match std::fs::read_to_string(entry.path().join("desc")) {
            Ok(text) => match parse_pacman_desc(&text) {
                Some(package) => packages.push(package),
                None => unreadable.push(format!("{} (no name or version)", name())),
            },
            // A directory without `desc` is not a package pacman would list either.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => unreadable.push(format!("{} ({e})", name())),
        }
    }
    sort_packages(&mut packages);
    let mut report = FunctionReport::new(FunctionData::Pacman(packages));
    if !unreadable.is_empty() {
        unreadable.sort_unstable();
        report.error = Some(format!(
            "skipped unreadable packages in {}: {}",
            local.display(),
            unreadable.join(", ")
        ));
    }
    Ok(Some(report))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIXTURE_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/software/arch");
    const GLIBC: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/software/arch/var/lib/pacman/local/glibc-2.39-1/desc"
    ));

    #[test]
    fn parses_a_desc_file() {
        let package = parse_pacman_desc(GLIBC).unwrap();
        assert_eq!(
            package,
            Package {
                name: "glibc".into(),
                version: "2.39-1".into(),
                architecture: Some("x86_64".into()),
                source: "pacman".into(),
                installed_size_bytes: Some(48_724_386),
                install_time: Some(jiff::Timestamp::from_second(1_711_299_000).unwrap()),
                publisher: Some("Frederik Schwan <freswa@archlinux.org>".into()),
                uninstall_string: None,
            }
        );
    }

    #[test]
    fn values_of_other_keys_are_not_taken() {
        // A `%DESC%` line that looks like a value must not land in the key before it.
        let text = "%NAME%\na\n\n%DESC%\nx86_64\n\n%VERSION%\n1-1\n";
        let package = parse_pacman_desc(text).unwrap();
        assert_eq!(package.architecture, None);
        assert_eq!(package.version, "1-1");
        assert!(parse_pacman_desc("%NAME%\na\n").is_none());
    }

    #[test]
    fn collects_a_local_database() {
        let report = collect(&Context::new(FIXTURE_ROOT)).unwrap().unwrap();
        let FunctionData::Pacman(packages) = &report.data else {
            panic!("expected pacman data");
        };
        let summary: Vec<_> = packages
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.version.as_str(),
                    p.architecture.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                ("ffmpeg", "2:6.1.1-3", Some("x86_64")),
                ("glibc", "2.39-1", Some("x86_64")),
                ("gmp", "6.3.0-1", Some("x86_64")),
                ("python-setuptools", "1:69.0.3-1", Some("any")),
            ]
        );
        let error = report.error.as_deref().unwrap();
        assert!(
            error.ends_with(": broken-1.0-1 (no name or version)"),
            "{error}"
        );
    }

    #[test]
    fn absent_database_leaves_pacman_out() {
        let root = tempfile::tempdir().unwrap();
        assert!(collect(&Context::new(root.path())).unwrap().is_none());
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC*") {
            let _ = parse_pacman_desc(&text);
        }

        #[test]
        fn never_panics_on_desc_like_lines(lines in proptest::collection::vec(
            "(%NAME%|%VERSION%|%SIZE%|%INSTALLDATE%|%|%%|[a-z0-9:.-]{0,10})", 0..20)) {
            if let Some(package) = parse_pacman_desc(&lines.join("\n")) {
                prop_assert!(!package.name.is_empty() && !package.version.is_empty());
            }
        }
    }
}
