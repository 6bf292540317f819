//! Loop-device disks backed by temp files: the only block devices a test may write to.
//!
//! Hazards handled here:
//! - the device is always detached on Drop, also when the test panics;
//! - this machine's kernel has no partition-table parsers (`CONFIG_EFI_PARTITION` and
//!   `CONFIG_MSDOS_PARTITION` are off), so `losetup -P` and `BLKRRPART` never create
//!   `/dev/loopXpN`: partitions are registered with `partx -a` (BLKPG) after partitioning;
//! - snapshots read the backing file, which is what the loop driver writes to, after
//!   flushing the device's page cache.

use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::cmd;
use crate::testdir;

/// Logical sector size of loop devices.
pub const SECTOR: u64 = 512;

/// What a new backing file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    Zeros,
    /// Random bytes: any byte the agent changes shows up in a before/after comparison.
    Random,
}

/// One GPT partition, in 512-byte sectors, both ends inclusive (as `sgdisk -n` takes them).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionSpec {
    pub first_lba: u64,
    pub last_lba: u64,
    /// GPT type GUID, e.g. [`LINUX_FS`] or [`VMFS`].
    pub type_guid: String,
}

impl PartitionSpec {
    pub fn byte_offset(&self) -> u64 {
        self.first_lba * SECTOR
    }

    pub fn byte_len(&self) -> u64 {
        (self.last_lba - self.first_lba + 1) * SECTOR
    }
}

/// GPT type GUID "Linux filesystem data".
pub const LINUX_FS: &str = "0FC63DAF-8483-4772-8E79-3D69D8477DE4";
/// GPT type GUID "VMware VMFS": a partition IPA must refuse to wipe.
pub const VMFS: &str = "AA31E02A-400F-11DB-9590-000C2911D1B8";

pub struct LoopDisk {
    backing: PathBuf,
    device: PathBuf,
    size: u64,
    partitions: Vec<PartitionSpec>,
}

impl LoopDisk {
    /// Creates `dir/name` of `size` bytes (a multiple of 512) and attaches it.
    pub fn create(dir: &Path, name: &str, size: u64, fill: Fill) -> Result<LoopDisk> {
        if size == 0 || !size.is_multiple_of(SECTOR) {
            bail!("disk size {size} is not a positive multiple of {SECTOR}");
        }
        reap_stale();
        let backing = dir.join(name);
        write_backing(&backing, size, fill)
            .with_context(|| format!("creating backing file {}", backing.display()))?;
        let out = cmd::run(
            Command::new("losetup")
                .args(["-f", "--show", "-P"])
                .arg(&backing),
        )?;
        let device = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if !device.to_string_lossy().starts_with("/dev/loop") {
            bail!("losetup returned {device:?}, not a loop device");
        }
        Ok(LoopDisk {
            backing,
            device,
            size,
            partitions: Vec::new(),
        })
    }

    /// `/dev/loopN`.
    pub fn device(&self) -> &Path {
        &self.device
    }

    pub fn backing_file(&self) -> &Path {
        &self.backing
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn sectors(&self) -> u64 {
        self.size / SECTOR
    }

    /// The partitions created with [`LoopDisk::partition`], in order (number = index + 1).
    pub fn partitions(&self) -> &[PartitionSpec] {
        &self.partitions
    }

    /// `/dev/loopNpM`.
    pub fn partition_path(&self, number: usize) -> PathBuf {
        PathBuf::from(format!("{}p{number}", self.device.display()))
    }

    /// Writes a fresh GPT with `parts` (numbered from 1) and makes the kernel see them.
    pub fn partition(&mut self, parts: &[PartitionSpec]) -> Result<()> {
        let mut c = Command::new("sgdisk");
        c.arg("--clear");
        for (i, p) in parts.iter().enumerate() {
            let n = i + 1;
            c.arg(format!("--new={n}:{}:{}", p.first_lba, p.last_lba));
            c.arg(format!("--typecode={n}:{}", p.type_guid));
        }
        c.arg(&self.device);
        cmd::run(&mut c)?;
        self.partitions = parts.to_vec();
        // See the module comment: the kernel will not scan the table itself.
        cmd::run(Command::new("partx").arg("-a").arg(&self.device))?;
        for n in 1..=parts.len() {
            let path = self.partition_path(n);
            wait_for(&path, Duration::from_secs(5))?;
        }
        Ok(())
    }

    /// `mkfs.ext4` on partition `number`.
    pub fn mkfs_ext4(&self, number: usize) -> Result<()> {
        cmd::run(
            Command::new("mkfs.ext4")
                .args(["-q", "-F", "-L", "e2e-data"])
                .arg(self.partition_path(number)),
        )?;
        Ok(())
    }

    /// Flushes the device's page cache so the backing file holds everything written so far.
    pub fn flush(&self) -> Result<()> {
        for dev in std::iter::once(self.device.clone())
            .chain((1..=self.partitions.len()).map(|n| self.partition_path(n)))
        {
            if let Ok(f) = File::open(&dev) {
                f.sync_all()
                    .with_context(|| format!("flushing {}", dev.display()))?;
            }
        }
        Ok(())
    }

    /// `len` bytes at `offset`, as the loop driver has written them to the backing file.
    pub fn read_at(&self, offset: u64, len: u64) -> Result<Vec<u8>> {
        self.flush()?;
        let mut buf = vec![0u8; len as usize];
        File::open(&self.backing)
            .and_then(|f| f.read_exact_at(&mut buf, offset))
            .with_context(|| {
                format!(
                    "reading {len} bytes at {offset} of {}",
                    self.backing.display()
                )
            })?;
        Ok(buf)
    }

    /// Writes `data` at `offset` through the device (e.g. a previous tenant's bytes).
    pub fn write_at(&self, offset: u64, data: &[u8]) -> Result<()> {
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.device)
            .with_context(|| format!("opening {}", self.device.display()))?;
        f.write_all_at(data, offset)
            .and_then(|()| f.sync_all())
            .with_context(|| format!("writing at {offset} of {}", self.device.display()))?;
        Ok(())
    }

