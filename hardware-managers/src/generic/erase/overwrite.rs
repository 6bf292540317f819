//! The fallback of every erase: IPA's `shred`, done natively. `agent_erase_devices_iterations`
//! passes of pseudo-random data, then (`agent_erase_devices_zeroize`, the default) a pass of
//! zeros, in large aligned writes that bypass the page cache when the device allows it.
//!
//! Random data is generated on other threads (up to three per disk, as many as there are
//! CPUs) into small rings of buffers while earlier chunks are being written, so that
//! generating and writing overlap and a device faster than one core's generator is not held
//! back by it. Afterwards a sample
//! (first and last MiB and random blocks) is read back, bypassing the cache, and compared
//! with what the last pass wrote: zeros, or the random pass regenerated from its seed.

use std::path::Path;
use std::sync::mpsc;
use std::time::Instant;

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{json, Map, Value};

use super::io::{open_direct, read_uncached, AlignedBuf, DiskWriter, ALIGN};
use super::EraseSettings;
use crate::Disk;
use blockdev::{rescan, DeviceGuard, WritableDisk};

/// Bytes per write: large enough to stream at the device's speed.
pub(crate) const CHUNK: usize = 4 << 20;
/// Buffers in flight between each generator and the writer.
const RING: usize = 2;
/// Threads generating random data for one disk.
const MAX_GENERATORS: usize = 3;
/// Random blocks read back after the erase, besides the first and last MiB.
const SAMPLE_BLOCKS: usize = 32;
const SAMPLE_EDGE: u64 = 1 << 20;

/// What one pass writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Pattern {
    /// Pseudo-random bytes; chunk `i` comes from a generator seeded with `(seed, i)`, so any
    /// chunk can be generated again to check what was written.
    Random(u64),
    Zeros,
}

impl Pattern {
    pub(crate) fn fill(self, chunk_index: u64, buf: &mut [u8]) {
        match self {
            Pattern::Zeros => buf.fill(0),
            Pattern::Random(seed) => {
                let mut rng =
                    SmallRng::seed_from_u64(seed ^ chunk_index.wrapping_mul(0x9e37_79b9_7f4a_7c15));
                rng.fill_bytes(buf);
            }
        }
    }

    pub(crate) fn describe(self) -> &'static str {
        match self {
            Pattern::Random(_) => "random",
            Pattern::Zeros => "zeros",
        }
    }
}

/// Overwrites the whole of `disk`, then checks a sample; returns the device's report.
pub(crate) fn overwrite(
    guard: &DeviceGuard,
    disk: &Disk,
    settings: &EraseSettings,
) -> Result<Map<String, Value>, String> {
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
    let mut writer = DiskWriter::new(
        WritableDisk::open(&disk.path, guard, super::ACTION)
            .map_err(|e| format!("opening for writing: {e}"))?,
    );
    let mut written = 0u64;
    let mut pass_reports = Vec::new();
    let progress = blockdev::progress::current();
    if let Some(p) = &progress {
        p.set_total(Some(disk.size * passes.len() as u64));
        p.set_phase("writing");
    }
    for (n, pattern) in passes.iter().enumerate() {
        tracing::info!(
            device = name,
            pass = n + 1,
            of = passes.len(),
            pattern = pattern.describe(),
            "erase pass"
        );
        let pass_started = Instant::now();
        write_pass(&mut writer, disk.size, *pattern, progress.as_deref())?;
        writer
            .sync()
            .map_err(|e| format!("syncing data to disk: {e}"))?;
        written += disk.size;
        let seconds = pass_started.elapsed().as_secs_f64();
        pass_reports.push(json!({
            "pattern": pattern.describe(),
            "seconds": (seconds * 100.0).round() / 100.0,
            "mib_per_second": if seconds > 0.0 {
                ((disk.size as f64 / (1 << 20) as f64 / seconds) * 10.0).round() / 10.0
            } else {
                0.0
            },
        }));
    }
    if let Some(p) = &progress {
        p.set_phase("verifying");
    }
    let verification = match passes.last() {
        Some(last) => verify(disk, *last)?,
        None => json!({"skipped": "no pass was requested"}),
    };
    for p in &partitions {
        rescan::flush_buffers(p).map_err(|e| format!("flushing {}: {e}", p.display()))?;
    }
    rescan::reread_partition_table(writer.file())
        .map_err(|e| format!("re-reading the partition table (is a partition in use?): {e}"))?;
    let mut report = Map::new();
    report.insert("method".into(), json!("overwrite"));
    report.insert("random_passes".into(), json!(settings.random_passes));
    report.insert("zero_pass".into(), json!(settings.zeroize));
    report.insert("bytes_written".into(), json!(written));
    report.insert("direct_io".into(), json!(writer.all_direct()));
    report.insert(
        "seconds".into(),
        json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0),
    );
    report.insert("passes".into(), Value::Array(pass_reports));
    report.insert("verification".into(), verification);
    Ok(report)
}

