//! `properties.skip_block_devices` in the erase steps: the disks an operator listed are left
//! alone by `erase_devices`, `erase_devices_metadata` (clean and deploy step) and
//! `erase_devices_express`, as IPA's `list_block_devices_check_skip_list` leaves them.
//!
//! Hazard: automated cleaning runs after every unprovision, so a data disk the operator
//! protected with this list is lost unless every erase step applies it, before any disk is
//! written and before the protected-partition checks (a listed disk is not the step's to
//! refuse either). Decisions:
//! * The hints are matched as root device hints against the disks *and* their partitions, as
//!   IPA matches them for its metadata erase. A listed disk keeps its partitions; a listed
//!   partition keeps its whole disk. That is stricter than IPA, which would still wipe the
//!   disk's partition table (and, in `erase_devices`, every byte) under a listed partition:
//!   a partition can only be kept by keeping the table that defines it.
//! * Entries with `volume_name` name software RAID volumes; IPA keeps those arrays. This agent
//!   never erases a RAID member disk at all (see [`super::erase`]), so they are kept too.
//! * A list that cannot be parsed fails the step before anything is written: guessing what
//!   the operator meant to protect could destroy it.
//!
//! Each skipped disk appears in the step's result as `{"skipped": <why>, "skip_block_devices":
//! <the entry that matched>}`, so the operator sees in Ironic's record which disks were kept.

use ironic_protocol::Node;
use serde_json::{json, Map, Value};

use super::block_devices::to_block_devices;
use super::root_device::skipped_devices;
use crate::{Disk, HardwareError};

/// The disks of `disks` that the node's skip list leaves to the erase step; each skipped
/// disk is recorded in `report`.
pub(crate) fn apply<'a>(
    node: &Node,
    disks: &'a [Disk],
    report: &mut Map<String, Value>,
) -> Result<Vec<&'a Disk>, HardwareError> {
    let listed = skipped_devices(node, &to_block_devices(disks, true)).map_err(|e| {
        HardwareError::BlockDeviceErase(format!(
            "Invalid properties.skip_block_devices, nothing was erased: {e}"
        ))
    })?;
    let mut kept = Vec::new();
    for disk in disks {
        let name = disk.path.display().to_string();
        let by_partition = || {
            disk.partitions.iter().find_map(|p| {
                let pname = p.path.display().to_string();
                listed.get(&pname).map(|entry| (pname, entry))
            })
        };
        let (why, entry) = if let Some(entry) = listed.get(&disk.info.name) {
            ("listed in properties.skip_block_devices".to_string(), entry)
        } else if let Some((partition, entry)) = by_partition() {
            let why = format!(
                "its partition {partition} is listed in properties.skip_block_devices, so the \
                 disk and its partition table are kept"
            );
            (why, entry)
        } else {
            kept.push(disk);
            continue;
        };
        tracing::warn!(device = name, reason = why, hint = %entry, "not erasing a skip-listed disk");
        report.insert(name, json!({"skipped": why, "skip_block_devices": entry}));
    }
    Ok(kept)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Partition;
    use ironic_protocol::BlockDevice;
    use std::path::PathBuf;

    fn disk(kname: &str, size: u64) -> Disk {
        let path = format!("/dev/{kname}");
        Disk {
            kname: kname.into(),
            path: PathBuf::from(&path),
            devno: (8, 0),
            size,
            read_only: false,
            removable: false,
            virtual_media: false,
            logical_sector_size: 512,
            physical_sector_size: 512,
            holders: vec![],
            info: BlockDevice {
                name: path,
                size,
                ..BlockDevice::default()
            },
            partitions: vec![],
        }
    }

    fn node(properties: Value) -> Node {
        serde_json::from_value(json!({ "properties": properties })).unwrap()
    }

    fn with_partition(mut d: Disk, kname: &str) -> Disk {
        d.partitions.push(Partition {
            kname: kname.into(),
            path: PathBuf::from(format!("/dev/{kname}")),
            devno: (8, 1),
            number: Some(1),
            start: 1 << 20,
            size: 1 << 20,
            read_only: false,
            holders: Vec::new(),
        });
        d
    }

    fn disks() -> Vec<Disk> {
        let mut big = disk("sdc", 8 << 30);
        big.info.serial = Some("SERIAL-C".into());
        vec![
            with_partition(disk("sda", 4 << 30), "sda1"),
            with_partition(disk("sdb", 4 << 30), "sdb1"),
            big,
            disk("sdd", 4 << 30),
        ]
    }

    fn names(v: &[&Disk]) -> Vec<String> {
        v.iter().map(|d| d.kname.clone()).collect()
    }

    #[test]
    fn no_list_keeps_every_disk_for_erasing() {
        let disks = disks();
        let mut report = Map::new();
        let kept = apply(&node(json!({})), &disks, &mut report).unwrap();
        assert_eq!(names(&kept), ["sda", "sdb", "sdc", "sdd"]);
        assert!(report.is_empty());
        let kept = apply(
            &node(json!({"skip_block_devices": null})),
            &disks,
            &mut report,
        )
        .unwrap();
        assert_eq!(kept.len(), 4);
    }

    #[test]
    fn listed_by_name_by_hint_and_by_partition_are_skipped_with_their_reason() {
        let disks = disks();
        let mut report = Map::new();
        let n = node(json!({"skip_block_devices": [
            {"name": "/dev/sda"},
            {"serial": "serial-c"},
            {"name": "/dev/sdb1"},
            {"volume_name": "data"},
        ]}));
        let kept = apply(&n, &disks, &mut report).unwrap();
        assert_eq!(names(&kept), ["sdd"]);
        assert_eq!(
            report["/dev/sda"],
            json!({"skipped": "listed in properties.skip_block_devices",
                   "skip_block_devices": {"name": "/dev/sda"}})
        );
        assert_eq!(
            report["/dev/sdc"]["skip_block_devices"],
            json!({"serial": "serial-c"})
        );
        let why = report["/dev/sdb"]["skipped"].as_str().unwrap();
        assert!(why.contains("partition /dev/sdb1 is listed"), "{why}");
        assert_eq!(report.len(), 3);
    }

    #[test]
    fn size_hints_with_operators_select_disks() {
        let disks = disks();
        let mut report = Map::new();
        let n = node(json!({"skip_block_devices": [{"size": ">= 8"}]}));
        assert_eq!(
            names(&apply(&n, &disks, &mut report).unwrap()),
            ["sda", "sdb", "sdd"]
        );
    }

    #[test]
    fn an_unparsable_list_fails_before_anything_is_chosen() {
        let disks = disks();
        for bad in [
            json!({"skip_block_devices": {"name": "/dev/sda"}}),
            json!({"skip_block_devices": ["/dev/sda"]}),
            json!({"skip_block_devices": [{"colour": "blue"}]}),
            json!({"skip_block_devices": [{"size": "big"}]}),
        ] {
            let mut report = Map::new();
            let err = apply(&node(bad.clone()), &disks, &mut report).unwrap_err();
            assert!(matches!(err, HardwareError::BlockDeviceErase(_)), "{bad}");
            assert!(
                err.to_string().contains("nothing was erased"),
                "{bad}: {err}"
            );
        }
    }
}
