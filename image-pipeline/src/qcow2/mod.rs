//! Streaming qcow2 → raw, in one sequential pass over the file (the same pass that feeds the
//! checksum), with bounded memory and no temporary copy of the image.
//!
//! # Hazard: bytes that did not come from the checksummed stream
//!
//! The checksum covers the stream, but the decoder also reads the file through [`RangeRead`]
//! (separate HTTP Range requests): the L1 table before the stream starts (with 64 KiB
//! clusters it lies beyond the 64 KiB head sniffed from the stream), the rest of the first
//! cluster when header extensions run past the head, and in `finish` the data clusters the
//! stream passed before knowing they were data. A server, cache or MITM that answers those
//! requests with other bytes than the stream would steer the write (a forged L1 zeroes or
//! remaps whole guest ranges, or has any cluster parsed as an L2 table) while the whole-file
//! checksum still passes. So nothing fetched is trusted on its own:
//!
//! * the header and L1 bytes read before the stream are hashed (SHA-256) when fetched and
//!   again as the same range streams past; [`Decoder::feed`] fails with
//!   [`DecodeError::RangeMismatch`] at the chunk that completes a range that differs, before
//!   decoding that chunk (a range the stream never completes fails in `finish`). For an image
//!   written by `qemu-img convert` the L1 table follows the header within the first clusters,
//!   so this happens before the first op; otherwise ops already sent are harmless, as the
//!   sink writes the first MiB last and wipes it on failure;
//! * data clusters re-read in `finish` are checked against digests taken from the stream
//!   (below);
//! * L2 tables are only ever read from the stream.
//!
//! # How
//!
//! Before the stream, [`Qcow2Decoder::new`] validates the header (see `header.rs`: backing
//! files, external data files, encryption, unknown features, absurd sizes and offsets are all
//! refused) and reads the active L1 table through [`RangeRead`]. From then on the file is
//! processed cluster by cluster as it streams past:
//!
//! * an L1 entry without an L2 table becomes a `Zero` op for its whole guest range (on the
//!   first `feed`);
//! * when the bytes of an L2 table stream past, it is parsed: unallocated and zero-flagged
//!   clusters (and subclusters) become `Zero` ops; a data cluster whose host offset lies ahead
//!   goes into a host → guest map (coalesced into runs; a host cluster may serve several guest
//!   clusters); a compressed cluster ahead goes into a map by host byte offset;
//! * when a mapped data cluster streams past, it becomes `Data` ops at every guest offset
//!   mapped to it, as slices of the input chunk (adjacent clusters merge into one op);
//! * compressed bytes are gathered in a small window (they may span chunks and clusters) and
//!   decompressed (raw deflate, or zstd) once complete;
//! * bytes that stream past unmapped while an L2 table is still to come may turn out to be
//!   data mapped by that later table. Each such cluster (other than the header, L1, refcount
//!   and L2 tables, which are never data) is remembered as a 16-byte digest
//!   (truncated SHA-256). [`Decoder::finish`] re-reads the clusters that did turn out to be
//!   data (adjacent ones in one large read) and checks each against its digest, so the
//!   re-read cannot smuggle in bytes other than those the verified checksum covered.
//!
//! Every guest byte in `[0, virtual_size)` is covered by exactly one `Data` or `Zero` op, which
//! `finish` checks. Zero clusters are always written as `Zero` ops: the target's previous
//! contents are never trusted to read as zero.
//!
//! # Memory bound
//!
//! * O(L1): the list of L2 table offsets (at most [`Limits::max_l1_bytes`]);
//! * O(mappings for data clusters ahead of the read position), coalesced into runs (at most
//!   [`Limits::max_ahead_mappings`]);
//! * O(24 B × clusters streamed past while an L2 table was still to come), and the
//!   out-of-order mappings found (at most [`Limits::max_unordered_clusters`] each);
//! * about four clusters of buffers (an L2 table, the compressed window, one decompressed
//!   cluster).
//!
//! All of these together are charged against one budget, [`Limits::max_decoder_memory`], at
//! an upper bound of what each entry costs (allocation slack included), and checked before
//! each structure grows: a hostile image that fills several at once fails with
//! [`Qcow2Error::MemoryBudget`] instead of an allocation. The cluster buffers are bounded by
//! the cluster size (at most 2 MiB) and not charged.
//!
//! For an image written by `qemu-img convert` every L2 table precedes its data, so nothing is
//! re-read and only the refcount blocks are digested: a few hundred bytes. [`Qcow2Decoder::stats`] exposes the counters.

mod error;
mod header;
#[cfg(test)]
mod tests;

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::ops::Range;

use bytes::Bytes;
use sha2::{Digest, Sha256};

pub use error::Qcow2Error;
pub use header::ClusterCompression;

use crate::decoder::{DataOut, DecodeError, DecodeSummary, Decoder, Limits, Out, ZeroOut};
use crate::format::ImageFormat;
use crate::RangeRead;

/// Standard L2 entry: reserved bits 1-8 and 56-61.
const L2_RESERVED: u64 = 0x3f00_0000_0000_01fe;
/// L1 entry: reserved bits 0-8 and 56-62.
const L1_RESERVED: u64 = 0x7f00_0000_0000_01ff;
const OFFSET_MASK: u64 = 0x00ff_ffff_ffff_fe00;
const COMPRESSED: u64 = 1 << 62;
const COPIED: u64 = 1 << 63;
const ZERO_FLAG: u64 = 1;
/// A cluster whose 32 subclusters are all allocated (also: a whole standard cluster).
const FULL: u32 = u32::MAX;
/// Largest single re-read in `finish`.
const MAX_REFETCH: u64 = 8 << 20;
const DIGEST_LEN: usize = 16;
/// Heap charged per entry against [`Limits::max_decoder_memory`], upper bounds: the lists
/// built from the L1 table at their size (allocated once), other `Vec` entries twice their
/// size (doubling), a B-tree entry three times (nodes can be half full, plus the inner
/// nodes), a compressed cluster for its entries in all three of its maps. The test
/// `tests/decoder_memory.rs` measures what the heap really holds.
const COST_TABLE: u64 = 16;
const COST_AHEAD: u64 = 96;
const COST_ACTIVE: u64 = 2 * std::mem::size_of::<Run>() as u64;
const COST_COMPRESSED: u64 = 192;
const COST_FORCED: u64 = 32;
const COST_DIGEST: u64 = 2 * std::mem::size_of::<(u64, ClusterDigest)>() as u64;
const COST_REFETCH: u64 = 48;
/// What the budget was spent on, in [`Qcow2Error::MemoryBudget`].
const AHEAD: &str = "the clusters mapped ahead of the read position";
const UNORDERED: &str = "the clusters stored before the tables that map them";
/// What a range read of the first cluster is called in errors.
const HEADER: &str = "qcow2 header cluster";

