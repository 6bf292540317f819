//! Test helpers: temporary disk files and the system tools that validate what we wrote.

use std::path::PathBuf;
use std::process::Command;

use blockdev::WritableDisk;

use crate::DiskTarget;

/// A sparse temporary file of `len` bytes opened as a target with `sector_size` sectors.
pub fn temp_disk(len: u64, sector_size: u64) -> (tempfile::NamedTempFile, DiskTarget) {
    let tmp = tempfile::NamedTempFile::new().unwrap();
    tmp.as_file().set_len(len).unwrap();
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .open(tmp.path())
        .unwrap();
    let target = DiskTarget::new(WritableDisk::from_file(file, tmp.path()).unwrap())
        .with_sector_size(sector_size);
    (tmp, target)
}

/// Where a system tool is, looking in the sbin directories too.
pub fn tool(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| PathBuf::from(d).join(name))
        .find(|p| p.is_file());
    found
}

/// Runs a validation tool: `None` (with a note) when it is not installed, else whether it
/// succeeded and what it printed.
pub fn run(name: &str, args: &[&str]) -> Option<(bool, String)> {
    let Some(exe) = tool(name) else {
        eprintln!("note: {name} not installed, skipping that check");
        return None;
    };
    let out = Command::new(exe).args(args).output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Some((out.status.success(), text))
}

/// `sgdisk -v` must find no problem.
pub fn assert_sgdisk_clean(path: &std::path::Path) {
    if let Some((ok, text)) = run("sgdisk", &["-v", path.to_str().unwrap()]) {
        assert!(
            ok && text.contains("No problems found"),
            "sgdisk -v:\n{text}"
        );
    }
}

/// Runs `f` on a thread with `stack` bytes of stack and fails the test if it has not returned
/// within 10 s, so that a regression to an endless loop fails instead of hanging CI (the
/// stuck thread is left behind; the test binary exits anyway).
pub fn within_10s<T: Send + 'static>(stack: usize, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .stack_size(stack)
        .spawn(move || {
            let _ = tx.send(f());
        })
        .unwrap();
    match rx.recv_timeout(std::time::Duration::from_secs(10)) {
        Ok(v) => v,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => panic!("did not return within 10 s"),
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => panic!("the guarded code panicked"),
    }
}

/// Raw access to a FAT32 made by [`crate::esp::format`], to damage it the way a hostile image
/// would. Directories looked up here must fit in their first cluster.
pub struct RawFat<'t> {
    target: &'t DiskTarget,
    base: u64,
    pub geometry: crate::fat_guard::Geometry,
}

impl<'t> RawFat<'t> {
    pub fn new(target: &'t DiskTarget, extent: blockdev::region::Extent) -> Self {
        let boot: [u8; 512] = target
            .read_vec(extent.offset, 512)
            .unwrap()
            .try_into()
            .unwrap();
        RawFat {
            target,
            base: extent.offset,
            geometry: crate::fat_guard::Geometry::parse(&boot).unwrap(),
        }
    }

    /// Where `cluster` starts, on the disk.
    pub fn cluster_offset(&self, cluster: u32) -> u64 {
        let g = &self.geometry;
        self.base + g.data_start + u64::from(cluster - 2) * g.cluster_size
    }

    /// The disk offset of the 32-byte entry of `path` (short 8.3 names, upper case).
    pub fn entry(&self, path: &str) -> u64 {
        let mut dir = self.geometry.root_cluster;
        let mut found = None;
        for part in path.split('/') {
            if let Some(e) = found {
                dir = self.first_cluster(e);
            }
            let (stem, ext) = part.split_once('.').unwrap_or((part, ""));
            let mut short = [b' '; 11];
            short[..stem.len()].copy_from_slice(stem.as_bytes());
            short[8..8 + ext.len()].copy_from_slice(ext.as_bytes());
            let start = self.cluster_offset(dir);
            let data = self
                .target
                .read_vec(start, self.geometry.cluster_size as usize)
                .unwrap();
            let at = data
                .chunks(32)
                .position(|e| e[..11] == short && e[11] != 0x0f)
                .unwrap_or_else(|| panic!("{part} not in the first cluster of its directory"));
            found = Some(start + at as u64 * 32);
        }
        found.unwrap()
    }

    pub fn first_cluster(&self, entry: u64) -> u32 {
        let e = self.target.read_vec(entry, 32).unwrap();
        u32::from(u16::from_le_bytes([e[20], e[21]])) << 16
            | u32::from(u16::from_le_bytes([e[26], e[27]]))
    }

    pub fn set_first_cluster(&self, entry: u64, cluster: u32) {
        let hi = ((cluster >> 16) as u16).to_le_bytes();
        let lo = (cluster as u16).to_le_bytes();
        self.target.write_all_at(&hi, entry + 20).unwrap();
        self.target.write_all_at(&lo, entry + 26).unwrap();
    }

    pub fn set_size(&self, entry: u64, size: u32) {
        self.target
            .write_all_at(&size.to_le_bytes(), entry + 28)
            .unwrap();
    }

    pub fn fat(&self, cluster: u32) -> u32 {
        let at = self.base + self.geometry.fat.start + u64::from(cluster) * 4;
        let b = self.target.read_vec(at, 4).unwrap();
        u32::from_le_bytes([b[0], b[1], b[2], b[3]]) & 0x0fff_ffff
    }

    /// Sets the FAT entry of `cluster` in every copy of the FAT.
    pub fn set_fat(&self, cluster: u32, next: u32) {
        let g = &self.geometry;
        for copy in 0..g.fats {
            let at = self.base + g.fat.start + copy * (g.fat.end - g.fat.start);
            self.target
                .write_all_at(&next.to_le_bytes(), at + u64::from(cluster) * 4)
                .unwrap();
        }
    }

    /// The clusters of the chain starting at `first`.
    pub fn chain(&self, first: u32) -> Vec<u32> {
        let mut out = vec![first];
        while let next @ 2..0x0fff_fff7 = self.fat(*out.last().unwrap()) {
            out.push(next);
        }
        out
    }

    /// Marks the free slots of `cluster` (a directory's) as deleted entries, so that fatfs
    /// reads on into the next cluster of the chain instead of stopping at an end marker.
    pub fn no_end_marker(&self, cluster: u32) {
        let start = self.cluster_offset(cluster);
        let mut data = self
            .target
            .read_vec(start, self.geometry.cluster_size as usize)
            .unwrap();
        for e in data.chunks_mut(32).filter(|e| e[0] == 0) {
            e[0] = 0xe5;
        }
        self.target.write_all_at(&data, start).unwrap();
    }
}
