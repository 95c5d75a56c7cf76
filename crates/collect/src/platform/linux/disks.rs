//! `hardware/disks` from `/sys/block`, with serial numbers from the udev database when sysfs
//! has none.

use muster_proto::data::Disk;
use muster_proto::{FunctionData, FunctionReport};

use crate::{CollectError, Collected, Context};

/// Kernel name prefixes of block devices that are not hardware: loop devices and RAM disks
/// (`loop`, `ram`, `zram`), and device-mapper and md software RAID volumes (`dm-`, `md`),
/// which are built on top of disks that are listed themselves, so listing them too would count
/// the same storage twice. `nbd` (network block devices) and `zd` (ZFS volumes) likewise.
const VIRTUAL_PREFIXES: &[&str] = &["loop", "ram", "zram", "dm-", "md", "nbd", "zd"];

/// Whether a `/sys/block` name is a software device rather than a disk.
pub fn is_virtual_name(name: &str) -> bool {
    VIRTUAL_PREFIXES.iter().any(|p| name.starts_with(p))
}

/// The serial number in a udev database entry (`/run/udev/data/b<major>:<minor>`): its
/// `ID_SERIAL_SHORT` property, else `ID_SERIAL` (which is vendor and model plus serial).
pub fn parse_udev_serial(text: &str) -> Option<String> {
    let mut serial = None;
    for line in text.lines() {
        let Some(property) = line.strip_prefix("E:") else {
            continue;
        };
        let value = |key: &str| {
            property
                .strip_prefix(key)
                .and_then(|rest| rest.strip_prefix('='))
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        if let Some(short) = value("ID_SERIAL_SHORT") {
            return Some(short.to_owned());
        }
        if serial.is_none() {
            serial = value("ID_SERIAL");
        }
    }
    serial.map(str::to_owned)
}

/// Whether `dev` is a `major:minor` pair, so it is safe to put into a path.
fn is_dev_number(dev: &str) -> bool {
    dev.split_once(':').is_some_and(|(major, minor)| {
        [major, minor]
            .iter()
            .all(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
    })
}

fn flag(context: &Context, path: &str) -> bool {
    context.attr(path).as_deref() == Some("1")
}

/// One disk from `/sys/block/<name>`; `None` for what is not a disk: an empty or unreadable
/// size (a card reader or CD drive without media), or a hidden device (the per-path nodes of
/// a multipath NVMe namespace, which is listed itself).
fn read_disk(context: &Context, name: &str) -> Option<Disk> {
    let base = format!("/sys/block/{name}");
    let sectors: u64 = context.attr(format!("{base}/size"))?.parse().ok()?;
    if sectors == 0 || flag(context, &format!("{base}/hidden")) {
        return None;
    }
    let serial = context
        .attr(format!("{base}/device/serial"))
        // virtio-blk puts it on the disk itself.
        .or_else(|| context.attr(format!("{base}/serial")))
        .or_else(|| {
            let dev = context
                .attr(format!("{base}/dev"))
                .filter(|d| is_dev_number(d))?;
            let text = context
                .read_optional(&format!("/run/udev/data/b{dev}"))
                .ok()??;
            parse_udev_serial(&text)
        });
    Some(Disk {
        name: name.to_owned(),
        // `size` counts 512-byte sectors whatever the device's own block size.
        size_bytes: sectors.saturating_mul(512),
        model: context.attr(format!("{base}/device/model")),
        vendor: context.attr(format!("{base}/device/vendor")),
        serial,
        rotational: flag(context, &format!("{base}/queue/rotational")),
        removable: flag(context, &format!("{base}/removable")),
    })
}

/// Whether `/sys/block/<name>` links into `/sys/devices/virtual`, where the kernel puts block
/// devices with no hardware behind them. Fixture trees copied without symlinks say nothing.
fn links_to_virtual(context: &Context, name: &str) -> bool {
    std::fs::read_link(context.path(&format!("/sys/block/{name}")))
        .is_ok_and(|target| target.components().any(|c| c.as_os_str() == "virtual"))
}

/// The whole disks under the context's `/sys/block`, sorted by name.
pub fn read_disks(context: &Context) -> Result<Vec<Disk>, CollectError> {
    let dir = context.path("/sys/block");
    let entries = std::fs::read_dir(&dir).map_err(|e| CollectError::io(&dir, e))?;
    let mut disks: Vec<Disk> = entries
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| !is_virtual_name(name) && !links_to_virtual(context, name))
        .filter_map(|name| read_disk(context, &name))
        .collect();
    disks.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(disks)
}

pub fn collect(context: &Context) -> Collected {
    let disks = read_disks(context)?;
    Ok(Some(FunctionReport::new(FunctionData::Disks(disks))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::path::Path;

    const UDEV_SATA: &str = "S:disk/by-id/ata-Samsung_SSD_860_EVO_500GB_S3Z1NB0K123456A\n\
        S:disk/by-path/pci-0000:00:17.0-ata-1\nW:7\nI:4102345\n\
        E:ID_ATA=1\nE:ID_TYPE=disk\nE:ID_BUS=ata\n\
        E:ID_MODEL=Samsung_SSD_860_EVO_500GB\n\
        E:ID_SERIAL=Samsung_SSD_860_EVO_500GB_S3Z1NB0K123456A\n\
        E:ID_SERIAL_SHORT=S3Z1NB0K123456A\nE:ID_WWN=0x5002538e40a1b2c3\n\
        G:systemd\nQ:systemd\nV:1\n";

    fn write(root: &Path, path: &str, text: &str) {
        let full = root.join(path.trim_start_matches('/'));
        std::fs::create_dir_all(full.parent().unwrap()).unwrap();
        std::fs::write(full, text).unwrap();
    }

    /// A block device with the usual attributes; `device` ones only where given.
    fn block(root: &Path, name: &str, size: &str, dev: &str, rotational: &str, removable: &str) {
        write(
            root,
            &format!("sys/block/{name}/size"),
            &format!("{size}\n"),
        );
        write(root, &format!("sys/block/{name}/dev"), &format!("{dev}\n"));
        write(
            root,
            &format!("sys/block/{name}/queue/rotational"),
            rotational,
        );
        write(root, &format!("sys/block/{name}/removable"), removable);
    }

    #[test]
    fn udev_serial_prefers_the_short_one() {
        assert_eq!(
            parse_udev_serial(UDEV_SATA).as_deref(),
            Some("S3Z1NB0K123456A")
        );
        assert_eq!(
            parse_udev_serial("E:ID_SERIAL=QEMU_HARDDISK_QM00001\nE:ID_SERIAL_SHORT=\n").as_deref(),
            Some("QEMU_HARDDISK_QM00001")
        );
        // Properties with a longer name that starts the same do not count.
        assert_eq!(
            parse_udev_serial("E:ID_SERIAL_FOO=x\nS:ID_SERIAL=y\n"),
            None
        );
        assert_eq!(parse_udev_serial(""), None);
    }

    #[test]
    fn names_of_software_devices() {
        for name in ["loop0", "ram15", "zram0", "dm-3", "md127", "nbd0", "zd16"] {
            assert!(is_virtual_name(name), "{name}");
        }
        for name in ["sda", "vda", "nvme0n1", "mmcblk0", "xvda", "sr0"] {
            assert!(!is_virtual_name(name), "{name}");
        }
    }

    #[test]
    fn reads_a_fixture_sys_tree() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        // SATA SSD: model and vendor padded by the kernel, serial only in udev.
        block(root, "sda", "976773168", "8:0", "0\n", "0\n");
        write(
            root,
            "sys/block/sda/device/model",
            "Samsung SSD 860 EVO 500GB       \n",
        );
        write(root, "sys/block/sda/device/vendor", "ATA     \n");
        write(root, "run/udev/data/b8:0", UDEV_SATA);
        // NVMe: serial on the controller.
        block(root, "nvme0n1", "2000409264", "259:0", "0\n", "0\n");
        write(
            root,
            "sys/block/nvme0n1/device/model",
            "WD_BLACK SN770 1TB\n",
        );
        write(
            root,
            "sys/block/nvme0n1/device/serial",
            "22134K801234        \n",
        );
        // A multipath path node of that namespace: hidden.
        block(root, "nvme0c0n1", "2000409264", "259:1", "0\n", "0\n");
        write(root, "sys/block/nvme0c0n1/hidden", "1\n");
        // A spinning USB disk with no serial anywhere.
        block(root, "sdb", "7814037168", "8:16", "1\n", "1\n");
        // Not disks: a loop device, a zero-size card reader, a device-mapper volume.
        block(root, "loop0", "131072", "7:0", "0\n", "0\n");
        block(root, "sdc", "0", "8:32", "1\n", "1\n");
        block(root, "dm-0", "104857600", "253:0", "0\n", "0\n");

        let disks = read_disks(&Context::new(root)).unwrap();
        assert_eq!(
            disks,
            [
                Disk {
                    name: "nvme0n1".into(),
                    size_bytes: 2_000_409_264 * 512,
                    model: Some("WD_BLACK SN770 1TB".into()),
                    vendor: None,
                    serial: Some("22134K801234".into()),
                    rotational: false,
                    removable: false,
                },
                Disk {
                    name: "sda".into(),
                    size_bytes: 976_773_168 * 512,
                    model: Some("Samsung SSD 860 EVO 500GB".into()),
                    vendor: Some("ATA".into()),
                    serial: Some("S3Z1NB0K123456A".into()),
                    rotational: false,
                    removable: false,
                },
                Disk {
                    name: "sdb".into(),
                    size_bytes: 7_814_037_168 * 512,
                    model: None,
                    vendor: None,
                    serial: None,
                    rotational: true,
                    removable: true,
                },
            ]
        );
    }

    #[test]
    fn symlinks_into_devices_virtual_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        write(root, "sys/devices/virtual/block/vbd0/size", "2048\n");
        write(
            root,
            "sys/devices/pci0000:00/virtio1/block/vda/size",
            "2048\n",
        );
        std::fs::create_dir_all(root.join("sys/block")).unwrap();
        std::os::unix::fs::symlink("../devices/virtual/block/vbd0", root.join("sys/block/vbd0"))
            .unwrap();
        std::os::unix::fs::symlink(
            "../devices/pci0000:00/virtio1/block/vda",
            root.join("sys/block/vda"),
        )
        .unwrap();
        let names: Vec<String> = read_disks(&Context::new(root))
            .unwrap()
            .into_iter()
            .map(|d| d.name)
            .collect();
        assert_eq!(names, ["vda"]);
    }

    #[test]
    fn a_missing_sys_block_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = read_disks(&Context::new(dir.path())).unwrap_err();
        assert!(err.to_string().contains("sys/block"), "{err}");
    }

    /// The oracle: on the live machine exactly the disks (and optical drives with media) that
    /// `lsblk` lists with a size show up, save zram, which lsblk calls a disk too.
    #[test]
    fn live_matches_lsblk_disks() {
        let output = std::process::Command::new("lsblk")
            .args(["-J", "-d", "-b", "-o", "NAME,SIZE,TYPE,RM,ROTA"])
            .output()
            .expect("lsblk (util-linux) runs");
        let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let mut expected: Vec<(String, u64, bool, bool)> = json["blockdevices"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|d| d["type"] == "disk" || d["type"] == "rom")
            .filter_map(|d| {
                let name = d["name"].as_str()?.to_owned();
                let size = d["size"].as_u64()?;
                (size > 0 && !is_virtual_name(&name)).then(|| {
                    let rm = d["rm"].as_bool().unwrap_or_default();
                    let rota = d["rota"].as_bool().unwrap_or_default();
                    (name, size, rm, rota)
                })
            })
            .collect();
        expected.sort();
        let report = collect(&Context::default()).unwrap().unwrap();
        let FunctionData::Disks(disks) = report.data else {
            panic!("wrong variant");
        };
        let actual: Vec<_> = disks
            .into_iter()
            .map(|d| (d.name, d.size_bytes, d.removable, d.rotational))
            .collect();
        assert_eq!(actual, expected);
    }

    proptest! {
        #[test]
        fn udev_parser_never_panics(text in "\\PC*") {
            let _ = parse_udev_serial(&text);
        }

        #[test]
        fn udev_parser_never_panics_on_udev_like_lines(lines in proptest::collection::vec(
            "(E|S|W):(ID_SERIAL|ID_SERIAL_SHORT|X)?=?[ a-zA-Z0-9_]{0,10}", 0..8)) {
            let _ = parse_udev_serial(&lines.join("\n"));
        }

        #[test]
        fn dev_number_check_never_panics(text in "\\PC{0,12}") {
            let _ = is_dev_number(&text);
        }
    }
}
