//! The `erase_devices` step: erase every disk completely.
//!
//! Each disk gets an [`EraseMethod`]. Today the only one is [`EraseMethod::Overwrite`], IPA's
//! `shred` fallback done natively: `agent_erase_devices_iterations` passes of pseudo-random
//! data, then (`agent_erase_devices_zeroize`, the default) a pass of zeros, in large aligned
//! writes that bypass the page cache when the device allows it. Secure-erase methods (NVMe
//! format/sanitize, ATA security erase) will be tried before it once they exist.
//!
//! Disks are erased in parallel, at most `disk_erasure_concurrency` at a time. Afterwards a
//! sample of blocks (first and last MiB and random ones) is read back, bypassing the cache,
//! and compared with what the last pass wrote: zeros, or the random pass regenerated from its
//! seed. Before anything is written, every disk passes the checks: allowed by the guard, not
//! read-only (unless the conductor allows skipping those), not a protected shared volume.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use ironic_protocol::Node;
use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{json, Map, Value};

use super::block_devices::{Disk, DiskRegion};
use super::partition_table::PartitionTables;
use super::region::Region;
use super::signatures::{self, LINUX_RAID_MEMBER};
use super::{protected, rescan, GenericOptions};
use crate::{DeviceGuard, HardwareError};

const ACTION: &str = "erase";
/// Bytes per write: large enough to stream at the device's speed.
const CHUNK: usize = 4 << 20;
/// Buffer alignment for `O_DIRECT`: the largest logical sector size in use.
const ALIGN: usize = 4096;
/// Random blocks read back after the erase, besides the first and last MiB.
const SAMPLE_BLOCKS: usize = 32;
const SAMPLE_EDGE: u64 = 1 << 20;

/// How a disk is erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EraseMethod {
    /// Overwrite every byte, like `shred`.
    Overwrite,
}

impl EraseMethod {
    pub fn name(self) -> &'static str {
        match self {
            EraseMethod::Overwrite => "overwrite",
        }
    }

    /// The best method for `disk`. Secure-erase methods will be chosen here, by device type
    /// and the node's `agent_enable_*_secure_erase` flags.
    fn for_disk(_disk: &Disk, _settings: &EraseSettings) -> EraseMethod {
        EraseMethod::Overwrite
    }
}

/// The conductor's erase tunables, from `driver_internal_info`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct EraseSettings {
    pub random_passes: u32,
    pub zeroize: bool,
    pub concurrency: usize,
    pub skip_read_only: bool,
}

impl EraseSettings {
    pub(crate) fn from_node(node: &Node) -> Result<Self, HardwareError> {
        Ok(EraseSettings {
            random_passes: u32::try_from(internal_uint(node, "agent_erase_devices_iterations", 1)?)
                .map_err(|_| {
                    HardwareError::InvalidArguments(
                        "agent_erase_devices_iterations is too large".into(),
                    )
                })?,
            zeroize: node.internal_flag("agent_erase_devices_zeroize", true),
            concurrency: internal_uint(node, "disk_erasure_concurrency", 4)?.clamp(1, 64) as usize,
            skip_read_only: node.internal_flag("agent_erase_skip_read_only", false),
        })
    }
}

/// A non-negative integer from `driver_internal_info` (a number or its text).
fn internal_uint(node: &Node, key: &str, default: u64) -> Result<u64, HardwareError> {
    let Some(value) = node.driver_internal_info().and_then(|d| d.get(key)) else {
        return Ok(default);
    };
    let parsed = match value {
        Value::Null => Some(default),
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| {
        HardwareError::InvalidArguments(format!(
            "driver_internal_info {key} must be a non-negative integer, not {value}"
        ))
    })
}

