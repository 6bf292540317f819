//! The config drive: decoding the `configdrive` value Ironic sends and writing it on a disk
//! that holds a whole-disk image (IPA's `get_configdrive` and
//! `create_config_drive_partition`).
//!
//! Ironic sends either a URL (the caller downloads it and hands the bytes over with
//! `downloaded = true`) or base64 text of gzip data. The image goes into the partition whose
//! filesystem label is `config-2` if the image has one; otherwise into a new partition: on
//! GPT at the end of the largest free block, 64 MiB long (`sgdisk -n 0:-64MB:0`), on MBR a
//! primary partition over the last 64 MiB (below 2 TiB), if fewer than four exist.
//!
//! Not done (IPA 13 does it with `mount`): checking that the written filesystem mounts and
//! rebuilding it as FAT32 when it does not (an ISO 9660 drive on a 4K-sector disk).

use std::io::{self, Read};

use base64::Engine;
use blockdev::region::Extent;
use ironic_protocol::ErrorClass;

use crate::gpt_write::{self, fix_gpt, guid_text, Gpt, GptError, LINUX_FS_TYPE};
use crate::mbr_write::{Mbr, MbrError, TYPE_FAT32_LBA};
use crate::partition_uuids::{list_partitions, UuidError};
use crate::{DiskTarget, MIB};

/// The filesystem label of the config drive.
pub const CONFIGDRIVE_LABEL: &str = "config-2";
/// The largest config drive IPA accepts, and the size of the partition it creates.
pub const MAX_CONFIG_DRIVE_SIZE: u64 = 64 * MIB;
/// MBR partitions cannot reach beyond 2 TiB (with 512-byte sectors).
const MAX_MBR_DISK_MIB: u64 = 2 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ConfigDriveError {
    #[error("Config drive is not base64 encoded or the content is malformed. {0}")]
    Base64(String),
    #[error("Encountered error while decompressing and writing config drive: {0}")]
    Gzip(io::Error),
    #[error(
        "Config drive size exceeds maximum limit of 64MiB. Size of the given config drive is \
         {0} MiB"
    )]
    TooLarge(u64),
    #[error("More than one partition with label \"config-2\" exists on device {device}: partitions {first} and {second}")]
    SeveralLabelled {
        device: String,
        first: u32,
        second: u32,
    },
    #[error(
        "Config drive cannot be created. Disk ({0}) uses MBR partitioning and already has 4 \
         primary partitions."
    )]
    MbrFull(String),
    #[error("{device}: no partition table to add a config drive partition to")]
    NoPartitionTable { device: String },
    #[error("{device}: no free space for a {size} MiB config drive partition (largest free block: {free} MiB)")]
    NoSpace {
        device: String,
        size: u64,
        free: u64,
    },
    #[error("{device}: the config drive ({image} bytes) does not fit partition {number} ({partition} bytes)")]
    DoesNotFit {
        device: String,
        image: u64,
        number: u32,
        partition: u64,
    },
    #[error(transparent)]
    Gpt(#[from] GptError),
    #[error(transparent)]
    Mbr(#[from] MbrError),
    #[error(transparent)]
    Partitions(#[from] UuidError),
    #[error("writing the config drive to {device}: {source}")]
    Io {
        device: String,
        #[source]
        source: io::Error,
    },
}

impl ConfigDriveError {
    /// IPA raises all of these as `DeploymentError` (`InstanceDeployFailure` in logs).
    pub fn ipa_class(&self) -> ErrorClass {
        ErrorClass::DeploymentError
    }
}

/// Whether the `configdrive` value is a URL to download (IPA: `http://` or `https://`).
pub fn is_url(value: &str) -> bool {
    let v = value.to_ascii_lowercase();
    v.starts_with("http://") || v.starts_with("https://")
}

/// IPA's `get_configdrive` after the download: base64 (characters outside the alphabet are
/// skipped, as Python's decoder does) then gunzip, at most 64 MiB. Downloaded data that is
/// not base64 is taken as the raw image.
pub fn decode(value: &[u8], downloaded: bool) -> Result<Vec<u8>, ConfigDriveError> {
    let cleaned: Vec<u8> = value
        .iter()
        .copied()
        .filter(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'='))
        .collect();
    let gz = match base64::engine::general_purpose::STANDARD.decode(&cleaned) {
        // Binary data can survive the lenient base64 decoding as garbage; IPA then fails on
        // the gzip header, the agent takes the download as the raw image it is.
        Ok(gz) if downloaded && !gz.starts_with(&[0x1f, 0x8b]) => {
            tracing::debug!("downloaded config drive is not base64 of gzip, assuming binary");
            check_size(value.len() as u64)?;
            return Ok(value.to_vec());
        }
        Ok(gz) => gz,
        Err(e) if downloaded => {
            tracing::debug!(error = %e, "downloaded config drive is not base64, assuming binary");
            check_size(value.len() as u64)?;
            return Ok(value.to_vec());
        }
        Err(e) => return Err(ConfigDriveError::Base64(format!("Error: {e}."))),
    };
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(gz.as_slice())
        .take(MAX_CONFIG_DRIVE_SIZE + 1)
        .read_to_end(&mut out)
        .map_err(ConfigDriveError::Gzip)?;
    check_size(out.len() as u64)?;
    Ok(out)
}

fn check_size(len: u64) -> Result<(), ConfigDriveError> {
    if len > MAX_CONFIG_DRIVE_SIZE {
        return Err(ConfigDriveError::TooLarge(len.div_ceil(MIB)));
    }
    Ok(())
}

/// Where the config drive went.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConfigDrivePartition {
    pub number: u32,
    /// Bytes from the start of the disk.
    pub offset: u64,
    pub len: u64,
    /// `PARTUUID` of the partition.
    pub uuid: String,
    /// A new partition was made (else an existing `config-2` one was overwritten).
    pub created: bool,
}

