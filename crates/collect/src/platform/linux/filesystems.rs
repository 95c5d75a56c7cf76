//! `hardware/filesystems` from `/proc/self/mountinfo`, sized with `statvfs`.
//!
//! Which mounts count as filesystems follows `findmnt --real`: every mountinfo line whose type
//! is not on util-linux's pseudo-filesystem list, duplicates and over-mounted entries included,
//! in mountinfo order.

use std::borrow::Cow;

use muster_proto::data::Filesystem;
use muster_proto::{FunctionData, FunctionReport};

use crate::{Collected, Context};

/// One line of `/proc/<pid>/mountinfo` (see proc(5)), octal escapes decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountInfo {
    pub mount_id: u32,
    pub parent_id: u32,
    pub major: u32,
    pub minor: u32,
    /// The directory of the filesystem that forms this mount's root (not `/` for bind mounts
    /// and btrfs subvolumes).
    pub root: String,
    pub mount_point: String,
    /// Per-mount options, e.g. `rw,relatime`.
    pub mount_options: String,
    /// Propagation fields such as `shared:1` or `master:2`.
    pub optional_fields: Vec<String>,
    pub fs_type: String,
    /// The mount source (a device, `server:/export`, or a name such as `tmpfs`); may be empty.
    pub source: String,
    /// Per-superblock options.
    pub super_options: String,
}

impl MountInfo {
    /// Whether writes through this mount fail: the mount or its superblock is read-only.
    pub fn read_only(&self) -> bool {
        let has_ro = |options: &str| options.split(',').any(|o| o == "ro");
        has_ro(&self.mount_options) || has_ro(&self.super_options)
    }
}

/// The filesystem types util-linux's libmount calls pseudo filesystems (`pseudofs[]` in
/// `libmount/src/utils.c`), which `findmnt --real` leaves out. Taken from util-linux master
/// (2.42); util-linux 2.38 (Debian 12) lacks `fuse.portal` and `pidfs` (added in 2.41) and
/// `fuse.kio-fuse` (2.42), so its `findmnt --real` still lists those.
///
/// Kept sorted: [`is_pseudo_fs`] binary-searches it.
pub const PSEUDO_FS: &[&str] = &[
    "anon_inodefs",
    "apparmorfs",
    "autofs",
    "bdev",
    "binder",
    "binfmt_misc",
    "bpf",
    "cgroup",
    "cgroup2",
    "configfs",
    "cpuset",
    "debugfs",
    "devfs",
    "devpts",
    "devtmpfs",
    "dlmfs",
    "dmabuf",
    "drm",
    "efivarfs",
    "fuse",
    "fuse.archivemount",
    "fuse.avfsd",
    "fuse.dumpfs",
    "fuse.encfs",
    "fuse.gvfs-fuse-daemon",
    "fuse.gvfsd-fuse",
    "fuse.kio-fuse",
    "fuse.lxcfs",
    "fuse.portal",
    "fuse.rofiles-fuse",
    "fuse.vmware-vmblock",
    "fuse.xwmfs",
    "fusectl",
    "hugetlbfs",
    "ipathfs",
    "mqueue",
    "nfsd",
    "none",
    "nsfs",
    "overlay",
    "pidfs",
    "pipefs",
    "proc",
    "pstore",
    "ramfs",
    "resctrl",
    "rootfs",
    "rpc_pipefs",
    "securityfs",
    "selinuxfs",
    "smackfs",
    "sockfs",
    "spufs",
    "sysfs",
    "tmpfs",
    "tracefs",
    "vboxsf",
    "virtiofs",
];

/// Whether `fs_type` is a pseudo filesystem in libmount's sense (exact, case-sensitive match).
pub fn is_pseudo_fs(fs_type: &str) -> bool {
    PSEUDO_FS.binary_search(&fs_type).is_ok()
}

/// Parses `/proc/self/mountinfo`. Lines that do not have the mountinfo shape are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountInfo> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

