//! `hardware/dmi` from the kernel's copy of the SMBIOS table in `/sys/class/dmi/id`.

use muster_proto::data::Dmi;
use muster_proto::{FunctionData, FunctionReport};

use crate::{Collected, Context};

const DMI_DIR: &str = "/sys/class/dmi/id";

pub use crate::platform::dmi_strings::{chassis_type_name, clean, is_placeholder};

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
