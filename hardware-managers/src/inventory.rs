//! What the agent tells a manager when it asks for the inventory.

use std::time::Duration;

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
