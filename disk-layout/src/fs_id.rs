//! A filesystem's identity from its bytes: type, UUID and label as `blkid` reports them
//! (`TYPE`, `UUID`, `LABEL`). IPA asks `lsblk`/`blkid` for these to find the `config-2`
//! partition and to report partition UUIDs; the agent reads them from the partition itself.

use std::io;

use blockdev::region::{ReadAt, Region};

/// What `blkid -p` would print for a partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsId {
    pub kind: &'static str,
    pub uuid: Option<String>,
    pub label: Option<String>,
}

fn hex_uuid(b: &[u8]) -> Option<String> {
    if b.len() != 16 || b.iter().all(|x| *x == 0) {
        return None;
    }
    let h: String = b.iter().map(|x| format!("{x:02x}")).collect();
    Some(format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    ))
}

/// A fixed-size label field: up to the first NUL, trailing spaces removed.
fn label(b: &[u8]) -> Option<String> {
    let end = b.iter().position(|c| *c == 0).unwrap_or(b.len());
    let s = String::from_utf8_lossy(&b[..end]).trim_end().to_string();
    (!s.is_empty()).then_some(s)
}

/// The filesystem in `region`, if it is one of those the agent needs to recognise: vfat,
/// iso9660, ext2/3/4, xfs, btrfs, swap.
pub fn probe<R: ReadAt + ?Sized>(r: &Region<'_, R>) -> io::Result<Option<FsId>> {
    for p in [ext, xfs, btrfs, swap, iso9660, vfat] {
        if let Some(id) = p(r)? {
            return Ok(Some(id));
        }
    }
    Ok(None)
}

fn ext<R: ReadAt + ?Sized>(r: &Region<'_, R>) -> io::Result<Option<FsId>> {
    let Some(sb) = r.bytes(1024, 256)? else {
        return Ok(None);
    };
    if sb[0x38..0x3a] != [0x53, 0xef] {
        return Ok(None);
    }
    let compat = u32::from_le_bytes(sb[0x5c..0x60].try_into().unwrap_or_default());
    let incompat = u32::from_le_bytes(sb[0x60..0x64].try_into().unwrap_or_default());
    // has_journal, extents/64bit/flex_bg.
    let kind = if incompat & (0x40 | 0x80 | 0x200) != 0 {
        "ext4"
    } else if compat & 0x4 != 0 {
        "ext3"
    } else {
        "ext2"
    };
    Ok(Some(FsId {
        kind,
        uuid: hex_uuid(&sb[0x68..0x78]),
        label: label(&sb[0x78..0x88]),
    }))
}

fn xfs<R: ReadAt + ?Sized>(r: &Region<'_, R>) -> io::Result<Option<FsId>> {
    let Some(sb) = r.bytes(0, 120)? else {
        return Ok(None);
    };
    if &sb[..4] != b"XFSB" {
        return Ok(None);
    }
    Ok(Some(FsId {
        kind: "xfs",
        uuid: hex_uuid(&sb[32..48]),
        label: label(&sb[108..120]),
    }))
}

fn btrfs<R: ReadAt + ?Sized>(r: &Region<'_, R>) -> io::Result<Option<FsId>> {
    let Some(sb) = r.bytes(0x10000, 0x22b)? else {
        return Ok(None);
    };
    if &sb[0x40..0x48] != b"_BHRfS_M" {
        return Ok(None);
    }
    Ok(Some(FsId {
        kind: "btrfs",
        uuid: hex_uuid(&sb[0x20..0x30]),
        label: label(&sb[0x12b..0x22b]),
    }))
}

fn swap<R: ReadAt + ?Sized>(r: &Region<'_, R>) -> io::Result<Option<FsId>> {
    for page in [4096u64, 8192, 16384, 32768, 65536] {
        if r.has(page - 10, b"SWAPSPACE2")? {
            let Some(h) = r.bytes(1024, 48)? else {
                return Ok(None);
            };
            return Ok(Some(FsId {
                kind: "swap",
                uuid: hex_uuid(&h[12..28]),
                label: label(&h[28..44]),
            }));
        }
    }
    Ok(None)
}

