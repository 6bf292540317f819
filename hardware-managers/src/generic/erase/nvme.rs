//! NVMe secure erase through the admin passthrough ioctl (`NVME_IOCTL_ADMIN_CMD` with
//! `struct nvme_admin_cmd` of <linux/nvme_ioctl.h>), as `nvme sanitize` / `nvme format -s`
//! do it, without nvme-cli.
//!
//! Identify Controller says what the controller can do:
//! * **Sanitize** (SANICAP): crypto erase, block erase or overwrite of all user data in the
//!   NVM subsystem, including caches and unallocated blocks. Preferred in that order (crypto
//!   erase is near-instant and as thorough; overwrite is the slowest). The command returns at
//!   once; progress and the outcome come from the Sanitize Status log page (81h), polled.
//! * **Format NVM** with a Secure Erase Setting (OACS bit 1): cryptographic erase (SES 2) when
//!   FNA says the controller supports it, else user data erase (SES 1), keeping the
//!   namespace's current LBA format and protection settings. This is what IPA does with
//!   `nvme format -s`.
//!
//! Sanitize always acts on the whole subsystem, and a Format may act on all namespaces (FNA
//! bits 0/1). On a controller with more than one namespace those would erase namespaces the
//! erase step may not own (a RAID member it skips, a namespace the guard does not allow), so
//! they are only used when the namespace is the controller's only one; otherwise the device
//! counts as not supporting NVMe secure erase and falls back.
//!
//! None of these guarantees zeros afterwards (the spec calls the contents indeterminate):
//! verification requires that the markers planted before the erase are gone.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::{Expect, Refusal};

pub const ADMIN_GET_LOG_PAGE: u8 = 0x02;
pub const ADMIN_IDENTIFY: u8 = 0x06;
pub const ADMIN_FORMAT_NVM: u8 = 0x80;
pub const ADMIN_SANITIZE: u8 = 0x84;
pub const LOG_SANITIZE_STATUS: u8 = 0x81;
pub const IDENTIFY_CNS_NAMESPACE: u32 = 0x00;
pub const IDENTIFY_CNS_CONTROLLER: u32 = 0x01;
/// NSID meaning "all namespaces" / "not namespace specific".
pub const NSID_ALL: u32 = 0xffff_ffff;
const SANITIZE_LOG_LEN: usize = 512;

/// The admin command timeout for short commands; the kernel's default is 60 s.
const SHORT_TIMEOUT_MS: u32 = 30_000;
/// Format NVM with a secure erase can take as long as overwriting the device on some
/// controllers.
const FORMAT_TIMEOUT_MS: u32 = 6 * 3600 * 1000;
/// How long a sanitize may run when the controller gives no estimate.
const SANITIZE_DEFAULT_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// `struct nvme_admin_cmd` (= `struct nvme_passthru_cmd`), 72 bytes.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdminCommand {
    pub opcode: u8,
    pub flags: u8,
    pub rsvd1: u16,
    pub nsid: u32,
    pub cdw2: u32,
    pub cdw3: u32,
    pub metadata: u64,
    pub addr: u64,
    pub metadata_len: u32,
    pub data_len: u32,
    pub cdw10: u32,
    pub cdw11: u32,
    pub cdw12: u32,
    pub cdw13: u32,
    pub cdw14: u32,
    pub cdw15: u32,
    pub timeout_ms: u32,
    pub result: u32,
}

impl AdminCommand {
    /// The structure as the kernel reads it (little-endian), for fixtures.
    pub fn to_bytes(&self) -> [u8; 72] {
        let mut b = [0u8; 72];
        b[0] = self.opcode;
        b[1] = self.flags;
        b[2..4].copy_from_slice(&self.rsvd1.to_le_bytes());
        let dwords = [
            (4, self.nsid),
            (8, self.cdw2),
            (12, self.cdw3),
            (32, self.metadata_len),
            (36, self.data_len),
            (40, self.cdw10),
            (44, self.cdw11),
            (48, self.cdw12),
            (52, self.cdw13),
            (56, self.cdw14),
            (60, self.cdw15),
            (64, self.timeout_ms),
            (68, self.result),
        ];
        for (at, v) in dwords {
            b[at..at + 4].copy_from_slice(&v.to_le_bytes());
        }
        b[16..24].copy_from_slice(&self.metadata.to_le_bytes());
        b[24..32].copy_from_slice(&self.addr.to_le_bytes());
        b
    }

    /// Identify (06h): CNS in CDW10 bits 7:0, 4096 bytes of data.
    pub fn identify(cns: u32, nsid: u32) -> Self {
        AdminCommand {
            opcode: ADMIN_IDENTIFY,
            nsid,
            data_len: 4096,
            cdw10: cns,
            timeout_ms: SHORT_TIMEOUT_MS,
            ..Default::default()
        }
    }

    /// Get Log Page (02h): LID in CDW10 bits 7:0, the 0's based number of dwords in
    /// NUMDL (CDW10 bits 31:16) and NUMDU (CDW11 bits 15:0).
    pub fn get_log_page(lid: u8, nsid: u32, len: usize) -> Self {
        let numd = (len / 4).saturating_sub(1) as u32;
        AdminCommand {
            opcode: ADMIN_GET_LOG_PAGE,
            nsid,
            data_len: len as u32,
            cdw10: u32::from(lid) | (numd & 0xffff) << 16,
            cdw11: numd >> 16,
            timeout_ms: SHORT_TIMEOUT_MS,
            ..Default::default()
        }
    }

