//! Making the kernel forget what it cached about a disk we rewrote underneath it.
//!
//! The erase steps write through one file descriptor of the whole disk. Each partition device
//! has its own page cache, and the kernel keeps the partitions it scanned until told to look
//! again; both would go on describing data that is gone.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

// <linux/fs.h>: BLKRRPART = _IO(0x12, 95), BLKFLSBUF = _IO(0x12, 97), BLKPG = _IO(0x12, 105).
nix::ioctl_none!(blkrrpart, 0x12, 95);
nix::ioctl_none!(blkflsbuf, 0x12, 97);
nix::ioctl_write_ptr_bad!(blkpg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);

/// `struct blkpg_ioctl_arg` of <linux/blkpg.h>.
#[repr(C)]
struct BlkpgIoctlArg {
    op: nix::libc::c_int,
    flags: nix::libc::c_int,
    datalen: nix::libc::c_int,
    data: *mut nix::libc::c_void,
}

/// `struct blkpg_partition` of <linux/blkpg.h>.
#[repr(C)]
struct BlkpgPartition {
    start: nix::libc::c_longlong,
    length: nix::libc::c_longlong,
    pno: nix::libc::c_int,
    devname: [nix::libc::c_char; 64],
    volname: [nix::libc::c_char; 64],
}

const BLKPG_DEL_PARTITION: nix::libc::c_int = 2;

/// How often, and how far apart, `BLKRRPART` is retried while something (udev's probe after
/// our close, usually) holds a partition open.
const REREAD_ATTEMPTS: u32 = 10;
const REREAD_PAUSE: Duration = Duration::from_millis(200);

/// `BLKFLSBUF` on a partition node: writes back its dirty pages and drops its cache. Done
/// before erasing, so that nothing dirty from earlier writes to the partition lands on top of
/// the erase, and after, so that nobody reads stale pages. A node that does not exist (the
/// kernel already forgot the partition) is fine.
pub fn flush_buffers(node: &Path) -> io::Result<()> {
    let file = match File::open(node) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    };
    if !std::os::unix::fs::FileTypeExt::is_block_device(&file.metadata()?.file_type()) {
        return Ok(());
    }
    // SAFETY: BLKFLSBUF takes no argument and the descriptor is open for the whole call.
    unsafe { blkflsbuf(file.as_raw_fd()) }
        .map(drop)
        .map_err(io::Error::from)
}

/// `BLKRRPART` on a whole disk: the kernel re-reads its partition table (after an erase:
/// drops all partitions). Devices that do not scan partitions themselves (a loop device
/// without `LO_FLAGS_PARTSCAN`, whose partitions were added with `partx`/BLKPG, or a kernel
/// built without partition-table parsers) answer `EINVAL`; their partitions are then deleted
/// one by one with `BLKPG_DEL_PARTITION`, so the kernel forgets them either way. Regular files
/// (unit tests) are left alone.
pub fn reread_partition_table(disk: &File) -> io::Result<()> {
    let meta = disk.metadata()?;
    if !std::os::unix::fs::FileTypeExt::is_block_device(&meta.file_type()) {
        return Ok(());
    }
    let mut attempt = 1;
    loop {
        // SAFETY: BLKRRPART takes no argument and the descriptor is open for the whole call.
        match unsafe { blkrrpart(disk.as_raw_fd()) } {
            Ok(_) => return Ok(()),
            Err(nix::errno::Errno::EINVAL) => {
                return delete_kernel_partitions(disk, std::os::unix::fs::MetadataExt::rdev(&meta))
            }
            Err(nix::errno::Errno::EBUSY) if attempt < REREAD_ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(REREAD_PAUSE);
            }
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}

/// Deletes every partition the kernel lists under the disk (`/sys/dev/block/M:m/*/partition`).
fn delete_kernel_partitions(disk: &File, rdev: u64) -> io::Result<()> {
    let sys = format!(
        "/sys/dev/block/{}:{}",
        nix::sys::stat::major(rdev),
        nix::sys::stat::minor(rdev)
    );
    let Ok(entries) = std::fs::read_dir(&sys) else {
        return Ok(());
    };
    for entry in entries.flatten() {
        let Ok(text) = std::fs::read_to_string(entry.path().join("partition")) else {
            continue;
        };
        let Ok(pno) = text.trim().parse::<nix::libc::c_int>() else {
            continue;
        };
        let mut part = BlkpgPartition {
            start: 0,
            length: 0,
            pno,
            devname: [0; 64],
            volname: [0; 64],
        };
        let arg = BlkpgIoctlArg {
            op: BLKPG_DEL_PARTITION,
            flags: 0,
            datalen: std::mem::size_of::<BlkpgPartition>() as nix::libc::c_int,
            data: (&mut part as *mut BlkpgPartition).cast(),
        };
        let mut attempt = 1;
        loop {
            // SAFETY: `arg` points at `part`, both live on this stack frame for the whole call,
            // and the layouts match <linux/blkpg.h>.
            match unsafe { blkpg(disk.as_raw_fd(), &arg) } {
                Ok(_) | Err(nix::errno::Errno::ENXIO) => break,
                Err(nix::errno::Errno::EBUSY) if attempt < REREAD_ATTEMPTS => {
                    attempt += 1;
                    std::thread::sleep(REREAD_PAUSE);
                }
                Err(e) => {
                    return Err(io::Error::other(format!(
                        "deleting partition {pno} from the kernel's table: {e}"
                    )))
                }
            }
        }
    }
    Ok(())
}
