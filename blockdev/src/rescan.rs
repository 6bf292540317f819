//! Making the kernel forget what it cached about a disk we rewrote underneath it.
//!
//! The erase steps write through one file descriptor of the whole disk. Each partition device
//! has its own page cache, and the kernel keeps the partitions it scanned until told to look
//! again; both would go on describing data that is gone.

use std::fs::File;
use std::io;
use std::path::Path;
use std::time::Duration;

use crate::ioctl;

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
    ioctl::flush_buffers(&file)
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
        match ioctl::reread_partitions(disk) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(nix::libc::EINVAL) => {
                return delete_kernel_partitions(disk, std::os::unix::fs::MetadataExt::rdev(&meta))
            }
            Err(e) if e.raw_os_error() == Some(nix::libc::EBUSY) && attempt < REREAD_ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(REREAD_PAUSE);
            }
            Err(e) => return Err(e),
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
        let Ok(pno) = text.trim().parse::<u32>() else {
            continue;
        };
        let mut attempt = 1;
        loop {
            match ioctl::delete_partition(disk, pno) {
                Ok(()) => break,
                Err(e) if e.raw_os_error() == Some(nix::libc::ENXIO) => break,
                Err(e)
                    if e.raw_os_error() == Some(nix::libc::EBUSY) && attempt < REREAD_ATTEMPTS =>
                {
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
