//! Every block-device ioctl the agent issues, defined once, behind safe functions.
//!
//! The request numbers are those of `<linux/fs.h>` and `<linux/blkpg.h>`; the unit tests
//! check each against the kernel headers' arithmetic. Callers never see a raw descriptor or
//! an `unsafe` block: each function takes the opened [`File`] and returns `io::Result`, with
//! the errno kept (`raw_os_error`) for the callers that branch on it (`EINVAL` from a device
//! that does not scan partitions, `EBUSY` while something holds a partition open).

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

use nix::libc::{c_char, c_int, c_longlong, c_void};

// <linux/fs.h>, type 0x12.
nix::ioctl_write_ptr_bad!(blkroset, nix::request_code_none!(0x12, 93), c_int);
nix::ioctl_none!(blkrrpart, 0x12, 95);
nix::ioctl_none!(blkflsbuf, 0x12, 97);
nix::ioctl_read_bad!(blksszget, nix::request_code_none!(0x12, 104), c_int);
nix::ioctl_write_ptr_bad!(blkpg, nix::request_code_none!(0x12, 105), BlkpgIoctlArg);
nix::ioctl_read!(blkgetsize64, 0x12, 114, u64);
nix::ioctl_write_ptr_bad!(blkdiscard, nix::request_code_none!(0x12, 119), [u64; 2]);
nix::ioctl_write_ptr_bad!(blksecdiscard, nix::request_code_none!(0x12, 125), [u64; 2]);
nix::ioctl_write_ptr_bad!(blkzeroout, nix::request_code_none!(0x12, 127), [u64; 2]);

/// `struct blkpg_ioctl_arg` of <linux/blkpg.h>.
#[repr(C)]
struct BlkpgIoctlArg {
    op: c_int,
    flags: c_int,
    datalen: c_int,
    data: *mut c_void,
}

/// `struct blkpg_partition` of <linux/blkpg.h>.
#[repr(C)]
struct BlkpgPartition {
    start: c_longlong,
    length: c_longlong,
    pno: c_int,
    devname: [c_char; 64],
    volname: [c_char; 64],
}

const BLKPG_DEL_PARTITION: c_int = 2;

/// `BLKGETSIZE64`: the device's size in bytes.
pub fn size_bytes(file: &File) -> io::Result<u64> {
    let mut size = 0u64;
    // SAFETY: BLKGETSIZE64 writes one u64 through a pointer to a live local; the descriptor
    // is open for the whole call.
    unsafe { blkgetsize64(file.as_raw_fd(), &mut size) }?;
    Ok(size)
}

/// `BLKSSZGET`: the logical sector size in bytes (at least 512).
pub fn logical_sector_size(file: &File) -> io::Result<u64> {
    let mut size: c_int = 0;
    // SAFETY: BLKSSZGET writes one int through a pointer to a live local; the descriptor is
    // open for the whole call.
    unsafe { blksszget(file.as_raw_fd(), &mut size) }?;
    Ok(u64::try_from(size).unwrap_or(512).max(512))
}

/// `BLKZEROOUT`: the device writes zeros over `[offset, offset + len)` itself (offload or
/// written zeros; unlike discard, reads return zeros afterwards).
pub fn zero_out(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let range = [offset, len];
    // SAFETY: BLKZEROOUT reads a [start, length] pair that lives for the call.
    unsafe { blkzeroout(file.as_raw_fd(), &range) }?;
    Ok(())
}

/// `BLKDISCARD` over `[offset, offset + len)`.
pub fn discard(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let range = [offset, len];
    // SAFETY: BLKDISCARD reads a [start, length] pair that lives for the call.
    unsafe { blkdiscard(file.as_raw_fd(), &range) }?;
    Ok(())
}

