//! What an image file is, and whether we may write it.
//!
//! [`sniff`] recognises formats by their magic in the first bytes of the file (the same set
//! oslo.utils' format inspector knows, plus compression). [`inspect`] applies IPA's policy
//! (`disk_utils.get_and_validate_image_format`) on top:
//!
//! * a declared `disk_format` of `raw` or `gpt` is written bit for bit, without deep
//!   inspection (like IPA, which then `dd`s it): converting what claims not to need
//!   conversion is the risk (bug 2071740), writing its bytes verbatim is not;
//! * otherwise the detected format must be in `permitted_image_formats` (default
//!   `raw,gpt,qcow2`; Ironic's lookup sends `raw,gpt,qcow2,iso`) and must equal the declared
//!   `disk_format` unless that is null or `unknown`;
//! * a raw disk with a partition table detects as `gpt` (oslo's name for "has an MBR or a
//!   GPT"), so a raw whole-disk image deploys when declared `raw` (skipped) or undeclared
//!   (`gpt` is permitted); declaring `qcow2` for it is a mismatch, as in IPA.
//!
//! Beyond IPA: a gzip, zstd or xz file is decompressed on the fly, and its payload must be a
//! raw disk (checked against the same policy once the first MiB is decompressed); a hybrid
//! ISO (ISO 9660 with an MBR) counts as `iso`, not as an ambiguous match (Glance's rule).
//! Formats we cannot convert (vmdk, vhd, vhdx, vdi, qed, luks) are refused with a clear error
//! even when permitted.

use std::fmt;

/// Head bytes [`sniff`] needs to recognise every format (ISO 9660 is the furthest: its
/// descriptor is at 32 KiB). Pass this much, or the whole file if it is shorter.
pub const SNIFF_LEN: usize = 64 << 10;

/// Disk image formats, named as oslo.utils' format inspector and Glance name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ImageFormat {
    /// No recognised structure.
    Raw,
    /// A raw disk with a partition table (MBR or GPT): oslo's `gpt`.
    Gpt,
    /// ISO 9660 / UDF.
    Iso,
    Qcow2,
    Qed,
    Vmdk,
    Vhd,
    Vhdx,
    Vdi,
    Luks,
}

impl ImageFormat {
    pub const ALL: [ImageFormat; 10] = [
        ImageFormat::Raw,
        ImageFormat::Gpt,
        ImageFormat::Iso,
        ImageFormat::Qcow2,
        ImageFormat::Qed,
        ImageFormat::Vmdk,
        ImageFormat::Vhd,
        ImageFormat::Vhdx,
        ImageFormat::Vdi,
        ImageFormat::Luks,
    ];

    /// The `disk_format` / oslo name.
    pub fn name(self) -> &'static str {
        match self {
            ImageFormat::Raw => "raw",
            ImageFormat::Gpt => "gpt",
            ImageFormat::Iso => "iso",
            ImageFormat::Qcow2 => "qcow2",
            ImageFormat::Qed => "qed",
            ImageFormat::Vmdk => "vmdk",
            ImageFormat::Vhd => "vhd",
            ImageFormat::Vhdx => "vhdx",
            ImageFormat::Vdi => "vdi",
            ImageFormat::Luks => "luks",
        }
    }

    pub fn from_name(name: &str) -> Option<Self> {
        let name = name.trim();
        Self::ALL
            .into_iter()
            .find(|f| f.name().eq_ignore_ascii_case(name))
    }

    /// Written to the disk bit for bit (no conversion).
    pub fn is_raw_like(self) -> bool {
        matches!(self, ImageFormat::Raw | ImageFormat::Gpt | ImageFormat::Iso)
    }
}

impl fmt::Display for ImageFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Compression around a whole image file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Compression {
    Gzip,
    Zstd,
    Xz,
    /// Recognised only to be refused with a clear message.
    Bzip2,
}

impl Compression {
    pub fn name(self) -> &'static str {
        match self {
            Compression::Gzip => "gzip",
            Compression::Zstd => "zstd",
            Compression::Xz => "xz",
            Compression::Bzip2 => "bzip2",
        }
    }
}

impl fmt::Display for Compression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The partition table of a raw disk image.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionTable {
    /// A protective MBR (type 0xEE) or an `EFI PART` header at LBA 1.
    Gpt,
    Mbr,
}

