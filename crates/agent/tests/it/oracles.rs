//! `muster-agent scan` on this machine agrees with the system's own tools.
//!
//! Each oracle runs the real binary and the real tool (dpkg-query, ip, findmnt, getconf,
//! hostname) and compares what both say. A tool that is absent makes its test say so and
//! pass: CI's Debian machine has all of them.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use serde_json::Value;

use crate::{function_data, scan_json};

/// The standard output of a system tool, or `None` (with a note) when it is not installed.
fn tool(program: &str, args: &[&str]) -> Option<String> {
    match Command::new(program).args(args).output() {
        Ok(out) if out.status.success() => Some(String::from_utf8(out.stdout).unwrap()),
        Ok(out) => panic!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        ),
        Err(e) => {
            eprintln!("skipping the {program} oracle: {program} is not available here ({e})");
            None
        }
    }
}

fn hardware() -> Value {
    scan_json(&["--only", "hardware"])
}

fn str_of(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

#[test]
fn dpkg_packages_equal_dpkg_query() {
    if !std::path::Path::new("/var/lib/dpkg/status").exists() {
        eprintln!("skipping: this machine has no dpkg database");
        return;
    }
    let format = "${Package}\t${Version}\t${Architecture}\t${db:Status-Status}\n";
    let Some(listing) = tool("dpkg-query", &["-W", "-f", format]) else {
        return;
    };
    let expected: BTreeSet<(String, String, String)> = listing
        .lines()
        .filter_map(|line| {
            let f: Vec<&str> = line.split('\t').collect();
            (f.get(3) == Some(&"installed")).then(|| (f[0].into(), f[1].into(), f[2].into()))
        })
        .collect();
    let report = scan_json(&["--only", "software"]);
    let ours: BTreeSet<(String, String, String)> = function_data(&report, "dpkg")
        .iter()
        .map(|p| {
            (
                str_of(&p["name"]),
                str_of(&p["version"]),
                str_of(&p["architecture"]),
            )
        })
        .collect();
    assert!(expected.len() > 10, "dpkg-query lists installed packages");
    assert_eq!(
        ours.len(),
        function_data(&report, "dpkg").len(),
        "no package listed twice"
    );
    let missing: Vec<_> = expected.difference(&ours).collect();
    let extra: Vec<_> = ours.difference(&expected).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "missing {missing:?}\nextra {extra:?}"
    );
}

#[test]
fn interfaces_and_addresses_equal_ip_addr() {
    let Some(listing) = tool("ip", &["-j", "addr"]) else {
        return;
    };
    let listing: Value = serde_json::from_str(&listing).unwrap();
    let expected: BTreeMap<String, BTreeSet<String>> = listing
        .as_array()
        .unwrap()
        .iter()
        .map(|link| {
            let addresses = link["addr_info"]
                .as_array()
                .map(|a| a.as_slice())
                .unwrap_or_default()
                .iter()
                .map(|a| format!("{}/{}", str_of(&a["local"]), a["prefixlen"]))
                .collect();
            (str_of(&link["ifname"]), addresses)
        })
        .collect();
    let report = hardware();
    let ours: BTreeMap<String, BTreeSet<String>> = function_data(&report, "network")
        .iter()
        .map(|n| {
            let addresses = n["addresses"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| format!("{}/{}", str_of(&a["address"]), a["prefix_len"]))
                .collect();
            (str_of(&n["name"]), addresses)
        })
        .collect();
    assert_eq!(ours, expected);
}

#[test]
fn memory_total_equals_proc_meminfo() {
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    let report = hardware();
    assert_eq!(
        function_data(&report, "memory")[0]["total_bytes"],
        kib * 1024
    );
}

