use std::time::Duration;

use ironic_protocol::{BlockDevice, Interface, Inventory, Node, Step, StepKind};
use serde_json::{Map, Value};

use crate::Disk;
use crate::HardwareError;

/// How well a manager supports the machine it runs on; higher wins. IPA's values, so that
/// operators reading IPA's documentation get the same behaviour. Vendor managers may return
/// anything above [`SupportLevel::SERVICE_PROVIDER`] to win over other vendor managers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SupportLevel(pub u32);

impl SupportLevel {
    /// The manager does not apply to this machine and is not loaded.
    pub const NONE: SupportLevel = SupportLevel(0);
    /// The generic manager: works anywhere, knows nothing special.
    pub const GENERIC: SupportLevel = SupportLevel(1);
    /// Managers for broad classes of hardware shipped with the agent.
    pub const MAINLINE: SupportLevel = SupportLevel(2);
    /// Managers written for one operator's or vendor's hardware.
    pub const SERVICE_PROVIDER: SupportLevel = SupportLevel(3);
}

/// What a step implementation receives: the node and ports as the conductor sent them, the
/// step's arguments (the conductor's `step.args`, merged over any extra command parameters)
/// and the loaded managers.
#[derive(Debug, Clone, Copy)]
pub struct StepCall<'a> {
    pub node: &'a Node,
    pub ports: &'a [Value],
    pub args: &'a Map<String, Value>,
    /// The loaded managers, for a step that hands part of its work to the best manager of
    /// another method (the generic `erase_devices` hands each disk to the best
    /// `erase_block_device`). `None` when a manager is called on its own, as in tests: the
    /// step then does all of its work itself.
    pub managers: Option<&'a dyn Dispatch>,
}

impl<'a> StepCall<'a> {
    /// A call with no other managers at hand ([`crate::Managers`] adds itself when it
    /// dispatches).
    pub fn new(node: &'a Node, ports: &'a [Value], args: &'a Map<String, Value>) -> Self {
        StepCall {
            node,
            ports,
            args,
            managers: None,
        }
    }
}

/// The loaded managers as a step sees them: IPA's `dispatch_to_managers` for the methods a
/// step hands on. [`crate::Managers`] implements it.
pub trait Dispatch: Sync + std::fmt::Debug {
    /// The best manager's [`HardwareManager::erase_block_device`] for `disk`.
    fn erase_block_device(&self, node: &Node, disk: &Disk) -> Result<Value, HardwareError>;
}

/// The agent's side of IPA's `list_hardware_info`: what IPA reads from its configuration and
/// cached node while collecting.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InventoryRequest {
    /// `BOOTIF` as given on the kernel command line, reported verbatim as
    /// `boot.pxe_interface`.
    pub pxe_interface: Option<String>,
    /// Lookup said `agent_skip_bmc_detect` (the node is managed out of band, e.g. Redfish):
    /// report `bmc_address`/`bmc_v6address` as null and do not ask the BMC.
    pub skip_bmc_detect: bool,
    /// `ipa-collect-lldp`: capture LLDP frames on every interface for at most this long
    /// (`ipa-lldp-timeout`) and report them in `interfaces[].lldp`. `None`: no capture.
    pub lldp_timeout: Option<Duration>,
}

/// A hardware manager: the unit operators write to teach the agent about their hardware.
///
/// # Contract
/// * Every method has a default that answers [`HardwareError::NotHandled`], meaning "this
///   manager does not implement that": dispatch then moves on to the next manager. Return
///   [`HardwareError::Incompatible`] for "I implement it, but not for this hardware"; it also
///   falls through. Any other error stops dispatch and reaches the conductor.
/// * Methods are blocking and may take hours (a disk erase): the agent calls them on a
///   dedicated thread, never on its async runtime. Managers must be `Send + Sync`; interior
///   state needs its own locking.
/// * Steps are looked up by name across managers in support order, like IPA's
///   `dispatch_to_managers(step_name)`. To erase your own devices your way, implement
///   [`HardwareManager::erase_block_device`] for them and answer `Incompatible` for the
///   rest: the generic `erase_devices` hands every disk to the best `erase_block_device`,
///   so yours erases your devices and the generic one all others (see
///   `flash-card-agent/` for a complete example).
/// * A manager may assume the agent has looked up its node (the `StepCall` carries it) and
///   that only one step runs at a time. It must not assume it runs in a ramdisk: destructive
///   work on a device must first pass the [`blockdev::DeviceGuard`] it was given.
/// * [`HardwareManager::version`] must only change when the manager's steps change: the
///   conductor restarts cleaning whenever a version differs from the one it cached.
/// * A step's arguments have been checked against the `argsinfo` it advertises before
///   [`HardwareManager::execute_step`] runs: every `required` one is there and none it does
///   not declare ([`crate::argsinfo`]). Their types are the step's to check. A step that
///   advertises no `argsinfo` gets whatever the conductor sends, as IPA's do.
/// * [`HardwareManager::list_hardware_info`] is called before lookup (inspection) as well as
///   after, so it must not need the node.
///
/// # Writing a manager
/// 1. Implement `name` (the key of your steps in step lists), `version` and
///    `evaluate_hardware_support`: return [`SupportLevel::NONE`] when the machine lacks your
///    hardware (check sysfs, PCI ids), [`SupportLevel::SERVICE_PROVIDER`] (or more, to win
///    over another vendor's) when it has it.
/// 2. Advertise steps in `steps` (a [`Step`] per step and kind: priority 0 means "only when
///    asked for", `interface` `deploy` for in-band steps, `argsinfo` for what operators may
///    pass) and run them in `execute_step`, answering [`HardwareError::NotHandled`] for
///    names you do not know. A step of the same name as another manager's replaces it when
///    your support level is higher (IPA's de-duplication).
/// 3. Return errors the operator can act on: the text reaches the node's `last_error`.
///    [`HardwareError::StepFailed`] for "the step ran and failed", `InvalidArguments` for
///    bad arguments, `Ipa` when the conductor must see a particular IPA error class.
/// 4. Register it: `ironic_agent::run_with_managers(vec![Box::new(YourManager)])` is the
///    whole `main.rs` of your agent (see `example-manager/` in the repository). Without Rust,
///    a manifest and a program in the ramdisk's `managers.d` make an external manager
///    ([`crate::external`]).
pub trait HardwareManager: Send + Sync {
    /// Key of this manager's steps in step lists (IPA uses the Python class name, e.g.
    /// `GenericHardwareManager`).
    fn name(&self) -> &str;