/// Runs the step on `disks`; the result maps each disk to how it was erased.
pub(crate) fn erase_devices(
    guard: &DeviceGuard,
    disks: &[Disk],
    node: &Node,
    options: &GenericOptions,
) -> Result<Value, HardwareError> {
    let settings = EraseSettings::from_node(node)?;
    let mut report = Map::new();
    let mut candidates = Vec::new();
    // Every check before the first write.
    for disk in disks {
        let name = disk.path.display().to_string();
        if disk.virtual_media {
            tracing::info!(device = name, "skipping erase of virtual media device");
            report.insert(name, json!({"skipped": "virtual media device"}));
            continue;
        }
        if disk.read_only {
            if !settings.skip_read_only {
                return Err(HardwareError::BlockDeviceErase(format!(
                    "Failed to invoke erase of device {name} as the device is flagged \
                     read-only, and the conductor has not signaled this is a permitted case."
                )));
            }
            tracing::info!(device = name, "skipping erase of read-only device");
            report.insert(name, json!({"skipped": "read-only device"}));
            continue;
        }
        guard.check(&disk.path, ACTION)?;
        if is_raid_member(disk)? {
            tracing::info!(device = name, "skipping erase of RAID member device");
            report.insert(name, json!({"skipped": "Linux RAID member"}));
            continue;
        }
        candidates.push(disk);
    }
    protected::check_disks(&candidates, node, options)?;

    let results = run_parallel(&candidates, settings.concurrency, |disk| {
        let method = EraseMethod::for_disk(disk, &settings);
        match method {
            EraseMethod::Overwrite => overwrite(disk, &settings),
        }
    });
    let mut errors = Vec::new();
    for (disk, result) in candidates.iter().zip(results) {
        let name = disk.path.display().to_string();
        match result {
            Ok(r) => {
                tracing::info!(device = name, report = %r, "erased");
                report.insert(name, r);
            }
            Err(e) => {
                tracing::error!(device = name, error = e, "erase failed");
                errors.push(format!("\"{name}\": {e}"));
            }
        }
    }
    if errors.is_empty() {
        Ok(Value::Object(report))
    } else {
        Err(HardwareError::BlockDeviceErase(format!(
            "Failed to erase the device(s): {}",
            errors.join("; ")
        )))
    }
}

/// Calls `work` on every item on at most `concurrency` threads; results in item order.
fn run_parallel<T: Sync, R: Send>(
    items: &[T],
    concurrency: usize,
    work: impl Fn(&T) -> R + Sync,
) -> Vec<R> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<R>>> = Mutex::new(items.iter().map(|_| None).collect());
    std::thread::scope(|s| {
        for _ in 0..concurrency.min(items.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some(item) = items.get(i) else { break };
                let r = work(item);
                results.lock().unwrap_or_else(|p| p.into_inner())[i] = Some(r);
            });
        }
    });
    results
        .into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .map(|r| r.expect("every item was processed"))
        .collect()
}

/// Whether the disk or one of its partitions carries an MD RAID superblock or is held by an
/// MD array.
fn is_raid_member(disk: &Disk) -> Result<bool, HardwareError> {
    let io = |e| HardwareError::io(format!("reading {}", disk.path.display()), e);
    let file = File::open(&disk.path).map_err(io)?;
    let tables = PartitionTables::read(&file, disk.size, disk.logical_sector_size).map_err(io)?;
    for region in disk.regions(&tables) {
        if region_is_raid_member(&file, &region).map_err(io)? {
            return Ok(true);
        }
    }
    Ok(false)
}

fn region_is_raid_member(file: &File, region: &DiskRegion) -> io::Result<bool> {
    if region.holders.iter().any(|h| h.starts_with("md")) {
        return Ok(true);
    }
    let found = signatures::probe(&Region::new(file, region.extent))?;
    Ok(found.iter().any(|s| s.kind == LINUX_RAID_MEMBER))
}

/// What one pass writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pattern {
    /// Pseudo-random bytes; chunk `i` comes from a generator seeded with `(seed, i)`, so any
    /// chunk can be generated again to check what was written.
    Random(u64),
    Zeros,
}

impl Pattern {
    fn fill(self, chunk_index: u64, buf: &mut [u8]) {
        match self {
            Pattern::Zeros => buf.fill(0),
            Pattern::Random(seed) => {
                let mut rng =
                    SmallRng::seed_from_u64(seed ^ chunk_index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                rng.fill_bytes(buf);
            }
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Pattern::Random(_) => "random",
            Pattern::Zeros => "zeros",
        }
    }
}

/// A buffer aligned for `O_DIRECT`, without `unsafe`: a larger vector used from its first
/// aligned byte.
struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    fn new(len: usize) -> Self {
        let storage = vec![0u8; len + ALIGN];
        let start = storage.as_ptr().align_offset(ALIGN);
        AlignedBuf {
            storage,
            start,
            len,
        }
    }

