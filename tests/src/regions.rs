//! Which bytes IPA's `erase_devices_metadata` may change, computed from the layout a test
//! created, and a before/after comparison against them.
//!
//! IPA (`disk_utils.destroy_disk_metadata`) runs, for every partition and then every disk:
//! `wipefs --force --all` (zeroes the magic bytes of each signature libblkid finds), `dd` of
//! zeros over the first and the last 33 sectors (5 on 4K-sector disks), and `sgdisk -Z`,
//! which zeroes the protective MBR, the primary GPT header and its 32 sectors of entries
//! (the first 34 sectors, one more than the `dd`) and the backup GPT in the last 33 sectors,
//! on partitions as well as disks. So everything else must come out bit-for-bit unchanged.

use std::ops::Range;

use crate::loopdev::{PartitionSpec, SECTOR};

/// Sectors IPA zeroes at the start of a device with 512-byte sectors (`sgdisk -Z`'s 34).
pub const HEAD_SECTORS: u64 = 34;
/// Sectors IPA zeroes at the end of a device with 512-byte sectors.
pub const TAIL_SECTORS: u64 = 33;

/// Where a known signature's magic lies, relative to the device or partition start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Magic {
    pub offset: u64,
    pub len: u64,
}

/// The ext4 superblock magic 0xEF53 at byte 1080 (superblock at 1024 + 0x38).
pub const EXT4_MAGIC: Magic = Magic {
    offset: 1080,
    len: 2,
};

/// A filesystem made on a partition, with the magic that `wipefs` would zero.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Filesystem {
    pub partition: usize,
    pub magic: Magic,
}

/// What a test put on a disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub disk_bytes: u64,
    pub partitions: Vec<PartitionSpec>,
    pub filesystems: Vec<Filesystem>,
}

impl Layout {
    /// Byte ranges IPA's metadata erase may change, sorted and merged.
    pub fn wipe_regions(&self) -> Vec<Range<u64>> {
        let mut r = Vec::new();
        let ends = |start: u64, len: u64, r: &mut Vec<Range<u64>>| {
            r.push(start..start + (HEAD_SECTORS * SECTOR).min(len));
            if len > TAIL_SECTORS * SECTOR {
                r.push(start + len - TAIL_SECTORS * SECTOR..start + len);
            }
        };
        ends(0, self.disk_bytes, &mut r);
        // GPT magics: protective MBR 0x55AA at 510, "EFI PART" in LBA 1 and the last LBA.
        r.push(510..512);
        r.push(SECTOR..SECTOR + 8);
        r.push(self.disk_bytes - SECTOR..self.disk_bytes - SECTOR + 8);
        for p in &self.partitions {
            ends(p.byte_offset(), p.byte_len(), &mut r);
        }
        for fs in &self.filesystems {
            let p = &self.partitions[fs.partition - 1];
            let start = p.byte_offset() + fs.magic.offset;
            r.push(start..start + fs.magic.len);
        }
        merge(r)
    }
}

/// Sorts and merges overlapping or touching ranges.
pub fn merge(mut ranges: Vec<Range<u64>>) -> Vec<Range<u64>> {
    ranges.retain(|r| r.start < r.end);
    ranges.sort_by_key(|r| r.start);
    let mut out: Vec<Range<u64>> = Vec::new();
    for r in ranges {
        match out.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => out.push(r),
        }
    }
    out
}

/// Byte ranges where `before` and `after` differ, outside `allowed` (merged ranges).
pub fn changes_outside(before: &[u8], after: &[u8], allowed: &[Range<u64>]) -> Vec<Range<u64>> {
    let mut changed = Vec::new();
    let len = before.len().min(after.len()) as u64;
    let mut pos = 0u64;
    let mut allowed = allowed.iter().peekable();
    while pos < len {
        // Skip allowed ranges that end before pos; jump over the one containing pos.
        while allowed.peek().is_some_and(|a| a.end <= pos) {
            allowed.next();
        }
        let next_allowed = allowed.peek().map(|a| a.start).unwrap_or(len).min(len);
        if pos >= next_allowed {
            pos = allowed.peek().map(|a| a.end).unwrap_or(len);
            continue;
        }
        changed.extend(diff_ranges(before, after, pos, next_allowed));
        pos = next_allowed;
    }
    if before.len() != after.len() {
        changed.push(len..before.len().max(after.len()) as u64);
    }
    merge(changed)
}

