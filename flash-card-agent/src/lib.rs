//! `FlashCardManager`: secure erase of PCIe flash accelerator cards between tenants, the
//! seed operator's plug-in; the crate's binary is the stock agent with it compiled in.
//!
//! I/O servers carry flash cards whose contents the generic overwrite cannot be trusted to
//! remove (over-provisioned NAND, remapped blocks): such a card has to be erased by its own
//! controller. This manager recognises the cards by the PCI identity of the function the
//! block device hangs off (`/sys/block/<disk>` resolves to
//! `.../0000:02:00.0/host3/target3:1:0/3:1:0:0/block/sdb`), and for those disks only it
//! overrides the erase of `erase_devices` (through
//! [`HardwareManager::erase_block_device`]; every other disk is left to the generic
//! manager). A card is erased either:
//! * by its vendor tool (`ddcli`-style: list the cards, find ours by PCI address, run the
//!   secure-erase/format command with its controller id, check the exit status and the
//!   success line of its output, kill it on timeout), for cards whose controller only the
//!   vendor can drive (the LSI/Seagate Nytro WarpDrive family, PCI `1000:007e`, SSS6200
//!   controller: BLP4-400/800/1600, BFH6/BFH8, XP6209/6210/6302 by subsystem ID);
//! * or by NVMe Sanitize / Format NVM through the admin passthrough (see
//!   [`hardware_managers::generic::erase::nvme`]), for NVMe flash cards (PCI class `010802`).
//!
//! Either way the erase must prove itself: before it, markers are written at sampled
//! positions across the card (and read back); after it, none may be left. A card that cannot
//! be erased, a tool that fails or prints no success line, or a marker that survives fails
//! the clean step with an error naming the card, its PCI address and the tool's output; there
//! is no silent fallback to overwriting, and the generic knobs
//! (`agent_enable_nvme_secure_erase`...) do not apply to these cards.
//!
//! # Adapting it to your card
//! Everything card-specific is in [`FlashCardConfig`], so an operator changes data, not code:
//! * add a [`CardModel`] with the PCI IDs of your card (`lspci -nn` shows `[vendor:device]`;
//!   `lspci -vnn` the subsystem IDs) and how to erase it;
//! * for a vendor tool, set [`VendorTool::path`] to where the ramdisk holds the binary, the
//!   `list_args` whose output contains the card's PCI address (set `pci_format` to the way
//!   the tool prints addresses) and the controller id in the first column, the `erase_args`
//!   with `{id}`, `{pci}` or `{device}` placeholders, the `success` text the tool prints on
//!   success, and a timeout long enough for the card;
//! * register the manager in your agent (see `example-manager/` and
//!   `ironic_agent::run_with`), e.g.
//!   `Box::new(FlashCardManager::new(ctx.guard.clone(), FlashCardConfig::default()))`;
//!   load the configuration from a JSON file in the ramdisk if you prefer
//!   ([`FlashCardConfig`] is `Deserialize`).
//!
//! A card that exposes several block devices is erased once per device, serialised per card:
//! each erase of the card proves itself on the device being erased.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ironic_protocol::Node;
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use blockdev::DeviceGuard;
use hardware_managers::generic::erase::{
    hardware_erase, nvme, Attempt, EraseError, Expect, Refusal, Stage,
};
use hardware_managers::Disk;
use hardware_managers::{HardwareError, HardwareManager, SupportLevel};

/// Which PCI functions a card model covers; unset fields match anything.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct PciMatch {
    pub vendor: Option<u16>,
    pub device: Option<u16>,
    pub subsystem_vendor: Option<u16>,
    pub subsystem_device: Option<u16>,
    /// The 24-bit class code (`class` in sysfs), compared under `class_mask`.
    pub class: Option<u32>,
    pub class_mask: Option<u32>,
}

