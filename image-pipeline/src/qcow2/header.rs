//! The qcow2 header, validated strictly: every field this agent relies on is checked before
//! any table is read, so a hostile header fails with a named field instead of steering an
//! allocation or a read. Layout: QEMU's docs/interop/qcow2.txt.

use super::error::Qcow2Error;
use crate::decoder::Limits;

pub(crate) const MAGIC: &[u8; 4] = b"QFI\xfb";
const V2_HEADER_LEN: usize = 72;
const V3_HEADER_LEN: usize = 104;

const INCOMPAT_DIRTY: u64 = 1 << 0;
const INCOMPAT_CORRUPT: u64 = 1 << 1;
const INCOMPAT_DATA_FILE: u64 = 1 << 2;
const INCOMPAT_COMPRESSION: u64 = 1 << 3;
const INCOMPAT_EXTL2: u64 = 1 << 4;
const INCOMPAT_KNOWN: u64 =
    INCOMPAT_DIRTY | INCOMPAT_CORRUPT | INCOMPAT_DATA_FILE | INCOMPAT_COMPRESSION | INCOMPAT_EXTL2;

const EXT_END: u32 = 0;
const EXT_CRYPTO: u32 = 0x0537_be77;
const EXT_DATA_FILE: u32 = 0x4441_5441;

/// Above this no virtual size makes sense (QEMU cannot address it either), whatever the
/// configured limit; it keeps all guest offset arithmetic far from overflow.
const ABSOLUTE_MAX_VIRTUAL_SIZE: u64 = 1 << 62;

/// How compressed clusters are compressed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClusterCompression {
    /// Raw deflate (no zlib header), type 0.
    Zlib,
    /// One zstd frame per cluster, type 1.
    Zstd,
}

/// The fields of a validated header that decoding needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    pub version: u32,
    pub cluster_bits: u32,
    pub virtual_size: u64,
    pub l1_size: u32,
    pub l1_table_offset: u64,
    pub compression: ClusterCompression,
    pub extended_l2: bool,
    /// Refcounts may be stale; harmless for reading (refcounts are not used).
    pub dirty: bool,
    /// Where header extensions start.
    pub header_length: u32,
    pub refcount_table_offset: u64,
    pub refcount_table_clusters: u32,
}

impl Header {
    pub fn cluster_size(&self) -> u64 {
        1 << self.cluster_bits
    }

    /// Bytes per L2 entry.
    pub fn l2_entry_size(&self) -> u64 {
        if self.extended_l2 {
            16
        } else {
            8
        }
    }

    pub fn l2_entries(&self) -> u64 {
        self.cluster_size() / self.l2_entry_size()
    }

    /// Guest clusters in the virtual disk (the last one may be partial).
    pub fn guest_clusters(&self) -> u64 {
        self.virtual_size.div_ceil(self.cluster_size())
    }