/// What the first bytes of a file say it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// A compressed file: what is inside is known only after decompression.
    Compressed(Compression),
    Image {
        format: ImageFormat,
        /// For raw-like images: the partition table found, if any.
        partition_table: Option<PartitionTable>,
    },
    /// Several formats' signatures at once (one header hidden in another): refused.
    Ambiguous(Vec<ImageFormat>),
}

impl Sniffed {
    /// A short description for messages ("qcow2", "gzip-compressed image").
    pub fn describe(&self) -> String {
        match self {
            Sniffed::Compressed(c) => format!("{c}-compressed image"),
            Sniffed::Image { format, .. } => format.name().to_string(),
            Sniffed::Ambiguous(list) => join(list),
        }
    }
}

fn join(list: &[ImageFormat]) -> String {
    list.iter().map(|f| f.name()).collect::<Vec<_>>().join(", ")
}

fn at(head: &[u8], offset: usize, magic: &[u8]) -> bool {
    head.get(offset..offset + magic.len()) == Some(magic)
}

fn compression(head: &[u8]) -> Option<Compression> {
    if at(head, 0, &[0x1f, 0x8b, 0x08]) {
        return Some(Compression::Gzip);
    }
    if at(head, 0, &[0x28, 0xb5, 0x2f, 0xfd]) {
        return Some(Compression::Zstd);
    }
    // zstd skippable frame (0x184D2A50..=0x184D2A5F, little-endian), e.g. pzstd's header.
    if head.len() >= 4 && head[0] & 0xf0 == 0x50 && head[1..4] == [0x2a, 0x4d, 0x18] {
        return Some(Compression::Zstd);
    }
    if at(head, 0, &[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        return Some(Compression::Xz);
    }
    if head.len() >= 10 && at(head, 0, b"BZh") && (b'1'..=b'9').contains(&head[3]) {
        let block = &head[4..10];
        if block == [0x31, 0x41, 0x59, 0x26, 0x53, 0x59]
            || block == [0x17, 0x72, 0x45, 0x38, 0x50, 0x90]
        {
            return Some(Compression::Bzip2);
        }
    }
    None
}

/// MBR signature at 510, and not a FAT boot sector (which carries the same signature).
fn has_mbr(head: &[u8]) -> bool {
    if !at(head, 510, &[0x55, 0xaa]) {
        return false;
    }
    let is_fat = head[0x10] == 2 && head[0x15] == 0xf8;
    !is_fat
}

fn partition_table(head: &[u8]) -> Option<PartitionTable> {
    if !has_mbr(head) {
        return None;
    }
    let protective = (0..4).any(|i| head[446 + 16 * i + 4] == 0xee);
    if protective || at(head, 512, b"EFI PART") || at(head, 4096, b"EFI PART") {
        Some(PartitionTable::Gpt)
    } else {
        Some(PartitionTable::Mbr)
    }
}

fn formats(head: &[u8]) -> Vec<ImageFormat> {
    let mut found = Vec::new();
    if at(head, 0, b"QFI\xfb") {
        found.push(ImageFormat::Qcow2);
    }
    if at(head, 0, b"QED\0") {
        found.push(ImageFormat::Qed);
    }
    if at(head, 0, b"KDMV") || at(head, 0, b"# Disk DescriptorFile") || at(head, 0, b"COWD") {
        found.push(ImageFormat::Vmdk);
    }
    if at(head, 0, b"conectix") {
        found.push(ImageFormat::Vhd);
    }
    if at(head, 0, b"vhdxfile") {
        found.push(ImageFormat::Vhdx);
    }
    if at(head, 0x40, &0xbeda_107f_u32.to_le_bytes()) {
        found.push(ImageFormat::Vdi);
    }
    if at(head, 0, b"LUKS\xba\xbe") {
        found.push(ImageFormat::Luks);
    }
    if [&b"CD001"[..], b"NSR02", b"NSR03"]
        .iter()
        .any(|m| at(head, 32 * 1024 + 1, m))
    {
        found.push(ImageFormat::Iso);
    }
    if has_mbr(head) {
        found.push(ImageFormat::Gpt);
    }
    found
}

/// Recognises the format of a file from its first bytes (give it [`SNIFF_LEN`] bytes, or the
/// whole file if shorter; a check whose bytes are missing does not match).
pub fn sniff(head: &[u8]) -> Sniffed {
    if let Some(c) = compression(head) {
        return Sniffed::Compressed(c);
    }
    let found = formats(head);
    let format = match found.as_slice() {
        [] => ImageFormat::Raw,
        [one] => *one,
        // A hybrid ISO (isohybrid, most Linux installers) has an MBR too.
        [ImageFormat::Iso, ImageFormat::Gpt] => ImageFormat::Iso,
        _ => return Sniffed::Ambiguous(found),
    };
    let partition_table = if format.is_raw_like() {
        partition_table(head)
    } else {
        None
    };
    Sniffed::Image {
        format,
        partition_table,
    }
}

/// oslo's safety check for the `gpt` format: sane MBR partition entries.
fn check_mbr(head: &[u8]) -> Result<(), String> {
    let mut used = Vec::new();
    let mut gpt = false;
    for i in 0..4 {
        let e = &head[446 + 16 * i..446 + 16 * (i + 1)];
        if e[0] != 0x00 && e[0] != 0x80 {
            return Err(format!(
                "MBR partition entry {i} has an invalid boot flag {:#04x}",
                e[0]
            ));
        }
        let os_type = e[4];
        if os_type != 0 {
            used.push(i);
        }
        if os_type == 0xee {
            gpt = true;
            if e[1..4] != [0x00, 0x02, 0x00] {
                return Err("the protective MBR has an invalid start CHS".into());
            }
            if u32::from_le_bytes([e[8], e[9], e[10], e[11]]) != 1 {
                return Err("the protective MBR does not start at LBA 1".into());
            }
        }
    }
    if gpt && used != [0] {
        return Err("the protective MBR defines extra partitions".into());
    }
    if used.is_empty() {
        return Err("the MBR defines no partitions".into());
    }
    Ok(())
}

/// Why an image may not be written. Messages follow IPA's ("Security: ...") where IPA has
/// the same check.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InspectionError {
    #[error("Security: detected image format was {detected}, but only {} are allowed (permitted_image_formats)", .permitted.join(", "))]
    NotPermitted {
        detected: String,
        permitted: Vec<String>,
    },
    #[error("Security: expected format was {declared} (the image's disk_format), but the image is actually {detected}")]
    FormatMismatch { declared: String, detected: String },
    #[error("Security: the image matches several formats at once ({}); refusing to guess", join(.0))]
    MultipleFormats(Vec<ImageFormat>),
    #[error("Security: the {format} image failed its safety check: {reason}")]
    SafetyCheck { format: ImageFormat, reason: String },
    #[error("{format} images are not supported by this agent; convert it to raw or qcow2")]
    Unsupported { format: ImageFormat },
    #[error("{0}-compressed images are not supported by this agent; compress it with gzip, zstd or xz instead, or convert it to raw or qcow2")]
    UnsupportedCompression(Compression),
    #[error("the image is a {compression}-compressed {payload} image; only raw disk images may be compressed (upload the {payload} image uncompressed, or convert it to raw first)")]
    CompressedNotRaw {
        compression: Compression,
        payload: String,
    },
}

