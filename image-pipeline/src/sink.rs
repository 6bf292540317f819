//! The disk writer: applies [`WriteOp`]s to a window of a block device (or a file) in large
//! aligned blocks, with O_DIRECT where the target takes it.
//!
//! Hazards it exists for:
//! * A half-written disk must not look bootable. The first MiB (partition table, boot code)
//!   is held in memory and written last, after everything else is on disk and the image was
//!   verified; before the first byte of the image lands, the first and last MiB of the target
//!   are zeroed so that neither the old primary nor the old backup GPT survives a crash, a
//!   power loss or a checksum mismatch. On failure ([`DiskWriter::abort`]) both are zeroed
//!   again.
//! * Nothing is touched before the first op arrives: a download that fails at once (403,
//!   wrong format, disk too small) leaves the disk exactly as it was.
//! * Zeros are written for real (BLKZEROOUT on block devices, which guarantees zeroes, unlike
//!   discard; zero-range or plain writes on files), in pieces of at most 1 GiB so that a
//!   device zeroing by plain writes still shows progress.
//! * A disk that stops answering must not hang the deploy: every request is marked in an
//!   [`IoWatch`], which [`crate::pipeline`] reads to fail the write once one request is
//!   older than the stall limit; the writer then refuses further work.

use std::fs::{File, OpenOptions};
use std::io;
use std::ops::Range;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::PathBuf;

use blockdev::{ioctl, IoWatch, WritableDisk};
use bytes::Bytes;

use crate::WriteOp;

/// Bytes at the start of the target held back until the end.
pub const HEAD_HOLD: u64 = 1 << 20;
/// Bytes zeroed at the end of the target before writing (backup GPT lives there).
const TAIL_WIPE: u64 = 1 << 20;
/// Size of the aligned staging buffer for data that is not aligned already.
const STAGING: usize = 4 << 20;
/// Bytes of aligned buffers written with one pwritev.
const DIRECT_RUN: usize = 4 << 20;
/// Memory alignment of the staging buffer (covers 4K-sector devices).
const ALIGN: usize = 4096;
/// Largest range zeroed by one request.
const ZERO_PIECE: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("{context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the image needs at least {needed} bytes but {} has only {capacity} bytes; nothing \
         beyond the device was written (choose a larger disk with root device hints)",
        path.display()
    )]
    TooSmall {
        path: PathBuf,
        needed: u64,
        capacity: u64,
    },
    #[error(
        "{what} {} did not complete in {seconds} s: the disk stopped answering (check the disk \
         and its controller; the limit is the agent's disk_stall_timeout)",
        path.display()
    )]
    Stalled {
        what: &'static str,
        path: PathBuf,
        seconds: u64,
    },
    #[error("writing to {} was abandoned after the disk stalled", path.display())]
    Cancelled { path: PathBuf },
}

/// Whether an image fits the target, checked before the first byte is written.
#[derive(Debug, Clone)]
pub struct CapacityCheck {
    path: PathBuf,
    capacity: u64,
}

impl CapacityCheck {
    pub fn ensure_fits(&self, needed: u64) -> Result<(), SinkError> {
        if needed > self.capacity {
            return Err(SinkError::TooSmall {
                path: self.path.clone(),
                needed,
                capacity: self.capacity,
            });
        }
        Ok(())
    }
}

/// Byte counts of a finished write.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct WriteStats {
    pub data_bytes: u64,
    pub zeroed_bytes: u64,
    /// Whether O_DIRECT was used for the bulk of the data.
    pub direct_io: bool,
}

/// A staging buffer whose memory offsets are congruent to file offsets modulo [`ALIGN`], so
/// that any aligned file range in it is also aligned in memory (O_DIRECT needs both).
struct Staging {
    buf: Box<[u8]>,
    /// File offset of `buf[0]`, a multiple of ALIGN.
    base: u64,
    /// Valid bytes are `buf[start..end]`.
    start: usize,
    end: usize,
}

