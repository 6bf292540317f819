//! Reading a FAT filesystem that someone else made (the image's own ESP) with fatfs, without
//! letting it hang the agent, exhaust its memory or overflow its stack.
//!
//! Hazards, none of which fatfs 0.3 guards against:
//! * A cluster chain that loops (a FAT entry pointing back into its own chain): fatfs's
//!   `ClusterIterator` follows the FAT without bound, so listing the directory, or reading
//!   the file, never ends.
//! * A directory entry whose first cluster is one of its parents' (or 0, which fatfs opens as
//!   the root): the tree becomes infinite, and a recursive walk overflows the stack, which
//!   aborts the whole agent (`spawn_blocking` does not catch that).
//! * Two directories sharing clusters (cross-linked): the tree becomes a graph.
//! * Directories full of deleted entries, millions of them, which no entry count sees.
//!
//! fatfs does not tell which cluster an entry starts at, but every read it makes of a
//! directory or a file goes through [`GuardedIo`], and fatfs *enters* each cluster of a chain
//! by reading its first byte, once, in chain order (the FAT12/16 root region likewise). In a
//! valid filesystem chains end and no two share a cluster, so within one [`Tracker::begin`]
//! scope (a whole walk, or one file's lookup and read) no cluster is entered twice. Entering
//! one again is the defect, caught at its first repeat; the object that entered the cluster
//! first tells which defect it is (a chain looping on itself, a directory linking back to a
//! parent, a cross-link). Reading the FAT ourselves to validate chains would need the first
//! clusters fatfs keeps private, and a whole-FAT scan costs memory in proportion to the
//! partition. Every byte read also counts against one budget for the whole inspection, the
//! backstop for what the rule above does not see (deleted entries, FAT reads).
//!
//! A defect is recorded in the [`Tracker`] and the read fails; fatfs passes the error up and
//! the caller ([`crate::esp::Esp`]) turns the recorded defect into its error. Every later read
//! fails too, so nothing fatfs does after the first failure gets past the guard.

use std::cell::RefCell;
use std::collections::HashMap;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::rc::Rc;

use crate::PartitionIo;

/// A structural defect of the filesystem: it cannot be read as a tree.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Defect {
    #[error("the cluster chain of {} loops back on itself", shown(.0))]
    ChainLoop(String),
    #[error(
        "the directory {dir} links back to {}, one of its parents",
        shown(parent)
    )]
    DirectoryLoop { dir: String, parent: String },
    #[error(
        "{} and {} share cluster {cluster} (cross-linked)",
        shown(first),
        shown(second)
    )]
    CrossLinked {
        first: String,
        second: String,
        cluster: u64,
    },
}

/// A bound of the inspection that the filesystem goes beyond (see [`crate::esp::Limits`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Limit {
    #[error("its directories nest more than {max} levels deep (at {path})")]
    TooDeep { path: String, max: usize },
    #[error("it holds more than {0} files and directories")]
    TooManyEntries(usize),
    #[error("inspecting it takes more than {0} bytes of reads")]
    ReadBudget(u64),
    #[error("{path} declares {size} bytes, more than the {max} bytes the agent reads from an ESP")]
    FileTooLarge { path: String, size: u64, max: u64 },
}

/// Why the guard stopped fatfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stop {
    Corrupt(Defect),
    Limit(Limit),
}

/// How a path shows in a message: the root has no name of its own.
fn shown(path: &str) -> &str {
    if path.is_empty() {
        "the root directory"
    } else {
        path
    }
}

/// Where things are in the partition, from the boot sector, as fatfs computes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Geometry {
    /// Bytes of the first FAT.
    pub fat: Range<u64>,
    pub fats: u64,
    /// The FAT12/16 root directory region (empty on FAT32, whose root is a cluster chain).
    pub root: Range<u64>,
    /// Where cluster 2, the first data cluster, starts.
    pub data_start: u64,
    pub cluster_size: u64,
    /// The root directory's first cluster (FAT32).
    pub root_cluster: u32,
}

/// The unit the FAT12/16 root region counts as; data clusters are numbered from 2.
const ROOT_REGION: u64 = 0;

impl Geometry {
    /// `None` for a boot sector fatfs would not have mounted (zero sizes).
    pub(crate) fn parse(boot: &[u8; 512]) -> Option<Self> {
        let u16_at = |o: usize| u64::from(u16::from_le_bytes([boot[o], boot[o + 1]]));
        let u32_at =
            |o: usize| u32::from_le_bytes([boot[o], boot[o + 1], boot[o + 2], boot[o + 3]]);
        let bytes_per_sector = u16_at(11);
        let sectors_per_cluster = u64::from(boot[13]);
        let reserved = u16_at(14);
        let fats = u64::from(boot[16]);
        let root_entries = u16_at(17);
        let per_fat = match u16_at(22) {
            0 => u64::from(u32_at(36)),
            n => n,
        };
        if bytes_per_sector == 0 || sectors_per_cluster == 0 {
            return None;
        }
        let fat_start = reserved * bytes_per_sector;
        let root_start = (reserved + fats * per_fat) * bytes_per_sector;
        let root_sectors = (root_entries * 32).div_ceil(bytes_per_sector);
        let data_start = root_start + root_sectors * bytes_per_sector;
        Some(Geometry {
            fat: fat_start..fat_start + per_fat * bytes_per_sector,
            fats,
            root: root_start..data_start,
            data_start,
            cluster_size: sectors_per_cluster * bytes_per_sector,
            root_cluster: u32_at(44),
        })
    }

