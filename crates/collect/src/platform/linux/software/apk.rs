//! `software/apk` from Alpine's installed database, `/lib/apk/db/installed`.
//!
//! apk records no install time (`t:` is the build time), so `install_time` stays `null`.

use muster_proto::data::Package;
use muster_proto::{FunctionData, FunctionReport};

use super::{lines, non_empty, sort_packages};
use crate::{Collected, Context};

const INSTALLED: &str = "/lib/apk/db/installed";

/// Parses apk's installed database: one stanza per package, separated by blank lines, each
/// line a one-letter key, `:`, and the value. Every package in it is installed. Stanzas
/// without a name or version are skipped.
pub fn parse_apk_installed(text: &str) -> Vec<Package> {
    #[derive(Default)]
    struct Stanza<'a> {
        name: &'a str,
        version: &'a str,
        arch: &'a str,
        size: &'a str,
        maintainer: &'a str,
    }

    fn finish(stanza: Stanza<'_>) -> Option<Package> {
        let name = non_empty(stanza.name)?;
        let version = non_empty(stanza.version)?;
        Some(Package {
            name,
            version,
            architecture: non_empty(stanza.arch),
            source: "apk".to_owned(),
            installed_size_bytes: stanza.size.trim().parse().ok(),
            install_time: None,
            publisher: non_empty(stanza.maintainer),
            uninstall_string: None,
        })
    }

    let mut packages = Vec::new();
    let mut stanza = Stanza::default();
    for line in lines(text) {
        // Most lines are the package's files (`F:`, `R:`, `a:`, `Z:`), skipped on two bytes.
        let value = line.get(2..).unwrap_or("");
        match line.as_bytes() {
            [b'P', b':', ..] => stanza.name = value,
            [b'V', b':', ..] => stanza.version = value,
            [b'A', b':', ..] => stanza.arch = value,
            [b'I', b':', ..] => stanza.size = value,
            [b'm', b':', ..] => stanza.maintainer = value,
            [] => packages.extend(finish(std::mem::take(&mut stanza))),
            _ => {}
        }
    }
    packages.extend(finish(stanza));
    packages
}

pub fn collect(context: &Context) -> Collected {
    let Some(text) = context.read_optional(INSTALLED)? else {
        return Ok(None);
    };
    let mut packages = parse_apk_installed(&text);
    sort_packages(&mut packages);
    Ok(Some(FunctionReport::new(FunctionData::Apk(packages))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIXTURE_ROOT: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/software/alpine"
    );
    const INSTALLED_FIXTURE: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/software/alpine/lib/apk/db/installed"
    ));

    #[test]
    fn parses_packages_in_file_order() {
        let packages = parse_apk_installed(INSTALLED_FIXTURE);
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
                ("musl", "1.2.4_git20230717-r4", Some("x86_64")),
                ("busybox", "1.36.1-r15", Some("x86_64")),
                ("alpine-baselayout-data", "3.4.3-r2", Some("x86_64")),
                ("ca-certificates-bundle", "20230506-r0", Some("x86_64")),
                ("tzdata", "2024a-r0", Some("noarch")),
            ]
        );
        assert_eq!(packages[0].installed_size_bytes, Some(667_648));
        assert_eq!(
            packages[0].publisher.as_deref(),
            Some("Timo Teräs <timo.teras@iki.fi>")
        );
        assert_eq!(packages[0].install_time, None);
        assert_eq!(packages[0].source, "apk");
    }

    #[test]
    fn stanzas_without_name_or_version_are_skipped() {
        let text = "P:a\nV:1\n\nV:2\n\nP:b\n\n\n\nP:c\nV:3\nI:x\n";
        let packages = parse_apk_installed(text);
        assert_eq!(packages.len(), 2);
        assert_eq!(
            (packages[1].name.as_str(), packages[1].version.as_str()),
            ("c", "3")
        );
        assert_eq!(packages[1].installed_size_bytes, None);
    }

    #[test]
    fn collects_sorted_from_a_root() {
        let report = collect(&Context::new(FIXTURE_ROOT)).unwrap().unwrap();
        let FunctionData::Apk(packages) = report.data else {
            panic!("expected apk data");
        };
        let names: Vec<_> = packages.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "alpine-baselayout-data",
                "busybox",
                "ca-certificates-bundle",
                "musl",
                "tzdata"
            ]
        );
    }

    #[test]
    fn absent_database_leaves_apk_out() {
        let root = tempfile::tempdir().unwrap();
        assert!(collect(&Context::new(root.path())).unwrap().is_none());
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC*") {
            let _ = parse_apk_installed(&text);
        }

        #[test]
        fn never_panics_on_apk_like_lines(lines in proptest::collection::vec("([PVAImF]:)?[^\\n]{0,12}", 0..20)) {
            for package in parse_apk_installed(&lines.join("\n")) {
                prop_assert!(!package.name.is_empty());
            }
        }
    }
}
