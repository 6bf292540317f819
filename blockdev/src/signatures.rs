//! Finding and erasing the magic numbers by which tools recognise filesystems, RAID and LVM
//! members, encrypted volumes and partition tables: a small libblkid for `wipefs -a`.
//!
//! A [`Signature`] is where such a magic is and what it is. Erasing it zeroes exactly those
//! bytes, as `wipefs` does: enough for `blkid`, `mount`, `mdadm --assemble` and LVM to stop
//! seeing the old contents, without pretending to destroy the data.
//!
//! Probing reads a few hundred bytes at known offsets from the start and the end of a region
//! (a whole disk or one partition of it); kinds are named as `blkid` names them (`TYPE` or
//! `PTTYPE`), so logs read the same as with IPA.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use crate::region::{Extent, ReadAt, Region};

/// One magic number found in a region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// `blkid`'s name for what it belongs to: `ext4`, `swap`, `gpt`, `linux_raid_member`...
    pub kind: &'static str,
    /// Bytes from the start of the probed region.
    pub offset: u64,
    /// The magic bytes as found.
    pub magic: Vec<u8>,
}

impl Signature {
    fn new(kind: &'static str, offset: u64, magic: &[u8]) -> Self {
        Signature {
            kind,
            offset,
            magic: magic.to_vec(),
        }
    }

    /// Where the magic is, relative to the probed region.
    pub fn extent(&self) -> Extent {
        Extent::new(self.offset, self.magic.len() as u64)
    }
}

/// Kind of a Linux software RAID member, any superblock version.
pub const LINUX_RAID_MEMBER: &str = "linux_raid_member";
/// Kind of a GFS2 filesystem, a shared-disk cluster filesystem.
pub const GFS2: &str = "gfs2";

const MD_MAGIC: u32 = 0xa92b_4efc;
pub(crate) const GFS2_MAGIC: u32 = 0x0116_1970;
pub(crate) const GFS2_SB_OFFSET: u64 = 0x10000;
const BCACHE_MAGIC: [u8; 16] = [
    0xc6, 0x85, 0x73, 0xf6, 0x4e, 0x1a, 0x45, 0xca, 0x82, 0x65, 0xf5, 0x7f, 0x48, 0xba, 0x6d, 0x81,
];
const LUKS_MAGIC: &[u8] = b"LUKS\xba\xbe";
const LUKS2_SECONDARY_MAGIC: &[u8] = b"SKUL\xba\xbe";
/// Where a LUKS2 secondary header may be: right after the primary header, whose size is one
/// of these.
const LUKS2_SECONDARY_OFFSETS: [u64; 9] = [
    0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
];
/// Swap headers end at the end of the first page, for every page size Linux has used.
const SWAP_PAGE_SIZES: [u64; 5] = [4096, 8192, 16384, 32768, 65536];

