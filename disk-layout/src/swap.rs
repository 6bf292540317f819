//! `mkswap`, natively: a version-1 swap header with a UUID and a label in the first page of
//! the partition.

use std::io;

use blockdev::region::Extent;

use crate::DiskTarget;

/// The page size of the machines the agent deploys (x86_64, and aarch64 with 4K pages):
/// the header must end at the end of the first page of the *deployed* kernel.
pub const PAGE_SIZE: u64 = 4096;
/// mkswap's minimum: 10 pages.
const MIN_PAGES: u64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum SwapError {
    #[error("swap partition of {0} bytes is smaller than 10 pages")]
    TooSmall(u64),
    #[error("writing the swap header of {device}: {source}")]
    Io {
        device: String,
        #[source]
        source: io::Error,
    },
}

/// Formats `extent` of `target` as swap with `label` (at most 16 bytes kept) and returns
/// the UUID written, in `blkid`'s text form.
pub fn mkswap(target: &DiskTarget, extent: Extent, label: &str) -> Result<String, SwapError> {
    let pages = extent.len / PAGE_SIZE;
    if pages < MIN_PAGES {
        return Err(SwapError::TooSmall(extent.len));
    }
    let uuid = uuid::Uuid::new_v4();
    // The first page is zeroed, as mkswap does (it wipes boot sectors and other signatures
    // there, so blkid does not see two filesystems).
    let mut page = vec![0u8; PAGE_SIZE as usize];
    page[1024..1028].copy_from_slice(&1u32.to_le_bytes()); // version
    let last_page = u32::try_from(pages - 1).unwrap_or(u32::MAX);
    page[1028..1032].copy_from_slice(&last_page.to_le_bytes());
    // nr_badpages stays 0
    page[1036..1052].copy_from_slice(uuid.as_bytes());
    let name = label.as_bytes();
    let n = name.len().min(16);
    page[1052..1052 + n].copy_from_slice(&name[..n]);
    page[PAGE_SIZE as usize - 10..].copy_from_slice(b"SWAPSPACE2");
    target
        .write_all_at(&page, extent.offset)
        .map_err(|source| SwapError::Io {
            device: target.path().display().to_string(),
            source,
        })?;
    Ok(uuid.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{run, temp_disk};

    #[test]
    fn blkid_sees_our_swap() {
        let (tmp, target) = temp_disk(8 << 20, 512);
        target.write_all_at(&[0xaa; 4096], 1 << 20).unwrap();
        let uuid = mkswap(&target, Extent::new(1 << 20, 4 << 20), "swap1").unwrap();
        let data = target.read_vec(1 << 20, 4096).unwrap();
        assert_eq!(&data[4086..], b"SWAPSPACE2");
        assert_eq!(data[0], 0, "old bytes of the first page are gone");
        assert_eq!(
            u32::from_le_bytes(data[1028..1032].try_into().unwrap()),
            1023
        );
        // blkid on just the partition's bytes.
        let part = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(part.path(), target.read_vec(1 << 20, 4 << 20).unwrap()).unwrap();
        if let Some((ok, text)) = run(
            "blkid",
            &["-p", "-o", "export", part.path().to_str().unwrap()],
        ) {
            assert!(ok, "{text}");
            assert!(text.contains("TYPE=swap"), "{text}");
            assert!(text.contains(&format!("UUID={uuid}")), "{text}");
            assert!(text.contains("LABEL=swap1"), "{text}");
        }
        drop(tmp);
        assert!(matches!(
            mkswap(&target, Extent::new(0, 9 * 4096), "x"),
            Err(SwapError::TooSmall(_))
        ));
    }
}