    /// The byte ranges of the backing file that hold data (`SEEK_DATA`/`SEEK_HOLE`): on a
    /// sparse disk, everything written so far, rounded out to filesystem blocks. Ranges
    /// zeroed with `BLKZEROOUT` may show up as holes.
    pub fn data_extents(&self) -> Result<Vec<std::ops::Range<u64>>> {
        use nix::unistd::{lseek, Whence};
        self.flush()?;
        let f = File::open(&self.backing)?;
        let fd = &f;
        let mut out = Vec::new();
        let mut at: i64 = 0;
        let end = self.size as i64;
        while at < end {
            let start = match lseek(fd, at, Whence::SeekData) {
                Ok(s) => s,
                // ENXIO: no data after `at`.
                Err(nix::errno::Errno::ENXIO) => break,
                Err(e) => return Err(e).context("lseek SEEK_DATA"),
            };
            let stop = lseek(fd, start, Whence::SeekHole).context("lseek SEEK_HOLE")?;
            out.push(start as u64..stop as u64);
            at = stop;
        }
        Ok(out)
    }

    /// The whole disk's bytes, as the loop driver has written them to the backing file.
    pub fn read_all(&self) -> Result<Vec<u8>> {
        self.flush()?;
        let mut buf = Vec::with_capacity(self.size as usize);
        File::open(&self.backing)
            .and_then(|mut f| f.read_to_end(&mut buf))
            .with_context(|| format!("reading {}", self.backing.display()))?;
        Ok(buf)
    }
}

impl Drop for LoopDisk {
    fn drop(&mut self) {
        let _ = Command::new("partx").arg("-d").arg(&self.device).output();
        match Command::new("losetup").arg("-d").arg(&self.device).output() {
            Ok(o) if o.status.success() => {}
            Ok(o) => eprintln!(
                "warning: losetup -d {} failed: {}",
                self.device.display(),
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => eprintln!("warning: losetup -d {}: {e}", self.device.display()),
        }
    }
}

fn write_backing(path: &Path, size: u64, fill: Fill) -> Result<()> {
    let mut f = File::create(path)?;
    match fill {
        Fill::Zeros => f.set_len(size)?,
        Fill::Random => {
            let mut urandom = File::open("/dev/urandom").context("opening /dev/urandom")?;
            let mut chunk = vec![0u8; 1 << 20];
            let mut left = size;
            while left > 0 {
                let n = left.min(chunk.len() as u64) as usize;
                urandom.read_exact(&mut chunk[..n])?;
                f.write_all(&chunk[..n])?;
                left -= n as u64;
            }
        }
    }
    f.sync_all()?;
    Ok(())
}

fn wait_for(path: &Path, timeout: Duration) -> Result<()> {
    let start = Instant::now();
    while !path.exists() {
        if start.elapsed() > timeout {
            bail!("{} did not appear within {timeout:?}", path.display());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Detaches loop devices whose backing file is in a harness temp dir of a dead process.
fn reap_stale() {
    let Ok(list) = cmd::stdout("losetup", &["-n", "-O", "NAME,BACK-FILE", "-l"]) else {
        return;
    };
    for line in list.lines() {
        let mut cols = line.split_whitespace();
        let (Some(dev), Some(back)) = (cols.next(), cols.next()) else {
            continue;
        };
        let Some(i) = back.find(&format!("/{}", testdir::PREFIX)) else {
            continue;
        };
        let rest = &back[i + 1 + testdir::PREFIX.len()..];
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !cmd::pid_alive(p)) {
            let _ = Command::new("partx").args(["-d", dev]).output();
            let _ = Command::new("losetup").args(["-d", dev]).output();
        }
    }
}
