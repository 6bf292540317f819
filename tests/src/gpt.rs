//! An independent reading of GPT structures, to check what the agent wrote field by field
//! (the agent's own GPT code is not used here on purpose).

use anyhow::{ensure, Result};

use crate::loopdev::SECTOR;

/// Byte ranges of fields in a GPT header sector.
pub mod field {
    use std::ops::Range;
    pub const HEADER_CRC: Range<usize> = 16..20;
    pub const MY_LBA: Range<usize> = 24..32;
    pub const ALTERNATE_LBA: Range<usize> = 32..40;
    pub const FIRST_USABLE: Range<usize> = 40..48;
    pub const LAST_USABLE: Range<usize> = 48..56;
    pub const ENTRIES_LBA: Range<usize> = 72..80;
    pub const ENTRIES_CRC: Range<usize> = 88..92;
}

/// Byte range of the sector count of the protective MBR's partition record.
pub const PMBR_SIZE_FIELD: std::ops::Range<usize> = 446 + 12..446 + 16;

/// Byte range of the CHS address of the protective MBR record's last sector: `sgdisk -e`
/// (IPA's relocation of the backup GPT) rewrites it with the size.
pub const PMBR_END_CHS: std::ops::Range<usize> = 446 + 5..446 + 8;

/// Sectors a GPT takes at each end of a disk beyond its header: 32 sectors of entries.
pub const ENTRY_SECTORS: u64 = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable: u64,
    pub last_usable: u64,
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
}

fn le64(b: &[u8], r: std::ops::Range<usize>) -> u64 {
    u64::from_le_bytes(b[r].try_into().unwrap_or([0; 8]))
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or([0; 4]))
}

impl Header {
    /// Parses a header sector ("EFI PART").
    pub fn parse(sector: &[u8]) -> Result<Header> {
        ensure!(
            sector.len() >= 92 && &sector[..8] == b"EFI PART",
            "no GPT header signature"
        );
        Ok(Header {
            my_lba: le64(sector, field::MY_LBA),
            alternate_lba: le64(sector, field::ALTERNATE_LBA),
            first_usable: le64(sector, field::FIRST_USABLE),
            last_usable: le64(sector, field::LAST_USABLE),
            entries_lba: le64(sector, field::ENTRIES_LBA),
            entry_count: le32(sector, 80),
            entry_size: le32(sector, 84),
        })
    }
}

/// One used partition entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// 1-based.
    pub number: usize,
    /// Mixed-endian GUID as text, upper case (like sgdisk prints it).
    pub type_guid: String,
    pub unique_guid: String,
    pub first_lba: u64,
    pub last_lba: u64,
    pub name: String,
}

impl Entry {
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn len(&self) -> u64 {
        (self.last_lba + 1 - self.first_lba) * SECTOR
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The mixed-endian text form of a GPT GUID.
pub fn guid_text(b: &[u8]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-{}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
        u16::from_le_bytes([b[4], b[5]]),
        u16::from_le_bytes([b[6], b[7]]),
        b[8],
        b[9],
        b[10..16]
            .iter()
            .map(|x| format!("{x:02X}"))
            .collect::<String>()
    )
}

/// The used entries of an entry array.
pub fn parse_entries(array: &[u8], entry_size: usize) -> Vec<Entry> {
    let mut out = Vec::new();
    for (i, e) in array.chunks_exact(entry_size.max(128)).enumerate() {
        if e[..16].iter().all(|b| *b == 0) {
            continue;
        }
        let name: Vec<u16> = e[56..128]
            .chunks_exact(2)
            .map(|c| u16::from_le_bytes([c[0], c[1]]))
            .take_while(|c| *c != 0)
            .collect();
        out.push(Entry {
            number: i + 1,
            type_guid: guid_text(&e[..16]),
            unique_guid: guid_text(&e[16..32]),
            first_lba: le64(e, 32..40),
            last_lba: le64(e, 40..48),
            name: String::from_utf16_lossy(&name),
        });
    }
    out
}

/// A disk's (or image's) primary GPT: header and used entries, read from its first 34 sectors.
#[derive(Debug, Clone)]
pub struct Table {
    pub header: Header,
    pub entries: Vec<Entry>,
}

impl Table {
    /// From the first 34 sectors of a disk.
    pub fn from_head(head: &[u8]) -> Result<Table> {
        ensure!(
            head.len() as u64 >= (2 + ENTRY_SECTORS) * SECTOR,
            "too few bytes"
        );
        let header = Header::parse(&head[SECTOR as usize..2 * SECTOR as usize])?;
        ensure!(header.entries_lba == 2, "entries not at LBA 2: {header:?}");
        let entries = parse_entries(
            &head[2 * SECTOR as usize..(2 + ENTRY_SECTORS) as usize * SECTOR as usize],
            header.entry_size as usize,
        );
        Ok(Table { header, entries })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guid_text_is_mixed_endian() {
        // The ESP type GUID as stored on disk.
        let b = [
            0x28, 0x73, 0x2a, 0xc1, 0x1f, 0xf8, 0xd2, 0x11, 0xba, 0x4b, 0x00, 0xa0, 0xc9, 0x3e,
            0xc9, 0x3b,
        ];
        assert_eq!(guid_text(&b), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    }
}
