//! IPA's `prepare_image`: choose the disk, lay out partitions for partition images, stream
//! the image through the pipeline, then the whole-disk aftercare (backup GPT, config drive)
//! and the partition UUIDs the conductor asks for next.

use std::path::{Path, PathBuf};

use blockdev::{rescan, OpenError, WritableDisk};
use disk_layout::partition_image::{
    self, PartitionImageError, PartitionImageParams, PartitionPlan,
};
use disk_layout::{configdrive, gpt_write, partition_uuids, DiskTarget};
use hardware_managers::HardwareError;
use image_pipeline::checksum::ChecksumError;
use image_pipeline::decoder::{open_decoder, Opened};
use image_pipeline::format::inspect;
use image_pipeline::pipeline::{self, BeforeWrite, PipelineError};
use image_pipeline::redact::redact_url;
use image_pipeline::sink::DiskWriter;
use image_pipeline::source::{resolve_expected_checksum, start_download, SourceError};
use image_pipeline::{Limits, RangeRead};
use ironic_protocol::{ErrorClass, ImageInfo};
use serde_json::{Map, Value};

use super::image_source::{checksum_spec, download_settings};
use crate::agent::Agent;

/// What to write.
pub struct ImageRequest<'a> {
    pub image_info: &'a ImageInfo,
    /// Ironic's `configdrive`: a URL, or base64 of gzipped ISO/VFAT data.
    pub configdrive: Option<&'a Value>,
    /// `cache_image(force=True)`: write even if this image is already on the disk.
    pub force: bool,
}

/// What the device guard is asked to allow.
const WRITE_IMAGE: &str = "write an image to";

/// Largest config drive download accepted (IPA's limit on the decoded drive is 64 MiB; the
/// encoded form is larger).
const CONFIGDRIVE_DOWNLOAD_MAX: u64 = 128 << 20;

fn ipa(class: ErrorClass, details: impl Into<String>) -> HardwareError {
    HardwareError::ipa(class, details)
}

fn deployment_error(details: impl Into<String>) -> HardwareError {
    ipa(ErrorClass::DeploymentError, details)
}

