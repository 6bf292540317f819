//! Raw disk images, written as they come.

use bytes::Bytes;

use super::error::DecodeError;
use super::out::DataOut;
use super::{DecodeSummary, Decoder, Out};
use crate::format::ImageFormat;
use crate::RangeRead;

/// Pass-through for raw disk images: every chunk becomes a `Data` op at a running offset,
/// without copying (tiny chunks are merged into larger ops).
pub struct RawDecoder {
    format: ImageFormat,
    data: DataOut,
    offset: u64,
}

impl RawDecoder {
    /// `format` is what the head looked like (raw, gpt, iso), for the summary.
    pub fn new(format: ImageFormat) -> Self {
        RawDecoder {
            format,
            data: DataOut::default(),
            offset: 0,
        }
    }
}

impl Decoder for RawDecoder {
    fn feed(&mut self, chunk: Bytes, out: &mut Out<'_>) -> Result<(), DecodeError> {
        let len = chunk.len() as u64;
        self.data.push_bytes(self.offset, chunk, out)?;
        self.offset += len;
        self.data.flush_if_large(out)?;
        Ok(())
    }

    fn finish(
        mut self: Box<Self>,
        _fetch: &mut dyn RangeRead,
        out: &mut Out<'_>,
    ) -> Result<DecodeSummary, DecodeError> {
        self.data.flush(out)?;
        if self.offset == 0 {
            return Err(DecodeError::Empty);
        }
        Ok(DecodeSummary {
            format: self.format,
            compression: None,
            image_size: self.offset,
            bytes_written: self.data.bytes(),
            bytes_zeroed: 0,
            refetched_bytes: 0,
        })
    }
}
