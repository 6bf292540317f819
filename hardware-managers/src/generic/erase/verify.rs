//! Proof that an erase removed the data, by sampling.
//!
//! Reading zeros back proves nothing by itself: a device that was already blank, or that
//! answers zeros for blocks it never stored, passes without erasing anything. So, as IPA's
//! discard path does, the check is a positive control: before the erase, a marker (bytes from
//! a generator seeded per run and per position, which no erase can produce by chance) is
//! written at sampled positions and read back from the device, proving the device stores
//! them; after the erase the same positions are read again, bypassing the page cache, and
//! must hold zeros where the method guarantees zeros, or at least no 512-byte sector of its
//! marker where the method leaves indeterminate data (cryptographic and block erases).
//!
//! The positions are IPA's fractions of the device (0, 1, 10, 25, 40, 50, 60, 75, 90 and 99%)
//! and its very end, aligned to the logical block size, 1 MiB each (less on small devices).

use std::fs::File;
use std::io;
use std::path::PathBuf;

use rand::rngs::SmallRng;
use rand::{Rng, RngCore, SeedableRng};
use serde_json::{json, Value};

use blockdev::WritableDisk;

use super::io::{open_direct, read_uncached, AlignedBuf, DiskWriter, ALIGN};

/// What the sampled positions must hold after the erase.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// Only zeros (overwrite with zeros, ATA normal erase, SCSI sanitize overwrite, discard).
    Zeros,
    /// No sector of a marker is left (the method leaves indeterminate data).
    MarkersGone,
}

impl Expect {
    pub fn name(self) -> &'static str {
        match self {
            Expect::Zeros => "zeros",
            Expect::MarkersGone => "markers gone",
        }
    }
}

/// IPA's sample positions as fractions of the verifiable range.
const FRACTIONS: [f64; 10] = [0.0, 0.01, 0.1, 0.25, 0.4, 0.5, 0.6, 0.75, 0.9, 0.99];
const SAMPLE_MAX: u64 = 1 << 20;
const SECTOR: usize = 512;

/// Markers planted on a device.
#[derive(Debug, Clone)]
pub struct Markers {
    path: PathBuf,
    seed: u64,
    /// `(offset, length)` in bytes, sorted, aligned.
    samples: Vec<(u64, usize)>,
}

/// The sample positions of a device of `size` bytes with `block`-byte logical blocks.
pub fn sample_positions(size: u64, block: u64) -> Vec<(u64, usize)> {
    let align = block.max(ALIGN as u64);
    let len = (size / 32).min(SAMPLE_MAX) / align * align;
    if len == 0 || size < 2 * len {
        return Vec::new();
    }
    let verifiable = size - len;
    let mut offsets: Vec<u64> = FRACTIONS
        .iter()
        .map(|f| ((verifiable as f64 * f) as u64) / align * align)
        .chain([verifiable / align * align])
        .collect();
    offsets.sort_unstable();
    // On small devices neighbouring fractions are closer than a sample: keep samples apart,
    // or a marker would overwrite part of the one before it.
    let mut kept: Vec<u64> = Vec::new();
    for o in offsets {
        if kept.last().is_none_or(|last| o >= last + len) {
            kept.push(o);
        }
    }
    kept.into_iter().map(|o| (o, len as usize)).collect()
}

impl Markers {
    fn fill(seed: u64, offset: u64, buf: &mut [u8]) {
        SmallRng::seed_from_u64(seed ^ offset.wrapping_mul(0x9e37_79b9_7f4a_7c15)).fill_bytes(buf);
    }

    /// Writes the markers to `disk`, makes them durable and reads them back from the device.
    pub fn plant(disk: WritableDisk) -> io::Result<Markers> {
        let (size, block) = (disk.len(), disk.sector_size());
        let path = disk.path().to_path_buf();
        let samples = sample_positions(size, block);
        if samples.is_empty() {
            return Err(io::Error::other(format!(
                "{size} bytes is too small to verify an erase by sampling"
            )));
        }
        let markers = Markers {
            path: path.clone(),
            seed: rand::rng().random(),
            samples,
        };
        let len = markers.samples[0].1;
        let mut buf = AlignedBuf::new(len);
        let mut writer = DiskWriter::new(disk);
        for &(offset, len) in &markers.samples {
            let data = buf.get_mut(len);
            Self::fill(markers.seed, offset, data);
            writer.write_at(data, offset)?;
        }
        writer.sync()?;
        drop(writer);
        // The positive control: the device holds the markers.
        let (file, direct) = open_direct(&path)?;
        let mut expected = vec![0u8; len];
        for &(offset, len) in &markers.samples {
            let data = buf.get_mut(len);
            read_uncached(&file, direct, data, offset)?;
            Self::fill(markers.seed, offset, &mut expected[..len]);
            if data != &expected[..len] {
                return Err(io::Error::other(format!(
                    "the marker written at offset {offset} did not read back: the device \
                     does not store what is written to it"
                )));
            }
        }
        Ok(markers)
    }

    pub fn samples(&self) -> &[(u64, usize)] {
        &self.samples
    }

