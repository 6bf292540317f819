//! Decoders turn the bytes of an image FILE, fed in order as they arrive, into [`WriteOp`]s
//! on the target: [`RawDecoder`] (pass-through), [`CompressedDecoder`] (gzip, zstd, xz around
//! a raw disk) and [`crate::qcow2::Qcow2Decoder`].
//!
//! The pipeline runs one decoder on a dedicated thread: it calls [`Decoder::feed`] for every
//! chunk of the file (the whole file from byte 0, head included), then [`Decoder::finish`]
//! once the file's checksum has been verified. Besides the stream, a decoder may read the
//! file through [`RangeRead`] only when it is built (qcow2 tables) and in `finish` (qcow2
//! clusters stored before the table that maps them). The checksum does not cover those
//! reads: a decoder must check every byte it takes from them against the stream before the
//! write completes (see [`crate::qcow2`]), or a server answering range requests with other
//! bytes would put an unverified image on the disk.

mod compressed;
mod error;
mod open;
mod out;
mod raw;

use bytes::Bytes;

pub use compressed::CompressedDecoder;
pub use error::DecodeError;
pub use open::{open_decoder, Opened};
pub(crate) use out::{DataOut, ZeroOut};
pub use raw::RawDecoder;

use crate::format::{Compression, ImageFormat};
use crate::{RangeRead, SinkClosed, WriteOp};

/// Where a decoder sends its ops. `Err(SinkClosed)` means the writer is gone; the decoder
/// stops and returns [`DecodeError::SinkClosed`].
pub type Out<'a> = dyn FnMut(WriteOp) -> Result<(), SinkClosed> + 'a;

/// Turns the bytes of an image file into writes on the target device.
pub trait Decoder: Send {
    /// The next bytes of the image FILE, in order, as they arrive (chunks of ~1 MiB; any size
    /// must work, including empty ones).
    fn feed(&mut self, chunk: Bytes, out: &mut Out<'_>) -> Result<(), DecodeError>;

    /// Called once after the whole file was fed AND its checksum verified. `fetch` gives
    /// random access to the image file (HTTP Range) for what streaming could not cover.
    fn finish(
        self: Box<Self>,
        fetch: &mut dyn RangeRead,
        out: &mut Out<'_>,
    ) -> Result<DecodeSummary, DecodeError>;
}

/// What a decoder did, once it finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeSummary {
    /// The format of the disk image that was written (for a compressed file: of the payload).
    pub format: ImageFormat,
    /// The compression around the payload, if any.
    pub compression: Option<Compression>,
    /// Bytes the target needs: the raw length, or the qcow2 virtual size.
    pub image_size: u64,
    /// Bytes sent as [`WriteOp::Data`].
    pub bytes_written: u64,
    /// Bytes sent as [`WriteOp::Zero`].
    pub bytes_zeroed: u64,
    /// Bytes of the image file read a second time through [`RangeRead`].
    pub refetched_bytes: u64,
}

/// Resource limits that keep a hostile image from exhausting the agent's memory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Largest accepted qcow2 virtual size (default 64 TiB).
    pub max_virtual_size: u64,
    /// Largest accepted qcow2 L1 table, in bytes (default 32 MiB, the limit QEMU enforces).
    pub max_l1_bytes: u64,
    /// Most qcow2 data-cluster mappings (coalesced runs) held for clusters not yet streamed
    /// past (default 4 Mi, about 160 MiB at worst; images written by `qemu-img convert` need a
    /// few thousand).
    pub max_ahead_mappings: usize,
    /// Most qcow2 clusters remembered by digest because they streamed past before the table
    /// that may map them (default 4 Mi, 24 B each).
    pub max_unordered_clusters: usize,
    /// Memory the xz decoder may use (default 256 MiB; `xz -9` needs 65 MiB).
    pub xz_memory_limit: u64,
    /// Heap the qcow2 decoder may hold for its tables and mappings, all of them together: the
    /// L1 table while it is read, the L2 table list, the mappings ahead, the digests, the
    /// re-read lists (default [`DEFAULT_DECODER_MEMORY`]). The limits above bound each
    /// structure alone; a hostile image could fill several at once.
    pub max_decoder_memory: u64,
}