/// `BLKSECDISCARD` over `[offset, offset + len)`: a discard the device guarantees makes the
/// old data unrecoverable; most devices answer `EOPNOTSUPP`.
pub fn secure_discard(file: &File, offset: u64, len: u64) -> io::Result<()> {
    let range = [offset, len];
    // SAFETY: BLKSECDISCARD reads a [start, length] pair that lives for the call.
    unsafe { blksecdiscard(file.as_raw_fd(), &range) }?;
    Ok(())
}

/// `BLKRRPART`: the kernel re-reads the partition table of the whole disk.
pub fn reread_partitions(file: &File) -> io::Result<()> {
    // SAFETY: BLKRRPART takes no argument and the descriptor is open for the whole call.
    unsafe { blkrrpart(file.as_raw_fd()) }?;
    Ok(())
}

/// `BLKFLSBUF`: writes back the device's dirty pages and drops its page cache.
pub fn flush_buffers(file: &File) -> io::Result<()> {
    // SAFETY: BLKFLSBUF takes no argument and the descriptor is open for the whole call.
    unsafe { blkflsbuf(file.as_raw_fd()) }?;
    Ok(())
}

/// `BLKPG_DEL_PARTITION`: the kernel forgets partition `number` of the disk (the data stays).
pub fn delete_partition(file: &File, number: u32) -> io::Result<()> {
    let pno = c_int::try_from(number).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
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
        datalen: std::mem::size_of::<BlkpgPartition>() as c_int,
        data: (&mut part as *mut BlkpgPartition).cast(),
    };
    // SAFETY: `arg` points at `part`, both live on this stack frame for the whole call, and
    // the layouts match <linux/blkpg.h>.
    unsafe { blkpg(file.as_raw_fd(), &arg) }?;
    Ok(())
}

/// `BLKROSET`: marks the device read-only (`true`) or writable in the kernel.
pub fn set_read_only(file: &File, read_only: bool) -> io::Result<()> {
    let flag = c_int::from(read_only);
    // SAFETY: BLKROSET reads one int that lives for the call.
    unsafe { blkroset(file.as_raw_fd(), &flag) }?;
    Ok(())
}

#[cfg(test)]
mod tests {
    /// The request numbers as <linux/fs.h> computes them: `_IO(0x12, n)` is `0x1200 | n`,
    /// `_IOR(0x12, 114, size_t)` adds the read direction and the size of a 64-bit size_t.
    #[test]
    fn request_numbers_match_linux_fs_h() {
        assert_eq!(nix::request_code_none!(0x12, 93), 0x125d, "BLKROSET");
        assert_eq!(nix::request_code_none!(0x12, 95), 0x125f, "BLKRRPART");
        assert_eq!(nix::request_code_none!(0x12, 97), 0x1261, "BLKFLSBUF");
        assert_eq!(nix::request_code_none!(0x12, 104), 0x1268, "BLKSSZGET");
        assert_eq!(nix::request_code_none!(0x12, 105), 0x1269, "BLKPG");
        assert_eq!(nix::request_code_none!(0x12, 119), 0x1277, "BLKDISCARD");
        assert_eq!(nix::request_code_none!(0x12, 125), 0x127d, "BLKSECDISCARD");
        assert_eq!(nix::request_code_none!(0x12, 127), 0x127f, "BLKZEROOUT");
        assert_eq!(
            nix::request_code_read!(0x12, 114, std::mem::size_of::<u64>()),
            0x8008_1272,
            "BLKGETSIZE64"
        );
    }

    #[test]
    fn blkpg_structs_match_linux_blkpg_h() {
        // x86_64 and aarch64: two ints, an int, padding, a pointer; 8+8+4+64+64 and padding.
        assert_eq!(std::mem::size_of::<super::BlkpgIoctlArg>(), 24);
        assert_eq!(std::mem::size_of::<super::BlkpgPartition>(), 152);
    }

    #[test]
    fn regular_files_are_refused_not_misread() {
        let f = tempfile::tempfile().unwrap();
        let err = super::size_bytes(&f).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(nix::libc::ENOTTY), "{err}");
    }
}
