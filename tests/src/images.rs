//! Test images built in a test's temp dir with the same tools an operator would use: a GPT
//! whole-disk image (ESP with a boot loader, root partition of random bytes), its qcow2 and
//! compressed versions, an ext4 partition image, a config drive as Ironic sends it, and qcow2
//! files with hostile headers.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{ensure, Context, Result};
use base64::Engine as _;

use crate::cmd;
use crate::loopdev::SECTOR;

/// GPT type GUID of an EFI system partition.
pub const ESP_TYPE: &str = "C12A7328-F81F-11D2-BA4B-00A0C93EC93B";
/// The boot loader the ESP of the whole-disk image carries (the removable-media path).
pub const BOOT_LOADER: &str = "EFI/BOOT/BOOTX64.EFI";

/// A partition of a test image, in 512-byte sectors, both ends inclusive.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    pub first_lba: u64,
    pub last_lba: u64,
}

impl Extent {
    pub fn offset(&self) -> u64 {
        self.first_lba * SECTOR
    }
    pub fn len(&self) -> u64 {
        (self.last_lba - self.first_lba + 1) * SECTOR
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// A raw GPT whole-disk image: 1 MiB of GPT and alignment, an ESP (FAT16 with
/// [`BOOT_LOADER`]), a root partition (half random bytes, half zeros) and the backup GPT.
#[derive(Debug, Clone)]
pub struct WholeDiskImage {
    pub path: PathBuf,
    pub len: u64,
    pub esp: Extent,
    pub root: Extent,
    /// The boot loader's bytes, as stored in the ESP.
    pub loader: Vec<u8>,
}

impl WholeDiskImage {
    /// Builds `dir/name` with an ESP of `esp_mib` and a root partition of `root_mib`.
    pub fn build(dir: &Path, name: &str, esp_mib: u64, root_mib: u64) -> Result<WholeDiskImage> {
        const MIB_SECTORS: u64 = (1 << 20) / SECTOR;
        let esp = Extent {
            first_lba: MIB_SECTORS,
            last_lba: MIB_SECTORS * (1 + esp_mib) - 1,
        };
        let root = Extent {
            first_lba: esp.last_lba + 1,
            last_lba: esp.last_lba + root_mib * MIB_SECTORS,
        };
        // One MiB after the last partition: room for the backup GPT (33 sectors).
        let len = (root.last_lba + 1 + MIB_SECTORS) * SECTOR;
        let path = dir.join(name);
        File::create(&path)?.set_len(len)?;
        cmd::run(
            Command::new("sgdisk")
                .arg("--clear")
                .arg(format!("--new=1:{}:{}", esp.first_lba, esp.last_lba))
                .arg(format!("--typecode=1:{ESP_TYPE}"))
                .arg("--change-name=1:EFI System")
                .arg(format!("--new=2:{}:{}", root.first_lba, root.last_lba))
                .arg(format!("--typecode=2:{}", crate::loopdev::LINUX_FS))
                .arg("--change-name=2:root")
                .arg(&path),
        )?;

        // The ESP: mkfs.vfat on a file, the boot loader put in with fatfs.
        let esp_file = dir.join(format!("{name}.esp"));
        File::create(&esp_file)?.set_len(esp.len())?;
        cmd::run(
            Command::new("mkfs.vfat")
                .args(["-F", "16", "-n", "ESP"])
                .arg(&esp_file),
        )?;
        let mut loader = b"MZ e2e test boot loader\n".to_vec();
        loader.extend(random_bytes(4096)?);
        put_fat_file(&esp_file, BOOT_LOADER, &loader)?;
        copy_into(&esp_file, &path, esp.offset())?;
        std::fs::remove_file(&esp_file)?;

        // The root partition: random bytes in its first half (the zeros in the second half
        // exercise sparse writing and compressed formats).
        let img = OpenOptions::new().write(true).open(&path)?;
        let half = root.len() / 2;
        let mut at = 0;
        while at < half {
            let n = (half - at).min(1 << 20);
            img.write_all_at(&random_bytes(n as usize)?, root.offset() + at)?;
            at += n;
        }
        img.sync_all()?;
        verify_gpt(&path)?;
        Ok(WholeDiskImage {
            path,
            len,
            esp,
            root,
            loader,
        })
    }
}

/// `sgdisk -v` finds no problem in `path` (an image file or a device).
pub fn verify_gpt(path: &Path) -> Result<()> {
    let out = cmd::stdout("sgdisk", &[std::ffi::OsStr::new("-v"), path.as_os_str()])?;
    ensure!(
        out.contains("No problems found"),
        "sgdisk -v {} reports problems:\n{out}",
        path.display()
    );
    Ok(())
}

/// Writes `data` at `path` (like `EFI/BOOT/BOOTX64.EFI`) inside the FAT filesystem image
/// `fs_image`, creating directories.
pub fn put_fat_file(fs_image: &Path, path: &str, data: &[u8]) -> Result<()> {
    let file = OpenOptions::new().read(true).write(true).open(fs_image)?;
    let fs = fatfs::FileSystem::new(file, fatfs::FsOptions::new())
        .with_context(|| format!("opening the FAT filesystem in {}", fs_image.display()))?;
    {
        let mut dir = fs.root_dir();
        let mut parts: Vec<&str> = path.split('/').collect();
        let name = parts.pop().context("empty path")?;
        for p in parts {
            dir = match dir.open_dir(p) {
                Ok(d) => d,
                Err(_) => dir.create_dir(p)?,
            };
        }
        let mut f = dir.create_file(name)?;
        f.truncate()?;
        f.write_all(data)?;
        f.flush()?;
    }
    fs.unmount()?;
    Ok(())
}

/// Copies the whole of `src` into `dst` at byte `offset`.
pub fn copy_into(src: &Path, dst: &Path, offset: u64) -> Result<()> {
    let mut from = File::open(src)?;
    let to = OpenOptions::new().write(true).open(dst)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = offset;
    loop {
        let n = from.read(&mut buf)?;
        if n == 0 {
            break;
        }
        to.write_all_at(&buf[..n], at)?;
        at += n as u64;
    }
    to.sync_all()?;
    Ok(())
}

/// `n` bytes from /dev/urandom.
pub fn random_bytes(n: usize) -> Result<Vec<u8>> {
    let mut buf = vec![0u8; n];
    File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf)
}

/// A random version-4 UUID, lower case.
pub fn random_uuid() -> Result<String> {
    let mut b = random_bytes(16)?;
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Ok(format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    ))
}