/// Writes the image (and config drive) described by `req` to the install disk. Returns IPA's
/// message, `image (<id>) written to device <dev> root_uuid=<uuid>...`. Blocking: run it on a
/// blocking thread.
pub fn prepare_image(
    agent: &Agent,
    runtime: &tokio::runtime::Handle,
    req: ImageRequest<'_>,
) -> Result<String, HardwareError> {
    let opts = &agent.config().options;
    let lookup = agent.lookup_config();
    let md5_enabled = lookup
        .as_ref()
        .and_then(|l| l.agent_md5_checksum_enable)
        .unwrap_or(opts.md5_enabled);
    let info = req.image_info;
    let raw_id = info.id.clone();
    // Ironic's id for an HTTP image_source is the URL's tail, query string (a temp URL
    // signature) included: never let it into a log line or a message.
    let image_id = redact_url(&raw_id);
    let checksum = checksum_spec(info, &image_id);
    checksum
        .validate(md5_enabled)
        .map_err(|e| checksum_error(e, &image_id))?;

    let node = agent.node().unwrap_or_default();
    let device = agent.managers().get_os_install_device(&node)?;
    let disk = PathBuf::from(&device.name);
    agent.guard().check(&disk, WRITE_IMAGE)?;
    tracing::info!(image = %image_id, device = %disk.display(), size = device.size, "install device chosen");

    let configdrive = match req.configdrive {
        Some(v) => Some(load_configdrive(v, info, &image_id, agent, runtime)?),
        None => None,
    };

    // Partition images: the layout is planned now (it only depends on the node, image_info
    // and the disk) and written once the image is known to fit its root partition.
    let layout = if info.is_partition_image() {
        let target = open_target(agent, &disk)?;
        let (plan, params) = plan_partitions(
            agent,
            &target,
            &disk,
            info,
            &node,
            configdrive.as_ref().map(|c| c.len() as u64),
        )?;
        Some((target, plan, params))
    } else {
        None
    };

    let already = agent.cached_image_id().as_deref() == Some(raw_id.as_str());
    if already && !req.force {
        tracing::info!(image = %image_id, "image already written to the disk; not writing it again");
    } else {
        // From here on the disk may hold anything but the image recorded before: a failed
        // write must not let a retry of that image skip writing it (review L6).
        agent.forget_written_image();
        let settings =
            download_settings(info, &image_id, &agent.config().options).map_err(source_error)?;
        let expected = resolve_expected_checksum(&checksum, md5_enabled, &settings, runtime)
            .map_err(|e| checksum_error(e, &image_id))?;
        let window = layout.as_ref().map(|(_, plan, _)| {
            let root = plan.root();
            root.offset..root.offset + root.len
        });
        let before_write: Option<BeforeWrite<'_>> =
            layout.as_ref().map(|(target, plan, params)| {
                let cd = configdrive.as_deref();
                let disk = disk.as_path();
                Box::new(move || {
                    apply_layout(agent, target, disk, plan, params, cd)
                        .map_err(|e| PipelineError::Target(Box::new(e)))
                }) as BeforeWrite<'_>
            });
        let download = start_download(settings, runtime).map_err(source_error)?;
        let target =
            WritableDisk::open(&disk, agent.guard(), WRITE_IMAGE).map_err(|e| match e {
                OpenError::NotAllowed(e) => HardwareError::from(e),
                e => ipa(
                    ErrorClass::ImageWriteError,
                    format!("Writing image to device {} failed: {e}", disk.display()),
                ),
            })?;
        let mut writer = DiskWriter::open(target, window).map_err(|e| write_error(&disk, e))?;
        let stall = agent.config().options.disk_stall_timeout;
        writer.set_stall_limit((stall > 0).then(|| std::time::Duration::from_secs(stall)));
        let factory = decoder_factory(agent, info);
        let report = pipeline::run(
            Box::new(download),
            &image_id,
            &expected,
            &factory,
            writer,
            before_write,
        )
        .map_err(|e| pipeline_error(e, &image_id, &disk))?;
        tracing::info!(
            image = %image_id, device = %disk.display(), format = %report.format,
            file_bytes = report.file_bytes, seconds = format!("{:.2}", report.seconds),
            mb_per_s = format!("{:.0}", report.mb_per_s), direct_io = report.written.direct_io,
            "image written and verified"
        );
        agent.set_cached_image_id(Some(raw_id.clone()));
    }

    let target = open_target(agent, &disk)?;
    let uuids = if let Some((_, plan, _)) = &layout {
        reread_partitions(&target)?;
        partition_image::partition_uuids(&target, &disk, plan)
            .map_err(|e| deployment_error(e.to_string()))?
    } else {
        // Whole disk: the image brought its own table; make it span the disk, then add the
        // config drive. IPA's _validate_partitioning: a disk without partitions is a failure.
        let parts = partition_uuids::list_partitions(&target)
            .map_err(|e| deployment_error(e.to_string()))?;
        if parts.is_empty() {
            return Err(deployment_error(format!(
                "No partitions found on the device {} after writing the image {image_id}; the image \
                 is probably not a whole-disk image with a partition table",
                disk.display()
            )));
        }
        let fixed = gpt_write::fix_gpt(&target)
            .map_err(|e| deployment_error(format!("fixing the GPT of {}: {e}", disk.display())))?;
        tracing::info!(device = %disk.display(), result = ?fixed, "backup GPT checked");
        if let Some(cd) = &configdrive {
            let part = configdrive::write_config_drive(&target, cd)
                .map_err(|e| ipa(e.ipa_class(), e.to_string()))?;
            tracing::info!(device = %disk.display(), partition = part.number, created = part.created, "config drive written");
        }
        target
            .sync()
            .map_err(|e| deployment_error(format!("syncing {}: {e}", disk.display())))?;
        reread_partitions(&target)?;
        partition_uuids::whole_disk(&target).map_err(|e| deployment_error(e.to_string()))?
    };
    let message = result_message(&image_id, &disk, info, &uuids);
    agent.set_partition_uuids(Value::Object(uuids));
    tracing::info!("{message}");
    Ok(message)
}

/// IPA's `_message_format`.
fn result_message(
    image_id: &str,
    disk: &Path,
    info: &ImageInfo,
    uuids: &Map<String, Value>,
) -> String {
    let text = |k: &str| uuids.get(k).and_then(Value::as_str).map(str::to_string);
    let root = text("root uuid").unwrap_or_else(|| "None".into());
    let mut msg = format!(
        "image ({image_id}) written to device {} root_uuid={root}",
        disk.display()
    );
    if info.deploy_boot_mode.as_deref() == Some("uefi") {
        if let Some(esp) = text("efi system partition uuid") {
            msg.push_str(&format!(" efi_system_partition_uuid={esp}"));
        }
    }
    msg
}

fn open_target(agent: &Agent, disk: &Path) -> Result<DiskTarget, HardwareError> {
    DiskTarget::open(disk, agent.guard(), WRITE_IMAGE).map_err(|e| deployment_error(e.to_string()))
}