type ClusterDigest = [u8; DIGEST_LEN];

fn digest(bytes: &[u8]) -> ClusterDigest {
    Sha256::digest(bytes)[..DIGEST_LEN]
        .try_into()
        .expect("16 of 32 bytes")
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

#[derive(Debug, Clone, Copy)]
struct Geometry {
    bits: u32,
    cs: u64,
    /// Subcluster size (extended L2 entries).
    scs: u64,
    vsize: u64,
}

impl Geometry {
    /// Calls `f` with the parts of `range` (offsets inside a cluster) that lie in subclusters
    /// set in `mask`.
    fn for_each_masked(
        &self,
        mask: u32,
        range: Range<u64>,
        mut f: impl FnMut(Range<u64>) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        if mask == FULL {
            return if range.is_empty() { Ok(()) } else { f(range) };
        }
        let mut k = 0u64;
        while k < 32 {
            if mask >> k & 1 == 0 {
                k += 1;
                continue;
            }
            let first = k;
            while k < 32 && mask >> k & 1 == 1 {
                k += 1;
            }
            let s = (first * self.scs).max(range.start);
            let e = (k * self.scs).min(range.end);
            if s < e {
                f(s..e)?;
            }
        }
        Ok(())
    }
}

/// `src[src_off..]` holds bytes `intra` of the host cluster mapped at guest cluster `guest`.
#[allow(clippy::too_many_arguments)]
fn emit_data(
    geo: &Geometry,
    data: &mut DataOut,
    guest: u64,
    mask: u32,
    intra: Range<u64>,
    src: &Bytes,
    src_off: usize,
    out: &mut Out<'_>,
) -> Result<(), DecodeError> {
    let base = guest * geo.cs;
    let first = intra.start;
    geo.for_each_masked(mask, intra, |r| {
        let start = base + r.start;
        let end = (base + r.end).min(geo.vsize);
        if start >= end {
            return Ok(());
        }
        let from = src_off + (r.start - first) as usize;
        data.push_slice(start, src, from..from + (end - start) as usize, out)
    })
}

/// Zeroes bytes `intra` of guest cluster `guest`, in the subclusters set in `mask`.
fn emit_zero(
    geo: &Geometry,
    zero: &mut ZeroOut,
    guest: u64,
    mask: u32,
    intra: Range<u64>,
    out: &mut Out<'_>,
) -> Result<(), DecodeError> {
    let base = guest * geo.cs;
    geo.for_each_masked(mask, intra, |r| {
        let start = base + r.start;
        let end = (base + r.end).min(geo.vsize);
        if start < end {
            zero.push(start..end, out)?;
        }
        Ok(())
    })
}

enum Inflater {
    Zlib(flate2::Decompress),
    Zstd(Box<zstd::stream::raw::Decoder<'static>>),
}

impl Inflater {
    /// Decompresses one cluster: exactly `out.len()` bytes must come out; input after that
    /// is ignored (the last sector is shared with the next compressed cluster).
    fn inflate(&mut self, input: &[u8], out: &mut [u8]) -> Result<(), String> {
        match self {
            Inflater::Zlib(d) => {
                d.reset(false);
                loop {
                    let (done_in, done_out) = (d.total_in() as usize, d.total_out() as usize);
                    if done_out == out.len() {
                        return Ok(());
                    }
                    let status = d
                        .decompress(
                            &input[done_in..],
                            &mut out[done_out..],
                            flate2::FlushDecompress::None,
                        )
                        .map_err(|e| e.to_string())?;
                    let progress =
                        (d.total_in() as usize, d.total_out() as usize) != (done_in, done_out);
                    if d.total_out() as usize == out.len() {
                        return Ok(());
                    }
                    if status == flate2::Status::StreamEnd || !progress {
                        return Err(format!(
                            "it decompresses to {} bytes, less than a cluster",
                            d.total_out()
                        ));
                    }
                }
            }
            Inflater::Zstd(d) => {
                use zstd::stream::raw::{InBuffer, Operation, OutBuffer};
                d.reinit().map_err(|e| e.to_string())?;
                let want = out.len();
                let mut inb = InBuffer::around(input);
                let mut outb = OutBuffer::around(out);
                loop {
                    let before = (inb.pos(), outb.pos());
                    let hint = d.run(&mut inb, &mut outb).map_err(|e| e.to_string())?;
                    if outb.pos() == want {
                        return Ok(());
                    }
                    if hint == 0 || (inb.pos(), outb.pos()) == before {
                        return Err(format!(
                            "it decompresses to {} bytes, less than a cluster",
                            outb.pos()
                        ));
                    }
                }
            }
        }
    }
}

/// Data clusters `host..host + count` map to guest clusters `guest..guest + count`.
#[derive(Debug, Clone, Copy)]
struct Run {
    host: u64,
    guest: u64,
    count: u64,
    mask: u32,
}

/// Counters for tests and logs: how much the decoder holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Qcow2Stats {
    /// L2 tables referenced by the active L1 table.
    pub l2_tables: usize,
    /// Data-cluster runs mapped ahead of the read position, now and at most.
    pub ahead_runs: usize,
    pub peak_ahead_runs: usize,
    /// Compressed clusters mapped ahead or being gathered, now and at most.
    pub pending_compressed: usize,
    pub peak_pending_compressed: usize,
    /// Bytes held to gather compressed clusters, at most.
    pub peak_window_bytes: usize,
    /// Clusters remembered by digest.
    pub digests: usize,
    /// Guest clusters whose data must be re-read in `finish`.
    pub refetch_entries: usize,
    /// A rough total of the heap the decoder holds, in bytes.
    pub heap_bytes: usize,
}

/// See the module doc.
pub struct Qcow2Decoder {
    geo: Geometry,
    version: u32,
    extended: bool,
    l2_entries: u64,
    guest_clusters: u64,
    file_size: Option<u64>,
    limits: Limits,

    /// Ranges read before the stream and not yet matched with it, in no particular order.
    checks: Vec<StreamCheck>,
    /// L1 index ranges without an L2 table: zeroed on the first feed.
    l1_zero_runs: Vec<Range<u64>>,
    /// Host clusters of the header, the L1 table and the refcount table: never data, so
    /// never remembered.
    metadata: Vec<Range<u64>>,
    started: bool,
    /// (host cluster, L1 index) of every L2 table, sorted; `next_l2` is the first not parsed.
    l2_tables: Vec<(u64, u64)>,
    next_l2: usize,
    l2_buf: Vec<u8>,

    /// File offset of the next byte fed.
    pos: u64,
    /// Runs keyed by (host cluster, guest cluster) → (count, mask), not yet streaming.
    ahead: BTreeMap<(u64, u64), (u64, u32)>,
    /// Runs whose clusters are streaming now.
    active: Vec<Run>,
    /// Compressed clusters ahead: (host byte offset, guest cluster) → length.
    comp_ahead: BTreeMap<(u64, u64), u64>,
    /// Compressed clusters being gathered: (end, start, guest cluster).
    comp_active: BTreeSet<(u64, u64, u64)>,
    /// Start offsets of `comp_active` (a multiset), to know what the window must keep.
    comp_starts: BTreeMap<u64, usize>,
    window: Vec<u8>,
    window_start: u64,
    inflater: Inflater,
    scratch: Vec<u8>,
    /// (start, end) of what `scratch` holds, to reuse it for clusters sharing compressed data.
    scratch_of: Option<(u64, u64)>,

    /// Digest of the cluster streaming now, if it must be remembered.
    hasher: Option<Sha256>,
    /// Clusters ahead that must be remembered whatever maps them (the tail of a compressed
    /// cluster whose head was already passed).
    force_digest: BTreeSet<u64>,
    /// Remembered clusters, in increasing host order.
    digests: Vec<(u64, ClusterDigest)>,
    /// (host cluster, guest cluster, mask) to re-read in `finish`.
    refetch: Vec<(u64, u64, u32)>,
    /// (host byte offset, length, guest cluster) of compressed clusters to re-read.
    refetch_comp: Vec<(u64, u64, u64)>,

    data: DataOut,
    zero: ZeroOut,
    refetched: u64,
    peak_ahead: usize,
    peak_comp: usize,
    peak_window: usize,
}

/// Bytes read through [`RangeRead`] before the stream that decoding relies on, to be matched
/// with the same range of the checksummed stream as it passes (see the module doc).
struct StreamCheck {
    what: &'static str,
    range: Range<u64>,
    fetched: [u8; 32],
    streamed: Sha256,
}

impl StreamCheck {
    fn new(what: &'static str, offset: u64, bytes: &[u8]) -> Self {
        StreamCheck {
            what,
            range: offset..offset + bytes.len() as u64,
            fetched: Sha256::digest(bytes).into(),
            streamed: Sha256::new(),
        }
    }

    /// Compares what streamed with what was fetched; a stream that ended inside the range
    /// cannot match either.
    fn verify(self) -> Result<(), DecodeError> {
        if <[u8; 32]>::from(self.streamed.finalize()) == self.fetched {
            return Ok(());
        }
        Err(DecodeError::RangeMismatch {
            what: self.what,
            offset: self.range.start,
            len: self.range.end - self.range.start,
        })
    }
}

/// Reads `len` bytes at `offset` before the stream and records them in `checks`, so that
/// the stream later vouches for them.
fn fetch_checked(
    fetch: &mut dyn RangeRead,
    what: &'static str,
    offset: u64,
    len: u64,
    checks: &mut Vec<StreamCheck>,
) -> Result<Vec<u8>, DecodeError> {
    let bytes = fetch_exact(fetch, offset, len)?;
    checks.push(StreamCheck::new(what, offset, &bytes));
    Ok(bytes)
}

fn fetch_exact(fetch: &mut dyn RangeRead, offset: u64, len: u64) -> Result<Vec<u8>, DecodeError> {
    let bytes = fetch
        .read_range(offset, len)
        .map_err(|source| DecodeError::Fetch {
            offset,
            len,
            source,
        })?;
    if bytes.len() as u64 != len {
        let got = bytes.len();
        return Err(DecodeError::Fetch {
            offset,
            len,
            source: std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!("got {got} bytes"),
            ),
        });
    }
    Ok(bytes)
}

