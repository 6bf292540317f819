//! The SMBIOS (DMI) structure table the kernel exports at `/sys/firmware/dmi/tables/DMI`,
//! decoded natively: what IPA gets from `dmidecode` and `lshw` (installed memory, BIOS,
//! processors, memory arrays and devices), with dmidecode's field names and value formats so
//! that the `dmi-decode` inspection data reads the same.

use serde_json::{json, Map, Value};

/// Where the kernel exports the table, relative to sysfs.
pub const TABLE: &str = "firmware/dmi/tables/DMI";

/// One structure: its type, handle, formatted area (header included) and strings.
#[derive(Debug, Clone)]
pub struct Structure<'a> {
    pub kind: u8,
    pub handle: u16,
    pub formatted: &'a [u8],
    pub strings: Vec<String>,
}

impl Structure<'_> {
    fn byte(&self, off: usize) -> Option<u8> {
        self.formatted.get(off).copied()
    }

    fn word(&self, off: usize) -> Option<u16> {
        Some(u16::from_le_bytes([
            *self.formatted.get(off)?,
            *self.formatted.get(off + 1)?,
        ]))
    }

    fn dword(&self, off: usize) -> Option<u32> {
        let b = self.formatted.get(off..off + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn qword(&self, off: usize) -> Option<u64> {
        let b = self.formatted.get(off..off + 8)?;
        Some(u64::from_le_bytes(b.try_into().ok()?))
    }

    /// The string a byte at `off` refers to (1-based; 0 means none).
    pub fn string(&self, off: usize) -> Option<&str> {
        let n = usize::from(self.byte(off)?);
        let s = self.strings.get(n.checked_sub(1)?)?.trim();
        (!s.is_empty()).then_some(s)
    }

    /// dmidecode's rendering of a string field.
    fn text(&self, off: usize) -> String {
        if off >= self.formatted.len() {
            return "Not Specified".into();
        }
        match self.byte(off) {
            Some(0) | None => "Not Specified".into(),
            Some(_) => self
                .string(off)
                .map(str::to_string)
                .unwrap_or_else(|| "<BAD INDEX>".into()),
        }
    }

    /// `Handle 0x0018, DMI type 17, 40 bytes`, as dmidecode heads each record.
    fn heading(&self) -> String {
        format!(
            "Handle 0x{:04X}, DMI type {}, {} bytes",
            self.handle,
            self.kind,
            self.formatted.len()
        )
    }
}

/// Splits a table into structures; stops at the end-of-table structure (type 127) or at the
/// first malformed one (a truncated table still yields what precedes the damage).
pub fn structures(table: &[u8]) -> Vec<Structure<'_>> {
    let mut out = Vec::new();
    let mut pos = 0usize;
    while pos + 4 <= table.len() {
        let kind = table[pos];
        let len = usize::from(table[pos + 1]);
        if len < 4 || pos + len > table.len() {
            break;
        }
        let handle = u16::from_le_bytes([table[pos + 2], table[pos + 3]]);
        let formatted = &table[pos..pos + len];
        // The string set follows, each string NUL-terminated, the set ending with a second
        // NUL (an empty set is just two NULs).
        let mut end = pos + len;
        let mut strings = Vec::new();
        let mut start = end;
        loop {
            if end >= table.len() {
                return out;
            }
            if table[end] == 0 {
                if end == start {
                    // Empty string: end of the set (or the first of the two NULs of an
                    // empty set).
                    if strings.is_empty() && table.get(end + 1) == Some(&0) {
                        end += 1;
                    }
                    break;
                }
                strings.push(String::from_utf8_lossy(&table[start..end]).into_owned());
                start = end + 1;
            }
            end += 1;
        }
        out.push(Structure {
            kind,
            handle,
            formatted,
            strings,
        });
        if kind == 127 {
            break;
        }
        pos = end + 1;
    }
    out
}

/// Installed memory in MiB: the sum of the sizes of the memory devices (type 17).
pub fn installed_memory_mb(table: &[u8]) -> Option<u64> {
    let total: u64 = structures(table)
        .iter()
        .filter(|s| s.kind == 17)
        .filter_map(memory_device_mb)
        .sum();
    (total > 0).then_some(total)
}

