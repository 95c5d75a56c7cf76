//! `hardware/dmi` from the kernel's copy of the SMBIOS table in `/sys/class/dmi/id`.

use muster_proto::data::Dmi;
use muster_proto::{FunctionData, FunctionReport};

use crate::{Collected, Context};

const DMI_DIR: &str = "/sys/class/dmi/id";

/// Whether a DMI string is a firmware placeholder rather than a value: what vendors leave in
/// the fields their OEMs were meant to fill in, and serials or UUIDs of all zeros or all `F`s.
pub fn is_placeholder(value: &str) -> bool {
    const PLACEHOLDERS: [&str; 24] = [
        "to be filled by o.e.m.",
        "to be filled by o.e.m",
        "default string",
        "not specified",
        "not applicable",
        "not available",
        "none",
        "n/a",
        "na",
        "unknown",
        "undefined",
        "invalid",
        "oem",
        "o.e.m.",
        "system manufacturer",
        "system product name",
        "system version",
        "system serial number",
        "base board serial number",
        "chassis serial number",
        "0123456789",
        "1234567890",
        "123456789",
        // The UUID many AMI firmwares ship with, shared by every board of a model.
        "03000200-0400-0500-0006-000700080009",
    ];
    let value = value.trim();
    if value.is_empty() || PLACEHOLDERS.iter().any(|p| value.eq_ignore_ascii_case(p)) {
        return true;
    }
    let mut chars = value.chars().filter(|c| *c != '-' && *c != ' ');
    let Some(first) = chars.next() else {
        return true;
    };
    // "0000...", "FFFF-FFFF-...", "xxxxxxxx", "........".
    matches!(first, '0' | 'f' | 'F' | 'x' | 'X' | '.')
        && chars.all(|c| c.eq_ignore_ascii_case(&first))
}

/// A DMI string, or `None` when it is a placeholder.
pub fn clean(value: Option<String>) -> Option<String> {
    value.filter(|v| !is_placeholder(v))
}

/// The SMBIOS chassis type (System Enclosure, type 3) named as the specification does.
pub fn chassis_type_name(code: &str) -> Option<&'static str> {
    let code: u8 = code.trim().parse().ok()?;
    // Bit 7 is the chassis-lock flag, not part of the type.
    Some(match code & 0x7f {
        1 => "other",
        2 => "unknown",
        3 => "desktop",
        4 => "low profile desktop",
        5 => "pizza box",
        6 => "mini tower",
        7 => "tower",
        8 => "portable",
        9 => "laptop",
        10 => "notebook",
        11 => "hand held",
        12 => "docking station",
        13 => "all in one",
        14 => "sub notebook",
        15 => "space-saving",
        16 => "lunch box",
        17 => "main server chassis",
        18 => "expansion chassis",
        19 => "sub chassis",
        20 => "bus expansion chassis",
        21 => "peripheral chassis",
        22 => "raid chassis",
        23 => "rack mount chassis",
        24 => "sealed-case pc",
        25 => "multi-system chassis",
        26 => "compact pci",
        27 => "advanced tca",
        28 => "blade",
        29 => "blade enclosure",
        30 => "tablet",
        31 => "convertible",
        32 => "detachable",
        33 => "iot gateway",
        34 => "embedded pc",
        35 => "mini pc",
        36 => "stick pc",
        _ => return None,
    })
}

