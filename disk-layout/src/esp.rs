//! The EFI system partition: formatting one (IPA's `mkfs -t vfat -n efi-part`) and reading
//! one from the raw partition bytes with fatfs (IPA mounts it), in particular finding the
//! boot loaders the way IPA's `_get_efi_bootloaders` does.
//!
//! The ESP read is the image's own, so it may be hostile: a looping cluster chain, a
//! directory that links back to its parent, a tree thousands of levels deep, a file that
//! declares 4 GiB. IPA leaves that to the kernel's vfat driver; here it would hang the
//! agent, overflow its stack (which aborts the whole process) or exhaust its memory. So
//! [`Esp`] reads under [`Limits`], through the guard of [`crate::fat_guard`], and every such
//! ESP ends in an [`EspError::Corrupt`] or [`EspError::OverLimit`] naming the partition and
//! the directory, which `install_bootloader` reports as a `CommandExecutionError`. Where a
//! limit refuses an ESP IPA would have accepted (deeper than [`Limits::max_depth`], larger
//! than [`Limits::max_entries`]), the step fails instead of registering a partial list.

use std::cell::RefCell;
use std::io::{self, Read, Write};
use std::rc::Rc;

use blockdev::region::Extent;
use fatfs::{FatType, FileSystem, FormatVolumeOptions, FsOptions};

pub use crate::fat_guard::{Defect, Limit};
use crate::fat_guard::{Geometry, GuardedIo, Kind, Stop, Tracker};
use crate::{DiskTarget, PartitionIo, MIB};

/// File names IPA treats as boot loaders or loader hints (`BOOTLOADERS_EFI`), compared in
/// lower case. Note that `shimx64.efi` and `grubx64.efi` are not among them: distributions
/// that ship those name them in a `BOOTX64.CSV`.
pub const BOOTLOADERS_EFI: [&str; 13] = [
    "bootx64.csv",
    "bootaa64.csv",
    "boot.csv",
    "bootia32.efi",
    "bootx64.efi",
    "bootia64.efi",
    "bootarm.efi",
    "bootaa64.efi",
    "bootriscv32.efi",
    "bootriscv64.efi",
    "bootriscv128.efi",
    "grubaa64.efi",
    "winload.efi",
];

#[derive(Debug, thiserror::Error)]
pub enum EspError {
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("label {0:?} is longer than the 11 bytes FAT allows")]
    Label(String),
    #[error("the ESP on {esp} is corrupt: {defect}")]
    Corrupt { esp: String, defect: Defect },
    #[error("the ESP on {esp} is beyond what the agent inspects: {limit}")]
    OverLimit { esp: String, limit: Limit },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> EspError {
    let context = context.into();
    move |source| EspError::Io { context, source }
}

/// A random FAT volume ID (`mkfs.fat` derives one from the time).
pub fn random_volume_id() -> u32 {
    let b = uuid::Uuid::new_v4().into_bytes();
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// How `blkid` prints a FAT volume ID as the filesystem's `UUID`.
pub fn volume_id_text(id: u32) -> String {
    format!("{:04X}-{:04X}", id >> 16, id & 0xffff)
}

/// Formats `extent` of `target` as FAT (FAT32 when the partition is large enough for it,
/// as `mkfs.fat` chooses for an ESP of IPA's default 550 MiB) with `label`, and returns the
/// volume ID.
pub fn format(target: &DiskTarget, extent: Extent, label: &str) -> Result<u32, EspError> {
    if label.len() > 11 {
        return Err(EspError::Label(label.into()));
    }
    let mut name = [b' '; 11];
    name[..label.len()].copy_from_slice(label.as_bytes());
    let id = random_volume_id();
    let ss = target.sector_size();
    let mut options = FormatVolumeOptions::new()
        .bytes_per_sector(ss as u16)
        .volume_id(id)
        .volume_label(name);
    // FAT32 needs 65525 clusters; clusters are at least a sector.
    if extent.len >= 65536 * ss.max(512) + 4 * MIB {
        options = options.fat_type(FatType::Fat32);
    }
    let device = target.path().display().to_string();
    // The first MiB is zeroed so that no signature of what was there before (a GPT backup,
    // an old filesystem) survives among the new filesystem's reserved sectors.
    target
        .zero(extent.offset, extent.len.min(MIB))
        .map_err(io_err(format!("clearing the ESP on {device}")))?;
    fatfs::format_volume(PartitionIo::new(target, extent), options)
        .map_err(io_err(format!("formatting the ESP on {device}")))?;
    Ok(id)
}

/// A FAT filesystem on a partition of the target.
pub type Fat<'a> = FileSystem<PartitionIo<'a>>;

/// Opens the FAT filesystem in `extent` for writing (tests and image preparation).
pub fn open(target: &DiskTarget, extent: Extent) -> Result<Fat<'_>, EspError> {
    FileSystem::new(PartitionIo::new(target, extent), FsOptions::new()).map_err(io_err(format!(
        "opening the FAT filesystem at byte {} of {}",
        extent.offset,
        target.path().display()
    )))
}