    fn get_mut(&mut self, len: usize) -> &mut [u8] {
        &mut self.storage[self.start..self.start + len.min(self.len)]
    }
}

/// Opens `path` with `O_DIRECT` when the device (or filesystem, in tests) accepts it.
fn open_direct(path: &Path, write: bool) -> io::Result<(File, bool)> {
    let direct = OpenOptions::new()
        .read(!write)
        .write(write)
        .custom_flags(nix::libc::O_DIRECT)
        .open(path);
    match direct {
        Ok(f) => Ok((f, true)),
        Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => Ok((
            OpenOptions::new().read(!write).write(write).open(path)?,
            false,
        )),
        Err(e) => Err(e),
    }
}

/// Writes to a disk with `O_DIRECT` while the device takes it, through the page cache
/// otherwise: some devices and filesystems refuse direct I/O, or a misaligned last chunk.
struct DiskWriter {
    path: PathBuf,
    /// Open with `O_DIRECT` if `direct`.
    file: File,
    direct: bool,
    /// Opened when a direct write is refused; used from then on.
    fallback: Option<File>,
}

impl DiskWriter {
    fn open(path: &Path) -> io::Result<Self> {
        let (file, direct) = open_direct(path, true)?;
        Ok(DiskWriter {
            path: path.to_path_buf(),
            file,
            direct,
            fallback: None,
        })
    }

    /// Whether every write so far bypassed the page cache.
    fn all_direct(&self) -> bool {
        self.direct && self.fallback.is_none()
    }

    fn write_at(&mut self, data: &[u8], offset: u64) -> io::Result<()> {
        if self.all_direct() {
            // The kernel refuses a misaligned direct write as a whole, with EINVAL.
            match self.file.write_all_at(data, offset) {
                Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                    tracing::debug!(
                        device = %self.path.display(),
                        "direct I/O refused, writing through the page cache"
                    );
                    self.fallback = Some(OpenOptions::new().write(true).open(&self.path)?);
                }
                other => return other,
            }
        }
        self.fallback
            .as_ref()
            .unwrap_or(&self.file)
            .write_all_at(data, offset)
    }

    fn sync(&self) -> io::Result<()> {
        self.file.sync_all()?;
        self.fallback.as_ref().map_or(Ok(()), File::sync_all)
    }
}

/// Overwrites the whole of `disk`, then checks a sample; returns the device's report.
fn overwrite(disk: &Disk, settings: &EraseSettings) -> Result<Value, String> {
    let started = Instant::now();
    let name = disk.path.display().to_string();
    let partitions: Vec<&Path> = disk.partitions.iter().map(|p| p.path.as_path()).collect();
    // Anything dirty in a partition's cache must land before the erase, not on top of it.
    for p in &partitions {
        rescan::flush_buffers(p).map_err(|e| format!("flushing {}: {e}", p.display()))?;
    }
    let mut passes: Vec<Pattern> = (0..settings.random_passes)
        .map(|_| Pattern::Random(rand::rng().random()))
        .collect();
    if settings.zeroize {
        passes.push(Pattern::Zeros);
    }
    let mut writer =
        DiskWriter::open(&disk.path).map_err(|e| format!("opening for writing: {e}"))?;
    let mut buf = AlignedBuf::new(CHUNK);
    let mut written = 0u64;
    for (n, pattern) in passes.iter().enumerate() {
        tracing::info!(
            device = name,
            pass = n + 1,
            of = passes.len(),
            pattern = pattern.describe(),
            "erase pass"
        );
        let mut offset = 0u64;
        let mut chunk = 0u64;
        let mut next_log = disk.size / 10;
        while offset < disk.size {
            let len = (disk.size - offset).min(CHUNK as u64) as usize;
            let data = buf.get_mut(len);
            pattern.fill(chunk, data);
            writer
                .write_at(data, offset)
                .map_err(|e| format!("writing {len} bytes at offset {offset}: {e}"))?;
            offset += len as u64;
            written += len as u64;
            chunk += 1;
            if offset >= next_log && offset < disk.size {
                tracing::info!(
                    device = name,
                    pass = n + 1,
                    percent = offset * 100 / disk.size,
                    "erasing"
                );
                next_log += disk.size / 10;
            }
        }
        writer
            .sync()
            .map_err(|e| format!("syncing data to disk: {e}"))?;
    }
    let verification = match passes.last() {
        Some(last) => verify(disk, *last)?,
        None => json!({"skipped": "no pass was requested"}),
    };
    for p in &partitions {
        rescan::flush_buffers(p).map_err(|e| format!("flushing {}: {e}", p.display()))?;
    }
    rescan::reread_partition_table(&writer.file)
        .map_err(|e| format!("re-reading the partition table (is a partition in use?): {e}"))?;
    Ok(json!({
        "method": EraseMethod::Overwrite.name(),
        "random_passes": settings.random_passes,
        "zero_pass": settings.zeroize,
        "bytes_written": written,
        "direct_io": writer.all_direct(),
        "seconds": (started.elapsed().as_secs_f64() * 10.0).round() / 10.0,
        "verification": verification,
    }))
}

