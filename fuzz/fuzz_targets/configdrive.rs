//! The `configdrive` value of `prepare_image` (inline, or downloaded from the URL the
//! conductor gave): lenient base64, gunzip bounded at 64 MiB, then what the agent recognises
//! of the image: its signatures and the filesystem label (`config-2`) on ISO 9660 or vfat.
//!
//! Input: one byte (bit 0: downloaded), then the value. Invariants: the decoded image is at
//! most 64 MiB; a download decodes as an inline value does when that works, and is otherwise
//! taken as the raw image unchanged.

#![no_main]

use blockdev::region::{Extent, Region};
use disk_layout::configdrive::{decode, MAX_CONFIG_DRIVE_SIZE};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&control, value)) = input.split_first() else {
        return;
    };
    let downloaded = control & 1 != 0;
    let Ok(image) = decode(value, downloaded) else {
        return;
    };
    assert!(image.len() as u64 <= MAX_CONFIG_DRIVE_SIZE);
    if downloaded {
        // A download is decoded exactly as an inline value is whenever that decoding works,
        // and is otherwise the raw image as it came.
        match decode(value, false) {
            Ok(inline) => assert_eq!(inline, image, "inline and downloaded decodings differ"),
            Err(_) => assert_eq!(
                image, value,
                "a download that is not base64 of gzip changed"
            ),
        }
    }
    let region = Region::new(image.as_slice(), Extent::new(0, image.len() as u64));
    let _ = blockdev::signatures::probe(&region);
    if let Ok(Some(id)) = disk_layout::fs_id::probe(&region) {
        if let Some(label) = &id.label {
            assert!(!label.is_empty());
        }
    }
});