impl Qcow2Decoder {
    /// Validates the header in `head` (the first bytes of the file, exactly as they will be
    /// fed; more of the first cluster is read through `fetch` if needed) and reads the L1
    /// table. `file_size`, when known, lets offsets past the end be refused here rather than
    /// at the end of the stream. What `fetch` returns is trusted only until the same bytes
    /// stream past: [`Decoder::feed`] fails if they differ.
    pub fn new(
        head: &[u8],
        file_size: Option<u64>,
        fetch: &mut dyn RangeRead,
        limits: &Limits,
    ) -> Result<Self, DecodeError> {
        let mut checks = Vec::new();
        let mut buf = Cow::Borrowed(head);
        if buf.len() < 4096 && file_size.is_none_or(|s| s > buf.len() as u64) {
            let want = file_size.map_or(4096, |s| s.min(4096));
            match fetch_checked(fetch, HEADER, 0, want, &mut checks) {
                Ok(b) => buf = Cow::Owned(b),
                // The file may really be that short; the header checks say if it is enough.
                Err(_) if file_size.is_none() => {}
                Err(e) => return Err(e),
            }
        }
        let h = header::parse(&buf, file_size, limits)?;
        if header::extensions_need_more(&h, &buf) {
            let want = file_size.map_or(h.cluster_size(), |s| s.min(h.cluster_size()));
            buf = Cow::Owned(fetch_checked(fetch, HEADER, 0, want, &mut checks)?);
        }
        header::check_extensions(&h, &buf)?;
        if h.dirty {
            tracing::info!(
                "the qcow2 image is marked dirty (refcounts may be stale); reading it is safe"
            );
        }

        let cs = h.cluster_size();
        let needed = h.l1_needed();
        let l1_len = needed * 8;
        let budget = limits.max_decoder_memory;
        let over_budget = || Qcow2Error::MemoryBudget {
            what: "the L1 table and its list of L2 tables",
            budget,
        };
        if l1_len > budget {
            return Err(over_budget().into());
        }
        let l1_end = h.l1_table_offset + l1_len;
        let l1 = if l1_end <= buf.len() as u64 {
            Cow::Borrowed(&buf[h.l1_table_offset as usize..l1_end as usize])
        } else {
            Cow::Owned(fetch_checked(
                fetch,
                "qcow2 L1 table",
                h.l1_table_offset,
                l1_len,
                &mut checks,
            )?)
        };
        // Counted first, so the lists are allocated once, at their size, within the budget.
        let (mut tables, mut runs, mut prev_zero) = (0u64, 0u64, false);
        for i in 0..needed {
            let zero = be64(&l1, (i * 8) as usize) & OFFSET_MASK == 0;
            tables += u64::from(!zero);
            runs += u64::from(zero && !prev_zero);
            prev_zero = zero;
        }
        if l1_len + (tables + runs) * COST_TABLE > budget {
            return Err(over_budget().into());
        }
        let mut l1_zero_runs: Vec<Range<u64>> = Vec::with_capacity(runs as usize);
        let mut l2_tables = Vec::with_capacity(tables as usize);
        for i in 0..needed {
            let e = be64(&l1, (i * 8) as usize);
            if e & L1_RESERVED != 0 {
                return Err(Qcow2Error::ReservedBits {
                    what: format!("L1 entry {i}"),
                    value: e,
                }
                .into());
            }
            let off = e & OFFSET_MASK;
            if off == 0 {
                match l1_zero_runs.last_mut() {
                    Some(r) if r.end == i => r.end = i + 1,
                    _ => l1_zero_runs.push(i..i + 1),
                }
                continue;
            }
            let what = || format!("the L2 table of L1 entry {i}");
            if off & (cs - 1) != 0 {
                return Err(Qcow2Error::Misaligned {
                    what: what(),
                    offset: off,
                }
                .into());
            }
            if let Some(size) = file_size {
                if off + cs > size {
                    return Err(Qcow2Error::PastEnd {
                        what: what(),
                        offset: off,
                        file_size: size,
                    }
                    .into());
                }
            }
            l2_tables.push((off >> h.cluster_bits, i));
        }
        l2_tables.sort_unstable();
        let bits = h.cluster_bits;
        let clusters_of = |offset: u64, len: u64| (offset >> bits)..(offset + len).div_ceil(cs);
        let metadata = vec![
            0..1,
            clusters_of(h.l1_table_offset, l1_len),
            clusters_of(
                h.refcount_table_offset,
                u64::from(h.refcount_table_clusters) * cs,
            ),
        ];

        let geo = Geometry {
            bits: h.cluster_bits,
            cs,
            scs: cs / 32,
            vsize: h.virtual_size,
        };
        let inflater = match h.compression {
            ClusterCompression::Zlib => Inflater::Zlib(flate2::Decompress::new(false)),
            ClusterCompression::Zstd => {
                Inflater::Zstd(Box::new(zstd::stream::raw::Decoder::new().map_err(
                    |e| Qcow2Error::BadCompressedCluster {
                        guest_offset: 0,
                        reason: e.to_string(),
                    },
                )?))
            }
        };
        Ok(Qcow2Decoder {
            geo,
            version: h.version,
            extended: h.extended_l2,
            l2_entries: h.l2_entries(),
            guest_clusters: h.guest_clusters(),
            file_size,
            limits: limits.clone(),
            checks,
            l1_zero_runs,
            metadata,
            started: false,
            l2_tables,
            next_l2: 0,
            l2_buf: Vec::new(),
            pos: 0,
            ahead: BTreeMap::new(),
            active: Vec::new(),
            comp_ahead: BTreeMap::new(),
            comp_active: BTreeSet::new(),
            comp_starts: BTreeMap::new(),
            window: Vec::new(),
            window_start: 0,
            inflater,
            scratch: Vec::new(),
            scratch_of: None,
            hasher: None,
            force_digest: BTreeSet::new(),
            digests: Vec::new(),
            refetch: Vec::new(),
            refetch_comp: Vec::new(),
            data: DataOut::default(),
            zero: ZeroOut::default(),
            refetched: 0,
            peak_ahead: 0,
            peak_comp: 0,
            peak_window: 0,
        })
    }