/// The identity of a PCI function, from sysfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PciFunction {
    /// `0000:02:00.0`.
    pub address: String,
    pub vendor: u16,
    pub device: u16,
    pub subsystem_vendor: u16,
    pub subsystem_device: u16,
    pub class: u32,
}

impl PciMatch {
    pub fn matches(&self, f: &PciFunction) -> bool {
        let eq = |want: Option<u16>, have: u16| want.is_none_or(|w| w == have);
        eq(self.vendor, f.vendor)
            && eq(self.device, f.device)
            && eq(self.subsystem_vendor, f.subsystem_vendor)
            && eq(self.subsystem_device, f.subsystem_device)
            && self.class.is_none_or(|c| {
                let mask = self.class_mask.unwrap_or(0xff_ffff);
                c & mask == f.class & mask
            })
            && (self.vendor.is_some() || self.class.is_some())
    }
}

/// How a card is erased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CardErase {
    /// With [`FlashCardConfig::vendor_tool`].
    VendorTool,
    /// NVMe Sanitize where the controller has it, else Format NVM with a secure erase.
    Nvme,
}

/// A family of cards.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardModel {
    pub name: String,
    pub pci: PciMatch,
    pub erase: CardErase,
}

/// How the tool prints a PCI address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PciFormat {
    /// `0000:02:00.0`, as sysfs and lspci -D.
    Sysfs,
    /// `00:02:00:00` (domain's low byte, bus, device, function), as the WarpDrive
    /// management utility prints it.
    Ddcli,
}

/// A `ddcli`-style command-line tool in the ramdisk.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct VendorTool {
    pub path: PathBuf,
    /// Lists the cards, one per line: the controller id first, the PCI address somewhere on
    /// the line. Empty: no listing, `{id}` is unavailable.
    pub list_args: Vec<String>,
    pub pci_format: PciFormat,
    /// The secure erase; `{id}` (from the listing), `{pci}` (sysfs form) and `{device}`
    /// (`/dev/sdb`) are replaced.
    pub erase_args: Vec<String>,
    /// Text the tool prints on success (case-insensitive); the exit status must be 0 too.
    pub success: Option<String>,
    pub list_timeout_secs: u64,
    pub erase_timeout_secs: u64,
}

impl Default for VendorTool {
    /// The Seagate/LSI WarpDrive Management Utility, with the options the OnMetal I/O
    /// manager used in production for its Nytro BLP4-1600 cards (format, nominal
    /// over-provisioning level, without prompting).
    fn default() -> Self {
        VendorTool {
            path: PathBuf::from("/usr/sbin/ddcli"),
            list_args: vec!["-listall".into()],
            pci_format: PciFormat::Ddcli,
            erase_args: ["-c", "{id}", "-format", "-op", "-level", "nom", "-s"]
                .map(String::from)
                .to_vec(),
            success: Some("format successfully completed".into()),
            list_timeout_secs: 60,
            erase_timeout_secs: 3 * 3600,
        }
    }
}

/// Everything card-specific.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct FlashCardConfig {
    pub cards: Vec<CardModel>,
    pub vendor_tool: VendorTool,
}

/// LSI, later Avago/Broadcom.
pub const PCI_VENDOR_LSI: u16 = 0x1000;
/// The SSS6200 flash controller of the Nytro WarpDrive cards (`mpt2sas` drives it).
pub const PCI_DEVICE_SSS6200: u16 = 0x007e;
/// Mass storage, Non-Volatile memory controller, NVM Express.
pub const PCI_CLASS_NVME: u32 = 0x01_08_02;

impl Default for FlashCardConfig {
    fn default() -> Self {
        FlashCardConfig {
            cards: vec![
                CardModel {
                    name: "LSI/Seagate Nytro WarpDrive".into(),
                    pci: PciMatch {
                        vendor: Some(PCI_VENDOR_LSI),
                        device: Some(PCI_DEVICE_SSS6200),
                        ..PciMatch::default()
                    },
                    erase: CardErase::VendorTool,
                },
                CardModel {
                    name: "NVMe flash card".into(),
                    pci: PciMatch {
                        class: Some(PCI_CLASS_NVME),
                        ..PciMatch::default()
                    },
                    erase: CardErase::Nvme,
                },
            ],
            vendor_tool: VendorTool::default(),
        }
    }
}