/// The size of one memory device in MiB (0 for an empty slot).
fn memory_device_mb(s: &Structure<'_>) -> Option<u64> {
    let size = s.word(0x0c)?;
    Some(match size {
        0 | 0xffff => 0,
        0x7fff => u64::from(s.dword(0x1c).unwrap_or(0) & 0x7fff_ffff),
        v if v & 0x8000 != 0 => u64::from(v & 0x7fff) / 1024,
        v => u64::from(v),
    })
}

/// The system's manufacturer, product name and serial number (type 1).
pub fn system_information(
    table: &[u8],
) -> Option<(Option<String>, Option<String>, Option<String>)> {
    let s = structures(table).into_iter().find(|s| s.kind == 1)?;
    let get = |off| s.string(off).map(str::to_string);
    Some((get(0x04), get(0x05), get(0x07)))
}

/// The BIOS vendor, version and release date (type 0).
pub fn bios_information(table: &[u8]) -> Option<(Option<String>, Option<String>, Option<String>)> {
    let s = structures(table).into_iter().find(|s| s.kind == 0)?;
    let get = |off| s.string(off).map(str::to_string);
    Some((get(0x04), get(0x05), get(0x08)))
}

/// IPA's `dmi` inspection data: `{"bios": {..}, "cpu": [..], "memory": {.., "devices": [..]}}`
/// from types 0, 4, 16 and 17, each record a map of dmidecode's field names to its values.
pub fn dmi_inspection_data(table: &[u8]) -> Value {
    let mut bios = Map::new();
    let mut cpus = Vec::new();
    let mut arrays: Vec<Map<String, Value>> = Vec::new();
    let mut devices = Vec::new();
    for s in structures(table) {
        match s.kind {
            0 => bios = decode_bios(&s),
            4 => cpus.push(Value::Object(decode_processor(&s))),
            16 => arrays.push(decode_memory_array(&s)),
            17 => devices.push(Value::Object(decode_memory_device(&s))),
            _ => {}
        }
    }
    // As IPA: the first array's fields, with the device count summed over all arrays.
    let mut memory = Map::new();
    if let Some(first) = arrays.first() {
        memory = first.clone();
        memory.remove("Handle");
        let count: u64 = arrays
            .iter()
            .filter_map(|a| a.get("Number Of Devices").and_then(Value::as_str))
            .filter_map(|n| n.parse::<u64>().ok())
            .sum();
        memory.insert("Number Of Devices".into(), json!(count));
    }
    memory.insert("devices".into(), Value::Array(devices));
    json!({"bios": bios, "cpu": cpus, "memory": memory})
}

fn record(s: &Structure<'_>) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("Handle".into(), json!(s.heading()));
    m
}

fn put(m: &mut Map<String, Value>, key: &str, value: impl Into<String>) {
    m.insert(key.into(), Value::String(value.into()));
}

fn decode_bios(s: &Structure<'_>) -> Map<String, Value> {
    let mut m = record(s);
    put(&mut m, "Vendor", s.text(0x04));
    put(&mut m, "Version", s.text(0x05));
    put(&mut m, "Release Date", s.text(0x08));
    if let Some(seg) = s.word(0x06).filter(|v| *v != 0) {
        put(&mut m, "Address", format!("0x{seg:04X}0"));
        let runtime = (0x10000 - u32::from(seg)) << 4;
        put(&mut m, "Runtime Size", size_text(u64::from(runtime)));
    }
    if let Some(rom) = s.byte(0x09) {
        let bytes = if rom == 0xff {
            // Extended ROM size (SMBIOS 3.1): bits 15:14 unit (MiB, GiB), 13:0 value.
            match s.word(0x18) {
                Some(ext) => {
                    let v = u64::from(ext & 0x3fff);
                    if ext >> 14 == 1 {
                        v << 30
                    } else {
                        v << 20
                    }
                }
                None => 16 << 20,
            }
        } else {
            (u64::from(rom) + 1) << 16
        };
        put(&mut m, "ROM Size", size_text(bytes));
    }
    if let (Some(major), Some(minor)) = (s.byte(0x14), s.byte(0x15)) {
        if major != 0xff && minor != 0xff {
            put(&mut m, "BIOS Revision", format!("{major}.{minor}"));
        }
    }
    if let (Some(major), Some(minor)) = (s.byte(0x16), s.byte(0x17)) {
        if major != 0xff && minor != 0xff {
            put(&mut m, "Firmware Revision", format!("{major}.{minor}"));
        }
    }
    m
}