impl Staging {
    fn new() -> Self {
        // A Vec<u8> gives no alignment guarantee; over-allocate and slice at an aligned point.
        let raw = vec![0u8; STAGING + ALIGN].into_boxed_slice();
        Staging {
            buf: raw,
            base: 0,
            start: 0,
            end: 0,
        }
    }

    fn aligned_offset(&self) -> usize {
        let addr = self.buf.as_ptr() as usize;
        (ALIGN - addr % ALIGN) % ALIGN
    }

    fn is_empty(&self) -> bool {
        self.start == self.end
    }

    fn file_end(&self) -> u64 {
        self.base + self.end as u64
    }
}

/// Writes into `window` of a device or file. Offsets of ops are relative to the window.
pub struct DiskWriter {
    path: PathBuf,
    buffered: File,
    direct: Option<File>,
    window: Range<u64>,
    block: u64,
    is_block_device: bool,
    started: bool,
    head: Vec<u8>,
    staging: Staging,
    /// Aligned buffers waiting to be written together, contiguous from `direct_run_offset`.
    direct_run: Vec<Bytes>,
    direct_run_offset: u64,
    direct_run_len: u64,
    flusher: Option<Flusher>,
    stats: WriteStats,
    watch: IoWatch,
    stall_limit: Option<std::time::Duration>,
    /// Tests: the data write at this window offset hangs (in flight) for the duration.
    #[cfg(test)]
    pub(crate) hang_at: Option<(u64, std::time::Duration)>,
}

/// Bytes written between background flushes.
const FLUSH_EVERY: u64 = 256 << 20;

/// Flushes written data to stable storage on its own thread while the image streams, so that
/// the final sync has little left to do: a disk with a volatile write cache, or a loop device
/// over a file, would otherwise hold the whole image until the end.
struct Flusher {
    tx: std::sync::mpsc::SyncSender<()>,
    thread: std::thread::JoinHandle<io::Result<()>>,
    since_last: u64,
}

impl Flusher {
    fn start(file: File, watch: IoWatch) -> io::Result<Flusher> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<()>(1);
        let thread = std::thread::Builder::new()
            .name("image-flush".into())
            .spawn(move || {
                for () in rx {
                    if watch.is_cancelled() {
                        break;
                    }
                    let _io = watch.begin("syncing");
                    file.sync_data()?;
                }
                Ok(())
            })?;
        Ok(Flusher {
            tx,
            thread,
            since_last: 0,
        })
    }

    /// Counts `n` more bytes written; asks for a flush when enough piled up and none is
    /// running.
    fn written(&mut self, n: u64) {
        self.since_last += n;
        if self.since_last >= FLUSH_EVERY && self.tx.try_send(()).is_ok() {
            self.since_last = 0;
        }
    }

    /// Waits for the running flush; its error, if any.
    fn finish(self) -> io::Result<()> {
        drop(self.tx);
        self.thread
            .join()
            .unwrap_or_else(|_| Err(io::Error::other("the flushing thread panicked")))
    }
}

impl DiskWriter {
    /// Writes the whole disk (`window = None`) or a byte range of it. The disk was opened
    /// through the device guard ([`WritableDisk::open`]); the `O_DIRECT` descriptor is a
    /// [`WritableDisk::reopen`] of the same device.
    pub fn open(disk: WritableDisk, window: Option<Range<u64>>) -> Result<Self, SinkError> {
        let path = disk.path().to_path_buf();
        let (size, block, is_block_device) =
            (disk.len(), disk.sector_size(), disk.is_block_device());
        let window = window.unwrap_or(0..size);
        if window.end > size || window.start > window.end {
            return Err(SinkError::TooSmall {
                path,
                needed: window.end,
                capacity: size,
            });
        }
        let direct = disk
            .reopen(
                OpenOptions::new()
                    .write(true)
                    .custom_flags(nix::libc::O_DIRECT),
            )
            .ok()
            .filter(|_| window.start.is_multiple_of(ALIGN as u64));
        let buffered = disk.into_file();
        let head_len = HEAD_HOLD.min(window.end - window.start) as usize;
        let watch = IoWatch::new();
        // Without a flusher everything is synced at the end, which is correct, only slower.
        let flusher = buffered
            .try_clone()
            .and_then(|f| Flusher::start(f, watch.clone()))
            .ok();
        Ok(DiskWriter {
            path,
            stats: WriteStats {
                direct_io: direct.is_some(),
                ..WriteStats::default()
            },
            buffered,
            direct,
            window,
            block,
            is_block_device,
            started: false,
            head: vec![0u8; head_len],
            staging: Staging::new(),
            direct_run: Vec::new(),
            direct_run_offset: 0,
            direct_run_len: 0,
            flusher,
            watch,
            stall_limit: None,
            #[cfg(test)]
            hang_at: None,
        })
    }

