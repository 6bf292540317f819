//! Writing GPTs: a fresh table (protective MBR, both headers and entry arrays), new
//! partitions in an existing one, and [`fix_gpt`], IPA's `sgdisk -e` after a whole-disk image
//! was written on a disk larger than the image.
//!
//! Reading goes through the hardware managers' reader; this module keeps the primary header
//! and the entry array as raw bytes so that fields it does not know (a header larger than 92
//! bytes, entries larger than 128) survive a rewrite untouched.

use std::io;

use blockdev::partition_table::{
    crc32, GptPartition, Guid, GPT_SIGNATURE, MBR_TYPE_GPT_PROTECTIVE,
};
use blockdev::region::Extent;

use crate::{DiskTarget, MIB};

/// EFI system partition.
pub const ESP_TYPE: Guid = Guid::from_fields(
    0xC12A7328,
    0xF81F,
    0x11D2,
    [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B],
);
/// BIOS boot partition (GRUB's core image on GPT disks booted by BIOS).
pub const BIOS_BOOT_TYPE: Guid = Guid::from_fields(
    0x21686148,
    0x6449,
    0x6E6F,
    [0x74, 0x4E, 0x65, 0x65, 0x64, 0x45, 0x46, 0x49],
);
/// Linux filesystem data (sgdisk's default type, 8300).
pub const LINUX_FS_TYPE: Guid = Guid::from_fields(
    0x0FC63DAF,
    0x8483,
    0x4772,
    [0x8E, 0x79, 0x3D, 0x69, 0x15, 0xD8, 0x47, 0xE4],
);
/// Linux swap.
pub const LINUX_SWAP_TYPE: Guid = Guid::from_fields(
    0x0657FD6D,
    0xA4AB,
    0x43C4,
    [0x84, 0xE5, 0x09, 0x33, 0xC8, 0x4B, 0x4F, 0x4F],
);
/// PowerPC PReP boot.
pub const PREP_TYPE: Guid = Guid::from_fields(
    0x9E1A2D38,
    0xC612,
    0x4316,
    [0xAA, 0x26, 0x8B, 0x49, 0x52, 0x1E, 0x5A, 0x8B],
);

const HEADER_SIZE: usize = 92;
const ENTRY_SIZE: u32 = 128;
const ENTRY_COUNT: u32 = 128;
const REVISION_1_0: u32 = 0x0001_0000;

#[derive(Debug, thiserror::Error)]
pub enum GptError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}: the primary GPT header is missing or damaged; not rewriting the table")]
    PrimaryDamaged(String),
    #[error("{device}: the GPT describes {gpt_sectors} sectors but the disk has {disk_sectors}; partition {number} ends beyond the disk")]
    LargerThanDisk {
        device: String,
        gpt_sectors: u64,
        disk_sectors: u64,
        number: u32,
    },
    #[error("sector size {0} is not supported (512 or 4096)")]
    SectorSize(u64),
    #[error("disk of {len} bytes is too small for a GPT")]
    TooSmall { len: u64 },
    #[error(
        "partition LBAs {first}-{last} are outside the usable area {first_usable}-{last_usable}"
    )]
    OutsideUsable {
        first: u64,
        last: u64,
        first_usable: u64,
        last_usable: u64,
    },
    #[error("partition LBAs {first}-{last} overlap partition {number}")]
    Overlap { first: u64, last: u64, number: u32 },
    #[error("the GPT has no free entry left")]
    Full,
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> GptError {
    let context = context.into();
    move |source| GptError::Io { context, source }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes(b[at..at + 4].try_into().unwrap_or_default())
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap_or_default())
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

/// A random GUID (UUID version 4) in on-disk order.
pub fn random_guid() -> Guid {
    guid_from_uuid(uuid::Uuid::new_v4())
}

/// A UUID as the GPT stores it (first three fields little-endian).
pub fn guid_from_uuid(u: uuid::Uuid) -> Guid {
    let (d1, d2, d3, d4) = u.as_fields();
    Guid::from_fields(d1, d2, d3, *d4)
}

