//! `software/flatpak`: the apps and runtimes of the system installation, deployed at
//! `/var/lib/flatpak/{app,runtime}/<id>/<arch>/<branch>/active/`.
//!
//! Flatpak keeps no version of its own: it comes from the AppStream metainfo the ref ships,
//! else the branch stands in. Per-user installations (`~/.local/share/flatpak`) are not read.

use std::fs;
use std::path::{Path, PathBuf};

use muster_proto::data::Package;
use muster_proto::{FunctionData, FunctionReport};

use super::{modified, sort_packages};
use crate::{Collected, Context};

const ROOT: &str = "/var/lib/flatpak";

/// What Muster reads from an AppStream metainfo file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metainfo {
    /// The `version` of the first `<release>`.
    pub version: Option<String>,
    /// `<developer_name>`, or the `<name>` of `<developer>` (AppStream 1.0).
    pub developer: Option<String>,
}

/// Resolves the five predefined XML entities; metainfo files need no more.
fn unescape(text: &str) -> String {
    if !text.contains('&') {
        return text.to_owned();
    }
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

/// The start of the first `<tag` element (not `<tagsuffix`) at or after `from`, and where its
/// start tag ends (past the `>`).
fn find_element(text: &str, tag: &str, mut from: usize) -> Option<(usize, usize)> {
    loop {
        let start = from + text.get(from..)?.find(tag)?;
        let after = start + tag.len();
        from = after;
        if text
            .as_bytes()
            .get(after)
            .is_some_and(|&b| b.is_ascii_whitespace() || b == b'>' || b == b'/')
        {
            let end = after + text.get(after..)?.find('>')? + 1;
            return Some((start, end));
        }
    }
}

/// The value of attribute `name` in a start tag, quoted either way.
fn attribute(tag: &str, name: &str) -> Option<String> {
    let mut rest = tag;
    while let Some(at) = rest.find(name) {
        let before = rest[..at].chars().next_back();
        rest = &rest[at + name.len()..];
        let Some(value) = rest.trim_start().strip_prefix('=') else {
            continue;
        };
        if !before.is_some_and(char::is_whitespace) {
            continue;
        }
        let value = value.trim_start();
        let quote = value.chars().next().filter(|&q| q == '"' || q == '\'')?;
        let value = &value[1..];
        return Some(unescape(&value[..value.find(quote)?]));
    }
    None
}

/// The text of the element whose start tag ends at `content_start`, up to the next tag.
fn text_from(text: &str, content_start: usize) -> Option<String> {
    let rest = text.get(content_start..)?;
    let value = rest[..rest.find('<')?].trim();
    (!value.is_empty()).then(|| unescape(value))
}

/// Scans an AppStream metainfo (or older appdata) file for the first release's version and
/// the developer's name, untranslated. A string scan, not an XML parser: comments and CDATA
/// are not special.
pub fn parse_metainfo(text: &str) -> Metainfo {
    let version = find_element(text, "<release", 0)
        .and_then(|(start, end)| attribute(&text[start..end], "version"))
        .filter(|v| !v.is_empty());
    // The untranslated name is the one without attributes.
    let developer = text
        .find("<developer_name>")
        .and_then(|at| text_from(text, at + "<developer_name>".len()))
        .or_else(|| {
            let (_, end) = find_element(text, "<developer", 0)?;
            let (_, name_end) = find_element(text, "<name", end)?;
            text_from(text, name_end)
        });
    Metainfo { version, developer }
}

/// The subdirectory names of `dir`; none when it cannot be listed.
fn subdirectories(dir: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        // `current` is the app's symlink to its default `<arch>/<branch>`, not an arch.
        .filter(|e| e.file_name() != "current" && e.path().is_dir())
        .filter_map(|e| e.file_name().into_string().ok())
        .collect()
}

fn metainfo(active: &Path, id: &str) -> Metainfo {
    let candidates = [
        format!("files/share/metainfo/{id}.metainfo.xml"),
        format!("files/share/metainfo/{id}.appdata.xml"),
        format!("files/share/appdata/{id}.appdata.xml"),
    ];
    candidates
        .iter()
        .find_map(|name| fs::read_to_string(active.join(name)).ok())
        .map(|text| parse_metainfo(&text))
        .unwrap_or_default()
}

/// The deployed refs under `kind` (`app` or `runtime`).
fn deployed(kind: &Path, packages: &mut Vec<Package>) {
    for id in subdirectories(kind) {
        let id_dir = kind.join(&id);
        for arch in subdirectories(&id_dir) {
            let arch_dir: PathBuf = id_dir.join(&arch);
            for branch in subdirectories(&arch_dir) {
                // Only `active` marks a deployed ref; a branch without it is being removed.
                let active = arch_dir.join(&branch).join("active");
                if !active.is_dir() {
                    continue;
                }
                let info = metainfo(&active, &id);
                packages.push(Package {
                    name: id.clone(),
                    version: info.version.unwrap_or(branch),
                    architecture: Some(arch.clone()),
                    source: "flatpak".to_owned(),
                    installed_size_bytes: None,
                    // flatpak writes `deploy` once, when it deploys the commit.
                    install_time: modified(&active.join("deploy")),
                    publisher: info.developer,
                    uninstall_string: None,
                });
            }
        }
    }
}

pub fn collect(context: &Context) -> Collected {
    let root = context.path(ROOT);
    if !root.is_dir() {
        return Ok(None);
    }
    let mut packages = Vec::new();
    deployed(&root.join("app"), &mut packages);
    deployed(&root.join("runtime"), &mut packages);
    sort_packages(&mut packages);
    Ok(Some(FunctionReport::new(FunctionData::Flatpak(packages))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIXTURE_ROOT: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/software/flatpak"
    );
    const FIREFOX: &str = include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/software/flatpak/var/lib/flatpak/app/org.mozilla.firefox/x86_64/stable/",
        "active/files/share/metainfo/org.mozilla.firefox.metainfo.xml"
    ));

    #[test]
    fn reads_first_release_and_untranslated_developer() {
        assert_eq!(
            parse_metainfo(FIREFOX),
            Metainfo {
                version: Some("124.0.1".into()),
                developer: Some("Mozilla & Friends".into()),
            }
        );
    }

    #[test]
    fn release_attributes_on_later_lines_and_single_quotes() {
        let text = "<releases>\n<release\n  date=\"2024\" version='46.0'>\n</release></releases>\
                    <developer id=\"org.gnome\">\n<name translate=\"no\">GNOME</name></developer>";
        assert_eq!(
            parse_metainfo(text),
            Metainfo {
                version: Some("46.0".into()),
                developer: Some("GNOME".into()),
            }
        );
    }

    #[test]
    fn lookalike_attributes_and_tags_are_not_taken() {
        let text = "<releases><release xversion=\"9\" type=\"stable\"/></releases>";
        assert_eq!(parse_metainfo(text), Metainfo::default());
        assert_eq!(
            parse_metainfo("<release version=\"1\""),
            Metainfo::default()
        );
    }

    #[test]
    fn collects_apps_and_runtimes() {
        let report = collect(&Context::new(FIXTURE_ROOT)).unwrap().unwrap();
        let FunctionData::Flatpak(packages) = report.data else {
            panic!("expected flatpak data");
        };
        let summary: Vec<_> = packages
            .iter()
            .map(|p| {
                (
                    p.name.as_str(),
                    p.version.as_str(),
                    p.architecture.as_deref(),
                    p.publisher.as_deref(),
                    p.install_time.is_some(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    "org.freedesktop.Platform",
                    "23.08.16",
                    Some("x86_64"),
                    Some("Freedesktop SDK"),
                    false
                ),
                (
                    "org.gnome.Calculator",
                    "46.0",
                    Some("x86_64"),
                    Some("The GNOME Project"),
                    false
                ),
                (
                    "org.gtk.Gtk3theme.Adwaita-dark",
                    "3.22",
                    Some("x86_64"),
                    None,
                    false
                ),
                (
                    "org.mozilla.firefox",
                    "124.0.1",
                    Some("x86_64"),
                    Some("Mozilla & Friends"),
                    true
                ),
            ]
        );
    }

    #[test]
    fn absent_installation_leaves_flatpak_out() {
        let root = tempfile::tempdir().unwrap();
        assert!(collect(&Context::new(root.path())).unwrap().is_none());
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC*") {
            let _ = parse_metainfo(&text);
        }

        #[test]
        fn never_panics_on_tag_soup(parts in proptest::collection::vec(
            "(<release|<developer_name>|<developer|<name|version|=|\"|'|>|<|/| |&amp;|é|x)", 0..24)) {
            let _ = parse_metainfo(&parts.concat());
        }
    }
}