    /// Bytes the target needs.
    pub fn virtual_size(&self) -> u64 {
        self.geo.vsize
    }

    pub fn cluster_size(&self) -> u64 {
        self.geo.cs
    }

    /// What the decoder holds now (see [`Qcow2Stats`]).
    pub fn stats(&self) -> Qcow2Stats {
        let heap = self.l1_zero_runs.capacity() * 16
            + self.l2_tables.capacity() * 16
            + self.l2_buf.capacity()
            + self.ahead.len() * 48
            + self.active.capacity() * std::mem::size_of::<Run>()
            + (self.comp_ahead.len() + self.comp_active.len() + self.comp_starts.len()) * 40
            + self.window.capacity()
            + self.scratch.capacity()
            + self.force_digest.len() * 16
            + self.digests.capacity() * std::mem::size_of::<(u64, ClusterDigest)>()
            + self.refetch.capacity() * 24
            + self.refetch_comp.capacity() * 24;
        Qcow2Stats {
            l2_tables: self.l2_tables.len(),
            ahead_runs: self.ahead.len(),
            peak_ahead_runs: self.peak_ahead,
            pending_compressed: self.comp_ahead.len() + self.comp_active.len(),
            peak_pending_compressed: self.peak_comp,
            peak_window_bytes: self.peak_window,
            digests: self.digests.len(),
            refetch_entries: self.refetch.len() + self.refetch_comp.len(),
            heap_bytes: heap,
        }
    }

