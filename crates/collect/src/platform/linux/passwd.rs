//! User names from `/etc/passwd`, to name the owners of processes.
//!
//! Only the local file is read: users from LDAP, SSSD or NIS are not resolved, since going
//! through NSS would mean calling into libc (and its plugins) from the collector.

use std::collections::HashMap;

use crate::Context;

/// Parses `/etc/passwd` into uid → user name. Comments, NIS compat lines (`+`, `-`) and lines
/// without a name or a numeric uid are skipped; when a uid appears twice the first name wins,
/// as `getpwuid` would return it.
pub fn parse_passwd(text: &str) -> HashMap<u32, String> {
    let mut users = HashMap::new();
    for line in text.lines() {
        if line.starts_with(['#', '+', '-']) {
            continue;
        }
        let mut fields = line.split(':');
        let (Some(name), Some(_password), Some(uid)) =
            (fields.next(), fields.next(), fields.next())
        else {
            continue;
        };
        let name = name.trim();
        let Ok(uid) = uid.trim().parse::<u32>() else {
            continue;
        };
        if name.is_empty() {
            continue;
        }
        users.entry(uid).or_insert_with(|| name.to_owned());
    }
    users
}

/// Reads `/etc/passwd` under the context's root. A missing or unreadable file gives an empty
/// map: processes then carry their uid without a name. Invalid UTF-8 (a Latin-1 GECOS field) is
/// replaced rather than losing every user.
pub fn read_users(context: &Context) -> HashMap<u32, String> {
    match std::fs::read(context.path("/etc/passwd")) {
        Ok(bytes) => parse_passwd(&String::from_utf8_lossy(&bytes)),
        Err(_) => HashMap::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const PASSWD: &str = include_str!("../../../tests/fixtures/processes/passwd");

    #[test]
    fn maps_uids_to_names() {
        let users = parse_passwd(PASSWD);
        assert_eq!(users.get(&0).map(String::as_str), Some("root"));
        assert_eq!(users.get(&33).map(String::as_str), Some("www-data"));
        assert_eq!(users.get(&65534).map(String::as_str), Some("nobody"));
        assert_eq!(users.get(&1000).map(String::as_str), Some("alice"));
        assert_eq!(
            users.get(&997).map(String::as_str),
            Some("systemd-timesync")
        );
    }

    #[test]
    fn skips_comments_nis_and_malformed_lines() {
        let text = "# comment\n+bob::::::\n-carol::::::\n+::::::\n\
            broken-line\nnouid:x::0::/:/bin/sh\nbaduid:x:12a:0::/:/bin/sh\n:x:5:5::/:/bin/sh\n\
            dave:x:1001:1001:Dave:/home/dave:/bin/bash\n";
        let users = parse_passwd(text);
        assert_eq!(users.len(), 1, "{users:?}");
        assert_eq!(users.get(&1001).map(String::as_str), Some("dave"));
    }

    #[test]
    fn first_entry_of_a_duplicate_uid_wins() {
        let users = parse_passwd("root:x:0:0::/root:/bin/sh\ntoor:x:0:0::/root:/bin/sh\n");
        assert_eq!(users.get(&0).map(String::as_str), Some("root"));
    }

    #[test]
    fn alpine_busybox_passwd() {
        let text = "root:x:0:0:root:/root:/bin/ash\nbin:x:1:1:bin:/bin:/sbin/nologin\n\
            nobody:x:65534:65534:nobody:/:/sbin/nologin\n";
        let users = parse_passwd(text);
        assert_eq!(users.len(), 3);
        assert_eq!(users.get(&1).map(String::as_str), Some("bin"));
    }

    #[test]
    fn missing_file_gives_no_users() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_users(&Context::new(dir.path())).is_empty());
    }

    #[test]
    fn latin1_gecos_does_not_lose_users() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        let mut bytes =
            b"root:x:0:0:root:/root:/bin/sh\njos:x:1000:1000:Jos\xe9:/home/jos:/bin/sh\n".to_vec();
        bytes.extend_from_slice(b"eve:x:1001:1001::/home/eve:/bin/sh\n");
        std::fs::write(dir.path().join("etc/passwd"), bytes).unwrap();
        let users = read_users(&Context::new(dir.path()));
        assert_eq!(users.len(), 3);
        assert_eq!(users.get(&1000).map(String::as_str), Some("jos"));
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC*") {
            let _ = parse_passwd(&text);
        }

        #[test]
        fn never_panics_on_passwd_like_lines(lines in proptest::collection::vec(
            "[+#-]?[a-z]{0,5}(:[x*]?(:[0-9]{0,12}(:[0-9]{0,3}(:.{0,5})?)?)?)?", 0..10)) {
            let _ = parse_passwd(&lines.join("\n"));
        }
    }
}