    /// The unit fatfs enters with a read at partition offset `pos`, if it enters one.
    fn entered(&self, pos: u64) -> Option<u64> {
        if pos >= self.data_start {
            let rel = pos - self.data_start;
            rel.is_multiple_of(self.cluster_size)
                .then_some(rel / self.cluster_size + 2)
        } else if pos == self.root.start && !self.root.is_empty() {
            Some(ROOT_REGION)
        } else {
            None
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Dir,
    File,
}

/// What fatfs has read so far, shared between [`GuardedIo`] and its user.
#[derive(Debug)]
pub(crate) struct Tracker {
    geometry: Option<Geometry>,
    budget: u64,
    spent: u64,
    /// The directories and files read in this scope, by `/`-separated path; the last one is
    /// what fatfs reads now.
    objects: Vec<(String, Kind)>,
    /// Which of `objects` entered each unit first.
    owners: HashMap<u64, usize>,
    stop: Option<Stop>,
}

impl Tracker {
    pub(crate) fn new(budget: u64) -> Rc<RefCell<Self>> {
        Rc::new(RefCell::new(Tracker {
            geometry: None,
            budget,
            spent: 0,
            objects: Vec::new(),
            owners: HashMap::new(),
            stop: None,
        }))
    }

    /// Starts watching clusters, once the boot sector has been read.
    pub(crate) fn set_geometry(&mut self, geometry: Geometry) {
        self.geometry = Some(geometry);
    }

    /// A new scope: clusters entered before no longer count.
    pub(crate) fn begin(&mut self) {
        self.objects.clear();
        self.owners.clear();
    }

    /// fatfs is about to read the directory or file at `path` for us.
    pub(crate) fn reading(&mut self, path: &str, kind: Kind) {
        self.objects.push((path.to_string(), kind));
    }

    /// What stopped fatfs, if the guard did.
    pub(crate) fn stopped(&self) -> Option<Stop> {
        self.stop.clone()
    }

    /// Stops all reading from now on: the walk hit one of its own limits.
    pub(crate) fn stop(&mut self, limit: Limit) -> Stop {
        let stop = Stop::Limit(limit);
        self.stop = Some(stop.clone());
        stop
    }

    /// Accounts for a read of `len` bytes at partition offset `pos`.
    fn check_read(&mut self, pos: u64, len: usize) -> io::Result<()> {
        if self.stop.is_none() {
            self.spent = self.spent.saturating_add(len as u64);
            if self.spent > self.budget {
                self.stop = Some(Stop::Limit(Limit::ReadBudget(self.budget)));
            } else if let Some(unit) = self.geometry.as_ref().and_then(|g| g.entered(pos)) {
                self.enter(unit);
            }
        }
        match &self.stop {
            None => Ok(()),
            Some(Stop::Corrupt(d)) => Err(io::Error::new(io::ErrorKind::InvalidData, d.clone())),
            Some(Stop::Limit(l)) => Err(io::Error::other(l.clone())),
        }
    }

    fn enter(&mut self, unit: u64) {
        // Reads before the first `reading` (mounting) are not part of any object.
        let Some(current) = self.objects.len().checked_sub(1) else {
            return;
        };
        let Some(&owner) = self.owners.get(&unit) else {
            self.owners.insert(unit, current);
            return;
        };
        let (path, kind) = &self.objects[current];
        let (owner_path, owner_kind) = &self.objects[owner];
        let is_ancestor = owner_path.is_empty() || path.starts_with(&format!("{owner_path}/"));
        let defect = if owner == current || (owner_path == path && owner_kind == kind) {
            Defect::ChainLoop(path.clone())
        } else if *kind == Kind::Dir && *owner_kind == Kind::Dir && is_ancestor {
            Defect::DirectoryLoop {
                dir: path.clone(),
                parent: owner_path.clone(),
            }
        } else {
            Defect::CrossLinked {
                first: owner_path.clone(),
                second: path.clone(),
                cluster: unit,
            }
        };
        self.stop = Some(Stop::Corrupt(defect));
    }
}

/// The partition as fatfs sees it, every read checked by the shared [`Tracker`].
pub(crate) struct GuardedIo<'a> {
    inner: PartitionIo<'a>,
    tracker: Rc<RefCell<Tracker>>,
}

impl<'a> GuardedIo<'a> {
    pub(crate) fn new(inner: PartitionIo<'a>, tracker: Rc<RefCell<Tracker>>) -> Self {
        GuardedIo { inner, tracker }
    }
}

impl Read for GuardedIo<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.tracker
            .borrow_mut()
            .check_read(self.inner.position(), buf.len())?;
        self.inner.read(buf)
    }
}

impl Write for GuardedIo<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