/// The manager; see the module documentation.
pub struct FlashCardManager {
    guard: DeviceGuard,
    config: FlashCardConfig,
    nvme: nvme::Options,
    /// One lock per card (PCI address): a card is erased by one thread at a time.
    busy: Mutex<BTreeMap<String, Arc<Mutex<()>>>>,
}

/// A disk on a recognised card.
#[derive(Debug, Clone)]
pub struct Card {
    pub model: CardModel,
    pub function: PciFunction,
}

impl FlashCardManager {
    pub const NAME: &'static str = "FlashCardManager";
    pub const VERSION_NAME: &'static str = "flash_card_hardware_manager";
    pub const VERSION: &'static str = "1.0";

    pub fn new(guard: DeviceGuard, config: FlashCardConfig) -> Self {
        FlashCardManager {
            guard,
            config,
            nvme: nvme::Options::default(),
            busy: Mutex::new(BTreeMap::new()),
        }
    }

    /// Polls sanitize progress this often (tests poll without waiting).
    pub fn with_poll_interval(mut self, every: Duration) -> Self {
        self.nvme.poll_interval = every;
        self
    }

    fn sys(&self) -> &Path {
        self.guard.sys_root()
    }

    /// Every PCI function of the machine that is a known card.
    pub fn cards(&self) -> Vec<Card> {
        let dir = self.sys().join("bus/pci/devices");
        let mut found: Vec<Card> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| read_function(&e.path()))
            .filter_map(|f| self.model_of(&f).map(|model| Card { model, function: f }))
            .collect();
        found.sort_by(|a, b| a.function.address.cmp(&b.function.address));
        found
    }

    fn model_of(&self, f: &PciFunction) -> Option<CardModel> {
        self.config.cards.iter().find(|m| m.pci.matches(f)).cloned()
    }

    /// The card `disk` is on: the nearest PCI function above it in sysfs that is a known
    /// card.
    pub fn card_of(&self, kname: &str) -> Option<Card> {
        let block = self.sys().join("block").join(kname);
        // The disk's own path, and (NVMe multipath heads live under a virtual subsystem) the
        // path of its controller's device.
        let starts = [
            std::fs::canonicalize(&block).ok(),
            std::fs::canonicalize(block.join("device/device")).ok(),
        ];
        for start in starts.into_iter().flatten() {
            for dir in start.ancestors() {
                if !is_pci_address(&dir.file_name().unwrap_or_default().to_string_lossy()) {
                    continue;
                }
                if let Some(f) = read_function(dir) {
                    if let Some(model) = self.model_of(&f) {
                        return Some(Card { model, function: f });
                    }
                }
            }
        }
        None
    }

    fn lock_card(&self, address: &str) -> Arc<Mutex<()>> {
        let mut busy = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        busy.entry(address.to_string()).or_default().clone()
    }

    /// Erases and verifies `disk` on `card`.
    fn erase_card(&self, disk: &Disk, card: &Card) -> Attempt {
        let device = disk.path.display().to_string();
        match card.model.erase {
            CardErase::VendorTool => {
                let tool = &self.config.vendor_tool;
                hardware_erase(
                    &self.guard,
                    disk,
                    || tool_plan(tool, &card.function, &device),
                    |_| Expect::MarkersGone,
                    |args| run_tool(tool, args),
                )
            }
            CardErase::Nvme => {
                let file = match std::fs::File::open(&disk.path) {
                    Ok(f) => f,
                    Err(e) => {
                        return Attempt::Failed(EraseError::at(
                            Stage::Plan,
                            format!("opening {device}: {e}"),
                        ))
                    }
                };
                let t = nvme::NvmeDevice::new(&file);
                let siblings = nvme::sibling_namespaces(self.sys(), &disk.kname);
                hardware_erase(
                    &self.guard,
                    disk,
                    || nvme::plan(&t, &siblings, &self.nvme),
                    |p| p.expect(),
                    |p| nvme::run(&t, &device, p, &self.nvme),
                )
            }
        }
    }
}

