//! The erase steps of the generic manager against real loop devices.
//!
//! Each test creates a temporary file, attaches it as a loop device (`losetup -f --show -P`)
//! and hands only that device to the manager through the guard. Nothing else is ever written:
//! the guard lists nothing but the allowed loop device, and the loop device is detached when
//! the test ends, even when it fails. The tests need root and util-linux and gdisk
//! (`sgdisk`); without them they say so and pass.

use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use blockdev::DeviceGuard;
use hardware_managers::generic::{GenericHardwareManager, GenericOptions};
use hardware_managers::{HardwareError, Managers, StepCall};
use ironic_protocol::Node;
use serde_json::{Map, Value};

const SECTOR: u64 = 512;
const MIB: u64 = 1 << 20;
const VMFS: &str = "AA31E02A-400F-11DB-9590-000C2911D1B8";

/// A loop device over a file, detached on drop (also when a test panics).
struct LoopDevice {
    path: PathBuf,
}

impl LoopDevice {
    /// The whole file, with partition scanning.
    fn attach(file: &Path) -> LoopDevice {
        Self::losetup(&["-P", path_str(file)])
    }

    /// `len` bytes at `offset` of the file: a partition made by hand, which works whether or
    /// not the kernel understands partition tables (some CI kernels have no partition
    /// support at all).
    fn attach_range(file: &Path, offset: u64, len: u64) -> LoopDevice {
        Self::losetup(&[
            "-o",
            &offset.to_string(),
            "--sizelimit",
            &len.to_string(),
            path_str(file),
        ])
    }

    fn losetup(args: &[&str]) -> LoopDevice {
        let mut all = vec!["-f", "--show"];
        all.extend_from_slice(args);
        let out = run("losetup", &all);
        // Owned (and so detached) before anything else can fail.
        let dev = LoopDevice {
            path: PathBuf::from(out.trim()),
        };
        assert!(
            dev.name().starts_with("loop"),
            "losetup gave {:?}",
            dev.path
        );
        dev
    }

    fn name(&self) -> String {
        self.path
            .file_name()
            .unwrap()
            .to_string_lossy()
            .into_owned()
    }

    /// Makes sure the kernel knows the partitions: kernels built without partition-table
    /// support (some CI VMs) scan nothing at `losetup -P`, but `partx -a` adds them.
    fn add_partitions(&self) {
        if self.kernel_partitions().is_empty() && installed("partx") {
            run("partx", &["-a", path_str(&self.path)]);
        }
    }