    /// Format NVM (80h), CDW10: LBAF (bits 3:0), MSET (4), PI (7:5), PIL (8), SES (11:9),
    /// LBAFU (13:12).
    pub fn format(nsid: u32, f: &FormatSettings, ses: SecureErase) -> Self {
        let lbaf = u32::from(f.lba_format);
        AdminCommand {
            opcode: ADMIN_FORMAT_NVM,
            nsid,
            cdw10: (lbaf & 0xf)
                | u32::from(f.metadata_at_end) << 4
                | u32::from(f.protection & 0x7) << 5
                | u32::from(f.protection_first) << 8
                | (ses as u32) << 9
                | (lbaf >> 4 & 0x3) << 12,
            timeout_ms: FORMAT_TIMEOUT_MS,
            ..Default::default()
        }
    }

    /// Sanitize (84h), CDW10: SANACT (bits 2:0), AUSE (3), OWPASS (7:4), OIPBP (8),
    /// NODAS (9); CDW11: the overwrite pattern. AUSE is set, so that a failed sanitize can be
    /// left with Exit Failure Mode and the device used (and overwritten) again.
    pub fn sanitize(action: SanitizeAction, overwrite_passes: u8, pattern: u32) -> Self {
        let passes = if action == SanitizeAction::Overwrite {
            u32::from(overwrite_passes.clamp(1, 16) & 0xf)
        } else {
            0
        };
        AdminCommand {
            opcode: ADMIN_SANITIZE,
            cdw10: action as u32 | 1 << 3 | passes << 4,
            cdw11: if action == SanitizeAction::Overwrite {
                pattern
            } else {
                0
            },
            timeout_ms: SHORT_TIMEOUT_MS,
            ..Default::default()
        }
    }
}

/// The Secure Erase Settings of Format NVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecureErase {
    UserData = 1,
    Cryptographic = 2,
}

/// Sanitize actions (SANACT).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanitizeAction {
    ExitFailureMode = 1,
    BlockErase = 2,
    Overwrite = 3,
    CryptoErase = 4,
}

impl SanitizeAction {
    fn name(self) -> &'static str {
        match self {
            SanitizeAction::ExitFailureMode => "exit failure mode",
            SanitizeAction::BlockErase => "block_erase",
            SanitizeAction::Overwrite => "overwrite",
            SanitizeAction::CryptoErase => "crypto_erase",
        }
    }
}

/// Why an admin command failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NvmeError {
    /// The device is not an NVMe namespace (the ioctl is unknown to its driver).
    NotNvme(String),
    /// The controller completed the command with this status (SCT in bits 10:8, SC in 7:0).
    Status(u16),
    /// The ioctl failed.
    Os(String),
}

impl std::fmt::Display for NvmeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NvmeError::NotNvme(why) => write!(f, "not an NVMe namespace ({why})"),
            NvmeError::Status(s) => {
                let (sct, sc) = (s >> 8 & 0x7, s & 0xff);
                let what = match (sct, sc) {
                    (0, 0x01) => "Invalid Command Opcode",
                    (0, 0x02) => "Invalid Field in Command",
                    (0, 0x0b) => "Invalid Namespace or Format",
                    (0, 0x1c) => "Sanitize Failed",
                    (0, 0x1d) => "Sanitize In Progress",
                    (0, 0x20) => "Namespace is Write Protected",
                    (1, 0x0a) => "Invalid Format",
                    (1, 0x09) => "Invalid Log Page",
                    (1, 0x15) => "Invalid Controller Identifier",
                    (1, 0x2c) => "Firmware Activation Prohibited / operation denied",
                    _ => "status",
                };
                write!(f, "{what} (SCT 0x{sct:x}, SC 0x{sc:02x})")
            }
            NvmeError::Os(why) => f.write_str(why),
        }
    }
}

/// Something that executes NVMe admin commands: a namespace's block device, or a simulated
/// controller in tests.
pub trait NvmeTransport {
    /// Runs `cmd` with `data` as its buffer (`addr`/`data_len` are filled in); returns
    /// completion dword 0.
    fn admin(&self, cmd: &AdminCommand, data: Option<&mut [u8]>) -> Result<u32, NvmeError>;
    /// `NVME_IOCTL_ID`: the namespace ID of the device.
    fn namespace_id(&self) -> Result<u32, NvmeError>;
}

nix::ioctl_readwrite!(nvme_ioctl_admin_cmd, b'N', 0x41, AdminCommand);
nix::ioctl_none!(nvme_ioctl_id, b'N', 0x40);

/// The admin passthrough of an NVMe namespace block device (`/dev/nvme0n1`).
pub struct NvmeDevice<'a> {
    file: &'a File,
}

impl<'a> NvmeDevice<'a> {
    pub fn new(file: &'a File) -> Self {
        NvmeDevice { file }
    }
}

fn errno(what: &str, e: nix::errno::Errno) -> NvmeError {
    match e {
        nix::errno::Errno::ENOTTY | nix::errno::Errno::EINVAL => {
            NvmeError::NotNvme(format!("{what}: {e}"))
        }
        e => NvmeError::Os(format!("{what}: {e}")),
    }
}

