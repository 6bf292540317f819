//! A byte range of a whole disk, and reading from one.
//!
//! Everything that inspects a disk (signature probing, partition-table parsing) reads through
//! [`ReadAt`], so the same code runs on a block device, a regular file and a byte slice in a
//! unit test. A partition is a [`Region`] of its disk: probing it reads the disk's file at the
//! partition's offset, through the disk's one page cache.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// `[offset, offset + len)` in bytes, relative to the start of the whole disk unless stated
/// otherwise.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Extent {
    pub offset: u64,
    pub len: u64,
}

impl Extent {
    pub const fn new(offset: u64, len: u64) -> Self {
        Extent { offset, len }
    }

    /// One past the last byte (saturating: extents may come from damaged on-disk tables).
    pub const fn end(&self) -> u64 {
        self.offset.saturating_add(self.len)
    }

    pub fn contains(&self, pos: u64) -> bool {
        pos >= self.offset && pos < self.end()
    }

    /// This extent moved by `base`: turns an offset within a partition into one within its
    /// disk.
    pub const fn shifted(&self, base: u64) -> Self {
        Extent::new(self.offset.saturating_add(base), self.len)
    }
}

impl serde::Serialize for Extent {
    /// `[offset, length]`, the shape of the erase reports.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        [self.offset, self.len].serialize(s)
    }
}

/// Sorts extents and merges those that overlap or touch.
pub fn merge(mut extents: Vec<Extent>) -> Vec<Extent> {
    extents.retain(|e| e.len > 0);
    extents.sort();
    let mut merged: Vec<Extent> = Vec::with_capacity(extents.len());
    for e in extents {
        match merged.last_mut() {
            Some(last) if e.offset <= last.end() => {
                last.len = last.len.max(e.end() - last.offset);
            }
            _ => merged.push(e),
        }
    }
    merged
}

/// Positional reads, as `pread(2)`: no shared cursor, so one file can be read for several
/// partitions at once.
pub trait ReadAt {
    /// Reads up to `buf.len()` bytes at `offset`; fewer only at the end of the source.
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize>;
}

impl ReadAt for File {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let mut done = 0;
        while done < buf.len() {
            match FileExt::read_at(self, &mut buf[done..], offset + done as u64) {
                Ok(0) => break,
                Ok(n) => done += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(done)
    }
}

impl ReadAt for [u8] {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        let start = usize::try_from(offset)
            .unwrap_or(usize::MAX)
            .min(self.len());
        let n = buf.len().min(self.len() - start);
        buf[..n].copy_from_slice(&self[start..start + n]);
        Ok(n)
    }
}

impl ReadAt for Vec<u8> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        self.as_slice().read_at(buf, offset)
    }
}

/// A window onto a source: offsets given to it are relative to `extent.offset`, and nothing
/// past `extent.len` is readable, so a probe of a partition cannot see its neighbour.
pub struct Region<'a, R: ReadAt + ?Sized> {
    source: &'a R,
    extent: Extent,
}

impl<'a, R: ReadAt + ?Sized> Region<'a, R> {
    pub fn new(source: &'a R, extent: Extent) -> Self {
        Region { source, extent }
    }

    pub fn len(&self) -> u64 {
        self.extent.len
    }

    pub fn is_empty(&self) -> bool {
        self.extent.len == 0
    }

    /// Where this region is in its source.
    pub fn extent(&self) -> Extent {
        self.extent
    }

    /// `len` bytes at `offset` (relative to the region), or `None` when the region is too
    /// short for them or the source ends early.
    pub fn bytes(&self, offset: u64, len: usize) -> io::Result<Option<Vec<u8>>> {
        let Some(end) = offset.checked_add(len as u64) else {
            return Ok(None);
        };
        if end > self.extent.len {
            return Ok(None);
        }
        let mut buf = vec![0; len];
        let n = self.source.read_at(&mut buf, self.extent.offset + offset)?;
        Ok((n == len).then_some(buf))
    }

    /// Whether `magic` is at `offset`.
    pub fn has(&self, offset: u64, magic: &[u8]) -> io::Result<bool> {
        Ok(self.bytes(offset, magic.len())?.as_deref() == Some(magic))
    }
}

impl<R: ReadAt + ?Sized> ReadAt for Region<'_, R> {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<usize> {
        if offset >= self.extent.len {
            return Ok(0);
        }
        let n = buf.len().min((self.extent.len - offset) as usize);
        self.source
            .read_at(&mut buf[..n], self.extent.offset + offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_joins_overlapping_and_touching() {
        let m = merge(vec![
            Extent::new(100, 10),
            Extent::new(0, 10),
            Extent::new(10, 5),
            Extent::new(105, 2),
            Extent::new(50, 0),
        ]);
        assert_eq!(m, [Extent::new(0, 15), Extent::new(100, 10)]);
    }

    #[test]
    fn region_reads_stay_inside() {
        let data: Vec<u8> = (0..=255).collect();
        let r = Region::new(data.as_slice(), Extent::new(16, 32));
        assert_eq!(r.bytes(0, 2).unwrap(), Some(vec![16, 17]));
        assert_eq!(r.bytes(30, 2).unwrap(), Some(vec![46, 47]));
        assert_eq!(r.bytes(31, 2).unwrap(), None, "crosses the end");
        let mut buf = [0u8; 8];
        assert_eq!(ReadAt::read_at(&r, &mut buf, 28).unwrap(), 4);
        assert!(r.has(1, &[17, 18]).unwrap());
    }
}