    /// Partitions the kernel lists for this device in sysfs.
    fn kernel_partitions(&self) -> Vec<String> {
        let dir = Path::new("/sys/block").join(self.name());
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .filter(|e| e.path().join("partition").exists())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    /// `(start, size)` in bytes of partition `n`, as the kernel scanned it.
    fn kernel_extent(&self, n: u32) -> (u64, u64) {
        let dir = Path::new("/sys/block")
            .join(self.name())
            .join(format!("{}p{n}", self.name()));
        let read = |f: &str| -> u64 {
            std::fs::read_to_string(dir.join(f))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        (read("start") * SECTOR, read("size") * SECTOR)
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        let status = Command::new("losetup").arg("-d").arg(&self.path).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!("could not detach {}: {status:?}", self.path.display());
        }
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().expect("temporary paths are UTF-8")
}

/// Runs a tool, panicking with its output when it fails; returns stdout.
fn run(tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    assert!(
        out.status.success(),
        "{tool} {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn installed(tool: &str) -> bool {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/sbin", "/usr/sbin"])
        .any(|dir| Path::new(dir).join(tool).is_file());
    found
}

/// Whether this machine can run the tests; says why not otherwise.
fn can_run() -> bool {
    // /proc/self belongs to the process's effective user.
    let root =
        std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
    if !root {
        eprintln!("loop device tests need root; skipping");
        return false;
    }
    let missing: Vec<&str> = [
        "losetup",
        "sgdisk",
        "mkfs.ext4",
        "mkswap",
        "blkid",
        "wipefs",
    ]
    .into_iter()
    .filter(|t| !installed(t))
    .collect();
    if !missing.is_empty() {
        eprintln!("missing {missing:?} (packages util-linux, gdisk, e2fsprogs); skipping");
        return false;
    }
    true
}

/// A temporary file of `len` random bytes (from the kernel: much faster than a generator in
/// a debug build).
fn random_file(dir: &Path, len: u64) -> PathBuf {
    let path = dir.join("disk.img");
    let mut urandom = File::open("/dev/urandom").unwrap().take(len);
    let mut file = File::create(&path).unwrap();
    assert_eq!(std::io::copy(&mut urandom, &mut file).unwrap(), len);
    path
}

fn read_all(path: &Path) -> Vec<u8> {
    let mut data = Vec::new();
    File::open(path).unwrap().read_to_end(&mut data).unwrap();
    data
}

fn managers(allowed: &[PathBuf]) -> Managers {
    let guard = DeviceGuard::detect(allowed).unwrap();
    let generic = GenericHardwareManager::new(guard, GenericOptions::default());
    Managers::new(vec![Box::new(generic)]).unwrap()
}

fn execute(m: &Managers, step: &str) -> Result<Value, HardwareError> {
    execute_for(m, step, &Node::default())
}

fn execute_for(m: &Managers, step: &str, node: &Node) -> Result<Value, HardwareError> {
    let args = Map::new();
    m.execute_step(step, &StepCall::new(node, &[], &args))
}

/// What IPA's `destroy_disk_metadata` may change on a device at `start` of `len` bytes with
/// 512-byte sectors: `dd` zeroes the first and last 33 sectors, `sgdisk -Z` the first 34
/// (MBR, GPT header, 128 entries) and the last 33; the magic bytes `wipefs` erases lie inside
/// those for the filesystems used here.
fn ipa_ranges(start: u64, len: u64) -> [(u64, u64); 2] {
    [
        (start, start + 34 * SECTOR),
        (start + len - 33 * SECTOR, start + len),
    ]
}

#[test]
fn erase_devices_metadata_wipes_only_what_ipa_wipes() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * MIB;
    let image = random_file(dir.path(), size);
    // Two partitions at fixed places, so the expected layout is known independently.
    let (p1_start, p1_len) = (2048 * SECTOR, 20 * MIB);
    let (p2_start, p2_len) = (p1_start + p1_len, 20 * MIB);
    run(
        "sgdisk",
        &[
            "-n",
            "1:2048:+20M",
            "-t",
            "1:8300",
            "-n",
            &format!("2:{}:+20M", p2_start / SECTOR),
            "-t",
            "2:8200",
            path_str(&image),
        ],
    );
    {
        let p1 = LoopDevice::attach_range(&image, p1_start, p1_len);
        run("mkfs.ext4", &["-q", "-F", path_str(&p1.path)]);
        assert!(run("wipefs", &["-n", path_str(&p1.path)]).contains("ext4"));
        let p2 = LoopDevice::attach_range(&image, p2_start, p2_len);
        run("mkswap", &[path_str(&p2.path)]);
    }
    run("sync", &[]);
    let dev = LoopDevice::attach(&image);
    dev.add_partitions();
    let dev_name = dev.path.display().to_string();
    // Partition names as the kernel has them, or as the agent names partitions it finds
    // only in the table.
    let scanned = !dev.kernel_partitions().is_empty();
    let part = |n: u32| {
        if scanned {
            format!("{dev_name}p{n}")
        } else {
            format!("{dev_name} partition {n}")
        }
    };
    if scanned {
        assert_eq!(dev.kernel_extent(1), (p1_start, p1_len));
        assert_eq!(dev.kernel_extent(2), (p2_start, p2_len));
    } else {
        eprintln!("the kernel does not know the partitions; the agent must find them itself");
    }
    let before = read_all(&image);

    let m = managers(std::slice::from_ref(&dev.path));
    // Only the allowed device (and its partitions) is listed, never this machine's disks.
    let listed: Vec<String> = m
        .list_block_devices(true)
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    let mut expected = vec![dev_name.clone()];
    if scanned {
        expected.extend([part(1), part(2)]);
    }
    assert_eq!(listed, expected);

    let report = execute(&m, "erase_devices_metadata").unwrap();