    /// What the structures under the budget hold now, at their charged cost.
    fn charged(&self) -> u64 {
        let n = |len: usize, cost: u64| len as u64 * cost;
        n(self.l1_zero_runs.len() + self.l2_tables.len(), COST_TABLE)
            + n(self.ahead.len(), COST_AHEAD)
            + n(self.active.len(), COST_ACTIVE)
            + n(
                self.comp_ahead.len() + self.comp_active.len(),
                COST_COMPRESSED,
            )
            + n(self.force_digest.len(), COST_FORCED)
            + n(self.digests.len(), COST_DIGEST)
            + n(self.refetch.len() + self.refetch_comp.len(), COST_REFETCH)
    }

    /// Fails if growing by `cost` would go over [`Limits::max_decoder_memory`].
    fn charge(&self, what: &'static str, cost: u64) -> Result<(), DecodeError> {
        let budget = self.limits.max_decoder_memory;
        if self.charged() + cost > budget {
            return Err(Qcow2Error::MemoryBudget { what, budget }.into());
        }
        Ok(())
    }

    fn emit_l1_zeros(&mut self, out: &mut Out<'_>) -> Result<(), DecodeError> {
        let span = self.l2_entries * self.geo.cs;
        for r in std::mem::take(&mut self.l1_zero_runs) {
            let start = r.start * span;
            let end = (r.end * span).min(self.geo.vsize);
            self.zero.push(start..end, out)?;
        }
        Ok(())
    }

    fn l2_here(&self, cluster: u64) -> bool {
        self.l2_tables
            .get(self.next_l2)
            .is_some_and(|t| t.0 == cluster)
    }

    fn has_digest(&self, cluster: u64) -> bool {
        self.digest_of(cluster).is_some()
    }

    fn digest_of(&self, cluster: u64) -> Option<&ClusterDigest> {
        let i = self.digests.binary_search_by_key(&cluster, |d| d.0).ok()?;
        Some(&self.digests[i].1)
    }

    /// Hashes the parts of `chunk` (at file offset `self.pos`) that fall in ranges read
    /// before the stream, and verifies each range the chunk completes.
    fn check_stream(&mut self, chunk: &[u8]) -> Result<(), DecodeError> {
        if self.checks.is_empty() {
            return Ok(());
        }
        let (start, end) = (self.pos, self.pos + chunk.len() as u64);
        let mut i = 0;
        while i < self.checks.len() {
            let check = &mut self.checks[i];
            let (s, e) = (check.range.start.max(start), check.range.end.min(end));
            if s < e {
                check
                    .streamed
                    .update(&chunk[(s - start) as usize..(e - start) as usize]);
            }
            if check.range.end <= end {
                self.checks.swap_remove(i).verify()?;
            } else {
                i += 1;
            }
        }
        Ok(())
    }

    /// A new host cluster starts streaming.
    fn begin_cluster(&mut self, c: u64) -> Result<(), DecodeError> {
        while let Some(entry) = self.ahead.first_entry() {
            if entry.key().0 > c {
                break;
            }
            let ((host, guest), (count, mask)) = entry.remove_entry();
            self.active.push(Run {
                host,
                guest,
                count,
                mask,
            });
        }
        self.active.retain(|r| r.host + r.count > c);
        let forced = self.force_digest.remove(&c);
        // Unmapped bytes may be data of an L2 table still to come: remember them, unless
        // they are known metadata.
        let metadata = self.l2_here(c) || self.metadata.iter().any(|r| r.contains(&c));
        let maybe_data = self.active.is_empty() && !metadata && self.next_l2 < self.l2_tables.len();
        if forced || maybe_data {
            if self.digests.len() >= self.limits.max_unordered_clusters {
                return Err(Qcow2Error::TooManyUnordered {
                    limit: self.limits.max_unordered_clusters,
                }
                .into());
            }
            self.charge(UNORDERED, COST_DIGEST)?;
            self.hasher = Some(Sha256::new());
        }
        Ok(())
    }

    /// Host cluster `c` has fully streamed past.
    fn end_cluster(&mut self, c: u64, out: &mut Out<'_>) -> Result<(), DecodeError> {
        if let Some(h) = self.hasher.take() {
            let d: ClusterDigest = h.finalize()[..DIGEST_LEN]
                .try_into()
                .expect("16 of 32 bytes");
            self.digests.push((c, d));
        }
        if self.l2_here(c) {
            let table = std::mem::take(&mut self.l2_buf);
            let result = self.parse_l2(c, &table, out);
            self.l2_buf = table;
            self.l2_buf.clear();
            result?;
        }
        Ok(())
    }