/// How blkid prints a GPT GUID (`PARTUUID`, `PTUUID`): lower case.
pub fn guid_text(g: &Guid) -> String {
    g.to_string().to_lowercase()
}

/// Sectors per MiB: the alignment of every partition we create.
pub fn alignment(sector_size: u64) -> u64 {
    (MIB / sector_size).max(1)
}

pub fn align_up(lba: u64, align: u64) -> u64 {
    lba.div_ceil(align) * align
}

pub fn align_down(lba: u64, align: u64) -> u64 {
    lba / align * align
}

/// Sectors taken by `bytes` of entries.
fn sectors_for(bytes: u64, ss: u64) -> u64 {
    bytes.div_ceil(ss)
}

/// A protective MBR for a GPT disk of `disk_sectors` sectors: one partition of type 0xEE
/// from LBA 1 over the whole disk (capped at 2^32 - 1 sectors), as the UEFI specification
/// asks.
pub fn protective_mbr(disk_sectors: u64) -> [u8; 512] {
    let mut mbr = [0u8; 512];
    let e = &mut mbr[446..462];
    e[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
    e[4] = MBR_TYPE_GPT_PROTECTIVE;
    e[5..8].copy_from_slice(&[0xff, 0xff, 0xff]);
    e[8..12].copy_from_slice(&1u32.to_le_bytes());
    let size = disk_sectors.saturating_sub(1).min(u64::from(u32::MAX)) as u32;
    e[12..16].copy_from_slice(&size.to_le_bytes());
    mbr[510] = 0x55;
    mbr[511] = 0xaa;
    mbr
}

/// A GPT being edited: the primary header and entry array as raw bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Gpt {
    sector_size: u64,
    disk_sectors: u64,
    header: Vec<u8>,
    entries: Vec<u8>,
}

impl Gpt {
    /// An empty GPT for a disk of `disk_len` bytes: 128 entries of 128 bytes right after the
    /// primary header, a random disk GUID, the usable area between the two entry arrays.
    pub fn new(disk_len: u64, sector_size: u64) -> Result<Self, GptError> {
        if sector_size != 512 && sector_size != 4096 {
            return Err(GptError::SectorSize(sector_size));
        }
        let disk_sectors = disk_len / sector_size;
        let entries_bytes = u64::from(ENTRY_COUNT * ENTRY_SIZE);
        let entry_sectors = sectors_for(entries_bytes, sector_size);
        let first_usable = 2 + entry_sectors;
        if disk_sectors < 2 * first_usable + 1 {
            return Err(GptError::TooSmall { len: disk_len });
        }
        let mut header = vec![0u8; HEADER_SIZE];
        header[..8].copy_from_slice(GPT_SIGNATURE);
        put32(&mut header, 8, REVISION_1_0);
        put32(&mut header, 12, HEADER_SIZE as u32);
        put64(&mut header, 24, 1);
        put64(&mut header, 40, first_usable);
        put64(&mut header, 48, disk_sectors - 1 - entry_sectors - 1);
        header[56..72].copy_from_slice(&random_guid().0);
        put64(&mut header, 72, 2);
        put32(&mut header, 80, ENTRY_COUNT);
        put32(&mut header, 84, ENTRY_SIZE);
        let mut gpt = Gpt {
            sector_size,
            disk_sectors,
            header,
            entries: vec![0; entries_bytes as usize],
        };
        gpt.set_backup_at_end();
        Ok(gpt)
    }