fn parse_mountinfo_line(line: &str) -> Option<MountInfo> {
    // Fields are separated by single spaces; the kernel escapes spaces inside them, so an
    // empty field (an empty mount source) shows up as two spaces in a row.
    let mut fields = line.split(' ');
    let mount_id = fields.next()?.parse().ok()?;
    let parent_id = fields.next()?.parse().ok()?;
    let (major, minor) = fields.next()?.split_once(':')?;
    let (major, minor) = (major.parse().ok()?, minor.parse().ok()?);
    let root = unescape(fields.next()?).into_owned();
    let mount_point = unescape(fields.next()?).into_owned();
    let mount_options = fields.next()?.to_owned();
    let mut optional_fields = Vec::new();
    loop {
        match fields.next()? {
            "-" => break,
            "" => {}
            field => optional_fields.push(field.to_owned()),
        }
    }
    let fs_type = unescape(fields.next()?).into_owned();
    let source = unescape(fields.next()?).into_owned();
    let super_options = fields.next().unwrap_or_default().to_owned();
    Some(MountInfo {
        mount_id,
        parent_id,
        major,
        minor,
        root,
        mount_point,
        mount_options,
        optional_fields,
        fs_type,
        source,
        super_options,
    })
}

/// Decodes the kernel's `\ooo` octal escapes (space, tab, newline, backslash, `#`); anything
/// else, a lone backslash included, is kept as written. Bytes that do not form UTF-8 are
/// replaced, as paths are reported as text.
pub fn unescape(field: &str) -> Cow<'_, str> {
    if !field.contains('\\') {
        return Cow::Borrowed(field);
    }
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = match bytes.get(i + 1..i + 4) {
            Some(&[d1 @ b'0'..=b'3', d2 @ b'0'..=b'7', d3 @ b'0'..=b'7']) if b == b'\\' => {
                Some(((d1 - b'0') << 6) | ((d2 - b'0') << 3) | (d3 - b'0'))
            }
            _ => None,
        };
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 4;
            }
            None => {
                out.push(b);
                i += 1;
            }
        }
    }
    Cow::Owned(String::from_utf8_lossy(&out).into_owned())
}

/// Space and inode counts of one mounted filesystem.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Usage {
    size: u64,
    used: u64,
    free: u64,
    inodes_total: u64,
    inodes_free: u64,
}

/// `statvfs` of a mount point; zeros when it cannot be had (stale NFS handle, no permission,
/// a fixture tree without the directory). An over-mounted entry reports the mount on top, as
/// the path resolves to it.
// The counts are u64 on 64-bit targets but u32 on some 32-bit ones; `u64::from` widens both.
#[allow(clippy::useless_conversion)]
fn usage(context: &Context, mount_point: &str) -> Usage {
    let path = context.path(mount_point);
    if !context.is_live() && !path.exists() {
        return Usage::default();
    }
    let Ok(stat) = nix::sys::statvfs::statvfs(&path) else {
        return Usage::default();
    };
    let (frsize, blocks, bfree, bavail) = (
        u64::from(stat.fragment_size()),
        u64::from(stat.blocks()),
        u64::from(stat.blocks_free()),
        u64::from(stat.blocks_available()),
    );
    Usage {
        size: blocks.saturating_mul(frsize),
        used: blocks.saturating_sub(bfree).saturating_mul(frsize),
        free: bavail.saturating_mul(frsize),
        inodes_total: u64::from(stat.files()),
        inodes_free: u64::from(stat.files_free()),
    }
}

