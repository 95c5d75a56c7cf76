//! Version ordering by each package source's own rules.
//!
//! - `dpkg`: exactly `dpkg --compare-versions` (lib/dpkg/version.c): `[epoch:]upstream[-revision]`,
//!   epochs numerically, then upstream and revision by `verrevcmp` — runs of non-digits compared
//!   character by character where `~` sorts before everything (even the end), letters before
//!   non-letters, then runs of digits numerically. A missing revision equals `0`.
//! - `rpm`: rpm's `rpmvercmp` (with `~` sorting before everything and `^` after the end but
//!   before anything else) over `[epoch:]version[-release]`, epoch first (missing = 0).
//! - `pacman`: libalpm's `alpm_pkg_vercmp`: its own fork of `rpmvercmp` (no `~`/`^`; a longer
//!   separator run wins; a trailing letter segment loses to the end, so `1.0a < 1.0`), the
//!   release compared only when both sides have one.
//! - `apk`: apk-tools' rules for versions in its grammar
//!   (`N[.N]...[letter][_suffixN]...[-rN]`, pre-release suffixes `alpha beta pre rc` below
//!   none, post-release `cvs svn git hg p` above; components after the first that start with
//!   `0` compare as decimal fractions). A version outside that grammar falls back to
//!   `rpmvercmp` (documented approximation).
//! - everything else (`flatpak`, `snap`, `registry`, `seed`, unknown): `rpmvercmp` over the
//!   whole string: alphanumeric segments, digits numerically, `~` pre-release.
//!
//! Every comparison is total and never panics, whatever the bytes: text that a package manager
//! would refuse is still ordered (deterministically), just not by a rule that manager states.

use std::cmp::Ordering;

/// The ordering rules of one package source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scheme {
    Dpkg,
    Rpm,
    Pacman,
    Apk,
    /// `rpmvercmp` over the whole string, no epoch or release.
    Generic,
}

impl Scheme {
    /// The scheme of a package source (a `software` function name).
    pub fn for_source(source: &str) -> Scheme {
        match source {
            "dpkg" => Scheme::Dpkg,
            "rpm" => Scheme::Rpm,
            "pacman" => Scheme::Pacman,
            "apk" => Scheme::Apk,
            _ => Scheme::Generic,
        }
    }

    pub fn compare(self, a: &str, b: &str) -> Ordering {
        match self {
            Scheme::Dpkg => dpkg(a, b),
            Scheme::Rpm => rpm(a, b),
            Scheme::Pacman => pacman(a, b),
            Scheme::Apk => apk(a, b),
            Scheme::Generic => rpmvercmp(a, b),
        }
    }
}

/// Compares two versions of packages of `source` by that source's rules.
pub fn compare(source: &str, a: &str, b: &str) -> Ordering {
    Scheme::for_source(source).compare(a, b)
}

// ---------------------------------------------------------------------------------------------
// dpkg

/// A dpkg version split as `parseversion` splits it.
struct DpkgVersion<'a> {
    epoch: u64,
    upstream: &'a [u8],
    revision: &'a [u8],
}

fn dpkg_parse(version: &str) -> DpkgVersion<'_> {
    let s = version
        .trim_matches(|c: char| c == ' ' || c == '\t')
        .as_bytes();
    let (epoch, rest) = match s.iter().position(|&c| c == b':') {
        Some(colon) if colon > 0 && s[..colon].iter().all(u8::is_ascii_digit) => {
            // dpkg refuses epochs over INT_MAX; such a string still orders, by saturation.
            let epoch = s[..colon].iter().fold(0u64, |n, &d| {
                n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
            });
            (epoch, &s[colon + 1..])
        }
        _ => (0, s),
    };
    match rest.iter().rposition(|&c| c == b'-') {
        Some(hyphen) => DpkgVersion {
            epoch,
            upstream: &rest[..hyphen],
            revision: &rest[hyphen + 1..],
        },
        None => DpkgVersion {
            epoch,
            upstream: rest,
            revision: b"",
        },
    }
}

/// dpkg's `order()`: the weight of one non-digit character (0 for the end of the string).
fn dpkg_order(c: Option<u8>) -> i32 {
    match c {
        None => 0,
        Some(c) if c.is_ascii_digit() => 0,
        Some(c) if c.is_ascii_alphabetic() => i32::from(c),
        Some(b'~') => -1,
        Some(c) => i32::from(c) + 256,
    }
}