/// The bounds of an ESP inspection. Each is far above what a real ESP needs, and each turns
/// a hostile ESP into an error within about a second.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Directories below the root. Loaders live at depth 2 (`EFI/BOOT`, `EFI/<vendor>`); the
    /// deepest real trees are Windows' (`EFI/Microsoft/Boot/Fonts`, `.../en-US`: depth 4).
    pub max_depth: usize,
    /// Files and directories in the whole tree; a Windows ESP, the largest seen, has a few
    /// hundred.
    pub max_entries: usize,
    /// Bytes read through fatfs for one [`Esp`], directories (deleted entries included), FAT
    /// entries and files together. A real ESP's directories are some KiB; fatfs reads an
    /// entry in a dozen small reads, so 16 MiB of entries is about a second of work.
    pub read_budget: u64,
    /// Bytes of one file read into memory. The agent reads only `BOOT*.CSV` hints, one line
    /// of UTF-16.
    pub max_file: u64,
}

impl Limits {
    pub const ESP: Limits = Limits {
        max_depth: 16,
        max_entries: 10_000,
        read_budget: 16 * MIB,
        max_file: MIB,
    };
}

/// The ESP of an image, read-only and read under [`Limits`], for finding its boot loaders.
/// See [`crate::fat_guard`] for what a hostile one could do otherwise.
pub struct Esp<'a> {
    fs: FileSystem<GuardedIo<'a>>,
    tracker: Rc<RefCell<Tracker>>,
    limits: Limits,
    /// The partition, for messages (`/dev/sda1`).
    name: String,
}

impl<'a> Esp<'a> {
    /// Opens the FAT filesystem in `extent` read-only: nothing on it can change. `name` is
    /// how errors call the partition.
    pub fn open(target: &'a DiskTarget, extent: Extent, name: &str) -> Result<Self, EspError> {
        Self::open_with(target, extent, name, Limits::ESP)
    }

    pub fn open_with(
        target: &'a DiskTarget,
        extent: Extent,
        name: &str,
        limits: Limits,
    ) -> Result<Self, EspError> {
        let context = || format!("reading the FAT filesystem of the ESP on {name}");
        let tracker = Tracker::new(limits.read_budget);
        let io = GuardedIo::new(PartitionIo::read_only(target, extent), tracker.clone());
        let fs = FileSystem::new(io, FsOptions::new()).map_err(io_err(context()))?;
        let mut boot = [0u8; 512];
        target
            .read_exact_at(&mut boot, extent.offset)
            .map_err(io_err(context()))?;
        let geometry = Geometry::parse(&boot)
            .filter(|g| g.cluster_size == u64::from(fs.cluster_size()))
            .ok_or_else(|| EspError::Io {
                context: context(),
                source: io::Error::new(
                    io::ErrorKind::InvalidData,
                    "boot sector does not match what fatfs read",
                ),
            })?;
        tracker.borrow_mut().set_geometry(geometry);
        Ok(Esp {
            fs,
            tracker,
            limits,
            name: name.to_string(),
        })
    }

    pub fn fat_type(&self) -> FatType {
        self.fs.fat_type()
    }

