//! SMBIOS strings as firmware writes them: placeholders to drop and chassis type names, shared
//! by the Linux (sysfs) and Windows (raw SMBIOS table) `dmi` collectors.

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
