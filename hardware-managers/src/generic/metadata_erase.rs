//! The `erase_devices_metadata` step: make every disk look blank to tools without overwriting
//! the data, as IPA's `destroy_disk_metadata` does with `wipefs`, `dd` and `sgdisk`.
//!
//! On each device (each partition first, then the disk) this zeroes:
//! * every signature's magic bytes (`wipefs --force --all`);
//! * the first and last 33 sectors (5 with 4096-byte sectors): room for a GPT and any small
//!   structure near either end (IPA's two `dd` runs);
//! * the GPT headers and entry arrays wherever valid headers put them, and where `sgdisk -Z`
//!   assumes them (MBR, header and 128 entries at the start, entries and header at the end).
//!
//! All of it goes through one descriptor of the whole disk at each partition's offset, so
//! there is one page cache to flush; then the kernel is told to forget the partitions.
//! Everything is decided from the disk as it was before the first write (so the GPT that says
//! where the backup is has not been zeroed yet), then probed again afterwards: a signature
//! still found is erased too, as `wipefs -a` repeats until nothing is left.

use std::fs::File;
use std::os::unix::fs::FileExt;

use ironic_protocol::Node;
use serde_json::{json, Map, Value};

use super::options::GenericOptions;
use super::{protected, skip_list};
use crate::HardwareError;
use crate::{Disk, DiskRegion};
use blockdev::partition_table::PartitionTables;
use blockdev::region::{merge, Extent, Region};
use blockdev::signatures::{self, Signature, LINUX_RAID_MEMBER};
use blockdev::{rescan, DeviceGuard, WritableDisk};

const ACTION: &str = "erase the metadata of";
/// `sgdisk`'s default GPT: 128 entries of 128 bytes.
const DEFAULT_GPT_ENTRY_BYTES: u64 = 128 * 128;
/// How many times a region is probed again after erasing.
const REPROBES: usize = 3;

/// Runs the step on `disks`; the result maps each device to what was done to it.
pub(crate) fn erase_devices_metadata(
    guard: &DeviceGuard,
    disks: &[Disk],
    node: &Node,
    options: &GenericOptions,
) -> Result<Value, HardwareError> {
    let mut report = Map::new();
    let mut writable = Vec::new();
    for d in skip_list::apply(node, disks, &mut report)? {
        let skip = if d.virtual_media {
            Some("virtual media device")
        } else if d.read_only {
            Some("read-only device")
        } else {
            None
        };
        match skip {
            Some(why) => {
                tracing::info!(device = %d.path.display(), why, "skipping erasure");
                report.insert(d.path.display().to_string(), json!({ "skipped": why }));
            }
            None => writable.push(d),
        }
    }
    for d in &writable {
        guard.check(&d.path, ACTION)?;
    }
    protected::check_disks(&writable, node, options)?;

    let mut errors: Vec<(String, String)> = Vec::new();
    for disk in writable {
        let target = match WritableDisk::open(&disk.path, guard, ACTION) {
            Ok(t) => t,
            Err(e) => {
                errors.push((disk.path.display().to_string(), e.to_string()));
                continue;
            }
        };
        let outcome = erase_disk(target.file(), disk);
        for r in &outcome.regions {
            tracing::info!(device = r.name, report = %r.to_json(disk), "erased metadata");
            report.insert(r.name.clone(), r.to_json(disk));
        }
        errors.extend(outcome.errors);
    }
    if errors.is_empty() {
        return Ok(Value::Object(report));
    }
    let list: Vec<String> = errors
        .iter()
        .map(|(d, e)| format!("\"{d}\": {e}"))
        .collect();
    Err(HardwareError::BlockDeviceErase(format!(
        "Failed to erase the metadata on the device(s): {}",
        list.join("; ")
    )))
}

/// What was done to one region.
#[derive(Debug, Default)]
pub(crate) struct RegionReport {
    pub name: String,
    pub extent: Extent,
    pub whole_disk: bool,
    pub skipped: Option<&'static str>,
    /// Signatures with offsets relative to the whole disk.
    pub signatures: Vec<Signature>,
    /// Relative to the whole disk, merged.
    pub zeroed: Vec<Extent>,
}