fn diff_ranges(before: &[u8], after: &[u8], start: u64, end: u64) -> Vec<Range<u64>> {
    let (s, e) = (start as usize, end as usize);
    if before[s..e] == after[s..e] {
        return Vec::new();
    }
    let mut out = Vec::new();
    let mut run: Option<u64> = None;
    for i in s..e {
        let differs = before[i] != after[i];
        match (differs, run) {
            (true, None) => run = Some(i as u64),
            (false, Some(r)) => {
                out.push(r..i as u64);
                run = None;
            }
            _ => {}
        }
    }
    if let Some(r) = run {
        out.push(r..end);
    }
    out
}

/// Ranges within `regions` that are not all zero bytes in `data`.
pub fn nonzero_within(data: &[u8], regions: &[Range<u64>]) -> Vec<Range<u64>> {
    let zeros = vec![0u8; data.len()];
    let mut out = Vec::new();
    for r in regions {
        let end = r.end.min(data.len() as u64);
        if r.start < end {
            out.extend(diff_ranges(&zeros, data, r.start, end));
        }
    }
    merge(out)
}

/// `offset..end (N bytes)` lines for a failure message, at most `max` of them.
pub fn describe(ranges: &[Range<u64>], max: usize) -> String {
    let mut s: Vec<String> = ranges
        .iter()
        .take(max)
        .map(|r| {
            format!(
                "  bytes {}..{} ({} bytes, sector {})",
                r.start,
                r.end,
                r.end - r.start,
                r.start / SECTOR
            )
        })
        .collect();
    if ranges.len() > max {
        s.push(format!("  ... and {} more ranges", ranges.len() - max));
    }
    s.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loopdev::LINUX_FS;

    fn layout() -> Layout {
        Layout {
            disk_bytes: 64 << 20,
            partitions: vec![PartitionSpec {
                first_lba: 2048,
                last_lba: 129023,
                type_guid: LINUX_FS.into(),
            }],
            filesystems: vec![Filesystem {
                partition: 1,
                magic: EXT4_MAGIC,
            }],
        }
    }

    #[test]
    fn regions_are_the_ends_of_disk_and_partitions() {
        let disk = 64u64 << 20;
        assert_eq!(
            layout().wipe_regions(),
            vec![
                0..34 * 512,
                2048 * 512..(2048 + 34) * 512,
                (129024 - 33) * 512..129024 * 512,
                disk - 33 * 512..disk,
            ]
        );
    }

    #[test]
    fn finds_changes_only_outside_allowed() {
        let before = vec![7u8; 100];
        let mut after = before.clone();
        after[5] = 0; // allowed
        after[50] = 0; // not allowed
        after[51] = 0;
        after[99] = 1; // not allowed, last byte
        let allowed = merge(vec![0..10, 60..70]);
        assert_eq!(
            changes_outside(&before, &after, &allowed),
            vec![50..52, 99..100]
        );
        assert!(changes_outside(&before, &before, &allowed).is_empty());
        let everything = merge(vec![0..50, 50..before.len() as u64]);
        assert!(changes_outside(&before, &after, &everything).is_empty());
    }

    #[test]
    fn nonzero_reports_leftovers() {
        let mut data = vec![0u8; 64];
        data[3] = 1;
        data[40] = 2;
        assert_eq!(nonzero_within(&data, &[0..10, 20..30]), vec![3..4]);
    }

    #[test]
    fn merge_joins_touching_ranges() {
        assert_eq!(
            merge(vec![5..6, 0..2, 2..4, 10..12, 11..13]),
            vec![0..4, 5..6, 10..13]
        );
    }
}
