//! The conductor's erase tunables (`driver_internal_info`) and the agent's options, read once
//! per step.

use ironic_protocol::Node;
use serde_json::Value;

use crate::generic::options::GenericOptions;
use crate::HardwareError;

/// The verb the device guard is asked to allow.
pub(crate) const ACTION: &str = "erase";

/// The conductor's erase tunables, from `driver_internal_info`, and the agent's options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EraseSettings {
    /// `agent_erase_devices_iterations` (1).
    pub random_passes: u32,
    /// `agent_erase_devices_zeroize` (true).
    pub zeroize: bool,
    /// `disk_erasure_concurrency` (4), at least 1.
    pub concurrency: usize,
    /// `agent_erase_skip_read_only` (false).
    pub skip_read_only: bool,
    /// `agent_enable_nvme_secure_erase` (true).
    pub nvme_secure_erase: bool,
    /// `agent_enable_ata_secure_erase` (true); also covers SCSI SANITIZE, the non-NVMe
    /// hardware erase IPA does not have.
    pub ata_secure_erase: bool,
    /// `agent_continue_if_secure_erase_failed`, else `agent_continue_if_ata_erase_failed`
    /// (false).
    pub continue_if_secure_erase_failed: bool,
    /// `agent_enable_discard_erase`, else the agent's `enable_discard_erase` (false).
    pub discard: bool,
}

impl EraseSettings {
    pub fn from_node(node: &Node, options: &GenericOptions) -> Result<Self, HardwareError> {
        let continue_failed = internal_opt_flag(node, "agent_continue_if_secure_erase_failed")
            .or_else(|| internal_opt_flag(node, "agent_continue_if_ata_erase_failed"))
            .unwrap_or(false);
        Ok(EraseSettings {
            random_passes: u32::try_from(internal_uint(node, "agent_erase_devices_iterations", 1)?)
                .map_err(|_| {
                    HardwareError::InvalidArguments(
                        "agent_erase_devices_iterations is too large".into(),
                    )
                })?,
            zeroize: node.internal_flag("agent_erase_devices_zeroize", true),
            concurrency: internal_uint(node, "disk_erasure_concurrency", 4)?.clamp(1, 64) as usize,
            skip_read_only: node.internal_flag("agent_erase_skip_read_only", false),
            nvme_secure_erase: node.internal_flag("agent_enable_nvme_secure_erase", true),
            ata_secure_erase: node.internal_flag("agent_enable_ata_secure_erase", true),
            continue_if_secure_erase_failed: continue_failed,
            discard: internal_opt_flag(node, "agent_enable_discard_erase")
                .unwrap_or(options.enable_discard_erase),
        })
    }
}

/// A flag of `driver_internal_info` that may be absent (`None`, also for null).
fn internal_opt_flag(node: &Node, key: &str) -> Option<bool> {
    let value = node.driver_internal_info()?.get(key)?;
    if value.is_null() {
        return None;
    }
    Some(node.internal_flag(key, false))
}

/// A non-negative integer from `driver_internal_info` (a number or its text).
fn internal_uint(node: &Node, key: &str, default: u64) -> Result<u64, HardwareError> {
    let Some(value) = node.driver_internal_info().and_then(|d| d.get(key)) else {
        return Ok(default);
    };
    let parsed = match value {
        Value::Null => Some(default),
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    };
    parsed.ok_or_else(|| {
        HardwareError::InvalidArguments(format!(
            "driver_internal_info {key} must be a non-negative integer, not {value}"
        ))
    })
}
