//! IPA's `safety_check_block_device`: refuse to erase what may be a shared-disk cluster volume.
//!
//! A LUN holding VMFS, GPFS or GFS2 is often mapped to many hosts at once; wiping it from one
//! node destroys the whole cluster's data. Such a volume showing up on a node being cleaned is
//! almost always a SAN misconfiguration, so cleaning stops and names the device, unless the
//! operator turned the guard off (`[DEFAULT]guard_special_filesystems=false`, or per node
//! `driver_internal_info.wipe_special_filesystems=false`).
//!
//! Unlike IPA, which checks each device just before erasing it, the erase steps run this over
//! every device first, so a protected disk aborts the step with nothing written anywhere. The
//! check reads the partition tables itself, so GPT types are compared as GUIDs (IPA compared
//! `lsblk`'s lowercase text with uppercase constants) and partitions the kernel did not scan
//! are seen too.

use std::fs::File;
use std::path::PathBuf;

use ironic_protocol::Node;

use super::options::GenericOptions;
use crate::Disk;
use crate::HardwareError;
use blockdev::partition_table::{Guid, PartitionTables};
use blockdev::region::{ReadAt, Region};
use blockdev::signatures::{self, GFS2};

/// GPT partition types of shared-disk filesystems.
const GUARDED_GPT_TYPES: [(Guid, &str); 2] = [
    (
        Guid::from_fields(
            0x37AFFC90,
            0xEF7D,
            0x4E96,
            [0x91, 0xC3, 0x2D, 0x7A, 0xE0, 0x55, 0xB1, 0x74],
        ),
        "IBM GPFS Partition",
    ),
    (
        Guid::from_fields(
            0xAA31E02A,
            0x400F,
            0x11DB,
            [0x95, 0x90, 0x00, 0x0C, 0x29, 0x11, 0xD1, 0xB8],
        ),
        "VMware VMFS Partition (GPT)",
    ),
];
/// MBR partition type of VMFS.
const MBR_TYPE_VMFS: u8 = 0xfb;
const VMFS_MBR: &str = "VMware VMFS Partition (MBR)";
const GFS2_WHAT: &str = "Red Hat Global File System 2";

/// Whether the guard applies to this node.
pub(crate) fn enabled(node: &Node, options: &GenericOptions) -> bool {
    options.guard_special_filesystems && node.internal_flag("wipe_special_filesystems", true)
}

/// Fails with [`HardwareError::ProtectedDevice`] on the first protected partition or
/// filesystem on any of `disks` (or their partitions), reading only.
pub(crate) fn check_disks(
    disks: &[&Disk],
    node: &Node,
    options: &GenericOptions,
) -> Result<(), HardwareError> {
    if !enabled(node, options) {
        tracing::info!("protection of shared-disk filesystems is disabled for this node");
        return Ok(());
    }
    for disk in disks {
        let file = File::open(&disk.path).map_err(|e| {
            HardwareError::io(
                format!(
                    "opening {} to look for shared-disk filesystems",
                    disk.path.display()
                ),
                e,
            )
        })?;
        check_disk(&file, disk)?;
    }
    Ok(())
}