/// Looks for one kind of signature and adds what it finds.
type Prober<R> = fn(&Region<'_, R>, &mut Vec<Signature>) -> io::Result<()>;

/// Every signature in `region`, ordered by offset.
pub fn probe<R: ReadAt + ?Sized>(region: &Region<'_, R>) -> io::Result<Vec<Signature>> {
    let mut found = Vec::new();
    let probers: [Prober<R>; 13] = [
        partition_tables,
        vfat,
        ntfs,
        ext,
        xfs,
        btrfs,
        swap,
        lvm2,
        md_raid,
        luks,
        iso9660,
        bcache,
        gfs,
    ];
    for probe in probers {
        probe(region, &mut found)?;
    }
    found.sort_by_key(|s| s.offset);
    found.dedup();
    Ok(found)
}

/// Zeroes the magic bytes of `signatures`, found in the region that starts `base` bytes into
/// `file`. Returns what was zeroed, relative to the file.
pub fn erase(file: &File, base: u64, signatures: &[Signature]) -> io::Result<Vec<Extent>> {
    let mut erased = Vec::with_capacity(signatures.len());
    for s in signatures {
        let at = s.extent().shifted(base);
        file.write_all_at(&vec![0; s.magic.len()], at.offset)?;
        erased.push(at);
    }
    Ok(erased)
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
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

/// Records `magic` at `offset` if it is there.
fn expect<R: ReadAt + ?Sized>(
    r: &Region<'_, R>,
    out: &mut Vec<Signature>,
    kind: &'static str,
    offset: u64,
    magic: &[u8],
) -> io::Result<bool> {
    let there = r.has(offset, magic)?;
    if there {
        out.push(Signature::new(kind, offset, magic));
    }
    Ok(there)
}

/// GPT headers (primary at LBA 1, backup where the primary says or at the last LBA, for 512-
/// and 4096-byte sectors), the protective MBR, and a DOS partition table.
fn partition_tables<R: ReadAt + ?Sized>(
    r: &Region<'_, R>,
    out: &mut Vec<Signature>,
) -> io::Result<()> {
    let mut gpt = false;
    for ss in [512u64, 4096] {
        if r.len() < 3 * ss {
            continue;
        }
        let last = (r.len() / ss - 1) * ss;
        if let Some(h) = r.bytes(ss, 92)? {
            if &h[..8] == b"EFI PART" {
                gpt = true;
                out.push(Signature::new("gpt", ss, b"EFI PART"));
                let alternate = le64(&h, 32)
                    .checked_mul(ss)
                    .filter(|a| *a != last && *a > ss);
                if let Some(alt) = alternate {
                    expect(r, out, "gpt", alt, b"EFI PART")?;
                }
            }
        }
        gpt |= expect(r, out, "gpt", last, b"EFI PART")?;
    }
    let Some(sector) = r.bytes(0, 512)? else {
        return Ok(());
    };
    if sector[510..] != [0x55, 0xaa] {
        return Ok(());
    }
    let entries: Vec<&[u8]> = (0..4)
        .map(|i| &sector[446 + 16 * i..462 + 16 * i])
        .collect();
    let protective = entries.iter().any(|e| e[4] == 0xee);
    if gpt || protective {
        out.push(Signature::new("PMBR", 510, &[0x55, 0xaa]));
    } else if entries.iter().all(|e| e[0] == 0 || e[0] == 0x80)
        && !fat_boot_sector(&sector)
        && &sector[3..11] != b"NTFS    "
    {
        out.push(Signature::new("dos", 510, &[0x55, 0xaa]));
    }
    Ok(())
}

/// Whether a sector carries a plausible FAT BIOS parameter block.
fn fat_boot_sector(s: &[u8]) -> bool {
    let sector_size = le16(s, 0x0b);
    let cluster = s[0x0d];
    let reserved = le16(s, 0x0e);
    let fats = s[0x10];
    let media = s[0x15];
    sector_size.is_power_of_two()
        && (512..=4096).contains(&sector_size)
        && cluster.is_power_of_two()
        && reserved != 0
        && (1..=4).contains(&fats)
        && (media == 0xf0 || media >= 0xf8)
}

/// FAT12/16/32: the type string, and, as `wipefs` also erases them, the jump instruction and
/// the boot signature that identify the boot sector on their own.
fn vfat<R: ReadAt + ?Sized>(r: &Region<'_, R>, out: &mut Vec<Signature>) -> io::Result<()> {
    let Some(s) = r.bytes(0, 512)? else {
        return Ok(());
    };
    if !fat_boot_sector(&s) {
        return Ok(());
    }
    let strings: [(usize, &[u8]); 6] = [
        (0x52, b"FAT32   "),
        (0x52, b"MSWIN"),
        (0x36, b"FAT12   "),
        (0x36, b"FAT16   "),
        (0x36, b"FAT     "),
        (0x36, b"MSDOS"),
    ];
    let typed = strings
        .iter()
        .find(|(at, magic)| s[*at..].starts_with(magic));
    if let Some((at, magic)) = typed {
        out.push(Signature::new("vfat", *at as u64, magic));
    }
    if s[0] == 0xeb || s[0] == 0xe9 {
        out.push(Signature::new("vfat", 0, &s[..1]));
    }
    if s[510..] == [0x55, 0xaa] {
        out.push(Signature::new("vfat", 510, &s[510..]));
    }
    Ok(())
}

fn ntfs<R: ReadAt + ?Sized>(r: &Region<'_, R>, out: &mut Vec<Signature>) -> io::Result<()> {
    expect(r, out, "ntfs", 3, b"NTFS    ").map(drop)
}

/// ext2/3/4 (and an external ext journal), told apart by feature flags as `blkid` does.
fn ext<R: ReadAt + ?Sized>(r: &Region<'_, R>, out: &mut Vec<Signature>) -> io::Result<()> {
    const SB: u64 = 0x400;
    let Some(sb) = r.bytes(SB, 0x68)? else {
        return Ok(());
    };
    if sb[0x38..0x3a] != [0x53, 0xef] {
        return Ok(());
    }
    let compat = le32(&sb, 0x5c);
    let incompat = le32(&sb, 0x60);
    let ro_compat = le32(&sb, 0x64);
    const HAS_JOURNAL: u32 = 0x4;
    const JOURNAL_DEV: u32 = 0x8;
    // What ext3 understands; anything beyond needs ext4.
    const EXT3_INCOMPAT: u32 = 0x2 | 0x4 | 0x10;
    const EXT3_RO_COMPAT: u32 = 0x1 | 0x2 | 0x4;
    let kind = if incompat & JOURNAL_DEV != 0 {
        "jbd"
    } else if incompat & !EXT3_INCOMPAT != 0 || ro_compat & !EXT3_RO_COMPAT != 0 {
        "ext4"
    } else if compat & HAS_JOURNAL != 0 {
        "ext3"
    } else {
        "ext2"
    };
    out.push(Signature::new(kind, SB + 0x38, &[0x53, 0xef]));
    Ok(())
}

fn xfs<R: ReadAt + ?Sized>(r: &Region<'_, R>, out: &mut Vec<Signature>) -> io::Result<()> {
    let Some(sb) = r.bytes(0, 8)? else {
        return Ok(());
    };
    let block_size = be32(&sb, 4);
    if &sb[..4] == b"XFSB" && block_size.is_power_of_two() && (512..=65536).contains(&block_size) {
        out.push(Signature::new("xfs", 0, b"XFSB"));
    }
    Ok(())
}

fn btrfs<R: ReadAt + ?Sized>(r: &Region<'_, R>, out: &mut Vec<Signature>) -> io::Result<()> {
    expect(r, out, "btrfs", 0x10040, b"_BHRfS_M").map(drop)
}

/// Swap areas and suspend-to-disk images, at the end of the first page.
fn swap<R: ReadAt + ?Sized>(r: &Region<'_, R>, out: &mut Vec<Signature>) -> io::Result<()> {
    let magics: [(&'static str, &[u8]); 6] = [
        ("swap", b"SWAPSPACE2"),
        ("swap", b"SWAP-SPACE"),
        ("swsuspend", b"S1SUSPEND"),
        ("swsuspend", b"S2SUSPEND"),
        ("swsuspend", b"ULSUSPEND"),
        ("swsuspend", b"LINHIB0001"),
    ];
    for page in SWAP_PAGE_SIZES {
        for (kind, magic) in magics {
            if expect(r, out, kind, page - 10, magic)? {
                break;
            }
        }
    }
    Ok(())
}

/// An LVM physical volume: a `LABELONE` label in one of the first four sectors, of type
/// `LVM2 001` (the bytes `wipefs` erases).
fn lvm2<R: ReadAt + ?Sized>(r: &Region<'_, R>, out: &mut Vec<Signature>) -> io::Result<()> {
    for sector in 0..4u64 {
        let label = sector * 512;
        if r.has(label, b"LABELONE")? {
            expect(r, out, "LVM2_member", label + 0x18, b"LVM2 001")?;
        }
    }
    Ok(())
}

/// Linux MD RAID superblocks: 0.90 (64 KiB-aligned, last 64 KiB, either byte order), 1.0 (8 to
/// 12 KiB from the end), 1.1 (start) and 1.2 (4 KiB in).
fn md_raid<R: ReadAt + ?Sized>(r: &Region<'_, R>, out: &mut Vec<Signature>) -> io::Result<()> {
    let sectors = r.len() / 512;
    let mut v1 = vec![0, 4096];
    if sectors >= 16 {
        v1.push(((sectors - 16) & !7) * 512);
    }
    for offset in v1 {
        let Some(sb) = r.bytes(offset, 0x98)? else {
            continue;
        };
        // The superblock records its own position, which tells a 1.x superblock from a copy
        // of one inside a file.
        if le32(&sb, 0) == MD_MAGIC && le32(&sb, 4) == 1 && le64(&sb, 0x90) == offset / 512 {
            out.push(Signature::new(LINUX_RAID_MEMBER, offset, &sb[..4]));
        }
    }
    if r.len() >= 0x20000 {
        let offset = (r.len() & !0xffff) - 0x10000;
        if let Some(sb) = r.bytes(offset, 8)? {
            let le = le32(&sb, 0) == MD_MAGIC && le32(&sb, 4) == 0;
            let be = be32(&sb, 0) == MD_MAGIC && be32(&sb, 4) == 0;
            if le || be {
                out.push(Signature::new(LINUX_RAID_MEMBER, offset, &sb[..4]));
            }
        }
    }
    Ok(())
}

/// LUKS1/LUKS2 headers; LUKS2 keeps a second header, found by `blkid` on its own.
fn luks<R: ReadAt + ?Sized>(r: &Region<'_, R>, out: &mut Vec<Signature>) -> io::Result<()> {
    expect(r, out, "crypto_LUKS", 0, LUKS_MAGIC)?;
    for offset in LUKS2_SECONDARY_OFFSETS {
        if let Some(h) = r.bytes(offset, 8)? {
            if h.starts_with(LUKS2_SECONDARY_MAGIC) && h[6..8] == [0, 2] {
                out.push(Signature::new("crypto_LUKS", offset, LUKS2_SECONDARY_MAGIC));
            }
        }
    }
    Ok(())
}

/// ISO 9660 volume descriptors in the first three descriptor slots.
fn iso9660<R: ReadAt + ?Sized>(r: &Region<'_, R>, out: &mut Vec<Signature>) -> io::Result<()> {
    for offset in [0x8001, 0x8801, 0x9001] {
        expect(r, out, "iso9660", offset, b"CD001")?;
    }
    Ok(())
}

fn bcache<R: ReadAt + ?Sized>(r: &Region<'_, R>, out: &mut Vec<Signature>) -> io::Result<()> {
    expect(r, out, "bcache", 0x1018, &BCACHE_MAGIC).map(drop)
}

/// GFS2 (and its predecessor GFS): the metadata magic at 64 KiB with the superblock's format
/// numbers, which distinguish the two.
fn gfs<R: ReadAt + ?Sized>(r: &Region<'_, R>, out: &mut Vec<Signature>) -> io::Result<()> {
    let Some(sb) = r.bytes(GFS2_SB_OFFSET, 0x20)? else {
        return Ok(());
    };
    if be32(&sb, 0) != GFS2_MAGIC {
        return Ok(());
    }
    let kind = match (be32(&sb, 0x18), be32(&sb, 0x1c)) {
        (1801 | 1802, 1900) => GFS2,
        (1309, 1401) => "gfs",
        _ => return Ok(()),
    };
    out.push(Signature::new(kind, GFS2_SB_OFFSET, &sb[..4]));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures::{write_gfs2, write_gpt, LINUX_FS};
    use std::path::Path;
    use std::process::Command;

    fn probe_bytes(data: &[u8]) -> Vec<(&'static str, u64)> {
        let r = Region::new(data, Extent::new(0, data.len() as u64));
        probe(&r)
            .unwrap()
            .into_iter()
            .map(|s| (s.kind, s.offset))
            .collect()
    }

    fn put(d: &mut [u8], at: usize, bytes: &[u8]) {
        d[at..at + bytes.len()].copy_from_slice(bytes);
    }

    #[test]
    fn nothing_in_zeros_or_noise() {
        assert!(probe_bytes(&vec![0u8; 1 << 20]).is_empty());
        let mut noise = vec![0u8; 1 << 20];
        rand::Rng::fill(&mut rand::rng(), noise.as_mut_slice());
        assert!(probe_bytes(&noise).is_empty());
        assert!(probe_bytes(&[]).is_empty(), "an empty region");
    }

    #[test]
    fn filesystems_at_their_offsets() {
        let mut d = vec![0u8; 1 << 20];
        // ext4: magic plus an incompat feature ext3 lacks (extents).
        put(&mut d, 0x438, &[0x53, 0xef]);
        put(&mut d, 0x460, &0x40u32.to_le_bytes());
        assert_eq!(probe_bytes(&d), [("ext4", 0x438)]);
        put(&mut d, 0x460, &0u32.to_le_bytes());
        put(&mut d, 0x45c, &4u32.to_le_bytes());
        assert_eq!(probe_bytes(&d), [("ext3", 0x438)]);
        put(&mut d, 0x45c, &0u32.to_le_bytes());
        assert_eq!(probe_bytes(&d), [("ext2", 0x438)]);

        let mut d = vec![0u8; 1 << 20];
        put(&mut d, 0, b"XFSB");
        put(&mut d, 4, &4096u32.to_be_bytes());
        put(&mut d, 0x10040, b"_BHRfS_M");
        put(&mut d, 0x1018, &BCACHE_MAGIC);
        put(&mut d, 0x8001, b"CD001");
        put(&mut d, 0x8801, b"CD001");
        assert_eq!(
            probe_bytes(&d),
            [
                ("xfs", 0),
                ("bcache", 0x1018),
                ("iso9660", 0x8001),
                ("iso9660", 0x8801),
                ("btrfs", 0x10040)
            ]
        );
    }

    #[test]
    fn swap_for_each_page_size() {
        for page in SWAP_PAGE_SIZES {
            let mut d = vec![0u8; 1 << 20];
            put(&mut d, page as usize - 10, b"SWAPSPACE2");
            assert_eq!(probe_bytes(&d), [("swap", page - 10)]);
        }
        let mut d = vec![0u8; 1 << 20];
        put(&mut d, 4086, b"S1SUSPEND");
        assert_eq!(probe_bytes(&d), [("swsuspend", 4086)]);
    }

    #[test]
    fn lvm_label_in_second_sector() {
        let mut d = vec![0u8; 1 << 20];
        put(&mut d, 512, b"LABELONE");
        put(&mut d, 512 + 0x18, b"LVM2 001");
        assert_eq!(probe_bytes(&d), [("LVM2_member", 0x218)]);
        // The type string alone is not a label.
        put(&mut d, 512, b"XXXXXXXX");
        assert!(probe_bytes(&d).is_empty());
    }

    fn md_v1(d: &mut [u8], offset: usize) {
        put(d, offset, &MD_MAGIC.to_le_bytes());
        put(d, offset + 4, &1u32.to_le_bytes());
        put(d, offset + 0x90, &(offset as u64 / 512).to_le_bytes());
    }

    #[test]
    fn md_superblocks_of_every_version() {
        let len = (1 << 20) + 7 * 512; // not 64 KiB-aligned, to exercise the rounding
        for offset in [0usize, 4096, ((len / 512 - 16) & !7) * 512] {
            let mut d = vec![0u8; len];
            md_v1(&mut d, offset);
            assert_eq!(
                probe_bytes(&d),
                [(LINUX_RAID_MEMBER, offset as u64)],
                "1.x at {offset}"
            );
        }
        let mut d = vec![0u8; len];
        let v090 = (len & !0xffff) - 0x10000;
        put(&mut d, v090, &MD_MAGIC.to_be_bytes());
        assert_eq!(probe_bytes(&d), [(LINUX_RAID_MEMBER, v090 as u64)]);
        // A 1.x superblock that does not record this position is a copy, not a member.
        let mut d = vec![0u8; len];
        md_v1(&mut d, 4096);
        put(&mut d, 4096 + 0x90, &9u64.to_le_bytes());
        assert!(probe_bytes(&d).is_empty());
    }

    #[test]
    fn luks2_has_two_headers() {
        let mut d = vec![0u8; 1 << 20];
        put(&mut d, 0, LUKS_MAGIC);
        put(&mut d, 6, &[0, 2]);
        put(&mut d, 0x4000, LUKS2_SECONDARY_MAGIC);
        put(&mut d, 0x4006, &[0, 2]);
        assert_eq!(
            probe_bytes(&d),
            [("crypto_LUKS", 0), ("crypto_LUKS", 0x4000)]
        );
    }

    #[test]
    fn gfs2_needs_its_format_numbers() {
        let mut d = vec![0u8; 1 << 20];
        write_gfs2(&mut d);
        assert_eq!(probe_bytes(&d), [(GFS2, 0x10000)]);
        put(&mut d, 0x10018, &1309u32.to_be_bytes());
        assert!(
            probe_bytes(&d).is_empty(),
            "magic with foreign format numbers"
        );
    }

    #[test]
    fn gpt_headers_and_protective_mbr() {
        for ss in [512u64, 4096] {
            let mut d = vec![0u8; 4 << 20];
            write_gpt(&mut d, ss, &[(LINUX_FS, 256, 300)]);
            let last = d.len() as u64 - ss;
            assert_eq!(
                probe_bytes(&d),
                [("PMBR", 510), ("gpt", ss), ("gpt", last)],
                "sector size {ss}"
            );
        }
    }

    #[test]
    fn dos_table_but_not_a_fat_boot_sector() {
        let mut d = vec![0u8; 1 << 20];
        put(
            &mut d,
            446,
            &[0x80, 0, 0, 0, 0x83, 0, 0, 0, 63, 0, 0, 0, 100, 0, 0, 0],
        );
        put(&mut d, 510, &[0x55, 0xaa]);
        assert_eq!(probe_bytes(&d), [("dos", 510)]);

        let mut fat = vec![0u8; 1 << 20];
        put(&mut fat, 0, &[0xeb, 0x3c, 0x90]);
        put(&mut fat, 0x0b, &512u16.to_le_bytes());
        fat[0x0d] = 4;
        put(&mut fat, 0x0e, &1u16.to_le_bytes());
        fat[0x10] = 2;
        fat[0x15] = 0xf8;
        put(&mut fat, 0x36, b"FAT16   ");
        put(&mut fat, 510, &[0x55, 0xaa]);
        assert_eq!(
            probe_bytes(&fat),
            [("vfat", 0), ("vfat", 0x36), ("vfat", 510)]
        );
    }

    #[test]
    fn probing_a_partition_sees_only_the_partition() {
        let mut d = vec![0u8; 4 << 20];
        put(&mut d, (1 << 20) + 0x438, &[0x53, 0xef]);
        let whole = Region::new(d.as_slice(), Extent::new(0, d.len() as u64));
        assert!(probe(&whole).unwrap().is_empty());
        let part = Region::new(d.as_slice(), Extent::new(1 << 20, 1 << 20));
        let found = probe(&part).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].offset, 0x438);
    }

    /// Whether `tool` is installed (in `PATH` or an `sbin` directory).
    fn have(tool: &str) -> bool {
        let path = std::env::var("PATH").unwrap_or_default();
        let found = path
            .split(':')
            .chain(["/sbin", "/usr/sbin"])
            .any(|dir| Path::new(dir).join(tool).is_file());
        found
    }

    /// `blkid -p`: exit status 2 means it found nothing.
    fn blkid_finds_nothing(path: &Path) -> bool {
        let out = Command::new("blkid").arg("-p").arg(path).output().unwrap();
        out.status.code() == Some(2)
    }

    /// Real tools write real signatures; after `erase` `blkid` must see nothing, as after
    /// `wipefs -a`. Only temporary regular files are formatted.
    #[test]
    fn real_mkfs_signatures_are_found_and_erased() {
        let tools: [(&str, &[&str], &str); 3] = [
            ("mkfs.ext4", &["-q", "-F"], "ext4"),
            ("mkswap", &[], "swap"),
            ("mkfs.vfat", &[], "vfat"),
        ];
        if !have("blkid") {
            eprintln!("blkid not installed; skipping");
            return;
        }
        for (tool, args, kind) in tools {
            if !have(tool) {
                eprintln!("{tool} not installed; skipping it");
                continue;
            }
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("image");
            let f = File::create(&path).unwrap();
            f.set_len(32 << 20).unwrap();
            let status = Command::new(tool)
                .args(args)
                .arg(&path)
                .output()
                .unwrap()
                .status;
            assert!(status.success(), "{tool}");
            assert!(!blkid_finds_nothing(&path), "blkid sees the {kind}");

            let f = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .unwrap();
            let region = Region::new(&f, Extent::new(0, 32 << 20));
            let found = probe(&region).unwrap();
            assert!(
                !found.is_empty() && found.iter().all(|s| s.kind == kind),
                "{tool}: {found:?}"
            );
            let erased = erase(&f, 0, &found).unwrap();
            assert_eq!(erased.len(), found.len());
            f.sync_all().unwrap();
            assert!(probe(&region).unwrap().is_empty());
            assert!(
                blkid_finds_nothing(&path),
                "{tool}: blkid still sees something"
            );
        }
    }
}