/// `DDDD:BB:DD.F`.
fn is_pci_address(name: &str) -> bool {
    let b = name.as_bytes();
    b.len() == 12
        && b[4] == b':'
        && b[7] == b':'
        && b[10] == b'.'
        && name
            .bytes()
            .enumerate()
            .all(|(i, c)| matches!(i, 4 | 7 | 10) || c.is_ascii_hexdigit())
}

fn read_hex(dir: &Path, file: &str) -> Option<u32> {
    let text = std::fs::read_to_string(dir.join(file)).ok()?;
    let t = text.trim();
    u32::from_str_radix(t.strip_prefix("0x").unwrap_or(t), 16).ok()
}

/// A PCI function directory of sysfs (`/sys/bus/pci/devices/0000:02:00.0`).
pub fn read_function(dir: &Path) -> Option<PciFunction> {
    let real = std::fs::canonicalize(dir).ok()?;
    let address = real.file_name()?.to_string_lossy().into_owned();
    if !is_pci_address(&address) {
        return None;
    }
    Some(PciFunction {
        vendor: read_hex(&real, "vendor")? as u16,
        device: read_hex(&real, "device")? as u16,
        subsystem_vendor: read_hex(&real, "subsystem_vendor").unwrap_or(0) as u16,
        subsystem_device: read_hex(&real, "subsystem_device").unwrap_or(0) as u16,
        class: read_hex(&real, "class")?,
        address,
    })
}

/// `0000:02:00.0` as the tool prints it.
pub fn tool_pci_address(sysfs: &str, format: PciFormat) -> Option<String> {
    match format {
        PciFormat::Sysfs => Some(sysfs.to_string()),
        PciFormat::Ddcli => {
            let (domain, rest) = sysfs.split_once(':')?;
            let (bus, rest) = rest.split_once(':')?;
            let (dev, func) = rest.split_once('.')?;
            let n = |s: &str| u32::from_str_radix(s, 16).ok();
            Some(format!(
                "{:02x}:{:02x}:{:02x}:{:02x}",
                n(domain)? & 0xff,
                n(bus)?,
                n(dev)?,
                n(func)?
            ))
        }
    }
}

/// The controller id of the card at `address` in the tool's listing: the first column of
/// the one line mentioning the address.
pub fn controller_id(listing: &str, address: &str) -> Result<String, String> {
    let lines: Vec<&str> = listing
        .lines()
        .filter(|l| {
            l.split_whitespace()
                .any(|w| w.eq_ignore_ascii_case(address))
        })
        .collect();
    match lines.as_slice() {
        [line] => line
            .split_whitespace()
            .next()
            .map(str::to_string)
            .ok_or_else(|| "an empty line".to_string()),
        [] => Err(format!(
            "no card with PCI address {address} in the tool's list"
        )),
        _ => Err(format!(
            "{} cards with PCI address {address} in the tool's list",
            lines.len()
        )),
    }
}

/// Runs the tool; fails on a spawn error, timeout or non-zero exit, with its output.
fn run_tool_command(
    tool: &VendorTool,
    args: &[String],
    timeout: Duration,
) -> Result<String, String> {
    let mut cmd = vec![tool.path.clone()];
    cmd.extend(args.iter().map(PathBuf::from));
    let shown = format!("{} {}", tool.path.display(), args.join(" "));
    tracing::info!(command = %shown, "running the card's vendor tool");
    let out = hardware_managers::external::run(&cmd, None, &[], timeout, 1 << 20)
        .map_err(|e| format!("`{shown}` {e}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(format!(
            "`{shown}` failed ({}): {}{}",
            out.status,
            tail(&stdout),
            if out.stderr_tail.is_empty() {
                String::new()
            } else {
                format!(" / stderr: {}", out.stderr_tail)
            }
        ));
    }
    Ok(stdout)
}

