//! The one way to open a disk for writing.
//!
//! Hazard: a deploy or an erase that writes to the wrong device destroys a machine, and on a
//! workstation or a CI runner that machine is the one the agent runs on. So every writer of a
//! disk (the image sink, the layout code, the erase methods) starts from a [`WritableDisk`],
//! and the only way to get one for a block device is [`WritableDisk::open`], which asks the
//! [`DeviceGuard`] first. A second descriptor (for `O_DIRECT`) comes from
//! [`WritableDisk::reopen`], which checks that it reached the same device, not whatever the
//! path names by then. Regular files (images and disks in tests) come in through
//! [`WritableDisk::open_file`] or [`WritableDisk::from_file`], which refuse block devices.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::guard::{DeviceGuard, NotAllowed};
use crate::ioctl;

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    NotAllowed(#[from] NotAllowed),
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "{} is a block device: disks are opened for writing only through the device guard",
        .0.display()
    )]
    UnguardedBlockDevice(PathBuf),
}

/// A disk (or, in tests, a regular file) open for reading and writing, with the facts every
/// writer needs: its size, its logical sector size, and whether it is a block device.
#[derive(Debug)]
pub struct WritableDisk {
    file: File,
    path: PathBuf,
    len: u64,
    sector_size: u64,
    is_block_device: bool,
    /// What [`WritableDisk::reopen`] must find again: `st_rdev` of a block device, or
    /// `(st_dev, st_ino)` of a regular file.
    identity: (u64, u64),
}

impl WritableDisk {
    /// Opens `path` for reading and writing after the guard allowed `action` on it.
    pub fn open(path: &Path, guard: &DeviceGuard, action: &str) -> Result<Self, OpenError> {
        guard.check(path, action)?;
        Self::from_open(open_read_write(path)?, path.to_path_buf())
    }

    /// Opens a regular file as a disk: an image file, or a disk in a test. Refuses block
    /// devices, which only [`WritableDisk::open`] opens.
    pub fn open_file(path: &Path) -> Result<Self, OpenError> {
        Self::from_file(open_read_write(path)?, path)
    }

    /// An already opened regular file (opened for reading and writing). Refuses block
    /// devices, which only [`WritableDisk::open`] opens.
    pub fn from_file(file: File, path: impl Into<PathBuf>) -> Result<Self, OpenError> {
        let path = path.into();
        let meta = file.metadata().map_err(|source| OpenError::Io {
            context: "inspecting",
            path: path.clone(),
            source,
        })?;
        if meta.file_type().is_block_device() {
            return Err(OpenError::UnguardedBlockDevice(path));
        }
        Self::from_open(file, path)
    }

    fn from_open(file: File, path: PathBuf) -> Result<Self, OpenError> {
        let io_err = |context, source| OpenError::Io {
            context,
            path: path.clone(),
            source,
        };
        let meta = file.metadata().map_err(|e| io_err("inspecting", e))?;
        let is_block_device = meta.file_type().is_block_device();
        let (len, sector_size) = if is_block_device {
            (
                ioctl::size_bytes(&file).map_err(|e| io_err("reading the size of", e))?,
                ioctl::logical_sector_size(&file)
                    .map_err(|e| io_err("reading the sector size of", e))?,
            )
        } else {
            (meta.len(), 512)
        };
        Ok(WritableDisk {
            identity: identity(&meta),
            file,
            path,
            len,
            sector_size,
            is_block_device,
        })
    }

    /// Pretends the disk has `sector_size`-byte logical sectors (tests of 4Kn disks on files).
    pub fn with_sector_size(mut self, sector_size: u64) -> Self {
        self.sector_size = sector_size;
        self
    }

    /// Another descriptor of the same disk, opened with `options` (e.g. `O_DIRECT`). Fails if
    /// the path no longer names the device the guard allowed.
    pub fn reopen(&self, options: &OpenOptions) -> io::Result<File> {
        let file = options.open(&self.path)?;
        let meta = file.metadata()?;
        if identity(&meta) != self.identity {
            return Err(io::Error::other(format!(
                "{} names another device than the one opened before",
                self.path.display()
            )));
        }
        Ok(file)
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The descriptor, for a writer that takes it over.
    pub fn into_file(self) -> File {
        self.file
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Bytes per logical sector (512 for regular files unless set otherwise).
    pub fn sector_size(&self) -> u64 {
        self.sector_size
    }

    pub fn is_block_device(&self) -> bool {
        self.is_block_device
    }
}

fn open_read_write(path: &Path) -> Result<File, OpenError> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .map_err(|source| OpenError::Io {
            context: "opening",
            path: path.to_path_buf(),
            source,
        })
}

fn identity(meta: &std::fs::Metadata) -> (u64, u64) {
    if meta.file_type().is_block_device() {
        (meta.rdev(), 0)
    } else {
        (meta.dev(), meta.ino())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_decides_before_anything_is_opened() {
        let guard = DeviceGuard::new(false, vec![], "/nonexistent-sys");
        let tmp = tempfile::NamedTempFile::new().unwrap();
        let err = WritableDisk::open(tmp.path(), &guard, "erase").unwrap_err();
        assert!(matches!(err, OpenError::NotAllowed(_)), "{err}");
        assert!(err.to_string().contains("--allow-device"), "{err}");
    }

    #[test]
    fn regular_files_open_with_their_size_and_512_byte_sectors() {
        let tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.as_file().set_len(3 << 20).unwrap();
        let disk = WritableDisk::open_file(tmp.path()).unwrap();
        assert_eq!((disk.len(), disk.sector_size()), (3 << 20, 512));
        assert!(!disk.is_block_device());
        assert_eq!(disk.with_sector_size(4096).sector_size(), 4096);
    }

    #[test]
    fn block_devices_never_bypass_the_guard() {
        // /dev/loop-control is a character device; look for any block device node instead.
        let Some(node) = std::fs::read_dir("/dev").ok().and_then(|d| {
            d.flatten()
                .map(|e| e.path())
                .find(|p| std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device()))
        }) else {
            eprintln!("no block device node in /dev; skipping");
            return;
        };
        // Opened read-only: nothing is ever written to this machine's devices.
        let file = File::open(&node).unwrap();
        let err = WritableDisk::from_file(file, &node).unwrap_err();
        assert!(matches!(err, OpenError::UnguardedBlockDevice(_)), "{err}");
    }

    #[test]
    fn reopen_refuses_a_path_that_now_names_something_else() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        let disk = WritableDisk::open_file(&path).unwrap();
        disk.reopen(OpenOptions::new().write(true)).unwrap();
        std::fs::remove_file(&path).unwrap();
        std::fs::write(&path, vec![0u8; 4096]).unwrap();
        let err = disk.reopen(OpenOptions::new().write(true)).unwrap_err();
        assert!(err.to_string().contains("another device"), "{err}");
    }
}