fn reread_partitions(target: &DiskTarget) -> Result<(), HardwareError> {
    rescan::reread_partition_table(target.file()).map_err(|e| {
        deployment_error(format!(
            "the kernel could not re-read the partition table of {}: {e}",
            target.path().display()
        ))
    })
}

/// Partition images: IPA's `work_on_disk` layout, planned without writing anything.
fn plan_partitions(
    agent: &Agent,
    target: &DiskTarget,
    disk: &Path,
    image_info: &ImageInfo,
    node: &ironic_protocol::Node,
    configdrive_len: Option<u64>,
) -> Result<(PartitionPlan, PartitionImageParams), HardwareError> {
    let opts = &agent.config().options;
    let ramdisk_uefi = Path::new("/sys/firmware/efi").exists();
    let sizes = image_info.partition_sizes().map_err(|why| {
        let e = PartitionImageError::InvalidParams(why);
        ipa(e.ipa_class(), e.to_string())
    })?;
    let mut params = PartitionImageParams::new(sizes, node, ramdisk_uefi, std::env::consts::ARCH);
    params.efi_system_partition_mb = opts.efi_system_partition_size;
    params.bios_boot_partition_mb = opts.bios_boot_partition_size;
    let plan = partition_image::plan(
        &params,
        &disk.display().to_string(),
        target.len(),
        target.sector_size(),
        configdrive_len,
    )
    .map_err(|e| ipa(e.ipa_class(), e.to_string()))?;
    Ok((plan, params))
}

/// Writes the planned partition table, ESP, swap and config drive, then formats the
/// ephemeral partition once the kernel knows it.
fn apply_layout(
    agent: &Agent,
    target: &DiskTarget,
    disk: &Path,
    plan: &PartitionPlan,
    params: &PartitionImageParams,
    configdrive: Option<&[u8]>,
) -> Result<(), HardwareError> {
    let applied = partition_image::apply(target, plan, params, configdrive)
        .map_err(|e| ipa(e.ipa_class(), e.to_string()))?;
    target
        .sync()
        .map_err(|e| deployment_error(format!("syncing {}: {e}", disk.display())))?;
    reread_partitions(target)?;
    if let Some((number, fs)) = &applied.ephemeral_to_format {
        let part = partition_uuids::partition_path(disk, *number);
        partition_image::format_ephemeral(&part, fs, agent.guard())
            .map_err(|e| ipa(e.ipa_class(), e.to_string()))?;
    }
    tracing::info!(device = %disk.display(), partitions = ?plan.roles(), "partition image layout written");
    Ok(())
}

/// The decoder for the image: IPA's format policy, with the lookup's overrides.
fn decoder_factory(
    agent: &Agent,
    info: &ImageInfo,
) -> impl Fn(&[u8], &mut dyn RangeRead, Option<u64>) -> Result<Opened, PipelineError> + Sync {
    let opts = &agent.config().options;
    let lookup = agent.lookup_config();
    let permitted = lookup
        .as_ref()
        .and_then(|l| l.permitted_image_formats.clone())
        .unwrap_or_else(|| opts.permitted_image_formats.clone());
    let deep = !lookup
        .as_ref()
        .and_then(|l| l.disable_deep_image_inspection)
        .unwrap_or(opts.disable_deep_image_inspection);
    let declared = info.disk_format.clone();
    move |head, fetch, size| {
        let inspection = inspect(head, declared.as_deref(), &permitted, deep)?;
        Ok(open_decoder(
            head,
            &inspection,
            size,
            fetch,
            &Limits::default(),
        )?)
    }
}

/// The config drive bytes: downloaded when Ironic sent a URL, then decoded.
fn load_configdrive(
    value: &Value,
    info: &ImageInfo,
    image_id: &str,
    agent: &Agent,
    runtime: &tokio::runtime::Handle,
) -> Result<Vec<u8>, HardwareError> {
    let text = match value {
        Value::String(s) => s.as_str(),
        other => {
            return Err(ipa(
                ErrorClass::InstanceDeployFailure,
                format!(
                    "the configdrive must be a URL or base64 text, got {}",
                    match other {
                        Value::Object(_) => "an object",
                        Value::Array(_) => "a list",
                        _ => "a scalar",
                    }
                ),
            ))
        }
    };
    let cd_err = |e: configdrive::ConfigDriveError| ipa(e.ipa_class(), e.to_string());
    if !configdrive::is_url(text) {
        return configdrive::decode(text.as_bytes(), false).map_err(cd_err);
    }
    let mut settings =
        download_settings(info, image_id, &agent.config().options).map_err(source_error)?;
    settings.image_id = format!("configdrive {}", redact_url(text));
    settings.urls = vec![text.to_string()];
    let mut download = start_download(settings, runtime).map_err(source_error)?;
    let mut bytes = Vec::new();
    while let Some(chunk) = download.next_chunk() {
        let chunk = chunk.map_err(source_error)?;
        bytes.extend_from_slice(&chunk);
        if bytes.len() as u64 > CONFIGDRIVE_DOWNLOAD_MAX {
            return Err(ipa(
                ErrorClass::InstanceDeployFailure,
                format!(
                    "the config drive at {} is larger than {CONFIGDRIVE_DOWNLOAD_MAX} bytes",
                    redact_url(text)
                ),
            ));
        }
    }
    configdrive::decode(&bytes, true).map_err(cd_err)
}

