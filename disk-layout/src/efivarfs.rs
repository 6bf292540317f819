//! UEFI variables through Linux's efivarfs (`/sys/firmware/efi/efivars`): one file per
//! variable, named `Name-vendor-guid`, whose contents are a 4-byte little-endian attribute
//! word followed by the data.
//!
//! Hazards handled here, as libefivar does: the kernel marks many variable files immutable
//! (`chattr +i`) so that a stray `rm` cannot brick a machine, so the flag is cleared before
//! a write or a removal; and efivarfs needs each variable written with a single `write(2)`.

use std::fs::File;
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The vendor GUID of `Boot####`, `BootOrder` and the other global variables.
pub const EFI_GLOBAL_VARIABLE: &str = "8be4df61-93ca-11d2-aa0d-00e098032b8c";
/// `NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS`: what boot entries are written with.
pub const NV_BS_RT: u32 = 0x7;

const EFIVARFS_MAGIC: i64 = 0xde5e_81e4;
const FS_IMMUTABLE_FL: nix::libc::c_int = 0x10;

// `<linux/fs.h>` declares FS_IOC_GETFLAGS/SETFLAGS with `long`, so the request numbers
// encode its size, but the kernel reads and writes an `int` (`fs/ioctl.c`): a `long`
// argument is only half filled, and on a big-endian machine the flags land in the wrong half.
const FLAGS_ARG_SIZE: usize = std::mem::size_of::<nix::libc::c_long>();
nix::ioctl_read_bad!(
    fs_ioc_getflags,
    nix::request_code_read!(b'f', 1, FLAGS_ARG_SIZE),
    nix::libc::c_int
);
nix::ioctl_write_ptr_bad!(
    fs_ioc_setflags,
    nix::request_code_write!(b'f', 2, FLAGS_ARG_SIZE),
    nix::libc::c_int
);

/// The global variables under an efivarfs mount (or a test directory laid out like one).
#[derive(Debug, Clone)]
pub struct EfiVars {
    root: PathBuf,
}

impl EfiVars {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        EfiVars { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, name: &str) -> PathBuf {
        self.root.join(format!("{name}-{EFI_GLOBAL_VARIABLE}"))
    }

    /// A variable's attributes and data, `None` when it does not exist.
    pub fn read(&self, name: &str) -> io::Result<Option<(u32, Vec<u8>)>> {
        match std::fs::read(self.path(name)) {
            Ok(bytes) if bytes.len() >= 4 => {
                let attrs = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]);
                Ok(Some((attrs, bytes[4..].to_vec())))
            }
            Ok(_) => Ok(None),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates or replaces a variable.
    pub fn write(&self, name: &str, attributes: u32, data: &[u8]) -> io::Result<()> {
        let path = self.path(name);
        if path.exists() {
            make_mutable(&path)?;
        }
        let mut buf = Vec::with_capacity(4 + data.len());
        buf.extend_from_slice(&attributes.to_le_bytes());
        buf.extend_from_slice(data);
        // No O_TRUNC: efivarfs replaces a variable on write, and truncating would delete it.
        let mut file = File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        let n = file.write(&buf)?;
        if n != buf.len() {
            return Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!(
                    "{}: short write ({n} of {} bytes)",
                    path.display(),
                    buf.len()
                ),
            ));
        }
        // On efivarfs a write replaces the variable; in a plain directory the file may have
        // been longer before.
        if !is_efivarfs(&file) {
            file.set_len(buf.len() as u64)?;
        }
        Ok(())
    }

    /// Deletes a variable (nothing if it does not exist).
    pub fn delete(&self, name: &str) -> io::Result<()> {
        let path = self.path(name);
        if !path.exists() {
            return Ok(());
        }
        make_mutable(&path)?;
        std::fs::remove_file(path)
    }

    /// The `Boot####` variables: number and data.
    pub fn boot_entries(&self) -> io::Result<Vec<(u16, Vec<u8>)>> {
        let mut entries = Vec::new();
        let dir = match std::fs::read_dir(&self.root) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(entries),
            Err(e) => return Err(e),
        };
        let suffix = format!("-{EFI_GLOBAL_VARIABLE}");
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(var) = name.strip_suffix(&suffix) else {
                continue;
            };
            let Some(hex) = var.strip_prefix("Boot") else {
                continue;
            };
            if hex.len() != 4 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                continue;
            }
            let Ok(n) = u16::from_str_radix(hex, 16) else {
                continue;
            };
            if let Some((_, data)) = self.read(var)? {
                entries.push((n, data));
            }
        }
        entries.sort();
        Ok(entries)
    }

    pub fn boot_order(&self) -> io::Result<Vec<u16>> {
        Ok(self
            .read("BootOrder")?
            .map(|(_, d)| {
                d.chunks_exact(2)
                    .map(|c| u16::from_le_bytes([c[0], c[1]]))
                    .collect()
            })
            .unwrap_or_default())
    }

    pub fn set_boot_order(&self, order: &[u16]) -> io::Result<()> {
        let data: Vec<u8> = order.iter().flat_map(|n| n.to_le_bytes()).collect();
        self.write("BootOrder", NV_BS_RT, &data)
    }
}

