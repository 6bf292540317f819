//! Fixture builders for tests of code that reads disks: a GPT as a partitioner writes it and
//! a GFS2 superblock, written into byte slices. Compiled for this crate's tests and, with the
//! `fixtures` feature, for the tests of the crates above.

use crate::partition_table::{crc32, Guid, GPT_SIGNATURE, MBR_TYPE_GPT_PROTECTIVE};
use crate::signatures::{GFS2_MAGIC, GFS2_SB_OFFSET};

pub const LINUX_FS: Guid = Guid::from_fields(
    0x0FC63DAF,
    0x8483,
    0x4772,
    [0x8E, 0x79, 0x3D, 0x69, 0x15, 0xD8, 0x47, 0xE4],
);

/// Writes a GPT the way a partitioner would (protective MBR, primary header at LBA 1 with
/// entries at LBA 2, backup entries and header at the end), for fixtures.
pub fn write_gpt(disk: &mut [u8], ss: u64, parts: &[(Guid, u64, u64)]) {
    let last = disk.len() as u64 / ss - 1;
    let mut entries = vec![0u8; 128 * 128];
    for (i, (ty, first, lastp)) in parts.iter().enumerate() {
        let e = &mut entries[i * 128..(i + 1) * 128];
        e[..16].copy_from_slice(&ty.0);
        e[16..32].copy_from_slice(&[i as u8 + 1; 16]);
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&lastp.to_le_bytes());
        e[56..58].copy_from_slice(&u16::from(b'p').to_le_bytes());
    }
    let entries_sectors = (entries.len() as u64).div_ceil(ss);
    let header = |my: u64, alt: u64, entries_lba: u64| {
        let mut h = vec![0u8; 92];
        h[..8].copy_from_slice(GPT_SIGNATURE);
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + entries_sectors).to_le_bytes());
        h[48..56].copy_from_slice(&(last - 1 - entries_sectors).to_le_bytes());
        h[56..72].copy_from_slice(&[0xd1; 16]);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&128u32.to_le_bytes());
        h[84..88].copy_from_slice(&128u32.to_le_bytes());
        h[88..92].copy_from_slice(&crc32(&entries).to_le_bytes());
        let crc = crc32(&h);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    };
    let put = |disk: &mut [u8], at: u64, bytes: &[u8]| {
        disk[at as usize..at as usize + bytes.len()].copy_from_slice(bytes);
    };
    put(disk, ss, &header(1, last, 2));
    put(disk, 2 * ss, &entries);
    let backup_entries = last - entries_sectors;
    put(disk, backup_entries * ss, &entries);
    put(disk, last * ss, &header(last, 1, backup_entries));
    let mut pmbr = [0u8; 16];
    pmbr[4] = MBR_TYPE_GPT_PROTECTIVE;
    pmbr[8..12].copy_from_slice(&1u32.to_le_bytes());
    pmbr[12..16].copy_from_slice(&(last.min(u32::MAX as u64) as u32).to_le_bytes());
    put(disk, 446, &pmbr);
    put(disk, 510, &[0x55, 0xaa]);
}

/// A GFS2 superblock, as `mkfs.gfs2` writes it, for fixtures.
pub fn write_gfs2(d: &mut [u8]) {
    let sb = GFS2_SB_OFFSET as usize;
    put(d, sb, &GFS2_MAGIC.to_be_bytes());
    put(d, sb + 4, &1u32.to_be_bytes());
    put(d, sb + 0x10, &100u32.to_be_bytes());
    put(d, sb + 0x18, &1801u32.to_be_bytes());
    put(d, sb + 0x1c, &1900u32.to_be_bytes());
}

fn put(d: &mut [u8], at: usize, bytes: &[u8]) {
    d[at..at + bytes.len()].copy_from_slice(bytes);
}