fn io_err(target: &DiskTarget) -> impl FnOnce(io::Error) -> ConfigDriveError + '_ {
    move |source| ConfigDriveError::Io {
        device: target.path().display().to_string(),
        source,
    }
}

/// Writes the decoded config drive `image` on `target`, which holds a whole-disk image. The
/// caller then makes the kernel re-read the partition table.
pub fn write_config_drive(
    target: &DiskTarget,
    image: &[u8],
) -> Result<ConfigDrivePartition, ConfigDriveError> {
    let device = target.path().display().to_string();
    check_size(image.len() as u64)?;
    let labelled: Vec<_> = list_partitions(target)?
        .into_iter()
        .filter(|p| {
            p.fs.as_ref()
                .and_then(|f| f.label.as_deref())
                .is_some_and(|l| l.eq_ignore_ascii_case(CONFIGDRIVE_LABEL))
        })
        .collect();
    if let [first, second, ..] = labelled.as_slice() {
        return Err(ConfigDriveError::SeveralLabelled {
            device,
            first: first.number,
            second: second.number,
        });
    }
    fix_gpt(target)?;
    let (number, extent, uuid, created) = match labelled.first() {
        Some(p) => {
            tracing::info!(
                device,
                partition = p.number,
                "config drive partition exists"
            );
            (p.number, p.extent, p.partuuid.clone(), false)
        }
        None => {
            let (n, e, u) = add_partition(target)?;
            (n, e, u, true)
        }
    };
    if image.len() as u64 > extent.len {
        return Err(ConfigDriveError::DoesNotFit {
            device,
            image: image.len() as u64,
            number,
            partition: extent.len,
        });
    }
    target
        .write_all_at(image, extent.offset)
        .and_then(|_| target.sync())
        .map_err(io_err(target))?;
    tracing::info!(
        device,
        partition = number,
        bytes = image.len(),
        "config drive written"
    );
    Ok(ConfigDrivePartition {
        number,
        offset: extent.offset,
        len: extent.len,
        uuid,
        created,
    })
}