    /// The error for a failure of fatfs: the guard's reason when it stopped fatfs.
    fn failed(&self, source: io::Error, context: String) -> EspError {
        match self.tracker.borrow().stopped() {
            Some(stop) => self.stop_error(stop),
            None => EspError::Io { context, source },
        }
    }

    fn stop_error(&self, stop: Stop) -> EspError {
        let esp = self.name.clone();
        match stop {
            Stop::Corrupt(defect) => EspError::Corrupt { esp, defect },
            Stop::Limit(limit) => EspError::OverLimit { esp, limit },
        }
    }

    fn over(&self, limit: Limit) -> EspError {
        let stop = self.tracker.borrow_mut().stop(limit);
        self.stop_error(stop)
    }

    /// Every file's path (`/`-separated, relative to the root, as found on disk) in the
    /// order Python's `os.walk` visits a mounted FAT: a directory's files, then its
    /// subdirectories, each in directory order.
    pub fn walk(&self) -> Result<Vec<String>, EspError> {
        let context = || format!("listing the ESP on {}", self.name);
        // One scope for the whole walk: no two directories may share a cluster.
        self.tracker.borrow_mut().begin();
        let mut out = Vec::new();
        let mut entries = 0usize;
        // Depth-first with a stack of its own, not recursion: the agent's stack does not
        // grow with the tree.
        let mut stack = vec![(self.fs.root_dir(), String::new(), 0usize)];
        while let Some((dir, path, depth)) = stack.pop() {
            self.tracker.borrow_mut().reading(&path, Kind::Dir);
            let mut subdirs = Vec::new();
            for entry in dir.iter() {
                let entry = entry.map_err(|e| self.failed(e, context()))?;
                let name = entry.file_name();
                if name == "." || name == ".." {
                    continue;
                }
                // FAT forbids these in names; a crafted entry with them would make a path
                // that names another file ("EFI/BOOT/BOOTX64.EFI" in one entry of the root)
                // and that no lookup finds. Found by the esp_walk fuzz target.
                if name.is_empty() || name.contains(['/', '\\', '\0']) {
                    tracing::warn!(esp = %self.name, dir = %path, name = ?name,
                        "skipping an ESP entry whose name FAT does not allow");
                    continue;
                }
                entries += 1;
                if entries > self.limits.max_entries {
                    return Err(self.over(Limit::TooManyEntries(self.limits.max_entries)));
                }
                let full = if path.is_empty() {
                    name
                } else {
                    format!("{path}/{name}")
                };
                if entry.is_dir() {
                    if depth + 1 > self.limits.max_depth {
                        return Err(self.over(Limit::TooDeep {
                            path: full,
                            max: self.limits.max_depth,
                        }));
                    }
                    subdirs.push((entry.to_dir(), full, depth + 1));
                } else {
                    out.push(full);
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(out)
    }

    /// IPA's `_get_efi_bootloaders`: the first boot loader hint file (`*.csv`) found, alone;
    /// or else every boot loader of [`BOOTLOADERS_EFI`], in walk order.
    pub fn find_bootloaders(&self) -> Result<Vec<String>, EspError> {
        let mut found = Vec::new();
        for path in self.walk()? {
            let name = path.rsplit('/').next().unwrap_or(&path).to_lowercase();
            if !BOOTLOADERS_EFI.contains(&name.as_str()) {
                continue;
            }
            if path.to_lowercase().contains("csv") {
                return Ok(vec![path]);
            }
            found.push(path);
        }
        Ok(found)
    }

    /// The contents of the file at `path` (`/`-separated, names compared as FAT does,
    /// ignoring ASCII case), at most [`Limits::max_file`] bytes.
    pub fn read_file(&self, path: &str) -> Result<Vec<u8>, EspError> {
        let context = || format!("reading {path} on the ESP on {}", self.name);
        let problem = |kind: io::ErrorKind, what: &str| EspError::Io {
            context: context(),
            source: io::Error::new(kind, what.to_string()),
        };
        self.tracker.borrow_mut().begin();
        let mut parts = path.split('/').filter(|p| !p.is_empty()).peekable();
        let mut dir = self.fs.root_dir();
        let mut at = String::new();
        while let Some(part) = parts.next() {
            self.tracker.borrow_mut().reading(&at, Kind::Dir);
            let mut found = None;
            for entry in dir.iter() {
                let entry = entry.map_err(|e| self.failed(e, context()))?;
                if entry.file_name().eq_ignore_ascii_case(part)
                    || entry.short_file_name().eq_ignore_ascii_case(part)
                {
                    found = Some(entry);
                    break;
                }
            }
            let entry = found.ok_or_else(|| problem(io::ErrorKind::NotFound, "no such file"))?;
            at = if at.is_empty() {
                entry.file_name()
            } else {
                format!("{at}/{}", entry.file_name())
            };
            if parts.peek().is_some() {
                if !entry.is_dir() {
                    return Err(problem(io::ErrorKind::NotADirectory, "not a directory"));
                }
                dir = entry.to_dir();
                continue;
            }
            if entry.is_dir() {
                return Err(problem(io::ErrorKind::IsADirectory, "a directory"));
            }
            // The size the entry declares bounds what fatfs reads; refusing it before
            // reading keeps a 4 GiB declaration from allocating or reading anything.
            let size = entry.len();
            if size > self.limits.max_file {
                return Err(self.over(Limit::FileTooLarge {
                    path: at,
                    size,
                    max: self.limits.max_file,
                }));
            }
            self.tracker.borrow_mut().reading(&at, Kind::File);
            let mut data = Vec::with_capacity(size as usize);
            entry
                .to_file()
                .take(size)
                .read_to_end(&mut data)
                .map_err(|e| self.failed(e, context()))?;
            return Ok(data);
        }
        Err(problem(io::ErrorKind::InvalidInput, "an empty path"))
    }
}

/// Writes a file, creating its directories (for building ESPs in tests and tools).
pub fn write_file(fs: &Fat<'_>, path: &str, data: &[u8]) -> Result<(), EspError> {
    let mut dir = fs.root_dir();
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    let Some((file, dirs)) = parts.split_last() else {
        return Ok(());
    };
    for d in dirs {
        dir = dir
            .create_dir(d)
            .map_err(io_err(format!("creating {d} on the ESP")))?;
    }
    let mut f = dir
        .create_file(file)
        .map_err(io_err(format!("creating {path} on the ESP")))?;
    f.truncate().map_err(io_err(format!("truncating {path}")))?;
    f.write_all(data)
        .map_err(io_err(format!("writing {path} on the ESP")))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{run, temp_disk, within_10s, RawFat};

    fn esp_with(files: &[(&str, &[u8])]) -> (tempfile::NamedTempFile, DiskTarget, Extent) {
        let (tmp, target) = temp_disk(80 * MIB, 512);
        let extent = Extent::new(MIB, 64 * MIB);
        format(&target, extent, "efi-part").unwrap();
        {
            let fs = open(&target, extent).unwrap();
            for (path, data) in files {
                write_file(&fs, path, data).unwrap();
            }
            fs.unmount().unwrap();
        }
        (tmp, target, extent)
    }

    /// fsck checks what [`format`] wrote. Files are put in the root only: fatfs 0.3 writes
    /// long-name entries in front of a new directory's `.` and `..`, which fsck.vfat flags
    /// (Linux and firmware read such directories fine; only tests create directories).
    #[test]
    fn formatted_esp_is_fat32_and_fsck_clean() {
        let (_tmp, target, extent) = esp_with(&[("BOOTX64.EFI", b"MZ loader")]);
        let fs = Esp::open(&target, extent, "test").unwrap();
        assert_eq!(fs.fat_type(), FatType::Fat32);
        assert_eq!(fs.read_file("BOOTX64.EFI").unwrap(), b"MZ loader");
        drop(fs);
        let part = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(
            part.path(),
            target.read_vec(extent.offset, extent.len as usize).unwrap(),
        )
        .unwrap();
        let p = part.path().to_str().unwrap();
        if let Some((ok, text)) = run("fsck.vfat", &["-n", p]) {
            assert!(ok, "{text}");
        }
        if let Some((_, text)) = run("blkid", &["-p", "-o", "export", p]) {
            assert!(
                text.contains("TYPE=vfat") && text.contains("LABEL=efi-part"),
                "{text}"
            );
        }
        let id = crate::fs_id::probe(&blockdev::region::Region::new(target.file(), extent))
            .unwrap()
            .unwrap();
        assert_eq!(id.label.as_deref(), Some("efi-part"));
    }

    #[test]
    fn bootloaders_as_ipa_finds_them() {
        // A hint file wins, wherever it is in the walk.
        let (_t, target, extent) = esp_with(&[
            ("EFI/BOOT/BOOTX64.EFI", b"x"),
            ("EFI/debian/shimx64.efi", b"x"),
            ("EFI/debian/grubx64.efi", b"x"),
            ("EFI/debian/BOOTX64.CSV", b"x"),
        ]);
        let fs = Esp::open(&target, extent, "test").unwrap();
        assert_eq!(fs.find_bootloaders().unwrap(), ["EFI/debian/BOOTX64.CSV"]);
        assert_eq!(
            fs.walk().unwrap(),
            [
                "EFI/BOOT/BOOTX64.EFI",
                "EFI/debian/shimx64.efi",
                "EFI/debian/grubx64.efi",
                "EFI/debian/BOOTX64.CSV"
            ]
        );
        // Without one: every known loader; shim and grub alone are not found.
        let (_t, target, extent) = esp_with(&[
            ("EFI/debian/shimx64.efi", b"x"),
            ("EFI/BOOT/BOOTX64.EFI", b"x"),
            ("EFI/BOOT/bootaa64.efi", b"x"),
        ]);
        let fs = Esp::open(&target, extent, "test").unwrap();
        assert_eq!(
            fs.find_bootloaders().unwrap(),
            ["EFI/BOOT/BOOTX64.EFI", "EFI/BOOT/bootaa64.efi"]
        );
        let (_t, target, extent) = esp_with(&[("EFI/debian/shimx64.efi", b"x")]);
        let fs = Esp::open(&target, extent, "test").unwrap();
        assert!(fs.find_bootloaders().unwrap().is_empty());
    }

    type TestEsp = (tempfile::NamedTempFile, DiskTarget, Extent);

    /// Runs `f` on the ESP under [`within_10s`], on a 256 KiB stack: enough for a bounded
    /// walk, not for one that recurses with the tree.
    fn guarded<T: Send + 'static>(
        (tmp, target, extent): TestEsp,
        limits: Limits,
        f: impl FnOnce(&Esp<'_>) -> Result<T, EspError> + Send + 'static,
    ) -> Result<T, EspError> {
        within_10s(256 << 10, move || {
            let _tmp = tmp;
            let esp = Esp::open_with(&target, extent, "/dev/sdz1", limits)?;
            f(&esp)
        })
    }

    fn walk_guarded(esp: TestEsp) -> Result<Vec<String>, EspError> {
        guarded(esp, Limits::ESP, |esp| esp.walk())
    }

    fn corrupt(r: Result<impl std::fmt::Debug, EspError>) -> Defect {
        match r {
            Err(EspError::Corrupt { esp, defect }) => {
                assert_eq!(esp, "/dev/sdz1");
                defect
            }
            other => panic!("not a corrupt ESP: {other:?}"),
        }
    }

    fn over_limit(r: Result<impl std::fmt::Debug, EspError>) -> Limit {
        match r {
            Err(EspError::OverLimit { esp, limit }) => {
                assert_eq!(esp, "/dev/sdz1");
                limit
            }
            other => panic!("not over a limit: {other:?}"),
        }
    }

    /// A directory entry whose name holds a `/` (FAT forbids it; crafted by patching a short
    /// name) is skipped: it must not pass for a path into subdirectories, as the esp_walk
    /// fuzz target found ("////////.//" from a handful of such entries).
    #[test]
    fn entries_with_slashes_in_their_names_are_skipped() {
        let esp = esp_with(&[("ABC", b"x"), ("BOOTX64.EFI", b"MZ")]);
        {
            let raw = esp.1.read_vec(esp.2.offset, esp.2.len as usize).unwrap();
            let at = raw
                .windows(11)
                .position(|w| w == b"ABC        ")
                .expect("the short name entry");
            esp.1
                .write_all_at(b"EFI/BOOT/BO", esp.2.offset + at as u64)
                .unwrap();
        }
        let files = walk_guarded(esp).unwrap();
        assert_eq!(files, ["BOOTX64.EFI"], "the forged entry is not listed");
    }

    #[test]
    fn a_directory_whose_cluster_chain_loops_is_an_error_not_a_hang() {
        let esp = esp_with(&[("EFI/BOOT/BOOTX64.EFI", b"MZ")]);
        let raw = RawFat::new(&esp.1, esp.2);
        {
            // Enough entries for EFI/BOOT to take more than one cluster.
            let fs = open(&esp.1, esp.2).unwrap();
            for i in 0..raw.geometry.cluster_size / 32 {
                write_file(&fs, &format!("EFI/BOOT/F{i}.EFI"), b"x").unwrap();
            }
            fs.unmount().unwrap();
        }
        let first = raw.first_cluster(raw.entry("EFI/BOOT"));
        let chain = raw.chain(first);
        assert!(chain.len() >= 2, "{chain:?}");
        let last = *chain.last().unwrap();
        raw.no_end_marker(last);
        raw.set_fat(last, first);
        let r = walk_guarded(esp);
        let message = r.as_ref().unwrap_err().to_string();
        assert_eq!(corrupt(r), Defect::ChainLoop("EFI/BOOT".into()));
        assert_eq!(
            message,
            "the ESP on /dev/sdz1 is corrupt: the cluster chain of EFI/BOOT loops back on itself"
        );
    }

    #[test]
    fn a_directory_linking_back_to_a_parent_or_a_sibling_is_an_error() {
        let files: &[(&str, &[u8])] = &[
            ("EFI/BOOT/BOOTX64.EFI", b"MZ"),
            ("EFI/BOOT/LOOP/A.EFI", b"x"),
            ("EFI/OTHER/B.EFI", b"x"),
        ];
        // The parent EFI, the root by its cluster, and cluster 0 (fatfs opens the root).
        for (link, parent) in [("EFI", "EFI"), ("/", ""), ("0", "")] {
            let esp = esp_with(files);
            let raw = RawFat::new(&esp.1, esp.2);
            let cluster = match link {
                "/" => raw.geometry.root_cluster,
                "0" => 0,
                dir => raw.first_cluster(raw.entry(dir)),
            };
            raw.set_first_cluster(raw.entry("EFI/BOOT/LOOP"), cluster);
            let r = walk_guarded(esp);
            let message = r.as_ref().unwrap_err().to_string();
            assert_eq!(
                corrupt(r),
                Defect::DirectoryLoop {
                    dir: "EFI/BOOT/LOOP".into(),
                    parent: parent.into()
                },
                "{link}"
            );
            assert!(message.contains("links back to"), "{message}");
        }
        let esp = esp_with(files);
        let raw = RawFat::new(&esp.1, esp.2);
        let loop_dir = raw.first_cluster(raw.entry("EFI/BOOT/LOOP"));
        raw.set_first_cluster(raw.entry("EFI/OTHER"), loop_dir);
        assert_eq!(
            corrupt(walk_guarded(esp)),
            Defect::CrossLinked {
                first: "EFI/BOOT/LOOP".into(),
                second: "EFI/OTHER".into(),
                cluster: u64::from(loop_dir)
            }
        );
    }

    #[test]
    fn nesting_beyond_the_depth_limit_is_an_error_not_a_stack_overflow() {
        let nested = |depth: usize| format!("{}BOOTX64.EFI", "D/".repeat(depth));
        let path = nested(Limits::ESP.max_depth);
        assert_eq!(
            walk_guarded(esp_with(&[(&path, b"MZ")])).unwrap(),
            [path.as_str()]
        );
        // Deep enough that a walk recursing with the tree overflows the test's stack.
        let r = walk_guarded(esp_with(&[(&nested(1000), b"MZ")]));
        assert_eq!(
            over_limit(r),
            Limit::TooDeep {
                path: "D/"
                    .repeat(Limits::ESP.max_depth + 1)
                    .trim_end_matches('/')
                    .into(),
                max: Limits::ESP.max_depth
            }
        );
    }

    /// A file whose content is `count` directory entries (named `F0000000.EFI`...) or, with
    /// `deleted`, that many deleted ones, to graft as a directory with [`RawFat`].
    fn entries_blob(count: usize, deleted: bool) -> Vec<u8> {
        let mut blob = Vec::new();
        for i in 0..count {
            let mut e = [0u8; 32];
            e[..11].copy_from_slice(format!("F{i:07}EFI").as_bytes());
            e[11] = 0x20;
            if deleted {
                e[0] = 0xe5;
            }
            blob.extend(e);
        }
        blob.extend([0u8; 32]);
        blob
    }

    #[test]
    fn too_many_entries_or_reads_are_an_error() {
        let max = Limits::ESP.max_entries;
        let blob = entries_blob(max, false);
        let esp = esp_with(&[("EFI/BIG/A.EFI", b"x"), ("BLOB.BIN", &blob)]);
        let raw = RawFat::new(&esp.1, esp.2);
        let blob_at = raw.first_cluster(raw.entry("BLOB.BIN"));
        raw.set_first_cluster(raw.entry("EFI/BIG"), blob_at);
        // The grafted entries alone reach the limit; EFI, EFI/BIG and BLOB.BIN go beyond it.
        assert_eq!(over_limit(walk_guarded(esp)), Limit::TooManyEntries(max));

        // A directory of deleted entries, which no count of entries sees.
        let blob = entries_blob(4096, true);
        let esp = esp_with(&[("EFI/BIG/A.EFI", b"x"), ("BLOB.BIN", &blob)]);
        let raw = RawFat::new(&esp.1, esp.2);
        let blob_at = raw.first_cluster(raw.entry("BLOB.BIN"));
        raw.set_first_cluster(raw.entry("EFI/BIG"), blob_at);
        let limits = Limits {
            read_budget: blob.len() as u64 / 2,
            ..Limits::ESP
        };
        let r = guarded(esp, limits, |esp| esp.walk());
        assert_eq!(over_limit(r), Limit::ReadBudget(limits.read_budget));
    }

    #[test]
    fn a_file_declaring_4_gib_is_refused_without_reading_it() {
        let esp = esp_with(&[("EFI/BOOT/BOOTX64.CSV", b"s\0h\0i\0m\0")]);
        let raw = RawFat::new(&esp.1, esp.2);
        let entry = raw.entry("EFI/BOOT/BOOTX64.CSV");
        let first = raw.first_cluster(entry);
        raw.set_size(entry, u32::MAX);
        raw.set_fat(first, first);
        let r = guarded(esp, Limits::ESP, |esp| {
            assert_eq!(esp.find_bootloaders()?, ["EFI/BOOT/BOOTX64.CSV"]);
            esp.read_file("EFI/BOOT/BOOTX64.CSV")
        });
        assert_eq!(
            over_limit(r),
            Limit::FileTooLarge {
                path: "EFI/BOOT/BOOTX64.CSV".into(),
                size: u64::from(u32::MAX),
                max: MIB
            }
        );
    }

    #[test]
    fn a_file_whose_cluster_chain_loops_is_an_error() {
        let esp = esp_with(&[("EFI/BOOT/BOOTX64.CSV", b"s\0h\0i\0m\0")]);
        let raw = RawFat::new(&esp.1, esp.2);
        let entry = raw.entry("EFI/BOOT/BOOTX64.CSV");
        let first = raw.first_cluster(entry);
        // Under the size limit, but more than the one cluster, which points at itself.
        raw.set_size(entry, 64 << 10);
        raw.set_fat(first, first);
        let r = guarded(esp, Limits::ESP, |esp| {
            esp.read_file("EFI/BOOT/bootx64.csv")
        });
        assert_eq!(corrupt(r), Defect::ChainLoop("EFI/BOOT/BOOTX64.CSV".into()));
    }
}
