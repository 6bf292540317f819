//! The start and end of a disk as an image or a previous owner left them: MBR and GPT reading
//! (primary and backup headers, entry arrays, any of the sector sizes), then signature and
//! filesystem probing of the disk and of every partition found, as cleaning's protected-
//! partition check and `get_partition_uuids` do.
//!
//! Input: one byte choosing the logical sector size and how much longer than the bytes the
//! disk claims to be (the rest reads short), then the disk's bytes. Invariants: every extent
//! reported has an end that does not overflow; structures of CRC-valid headers and signatures
//! found lie within what was probed.

#![no_main]

use blockdev::partition_table::PartitionTables;
use blockdev::region::{Extent, Region};
use blockdev::signatures;
use libfuzzer_sys::fuzz_target;

fn end(e: Extent) -> u64 {
    e.offset
        .checked_add(e.len)
        .unwrap_or_else(|| panic!("extent {e:?} ends past u64::MAX"))
}

fn probe(disk: &[u8], extent: Extent) {
    let region = Region::new(disk, extent);
    if let Ok(found) = signatures::probe(&region) {
        for s in found {
            assert!(
                end(s.extent()) <= extent.len,
                "signature {s:?} outside the {} bytes probed",
                extent.len
            );
        }
    }
    let _ = disk_layout::fs_id::probe(&region);
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, disk)) = input.split_first() else {
        return;
    };
    let sector_size = if control & 1 == 0 { 512 } else { 4096 };
    let len = disk.len() as u64 + u64::from(control >> 1) * 4096;
    let Ok(tables) = PartitionTables::read(disk, len, sector_size) else {
        return;
    };
    if let Some(gpt) = &tables.gpt {
        for p in &gpt.partitions {
            end(p.extent);
        }
        for s in gpt.structures() {
            end(s);
        }
    }
    if let Some(mbr) = &tables.mbr {
        let _ = mbr.is_protective();
        for p in &mbr.partitions {
            end(p.extent);
        }
    }
    probe(disk, Extent::new(0, len));
    for (_, extent) in tables.partitions() {
        // As `list_partitions` does: a partition is probed only as far as the disk goes.
        let stop = end(extent).min(len);
        probe(
            disk,
            Extent::new(extent.offset, stop.saturating_sub(extent.offset)),
        );
    }
});