fn decode_processor(s: &Structure<'_>) -> Map<String, Value> {
    let mut m = record(s);
    put(&mut m, "Socket Designation", s.text(0x04));
    let kind = match s.byte(0x05) {
        Some(1) => "Other",
        Some(3) => "Central Processor",
        Some(4) => "Math Processor",
        Some(5) => "DSP Processor",
        Some(6) => "Video Processor",
        _ => "Unknown",
    };
    put(&mut m, "Type", kind);
    let family = match s.byte(0x06) {
        Some(0xfe) => s.word(0x28).unwrap_or(0),
        Some(f) => u16::from(f),
        None => 0,
    };
    put(&mut m, "Family", processor_family(family));
    put(&mut m, "Manufacturer", s.text(0x07));
    if let Some(id) = s.formatted.get(0x08..0x10) {
        let hex: Vec<String> = id.iter().map(|b| format!("{b:02X}")).collect();
        put(&mut m, "ID", hex.join(" "));
    }
    put(&mut m, "Version", s.text(0x10));
    if let Some(v) = s.byte(0x11) {
        let text = if v & 0x80 != 0 {
            format!("{:.1} V", f64::from(v & 0x7f) / 10.0)
        } else {
            let legacy: Vec<&str> = [(1, "5.0 V"), (2, "3.3 V"), (4, "2.9 V")]
                .iter()
                .filter(|(bit, _)| v & bit != 0)
                .map(|(_, t)| *t)
                .collect();
            if legacy.is_empty() {
                "Unknown".into()
            } else {
                legacy.join(" ")
            }
        };
        put(&mut m, "Voltage", text);
    }
    let mhz = |off| match s.word(off) {
        Some(0) | None => "Unknown".to_string(),
        Some(v) => format!("{v} MHz"),
    };
    put(&mut m, "External Clock", mhz(0x12));
    put(&mut m, "Max Speed", mhz(0x14));
    put(&mut m, "Current Speed", mhz(0x16));
    if let Some(st) = s.byte(0x18) {
        let populated = st & 0x40 != 0;
        let text = if !populated {
            "Unpopulated".to_string()
        } else {
            let state = match st & 0x07 {
                1 => "Enabled",
                2 => "Disabled By User",
                3 => "Disabled By BIOS",
                4 => "Idle",
                7 => "Other",
                _ => "Unknown",
            };
            format!("Populated, {state}")
        };
        put(&mut m, "Status", text);
    }
    if s.formatted.len() >= 0x23 {
        put(&mut m, "Serial Number", s.text(0x20));
        put(&mut m, "Asset Tag", s.text(0x21));
        put(&mut m, "Part Number", s.text(0x22));
    }
    if s.formatted.len() >= 0x28 {
        let count = |off8: usize, off16: usize| -> Option<u16> {
            match s.byte(off8)? {
                0xff if s.formatted.len() >= 0x30 => s.word(off16),
                0 => None,
                v => Some(u16::from(v)),
            }
        };
        for (key, off8, off16) in [
            ("Core Count", 0x23, 0x2a),
            ("Core Enabled", 0x24, 0x2c),
            ("Thread Count", 0x25, 0x2e),
        ] {
            if let Some(v) = count(off8, off16) {
                put(&mut m, key, v.to_string());
            }
        }
    }
    m
}