/// `qemu-img convert -f <from> -O <to> [extra] src dst`.
pub fn qemu_img_convert(
    src: &Path,
    from: &str,
    dst: &Path,
    to: &str,
    extra: &[&str],
) -> Result<()> {
    cmd::run(
        Command::new("qemu-img")
            .args(["convert", "-f", from, "-O", to])
            .args(extra)
            .arg(src)
            .arg(dst),
    )?;
    Ok(())
}

/// `program args... < src > dst` (gzip -c, zstd -c ...).
pub fn filter(program: &str, args: &[&str], src: &Path, dst: &Path) -> Result<()> {
    let status = Command::new(program)
        .args(args)
        .stdin(File::open(src)?)
        .stdout(File::create(dst)?)
        .stderr(Stdio::inherit())
        .status()
        .with_context(|| format!("running {program}"))?;
    ensure!(status.success(), "{program} {args:?} failed: {status}");
    Ok(())
}

/// `gzip -c -n src > dst`.
pub fn gzip(src: &Path, dst: &Path) -> Result<()> {
    filter("gzip", &["-c", "-n", "-1"], src, dst)
}

/// `zstd -c src > dst`.
pub fn zstd(src: &Path, dst: &Path) -> Result<()> {
    filter("zstd", &["-q", "-c", "-3"], src, dst)
}

/// An ext4 filesystem image (a partition image) of `mib` MiB with filesystem UUID `uuid`,
/// holding a few files (an `/etc/hostname`, a random blob).
pub fn ext4_image(dir: &Path, name: &str, mib: u64, uuid: &str) -> Result<PathBuf> {
    let content = dir.join(format!("{name}.d"));
    std::fs::create_dir_all(content.join("etc"))?;
    std::fs::write(content.join("etc/hostname"), "e2e-partition-image\n")?;
    std::fs::write(content.join("blob"), random_bytes(1 << 20)?)?;
    let path = dir.join(name);
    File::create(&path)?.set_len(mib << 20)?;
    cmd::run(
        Command::new("mkfs.ext4")
            .args(["-q", "-F", "-L", "e2e-root", "-U", uuid, "-d"])
            .arg(&content)
            .arg(&path),
    )?;
    std::fs::remove_dir_all(&content)?;
    Ok(path)
}

/// A config drive as Ironic builds one (ISO 9660, volume label `config-2`, with
/// `openstack/latest/meta_data.json`), and the gzip+base64 text Ironic sends to the agent.
#[derive(Debug, Clone)]
pub struct ConfigDrive {
    pub iso: Vec<u8>,
    pub encoded: String,
}