/// Reads back the first and last MiB and random blocks, bypassing the page cache, and
/// compares them with what the `last` pass wrote.
fn verify(disk: &Disk, last: Pattern) -> Result<Value, String> {
    let size = disk.size;
    let (file, direct) =
        open_direct(&disk.path, false).map_err(|e| format!("opening for verification: {e}"))?;
    if !direct {
        // Drop what we cached so the reads come from the device.
        let _ = nix::fcntl::posix_fadvise(
            &file,
            0,
            0,
            nix::fcntl::PosixFadviseAdvice::POSIX_FADV_DONTNEED,
        );
    }
    let unit = disk.logical_sector_size.max(512).max(ALIGN as u64);
    let block = unit.min(size);
    let mut samples: Vec<(u64, u64)> = vec![(0, SAMPLE_EDGE.min(size))];
    let tail = size.saturating_sub(SAMPLE_EDGE) / unit * unit;
    samples.push((tail, size - tail));
    let blocks = size / unit;
    let mut rng = rand::rng();
    for _ in 0..SAMPLE_BLOCKS.min(blocks as usize) {
        samples.push((rng.random_range(0..blocks) * unit, block));
    }
    let mut buf = AlignedBuf::new(SAMPLE_EDGE as usize);
    let mut expected = vec![0u8; CHUNK];
    let mut checked = 0u64;
    for (offset, len) in &samples {
        let data = buf.get_mut(*len as usize);
        read_exact_at(&file, data, *offset)
            .map_err(|e| format!("reading back {len} bytes at offset {offset}: {e}"))?;
        // Compare chunk by chunk of the pattern.
        let mut pos = *offset;
        while pos < offset + len {
            let chunk = pos / CHUNK as u64;
            let chunk_start = chunk * CHUNK as u64;
            let upto = (offset + len).min(chunk_start + CHUNK as u64);
            let chunk_len = (size - chunk_start).min(CHUNK as u64) as usize;
            last.fill(chunk, &mut expected[..chunk_len]);
            let want = &expected[(pos - chunk_start) as usize..(upto - chunk_start) as usize];
            let got = &data[(pos - offset) as usize..(upto - offset) as usize];
            if let Some(i) = want.iter().zip(got).position(|(a, b)| a != b) {
                return Err(format!(
                    "verification failed: the byte at offset {} is not what the last ({}) pass wrote",
                    pos + i as u64,
                    last.describe()
                ));
            }
            pos = upto;
        }
        checked += len;
    }
    Ok(json!({
        "expected": last.describe(),
        "samples": samples.len(),
        "bytes_checked": checked,
        "direct_io": direct,
        "ok": true,
    }))
}