    /// Fails the write (see [`crate::pipeline`]) when one disk request takes longer than
    /// `limit`; `None` waits forever.
    pub fn set_stall_limit(&mut self, limit: Option<std::time::Duration>) {
        self.stall_limit = limit;
    }

    pub fn stall_limit(&self) -> Option<std::time::Duration> {
        self.stall_limit
    }

    /// The watch over this writer's requests, for the thread that waits on it.
    pub fn watch(&self) -> IoWatch {
        self.watch.clone()
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    fn check_cancelled(&self) -> Result<(), SinkError> {
        if self.watch.is_cancelled() {
            return Err(SinkError::Cancelled {
                path: self.path.clone(),
            });
        }
        Ok(())
    }

    /// Bytes available in the window.
    pub fn capacity(&self) -> u64 {
        self.window.end - self.window.start
    }

    /// Fails unless an image of `needed` bytes fits. Call before the first op when the size
    /// is known, so that a too-small disk is refused before one byte is written.
    pub fn ensure_fits(&self, needed: u64) -> Result<(), SinkError> {
        self.capacity_check().ensure_fits(needed)
    }

    /// The capacity test, detached from the writer (which lives on its own thread).
    pub fn capacity_check(&self) -> CapacityCheck {
        CapacityCheck {
            path: self.path.clone(),
            capacity: self.capacity(),
        }
    }

    pub fn stats(&self) -> &WriteStats {
        &self.stats
    }

    fn err(&self, context: &'static str, source: io::Error) -> SinkError {
        SinkError::Io {
            context,
            path: self.path.clone(),
            source,
        }
    }

    pub fn apply(&mut self, op: WriteOp) -> Result<(), SinkError> {
        if op.is_empty() {
            return Ok(());
        }
        self.check_cancelled()?;
        #[cfg(test)]
        if let Some((at, d)) = self.hang_at {
            if matches!(&op, WriteOp::Data { offset, .. } if *offset >= at) {
                self.hang_at = None;
                let _io = self.watch.begin("writing to");
                std::thread::sleep(d);
            }
        }
        self.ensure_fits(op.end())?;
        if !self.started {
            self.started = true;
            self.wipe_ends("wiping the first and last MiB of")?;
        }
        match op {
            WriteOp::Data { offset, mut data } => {
                let mut offset = offset;
                let head = self.head.len() as u64;
                if offset < head {
                    let n = ((head - offset) as usize).min(data.len());
                    self.head[offset as usize..offset as usize + n].copy_from_slice(&data[..n]);
                    self.stats.data_bytes += n as u64;
                    data = data.slice(n..);
                    offset += n as u64;
                }
                if !data.is_empty() {
                    self.stats.data_bytes += data.len() as u64;
                    let abs = self.window.start + offset;
                    if self.direct_eligible(abs, &data) {
                        self.flush_staging()?;
                        self.queue_direct(abs, data)?;
                    } else {
                        self.flush_direct()?;
                        self.stage(offset, &data)?;
                    }
                }
            }
            WriteOp::Zero { offset, len } => {
                let head = self.head.len() as u64;
                let mut offset = offset;
                let mut len = len;
                if offset < head {
                    let n = (head - offset).min(len);
                    self.head[offset as usize..(offset + n) as usize].fill(0);
                    self.stats.zeroed_bytes += n;
                    offset += n;
                    len -= n;
                }
                if len > 0 {
                    self.flush_direct()?;
                    self.flush_staging()?;
                    self.zero(offset, len)?;
                    self.stats.zeroed_bytes += len;
                }
            }
        }
        Ok(())
    }

    /// Copies `data` (window offset `offset`) into the staging buffer, flushing as it fills.
    fn stage(&mut self, mut offset: u64, mut data: &[u8]) -> Result<(), SinkError> {
        let abs = |o: u64, w: &Range<u64>| o + w.start;
        while !data.is_empty() {
            let contiguous =
                !self.staging.is_empty() && self.staging.file_end() == abs(offset, &self.window);
            if !contiguous || self.staging.end == STAGING {
                self.flush_staging()?;
                let a = abs(offset, &self.window);
                self.staging.base = a - a % ALIGN as u64;
                self.staging.start = (a - self.staging.base) as usize;
                self.staging.end = self.staging.start;
            }
            let room = STAGING - self.staging.end;
            let n = room.min(data.len());
            let at = self.staging.aligned_offset() + self.staging.end;
            self.staging.buf[at..at + n].copy_from_slice(&data[..n]);
            self.staging.end += n;
            data = &data[n..];
            offset += n as u64;
        }
        Ok(())
    }

    /// Whether `data` can go to the device with O_DIRECT as it is: the offset and length are
    /// whole blocks and the memory is aligned (pool buffers from the download are).
    fn direct_eligible(&self, abs: u64, data: &Bytes) -> bool {
        let block = self.block.max(512);
        self.direct.is_some()
            && abs.is_multiple_of(block)
            && (data.len() as u64).is_multiple_of(block)
            && (data.as_ptr() as usize).is_multiple_of(ALIGN)
    }

    /// Adds aligned `data` at absolute offset `abs` to the run written with one pwritev.
    fn queue_direct(&mut self, abs: u64, data: Bytes) -> Result<(), SinkError> {
        if !self.direct_run.is_empty() && self.direct_run_offset + self.direct_run_len != abs {
            self.flush_direct()?;
        }
        if self.direct_run.is_empty() {
            self.direct_run_offset = abs;
        }
        self.direct_run_len += data.len() as u64;
        self.direct_run.push(data);
        if self.direct_run_len >= DIRECT_RUN as u64 || self.direct_run.len() >= 64 {
            self.flush_direct()?;
        }
        Ok(())
    }

    /// Writes the queued aligned buffers straight from their memory: no copy.
    fn flush_direct(&mut self) -> Result<(), SinkError> {
        if self.direct_run.is_empty() {
            return Ok(());
        }
        let run = std::mem::take(&mut self.direct_run);
        let mut offset = self.direct_run_offset;
        if let Some(f) = &mut self.flusher {
            f.written(self.direct_run_len);
        }
        self.direct_run_len = 0;
        let Some(direct) = &self.direct else {
            return Err(self.err("writing to", io::Error::other("no O_DIRECT descriptor")));
        };
        // Skip what a short write already took, then retry with the rest.
        let (mut first, mut skip) = (0usize, 0usize);
        while first < run.len() {
            let slices: Vec<io::IoSlice<'_>> = run[first..]
                .iter()
                .enumerate()
                .map(|(i, b)| io::IoSlice::new(if i == 0 { &b[skip..] } else { &b[..] }))
                .collect();
            let written = {
                let _io = self.watch.begin("writing to");
                nix::sys::uio::pwritev(direct, &slices, offset as i64)
            };
            let n = match written {
                Ok(0) => return Err(self.err("writing to", io::ErrorKind::WriteZero.into())),
                Ok(n) => n,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(self.err("writing to", e.into())),
            };
            offset += n as u64;
            let mut left = n;
            while left > 0 && first < run.len() {
                let avail = run[first].len() - skip;
                if left >= avail {
                    left -= avail;
                    first += 1;
                    skip = 0;
                } else {
                    skip += left;
                    left = 0;
                }
            }
        }
        Ok(())
    }

    /// Writes the staged bytes: the block-aligned middle with O_DIRECT, ragged edges buffered.
    fn flush_staging(&mut self) -> Result<(), SinkError> {
        if self.staging.is_empty() {
            return Ok(());
        }
        let base = self.staging.base;
        let (s, e) = (self.staging.start as u64, self.staging.end as u64);
        let block = self.block.max(ALIGN as u64);
        let (mid_s, mid_e) = (s.div_ceil(block) * block, e / block * block);
        let mem = self.staging.aligned_offset();
        let buf = &self.staging.buf[mem..mem + STAGING];
        let write = |f: &File, from: u64, to: u64| {
            f.write_all_at(&buf[from as usize..to as usize], base + from)
        };
        let io = self.watch.begin("writing to");
        let result = match &self.direct {
            Some(direct) if mid_s < mid_e => write(&self.buffered, s, mid_s)
                .and_then(|_| write(direct, mid_s, mid_e))
                .and_then(|_| write(&self.buffered, mid_e, e)),
            _ => write(&self.buffered, s, e),
        };
        drop(io);
        self.staging.start = 0;
        self.staging.end = 0;
        if let Some(f) = &mut self.flusher {
            f.written(e - s);
        }
        result.map_err(|e| self.err("writing to", e))
    }

    /// Makes `len` bytes at window offset `offset` read back as zeros.
    fn zero(&mut self, offset: u64, len: u64) -> Result<(), SinkError> {
        let start = self.window.start + offset;
        let end = start + len;
        if self.is_block_device {
            let (a, b) = (start.div_ceil(512) * 512, end / 512 * 512);
            if a < b {
                self.write_zeros(start, a)?;
                let mut at = a;
                while at < b {
                    self.check_cancelled()?;
                    let n = (b - at).min(ZERO_PIECE);
                    let zeroed = {
                        let _io = self.watch.begin("zeroing");
                        ioctl::zero_out(&self.buffered, at, n)
                    };
                    match zeroed {
                        Ok(()) => at += n,
                        Err(e) => {
                            tracing::debug!(error = %e, "BLKZEROOUT refused, writing zeros");
                            break;
                        }
                    }
                }
                // The rest (all of it if BLKZEROOUT was refused part way) by plain writes.
                return self.write_zeros(at, end);
            }
        } else {
            use nix::fcntl::{fallocate, FallocateFlags};
            let zero_range =
                FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
            let _io = self.watch.begin("zeroing");
            if fallocate(&self.buffered, zero_range, start as i64, len as i64).is_ok() {
                return Ok(());
            }
        }
        self.write_zeros(start, end)
    }

    fn write_zeros(&self, start: u64, end: u64) -> Result<(), SinkError> {
        let zeros = vec![0u8; (1usize << 20).min((end - start) as usize)];
        let mut at = start;
        while at < end {
            self.check_cancelled()?;
            let n = ((end - at) as usize).min(zeros.len());
            let _io = self.watch.begin("zeroing");
            self.buffered
                .write_all_at(&zeros[..n], at)
                .map_err(|e| self.err("zeroing", e))?;
            at += n as u64;
        }
        Ok(())
    }

    fn wipe_ends(&mut self, context: &'static str) -> Result<(), SinkError> {
        let w = self.window.clone();
        let head_end = (w.start + HEAD_HOLD).min(w.end);
        self.write_zeros(w.start, head_end)?;
        let tail_start = w.end.saturating_sub(TAIL_WIPE).max(head_end);
        self.write_zeros(tail_start, w.end)?;
        self.sync(context)
    }

    fn sync(&self, context: &'static str) -> Result<(), SinkError> {
        let _io = self.watch.begin("syncing");
        self.buffered.sync_all().map_err(|e| self.err(context, e))
    }

    /// Flushes everything, syncs, then writes the held-back first MiB and syncs again.
    pub fn commit(mut self) -> Result<WriteStats, SinkError> {
        self.commit_in_place()
    }

    /// [`Self::commit`] without giving the writer up, so that a failed commit can still
    /// [`Self::abort_in_place`].
    pub(crate) fn commit_in_place(&mut self) -> Result<WriteStats, SinkError> {
        self.check_cancelled()?;
        self.flush_direct()?;
        self.flush_staging()?;
        if let Some(f) = self.flusher.take() {
            f.finish().map_err(|e| self.err("syncing", e))?;
        }
        if let Some(d) = &self.direct {
            let _io = self.watch.begin("syncing");
            d.sync_all().map_err(|e| self.err("syncing", e))?;
        }
        self.sync("syncing")?;
        if self.started {
            self.check_cancelled()?;
            {
                let _io = self.watch.begin("writing the first MiB of");
                self.buffered
                    .write_all_at(&self.head, self.window.start)
                    .map_err(|e| self.err("writing the first MiB of", e))?;
            }
            self.sync("syncing")?;
        }
        Ok(self.stats.clone())
    }

    /// After a failure: if anything was written, zero the first and last MiB so the target
    /// does not look bootable (its old contents are gone already). Untouched targets stay
    /// untouched.
    pub fn abort(mut self) {
        self.abort_in_place()
    }

    pub(crate) fn abort_in_place(&mut self) {
        if !self.started {
            return;
        }
        self.staging.start = 0;
        self.staging.end = 0;
        self.direct_run.clear();
        if let Err(e) = self.wipe_ends("wiping after a failed write") {
            tracing::error!(error = %e, "could not wipe the target after a failed write");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use blockdev::WritableDisk;
    use bytes::Bytes;

    fn target(size: usize, fill: u8) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![fill; size]).unwrap();
        f
    }

    fn data(offset: u64, len: usize, seed: u8) -> WriteOp {
        let v: Vec<u8> = (0..len)
            .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
            .collect();
        WriteOp::Data {
            offset,
            data: Bytes::from(v),
        }
    }

    fn expected(size: usize, ops: &[WriteOp]) -> Vec<u8> {
        let mut v = vec![0xEEu8; size];
        v[..HEAD_HOLD as usize].fill(0);
        v[size - TAIL_WIPE as usize..].fill(0);
        for op in ops {
            match op {
                WriteOp::Data { offset, data } => {
                    v[*offset as usize..*offset as usize + data.len()].copy_from_slice(data)
                }
                WriteOp::Zero { offset, len } => {
                    v[*offset as usize..(*offset + *len) as usize].fill(0)
                }
            }
        }
        v
    }

    #[test]
    fn ops_land_where_they_belong() {
        let size = 24 << 20;
        let t = target(size, 0xEE);
        let ops = vec![
            data(0, 700_000, 1),
            data(700_000, 3_000_001, 2),
            data(3_700_001, 9 << 20, 3),
            WriteOp::Zero {
                offset: 13_000_000,
                len: 1_234_567,
            },
            data(15 << 20, 123, 4),
            WriteOp::Zero {
                offset: 100,
                len: 10,
            },
            data((22 << 20) + 7, 1000, 5),
        ];
        let mut w = DiskWriter::open(WritableDisk::open_file(t.path()).unwrap(), None).unwrap();
        for op in ops.clone() {
            w.apply(op).unwrap();
        }
        let stats = w.commit().unwrap();
        assert_eq!(std::fs::read(t.path()).unwrap(), expected(size, &ops));
        assert!(stats.data_bytes > 12 << 20);
    }

    #[test]
    fn aligned_pool_buffers_are_written_without_staging() {
        let size = 16 << 20;
        let t = target(size, 0xEE);
        let pool = crate::buffer_pool::BufferPool::new(1 << 20, 4);
        let mut ops = Vec::new();
        for i in 0..12u64 {
            let mut b = pool.get();
            let fill: Vec<u8> = (0..1 << 20).map(|j| (j as u64 * 7 + i) as u8).collect();
            b.extend_from_slice(&fill);
            ops.push(WriteOp::Data {
                offset: i << 20,
                data: b.freeze(),
            });
        }
        // An unaligned op in between goes through the staging buffer.
        ops.insert(6, data((12 << 20) + 3, 1000, 9));
        let mut w = DiskWriter::open(WritableDisk::open_file(t.path()).unwrap(), None).unwrap();
        for op in ops.clone() {
            w.apply(op).unwrap();
        }
        assert!(w.stats().direct_io);
        w.commit().unwrap();
        assert_eq!(std::fs::read(t.path()).unwrap(), expected(size, &ops));
    }

    #[test]
    fn first_mib_is_written_last() {
        let t = target(4 << 20, 0xEE);
        let mut w = DiskWriter::open(WritableDisk::open_file(t.path()).unwrap(), None).unwrap();
        w.apply(data(0, 2 << 20, 9)).unwrap();
        w.flush_staging().unwrap();
        let mid = std::fs::read(t.path()).unwrap();
        assert!(
            mid[..HEAD_HOLD as usize].iter().all(|b| *b == 0),
            "head zeroed, not written, before commit"
        );
        assert_ne!(mid[HEAD_HOLD as usize], 0xEE, "the rest is written already");
        w.commit().unwrap();
        let after = std::fs::read(t.path()).unwrap();
        assert_eq!(
            &after[..16],
            &expected(4 << 20, &[data(0, 2 << 20, 9)])[..16]
        );
    }

    #[test]
    fn untouched_until_the_first_op_and_abort_wipes_ends() {
        let t = target(4 << 20, 0xEE);
        let w = DiskWriter::open(WritableDisk::open_file(t.path()).unwrap(), None).unwrap();
        w.abort();
        assert!(
            std::fs::read(t.path()).unwrap().iter().all(|b| *b == 0xEE),
            "nothing written, nothing wiped"
        );

        let mut w = DiskWriter::open(WritableDisk::open_file(t.path()).unwrap(), None).unwrap();
        w.apply(data(0, 4 << 20, 3)).unwrap();
        w.abort();
        let v = std::fs::read(t.path()).unwrap();
        assert!(v[..1 << 20].iter().all(|b| *b == 0));
        assert!(v[3 << 20..].iter().all(|b| *b == 0));
    }

    #[test]
    fn too_small_is_refused_before_writing() {
        let t = target(2 << 20, 0xEE);
        let mut w = DiskWriter::open(WritableDisk::open_file(t.path()).unwrap(), None).unwrap();
        let e = w.ensure_fits(3 << 20).unwrap_err().to_string();
        assert!(e.contains("needs at least 3145728 bytes"), "{e}");
        assert!(w.apply(data((2 << 20) - 10, 20, 1)).is_err());
        w.abort();
        assert!(std::fs::read(t.path()).unwrap().iter().all(|b| *b == 0xEE));
    }

    #[test]
    fn windows_are_relative() {
        let size = 8 << 20;
        let t = target(size, 0xEE);
        let mut w = DiskWriter::open(
            WritableDisk::open_file(t.path()).unwrap(),
            Some((2 << 20)..(6 << 20)),
        )
        .unwrap();
        assert_eq!(w.capacity(), 4 << 20);
        w.apply(data(0, 3 << 20, 7)).unwrap();
        w.commit().unwrap();
        let v = std::fs::read(t.path()).unwrap();
        assert!(v[..2 << 20].iter().all(|b| *b == 0xEE), "before the window");
        assert!(v[6 << 20..].iter().all(|b| *b == 0xEE), "after the window");
        let WriteOp::Data { data: d, .. } = data(0, 3 << 20, 7) else {
            unreachable!()
        };
        assert_eq!(&v[2 << 20..5 << 20], &d[..]);
        assert!(
            v[5 << 20..6 << 20].iter().all(|b| *b == 0),
            "window tail wiped"
        );
    }
}
