//! Coalescing of decoder output into large ops.
//!
//! The disk writer is fastest with large writes, and every op costs a queue hop, so decoders
//! merge what they produce: adjacent slices of the same input chunk are merged for free
//! (the op is one slice of the chunk, no copy); small adjacent pieces from different chunks
//! are copied into one buffer; big pieces are never copied.

use std::ops::Range;

use bytes::{Bytes, BytesMut};

use super::{DecodeError, Out};
use crate::WriteOp;

/// Ops at least this large are sent as they are; smaller adjacent ones are merged by copying.
pub(crate) const MIN_OP: usize = 256 << 10;
/// Merged (copied) buffers are sent once they reach this size.
pub(crate) const MAX_OWNED: usize = 1 << 20;

#[derive(Default)]
enum Pending {
    #[default]
    None,
    /// `chunk[start..end]` at `offset`: grows for free while the next piece continues it.
    Shared {
        offset: u64,
        chunk: Bytes,
        start: usize,
        end: usize,
    },
    Owned {
        offset: u64,
        buf: BytesMut,
    },
}

/// Merges `Data` ops; see the module doc.
#[derive(Default)]
pub(crate) struct DataOut {
    pending: Pending,
    bytes: u64,
}

impl DataOut {
    /// Bytes sent so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    fn pending_span(&self) -> Option<(u64, usize)> {
        match &self.pending {
            Pending::None => None,
            Pending::Shared {
                offset, start, end, ..
            } => Some((*offset, end - start)),
            Pending::Owned { offset, buf } => Some((*offset, buf.len())),
        }
    }

    fn continues(&self, offset: u64) -> bool {
        matches!(self.pending_span(), Some((o, l)) if o + l as u64 == offset)
    }

    /// `data` at `offset`, without copying unless it is small and continues a small op.
    pub fn push_bytes(
        &mut self,
        offset: u64,
        data: Bytes,
        out: &mut Out<'_>,
    ) -> Result<(), DecodeError> {
        let len = data.len();
        self.push_slice(offset, &data, 0..len, out)
    }

    /// `chunk[range]` at `offset`.
    pub fn push_slice(
        &mut self,
        offset: u64,
        chunk: &Bytes,
        range: Range<usize>,
        out: &mut Out<'_>,
    ) -> Result<(), DecodeError> {
        if range.is_empty() {
            return Ok(());
        }
        if let Pending::Shared {
            offset: po,
            chunk: pc,
            start,
            end,
        } = &mut self.pending
        {
            let same_chunk = pc.as_ptr() == chunk.as_ptr() && pc.len() == chunk.len();
            if same_chunk && *end == range.start && *po + (*end - *start) as u64 == offset {
                *end = range.end;
                return Ok(());
            }
        }
        let small = self.pending_span().is_some_and(|(_, l)| l < MIN_OP) && range.len() < MIN_OP;
        if self.continues(offset) && small {
            self.owned_mut().extend_from_slice(&chunk[range]);
            return self.flush_owned_if_full(out);
        }
        self.flush(out)?;
        self.pending = Pending::Shared {
            offset,
            chunk: chunk.clone(),
            start: range.start,
            end: range.end,
        };
        Ok(())
    }

    /// A copy of `data` at `offset` (for bytes the decoder produced itself).
    pub fn push_copy(
        &mut self,
        offset: u64,
        data: &[u8],
        out: &mut Out<'_>,
    ) -> Result<(), DecodeError> {
        if data.is_empty() {
            return Ok(());
        }
        let mergeable = match self.pending_span() {
            Some((o, l)) if o + l as u64 == offset => match self.pending {
                Pending::Owned { .. } => l < MAX_OWNED,
                _ => l < MIN_OP,
            },
            _ => false,
        };
        if !mergeable {
            self.flush(out)?;
            let mut buf = BytesMut::with_capacity(data.len().max(MIN_OP));
            buf.extend_from_slice(data);
            self.pending = Pending::Owned { offset, buf };
        } else {
            self.owned_mut().extend_from_slice(data);
        }
        self.flush_owned_if_full(out)
    }

    /// Turns the pending op into an owned buffer (copying a small shared one) and returns it.
    fn owned_mut(&mut self) -> &mut BytesMut {
        if let Pending::Shared {
            offset,
            chunk,
            start,
            end,
        } = &self.pending
        {
            let mut buf = BytesMut::with_capacity((end - start).max(MIN_OP));
            buf.extend_from_slice(&chunk[*start..*end]);
            self.pending = Pending::Owned {
                offset: *offset,
                buf,
            };
        }
        match &mut self.pending {
            Pending::Owned { buf, .. } => buf,
            _ => unreachable!("owned_mut is only called with a pending op"),
        }
    }

    fn flush_owned_if_full(&mut self, out: &mut Out<'_>) -> Result<(), DecodeError> {
        if matches!(&self.pending, Pending::Owned { buf, .. } if buf.len() >= MAX_OWNED) {
            self.flush(out)?;
        }
        Ok(())
    }

    /// Sends the pending op if it is already large (it can only grow by copying now).
    pub fn flush_if_large(&mut self, out: &mut Out<'_>) -> Result<(), DecodeError> {
        if self.pending_span().is_some_and(|(_, l)| l >= MIN_OP) {
            self.flush(out)?;
        }
        Ok(())
    }

    /// Sends the pending op.
    pub fn flush(&mut self, out: &mut Out<'_>) -> Result<(), DecodeError> {
        let op = match std::mem::take(&mut self.pending) {
            Pending::None => return Ok(()),
            Pending::Shared {
                offset,
                chunk,
                start,
                end,
            } => WriteOp::Data {
                offset,
                data: chunk.slice(start..end),
            },
            Pending::Owned { offset, buf } => WriteOp::Data {
                offset,
                data: buf.freeze(),
            },
        };
        self.bytes += op.len();
        out(op)?;
        Ok(())
    }
}