    /// The GPT on `target` as its primary header describes it, or `None` without one. A
    /// primary header or entry array failing its CRC is an error: rewriting would spread the
    /// damage.
    pub fn read(target: &DiskTarget) -> Result<Option<Self>, GptError> {
        let device = target.path().display().to_string();
        let tables = target
            .tables()
            .map_err(io_err(format!("reading the partition table of {device}")))?;
        let Some(gpt) = tables.gpt else {
            return Ok(None);
        };
        let ss = gpt.sector_size;
        let primary = match gpt.primary {
            Some(h) if h.header_crc_valid => h,
            _ => return Err(GptError::PrimaryDamaged(device)),
        };
        let sector = target
            .read_vec(ss, ss as usize)
            .map_err(io_err(format!("reading the GPT header of {device}")))?;
        let header_size = (le32(&sector, 12) as usize).clamp(HEADER_SIZE, ss as usize);
        let entries_bytes = u64::from(primary.entry_count) * u64::from(primary.entry_size);
        let entries = target
            .read_vec(primary.entries_lba * ss, entries_bytes as usize)
            .map_err(io_err(format!("reading the GPT entries of {device}")))?;
        if crc32(&entries) != primary.entries_crc32 {
            return Err(GptError::PrimaryDamaged(device));
        }
        Ok(Some(Gpt {
            sector_size: ss,
            disk_sectors: target.len() / ss,
            header: sector[..header_size].to_vec(),
            entries,
        }))
    }

    pub fn sector_size(&self) -> u64 {
        self.sector_size
    }

    pub fn disk_guid(&self) -> Guid {
        Guid(self.header[56..72].try_into().unwrap_or_default())
    }

    pub fn first_usable_lba(&self) -> u64 {
        le64(&self.header, 40)
    }

    pub fn last_usable_lba(&self) -> u64 {
        le64(&self.header, 48)
    }

    fn entry_size(&self) -> usize {
        le32(&self.header, 84) as usize
    }

    fn entries_lba(&self) -> u64 {
        le64(&self.header, 72)
    }

    fn entry_sectors(&self) -> u64 {
        sectors_for(self.entries.len() as u64, self.sector_size)
    }

    /// Puts the backup structures at the end of the disk and extends the usable area to
    /// just before them (what `sgdisk -e` does).
    fn set_backup_at_end(&mut self) {
        let last = self.disk_sectors - 1;
        let last_usable = last - self.entry_sectors() - 1;
        put64(&mut self.header, 32, last);
        put64(&mut self.header, 48, last_usable);
    }

    /// The used entries.
    pub fn partitions(&self) -> Vec<GptPartition> {
        let ss = self.sector_size;
        self.entries
            .chunks_exact(self.entry_size().max(1))
            .enumerate()
            .filter_map(|(i, e)| {
                let type_guid = Guid(e[..16].try_into().ok()?);
                let (first, last) = (le64(e, 32), le64(e, 40));
                if type_guid.is_nil() || last < first {
                    return None;
                }
                let name: Vec<u16> = e[56..128]
                    .chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .take_while(|c| *c != 0)
                    .collect();
                Some(GptPartition {
                    number: i as u32 + 1,
                    type_guid,
                    unique_guid: Guid(e[16..32].try_into().ok()?),
                    attributes: le64(e, 48),
                    name: String::from_utf16_lossy(&name),
                    extent: Extent::new(first * ss, (last - first + 1) * ss),
                })
            })
            .collect()
    }

    /// Free LBA ranges `(first, last)` (inclusive) of the usable area, in disk order.
    pub fn free_blocks(&self) -> Vec<(u64, u64)> {
        let ss = self.sector_size;
        let mut used: Vec<(u64, u64)> = self
            .partitions()
            .iter()
            .map(|p| (p.extent.offset / ss, p.extent.end() / ss - 1))
            .collect();
        used.sort();
        let mut free = Vec::new();
        let mut next = self.first_usable_lba();
        for (first, last) in used {
            if first > next {
                free.push((next, first - 1));
            }
            next = next.max(last + 1);
        }
        if next <= self.last_usable_lba() {
            free.push((next, self.last_usable_lba()));
        }
        free
    }