impl ConfigDrive {
    pub fn build(dir: &Path, hostname: &str) -> Result<ConfigDrive> {
        let root = dir.join("configdrive.d");
        let latest = root.join("openstack/latest");
        std::fs::create_dir_all(&latest)?;
        let meta = serde_json::json!({
            "uuid": random_uuid()?,
            "hostname": hostname,
            "name": hostname,
            "meta": {"e2e": "config drive"},
        });
        std::fs::write(latest.join("meta_data.json"), meta.to_string())?;
        std::fs::write(latest.join("user_data"), "#cloud-config\n{}\n")?;
        let iso_path = dir.join("configdrive.iso");
        // Ironic's own flags (ironic.common.images.create_isolinux_image... /
        // openstacksdk's pack: genisoimage -o ... -ldots -allow-lowercase -allow-multidot -l
        // -publisher ... -quiet -J -r -V config-2).
        cmd::run(
            Command::new("genisoimage")
                .arg("-o")
                .arg(&iso_path)
                .args([
                    "-ldots",
                    "-allow-lowercase",
                    "-allow-multidot",
                    "-l",
                    "-quiet",
                    "-J",
                    "-r",
                    "-V",
                    "config-2",
                ])
                .arg(&root),
        )?;
        let iso = std::fs::read(&iso_path)?;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&iso)?;
        let encoded = base64::engine::general_purpose::STANDARD.encode(gz.finish()?);
        Ok(ConfigDrive { iso, encoded })
    }
}

/// Hex digests of a file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Digests {
    pub md5: String,
    pub sha256: String,
    pub sha512: String,
}

/// The digests of a file, with coreutils (`md5sum`, `sha256sum`, `sha512sum`: the
/// optimised implementations, and independent of the agent's).
pub fn digests(path: &Path) -> Result<Digests> {
    let sum = |tool: &str| -> Result<String> {
        let out = cmd::stdout(tool, &[path.as_os_str()])?;
        out.split_whitespace()
            .next()
            .map(str::to_string)
            .with_context(|| format!("{tool} printed nothing"))
    };
    Ok(Digests {
        md5: sum("md5sum")?,
        sha256: sum("sha256sum")?,
        sha512: sum("sha512sum")?,
    })
}

// ---------------------------------------------------------------------------------------------
// Hostile qcow2 files

/// A qcow2 overlay whose backing file is `base.raw` in `dir` (`qemu-img create -b`).
pub fn qcow2_with_backing_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let base = dir.join(format!("{name}.base.raw"));
    File::create(&base)?.set_len(64 << 20)?;
    let path = dir.join(name);
    cmd::run(
        Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
            .arg(&base)
            .arg(&path),
    )?;
    Ok(path)
}

/// Byte offsets in a qcow2 header (big endian fields).
const QCOW2_L1_SIZE: u64 = 36;
const QCOW2_L1_TABLE_OFFSET: u64 = 40;

/// A small valid qcow2 (64 MiB virtual, its first MiB random data) for patching.
fn small_qcow2(dir: &Path, name: &str) -> Result<PathBuf> {
    let raw = dir.join(format!("{name}.src.raw"));
    let f = File::create(&raw)?;
    f.set_len(64 << 20)?;
    f.write_all_at(&random_bytes(1 << 20)?, 0)?;
    let path = dir.join(name);
    qemu_img_convert(&raw, "raw", &path, "qcow2", &[])?;
    std::fs::remove_file(&raw)?;
    Ok(path)
}

/// A qcow2 whose header claims an L1 table of 16 Mi entries (128 MiB): QEMU refuses more
/// than 32 MiB, and an agent that believed it would allocate it.
pub fn qcow2_with_huge_l1(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = small_qcow2(dir, name)?;
    let f = OpenOptions::new().write(true).open(&path)?;
    f.write_all_at(&(16u32 << 20).to_be_bytes(), QCOW2_L1_SIZE)?;
    f.sync_all()?;
    Ok(path)
}

/// A qcow2 whose first L1 entry points at an L2 table 1 GiB into a file of a few MiB.
pub fn qcow2_with_cluster_past_end(dir: &Path, name: &str) -> Result<PathBuf> {
    let path = small_qcow2(dir, name)?;
    let f = OpenOptions::new().read(true).write(true).open(&path)?;
    let mut off = [0u8; 8];
    f.read_exact_at(&mut off, QCOW2_L1_TABLE_OFFSET)?;
    let l1 = u64::from_be_bytes(off);
    // Bit 63: "copied" (refcount 1), as qemu-img writes it; the offset is cluster aligned.
    let entry: u64 = (1 << 63) | (1 << 30);
    f.write_all_at(&entry.to_be_bytes(), l1)?;
    f.sync_all()?;
    ensure!(
        f.metadata()?.len() < 1 << 30,
        "the qcow2 file is unexpectedly large"
    );
    Ok(path)
}

/// Random bytes from a fast generator (the content only has to be incompressible).
pub fn write_random(path: &Path, size: u64) -> Result<()> {
    let mut f = std::io::BufWriter::with_capacity(8 << 20, std::fs::File::create(path)?);
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    let mut buf = vec![0u8; 8 << 20];
    let mut left = size;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            word.copy_from_slice(&x.to_le_bytes());
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n])?;
        left -= n as u64;
    }
    f.flush()?;
    Ok(())
}
