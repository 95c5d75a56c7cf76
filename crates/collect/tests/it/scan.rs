//! A whole scan of a fixture tree: every worker's report in the contract's exact shape.

use std::path::{Path, PathBuf};
use std::time::Duration;

use muster_collect::{Context, ScanOptions};
use muster_proto::{DaemonReport, Worker};
use serde_json::Value;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn write(root: &Path, path: &str, contents: &str) {
    let path = root.join(path);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, contents).unwrap();
}

/// A Debian 12 server: the committed hardware tree plus dpkg, an Alpine apk database, a
/// process, passwd and mountinfo.
fn fixture_root() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    let fixtures = fixtures();
    copy_tree(&fixtures.join("hardware-a/root-debian12-r630"), root.path());
    let dpkg = std::fs::read_to_string(fixtures.join("software/dpkg-status")).unwrap();
    write(root.path(), "var/lib/dpkg/status", &dpkg);
    write(
        root.path(),
        "proc/meminfo",
        "MemTotal:       65843200 kB\nMemFree:        60000000 kB\n\
         MemAvailable:   62000000 kB\nSwapTotal:       8388604 kB\nSwapFree:        8388604 kB\n",
    );
    write(
        root.path(),
        "proc/self/mountinfo",
        "27 1 8:2 / / rw,relatime - ext4 /dev/sda2 rw\n\
         28 27 0:21 / /proc rw,relatime - proc proc rw\n\
         29 27 8:1 / /boot/efi rw,relatime - vfat /dev/sda1 rw\n",
    );
    write(
        root.path(),
        "proc/4242/stat",
        "4242 (sshd: admin (priv)) S 1 4242 4242 0 -1 4194560 1044 0 0 0 12 7 0 0 20 0 1 0 \
         1500 16924672 2765 18446744073709551615 1 1 0 0 0 0 0 4096 81925 0 0 0 17 1 0 0 0 0 0\n",
    );
    write(root.path(), "proc/4242/cmdline", "sshd: admin [priv]\0");
    write(
        root.path(),
        "etc/passwd",
        "root:x:0:0:root:/root:/bin/bash\n",
    );
    for (path, value) in [
        ("sys/block/sda/size", "937703088"),
        ("sys/block/sda/removable", "0"),
        ("sys/block/sda/queue/rotational", "0"),
        ("sys/block/sda/device/model", "MZ7LH480HAHQ0D3 "),
        ("sys/block/sda/device/vendor", "ATA     "),
        ("sys/block/sda/dev", "8:0"),
        ("sys/block/loop0/size", "8"),
        ("sys/class/net/eno1/address", "24:6e:96:0a:1b:2c"),
        ("sys/class/net/eno1/mtu", "1500"),
        ("sys/class/net/eno1/operstate", "up"),
        ("sys/class/net/eno1/speed", "10000"),
    ] {
        write(root.path(), path, &format!("{value}\n"));
    }
    write(
        root.path(),
        "run/udev/data/b8:0",
        "E:ID_SERIAL_SHORT=S455NY0M123456\n",
    );
    root
}

/// The report as JSON with what differs between runs (times, ids, live-only sources) fixed.
fn normalized(report: &DaemonReport) -> Value {
    let mut value = serde_json::to_value(report).unwrap();
    value["datetime"] = "[datetime]".into();
    value["report_id"] = "[report_id]".into();
    for worker in value["worker_reports"].as_array_mut().unwrap() {
        worker["datetime"] = "[datetime]".into();
        for function in worker["function_reports"].as_array_mut().unwrap() {
            function["datetime"] = "[datetime]".into();
            match function["name"].as_str().unwrap() {
                // Addresses come from the kernel, not the tree; sizes from statvfs.
                "network" => {
                    for interface in function["data"].as_array_mut().unwrap() {
                        interface["addresses"] = "[live]".into();
                    }
                }
                "filesystems" => {
                    for fs in function["data"].as_array_mut().unwrap() {
                        for key in ["size_bytes", "used_bytes", "free_bytes", "inodes_total"] {
                            fs[key] = "[statvfs]".into();
                        }
                        fs["inodes_used"] = "[statvfs]".into();
                        fs["inodes_free"] = "[statvfs]".into();
                    }
                }
                // The process owner is the fixture file's owner, whoever runs the test.
                "processes" => {
                    for p in function["data"].as_array_mut().unwrap() {
                        p["uid"] = "[owner]".into();
                        p["user"] = "[owner]".into();
                    }
                }
                _ => {}
            }
        }
    }
    value
}

#[test]
fn scan_of_a_fixture_root_has_the_contract_shape() {
    let root = fixture_root();
    let options = ScanOptions {
        context: Context::new(root.path()),
        workers: vec![
            Worker::Services,
            Worker::Hardware,
            Worker::Processes,
            Worker::Software,
        ],
        telemetry_interval: Duration::ZERO,
        parallel: true,
    };
    let report = muster_collect::scan(&options);
    let names: Vec<Worker> = report.worker_reports.iter().map(|w| w.name).collect();
    assert_eq!(
        names,
        [
            Worker::Hardware,
            Worker::Software,
            Worker::Processes,
            Worker::Services
        ]
    );
    let Some(muster_proto::FunctionData::System(system)) =
        report.function("system").map(|f| &f.data)
    else {
        panic!("no system report");
    };
    assert_eq!(report.host.hostname, system[0].hostname);
    insta::assert_json_snapshot!(normalized(&report));
}

#[test]
fn telemetry_takes_two_samples_an_interval_apart() {
    let options = ScanOptions {
        workers: vec![Worker::Telemetry],
        telemetry_interval: Duration::from_millis(100),
        ..ScanOptions::default()
    };
    let started = std::time::Instant::now();
    let report = muster_collect::scan(&options);
    assert!(started.elapsed() >= Duration::from_millis(100));
    let value = serde_json::to_value(report.function("system_metrics").unwrap()).unwrap();
    let metrics = &value["data"][0];
    let interval = metrics["interval_s"]
        .as_f64()
        .expect("a second sample has an interval");
    assert!(interval >= 0.1, "{interval}");
    let cpu = metrics["cpu_usage"]
        .as_f64()
        .expect("cpu usage from two samples");
    assert!((0.0..=100.0).contains(&cpu), "{cpu}");
}

#[test]
fn a_root_with_nothing_in_it_still_yields_a_whole_report() {
    let root = tempfile::tempdir().unwrap();
    let options = ScanOptions {
        context: Context::new(root.path()),
        telemetry_interval: Duration::ZERO,
        ..ScanOptions::default()
    };
    let report = muster_collect::scan(&options);
    assert_eq!(report.worker_reports.len(), 5);
    let hardware = report.worker(Worker::Hardware).unwrap();
    let names: Vec<&str> = hardware.function_reports.iter().map(|f| f.name()).collect();
    assert_eq!(
        names,
        muster_collect::functions(Worker::Hardware)
            .iter()
            .map(|f| f.name)
            .collect::<Vec<_>>()
    );
    assert!(report.function("memory").unwrap().error.is_some());
    assert!(report.function("dmi").unwrap().unavailable.is_some());
    assert!(
        report.function("dpkg").is_none(),
        "absent package sources are left out"
    );
    assert!(report.function("systemd").unwrap().unavailable.is_some());
}