/// Writes one pass of `pattern` over `[0, size)`.
fn write_pass(
    writer: &mut DiskWriter,
    size: u64,
    pattern: Pattern,
    progress: Option<&blockdev::progress::Task>,
) -> Result<(), String> {
    let chunks = size.div_ceil(CHUNK as u64);
    let len_of = |chunk: u64| (size - chunk * CHUNK as u64).min(CHUNK as u64) as usize;
    // The agent logs and publishes the progress (blockdev::progress).
    let log_progress = |chunk: u64| {
        if let Some(p) = progress {
            p.add(len_of(chunk) as u64);
        }
    };
    let write = |writer: &mut DiskWriter, chunk: u64, data: &[u8]| {
        let offset = chunk * CHUNK as u64;
        writer
            .write_at(data, offset)
            .map_err(|e| format!("writing {} bytes at offset {offset}: {e}", data.len()))
    };
    if pattern == Pattern::Zeros {
        let mut zeros = AlignedBuf::new(CHUNK);
        for chunk in 0..chunks {
            write(writer, chunk, zeros.get_mut(len_of(chunk)))?;
            log_progress(chunk);
        }
        return Ok(());
    }
    // Random: generator threads fill buffers (generator g makes chunks g, g + G, ...) from
    // rings the writer hands back, so generating overlaps writing.
    let generators = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .clamp(1, MAX_GENERATORS);
    std::thread::scope(|s| {
        let mut full = Vec::new();
        let mut empty = Vec::new();
        for g in 0..generators {
            let (full_tx, full_rx) = mpsc::sync_channel::<(u64, AlignedBuf)>(RING);
            let (empty_tx, empty_rx) = mpsc::channel::<AlignedBuf>();
            for _ in 0..RING {
                let _ = empty_tx.send(AlignedBuf::new(CHUNK));
            }
            s.spawn(move || {
                let mut chunk = g as u64;
                while chunk < chunks {
                    let Ok(mut buf) = empty_rx.recv() else { return };
                    pattern.fill(chunk, buf.get_mut(len_of(chunk)));
                    if full_tx.send((chunk, buf)).is_err() {
                        return;
                    }
                    chunk += generators as u64;
                }
            });
            full.push(full_rx);
            empty.push(empty_tx);
        }
        for chunk in 0..chunks {
            let g = (chunk % generators as u64) as usize;
            let (made, mut buf) = full[g]
                .recv()
                .map_err(|_| "the random data generator stopped".to_string())?;
            debug_assert_eq!(made, chunk);
            write(writer, chunk, buf.get_mut(len_of(chunk)))?;
            log_progress(chunk);
            let _ = empty[g].send(buf);
        }
        Ok(())
    })
}

/// Reads back the first and last MiB and random blocks, bypassing the page cache, and
/// compares them with what the `last` pass wrote.
pub(crate) fn verify(disk: &Disk, last: Pattern) -> Result<Value, String> {
    let size = disk.size;
    let (file, direct) =
        open_direct(&disk.path).map_err(|e| format!("opening for verification: {e}"))?;
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
        read_uncached(&file, direct, data, *offset)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::generic::protected::tests::disk;
    use ironic_protocol::Node;
    use std::os::unix::fs::FileExt;

    fn node(info: Value) -> Node {
        serde_json::from_value(json!({ "driver_internal_info": info })).unwrap()
    }

    fn settings(node: &Node) -> EraseSettings {
        EraseSettings::from_node(node, &Default::default()).unwrap()
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

    /// The guard of a ramdisk, which lets the erase write to the test's files.
    fn ramdisk() -> DeviceGuard {
        DeviceGuard::new(true, vec![], "/nonexistent-sys")
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
        let task = blockdev::progress::start("erase", "test-overwrite", Some(d.size));
        let r = overwrite(&ramdisk(), &d, &settings(&Node::default())).unwrap();
        // Both passes counted against both passes' total.
        let p = task.snapshot();
        assert_eq!(
            (p.bytes_done, p.bytes_total),
            (2 * d.size, Some(2 * d.size))
        );
        assert_eq!(p.phase, "verifying");
        assert_eq!(r["method"], "overwrite");
        assert_eq!(r["bytes_written"], 2 * d.size);
        assert_eq!(r["verification"]["ok"], true);
        assert_eq!(r["verification"]["expected"], "zeros");
        assert_eq!(r["passes"][0]["pattern"], "random");
        assert_eq!(r["passes"][1]["pattern"], "zeros");
        assert!(std::fs::read(&d.path).unwrap().iter().all(|b| *b == 0));
    }

    #[test]
    fn overwrite_random_only_is_verified_against_its_seed() {
        let (_dir, d) = file_disk(5 << 20);
        let before = std::fs::read(&d.path).unwrap();
        let s = settings(&node(json!({
            "agent_erase_devices_iterations": 2,
            "agent_erase_devices_zeroize": false,
        })));
        let r = overwrite(&ramdisk(), &d, &s).unwrap();
        assert_eq!(r["verification"]["expected"], "random");
        assert_eq!(r["bytes_written"], 2 * d.size);
        let after = std::fs::read(&d.path).unwrap();
        let same = before.iter().zip(&after).filter(|(a, b)| a == b).count();
        assert!(same < after.len() / 100, "{same} bytes unchanged");
        // What is on the disk is the last pass: another seed does not verify.
        assert!(verify(&d, Pattern::Random(1)).is_err());
    }

    #[test]
    fn verification_catches_a_block_that_was_not_written() {
        let (_dir, d) = file_disk(2 << 20);
        std::fs::write(&d.path, vec![0u8; 2 << 20]).unwrap();
        assert!(verify(&d, Pattern::Zeros).is_ok());
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&d.path)
            .unwrap();
        f.write_all_at(&[1], (2 << 20) - 1).unwrap();
        let err = verify(&d, Pattern::Zeros).unwrap_err();
        assert!(err.contains(&format!("offset {}", (2 << 20) - 1)), "{err}");
    }
}