fn processor_family(f: u16) -> String {
    match f {
        0x01 => "Other",
        0x02 => "Unknown",
        0x0b => "Pentium",
        0x18 => "Athlon",
        0x1e => "Pentium 4",
        0x28 => "Core 2 Duo",
        0x2b..=0x2d | 0xc6 => "Core i7",
        0x6b => "Zen",
        0xb3 => "Xeon",
        0xcd => "Core i5",
        0xce => "Core i3",
        0xbf => "Core 2 Duo",
        0xe6 => "Atom",
        0x100 => "ARMv7",
        0x101 => "ARMv8",
        0x102 => "ARMv9",
        0x104 => "SH-3",
        0x118 => "ARM",
        0x200 => "RISC-V RV32",
        0x201 => "RISC-V RV64",
        0x202 => "RISC-V RV128",
        _ => return format!("<OUT OF SPEC> (0x{f:X})"),
    }
    .into()
}

fn decode_memory_array(s: &Structure<'_>) -> Map<String, Value> {
    let mut m = record(s);
    let location = match s.byte(0x04) {
        Some(3) => "System Board Or Motherboard",
        Some(4) => "ISA Add-on Card",
        Some(5) => "EISA Add-on Card",
        Some(6) => "PCI Add-on Card",
        Some(0xa3) => "Proprietary Add-on Card",
        Some(1) => "Other",
        _ => "Unknown",
    };
    put(&mut m, "Location", location);
    let use_ = match s.byte(0x05) {
        Some(3) => "System Memory",
        Some(4) => "Video Memory",
        Some(5) => "Flash Memory",
        Some(6) => "Non-volatile RAM",
        Some(7) => "Cache Memory",
        Some(1) => "Other",
        _ => "Unknown",
    };
    put(&mut m, "Use", use_);
    let ecc = match s.byte(0x06) {
        Some(3) => "None",
        Some(4) => "Parity",
        Some(5) => "Single-bit ECC",
        Some(6) => "Multi-bit ECC",
        Some(7) => "CRC",
        Some(1) => "Other",
        _ => "Unknown",
    };
    put(&mut m, "Error Correction Type", ecc);
    if let Some(kib) = s.dword(0x07) {
        let bytes = if kib == 0x8000_0000 {
            s.qword(0x0f)
        } else {
            Some(u64::from(kib) << 10)
        };
        if let Some(b) = bytes {
            put(&mut m, "Maximum Capacity", size_text(b));
        }
    }
    if let Some(n) = s.word(0x0d) {
        put(&mut m, "Number Of Devices", n.to_string());
    }
    m
}

fn decode_memory_device(s: &Structure<'_>) -> Map<String, Value> {
    let mut m = record(s);
    if let Some(h) = s.word(0x04) {
        put(&mut m, "Array Handle", format!("0x{h:04X}"));
    }
    let width = |off| match s.word(off) {
        Some(0xffff) | None => "Unknown".to_string(),
        Some(v) => format!("{v} bits"),
    };
    put(&mut m, "Total Width", width(0x08));
    put(&mut m, "Data Width", width(0x0a));
    let size = match memory_device_mb(s) {
        Some(0) => "No Module Installed".to_string(),
        Some(mb) => size_text(mb << 20),
        None => "Unknown".to_string(),
    };
    put(&mut m, "Size", size);
    let form = match s.byte(0x0e) {
        Some(1) => "Other",
        Some(3) => "SIMM",
        Some(9) => "DIMM",
        Some(0x0b) => "Row Of Chips",
        Some(0x0c) => "RIMM",
        Some(0x0d) => "SODIMM",
        Some(0x0f) => "FB-DIMM",
        Some(0x10) => "Die",
        _ => "Unknown",
    };
    put(&mut m, "Form Factor", form);
    match s.byte(0x0f) {
        Some(0) | None => put(&mut m, "Set", "None"),
        Some(0xff) => put(&mut m, "Set", "Unknown"),
        Some(v) => put(&mut m, "Set", v.to_string()),
    }
    put(&mut m, "Locator", s.text(0x10));
    put(&mut m, "Bank Locator", s.text(0x11));
    let kind = match s.byte(0x12) {
        Some(1) => "Other",
        Some(3) => "DRAM",
        Some(7) => "RAM",
        Some(0x0f) => "SDRAM",
        Some(0x12) => "DDR",
        Some(0x13) => "DDR2",
        Some(0x18) => "DDR3",
        Some(0x1a) => "DDR4",
        Some(0x1b) => "LPDDR",
        Some(0x1c) => "LPDDR2",
        Some(0x1d) => "LPDDR3",
        Some(0x1e) => "LPDDR4",
        Some(0x22) => "DDR5",
        Some(0x23) => "LPDDR5",
        _ => "Unknown",
    };
    put(&mut m, "Type", kind);
    if s.formatted.len() >= 0x17 {
        let speed = match s.word(0x15) {
            Some(0) | None => "Unknown".to_string(),
            Some(v) => format!("{v} MT/s"),
        };
        put(&mut m, "Speed", speed);
    }
    if s.formatted.len() >= 0x1b {
        put(&mut m, "Manufacturer", s.text(0x17));
        put(&mut m, "Serial Number", s.text(0x18));
        put(&mut m, "Asset Tag", s.text(0x19));
        put(&mut m, "Part Number", s.text(0x1a));
    }
    if let Some(rank) = s.byte(0x1b).map(|r| r & 0x0f) {
        put(
            &mut m,
            "Rank",
            if rank == 0 {
                "Unknown".to_string()
            } else {
                rank.to_string()
            },
        );
    }
    if s.formatted.len() >= 0x22 {
        let speed = match s.word(0x20) {
            Some(0) | None => "Unknown".to_string(),
            Some(v) => format!("{v} MT/s"),
        };
        put(&mut m, "Configured Memory Speed", speed);
    }
    m
}

