//! `software/*`: one function report per package source present on the host.
//!
//! Every source reads its package database directly (no package-manager child process) except
//! rpm on hosts whose database is not SQLite. A source whose database does not exist returns
//! `Ok(None)` so the report leaves it out. Lists hold installed packages only, sorted by
//! (name, architecture).

pub mod apk;
pub mod dpkg;
pub mod flatpak;
pub mod pacman;
pub mod rpm;
pub mod snap;

use std::path::Path;
use std::time::SystemTime;

use jiff::Timestamp;
use muster_proto::data::Package;

/// Sorts by (name, architecture), the order every software report uses.
pub(crate) fn sort_packages(packages: &mut [Package]) {
    packages.sort_unstable_by(|a, b| {
        (a.name.as_str(), a.architecture.as_deref())
            .cmp(&(b.name.as_str(), b.architecture.as_deref()))
    });
}

/// A Unix time in seconds as a timestamp; `None` for zero (sources write 0 for "unknown") or
/// values outside jiff's range.
pub(crate) fn timestamp(seconds: i64) -> Option<Timestamp> {
    if seconds == 0 {
        return None;
    }
    Timestamp::from_second(seconds).ok()
}

/// A file's modification time; `None` when it cannot be read.
pub(crate) fn modified(path: &Path) -> Option<Timestamp> {
    system_time(std::fs::metadata(path).ok()?.modified().ok()?)
}

pub(crate) fn system_time(time: SystemTime) -> Option<Timestamp> {
    Timestamp::try_from(time).ok()
}

/// A trimmed, non-empty value, owned.
pub(crate) fn non_empty(value: &str) -> Option<String> {
    let value = value.trim();
    (!value.is_empty()).then(|| value.to_owned())
}

/// The lines of `text`, like [`str::lines`] but several times faster on package databases
/// (hundreds of KiB of short lines): `str::lines` pays a `memcmp` call per line in its char
/// searcher. Finding line ends is most of the cost of parsing dpkg's status file.
pub(crate) fn lines(text: &str) -> Lines<'_> {
    Lines(text)
}

pub(crate) struct Lines<'a>(&'a str);

impl<'a> Iterator for Lines<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        if self.0.is_empty() {
            return None;
        }
        let Some(end) = find_newline(self.0.as_bytes()) else {
            return Some(std::mem::take(&mut self.0));
        };
        // `end` is at a `\n`, a char boundary, so the fallbacks never apply.
        let (line, rest) = self.0.split_at_checked(end).unwrap_or((self.0, ""));
        self.0 = rest.get(1..).unwrap_or("");
        // A byte test: `strip_suffix('\r')` costs a `memcmp` call.
        match line.as_bytes().last() {
            Some(b'\r') => Some(line.get(..line.len() - 1).unwrap_or(line)),
            _ => Some(line),
        }
    }
}

/// The position of the first `\n`, eight bytes at a time.
fn find_newline(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([0x01; 8]);
    const HIGHS: u64 = u64::from_ne_bytes([0x80; 8]);
    const NEWLINES: u64 = u64::from_ne_bytes([b'\n'; 8]);
    let mut chunks = bytes.chunks_exact(8);
    let mut offset = 0;
    for chunk in &mut chunks {
        let word = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8])) ^ NEWLINES;
        // Flags zero bytes; the lowest flag is always a real one, which is the one we want.
        let zeros = word.wrapping_sub(ONES) & !word & HIGHS;
        if zeros != 0 {
            return Some(offset + (zeros.trailing_zeros() / 8) as usize);
        }
        offset += 8;
    }
    chunks
        .remainder()
        .iter()
        .position(|&b| b == b'\n')
        .map(|p| offset + p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn finds_newlines_in_and_after_whole_words() {
        assert_eq!(find_newline(b"abcdefgh\n"), Some(8));
        assert_eq!(find_newline(b"abc\ndefgh\n"), Some(3));
        assert_eq!(find_newline("\u{10a}\u{a0a}x\n".as_bytes()), Some(6));
        assert_eq!(find_newline(b"abcdefghijklmnop"), None);
    }

    #[test]
    fn lines_strip_carriage_returns_only_before_newlines() {
        let split: Vec<_> = lines("a\r\n\r\nb\rc\n\r").collect();
        assert_eq!(split, ["a", "", "b\rc", "\r"]);
    }

    #[test]
    fn sorts_by_name_then_architecture() {
        let package = |name: &str, arch: Option<&str>| Package {
            name: name.into(),
            version: "1".into(),
            architecture: arch.map(Into::into),
            source: "dpkg".into(),
            installed_size_bytes: None,
            install_time: None,
            publisher: None,
            uninstall_string: None,
        };
        let mut packages = vec![
            package("libc6", Some("i386")),
            package("adduser", Some("all")),
            package("libc6", Some("amd64")),
            package("gpg-pubkey", None),
        ];
        sort_packages(&mut packages);
        let order: Vec<_> = packages
            .iter()
            .map(|p| (p.name.as_str(), p.architecture.as_deref()))
            .collect();
        assert_eq!(
            order,
            [
                ("adduser", Some("all")),
                ("gpg-pubkey", None),
                ("libc6", Some("amd64")),
                ("libc6", Some("i386")),
            ]
        );
    }

    proptest! {
        #[test]
        fn lines_match_str_lines(text in "[a\\n\\r\u{e9}\u{10a}]{0,64}") {
            prop_assert_eq!(lines(&text).collect::<Vec<_>>(), text.lines().collect::<Vec<_>>());
        }

        #[test]
        fn lines_match_str_lines_on_anything(text in "\\PC*") {
            prop_assert_eq!(lines(&text).collect::<Vec<_>>(), text.lines().collect::<Vec<_>>());
        }
    }
}
