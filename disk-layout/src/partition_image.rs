//! Partition images: IPA's `work_on_disk` / `make_partitions` layout, planned first (so the
//! image writer knows where the root partition is) and then applied on the target.
//!
//! The layout, from 1 MiB on, each partition a whole number of MiB as parted makes them:
//! the EFI system partition (UEFI; `efi_system_partition_size`, 550 MiB, FAT32 labelled
//! `efi-part`), or a BIOS boot partition (BIOS on GPT, 1 MiB), or a PReP partition (ppc64,
//! 8 MiB); then ephemeral (`ephemeral_mb`), swap (`swap_mb`, `swap1`), config drive (the
//! drive's size rounded up to MiB) and root last (`root_mb`; 0 = the rest of the disk), so
//! that cloud-init can grow it. The label is GPT for UEFI, else the node's `disk_label`
//! capability (default msdos).
//!
//! `preserve_ephemeral` (a rebuild keeping the ephemeral data) is implemented as in IPA: the
//! table is not rewritten and the ephemeral partition not formatted. Unlike IPA, which
//! assumes the old table matches, the agent checks that it does and refuses otherwise.
//!
//! The ephemeral filesystem is made by the system's `mkfs.<format>` on the partition's
//! device node once the kernel knows it ([`format_ephemeral`]).

use std::io;
use std::path::Path;

use blockdev::region::{Extent, Region};
use blockdev::signatures;
use blockdev::DeviceGuard;
use ironic_protocol::{ErrorClass, Node, PartitionSizes};
use serde_json::{Map, Value};

use crate::gpt_write::{self, Gpt, GptError};
use crate::mbr_write::{self, Mbr, MbrError};
use crate::partition_uuids::{self, UuidError};
use crate::{esp, swap, DiskTarget, MIB};

/// IPA's `efi_system_partition_size` default.
pub const DEFAULT_ESP_MB: u64 = 550;
/// IPA's `bios_boot_partition_size` default.
pub const DEFAULT_BIOS_BOOT_MB: u64 = 1;
const PREP_MB: u64 = 8;

