//! Partition tables as they are on the disk, independent of what the kernel scanned: GPT (both
//! headers, their entry arrays and the partitions) and the four primary MBR entries.
//!
//! The erase steps use this to find partitions the kernel never scanned and the GPT structures
//! to zap wherever the headers put them; the protected-device check uses the partition types.
//! Only reading for now; writing a GPT will live here too.

use std::fmt;
use std::io;

use crate::region::{Extent, ReadAt, Region};

/// `EFI PART`, at the start of both GPT headers.
pub const GPT_SIGNATURE: &[u8; 8] = b"EFI PART";
/// The MBR partition type of a GPT's protective MBR.
pub const MBR_TYPE_GPT_PROTECTIVE: u8 = 0xee;

/// Sector sizes a GPT may have been written for: the header is at LBA 1 in *logical* sectors,
/// and disks with 4096-byte sectors are often imaged on 512-byte ones and back.
const GPT_SECTOR_SIZES: [u64; 2] = [512, 4096];
/// The smallest header the UEFI specification allows.
const GPT_HEADER_MIN: usize = 92;
/// Entry arrays larger than this are not a real GPT (the specification's default is 16 KiB).
const GPT_ENTRIES_MAX_BYTES: u64 = 1 << 20;

/// A GUID in its on-disk byte order (the first three fields little-endian).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Guid(pub [u8; 16]);

impl Guid {
    /// The GUID written as `d1-d2-d3-d4[0..2]-d4[2..8]`, for constants.
    pub const fn from_fields(d1: u32, d2: u16, d3: u16, d4: [u8; 8]) -> Guid {
        let a = d1.to_le_bytes();
        let b = d2.to_le_bytes();
        let c = d3.to_le_bytes();
        Guid([
            a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d4[0], d4[1], d4[2], d4[3], d4[4],
            d4[5], d4[6], d4[7],
        ])
    }

    /// Parses the textual form (either case), e.g. `aa31e02a-400f-11db-9590-000c2911d1b8`.
    pub fn parse(text: &str) -> Option<Guid> {
        let parts: Vec<&str> = text.split('-').collect();
        let lens: Vec<usize> = parts.iter().map(|p| p.len()).collect();
        if lens != [8, 4, 4, 4, 12] {
            return None;
        }
        let hex: String = parts.concat();
        let mut raw = [0u8; 16];
        for (i, byte) in raw.iter_mut().enumerate() {
            *byte = u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok()?;
        }
        let d1 = u32::from_be_bytes([raw[0], raw[1], raw[2], raw[3]]);
        let d2 = u16::from_be_bytes([raw[4], raw[5]]);
        let d3 = u16::from_be_bytes([raw[6], raw[7]]);
        let mut d4 = [0u8; 8];
        d4.copy_from_slice(&raw[8..]);
        Some(Guid::from_fields(d1, d2, d3, d4))
    }

    pub fn is_nil(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for Guid {
    /// Uppercase, as Ironic's and IPA's constants are written.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let g = &self.0;
        write!(
            f,
            "{:08X}-{:04X}-{:04X}-{:02X}{:02X}-",
            u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
            u16::from_le_bytes([g[4], g[5]]),
            u16::from_le_bytes([g[6], g[7]]),
            g[8],
            g[9]
        )?;
        g[10..].iter().try_for_each(|b| write!(f, "{b:02X}"))
    }
}

impl fmt::Debug for Guid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// One GPT header, primary or backup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptHeader {
    /// The sector size the header was found with; all its LBAs are in these units.
    pub sector_size: u64,
    pub my_lba: u64,
    pub alternate_lba: u64,
    pub first_usable_lba: u64,
    pub last_usable_lba: u64,
    pub disk_guid: Guid,
    pub entries_lba: u64,
    pub entry_count: u32,
    pub entry_size: u32,
    pub entries_crc32: u32,
    /// Whether the header's own CRC matched; the kernel ignores a header whose CRC does not.
    pub header_crc_valid: bool,
}

impl GptHeader {
    /// The header's sector.
    pub fn header_extent(&self) -> Extent {
        Extent::new(
            self.my_lba.saturating_mul(self.sector_size),
            self.sector_size,
        )
    }

    /// The partition entry array, in whole sectors.
    pub fn entries_extent(&self) -> Extent {
        let bytes = u64::from(self.entry_count) * u64::from(self.entry_size);
        Extent::new(
            self.entries_lba.saturating_mul(self.sector_size),
            bytes.div_ceil(self.sector_size) * self.sector_size,
        )
    }
}

/// A used GPT entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GptPartition {
    /// 1-based position in the entry array, as the kernel numbers partitions.
    pub number: u32,
    pub type_guid: Guid,
    pub unique_guid: Guid,
    pub attributes: u64,
    pub name: String,
    /// Bytes, from the start of the disk.
    pub extent: Extent,
}