    /// Reads the sampled positions back and checks them against `expect`.
    pub fn check(&self, expect: Expect) -> Result<Value, String> {
        let (file, direct) =
            open_direct(&self.path).map_err(|e| format!("opening for verification: {e}"))?;
        self.check_file(&file, direct, expect)
    }

    fn check_file(&self, file: &File, direct: bool, expect: Expect) -> Result<Value, String> {
        let len = self.samples[0].1;
        let mut buf = AlignedBuf::new(len);
        let mut marker = vec![0u8; len];
        let mut checked = 0u64;
        let mut all_zero = true;
        for &(offset, len) in &self.samples {
            let data = buf.get_mut(len);
            read_uncached(file, direct, data, offset)
                .map_err(|e| format!("reading back {len} bytes at offset {offset}: {e}"))?;
            Self::fill(self.seed, offset, &mut marker[..len]);
            let zero = data.iter().all(|b| *b == 0);
            all_zero &= zero;
            if expect == Expect::Zeros && !zero {
                let at = data.iter().position(|b| *b != 0).unwrap_or(0);
                let sector = at / SECTOR * SECTOR;
                let end = (sector + SECTOR).min(len);
                let what = if data[sector..end] == marker[sector..end] {
                    "still holds the data written before the erase"
                } else {
                    "is not zero"
                };
                return Err(format!(
                    "verification failed: the byte at offset {} {what}",
                    offset + at as u64
                ));
            }
            let left = data
                .chunks(SECTOR)
                .zip(marker.chunks(SECTOR))
                .position(|(d, m)| d == m);
            if let Some(sector) = left {
                return Err(format!(
                    "verification failed: the {SECTOR} bytes at offset {} still hold the data \
                     written there before the erase",
                    offset + (sector * SECTOR) as u64
                ));
            }
            checked += len as u64;
        }
        Ok(json!({
            "expected": expect.name(),
            "samples": self.samples.len(),
            "bytes_checked": checked,
            "reads_zeros": all_zero,
            "direct_io": direct,
            "ok": true,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::FileExt;

    #[test]
    fn positions_follow_ipa() {
        let s = sample_positions(1 << 30, 512);
        assert_eq!(s.len(), 11);
        assert!(s.iter().all(|(o, l)| o % 4096 == 0 && *l == 1 << 20));
        assert_eq!(s[0].0, 0);
        assert_eq!(s.last().unwrap().0, (1 << 30) - (1 << 20));
        let verifiable = (1u64 << 30) - (1 << 20);
        assert_eq!(s[5].0, verifiable / 2 / 4096 * 4096);
        // Small devices get smaller samples; tiny ones cannot be verified.
        let s = sample_positions(4 << 20, 4096);
        assert!(s.iter().all(|(_, l)| *l == 128 << 10));
        assert!(
            s.windows(2).all(|w| w[0].0 + w[0].1 as u64 <= w[1].0),
            "{s:?}"
        );
        assert!(sample_positions(64 << 10, 512).is_empty());
    }

    fn device(len: usize) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("disk");
        std::fs::write(&path, vec![0u8; len]).unwrap();
        (dir, path)
    }

    #[test]
    fn zeros_after_planting_markers() {
        let (_d, path) = device(8 << 20);
        let m = Markers::plant(WritableDisk::open_file(&path).unwrap()).unwrap();
        // Nothing erased yet: both checks fail, naming the data left.
        let err = m.check(Expect::Zeros).unwrap_err();
        assert!(err.contains("still holds the data"), "{err}");
        let err = m.check(Expect::MarkersGone).unwrap_err();
        assert!(err.contains("still hold the data"), "{err}");
        // "Erase": zeros everywhere.
        std::fs::write(&path, vec![0u8; 8 << 20]).unwrap();
        let v = m.check(Expect::Zeros).unwrap();
        assert_eq!(v["ok"], true);
        assert_eq!(v["reads_zeros"], true);
        assert_eq!(v["samples"], 9, "fractions closer than a sample merge");
    }

    #[test]
    fn markers_gone_accepts_indeterminate_data_but_not_one_old_sector() {
        let (_d, path) = device(8 << 20);
        let m = Markers::plant(WritableDisk::open_file(&path).unwrap()).unwrap();
        // A crypto erase: everything becomes other random bytes.
        let mut noise = vec![0u8; 8 << 20];
        rand::rng().fill(noise.as_mut_slice());
        let f = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        f.write_all_at(&noise, 0).unwrap();
        let v = m.check(Expect::MarkersGone).unwrap();
        assert_eq!(v["reads_zeros"], false);
        assert!(m.check(Expect::Zeros).is_err());
        // One sector of one marker survives: caught.
        let (offset, _) = m.samples()[3];
        let mut sector = vec![0u8; 1024];
        Markers::fill(m.seed, offset, &mut sector);
        f.write_all_at(&sector[512..], offset + 512).unwrap();
        let err = m.check(Expect::MarkersGone).unwrap_err();
        assert!(err.contains(&format!("offset {}", offset + 512)), "{err}");
    }
}
