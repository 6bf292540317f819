//! The `standby` extension: flushing, powering off and rebooting the machine, and the
//! partition UUIDs of the last written image.

use std::sync::Arc;
use std::time::Duration;

use ironic_protocol::CommandError;
use serde_json::Value;

use crate::agent::Agent;
use crate::commands::NoParams;
use crate::commands::{CommandDef, CommandValue, Mode};

pub fn commands() -> Vec<CommandDef> {
    vec![
        CommandDef::new("sync", Mode::Sync, |_, _: NoParams| sync()),
        CommandDef::new("power_off", Mode::Async, |agent, _: NoParams| {
            shutdown(agent, Shutdown::PowerOff)
        }),
        CommandDef::new("run_image", Mode::Async, |agent, _: NoParams| {
            shutdown(agent, Shutdown::Reboot)
        }),
        CommandDef::new("get_partition_uuids", Mode::Sync, |agent, _: NoParams| {
            get_partition_uuids(agent)
        }),
    ]
}

/// Flushes every filesystem and block device buffer (sync(2)).
async fn sync() -> Result<CommandValue, CommandError> {
    tokio::task::spawn_blocking(nix::unistd::sync)
        .await
        .map_err(|e| {
            CommandError::new(
                "CommandExecutionError",
                500,
                "Command execution failed",
                e.to_string(),
            )
        })?;
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
    .map_err(|e| {
        CommandError::new(
            "CommandExecutionError",
            500,
            "Command execution failed",
            e.to_string(),
        )
    })
    .and_then(|msg| {
        Err(CommandError::new(
            "SystemRebootError",
            500,
            "Failed to shut the system down",
            msg,
        ))
    })
}

/// The partition UUIDs recorded when an image was written; `{}` before that, as IPA answers.
async fn get_partition_uuids(agent: Arc<Agent>) -> Result<CommandValue, CommandError> {
    let uuids = agent.partition_uuids().unwrap_or_else(|| {
        tracing::warn!("no partition UUIDs recorded yet: no image was written by this agent");
        Value::Object(Default::default())
    });
    Ok(CommandValue::Json(uuids))
}
