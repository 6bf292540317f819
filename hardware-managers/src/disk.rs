//! A disk as managers see it: what the inventory reports of it, what the erase steps need
//! beyond that (sector sizes, holders, partitions), and its erasable regions. The generic
//! manager builds these from sysfs ([`crate::generic::block_devices`]); the trait and other
//! managers only consume them.

use std::path::PathBuf;

use blockdev::partition_table::PartitionTables;
use blockdev::region::Extent;
use ironic_protocol::BlockDevice;

/// A disk with what the erase steps need beyond the inventory fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Disk {
    /// Kernel name, e.g. `sda`.
    pub kname: String,
    /// Device node, e.g. `/dev/sda`.
    pub path: PathBuf,
    /// `major:minor`.
    pub devno: (u64, u64),
    /// Bytes.
    pub size: u64,
    pub read_only: bool,
    pub removable: bool,
    /// The BMC's virtual floppy that Ironic attaches with the node's configuration
    /// (`/dev/disk/by-label/ir-vfd-dev`): never erased, as in IPA.
    pub virtual_media: bool,
    pub logical_sector_size: u64,
    pub physical_sector_size: u64,
    /// Kernel names of devices stacked on this one (`md0`, `dm-1`).
    pub holders: Vec<String>,
    /// As reported to the conductor.
    pub info: BlockDevice,
    /// The partitions the kernel knows, by kernel name.
    pub partitions: Vec<Partition>,
}

/// A partition as the kernel scanned it.
#[derive(Debug, Clone, PartialEq)]
pub struct Partition {
    pub kname: String,
    pub path: PathBuf,
    pub devno: (u64, u64),
    /// The partition number in its table.
    pub number: Option<u32>,
    /// Bytes from the start of the disk.
    pub start: u64,
    /// Bytes.
    pub size: u64,
    pub read_only: bool,
    pub holders: Vec<String>,
}

/// A device-sized range of a disk: the disk itself or one partition on it.
#[derive(Debug, Clone, PartialEq)]
pub struct DiskRegion {
    /// For logs and reports: the device node, or `<disk> partition <n>` for a partition the
    /// kernel has not scanned.
    pub name: String,
    /// The partition's device node, when the kernel knows the partition.
    pub node: Option<PathBuf>,
    pub number: Option<u32>,
    /// Bytes of the whole disk.
    pub extent: Extent,
    pub read_only: bool,
    pub holders: Vec<String>,
    pub whole_disk: bool,
}

impl Disk {
    /// The partitions (those the kernel scanned, then those only the on-disk `tables`
    /// describe) and finally the disk itself: the order in which IPA erases them, so that a
    /// partition is handled before the disk's table, which defines it, is destroyed.
    pub fn regions(&self, tables: &PartitionTables) -> Vec<DiskRegion> {
        let mut regions: Vec<DiskRegion> = self
            .partitions
            .iter()
            .rev()
            .map(|p| DiskRegion {
                name: p.path.to_string_lossy().into_owned(),
                node: Some(p.path.clone()),
                number: p.number,
                extent: Extent::new(p.start, p.size.min(self.size.saturating_sub(p.start))),
                read_only: p.read_only || self.read_only,
                holders: p.holders.clone(),
                whole_disk: false,
            })
            .collect();
        let mut unscanned = tables.partitions();
        unscanned.retain(|(_, e)| {
            e.offset < self.size && !self.partitions.iter().any(|p| p.start == e.offset)
        });
        unscanned.sort_by_key(|(n, _)| std::cmp::Reverse(*n));
        regions.extend(unscanned.into_iter().map(|(n, e)| DiskRegion {
            name: format!("{} partition {n}", self.path.display()),
            node: None,
            number: Some(n),
            extent: Extent::new(e.offset, e.len.min(self.size - e.offset)),
            read_only: self.read_only,
            holders: Vec::new(),
            whole_disk: false,
        }));
        regions.push(DiskRegion {
            name: self.path.to_string_lossy().into_owned(),
            node: Some(self.path.clone()),
            number: None,
            extent: Extent::new(0, self.size),
            read_only: self.read_only,
            holders: self.holders.clone(),
            whole_disk: true,
        });
        regions
    }
}
