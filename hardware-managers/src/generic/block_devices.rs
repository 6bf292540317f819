//! Disks and their partitions, from sysfs: what IPA gets from `lsblk` and udev, without either.
//!
//! Which devices count as disks follows IPA: RAM disks, zram, optical drives, floppies and
//! devices of size 0 are not; loop devices are not either (`lsblk` types them `loop`), except
//! a loop device the operator allowed explicitly with `--allow-device`, which is how tests and
//! developers hand the agent a disk. Outside a ramdisk only allowed devices are listed at all,
//! so the machine the agent runs on never shows up as something to clean or deploy to.

use std::collections::BTreeMap;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use ironic_protocol::BlockDevice;
use nix::sys::stat::makedev;

use blockdev::DeviceGuard;

use crate::disk::{Disk, Partition};
use crate::HardwareError;

/// Name prefixes of block devices that are never disks. `md*` (software RAID) and `dm-*`
/// (device mapper: LVM, multipath, dm-crypt) are skipped until RAID and multipath support
/// exist; their members are listed as the disks they are.
const NOT_DISKS: [&str; 7] = ["ram", "zram", "sr", "fd", "md", "dm-", "loop"];

/// The label of the virtual media device Ironic attaches, relative to `/dev`.
const VIRTUAL_MEDIA_LABEL: &str = "disk/by-label/ir-vfd-dev";

/// Lists block devices from a sysfs tree (`guard.sys_root()`) with device nodes under
/// `dev_root` (`/dev`; tests point both at fixtures).
pub struct BlockScanner<'a> {
    guard: &'a DeviceGuard,
    dev_root: PathBuf,
}

impl<'a> BlockScanner<'a> {
    pub fn new(guard: &'a DeviceGuard, dev_root: impl Into<PathBuf>) -> Self {
        BlockScanner {
            guard,
            dev_root: dev_root.into(),
        }
    }

    /// The disks, sorted by name, each with its partitions.
    pub fn disks(&self) -> Result<Vec<Disk>, HardwareError> {
        let block = self.guard.sys_root().join("block");
        let entries = std::fs::read_dir(&block)
            .map_err(|e| HardwareError::io(format!("listing {}", block.display()), e))?;
        let by_path = self.by_path_links();
        let mut disks = Vec::new();
        for entry in entries.flatten() {
            let kname = entry.file_name().to_string_lossy().into_owned();
            let dir = block.join(&kname);
            let Some(devno) = read_devno(&dir) else {
                continue;
            };
            if !self.is_candidate(&kname, devno) {
                continue;
            }
            // The per-path devices under NVMe native multipath (nvme0c0n1): the kernel makes
            // no device node for them and lsblk, hence IPA, never lists them; the multipath
            // head (nvme0n1) is the disk.
            if read_trimmed(&dir.join("hidden")).as_deref() == Some("1") {
                tracing::debug!(device = kname, "hidden block device (a multipath path)");
                continue;
            }
            let size = read_u64(&dir.join("size")).unwrap_or(0).saturating_mul(512);
            if size == 0 {
                tracing::debug!(device = kname, "skipping block device of size 0");
                continue;
            }
            disks.push(self.describe_disk(&kname, &dir, devno, size, by_path.as_ref()));
        }
        disks.sort_by(|a, b| a.kname.cmp(&b.kname));
        Ok(disks)
    }

    /// Whether `kname` is a disk we may list, by its name and the guard.
    fn is_candidate(&self, kname: &str, devno: (u64, u64)) -> bool {
        let rdev = makedev(devno.0, devno.1);
        let not_disk = NOT_DISKS.iter().find(|p| kname.starts_with(*p));
        if let Some(prefix) = not_disk {
            if *prefix != "loop" || !self.explicitly_allowed(rdev) {
                tracing::debug!(device = kname, "not a disk");
                return false;
            }
        }
        if !self.guard.in_ramdisk() && !self.guard.allows_rdev(rdev) {
            tracing::debug!(
                device = kname,
                "not in a ramdisk and not allowed with --allow-device: not listed"
            );
            return false;
        }
        true
    }