    /// Adds a partition over LBAs `first..=last` in the first free entry; returns its number.
    pub fn add_partition(
        &mut self,
        first: u64,
        last: u64,
        type_guid: Guid,
        name: &str,
        unique_guid: Guid,
    ) -> Result<u32, GptError> {
        let (first_usable, last_usable) = (self.first_usable_lba(), self.last_usable_lba());
        if first < first_usable || last > last_usable || last < first {
            return Err(GptError::OutsideUsable {
                first,
                last,
                first_usable,
                last_usable,
            });
        }
        let ss = self.sector_size;
        if let Some(p) = self.partitions().iter().find(|p| {
            let (pf, pl) = (p.extent.offset / ss, p.extent.end() / ss - 1);
            first <= pl && pf <= last
        }) {
            return Err(GptError::Overlap {
                first,
                last,
                number: p.number,
            });
        }
        let size = self.entry_size();
        let slot = self
            .entries
            .chunks_exact(size)
            .position(|e| e[..16].iter().all(|b| *b == 0))
            .ok_or(GptError::Full)?;
        let e = &mut self.entries[slot * size..(slot + 1) * size];
        e.fill(0);
        e[..16].copy_from_slice(&type_guid.0);
        e[16..32].copy_from_slice(&unique_guid.0);
        put64(e, 32, first);
        put64(e, 40, last);
        for (i, unit) in name.encode_utf16().take(36).enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&unit.to_le_bytes());
        }
        Ok(slot as u32 + 1)
    }

    /// The primary header (at LBA 1) and the backup (at the last LBA), CRCs computed.
    fn headers(&self) -> (Vec<u8>, Vec<u8>) {
        let last = self.disk_sectors - 1;
        let mut primary = self.header.clone();
        put64(&mut primary, 24, 1);
        put64(&mut primary, 32, last);
        put32(&mut primary, 88, crc32(&self.entries));
        let mut backup = primary.clone();
        put64(&mut backup, 24, last);
        put64(&mut backup, 32, 1);
        put64(&mut backup, 72, last - self.entry_sectors());
        for h in [&mut primary, &mut backup] {
            put32(h, 16, 0);
            let crc = crc32(h);
            put32(h, 16, crc);
        }
        (primary, backup)
    }

    /// Writes both headers and both entry arrays (the backup ones at the end of the disk).
    /// The MBR is left alone: see [`protective_mbr`].
    pub fn write(&self, target: &DiskTarget) -> Result<(), GptError> {
        let device = target.path().display().to_string();
        let ss = self.sector_size;
        let last = self.disk_sectors - 1;
        let backup_entries = last - self.entry_sectors();
        if self.last_usable_lba() >= backup_entries || self.entries_lba() < 2 {
            return Err(GptError::PrimaryDamaged(device));
        }
        let (primary, backup) = self.headers();
        let sector = |h: &[u8]| {
            let mut s = vec![0u8; ss as usize];
            s[..h.len()].copy_from_slice(h);
            s
        };
        let mut entries = self.entries.clone();
        entries.resize((self.entry_sectors() * ss) as usize, 0);
        // The backup first, then the primary: a crash in between leaves a valid backup the
        // firmware and the kernel fall back to.
        let w = |bytes: &[u8], lba: u64, what: &str| {
            target
                .write_all_at(bytes, lba * ss)
                .map_err(io_err(format!("writing the {what} of {device}")))
        };
        w(&entries, backup_entries, "backup GPT entries")?;
        w(&sector(&backup), last, "backup GPT header")?;
        w(&entries, self.entries_lba(), "GPT entries")?;
        w(&sector(&primary), 1, "GPT header")?;
        Ok(())
    }

    /// Writes a fresh protective MBR for this GPT (only for a table created from scratch:
    /// an image's own MBR, possibly hybrid, is kept otherwise).
    pub fn write_protective_mbr(&self, target: &DiskTarget) -> Result<(), GptError> {
        target
            .write_all_at(&protective_mbr(self.disk_sectors), 0)
            .map_err(io_err(format!(
                "writing the protective MBR of {}",
                target.path().display()
            )))
    }
}

/// What [`fix_gpt`] found and did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case", tag = "action")]
pub enum GptFix {
    /// The disk has no GPT (an MBR disk, or nothing): nothing to do, as with IPA.
    NoGpt,
    /// The backup GPT is already at the last sector.
    AlreadyAtEnd,
    /// The backup was moved to the end and the usable area extended.
    Relocated {
        old_backup_lba: u64,
        new_backup_lba: u64,
        last_usable_lba: u64,
    },
}

