//! The device guard: which block devices destructive code may touch.

use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use nix::sys::stat::{major, minor};

/// Why the guard could not be set up (a bad `--allow-device`).
#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("--allow-device {}: {source}", path.display())]
    Stat {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("--allow-device {}: not a block device", .0.display())]
    NotBlockDevice(PathBuf),
}

/// The guard refused destructive work on a device.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "refusing to {action} {}: the agent is not running in a ramdisk and the device was not \
     allowed with --allow-device",
    device.display()
)]
pub struct NotAllowed {
    pub device: PathBuf,
    /// What was to be done, as a verb phrase ("erase", "write an image to").
    pub action: String,
}

/// Decides which block devices destructive code may touch.
///
/// Inside a ramdisk the machine is the agent's to wipe, as with IPA. Anywhere else (a
/// developer's workstation, a CI runner) only the devices named with `--allow-device` and
/// their partitions are touched or even listed, so `/dev/vda` of the machine the agent runs
/// on can never become a cleaning or deploy target by accident.
#[derive(Debug, Clone)]
pub struct DeviceGuard {
    in_ramdisk: bool,
    /// Device numbers (`st_rdev`) of the explicitly allowed whole devices. Numbers, not
    /// paths: `/dev/loop7`, a `/dev/disk/by-id` link and a partition all resolve to them.
    allowed: Vec<(PathBuf, u64)>,
    /// Where sysfs is (tests point this at fixtures).
    sys_root: PathBuf,
}

impl DeviceGuard {
    /// A guard for this process: detects whether we run in a ramdisk and resolves every
    /// allowed path to its device number.
    pub fn detect(allowed_paths: &[PathBuf]) -> Result<Self, GuardError> {
        let mut allowed = Vec::new();
        for path in allowed_paths {
            let meta = std::fs::metadata(path).map_err(|source| GuardError::Stat {
                path: path.clone(),
                source,
            })?;
            if !meta.file_type().is_block_device() {
                return Err(GuardError::NotBlockDevice(path.clone()));
            }
            allowed.push((path.clone(), std::os::unix::fs::MetadataExt::rdev(&meta)));
        }
        Ok(DeviceGuard {
            in_ramdisk: running_in_ramdisk(),
            allowed,
            sys_root: PathBuf::from("/sys"),
        })
    }

    /// A guard with explicit facts, for tests and for callers that know better.
    pub fn new(
        in_ramdisk: bool,
        allowed: Vec<(PathBuf, u64)>,
        sys_root: impl Into<PathBuf>,
    ) -> Self {
        DeviceGuard {
            in_ramdisk,
            allowed,
            sys_root: sys_root.into(),
        }
    }

    pub fn in_ramdisk(&self) -> bool {
        self.in_ramdisk
    }

    pub fn sys_root(&self) -> &Path {
        &self.sys_root
    }

    /// Paths given with `--allow-device`, for logs.
    pub fn allowed_paths(&self) -> impl Iterator<Item = &Path> {
        self.allowed.iter().map(|(p, _)| p.as_path())
    }

    /// Whether the device with this number (or the disk it is a partition of) may be touched.
    pub fn allows_rdev(&self, rdev: u64) -> bool {
        if self.in_ramdisk {
            return true;
        }
        let parent = self.parent_disk_rdev(rdev);
        self.allowed
            .iter()
            .any(|(_, a)| *a == rdev || Some(*a) == parent)
    }

    /// Whether the block device at `path` may be touched.
    pub fn allows(&self, path: &Path) -> bool {
        if self.in_ramdisk {
            return true;
        }
        match std::fs::metadata(path) {
            Ok(meta) if meta.file_type().is_block_device() => {
                self.allows_rdev(std::os::unix::fs::MetadataExt::rdev(&meta))
            }
            _ => false,
        }
    }

    /// `Ok` if destructive `action` may run on `device`, else the error to report.
    pub fn check(&self, device: &Path, action: &str) -> Result<(), NotAllowed> {
        if self.allows(device) {
            Ok(())
        } else {
            Err(NotAllowed {
                device: device.to_path_buf(),
                action: action.to_string(),
            })
        }
    }

    /// For a partition, the device number of its disk (from `/sys/dev/block/M:m/..`).
    fn parent_disk_rdev(&self, rdev: u64) -> Option<u64> {
        let node = self
            .sys_root
            .join(format!("dev/block/{}:{}", major(rdev), minor(rdev)));
        if !node.join("partition").exists() {
            return None;
        }
        let parent = std::fs::canonicalize(&node).ok()?.parent()?.join("dev");
        let text = std::fs::read_to_string(parent).ok()?;
        let (maj, min) = text.trim().split_once(':')?;
        Some(nix::sys::stat::makedev(
            maj.parse().ok()?,
            min.parse().ok()?,
        ))
    }
}