    /// Whether the operator named this very device with `--allow-device` (as opposed to the
    /// guard allowing everything because we run in a ramdisk).
    fn explicitly_allowed(&self, rdev: u64) -> bool {
        if !self.guard.in_ramdisk() {
            return self.guard.allows_rdev(rdev);
        }
        self.guard.allowed_paths().any(|p| {
            std::fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device() && m.rdev() == rdev)
        })
    }

    fn describe_disk(
        &self,
        kname: &str,
        dir: &Path,
        devno: (u64, u64),
        size: u64,
        by_path: Option<&BTreeMap<PathBuf, PathBuf>>,
    ) -> Disk {
        let path = self.dev_root.join(kname);
        let queue = dir.join("queue");
        let logical = read_u64(&queue.join("logical_block_size")).unwrap_or(512);
        let physical = read_u64(&queue.join("physical_block_size")).unwrap_or(logical);
        let device = dir.join("device");
        let wwid = read_trimmed(&dir.join("wwid")).or_else(|| read_trimmed(&device.join("wwid")));
        let wwn = wwid.as_deref().and_then(Wwn::from_wwid);
        let info = BlockDevice {
            name: path.to_string_lossy().into_owned(),
            model: read_trimmed(&device.join("model")).unwrap_or_default(),
            size,
            rotational: read_trimmed(&queue.join("rotational")).as_deref() == Some("1"),
            wwn: wwn.as_ref().map(|w| w.wwn.clone()),
            wwn_with_extension: wwn.as_ref().map(|w| w.with_extension.clone()),
            wwn_vendor_extension: wwn.as_ref().and_then(|w| w.vendor_extension.clone()),
            serial: serial(dir),
            vendor: read_trimmed(&device.join("vendor")),
            hctl: link_name(&device).filter(|n| is_hctl(n)),
            by_path: match by_path {
                Some(links) => canonical(&path).and_then(|c| links.get(&c).cloned()),
                None => self.by_path_from_sysfs(kname, dir),
            }
            .map(|p| p.to_string_lossy().into_owned()),
            logical_sectors: Some(logical),
            physical_sectors: Some(physical),
            tran: transport(kname, dir),
        };
        let mut partitions: Vec<Partition> = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join("partition").exists())
            .filter_map(|e| self.describe_partition(&e.file_name().to_string_lossy(), &e.path()))
            .collect();
        partitions.sort_by(|a, b| a.kname.cmp(&b.kname));
        let virtual_media = canonical(&self.dev_root.join(VIRTUAL_MEDIA_LABEL))
            .is_some_and(|vm| Some(vm) == canonical(&path));
        Disk {
            kname: kname.to_string(),
            path,
            devno,
            size,
            read_only: read_trimmed(&dir.join("ro")).as_deref() == Some("1"),
            removable: read_trimmed(&dir.join("removable")).as_deref() == Some("1"),
            virtual_media,
            logical_sector_size: logical,
            physical_sector_size: physical,
            holders: holders(dir),
            info,
            partitions,
        }
    }

    fn describe_partition(&self, kname: &str, dir: &Path) -> Option<Partition> {
        Some(Partition {
            kname: kname.to_string(),
            path: self.dev_root.join(kname),
            devno: read_devno(dir)?,
            number: read_u64(&dir.join("partition")).and_then(|n| u32::try_from(n).ok()),
            start: read_u64(&dir.join("start"))?.checked_mul(512)?,
            size: read_u64(&dir.join("size"))?.checked_mul(512)?,
            read_only: read_trimmed(&dir.join("ro")).as_deref() == Some("1"),
            holders: holders(dir),
        })
    }

    /// `/dev/disk/by-path` as `{device node: link}`; the first link in name order wins when
    /// several point at one device. `None` when there is no such directory (no udev, as in
    /// our ramdisk), as opposed to a device udev made no link for.
    fn by_path_links(&self) -> Option<BTreeMap<PathBuf, PathBuf>> {
        let dir = self.dev_root.join("disk/by-path");
        let mut links: Vec<PathBuf> = std::fs::read_dir(&dir)
            .ok()?
            .flatten()
            .map(|e| e.path())
            .collect();
        links.sort();
        let mut map = BTreeMap::new();
        for link in links {
            if let Some(target) = canonical(&link) {
                map.entry(target).or_insert(link);
            }
        }
        Some(map)
    }

    /// The `/dev/disk/by-path` name udev's `path_id` gives, from sysfs, for a machine
    /// without udev, so that `by_path` root device hints written for IPA's ramdisk still
    /// match. Only where the rule is simple and certain: a virtio disk is named after its
    /// PCI function (`pci-0000:00:04.0`), an NVMe namespace after its controller's PCI
    /// function and its namespace id (`pci-0000:3b:00.0-nvme-1`). ATA (port numbering
    /// differs between udev versions), SAS, FC and iSCSI paths get none rather than a guess.
    fn by_path_from_sysfs(&self, kname: &str, dir: &Path) -> Option<PathBuf> {
        let pci_name = |p: &Path| -> Option<String> {
            let name = p.file_name()?.to_str()?;
            looks_like_pci_address(name).then(|| name.to_string())
        };
        let id = if kname.starts_with("vd") {
            let device = canonical(&dir.join("device"))?;
            if !device.file_name()?.to_str()?.starts_with("virtio") {
                return None;
            }
            format!("pci-{}", pci_name(device.parent()?)?)
        } else if let Some((ctrl, _)) = nvme_namespace(kname) {
            // The controller named in the namespace's name, as udev finds it: the namespace's
            // own parent is the subsystem when native multipath is on (Debian's default).
            // sysfs places a controller at .../<pci function>/nvme/nvme<N>.
            let controller =
                canonical(&self.guard.sys_root().join(format!("class/nvme/nvme{ctrl}")))?;
            let pci = pci_name(controller.parent()?.parent()?)?;
            let nsid: u32 = read_trimmed(&dir.join("nsid"))?.parse().ok()?;
            format!("pci-{pci}-nvme-{nsid}")
        } else {
            return None;
        };
        Some(self.dev_root.join("disk/by-path").join(id))
    }
}