/// IPA's `fix_gpt_partition`: when an image's GPT ends before the disk does, move the backup
/// header and entries to the end of the disk and extend the last usable LBA, recomputing the
/// CRCs. The primary entries are not touched. A pure protective MBR is stretched over the
/// disk too; a hybrid MBR is left as the image made it.
pub fn fix_gpt(target: &DiskTarget) -> Result<GptFix, GptError> {
    let device = target.path().display().to_string();
    let tables = target
        .tables()
        .map_err(io_err(format!("reading the partition table of {device}")))?;
    let Some(found) = &tables.gpt else {
        return Ok(GptFix::NoGpt);
    };
    let Some(primary) = &found.primary else {
        return Err(GptError::PrimaryDamaged(device));
    };
    let ss = found.sector_size;
    let disk_sectors = target.len() / ss;
    let last = disk_sectors - 1;
    if primary.alternate_lba == last {
        return Ok(GptFix::AlreadyAtEnd);
    }
    let Some(mut gpt) = Gpt::read(target)? else {
        return Ok(GptFix::NoGpt);
    };
    let old_backup = primary.alternate_lba;
    gpt.set_backup_at_end();
    if let Some(p) = gpt
        .partitions()
        .iter()
        .find(|p| p.extent.end() / ss > gpt.last_usable_lba() + 1)
    {
        return Err(GptError::LargerThanDisk {
            device,
            gpt_sectors: old_backup + 1,
            disk_sectors,
            number: p.number,
        });
    }
    gpt.write(target)?;
    // The old backup header would make tools that scan for GPT headers see two tables.
    if old_backup < last && old_backup > gpt.first_usable_lba() {
        let stale = target
            .read_vec(old_backup * ss, 8)
            .map_err(io_err(format!("reading {device}")))?;
        if stale == GPT_SIGNATURE {
            target.zero(old_backup * ss, ss).map_err(io_err(format!(
                "erasing the old backup GPT header of {device}"
            )))?;
        }
    }
    if let Some(mbr) = &tables.mbr {
        let pure = mbr.partitions.len() == 1
            && mbr.partitions[0].type_byte == MBR_TYPE_GPT_PROTECTIVE
            && mbr.partitions[0].number == 1;
        if pure {
            let size = last.min(u64::from(u32::MAX)) as u32;
            target
                .write_all_at(&size.to_le_bytes(), 446 + 12)
                .map_err(io_err(format!("updating the protective MBR of {device}")))?;
        }
    }
    target.sync().map_err(io_err(format!("syncing {device}")))?;
    tracing::info!(
        device,
        old_backup_lba = old_backup,
        new_backup_lba = last,
        "moved the backup GPT to the end of the disk"
    );
    Ok(GptFix::Relocated {
        old_backup_lba: old_backup,
        new_backup_lba: last,
        last_usable_lba: gpt.last_usable_lba(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_sgdisk_clean, run, temp_disk};

    #[test]
    fn fresh_gpt_with_partitions_passes_sgdisk() {
        for ss in [512u64, 4096] {
            let (tmp, target) = temp_disk(64 * MIB, ss);
            let mut gpt = Gpt::new(target.len(), ss).unwrap();
            let a = alignment(ss);
            let n1 = gpt
                .add_partition(a, 2 * a + a * 8 - 1, ESP_TYPE, "primary", random_guid())
                .unwrap();
            let free = gpt.free_blocks();
            let (first, last) = free[free.len() - 1];
            let n2 = gpt
                .add_partition(
                    align_up(first, a),
                    last,
                    LINUX_FS_TYPE,
                    "root",
                    random_guid(),
                )
                .unwrap();
            assert_eq!((n1, n2), (1, 2));
            gpt.write_protective_mbr(&target).unwrap();
            gpt.write(&target).unwrap();

            let read = Gpt::read(&target).unwrap().unwrap();
            assert_eq!(read.partitions(), gpt.partitions());
            assert_eq!(read.disk_guid(), gpt.disk_guid());
            let parts = read.partitions();
            assert_eq!(parts[0].type_guid, ESP_TYPE);
            assert_eq!(parts[0].extent.offset, MIB);
            assert_eq!(parts[1].name, "root");
            assert_eq!(read.last_usable_lba(), target.sectors() - 2 - 16384 / ss);
            // sgdisk reads files with 512-byte sectors only.
            if ss == 512 {
                assert_sgdisk_clean(tmp.path());
                let (_, text) =
                    run("sgdisk", &["-p", tmp.path().to_str().unwrap()]).unwrap_or_default();
                assert!(text.is_empty() || text.contains("EF00"), "{text}");
            }
            assert!(gpt
                .add_partition(a, a, LINUX_FS_TYPE, "x", random_guid())
                .is_err());
        }
    }

    /// A 16 MiB image with one partition, written at the start of a 64 MiB disk.
    fn small_image_on_big_disk(ss: u64) -> (tempfile::NamedTempFile, DiskTarget, Vec<u8>) {
        let (img_tmp, img) = temp_disk(16 * MIB, ss);
        let mut gpt = Gpt::new(img.len(), ss).unwrap();
        let a = alignment(ss);
        gpt.add_partition(a, 8 * a - 1, LINUX_FS_TYPE, "root", random_guid())
            .unwrap();
        gpt.write_protective_mbr(&img).unwrap();
        gpt.write(&img).unwrap();
        let bytes = std::fs::read(img_tmp.path()).unwrap();
        let (tmp, target) = temp_disk(64 * MIB, ss);
        target.write_all_at(&bytes, 0).unwrap();
        (tmp, target, bytes)
    }

    #[test]
    fn fix_gpt_moves_the_backup_to_the_end() {
        for ss in [512u64, 4096] {
            let (tmp, target, image) = small_image_on_big_disk(ss);
            if ss == 512 {
                let (_, text) = run("sgdisk", &["-v", tmp.path().to_str().unwrap()])
                    .unwrap_or((true, "it doesn't reside\nat the end of the disk".into()));
                assert!(
                    text.contains("it doesn't reside\nat the end of the disk"),
                    "{text}"
                );
            }
            let primary_entries_before = target.read_vec(2 * ss, 16384).unwrap();
            let fix = fix_gpt(&target).unwrap();
            let last = target.sectors() - 1;
            assert_eq!(
                fix,
                GptFix::Relocated {
                    old_backup_lba: image.len() as u64 / ss - 1,
                    new_backup_lba: last,
                    last_usable_lba: last - 16384 / ss - 1,
                }
            );
            assert_eq!(
                target.read_vec(2 * ss, 16384).unwrap(),
                primary_entries_before
            );
            let t = target.tables().unwrap();
            let gpt = t.gpt.unwrap();
            assert!(gpt.entries_crc_valid);
            assert!(gpt.primary.as_ref().unwrap().header_crc_valid);
            let backup = gpt.backup.unwrap();
            assert!(backup.header_crc_valid);
            assert_eq!(backup.my_lba, last);
            let old = target
                .read_vec((image.len() as u64 / ss - 1) * ss, 8)
                .unwrap();
            assert_eq!(old, [0; 8], "the old backup header is gone");
            assert_eq!(
                t.mbr.unwrap().partitions[0].extent.len,
                last * ss,
                "protective MBR covers the disk"
            );
            if ss == 512 {
                assert_sgdisk_clean(tmp.path());
            }
            assert_eq!(fix_gpt(&target).unwrap(), GptFix::AlreadyAtEnd);
        }
    }

    #[test]
    fn fix_gpt_leaves_mbr_disks_and_refuses_damage() {
        let (_tmp, target) = temp_disk(8 * MIB, 512);
        assert_eq!(fix_gpt(&target).unwrap(), GptFix::NoGpt);
        let mut mbr = crate::mbr_write::Mbr::new(0x1234_abcd);
        mbr.add_primary(2048, 4096, 0x83, true).unwrap();
        mbr.write(&target).unwrap();
        assert_eq!(fix_gpt(&target).unwrap(), GptFix::NoGpt);

        let (_tmp, target, _) = small_image_on_big_disk(512);
        target.write_all_at(&[0xff], 512 + 40).unwrap(); // primary header CRC now wrong
        assert!(matches!(fix_gpt(&target), Err(GptError::PrimaryDamaged(_))));
    }
}
