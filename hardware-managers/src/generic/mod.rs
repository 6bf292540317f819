//! The generic hardware manager: what works on any Linux machine, from sysfs and procfs.

pub mod block_devices;
mod network;
pub mod partition_table;
pub mod region;
pub mod signatures;

use std::path::PathBuf;

use ironic_protocol::{BlockDevice, Interface};

use crate::{DeviceGuard, HardwareError, HardwareManager, SupportLevel};
use block_devices::{BlockScanner, Disk};

/// Settings of the generic manager that come from the agent's configuration.
#[derive(Debug, Clone)]
pub struct GenericOptions {
    /// IPA's `guard_special_filesystems`: refuse to erase shared-disk cluster filesystems.
    pub guard_special_filesystems: bool,
}

impl Default for GenericOptions {
    fn default() -> Self {
        GenericOptions {
            guard_special_filesystems: true,
        }
    }
}

/// IPA's `GenericHardwareManager`, under the same name and version so that a conductor that
/// cached IPA's steps sees no version change.
pub struct GenericHardwareManager {
    guard: DeviceGuard,
    options: GenericOptions,
    /// Where device nodes are: `/dev`, or a fixture in tests.
    dev_root: PathBuf,
}

impl GenericHardwareManager {
    pub const NAME: &'static str = "GenericHardwareManager";
    pub const VERSION_NAME: &'static str = "generic_hardware_manager";
    pub const VERSION: &'static str = "1.2";

    pub fn new(guard: DeviceGuard, options: GenericOptions) -> Self {
        GenericHardwareManager {
            guard,
            options,
            dev_root: PathBuf::from("/dev"),
        }
    }

    /// Looks for device nodes under `dev_root` instead of `/dev` (for sysfs fixtures).
    pub fn with_dev_root(mut self, dev_root: impl Into<PathBuf>) -> Self {
        self.dev_root = dev_root.into();
        self
    }

    fn disks(&self) -> Result<Vec<Disk>, HardwareError> {
        BlockScanner::new(&self.guard, &self.dev_root).disks()
    }
}

impl HardwareManager for GenericHardwareManager {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn version(&self) -> (String, String) {
        (Self::VERSION_NAME.to_string(), Self::VERSION.to_string())
    }

    fn evaluate_hardware_support(&self) -> SupportLevel {
        SupportLevel::GENERIC
    }

    fn list_block_devices(
        &self,
        include_partitions: bool,
    ) -> Result<Vec<BlockDevice>, HardwareError> {
        Ok(block_devices::to_block_devices(
            &self.disks()?,
            include_partitions,
        ))
    }

    fn list_network_interfaces(&self) -> Result<Vec<Interface>, HardwareError> {
        network::list_interfaces(self.guard.sys_root())
    }
}