/// The real (non-pseudo) filesystems of a parsed mountinfo, sized through `context`.
pub fn filesystems(context: &Context, mounts: Vec<MountInfo>) -> Vec<Filesystem> {
    mounts
        .into_iter()
        .filter(|m| !is_pseudo_fs(&m.fs_type))
        .map(|m| {
            let usage = usage(context, &m.mount_point);
            Filesystem {
                read_only: m.read_only(),
                mount_point: m.mount_point,
                device: m.source,
                fs_type: m.fs_type,
                size_bytes: usage.size,
                used_bytes: usage.used,
                free_bytes: usage.free,
                inodes_total: usage.inodes_total,
                inodes_used: usage.inodes_total.saturating_sub(usage.inodes_free),
                inodes_free: usage.inodes_free,
            }
        })
        .collect()
}

pub fn collect(context: &Context) -> Collected {
    let text = context.read("/proc/self/mountinfo")?;
    let list = filesystems(context, parse_mountinfo(&text));
    Ok(Some(FunctionReport::new(FunctionData::Filesystems(list))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const UBUNTU: &str = include_str!("../../../tests/fixtures/hardware-b/ubuntu-22.04.mountinfo");
    const CONTAINER: &str =
        include_str!("../../../tests/fixtures/hardware-b/docker-container.mountinfo");
    const RHEL: &str = include_str!("../../../tests/fixtures/hardware-b/rhel-9-lvm.mountinfo");

    fn real(text: &str) -> Vec<(String, String, String)> {
        parse_mountinfo(text)
            .into_iter()
            .filter(|m| !is_pseudo_fs(&m.fs_type))
            .map(|m| (m.mount_point, m.source, m.fs_type))
            .collect()
    }

    fn triple(target: &str, source: &str, fs_type: &str) -> (String, String, String) {
        (target.into(), source.into(), fs_type.into())
    }

    #[test]
    fn parses_every_field_of_a_line() {
        let line = "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 - ext3 /dev/root rw,errors=continue";
        let mounts = parse_mountinfo(line);
        assert_eq!(
            mounts,
            [MountInfo {
                mount_id: 36,
                parent_id: 35,
                major: 98,
                minor: 0,
                root: "/mnt1".into(),
                mount_point: "/mnt2".into(),
                mount_options: "rw,noatime".into(),
                optional_fields: vec!["master:1".into()],
                fs_type: "ext3".into(),
                source: "/dev/root".into(),
                super_options: "rw,errors=continue".into(),
            }]
        );
    }

    #[test]
    fn decodes_octal_escapes() {
        let line = r"80 29 8:17 / /mnt/my\040disk rw,relatime shared:40 - ext4 /dev/sdb1 rw";
        let mounts = parse_mountinfo(line);
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].mount_point, "/mnt/my disk");
        assert_eq!(unescape(r"a\011b\012c\134d\040e"), "a\tb\nc\\d e");
        assert_eq!(unescape(r"\043comment"), "#comment");
        // Not escapes: a lone backslash, too few digits, a value above 0o377.
        assert_eq!(unescape(r"a\b"), r"a\b");
        assert_eq!(unescape(r"end\04"), r"end\04");
        assert_eq!(unescape(r"\400"), r"\400");
    }

    #[test]
    fn reads_several_optional_fields_and_none() {
        let text = "25 1 8:2 / / rw,relatime shared:1 master:2 propagate_from:3 - ext4 /dev/sda2 rw\n\
            26 25 8:1 / /boot rw - vfat /dev/sda1 rw,fmask=0077\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(
            mounts[0].optional_fields,
            ["shared:1", "master:2", "propagate_from:3"]
        );
        assert_eq!(mounts[0].fs_type, "ext4");
        assert!(mounts[1].optional_fields.is_empty());
        assert_eq!(mounts[1].source, "/dev/sda1");
        assert_eq!(mounts[1].super_options, "rw,fmask=0077");
    }

    #[test]
    fn keeps_an_empty_source() {
        let mounts = parse_mountinfo("40 30 0:50 / /run/x rw - fuse.sshfs  rw,user_id=0");
        assert_eq!(mounts[0].source, "");
        assert_eq!(mounts[0].super_options, "rw,user_id=0");
    }

    #[test]
    fn skips_malformed_lines() {
        let text =
            "garbage\n\n1 2 3:4 / /x rw ext4 /dev/sda rw\n27 1 254:0 / / rw - ext4 /dev/vda rw\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].mount_point, "/");
    }

    #[test]
    fn read_only_comes_from_mount_or_superblock_options() {
        let mounts = parse_mountinfo(
            "1 0 8:1 / /a ro,relatime - ext4 /dev/sda1 rw\n\
             2 0 8:2 / /b rw,relatime - ext4 /dev/sda2 ro\n\
             3 0 8:3 / /c rw,errors=remount-ro - ext4 /dev/sda3 rw,errors=remount-ro\n",
        );
        let ro: Vec<bool> = mounts.iter().map(MountInfo::read_only).collect();
        assert_eq!(ro, [true, true, false]);
    }

    #[test]
    fn pseudo_list_is_sorted_for_binary_search() {
        assert!(PSEUDO_FS.windows(2).all(|w| w[0] < w[1]));
        assert!(is_pseudo_fs("tmpfs") && is_pseudo_fs("overlay") && is_pseudo_fs("fuse.lxcfs"));
        assert!(!is_pseudo_fs("ext4") && !is_pseudo_fs("fuse.sshfs") && !is_pseudo_fs("nfs4"));
    }

    #[test]
    fn ubuntu_desktop_keeps_disks_snaps_and_user_fuse() {
        assert_eq!(
            real(UBUNTU),
            [
                triple("/", "/dev/nvme0n1p2", "ext4"),
                triple("/snap/core22/1380", "/dev/loop0", "squashfs"),
                triple("/snap/firefox/4173", "/dev/loop1", "squashfs"),
                triple("/boot/efi", "/dev/nvme0n1p1", "vfat"),
                triple("/media/alice/USB STICK", "/dev/sda1", "exfat"),
                triple("/home/alice/remote", "alice@nas:/srv", "fuse.sshfs"),
                triple("/mnt/nas", "nas.lan:/export/home", "nfs4"),
            ]
        );
    }

    #[test]
    fn bind_mounts_are_listed_with_their_device() {
        let mounts = parse_mountinfo(RHEL);
        let bind = mounts
            .iter()
            .find(|m| m.mount_point == "/srv/www")
            .expect("bind mount in fixture");
        assert_eq!(bind.root, "/var/www");
        assert_eq!(bind.source, "/dev/mapper/rhel-root");
        assert_eq!(
            real(RHEL),
            [
                triple("/", "/dev/mapper/rhel-root", "xfs"),
                triple("/boot", "/dev/sda1", "xfs"),
                triple("/home", "/dev/mapper/rhel-home", "xfs"),
                triple("/srv/www", "/dev/mapper/rhel-root", "xfs"),
                triple("/data", "//fileserver/share", "cifs"),
                triple("/data", "/dev/sdb1", "ext4"),
            ]
        );
    }

    #[test]
    fn container_overlay_root_leaves_only_bind_mounted_files() {
        let mounts = parse_mountinfo(CONTAINER);
        assert_eq!(mounts[0].fs_type, "overlay");
        assert_eq!(mounts[0].mount_point, "/");
        assert_eq!(
            real(CONTAINER),
            [
                triple("/etc/resolv.conf", "/dev/sda1", "ext4"),
                triple("/etc/hostname", "/dev/sda1", "ext4"),
                triple("/etc/hosts", "/dev/sda1", "ext4"),
            ]
        );
    }

    #[test]
    fn collects_from_a_fixture_root_with_zero_sizes_for_missing_paths() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("proc/self")).unwrap();
        std::fs::create_dir_all(root.path().join("data")).unwrap();
        std::fs::write(
            root.path().join("proc/self/mountinfo"),
            "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n\
             2 1 0:5 / /proc rw - proc proc rw\n\
             3 1 8:17 / /data ro - xfs /dev/sdb1 ro\n\
             4 1 8:33 / /gone rw - xfs /dev/sdc1 rw\n",
        )
        .unwrap();
        let report = collect(&Context::new(root.path())).unwrap().unwrap();
        let FunctionData::Filesystems(list) = report.data else {
            panic!("wrong variant: {:?}", report.data);
        };
        let summary: Vec<_> = list
            .iter()
            .map(|f| (f.mount_point.as_str(), f.device.as_str(), f.read_only))
            .collect();
        assert_eq!(
            summary,
            [
                ("/", "/dev/sda1", false),
                ("/data", "/dev/sdb1", true),
                ("/gone", "/dev/sdc1", false)
            ]
        );
        // Existing directories are measured (the tempdir's own filesystem), missing ones not.
        assert!(list[1].size_bytes > 0 && list[1].inodes_total >= list[1].inodes_used);
        assert_eq!((list[2].size_bytes, list[2].inodes_total), (0, 0));
    }

    /// Flattens findmnt's JSON tree into (target, source, fstype).
    fn flatten(node: &serde_json::Value, out: &mut Vec<(String, String, String)>) {
        let text = |key: &str| node[key].as_str().unwrap_or_default().to_owned();
        if node.get("target").is_some() {
            out.push((text("target"), text("source"), text("fstype")));
        }
        for child in node["children"].as_array().into_iter().flatten() {
            flatten(child, out);
        }
    }

    /// The oracle: the live filesystems must be exactly what `findmnt --real` lists, as a
    /// multiset. `--nofsroot` because findmnt writes a bind mount's source as
    /// `/dev/sda1[/dir]`, while Muster reports the device alone.
    #[test]
    fn live_matches_findmnt_real() {
        let output = std::process::Command::new("findmnt")
            .args(["--real", "--nofsroot", "-J", "-o", "TARGET,SOURCE,FSTYPE"])
            .output()
            .expect("findmnt (util-linux) runs");
        let mut expected = Vec::new();
        // findmnt prints nothing and exits 1 when no mount matches.
        if !output.stdout.is_empty() {
            let json: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
            for fs in json["filesystems"].as_array().unwrap() {
                flatten(fs, &mut expected);
            }
        }
        // Older util-linux does not know these as pseudo filesystems yet.
        expected
            .retain(|(_, _, t)| !matches!(t.as_str(), "fuse.portal" | "fuse.kio-fuse" | "pidfs"));
        expected.sort();

        let report = collect(&Context::default()).unwrap().unwrap();
        let FunctionData::Filesystems(list) = report.data else {
            panic!("wrong variant");
        };
        let mut actual: Vec<_> = list
            .iter()
            .map(|f| (f.mount_point.clone(), f.device.clone(), f.fs_type.clone()))
            .collect();
        actual.sort();
        assert_eq!(actual, expected);
        assert!(
            !actual.is_empty(),
            "a live system has a real root filesystem"
        );
        let root = list.iter().find(|f| f.mount_point == "/").unwrap();
        assert!(root.size_bytes > 0 && root.used_bytes <= root.size_bytes);
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC*") {
            let _ = parse_mountinfo(&text);
        }

        #[test]
        fn never_panics_on_mountinfo_like_lines(lines in proptest::collection::vec(
            "[0-9]{1,3} [0-9]{1,3} [0-9]{1,3}:[0-9]{1,3} (/|\\\\[0-7]{0,3}|[a-z ]){0,6} \
             [/a-z\\\\0-7]{0,8} (rw|ro)( shared:[0-9])?( - )?[a-z.]{0,5} ?[/a-z]{0,6} ?[a-z,=]{0,6}",
            0..8)) {
            let _ = parse_mountinfo(&lines.join("\n"));
        }

        #[test]
        fn unescape_never_panics(text in "[\\\\0-9a-z\u{e9}]{0,20}") {
            let _ = unescape(&text);
        }
    }
}