/// dpkg's `verrevcmp`.
fn verrevcmp(a: &[u8], b: &[u8]) -> Ordering {
    let (mut i, mut j) = (0, 0);
    let at = |s: &[u8], k: usize| s.get(k).copied();
    let non_digit = |c: Option<u8>| c.is_some_and(|c| !c.is_ascii_digit());
    let digit = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_digit());
    while i < a.len() || j < b.len() {
        while non_digit(at(a, i)) || non_digit(at(b, j)) {
            let (ac, bc) = (dpkg_order(at(a, i)), dpkg_order(at(b, j)));
            if ac != bc {
                return ac.cmp(&bc);
            }
            i += 1;
            j += 1;
        }
        while at(a, i) == Some(b'0') {
            i += 1;
        }
        while at(b, j) == Some(b'0') {
            j += 1;
        }
        let mut first_diff = Ordering::Equal;
        while digit(at(a, i)) && digit(at(b, j)) {
            if first_diff == Ordering::Equal {
                first_diff = a[i].cmp(&b[j]);
            }
            i += 1;
            j += 1;
        }
        if digit(at(a, i)) {
            return Ordering::Greater;
        }
        if digit(at(b, j)) {
            return Ordering::Less;
        }
        if first_diff != Ordering::Equal {
            return first_diff;
        }
    }
    Ordering::Equal
}

/// `dpkg --compare-versions a ? b`.
pub fn dpkg(a: &str, b: &str) -> Ordering {
    let (a, b) = (dpkg_parse(a), dpkg_parse(b));
    a.epoch
        .cmp(&b.epoch)
        .then_with(|| verrevcmp(a.upstream, b.upstream))
        .then_with(|| verrevcmp(a.revision, b.revision))
}

// ---------------------------------------------------------------------------------------------
// rpm

/// rpm's `rpmvercmp` over one version or release string.
pub fn rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    let separator = |c: u8| !c.is_ascii_alphanumeric() && c != b'~' && c != b'^';
    while i < a.len() || j < b.len() {
        while i < a.len() && separator(a[i]) {
            i += 1;
        }
        while j < b.len() && separator(b[j]) {
            j += 1;
        }
        let (ac, bc) = (a.get(i).copied(), b.get(j).copied());
        // `~` sorts before everything else, the end included.
        if ac == Some(b'~') || bc == Some(b'~') {
            if ac != Some(b'~') {
                return Ordering::Greater;
            }
            if bc != Some(b'~') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        // `^` sorts after the end, before anything else.
        if ac == Some(b'^') || bc == Some(b'^') {
            if ac.is_none() {
                return Ordering::Less;
            }
            if bc.is_none() {
                return Ordering::Greater;
            }
            if ac != Some(b'^') {
                return Ordering::Greater;
            }
            if bc != Some(b'^') {
                return Ordering::Less;
            }
            i += 1;
            j += 1;
            continue;
        }
        if ac.is_none() || bc.is_none() {
            break;
        }
        match next_segment(a, &mut i, b, &mut j) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    match (i >= a.len(), j >= b.len()) {
        (true, true) => Ordering::Equal,
        (true, false) => Ordering::Less,
        _ => Ordering::Greater,
    }
}

/// Compares the segments at `a[*i..]` and `b[*j..]` as rpmvercmp and libalpm do, moving both
/// past them: a run of digits (numerically) or of letters, of the kind `a[*i]` starts. A
/// segment of the other kind in `b` decides at once: the numeric one is newer.
fn next_segment(a: &[u8], i: &mut usize, b: &[u8], j: &mut usize) -> Ordering {
    let (start_a, start_b) = (*i, *j);
    let numeric = a[start_a].is_ascii_digit();
    let class = |c: u8| {
        if numeric {
            c.is_ascii_digit()
        } else {
            c.is_ascii_alphabetic()
        }
    };
    while *i < a.len() && class(a[*i]) {
        *i += 1;
    }
    while *j < b.len() && class(b[*j]) {
        *j += 1;
    }
    if *j == start_b {
        return if numeric {
            Ordering::Greater
        } else {
            Ordering::Less
        };
    }
    let (mut one, mut two) = (&a[start_a..*i], &b[start_b..*j]);
    if numeric {
        while one.first() == Some(&b'0') {
            one = &one[1..];
        }
        while two.first() == Some(&b'0') {
            two = &two[1..];
        }
        match one.len().cmp(&two.len()) {
            Ordering::Equal => {}
            longer => return longer,
        }
    }
    one.cmp(two)
}

/// `[epoch:]version[-release]` as rpm splits an EVR: the epoch is the digits before the first
/// `:` (missing or not a number: 0), the release follows the last `-`.
fn split_evr(evr: &str) -> (u64, &str, Option<&str>) {
    let (epoch, rest) = match evr.split_once(':') {
        Some((e, rest)) if !e.is_empty() && e.bytes().all(|c| c.is_ascii_digit()) => (
            e.bytes().fold(0u64, |n, d| {
                n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
            }),
            rest,
        ),
        Some(("", rest)) => (0, rest),
        _ => (0, evr),
    };
    match rest.rsplit_once('-') {
        Some((version, release)) => (epoch, version, Some(release)),
        None => (epoch, rest, None),
    }
}

/// rpm's EVR ordering: epoch, then version, then release by `rpmvercmp` (a missing release
/// compares as the empty string).
pub fn rpm(a: &str, b: &str) -> Ordering {
    let (ea, va, ra) = split_evr(a);
    let (eb, vb, rb) = split_evr(b);
    ea.cmp(&eb)
        .then_with(|| rpmvercmp(va, vb))
        .then_with(|| rpmvercmp(ra.unwrap_or(""), rb.unwrap_or("")))
}

// ---------------------------------------------------------------------------------------------
// pacman

/// libalpm's fork of `rpmvercmp`.
fn alpm_rpmvercmp(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (a, b) = (a.as_bytes(), b.as_bytes());
    let (mut i, mut j) = (0, 0);
    while i < a.len() && j < b.len() {
        let (sep_a, sep_b) = (i, j);
        while i < a.len() && !a[i].is_ascii_alphanumeric() {
            i += 1;
        }
        while j < b.len() && !b[j].is_ascii_alphanumeric() {
            j += 1;
        }
        if i >= a.len() || j >= b.len() {
            break;
        }
        // A longer run of separators wins.
        match (i - sep_a).cmp(&(j - sep_b)) {
            Ordering::Equal => {}
            other => return other,
        }
        match next_segment(a, &mut i, b, &mut j) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    let (rest_a, rest_b) = (a.get(i).copied(), b.get(j).copied());
    if rest_a.is_none() && rest_b.is_none() {
        return Ordering::Equal;
    }
    // A remaining letter segment never beats the end.
    let alpha = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_alphabetic());
    if (rest_a.is_none() && !alpha(rest_b)) || alpha(rest_a) {
        Ordering::Less
    } else {
        Ordering::Greater
    }
}

/// libalpm's `parseEVR`: the epoch is the leading digits when a `:` follows them (else "0"),
/// the release follows the last `-`.
fn alpm_parse(evr: &str) -> (&str, &str, Option<&str>) {
    let digits = evr.bytes().take_while(u8::is_ascii_digit).count();
    let after_digits = &evr[digits..];
    let hyphen = after_digits.rfind('-').map(|h| h + digits);
    let (epoch, version_start) = if after_digits.starts_with(':') {
        let epoch = &evr[..digits];
        (if epoch.is_empty() { "0" } else { epoch }, digits + 1)
    } else {
        ("0", 0)
    };
    match hyphen {
        // A hyphen inside the epoch part cannot happen: the epoch is digits only.
        Some(h) if h >= version_start => (epoch, &evr[version_start..h], Some(&evr[h + 1..])),
        _ => (epoch, &evr[version_start..], None),
    }
}

/// `vercmp` / `alpm_pkg_vercmp`.
pub fn pacman(a: &str, b: &str) -> Ordering {
    if a == b {
        return Ordering::Equal;
    }
    let (ea, va, ra) = alpm_parse(a);
    let (eb, vb, rb) = alpm_parse(b);
    alpm_rpmvercmp(ea, eb)
        .then_with(|| alpm_rpmvercmp(va, vb))
        .then_with(|| match (ra, rb) {
            (Some(ra), Some(rb)) => alpm_rpmvercmp(ra, rb),
            _ => Ordering::Equal,
        })
}

// ---------------------------------------------------------------------------------------------
// apk

/// One parsed apk version: `N[.N]...[letter][_suffixN]...[-rN]`.
#[derive(Debug)]
struct ApkVersion<'a> {
    numbers: Vec<&'a str>,
    letter: Option<u8>,
    /// (rank, number): pre-release suffixes rank below 0, post-release above.
    suffixes: Vec<(i8, u64)>,
    revision: u64,
}