fn read_exact_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<()> {
    let n = super::region::ReadAt::read_at(file, buf, offset)?;
    if n < buf.len() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the device ended early",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generic::protected::tests::disk;

    fn node(info: Value) -> Node {
        serde_json::from_value(json!({ "driver_internal_info": info })).unwrap()
    }

    #[test]
    fn settings_from_driver_internal_info() {
        let s = EraseSettings::from_node(&Node::default()).unwrap();
        assert_eq!(
            s,
            EraseSettings {
                random_passes: 1,
                zeroize: true,
                concurrency: 4,
                skip_read_only: false
            }
        );
        let s = EraseSettings::from_node(&node(json!({
            "agent_erase_devices_iterations": "3",
            "agent_erase_devices_zeroize": false,
            "disk_erasure_concurrency": 0,
            "agent_erase_skip_read_only": true,
        })))
        .unwrap();
        assert_eq!(
            (s.random_passes, s.zeroize, s.concurrency, s.skip_read_only),
            (3, false, 1, true)
        );
        assert!(
            EraseSettings::from_node(&node(json!({"agent_erase_devices_iterations": -1}))).is_err()
        );
    }

    #[test]
    fn random_chunks_can_be_regenerated() {
        let p = Pattern::Random(42);
        let (mut a, mut b, mut c) = (vec![0u8; 4096], vec![0u8; 4096], vec![0u8; 4096]);
        p.fill(7, &mut a);
        p.fill(7, &mut b);
        p.fill(8, &mut c);
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a.iter().any(|x| *x != 0));
    }

    #[test]
    fn parallel_keeps_order_and_bounds_threads() {
        let running = AtomicUsize::new(0);
        let peak = AtomicUsize::new(0);
        let items: Vec<u32> = (0..10).collect();
        let out = run_parallel(&items, 3, |i| {
            let now = running.fetch_add(1, Ordering::SeqCst) + 1;
            peak.fetch_max(now, Ordering::SeqCst);
            std::thread::sleep(std::time::Duration::from_millis(5));
            running.fetch_sub(1, Ordering::SeqCst);
            i * 2
        });
        assert_eq!(out, (0..10).map(|i| i * 2).collect::<Vec<_>>());
        assert!(peak.load(Ordering::SeqCst) <= 3);
    }

    fn file_disk(len: usize) -> (tempfile::TempDir, Disk) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        let mut noise = vec![0u8; len];
        rand::rng().fill(noise.as_mut_slice());
        std::fs::write(&path, &noise).unwrap();
        let mut d = disk(len as u64, &[]);
        d.path = path;
        (dir, d)
    }

    #[test]
    fn overwrite_with_zeros_last() {
        let (_dir, d) = file_disk((9 << 20) + 4096);
        let settings = EraseSettings::from_node(&Node::default()).unwrap();
        let r = overwrite(&d, &settings).unwrap();
        assert_eq!(r["method"], "overwrite");
        assert_eq!(r["bytes_written"], 2 * d.size);
        assert_eq!(r["verification"]["ok"], true);
        assert_eq!(r["verification"]["expected"], "zeros");
        assert!(std::fs::read(&d.path).unwrap().iter().all(|b| *b == 0));
    }

    #[test]
    fn overwrite_random_only_is_verified_against_its_seed() {
        let (_dir, d) = file_disk(5 << 20);
        let before = std::fs::read(&d.path).unwrap();
        let settings = EraseSettings::from_node(&node(json!({
            "agent_erase_devices_iterations": 2,
            "agent_erase_devices_zeroize": false,
        })))
        .unwrap();
        let r = overwrite(&d, &settings).unwrap();
        assert_eq!(r["verification"]["expected"], "random");
        assert_eq!(r["bytes_written"], 2 * d.size);
        let after = std::fs::read(&d.path).unwrap();
        let same = before.iter().zip(&after).filter(|(a, b)| a == b).count();
        assert!(same < after.len() / 100, "{same} bytes unchanged");
    }

    #[test]
    fn verification_catches_a_block_that_was_not_written() {
        let (_dir, d) = file_disk(2 << 20);
        std::fs::write(&d.path, vec![0u8; 2 << 20]).unwrap();
        assert!(verify(&d, Pattern::Zeros).is_ok());
        let f = OpenOptions::new().write(true).open(&d.path).unwrap();
        f.write_all_at(&[1], (2 << 20) - 1).unwrap();
        let err = verify(&d, Pattern::Zeros).unwrap_err();
        assert!(err.contains(&format!("offset {}", (2 << 20) - 1)), "{err}");
    }
}