/// What to report for a list of disks: the disks, and with `include_partitions` each disk's
/// partitions right after it, as `lsblk` orders them.
pub fn to_block_devices(disks: &[Disk], include_partitions: bool) -> Vec<BlockDevice> {
    let mut list = Vec::new();
    for disk in disks {
        list.push(disk.info.clone());
        if include_partitions {
            list.extend(disk.partitions.iter().map(|p| BlockDevice {
                name: p.path.to_string_lossy().into_owned(),
                size: p.size,
                rotational: disk.info.rotational,
                logical_sectors: disk.info.logical_sectors,
                physical_sectors: disk.info.physical_sectors,
                ..BlockDevice::default()
            }));
        }
    }
    list
}

/// A WWN as udev presents it: NAA identifiers as `0x` hex, with the vendor extension of
/// 32-digit ones split off; EUI-64 and NVMe identifiers verbatim.
struct Wwn {
    wwn: String,
    with_extension: String,
    vendor_extension: Option<String>,
}

impl Wwn {
    fn from_wwid(wwid: &str) -> Option<Wwn> {
        let wwid = wwid.trim();
        if let Some(hex) = wwid.strip_prefix("naa.") {
            let hex = hex.to_ascii_lowercase();
            let (wwn, ext) = if hex.len() == 32 {
                (&hex[..16], Some(&hex[16..]))
            } else {
                (hex.as_str(), None)
            };
            return Some(Wwn {
                wwn: format!("0x{wwn}"),
                with_extension: format!("0x{hex}"),
                vendor_extension: ext.map(|e| format!("0x{e}")),
            });
        }
        // t10 vendor identifications are not world-wide names.
        if wwid.is_empty() || wwid.starts_with("t10.") {
            return None;
        }
        Some(Wwn {
            wwn: wwid.to_string(),
            with_extension: wwid.to_string(),
            vendor_extension: None,
        })
    }
}