impl RegionReport {
    pub(crate) fn to_json(&self, disk: &Disk) -> Value {
        if let Some(why) = self.skipped {
            return json!({"skipped": why});
        }
        let mut v = json!({
            "signatures": self.signatures.iter().map(|s| json!({
                "kind": s.kind, "offset": s.offset, "length": s.magic.len(),
            })).collect::<Vec<_>>(),
            "zeroed": self.zeroed,
        });
        if !self.whole_disk {
            v["disk"] = json!(disk.path.display().to_string());
            v["extent"] = json!(self.extent);
        }
        v
    }
}

/// The outcome of one disk: reports per region, and errors as `(device, reason)`.
#[derive(Debug, Default)]
pub(crate) struct DiskOutcome {
    pub regions: Vec<RegionReport>,
    pub errors: Vec<(String, String)>,
}

/// Erases the metadata of `disk`, whose bytes `file` (the whole disk, open for writing) holds.
pub(crate) fn erase_disk(file: &File, disk: &Disk) -> DiskOutcome {
    let mut out = DiskOutcome::default();
    let disk_name = disk.path.display().to_string();
    let lss = disk.logical_sector_size.max(512);
    let tables = match PartitionTables::read(file, disk.size, lss) {
        Ok(t) => t,
        Err(e) => {
            out.errors
                .push((disk_name, format!("reading the partition tables: {e}")));
            return out;
        }
    };
    let regions = disk.regions(&tables);

    // Plan everything from the disk as it is now.
    let mut plans: Vec<(DiskRegion, RegionReport)> = Vec::new();
    let mut raid_partition = false;
    for region in regions {
        let mut report = RegionReport {
            name: region.name.clone(),
            extent: region.extent,
            whole_disk: region.whole_disk,
            ..RegionReport::default()
        };
        let found = match signatures::probe(&Region::new(file, region.extent)) {
            Ok(f) => f,
            Err(e) => {
                out.errors
                    .push((region.name.clone(), format!("probing for signatures: {e}")));
                continue;
            }
        };
        let md_holder = region.holders.iter().any(|h| h.starts_with("md"));
        let member = md_holder || found.iter().any(|s| s.kind == LINUX_RAID_MEMBER);
        raid_partition |= member && !region.whole_disk;
        // Like IPA (`lsblk --fs` of a disk lists its partitions' types too), a disk with a
        // RAID member partition is a RAID member.
        if member || (region.whole_disk && raid_partition) {
            tracing::info!(
                device = region.name,
                "skipping erasure of RAID member device"
            );
            report.skipped = Some("Linux RAID member");
        } else if region.read_only {
            tracing::info!(device = region.name, "skipping erasure of read-only device");
            report.skipped = Some("read-only device");
        } else {
            report.signatures = found;
            let region_tables = if region.whole_disk {
                Ok(tables.clone())
            } else {
                PartitionTables::read(&Region::new(file, region.extent), region.extent.len, lss)
            };
            match region_tables {
                Ok(t) => report.zeroed = zero_extents(region.extent.len, lss, &t),
                Err(e) => {
                    out.errors.push((
                        region.name.clone(),
                        format!("reading partition tables: {e}"),
                    ));
                    continue;
                }
            }
        }
        plans.push((region, report));
    }

    // Anything cached for a partition must reach the disk before the erase, not after it.
    for (region, _) in &plans {
        if let Some(node) = region.node.as_ref().filter(|_| !region.whole_disk) {
            if let Err(e) = rescan::flush_buffers(node) {
                out.errors
                    .push((region.name.clone(), format!("flushing its buffers: {e}")));
            }
        }
    }

    for (region, report) in &mut plans {
        if report.skipped.is_some() {
            continue;
        }
        if let Err(e) = wipe_region(file, region, report) {
            out.errors.push((region.name.clone(), e));
        }
    }

    if let Err(e) = file.sync_all() {
        out.errors
            .push((disk_name.clone(), format!("syncing data to disk: {e}")));
    }
    let disk_skipped = plans
        .iter()
        .any(|(r, rep)| r.whole_disk && rep.skipped.is_some());
    for (region, _) in &plans {
        if let Some(node) = region.node.as_ref().filter(|_| !region.whole_disk) {
            if let Err(e) = rescan::flush_buffers(node) {
                out.errors
                    .push((region.name.clone(), format!("flushing its buffers: {e}")));
            }
        }
    }
    if !disk_skipped {
        if let Err(e) = rescan::reread_partition_table(file) {
            out.errors.push((
                disk_name,
                format!("re-reading the partition table (is a partition in use?): {e}"),
            ));
        }
    }
    out.regions = plans.into_iter().map(|(_, r)| r).collect();
    out
}

