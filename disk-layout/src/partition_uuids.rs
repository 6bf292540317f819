//! What `standby.get_partition_uuids` returns after an image was written, read from the
//! target's bytes (IPA asks `blkid`/`lsblk` and `hexdump`).
//!
//! * Whole-disk image: `{"root uuid": "0x%08x"}`, the 4 bytes at offset 440 (the MBR disk
//!   signature; on a GPT disk those of the protective MBR, usually `0x00000000`, which tells
//!   `install_bootloader` to skip GRUB), exactly as IPA's `get_disk_identifier`.
//! * Partition image: `{"partitions": {role: device path}, "root uuid": ...,
//!   "efi system partition uuid": ...}` (plus `"PReP Boot partition uuid"` on ppc64), where
//!   each UUID is the partition's filesystem UUID, or its `PARTUUID` when it has no
//!   filesystem, as IPA's `block_uuid`.

use std::io;
use std::path::{Path, PathBuf};

use blockdev::partition_table::MBR_TYPE_GPT_PROTECTIVE;
use blockdev::region::{Extent, Region};
use serde_json::{Map, Value};

use crate::fs_id::{self, FsId};
use crate::gpt_write::{guid_text, ESP_TYPE};
use crate::mbr_write::TYPE_ESP;
use crate::DiskTarget;

#[derive(Debug, thiserror::Error)]
pub enum UuidError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("{disk} has no partition {number}")]
    NoPartition { disk: String, number: u32 },
}

/// A partition as `lsblk` would describe it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartInfo {
    pub number: u32,
    pub extent: Extent,
    /// `PARTUUID`: the GPT partition GUID, or `<disk signature>-<number>` on MBR disks.
    pub partuuid: String,
    /// Whether the partition type is the EFI system partition's (GPT type or MBR 0xEF).
    pub is_esp: bool,
    /// GPT partition GUID or disk signature, for UEFI device paths.
    pub gpt_guid: Option<blockdev::partition_table::Guid>,
    pub mbr_signature: Option<u32>,
    /// The filesystem in it, if recognised.
    pub fs: Option<FsId>,
}