/// How the file will be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Written bit for bit; the format is what the head looked like (raw, gpt, iso).
    Raw(ImageFormat),
    /// Converted from qcow2 to raw while streaming.
    Qcow2,
    /// Decompressed while streaming; the payload must be a raw disk.
    Decompress(Compression),
}

/// The policy applied to the payload of a compressed file, once it is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PayloadPolicy {
    /// `disk_format` was raw-like: no checks beyond "must be raw".
    declared_raw: bool,
    deep_inspection: bool,
    declared: Option<String>,
    permitted: Vec<String>,
}

impl PayloadPolicy {
    /// Checks the first decompressed bytes (at least [`SNIFF_LEN`] of them, or all) and
    /// returns the payload's format.
    pub fn check(
        &self,
        compression: Compression,
        head: &[u8],
    ) -> Result<ImageFormat, InspectionError> {
        let format = match sniff(head) {
            Sniffed::Compressed(inner) => {
                return Err(InspectionError::CompressedNotRaw {
                    compression,
                    payload: format!("{inner}-compressed"),
                })
            }
            Sniffed::Ambiguous(list) => return Err(InspectionError::MultipleFormats(list)),
            Sniffed::Image { format, .. } => format,
        };
        if !format.is_raw_like() {
            return Err(InspectionError::CompressedNotRaw {
                compression,
                payload: format.name().into(),
            });
        }
        if self.deep_inspection && !self.declared_raw {
            check_detected(format, self.declared.as_deref(), &self.permitted, head)?;
        }
        Ok(format)
    }
}

