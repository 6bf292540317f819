//! Why an image could not be decoded.

use crate::format::{Compression, InspectionError};
use crate::qcow2::Qcow2Error;
use crate::SinkClosed;

/// Why an image could not be decoded. The messages end up in Ironic's `last_error`: they say
/// what is wrong with the image and, for a hostile or corrupt one, which field or limit.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Inspection(#[from] InspectionError),
    #[error("invalid qcow2 image: {0}")]
    Qcow2(#[from] Qcow2Error),
    #[error("the {compression} stream of the image cannot be decompressed: {source}")]
    Decompress {
        compression: Compression,
        #[source]
        source: std::io::Error,
    },
    #[error("the {compression} stream of the image ends early: the image file is truncated")]
    TruncatedStream { compression: Compression },
    #[error("the image file is empty")]
    Empty,
    #[error("the {compression} stream of the image decompresses to nothing")]
    EmptyPayload { compression: Compression },
    #[error("the image file ended after {got} bytes, but the server announced {expected}")]
    ShortFile { expected: u64, got: u64 },
    #[error("re-reading {len} bytes at offset {offset} of the image file failed: {source}")]
    Fetch {
        offset: u64,
        len: u64,
        #[source]
        source: std::io::Error,
    },
    /// Bytes read by a range request before the stream (the L1 table, the rest of the first
    /// cluster) steered the decoding but differ from the same bytes in the checksummed stream.
    #[error("the {what} fetched by a range request ({len} bytes at offset {offset:#x}) does not match the image stream at that offset: the image server returned inconsistent data (check the server and any proxy or cache in between)")]
    RangeMismatch {
        what: &'static str,
        offset: u64,
        len: u64,
    },
    #[error(transparent)]
    SinkClosed(#[from] SinkClosed),
}

impl DecodeError {
    /// True when the image server answered range requests with other bytes than the
    /// checksummed stream: a failed integrity check (IPA's `ImageChecksumError`), not a bad
    /// image.
    pub fn is_inconsistent_source(&self) -> bool {
        matches!(
            self,
            DecodeError::RangeMismatch { .. }
                | DecodeError::Qcow2(Qcow2Error::RefetchMismatch { .. })
        )
    }
}