/// The last few lines of a tool's output, for an error message.
fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}

/// Finds the tool and the card's id; nothing is written.
fn tool_plan(tool: &VendorTool, card: &PciFunction, device: &str) -> Result<Vec<String>, Refusal> {
    if !tool.path.is_file() {
        return Err(Refusal::Failed(format!(
            "the vendor tool {} is not in the ramdisk",
            tool.path.display()
        )));
    }
    let id = if tool.list_args.is_empty() {
        None
    } else {
        let listing = run_tool_command(
            tool,
            &tool.list_args,
            Duration::from_secs(tool.list_timeout_secs),
        )
        .map_err(Refusal::Failed)?;
        let address = tool_pci_address(&card.address, tool.pci_format)
            .ok_or_else(|| Refusal::Failed(format!("bad PCI address {}", card.address)))?;
        Some(controller_id(&listing, &address).map_err(Refusal::Failed)?)
    };
    let mut args = Vec::new();
    for a in &tool.erase_args {
        if a.contains("{id}") && id.is_none() {
            return Err(Refusal::Failed(
                "erase_args use {id} but list_args is empty".into(),
            ));
        }
        args.push(
            a.replace("{id}", id.as_deref().unwrap_or_default())
                .replace("{pci}", &card.address)
                .replace("{device}", device),
        );
    }
    Ok(args)
}

fn run_tool(tool: &VendorTool, args: &[String]) -> Result<Map<String, Value>, String> {
    let started = Instant::now();
    let out = run_tool_command(tool, args, Duration::from_secs(tool.erase_timeout_secs))?;
    if let Some(success) = &tool.success {
        if !out.to_lowercase().contains(&success.to_lowercase()) {
            return Err(format!(
                "the vendor tool exited 0 but did not print \"{success}\": {}",
                tail(&out)
            ));
        }
    }
    let mut report = Map::new();
    report.insert("method".into(), json!("vendor_tool"));
    report.insert(
        "command".into(),
        json!(format!("{} {}", tool.path.display(), args.join(" "))),
    );
    report.insert("output".into(), json!(tail(&out)));
    report.insert(
        "seconds".into(),
        json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0),
    );
    Ok(report)
}

impl HardwareManager for FlashCardManager {
    fn name(&self) -> &str {
        Self::NAME
    }

    fn version(&self) -> (String, String) {
        (Self::VERSION_NAME.into(), Self::VERSION.into())
    }

    /// Service provider level when the machine has a known card, else not loaded.
    fn evaluate_hardware_support(&self) -> SupportLevel {
        let cards = self.cards();
        for c in &cards {
            tracing::info!(
                card = c.model.name,
                pci = c.function.address,
                "flash card found"
            );
        }
        if cards.is_empty() {
            SupportLevel::NONE
        } else {
            SupportLevel::SERVICE_PROVIDER
        }
    }

