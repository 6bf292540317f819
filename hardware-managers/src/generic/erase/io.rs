//! Aligned buffers and direct I/O on a disk, shared by the erase methods.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use blockdev::WritableDisk;

/// Buffer alignment for `O_DIRECT`: the largest logical sector size in use.
pub const ALIGN: usize = 4096;

/// A buffer aligned for `O_DIRECT`, without `unsafe`: a larger vector used from its first
/// aligned byte.
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub fn new(len: usize) -> Self {
        let storage = vec![0u8; len + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        AlignedBuf {
            storage,
            start,
            len,
        }
    }

    /// The first `len` bytes (at most the buffer's size), aligned.
    pub fn get_mut(&mut self, len: usize) -> &mut [u8] {
        &mut self.storage[self.start..self.start + len.min(self.len)]
    }
}

/// Opens `path` for reading with `O_DIRECT` when the device (or filesystem, in tests)
/// accepts it; the flag says whether it did.
pub fn open_direct(path: &Path) -> io::Result<(File, bool)> {
    let direct = OpenOptions::new()
        .read(true)
        .custom_flags(nix::libc::O_DIRECT)
        .open(path);
    match direct {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => Ok((File::open(path)?, false)),
        Err(e) => Err(e),
    }
}

/// Reads exactly `buf.len()` bytes at `offset`.
pub fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let n = blockdev::ReadAt::read_at(file, buf, offset)?;
    if n < buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the device ended early",
        ));
    }
    Ok(())
}

/// Reads `buf.len()` bytes at `offset` from the device itself, not from the page cache:
/// with `O_DIRECT` when the file is open that way, else after dropping the cached pages.
pub fn read_uncached(file: &File, direct: bool, buf: &mut [u8], offset: u64) -> io::Result<()> {
    if !direct {
        let _ = nix::fcntl::posix_fadvise(
            file,
            offset as i64,
            buf.len() as i64,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
    }
    read_exact_at(file, buf, offset)
}

/// Writes to a disk with `O_DIRECT` while the device takes it, through the page cache
/// otherwise: some devices and filesystems refuse direct I/O, or a misaligned last chunk.
pub struct DiskWriter {
    /// The guarded descriptor, buffered: used once direct I/O was refused.
    disk: WritableDisk,
    /// The same device with `O_DIRECT`, while it takes it.
    direct: Option<File>,
}

impl DiskWriter {
    pub fn new(disk: WritableDisk) -> Self {
        let direct = disk
            .reopen(
                OpenOptions::new()
                    .write(true)
                    .custom_flags(nix::libc::O_DIRECT),
            )
            .map_err(|e| {
                tracing::debug!(device = %disk.path().display(), error = %e,
                    "no direct I/O, writing through the page cache");
            })
            .ok();
        DiskWriter { disk, direct }
    }

    /// Whether every write so far bypassed the page cache.
    pub fn all_direct(&self) -> bool {
        self.direct.is_some()
    }

    /// Fails once a disk stalled in this boot ([`blockdev::watch::global`] cancelled): a
    /// thread stuck in the kernel may still be writing, and nothing more should.
    fn check_stall(&self) -> io::Result<()> {
        if blockdev::watch::global().is_cancelled() {
            return Err(io::Error::other(
                "a disk stopped answering earlier in this boot; no more erase writes until the \
                 ramdisk restarts",
            ));
        }
        Ok(())
    }

    pub fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        self.check_stall()?;
        let _io = blockdev::watch::global().begin_on("writing to", self.disk.path());
        if let Some(direct) = &self.direct {
            // The kernel refuses a misaligned direct write as a whole, with EINVAL.
            match direct.write_all_at(data, offset) {
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                    tracing::debug!(
                        device = %self.disk.path().display(),
                        "direct I/O refused, writing through the page cache"
                    );
                    self.direct = None;
                }
                other => return other,
            }
        }
        self.disk.file().write_all_at(data, offset)
    }

    pub fn sync(&self) -> io::Result<()> {
        self.check_stall()?;
        let _io = blockdev::watch::global().begin_on("syncing", self.disk.path());
        self.direct.as_ref().map_or(Ok(()), File::sync_all)?;
        self.disk.file().sync_all()
    }

    /// The descriptor of the whole disk (for ioctls such as `BLKRRPART`).
    pub fn file(&self) -> &File {
        self.disk.file()
    }
}