impl Seek for GuardedIo<'_> {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        self.inner.seek(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A FAT16-like layout: 1 reserved sector, 2 FATs of 4 sectors, 512 root entries
    /// (32 sectors), clusters of 4 sectors.
    fn geometry() -> Geometry {
        let mut boot = [0u8; 512];
        boot[11..13].copy_from_slice(&512u16.to_le_bytes());
        boot[13] = 4;
        boot[14..16].copy_from_slice(&1u16.to_le_bytes());
        boot[16] = 2;
        boot[17..19].copy_from_slice(&512u16.to_le_bytes());
        boot[22..24].copy_from_slice(&4u16.to_le_bytes());
        Geometry::parse(&boot).unwrap()
    }

    fn tracker() -> Rc<RefCell<Tracker>> {
        let t = Tracker::new(1 << 20);
        t.borrow_mut().set_geometry(geometry());
        t
    }

    fn cluster(n: u64) -> u64 {
        let g = geometry();
        g.data_start + (n - 2) * g.cluster_size
    }

    #[test]
    fn geometry_as_fatfs_computes_it() {
        let g = geometry();
        assert_eq!(g.fat, 512..512 + 4 * 512);
        assert_eq!(g.root, 9 * 512..41 * 512);
        assert_eq!(g.data_start, 41 * 512);
        assert_eq!(g.cluster_size, 2048);
        assert_eq!(g.entered(g.root.start), Some(ROOT_REGION));
        assert_eq!(g.entered(g.root.start + 32), None);
        assert_eq!(g.entered(cluster(5)), Some(5));
        assert_eq!(g.entered(cluster(5) + 11), None);
        assert_eq!(g.entered(g.fat.start), None);
        assert_eq!(Geometry::parse(&[0; 512]), None);
    }

    #[test]
    fn reads_within_a_cluster_and_along_a_chain_pass() {
        let t = tracker();
        let mut t = t.borrow_mut();
        t.begin();
        t.reading("", Kind::Dir);
        for pos in [geometry().root.start, geometry().root.start + 11] {
            t.check_read(pos, 11).unwrap();
        }
        t.reading("EFI", Kind::Dir);
        for pos in [cluster(3), cluster(3) + 11, cluster(4), cluster(4) + 32] {
            t.check_read(pos, 11).unwrap();
        }
        // A new scope may read the same clusters again (a lookup after the walk).
        t.begin();
        t.reading("", Kind::Dir);
        t.check_read(geometry().root.start, 11).unwrap();
        t.reading("EFI", Kind::Dir);
        t.check_read(cluster(3), 11).unwrap();
        assert_eq!(t.stopped(), None);
    }

    #[test]
    fn entering_a_cluster_twice_names_the_defect_and_stops_every_read() {
        let t = tracker();
        let mut t = t.borrow_mut();
        t.begin();
        t.reading("", Kind::Dir);
        t.check_read(geometry().root.start, 11).unwrap();
        t.reading("EFI", Kind::Dir);
        t.check_read(cluster(3), 11).unwrap();
        t.reading("EFI/A", Kind::Dir);
        t.check_read(cluster(7), 11).unwrap();
        t.check_read(cluster(8), 11).unwrap();
        let err = t.check_read(cluster(7), 11).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert_eq!(
            t.stopped(),
            Some(Stop::Corrupt(Defect::ChainLoop("EFI/A".into())))
        );
        assert!(t.check_read(cluster(9), 11).is_err(), "sticky");

        for (owner_unit, expected) in [
            (
                3,
                Defect::DirectoryLoop {
                    dir: "EFI/B".into(),
                    parent: "EFI".into(),
                },
            ),
            (
                ROOT_REGION,
                Defect::DirectoryLoop {
                    dir: "EFI/B".into(),
                    parent: "".into(),
                },
            ),
            (
                7,
                Defect::CrossLinked {
                    first: "EFI/A".into(),
                    second: "EFI/B".into(),
                    cluster: 7,
                },
            ),
        ] {
            let t = tracker();
            let mut t = t.borrow_mut();
            t.begin();
            t.reading("", Kind::Dir);
            t.check_read(geometry().root.start, 11).unwrap();
            t.reading("EFI", Kind::Dir);
            t.check_read(cluster(3), 11).unwrap();
            t.reading("EFI/A", Kind::Dir);
            t.check_read(cluster(7), 11).unwrap();
            t.reading("EFI/B", Kind::Dir);
            let pos = if owner_unit == ROOT_REGION {
                geometry().root.start
            } else {
                cluster(owner_unit)
            };
            assert!(t.check_read(pos, 11).is_err());
            assert_eq!(t.stopped(), Some(Stop::Corrupt(expected)));
        }
    }

    #[test]
    fn the_budget_counts_every_byte() {
        let t = Tracker::new(100);
        let mut t = t.borrow_mut();
        t.check_read(0, 60).unwrap();
        t.check_read(60, 40).unwrap();
        let err = t.check_read(100, 1).unwrap_err();
        assert!(err.to_string().contains("more than 100 bytes"), "{err}");
        assert_eq!(t.stopped(), Some(Stop::Limit(Limit::ReadBudget(100))));
    }
}