/// IPA's checks for a detected format on the deep-inspection path.
fn check_detected(
    format: ImageFormat,
    declared: Option<&str>,
    permitted: &[String],
    head: &[u8],
) -> Result<(), InspectionError> {
    if !permitted
        .iter()
        .any(|p| p.trim().eq_ignore_ascii_case(format.name()))
    {
        return Err(InspectionError::NotPermitted {
            detected: format.name().into(),
            permitted: permitted.to_vec(),
        });
    }
    if let Some(d) = declared {
        if d != "unknown" && d != format.name() {
            return Err(InspectionError::FormatMismatch {
                declared: d.into(),
                detected: format.name().into(),
            });
        }
    }
    if format == ImageFormat::Gpt {
        check_mbr(head).map_err(|reason| InspectionError::SafetyCheck { format, reason })?;
    }
    Ok(())
}

/// The outcome of [`inspect`]: what the file is and how it will be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Inspection {
    pub sniffed: Sniffed,
    pub plan: Plan,
    pub payload_policy: PayloadPolicy,
}

/// The `permitted_image_formats` default of IPA.
pub fn default_permitted_formats() -> Vec<String> {
    ["raw", "gpt", "qcow2"]
        .iter()
        .map(|s| s.to_string())
        .collect()
}

/// IPA's format policy (see the module doc). `declared_disk_format` is `image_info`'s
/// `disk_format`; `permitted` is `permitted_image_formats`; `deep_inspection` is
/// `!disable_deep_image_inspection`.
pub fn inspect(
    head: &[u8],
    declared_disk_format: Option<&str>,
    permitted: &[String],
    deep_inspection: bool,
) -> Result<Inspection, InspectionError> {
    let declared = declared_disk_format
        .map(|d| d.trim().to_ascii_lowercase())
        .filter(|d| !d.is_empty());
    let declared_raw = matches!(declared.as_deref(), Some("raw" | "gpt"));
    let sniffed = sniff(head);
    let payload_policy = PayloadPolicy {
        declared_raw,
        deep_inspection,
        declared: declared.clone(),
        permitted: permitted.to_vec(),
    };
    let plan = match &sniffed {
        Sniffed::Compressed(Compression::Bzip2) => {
            return Err(InspectionError::UnsupportedCompression(Compression::Bzip2))
        }
        Sniffed::Compressed(c) => {
            // The payload must be raw-like: a declared non-raw format cannot match.
            if let Some(d) = declared
                .as_deref()
                .filter(|d| deep_inspection && !declared_raw && *d != "unknown")
            {
                if !ImageFormat::from_name(d).is_some_and(ImageFormat::is_raw_like) {
                    return Err(InspectionError::FormatMismatch {
                        declared: d.into(),
                        detected: sniffed.describe(),
                    });
                }
            }
            Plan::Decompress(*c)
        }
        Sniffed::Ambiguous(_) if declared_raw => Plan::Raw(ImageFormat::Raw),
        Sniffed::Ambiguous(list) => return Err(InspectionError::MultipleFormats(list.clone())),
        Sniffed::Image { format, .. } => {
            let format = *format;
            if declared_raw {
                if !format.is_raw_like() {
                    tracing::warn!(
                        detected = %format,
                        "the image's disk_format is raw but it looks like {format}; writing it bit for bit, like IPA"
                    );
                }
                Plan::Raw(if format.is_raw_like() {
                    format
                } else {
                    ImageFormat::Raw
                })
            } else {
                if deep_inspection {
                    check_detected(format, declared.as_deref(), permitted, head)?;
                }
                match format {
                    f if f.is_raw_like() => Plan::Raw(f),
                    ImageFormat::Qcow2 => Plan::Qcow2,
                    f => return Err(InspectionError::Unsupported { format: f }),
                }
            }
        }
    };
    Ok(Inspection {
        sniffed,
        plan,
        payload_policy,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn permitted(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    fn mbr(kind: u8) -> Vec<u8> {
        let mut d = vec![0u8; SNIFF_LEN];
        d[0] = 0xeb; // a jump, like boot code
        let e = &mut d[446..462];
        e[4] = kind;
        if kind == 0xee {
            e[1..4].copy_from_slice(&[0, 2, 0]);
        }
        e[8..12].copy_from_slice(&1u32.to_le_bytes());
        e[12..16].copy_from_slice(&1000u32.to_le_bytes());
        d[510] = 0x55;
        d[511] = 0xaa;
        if kind == 0xee {
            d[512..520].copy_from_slice(b"EFI PART");
        }
        d
    }

    fn qcow2_head() -> Vec<u8> {
        let mut d = vec![0u8; 4096];
        d[..4].copy_from_slice(b"QFI\xfb");
        d[4..8].copy_from_slice(&3u32.to_be_bytes());
        d
    }

    #[test]
    fn sniffs_magics() {
        let cases: Vec<(Vec<u8>, Sniffed)> = vec![
            (
                vec![0x1f, 0x8b, 0x08, 0, 0, 0],
                Sniffed::Compressed(Compression::Gzip),
            ),
            (
                vec![0x28, 0xb5, 0x2f, 0xfd, 0],
                Sniffed::Compressed(Compression::Zstd),
            ),
            (
                vec![0x50, 0x2a, 0x4d, 0x18, 0],
                Sniffed::Compressed(Compression::Zstd),
            ),
            (
                b"\xfd7zXZ\0\0\0".to_vec(),
                Sniffed::Compressed(Compression::Xz),
            ),
            (
                b"BZh91AY&SY\0\0".to_vec(),
                Sniffed::Compressed(Compression::Bzip2),
            ),
            (
                qcow2_head(),
                Sniffed::Image {
                    format: ImageFormat::Qcow2,
                    partition_table: None,
                },
            ),
            (
                b"QED\0xxxxxxxx".to_vec(),
                Sniffed::Image {
                    format: ImageFormat::Qed,
                    partition_table: None,
                },
            ),
            (
                b"KDMV\x01\0\0\0".to_vec(),
                Sniffed::Image {
                    format: ImageFormat::Vmdk,
                    partition_table: None,
                },
            ),
            (
                b"# Disk DescriptorFile\nversion=1\n".to_vec(),
                Sniffed::Image {
                    format: ImageFormat::Vmdk,
                    partition_table: None,
                },
            ),
            (
                b"conectix\0\0".to_vec(),
                Sniffed::Image {
                    format: ImageFormat::Vhd,
                    partition_table: None,
                },
            ),
            (
                b"vhdxfile\0\0".to_vec(),
                Sniffed::Image {
                    format: ImageFormat::Vhdx,
                    partition_table: None,
                },
            ),
            (
                b"LUKS\xba\xbe\0\x01".to_vec(),
                Sniffed::Image {
                    format: ImageFormat::Luks,
                    partition_table: None,
                },
            ),
            (
                vec![0u8; 4096],
                Sniffed::Image {
                    format: ImageFormat::Raw,
                    partition_table: None,
                },
            ),
            (
                vec![],
                Sniffed::Image {
                    format: ImageFormat::Raw,
                    partition_table: None,
                },
            ),
            (
                mbr(0x83),
                Sniffed::Image {
                    format: ImageFormat::Gpt,
                    partition_table: Some(PartitionTable::Mbr),
                },
            ),
            (
                mbr(0xee),
                Sniffed::Image {
                    format: ImageFormat::Gpt,
                    partition_table: Some(PartitionTable::Gpt),
                },
            ),
        ];
        for (head, want) in cases {
            assert_eq!(sniff(&head), want, "head {:?}", &head[..head.len().min(8)]);
        }
        let mut vdi = vec![0u8; 512];
        vdi[0x40..0x44].copy_from_slice(&0xbeda_107f_u32.to_le_bytes());
        assert_eq!(
            sniff(&vdi),
            Sniffed::Image {
                format: ImageFormat::Vdi,
                partition_table: None
            }
        );
    }

    #[test]
    fn iso_and_hybrid_iso() {
        let mut iso = vec![0u8; SNIFF_LEN];
        iso[32768] = 1;
        iso[32769..32774].copy_from_slice(b"CD001");
        assert_eq!(
            sniff(&iso),
            Sniffed::Image {
                format: ImageFormat::Iso,
                partition_table: None
            }
        );
        let mut hybrid = mbr(0x17);
        hybrid[32768] = 1;
        hybrid[32769..32774].copy_from_slice(b"CD001");
        assert_eq!(
            sniff(&hybrid),
            Sniffed::Image {
                format: ImageFormat::Iso,
                partition_table: Some(PartitionTable::Mbr)
            }
        );
        // Too short a head to see the descriptor: not an ISO.
        assert_eq!(
            sniff(&iso[..32000]),
            Sniffed::Image {
                format: ImageFormat::Raw,
                partition_table: None
            }
        );
    }

    #[test]
    fn fat_boot_sector_is_not_an_mbr() {
        let mut fat = mbr(0x83);
        fat[0x10] = 2;
        fat[0x15] = 0xf8;
        assert_eq!(
            sniff(&fat),
            Sniffed::Image {
                format: ImageFormat::Raw,
                partition_table: None
            }
        );
    }

    #[test]
    fn qcow2_hidden_behind_an_mbr_is_ambiguous() {
        let mut head = qcow2_head();
        head[510] = 0x55;
        head[511] = 0xaa;
        assert_eq!(
            sniff(&head),
            Sniffed::Ambiguous(vec![ImageFormat::Qcow2, ImageFormat::Gpt])
        );
        let err = inspect(&head, None, &default_permitted_formats(), true).unwrap_err();
        assert!(matches!(err, InspectionError::MultipleFormats(_)), "{err}");
        assert!(err.to_string().contains("qcow2, gpt"), "{err}");
        // Declared raw: written bit for bit, no conversion, so nothing to fear.
        assert_eq!(
            inspect(&head, Some("raw"), &[], true).unwrap().plan,
            Plan::Raw(ImageFormat::Raw)
        );
    }

    #[test]
    fn raw_whole_disk_with_gpt_deploys_declared_raw_or_undeclared() {
        let disk = mbr(0xee);
        let def = default_permitted_formats();
        assert_eq!(
            inspect(&disk, Some("raw"), &def, true).unwrap().plan,
            Plan::Raw(ImageFormat::Gpt)
        );
        assert_eq!(
            inspect(&disk, None, &def, true).unwrap().plan,
            Plan::Raw(ImageFormat::Gpt)
        );
        assert_eq!(
            inspect(&disk, Some("unknown"), &def, true).unwrap().plan,
            Plan::Raw(ImageFormat::Gpt)
        );
        assert_eq!(
            inspect(&disk, Some("gpt"), &def, true).unwrap().plan,
            Plan::Raw(ImageFormat::Gpt)
        );
        let err = inspect(&disk, Some("qcow2"), &def, true).unwrap_err();
        assert_eq!(
            err,
            InspectionError::FormatMismatch {
                declared: "qcow2".into(),
                detected: "gpt".into()
            }
        );
        assert!(
            err.to_string()
                .starts_with("Security: expected format was qcow2"),
            "{err}"
        );
    }

    #[test]
    fn detected_format_must_be_permitted() {
        let err = inspect(&qcow2_head(), None, &permitted(&["raw", "gpt"]), true).unwrap_err();
        assert_eq!(err.to_string(), "Security: detected image format was qcow2, but only raw, gpt are allowed (permitted_image_formats)");
        // Without deep inspection IPA does not check the list.
        assert_eq!(
            inspect(&qcow2_head(), None, &permitted(&["raw"]), false)
                .unwrap()
                .plan,
            Plan::Qcow2
        );
        // A plain raw file detects as raw, which Ironic's list permits.
        let ironic = permitted(&["raw", "gpt", "qcow2", "iso"]);
        assert_eq!(
            inspect(&[0u8; 4096], None, &ironic, true).unwrap().plan,
            Plan::Raw(ImageFormat::Raw)
        );
        assert_eq!(
            inspect(&qcow2_head(), Some("qcow2"), &ironic, true)
                .unwrap()
                .plan,
            Plan::Qcow2
        );
        assert_eq!(
            inspect(&qcow2_head(), Some("QCOW2 "), &ironic, true)
                .unwrap()
                .plan,
            Plan::Qcow2
        );
    }

    #[test]
    fn unconvertible_formats_are_refused_even_when_permitted() {
        let all: Vec<String> = ImageFormat::ALL
            .iter()
            .map(|f| f.name().to_string())
            .collect();
        for (head, f) in [
            (&b"KDMV\x01\0\0\0"[..], "vmdk"),
            (b"conectix", "vhd"),
            (b"vhdxfile", "vhdx"),
            (b"QED\0", "qed"),
        ] {
            let err = inspect(head, None, &all, true).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("{f} images are not supported by this agent; convert it to raw or qcow2")
            );
            let err = inspect(head, None, &all, false).unwrap_err();
            assert!(matches!(err, InspectionError::Unsupported { .. }));
        }
        // Not permitted: IPA's message comes first.
        let err = inspect(b"KDMV\x01\0\0\0", None, &default_permitted_formats(), true).unwrap_err();
        assert!(matches!(err, InspectionError::NotPermitted { .. }), "{err}");
    }

    #[test]
    fn declared_raw_skips_inspection() {
        // Like IPA: a raw-declared file is written verbatim, whatever it looks like.
        let plan = inspect(b"KDMV\x01\0\0\0", Some("raw"), &[], true)
            .unwrap()
            .plan;
        assert_eq!(plan, Plan::Raw(ImageFormat::Raw));
        assert_eq!(
            inspect(&qcow2_head(), Some("raw"), &[], true).unwrap().plan,
            Plan::Raw(ImageFormat::Raw)
        );
    }

    #[test]
    fn mbr_safety_check() {
        let def = default_permitted_formats();
        let mut bad_flag = mbr(0x83);
        bad_flag[446] = 0x12;
        let err = inspect(&bad_flag, None, &def, true).unwrap_err();
        assert!(
            matches!(
                err,
                InspectionError::SafetyCheck {
                    format: ImageFormat::Gpt,
                    ..
                }
            ),
            "{err}"
        );
        let mut extra = mbr(0xee);
        extra[446 + 16 + 4] = 0x83;
        assert!(inspect(&extra, None, &def, true).is_err());
        let mut empty = mbr(0x83);
        empty[446 + 4] = 0;
        assert!(inspect(&empty, None, &def, true)
            .unwrap_err()
            .to_string()
            .contains("no partitions"));
        // Declared raw: not inspected.
        assert!(inspect(&empty, Some("raw"), &def, true).is_ok());
    }

    #[test]
    fn compression_policy() {
        let def = default_permitted_formats();
        let gz = [0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0];
        assert_eq!(
            inspect(&gz, None, &def, true).unwrap().plan,
            Plan::Decompress(Compression::Gzip)
        );
        assert_eq!(
            inspect(&gz, Some("raw"), &def, true).unwrap().plan,
            Plan::Decompress(Compression::Gzip)
        );
        let err = inspect(&gz, Some("qcow2"), &def, true).unwrap_err();
        assert_eq!(
            err,
            InspectionError::FormatMismatch {
                declared: "qcow2".into(),
                detected: "gzip-compressed image".into()
            }
        );
        let err = inspect(b"BZh91AY&SY\0\0", None, &def, true).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("bzip2-compressed images are not supported"),
            "{err}"
        );

        // The payload, once decompressed.
        let policy = inspect(&gz, None, &def, true).unwrap().payload_policy;
        assert_eq!(
            policy.check(Compression::Gzip, &mbr(0xee)),
            Ok(ImageFormat::Gpt)
        );
        let err = policy.check(Compression::Gzip, &qcow2_head()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the image is a gzip-compressed qcow2 image; only raw disk images may be compressed (upload the qcow2 image uncompressed, or convert it to raw first)"
        );
        let only_gpt = inspect(&gz, None, &permitted(&["gpt"]), true)
            .unwrap()
            .payload_policy;
        assert!(matches!(
            only_gpt.check(Compression::Gzip, &[0u8; 100]),
            Err(InspectionError::NotPermitted { .. })
        ));
        let declared_raw = inspect(&gz, Some("raw"), &permitted(&["gpt"]), true)
            .unwrap()
            .payload_policy;
        assert_eq!(
            declared_raw.check(Compression::Gzip, &[0u8; 100]),
            Ok(ImageFormat::Raw)
        );
        assert!(declared_raw
            .check(Compression::Gzip, &qcow2_head())
            .is_err());
    }
}
