//! The generic hardware manager: what works on any Linux machine, from sysfs and procfs.

pub mod block_devices;
mod bmc;
pub mod erase;
mod inventory;
pub mod lldp;
mod metadata_erase;
mod network;
mod options;
mod protected;
pub mod root_device;
mod skip_list;
pub mod smbios;
mod system_facts;

use std::path::PathBuf;

use ironic_protocol::{BlockDevice, Interface, Inventory, Node, Step, StepKind};
use serde_json::Value;

use blockdev::DeviceGuard;

use crate::Disk;
use crate::{HardwareError, HardwareManager, StepCall, SupportLevel};
use block_devices::BlockScanner;
pub use options::GenericOptions;

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

    /// The disks a destructive step works on. Outside a ramdisk with no `--allow-device`,
    /// the step refuses rather than reporting success for erasing nothing.
    fn disks_for(&self, action: &str) -> Result<Vec<Disk>, HardwareError> {
        if !self.guard.in_ramdisk() && self.guard.allowed_paths().next().is_none() {
            return Err(HardwareError::DeviceNotAllowed(blockdev::NotAllowed {
                device: PathBuf::from("any block device"),
                action: action.to_string(),
            }));
        }
        self.disks()
    }

    /// IPA's `list_hardware_info` with procfs at `proc_root`.
    fn collect_inventory(
        &self,
        proc_root: &std::path::Path,
        request: &crate::InventoryRequest,
    ) -> Result<Inventory, HardwareError> {
        let interfaces = self.list_network_interfaces()?;
        let disks = self.list_block_devices(false)?;
        let roots = inventory::Roots {
            proc: proc_root,
            sys: self.guard.sys_root(),
            dev: &self.dev_root,
        };
        Ok(inventory::collect(&roots, interfaces, disks, request))
    }

    /// The hardware erase methods on this manager's devices.
    fn erase_methods(&self) -> erase::DeviceMethods {
        erase::DeviceMethods::new(&self.guard)
    }

    /// `erase_devices` with `erase_one` erasing each disk.
    fn erase_devices(
        &self,
        call: &StepCall<'_>,
        erase_one: &(dyn Fn(&Disk) -> Result<Value, HardwareError> + Sync),
    ) -> Result<Value, HardwareError> {
        let disks = self.disks_for("erase")?;
        erase::erase_devices(&self.guard, &disks, call.node, &self.options, erase_one)
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

    fn steps(&self, kind: StepKind, _node: &Node, _ports: &[Value]) -> Vec<Step> {
        match kind {
            StepKind::Clean => vec![
                Step::new("erase_devices", 10).abortable(true),
                Step::new("erase_devices_metadata", 99).abortable(true),
                Step::new("erase_devices_express", 0).abortable(true),
            ],
            StepKind::Deploy => vec![Step::new("erase_devices_metadata", 0)],
            StepKind::Service => Vec::new(),
        }
    }

    fn execute_step(&self, name: &str, call: &StepCall<'_>) -> Result<Value, HardwareError> {
        match name {
            "erase_devices_metadata" => {
                let disks = self.disks_for("erase the metadata of")?;
                metadata_erase::erase_devices_metadata(
                    &self.guard,
                    &disks,
                    call.node,
                    &self.options,
                )
            }
            // Each disk goes to the best manager's `erase_block_device`, as IPA's
            // `dispatch_to_managers('erase_block_device')`: vendor managers erase their
            // devices. Alone (no other manager to hand disks to), every disk is erased here.
            "erase_devices" => match call.managers {
                Some(managers) => {
                    self.erase_devices(call, &|d| managers.erase_block_device(call.node, d))
                }
                None => self.erase_devices(call, &|d| self.erase_block_device(call.node, d)),
            },
            "erase_devices_express" => {
                let disks = self.disks_for("erase")?;
                erase::erase_devices_express(
                    &self.guard,
                    &disks,
                    call.node,
                    &self.options,
                    &self.erase_methods(),
                )
            }
            _ => Err(HardwareError::NotHandled),
        }
    }

    /// Hardware erase (NVMe, ATA, SCSI), discard where enabled, else overwrite: see
    /// [`erase`].
    fn erase_block_device(&self, node: &Node, disk: &Disk) -> Result<Value, HardwareError> {
        self.guard.check(&disk.path, "erase")?;
        let settings = erase::EraseSettings::from_node(node, &self.options)?;
        erase::erase_disk(disk, &settings, &self.erase_methods())
            .map_err(HardwareError::BlockDeviceErase)
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

    /// IPA's `get_os_install_device`: root device hints over the listed disks (see
    /// [`root_device`]).
    fn get_os_install_device(&self, node: &Node) -> Result<BlockDevice, HardwareError> {
        root_device::select_root_device(node, self.list_block_devices(false)?)
    }

    /// The whole inventory, from sysfs, procfs, SMBIOS, packet sockets and the IPMI device.
    fn list_hardware_info(
        &self,
        request: &crate::InventoryRequest,
    ) -> Result<Inventory, HardwareError> {
        self.collect_inventory(std::path::Path::new("/proc"), request)
    }

    fn collect_lldp_data(
        &self,
        interfaces: &[String],
        timeout: std::time::Duration,
    ) -> Result<std::collections::BTreeMap<String, Vec<(u8, String)>>, HardwareError> {
        Ok(lldp::collect(interfaces, timeout))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use block_devices::tests::SysFixture;
    use serde_json::{json, Map};

    fn names(steps: &[Step]) -> Vec<(&str, i64, Option<bool>)> {
        steps
            .iter()
            .map(|s| (s.step.as_str(), s.priority, s.abortable))
            .collect()
    }

    #[test]
    fn steps_are_ipas_erase_steps() {
        let guard = DeviceGuard::new(false, vec![], "/nonexistent");
        let m = GenericHardwareManager::new(guard, GenericOptions::default());
        let node = Node::default();
        assert_eq!(
            names(&m.steps(StepKind::Clean, &node, &[])),
            [
                ("erase_devices", 10, Some(true)),
                ("erase_devices_metadata", 99, Some(true)),
                ("erase_devices_express", 0, Some(true))
            ]
        );
        let deploy = m.steps(StepKind::Deploy, &node, &[]);
        assert_eq!(names(&deploy), [("erase_devices_metadata", 0, None)]);
        assert_eq!(
            serde_json::to_value(&deploy[0]).unwrap(),
            json!({"step": "erase_devices_metadata", "priority": 0, "interface": "deploy",
                   "reboot_requested": false})
        );
        assert!(m.steps(StepKind::Service, &node, &[]).is_empty());
    }

    fn run(m: &GenericHardwareManager, step: &str) -> Result<Value, HardwareError> {
        let node = Node::default();
        let args = Map::new();
        m.execute_step(step, &StepCall::new(&node, &[], &args))
    }

    #[test]
    fn outside_a_ramdisk_without_allowed_devices_erasing_is_refused() {
        let fx = SysFixture::new();
        fx.disk("vda", "254:0", 4096);
        let guard = DeviceGuard::new(false, vec![], fx.sys());
        let m =
            GenericHardwareManager::new(guard, GenericOptions::default()).with_dev_root(fx.dev());
        assert!(m.list_block_devices(true).unwrap().is_empty());
        for step in [
            "erase_devices_metadata",
            "erase_devices",
            "erase_devices_express",
        ] {
            let err = run(&m, step).unwrap_err();
            assert!(
                matches!(err, HardwareError::DeviceNotAllowed(_)),
                "{step}: {err}"
            );
        }
        assert!(matches!(
            run(&m, "erase_devices_everything"),
            Err(HardwareError::NotHandled)
        ));
    }

    #[test]
    fn in_a_ramdisk_the_fixture_disks_are_erased() {
        // Device nodes of the fixture are regular files, so the steps run end to end on them.
        let fx = SysFixture::new();
        fx.disk("vdb", "254:16", 2048);
        std::fs::write(fx.dev().join("vdb"), vec![0xa5u8; 2048 * 512]).unwrap();
        let guard = DeviceGuard::new(true, vec![], fx.sys());
        let m =
            GenericHardwareManager::new(guard, GenericOptions::default()).with_dev_root(fx.dev());
        let listed = m.list_block_devices(false).unwrap();
        assert_eq!(listed.len(), 1);
        assert_eq!(listed[0].size, 2048 * 512);

        let report = run(&m, "erase_devices_metadata").unwrap();
        let vdb = fx.dev().join("vdb").display().to_string();
        assert_eq!(
            report[&vdb]["zeroed"],
            json!([[0, 34 * 512], [(2048 - 33) * 512, 33 * 512]])
        );
        let report = run(&m, "erase_devices").unwrap();
        assert_eq!(report[&vdb]["verification"]["ok"], true);
        // A regular file takes neither ATA nor SCSI commands: the overwrite, with the reasons.
        assert_eq!(report[&vdb]["method"], "overwrite");
        let not_used = report[&vdb]["methods_not_used"].as_array().unwrap();
        assert_eq!(not_used[0]["method"], "ata_security_erase");
        assert_eq!(not_used[1]["method"], "scsi_sanitize");
        let data = std::fs::read(fx.dev().join("vdb")).unwrap();
        assert!(data.iter().all(|b| *b == 0));
    }
}
