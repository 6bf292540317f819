//! The `image` extension: registering the deployed image's boot loader.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use disk_layout::uefi_boot::{install_bootloader as install, BootloaderParams};
use disk_layout::DiskTarget;
use ironic_protocol::{CommandError, ErrorClass};
use serde_json::{Map, Value};

use crate::agent::Agent;
use crate::commands::{CommandDef, CommandValue, Mode, Params};

/// Where the firmware's variables are; its presence is how the agent knows it booted in UEFI
/// mode.
const EFIVARS: &str = "/sys/firmware/efi/efivars";

pub fn commands() -> Vec<CommandDef> {
    vec![CommandDef::new(
        "install_bootloader",
        Mode::Async,
        install_bootloader,
    )]
}

/// `install_bootloader(root_uuid, efi_system_part_uuid=None, prep_boot_part_uuid=None,
/// target_boot_mode='bios', ignore_bootloader_failure=None)`.
#[derive(Debug, serde::Deserialize)]
#[serde(transparent)]
pub struct InstallBootloader(Map<String, Value>);

impl InstallBootloader {
    fn params(&self, agent: &Agent) -> Result<BootloaderParams, String> {
        let default = agent
            .config()
            .options
            .ignore_bootloader_failure
            .unwrap_or(false);
        BootloaderParams::from_command(&self.0, default).map_err(|e| e.to_string())
    }
}

/// Unknown or mistyped parameters are a 400: the conductor then retries without
/// `target_boot_mode`, as it does with IPA.
impl Params for InstallBootloader {
    fn validate(&self, agent: &Agent) -> Result<(), String> {
        self.params(agent).map(drop)
    }
}

async fn install_bootloader(
    agent: Arc<Agent>,
    p: InstallBootloader,
) -> Result<CommandValue, CommandError> {
    let params = p
        .params(&agent)
        .map_err(|e| CommandError::new(ErrorClass::InvalidCommandParamsError, e))?;
    let outcome = tokio::task::spawn_blocking(move || {
        let node = agent.node().unwrap_or_default();
        let device = agent
            .managers()
            .get_os_install_device(&node)
            .map_err(|e| e.to_command_error(ErrorClass::DeviceNotFound))?;
        let disk = PathBuf::from(&device.name);
        let target = DiskTarget::open(&disk, agent.guard(), "install the boot loader on")
            .map_err(|e| CommandError::new(ErrorClass::DeploymentError, e.to_string()))?;
        install(&target, &params, agent.guard(), Path::new(EFIVARS))
            .map_err(|e| CommandError::new(e.ipa_class(), e.to_string()))
    })
    .await
    .map_err(|e| CommandError::execution_failed(e.to_string()))??;
    tracing::info!(outcome = ?outcome, "boot loader step finished");
    // IPA returns nothing; the outcome is in the log.
    Ok(CommandValue::Null)
}