fn iso9660<R: ReadAt + ?Sized>(r: &Region<'_, R>) -> io::Result<Option<FsId>> {
    let Some(pvd) = r.bytes(0x8000, 2048)? else {
        return Ok(None);
    };
    if pvd[0] != 1 || &pvd[1..6] != b"CD001" {
        return Ok(None);
    }
    // blkid's UUID of an ISO is its creation time, YYYY-MM-DD-HH-MM-SS-CC.
    let t = &pvd[813..829];
    let uuid = (t.iter().all(u8::is_ascii_digit) && t.iter().any(|c| *c != b'0')).then(|| {
        let s = String::from_utf8_lossy(t);
        format!(
            "{}-{}-{}-{}-{}-{}-{}",
            &s[0..4],
            &s[4..6],
            &s[6..8],
            &s[8..10],
            &s[10..12],
            &s[12..14],
            &s[14..16]
        )
    });
    Ok(Some(FsId {
        kind: "iso9660",
        uuid,
        label: label(&pvd[40..72]),
    }))
}

fn vfat<R: ReadAt + ?Sized>(r: &Region<'_, R>) -> io::Result<Option<FsId>> {
    let Some(bs) = r.bytes(0, 512)? else {
        return Ok(None);
    };
    let bytes_per_sector = u16::from_le_bytes([bs[11], bs[12]]);
    let sectors_per_cluster = bs[13];
    let fats = bs[16];
    let is_fat = bs[510..] == [0x55, 0xaa]
        && matches!(bytes_per_sector, 512 | 1024 | 2048 | 4096)
        && sectors_per_cluster.is_power_of_two()
        && (1..=2).contains(&fats)
        && (&bs[0x52..0x57] == b"FAT32" || &bs[0x36..0x39] == b"FAT" || bs[0] == 0xeb);
    if !is_fat {
        return Ok(None);
    }
    let fat32 = u16::from_le_bytes([bs[22], bs[23]]) == 0;
    let (id_at, label_at) = if fat32 { (0x43, 0x47) } else { (0x27, 0x2b) };
    let id = u32::from_le_bytes(bs[id_at..id_at + 4].try_into().unwrap_or_default());
    let root_label = root_dir_label(r, &bs, fat32)?;
    let bpb_label = label(&bs[label_at..label_at + 11]).filter(|l| l != "NO NAME");
    Ok(Some(FsId {
        kind: "vfat",
        uuid: Some(format!("{:04X}-{:04X}", id >> 16, id & 0xffff)),
        label: root_label.or(bpb_label),
    }))
}