    fn parse_l2(&mut self, c: u64, table: &[u8], out: &mut Out<'_>) -> Result<(), DecodeError> {
        let pass_end = (c + 1) << self.geo.bits;
        let entry_size = if self.extended { 16 } else { 8 };
        while self.l2_here(c) {
            let l1_index = self.l2_tables[self.next_l2].1;
            self.next_l2 += 1;
            let first_guest = l1_index * self.l2_entries;
            let n = self.l2_entries.min(self.guest_clusters - first_guest);
            let mut last = None;
            for j in 0..n {
                let at = (j * entry_size) as usize;
                let e = be64(table, at);
                let bitmap = if self.extended {
                    be64(table, at + 8)
                } else {
                    0
                };
                self.parse_entry(first_guest + j, e, bitmap, c, pass_end, &mut last, out)?;
            }
        }
        Ok(())
    }

    /// One L2 entry for guest cluster `g`, parsed once host cluster `c` (holding the table)
    /// has streamed past, i.e. everything before `pass_end`. `last` is the key of the run
    /// the previous entry went into, to extend it.
    #[allow(clippy::too_many_arguments)]
    fn parse_entry(
        &mut self,
        g: u64,
        e: u64,
        bitmap: u64,
        c: u64,
        pass_end: u64,
        last: &mut Option<(u64, u64)>,
        out: &mut Out<'_>,
    ) -> Result<(), DecodeError> {
        let geo = self.geo;
        let guest_offset = g * geo.cs;
        let what = || format!("the L2 entry for guest offset {guest_offset:#x}");
        if e & COMPRESSED != 0 {
            *last = None;
            return self.parse_compressed(g, e, bitmap, c, pass_end);
        }
        let reserved = L2_RESERVED
            | if self.version == 2 || self.extended {
                ZERO_FLAG
            } else {
                0
            };
        if e & reserved != 0 {
            return Err(Qcow2Error::ReservedBits {
                what: what(),
                value: e,
            }
            .into());
        }
        let host = e & OFFSET_MASK;
        let mask = if self.extended {
            let alloc = bitmap as u32;
            let zeros = (bitmap >> 32) as u32;
            if alloc & zeros != 0 || (host == 0 && alloc != 0) {
                return Err(Qcow2Error::BadSubclusters {
                    guest_offset,
                    bitmap,
                }
                .into());
            }
            alloc
        } else if e & ZERO_FLAG != 0 || host == 0 {
            0
        } else {
            FULL
        };
        // Unallocated or zero (sub)clusters read as zeros: there is no backing file.
        if mask != FULL {
            emit_zero(&geo, &mut self.zero, g, !mask, 0..geo.cs, out)?;
        }
        if mask == 0 {
            *last = None;
            return Ok(());
        }
        let data_what = || format!("the data cluster for guest offset {guest_offset:#x}");
        if host & (geo.cs - 1) != 0 {
            return Err(Qcow2Error::Misaligned {
                what: data_what(),
                offset: host,
            }
            .into());
        }
        if let Some(size) = self.file_size {
            if host >= size {
                return Err(Qcow2Error::PastEnd {
                    what: data_what(),
                    offset: host,
                    file_size: size,
                }
                .into());
            }
        }
        let hc = host >> geo.bits;
        if host >= pass_end {
            if let Some(key) = *last {
                if let Some(v) = self.ahead.get_mut(&key) {
                    if key.0 + v.0 == hc && key.1 + v.0 == g && v.1 == mask {
                        v.0 += 1;
                        return Ok(());
                    }
                }
            }
            if self.ahead.len() >= self.limits.max_ahead_mappings {
                return Err(Qcow2Error::TooFragmented {
                    limit: self.limits.max_ahead_mappings,
                }
                .into());
            }
            self.charge(AHEAD, COST_AHEAD)?;
            self.ahead.insert((hc, g), (1, mask));
            *last = Some((hc, g));
            self.peak_ahead = self.peak_ahead.max(self.ahead.len());
        } else {
            *last = None;
            if !self.has_digest(hc) {
                return Err(Qcow2Error::SharedCluster { host_offset: host }.into());
            }
            self.push_refetch()?;
            self.refetch.push((hc, g, mask));
        }
        Ok(())
    }

    fn push_refetch(&self) -> Result<(), DecodeError> {
        let limit = self.limits.max_unordered_clusters;
        if self.refetch.len() + self.refetch_comp.len() >= limit {
            return Err(Qcow2Error::TooManyUnordered { limit }.into());
        }
        self.charge(UNORDERED, COST_REFETCH)
    }

    fn parse_compressed(
        &mut self,
        g: u64,
        e: u64,
        bitmap: u64,
        c: u64,
        pass_end: u64,
    ) -> Result<(), DecodeError> {
        let bits = self.geo.bits;
        let guest_offset = g * self.geo.cs;
        let what = || format!("the compressed L2 entry for guest offset {guest_offset:#x}");
        if e & COPIED != 0 || bitmap != 0 {
            return Err(Qcow2Error::ReservedBits {
                what: what(),
                value: e,
            }
            .into());
        }
        let x = 62 - (bits - 8);
        let off = e & ((1u64 << x) - 1);
        if off >> 56 != 0 {
            return Err(Qcow2Error::ReservedBits {
                what: what(),
                value: e,
            }
            .into());
        }
        let sectors = (e >> x) & ((1u64 << (bits - 8)) - 1);
        let mut len = (sectors + 1) * 512 - (off & 511);
        if let Some(size) = self.file_size {
            if off >= size {
                return Err(Qcow2Error::PastEnd {
                    what: what(),
                    offset: off,
                    file_size: size,
                }
                .into());
            }
            // The last sector may be cut short by the end of the file.
            len = len.min(size - off);
        }
        if off >= pass_end {
            if self.ahead.len() + self.comp_ahead.len() >= self.limits.max_ahead_mappings {
                return Err(Qcow2Error::TooFragmented {
                    limit: self.limits.max_ahead_mappings,
                }
                .into());
            }
            self.charge(AHEAD, COST_COMPRESSED)?;
            self.comp_ahead.insert((off, g), len);
            self.peak_comp = self
                .peak_comp
                .max(self.comp_ahead.len() + self.comp_active.len());
        } else {
            let (first, last) = (off >> bits, (off + len - 1) >> bits);
            for h in first..=last.min(c) {
                if !self.has_digest(h) {
                    return Err(Qcow2Error::SharedCluster {
                        host_offset: h << bits,
                    }
                    .into());
                }
            }
            for h in c + 1..=last {
                self.charge(UNORDERED, COST_FORCED)?;
                self.force_digest.insert(h);
            }
            self.push_refetch()?;
            self.refetch_comp.push((off, len, g));
        }
        Ok(())
    }