/// 16 MiB. The agent must stay under 64 MiB of RSS; the qcow2 path peaks at 42-43 MiB with
/// its queues and buffers (README, "Benchmark"), whatever the image size, so a hostile image
/// can add this much and stay below. Normal images need far less: `qemu-img convert` output
/// a few KiB, a 64 TiB disk with 64 KiB clusters 3 MiB (its 1 MiB L1 and the list of 128 Ki
/// L2 tables). What it refuses: more than about 21 GiB (at 64 KiB clusters) stored before
/// the tables that map it, or a 512-byte-cluster disk of more than about 20 GiB.
pub const DEFAULT_DECODER_MEMORY: u64 = 16 << 20;

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_virtual_size: 64 << 40,
            max_l1_bytes: 32 << 20,
            max_ahead_mappings: 4 << 20,
            max_unordered_clusters: 4 << 20,
            xz_memory_limit: 256 << 20,
            max_decoder_memory: DEFAULT_DECODER_MEMORY,
        }
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Helpers shared by the decoder tests: chunking, applying ops, a tiny PRNG.

    use super::*;

    /// xorshift64*: deterministic, seedable, no dependency.
    pub struct Rng(pub u64);

    impl Rng {
        pub fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            self.0 = x;
            x.wrapping_mul(0x2545_F491_4F6C_DD1D)
        }

        /// Uniform-ish in `lo..=hi`.
        pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
            lo + self.next() % (hi - lo + 1)
        }

        /// Chunk sizes skewed toward small ones, so boundaries land everywhere.
        pub fn chunk_len(&mut self, max: u64) -> u64 {
            match self.next() % 4 {
                0 => self.range(1, 64),
                1 => self.range(1, 4096),
                2 => self.range(1, 256 << 10),
                _ => self.range(1, max),
            }
        }
    }

    /// Splits `file` into random chunks (1 byte ..= `max`).
    pub fn random_chunks(file: &Bytes, rng: &mut Rng, max: u64) -> Vec<Bytes> {
        let mut chunks = Vec::new();
        let mut at = 0usize;
        while at < file.len() {
            let len = (rng.chunk_len(max) as usize).min(file.len() - at);
            chunks.push(file.slice(at..at + len));
            at += len;
        }
        chunks
    }

    /// A target that records what each byte became, to check exact coverage.
    #[derive(Debug)]
    pub struct Target {
        pub bytes: Vec<u8>,
        /// How many ops covered each byte (must end up exactly 1 each).
        pub covered: Vec<u8>,
        pub ops: usize,
        pub data_ops: usize,
        pub data_bytes: u64,
    }

    impl Target {
        /// Pre-filled with 0xFF garbage, so a missed zero shows.
        pub fn new(len: usize) -> Self {
            Target {
                bytes: vec![0xFF; len],
                covered: vec![0; len],
                ops: 0,
                data_ops: 0,
                data_bytes: 0,
            }
        }

        pub fn apply(&mut self, op: WriteOp) {
            self.ops += 1;
            let start = op.offset() as usize;
            let end = op.end() as usize;
            assert!(
                end <= self.bytes.len(),
                "op {start}..{end} past the target ({})",
                self.bytes.len()
            );
            match op {
                WriteOp::Data { data, .. } => {
                    self.data_ops += 1;
                    self.data_bytes += data.len() as u64;
                    self.bytes[start..end].copy_from_slice(&data);
                }
                WriteOp::Zero { .. } => self.bytes[start..end].fill(0),
            }
            for c in &mut self.covered[start..end] {
                *c = c.saturating_add(1);
            }
        }

        /// Every byte written exactly once.
        pub fn assert_exactly_covered(&self) {
            if let Some(i) = self.covered.iter().position(|c| *c != 1) {
                panic!("byte {i} covered {} times", self.covered[i]);
            }
        }
    }

    /// Feeds `chunks` to `decoder`, finishes it and applies every op to a target of
    /// `target_len` bytes.
    pub fn run_decoder(
        mut decoder: Box<dyn Decoder>,
        chunks: Vec<Bytes>,
        fetch: &mut dyn RangeRead,
        target_len: usize,
    ) -> Result<(DecodeSummary, Target), DecodeError> {
        let mut target = Target::new(target_len);
        let mut out = |op: WriteOp| {
            target.apply(op);
            Ok(())
        };
        for chunk in chunks {
            decoder.feed(chunk, &mut out)?;
        }
        let summary = decoder.finish(fetch, &mut out)?;
        Ok((summary, target))
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;

    #[test]
    fn raw_passes_bytes_through_in_order_without_copies() {
        let mut rng = Rng(7);
        let file: Bytes = (0..5_000_000u32)
            .map(|i| (i * 7 + i / 3) as u8)
            .collect::<Vec<_>>()
            .into();
        for round in 0..20 {
            let chunks = random_chunks(&file, &mut rng, 3 << 20);
            let (summary, target) = run_decoder(
                Box::new(RawDecoder::new(ImageFormat::Raw)),
                chunks,
                &mut &file[..],
                file.len(),
            )
            .unwrap();
            assert_eq!(target.bytes, &file[..], "round {round}");
            target.assert_exactly_covered();
            assert_eq!(summary.image_size, file.len() as u64);
            assert_eq!(summary.bytes_written, file.len() as u64);
        }
    }

    #[test]
    fn raw_large_chunks_are_emitted_as_the_same_buffers() {
        let file = Bytes::from(vec![3u8; 4 << 20]);
        let mut dec = RawDecoder::new(ImageFormat::Raw);
        let mut ops = Vec::new();
        let mut out = |op: WriteOp| {
            ops.push(op);
            Ok(())
        };
        for i in 0..4 {
            dec.feed(file.slice(i << 20..(i + 1) << 20), &mut out)
                .unwrap();
        }
        Box::new(dec).finish(&mut &file[..], &mut out).unwrap();
        assert_eq!(ops.len(), 4);
        for (i, op) in ops.iter().enumerate() {
            let WriteOp::Data { offset, data } = op else {
                panic!("not data")
            };
            assert_eq!(*offset, (i as u64) << 20);
            // Same memory as the input chunk: no copy.
            assert_eq!(data.as_ptr(), file[i << 20..].as_ptr());
        }
    }

    #[test]
    fn raw_tiny_chunks_are_merged() {
        let file = Bytes::from(vec![1u8; 1 << 20]);
        let chunks: Vec<Bytes> = (0..1024)
            .map(|i| file.slice(i * 1024..(i + 1) * 1024))
            .collect();
        let (_, target) = run_decoder(
            Box::new(RawDecoder::new(ImageFormat::Raw)),
            chunks,
            &mut &file[..],
            file.len(),
        )
        .unwrap();
        assert!(
            target.data_ops <= 4,
            "{} ops for 1 MiB of 1 KiB chunks",
            target.data_ops
        );
    }

    #[test]
    fn raw_empty_file_is_an_error() {
        let err = Box::new(RawDecoder::new(ImageFormat::Raw))
            .finish(&mut &[][..], &mut |_| Ok(()))
            .unwrap_err();
        assert!(matches!(err, DecodeError::Empty), "{err}");
    }

    #[test]
    fn sink_closed_stops_the_decoder() {
        let mut dec = RawDecoder::new(ImageFormat::Raw);
        let err = dec
            .feed(Bytes::from(vec![0u8; 1 << 20]), &mut |_| Err(SinkClosed))
            .unwrap_err();
        assert!(matches!(err, DecodeError::SinkClosed(_)));
    }
}