impl PartInfo {
    /// IPA's `block_uuid`: the filesystem UUID, else the `PARTUUID`.
    pub fn block_uuid(&self) -> String {
        self.fs
            .as_ref()
            .and_then(|f| f.uuid.clone())
            .unwrap_or_else(|| self.partuuid.clone())
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> UuidError {
    let context = context.into();
    move |source| UuidError::Io { context, source }
}

/// The partitions of the target's GPT, or of its DOS table, in number order.
pub fn list_partitions(target: &DiskTarget) -> Result<Vec<PartInfo>, UuidError> {
    let device = target.path().display().to_string();
    let tables = target
        .tables()
        .map_err(io_err(format!("reading the partition table of {device}")))?;
    let mut parts = Vec::new();
    if let Some(gpt) = &tables.gpt {
        for p in &gpt.partitions {
            parts.push(PartInfo {
                number: p.number,
                extent: p.extent,
                partuuid: guid_text(&p.unique_guid),
                is_esp: p.type_guid == ESP_TYPE,
                gpt_guid: Some(p.unique_guid),
                mbr_signature: None,
                fs: None,
            });
        }
    } else if let Some(mbr) = &tables.mbr {
        for p in mbr
            .partitions
            .iter()
            .filter(|p| p.type_byte != MBR_TYPE_GPT_PROTECTIVE)
        {
            parts.push(PartInfo {
                number: p.number,
                extent: p.extent,
                partuuid: format!("{:08x}-{:02x}", mbr.disk_signature, p.number),
                is_esp: p.type_byte == TYPE_ESP,
                gpt_guid: None,
                mbr_signature: Some(mbr.disk_signature),
                fs: None,
            });
        }
    }
    for p in &mut parts {
        let end = p.extent.end().min(target.len());
        let extent = Extent::new(p.extent.offset, end.saturating_sub(p.extent.offset));
        p.fs = fs_id::probe(&Region::new(target.file(), extent)).map_err(io_err(format!(
            "probing partition {} of {device}",
            p.number
        )))?;
    }
    parts.sort_by_key(|p| p.number);
    Ok(parts)
}

/// IPA's `get_disk_identifier`: `hexdump -s 440 -n 4 -e '"0x%08x"'`.
pub fn disk_identifier(target: &DiskTarget) -> Result<String, UuidError> {
    let b = target.read_vec(440, 4).map_err(io_err(format!(
        "reading the disk identifier of {}",
        target.path().display()
    )))?;
    Ok(format!(
        "0x{:08x}",
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    ))
}

/// `get_partition_uuids` after a whole-disk image.
pub fn whole_disk(target: &DiskTarget) -> Result<Map<String, Value>, UuidError> {
    let mut m = Map::new();
    m.insert("root uuid".into(), Value::String(disk_identifier(target)?));
    Ok(m)
}

/// IPA's `partition_index_to_path`: `/dev/sda` + 1 -> `/dev/sda1`, `/dev/nvme0n1` + 1 ->
/// `/dev/nvme0n1p1`.
pub fn partition_path(disk: &Path, number: u32) -> PathBuf {
    let s = disk.to_string_lossy();
    if s.ends_with(|c: char| c.is_ascii_digit()) {
        PathBuf::from(format!("{s}p{number}"))
    } else {
        PathBuf::from(format!("{s}{number}"))
    }
}

/// `get_partition_uuids` after a partition image: `roles` are IPA's `part_dict` keys
/// (`"root"`, `"efi system partition"`, `"PReP Boot partition"`, `"swap"`...) with partition
/// numbers, in creation order; `disk` is the device path used to name partitions.
pub fn partition_image(
    target: &DiskTarget,
    disk: &Path,
    roles: &[(&str, u32)],
) -> Result<Map<String, Value>, UuidError> {
    let parts = list_partitions(target)?;
    let find = |number: u32| {
        parts
            .iter()
            .find(|p| p.number == number)
            .ok_or_else(|| UuidError::NoPartition {
                disk: disk.display().to_string(),
                number,
            })
    };
    let mut partitions = Map::new();
    for (role, number) in roles {
        partitions.insert(
            (*role).to_string(),
            Value::String(partition_path(disk, *number).to_string_lossy().into_owned()),
        );
    }
    let uuid_of = |role: &str| -> Result<Value, UuidError> {
        match roles.iter().find(|(r, _)| *r == role) {
            Some((_, n)) => Ok(Value::String(find(*n)?.block_uuid())),
            None => Ok(Value::Null),
        }
    };
    let mut m = Map::new();
    m.insert("partitions".into(), Value::Object(partitions));
    m.insert("root uuid".into(), uuid_of("root")?);
    m.insert(
        "efi system partition uuid".into(),
        uuid_of("efi system partition")?,
    );
    if roles.iter().any(|(r, _)| *r == "PReP Boot partition") {
        m.insert(
            "PReP Boot partition uuid".into(),
            uuid_of("PReP Boot partition")?,
        );
    }
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpt_write::{random_guid, Gpt, LINUX_FS_TYPE};
    use crate::testutil::temp_disk;
    use crate::MIB;

    #[test]
    fn whole_disk_identifier_is_the_mbr_signature_bytes() {
        let (_t, target) = temp_disk(8 * MIB, 512);
        let mut mbr = crate::mbr_write::Mbr::new(0x9d7c_1b3a);
        mbr.add_primary(2048, 2048, 0x83, true).unwrap();
        mbr.write(&target).unwrap();
        assert_eq!(
            Value::Object(whole_disk(&target).unwrap()),
            serde_json::json!({"root uuid": "0x9d7c1b3a"})
        );
        let parts = list_partitions(&target).unwrap();
        assert_eq!(parts[0].partuuid, "9d7c1b3a-01");
        assert_eq!(parts[0].block_uuid(), "9d7c1b3a-01");
        // A GPT disk: the protective MBR has no signature.
        let (_t, target) = temp_disk(8 * MIB, 512);
        let mut gpt = Gpt::new(target.len(), 512).unwrap();
        let guid = random_guid();
        gpt.add_partition(2048, 4095, LINUX_FS_TYPE, "x", guid)
            .unwrap();
        gpt.write_protective_mbr(&target).unwrap();
        gpt.write(&target).unwrap();
        assert_eq!(disk_identifier(&target).unwrap(), "0x00000000");
        assert_eq!(
            list_partitions(&target).unwrap()[0].partuuid,
            guid_text(&guid)
        );
    }

    #[test]
    fn partition_paths_as_ipa_names_them() {
        assert_eq!(
            partition_path(Path::new("/dev/sda"), 2),
            Path::new("/dev/sda2")
        );
        assert_eq!(
            partition_path(Path::new("/dev/nvme0n1"), 1),
            Path::new("/dev/nvme0n1p1")
        );
        assert_eq!(
            partition_path(Path::new("/dev/loop7"), 3),
            Path::new("/dev/loop7p3")
        );
    }
}
