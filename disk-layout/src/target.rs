//! The disk being written: an opened file (a block device in production, a regular file in
//! tests) with its size and logical sector size.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::path::{Path, PathBuf};

use hardware_managers::generic::partition_table::PartitionTables;
use hardware_managers::generic::region::ReadAt;
use hardware_managers::{DeviceGuard, HardwareError};

// <linux/fs.h>: BLKSSZGET = _IO(0x12, 104), BLKGETSIZE64 = _IOR(0x12, 114, size_t).
nix::ioctl_read_bad!(
    blksszget,
    nix::request_code_none!(0x12, 104),
    nix::libc::c_int
);
nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);

#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    #[error(transparent)]
    NotAllowed(#[from] HardwareError),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

/// An opened disk and what the layout code needs to know about it.
#[derive(Debug)]
pub struct DiskTarget {
    file: File,
    path: PathBuf,
    len: u64,
    sector_size: u64,
}

impl DiskTarget {
    /// Opens `path` for reading and writing, after the guard allowed `action` on it.
    pub fn open(path: &Path, guard: &DeviceGuard, action: &str) -> Result<Self, TargetError> {
        guard.check(path, action)?;
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|source| TargetError::Io {
                context: format!("opening {}", path.display()),
                source,
            })?;
        Self::from_file(file, path).map_err(|source| TargetError::Io {
            context: format!("reading the size of {}", path.display()),
            source,
        })
    }

    /// An already opened disk: its size and logical sector size come from the kernel for a
    /// block device; a regular file has 512-byte sectors (see [`DiskTarget::with_sector_size`]).
    pub fn from_file(file: File, path: impl Into<PathBuf>) -> io::Result<Self> {
        let meta = file.metadata()?;
        let (len, sector_size) = if meta.file_type().is_block_device() {
            let mut len = 0u64;
            let mut ss: nix::libc::c_int = 0;
            // SAFETY: both ioctls write one integer through a pointer to a live local.
            unsafe {
                blkgetsize64(file.as_raw_fd(), &mut len).map_err(io::Error::from)?;
                blksszget(file.as_raw_fd(), &mut ss).map_err(io::Error::from)?;
            }
            (len, u64::try_from(ss).unwrap_or(512).max(512))
        } else {
            (meta.len(), 512)
        };
        Ok(DiskTarget {
            file,
            path: path.into(),
            len,
            sector_size,
        })
    }

    /// Pretends the disk has `sector_size`-byte logical sectors (tests of 4Kn disks on files).
    pub fn with_sector_size(mut self, sector_size: u64) -> Self {
        self.sector_size = sector_size;
        self
    }

    pub fn file(&self) -> &File {
        &self.file
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

    pub fn sector_size(&self) -> u64 {
        self.sector_size
    }

    /// Sectors on the disk.
    pub fn sectors(&self) -> u64 {
        self.len / self.sector_size
    }

    /// The partition tables on the disk, read with the hardware managers' reader.
    pub fn tables(&self) -> io::Result<PartitionTables> {
        PartitionTables::read(&self.file, self.len, self.sector_size)
    }

    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let n = ReadAt::read_at(&self.file, buf, offset)?;
        if n != buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: short read of {} bytes at {offset}",
                    self.path.display(),
                    buf.len()
                ),
            ));
        }
        Ok(())
    }

    pub fn read_vec(&self, offset: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; len];
        self.read_exact_at(&mut buf, offset)?;
        Ok(buf)
    }

    /// Writes `buf` at `offset`, refusing to write past the end of the disk (a regular file
    /// would silently grow).
    pub fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        if offset
            .checked_add(buf.len() as u64)
            .is_none_or(|end| end > self.len)
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: writing {} bytes at {offset} would pass the end of the disk ({} bytes)",
                    self.path.display(),
                    buf.len(),
                    self.len
                ),
            ));
        }
        self.file.write_all_at(buf, offset)
    }

    /// Zeroes `len` bytes at `offset`.
    pub fn zero(&self, offset: u64, len: u64) -> io::Result<()> {
        const CHUNK: u64 = 1 << 20;
        let zeros = vec![0u8; CHUNK.min(len) as usize];
        let mut done = 0;
        while done < len {
            let n = CHUNK.min(len - done);
            self.write_all_at(&zeros[..n as usize], offset + done)?;
            done += n;
        }
        Ok(())
    }

    /// Flushes what was written to the disk itself.
    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}
