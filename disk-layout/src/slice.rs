//! A partition of a [`DiskTarget`] as a `Read + Write + Seek` stream, for fatfs.

use std::io::{self, Read, Seek, SeekFrom, Write};

use blockdev::region::Extent;

use crate::DiskTarget;

/// A byte range of the target disk, with its own cursor. Reads and writes never leave the
/// range; a read-only slice refuses writes, so reading a filesystem cannot modify it.
pub struct PartitionIo<'a> {
    target: &'a DiskTarget,
    extent: Extent,
    pos: u64,
    writable: bool,
}

impl<'a> PartitionIo<'a> {
    pub fn new(target: &'a DiskTarget, extent: Extent) -> Self {
        PartitionIo {
            target,
            extent,
            pos: 0,
            writable: true,
        }
    }

    pub fn read_only(target: &'a DiskTarget, extent: Extent) -> Self {
        PartitionIo {
            writable: false,
            ..Self::new(target, extent)
        }
    }

    /// The cursor, as an offset into the partition.
    pub fn position(&self) -> u64 {
        self.pos
    }

    fn remaining(&self) -> u64 {
        self.extent.len.saturating_sub(self.pos)
    }
}

impl Read for PartitionIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (buf.len() as u64).min(self.remaining()) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.target
            .read_exact_at(&mut buf[..n], self.extent.offset + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Write for PartitionIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if !self.writable {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "partition opened read-only",
            ));
        }
        let n = (buf.len() as u64).min(self.remaining()) as usize;
        if n == 0 && !buf.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                "write past the end of the partition",
            ));
        }
        self.target
            .write_all_at(&buf[..n], self.extent.offset + self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Seek for PartitionIo<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let new = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.extent.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match new {
            Some(p) if p <= self.extent.len => {
                self.pos = p;
                Ok(p)
            }
            _ => Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "seek outside the partition",
            )),
        }
    }
}