/// A GPT: the headers that were found (either may be missing or damaged) and the partitions
/// of the best entry array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpt {
    pub sector_size: u64,
    pub primary: Option<GptHeader>,
    pub backup: Option<GptHeader>,
    /// Whether the entry array the partitions come from matched its header's CRC.
    pub entries_crc_valid: bool,
    pub partitions: Vec<GptPartition>,
}

impl Gpt {
    /// The headers and entry arrays, wherever headers whose CRC holds say they are: what
    /// `sgdisk -Z` destroys of a GPT it can read. A damaged header's pointers are not
    /// trusted, since they could point into data.
    pub fn structures(&self) -> Vec<Extent> {
        [&self.primary, &self.backup]
            .into_iter()
            .flatten()
            .filter(|h| h.header_crc_valid)
            .flat_map(|h| [h.header_extent(), h.entries_extent()])
            .collect()
    }
}

/// A used primary MBR entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbrPartition {
    /// 1 to 4.
    pub number: u32,
    pub bootable: bool,
    pub type_byte: u8,
    /// Bytes, from the start of the disk.
    pub extent: Extent,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mbr {
    pub disk_signature: u32,
    pub partitions: Vec<MbrPartition>,
}

impl Mbr {
    /// Whether this is a GPT's protective (or hybrid) MBR.
    pub fn is_protective(&self) -> bool {
        self.partitions
            .iter()
            .any(|p| p.type_byte == MBR_TYPE_GPT_PROTECTIVE)
    }
}

/// What a disk holds in the way of partition tables.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionTables {
    pub mbr: Option<Mbr>,
    pub gpt: Option<Gpt>,
}

impl PartitionTables {
    /// Reads both tables from a whole disk (or any region of one) of `len` bytes whose logical
    /// sector size is `sector_size`.
    pub fn read<R: ReadAt + ?Sized>(
        source: &R,
        len: u64,
        sector_size: u64,
    ) -> io::Result<PartitionTables> {
        let region = Region::new(source, Extent::new(0, len));
        Ok(PartitionTables {
            mbr: read_mbr(&region, sector_size)?,
            gpt: read_gpt(&region, sector_size)?,
        })
    }

    /// Every partition either table describes, as `(number, extent)`. A protective MBR's
    /// entry is not a partition.
    pub fn partitions(&self) -> Vec<(u32, Extent)> {
        match &self.gpt {
            Some(gpt) => gpt
                .partitions
                .iter()
                .map(|p| (p.number, p.extent))
                .collect(),
            None => self
                .mbr
                .iter()
                .flat_map(|m| &m.partitions)
                .filter(|p| p.type_byte != MBR_TYPE_GPT_PROTECTIVE)
                .map(|p| (p.number, p.extent))
                .collect(),
        }
    }
}

fn le16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn guid_at(b: &[u8], at: usize) -> Guid {
    let mut g = [0u8; 16];
    g.copy_from_slice(&b[at..at + 16]);
    Guid(g)
}

fn read_mbr<R: ReadAt + ?Sized>(disk: &Region<'_, R>, sector_size: u64) -> io::Result<Option<Mbr>> {
    let Some(sector) = disk.bytes(0, 512)? else {
        return Ok(None);
    };
    if sector[510..512] != [0x55, 0xaa] {
        return Ok(None);
    }
    let entries: Vec<&[u8]> = (0..4)
        .map(|i| &sector[446 + 16 * i..462 + 16 * i])
        .collect();
    // A boot indicator other than 0x00/0x80 means this is not a partition table but, say, the
    // boot sector of a FAT filesystem, which ends in 55 AA too.
    if entries.iter().any(|e| e[0] != 0 && e[0] != 0x80) {
        return Ok(None);
    }
    let partitions = entries
        .iter()
        .enumerate()
        .filter(|(_, e)| e[4] != 0 && le32(e, 12) != 0)
        .map(|(i, e)| MbrPartition {
            number: i as u32 + 1,
            bootable: e[0] == 0x80,
            type_byte: e[4],
            extent: Extent::new(
                u64::from(le32(e, 8)) * sector_size,
                u64::from(le32(e, 12)) * sector_size,
            ),
        })
        .collect();
    Ok(Some(Mbr {
        disk_signature: le32(&sector, 440),
        partitions,
    }))
}

