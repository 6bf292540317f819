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

// <linux/fs.h>: BLKRRPART = _IO(0x12, 95), BLKFLSBUF = _IO(0x12, 97).
nix::ioctl_none!(blkrrpart, 0x12, 95);
nix::ioctl_none!(blkflsbuf, 0x12, 97);

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
/// drops all partitions). Devices that cannot have partitions (a loop device without
/// `LO_FLAGS_PARTSCAN`) answer `EINVAL`, which is not an error here. Regular files (unit
/// tests) are left alone.
pub fn reread_partition_table(disk: &File) -> io::Result<()> {
    if !std::os::unix::fs::FileTypeExt::is_block_device(&disk.metadata()?.file_type()) {
        return Ok(());
    }
    let mut attempt = 1;
    loop {
        // SAFETY: BLKRRPART takes no argument and the descriptor is open for the whole call.
        match unsafe { blkrrpart(disk.as_raw_fd()) } {
            Ok(_) | Err(nix::errno::Errno::EINVAL) => return Ok(()),
            Err(nix::errno::Errno::EBUSY) if attempt < REREAD_ATTEMPTS => {
                attempt += 1;
                std::thread::sleep(REREAD_PAUSE);
            }
            Err(e) => return Err(io::Error::from(e)),
        }
    }
}
