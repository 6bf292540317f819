//! Choosing and building the decoder for an inspected image.

use super::compressed::CompressedDecoder;
use super::error::DecodeError;
use super::raw::RawDecoder;
use super::{Decoder, Limits};
use crate::format::{Inspection, Plan};
use crate::qcow2::Qcow2Decoder;
use crate::RangeRead;

/// A decoder ready for the stream, and how many bytes the target needs if known before the
/// stream (raw: the file size; qcow2: the virtual size; compressed: unknown).
pub struct Opened {
    pub decoder: Box<dyn Decoder>,
    pub target_size: Option<u64>,
}

/// Builds the decoder for an inspected image. `head` is the start of the file (what
/// [`crate::format::inspect`] saw); `file_size` is the file's length when the server said; `fetch` reads the
/// qcow2 tables before the stream starts.
pub fn open_decoder(
    head: &[u8],
    inspection: &Inspection,
    file_size: Option<u64>,
    fetch: &mut dyn RangeRead,
    limits: &Limits,
) -> Result<Opened, DecodeError> {
    Ok(match inspection.plan {
        Plan::Raw(format) => Opened {
            decoder: Box::new(RawDecoder::new(format)),
            target_size: file_size,
        },
        Plan::Qcow2 => {
            let d = Qcow2Decoder::new(head, file_size, fetch, limits)?;
            let size = d.virtual_size();
            Opened {
                decoder: Box::new(d),
                target_size: Some(size),
            }
        }
        Plan::Decompress(c) => Opened {
            decoder: Box::new(CompressedDecoder::new(
                c,
                inspection.payload_policy.clone(),
                limits,
            )?),
            target_size: None,
        },
    })
}