#[derive(Debug, thiserror::Error)]
pub enum PartitionImageError {
    #[error("Invalid image_info for a partition image: {0}")]
    InvalidParams(String),
    #[error("Root partition of {root_mb} MiB does not fit on {device} ({disk_mib} MiB) after {used_mib} MiB of other partitions")]
    RootDoesNotFit {
        device: String,
        root_mb: u64,
        disk_mib: u64,
        used_mib: u64,
    },
    #[error("an msdos disk label holds at most 4 primary partitions; this layout needs {0}")]
    TooManyPartitions(usize),
    #[error("preserve_ephemeral: the partition table on {device} does not match the layout ({why}); refusing to write into it")]
    PreserveMismatch { device: String, why: String },
    #[error("File system {0} is not supported (no mkfs.{0} in the ramdisk)")]
    FileSystemNotSupported(String),
    #[error("Failed to create a file system in {device}: {output}")]
    Mkfs { device: String, output: String },
    #[error(transparent)]
    Gpt(#[from] GptError),
    #[error(transparent)]
    Mbr(#[from] MbrError),
    #[error(transparent)]
    Esp(#[from] esp::EspError),
    #[error(transparent)]
    Swap(#[from] swap::SwapError),
    #[error(transparent)]
    Uuids(#[from] UuidError),
    #[error(transparent)]
    NotAllowed(#[from] blockdev::NotAllowed),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl PartitionImageError {
    /// The IPA error class the conductor sees.
    pub fn ipa_class(&self) -> ErrorClass {
        match self {
            PartitionImageError::InvalidParams(_) => ErrorClass::InvalidCommandParamsError,
            PartitionImageError::FileSystemNotSupported(_) => ErrorClass::FileSystemNotSupported,
            _ => ErrorClass::DeploymentError,
        }
    }
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> PartitionImageError {
    let context = context.into();
    move |source| PartitionImageError::Io { context, source }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BootMode {
    Bios,
    Uefi,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DiskLabel {
    Gpt,
    Msdos,
}

/// IPA's `parse_capabilities`: a dict, a JSON string, or `k1:v1,k2:v2`.
fn capabilities(root: Option<&Map<String, Value>>) -> Map<String, Value> {
    match root.and_then(|r| r.get("capabilities")) {
        Some(Value::Object(m)) => m.clone(),
        Some(Value::String(s)) => {
            serde_json::from_str::<Map<String, Value>>(s).unwrap_or_else(|_| {
                s.split(',')
                    .filter_map(|kv| kv.split_once(':'))
                    .map(|(k, v)| (k.trim().to_string(), Value::String(v.trim().to_string())))
                    .collect()
            })
        }
        _ => Map::new(),
    }
}

fn text(v: Option<&Value>) -> Option<String> {
    v.map(|v| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// IPA's `get_node_boot_mode`: secure boot means UEFI; else `instance_info.deploy_boot_mode`,
/// the `boot_mode` capability, `driver_internal_info.deploy_boot_mode`, or the ramdisk's own.
pub fn node_boot_mode(node: &Node, ramdisk_uefi: bool) -> BootMode {
    let ii_caps = capabilities(node.instance_info());
    let node_caps = capabilities(node.properties());
    let secure = text(ii_caps.get("secure_boot").or(node_caps.get("secure_boot")))
        .is_some_and(|s| s.eq_ignore_ascii_case("true"));
    if secure {
        return BootMode::Uefi;
    }
    let mode = text(node.instance_info().and_then(|i| i.get("deploy_boot_mode")))
        .or_else(|| text(node_caps.get("boot_mode")))
        .or_else(|| {
            text(
                node.driver_internal_info()
                    .and_then(|d| d.get("deploy_boot_mode")),
            )
        });
    match mode.map(|m| m.to_lowercase()).as_deref() {
        Some("uefi") => BootMode::Uefi,
        Some("bios") => BootMode::Bios,
        _ if ramdisk_uefi => BootMode::Uefi,
        _ => BootMode::Bios,
    }
}

/// IPA's `get_partition_table_type_from_specs`: GPT for UEFI, else the `disk_label`
/// capability (instance_info first), default msdos.
pub fn node_disk_label(node: &Node, ramdisk_uefi: bool) -> DiskLabel {
    if node_boot_mode(node, ramdisk_uefi) == BootMode::Uefi {
        return DiskLabel::Gpt;
    }
    let ii = capabilities(node.instance_info());
    let props = capabilities(node.properties());
    match text(ii.get("disk_label").or(props.get("disk_label"))).as_deref() {
        Some("gpt") => DiskLabel::Gpt,
        _ => DiskLabel::Msdos,
    }
}

/// What the layout depends on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionImageParams {
    pub root_mb: u64,
    pub swap_mb: u64,
    pub ephemeral_mb: u64,
    pub ephemeral_format: Option<String>,
    pub preserve_ephemeral: bool,
    pub boot_mode: BootMode,
    pub disk_label: DiskLabel,
    /// `uname -m` of the machine: `ppc64*` gets a PReP partition instead of a BIOS boot one.
    pub cpu_arch: String,
    pub efi_system_partition_mb: u64,
    pub bios_boot_partition_mb: u64,
}

impl PartitionImageParams {
    /// From `image_info`'s partition sizes and the node (boot mode and disk label, as IPA
    /// takes them).
    pub fn new(sizes: PartitionSizes, node: &Node, ramdisk_uefi: bool, cpu_arch: &str) -> Self {
        PartitionImageParams {
            root_mb: sizes.root_mb,
            swap_mb: sizes.swap_mb,
            ephemeral_mb: sizes.ephemeral_mb,
            ephemeral_format: sizes.ephemeral_format,
            preserve_ephemeral: sizes.preserve_ephemeral,
            boot_mode: node_boot_mode(node, ramdisk_uefi),
            disk_label: node_disk_label(node, ramdisk_uefi),
            cpu_arch: cpu_arch.to_string(),
            efi_system_partition_mb: DEFAULT_ESP_MB,
            bios_boot_partition_mb: DEFAULT_BIOS_BOOT_MB,
        }
    }
}

/// What a partition is for; [`Role::key`] is IPA's name in `partitions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    EfiSystem,
    BiosBoot,
    Prep,
    Ephemeral,
    Swap,
    ConfigDrive,
    Root,
}

impl Role {
    pub fn key(&self) -> &'static str {
        match self {
            Role::EfiSystem => "efi system partition",
            Role::BiosBoot => "BIOS Boot partition",
            Role::Prep => "PReP Boot partition",
            Role::Ephemeral => "ephemeral",
            Role::Swap => "swap",
            Role::ConfigDrive => "configdrive",
            Role::Root => "root",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PlannedPartition {
    pub role: Role,
    pub number: u32,
    /// Bytes of the disk.
    pub extent: Extent,
}

/// The layout to create.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct PartitionPlan {
    pub disk_label: DiskLabel,
    pub boot_mode: BootMode,
    pub sector_size: u64,
    pub partitions: Vec<PlannedPartition>,
    pub preserve_ephemeral: bool,
}

impl PartitionPlan {
    pub fn get(&self, role: Role) -> Option<&PlannedPartition> {
        self.partitions.iter().find(|p| p.role == role)
    }

    /// Where the image goes.
    pub fn root(&self) -> Extent {
        self.get(Role::Root).map(|p| p.extent).unwrap_or_default()
    }

    /// `(IPA key, number)` of every partition, in creation order.
    pub fn roles(&self) -> Vec<(&'static str, u32)> {
        self.partitions
            .iter()
            .map(|p| (p.role.key(), p.number))
            .collect()
    }
}

/// Plans the layout on a disk of `disk_len` bytes with `sector_size` sectors;
/// `configdrive_len` is the decoded config drive's size.
pub fn plan(
    params: &PartitionImageParams,
    device: &str,
    disk_len: u64,
    sector_size: u64,
    configdrive_len: Option<u64>,
) -> Result<PartitionPlan, PartitionImageError> {
    let ppc = params.cpu_arch.starts_with("ppc64");
    let label = params.disk_label;
    let mut sizes: Vec<(Role, u64)> = Vec::new();
    if params.boot_mode == BootMode::Uefi {
        sizes.push((Role::EfiSystem, params.efi_system_partition_mb));
    }
    if params.boot_mode == BootMode::Bios && label == DiskLabel::Gpt && !ppc {
        sizes.push((Role::BiosBoot, params.bios_boot_partition_mb));
    }
    if ppc && params.boot_mode == BootMode::Bios {
        sizes.push((Role::Prep, PREP_MB));
    }
    if params.ephemeral_mb > 0 {
        sizes.push((Role::Ephemeral, params.ephemeral_mb));
    }
    if params.swap_mb > 0 {
        sizes.push((Role::Swap, params.swap_mb));
    }
    if let Some(len) = configdrive_len.filter(|l| *l > 0) {
        sizes.push((Role::ConfigDrive, len.div_ceil(MIB)));
    }
    sizes.push((Role::Root, params.root_mb));
    if label == DiskLabel::Msdos && sizes.len() > 4 {
        return Err(PartitionImageError::TooManyPartitions(sizes.len()));
    }
    let ss = sector_size;
    let disk_sectors = disk_len / ss;
    // The last sector a partition may use.
    let limit = match label {
        DiskLabel::Gpt => Gpt::new(disk_len, ss)?.last_usable_lba(),
        DiskLabel::Msdos => (disk_sectors - 1).min(u64::from(u32::MAX)),
    };
    let mut start = MIB / ss;
    let mut partitions = Vec::new();
    for (i, (role, mb)) in sizes.iter().enumerate() {
        // `mb` comes from the conductor's image_info (any u64): an overflow is a size that
        // does not fit, never a wrapped small one.
        let last = if *role == Role::Root && *mb == 0 {
            Some(limit)
        } else {
            mb.checked_mul(MIB / ss)
                .and_then(|sectors| start.checked_add(sectors))
                .and_then(|end| end.checked_sub(1))
        };
        let Some(last) = last.filter(|l| *l <= limit && *l >= start) else {
            return Err(PartitionImageError::RootDoesNotFit {
                device: device.to_string(),
                root_mb: params.root_mb,
                disk_mib: disk_len / MIB,
                used_mib: start * ss / MIB,
            });
        };
        partitions.push(PlannedPartition {
            role: *role,
            number: i as u32 + 1,
            extent: Extent::new(start * ss, (last - start + 1) * ss),
        });
        start = last + 1;
    }
    Ok(PartitionPlan {
        disk_label: label,
        boot_mode: params.boot_mode,
        sector_size: ss,
        partitions,
        preserve_ephemeral: params.preserve_ephemeral,
    })
}

/// What [`apply`] did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct AppliedLayout {
    pub plan: PartitionPlan,
    /// The ESP's filesystem UUID (`XXXX-XXXX`).
    pub esp_uuid: Option<String>,
    pub swap_uuid: Option<String>,
    /// The ephemeral partition to format with [`format_ephemeral`] once the kernel knows it:
    /// `(number, filesystem)`.
    pub ephemeral_to_format: Option<(u32, String)>,
}

/// Writes the plan on `target`: destroys the old metadata, writes the table, formats the
/// ESP, makes swap and writes the config drive (unless preserving, when the existing table
/// must match and the ephemeral partition is left alone). The caller then re-reads the
/// partition table, streams the image into [`PartitionPlan::root`] and formats the
/// ephemeral partition.
pub fn apply(
    target: &DiskTarget,
    plan: &PartitionPlan,
    params: &PartitionImageParams,
    configdrive: Option<&[u8]>,
) -> Result<AppliedLayout, PartitionImageError> {
    let device = target.path().display().to_string();
    let ss = plan.sector_size;
    if plan.preserve_ephemeral {
        check_existing(target, plan)?;
    } else {
        destroy_metadata(target)?;
        match plan.disk_label {
            DiskLabel::Gpt => {
                let mut gpt = Gpt::new(target.len(), ss)?;
                for p in &plan.partitions {
                    let ty = match p.role {
                        Role::EfiSystem => gpt_write::ESP_TYPE,
                        Role::BiosBoot => gpt_write::BIOS_BOOT_TYPE,
                        Role::Prep => gpt_write::PREP_TYPE,
                        Role::Swap => gpt_write::LINUX_SWAP_TYPE,
                        _ => gpt_write::LINUX_FS_TYPE,
                    };
                    // parted names GPT partitions after the `primary` part type it is given.
                    gpt.add_partition(
                        p.extent.offset / ss,
                        p.extent.end() / ss - 1,
                        ty,
                        "primary",
                        gpt_write::random_guid(),
                    )?;
                }
                gpt.write_protective_mbr(target)?;
                gpt.write(target)?;
            }
            DiskLabel::Msdos => {
                let mut mbr = Mbr::new(Mbr::random_signature());
                for p in &plan.partitions {
                    let (ty, boot) = match p.role {
                        Role::EfiSystem => (mbr_write::TYPE_ESP, true),
                        Role::Prep => (mbr_write::TYPE_PREP, true),
                        Role::Swap => (mbr_write::TYPE_LINUX_SWAP, false),
                        Role::Root => (mbr_write::TYPE_LINUX, plan.boot_mode == BootMode::Bios),
                        _ => (mbr_write::TYPE_LINUX, false),
                    };
                    mbr.add_primary(p.extent.offset / ss, p.extent.len / ss, ty, boot)?;
                }
                mbr.write(target)?;
            }
        }
    }
    let mut applied = AppliedLayout {
        plan: plan.clone(),
        esp_uuid: None,
        swap_uuid: None,
        ephemeral_to_format: None,
    };
    if let Some(p) = plan.get(Role::EfiSystem) {
        applied.esp_uuid = Some(esp::volume_id_text(esp::format(
            target, p.extent, "efi-part",
        )?));
    }
    if let (Some(p), Some(data)) = (plan.get(Role::ConfigDrive), configdrive) {
        target
            .write_all_at(data, p.extent.offset)
            .map_err(io_err(format!("writing the config drive to {device}")))?;
    }
    if let Some(p) = plan.get(Role::Swap) {
        wipe_signatures(target, p.extent)?;
        applied.swap_uuid = Some(swap::mkswap(target, p.extent, "swap1")?);
    }
    if let Some(p) = plan.get(Role::Ephemeral) {
        if !plan.preserve_ephemeral {
            let fs = params.ephemeral_format.clone().ok_or_else(|| {
                PartitionImageError::InvalidParams(
                    "ephemeral_mb is set but ephemeral_format is not".into(),
                )
            })?;
            applied.ephemeral_to_format = Some((p.number, fs));
        }
    }
    target.sync().map_err(io_err(format!("syncing {device}")))?;
    tracing::info!(device, plan = ?plan.roles(), "partition image layout written");
    Ok(applied)
}

/// IPA's `destroy_disk_metadata`: the disk's own signatures, the first and last GPT-sized
/// areas (34 and 33 sectors of 512 bytes, 6 and 5 of 4096).
fn destroy_metadata(target: &DiskTarget) -> Result<(), PartitionImageError> {
    let device = target.path().display().to_string();
    wipe_signatures(target, Extent::new(0, target.len()))?;
    let ss = target.sector_size();
    let (head, tail) = if ss == 4096 { (6, 5) } else { (34, 33) };
    target
        .zero(0, (head * ss).min(target.len()))
        .and_then(|_| {
            let tail_bytes = (tail * ss).min(target.len());
            target.zero(target.len() - tail_bytes, tail_bytes)
        })
        .map_err(io_err(format!("erasing the partition tables of {device}")))
}

/// `wipefs -a` on one region.
fn wipe_signatures(target: &DiskTarget, extent: Extent) -> Result<(), PartitionImageError> {
    let context = format!("erasing signatures on {}", target.path().display());
    let found =
        signatures::probe(&Region::new(target.file(), extent)).map_err(io_err(context.clone()))?;
    signatures::erase(target.file(), extent.offset, &found).map_err(io_err(context))?;
    Ok(())
}

fn check_existing(target: &DiskTarget, plan: &PartitionPlan) -> Result<(), PartitionImageError> {
    let device = target.path().display().to_string();
    let tables = target
        .tables()
        .map_err(io_err(format!("reading the partition table of {device}")))?;
    let mismatch = |why: String| PartitionImageError::PreserveMismatch {
        device: device.clone(),
        why,
    };
    let label_ok = match plan.disk_label {
        DiskLabel::Gpt => tables.gpt.is_some(),
        DiskLabel::Msdos => tables.gpt.is_none() && tables.mbr.is_some(),
    };
    if !label_ok {
        return Err(mismatch(format!("not a {:?} disk label", plan.disk_label)));
    }
    let existing = tables.partitions();
    for p in &plan.partitions {
        if !existing.contains(&(p.number, p.extent)) {
            return Err(mismatch(format!(
                "partition {} ({}) is not at bytes {}+{}",
                p.number,
                p.role.key(),
                p.extent.offset,
                p.extent.len
            )));
        }
    }
    Ok(())
}

/// Formats the ephemeral partition (`partition` is its device node, e.g. `/dev/sda1`) with
/// the system's `mkfs.<fs>`, labelled `ephemeral0`, as IPA's `utils.mkfs`.
pub fn format_ephemeral(
    partition: &Path,
    fs: &str,
    guard: &DeviceGuard,
) -> Result<(), PartitionImageError> {
    guard.check(partition, "format the ephemeral partition")?;
    if fs.is_empty() || !fs.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(PartitionImageError::FileSystemNotSupported(fs.into()));
    }
    let tool = format!("mkfs.{fs}");
    let exe = ["/usr/sbin", "/sbin", "/usr/bin", "/bin"]
        .iter()
        .map(|d| Path::new(d).join(&tool))
        .find(|p| p.is_file())
        .ok_or_else(|| PartitionImageError::FileSystemNotSupported(fs.into()))?;
    let mut cmd = std::process::Command::new(exe);
    if matches!(fs, "ext3" | "ext4") {
        cmd.arg("-F");
    }
    cmd.arg(if matches!(fs, "msdos" | "vfat") {
        "-n"
    } else {
        "-L"
    });
    cmd.arg("ephemeral0").arg(partition);
    let out = cmd.output().map_err(io_err(format!("running {tool}")))?;
    if !out.status.success() {
        return Err(PartitionImageError::Mkfs {
            device: partition.display().to_string(),
            output: format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        });
    }
    Ok(())
}

/// `get_partition_uuids` for the layout, once the image is in the root partition.
pub fn partition_uuids(
    target: &DiskTarget,
    disk: &Path,
    plan: &PartitionPlan,
) -> Result<Map<String, Value>, PartitionImageError> {
    Ok(partition_uuids::partition_image(
        target,
        disk,
        &plan.roles(),
    )?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{assert_sgdisk_clean, run, temp_disk};
    use serde_json::json;

    fn node(v: Value) -> Node {
        serde_json::from_value(v).unwrap()
    }

    fn params(info: Value, n: Value, ramdisk_uefi: bool) -> PartitionImageParams {
        let mut image_info = json!({"id": "img", "urls": ["http://x/img"]});
        for (k, v) in info.as_object().unwrap() {
            image_info[k] = v.clone();
        }
        let image_info: ironic_protocol::ImageInfo = serde_json::from_value(image_info).unwrap();
        PartitionImageParams::new(
            image_info.partition_sizes().unwrap(),
            &node(n),
            ramdisk_uefi,
            "x86_64",
        )
    }

    fn layout(plan: &PartitionPlan) -> Vec<(&'static str, u32, u64, u64)> {
        plan.partitions
            .iter()
            .map(|p| {
                (
                    p.role.key(),
                    p.number,
                    p.extent.offset / MIB,
                    p.extent.len / MIB,
                )
            })
            .collect()
    }

    #[test]
    fn ipa_layouts() {
        let info = json!({"root_mb": 1024, "swap_mb": 128, "ephemeral_mb": 256,
                          "ephemeral_format": "ext4", "preserve_ephemeral": false});
        // UEFI: GPT, ESP first, root last.
        let p = params(
            info.clone(),
            json!({"instance_info": {"deploy_boot_mode": "uefi"}}),
            false,
        );
        assert_eq!(
            (p.boot_mode, p.disk_label),
            (BootMode::Uefi, DiskLabel::Gpt)
        );
        let plan = super::plan(&p, "/dev/sda", 4 << 30, 512, Some(3 * MIB / 2)).unwrap();
        assert_eq!(
            layout(&plan),
            [
                ("efi system partition", 1, 1, 550),
                ("ephemeral", 2, 551, 256),
                ("swap", 3, 807, 128),
                ("configdrive", 4, 935, 2),
                ("root", 5, 937, 1024)
            ]
        );
        // BIOS with a gpt disk_label capability: a BIOS boot partition.
        let p = params(
            info.clone(),
            json!({"properties": {"capabilities": "boot_mode:bios,disk_label:gpt"}}),
            true,
        );
        assert_eq!(
            (p.boot_mode, p.disk_label),
            (BootMode::Bios, DiskLabel::Gpt)
        );
        let plan = super::plan(&p, "/dev/sda", 4 << 30, 512, None).unwrap();
        assert_eq!(layout(&plan)[0], ("BIOS Boot partition", 1, 1, 1));
        // BIOS default: msdos; too many partitions for it with a config drive... 4 is fine.
        let p = params(info, json!({}), false);
        assert_eq!(p.disk_label, DiskLabel::Msdos);
        let plan = super::plan(&p, "/dev/sda", 4 << 30, 512, Some(MIB)).unwrap();
        assert_eq!(plan.partitions.len(), 4);
        // root_mb 0: the rest of the disk; too large: a clear error.
        let p = params(
            json!({"root_mb": 0}),
            json!({"instance_info": {"deploy_boot_mode": "uefi"}}),
            false,
        );
        let plan = super::plan(&p, "/dev/sda", 1 << 30, 4096, None).unwrap();
        assert_eq!(plan.root().end(), ((1u64 << 30) / 4096 - 5) * 4096);
        let p = params(json!({"root_mb": 2048}), json!({}), false);
        let err = super::plan(&p, "/dev/sda", 1 << 30, 512, None).unwrap_err();
        assert!(
            err.to_string()
                .contains("does not fit on /dev/sda (1024 MiB)"),
            "{err}"
        );
        // Sizes whose byte count overflows u64 (and so wrapped to a small partition in a
        // release build) are sizes that do not fit.
        for huge in [
            json!({"root_mb": (1u64 << 44) + 1}),
            json!({"root_mb": u64::MAX}),
            json!({"root_mb": 100, "swap_mb": u64::MAX / 2048 + 1}),
        ] {
            let p = params(huge.clone(), json!({}), false);
            let err = super::plan(&p, "/dev/sda", 1 << 30, 512, None).unwrap_err();
            assert!(err.to_string().contains("does not fit"), "{huge}: {err}");
        }
        // Secure boot implies UEFI.
        let n = json!({"instance_info": {"capabilities": {"secure_boot": "true"}}});
        assert_eq!(node_boot_mode(&node(n), false), BootMode::Uefi);
    }

    #[test]
    fn applied_uefi_layout_is_valid_and_reports_ipas_uuids() {
        let (tmp, target) = temp_disk(1 << 30, 512);
        target.write_all_at(&[0xaa; 4096], 0).unwrap();
        let info =
            json!({"root_mb": 0, "swap_mb": 16, "ephemeral_mb": 8, "ephemeral_format": "ext4"});
        let p = params(
            info,
            json!({"instance_info": {"deploy_boot_mode": "uefi"}}),
            false,
        );
        let cd = b"config drive bytes".to_vec();
        let plan = super::plan(&p, "/dev/sda", target.len(), 512, Some(cd.len() as u64)).unwrap();
        let applied = apply(&target, &plan, &p, Some(&cd)).unwrap();
        assert_sgdisk_clean(tmp.path());
        assert_eq!(applied.ephemeral_to_format, Some((2, "ext4".into())));
        let cd_part = plan.get(Role::ConfigDrive).unwrap();
        assert_eq!(
            target.read_vec(cd_part.extent.offset, cd.len()).unwrap(),
            cd
        );
        // The image writer would now fill the root partition; an ext4 root for the test.
        let root = plan.root();
        let root_fs = tempfile::NamedTempFile::new().unwrap();
        root_fs.as_file().set_len(root.len).unwrap();
        let made = run(
            "mkfs.ext4",
            &[
                "-q",
                "-F",
                "-U",
                "0b4c1f5e-7f2a-4d0e-9c53-2f1d8c7e6a90",
                root_fs.path().to_str().unwrap(),
            ],
        );
        if made.is_some() {
            target
                .write_all_at(
                    &std::fs::read(root_fs.path()).unwrap()[..(2 * MIB) as usize],
                    root.offset,
                )
                .unwrap();
        }
        let uuids = partition_uuids(&target, Path::new("/dev/nvme0n1"), &plan).unwrap();
        let root_uuid = if made.is_some() {
            "0b4c1f5e-7f2a-4d0e-9c53-2f1d8c7e6a90".to_string()
        } else {
            crate::partition_uuids::list_partitions(&target).unwrap()[4]
                .partuuid
                .clone()
        };
        assert_eq!(
            Value::Object(uuids),
            json!({
                "partitions": {
                    "efi system partition": "/dev/nvme0n1p1", "ephemeral": "/dev/nvme0n1p2",
                    "swap": "/dev/nvme0n1p3", "configdrive": "/dev/nvme0n1p4", "root": "/dev/nvme0n1p5"},
                "root uuid": root_uuid,
                "efi system partition uuid": applied.esp_uuid.unwrap(),
            })
        );
        let keys: Vec<String> = partition_uuids(&target, Path::new("/dev/sda"), &plan)
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(
            keys,
            ["partitions", "root uuid", "efi system partition uuid"]
        );

        // preserve_ephemeral on the same disk: the table is kept; another layout is refused.
        let mut keep = plan.clone();
        keep.preserve_ephemeral = true;
        let p2 = PartitionImageParams {
            preserve_ephemeral: true,
            ..p.clone()
        };
        let again = apply(&target, &keep, &p2, Some(&cd)).unwrap();
        assert_eq!(again.ephemeral_to_format, None);
        let mut other = keep.clone();
        other.partitions[1].extent.len += MIB;
        assert!(matches!(
            apply(&target, &other, &p2, None),
            Err(PartitionImageError::PreserveMismatch { .. })
        ));
    }

    #[test]
    fn applied_bios_msdos_layout() {
        let (tmp, target) = temp_disk(256 * MIB, 512);
        let p = params(json!({"root_mb": 64, "swap_mb": 8}), json!({}), false);
        let plan = super::plan(&p, "/dev/sda", target.len(), 512, None).unwrap();
        apply(&target, &plan, &p, None).unwrap();
        if let Some((ok, text)) = run("sfdisk", &["-d", tmp.path().to_str().unwrap()]) {
            assert!(ok, "{text}");
            assert!(
                text.contains("start=        2048, size=       16384, type=82"),
                "{text}"
            );
            assert!(
                text.contains("start=       18432, size=      131072, type=83, bootable"),
                "{text}"
            );
        }
    }

    #[test]
    fn ephemeral_is_formatted_by_mkfs_when_present() {
        let part = tempfile::NamedTempFile::new().unwrap();
        part.as_file().set_len(16 * MIB).unwrap();
        let guard = DeviceGuard::new(true, vec![], "/nonexistent-sys");
        assert!(matches!(
            format_ephemeral(part.path(), "nosuchfs", &guard),
            Err(PartitionImageError::FileSystemNotSupported(_))
        ));
        let outside = DeviceGuard::new(false, vec![], "/nonexistent-sys");
        assert!(matches!(
            format_ephemeral(part.path(), "ext4", &outside),
            Err(PartitionImageError::NotAllowed(_))
        ));
        if crate::testutil::tool("mkfs.ext4").is_some() {
            format_ephemeral(part.path(), "ext4", &guard).unwrap();
            if let Some((_, text)) = run(
                "blkid",
                &["-p", "-o", "export", part.path().to_str().unwrap()],
            ) {
                assert!(
                    text.contains("LABEL=ephemeral0") && text.contains("TYPE=ext4"),
                    "{text}"
                );
            }
        }
    }
}
