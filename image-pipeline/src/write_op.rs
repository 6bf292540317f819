//! The vocabulary between the decoding stage and the disk writer.

use bytes::Bytes;

/// What a decoder asks the disk writer to do. Offsets are absolute positions on the target
/// device (the "guest" offsets of a qcow2 image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Write `data` at `offset`.
    Data { offset: u64, data: Bytes },
    /// `len` bytes from `offset` must read back as zeros afterwards. The writer zeroes them
    /// for real (BLKZEROOUT or written zeros), never by trusting discard.
    Zero { offset: u64, len: u64 },
}

impl WriteOp {
    pub fn offset(&self) -> u64 {
        match self {
            WriteOp::Data { offset, .. } | WriteOp::Zero { offset, .. } => *offset,
        }
    }

    pub fn len(&self) -> u64 {
        match self {
            WriteOp::Data { data, .. } => data.len() as u64,
            WriteOp::Zero { len, .. } => *len,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One past the last byte.
    pub fn end(&self) -> u64 {
        self.offset() + self.len()
    }
}

/// The writer went away (it failed; its error is reported on its own).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the disk writer stopped")]
pub struct SinkClosed;

/// Random access to the image file, by byte range. Used only where streaming cannot work:
/// reading a qcow2 header and tables before the stream, and fetching the few data clusters a
/// qcow2 file stores before the table that maps them. What it returns is not covered by the
/// image checksum: its users check it against the stream (see [`crate::decoder`]).
pub trait RangeRead: Send {
    /// Exactly `len` bytes at `offset` of the image file, or an error.
    fn read_range(&mut self, offset: u64, len: u64) -> std::io::Result<Vec<u8>>;
}

/// An image file held in memory or on disk (tests, local files).
impl RangeRead for std::fs::File {
    fn read_range(&mut self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let mut buf = vec![0u8; usize::try_from(len).map_err(std::io::Error::other)?];
        std::os::unix::fs::FileExt::read_exact_at(self, &mut buf, offset)?;
        Ok(buf)
    }
}

impl RangeRead for &[u8] {
    fn read_range(&mut self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        let start = usize::try_from(offset).map_err(std::io::Error::other)?;
        let end = start
            .checked_add(usize::try_from(len).map_err(std::io::Error::other)?)
            .filter(|e| *e <= self.len())
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "range past the end of the image",
                )
            })?;
        Ok(self[start..end].to_vec())
    }
}