    /// `(version name, version)`, e.g. `("generic_hardware_manager", "1.2")`.
    fn version(&self) -> (String, String);

    /// Called once at start-up; [`SupportLevel::NONE`] disables the manager.
    fn evaluate_hardware_support(&self) -> SupportLevel;

    /// Steps of one kind this manager offers for the node.
    fn steps(&self, kind: StepKind, node: &Node, ports: &[Value]) -> Vec<Step> {
        let _ = (kind, node, ports);
        Vec::new()
    }

    /// Runs the step (or step-like method) named `name`. The returned JSON becomes the
    /// step's `*_result`.
    fn execute_step(&self, name: &str, call: &StepCall<'_>) -> Result<Value, HardwareError> {
        let _ = (name, call);
        Err(HardwareError::NotHandled)
    }

    /// Disks the agent may consider (and, with `include_partitions`, their partitions).
    fn list_block_devices(
        &self,
        include_partitions: bool,
    ) -> Result<Vec<BlockDevice>, HardwareError> {
        let _ = include_partitions;
        Err(HardwareError::NotHandled)
    }

    /// The disk to deploy the image onto (IPA's `get_os_install_device`): the node's root
    /// device hints, `properties.skip_block_devices`, or the smallest disk of at least 4 GiB.
    fn get_os_install_device(&self, node: &Node) -> Result<BlockDevice, HardwareError> {
        let _ = node;
        Err(HardwareError::NotHandled)
    }

    /// Network interfaces, used for lookup (their MACs) and inventory.
    fn list_network_interfaces(&self) -> Result<Vec<Interface>, HardwareError> {
        Err(HardwareError::NotHandled)
    }

    /// The machine's inventory (IPA's `list_hardware_info`), with what the agent knows that
    /// the manager cannot (`BOOTIF`, whether to skip the BMC, whether to capture LLDP).
    fn list_hardware_info(&self, request: &InventoryRequest) -> Result<Inventory, HardwareError> {
        let _ = request;
        Err(HardwareError::NotHandled)
    }

    /// Raw LLDP TLVs seen on each of `interfaces` within `timeout` (IPA's
    /// `collect_lldp_data`): `{name: [(type, hex value), ...]}`, an empty list for an
    /// interface that saw no frame. Used by the `lldp` inspection collector.
    fn collect_lldp_data(
        &self,
        interfaces: &[String],
        timeout: std::time::Duration,
    ) -> Result<std::collections::BTreeMap<String, Vec<(u8, String)>>, HardwareError> {
        let _ = (interfaces, timeout);
        Err(HardwareError::NotHandled)
    }

    /// Erases one disk for `erase_devices` (IPA's `erase_block_device`). The generic
    /// `erase_devices` checks every disk first (guard, virtual media, RAID members, read-only,
    /// shared cluster filesystems), then hands each to the best manager implementing this, on
    /// its own thread (up to `disk_erasure_concurrency` at once): so this must be thread-safe
    /// and must still pass the guard before writing. Answer `Incompatible` for disks that are
    /// not yours. The JSON returned is the disk's entry in the step result; name the method
    /// used and how the result was verified.
    fn erase_block_device(&self, node: &Node, disk: &Disk) -> Result<Value, HardwareError> {
        let _ = (node, disk);
        Err(HardwareError::NotHandled)
    }
}