/// The serial number: NVMe and virtio publish it, SCSI (and SATA through libata) in the unit
/// serial number VPD page.
fn serial(dir: &Path) -> Option<String> {
    let device = dir.join("device");
    read_trimmed(&device.join("serial"))
        .or_else(|| read_trimmed(&dir.join("serial")))
        .or_else(|| {
            let page = std::fs::read(device.join("vpd_pg80")).ok()?;
            let len = usize::from(*page.get(3)?);
            let text = String::from_utf8_lossy(page.get(4..4 + len)?)
                .trim()
                .to_string();
            (!text.is_empty()).then_some(text)
        })
}

/// The transport, as far as the sysfs path of the device shows it.
fn transport(kname: &str, dir: &Path) -> Option<String> {
    if kname.starts_with("nvme") {
        return Some("nvme".into());
    }
    // The device's path through the buses: `.../ata1/host0/target0:0:0/0:0:0:0`.
    let real = std::fs::canonicalize(dir.join("device"))
        .or_else(|_| std::fs::canonicalize(dir))
        .ok()?;
    let real = real.to_string_lossy();
    let tran = if real.contains("/usb") {
        "usb"
    } else if real.contains("/ata") {
        "sata"
    } else if real.contains("/rport-") {
        "fc"
    } else if real.contains("/session") {
        "iscsi"
    } else if real.contains("/end_device-") {
        "sas"
    } else if real.contains("/mmc") {
        "mmc"
    } else {
        return None;
    };
    Some(tran.into())
}

fn is_hctl(name: &str) -> bool {
    let parts: Vec<&str> = name.split(':').collect();
    parts.len() == 4
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()))
}

fn holders(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir.join("holders"))
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn read_devno(dir: &Path) -> Option<(u64, u64)> {
    let text = read_trimmed(&dir.join("dev"))?;
    let (major, minor) = text.split_once(':')?;
    Some((major.parse().ok()?, minor.parse().ok()?))
}