impl NvmeTransport for NvmeDevice<'_> {
    fn admin(&self, cmd: &AdminCommand, data: Option<&mut [u8]>) -> Result<u32, NvmeError> {
        let mut c = *cmd;
        match data {
            Some(buf) => {
                c.addr = buf.as_mut_ptr() as u64;
                c.data_len = buf.len() as u32;
            }
            None => {
                c.addr = 0;
                c.data_len = 0;
            }
        }
        // SAFETY: `c` is a valid `struct nvme_admin_cmd`; `addr`/`data_len` describe a buffer
        // borrowed mutably for the whole call (or none), which the kernel maps for the
        // transfer in either direction.
        let status = unsafe { nvme_ioctl_admin_cmd(self.file.as_raw_fd(), &mut c) }
            .map_err(|e| errno("NVME_IOCTL_ADMIN_CMD", e))?;
        if status > 0 {
            return Err(NvmeError::Status(status as u16));
        }
        Ok(c.result)
    }

    fn namespace_id(&self) -> Result<u32, NvmeError> {
        // SAFETY: NVME_IOCTL_ID takes no argument; the descriptor is open for the call.
        let id = unsafe { nvme_ioctl_id(self.file.as_raw_fd()) }
            .map_err(|e| errno("NVME_IOCTL_ID", e))?;
        Ok(id as u32)
    }
}

/// The fields of Identify Controller the erase needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControllerInfo {
    pub vid: u16,
    pub ssvid: u16,
    pub serial: String,
    pub model: String,
    pub firmware: String,
    /// Optional Admin Command Support (bytes 257:256).
    pub oacs: u16,
    /// Sanitize Capabilities (bytes 331:328).
    pub sanicap: u32,
    /// Format NVM Attributes (byte 524).
    pub fna: u8,
    /// Number of Namespaces (bytes 519:516).
    pub nn: u32,
}

fn ascii(b: &[u8]) -> String {
    String::from_utf8_lossy(b).trim().to_string()
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

impl ControllerInfo {
    pub fn parse(b: &[u8; 4096]) -> ControllerInfo {
        ControllerInfo {
            vid: u16::from_le_bytes([b[0], b[1]]),
            ssvid: u16::from_le_bytes([b[2], b[3]]),
            serial: ascii(&b[4..24]),
            model: ascii(&b[24..64]),
            firmware: ascii(&b[64..72]),
            oacs: u16::from_le_bytes([b[256], b[257]]),
            sanicap: le32(b, 328),
            nn: le32(b, 516),
            fna: b[524],
        }
    }

    /// OACS bit 1: Format NVM is supported.
    pub fn supports_format(&self) -> bool {
        self.oacs & 0x2 != 0
    }

    /// FNA bit 2: cryptographic erase as a Format NVM secure erase setting.
    pub fn supports_crypto_format(&self) -> bool {
        self.fna & 0x4 != 0
    }

    /// FNA bits 0/1: a format, or its secure erase, applies to every namespace.
    pub fn format_applies_to_all(&self) -> bool {
        self.fna & 0x3 != 0
    }

    /// The sanitize actions SANICAP advertises, best first: crypto erase (bit 0), block
    /// erase (bit 1), overwrite (bit 2).
    pub fn sanitize_actions(&self) -> Vec<SanitizeAction> {
        let mut v = Vec::new();
        if self.sanicap & 0x1 != 0 {
            v.push(SanitizeAction::CryptoErase);
        }
        if self.sanicap & 0x2 != 0 {
            v.push(SanitizeAction::BlockErase);
        }
        if self.sanicap & 0x4 != 0 {
            v.push(SanitizeAction::Overwrite);
        }
        v
    }
}

/// A namespace's current format, to be kept by Format NVM.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FormatSettings {
    /// Index of the LBA format in use (FLBAS bits 3:0, with bits 6:5 above them when the
    /// namespace has more than 16 formats).
    pub lba_format: u8,
    /// FLBAS bit 4: metadata transferred at the end of the data LBA.
    pub metadata_at_end: bool,
    /// DPS bits 2:0: protection information type.
    pub protection: u8,
    /// DPS bit 3: protection information in the first bytes of metadata.
    pub protection_first: bool,
}

/// The fields of Identify Namespace the erase needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamespaceInfo {
    /// Namespace Size in logical blocks.
    pub nsze: u64,
    pub format: FormatSettings,
    /// Bytes per logical block of the format in use.
    pub block_size: u64,
}

impl NamespaceInfo {
    pub fn parse(b: &[u8; 4096]) -> NamespaceInfo {
        let nsze = u64::from_le_bytes(b[0..8].try_into().unwrap_or([0; 8]));
        let nlbaf = b[25];
        let flbas = b[26];
        let dps = b[29];
        let mut lba_format = flbas & 0xf;
        if nlbaf >= 16 {
            lba_format |= (flbas >> 5 & 0x3) << 4;
        }
        // LBA Format descriptors from byte 128, 4 bytes each: LBADS (log2 of the block
        // size) in byte 2.
        let desc = 128 + 4 * usize::from(lba_format);
        let lbads = b.get(desc + 2).copied().unwrap_or(9);
        NamespaceInfo {
            nsze,
            format: FormatSettings {
                lba_format,
                metadata_at_end: flbas & 0x10 != 0,
                protection: dps & 0x7,
                protection_first: dps & 0x8 != 0,
            },
            block_size: 1u64.checked_shl(u32::from(lbads)).unwrap_or(512),
        }
    }
}

/// The Sanitize Status log page (81h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SanitizeStatus {
    /// SPROG: fraction complete, numerator of n/65536 (65535 when not in progress).
    pub progress: u16,
    /// SSTAT bits 2:0.
    pub state: SanitizeState,
    /// SSTAT bits 7:3: overwrite passes completed.
    pub passes: u8,
    /// SSTAT bit 8: no user data was written since the last sanitize (or ever).
    pub global_data_erased: bool,
    /// SCDW10 of the last (or current) sanitize.
    pub cdw10: u32,
    /// Estimated seconds of an overwrite, block erase and crypto erase (`None`: no
    /// estimate, FFFFFFFFh).
    pub estimate_overwrite: Option<u32>,
    pub estimate_block_erase: Option<u32>,
    pub estimate_crypto_erase: Option<u32>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SanitizeState {
    NeverSanitized,
    Completed,
    InProgress,
    Failed,
    /// Completed with No-Deallocate After Sanitize.
    CompletedNoDeallocate,
    Reserved(u8),
}

