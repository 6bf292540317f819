//! The image path of the agent: download → decompress/convert → hash → write, overlapped on
//! separate threads with bounded queues, so memory stays bounded whatever the image size.
//!
//! Read it like a chain (see [`pipeline`]): a [`source`] yields the image file's bytes in
//! order (HTTP with Range resume); the bytes are hashed ([`checksum`]) and decoded into
//! [`WriteOp`]s by the [`decoder`] that [`format`]'s inspection chose (raw, compressed raw,
//! or [`qcow2`]); the [`sink`] writes them to the target in large aligned blocks, holding the
//! first MiB back until everything else is on disk and verified. Every URL that reaches a
//! log line or an error message goes through [`redact`].

#![forbid(unsafe_code)]

pub mod buffer_pool;
pub mod checksum;
pub mod decoder;
pub mod format;
pub mod pipeline;
pub mod qcow2;
pub mod redact;
pub mod sink;
pub mod source;
#[cfg(any(test, feature = "test-server"))]
pub mod test_server;
pub mod write_op;

pub use decoder::{open_decoder, DecodeError, DecodeSummary, Decoder, Limits, Opened};
pub use format::{inspect, sniff, Compression, ImageFormat, Inspection, InspectionError, Sniffed};
pub use qcow2::{Qcow2Decoder, Qcow2Error};
pub use write_op::{RangeRead, SinkClosed, WriteOp};