const APK_SUFFIXES: &[(&str, i8)] = &[
    ("alpha", -4),
    ("beta", -3),
    ("pre", -2),
    ("rc", -1),
    ("cvs", 1),
    ("svn", 2),
    ("git", 3),
    ("hg", 4),
    ("p", 5),
];

fn parse_number(digits: &str) -> u64 {
    digits.bytes().fold(0u64, |n, d| {
        n.saturating_mul(10).saturating_add(u64::from(d - b'0'))
    })
}

fn apk_parse(version: &str) -> Option<ApkVersion<'_>> {
    let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    let mut rest = version;
    let mut numbers = Vec::new();
    loop {
        let n = digits(rest);
        if n == 0 {
            return None;
        }
        numbers.push(&rest[..n]);
        rest = &rest[n..];
        match rest.strip_prefix('.') {
            Some(after) => rest = after,
            None => break,
        }
    }
    let mut letter = None;
    if let Some(&c) = rest.as_bytes().first()
        && c.is_ascii_lowercase()
    {
        letter = Some(c);
        rest = &rest[1..];
    }
    let mut suffixes = Vec::new();
    while let Some(after) = rest.strip_prefix('_') {
        let (name, rank) = APK_SUFFIXES
            .iter()
            .find(|(name, _)| after.starts_with(name))?;
        let after = &after[name.len()..];
        let n = digits(after);
        suffixes.push((*rank, parse_number(&after[..n])));
        rest = &after[n..];
    }
    let mut revision = 0;
    if let Some(after) = rest.strip_prefix("-r") {
        let n = digits(after);
        if n == 0 {
            return None;
        }
        revision = parse_number(&after[..n]);
        rest = &after[n..];
    }
    rest.is_empty().then_some(ApkVersion {
        numbers,
        letter,
        suffixes,
        revision,
    })
}

