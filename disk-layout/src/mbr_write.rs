//! Writing DOS (MBR) partition tables: four primary entries in the first sector. The boot
//! code in front of them is kept when an existing table is edited.

use std::io;

use blockdev::partition_table::MBR_TYPE_GPT_PROTECTIVE;

use crate::DiskTarget;

/// Linux filesystem.
pub const TYPE_LINUX: u8 = 0x83;
/// Linux swap.
pub const TYPE_LINUX_SWAP: u8 = 0x82;
/// EFI system partition.
pub const TYPE_ESP: u8 = 0xef;
/// FAT32 with LBA addressing: what parted's `mkpart primary fat32` makes, and so IPA's
/// config drive partition on MBR disks.
pub const TYPE_FAT32_LBA: u8 = 0x0c;
/// PowerPC PReP boot.
pub const TYPE_PREP: u8 = 0x41;

#[derive(Debug, thiserror::Error)]
pub enum MbrError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("the MBR already has 4 primary partitions")]
    Full,
    #[error("partition sectors {start}+{sectors} do not fit an MBR (32-bit sector numbers)")]
    TooLarge { start: u64, sectors: u64 },
    #[error("partition sectors {start}+{sectors} overlap partition {number}")]
    Overlap {
        start: u64,
        sectors: u64,
        number: u32,
    },
}

/// One primary entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MbrEntry {
    /// 1 to 4.
    pub number: u32,
    pub bootable: bool,
    pub type_byte: u8,
    pub start_lba: u64,
    pub sectors: u64,
}

/// The first sector of a DOS-labelled disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mbr {
    sector: [u8; 512],
}

impl Mbr {
    /// An empty table with disk `signature` (the disk identifier IPA reports as `root uuid`).
    pub fn new(signature: u32) -> Self {
        let mut sector = [0u8; 512];
        sector[440..444].copy_from_slice(&signature.to_le_bytes());
        sector[510] = 0x55;
        sector[511] = 0xaa;
        Mbr { sector }
    }

    /// A random non-zero disk signature.
    pub fn random_signature() -> u32 {
        let b = uuid::Uuid::new_v4().into_bytes();
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]).max(1)
    }

    /// The DOS table on `target`, if it has one that is not a GPT's protective MBR.
    pub fn read(target: &DiskTarget) -> Result<Option<Self>, MbrError> {
        let tables = target.tables().map_err(|source| MbrError::Io {
            context: format!("reading the partition table of {}", target.path().display()),
            source,
        })?;
        match tables.mbr {
            Some(m) if !m.is_protective() && tables.gpt.is_none() => {}
            _ => return Ok(None),
        }
        let mut sector = [0u8; 512];
        target
            .read_exact_at(&mut sector, 0)
            .map_err(|source| MbrError::Io {
                context: format!("reading the MBR of {}", target.path().display()),
                source,
            })?;
        Ok(Some(Mbr { sector }))
    }

    pub fn signature(&self) -> u32 {
        u32::from_le_bytes([
            self.sector[440],
            self.sector[441],
            self.sector[442],
            self.sector[443],
        ])
    }

    pub fn set_signature(&mut self, signature: u32) {
        self.sector[440..444].copy_from_slice(&signature.to_le_bytes());
    }

    /// The used primary entries (extended partitions included, as IPA counts them).
    pub fn partitions(&self) -> Vec<MbrEntry> {
        (0..4)
            .filter_map(|i| {
                let e = &self.sector[446 + 16 * i..462 + 16 * i];
                let sectors = u32::from_le_bytes([e[12], e[13], e[14], e[15]]);
                (e[4] != 0 && sectors != 0).then(|| MbrEntry {
                    number: i as u32 + 1,
                    bootable: e[0] == 0x80,
                    type_byte: e[4],
                    start_lba: u64::from(u32::from_le_bytes([e[8], e[9], e[10], e[11]])),
                    sectors: u64::from(sectors),
                })
            })
            .collect()
    }

    /// Adds a primary partition in the first free slot; returns its number.
    pub fn add_primary(
        &mut self,
        start_lba: u64,
        sectors: u64,
        type_byte: u8,
        bootable: bool,
    ) -> Result<u32, MbrError> {
        let end = start_lba.checked_add(sectors);
        if start_lba == 0 || sectors == 0 || end.is_none_or(|e| e > u64::from(u32::MAX) + 1) {
            return Err(MbrError::TooLarge {
                start: start_lba,
                sectors,
            });
        }
        if let Some(p) = self
            .partitions()
            .iter()
            .find(|p| start_lba < p.start_lba + p.sectors && p.start_lba < start_lba + sectors)
        {
            return Err(MbrError::Overlap {
                start: start_lba,
                sectors,
                number: p.number,
            });
        }
        let slot = (0..4)
            .find(|i| self.sector[446 + 16 * i + 4] == 0)
            .ok_or(MbrError::Full)?;
        let e = &mut self.sector[446 + 16 * slot..462 + 16 * slot];
        e[0] = if bootable { 0x80 } else { 0 };
        e[1..4].copy_from_slice(&chs(start_lba));
        e[4] = type_byte;
        e[5..8].copy_from_slice(&chs(start_lba + sectors - 1));
        e[8..12].copy_from_slice(&(start_lba as u32).to_le_bytes());
        e[12..16].copy_from_slice(&(sectors as u32).to_le_bytes());
        Ok(slot as u32 + 1)
    }

    /// Whether this is a GPT's protective MBR.
    pub fn is_protective(&self) -> bool {
        self.partitions()
            .iter()
            .any(|p| p.type_byte == MBR_TYPE_GPT_PROTECTIVE)
    }

    /// Writes the table (the signature, the entries and `55 AA`), keeping the boot code that
    /// is on the disk.
    pub fn write(&self, target: &DiskTarget) -> Result<(), MbrError> {
        target
            .write_all_at(&self.sector[440..512], 440)
            .map_err(|source| MbrError::Io {
                context: format!("writing the MBR of {}", target.path().display()),
                source,
            })
    }
}

