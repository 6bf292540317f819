//! `image.install_bootloader` and IPA's `manage_uefi`, without `mount` or `efibootmgr`: the
//! EFI system partition is read from the disk's bytes, the boot entries are written as
//! efivarfs files.
//!
//! IPA's behaviour, step by step ([`install_bootloader`]):
//! 1. If the agent booted in UEFI mode (here: the efivars directory exists), find the ESP
//!    of the target disk (GPT type `C12A7328-...` or MBR type `0xEF`, else the partition
//!    whose filesystem UUID, PARTUUID or label is `efi_system_part_uuid`), find its boot
//!    loaders ([`crate::esp::find_bootloaders`]) and register each: a `BOOTX64.CSV` hint
//!    names the loader and the label, otherwise the label is `ironic1`, `ironic2`... Entries
//!    with the same label are replaced, the new entry goes first in `BootOrder`. Done.
//! 2. Otherwise, with `root_uuid` null or `0x00000000` (a whole-disk image), nothing to do.
//! 3. Otherwise IPA would run `grub-install`, which it only does with
//!    `enable_bios_bootloader_install` (off by default since CVE-2026-43003) and this agent
//!    never does: an error, unless failures are to be ignored.
//!
//! Outside a ramdisk nothing is written to the EFI variables (nor the MBR signature that
//! `efibootmgr -w` would add): what would be written is logged and returned as a dry run.

use std::collections::BTreeMap;
use std::io;
use std::path::Path;

use blockdev::DeviceGuard;
use ironic_protocol::ErrorClass;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::efivarfs::{boot_var, EfiVars, NV_BS_RT};
use crate::esp::{self, EspError};
use crate::load_option::{LoadOption, PartitionSignature};
use crate::mbr_write::Mbr;
use crate::partition_uuids::{list_partitions, partition_path, PartInfo, UuidError};
use crate::DiskTarget;

/// The parameters of `image.install_bootloader`, as the conductor sends them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BootloaderParams {
    pub root_uuid: Option<String>,
    pub efi_system_part_uuid: Option<String>,
    pub prep_boot_part_uuid: Option<String>,
    pub target_boot_mode: Option<String>,
    pub ignore_bootloader_failure: Option<bool>,
    /// The agent's own `ignore_bootloader_failure` setting (`ipa-ignore-bootloader-failure`),
    /// which applies when the conductor sent none.
    pub ignore_failure_default: bool,
}

impl BootloaderParams {
    /// From the command's parameters; unknown keys are refused as IPA's signature would.
    pub fn from_command(
        params: &Map<String, Value>,
        ignore_failure_default: bool,
    ) -> Result<Self, BootloaderError> {
        let text = |k: &str| -> Result<Option<String>, BootloaderError> {
            match params.get(k) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(other) => Err(BootloaderError::InvalidParams(format!(
                    "{k} must be a string, got {other}"
                ))),
            }
        };
        for k in params.keys() {
            if !matches!(
                k.as_str(),
                "root_uuid"
                    | "efi_system_part_uuid"
                    | "prep_boot_part_uuid"
                    | "target_boot_mode"
                    | "ignore_bootloader_failure"
            ) {
                return Err(BootloaderError::InvalidParams(format!(
                    "install_bootloader() got an unexpected keyword argument '{k}'"
                )));
            }
        }
        let ignore = match params.get("ignore_bootloader_failure") {
            None | Some(Value::Null) => None,
            Some(Value::Bool(b)) => Some(*b),
            Some(other) => {
                return Err(BootloaderError::InvalidParams(format!(
                    "ignore_bootloader_failure must be a boolean, got {other}"
                )))
            }
        };
        Ok(BootloaderParams {
            root_uuid: text("root_uuid")?,
            efi_system_part_uuid: text("efi_system_part_uuid")?,
            prep_boot_part_uuid: text("prep_boot_part_uuid")?,
            target_boot_mode: text("target_boot_mode")?,
            ignore_bootloader_failure: ignore,
            ignore_failure_default,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum BootloaderError {
    #[error(
        "No EFI partition could be detected on device {0} and EFI partition UUID has not been \
         recorded during deployment (which is often the case for whole disk images). Are you \
         using a UEFI-compatible image?"
    )]
    NoEsp(String),
    #[error(transparent)]
    Esp(#[from] EspError),
    #[error(transparent)]
    Partitions(#[from] UuidError),
    #[error("boot loader hint {path} on the ESP is not a valid CSV boot entry: {contents:?}")]
    Csv { path: String, contents: String },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("no free Boot#### variable number left")]
    NoFreeBootNumber,
    #[error(
        "Installing a legacy BIOS boot loader (grub-install) is not supported by this agent \
         (IPA disables it by default: enable_bios_bootloader_install, CVE-2026-43003 \
         mitigation). Use a whole-disk image, or a UEFI image with boot loaders on its ESP."
    )]
    LegacyBootloader,
    #[error("Invalid command parameters: {0}")]
    InvalidParams(String),
}