/// One [`Dmi`], or an `unavailable` report on machines without a DMI table.
pub fn collect(context: &Context) -> Collected {
    if !context.exists(DMI_DIR) {
        return Ok(Some(FunctionReport::unavailable(
            "dmi",
            "no DMI/SMBIOS table: /sys/class/dmi/id does not exist",
        )));
    }
    // Serials and the UUID are root-only; `attr` gives `None` for what cannot be read.
    let attr = |name: &str| clean(context.attr(format!("{DMI_DIR}/{name}")));
    let dmi = Dmi {
        system_vendor: attr("sys_vendor"),
        system_product: attr("product_name"),
        system_version: attr("product_version"),
        system_serial: attr("product_serial"),
        system_uuid: attr("product_uuid"),
        bios_vendor: attr("bios_vendor"),
        bios_version: attr("bios_version"),
        bios_date: attr("bios_date"),
        board_vendor: attr("board_vendor"),
        board_name: attr("board_name"),
        board_serial: attr("board_serial"),
        chassis_type: context
            .attr(format!("{DMI_DIR}/chassis_type"))
            .as_deref()
            .and_then(chassis_type_name)
            .map(str::to_owned),
        chassis_vendor: attr("chassis_vendor"),
    };
    Ok(Some(FunctionReport::new(FunctionData::Dmi(vec![dmi]))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/hardware-a");

    #[test]
    fn recognises_placeholders() {
        for placeholder in [
            "To be filled by O.E.M.",
            "To Be Filled By O.E.M.",
            "Default string",
            "Not Specified",
            "None",
            "System Serial Number",
            "System Product Name",
            "0123456789",
            "00000000-0000-0000-0000-000000000000",
            "FFFFFFFF-FFFF-FFFF-FFFF-FFFFFFFFFFFF",
            "ffffffff-ffff-ffff-ffff-ffffffffffff",
            "03000200-0400-0500-0006-000700080009",
            "0",
            "xxxxxxxxxx",
            "........",
            "   ",
            "",
        ] {
            assert!(is_placeholder(placeholder), "{placeholder:?}");
        }
        for real in [
            "Dell Inc.",
            "PowerEdge R640",
            "4C4C4544-0042-3510-8052-B4C04F4E4D32",
            "CN7475186B0012",
            "F5",
            "FX-8350",
            "0x10",
            "1.19.0",
            "QEMU",
        ] {
            assert!(!is_placeholder(real), "{real:?}");
        }
    }

    #[test]
    fn names_chassis_types() {
        assert_eq!(chassis_type_name("3\n"), Some("desktop"));
        assert_eq!(chassis_type_name("9"), Some("laptop"));
        assert_eq!(chassis_type_name("10"), Some("notebook"));
        assert_eq!(chassis_type_name("17"), Some("main server chassis"));
        assert_eq!(chassis_type_name("23"), Some("rack mount chassis"));
        assert_eq!(chassis_type_name("1"), Some("other"));
        assert_eq!(chassis_type_name("2"), Some("unknown"));
        assert_eq!(chassis_type_name("35"), Some("mini pc"));
        assert_eq!(chassis_type_name("151"), Some("rack mount chassis"));
        assert_eq!(chassis_type_name("0"), None);
        assert_eq!(chassis_type_name("99"), None);
        assert_eq!(chassis_type_name("rack"), None);
    }

    #[test]
    fn collects_a_server() {
        let context = Context::new(format!("{FIXTURES}/root-debian12-r630"));
        let report = collect(&context).unwrap().unwrap();
        let expected = Dmi {
            system_vendor: Some("Dell Inc.".into()),
            system_product: Some("PowerEdge R630".into()),
            system_version: None,
            system_serial: Some("7XK2Q52".into()),
            system_uuid: Some("4c4c4544-0058-4b10-8032-b7c04f513532".into()),
            bios_vendor: Some("Dell Inc.".into()),
            bios_version: Some("2.17.0".into()),
            bios_date: Some("12/09/2022".into()),
            board_vendor: Some("Dell Inc.".into()),
            board_name: Some("02C2CP".into()),
            board_serial: Some(".7XK2Q52.CNFCP0072B00BT.".into()),
            chassis_type: Some("rack mount chassis".into()),
            chassis_vendor: Some("Dell Inc.".into()),
        };
        assert_eq!(report.data, FunctionData::Dmi(vec![expected]));
        assert_eq!(report.unavailable, None);
    }

    #[test]
    fn placeholders_and_root_only_attributes_are_null() {
        let dir = tempfile::tempdir().unwrap();
        let id = dir.path().join("sys/class/dmi/id");
        std::fs::create_dir_all(&id).unwrap();
        // A white-box desktop as an unprivileged user sees it: serials and the UUID are
        // root-only, so they are simply absent here.
        for (name, value) in [
            ("sys_vendor", "To Be Filled By O.E.M.\n"),
            ("product_name", "To Be Filled By O.E.M.\n"),
            ("product_version", "To Be Filled By O.E.M.\n"),
            ("bios_vendor", "American Megatrends International, LLC.\n"),
            ("bios_version", "P3.50\n"),
            ("bios_date", "06/16/2022\n"),
            ("board_vendor", "ASRock\n"),
            ("board_name", "B550M Pro4\n"),
            ("chassis_type", "3\n"),
            ("chassis_vendor", "Default string\n"),
        ] {
            std::fs::write(id.join(name), value).unwrap();
        }
        let report = collect(&Context::new(dir.path())).unwrap().unwrap();
        let expected = Dmi {
            bios_vendor: Some("American Megatrends International, LLC.".into()),
            bios_version: Some("P3.50".into()),
            bios_date: Some("06/16/2022".into()),
            board_vendor: Some("ASRock".into()),
            board_name: Some("B550M Pro4".into()),
            chassis_type: Some("desktop".into()),
            ..Dmi::default()
        };
        assert_eq!(report.data, FunctionData::Dmi(vec![expected]));
    }

    #[test]
    fn no_dmi_directory_is_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let report = collect(&Context::new(dir.path())).unwrap().unwrap();
        assert_eq!(report.name(), "dmi");
        assert!(report.data.is_empty());
        assert_eq!(report.error, None);
        assert_eq!(
            report.unavailable.as_deref(),
            Some("no DMI/SMBIOS table: /sys/class/dmi/id does not exist")
        );
    }

    proptest! {
        #[test]
        fn never_panics(text in "\\PC*") {
            let _ = is_placeholder(&text);
            let _ = chassis_type_name(&text);
        }
    }
}
