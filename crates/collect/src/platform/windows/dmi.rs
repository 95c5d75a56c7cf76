//! `hardware/dmi` from the raw SMBIOS table (`GetSystemFirmwareTable('RSMB')`), parsed here:
//! BIOS (type 0), system (1), base board (2) and chassis (3) structures.

use muster_proto::data::Dmi;
use muster_proto::{FunctionData, FunctionReport};
use windows_sys::Win32::System::SystemInformation::{GetSystemFirmwareTable, RSMB};

use super::win::last_error;
use crate::platform::dmi_strings::{chassis_type_name, clean};
use crate::{CollectError, Collected, Context};

/// One SMBIOS structure: its type, formatted area and strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Structure<'a> {
    pub kind: u8,
    /// The formatted area, header included (offsets are the specification's).
    pub formatted: &'a [u8],
    pub strings: Vec<&'a [u8]>,
}

impl Structure<'_> {
    /// The byte at `offset` of the formatted area.
    pub fn byte(&self, offset: usize) -> Option<u8> {
        self.formatted.get(offset).copied()
    }

    /// The string the byte at `offset` refers to (1-based; 0 means none).
    pub fn string(&self, offset: usize) -> Option<String> {
        let index = usize::from(self.byte(offset)?);
        let bytes = self.strings.get(index.checked_sub(1)?)?;
        let text = String::from_utf8_lossy(bytes).trim().to_owned();
        clean(Some(text))
    }
}

/// Splits an SMBIOS structure table into its structures. Each is a formatted area whose
/// length its header gives, then NUL-terminated strings ending with an empty one. Walking
/// stops at the end-of-table structure (type 127), at the end of the bytes, or at a structure
/// whose length is impossible: nothing is read past `table`.
pub fn parse_table(table: &[u8]) -> Vec<Structure<'_>> {
    let mut structures = Vec::new();
    let mut rest = table;
    while rest.len() >= 4 {
        let kind = rest[0];
        let length = usize::from(rest[1]);
        if length < 4 || length > rest.len() {
            break;
        }
        let formatted = &rest[..length];
        // The string set ends at the first double NUL after the formatted area.
        let tail = &rest[length..];
        let Some(end) = tail.windows(2).position(|w| w == [0, 0]) else {
            break;
        };
        let strings = tail[..end]
            .split(|&b| b == 0)
            .filter(|s| !s.is_empty())
            .collect();
        structures.push(Structure {
            kind,
            formatted,
            strings,
        });
        if kind == 127 {
            break;
        }
        rest = &tail[end + 2..];
    }
    structures
}

/// The system UUID (type 1, offset 8) in the usual text form. Since SMBIOS 2.6 the first
/// three fields are little-endian, as Windows and the kernel print them.
pub fn format_uuid(bytes: &[u8; 16], version: (u8, u8)) -> String {
    let mut b = *bytes;
    if version >= (2, 6) {
        b[..4].reverse();
        b[4..6].reverse();
        b[6..8].reverse();
    }
    let hex: Vec<String> = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        hex[..4].concat(),
        hex[4..6].concat(),
        hex[6..8].concat(),
        hex[8..10].concat(),
        hex[10..].concat()
    )
}

/// The [`Dmi`] of an SMBIOS structure table of the given version.
pub fn parse_dmi(table: &[u8], version: (u8, u8)) -> Dmi {
    let mut dmi = Dmi::default();
    for s in parse_table(table) {
        match s.kind {
            0 if dmi.bios_vendor.is_none() && dmi.bios_version.is_none() => {
                dmi.bios_vendor = s.string(0x04);
                dmi.bios_version = s.string(0x05);
                dmi.bios_date = s.string(0x08);
            }
            1 if dmi.system_vendor.is_none() && dmi.system_product.is_none() => {
                dmi.system_vendor = s.string(0x04);
                dmi.system_product = s.string(0x05);
                dmi.system_version = s.string(0x06);
                dmi.system_serial = s.string(0x07);
                dmi.system_uuid = s
                    .formatted
                    .get(0x08..0x18)
                    .and_then(|b| <&[u8; 16]>::try_from(b).ok())
                    .map(|b| format_uuid(b, version))
                    .and_then(|uuid| clean(Some(uuid)));
            }
            2 if dmi.board_vendor.is_none() && dmi.board_name.is_none() => {
                dmi.board_vendor = s.string(0x04);
                dmi.board_name = s.string(0x05);
                dmi.board_serial = s.string(0x07);
            }
            3 if dmi.chassis_vendor.is_none() && dmi.chassis_type.is_none() => {
                dmi.chassis_vendor = s.string(0x04);
                dmi.chassis_type = s
                    .byte(0x05)
                    .and_then(|t| chassis_type_name(&t.to_string()))
                    .map(str::to_owned);
            }
            _ => {}
        }
    }
    dmi
}

/// Reads `RawSMBIOSData` (`Used20CallingMethod`, major, minor, `DmiRevision`, a u32 length,
/// then the table) and parses its table, bounded by the bytes actually there.
pub fn parse_raw_smbios(raw: &[u8]) -> Result<Dmi, String> {
    let header = raw
        .get(..8)
        .ok_or("RawSMBIOSData shorter than its header")?;
    let version = (header[1], header[2]);
    let length = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    let table = &raw[8..];
    let table = &table[..length.min(table.len())];
    if table.is_empty() {
        return Err("the SMBIOS table is empty".to_owned());
    }
    Ok(parse_dmi(table, version))
}