fn link_name(path: &Path) -> Option<String> {
    let target = std::fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

/// `nvme<controller>n<namespace>` (not a multipath path device `nvme0c1n1`, nor a partition).
fn nvme_namespace(kname: &str) -> Option<(u32, u32)> {
    let (ctrl, ns) = kname.strip_prefix("nvme")?.split_once('n')?;
    Some((ctrl.parse().ok()?, ns.parse().ok()?))
}

/// `dddd:bb:dd.f`, a PCI function's name in sysfs.
fn looks_like_pci_address(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 12 && b[4] == b':' && b[7] == b':' && b[10] == b'.'
}

fn canonical(path: &Path) -> Option<PathBuf> {
    std::fs::canonicalize(path).ok()
}

fn read_u64(path: &Path) -> Option<u64> {
    read_trimmed(path)?.parse().ok()
}

fn read_trimmed(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::fs;

    /// A sysfs snapshot: `/sys/block/<name>` with the files the scanner reads.
    pub struct SysFixture {
        pub root: tempfile::TempDir,
    }

    impl SysFixture {
        pub fn new() -> Self {
            let root = tempfile::tempdir().unwrap();
            fs::create_dir_all(root.path().join("sys/block")).unwrap();
            fs::create_dir_all(root.path().join("dev/disk/by-path")).unwrap();
            SysFixture { root }
        }

        pub fn sys(&self) -> PathBuf {
            self.root.path().join("sys")
        }

        pub fn dev(&self) -> PathBuf {
            self.root.path().join("dev")
        }

        fn write(&self, rel: &str, text: &str) {
            let p = self.sys().join(rel);
            fs::create_dir_all(p.parent().unwrap()).unwrap();
            fs::write(p, format!("{text}\n")).unwrap();
        }

        /// A disk of `sectors` 512-byte sectors; its device node is a regular file.
        pub fn disk(&self, name: &str, devno: &str, sectors: u64) -> &Self {
            let d = format!("block/{name}");
            self.write(&format!("{d}/dev"), devno);
            self.write(&format!("{d}/size"), &sectors.to_string());
            self.write(&format!("{d}/ro"), "0");
            self.write(&format!("{d}/removable"), "0");
            self.write(&format!("{d}/queue/rotational"), "0");
            self.write(&format!("{d}/queue/logical_block_size"), "512");
            self.write(&format!("{d}/queue/physical_block_size"), "4096");
            fs::create_dir_all(self.sys().join(format!("{d}/holders"))).unwrap();
            fs::write(self.dev().join(name), b"").unwrap();
            self
        }

        pub fn partition(
            &self,
            disk: &str,
            name: &str,
            devno: &str,
            n: u32,
            start: u64,
            sectors: u64,
        ) -> &Self {
            let d = format!("block/{disk}/{name}");
            self.write(&format!("{d}/dev"), devno);
            self.write(&format!("{d}/partition"), &n.to_string());
            self.write(&format!("{d}/start"), &start.to_string());
            self.write(&format!("{d}/size"), &sectors.to_string());
            self.write(&format!("{d}/ro"), "0");
            fs::write(self.dev().join(name), b"").unwrap();
            self
        }

        /// Makes `name` look like a SCSI disk at `hctl`.
        pub fn scsi(&self, name: &str, hctl: &str) {
            let dev = self.sys().join(format!(
                "devices/pci0000:00/0000:00:1f.2/ata1/host0/target0:0:0/{hctl}"
            ));
            fs::create_dir_all(&dev).unwrap();
            fs::write(dev.join("model"), "Samsung SSD 860 \n").unwrap();
            fs::write(dev.join("vendor"), "ATA     \n").unwrap();
            fs::write(dev.join("wwid"), "naa.5002538e40a1b2c3\n").unwrap();
            let mut vpd = vec![0u8, 0x80, 0, 8];
            vpd.extend_from_slice(b"S3Z1NB0K");
            fs::write(dev.join("vpd_pg80"), vpd).unwrap();
            std::os::unix::fs::symlink(&dev, self.sys().join(format!("block/{name}/device")))
                .unwrap();
        }
    }

    fn names(disks: &[Disk]) -> Vec<&str> {
        disks.iter().map(|d| d.kname.as_str()).collect()
    }

    #[test]
    fn by_path_from_sysfs_without_udev() {
        let fx = SysFixture::new();
        fs::remove_dir(fx.dev().join("disk/by-path")).unwrap();
        let link = |target: &Path, at: &str| {
            let at = fx.sys().join(at);
            fs::create_dir_all(at.parent().unwrap()).unwrap();
            std::os::unix::fs::symlink(target, at).unwrap();
        };
        // A virtio disk: its device is virtio1 on PCI function 0000:00:04.0.
        fx.disk("vda", "254:0", 4096);
        let virtio = fx.sys().join("devices/pci0000:00/0000:00:04.0/virtio1");
        fs::create_dir_all(&virtio).unwrap();
        link(&virtio, "block/vda/device");
        // An NVMe namespace behind native multipath: its parent is the subsystem; the
        // controller nvme0 sits on 0000:3b:00.0.
        fx.disk("nvme0n1", "259:0", 4096);
        fx.write("block/nvme0n1/nsid", "1");
        let subsys = fx.sys().join("devices/virtual/nvme-subsystem/nvme-subsys0");
        fs::create_dir_all(&subsys).unwrap();
        link(&subsys, "block/nvme0n1/device");
        let ctrl = fx
            .sys()
            .join("devices/pci0000:3a/0000:3a:00.0/0000:3b:00.0/nvme/nvme0");
        fs::create_dir_all(&ctrl).unwrap();
        link(&ctrl, "class/nvme/nvme0");
        // SATA: no guess.
        fx.disk("sda", "8:0", 4096);
        fx.scsi("sda", "0:0:0:0");

        let guard = DeviceGuard::new(true, vec![], fx.sys());
        let disks = BlockScanner::new(&guard, fx.dev()).disks().unwrap();
        let by_path: Vec<(&str, Option<String>)> = disks
            .iter()
            .map(|d| {
                (
                    d.kname.as_str(),
                    d.info.by_path.as_ref().map(|p| {
                        p.strip_prefix(&*fx.dev().to_string_lossy())
                            .unwrap()
                            .to_string()
                    }),
                )
            })
            .collect();
        assert_eq!(
            by_path,
            [
                (
                    "nvme0n1",
                    Some("/disk/by-path/pci-0000:3b:00.0-nvme-1".to_string())
                ),
                ("sda", None),
                ("vda", Some("/disk/by-path/pci-0000:00:04.0".to_string())),
            ]
        );

        // With udev's directory present, only its links count.
        fs::create_dir_all(fx.dev().join("disk/by-path")).unwrap();
        let disks = BlockScanner::new(&guard, fx.dev()).disks().unwrap();
        assert!(disks.iter().all(|d| d.info.by_path.is_none()));

        // A multipath path device is hidden and never a disk.
        fx.disk("nvme0c0n1", "259:1", 4096);
        fx.write("block/nvme0c0n1/hidden", "1");
        let disks = BlockScanner::new(&guard, fx.dev()).disks().unwrap();
        assert_eq!(names(&disks), ["nvme0n1", "sda", "vda"]);

        assert_eq!(nvme_namespace("nvme12n3"), Some((12, 3)));
        assert_eq!(nvme_namespace("nvme0c1n1"), None);
        assert_eq!(nvme_namespace("nvme0n1p1"), None);
    }

    #[test]
    fn ramdisk_lists_disks_like_ipa() {
        let fx = SysFixture::new();
        fx.disk("sda", "8:0", 2048)
            .partition("sda", "sda1", "8:1", 1, 2048, 1000)
            .partition("sda", "sda2", "8:2", 2, 4096, 500);
        fx.scsi("sda", "0:0:0:0");
        fx.disk("vda", "254:0", 4096);
        fx.disk("sr0", "11:0", 100);
        fx.disk("ram0", "1:0", 100);
        fx.disk("zram0", "252:0", 100);
        fx.disk("fd0", "2:0", 100);
        fx.disk("md0", "9:0", 100);
        fx.disk("dm-0", "253:0", 100);
        fx.disk("loop0", "7:0", 100);
        fx.disk("nvme0n1", "259:0", 0);
        std::os::unix::fs::symlink(
            fx.dev().join("sda"),
            fx.dev().join("disk/by-path/pci-0000:00:1f.2-ata-1"),
        )
        .unwrap();

        let guard = DeviceGuard::new(true, vec![], fx.sys());
        let disks = BlockScanner::new(&guard, fx.dev()).disks().unwrap();
        assert_eq!(names(&disks), ["sda", "vda"]);
        let sda = &disks[0];
        assert_eq!(sda.size, 2048 * 512);
        assert_eq!(sda.devno, (8, 0));
        assert_eq!(sda.logical_sector_size, 512);
        let parts: Vec<_> = sda
            .partitions
            .iter()
            .map(|p| (p.kname.as_str(), p.number, p.start, p.size))
            .collect();
        assert_eq!(
            parts,
            [
                ("sda1", Some(1), 2048 * 512, 1000 * 512),
                ("sda2", Some(2), 4096 * 512, 500 * 512)
            ]
        );
        let info = &sda.info;
        assert_eq!(info.name, fx.dev().join("sda").to_string_lossy());
        assert_eq!(info.model, "Samsung SSD 860");
        assert_eq!(info.vendor.as_deref(), Some("ATA"));
        assert_eq!(info.serial.as_deref(), Some("S3Z1NB0K"));
        assert_eq!(info.wwn.as_deref(), Some("0x5002538e40a1b2c3"));
        assert_eq!(info.hctl.as_deref(), Some("0:0:0:0"));
        assert_eq!(info.tran.as_deref(), Some("sata"));
        assert!(!info.rotational);
        assert_eq!(info.physical_sectors, Some(4096));
        assert_eq!(
            info.by_path.as_deref(),
            Some(
                fx.dev()
                    .join("disk/by-path/pci-0000:00:1f.2-ata-1")
                    .to_string_lossy()
                    .as_ref()
            )
        );
        assert_eq!(disks[1].info.hctl, None);
        assert!(!sda.virtual_media);

        let listed = to_block_devices(&disks, true);
        let listed: Vec<_> = listed
            .iter()
            .map(|d| {
                Path::new(&d.name)
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect();
        assert_eq!(listed, ["sda", "sda1", "sda2", "vda"]);
        assert_eq!(to_block_devices(&disks, false).len(), 2);
    }

    #[test]
    fn virtual_media_is_recognised_by_its_label() {
        let fx = SysFixture::new();
        fx.disk("sda", "8:0", 2048).disk("sdb", "8:16", 2880);
        fs::create_dir_all(fx.dev().join("disk/by-label")).unwrap();
        std::os::unix::fs::symlink("../../sdb", fx.dev().join("disk/by-label/ir-vfd-dev")).unwrap();
        let guard = DeviceGuard::new(true, vec![], fx.sys());
        let disks = BlockScanner::new(&guard, fx.dev()).disks().unwrap();
        let vm: Vec<_> = disks
            .iter()
            .map(|d| (d.kname.as_str(), d.virtual_media))
            .collect();
        assert_eq!(vm, [("sda", false), ("sdb", true)]);
    }

    #[test]
    fn outside_ramdisk_only_allowed_devices_including_a_loop_device() {
        let fx = SysFixture::new();
        fx.disk("vda", "254:0", 4096);
        fx.disk("loop3", "7:3", 8192);
        fx.disk("loop4", "7:4", 8192);
        let allowed = vec![(PathBuf::from("/dev/loop3"), makedev(7, 3))];
        let guard = DeviceGuard::new(false, allowed, fx.sys());
        let disks = BlockScanner::new(&guard, fx.dev()).disks().unwrap();
        assert_eq!(names(&disks), ["loop3"]);

        let nobody = DeviceGuard::new(false, vec![], fx.sys());
        assert!(BlockScanner::new(&nobody, fx.dev())
            .disks()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn this_machine_lists_nothing_without_allowed_devices() {
        // The real /sys of the development machine: its /dev/vda must never be listed.
        if blockdev::running_in_ramdisk() {
            return;
        }
        let guard = DeviceGuard::new(false, vec![], "/sys");
        let disks = BlockScanner::new(&guard, "/dev").disks().unwrap();
        assert!(disks.is_empty(), "{disks:?}");
    }

    #[test]
    fn wwn_forms() {
        let w = Wwn::from_wwid("naa.600508B1001C7F5AC2B3D4E5F6A7B8C9").unwrap();
        assert_eq!(w.wwn, "0x600508b1001c7f5a");
        assert_eq!(w.vendor_extension.as_deref(), Some("0xc2b3d4e5f6a7b8c9"));
        assert_eq!(w.with_extension, "0x600508b1001c7f5ac2b3d4e5f6a7b8c9");
        assert_eq!(
            Wwn::from_wwid("eui.0025388b71b1b0e1").unwrap().wwn,
            "eui.0025388b71b1b0e1"
        );
        assert!(Wwn::from_wwid("t10.ATA     QEMU HARDDISK").is_none());
    }
}
