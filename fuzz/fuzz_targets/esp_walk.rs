//! The ESP of a deployed image, read under `esp::Limits` as `install_bootloader` reads it:
//! open (boot sector, FAT geometry), walk the whole tree, find the boot loaders, read the
//! `BOOT*.CSV` hints. A hostile ESP must end in an error, never in a hang, an abort or an
//! allocation beyond the limits.
//!
//! Input: the partition's bytes (a FAT12/16 image). It goes to a file in /dev/shm, as the
//! agent reads a partition through a file. Invariants: a walk stays within the entry and
//! depth limits, a file read within the size limit, and finding the boot loaders agrees with
//! the walk.

#![no_main]

use std::os::unix::fs::FileExt;
use std::sync::OnceLock;

use blockdev::region::Extent;
use blockdev::WritableDisk;
use disk_layout::esp::{Esp, Limits};
use disk_layout::DiskTarget;
use libfuzzer_sys::fuzz_target;

/// Smaller than the agent's so that a run takes milliseconds; the same code paths.
const LIMITS: Limits = Limits {
    max_depth: 8,
    max_entries: 500,
    read_budget: 1 << 20,
    max_file: 64 << 10,
};

fn scratch() -> &'static tempfile::NamedTempFile {
    static FILE: OnceLock<tempfile::NamedTempFile> = OnceLock::new();
    // tmpfs: the fuzzer rewrites this file hundreds of times a second.
    FILE.get_or_init(|| {
        tempfile::Builder::new()
            .prefix("fuzz-esp-")
            .tempfile_in("/dev/shm")
            .expect("a scratch file in /dev/shm")
    })
}

fuzz_target!(|esp: &[u8]| {
    let tmp = scratch();
    let file = tmp.reopen().expect("reopening the scratch file");
    file.set_len(0).expect("truncating");
    file.write_all_at(esp, 0).expect("writing the ESP");
    let disk = WritableDisk::from_file(file, tmp.path()).expect("a regular file");
    let target = DiskTarget::new(disk);
    let Ok(esp) = Esp::open_with(&target, Extent::new(0, esp.len() as u64), "fuzz", LIMITS) else {
        return;
    };
    let _ = esp.fat_type();
    let Ok(files) = esp.walk() else {
        return;
    };
    assert!(files.len() <= LIMITS.max_entries);
    for path in &files {
        assert!(
            path.split('/').count() <= LIMITS.max_depth + 1,
            "{path} is deeper than the limit"
        );
    }
    // A second walk may run out of the read budget the first one used up.
    let Ok(loaders) = esp.find_bootloaders() else {
        return;
    };
    for loader in &loaders {
        assert!(files.contains(loader), "{loader} is not in the walk");
        if let Ok(data) = esp.read_file(loader) {
            assert!(data.len() as u64 <= LIMITS.max_file);
        }
    }
});
