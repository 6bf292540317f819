//! The EFI system partition: formatting one (IPA's `mkfs -t vfat -n efi-part`) and reading
//! one from the raw partition bytes with fatfs (IPA mounts it), in particular finding the
//! boot loaders the way IPA's `_get_efi_bootloaders` does.

use std::io::{self, Read, Write};

use blockdev::region::Extent;
use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};

use crate::{DiskTarget, PartitionIo, MIB};

/// File names IPA treats as boot loaders or loader hints (`BOOTLOADERS_EFI`), compared in
/// lower case. Note that `shimx64.efi` and `grubx64.efi` are not among them: distributions
/// that ship those name them in a `BOOTX64.CSV`.
pub const BOOTLOADERS_EFI: [&str; 13] = [
    "bootx64.csv",
    "bootaa64.csv",
    "boot.csv",
    "bootia32.efi",
    "bootx64.efi",
    "bootia64.efi",
    "bootarm.efi",
    "bootaa64.efi",
    "bootriscv32.efi",
    "bootriscv64.efi",
    "bootriscv128.efi",
    "grubaa64.efi",
    "winload.efi",
];

#[derive(Debug, thiserror::Error)]
pub enum EspError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("label {0:?} is longer than the 11 bytes FAT allows")]
    Label(String),
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> EspError {
    let context = context.into();
    move |source| EspError::Io { context, source }
}

/// A random FAT volume ID (`mkfs.fat` derives one from the time).
pub fn random_volume_id() -> u32 {
    let b = uuid::Uuid::new_v4().into_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// How `blkid` prints a FAT volume ID as the filesystem's `UUID`.
pub fn volume_id_text(id: u32) -> String {
    format!("{:04X}-{:04X}", id >> 16, id & 0xffff)
}

/// Formats `extent` of `target` as FAT (FAT32 when the partition is large enough for it,
/// as `mkfs.fat` chooses for an ESP of IPA's default 550 MiB) with `label`, and returns the
/// volume ID.
pub fn format(target: &DiskTarget, extent: Extent, label: &str) -> Result<u32, EspError> {
    if label.len() > 11 {
        return Err(EspError::Label(label.into()));
    }
    let mut name = [b' '; 11];
    name[..label.len()].copy_from_slice(label.as_bytes());
    let id = random_volume_id();
    let ss = target.sector_size();
    let mut options = FormatVolumeOptions::new()
        .bytes_per_sector(ss as u16)
        .volume_id(id)
        .volume_label(name);
    // FAT32 needs 65525 clusters; clusters are at least a sector.
    if extent.len >= 65536 * ss.max(512) + 4 * MIB {
        options = options.fat_type(FatType::Fat32);
    }
    let device = target.path().display().to_string();
    // The first MiB is zeroed so that no signature of what was there before (a GPT backup,
    // an old filesystem) survives among the new filesystem's reserved sectors.
    target
        .zero(extent.offset, extent.len.min(MIB))
        .map_err(io_err(format!("clearing the ESP on {device}")))?;
    fatfs::format_volume(PartitionIo::new(target, extent), options)
        .map_err(io_err(format!("formatting the ESP on {device}")))?;
    Ok(id)
}

/// A FAT filesystem on a partition of the target.
pub type Fat<'a> = FileSystem<PartitionIo<'a>>;

/// Opens the FAT filesystem in `extent` read-only: nothing on it can change.
pub fn open_read_only(target: &DiskTarget, extent: Extent) -> Result<Fat<'_>, EspError> {
    FileSystem::new(PartitionIo::read_only(target, extent), FsOptions::new()).map_err(io_err(
        format!(
            "reading the FAT filesystem at byte {} of {}",
            extent.offset,
            target.path().display()
        ),
    ))
}

/// Opens the FAT filesystem in `extent` for writing (tests and image preparation).
pub fn open(target: &DiskTarget, extent: Extent) -> Result<Fat<'_>, EspError> {
    FileSystem::new(PartitionIo::new(target, extent), FsOptions::new()).map_err(io_err(format!(
        "opening the FAT filesystem at byte {} of {}",
        extent.offset,
        target.path().display()
    )))
}

/// Every file's path (`/`-separated, relative to the root, as found on disk) in the order
/// Python's `os.walk` visits a mounted FAT: a directory's files, then its subdirectories,
/// each in directory order.
pub fn walk(fs: &Fat<'_>) -> Result<Vec<String>, EspError> {
    fn visit(
        dir: fatfs::Dir<'_, PartitionIo<'_>>,
        prefix: &str,
        out: &mut Vec<String>,
    ) -> io::Result<()> {
        let mut subdirs = Vec::new();
        for entry in dir.iter() {
            let entry = entry?;
            let name = entry.file_name();
            if name == "." || name == ".." {
                continue;
            }
            if entry.is_dir() {
                subdirs.push((name, entry.to_dir()));
            } else {
                out.push(format!("{prefix}{name}"));
            }
        }
        for (name, sub) in subdirs {
            visit(sub, &format!("{prefix}{name}/"), out)?;
        }
        Ok(())
    }
    let mut out = Vec::new();
    visit(fs.root_dir(), "", &mut out).map_err(io_err("listing the ESP"))?;
    Ok(out)
}