/// Merges adjacent `Zero` ranges.
#[derive(Default)]
pub(crate) struct ZeroOut {
    pending: Option<Range<u64>>,
    bytes: u64,
}

impl ZeroOut {
    /// Bytes sent so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    pub fn push(&mut self, range: Range<u64>, out: &mut Out<'_>) -> Result<(), DecodeError> {
        if range.is_empty() {
            return Ok(());
        }
        match &mut self.pending {
            Some(p) if p.end == range.start => p.end = range.end,
            _ => {
                self.flush(out)?;
                self.pending = Some(range);
            }
        }
        Ok(())
    }

    pub fn flush(&mut self, out: &mut Out<'_>) -> Result<(), DecodeError> {
        if let Some(r) = self.pending.take() {
            self.bytes += r.end - r.start;
            out(WriteOp::Zero {
                offset: r.start,
                len: r.end - r.start,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn collect(f: impl FnOnce(&mut DataOut, &mut Out<'_>)) -> Vec<WriteOp> {
        let mut ops = Vec::new();
        let mut d = DataOut::default();
        let mut out = |op: WriteOp| {
            ops.push(op);
            Ok(())
        };
        f(&mut d, &mut out);
        d.flush(&mut out).unwrap();
        ops
    }

    #[test]
    fn adjacent_slices_of_one_chunk_merge_without_copy() {
        let chunk = Bytes::from(vec![5u8; 1000]);
        let ops = collect(|d, out| {
            d.push_slice(10, &chunk, 0..100, out).unwrap();
            d.push_slice(110, &chunk, 100..600, out).unwrap();
        });
        assert_eq!(ops.len(), 1);
        let WriteOp::Data { offset, data } = &ops[0] else {
            panic!()
        };
        assert_eq!((*offset, data.len()), (10, 600));
        assert_eq!(data.as_ptr(), chunk.as_ptr());
    }

    #[test]
    fn gaps_split_ops_and_small_pieces_of_different_chunks_are_copied_together() {
        let a = Bytes::from(vec![1u8; 100]);
        let b = Bytes::from(vec![2u8; 100]);
        let ops = collect(|d, out| {
            d.push_slice(0, &a, 0..100, out).unwrap();
            d.push_slice(100, &b, 0..100, out).unwrap();
            d.push_slice(300, &b, 0..100, out).unwrap();
            d.push_copy(400, &[9; 50], out).unwrap();
        });
        let spans: Vec<_> = ops.iter().map(|o| (o.offset(), o.len())).collect();
        assert_eq!(spans, vec![(0, 200), (300, 150)]);
    }

    #[test]
    fn big_pieces_are_never_copied() {
        let a = Bytes::from(vec![1u8; MIN_OP]);
        let b = Bytes::from(vec![2u8; MIN_OP]);
        let ops = collect(|d, out| {
            d.push_slice(0, &a, 0..MIN_OP, out).unwrap();
            d.push_slice(MIN_OP as u64, &b, 0..MIN_OP, out).unwrap();
        });
        assert_eq!(ops.len(), 2);
        let WriteOp::Data { data, .. } = &ops[1] else {
            panic!()
        };
        assert_eq!(data.as_ptr(), b.as_ptr());
    }

    #[test]
    fn copies_are_capped() {
        let ops = collect(|d, out| {
            for i in 0..40u64 {
                d.push_copy(i * 65536, &[7; 65536], out).unwrap();
            }
        });
        assert!(ops.iter().all(|o| o.len() <= MAX_OWNED as u64));
        assert_eq!(ops.iter().map(|o| o.len()).sum::<u64>(), 40 * 65536);
        assert!(ops.len() <= 3);
    }

    #[test]
    fn zero_ranges_coalesce() {
        let mut ops = Vec::new();
        let mut z = ZeroOut::default();
        let mut out = |op: WriteOp| {
            ops.push(op);
            Ok(())
        };
        z.push(0..10, &mut out).unwrap();
        z.push(10..20, &mut out).unwrap();
        z.push(30..40, &mut out).unwrap();
        z.flush(&mut out).unwrap();
        assert_eq!(
            ops,
            vec![
                WriteOp::Zero { offset: 0, len: 20 },
                WriteOp::Zero {
                    offset: 30,
                    len: 10
                }
            ]
        );
        assert_eq!(z.bytes(), 30);
    }
}