fn read_gpt<R: ReadAt + ?Sized>(disk: &Region<'_, R>, logical: u64) -> io::Result<Option<Gpt>> {
    let mut sizes = vec![logical];
    sizes.extend(GPT_SECTOR_SIZES.iter().filter(|s| **s != logical));
    let len = disk.len();
    for ss in sizes {
        if ss < 512 || len < 3 * ss {
            continue;
        }
        let last_lba = len / ss - 1;
        let primary = read_header(disk, ss, 1)?;
        let backup_lba = primary
            .as_ref()
            .map(|h| h.alternate_lba)
            .filter(|lba| *lba > 1 && *lba <= last_lba)
            .unwrap_or(last_lba);
        let mut backup = read_header(disk, ss, backup_lba)?;
        if backup.is_none() && backup_lba != last_lba {
            backup = read_header(disk, ss, last_lba)?;
        }
        if primary.is_none() && backup.is_none() {
            continue;
        }
        // Entries of a header whose CRCs hold win; a damaged GPT still yields its partitions
        // (the protected-device check would rather see too much than too little).
        let mut best: Option<(bool, Vec<GptPartition>)> = None;
        for h in [&primary, &backup].into_iter().flatten() {
            let Some((crc_ok, parts)) = read_entries(disk, h)? else {
                continue;
            };
            let valid = crc_ok && h.header_crc_valid;
            if best.as_ref().is_none_or(|(b, _)| valid && !*b) {
                best = Some((valid, parts));
            }
        }
        let (entries_crc_valid, partitions) = best.unwrap_or_default();
        return Ok(Some(Gpt {
            sector_size: ss,
            primary,
            backup,
            entries_crc_valid,
            partitions,
        }));
    }
    Ok(None)
}

fn read_header<R: ReadAt + ?Sized>(
    disk: &Region<'_, R>,
    ss: u64,
    lba: u64,
) -> io::Result<Option<GptHeader>> {
    let Some(sector) = disk.bytes(lba * ss, ss as usize)? else {
        return Ok(None);
    };
    if &sector[..8] != GPT_SIGNATURE {
        return Ok(None);
    }
    let header_size = le32(&sector, 12) as usize;
    if !(GPT_HEADER_MIN..=sector.len()).contains(&header_size) {
        return Ok(None);
    }
    let mut copy = sector[..header_size].to_vec();
    copy[16..20].fill(0);
    let header = GptHeader {
        sector_size: ss,
        my_lba: le64(&sector, 24),
        alternate_lba: le64(&sector, 32),
        first_usable_lba: le64(&sector, 40),
        last_usable_lba: le64(&sector, 48),
        disk_guid: guid_at(&sector, 56),
        entries_lba: le64(&sector, 72),
        entry_count: le32(&sector, 80),
        entry_size: le32(&sector, 84),
        entries_crc32: le32(&sector, 88),
        header_crc_valid: crc32(&copy) == le32(&sector, 16),
    };
    let entries_bytes = u64::from(header.entry_count) * u64::from(header.entry_size);
    if header.entry_size < 128
        || header.entry_size & 7 != 0
        || entries_bytes > GPT_ENTRIES_MAX_BYTES
    {
        return Ok(None);
    }
    Ok(Some(header))
}

/// The used entries of a header's array and whether the array matched its CRC; `None` when
/// the array lies outside the disk.
fn read_entries<R: ReadAt + ?Sized>(
    disk: &Region<'_, R>,
    h: &GptHeader,
) -> io::Result<Option<(bool, Vec<GptPartition>)>> {
    let bytes = h.entry_count as usize * h.entry_size as usize;
    let Some(offset) = h.entries_lba.checked_mul(h.sector_size) else {
        return Ok(None);
    };
    let Some(array) = disk.bytes(offset, bytes)? else {
        return Ok(None);
    };
    let crc_ok = crc32(&array) == h.entries_crc32;
    let partitions = array
        .chunks_exact(h.entry_size as usize)
        .enumerate()
        .filter_map(|(i, e)| {
            let type_guid = guid_at(e, 0);
            let (first, last) = (le64(e, 32), le64(e, 40));
            if type_guid.is_nil() || last < first {
                return None;
            }
            let name: Vec<u16> = (0..36)
                .map(|k| le16(e, 56 + 2 * k))
                .take_while(|c| *c != 0)
                .collect();
            Some(GptPartition {
                number: i as u32 + 1,
                type_guid,
                unique_guid: guid_at(e, 16),
                attributes: le64(e, 48),
                name: String::from_utf16_lossy(&name),
                extent: Extent::new(
                    first.checked_mul(h.sector_size)?,
                    (last - first + 1).checked_mul(h.sector_size)?,
                ),
            })
        })
        .collect();
    Ok(Some((crc_ok, partitions)))
}