impl SanitizeStatus {
    pub fn parse(b: &[u8]) -> Option<SanitizeStatus> {
        if b.len() < 20 {
            return None;
        }
        let sstat = u16::from_le_bytes([b[2], b[3]]);
        let estimate = |at| Some(le32(b, at)).filter(|v| *v != u32::MAX);
        Some(SanitizeStatus {
            progress: u16::from_le_bytes([b[0], b[1]]),
            state: match sstat & 0x7 {
                0 => SanitizeState::NeverSanitized,
                1 => SanitizeState::Completed,
                2 => SanitizeState::InProgress,
                3 => SanitizeState::Failed,
                4 => SanitizeState::CompletedNoDeallocate,
                n => SanitizeState::Reserved(n as u8),
            },
            passes: (sstat >> 3 & 0x1f) as u8,
            global_data_erased: sstat & 0x100 != 0,
            cdw10: le32(b, 4),
            estimate_overwrite: estimate(8),
            estimate_block_erase: estimate(12),
            estimate_crypto_erase: estimate(16),
        })
    }

    pub fn percent(&self) -> f64 {
        f64::from(self.progress) * 100.0 / 65536.0
    }

    fn estimate(&self, action: SanitizeAction) -> Option<u32> {
        match action {
            SanitizeAction::CryptoErase => self.estimate_crypto_erase,
            SanitizeAction::BlockErase => self.estimate_block_erase,
            SanitizeAction::Overwrite => self.estimate_overwrite,
            SanitizeAction::ExitFailureMode => None,
        }
    }
}

/// What the erase will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub nsid: u32,
    pub controller: ControllerInfo,
    pub namespace: NamespaceInfo,
    pub operation: Operation,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Sanitize(SanitizeAction),
    Format(SecureErase),
}

impl Plan {
    pub fn method(&self) -> String {
        match self.operation {
            Operation::Sanitize(a) => format!("nvme_sanitize_{}", a.name()),
            Operation::Format(SecureErase::Cryptographic) => "nvme_format_crypto_erase".into(),
            Operation::Format(SecureErase::UserData) => "nvme_format_user_data_erase".into(),
        }
    }

    /// Only a sanitize overwrite with a zero pattern and no deallocation would guarantee
    /// zeros; it deallocates afterwards (NODAS is clear), so reads follow DLFEAT. Every
    /// method therefore verifies that the planted markers are gone.
    pub fn expect(&self) -> Expect {
        Expect::MarkersGone
    }
}

/// Options of the NVMe erase.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Use Sanitize when SANICAP advertises an action (else only Format NVM).
    pub sanitize: bool,
    /// Between Sanitize Status polls.
    pub poll_interval: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            sanitize: true,
            poll_interval: Duration::from_secs(2),
        }
    }
}

/// The other namespaces of the controller `kname` (e.g. `nvme0n1`) belongs to, from sysfs:
/// `/sys/block/nvme0n1/device` is the controller, whose directory lists its namespaces.
pub fn sibling_namespaces(sys_root: &Path, kname: &str) -> Vec<String> {
    let controller = sys_root.join("block").join(kname).join("device");
    let mut names: Vec<String> = std::fs::read_dir(&controller)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("nvme") && n.contains('n') && n != kname && is_namespace(n))
        .collect();
    names.sort();
    names
}

/// `nvme0n1` or `nvme0c0n1` (a multipath path), not `nvme0` or `nvme0n1p1`.
fn is_namespace(name: &str) -> bool {
    let Some(rest) = name.strip_prefix("nvme") else {
        return false;
    };
    let Some((_, ns)) = rest.rsplit_once('n') else {
        return false;
    };
    !ns.is_empty() && ns.bytes().all(|b| b.is_ascii_digit()) && !rest.contains('p')
}

/// Identifies the controller and namespace and chooses the operation; nothing is written.
/// `siblings` are the controller's other namespaces.
pub fn plan(t: &dyn NvmeTransport, siblings: &[String], opts: &Options) -> Result<Plan, Refusal> {
    let unsupported = |e: NvmeError| Refusal::Unsupported(e.to_string());
    let nsid = t.namespace_id().map_err(unsupported)?;
    let mut buf = vec![0u8; 4096];
    t.admin(
        &AdminCommand::identify(IDENTIFY_CNS_CONTROLLER, 0),
        Some(&mut buf),
    )
    .map_err(|e| Refusal::Failed(format!("Identify Controller failed: {e}")))?;
    let controller = ControllerInfo::parse(buf[..].try_into().unwrap_or(&[0; 4096]));
    buf.fill(0);
    t.admin(
        &AdminCommand::identify(IDENTIFY_CNS_NAMESPACE, nsid),
        Some(&mut buf),
    )
    .map_err(|e| Refusal::Failed(format!("Identify Namespace {nsid} failed: {e}")))?;
    let namespace = NamespaceInfo::parse(buf[..].try_into().unwrap_or(&[0; 4096]));
    let shared = !siblings.is_empty();
    let actions = controller.sanitize_actions();
    let operation = if opts.sanitize && !actions.is_empty() && !shared {
        Operation::Sanitize(actions[0])
    } else if controller.supports_format() && !(shared && controller.format_applies_to_all()) {
        Operation::Format(if controller.supports_crypto_format() {
            SecureErase::Cryptographic
        } else {
            SecureErase::UserData
        })
    } else if shared && (controller.supports_format() || !actions.is_empty()) {
        return Err(Refusal::Unsupported(format!(
            "the controller's sanitize/format would also erase its other namespaces ({})",
            siblings.join(", ")
        )));
    } else {
        return Err(Refusal::Unsupported(format!(
            "the controller supports neither Sanitize (SANICAP 0x{:08x}) nor Format NVM \
             (OACS 0x{:04x})",
            controller.sanicap, controller.oacs
        )));
    };
    Ok(Plan {
        nsid,
        controller,
        namespace,
        operation,
    })
}