    /// Gathers compressed clusters from `bytes` (file offset `abs`) and emits the complete ones.
    fn feed_compressed(
        &mut self,
        abs: u64,
        bytes: &[u8],
        out: &mut Out<'_>,
    ) -> Result<(), DecodeError> {
        let end = abs + bytes.len() as u64;
        while let Some(entry) = self.comp_ahead.first_entry() {
            let (start, g) = *entry.key();
            if start >= end {
                break;
            }
            let len = entry.remove();
            self.comp_active.insert((start + len, start, g));
            *self.comp_starts.entry(start).or_default() += 1;
        }
        let Some((&min_start, _)) = self.comp_starts.first_key_value() else {
            return Ok(());
        };
        let from = if self.window.is_empty() {
            self.window_start = min_start;
            (min_start - abs) as usize
        } else {
            0
        };
        self.window.extend_from_slice(&bytes[from..]);
        self.peak_window = self.peak_window.max(self.window.len());
        self.complete_compressed(end, out)
    }

    /// Decompresses every gathered cluster that ends at or before `end`.
    fn complete_compressed(&mut self, end: u64, out: &mut Out<'_>) -> Result<(), DecodeError> {
        while let Some(&(item_end, start, g)) = self.comp_active.first() {
            if item_end > end {
                break;
            }
            self.comp_active.pop_first();
            if let Some(n) = self.comp_starts.get_mut(&start) {
                *n -= 1;
                if *n == 0 {
                    self.comp_starts.remove(&start);
                }
            }
            let window = std::mem::take(&mut self.window);
            let s = (start - self.window_start) as usize;
            let e = (item_end.min(self.window_start + window.len() as u64) - self.window_start)
                as usize;
            let result = self.inflate_and_emit(g, start, item_end, &window[s..e], out);
            self.window = window;
            result?;
        }
        match self.comp_starts.first_key_value() {
            None => self.window.clear(),
            Some((&keep, _)) => {
                self.window.drain(..(keep - self.window_start) as usize);
                self.window_start = keep;
            }
        }
        Ok(())
    }

    fn inflate_and_emit(
        &mut self,
        g: u64,
        start: u64,
        end: u64,
        input: &[u8],
        out: &mut Out<'_>,
    ) -> Result<(), DecodeError> {
        let cs = self.geo.cs as usize;
        if self.scratch_of != Some((start, end)) {
            self.scratch_of = None;
            self.scratch.resize(cs, 0);
            self.inflater
                .inflate(input, &mut self.scratch)
                .map_err(|reason| Qcow2Error::BadCompressedCluster {
                    guest_offset: g * self.geo.cs,
                    reason,
                })?;
            self.scratch_of = Some((start, end));
        }
        let base = g * self.geo.cs;
        let len = (self.geo.vsize - base).min(self.geo.cs) as usize;
        self.data.push_copy(base, &self.scratch[..len], out)
    }

    /// Reads host clusters `first..=last` again and checks them against their digests.
    fn read_verified(
        &mut self,
        fetch: &mut dyn RangeRead,
        first: u64,
        last: u64,
        eof: u64,
    ) -> Result<Vec<u8>, DecodeError> {
        let bits = self.geo.bits;
        let start = first << bits;
        let end = ((last + 1) << bits).min(eof);
        let bytes = fetch_exact(fetch, start, end - start)?;
        self.refetched += end - start;
        for h in first..=last {
            let s = ((h - first) << bits) as usize;
            let e = (s + self.geo.cs as usize).min(bytes.len());
            let want = self.digest_of(h).ok_or(Qcow2Error::SharedCluster {
                host_offset: h << bits,
            })?;
            if digest(&bytes[s..e]) != *want {
                return Err(Qcow2Error::RefetchMismatch { offset: h << bits }.into());
            }
        }
        Ok(bytes)
    }

    fn refetch_data(
        &mut self,
        fetch: &mut dyn RangeRead,
        eof: u64,
        out: &mut Out<'_>,
    ) -> Result<(), DecodeError> {
        let mut list = std::mem::take(&mut self.refetch);
        list.sort_unstable();
        let geo = self.geo;
        let max_clusters = (MAX_REFETCH >> geo.bits).max(1);
        let mut i = 0;
        while i < list.len() {
            let first = list[i].0;
            let mut last = first;
            let mut j = i;
            while j < list.len() && list[j].0 <= last + 1 && list[j].0 - first < max_clusters {
                last = list[j].0;
                j += 1;
            }
            let bytes = Bytes::from(self.read_verified(fetch, first, last, eof)?);
            for &(h, g, mask) in &list[i..j] {
                let off = ((h - first) << geo.bits) as usize;
                let avail = (bytes.len() - off).min(geo.cs as usize) as u64;
                emit_data(&geo, &mut self.data, g, mask, 0..avail, &bytes, off, out)?;
                // Past the end of the file a cluster reads as zeros.
                emit_zero(&geo, &mut self.zero, g, mask, avail..geo.cs, out)?;
            }
            i = j;
        }
        Ok(())
    }

