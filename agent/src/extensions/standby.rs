//! The `standby` extension: flushing, powering off and rebooting the machine, and the
//! partition UUIDs of the last written image.

use std::sync::Arc;
use std::time::Duration;

use ironic_protocol::{CommandError, ErrorClass, ImageInfo};
use serde_json::Value;

use crate::agent::Agent;
use crate::commands::{CommandDef, CommandValue, Mode, NoParams, Params};
use crate::deploy::{prepare_image, ImageRequest};

pub fn commands() -> Vec<CommandDef> {
    vec![
        CommandDef::new("sync", Mode::Sync, |_, _: NoParams| sync()),
        CommandDef::new("power_off", Mode::Async, |agent, _: NoParams| {
            shutdown(agent, Shutdown::PowerOff)
        })
        .ends_the_ramdisk(),
        CommandDef::new("run_image", Mode::Async, |agent, _: NoParams| {
            shutdown(agent, Shutdown::Reboot)
        })
        .ends_the_ramdisk(),
        CommandDef::new("get_partition_uuids", Mode::Sync, |agent, _: NoParams| {
            get_partition_uuids(agent)
        }),
        CommandDef::new("prepare_image", Mode::Async, |agent, p: PrepareImage| {
            write(agent, p.image_info, p.configdrive, false)
        }),
        CommandDef::new("cache_image", Mode::Async, |agent, p: CacheImage| {
            write(agent, p.image_info, None, p.force)
        }),
    ]
}

/// `prepare_image(image_info, configdrive=None)`.
#[derive(Debug, serde::Deserialize)]
pub struct PrepareImage {
    image_info: ImageInfo,
    #[serde(default)]
    configdrive: Option<Value>,
}

/// `cache_image(image_info, force=False)`: write the image ahead of `prepare_image`.
#[derive(Debug, serde::Deserialize)]
pub struct CacheImage {
    image_info: ImageInfo,
    #[serde(default)]
    force: bool,
}

/// IPA validates `image_info` before recording the command: a bad one is an HTTP 400. Its
/// structure was checked when the parameters were parsed; this is the md5-dependent rest.
fn validate_image_info(agent: &Agent, info: &ImageInfo) -> Result<(), String> {
    let md5 = agent
        .lookup_config()
        .and_then(|l| l.agent_md5_checksum_enable)
        .unwrap_or(agent.config().options.md5_enabled);
    let image_id = image_pipeline::redact::redact_url(&info.id);
    crate::deploy::checksum_spec(info, &image_id)
        .validate(md5)
        .map_err(|e| e.to_string())
}

impl Params for PrepareImage {
    fn validate(&self, agent: &Agent) -> Result<(), String> {
        validate_image_info(agent, &self.image_info)
    }
}

impl Params for CacheImage {
    fn validate(&self, agent: &Agent) -> Result<(), String> {
        validate_image_info(agent, &self.image_info)
    }
}

async fn write(
    agent: Arc<Agent>,
    image_info: ImageInfo,
    configdrive: Option<Value>,
    force: bool,
) -> Result<CommandValue, CommandError> {
    // IPA's backward compatibility: a configdrive inside image_info.
    let configdrive = configdrive.or_else(|| image_info.configdrive.clone());
    let runtime = tokio::runtime::Handle::current();
    let message = tokio::task::spawn_blocking(move || {
        prepare_image(
            &agent,
            &runtime,
            ImageRequest {
                image_info: &image_info,
                configdrive: configdrive.as_ref(),
                force,
            },
        )
    })
    .await
    .map_err(|e| CommandError::execution_failed(e.to_string()))?
    .map_err(|e| e.to_command_error(ErrorClass::DeploymentError))?;
    Ok(CommandValue::Text(message))
}

/// Flushes every filesystem and block device buffer (sync(2)).
async fn sync() -> Result<CommandValue, CommandError> {
    tokio::task::spawn_blocking(nix::unistd::sync)
        .await
        .map_err(|e| CommandError::execution_failed(e.to_string()))?;
    Ok(CommandValue::Null)
}

#[derive(Debug, Clone, Copy)]
enum Shutdown {
    PowerOff,
    Reboot,
}

/// Flushes, then powers off or reboots. Outside a ramdisk this only logs: the agent must never
/// power off the machine a developer runs it on.
async fn shutdown(agent: Arc<Agent>, how: Shutdown) -> Result<CommandValue, CommandError> {
    if !agent.guard().in_ramdisk() {
        tracing::warn!(
            ?how,
            "not running in a ramdisk: not shutting the machine down"
        );
        return Ok(CommandValue::Null);
    }
    // Let the conductor's POST get its RUNNING reply before the machine goes away.
    tokio::time::sleep(Duration::from_millis(500)).await;
    tracing::info!(?how, "syncing and shutting down");
    tokio::task::spawn_blocking(move || {
        nix::unistd::sync();
        let mode = match how {
            Shutdown::PowerOff => nix::sys::reboot::RebootMode::RB_POWER_OFF,
            Shutdown::Reboot => nix::sys::reboot::RebootMode::RB_AUTOBOOT,
        };
        let err = nix::sys::reboot::reboot(mode).err();
        // The magic SysRq key is the last resort IPA uses too.
        let key = match how {
            Shutdown::PowerOff => "o",
            Shutdown::Reboot => "b",
        };
        let sysrq = std::fs::write("/proc/sysrq-trigger", key);
        format!("reboot(2) failed: {err:?}; sysrq: {sysrq:?}")
    })
    .await
    .map_err(|e| CommandError::execution_failed(e.to_string()))
    .and_then(|msg| Err(CommandError::new(ErrorClass::SystemRebootError, msg)))
}

/// The partition UUIDs recorded when an image was written; `{}` before that, as IPA answers.
async fn get_partition_uuids(agent: Arc<Agent>) -> Result<CommandValue, CommandError> {
    let uuids = agent.partition_uuids().unwrap_or_else(|| {
        tracing::warn!("no partition UUIDs recorded yet: no image was written by this agent");
        Value::Object(Default::default())
    });
    Ok(CommandValue::Json(uuids))
}