/// Erases the planned signatures and ranges of one region, then probes again and erases what
/// is still found. Offsets in `report` become relative to the whole disk.
fn wipe_region(file: &File, region: &DiskRegion, report: &mut RegionReport) -> Result<(), String> {
    let base = region.extent.offset;
    let planned = std::mem::take(&mut report.signatures);
    let mut zeroed: Vec<Extent> = report.zeroed.iter().map(|e| e.shifted(base)).collect();
    signatures::erase(file, base, &planned).map_err(|e| format!("erasing signatures: {e}"))?;
    report.signatures = planned.into_iter().map(|s| absolute(s, base)).collect();
    for e in merge(zeroed.clone()) {
        write_zeros(file, e)
            .map_err(|err| format!("zeroing {} bytes at offset {}: {err}", e.len, e.offset))?;
    }
    for _ in 0..REPROBES {
        let left = signatures::probe(&Region::new(file, region.extent))
            .map_err(|e| format!("probing for signatures after erasing: {e}"))?;
        if left.is_empty() {
            report.zeroed = merge(zeroed);
            return Ok(());
        }
        let erased =
            signatures::erase(file, base, &left).map_err(|e| format!("erasing signatures: {e}"))?;
        zeroed.extend(erased);
        report
            .signatures
            .extend(left.into_iter().map(|s| absolute(s, base)));
    }
    report.zeroed = merge(zeroed);
    Err("signatures are still found after erasing them".into())
}

fn absolute(mut s: Signature, base: u64) -> Signature {
    s.offset += base;
    s
}

/// The ranges of a device of `len` bytes with `lss`-byte sectors that IPA's algorithm zeroes
/// besides signatures, relative to the device, unmerged.
pub(crate) fn zero_extents(len: u64, lss: u64, tables: &PartitionTables) -> Vec<Extent> {
    let sectors = len / lss;
    let clamp = |e: Extent| {
        let end = e.end().min(sectors * lss);
        Extent::new(e.offset, end.saturating_sub(e.offset))
    };
    // UEFI: the first usable LBA is at least 34 with 512-byte sectors, 6 with 4096-byte ones;
    // IPA's `dd` covers everything before it but the last sector.
    let n = if lss >= 4096 { 5 } else { 33 };
    let mut extents = vec![Extent::new(0, n.min(sectors) * lss)];
    if len > n * lss {
        extents.push(Extent::new((sectors - n) * lss, n * lss));
    }
    // `sgdisk -Z` on a disk without a GPT it can read: MBR, header and default entry array
    // at the start; entry array and header at the end.
    let entry_sectors = DEFAULT_GPT_ENTRY_BYTES.div_ceil(lss);
    extents.push(clamp(Extent::new(0, (2 + entry_sectors) * lss)));
    if sectors > 1 + entry_sectors {
        let tail = sectors - 1 - entry_sectors;
        extents.push(clamp(Extent::new(tail * lss, (1 + entry_sectors) * lss)));
    }
    // ... and wherever a valid GPT says its structures are.
    if let Some(gpt) = &tables.gpt {
        extents.extend(
            gpt.structures()
                .into_iter()
                .filter(|e| e.offset < sectors * lss)
                .map(clamp),
        );
    }
    extents.retain(|e| e.len > 0);
    extents
}