/// The check on one disk whose bytes `source` reads.
pub(crate) fn check_disk<R: ReadAt + ?Sized>(source: &R, disk: &Disk) -> Result<(), HardwareError> {
    let io = |e| {
        HardwareError::io(
            format!(
                "reading {} to look for shared-disk filesystems",
                disk.path.display()
            ),
            e,
        )
    };
    let tables = PartitionTables::read(source, disk.size, disk.logical_sector_size).map_err(io)?;
    let regions = disk.regions(&tables);
    // The device to name: the partition, as IPA would, when the kernel knows it.
    let device_at = |offset: u64| -> PathBuf {
        regions
            .iter()
            .find(|r| !r.whole_disk && r.extent.offset == offset)
            .and_then(|r| r.node.clone())
            .unwrap_or_else(|| disk.path.clone())
    };
    let protected = |offset: u64, what: &str| HardwareError::ProtectedDevice {
        device: device_at(offset),
        what: what.to_string(),
    };
    if let Some(gpt) = &tables.gpt {
        for p in &gpt.partitions {
            if let Some((_, what)) = GUARDED_GPT_TYPES.iter().find(|(t, _)| *t == p.type_guid) {
                return Err(protected(p.extent.offset, what));
            }
        }
    }
    if let Some(mbr) = &tables.mbr {
        if let Some(p) = mbr.partitions.iter().find(|p| p.type_byte == MBR_TYPE_VMFS) {
            return Err(protected(p.extent.offset, VMFS_MBR));
        }
    }
    for region in &regions {
        let found = signatures::probe(&Region::new(source, region.extent)).map_err(io)?;
        if found.iter().any(|s| s.kind == GFS2) {
            return Err(HardwareError::ProtectedDevice {
                device: region.node.clone().unwrap_or_else(|| disk.path.clone()),
                what: GFS2_WHAT.to_string(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::Partition;
    use blockdev::fixtures::write_gfs2;
    use blockdev::fixtures::{write_gpt, LINUX_FS};
    use serde_json::json;

    pub(crate) fn disk(size: u64, partitions: &[(u32, u64, u64)]) -> Disk {
        Disk {
            kname: "sdx".into(),
            path: "/dev/sdx".into(),
            devno: (8, 0),
            size,
            read_only: false,
            removable: false,
            virtual_media: false,
            logical_sector_size: 512,
            physical_sector_size: 512,
            holders: vec![],
            info: Default::default(),
            partitions: partitions
                .iter()
                .map(|(n, start, size)| Partition {
                    kname: format!("sdx{n}"),
                    path: format!("/dev/sdx{n}").into(),
                    devno: (8, u64::from(*n)),
                    number: Some(*n),
                    start: *start,
                    size: *size,
                    read_only: false,
                    holders: vec![],
                })
                .collect(),
        }
    }

    fn what(r: Result<(), HardwareError>) -> Option<(String, String)> {
        match r {
            Ok(()) => None,
            Err(HardwareError::ProtectedDevice { device, what }) => {
                Some((device.display().to_string(), what))
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }

    #[test]
    fn vmfs_and_gpfs_gpt_partitions() {
        for (ty, name) in GUARDED_GPT_TYPES {
            let mut d = vec![0u8; 4 << 20];
            write_gpt(&mut d, 512, &[(LINUX_FS, 2048, 4095), (ty, 4096, 6143)]);
            // Known to the kernel: named by its partition node.
            let known = disk(
                d.len() as u64,
                &[(1, 2048 * 512, 2048 * 512), (2, 4096 * 512, 2048 * 512)],
            );
            assert_eq!(
                what(check_disk(d.as_slice(), &known)),
                Some(("/dev/sdx2".into(), name.into()))
            );
            // Not scanned by the kernel: found in the table anyway, the disk is named.
            let unscanned = disk(d.len() as u64, &[]);
            assert_eq!(
                what(check_disk(d.as_slice(), &unscanned)),
                Some(("/dev/sdx".into(), name.into()))
            );
        }
    }

    #[test]
    fn vmfs_mbr_partition() {
        let mut d = vec![0u8; 1 << 20];
        d[446 + 4] = MBR_TYPE_VMFS;
        d[446 + 8] = 63;
        d[446 + 12] = 100;
        d[510] = 0x55;
        d[511] = 0xaa;
        assert_eq!(
            what(check_disk(
                d.as_slice(),
                &disk(d.len() as u64, &[(1, 63 * 512, 100 * 512)])
            )),
            Some(("/dev/sdx1".into(), VMFS_MBR.into()))
        );
    }

    #[test]
    fn gfs2_on_a_partition_or_the_disk() {
        let mut d = vec![0u8; 4 << 20];
        write_gfs2(&mut d[1 << 20..]);
        let with_part = disk(d.len() as u64, &[(1, 1 << 20, 1 << 20)]);
        assert_eq!(
            what(check_disk(d.as_slice(), &with_part)),
            Some(("/dev/sdx1".into(), GFS2_WHAT.into()))
        );
        let mut whole = vec![0u8; 4 << 20];
        write_gfs2(&mut whole);
        assert_eq!(
            what(check_disk(whole.as_slice(), &disk(whole.len() as u64, &[]))),
            Some(("/dev/sdx".into(), GFS2_WHAT.into()))
        );
    }

    #[test]
    fn ordinary_disks_pass() {
        let mut d = vec![0u8; 4 << 20];
        write_gpt(&mut d, 512, &[(LINUX_FS, 2048, 4095)]);
        assert!(check_disk(
            d.as_slice(),
            &disk(d.len() as u64, &[(1, 2048 * 512, 2048 * 512)])
        )
        .is_ok());
    }

    #[test]
    fn operators_can_turn_the_guard_off() {
        let on = GenericOptions::default();
        let off = GenericOptions {
            guard_special_filesystems: false,
            ..GenericOptions::default()
        };
        let node: Node = serde_json::from_value(json!({})).unwrap();
        assert!(enabled(&node, &on));
        assert!(!enabled(&node, &off));
        let wipe: Node = serde_json::from_value(
            json!({"driver_internal_info": {"wipe_special_filesystems": false}}),
        )
        .unwrap();
        assert!(!enabled(&wipe, &on));
    }
}