impl BootloaderError {
    /// The IPA error class the conductor sees (`command_error.type`).
    pub fn ipa_class(&self) -> ErrorClass {
        match self {
            BootloaderError::NoEsp(_) => ErrorClass::DeviceNotFound,
            BootloaderError::LegacyBootloader => ErrorClass::InvalidImage,
            BootloaderError::InvalidParams(_) => ErrorClass::InvalidCommandParamsError,
            _ => ErrorClass::CommandExecutionError,
        }
    }
}

/// One boot entry registered (or that would be).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootEntry {
    /// `Boot0003`.
    pub variable: String,
    pub label: String,
    /// `\EFI\debian\shimx64.efi`.
    pub loader: String,
    /// An identical entry was there already and was kept.
    pub reused: bool,
}

/// What `manage_uefi` did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UefiSetup {
    pub esp_partition: u32,
    /// Loader files found on the ESP, as IPA lists them.
    pub loaders: Vec<String>,
    pub entries: Vec<BootEntry>,
    /// Variables deleted because they carried one of our labels.
    pub removed: Vec<String>,
    pub boot_order: Vec<String>,
    /// The MBR disk signature written because the disk had none (`efibootmgr -w`).
    pub disk_signature_written: Option<String>,
    /// Nothing was written: the agent does not run in a ramdisk.
    pub dry_run: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum BootloaderOutcome {
    /// UEFI boot entries are in place.
    Uefi(UefiSetup),
    /// Nothing to install (a whole-disk image without UEFI boot loaders to register).
    NothingToDo { reason: String },
    /// Installing failed and the failure is ignored (`ignore_bootloader_failure`).
    FailureIgnored { error: String },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(io::Error) -> BootloaderError {
    let context = context.into();
    move |source| BootloaderError::Io { context, source }
}

/// `image.install_bootloader` on `target` (the disk chosen by `get_os_install_device`).
/// `efivars_root` is `/sys/firmware/efi/efivars` in production; its existence is how the
/// agent knows it booted in UEFI mode.
pub fn install_bootloader(
    target: &DiskTarget,
    params: &BootloaderParams,
    guard: &DeviceGuard,
    efivars_root: &Path,
) -> Result<BootloaderOutcome, BootloaderError> {
    let ignore = params
        .ignore_bootloader_failure
        .unwrap_or(params.ignore_failure_default);
    let uefi = efivars_root.is_dir();
    let current = if uefi { "uefi" } else { "bios" };
    let device = target.path().display().to_string();
    if let Some(wanted) = params.target_boot_mode.as_deref().filter(|t| *t != current) {
        tracing::warn!(
            target_boot_mode = wanted,
            current_boot_mode = current,
            "boot mode mismatch: installing the boot loader may fail or work incorrectly"
        );
    }
    if params.prep_boot_part_uuid.is_some() {
        tracing::warn!("PReP partition support is deprecated in IPA and not implemented here");
    }
    if uefi {
        let vars = EfiVars::new(efivars_root);
        match manage_uefi(
            target,
            params.efi_system_part_uuid.as_deref(),
            &vars,
            guard.in_ramdisk(),
        ) {
            Ok(Some(setup)) => return Ok(BootloaderOutcome::Uefi(setup)),
            Ok(None) => {}
            Err(e) => {
                tracing::error!(device, error = %e, "error setting up the UEFI boot loader");
                if !ignore {
                    return Err(e);
                }
            }
        }
    }
    if params
        .root_uuid
        .as_deref()
        .is_none_or(|u| u == "0x00000000")
    {
        let reason = "Not using grub2-install since root UUID is not provided. Assuming a whole \
                      disk image"
            .to_string();
        tracing::info!(device, "{reason}");
        return Ok(BootloaderOutcome::NothingToDo { reason });
    }
    let e = BootloaderError::LegacyBootloader;
    tracing::error!(device, error = %e, "error setting up the boot loader");
    if ignore {
        Ok(BootloaderOutcome::FailureIgnored {
            error: e.to_string(),
        })
    } else {
        Err(e)
    }
}

/// The ESP of the disk: the first partition typed as one, else the one `uuid` names.
fn find_esp(target: &DiskTarget, uuid: Option<&str>) -> Result<PartInfo, BootloaderError> {
    let parts = list_partitions(target)?;
    if let Some(p) = parts.iter().find(|p| p.is_esp) {
        return Ok(p.clone());
    }
    if let Some(uuid) = uuid {
        let hit = parts.iter().find(|p| {
            let fs = p.fs.as_ref();
            p.partuuid.eq_ignore_ascii_case(uuid)
                || fs
                    .and_then(|f| f.uuid.as_deref())
                    .is_some_and(|u| u.eq_ignore_ascii_case(uuid))
                || fs.and_then(|f| f.label.as_deref()) == Some(uuid)
        });
        if let Some(p) = hit {
            return Ok(p.clone());
        }
    }
    Err(BootloaderError::NoEsp(target.path().display().to_string()))
}

/// Decodes a `BOOT*.CSV` (UTF-16, little-endian unless its byte order mark says otherwise).
fn decode_csv(data: &[u8]) -> String {
    let (big_endian, body) = match data {
        [0xff, 0xfe, rest @ ..] => (false, rest),
        [0xfe, 0xff, rest @ ..] => (true, rest),
        _ => (false, data),
    };
    let units: Vec<u16> = body
        .chunks_exact(2)
        .map(|c| {
            if big_endian {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                u16::from_le_bytes([c[0], c[1]])
            }
        })
        .collect();
    String::from_utf16_lossy(&units)
}

/// The loader path and label of each boot entry to create, as IPA's `_run_efibootmgr`.
fn entries_for(
    fs: &esp::Esp<'_>,
    loaders: &[String],
) -> Result<Vec<(String, String)>, BootloaderError> {
    let mut out = Vec::new();
    for (i, v_bl) in loaders.iter().enumerate() {
        if v_bl.to_lowercase().contains("csv") {
            let contents = decode_csv(&fs.read_file(v_bl)?);
            let fields: Vec<&str> = contents.splitn(4, ',').collect();
            if fields.len() < 2 {
                return Err(BootloaderError::Csv {
                    path: v_bl.clone(),
                    contents,
                });
            }
            let csv_name = v_bl.rsplit('/').next().unwrap_or(v_bl);
            let path = v_bl.replace(csv_name, fields[0]);
            out.push((
                format!("\\{}", path.replace('/', "\\")),
                fields[1].to_string(),
            ));
        } else {
            out.push((
                format!("\\{}", v_bl.replace('/', "\\")),
                format!("ironic{}", i + 1),
            ));
        }
    }
    Ok(out)
}

/// IPA's `manage_uefi` for one disk: `Ok(None)` when the ESP holds no boot loader.
/// With `write` false, nothing is written anywhere.
pub fn manage_uefi(
    target: &DiskTarget,
    efi_system_part_uuid: Option<&str>,
    vars: &EfiVars,
    write: bool,
) -> Result<Option<UefiSetup>, BootloaderError> {
    let device = target.path().display().to_string();
    let esp_part = find_esp(target, efi_system_part_uuid)?;
    let wanted = {
        let name = partition_path(target.path(), esp_part.number);
        let fs = esp::Esp::open(target, esp_part.extent, &name.display().to_string())?;
        let loaders = fs.find_bootloaders()?;
        if loaders.is_empty() {
            tracing::warn!(
                device,
                partition = esp_part.number,
                "Empty EFI partition detected."
            );
            return Ok(None);
        }
        let wanted = entries_for(&fs, &loaders)?;
        (loaders, wanted)
    };
    let (loaders, wanted) = wanted;

    let mut signature_written = None;
    let sig = match (esp_part.gpt_guid, esp_part.mbr_signature) {
        (Some(g), _) => PartitionSignature::Gpt(g),
        (None, Some(0)) | (None, None) => {
            let s = Mbr::random_signature();
            signature_written = Some(format!("0x{s:08x}"));
            if write {
                target
                    .write_all_at(&s.to_le_bytes(), 440)
                    .and_then(|_| target.sync())
                    .map_err(io_err(format!("writing a disk signature to {device}")))?;
            }
            PartitionSignature::Mbr(s)
        }
        (None, Some(s)) => PartitionSignature::Mbr(s),
    };

    let ss = target.sector_size();
    let existing: BTreeMap<u16, Vec<u8>> = vars
        .boot_entries()
        .map_err(io_err(format!(
            "reading boot entries in {}",
            vars.root().display()
        )))?
        .into_iter()
        .collect();
    let original_order = vars.boot_order().map_err(io_err("reading BootOrder"))?;
    let mut entries = existing.clone();
    let mut order = original_order.clone();
    let mut created: Vec<(u16, Vec<u8>)> = Vec::new();
    let mut removed = Vec::new();
    let mut report = Vec::new();
    for (loader, label) in &wanted {
        let option = LoadOption::for_loader(
            label,
            esp_part.number,
            esp_part.extent.offset / ss,
            esp_part.extent.len / ss,
            sig,
            loader,
        )
        .encode();
        // Entries that were there before with this label: one identical entry is kept,
        // the others go (IPA deletes them all and creates a new one).
        let same_label: Vec<u16> = existing
            .iter()
            .filter(|(n, data)| {
                entries.contains_key(n)
                    && LoadOption::decode(data).is_some_and(|o| o.description == *label)
            })
            .map(|(n, _)| *n)
            .collect();
        let mut reused = None;
        for n in same_label {
            if reused.is_none() && existing.get(&n) == Some(&option) {
                reused = Some(n);
            } else {
                entries.remove(&n);
                order.retain(|o| *o != n);
                removed.push(boot_var(n));
            }
        }
        let number = match reused {
            Some(n) => n,
            None => {
                let n = (0..=u16::MAX)
                    .find(|n| !entries.contains_key(n))
                    .ok_or(BootloaderError::NoFreeBootNumber)?;
                entries.insert(n, option.clone());
                created.push((n, option));
                n
            }
        };
        order.retain(|o| *o != number);
        order.insert(0, number);
        tracing::info!(
            device,
            partition = esp_part.number,
            loader,
            label,
            variable = boot_var(number),
            reused = reused.is_some(),
            dry_run = !write,
            "UEFI boot entry"
        );
        report.push(BootEntry {
            variable: boot_var(number),
            label: label.clone(),
            loader: loader.clone(),
            reused: reused.is_some(),
        });
    }

    if write {
        // New entries first, then the order that points at them, then the old entries: an
        // interruption never leaves BootOrder naming a missing or half-written entry.
        for (n, data) in &created {
            vars.write(&boot_var(*n), NV_BS_RT, data)
                .map_err(io_err(format!("writing {}", boot_var(*n))))?;
        }
        if order != original_order {
            vars.set_boot_order(&order)
                .map_err(io_err("writing BootOrder"))?;
        }
        for n in existing.keys().filter(|n| !entries.contains_key(n)) {
            vars.delete(&boot_var(*n))
                .map_err(io_err(format!("deleting {}", boot_var(*n))))?;
        }
    } else {
        tracing::info!(
            device,
            boot_order = ?order,
            "not in a ramdisk: UEFI variables not written (dry run)"
        );
    }
    Ok(Some(UefiSetup {
        esp_partition: esp_part.number,
        loaders,
        entries: report,
        removed,
        boot_order: order.iter().map(|n| format!("{n:04X}")).collect(),
        disk_signature_written: signature_written,
        dry_run: !write,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::efivarfs::EFI_GLOBAL_VARIABLE;
    use crate::gpt_write::{random_guid, Gpt, ESP_TYPE, LINUX_FS_TYPE};
    use crate::testutil::temp_disk;
    use crate::MIB;
    use blockdev::partition_table::Guid;
    use blockdev::region::Extent;

    const ESP_GUID: &str = "AAAAAAAA-BBBB-CCCC-DDDD-EEEEEEEEEEEE";

    fn utf16le(s: &str) -> Vec<u8> {
        let mut v = vec![0xff, 0xfe];
        v.extend(s.encode_utf16().flat_map(|u| u.to_le_bytes()));
        v
    }

    /// A GPT disk: partition 1 an ESP of 64 MiB at 1 MiB holding `files`, partition 2 root.
    fn uefi_disk(files: &[(&str, &[u8])]) -> (tempfile::NamedTempFile, DiskTarget) {
        let (tmp, target) = temp_disk(128 * MIB, 512);
        let mut gpt = Gpt::new(target.len(), 512).unwrap();
        gpt.add_partition(
            2048,
            2048 + 131072 - 1,
            ESP_TYPE,
            "EFI",
            Guid::parse(ESP_GUID).unwrap(),
        )
        .unwrap();
        gpt.add_partition(133120, 200000, LINUX_FS_TYPE, "root", random_guid())
            .unwrap();
        gpt.write_protective_mbr(&target).unwrap();
        gpt.write(&target).unwrap();
        let extent = Extent::new(MIB, 64 * MIB);
        esp::format(&target, extent, "ESP").unwrap();
        let fs = esp::open(&target, extent).unwrap();
        for (path, data) in files {
            esp::write_file(&fs, path, data).unwrap();
        }
        fs.unmount().unwrap();
        (tmp, target)
    }

    fn var(dir: &Path, name: &str) -> Vec<u8> {
        std::fs::read(dir.join(format!("{name}-{EFI_GLOBAL_VARIABLE}"))).unwrap()
    }

    fn ramdisk_guard() -> DeviceGuard {
        DeviceGuard::new(true, vec![], "/nonexistent-sys")
    }

    fn whole_disk_params() -> BootloaderParams {
        BootloaderParams {
            root_uuid: Some("0x00000000".into()),
            target_boot_mode: Some("uefi".into()),
            ..BootloaderParams::default()
        }
    }

    #[test]
    fn debian_image_gets_its_shim_entry_first_in_boot_order() {
        let (_t, target) = uefi_disk(&[
            ("EFI/BOOT/BOOTX64.EFI", b"MZ fallback"),
            ("EFI/debian/shimx64.efi", b"MZ shim"),
            ("EFI/debian/grubx64.efi", b"MZ grub"),
            (
                "EFI/debian/BOOTX64.CSV",
                &utf16le("shimx64.efi,debian,,This is the boot entry for debian\n"),
            ),
        ]);
        let vars = tempfile::tempdir().unwrap();
        // The firmware's own entries: Boot0000 (PXE) and Boot0001 first in the order.
        let ev = EfiVars::new(vars.path());
        ev.write(
            "Boot0000",
            NV_BS_RT,
            b"\x01\0\0\0\x04\0P\0\0\0\x7f\xff\x04\0",
        )
        .unwrap();
        ev.write(
            "Boot0001",
            NV_BS_RT,
            b"\x01\0\0\0\x04\0D\0\0\0\x7f\xff\x04\0",
        )
        .unwrap();
        ev.set_boot_order(&[1, 0]).unwrap();

        let out = install_bootloader(&target, &whole_disk_params(), &ramdisk_guard(), vars.path())
            .unwrap();
        let BootloaderOutcome::Uefi(setup) = &out else {
            panic!("{out:?}");
        };
        assert_eq!(setup.loaders, ["EFI/debian/BOOTX64.CSV"]);
        assert_eq!(
            setup.entries,
            [BootEntry {
                variable: "Boot0002".into(),
                label: "debian".into(),
                loader: "\\EFI\\debian\\shimx64.efi".into(),
                reused: false
            }]
        );
        assert!(!setup.dry_run);
        // Byte for byte what efibootmgr writes for this disk (see load_option's fixtures).
        let expected = LoadOption::for_loader(
            "debian",
            1,
            2048,
            131072,
            PartitionSignature::Gpt(Guid::parse(ESP_GUID).unwrap()),
            "\\EFI\\debian\\shimx64.efi",
        );
        let mut file = vec![7, 0, 0, 0];
        file.extend(expected.encode());
        assert_eq!(var(vars.path(), "Boot0002"), file);
        assert_eq!(
            &file[4..10],
            [1, 0, 0, 0, 0x62, 0],
            "active, path list length as efibootmgr"
        );
        assert_eq!(
            var(vars.path(), "BootOrder"),
            [7, 0, 0, 0, 2, 0, 1, 0, 0, 0]
        );

        // Again: the identical entry is reused, nothing changes.
        let again =
            install_bootloader(&target, &whole_disk_params(), &ramdisk_guard(), vars.path())
                .unwrap();
        let BootloaderOutcome::Uefi(setup) = again else {
            panic!()
        };
        assert!(setup.entries[0].reused);
        assert_eq!(setup.boot_order, ["0002", "0001", "0000"]);
        assert_eq!(ev.boot_entries().unwrap().len(), 3);
    }

    #[test]
    fn fallback_loader_replaces_a_stale_entry_with_the_same_label() {
        let (_t, target) = uefi_disk(&[("EFI/BOOT/BOOTX64.EFI", b"MZ")]);
        let vars = tempfile::tempdir().unwrap();
        let ev = EfiVars::new(vars.path());
        let stale = LoadOption::for_loader(
            "ironic1",
            1,
            34,
            100,
            PartitionSignature::Gpt(random_guid()),
            "\\old.efi",
        );
        ev.write("Boot0000", NV_BS_RT, &stale.encode()).unwrap();
        ev.set_boot_order(&[0]).unwrap();
        let out = install_bootloader(&target, &whole_disk_params(), &ramdisk_guard(), vars.path())
            .unwrap();
        let BootloaderOutcome::Uefi(setup) = out else {
            panic!()
        };
        assert_eq!(setup.removed, ["Boot0000"]);
        assert_eq!(setup.entries[0].variable, "Boot0000");
        assert_eq!(setup.entries[0].label, "ironic1");
        assert_eq!(setup.entries[0].loader, "\\EFI\\BOOT\\BOOTX64.EFI");
        assert_eq!(ev.boot_order().unwrap(), [0]);
        let now = LoadOption::decode(&ev.read("Boot0000").unwrap().unwrap().1).unwrap();
        assert_eq!(now.description, "ironic1");
        assert_ne!(now, stale);
    }

    #[test]
    fn outside_a_ramdisk_nothing_is_written() {
        let (_t, target) = uefi_disk(&[("EFI/BOOT/BOOTX64.EFI", b"MZ")]);
        let vars = tempfile::tempdir().unwrap();
        let guard = DeviceGuard::new(false, vec![], "/nonexistent-sys");
        let out = install_bootloader(&target, &whole_disk_params(), &guard, vars.path()).unwrap();
        let BootloaderOutcome::Uefi(setup) = out else {
            panic!()
        };
        assert!(setup.dry_run);
        assert_eq!(setup.boot_order, ["0000"]);
        assert_eq!(std::fs::read_dir(vars.path()).unwrap().count(), 0);
    }

    #[test]
    fn ipa_behaviour_without_loaders_esp_or_uefi() {
        let vars = tempfile::tempdir().unwrap();
        // Empty ESP, whole-disk image: nothing to do.
        let (_t, target) = uefi_disk(&[]);
        let out = install_bootloader(&target, &whole_disk_params(), &ramdisk_guard(), vars.path())
            .unwrap();
        assert!(
            matches!(out, BootloaderOutcome::NothingToDo { .. }),
            "{out:?}"
        );
        // Empty ESP, partition image: IPA would need grub-install.
        let partition_image = BootloaderParams {
            root_uuid: Some("4d2c1f5e-7f2a-4d0e-9c53-2f1d8c7e6a90".into()),
            ..whole_disk_params()
        };
        let err = install_bootloader(&target, &partition_image, &ramdisk_guard(), vars.path())
            .unwrap_err();
        assert_eq!(err.ipa_class(), ErrorClass::InvalidImage);
        let ignored = BootloaderParams {
            ignore_bootloader_failure: Some(true),
            ..partition_image.clone()
        };
        assert!(matches!(
            install_bootloader(&target, &ignored, &ramdisk_guard(), vars.path()).unwrap(),
            BootloaderOutcome::FailureIgnored { .. }
        ));
        // No ESP at all on a UEFI machine: DeviceNotFound, unless ignored.
        let (_t, bare) = temp_disk(16 * MIB, 512);
        let err = install_bootloader(&bare, &whole_disk_params(), &ramdisk_guard(), vars.path())
            .unwrap_err();
        assert_eq!(err.ipa_class(), ErrorClass::DeviceNotFound);
        assert!(err
            .to_string()
            .contains("Are you using a UEFI-compatible image?"));
        let ignored = BootloaderParams {
            ignore_bootloader_failure: Some(true),
            ..whole_disk_params()
        };
        assert!(matches!(
            install_bootloader(&bare, &ignored, &ramdisk_guard(), vars.path()).unwrap(),
            BootloaderOutcome::NothingToDo { .. }
        ));
        // A BIOS-booted agent with a whole-disk image: nothing to do; root_uuid null too.
        let bios = vars.path().join("absent");
        let none = BootloaderParams::default();
        assert!(matches!(
            install_bootloader(&target, &none, &ramdisk_guard(), &bios).unwrap(),
            BootloaderOutcome::NothingToDo { .. }
        ));
    }

    #[test]
    fn esp_found_by_uuid_on_an_mbr_disk_gets_a_signature() {
        let (_t, target) = temp_disk(96 * MIB, 512);
        let mut mbr = Mbr::new(0);
        // Type 0x0c, not 0xEF: found through the filesystem UUID only.
        mbr.add_primary(2048, 131072, 0x0c, true).unwrap();
        mbr.write(&target).unwrap();
        let extent = Extent::new(MIB, 64 * MIB);
        let id = esp::format(&target, extent, "EFI").unwrap();
        let fs = esp::open(&target, extent).unwrap();
        esp::write_file(&fs, "EFI/BOOT/BOOTX64.EFI", b"MZ").unwrap();
        fs.unmount().unwrap();
        let vars = tempfile::tempdir().unwrap();
        let params = BootloaderParams {
            efi_system_part_uuid: Some(esp::volume_id_text(id).to_lowercase()),
            ..whole_disk_params()
        };
        let BootloaderOutcome::Uefi(setup) =
            install_bootloader(&target, &params, &ramdisk_guard(), vars.path()).unwrap()
        else {
            panic!()
        };
        let sig = setup.disk_signature_written.clone().unwrap();
        assert_eq!(
            crate::partition_uuids::disk_identifier(&target).unwrap(),
            sig
        );
        let entry = LoadOption::decode(
            &EfiVars::new(vars.path())
                .read("Boot0000")
                .unwrap()
                .unwrap()
                .1,
        )
        .unwrap();
        let s = u32::from_str_radix(&sig[2..], 16).unwrap();
        assert_eq!(
            entry,
            LoadOption::for_loader(
                "ironic1",
                1,
                2048,
                131072,
                PartitionSignature::Mbr(s),
                "\\EFI\\BOOT\\BOOTX64.EFI"
            )
        );
    }

    #[test]
    fn params_from_the_command() {
        let p: Map<String, Value> = serde_json::from_value(serde_json::json!({
            "root_uuid": "0x1234abcd", "efi_system_part_uuid": null,
            "prep_boot_part_uuid": null, "target_boot_mode": "uefi"}))
        .unwrap();
        let params = BootloaderParams::from_command(&p, true).unwrap();
        assert_eq!(params.root_uuid.as_deref(), Some("0x1234abcd"));
        assert!(params.ignore_failure_default);
        let bad: Map<String, Value> =
            serde_json::from_value(serde_json::json!({"root_uuid": "x", "other": 1})).unwrap();
        assert!(BootloaderParams::from_command(&bad, false).is_err());
    }

    #[test]
    fn a_hostile_esp_fails_the_step_with_a_clear_error() {
        let (tmp, target) = uefi_disk(&[
            ("EFI/BOOT/BOOTX64.EFI", b"MZ"),
            ("EFI/BOOT/LOOP/A.EFI", b"x"),
        ]);
        let raw = crate::testutil::RawFat::new(&target, Extent::new(MIB, 64 * MIB));
        raw.set_first_cluster(raw.entry("EFI/BOOT/LOOP"), raw.geometry.root_cluster);
        let err = crate::testutil::within_10s(256 << 10, move || {
            let vars = tempfile::tempdir().unwrap();
            install_bootloader(&target, &whole_disk_params(), &ramdisk_guard(), vars.path())
                .unwrap_err()
        });
        assert_eq!(err.ipa_class(), ErrorClass::CommandExecutionError);
        assert_eq!(
            err.to_string(),
            format!(
                "the ESP on {} is corrupt: the directory EFI/BOOT/LOOP links back to the root \
                 directory, one of its parents",
                // `<disk>p1` when the temp file's name ends in a digit, as for nvme0n1p1.
                crate::partition_uuids::partition_path(tmp.path(), 1).display()
            )
        );
    }
}