/// dmidecode's sizes: the largest unit that divides the value exactly.
fn size_text(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "kB", "MB", "GB", "TB", "PB"];
    let mut v = bytes;
    let mut unit = 0;
    while unit + 1 < UNITS.len() && v >= 1024 && v.is_multiple_of(1024) {
        v /= 1024;
        unit += 1;
    }
    format!("{v} {}", UNITS[unit])
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Builds a structure: `kind`, `handle`, the formatted area after the header, strings.
    pub fn structure(kind: u8, handle: u16, body: &[u8], strings: &[&str]) -> Vec<u8> {
        let mut s = vec![kind, (4 + body.len()) as u8];
        s.extend_from_slice(&handle.to_le_bytes());
        s.extend_from_slice(body);
        if strings.is_empty() {
            s.extend_from_slice(&[0, 0]);
        } else {
            for t in strings {
                s.extend_from_slice(t.as_bytes());
                s.push(0);
            }
            s.push(0);
        }
        s
    }

    /// A table like a two-socket server's (as QEMU's q35 and a Dell R640 lay them out):
    /// BIOS, system, two processors, one memory array, three DIMMs (one slot empty).
    pub fn server_table() -> Vec<u8> {
        let mut t = Vec::new();
        // Type 0: vendor 1, version 2, segment 0xE800, date 3, ROM 0x0F (1 MiB), rev 2.11.
        let mut b0 = vec![1u8, 2, 0x00, 0xe8, 3, 0x0f];
        b0.extend_from_slice(&[0; 8]); // characteristics
        b0.extend_from_slice(&[0x03, 0x0d, 2, 11, 0xff, 0xff]);
        t.extend(structure(
            0,
            0x0000,
            &b0,
            &["Dell Inc.", "2.11.2", "04/23/2021"],
        ));
        // Type 1: manufacturer 1, product 2, version 3, serial 4.
        let mut b1 = vec![1u8, 2, 3, 4];
        b1.extend_from_slice(&[0; 16]); // UUID
        b1.extend_from_slice(&[6, 0, 0]);
        t.extend(structure(
            1,
            0x0100,
            &b1,
            &["Dell Inc.", "PowerEdge R640", "Not Specified", "4XJ9KL2"],
        ));
        for (handle, socket) in [(0x0400u16, "CPU1"), (0x0401, "CPU2")] {
            let mut b = vec![1u8, 3, 0xb3, 2];
            b.extend_from_slice(&[0x54, 0x06, 0x05, 0x00, 0xff, 0xfb, 0xeb, 0xbf]); // ID
            b.push(3); // version string
            b.push(0x8c); // 1.2 V
            b.extend_from_slice(&100u16.to_le_bytes());
            b.extend_from_slice(&4000u16.to_le_bytes());
            b.extend_from_slice(&2100u16.to_le_bytes());
            b.push(0x41); // populated, enabled
            b.push(0x01); // upgrade
            b.extend_from_slice(&[0; 6]); // cache handles
            b.extend_from_slice(&[0, 0, 0]); // serial, asset, part: none
            b.extend_from_slice(&[20, 20, 40]); // cores, enabled, threads
            b.extend_from_slice(&[0; 4]); // characteristics, family 2
            b.extend_from_slice(&[0; 6]);
            t.extend(structure(
                4,
                handle,
                &b,
                &[socket, "Intel", "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz"],
            ));
        }
        // Type 16: system board, system memory, multi-bit ECC, max 0x80000000 -> extended.
        let mut b16 = vec![3u8, 3, 6];
        b16.extend_from_slice(&0x8000_0000u32.to_le_bytes());
        b16.extend_from_slice(&0xfffeu16.to_le_bytes());
        b16.extend_from_slice(&24u16.to_le_bytes());
        b16.extend_from_slice(&(3u64 << 40).to_le_bytes()); // 3 TiB
        t.extend(structure(16, 0x1000, &b16, &[]));
        for (handle, size, ext, locator) in [
            (0x1100u16, 16384u16, 0u32, "A1"),
            (0x1101, 0x7fff, 65536, "A2"),
            (0x1102, 0, 0, "A3"),
        ] {
            let mut b = Vec::new();
            b.extend_from_slice(&0x1000u16.to_le_bytes()); // array
            b.extend_from_slice(&0xfffeu16.to_le_bytes()); // error handle
            b.extend_from_slice(&72u16.to_le_bytes());
            b.extend_from_slice(&64u16.to_le_bytes());
            b.extend_from_slice(&size.to_le_bytes());
            b.push(9); // DIMM
            b.push(1); // set
            b.push(1); // locator
            b.push(2); // bank locator
            b.push(0x1a); // DDR4
            b.extend_from_slice(&0x0080u16.to_le_bytes()); // type detail
            b.extend_from_slice(&2933u16.to_le_bytes());
            b.extend_from_slice(&[3, 4, 0, 5]); // manufacturer, serial, asset, part
            b.push(2); // rank
            b.extend_from_slice(&ext.to_le_bytes());
            b.extend_from_slice(&2666u16.to_le_bytes());
            t.extend(structure(
                17,
                handle,
                &b,
                &[
                    locator,
                    "Not Specified",
                    "Samsung",
                    "40E2F1A7",
                    "M393A2K43CB2-CVF",
                ],
            ));
        }
        t.extend(structure(127, 0xfeff, &[], &[]));
        t
    }

    #[test]
    fn structures_and_strings() {
        let t = server_table();
        let s = structures(&t);
        let kinds: Vec<u8> = s.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, [0, 1, 4, 4, 16, 17, 17, 17, 127]);
        assert_eq!(s[0].string(0x04), Some("Dell Inc."));
        assert_eq!(s[4].strings.len(), 0);
        assert_eq!(s[5].string(0x1a), Some("M393A2K43CB2-CVF"));
        assert_eq!(installed_memory_mb(&t), Some(16384 + 65536));
        assert_eq!(
            system_information(&t),
            Some((
                Some("Dell Inc.".into()),
                Some("PowerEdge R640".into()),
                Some("4XJ9KL2".into())
            ))
        );
        assert_eq!(
            bios_information(&t).unwrap().2.as_deref(),
            Some("04/23/2021")
        );
    }

    #[test]
    fn truncated_and_empty_tables() {
        assert!(structures(&[]).is_empty());
        assert_eq!(installed_memory_mb(&[]), None);
        let t = server_table();
        // Cut in the middle of the second DIMM: the first one is still counted.
        let cut = t.len() - 120;
        assert_eq!(installed_memory_mb(&t[..cut]), Some(16384));
        assert!(structures(&[17, 2, 0]).is_empty());
    }

    #[test]
    fn dmi_data_reads_like_dmidecode() {
        let d = dmi_inspection_data(&server_table());
        let bios = &d["bios"];
        assert_eq!(bios["Handle"], "Handle 0x0000, DMI type 0, 24 bytes");
        assert_eq!(bios["Vendor"], "Dell Inc.");
        assert_eq!(bios["Version"], "2.11.2");
        assert_eq!(bios["Release Date"], "04/23/2021");
        assert_eq!(bios["Address"], "0xE8000");
        assert_eq!(bios["Runtime Size"], "96 kB");
        assert_eq!(bios["ROM Size"], "1 MB");
        assert_eq!(bios["BIOS Revision"], "2.11");
        assert!(bios.get("Firmware Revision").is_none());

        let cpus = d["cpu"].as_array().unwrap();
        assert_eq!(cpus.len(), 2);
        let c = &cpus[1];
        assert_eq!(c["Socket Designation"], "CPU2");
        assert_eq!(c["Type"], "Central Processor");
        assert_eq!(c["Family"], "Xeon");
        assert_eq!(c["Manufacturer"], "Intel");
        assert_eq!(c["ID"], "54 06 05 00 FF FB EB BF");
        assert_eq!(c["Version"], "Intel(R) Xeon(R) Gold 6230 CPU @ 2.10GHz");
        assert_eq!(c["Voltage"], "1.2 V");
        assert_eq!(c["External Clock"], "100 MHz");
        assert_eq!(c["Max Speed"], "4000 MHz");
        assert_eq!(c["Current Speed"], "2100 MHz");
        assert_eq!(c["Status"], "Populated, Enabled");
        assert_eq!(c["Serial Number"], "Not Specified");
        assert_eq!(c["Core Count"], "20");
        assert_eq!(c["Thread Count"], "40");

        let mem = &d["memory"];
        assert_eq!(mem["Location"], "System Board Or Motherboard");
        assert_eq!(mem["Use"], "System Memory");
        assert_eq!(mem["Error Correction Type"], "Multi-bit ECC");
        assert_eq!(mem["Maximum Capacity"], "3 TB");
        assert_eq!(mem["Number Of Devices"], 24);
        assert!(mem.get("Handle").is_none());
        let devs = mem["devices"].as_array().unwrap();
        assert_eq!(devs.len(), 3);
        assert_eq!(devs[0]["Size"], "16 GB");
        assert_eq!(devs[1]["Size"], "64 GB");
        assert_eq!(devs[2]["Size"], "No Module Installed");
        assert_eq!(devs[0]["Array Handle"], "0x1000");
        assert_eq!(devs[0]["Total Width"], "72 bits");
        assert_eq!(devs[0]["Form Factor"], "DIMM");
        assert_eq!(devs[0]["Type"], "DDR4");
        assert_eq!(devs[0]["Speed"], "2933 MT/s");
        assert_eq!(devs[0]["Configured Memory Speed"], "2666 MT/s");
        assert_eq!(devs[0]["Manufacturer"], "Samsung");
        assert_eq!(devs[0]["Part Number"], "M393A2K43CB2-CVF");
        assert_eq!(devs[0]["Asset Tag"], "Not Specified");
        assert_eq!(devs[0]["Bank Locator"], "Not Specified");
        assert_eq!(devs[0]["Rank"], "2");
        assert_eq!(devs[1]["Locator"], "A2");

        let empty = dmi_inspection_data(&[]);
        assert_eq!(
            empty,
            json!({"bios": {}, "cpu": [], "memory": {"devices": []}})
        );
    }

    #[test]
    fn sizes() {
        assert_eq!(size_text(96 << 10), "96 kB");
        assert_eq!(size_text(1536 << 10), "1536 kB");
        assert_eq!(size_text(16 << 30), "16 GB");
        assert_eq!(size_text(100), "100 bytes");
    }
}