/// One numeric component of an apk version: the first, and any without a leading zero,
/// numerically; a later one with a leading zero as a decimal fraction (`1.02 < 1.1`).
fn apk_number(first: bool, a: &str, b: &str) -> Ordering {
    if !first && (a.starts_with('0') || b.starts_with('0')) {
        let (a, b) = (a.trim_end_matches('0'), b.trim_end_matches('0'));
        return a.cmp(b);
    }
    let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

/// apk's ordering (see the module documentation); versions outside apk's grammar fall back to
/// `rpmvercmp`, and sort by it against versions inside it too.
pub fn apk(a: &str, b: &str) -> Ordering {
    let (Some(va), Some(vb)) = (apk_parse(a), apk_parse(b)) else {
        return rpmvercmp(a, b);
    };
    for (k, (x, y)) in va.numbers.iter().zip(&vb.numbers).enumerate() {
        match apk_number(k == 0, x, y) {
            Ordering::Equal => {}
            other => return other,
        }
    }
    // More numeric components is newer.
    match va.numbers.len().cmp(&vb.numbers.len()) {
        Ordering::Equal => {}
        other => return other,
    }
    match (va.letter, vb.letter) {
        (Some(x), Some(y)) if x != y => return x.cmp(&y),
        (Some(_), None) => return Ordering::Greater,
        (None, Some(_)) => return Ordering::Less,
        _ => {}
    }
    let mut k = 0;
    loop {
        match (va.suffixes.get(k), vb.suffixes.get(k)) {
            (Some(x), Some(y)) => match x.cmp(y) {
                Ordering::Equal => k += 1,
                other => return other,
            },
            // A pre-release suffix is older than none, a post-release one newer.
            (Some((rank, _)), None) => {
                return if *rank < 0 {
                    Ordering::Less
                } else {
                    Ordering::Greater
                };
            }
            (None, Some((rank, _))) => {
                return if *rank < 0 {
                    Ordering::Greater
                } else {
                    Ordering::Less
                };
            }
            (None, None) => break,
        }
    }
    va.revision.cmp(&vb.revision)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn sign(o: Ordering) -> i32 {
        match o {
            Ordering::Less => -1,
            Ordering::Equal => 0,
            Ordering::Greater => 1,
        }
    }

    /// Pairs from dpkg's own tests (src/t/t-version.c, lib/dpkg/t/t-version.c) and Debian
    /// policy's examples.
    #[test]
    fn dpkg_known_pairs() {
        let table: &[(&str, &str, i32)] = &[
            ("0", "0", 0),
            ("0", "00", 0),
            ("1", "0", 1),
            ("0", "1", -1),
            ("0:0", "0", 0),
            ("1:0", "0", 1),
            ("0:1", "1", 0),
            ("1:0", "2", 1),
            ("2:0", "1:9", 1),
            ("0-0", "0", 0),
            ("0-00", "0", 0),
            ("0-1", "0-0", 1),
            ("0-0", "0-1", -1),
            ("0a", "0a", 0),
            ("0a", "0b", -1),
            ("0b", "0a", 1),
            ("a", "a", 0),
            ("a", "b", -1),
            ("b", "a", 1),
            ("0", "0-0", 0),
            ("0-0", "0-0", 0),
            ("0.0", "0", 1),
            ("1.0", "1.0-0", 0),
            ("1.0", "1.0-1", -1),
            ("1.0~rc1", "1.0", -1),
            ("1.0~rc1", "1.0~rc2", -1),
            ("1.0~~", "1.0~", -1),
            ("1.0~", "1.0", -1),
            ("1.0", "1.0a", -1),
            ("1.0a", "1.0+", -1),
            ("1.0+", "1.0.", -1),
            ("1.0.", "1.0.0", 0),
            ("1.0.0", "1.0.1", -1),
            ("1.0+dfsg", "1.0", 1),
            ("1.0+b1", "1.0", 1),
            ("1.2.3-1ubuntu1", "1.2.3-1", 1),
            ("1.2.3-1ubuntu1", "1.2.3-2", -1),
            ("2.30-4", "2.30-10", -1),
            ("1.10", "1.9", 1),
            ("1.001", "1.1", 0),
            ("3.0.2-0ubuntu1.10", "3.0.2-0ubuntu1.9", 1),
            ("3.0.2-0ubuntu1.10", "3.0.7", -1),
            ("1:1.0", "2.0", 1),
            ("7.6p2-4", "7.6-0", 1),
            ("1.0.3-3", "1.0-1", 1),
            ("1.3", "1.2.2-2", 1),
            ("1.3", "1.2.2", 1),
            ("0-pre", "0-pre", 0),
            ("0-pre", "0-pree", -1),
            ("1.1.6r2-2", "1.1.6r-1", 1),
            ("2.6b2-1", "2.6b-2", 1),
            ("98.1p5-1", "98.1-pre2-b6-2", -1),
            ("0.4a6-2", "0.4-1", 1),
            ("1:3.0.5-2", "1:3.0.5.1", -1),
            ("10.3", "1:0.4", -1),
            ("1:1.25-4", "1:1.25-8", -1),
            ("0:1.18.36", "1.18.36", 0),
            ("1.18.36", "1.18.35", 1),
            ("0:1.18.36", "1.18.35", 1),
            ("9:1.18.36:5.4-20", "10:0.5.1-22", -1),
            ("9:1.18.36:5.4-20", "9:1.18.36:5.5-1", -1),
            ("9:1.18.36:5.4-20", " 9:1.18.37:4.3-22", -1),
            ("1.18.36-0.17.35-18", "1.18.36-19", 1),
            ("1:1.2.13-3", "1:1.2.13-3.1", -1),
            ("2.0.7pre1-4", "2.0.7r-1", -1),
            ("0:0-0-0", "0-0", 1),
            ("0:0:0-0", "0:0-0", 1),
            ("0:0:0:0-0", "0:0:0-0", 1),
            ("0:0-0-0-0", "0:0-0-0", 1),
            ("0:0-0:0-0", "0:0:0-0", -1),
            ("0.0.0-0", "0-0", 1),
            ("~~", "~~a", -1),
            ("~~a", "~", -1),
            ("~", "", -1),
            ("", "a", -1),
        ];
        for &(a, b, want) in table {
            assert_eq!(sign(dpkg(a, b)), want, "dpkg {a:?} vs {b:?}");
            assert_eq!(sign(dpkg(b, a)), -want, "dpkg {b:?} vs {a:?}");
        }
    }

    /// Pairs from rpm's tests/rpmvercmp.at.
    #[test]
    fn rpmvercmp_known_pairs() {
        let table: &[(&str, &str, i32)] = &[
            ("1.0", "1.0", 0),
            ("1.0", "2.0", -1),
            ("2.0", "1.0", 1),
            ("2.0.1", "2.0.1", 0),
            ("2.0", "2.0.1", -1),
            ("2.0.1", "2.0", 1),
            ("2.0.1a", "2.0.1a", 0),
            ("2.0.1a", "2.0.1", 1),
            ("2.0.1", "2.0.1a", -1),
            ("5.5p1", "5.5p1", 0),
            ("5.5p1", "5.5p2", -1),
            ("5.5p2", "5.5p1", 1),
            ("5.5p10", "5.5p10", 0),
            ("5.5p1", "5.5p10", -1),
            ("5.5p10", "5.5p1", 1),
            ("10xyz", "10.1xyz", -1),
            ("10.1xyz", "10xyz", 1),
            ("xyz10", "xyz10", 0),
            ("xyz10", "xyz10.1", -1),
            ("xyz10.1", "xyz10", 1),
            ("xyz.4", "xyz.4", 0),
            ("xyz.4", "8", -1),
            ("8", "xyz.4", 1),
            ("xyz.4", "2", -1),
            ("2", "xyz.4", 1),
            ("5.5p2", "5.6p1", -1),
            ("5.6p1", "5.5p2", 1),
            ("5.6p1", "6.5p1", -1),
            ("6.5p1", "5.6p1", 1),
            ("6.0.rc1", "6.0", 1),
            ("6.0", "6.0.rc1", -1),
            ("10b2", "10a1", 1),
            ("10a2", "10b2", -1),
            ("1.0aa", "1.0aa", 0),
            ("1.0a", "1.0aa", -1),
            ("1.0aa", "1.0a", 1),
            ("10.0001", "10.0001", 0),
            ("10.0001", "10.1", 0),
            ("10.1", "10.0001", 0),
            ("10.0001", "10.0039", -1),
            ("10.0039", "10.0001", 1),
            ("4.999.9", "5.0", -1),
            ("5.0", "4.999.9", 1),
            ("20101121", "20101121", 0),
            ("20101121", "20101122", -1),
            ("20101122", "20101121", 1),
            ("2_0", "2_0", 0),
            ("2.0", "2_0", 0),
            ("2_0", "2.0", 0),
            ("a", "a", 0),
            ("a+", "a+", 0),
            ("a+", "a_", 0),
            ("a_", "a+", 0),
            ("+a", "+a", 0),
            ("+a", "_a", 0),
            ("_a", "+a", 0),
            ("+_", "+_", 0),
            ("_+", "+_", 0),
            ("_+", "_", 0),
            ("+", "_", 0),
            ("_", "+", 0),
            ("1.0~rc1", "1.0~rc1", 0),
            ("1.0~rc1", "1.0", -1),
            ("1.0", "1.0~rc1", 1),
            ("1.0~rc1", "1.0~rc2", -1),
            ("1.0~rc2", "1.0~rc1", 1),
            ("1.0~rc1~git123", "1.0~rc1~git123", 0),
            ("1.0~rc1~git123", "1.0~rc1", -1),
            ("1.0~rc1", "1.0~rc1~git123", 1),
            ("1.0^", "1.0^", 0),
            ("1.0^", "1.0", 1),
            ("1.0", "1.0^", -1),
            ("1.0^git1", "1.0^git1", 0),
            ("1.0^git1", "1.0", 1),
            ("1.0", "1.0^git1", -1),
            ("1.0^git1", "1.0^git2", -1),
            ("1.0^git2", "1.0^git1", 1),
            ("1.0^git1", "1.01", -1),
            ("1.01", "1.0^git1", 1),
            ("1.0^20160101", "1.0^20160101", 0),
            ("1.0^20160101", "1.0.1", -1),
            ("1.0.1", "1.0^20160101", 1),
            ("1.0^20160101^git1", "1.0^20160101^git1", 0),
            ("1.0^20160102", "1.0^20160101^git1", 1),
            ("1.0^20160101^git1", "1.0^20160102", -1),
            ("1.0~rc1^git1", "1.0~rc1^git1", 0),
            ("1.0~rc1^git1", "1.0~rc1", 1),
            ("1.0~rc1", "1.0~rc1^git1", -1),
            ("1.0^git1~pre", "1.0^git1~pre", 0),
            ("1.0^git1", "1.0^git1~pre", 1),
            ("1.0^git1~pre", "1.0^git1", -1),
        ];
        for &(a, b, want) in table {
            assert_eq!(sign(rpmvercmp(a, b)), want, "rpmvercmp {a:?} vs {b:?}");
        }
    }

    #[test]
    fn rpm_evr() {
        let table: &[(&str, &str, i32)] = &[
            ("1:1.0-1", "2.0-1", 1),
            ("0:1.0-1", "1.0-1", 0),
            ("1.0-1.el9", "1.0-2.el9", -1),
            ("3.0.7-16.el9_2", "3.0.7-6.el9_2", 1),
            ("3.0.1-43.el9_0", "3.0.7", -1),
            ("1.0-1", "1.0", 1),
            ("1.2.3-4.fc38", "1.2.3-4.fc38", 0),
        ];
        for &(a, b, want) in table {
            assert_eq!(sign(rpm(a, b)), want, "rpm {a:?} vs {b:?}");
            assert_eq!(sign(rpm(b, a)), -want, "rpm {b:?} vs {a:?}");
        }
    }

    /// Pairs from pacman's test/util/vercmptest.sh.
    #[test]
    fn pacman_known_pairs() {
        let table: &[(&str, &str, i32)] = &[
            ("1.5.0", "1.5.0", 0),
            ("1.5.1", "1.5.0", 1),
            ("1.5.1", "1.5", 1),
            ("1.5.0-1", "1.5.0-1", 0),
            ("1.5.0-1", "1.5.0-2", -1),
            ("1.5.0-1", "1.5.1-1", -1),
            ("1.5.0-2", "1.5.1-1", -1),
            ("1.5-1", "1.5", 0),
            ("1.5.b-1", "1.5.b", 0),
            ("1.5-1", "1.5.b", -1),
            ("1.5b-1", "1.5", -1),
            ("1.1-1", "1.1", 0),
            ("1.0a", "1.0alpha", -1),
            ("1.0alpha", "1.0b", -1),
            ("1.0b", "1.0beta", -1),
            ("1.0beta", "1.0rc", -1),
            ("1.0rc", "1.0", -1),
            ("1.0", "1.0.a", -1),
            ("1.0.a", "1.0.b", -1),
            ("1.0.b", "1.0.c", -1),
            ("1.0.c", "1.0.0", -1),
            ("1.0.0", "1.0.1", -1),
            ("1.0.1", "1.1", -1),
            ("1.0.a", "1.0.1", -1),
            ("1.0.1", "1.0.a", 1),
            ("1.5.0", "1.5.0a", 1),
            ("1.5.a", "1.5.0", -1),
            ("1.5..0", "1.5.0", 1),
            ("1.5.0", "1.5..0", -1),
            ("1.5+0", "1.5.0", 0),
            ("0:1.5", "1.5", 0),
            ("1:1.5", "1.5", 1),
            ("1:1.0", "2.0", 1),
            ("2:1.0", "1:2.0", 1),
            ("1.0-1", "1.0-2", -1),
            ("1:1.0-1", "1:1.0-2", -1),
            ("1:1.0-1", "1.0-1", 1),
            ("1.0-1", "1:1.0-1", -1),
        ];
        for &(a, b, want) in table {
            assert_eq!(sign(pacman(a, b)), want, "pacman {a:?} vs {b:?}");
            assert_eq!(sign(pacman(b, a)), -want, "pacman {b:?} vs {a:?}");
        }
    }

    /// Pairs in apk-tools' own test list (test/version.data) style.
    #[test]
    fn apk_known_pairs() {
        let table: &[(&str, &str, i32)] = &[
            ("2.34", "2.34", 0),
            ("2.34", "2.35", -1),
            ("1.2", "1.2.1", -1),
            ("1.2a", "1.2", 1),
            ("1.2b", "1.2a", 1),
            ("1.2_rc1", "1.2", -1),
            ("1.2_alpha1", "1.2_beta1", -1),
            ("1.2_beta1", "1.2_pre1", -1),
            ("1.2_pre1", "1.2_rc1", -1),
            ("1.2_rc2", "1.2_rc10", -1),
            ("1.2_p1", "1.2", 1),
            ("1.2_git20240101", "1.2", 1),
            ("1.2-r1", "1.2", 1),
            ("1.2-r10", "1.2-r9", 1),
            ("1.2_rc1-r3", "1.2-r0", -1),
            ("3.0.7-r0", "3.0.12-r0", -1),
            ("1.02", "1.1", -1),
            ("1.010", "1.01", 0),
            ("10", "9", 1),
            ("1.2.3", "1.2_p1", 1),
            ("0.1.0_alpha_pre2", "0.1.0_alpha", -1),
        ];
        for &(a, b, want) in table {
            assert_eq!(sign(apk(a, b)), want, "apk {a:?} vs {b:?}");
            assert_eq!(sign(apk(b, a)), -want, "apk {b:?} vs {a:?}");
        }
    }

    #[test]
    fn sources_pick_their_scheme() {
        assert_eq!(compare("dpkg", "1.0~rc1", "1.0"), Ordering::Less);
        // pacman: a trailing letter segment is a pre-release; for rpm it is newer.
        assert_eq!(compare("pacman", "1.0a", "1.0"), Ordering::Less);
        assert_eq!(compare("rpm", "1.0a", "1.0"), Ordering::Greater);
        assert_eq!(
            compare("registry", "10.0.19041.1", "10.0.9200.1"),
            Ordering::Greater
        );
        assert_eq!(compare("snap", "2.60.4", "2.61"), Ordering::Less);
        assert_eq!(compare("seed", "23.01", "22.01"), Ordering::Greater);
    }

    /// Versions dpkg accepts: `[epoch:]upstream[-revision]`, upstream starting with a digit.
    fn dpkg_version() -> impl Strategy<Value = String> {
        let upstream = "[0-9][0-9a-zA-Z.+~]{0,8}(-[0-9a-zA-Z.+~]{0,4}[0-9a-zA-Z.+~])?";
        (proptest::option::of(0u32..3), upstream).prop_map(|(epoch, up)| match epoch {
            Some(e) => format!("{e}:{up}"),
            None => up,
        })
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        #[test]
        fn never_panics_and_is_antisymmetric(a in ".{0,16}", b in ".{0,16}") {
            for scheme in [Scheme::Dpkg, Scheme::Rpm, Scheme::Pacman, Scheme::Apk, Scheme::Generic] {
                let ab = scheme.compare(&a, &b);
                let ba = scheme.compare(&b, &a);
                prop_assert_eq!(ab, ba.reverse(), "{:?} {:?} {:?}", scheme, a, b);
                prop_assert_eq!(scheme.compare(&a, &a), Ordering::Equal);
            }
        }

        #[test]
        fn version_shaped_text_is_antisymmetric(
            a in "[0-9a-z.~^+_:-]{0,12}", b in "[0-9a-z.~^+_:-]{0,12}"
        ) {
            for scheme in [Scheme::Dpkg, Scheme::Rpm, Scheme::Pacman, Scheme::Apk, Scheme::Generic] {
                prop_assert_eq!(scheme.compare(&a, &b), scheme.compare(&b, &a).reverse());
            }
        }

        #[test]
        fn dpkg_is_transitive(a in dpkg_version(), b in dpkg_version(), c in dpkg_version()) {
            let mut v = [a, b, c];
            v.sort_by(|x, y| dpkg(x, y));
            prop_assert!(dpkg(&v[0], &v[2]) != Ordering::Greater);
        }
    }

    /// A small deterministic generator (xorshift) for the oracle's pairs.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        fn pick<'a>(&mut self, from: &'a [&'a str]) -> &'a str {
            from[self.below(from.len())]
        }
    }

    /// A dpkg-valid version built from pieces that exercise every rule: epochs, `~`, letters
    /// against `+` and `.`, leading zeros, long digit runs, hyphens inside upstream.
    fn generated_version(rng: &mut Rng) -> String {
        const PIECES: &[&str] = &[
            "0",
            "00",
            "1",
            "01",
            "2",
            "9",
            "10",
            "99",
            "100",
            "20240101",
            ".",
            ".",
            "+",
            "~",
            "~~",
            "a",
            "b",
            "z",
            "A",
            "Z",
            "rc",
            "beta",
            "dfsg",
            "ubuntu",
            "deb12u",
            "+b",
            "-",
            "p",
            "0ubuntu0.22.04",
        ];
        let mut s = String::new();
        if rng.below(5) == 0 {
            s.push_str(rng.pick(&["0:", "1:", "2:", "10:"]));
        }
        s.push_str(rng.pick(&["0", "1", "2", "3", "10"]));
        for _ in 0..rng.below(6) {
            s.push_str(rng.pick(PIECES));
        }
        if rng.below(2) == 0 {
            s.push('-');
            s.push_str(rng.pick(&["0", "1", "2", "1ubuntu1", "0+deb12u1", "1~bpo1", "10"]));
        }
        // A trailing hyphen would leave an empty revision, which dpkg refuses.
        while s.ends_with('-') || s.ends_with(':') {
            s.push('1');
        }
        s
    }

    /// A near copy of `v` (one piece changed), so the pair shares a long prefix.
    fn mutated(rng: &mut Rng, v: &str) -> String {
        let mut s = v.to_owned();
        // After the epoch and the upstream's first digit, so the copy stays a valid version.
        let first = s.find(':').map_or(1, |colon| colon + 2).min(s.len());
        let at = (first + rng.below(s.len() - first + 1)).min(s.len());
        let insert = rng.pick(&["~", "+", ".", "a", "0", "1", "9", "~1", ".0", "-1"]);
        s.insert_str(at, insert);
        while s.ends_with('-') || s.ends_with(':') {
            s.push('0');
        }
        s
    }

    /// The system's `dpkg --compare-versions` as the oracle: thousands of generated pairs (and
    /// pairs of this machine's installed versions) must order the same.
    #[test]
    fn dpkg_agrees_with_the_system_dpkg() {
        use std::process::Command;
        if Command::new("dpkg").arg("--version").output().is_err() {
            eprintln!("dpkg is not installed; the oracle test is skipped");
            return;
        }
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let mut pairs = Vec::new();
        for _ in 0..1200 {
            let a = generated_version(&mut rng);
            let b = match rng.below(5) {
                0 | 1 => mutated(&mut rng, &a),
                // Spelled differently, often equal: an explicit zero epoch or revision, or
                // leading zeros.
                2 if !a.contains(':') => format!("0:{a}"),
                2 if !a.contains('-') => format!("{a}-0"),
                2 => a.replacen('1', "01", 1),
                _ => generated_version(&mut rng),
            };
            pairs.push((a, b));
        }
        if let Ok(out) = Command::new("dpkg-query")
            .args(["-W", "-f", "${Version}\n"])
            .output()
        {
            let installed: Vec<String> = String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_owned)
                .filter(|v| !v.is_empty())
                .collect();
            for _ in 0..installed.len().min(300) {
                let a = installed[rng.below(installed.len())].clone();
                let b = installed[rng.below(installed.len())].clone();
                pairs.push((a, b));
            }
        }
        // The pairs cover every outcome, not mostly one.
        for outcome in [Ordering::Less, Ordering::Equal, Ordering::Greater] {
            let n = pairs.iter().filter(|(a, b)| dpkg(a, b) == outcome).count();
            assert!(n >= 20, "only {n} generated pairs compare {outcome:?}");
        }
        // Each pair costs two processes (`lt`, `gt`); two threads share the list.
        let ask = |a: &str, op: &str, b: &str| -> bool {
            let status = Command::new("dpkg")
                .args(["--compare-versions", a, op, b])
                .stderr(std::process::Stdio::null())
                .status()
                .expect("dpkg runs");
            match status.code() {
                Some(0) => true,
                Some(1) => false,
                other => panic!("dpkg --compare-versions {a:?} {op} {b:?}: {other:?}"),
            }
        };
        let half = pairs.len() / 2;
        let (left, right) = pairs.split_at(half);
        let check = |chunk: &[(String, String)]| -> Vec<String> {
            let mut disagreements = Vec::new();
            for (a, b) in chunk {
                let oracle = if ask(a, "lt", b) {
                    Ordering::Less
                } else if ask(a, "gt", b) {
                    Ordering::Greater
                } else {
                    Ordering::Equal
                };
                if dpkg(a, b) != oracle {
                    disagreements.push(format!("{a:?} vs {b:?}: dpkg says {oracle:?}"));
                }
            }
            disagreements
        };
        let (l, r) = std::thread::scope(|scope| {
            let l = scope.spawn(|| check(left));
            let r = scope.spawn(|| check(right));
            (l.join().unwrap(), r.join().unwrap())
        });
        let disagreements: Vec<_> = l.into_iter().chain(r).collect();
        assert!(
            disagreements.is_empty(),
            "{} of {} pairs disagree:\n{}",
            disagreements.len(),
            pairs.len(),
            disagreements.join("\n")
        );
    }
}