fn source_error(e: SourceError) -> HardwareError {
    match &e {
        SourceError::TimedOut { .. } => ipa(ErrorClass::ImageDownloadTimeoutError, e.to_string()),
        SourceError::Setup(_) => ipa(ErrorClass::InvalidCommandParamsError, e.to_string()),
        _ => ipa(ErrorClass::ImageDownloadError, e.to_string()),
    }
}

fn checksum_error(e: ChecksumError, image_id: &str) -> HardwareError {
    match &e {
        ChecksumError::InvalidParams(_) => {
            ipa(ErrorClass::InvalidCommandParamsError, e.to_string())
        }
        ChecksumError::Mismatch { .. } => ipa(ErrorClass::ImageChecksumError, e.to_string()),
        _ => ipa(
            ErrorClass::ImageDownloadError,
            format!("Download of image {image_id} failed: {e}"),
        ),
    }
}

fn write_error(disk: &Path, e: image_pipeline::sink::SinkError) -> HardwareError {
    match &e {
        image_pipeline::sink::SinkError::TooSmall { .. } => {
            ipa(ErrorClass::InvalidImage, e.to_string())
        }
        _ => ipa(
            ErrorClass::ImageWriteError,
            format!("Writing image to device {} failed: {e}", disk.display()),
        ),
    }
}

fn pipeline_error(e: PipelineError, image_id: &str, disk: &Path) -> HardwareError {
    match e {
        PipelineError::Download(e) => source_error(e),
        PipelineError::Checksum(e) => checksum_error(e, image_id),
        PipelineError::Sink(e) => write_error(disk, e),
        PipelineError::Inspection(e) => {
            ipa(ErrorClass::InvalidImage, format!("image {image_id}: {e}"))
        }
        // The image is fine; what the server sent is not what the checksum vouched for.
        PipelineError::Decode(e) if e.is_inconsistent_source() => ipa(
            ErrorClass::ImageChecksumError,
            format!("image {image_id}: {e}"),
        ),
        PipelineError::Decode(e) => ipa(ErrorClass::InvalidImage, format!("image {image_id}: {e}")),
        PipelineError::Target(e) => match e.downcast::<HardwareError>() {
            Ok(hw) => *hw,
            Err(other) => deployment_error(other.to_string()),
        },
        PipelineError::Internal(e) => deployment_error(format!(
            "writing image {image_id} to {}: {e}",
            disk.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use image_pipeline::{DecodeError, Qcow2Error};

    fn class_of(e: DecodeError) -> (Option<ErrorClass>, String) {
        let hw = pipeline_error(
            PipelineError::Decode(e),
            "img?<redacted>",
            Path::new("/dev/vdz"),
        );
        (hw.ipa_class(), hw.to_string())
    }

    #[test]
    fn inconsistent_server_data_is_a_checksum_error_and_bad_images_are_invalid() {
        let (class, msg) = class_of(DecodeError::RangeMismatch {
            what: "qcow2 L1 table",
            offset: 0x30000,
            len: 8,
        });
        assert_eq!(class, Some(ErrorClass::ImageChecksumError), "{msg}");
        assert!(
            msg.contains("image img?<redacted>: the qcow2 L1 table fetched by a range request")
                && msg.contains("the image server returned inconsistent data"),
            "{msg}"
        );
        let (class, _) = class_of(DecodeError::Qcow2(Qcow2Error::RefetchMismatch {
            offset: 0x1000,
        }));
        assert_eq!(class, Some(ErrorClass::ImageChecksumError));
        let (class, _) = class_of(DecodeError::Qcow2(Qcow2Error::BadMagic));
        assert_eq!(class, Some(ErrorClass::InvalidImage));
    }
}