    /// L1 entries needed to map the virtual disk.
    pub fn l1_needed(&self) -> u64 {
        self.guest_clusters().div_ceil(self.l2_entries())
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// Parses and validates the fixed header. `head` must hold at least the header itself
/// (104 bytes suffice for every version this agent reads); extensions are checked by
/// [`check_extensions`].
pub(crate) fn parse(
    head: &[u8],
    file_size: Option<u64>,
    limits: &Limits,
) -> Result<Header, Qcow2Error> {
    if head.len() < 8 {
        return Err(Qcow2Error::HeaderTruncated { len: head.len() });
    }
    if &head[..4] != MAGIC {
        return Err(Qcow2Error::BadMagic);
    }
    let version = be32(head, 4);
    if version != 2 && version != 3 {
        return Err(Qcow2Error::UnsupportedVersion(version));
    }
    let fixed = if version == 2 {
        V2_HEADER_LEN
    } else {
        V3_HEADER_LEN
    };
    if head.len() < fixed {
        return Err(Qcow2Error::HeaderTruncated { len: head.len() });
    }
    let backing_file_offset = be64(head, 8);
    let backing_file_size = be32(head, 16);
    if backing_file_offset != 0 || backing_file_size != 0 {
        return Err(Qcow2Error::BackingFile {
            offset: backing_file_offset,
            size: backing_file_size,
        });
    }
    let cluster_bits = be32(head, 20);
    if !(9..=21).contains(&cluster_bits) {
        return Err(Qcow2Error::ClusterBits(cluster_bits));
    }
    let cluster_size = 1u64 << cluster_bits;
    let virtual_size = be64(head, 24);
    let crypt_method = be32(head, 32);
    if crypt_method != 0 {
        return Err(Qcow2Error::Encrypted {
            method: crypt_method,
        });
    }
    let l1_size = be32(head, 36);
    let l1_table_offset = be64(head, 40);
    let refcount_table_offset = be64(head, 48);
    let refcount_table_clusters = be32(head, 56);
    let nb_snapshots = be32(head, 60);
    let snapshots_offset = be64(head, 64);

    let (incompatible, refcount_order, header_length) = if version == 2 {
        (0, 4, V2_HEADER_LEN as u32)
    } else {
        (be64(head, 72), be32(head, 96), be32(head, 100))
    };
    if version == 3
        && (header_length < V3_HEADER_LEN as u32
            || header_length % 8 != 0
            || u64::from(header_length) > cluster_size)
    {
        return Err(Qcow2Error::HeaderLength(header_length));
    }
    if incompatible & INCOMPAT_CORRUPT != 0 {
        return Err(Qcow2Error::Corrupt);
    }
    if incompatible & INCOMPAT_DATA_FILE != 0 {
        return Err(Qcow2Error::ExternalDataFile);
    }
    if incompatible & !INCOMPAT_KNOWN != 0 {
        return Err(Qcow2Error::UnknownFeatures(incompatible & !INCOMPAT_KNOWN));
    }
    let extended_l2 = incompatible & INCOMPAT_EXTL2 != 0;
    if extended_l2 && cluster_bits < 14 {
        // Subclusters are cluster_size / 32 and must be at least 512 bytes.
        return Err(Qcow2Error::ClusterBits(cluster_bits));
    }
    // compression_type is present when header_length covers byte 104.
    let compression_type = if header_length > V3_HEADER_LEN as u32 {
        if head.len() <= V3_HEADER_LEN {
            return Err(Qcow2Error::HeaderTruncated { len: head.len() });
        }
        head[V3_HEADER_LEN]
    } else {
        0
    };
    let compression = match (compression_type, incompatible & INCOMPAT_COMPRESSION != 0) {
        (0, false) => ClusterCompression::Zlib,
        (1, true) => ClusterCompression::Zstd,
        (t, _) => return Err(Qcow2Error::CompressionType(t)),
    };
    if refcount_order > 6 {
        return Err(Qcow2Error::RefcountOrder(refcount_order));
    }

    // QEMU works in 512-byte sectors and ignores a partial last one (qemu-img writes sizes
    // rounded up to 512, so only hand-made images have one); do the same, so that what is
    // written matches `qemu-img convert` byte for byte.
    let virtual_size = virtual_size / 512 * 512;
    if virtual_size == 0 {
        return Err(Qcow2Error::VirtualSizeZero);
    }
    let limit = limits.max_virtual_size.min(ABSOLUTE_MAX_VIRTUAL_SIZE);
    if virtual_size > limit {
        return Err(Qcow2Error::VirtualSizeTooLarge {
            size: virtual_size,
            limit,
        });
    }
    let header = Header {
        version,
        cluster_bits,
        virtual_size,
        l1_size,
        l1_table_offset,
        compression,
        extended_l2,
        dirty: incompatible & INCOMPAT_DIRTY != 0,
        header_length,
        refcount_table_offset,
        refcount_table_clusters,
    };

    // The L1 table: as large as the virtual size needs, not huge, aligned, inside the file.
    if u64::from(l1_size) * 8 > limits.max_l1_bytes {
        return Err(Qcow2Error::HugeL1 {
            entries: l1_size.into(),
            limit_bytes: limits.max_l1_bytes,
        });
    }
    let needed = header.l1_needed();
    if needed * 8 > limits.max_l1_bytes {
        return Err(Qcow2Error::HugeL1 {
            entries: needed,
            limit_bytes: limits.max_l1_bytes,
        });
    }
    if u64::from(l1_size) < needed {
        return Err(Qcow2Error::L1TooSmall { l1_size, needed });
    }
    if l1_table_offset & (cluster_size - 1) != 0 || l1_table_offset == 0 {
        return Err(Qcow2Error::Misaligned {
            what: "the L1 table".into(),
            offset: l1_table_offset,
        });
    }
    if let Some(size) = file_size {
        if l1_table_offset
            .checked_add(needed * 8)
            .is_none_or(|end| end > size)
        {
            return Err(Qcow2Error::PastEnd {
                what: "the L1 table".into(),
                offset: l1_table_offset,
                file_size: size,
            });
        }
    }
    if refcount_table_offset & (cluster_size - 1) != 0 {
        return Err(Qcow2Error::Misaligned {
            what: "the refcount table".into(),
            offset: refcount_table_offset,
        });
    }
    if nb_snapshots > 0 && snapshots_offset & (cluster_size - 1) != 0 {
        return Err(Qcow2Error::Misaligned {
            what: "the snapshot table".into(),
            offset: snapshots_offset,
        });
    }
    Ok(header)
}

/// Walks the header extensions in the first cluster (`cluster0`: the first cluster of the
/// file, or the whole file if smaller). Refuses an external data file or an encryption
/// header; ignores the others.
pub(crate) fn check_extensions(header: &Header, cluster0: &[u8]) -> Result<(), Qcow2Error> {
    let end = (header.cluster_size() as usize).min(cluster0.len());
    let mut at = header.header_length as usize;
    while at + 8 <= end {
        let kind = be32(cluster0, at);
        let len = be32(cluster0, at + 4) as usize;
        if kind == EXT_END {
            return Ok(());
        }
        let data_end = at + 8 + len;
        if data_end > end {
            return Err(Qcow2Error::HeaderExtension { offset: at as u64 });
        }
        match kind {
            EXT_DATA_FILE => return Err(Qcow2Error::ExternalDataFile),
            EXT_CRYPTO => return Err(Qcow2Error::Encrypted { method: 0 }),
            _ => {}
        }
        at = data_end.next_multiple_of(8);
    }
    // No end marker before the end of the cluster: the area simply ends there (as in QEMU).
    Ok(())
}

/// Bytes of the first cluster [`check_extensions`] needs: up to the end marker, or the whole
/// cluster. False means `buf` already holds enough.
pub(crate) fn extensions_need_more(header: &Header, buf: &[u8]) -> bool {
    let cluster = header.cluster_size() as usize;
    let mut at = header.header_length as usize;
    loop {
        if at + 8 > buf.len() {
            return buf.len() < cluster;
        }
        let kind = be32(buf, at);
        if kind == EXT_END {
            return false;
        }
        let next = (at + 8 + be32(buf, at + 4) as usize).next_multiple_of(8);
        if next > buf.len() {
            return buf.len() < cluster;
        }
        at = next;
    }
}