/// `Boot####` for a number.
pub fn boot_var(n: u16) -> String {
    format!("Boot{n:04X}")
}

fn is_efivarfs(file: &File) -> bool {
    nix::sys::statfs::fstatfs(file)
        .map(|s| s.filesystem_type() == nix::sys::statfs::FsType(EFIVARFS_MAGIC as _))
        .unwrap_or(false)
}

/// `chattr -i`: clears the immutable flag if the filesystem has one and it is set.
fn make_mutable(path: &Path) -> io::Result<()> {
    let file = File::open(path)?;
    let mut flags: nix::libc::c_int = 0;
    // SAFETY: FS_IOC_GETFLAGS writes the flags through a pointer to a live local.
    match unsafe { fs_ioc_getflags(file.as_raw_fd(), &mut flags) } {
        Ok(_) => {}
        // Filesystems without inode flags (tmpfs on older kernels, test directories).
        Err(
            nix::errno::Errno::ENOTTY | nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::EINVAL,
        ) => return Ok(()),
        Err(e) => return Err(e.into()),
    }
    if flags & FS_IMMUTABLE_FL == 0 {
        return Ok(());
    }
    let cleared = flags & !FS_IMMUTABLE_FL;
    // SAFETY: FS_IOC_SETFLAGS reads the flags from a pointer to a live local.
    unsafe { fs_ioc_setflags(file.as_raw_fd(), &cleared) }
        .map(drop)
        .map_err(io::Error::from)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// `chattr +i`, as the kernel does to efivarfs files; false where the filesystem of the
    /// test directory cannot.
    pub fn make_immutable(path: &Path) -> bool {
        let Ok(file) = File::open(path) else {
            return false;
        };
        let mut flags: nix::libc::c_int = 0;
        // SAFETY: as in make_mutable.
        if unsafe { fs_ioc_getflags(file.as_raw_fd(), &mut flags) }.is_err() {
            return false;
        }
        let set = flags | FS_IMMUTABLE_FL;
        // SAFETY: as in make_mutable.
        unsafe { fs_ioc_setflags(file.as_raw_fd(), &set) }.is_ok()
    }

    #[test]
    fn flags_ioctls_are_the_kernels_numbers() {
        // <linux/fs.h> on 64-bit Linux: _IOR('f', 1, long) and _IOW('f', 2, long).
        if FLAGS_ARG_SIZE == 8 {
            assert_eq!(
                nix::request_code_read!(b'f', 1, FLAGS_ARG_SIZE),
                0x8008_6601
            );
            assert_eq!(
                nix::request_code_write!(b'f', 2, FLAGS_ARG_SIZE),
                0x4008_6602
            );
        }
    }

    #[test]
    fn variables_with_attributes_and_the_immutable_dance() {
        let dir = tempfile::tempdir().unwrap();
        let vars = EfiVars::new(dir.path());
        assert_eq!(vars.boot_order().unwrap(), Vec::<u16>::new());
        vars.set_boot_order(&[1, 0, 0x2a]).unwrap();
        let raw =
            std::fs::read(dir.path().join(format!("BootOrder-{EFI_GLOBAL_VARIABLE}"))).unwrap();
        assert_eq!(raw, [7, 0, 0, 0, 1, 0, 0, 0, 0x2a, 0]);
        let immutable =
            make_immutable(&dir.path().join(format!("BootOrder-{EFI_GLOBAL_VARIABLE}")));
        vars.set_boot_order(&[3]).unwrap();
        assert_eq!(
            vars.boot_order().unwrap(),
            [3],
            "immutable flag set: {immutable}"
        );
        vars.write(&boot_var(0x1f), NV_BS_RT, b"abc").unwrap();
        vars.write("Boot00zz", NV_BS_RT, b"not an entry").unwrap();
        assert_eq!(vars.boot_entries().unwrap(), [(0x1f, b"abc".to_vec())]);
        if make_immutable(&dir.path().join(format!("Boot001F-{EFI_GLOBAL_VARIABLE}"))) {
            assert!(std::fs::remove_file(
                dir.path().join(format!("Boot001F-{EFI_GLOBAL_VARIABLE}"))
            )
            .is_err());
        }
        vars.delete(&boot_var(0x1f)).unwrap();
        assert!(vars.boot_entries().unwrap().is_empty());
        vars.delete(&boot_var(0x1f)).unwrap();
    }
}