/// The firmware's SMBIOS table as `RawSMBIOSData`.
pub fn raw_smbios() -> Result<Vec<u8>, CollectError> {
    // SAFETY: a null buffer of size 0 asks for the size needed.
    let size = unsafe { GetSystemFirmwareTable(RSMB, 0, std::ptr::null_mut(), 0) };
    if size == 0 {
        return Err(last_error("GetSystemFirmwareTable('RSMB')"));
    }
    let mut buf = vec![0u8; size as usize];
    // SAFETY: `buf` has room for `size` bytes.
    let written = unsafe { GetSystemFirmwareTable(RSMB, 0, buf.as_mut_ptr(), size) };
    if written == 0 || written > size {
        return Err(last_error("GetSystemFirmwareTable('RSMB')"));
    }
    buf.truncate(written as usize);
    Ok(buf)
}

/// This machine's [`Dmi`].
pub fn read() -> Result<Dmi, CollectError> {
    parse_raw_smbios(&raw_smbios()?).map_err(|e| CollectError::parse("RSMB", e))
}

pub fn collect(_: &Context) -> Collected {
    Ok(Some(FunctionReport::new(FunctionData::Dmi(vec![read()?]))))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A structure: type, formatted bytes after the 4-byte header, strings.
    fn structure(kind: u8, body: &[u8], strings: &[&str]) -> Vec<u8> {
        let mut s = vec![kind, (4 + body.len()) as u8, 0, 0];
        s.extend(body);
        for string in strings {
            s.extend(string.as_bytes());
            s.push(0);
        }
        if strings.is_empty() {
            s.push(0);
        }
        s.push(0);
        s
    }

    fn table() -> Vec<u8> {
        // Type 0: vendor 1, version 2, (start segment u16), date 3.
        let mut t = structure(
            0,
            &[1, 2, 0, 0, 3, 0],
            &["Dell Inc.", "2.19.0", "06/17/2023"],
        );
        // Type 1: vendor, product, version, serial, UUID.
        let mut body = vec![1, 2, 0, 3];
        body.extend([
            0x44, 0x45, 0x4c, 0x4c, 0x39, 0x00, 0x10, 0x4e, 0x80, 0x35, 0xb8, 0xc0, 0x4f, 0x43,
            0x4b, 0x32,
        ]);
        t.extend(structure(
            1,
            &body,
            &["Dell Inc.", "PowerEdge R630", "ABC1234"],
        ));
        t.extend(structure(
            2,
            &[1, 2, 0, 3],
            &["Dell Inc.", "02C2CP", "To Be Filled By O.E.M."],
        ));
        t.extend(structure(3, &[1, 23], &["Dell Inc."]));
        t.extend(structure(127, &[], &[]));
        t
    }

    #[test]
    fn parses_an_smbios_table() {
        let dmi = parse_dmi(&table(), (3, 0));
        assert_eq!(dmi.bios_vendor.as_deref(), Some("Dell Inc."));
        assert_eq!(dmi.bios_version.as_deref(), Some("2.19.0"));
        assert_eq!(dmi.bios_date.as_deref(), Some("06/17/2023"));
        assert_eq!(dmi.system_vendor.as_deref(), Some("Dell Inc."));
        assert_eq!(dmi.system_product.as_deref(), Some("PowerEdge R630"));
        assert_eq!(dmi.system_version, None);
        assert_eq!(dmi.system_serial.as_deref(), Some("ABC1234"));
        assert_eq!(
            dmi.system_uuid.as_deref(),
            Some("4c4c4544-0039-4e10-8035-b8c04f434b32")
        );
        assert_eq!(dmi.board_name.as_deref(), Some("02C2CP"));
        assert_eq!(dmi.board_serial, None, "placeholders are dropped");
        assert_eq!(dmi.chassis_type.as_deref(), Some("rack mount chassis"));
    }

    #[test]
    fn reads_raw_smbios_data_bounded_by_its_length() {
        let mut raw = vec![0, 3, 0, 0];
        raw.extend((table().len() as u32).to_le_bytes());
        raw.extend(table());
        assert_eq!(parse_raw_smbios(&raw).unwrap(), parse_dmi(&table(), (3, 0)));
        // A length larger than the buffer reads only what is there.
        raw[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(
            parse_raw_smbios(&raw).unwrap().system_product.as_deref(),
            Some("PowerEdge R630")
        );
        assert!(parse_raw_smbios(&raw[..5]).is_err());
        // UUIDs before SMBIOS 2.6 are printed in table byte order.
        let bytes = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16];
        assert_eq!(
            format_uuid(&bytes, (2, 4)),
            "01020304-0506-0708-090a-0b0c0d0e0f10"
        );
    }

    proptest! {
        #[test]
        fn never_panics_on_any_table(raw in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse_raw_smbios(&raw);
            parse_table(&raw);
        }
    }
}