    fn refetch_compressed(
        &mut self,
        fetch: &mut dyn RangeRead,
        eof: u64,
        out: &mut Out<'_>,
    ) -> Result<(), DecodeError> {
        let mut list = std::mem::take(&mut self.refetch_comp);
        list.sort_unstable();
        let bits = self.geo.bits;
        let mut i = 0;
        while i < list.len() {
            let (s0, l0, _) = list[i];
            let first = s0 >> bits;
            // Nothing past the end of the file was recorded (or exists).
            let last_in_file = (eof - 1) >> bits;
            let mut last = ((s0 + l0 - 1) >> bits).min(last_in_file);
            let mut j = i + 1;
            while j < list.len() {
                let (s, l, _) = list[j];
                let (f, e) = (s >> bits, ((s + l - 1) >> bits).min(last_in_file));
                if f > last + 1 || (e.max(last) - first + 1) << bits > MAX_REFETCH {
                    break;
                }
                last = last.max(e);
                j += 1;
            }
            let bytes = self.read_verified(fetch, first, last, eof)?;
            let base = first << bits;
            for &(s, l, g) in &list[i..j] {
                let a = ((s - base) as usize).min(bytes.len());
                let b = ((s + l - base) as usize).min(bytes.len());
                self.inflate_and_emit(g, s, s + l, &bytes[a..b], out)?;
            }
            i = j;
        }
        Ok(())
    }
}

impl Decoder for Qcow2Decoder {
    fn feed(&mut self, chunk: Bytes, out: &mut Out<'_>) -> Result<(), DecodeError> {
        // Before this chunk is decoded: ops it would emit may already rest on a forged table.
        self.check_stream(&chunk)?;
        if !self.started {
            self.started = true;
            self.emit_l1_zeros(out)?;
        }
        let Geometry { bits, cs, .. } = self.geo;
        let mut off = 0usize;
        while off < chunk.len() {
            let abs = self.pos + off as u64;
            let c = abs >> bits;
            let intra = abs & (cs - 1);
            if intra == 0 {
                self.begin_cluster(c)?;
            }
            let take = ((cs - intra) as usize).min(chunk.len() - off);
            let piece = off..off + take;
            for run in &self.active {
                let guest = run.guest + (c - run.host);
                emit_data(
                    &self.geo,
                    &mut self.data,
                    guest,
                    run.mask,
                    intra..intra + take as u64,
                    &chunk,
                    off,
                    out,
                )?;
            }
            if !self.comp_ahead.is_empty() || !self.comp_active.is_empty() {
                self.feed_compressed(abs, &chunk[piece.clone()], out)?;
            }
            if let Some(h) = &mut self.hasher {
                h.update(&chunk[piece.clone()]);
            }
            if self.l2_here(c) {
                self.l2_buf.extend_from_slice(&chunk[piece]);
            }
            off += take;
            if intra + take as u64 == cs {
                self.end_cluster(c, out)?;
            }
        }
        self.pos += chunk.len() as u64;
        self.data.flush_if_large(out)?;
        self.zero.flush(out)?;
        Ok(())
    }

    fn finish(
        mut self: Box<Self>,
        fetch: &mut dyn RangeRead,
        out: &mut Out<'_>,
    ) -> Result<DecodeSummary, DecodeError> {
        let eof = self.pos;
        if eof == 0 {
            return Err(DecodeError::Empty);
        }
        if let Some(size) = self.file_size {
            if eof < size {
                return Err(DecodeError::ShortFile {
                    expected: size,
                    got: eof,
                });
            }
        }
        for check in std::mem::take(&mut self.checks) {
            check.verify()?;
        }
        let Geometry { bits, cs, .. } = self.geo;
        let past_end = |what: &str, offset: u64| Qcow2Error::PastEnd {
            what: what.into(),
            offset,
            file_size: eof,
        };
        let tail = eof & (cs - 1);
        if tail != 0 {
            // The last, partial cluster.
            let c = eof >> bits;
            if let Some(h) = self.hasher.take() {
                self.digests.push((
                    c,
                    h.finalize()[..DIGEST_LEN]
                        .try_into()
                        .expect("16 of 32 bytes"),
                ));
            }
        }
        if let Some(&(c, _)) = self.l2_tables.get(self.next_l2) {
            return Err(past_end("an L2 table", c << bits).into());
        }
        // Data clusters the stream did not (fully) deliver: past the end of the file they
        // read as zeros, but a cluster that starts there is an error.
        let first_missing = eof.div_ceil(cs);
        let runs: Vec<Run> = self.active.drain(..).collect();
        for run in &runs {
            if run.host + run.count > first_missing {
                return Err(past_end("a data cluster", first_missing.max(run.host) << bits).into());
            }
            let c = eof >> bits;
            if tail != 0 && run.host <= c && c < run.host + run.count {
                let g = run.guest + (c - run.host);
                emit_zero(&self.geo, &mut self.zero, g, run.mask, tail..cs, out)?;
            }
        }
        if let Some((&(h, _), _)) = self.ahead.first_key_value() {
            return Err(past_end("a data cluster", h << bits).into());
        }
        if let Some((&(start, _), _)) = self.comp_ahead.first_key_value() {
            return Err(past_end("a compressed cluster", start).into());
        }
        // Compressed clusters cut by the end of the file: their data ends there.
        self.complete_compressed(u64::MAX, out)?;

        self.refetch_data(fetch, eof, out)?;
        self.refetch_compressed(fetch, eof, out)?;
        self.data.flush(out)?;
        self.zero.flush(out)?;

        let covered = self.data.bytes() + self.zero.bytes();
        if covered != self.geo.vsize {
            return Err(Qcow2Error::Coverage {
                covered,
                virtual_size: self.geo.vsize,
            }
            .into());
        }
        Ok(DecodeSummary {
            format: ImageFormat::Qcow2,
            compression: None,
            image_size: self.geo.vsize,
            bytes_written: self.data.bytes(),
            bytes_zeroed: self.zero.bytes(),
            refetched_bytes: self.refetched,
        })
    }
}