    fn erase_block_device(&self, _node: &Node, disk: &Disk) -> Result<Value, HardwareError> {
        let Some(card) = self.card_of(&disk.kname) else {
            return Err(HardwareError::Incompatible(format!(
                "{} is not on a flash card",
                disk.path.display()
            )));
        };
        self.guard.check(&disk.path, "secure-erase")?;
        let lock = self.lock_card(&card.function.address);
        let _held = lock.lock().unwrap_or_else(|p| p.into_inner());
        let describe = || {
            format!(
                "{} ({} at PCI {} [{:04x}:{:04x}, subsystem {:04x}:{:04x}])",
                disk.path.display(),
                card.model.name,
                card.function.address,
                card.function.vendor,
                card.function.device,
                card.function.subsystem_vendor,
                card.function.subsystem_device
            )
        };
        tracing::info!(device = %describe(), "secure-erasing a flash card");
        match self.erase_card(disk, &card) {
            Attempt::Done(mut r) => {
                r.insert("card".into(), json!(card.model.name));
                r.insert("pci".into(), json!(card.function));
                Ok(Value::Object(r))
            }
            other => Err(HardwareError::BlockDeviceErase(format!(
                "Secure erase of flash card {} failed, the card may still hold tenant data: {}",
                describe(),
                other.reason().unwrap_or_default()
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pci_matching() {
        let warpdrive = PciFunction {
            address: "0000:02:00.0".into(),
            vendor: 0x1000,
            device: 0x007e,
            subsystem_vendor: 0x1000,
            subsystem_device: 0x0507,
            class: 0x010400,
        };
        let cfg = FlashCardConfig::default();
        assert!(cfg.cards[0].pci.matches(&warpdrive));
        assert!(!cfg.cards[1].pci.matches(&warpdrive));
        let nvme = PciFunction {
            vendor: 0x144d,
            device: 0xa808,
            class: 0x010802,
            ..warpdrive.clone()
        };
        assert!(!cfg.cards[0].pci.matches(&nvme));
        assert!(cfg.cards[1].pci.matches(&nvme));
        // An SAS2308 HBA of the same vendor is not a WarpDrive.
        let hba = PciFunction {
            device: 0x0087,
            ..warpdrive.clone()
        };
        assert!(!cfg.cards.iter().any(|c| c.pci.matches(&hba)));
        // Subsystem IDs narrow a model; an empty match matches nothing.
        let blp4_1600 = PciMatch {
            vendor: Some(0x1000),
            device: Some(0x007e),
            subsystem_vendor: Some(0x1000),
            subsystem_device: Some(0x0507),
            ..PciMatch::default()
        };
        assert!(blp4_1600.matches(&warpdrive));
        assert!(!blp4_1600.matches(&PciFunction {
            subsystem_device: 0x0504,
            ..warpdrive.clone()
        }));
        assert!(!PciMatch::default().matches(&warpdrive));
    }

    #[test]
    fn addresses_and_listing() {
        assert_eq!(
            tool_pci_address("0000:02:00.0", PciFormat::Ddcli).as_deref(),
            Some("00:02:00:00")
        );
        assert_eq!(
            tool_pci_address("0000:af:1f.7", PciFormat::Ddcli).as_deref(),
            Some("00:af:1f:07")
        );
        assert!(is_pci_address("0000:af:1f.7"));
        assert!(!is_pci_address("pci0000:00"));
        assert!(!is_pci_address("host3"));
        let listing = "\
ID    WarpDrive     Package Version    PCI Address
--    ---------     ---------------    -----------
1     NWD-BLP4-1600      12.22.00.00        00:02:00:00
2     NWD-BLP4-1600      12.22.00.00        00:04:00:00
";
        assert_eq!(controller_id(listing, "00:04:00:00").unwrap(), "2");
        assert!(controller_id(listing, "00:05:00:00")
            .unwrap_err()
            .contains("no card"));
        let twice = format!("{listing}3 NWD 1 00:02:00:00\n");
        assert!(controller_id(&twice, "00:02:00:00")
            .unwrap_err()
            .contains("2 cards"));
        let cfg: FlashCardConfig = serde_json::from_value(json!({
            "cards": [{"name": "x", "pci": {"vendor": 4096, "device": 126}, "erase": "vendor_tool"}],
            "vendor_tool": {"path": "/opt/t", "erase_args": ["--erase", "{pci}"], "pci_format": "sysfs"}
        }))
        .unwrap();
        assert_eq!(
            cfg.vendor_tool.list_args,
            ["-listall"],
            "defaults fill the rest"
        );
        assert_eq!(cfg.vendor_tool.pci_format, PciFormat::Sysfs);
    }
}