    // The report, partitions first.
    let keys: Vec<&String> = report.as_object().unwrap().keys().collect();
    assert_eq!(keys, [&part(2), &part(1), &dev_name]);
    let kinds = |k: &str| -> Vec<String> {
        report[k]["signatures"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["kind"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(kinds(&part(2)), ["swap"]);
    assert_eq!(kinds(&part(1)), ["ext4"]);
    assert_eq!(kinds(&dev_name), ["PMBR", "gpt", "gpt"]);
    assert_eq!(report[part(1)]["signatures"][0]["offset"], p1_start + 0x438);

    // Nothing is found any more, and the kernel forgot the partitions.
    let blkid = Command::new("blkid")
        .args(["-p", path_str(&dev.path)])
        .output()
        .unwrap();
    assert_eq!(
        blkid.status.code(),
        Some(2),
        "blkid -p still finds {blkid:?}"
    );
    assert_eq!(run("wipefs", &["-n", path_str(&dev.path)]).trim(), "");
    assert!(
        dev.kernel_partitions().is_empty(),
        "{:?}",
        dev.kernel_partitions()
    );

    // Byte for byte: zeros in IPA's ranges, everything else as it was.
    let after = read_all(&image);
    assert_eq!(after.len(), before.len());
    let mut erased = Vec::new();
    erased.extend(ipa_ranges(0, size));
    erased.extend(ipa_ranges(p1_start, p1_len));
    erased.extend(ipa_ranges(p2_start, p2_len));
    erased.sort();
    let mut pos = 0u64;
    for (start, end) in erased {
        let kept = pos..start.max(pos);
        assert!(
            before[kept.start as usize..kept.end as usize]
                == after[kept.start as usize..kept.end as usize],
            "bytes changed outside the erased ranges, in {kept:?}"
        );
        let zeroed = &after[start as usize..end as usize];
        assert!(
            zeroed.iter().all(|b| *b == 0),
            "not all zero in the erased range {start}..{end}"
        );
        pos = pos.max(end);
    }
    assert!(
        before[pos as usize..] == after[pos as usize..],
        "bytes changed after {pos}"
    );
}

#[test]
fn a_vmfs_partition_stops_the_erase_before_anything_is_written() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = random_file(dir.path(), 16 * MIB);
    run(
        "sgdisk",
        &[
            "-n",
            "1:2048:+8M",
            "-t",
            &format!("1:{VMFS}"),
            path_str(&image),
        ],
    );
    let dev = LoopDevice::attach(&image);
    dev.add_partitions();
    let partitions = dev.kernel_partitions();
    let before = read_all(&image);
    let m = managers(std::slice::from_ref(&dev.path));
    for step in ["erase_devices_metadata", "erase_devices"] {
        match execute(&m, step) {
            Err(HardwareError::ProtectedDevice { device, what }) => {
                // The partition (`/dev/loopNp1`) or the disk.
                let named = device.to_string_lossy().into_owned();
                assert!(
                    named.starts_with(&dev.path.display().to_string()),
                    "{step}: names {named}"
                );
                assert!(what.contains("VMFS"), "{step}: {what}");
            }
            other => panic!("{step}: expected a protected device error, got {other:?}"),
        }
    }
    assert!(read_all(&image) == before, "the disk was written");
    assert_eq!(dev.kernel_partitions(), partitions);
}

#[test]
fn erase_devices_leaves_only_zeros() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = random_file(dir.path(), 16 * MIB);
    let dev = LoopDevice::attach(&image);
    let m = managers(std::slice::from_ref(&dev.path));
    let report = execute(&m, "erase_devices").unwrap();
    let r = &report[dev.path.display().to_string()];
    assert_eq!(r["method"], "overwrite");
    // A loop device takes neither ATA nor SCSI commands; discard is not enabled.
    let not_used: Vec<&str> = r["methods_not_used"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["method"].as_str().unwrap())
        .collect();
    assert_eq!(not_used, ["ata_security_erase", "scsi_sanitize"]);
    assert_eq!(r["bytes_written"], 2 * 16 * MIB);
    assert_eq!(r["verification"]["ok"], true);
    assert_eq!(r["direct_io"], true, "loop devices take O_DIRECT");
    let after = read_all(&image);
    assert_eq!(after.len() as u64, 16 * MIB);
    assert!(after.iter().all(|b| *b == 0), "non-zero bytes remain");
}

#[test]
fn a_device_the_guard_does_not_allow_is_neither_listed_nor_erased() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let image = random_file(dir.path(), 16 * MIB);
    run("sgdisk", &["-n", "1:2048:+8M", path_str(&image)]);
    let dev = LoopDevice::attach(&image);
    dev.add_partitions();
    let partitions = dev.kernel_partitions();
    let before = read_all(&image);
    let m = managers(&[]);
    if blockdev::running_in_ramdisk() {
        eprintln!("running in a ramdisk, where every disk is allowed; skipping");
        return;
    }
    let listed = m.list_block_devices(true).unwrap();
    assert!(listed.is_empty(), "listed {listed:?}");
    for step in ["erase_devices_metadata", "erase_devices"] {
        match execute(&m, step) {
            Err(HardwareError::DeviceNotAllowed(_)) => {}
            other => panic!("{step}: expected a refusal, got {other:?}"),
        }
    }
    assert!(read_all(&image) == before, "the disk was written");
    assert_eq!(dev.kernel_partitions(), partitions);
}

#[test]
fn erase_devices_by_verified_discard_when_enabled() {
    if !can_run() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let size = 64 * MIB;
    let image = random_file(dir.path(), size);
    let dev = LoopDevice::attach(&image);
    let discard_max = std::fs::read_to_string(
        Path::new("/sys/block")
            .join(dev.name())
            .join("queue/discard_max_bytes"),
    )
    .unwrap();
    assert_ne!(
        discard_max.trim(),
        "0",
        "loop devices over a file can discard"
    );
    let m = managers(std::slice::from_ref(&dev.path));
    let node: Node = serde_json::from_value(serde_json::json!({
        "driver_internal_info": {"agent_enable_discard_erase": true}
    }))
    .unwrap();
    let report = execute_for(&m, "erase_devices", &node).unwrap();
    let r = &report[dev.path.display().to_string()];
    // A loop device has no secure discard: the plain one, proven by the markers planted
    // first reading back as zeros.
    assert_eq!(r["method"], "discard", "{r}");
    assert_eq!(r["verification"]["ok"], true);
    assert_eq!(r["verification"]["expected"], "zeros");
    assert_eq!(r["verification"]["reads_zeros"], true);
    assert!(r["verification"]["samples"].as_u64().unwrap() >= 8);
    let after = read_all(&image);
    assert!(after.iter().all(|b| *b == 0), "non-zero bytes remain");
    // The file's blocks were punched out: nothing was written.
    let blocks = std::os::unix::fs::MetadataExt::blocks(&std::fs::metadata(&image).unwrap());
    assert!(blocks * 512 < size / 4, "{blocks} blocks still allocated");
}
