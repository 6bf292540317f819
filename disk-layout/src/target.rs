//! The disk being written: an opened file (a block device in production, a regular file in
//! tests) with its size and logical sector size.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use blockdev::partition_table::PartitionTables;
use blockdev::{DeviceGuard, OpenError, ReadAt, WritableDisk};

/// An opened disk and what the layout code needs to know about it.
#[derive(Debug)]
pub struct DiskTarget {
    disk: WritableDisk,
}

impl DiskTarget {
    /// Opens `path` for reading and writing, after the guard allowed `action` on it.
    pub fn open(path: &Path, guard: &DeviceGuard, action: &str) -> Result<Self, OpenError> {
        WritableDisk::open(path, guard, action).map(DiskTarget::new)
    }

    /// A disk opened through [`WritableDisk`] (a regular file in tests): its size and logical
    /// sector size come from the kernel for a block device; a regular file has 512-byte
    /// sectors (see [`DiskTarget::with_sector_size`]).
    pub fn new(disk: WritableDisk) -> Self {
        DiskTarget { disk }
    }

    /// Pretends the disk has `sector_size`-byte logical sectors (tests of 4Kn disks on files).
    pub fn with_sector_size(self, sector_size: u64) -> Self {
        DiskTarget::new(self.disk.with_sector_size(sector_size))
    }

    pub fn file(&self) -> &File {
        self.disk.file()
    }

    pub fn path(&self) -> &Path {
        self.disk.path()
    }

    /// Bytes.
    pub fn len(&self) -> u64 {
        self.disk.len()
    }

    pub fn is_empty(&self) -> bool {
        self.disk.is_empty()
    }

    pub fn sector_size(&self) -> u64 {
        self.disk.sector_size()
    }

    /// Sectors on the disk.
    pub fn sectors(&self) -> u64 {
        self.len() / self.sector_size()
    }

    /// The partition tables on the disk, read with the hardware managers' reader.
    pub fn tables(&self) -> io::Result<PartitionTables> {
        PartitionTables::read(self.file(), self.len(), self.sector_size())
    }

    pub fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let n = ReadAt::read_at(self.file(), buf, offset)?;
        if n != buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!(
                    "{}: short read of {} bytes at {offset}",
                    self.path().display(),
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
            .is_none_or(|end| end > self.len())
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{}: writing {} bytes at {offset} would pass the end of the disk ({} bytes)",
                    self.path().display(),
                    buf.len(),
                    self.len()
                ),
            ));
        }
        self.file().write_all_at(buf, offset)
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
        self.file().sync_all()
    }
}
