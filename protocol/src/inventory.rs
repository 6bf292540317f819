//! The `inventory` document (IPA's `list_hardware_info`), sent during inspection and returned
//! by `poll.get_hardware_info`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Inventory {
    pub interfaces: Vec<Interface>,
    pub cpu: Cpu,
    pub disks: Vec<BlockDevice>,
    pub memory: Memory,
    /// `"0.0.0.0"` means "no BMC"; null when BMC detection was skipped.
    pub bmc_address: Option<String>,
    /// `"::/0"` means "no BMC"; null when BMC detection was skipped.
    pub bmc_v6address: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bmc_mac: Option<String>,
    pub system_vendor: SystemVendor,
    pub boot: Boot,
    pub hostname: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Interface {
    pub name: String,
    pub mac_address: Option<String>,
    pub ipv4_address: Option<String>,
    pub ipv6_address: Option<String>,
    pub has_carrier: bool,
    /// Raw LLDP TLVs as `[type, hex value]` pairs when collected.
    pub lldp: Option<Vec<(u8, String)>>,
    pub vendor: Option<String>,
    pub product: Option<String>,
    pub client_id: Option<String>,
    pub biosdevname: Option<String>,
    pub speed_mbps: Option<u64>,
    pub pci_address: Option<String>,
    pub driver: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Cpu {
    pub model_name: Option<String>,
    /// MHz as a string, as IPA reports it.
    pub frequency: Option<String>,
    pub count: u32,
    pub architecture: String,
    pub flags: Vec<String>,
    pub socket_count: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Memory {
    /// Bytes usable by the kernel.
    pub total: u64,
    /// MiB installed, from DMI; null when unknown.
    pub physical_mb: Option<u64>,
}

/// A disk (or, where asked for, a partition) as IPA describes it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct BlockDevice {
    /// Device path, e.g. `/dev/sda`.
    pub name: String,
    pub model: String,
    /// Bytes.
    pub size: u64,
    pub rotational: bool,
    pub wwn: Option<String>,
    pub serial: Option<String>,
    pub vendor: Option<String>,
    pub wwn_with_extension: Option<String>,
    pub wwn_vendor_extension: Option<String>,
    pub hctl: Option<String>,
    pub by_path: Option<String>,
    pub logical_sectors: Option<u64>,
    pub physical_sectors: Option<u64>,
    pub tran: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SystemVendor {
    pub product_name: Option<String>,
    pub serial_number: Option<String>,
    pub manufacturer: Option<String>,
    pub firmware: SystemFirmware,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct SystemFirmware {
    pub vendor: Option<String>,
    pub version: Option<String>,
    pub build_date: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
pub struct Boot {
    /// `uefi` or `bios`.
    pub current_boot_mode: String,
    /// `BOOTIF` verbatim.
    pub pxe_interface: Option<String>,
}
