//! The hardware worker against what Windows' own tools report.

use std::net::IpAddr;

use muster_proto::{FunctionData, Worker};

use super::{output, report};

/// `cmd /c dir C:\`'s last line: `N dir(s)  27,459,559,424 bytes free`.
fn dir_bytes_free(listing: &str) -> u64 {
    let line = listing
        .lines()
        .rev()
        .find(|l| l.contains("bytes free"))
        .unwrap_or_else(|| panic!("no free space in {listing}"));
    // "5 dir(s)  27,459,559,424 bytes free" (Windows), "5 directories  27,459,... bytes free"
    // (Wine): the number is the last word before "bytes free".
    let before = line.split("bytes free").next().unwrap();
    let number = before.split_whitespace().last().unwrap();
    number
        .chars()
        .filter(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .unwrap_or_else(|e| panic!("{line}: {e}"))
}

#[test]
fn the_system_drive_is_reported_with_the_free_space_dir_sees() {
    let report = report(Worker::Hardware, "filesystems");
    assert_eq!(report.error, None);
    let FunctionData::Filesystems(filesystems) = report.data else {
        panic!()
    };
    let c = filesystems
        .iter()
        .find(|f| f.mount_point == "C:")
        .unwrap_or_else(|| panic!("no C: in {filesystems:#?}"));
    let dir_free = dir_bytes_free(&output("cmd.exe", &["/c", "dir", r"C:\"]));
    // The disk is shared with whatever else runs; a few hundred MB may come and go between
    // the two readings.
    let slack = 512 << 20;
    assert!(
        c.free_bytes.abs_diff(dir_free) < slack,
        "collector {} vs dir {dir_free}",
        c.free_bytes
    );
    assert!(
        c.size_bytes > 0 && c.used_bytes + c.free_bytes <= c.size_bytes + slack,
        "{c:?}"
    );
    assert!(!c.fs_type.is_empty(), "{c:?}");
    assert!(!c.read_only);
}

/// `ipconfig /all`'s adapters: name, MAC (`AA-BB-...`), addresses.
fn ipconfig_adapters(text: &str) -> Vec<(String, Option<String>, Vec<IpAddr>)> {
    let mut adapters: Vec<(String, Option<String>, Vec<IpAddr>)> = Vec::new();
    for line in text.lines() {
        if let Some((_, name)) = line.split_once(" adapter ")
            && !line.starts_with(' ')
        {
            adapters.push((
                name.trim().trim_end_matches(':').to_owned(),
                None,
                Vec::new(),
            ));
            continue;
        }
        let Some(adapter) = adapters.last_mut() else {
            continue;
        };
        let Some((label, value)) = line.split_once(" : ") else {
            continue;
        };
        let value = value.trim();
        if label.trim_start().starts_with("Physical address") && !value.is_empty() {
            adapter.1 = Some(value.replace('-', ":").to_ascii_lowercase());
        } else if label.trim_start().starts_with("IPv") && label.contains("address") {
            // "fe80::1%4" carries a zone; "(Preferred)" may follow on Windows.
            let address = value.split(['%', '(']).next().unwrap_or(value).trim();
            if let Ok(address) = address.parse() {
                adapter.2.push(address);
            }
        }
    }
    adapters
}

#[test]
fn the_adapters_are_those_ipconfig_shows() {
    let report = report(Worker::Hardware, "network");
    assert_eq!(report.error, None);
    let FunctionData::Network(interfaces) = report.data else {
        panic!()
    };
    let expected = ipconfig_adapters(&output("ipconfig.exe", &["/all"]));
    assert!(!expected.is_empty(), "ipconfig shows no adapter");
    for (name, mac, addresses) in expected {
        let interface = interfaces
            .iter()
            .find(|i| i.name == name)
            .unwrap_or_else(|| panic!("no {name} in {interfaces:#?}"));
        assert_eq!(interface.mac, mac, "{name}");
        for address in addresses {
            assert!(
                interface.addresses.iter().any(|a| a.address == address),
                "{address} of {name} not in {interface:?}"
            );
        }
    }
    assert!(
        interfaces
            .iter()
            .flat_map(|i| &i.addresses)
            .any(|a| a.address.is_loopback() && a.prefix_len > 0),
        "{interfaces:#?}"
    );
}

#[test]
fn system_cpu_and_memory_describe_this_machine() {
    let report = report(Worker::Hardware, "system");
    assert_eq!(report.error, None);
    let FunctionData::System(system) = report.data else {
        panic!()
    };
    let system = &system[0];
    // The prefix is set to report Windows 10 (winecfg -v win10).
    assert!(
        system
            .os_name
            .as_deref()
            .is_some_and(|n| n.starts_with("Windows") || n.starts_with("Microsoft Windows")),
        "{system:?}"
    );
    assert!(
        system
            .os_version
            .as_deref()
            .is_some_and(|v| v.starts_with(&system.kernel)),
        "{system:?}"
    );
    assert_eq!(system.os_id.as_deref(), Some("windows"));
    assert_eq!(system.arch, "x86_64");
    assert!(
        system.boot_time.is_some() && system.machine_id.is_some(),
        "{system:?}"
    );
    // `hostname` prints the NetBIOS name (upper case); the report has the DNS host name.
    assert!(
        system
            .hostname
            .eq_ignore_ascii_case(output("hostname.exe", &[]).trim()),
        "{system:?}"
    );

    let report = report_cpu();
    let threads = std::thread::available_parallelism().unwrap().get() as u32;
    assert_eq!(report.logical_cpus, threads);
    assert!(report.model.is_some(), "{report:?}");

    let memory = super::report(Worker::Hardware, "memory");
    let FunctionData::Memory(memory) = memory.data else {
        panic!()
    };
    assert!(memory[0].total_bytes > 64 << 20, "{memory:?}");
}

fn report_cpu() -> muster_proto::data::Cpu {
    let report = report(Worker::Hardware, "cpu");
    assert_eq!(report.error, None);
    let FunctionData::Cpu(cpu) = report.data else {
        panic!()
    };
    cpu[0].clone()
}

#[test]
fn physical_drives_smbios_and_sessions_report_data_or_say_why_not() {
    // Wine emulates \\.\PhysicalDrive0 (a size, no model or serial); Windows has the real ones.
    let disks = report(Worker::Hardware, "disks");
    assert_eq!(
        (&disks.error, &disks.unavailable),
        (&None, &None),
        "{disks:?}"
    );
    let FunctionData::Disks(drives) = &disks.data else {
        panic!()
    };
    assert!(
        drives
            .iter()
            .any(|d| d.name == "PhysicalDrive0" && d.size_bytes > 0),
        "{drives:?}"
    );

    // Wine builds an SMBIOS table from the host's /sys/class/dmi/id (absent on this CI
    // machine, so its strings are empty) with a generated system UUID; Windows has the
    // firmware's. Either way the table parses and carries the UUID.
    let dmi = report(Worker::Hardware, "dmi");
    assert_eq!(dmi.error, None, "{dmi:?}");
    let FunctionData::Dmi(items) = &dmi.data else {
        panic!()
    };
    let uuid = items[0]
        .system_uuid
        .as_deref()
        .unwrap_or_else(|| panic!("{dmi:?}"));
    assert_eq!(uuid.len(), 36, "{uuid}");
    assert_eq!(uuid, uuid.to_ascii_lowercase());

    // Wine has no WTS sessions (an empty list); Windows lists the console user.
    let users = report(Worker::Hardware, "users");
    assert_eq!(users.error, None, "{users:?}");
    let FunctionData::Users(sessions) = users.data else {
        panic!()
    };
    assert!(sessions.iter().all(|s| !s.user.is_empty()), "{sessions:?}");
}
