//! Why a qcow2 image is refused.

/// Why a qcow2 image is refused. Each names the field or limit at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Qcow2Error {
    #[error("the qcow2 header is truncated ({len} bytes)")]
    HeaderTruncated { len: usize },
    #[error("not a qcow2 image (bad magic)")]
    BadMagic,
    #[error("qcow2 version {0} is not supported (only versions 2 and 3)")]
    UnsupportedVersion(u32),
    #[error("qcow2 image has a backing file (backing_file_offset {offset}, backing_file_size {size}); only self-contained images can be deployed: flatten it with qemu-img convert")]
    BackingFile { offset: u64, size: u32 },
    #[error("qcow2 image uses an external data file (incompatible feature bit 2 or a data-file header extension); only self-contained images can be deployed")]
    ExternalDataFile,
    #[error("qcow2 image is encrypted (crypt_method {method}, or an encryption header extension); encrypted images cannot be deployed")]
    Encrypted { method: u32 },
    #[error("qcow2 image is marked corrupt (incompatible feature bit 1); repair it with qemu-img check -r all")]
    Corrupt,
    #[error(
        "qcow2 image uses unknown incompatible features (bits {0:#x}); this agent cannot read it"
    )]
    UnknownFeatures(u64),
    #[error("qcow2 cluster_bits {0} is out of range (9 to 21, i.e. 512 B to 2 MiB clusters; at least 14 with extended L2 entries)")]
    ClusterBits(u32),
    #[error("qcow2 header_length {0} is invalid (at least 104, a multiple of 8, within the first cluster)")]
    HeaderLength(u32),
    #[error("qcow2 compression_type {0} is not supported or does not match incompatible feature bit 3 (0: zlib, 1: zstd)")]
    CompressionType(u8),
    #[error("qcow2 refcount_order {0} is out of range (at most 6)")]
    RefcountOrder(u32),
    #[error("qcow2 virtual size is 0 (less than one 512-byte sector)")]
    VirtualSizeZero,
    #[error("qcow2 virtual size {size} is larger than the limit of {limit} bytes")]
    VirtualSizeTooLarge { size: u64, limit: u64 },
    #[error("qcow2 image has a huge L1 table ({entries} entries, more than {limit_bytes} bytes)")]
    HugeL1 { entries: u64, limit_bytes: u64 },
    #[error("qcow2 L1 table is too small for the virtual size (l1_size {l1_size}, {needed} entries needed)")]
    L1TooSmall { l1_size: u32, needed: u64 },
    #[error("qcow2 offset of {what} ({offset:#x}) is not aligned to the cluster size")]
    Misaligned { what: String, offset: u64 },
    #[error("cluster offset past the end of the image: {what} is at offset {offset:#x}, but the image file is {file_size} bytes")]
    PastEnd {
        what: String,
        offset: u64,
        file_size: u64,
    },
    #[error("{what} has reserved bits set ({value:#018x})")]
    ReservedBits { what: String, value: u64 },
    #[error("the subcluster bitmap for guest offset {guest_offset:#x} is invalid ({bitmap:#018x}): a subcluster is both allocated and zero, or allocated without a host cluster")]
    BadSubclusters { guest_offset: u64, bitmap: u64 },
    #[error("a qcow2 header extension at offset {offset} runs past the first cluster")]
    HeaderExtension { offset: u64 },
    #[error("the compressed cluster for guest offset {guest_offset:#x} is corrupt: {reason}")]
    BadCompressedCluster { guest_offset: u64, reason: String },
    #[error("qcow2 image is too fragmented to stream: more than {limit} data-cluster runs are mapped ahead of the read position (max_ahead_mappings); rewrite it with qemu-img convert")]
    TooFragmented { limit: usize },
    #[error("qcow2 image stores too much before the tables that map it: more than {limit} clusters to remember (max_unordered_clusters); rewrite it with qemu-img convert")]
    TooManyUnordered { limit: usize },
    #[error("qcow2 image needs more than {budget} bytes of decoder memory (max_decoder_memory) for {what}; rewrite it with qemu-img convert")]
    MemoryBudget { what: &'static str, budget: u64 },
    #[error("the host cluster at offset {host_offset:#x} is mapped as data by an L2 table that comes after it, but it was not recorded when it streamed past (it holds qcow2 metadata or was mapped elsewhere too); rewrite the image with qemu-img convert")]
    SharedCluster { host_offset: u64 },
    #[error("the image file changed on the server: the cluster at offset {offset:#x} read again differs from the bytes streamed and checksummed before")]
    RefetchMismatch { offset: u64 },
    #[error("internal error: {covered} of {virtual_size} guest bytes were covered")]
    Coverage { covered: u64, virtual_size: u64 },
}
