//! Helpers the fuzz targets share: chunkings drawn from the input, and a check that the ops a
//! decoder sent describe one disk image, each byte exactly once.

#![forbid(unsafe_code)]

use std::collections::hash_map::DefaultHasher;
use std::hash::Hasher;

use bytes::Bytes;
use image_pipeline::WriteOp;

/// xorshift64*: the chunking must be a function of the input alone, so a crash replays.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Chunk lengths skewed toward tiny ones, so chunk boundaries fall inside headers,
    /// table entries and compressed streams, not only between clusters.
    pub fn chunk_len(&mut self) -> usize {
        (match self.next_u64() % 4 {
            0 => 1 + self.next_u64() % 8,
            1 => 1 + self.next_u64() % 512,
            2 => 1 + self.next_u64() % 8192,
            _ => 1 + self.next_u64() % 70_000,
        }) as usize
    }
}

/// `file` split into chunks drawn from `seed`; seed 0 is the whole file at once. Empty
/// chunks are mixed in: the decoder contract says they must work.
pub fn chunks(file: &Bytes, seed: u8) -> Vec<Bytes> {
    if seed == 0 {
        return vec![file.clone()];
    }
    let mut rng = Rng::new(u64::from(seed) * 0x9E37_79B9 + file.len() as u64);
    let mut out = Vec::new();
    let mut at = 0;
    while at < file.len() {
        if rng.next_u64().is_multiple_of(16) {
            out.push(Bytes::new());
        }
        let len = rng.chunk_len().min(file.len() - at);
        out.push(file.slice(at..at + len));
        at += len;
    }
    out
}

/// What a decoder wrote, reduced to a form that does not depend on how its ops were cut:
/// maximal runs of zeros and of data (data runs by a hash of their bytes), in disk order.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Image {
    pub runs: Vec<Run>,
    pub len: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    Zero(u64),
    Data { len: u64, hash: u64 },
}

/// Checks that `ops` cover `[0, len)` exactly once each (no overlap, no gap, nothing past
/// the end) and returns the image they describe. Panics otherwise: a decoder that sends
/// overlapping or out-of-range ops corrupts the disk even when it reports success.
pub fn tile(mut ops: Vec<WriteOp>, len: u64) -> Image {
    ops.retain(|op| !op.is_empty());
    ops.sort_by_key(WriteOp::offset);
    let mut image = Image {
        runs: Vec::new(),
        len,
    };
    let mut at = 0u64;
    let mut hasher: Option<(DefaultHasher, u64)> = None;
    let mut zeros = 0u64;
    for op in ops {
        assert_eq!(
            op.offset(),
            at,
            "ops leave a gap or overlap at byte {at} (next op {}..{})",
            op.offset(),
            op.end()
        );
        at = op.end();
        match op {
            WriteOp::Zero { len, .. } => {
                if let Some((h, n)) = hasher.take() {
                    image.runs.push(Run::Data {
                        len: n,
                        hash: h.finish(),
                    });
                }
                zeros += len;
            }
            WriteOp::Data { data, .. } => {
                if zeros > 0 {
                    image.runs.push(Run::Zero(zeros));
                    zeros = 0;
                }
                let (h, n) = hasher.get_or_insert_with(|| (DefaultHasher::new(), 0));
                h.write(&data);
                *n += data.len() as u64;
            }
        }
    }
    if let Some((h, n)) = hasher.take() {
        image.runs.push(Run::Data {
            len: n,
            hash: h.finish(),
        });
    }
    if zeros > 0 {
        image.runs.push(Run::Zero(zeros));
    }
    assert_eq!(at, len, "ops end at byte {at}, the image has {len}");
    image
}