/// The volume label entry of the root directory (which `blkid` prefers over the boot
/// sector's copy), looking at the first cluster of a FAT32 root only.
fn root_dir_label<R: ReadAt + ?Sized>(
    r: &Region<'_, R>,
    bs: &[u8],
    fat32: bool,
) -> io::Result<Option<String>> {
    let bps = u64::from(u16::from_le_bytes([bs[11], bs[12]]));
    let reserved = u64::from(u16::from_le_bytes([bs[14], bs[15]]));
    let fats = u64::from(bs[16]);
    let root_entries = u64::from(u16::from_le_bytes([bs[17], bs[18]]));
    let fat_size = if fat32 {
        u64::from(u32::from_le_bytes(
            bs[36..40].try_into().unwrap_or_default(),
        ))
    } else {
        u64::from(u16::from_le_bytes([bs[22], bs[23]]))
    };
    let root_sectors = (root_entries * 32).div_ceil(bps);
    let first_data = reserved + fats * fat_size + root_sectors;
    let (start, len) = if fat32 {
        let cluster = u64::from(u32::from_le_bytes(
            bs[44..48].try_into().unwrap_or_default(),
        ));
        let spc = u64::from(bs[13]);
        (
            (first_data + cluster.saturating_sub(2) * spc) * bps,
            spc * bps,
        )
    } else {
        ((reserved + fats * fat_size) * bps, root_sectors * bps)
    };
    let Some(dir) = r.bytes(start, len.min(1 << 20) as usize)? else {
        return Ok(None);
    };
    for e in dir.chunks_exact(32) {
        match e[0] {
            0 => break,
            0xe5 => continue,
            _ => {}
        }
        // A volume label: the attribute is exactly "volume id" (long-name entries have more
        // bits set).
        if e[11] & 0x3f == 0x08 {
            return Ok(label(&e[..11]));
        }
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{run, temp_disk};
    use blockdev::region::Extent;

    fn probe_file(path: &std::path::Path) -> Option<FsId> {
        let data = std::fs::read(path).unwrap();
        probe(&Region::new(
            data.as_slice(),
            Extent::new(0, data.len() as u64),
        ))
        .unwrap()
    }

    /// Filesystems made by the real tools, where installed, read back like blkid reads them.
    #[test]
    fn agrees_with_mkfs_and_blkid() {
        let cases: [(&str, &[&str]); 4] = [
            ("mkfs.vfat", &["-n", "config-2", "-i", "1234ABCD"]),
            (
                "mkfs.ext4",
                &[
                    "-q",
                    "-F",
                    "-L",
                    "ephemeral0",
                    "-U",
                    "0b4c1f5e-7f2a-4d0e-9c53-2f1d8c7e6a90",
                ],
            ),
            (
                "mkswap",
                &["-L", "swap1", "-U", "5f0e1f5e-7f2a-4d0e-9c53-2f1d8c7e6a91"],
            ),
            (
                "mkfs.xfs",
                &[
                    "-q",
                    "-L",
                    "root",
                    "-m",
                    "uuid=6f0e1f5e-7f2a-4d0e-9c53-2f1d8c7e6a92",
                ],
            ),
        ];
        for (tool, args) in cases {
            let (tmp, _) = temp_disk(320 << 20, 512);
            let path = tmp.path().to_str().unwrap();
            let mut full: Vec<&str> = args.to_vec();
            full.push(path);
            let Some((ok, text)) = run(tool, &full) else {
                continue;
            };
            assert!(ok, "{tool}: {text}");
            let id = probe_file(tmp.path()).unwrap();
            if let Some((_, blkid)) = run("blkid", &["-p", "-o", "export", path]) {
                for line in blkid.lines() {
                    if let Some(v) = line.strip_prefix("UUID=") {
                        assert_eq!(id.uuid.as_deref(), Some(v), "{tool}");
                    }
                    if let Some(v) = line.strip_prefix("LABEL=") {
                        assert_eq!(id.label.as_deref(), Some(v), "{tool}");
                    }
                    if let Some(v) = line.strip_prefix("TYPE=") {
                        assert_eq!(id.kind, v, "{tool}");
                    }
                }
            }
        }
    }

    #[test]
    fn iso9660_label_and_date() {
        let mut data = vec![0u8; 0x9000];
        data[0x8000] = 1;
        data[0x8001..0x8006].copy_from_slice(b"CD001");
        data[0x8028..0x8048].copy_from_slice(b"config-2                        ");
        data[0x8000 + 813..0x8000 + 829].copy_from_slice(b"2024010203040506");
        let id = probe(&Region::new(
            data.as_slice(),
            Extent::new(0, data.len() as u64),
        ))
        .unwrap()
        .unwrap();
        assert_eq!(id.kind, "iso9660");
        assert_eq!(id.label.as_deref(), Some("config-2"));
        assert_eq!(id.uuid.as_deref(), Some("2024-01-02-03-04-05-06"));
    }
}