/// Reads the Sanitize Status log page.
pub fn sanitize_status(t: &dyn NvmeTransport) -> Result<SanitizeStatus, NvmeError> {
    let mut buf = vec![0u8; SANITIZE_LOG_LEN];
    t.admin(
        &AdminCommand::get_log_page(LOG_SANITIZE_STATUS, NSID_ALL, SANITIZE_LOG_LEN),
        Some(&mut buf),
    )?;
    SanitizeStatus::parse(&buf).ok_or_else(|| NvmeError::Os("short sanitize log".into()))
}

/// Runs the plan; returns the report fields.
pub fn run(
    t: &dyn NvmeTransport,
    device: &str,
    plan: &Plan,
    opts: &Options,
) -> Result<Map<String, Value>, String> {
    let started = Instant::now();
    let mut report = Map::new();
    report.insert("method".into(), json!(plan.method()));
    report.insert("model".into(), json!(plan.controller.model));
    report.insert("nsid".into(), json!(plan.nsid));
    match plan.operation {
        Operation::Format(ses) => {
            tracing::info!(
                device,
                nsid = plan.nsid,
                ses = ses as u8,
                "issuing Format NVM"
            );
            t.admin(
                &AdminCommand::format(plan.nsid, &plan.namespace.format, ses),
                None,
            )
            .map_err(|e| format!("Format NVM (SES {}) failed: {e}", ses as u8))?;
        }
        Operation::Sanitize(action) => {
            let status = run_sanitize(t, device, action, opts)?;
            report.insert(
                "sanitize_status".into(),
                json!({
                    "state": format!("{:?}", status.state),
                    "overwrite_passes": status.passes,
                    "global_data_erased": status.global_data_erased,
                }),
            );
        }
    }
    report.insert(
        "seconds".into(),
        json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0),
    );
    Ok(report)
}

/// Starts a sanitize and polls the log page until it ends; a sanitize already running
/// (started before a reboot) is waited for first.
fn run_sanitize(
    t: &dyn NvmeTransport,
    device: &str,
    action: SanitizeAction,
    opts: &Options,
) -> Result<SanitizeStatus, String> {
    let before = sanitize_status(t).map_err(|e| format!("reading the Sanitize Status log: {e}"))?;
    if before.state == SanitizeState::InProgress {
        tracing::warn!(device, "a sanitize is already in progress; waiting for it");
        wait_sanitize(t, device, opts, SANITIZE_DEFAULT_LIMIT)?;
    }
    tracing::info!(device, action = action.name(), "issuing Sanitize");
    t.admin(&AdminCommand::sanitize(action, 1, 0), None)
        .map_err(|e| format!("Sanitize ({}) failed: {e}", action.name()))?;
    let limit = before.estimate(action).map_or(SANITIZE_DEFAULT_LIMIT, |s| {
        Duration::from_secs(u64::from(s) * 2 + 600)
    });
    let status = wait_sanitize(t, device, opts, limit)?;
    match status.state {
        SanitizeState::Completed | SanitizeState::CompletedNoDeallocate => Ok(status),
        SanitizeState::Failed => {
            // AUSE was set: leave failure mode so the device can be written again.
            let exit = t.admin(
                &AdminCommand::sanitize(SanitizeAction::ExitFailureMode, 0, 0),
                None,
            );
            Err(format!(
                "the sanitize ({}) failed (Sanitize Status log); {}",
                action.name(),
                match exit {
                    Ok(_) => "the controller left sanitize failure mode".to_string(),
                    Err(e) => format!("leaving sanitize failure mode failed too: {e}"),
                }
            ))
        }
        other => Err(format!(
            "the sanitize ({}) ended in state {other:?}",
            action.name()
        )),
    }
}