/// Whether this process runs in a ramdisk the agent owns: the root filesystem is an
/// initramfs (`rootfs`, `tmpfs`, `ramfs`) and the process is not in a container.
///
/// Being PID 1 proves nothing: the agent as a container's entrypoint is PID 1 of its PID
/// namespace, and a `--privileged` container sees every disk of the host. Container
/// runtimes mark their containers ([`in_container`]); a ramdisk has no such mark.
pub fn running_in_ramdisk() -> bool {
    let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap_or_default();
    root_is_ram_filesystem(&mounts) && !in_container(std::path::Path::new("/"))
}

fn root_is_ram_filesystem(mounts: &str) -> bool {
    // The last mount on "/" is the one in effect.
    mounts
        .lines()
        .rev()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, target, fstype) = (f.next()?, f.next()?, f.next()?);
            (target == "/").then_some(fstype)
        })
        .next()
        .is_some_and(|fstype| matches!(fstype, "rootfs" | "tmpfs" | "ramfs"))
}

/// The marks container runtimes leave, under `root`: Docker's `/.dockerenv`, Podman's
/// `/run/.containerenv`, and the `container=` variable in PID 1's environment that
/// systemd-nspawn, LXC, Podman and systemd's own convention set. Unreadable files count as
/// no mark: the root-filesystem test still has to pass.
fn in_container(root: &std::path::Path) -> bool {
    if root.join(".dockerenv").exists() || root.join("run/.containerenv").exists() {
        return true;
    }
    std::fs::read(root.join("proc/1/environ"))
        .unwrap_or_default()
        .split(|b| *b == 0)
        .any(|var| var.starts_with(b"container="))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_filesystem_detection() {
        assert!(root_is_ram_filesystem(
            "rootfs / rootfs rw 0 0\nproc /proc proc rw 0 0\n"
        ));
        assert!(!root_is_ram_filesystem(
            "rootfs / rootfs rw 0 0\n/dev/vda / ext4 rw,relatime 0 0\n"
        ));
        assert!(!root_is_ram_filesystem(
            "/dev/vda / ext4 rw 0 0\ntmpfs /run tmpfs rw 0 0\n"
        ));
        assert!(!root_is_ram_filesystem(""));
    }

    #[test]
    fn container_marks_are_recognised() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("proc/1")).unwrap();
        std::fs::create_dir_all(root.join("run")).unwrap();
        std::fs::write(root.join("proc/1/environ"), b"HOME=/\0TERM=linux\0").unwrap();
        assert!(!in_container(root));
        std::fs::write(root.join("proc/1/environ"), b"HOME=/\0container=podman\0").unwrap();
        assert!(in_container(root));
        std::fs::write(root.join("proc/1/environ"), b"").unwrap();
        std::fs::write(root.join("run/.containerenv"), b"").unwrap();
        assert!(in_container(root));
        std::fs::remove_file(root.join("run/.containerenv")).unwrap();
        std::fs::write(root.join(".dockerenv"), b"").unwrap();
        assert!(in_container(root));
    }

    #[test]
    fn this_machine_is_not_a_ramdisk() {
        // The development and CI machines boot from a disk; if this fails, every other safety
        // assumption of the test suite is void.
        if std::path::Path::new("/dev/vda").exists() {
            assert!(!running_in_ramdisk());
        }
    }

    #[test]
    fn outside_ramdisk_only_allowed_devices_and_their_partitions() {
        let sys = tempfile::tempdir().unwrap();
        // /sys/dev/block/7:1 -> ../../devices/virtual/block/loop7/loop7p1
        let disk = sys.path().join("devices/virtual/block/loop7");
        std::fs::create_dir_all(disk.join("loop7p1")).unwrap();
        std::fs::write(disk.join("dev"), "7:0\n").unwrap();
        std::fs::write(disk.join("loop7p1/partition"), "1\n").unwrap();
        std::fs::create_dir_all(sys.path().join("dev/block")).unwrap();
        std::os::unix::fs::symlink(disk.join("loop7p1"), sys.path().join("dev/block/7:1")).unwrap();

        let loop7 = nix::sys::stat::makedev(7, 0);
        let g = DeviceGuard::new(false, vec![("/dev/loop7".into(), loop7)], sys.path());
        assert!(g.allows_rdev(loop7));
        assert!(
            g.allows_rdev(nix::sys::stat::makedev(7, 1)),
            "partition of an allowed disk"
        );
        assert!(!g.allows_rdev(nix::sys::stat::makedev(254, 0)), "vda");
        assert!(!g.allows(Path::new("/dev/vda")));
        let err = g.check(Path::new("/dev/vda"), "erase").unwrap_err();
        assert!(err.to_string().contains("--allow-device"), "{err}");

        let ramdisk = DeviceGuard::new(true, vec![], sys.path());
        assert!(ramdisk.allows_rdev(nix::sys::stat::makedev(254, 0)));
    }
}