/// Writes zeros over `extent` with plain positional writes; the kernel turns writes that do
/// not cover whole sectors into read-modify-write in the page cache.
fn write_zeros(file: &File, extent: Extent) -> std::io::Result<()> {
    const CHUNK: u64 = 1 << 20;
    let zeros = vec![0u8; extent.len.min(CHUNK) as usize];
    let mut done = 0;
    while done < extent.len {
        let n = (extent.len - done).min(CHUNK);
        file.write_all_at(&zeros[..n as usize], extent.offset + done)?;
        done += n;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generic::protected::tests::disk;
    use blockdev::fixtures::{write_gpt, LINUX_FS};

    fn file_with(bytes: &[u8]) -> (tempfile::NamedTempFile, File) {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), bytes).unwrap();
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(f.path())
            .unwrap();
        (f, file)
    }

    fn noise(len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        rand::Rng::fill(&mut rand::rng(), v.as_mut_slice());
        v
    }

    /// Which bytes changed, as merged extents.
    fn changed(before: &[u8], after: &[u8]) -> Vec<Extent> {
        let mut out = Vec::new();
        let mut i = 0;
        while i < before.len() {
            if before[i] != after[i] {
                let start = i;
                while i < before.len() && before[i] != after[i] {
                    i += 1;
                }
                out.push(Extent::new(start as u64, (i - start) as u64));
            } else {
                i += 1;
            }
        }
        out
    }

    fn within(changes: &[Extent], allowed: &[Extent]) -> bool {
        let allowed = merge(allowed.to_vec());
        changes.iter().all(|c| {
            allowed
                .iter()
                .any(|a| c.offset >= a.offset && c.end() <= a.end())
        })
    }

    #[test]
    fn ipa_ranges_for_both_sector_sizes() {
        let none = PartitionTables::default();
        let mib = 1u64 << 20;
        assert_eq!(
            merge(zero_extents(mib, 512, &none)),
            [
                Extent::new(0, 34 * 512),
                Extent::new(mib - 33 * 512, 33 * 512)
            ]
        );
        assert_eq!(
            merge(zero_extents(mib, 4096, &none)),
            [
                Extent::new(0, 6 * 4096),
                Extent::new(mib - 5 * 4096, 5 * 4096)
            ]
        );
        // A device smaller than the ranges: everything, once.
        assert_eq!(
            merge(zero_extents(20 * 512, 512, &none)),
            [Extent::new(0, 20 * 512)]
        );
        // A partial last sector is not touched (dd counts whole sectors).
        assert_eq!(
            merge(zero_extents(mib + 100, 512, &none)),
            [
                Extent::new(0, 34 * 512),
                Extent::new(mib - 33 * 512, 33 * 512)
            ]
        );
    }

    #[test]
    fn gpt_structures_where_the_headers_put_them() {
        // A GPT whose entries start at LBA 2 but is on a disk with a foreign layout: the
        // headers are honoured besides the default ranges.
        let mut d = vec![0u8; 8 << 20];
        write_gpt(&mut d, 4096, &[(LINUX_FS, 256, 511)]);
        let t = PartitionTables::read(&d, d.len() as u64, 512).unwrap();
        let z = merge(zero_extents(d.len() as u64, 512, &t));
        let len = d.len() as u64;
        // 4096-byte GPT on a 512-byte disk: header at 4096, entries at 8192..24576; backup
        // entries and header in the last 5 4K sectors.
        assert_eq!(
            z,
            [Extent::new(0, 24576), Extent::new(len - 5 * 4096, 5 * 4096)]
        );
    }

    #[test]
    fn erases_partitions_and_disk_and_nothing_else() {
        let len = 8usize << 20;
        let mut d = noise(len);
        write_gpt(
            &mut d,
            512,
            &[(LINUX_FS, 2048, 6143), (LINUX_FS, 6144, 14335)],
        );
        // ext4 magic on p1, swap on p2, btrfs (beyond the zeroed sectors) on p2.
        let p1 = 2048 * 512;
        let p2 = 6144 * 512;
        d[p1..p1 + 2048].fill(0);
        d[p1 + 0x438..p1 + 0x43a].copy_from_slice(&[0x53, 0xef]);
        d[p2 + 4086..p2 + 4096].copy_from_slice(b"SWAPSPACE2");
        d[p2 + 0x10040..p2 + 0x10048].copy_from_slice(b"_BHRfS_M");
        let before = d.clone();
        let (tmp, file) = file_with(&d);
        // p2 is unknown to the kernel: it must be found in the table.
        let disk = disk(len as u64, &[(1, p1 as u64, 4096 * 512)]);
        let out = erase_disk(&file, &disk);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let names: Vec<_> = out.regions.iter().map(|r| r.name.as_str()).collect();
        assert_eq!(names, ["/dev/sdx1", "/dev/sdx partition 2", "/dev/sdx"]);

        let after = std::fs::read(tmp.path()).unwrap();
        let sector = 512u64;
        let region_ranges = |start: u64, size: u64| {
            [
                Extent::new(start, 34 * sector),
                Extent::new(start + size - 33 * sector, 33 * sector),
            ]
        };
        let mut allowed: Vec<Extent> = Vec::new();
        allowed.extend(region_ranges(0, len as u64));
        allowed.extend(region_ranges(p1 as u64, 4096 * 512));
        allowed.extend(region_ranges(p2 as u64, 8192 * 512));
        allowed.push(Extent::new(p2 as u64 + 0x10040, 8));
        let changes = changed(&before, &after);
        let outside: Vec<_> = changes
            .iter()
            .filter(|c| !within(&[**c], &allowed))
            .collect();
        assert!(
            outside.is_empty(),
            "changed outside the IPA ranges: {outside:?}"
        );
        for a in &allowed {
            assert!(after[a.offset as usize..a.end() as usize]
                .iter()
                .all(|b| *b == 0));
        }
        let p2_report = &out.regions[1];
        let kinds: Vec<_> = p2_report
            .signatures
            .iter()
            .map(|s| (s.kind, s.offset))
            .collect();
        assert_eq!(
            kinds,
            [("swap", p2 as u64 + 4086), ("btrfs", p2 as u64 + 0x10040)]
        );
        let disk_report = &out.regions[2];
        let kinds: Vec<_> = disk_report.signatures.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, ["PMBR", "gpt", "gpt"]);
        let whole = Region::new(&file, Extent::new(0, len as u64));
        assert!(signatures::probe(&whole).unwrap().is_empty());
    }

    #[test]
    fn raid_members_and_read_only_partitions_are_left_alone() {
        let len = 4usize << 20;
        let mut d = noise(len);
        write_gpt(
            &mut d,
            512,
            &[(LINUX_FS, 2048, 4095), (LINUX_FS, 4096, 6143)],
        );
        // md 1.2 superblock on p1.
        let sb = 2048 * 512 + 4096;
        d[sb..sb + 4].copy_from_slice(&0xa92b_4efcu32.to_le_bytes());
        d[sb + 4..sb + 8].copy_from_slice(&1u32.to_le_bytes());
        d[sb + 0x90..sb + 0x98].copy_from_slice(&8u64.to_le_bytes());
        let before = d.clone();
        let (tmp, file) = file_with(&d);
        let mut disk = disk(
            len as u64,
            &[(1, 2048 * 512, 2048 * 512), (2, 4096 * 512, 2048 * 512)],
        );
        let out = erase_disk(&file, &disk);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let skipped: Vec<_> = out
            .regions
            .iter()
            .map(|r| (r.name.as_str(), r.skipped))
            .collect();
        assert_eq!(
            skipped,
            [
                ("/dev/sdx2", None),
                ("/dev/sdx1", Some("Linux RAID member")),
                ("/dev/sdx", Some("Linux RAID member"))
            ]
        );
        let after = std::fs::read(tmp.path()).unwrap();
        let changes = changed(&before, &after);
        let p2 = 4096 * 512u64;
        assert!(within(
            &changes,
            &[
                Extent::new(p2, 34 * 512),
                Extent::new(p2 + (2048 - 33) * 512, 33 * 512)
            ]
        ));

        // Read-only partitions are skipped.
        std::fs::write(tmp.path(), &before).unwrap();
        d = before.clone();
        d[sb..sb + 4].fill(0);
        std::fs::write(tmp.path(), &d).unwrap();
        disk.partitions[1].read_only = true;
        let out = erase_disk(&file, &disk);
        let skipped: Vec<_> = out
            .regions
            .iter()
            .map(|r| (r.name.as_str(), r.skipped))
            .collect();
        assert_eq!(skipped[0], ("/dev/sdx2", Some("read-only device")));
        assert_eq!(skipped[2], ("/dev/sdx", None));
    }

    #[test]
    fn partial_sectors_are_written_exactly() {
        // A device whose size is not a whole number of sectors: the partial last sector and
        // every byte outside the ranges stay.
        let len = (1usize << 20) + 300;
        let d = noise(len);
        let (tmp, file) = file_with(&d);
        let disk = disk(len as u64, &[]);
        let out = erase_disk(&file, &disk);
        assert!(out.errors.is_empty(), "{:?}", out.errors);
        let after = std::fs::read(tmp.path()).unwrap();
        let whole = (len / 512 * 512) as u64;
        assert_eq!(
            changed(&d, &after).last().map(|c| c.end() <= whole),
            Some(true)
        );
        assert_eq!(&after[whole as usize..], &d[whole as usize..]);
        let json = out.regions[0].to_json(&disk);
        assert_eq!(
            json["zeroed"],
            json!([[0, 34 * 512], [whole - 33 * 512, 33 * 512]])
        );
    }
}