fn wait_sanitize(
    t: &dyn NvmeTransport,
    device: &str,
    opts: &Options,
    limit: Duration,
) -> Result<SanitizeStatus, String> {
    let started = Instant::now();
    let mut next_log = 0.0;
    loop {
        let s = sanitize_status(t).map_err(|e| format!("reading the Sanitize Status log: {e}"))?;
        if s.state != SanitizeState::InProgress {
            return Ok(s);
        }
        if let Some(p) = blockdev::progress::current() {
            p.set_phase("sanitizing");
            p.set_fraction(s.percent() / 100.0);
        }
        if s.percent() >= next_log {
            tracing::info!(device, percent = s.percent().round(), "sanitizing");
            next_log = (s.percent() / 10.0).floor() * 10.0 + 10.0;
        }
        if started.elapsed() > limit {
            return Err(format!(
                "the sanitize did not finish within {} s (at {:.0}%)",
                limit.as_secs(),
                s.percent()
            ));
        }
        std::thread::sleep(opts.poll_interval);
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;

    fn dwords(c: &AdminCommand) -> Vec<u32> {
        c.to_bytes()
            .chunks(4)
            .map(|d| u32::from_le_bytes(d.try_into().unwrap()))
            .collect()
    }

    #[test]
    fn admin_command_layout() {
        assert_eq!(std::mem::size_of::<AdminCommand>(), 72);
        assert_eq!(std::mem::offset_of!(AdminCommand, addr), 24);
        assert_eq!(std::mem::offset_of!(AdminCommand, cdw10), 40);
        assert_eq!(std::mem::offset_of!(AdminCommand, timeout_ms), 64);
        assert_eq!(std::mem::offset_of!(AdminCommand, result), 68);
        // _IOWR('N', 0x41, 72 bytes) and _IO('N', 0x40).
        assert_eq!(nix::request_code_readwrite!(b'N', 0x41, 72), 0xc048_4e41);
        assert_eq!(nix::request_code_none!(b'N', 0x40), 0x4e40);
    }

    #[test]
    fn identify_encoding() {
        let c = AdminCommand::identify(IDENTIFY_CNS_CONTROLLER, 0);
        assert_eq!(
            dwords(&c),
            // opcode 06h | nsid 0 | cdw2 | cdw3 | metadata | addr | mlen | dlen 4096 |
            // cdw10 CNS 1 | ... | timeout
            [0x06, 0, 0, 0, 0, 0, 0, 0, 0, 4096, 1, 0, 0, 0, 0, 0, 30_000, 0]
        );
        let c = AdminCommand::identify(IDENTIFY_CNS_NAMESPACE, 1);
        assert_eq!(dwords(&c)[1], 1);
        assert_eq!(dwords(&c)[10], 0);
    }

    #[test]
    fn get_log_page_encoding() {
        // 512 bytes = 128 dwords, NUMD 0's based = 127 in NUMDL (CDW10 bits 31:16).
        let c = AdminCommand::get_log_page(LOG_SANITIZE_STATUS, NSID_ALL, 512);
        let d = dwords(&c);
        assert_eq!(d[0], 0x02);
        assert_eq!(d[1], 0xffff_ffff);
        assert_eq!(d[9], 512);
        assert_eq!(d[10], 0x007f_0081);
        assert_eq!(d[11], 0);
        // A page longer than 65536 dwords spills into NUMDU (CDW11 bits 15:0).
        let c = AdminCommand::get_log_page(0x0d, 0, 4 * 0x1_0001);
        assert_eq!((c.cdw10, c.cdw11), (0x0000_000d, 0x0001));
    }

    #[test]
    fn format_encoding() {
        let keep = FormatSettings {
            lba_format: 0,
            metadata_at_end: false,
            protection: 0,
            protection_first: false,
        };
        // SES 001b in bits 11:9.
        let c = AdminCommand::format(1, &keep, SecureErase::UserData);
        assert_eq!(c.to_bytes()[0], 0x80);
        assert_eq!(c.nsid, 1);
        assert_eq!(c.cdw10, 0x0000_0200);
        assert_eq!(c.data_len, 0);
        // SES 010b, LBAF 18 (0x12: low bits 2, LBAFU 1), MSET, PI type 1, PIL.
        let odd = FormatSettings {
            lba_format: 0x12,
            metadata_at_end: true,
            protection: 1,
            protection_first: true,
        };
        let c = AdminCommand::format(3, &odd, SecureErase::Cryptographic);
        assert_eq!(c.cdw10, 0x2 | 1 << 4 | 1 << 5 | 1 << 8 | 2 << 9 | 1 << 12);
        assert_eq!(c.cdw10, 0x0000_1532);
    }

    #[test]
    fn sanitize_encoding() {
        // SANACT 100b (crypto erase) | AUSE.
        let c = AdminCommand::sanitize(SanitizeAction::CryptoErase, 1, 0);
        assert_eq!(c.to_bytes()[0], 0x84);
        assert_eq!((c.nsid, c.cdw10, c.cdw11), (0, 0x0000_000c, 0));
        let c = AdminCommand::sanitize(SanitizeAction::BlockErase, 1, 0);
        assert_eq!(c.cdw10, 0x0000_000a);
        // Overwrite: SANACT 011b, AUSE, OWPASS 1 in bits 7:4, pattern in CDW11.
        let c = AdminCommand::sanitize(SanitizeAction::Overwrite, 1, 0xdead_beef);
        assert_eq!((c.cdw10, c.cdw11), (0x0000_001b, 0xdead_beef));
        // 16 passes encode as 0.
        assert_eq!(
            AdminCommand::sanitize(SanitizeAction::Overwrite, 16, 0).cdw10,
            0x0000_000b
        );
        assert_eq!(
            AdminCommand::sanitize(SanitizeAction::ExitFailureMode, 0, 0).cdw10,
            0x0000_0009
        );
    }

    #[test]
    fn sanitize_log_parsing() {
        let mut b = vec![0u8; 512];
        // 50% done, in progress, 2 passes, global data erased.
        b[0..2].copy_from_slice(&0x8000u16.to_le_bytes());
        b[2..4].copy_from_slice(&(2u16 | 2 << 3 | 1 << 8).to_le_bytes());
        b[4..8].copy_from_slice(&0x0000_000cu32.to_le_bytes());
        b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        b[12..16].copy_from_slice(&120u32.to_le_bytes());
        b[16..20].copy_from_slice(&5u32.to_le_bytes());
        let s = SanitizeStatus::parse(&b).unwrap();
        assert_eq!(s.state, SanitizeState::InProgress);
        assert_eq!(s.percent(), 50.0);
        assert_eq!(s.passes, 2);
        assert!(s.global_data_erased);
        assert_eq!(s.cdw10, 0xc);
        assert_eq!(s.estimate_overwrite, None);
        assert_eq!(s.estimate_block_erase, Some(120));
        assert_eq!(s.estimate_crypto_erase, Some(5));
        b[2] = 3;
        assert_eq!(
            SanitizeStatus::parse(&b).unwrap().state,
            SanitizeState::Failed
        );
        b[2] = 4;
        assert_eq!(
            SanitizeStatus::parse(&b).unwrap().state,
            SanitizeState::CompletedNoDeallocate
        );
        assert!(SanitizeStatus::parse(&b[..8]).is_none());
    }

    /// Identify Controller of QEMU 7.2's `-device nvme` (captured in the erase VM test).
    pub(crate) const QEMU_ID_CTRL: &str = include_str!("fixtures/qemu-7.2-nvme.id-ctrl.hex");
    /// Identify Namespace 1 of the same controller.
    pub(crate) const QEMU_ID_NS: &str = include_str!("fixtures/qemu-7.2-nvme.id-ns.hex");

    pub(crate) fn unhex(text: &str) -> Vec<u8> {
        let hex: String = text.split_whitespace().collect();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    #[test]
    fn captured_qemu_identify() {
        let c = ControllerInfo::parse(unhex(QEMU_ID_CTRL)[..].try_into().unwrap());
        assert_eq!(c.vid, 0x1b36);
        assert_eq!(c.model, "QEMU NVMe Ctrl");
        assert_eq!(c.serial, "erase-nvme");
        assert!(c.supports_format());
        assert_eq!(c.sanitize_actions(), [], "QEMU 7.2 implements no Sanitize");
        assert!(!c.supports_crypto_format());
        let n = NamespaceInfo::parse(unhex(QEMU_ID_NS)[..].try_into().unwrap());
        assert_eq!(n.block_size, 512);
        assert_eq!(n.format.lba_format, 0);
        assert_eq!(n.nsze * n.block_size, 256 << 20);
    }

    /// A controller that answers from identify data and a scripted sanitize.
    pub(crate) struct FakeController {
        pub ctrl: Vec<u8>,
        pub ns: Vec<u8>,
        pub nsid: u32,
        pub log: RefCell<Vec<AdminCommand>>,
        /// Sanitize Status states returned by successive log reads.
        pub sanitize_states: RefCell<Vec<(u16, u16)>>,
        pub fail_opcode: Option<(u8, u16)>,
    }

    impl FakeController {
        pub(crate) fn qemu() -> FakeController {
            FakeController {
                ctrl: unhex(QEMU_ID_CTRL),
                ns: unhex(QEMU_ID_NS),
                nsid: 1,
                log: RefCell::new(Vec::new()),
                sanitize_states: RefCell::new(Vec::new()),
                fail_opcode: None,
            }
        }

        pub(crate) fn with_sanicap(sanicap: u32, fna: u8) -> FakeController {
            let mut c = Self::qemu();
            c.ctrl[328..332].copy_from_slice(&sanicap.to_le_bytes());
            c.ctrl[524] = fna;
            c
        }

        pub(crate) fn opcodes(&self) -> Vec<(u8, u32)> {
            self.log
                .borrow()
                .iter()
                .map(|c| (c.opcode, c.cdw10))
                .collect()
        }
    }

    impl NvmeTransport for FakeController {
        fn admin(&self, cmd: &AdminCommand, data: Option<&mut [u8]>) -> Result<u32, NvmeError> {
            self.log.borrow_mut().push(*cmd);
            if let Some((op, status)) = self.fail_opcode {
                if op == cmd.opcode {
                    return Err(NvmeError::Status(status));
                }
            }
            match (cmd.opcode, data) {
                (ADMIN_IDENTIFY, Some(buf)) => {
                    let src = if cmd.cdw10 == IDENTIFY_CNS_CONTROLLER {
                        &self.ctrl
                    } else {
                        &self.ns
                    };
                    buf.copy_from_slice(src);
                    Ok(0)
                }
                (ADMIN_GET_LOG_PAGE, Some(buf)) => {
                    let mut states = self.sanitize_states.borrow_mut();
                    let (sprog, sstat) = if states.len() > 1 {
                        states.remove(0)
                    } else {
                        states.first().copied().unwrap_or((0xffff, 0))
                    };
                    buf.fill(0);
                    buf[0..2].copy_from_slice(&sprog.to_le_bytes());
                    buf[2..4].copy_from_slice(&sstat.to_le_bytes());
                    buf[8..20].fill(0xff);
                    Ok(0)
                }
                (ADMIN_FORMAT_NVM | ADMIN_SANITIZE, None) => Ok(0),
                _ => Err(NvmeError::Status(0x0002)),
            }
        }

        fn namespace_id(&self) -> Result<u32, NvmeError> {
            Ok(self.nsid)
        }
    }

    fn fast() -> Options {
        Options {
            sanitize: true,
            poll_interval: Duration::ZERO,
        }
    }

    #[test]
    fn qemu_controller_is_formatted_with_user_data_erase() {
        let c = FakeController::qemu();
        let p = plan(&c, &[], &fast()).unwrap();
        assert_eq!(p.operation, Operation::Format(SecureErase::UserData));
        assert_eq!(p.method(), "nvme_format_user_data_erase");
        let r = run(&c, "/dev/nvme0n1", &p, &fast()).unwrap();
        assert_eq!(r["method"], "nvme_format_user_data_erase");
        assert_eq!(
            c.opcodes(),
            [(0x06, 1), (0x06, 0), (0x80, 0x200)],
            "identify controller, identify namespace, format SES 1"
        );
        assert_eq!(c.log.borrow()[2].nsid, 1);
    }

    #[test]
    fn crypto_format_when_fna_says_so() {
        let c = FakeController::with_sanicap(0, 0x4);
        let p = plan(&c, &[], &fast()).unwrap();
        assert_eq!(p.operation, Operation::Format(SecureErase::Cryptographic));
    }

    #[test]
    fn sanitize_is_preferred_and_polled_to_completion() {
        // Crypto erase and block erase supported: crypto erase wins.
        let c = FakeController::with_sanicap(0x3, 0x4);
        *c.sanitize_states.borrow_mut() = vec![
            (0xffff, 0x0001),
            (0x0000, 0x0002),
            (0x8000, 0x0002),
            (0xffff, 0x0101),
        ];
        let p = plan(&c, &[], &fast()).unwrap();
        assert_eq!(
            p.operation,
            Operation::Sanitize(SanitizeAction::CryptoErase)
        );
        let r = run(&c, "/dev/nvme0n1", &p, &fast()).unwrap();
        assert_eq!(r["method"], "nvme_sanitize_crypto_erase");
        assert_eq!(r["sanitize_status"]["global_data_erased"], true);
        let ops = c.opcodes();
        assert_eq!(
            ops[2],
            (0x02, 0x007f_0081),
            "status read before the sanitize"
        );
        assert_eq!(ops[3], (0x84, 0x0c), "crypto erase with AUSE");
        assert_eq!(ops[4..], [(0x02, 0x007f_0081); 3]);
        // Block erase only.
        let c = FakeController::with_sanicap(0x2, 0);
        let p = plan(&c, &[], &fast()).unwrap();
        assert_eq!(p.method(), "nvme_sanitize_block_erase");
        // Overwrite only; with sanitize disabled, Format is used instead.
        let c = FakeController::with_sanicap(0x4, 0);
        assert_eq!(
            plan(&c, &[], &fast()).unwrap().method(),
            "nvme_sanitize_overwrite"
        );
        let no_sanitize = Options {
            sanitize: false,
            ..fast()
        };
        assert_eq!(
            plan(&c, &[], &no_sanitize).unwrap().method(),
            "nvme_format_user_data_erase"
        );
    }

    #[test]
    fn failed_sanitize_leaves_failure_mode_and_reports() {
        let c = FakeController::with_sanicap(0x2, 0);
        *c.sanitize_states.borrow_mut() = vec![(0xffff, 0), (0x1000, 2), (0xffff, 3)];
        let p = plan(&c, &[], &fast()).unwrap();
        let err = run(&c, "/dev/nvme0n1", &p, &fast()).unwrap_err();
        assert!(err.contains("failed (Sanitize Status log)"), "{err}");
        assert!(err.contains("left sanitize failure mode"), "{err}");
        assert_eq!(c.opcodes().last(), Some(&(0x84, 0x09)));
    }

    #[test]
    fn a_sanitize_in_progress_is_waited_for() {
        let c = FakeController::with_sanicap(0x1, 0);
        *c.sanitize_states.borrow_mut() = vec![(0x4000, 2), (0x8000, 2), (0xffff, 1), (0xffff, 1)];
        let p = plan(&c, &[], &fast()).unwrap();
        run(&c, "/dev/nvme0n1", &p, &fast()).unwrap();
        let ops: Vec<u8> = c.opcodes().iter().map(|(o, _)| *o).collect();
        assert_eq!(ops, [0x06, 0x06, 0x02, 0x02, 0x02, 0x84, 0x02]);
    }

    #[test]
    fn shared_controllers_are_not_sanitized() {
        let siblings = vec!["nvme0n2".to_string()];
        let c = FakeController::with_sanicap(0x1, 0x0);
        // Sanitize would hit nvme0n2; a per-namespace format is fine.
        assert_eq!(
            plan(&c, &siblings, &fast()).unwrap().operation,
            Operation::Format(SecureErase::UserData)
        );
        // A format that applies to all namespaces is refused as well.
        let c = FakeController::with_sanicap(0x1, 0x1);
        match plan(&c, &siblings, &fast()) {
            Err(Refusal::Unsupported(why)) => assert!(why.contains("nvme0n2"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn errors() {
        let mut c = FakeController::qemu();
        c.ctrl[256] = 0;
        match plan(&c, &[], &fast()) {
            Err(Refusal::Unsupported(why)) => assert!(why.contains("neither"), "{why}"),
            other => panic!("{other:?}"),
        }
        let mut c = FakeController::qemu();
        c.fail_opcode = Some((ADMIN_FORMAT_NVM, 0x010a));
        let p = plan(&c, &[], &fast()).unwrap();
        let err = run(&c, "/dev/nvme0n1", &p, &fast()).unwrap_err();
        assert_eq!(
            err,
            "Format NVM (SES 1) failed: Invalid Format (SCT 0x1, SC 0x0a)"
        );
    }

    #[test]
    fn namespace_names() {
        assert!(is_namespace("nvme0n1"));
        assert!(is_namespace("nvme10n12"));
        assert!(is_namespace("nvme0c1n1"));
        assert!(!is_namespace("nvme0"));
        assert!(!is_namespace("nvme0n1p1"));
        assert!(!is_namespace("nvme0n"));
        let sys = tempfile::tempdir().unwrap();
        let ctrl = sys.path().join("devices/pci/nvme/nvme0");
        for n in ["nvme0n1", "nvme0n2", "hwmon1", "power"] {
            std::fs::create_dir_all(ctrl.join(n)).unwrap();
        }
        std::fs::create_dir_all(sys.path().join("block/nvme0n1")).unwrap();
        std::os::unix::fs::symlink(&ctrl, sys.path().join("block/nvme0n1/device")).unwrap();
        assert_eq!(sibling_namespaces(sys.path(), "nvme0n1"), ["nvme0n2"]);
        assert!(sibling_namespaces(sys.path(), "nvme9n1").is_empty());
    }
}