/// A new partition for the config drive: `(number, extent, PARTUUID)`.
fn add_partition(target: &DiskTarget) -> Result<(u32, Extent, String), ConfigDriveError> {
    let device = target.path().display().to_string();
    if let Some(mut gpt) = Gpt::read(target)? {
        let ss = gpt.sector_size();
        let want = MAX_CONFIG_DRIVE_SIZE / ss;
        let (first, last) = gpt
            .free_blocks()
            .into_iter()
            .max_by_key(|(f, l)| (l - f, *f))
            .unwrap_or((1, 0));
        let free = (last + 1).saturating_sub(first);
        // Like sgdisk: 64 MiB before the end of the block, aligned down to 1 MiB.
        let start =
            gpt_write::align_down((last + 1).saturating_sub(want), gpt_write::alignment(ss));
        if free < want || start < first {
            return Err(ConfigDriveError::NoSpace {
                device,
                size: MAX_CONFIG_DRIVE_SIZE / MIB,
                free: free * ss / MIB,
            });
        }
        let guid = gpt_write::random_guid();
        let number = gpt.add_partition(start, last, LINUX_FS_TYPE, "", guid)?;
        gpt.write(target)?;
        target.sync().map_err(io_err(target))?;
        return Ok((
            number,
            Extent::new(start * ss, (last - start + 1) * ss),
            guid_text(&guid),
        ));
    }
    let Some(mut mbr) = Mbr::read(target)? else {
        return Err(ConfigDriveError::NoPartitionTable { device });
    };
    if mbr.partitions().len() > 3 {
        return Err(ConfigDriveError::MbrFull(device));
    }
    let ss = target.sector_size();
    let disk_mib = target.len() / MIB;
    // parted's "-64MiB -0", or just below 2 TiB on larger disks.
    let (start, end) = if disk_mib > MAX_MBR_DISK_MIB {
        (
            (MAX_MBR_DISK_MIB - MAX_CONFIG_DRIVE_SIZE / MIB - 1) * MIB / ss,
            (MAX_MBR_DISK_MIB - 1) * MIB / ss,
        )
    } else {
        let end = target.sectors();
        (
            gpt_write::align_down(end.saturating_sub(MAX_CONFIG_DRIVE_SIZE / ss), MIB / ss),
            end,
        )
    };
    let number = mbr
        .add_primary(start, end - start, TYPE_FAT32_LBA, false)
        .map_err(|e| match e {
            MbrError::Overlap { .. } => ConfigDriveError::NoSpace {
                device: device.clone(),
                size: MAX_CONFIG_DRIVE_SIZE / MIB,
                free: 0,
            },
            other => other.into(),
        })?;
    mbr.write(target)?;
    target.sync().map_err(io_err(target))?;
    Ok((
        number,
        Extent::new(start * ss, (end - start) * ss),
        format!("{:08x}-{number:02x}", mbr.signature()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpt_write::{random_guid, Gpt};
    use crate::testutil::{assert_sgdisk_clean, run, temp_disk};
    use std::io::Write;

    fn gzip_b64(data: &[u8]) -> String {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        enc.write_all(data).unwrap();
        base64::engine::general_purpose::STANDARD.encode(enc.finish().unwrap())
    }

    /// A small vfat config drive labelled config-2, made with fatfs.
    fn config_drive_image() -> Vec<u8> {
        let (tmp, target) = temp_disk(2 * MIB, 512);
        crate::esp::format(&target, Extent::new(0, 2 * MIB), "config-2").unwrap();
        let fs = crate::esp::open(&target, Extent::new(0, 2 * MIB)).unwrap();
        crate::esp::write_file(&fs, "meta_data.json", b"{\"uuid\": \"x\"}").unwrap();
        fs.unmount().unwrap();
        std::fs::read(tmp.path()).unwrap()
    }

    #[test]
    fn decoding_like_ipa() {
        let b64 = gzip_b64(b"hello");
        // Newlines inside base64 are fine, as in Python.
        let wrapped = format!("{}\n{}", &b64[..10], &b64[10..]);
        assert_eq!(decode(wrapped.as_bytes(), false).unwrap(), b"hello");
        assert!(matches!(
            decode(b"abc", false),
            Err(ConfigDriveError::Base64(_))
        ));
        let not_gzip = base64::engine::general_purpose::STANDARD.encode(b"plain text");
        assert!(matches!(
            decode(not_gzip.as_bytes(), false),
            Err(ConfigDriveError::Gzip(_))
        ));
        // A downloaded raw image is taken as is.
        let raw = config_drive_image();
        assert_eq!(decode(&raw, true).unwrap(), raw);
        assert_eq!(decode(b64.as_bytes(), true).unwrap(), b"hello");
        let big = gzip_b64(&vec![0u8; (MAX_CONFIG_DRIVE_SIZE + 1) as usize]);
        assert!(matches!(
            decode(big.as_bytes(), false),
            Err(ConfigDriveError::TooLarge(65))
        ));
        assert!(is_url("HTTPS://example.org/cd") && !is_url(&b64));
    }

    #[test]
    fn gpt_whole_disk_image_gets_a_partition_at_the_end() {
        // A 32 MiB image with one partition, written on a 256 MiB disk.
        let (tmp, target) = temp_disk(256 * MIB, 512);
        let (img_tmp, img) = temp_disk(32 * MIB, 512);
        let mut gpt = Gpt::new(img.len(), 512).unwrap();
        gpt.add_partition(2048, 40959, LINUX_FS_TYPE, "root", random_guid())
            .unwrap();
        gpt.write_protective_mbr(&img).unwrap();
        gpt.write(&img).unwrap();
        target
            .write_all_at(&std::fs::read(img_tmp.path()).unwrap(), 0)
            .unwrap();

        let cd = config_drive_image();
        let part = write_config_drive(&target, &cd).unwrap();
        assert!(part.created);
        assert_eq!(part.number, 2);
        let last_usable = target.sectors() - 34;
        assert_eq!(part.offset + part.len, (last_usable + 1) * 512);
        assert_eq!(part.offset % MIB, 0);
        assert!(part.len >= 64 * MIB && part.len < 65 * MIB);
        assert_eq!(target.read_vec(part.offset, cd.len()).unwrap(), cd);
        assert_sgdisk_clean(tmp.path());
        let parts = list_partitions(&target).unwrap();
        assert_eq!(parts[1].partuuid, part.uuid);
        assert_eq!(
            parts[1].fs.as_ref().unwrap().label.as_deref(),
            Some("config-2")
        );

        // A second deploy of the same disk finds the labelled partition and rewrites it.
        let again = write_config_drive(&target, &cd).unwrap();
        assert!(!again.created);
        assert_eq!(again.number, 2);
    }

    #[test]
    fn mbr_disk_gets_a_primary_partition_unless_full() {
        let (tmp, target) = temp_disk(128 * MIB, 512);
        let mut mbr = Mbr::new(0x0bad_cafe);
        mbr.add_primary(2048, 40960, 0x83, true).unwrap();
        mbr.write(&target).unwrap();
        let cd = config_drive_image();
        let part = write_config_drive(&target, &cd).unwrap();
        assert_eq!(part.number, 2);
        assert_eq!(part.uuid, "0badcafe-02");
        assert_eq!(part.offset, 64 * MIB);
        assert_eq!(part.offset + part.len, 128 * MIB);
        if let Some((ok, text)) = run("sfdisk", &["-d", tmp.path().to_str().unwrap()]) {
            assert!(ok, "{text}");
            assert!(
                text.contains("start=      131072, size=      131072, type=c"),
                "{text}"
            );
        }

        let (_t, full) = temp_disk(128 * MIB, 512);
        let mut mbr = Mbr::new(1);
        for i in 0..4 {
            mbr.add_primary(2048 + i * 4096, 2048, 0x83, false).unwrap();
        }
        mbr.write(&full).unwrap();
        assert!(matches!(
            write_config_drive(&full, &cd),
            Err(ConfigDriveError::MbrFull(_))
        ));
        let (_t, blank) = temp_disk(128 * MIB, 512);
        assert!(matches!(
            write_config_drive(&blank, &cd),
            Err(ConfigDriveError::NoPartitionTable { .. })
        ));
    }
}