/// IPA's `_get_efi_bootloaders`: the first boot loader hint file (`*.csv`) found, alone; or
/// else every boot loader of [`BOOTLOADERS_EFI`], in walk order.
pub fn find_bootloaders(fs: &Fat<'_>) -> Result<Vec<String>, EspError> {
    let mut found = Vec::new();
    for path in walk(fs)? {
        let name = path.rsplit('/').next().unwrap_or(&path).to_lowercase();
        if !BOOTLOADERS_EFI.contains(&name.as_str()) {
            continue;
        }
        if path.to_lowercase().contains("csv") {
            return Ok(vec![path]);
        }
        found.push(path);
    }
    Ok(found)
}

/// The contents of the file at `path` (`/`-separated).
pub fn read_file(fs: &Fat<'_>, path: &str) -> Result<Vec<u8>, EspError> {
    let mut data = Vec::new();
    fs.root_dir()
        .open_file(path)
        .and_then(|mut f| f.read_to_end(&mut data))
        .map_err(io_err(format!("reading {path} on the ESP")))?;
    Ok(data)
}

/// Writes a file, creating its directories (for building ESPs in tests and tools).
pub fn write_file(fs: &Fat<'_>, path: &str, data: &[u8]) -> Result<(), EspError> {
    let mut dir = fs.root_dir();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let Some((file, dirs)) = parts.split_last() else {
        return Ok(());
    };
    for d in dirs {
        dir = dir
            .create_dir(d)
            .map_err(io_err(format!("creating {d} on the ESP")))?;
    }
    let mut f = dir
        .create_file(file)
        .map_err(io_err(format!("creating {path} on the ESP")))?;
    f.truncate().map_err(io_err(format!("truncating {path}")))?;
    f.write_all(data)
        .map_err(io_err(format!("writing {path} on the ESP")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{run, temp_disk};

    fn esp_with(files: &[(&str, &[u8])]) -> (tempfile::NamedTempFile, DiskTarget, Extent) {
        let (tmp, target) = temp_disk(80 * MIB, 512);
        let extent = Extent::new(MIB, 64 * MIB);
        format(&target, extent, "efi-part").unwrap();
        {
            let fs = open(&target, extent).unwrap();
            for (path, data) in files {
                write_file(&fs, path, data).unwrap();
            }
            fs.unmount().unwrap();
        }
        (tmp, target, extent)
    }

    /// fsck checks what [`format`] wrote. Files are put in the root only: fatfs 0.3 writes
    /// long-name entries in front of a new directory's `.` and `..`, which fsck.vfat flags
    /// (Linux and firmware read such directories fine; only tests create directories).
    #[test]
    fn formatted_esp_is_fat32_and_fsck_clean() {
        let (_tmp, target, extent) = esp_with(&[("BOOTX64.EFI", b"MZ loader")]);
        let fs = open_read_only(&target, extent).unwrap();
        assert_eq!(fs.fat_type(), FatType::Fat32);
        assert_eq!(read_file(&fs, "BOOTX64.EFI").unwrap(), b"MZ loader");
        drop(fs);
        let part = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            part.path(),
            target.read_vec(extent.offset, extent.len as usize).unwrap(),
        )
        .unwrap();
        let p = part.path().to_str().unwrap();
        if let Some((ok, text)) = run("fsck.vfat", &["-n", p]) {
            assert!(ok, "{text}");
        }
        if let Some((_, text)) = run("blkid", &["-p", "-o", "export", p]) {
            assert!(
                text.contains("TYPE=vfat") && text.contains("LABEL=efi-part"),
                "{text}"
            );
        }
        let id = crate::fs_id::probe(&blockdev::region::Region::new(target.file(), extent))
            .unwrap()
            .unwrap();
        assert_eq!(id.label.as_deref(), Some("efi-part"));
    }

    #[test]
    fn bootloaders_as_ipa_finds_them() {
        // A hint file wins, wherever it is in the walk.
        let (_t, target, extent) = esp_with(&[
            ("EFI/BOOT/BOOTX64.EFI", b"x"),
            ("EFI/debian/shimx64.efi", b"x"),
            ("EFI/debian/grubx64.efi", b"x"),
            ("EFI/debian/BOOTX64.CSV", b"x"),
        ]);
        let fs = open_read_only(&target, extent).unwrap();
        assert_eq!(find_bootloaders(&fs).unwrap(), ["EFI/debian/BOOTX64.CSV"]);
        assert_eq!(
            walk(&fs).unwrap(),
            [
                "EFI/BOOT/BOOTX64.EFI",
                "EFI/debian/shimx64.efi",
                "EFI/debian/grubx64.efi",
                "EFI/debian/BOOTX64.CSV"
            ]
        );
        // Without one: every known loader; shim and grub alone are not found.
        let (_t, target, extent) = esp_with(&[
            ("EFI/debian/shimx64.efi", b"x"),
            ("EFI/BOOT/BOOTX64.EFI", b"x"),
            ("EFI/BOOT/bootaa64.efi", b"x"),
        ]);
        let fs = open_read_only(&target, extent).unwrap();
        assert_eq!(
            find_bootloaders(&fs).unwrap(),
            ["EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/bootaa64.efi"]
        );
        let (_t, target, extent) = esp_with(&[("EFI/debian/shimx64.efi", b"x")]);
        let fs = open_read_only(&target, extent).unwrap();
        assert!(find_bootloaders(&fs).unwrap().is_empty());
    }
}