/// CRC-32 (IEEE 802.3, reflected), as GPT uses for headers and entry arrays.
pub fn crc32(data: &[u8]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 != 0 {
                    0xedb8_8320 ^ (c >> 1)
                } else {
                    c >> 1
                };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    !data.iter().fold(!0u32, |c, b| {
        TABLE[((c ^ u32::from(*b)) & 0xff) as usize] ^ (c >> 8)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{write_gpt, LINUX_FS};

    #[test]
    fn guid_text_round_trip_and_on_disk_order() {
        let vmfs = Guid::parse("aa31e02a-400f-11db-9590-000c2911d1b8").unwrap();
        assert_eq!(vmfs.to_string(), "AA31E02A-400F-11DB-9590-000C2911D1B8");
        assert_eq!(
            &vmfs.0[..4],
            &[0x2a, 0xe0, 0x31, 0xaa],
            "first field little-endian"
        );
        assert_eq!(&vmfs.0[8..10], &[0x95, 0x90], "fourth field as written");
        assert_eq!(Guid::parse("not-a-guid"), None);
        assert_eq!(Guid::parse("aa31e02a-400f-11db-9590-000c2911d1bx"), None);
    }

    #[test]
    fn crc32_known_value() {
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn gpt_with_both_headers() {
        for ss in [512u64, 4096] {
            let mut disk = vec![0u8; 8 << 20];
            let last = disk.len() as u64 / ss - 1;
            write_gpt(
                &mut disk,
                ss,
                &[(LINUX_FS, 2048 * 512 / ss, 4096 * 512 / ss - 1)],
            );
            let t = PartitionTables::read(&disk, disk.len() as u64, ss).unwrap();
            assert!(t.mbr.as_ref().unwrap().is_protective());
            let gpt = t.gpt.as_ref().unwrap();
            assert_eq!(gpt.sector_size, ss);
            assert!(gpt.entries_crc_valid);
            let p = &gpt.partitions[0];
            assert_eq!(p.number, 1);
            assert_eq!(
                p.type_guid.to_string(),
                "0FC63DAF-8483-4772-8E79-3D6915D847E4"
            );
            assert_eq!(p.extent, Extent::new(1 << 20, 1 << 20));
            assert_eq!(p.name, "p");
            let primary = gpt.primary.as_ref().unwrap();
            assert!(primary.header_crc_valid);
            assert_eq!(
                primary.entries_extent(),
                Extent::new(2 * ss, 16384u64.next_multiple_of(ss))
            );
            let backup = gpt.backup.as_ref().unwrap();
            assert_eq!(backup.my_lba, last);
            assert_eq!(t.partitions(), vec![(1, Extent::new(1 << 20, 1 << 20))]);
        }
    }

    #[test]
    fn damaged_primary_falls_back_to_backup() {
        let mut disk = vec![0u8; 4 << 20];
        write_gpt(&mut disk, 512, &[(LINUX_FS, 2048, 3000)]);
        disk[512..520].fill(0); // primary signature gone
        disk[1024] ^= 0xff; // primary entries corrupted
        let t = PartitionTables::read(&disk, disk.len() as u64, 512).unwrap();
        let gpt = t.gpt.unwrap();
        assert!(gpt.primary.is_none());
        assert!(gpt.backup.is_some());
        assert!(gpt.entries_crc_valid);
        assert_eq!(gpt.partitions[0].extent.offset, 2048 * 512);
    }

    #[test]
    fn mbr_primary_entries() {
        let mut disk = vec![0u8; 1 << 20];
        let entry = |boot: u8, ty: u8, start: u32, n: u32| {
            let mut e = [0u8; 16];
            e[0] = boot;
            e[4] = ty;
            e[8..12].copy_from_slice(&start.to_le_bytes());
            e[12..16].copy_from_slice(&n.to_le_bytes());
            e
        };
        disk[446..462].copy_from_slice(&entry(0x80, 0x83, 63, 100));
        disk[478..494].copy_from_slice(&entry(0, 0xfb, 200, 50));
        disk[510..512].copy_from_slice(&[0x55, 0xaa]);
        let t = PartitionTables::read(&disk, disk.len() as u64, 512).unwrap();
        assert!(t.gpt.is_none());
        let mbr = t.mbr.as_ref().unwrap();
        assert!(!mbr.is_protective());
        assert_eq!(mbr.partitions.len(), 2);
        assert_eq!(mbr.partitions[1].number, 3);
        assert_eq!(mbr.partitions[1].type_byte, 0xfb);
        assert_eq!(
            t.partitions(),
            vec![
                (1, Extent::new(63 * 512, 100 * 512)),
                (3, Extent::new(200 * 512, 50 * 512))
            ]
        );

        // A FAT boot sector is not a partition table.
        disk[446] = 0x12;
        let t = PartitionTables::read(&disk, disk.len() as u64, 512).unwrap();
        assert!(t.mbr.is_none());
    }
}