#[test]
fn real_filesystems_equal_findmnt() {
    // --nofsroot: a bind mount's source is its device, as in mountinfo (`/dev/sda1`, not
    // `/dev/sda1[/dir]`).
    let args = ["--real", "--nofsroot", "-J", "-o", "TARGET,SOURCE,FSTYPE"];
    let Some(listing) = tool("findmnt", &args) else {
        return;
    };
    fn flatten(node: &Value, out: &mut BTreeSet<(String, String, String)>) {
        for fs in node.as_array().map(|a| a.as_slice()).unwrap_or_default() {
            out.insert((
                str_of(&fs["target"]),
                str_of(&fs["source"]),
                str_of(&fs["fstype"]),
            ));
            flatten(&fs["children"], out);
        }
    }
    let mut expected = BTreeSet::new();
    flatten(
        &serde_json::from_str::<Value>(&listing).unwrap()["filesystems"],
        &mut expected,
    );
    // util-linux after 2.38 (Debian 12's findmnt) added these to its pseudo-filesystem list;
    // Muster follows the newer list.
    let newer_pseudo = ["pidfs", "fuse.portal", "fuse.kio-fuse"];
    expected.retain(|(_, _, fstype)| !newer_pseudo.contains(&fstype.as_str()));
    let report = hardware();
    let items = function_data(&report, "filesystems");
    let ours: BTreeSet<(String, String, String)> = items
        .iter()
        .map(|f| {
            (
                str_of(&f["mount_point"]),
                str_of(&f["device"]),
                str_of(&f["fs_type"]),
            )
        })
        .collect();
    assert_eq!(ours, expected);
    let root = items
        .iter()
        .find(|f| f["mount_point"] == "/")
        .expect("/ is a real filesystem");
    assert!(root["size_bytes"].as_u64().unwrap() > 0);
    assert!(root["used_bytes"].as_u64().unwrap() <= root["size_bytes"].as_u64().unwrap());
}

#[test]
fn logical_cpus_equal_getconf() {
    let Some(online) = tool("getconf", &["_NPROCESSORS_ONLN"]) else {
        return;
    };
    let report = hardware();
    let cpu = &function_data(&report, "cpu")[0];
    assert_eq!(cpu["logical_cpus"], online.trim().parse::<u64>().unwrap());
    assert!(cpu["physical_cores"].as_u64().unwrap() >= 1);
    assert!(cpu["physical_cores"].as_u64().unwrap() <= cpu["logical_cpus"].as_u64().unwrap());
}

#[test]
fn system_identity_equals_hostname_and_os_release() {
    let Some(hostname) = tool("hostname", &[]) else {
        return;
    };
    let report = hardware();
    let system = &function_data(&report, "system")[0];
    assert_eq!(system["hostname"], hostname.trim());
    assert_eq!(report["host"]["hostname"], hostname.trim());
    let uname = tool("uname", &["-r"]).unwrap();
    assert_eq!(system["kernel"], uname.trim());
    let machine = tool("uname", &["-m"]).unwrap();
    assert_eq!(system["arch"], machine.trim());
    let os_release = std::fs::read_to_string("/etc/os-release").unwrap();
    let id = os_release
        .lines()
        .find_map(|l| l.strip_prefix("ID="))
        .unwrap()
        .trim_matches('"');
    assert_eq!(system["os_id"], id);
}

#[test]
fn processes_include_this_test_with_its_parent() {
    let report = scan_json(&["--only", "processes"]);
    let me = std::process::id();
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = &stat[stat.rfind(')').unwrap() + 2..];
    let ppid: u64 = after_name.split(' ').nth(1).unwrap().parse().unwrap();
    let process = function_data(&report, "processes")
        .iter()
        .find(|p| p["pid"] == me)
        .expect("the test process is listed");
    assert_eq!(process["ppid"], ppid);
    let exe = std::env::current_exe().unwrap();
    let argv0 = std::env::args().next().unwrap();
    assert_eq!(process["cmdline"][0], argv0.as_str(), "{exe:?}");
}

#[test]
fn virtualization_and_container_equal_systemd_detect_virt() {
    // systemd-detect-virt prints `none` and exits 1 when there is nothing to detect.
    let detect = |flag: &str| match Command::new("systemd-detect-virt").arg(flag).output() {
        Ok(out) => Some(String::from_utf8(out.stdout).unwrap().trim().to_owned()),
        Err(e) => {
            eprintln!("skipping: systemd-detect-virt is not available here ({e})");
            None
        }
    };
    let (Some(vm), Some(container)) = (detect("--vm"), detect("--container")) else {
        return;
    };
    let report = hardware();
    let system = &function_data(&report, "system")[0];
    let ours = |field: &str| system[field].as_str().unwrap_or("none").to_owned();
    assert_eq!(ours("virtualization"), vm);
    assert_eq!(ours("container"), container);
}