/// CHS address of `lba` with the 255-head, 63-sector geometry every tool assumes, or the
/// "beyond CHS" marker `FE FF FF` past cylinder 1023.
fn chs(lba: u64) -> [u8; 3] {
    const HEADS: u64 = 255;
    const SECTORS: u64 = 63;
    let cylinder = lba / (HEADS * SECTORS);
    if cylinder > 1023 {
        return [0xfe, 0xff, 0xff];
    }
    let head = (lba / SECTORS) % HEADS;
    let sector = lba % SECTORS + 1;
    [
        head as u8,
        (sector as u8) | (((cylinder >> 8) as u8) << 6),
        cylinder as u8,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{run, temp_disk};

    #[test]
    fn table_round_trips_and_sfdisk_agrees() {
        let (tmp, target) = temp_disk(64 << 20, 512);
        let mut mbr = Mbr::new(0x1234_abcd);
        assert_eq!(mbr.add_primary(2048, 20480, TYPE_LINUX, true).unwrap(), 1);
        assert_eq!(
            mbr.add_primary(22528, 4096, TYPE_LINUX_SWAP, false)
                .unwrap(),
            2
        );
        assert!(matches!(
            mbr.add_primary(4096, 10, TYPE_LINUX, false),
            Err(MbrError::Overlap { number: 1, .. })
        ));
        mbr.write(&target).unwrap();
        let read = Mbr::read(&target).unwrap().unwrap();
        assert_eq!(read, mbr);
        assert_eq!(read.signature(), 0x1234_abcd);
        assert_eq!(read.partitions()[1].type_byte, TYPE_LINUX_SWAP);
        if let Some((ok, text)) = run("sfdisk", &["-d", tmp.path().to_str().unwrap()]) {
            assert!(ok, "{text}");
            assert!(text.contains("label-id: 0x1234abcd"), "{text}");
            assert!(
                text.contains("start=        2048, size=       20480, type=83, bootable"),
                "{text}"
            );
            assert!(
                text.contains("start=       22528, size=        4096, type=82"),
                "{text}"
            );
        }
        mbr.add_primary(30000, 10, TYPE_LINUX, false).unwrap();
        mbr.add_primary(40000, 10, TYPE_LINUX, false).unwrap();
        assert!(matches!(
            mbr.add_primary(50000, 10, TYPE_LINUX, false),
            Err(MbrError::Full)
        ));
        assert_eq!(chs(2048), [32, 33, 0]);
        assert_eq!(chs(1 << 30), [0xfe, 0xff, 0xff]);
    }
}
