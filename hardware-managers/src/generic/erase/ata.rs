//! ATA Security feature set erase (SECURITY ERASE UNIT) through SCSI ATA PASS-THROUGH(16),
//! as `hdparm --security-erase` does it, without hdparm.
//!
//! The drive's IDENTIFY DEVICE data says whether the feature set is supported and which of
//! the security states of ACS-3 (SEC1..SEC6) the drive is in:
//! * frozen (SEC2/SEC6): the BIOS issued SECURITY FREEZE LOCK at boot; nothing but a power
//!   cycle of the drive lifts it. The erase fails with an error that names the remedies
//!   (suspend to RAM and resume, or unplug and replug the drive), because cleaning would
//!   otherwise silently fall back to hours of overwriting;
//! * locked (SEC4) or password set (SEC5): a previous attempt was interrupted. The agent
//!   tries its own temporary password and the empty ones hdparm-based tools leave behind,
//!   and fails, naming the state, if none opens the drive;
//! * SEC1: a temporary user password is set, SECURITY ERASE PREPARE + SECURITY ERASE UNIT
//!   (enhanced when the drive supports it, as IPA prefers) run with a timeout derived from
//!   the drive's own estimate, and success clears the password. When the erase fails, the
//!   drive is unlocked and its password disabled again, so the fallback overwrite can write
//!   to it and the next boot does not find a locked drive.
//!
//! A normal erase writes zeros over all user data (ACS-3 7.40); an enhanced erase writes a
//! vendor pattern, so verification then only requires that the planted markers are gone.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::sg::{DataDir, ScsiError, ScsiTransport};
use super::{Expect, Refusal};

/// ATA PASS-THROUGH(16) operation code.
pub const ATA_16: u8 = 0x85;
pub const IDENTIFY_DEVICE: u8 = 0xec;
pub const SECURITY_SET_PASSWORD: u8 = 0xf1;
pub const SECURITY_UNLOCK: u8 = 0xf2;
pub const SECURITY_ERASE_PREPARE: u8 = 0xf3;
pub const SECURITY_ERASE_UNIT: u8 = 0xf4;
pub const SECURITY_DISABLE_PASSWORD: u8 = 0xf6;

/// The temporary user password the agent sets for the erase: "ironic-agent", zero-padded to
/// 32 bytes (`hdparm --user-master u --security-unlock ironic-agent` opens a drive an
/// interrupted erase left locked).
pub const TEMP_PASSWORD: &[u8] = b"ironic-agent";
/// Passwords tried on a drive found locked or with a password set: ours, the empty
/// password (`hdparm ... NULL` from 9.51 on, IPA's choice) and the literal "NULL" of older
/// hdparm versions.
const KNOWN_PASSWORDS: [&[u8]; 3] = [TEMP_PASSWORD, b"", b"NULL"];

const SHORT_TIMEOUT: Duration = Duration::from_secs(30);
/// For a drive that gives no estimate of its erase time.
const UNKNOWN_ERASE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);

/// The transfer protocol of an ATA command (SAT-3 table 121).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    NonData,
    /// One 512-byte block from the device.
    PioDataIn,
    /// One 512-byte block to the device.
    PioDataOut,
}

/// The ATA PASS-THROUGH(16) CDB for `command` (SAT-3 12.2.2): byte 1 holds the PROTOCOL
/// (bits 4:1), byte 2 T_DIR (bit 3, 1 = from the device), BYT_BLOK (bit 2, 1 = the length is
/// in blocks) and T_LENGTH (bits 1:0, 2 = the length is in the COUNT field); COUNT (byte 6)
/// is one block for the PIO commands, COMMAND is byte 14.
pub fn cdb(command: u8, protocol: Protocol) -> [u8; 16] {
    let mut c = [0u8; 16];
    c[0] = ATA_16;
    match protocol {
        Protocol::NonData => c[1] = 3 << 1,
        Protocol::PioDataIn => {
            c[1] = 4 << 1;
            c[2] = 0x08 | 0x04 | 0x02;
            c[6] = 1;
        }
        Protocol::PioDataOut => {
            c[1] = 5 << 1;
            c[2] = 0x04 | 0x02;
            c[6] = 1;
        }
    }
    c[14] = command;
    c
}

/// Which password a security command names (word 0 bit 0 of its data).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Identifier {
    User,
    Master,
}

/// The 512-byte data block of SECURITY SET PASSWORD, UNLOCK, ERASE UNIT and DISABLE PASSWORD
/// (ACS-3 7.41..7.45): word 0 bit 0 = master password, bit 1 = enhanced erase (ERASE UNIT
/// only); words 1..=16 the password, byte for byte, zero-padded to 32 bytes. SET PASSWORD of
/// a user password leaves bit 8 (security level maximum) clear: level high, so the master
/// password could still open the drive.
pub fn password_block(identifier: Identifier, enhanced: bool, password: &[u8]) -> [u8; 512] {
    let mut b = [0u8; 512];
    let mut control = 0u16;
    if identifier == Identifier::Master {
        control |= 1;
    }
    if enhanced {
        control |= 1 << 1;
    }
    b[0..2].copy_from_slice(&control.to_le_bytes());
    let n = password.len().min(32);
    b[2..2 + n].copy_from_slice(&password[..n]);
    b
}

/// IDENTIFY DEVICE data: 256 little-endian words.
#[derive(Clone, PartialEq, Eq)]
pub struct Identify {
    pub words: [u16; 256],
}

impl std::fmt::Debug for Identify {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identify")
            .field("model", &self.model())
            .field("security", &self.security())
            .finish()
    }
}

/// An erase time estimate of IDENTIFY words 89/90.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EraseTime {
    NotReported,
    Minutes(u32),
    /// More than this many minutes (the field's largest value).
    MoreThan(u32),
}

impl EraseTime {
    /// ACS-3 7.12.7.48: bit 15 set is the extended format (bits 14:0, in units of two
    /// minutes, 7FFFh meaning more than 65532 minutes); otherwise bits 7:0 in units of two
    /// minutes, FFh meaning more than 508 minutes. Zero means not reported.
    pub fn from_word(w: u16) -> EraseTime {
        let (value, max) = if w & 0x8000 != 0 {
            (u32::from(w & 0x7fff), 0x7fff)
        } else {
            (u32::from(w & 0xff), 0xff)
        };
        match value {
            0 => EraseTime::NotReported,
            v if v == max => EraseTime::MoreThan(v * 2 - 2),
            v => EraseTime::Minutes(v * 2),
        }
    }

    /// How long to wait for the erase: twice the estimate and ten minutes more, or 12 hours
    /// when the drive says nothing useful.
    pub fn timeout(self) -> Duration {
        match self {
            EraseTime::Minutes(m) => Duration::from_secs((u64::from(m) * 2 + 10) * 60),
            EraseTime::MoreThan(m) => {
                UNKNOWN_ERASE_TIMEOUT.max(Duration::from_secs(u64::from(m) * 2 * 60))
            }
            EraseTime::NotReported => UNKNOWN_ERASE_TIMEOUT,
        }
    }

    fn to_json(self) -> Value {
        match self {
            EraseTime::NotReported => Value::Null,
            EraseTime::Minutes(m) => json!(m),
            EraseTime::MoreThan(m) => json!(format!(">{m}")),
        }
    }
}

/// Word 128, the security status, with the erase time estimates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Security {
    pub supported: bool,
    pub enabled: bool,
    pub locked: bool,
    pub frozen: bool,
    pub count_expired: bool,
    pub enhanced_erase: bool,
    pub normal_erase_time: EraseTime,
    pub enhanced_erase_time: EraseTime,
}

impl Identify {
    pub fn from_bytes(b: &[u8; 512]) -> Identify {
        let mut words = [0u16; 256];
        for (i, w) in words.iter_mut().enumerate() {
            *w = u16::from_le_bytes([b[2 * i], b[2 * i + 1]]);
        }
        Identify { words }
    }

    pub fn to_bytes(&self) -> [u8; 512] {
        let mut b = [0u8; 512];
        for (i, w) in self.words.iter().enumerate() {
            b[2 * i..2 * i + 2].copy_from_slice(&w.to_le_bytes());
        }
        b
    }

    /// Word 255: signature A5h in bits 7:0 and a checksum making all 512 bytes sum to zero.
    /// `None` when the drive does not use the signature.
    pub fn checksum_ok(&self) -> Option<bool> {
        if self.words[255] & 0xff != 0xa5 {
            return None;
        }
        let sum = self
            .to_bytes()
            .iter()
            .fold(0u8, |acc, b| acc.wrapping_add(*b));
        Some(sum == 0)
    }

    /// An ATA string: two characters per word, the first in the high byte.
    fn string(&self, from: usize, words: usize) -> String {
        let bytes: Vec<u8> = self.words[from..from + words]
            .iter()
            .flat_map(|w| w.to_be_bytes())
            .collect();
        String::from_utf8_lossy(&bytes).trim().to_string()
    }

    pub fn serial(&self) -> String {
        self.string(10, 10)
    }

    pub fn firmware(&self) -> String {
        self.string(23, 4)
    }

    pub fn model(&self) -> String {
        self.string(27, 20)
    }

    pub fn security(&self) -> Security {
        let w = self.words[128];
        Security {
            supported: w & 0x0001 != 0,
            enabled: w & 0x0002 != 0,
            locked: w & 0x0004 != 0,
            frozen: w & 0x0008 != 0,
            count_expired: w & 0x0010 != 0,
            enhanced_erase: w & 0x0020 != 0,
            normal_erase_time: EraseTime::from_word(self.words[89]),
            enhanced_erase_time: EraseTime::from_word(self.words[90]),
        }
    }

    /// Sets the checksum of word 255 (for test fixtures derived from captured data).
    pub fn fix_checksum(&mut self) {
        self.words[255] = 0x00a5;
        let sum = self
            .to_bytes()
            .iter()
            .fold(0u8, |acc, b| acc.wrapping_add(*b));
        self.words[255] |= u16::from(0u8.wrapping_sub(sum)) << 8;
    }
}

/// Issues IDENTIFY DEVICE.
pub fn identify(t: &dyn ScsiTransport) -> Result<Identify, ScsiError> {
    let mut buf = [0u8; 512];
    t.execute(
        &cdb(IDENTIFY_DEVICE, Protocol::PioDataIn),
        DataDir::In(&mut buf),
        SHORT_TIMEOUT,
    )?;
    Ok(Identify::from_bytes(&buf))
}

fn security_command(
    t: &dyn ScsiTransport,
    command: u8,
    block: &[u8; 512],
    timeout: Duration,
) -> Result<(), ScsiError> {
    t.execute(
        &cdb(command, Protocol::PioDataOut),
        DataDir::Out(block),
        timeout,
    )
}

/// What the erase will do, decided from IDENTIFY DEVICE before anything is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub identify: Identify,
    pub enhanced: bool,
    pub timeout: Duration,
}

impl Plan {
    pub fn method(&self) -> &'static str {
        if self.enhanced {
            "ata_security_erase_enhanced"
        } else {
            "ata_security_erase"
        }
    }

    /// A normal erase writes zeros; an enhanced one a vendor-specific pattern.
    pub fn expect(&self) -> Expect {
        if self.enhanced {
            Expect::MarkersGone
        } else {
            Expect::Zeros
        }
    }
}

/// The frozen error, with the remedies an operator can apply.
pub fn frozen_message(device: &str) -> String {
    format!(
        "{device} is security-frozen (the firmware issued SECURITY FREEZE LOCK at boot), so \
         ATA secure erase is impossible until the drive is power-cycled: suspend the machine \
         to RAM and resume it (e.g. `rtcwake -m mem -s 10` in the ramdisk), or unplug and \
         replug (hot-plug) the drive, then restart cleaning; or set \
         agent_continue_if_secure_erase_failed to fall back to overwriting"
    )
}

/// Reads IDENTIFY DEVICE and decides whether and how the drive can be erased; unlocks a drive
/// an interrupted erase left locked (with a password the agent knows).
pub fn plan(t: &dyn ScsiTransport, device: &str) -> Result<Plan, Refusal> {
    let id = identify(t).map_err(|e| {
        Refusal::Unsupported(format!(
            "IDENTIFY DEVICE through ATA PASS-THROUGH failed: {e}"
        ))
    })?;
    if id.checksum_ok() == Some(false) {
        return Err(Refusal::Unsupported(
            "the IDENTIFY DEVICE data has a bad checksum".into(),
        ));
    }
    let sec = id.security();
    if !sec.supported {
        return Err(Refusal::Unsupported(
            "the drive does not support the ATA Security feature set".into(),
        ));
    }
    if sec.frozen {
        return Err(Refusal::Failed(frozen_message(device)));
    }
    let id = if sec.locked || sec.enabled {
        tracing::warn!(
            device,
            locked = sec.locked,
            "the drive has a security password set (an interrupted erase?); trying known passwords"
        );
        let after = clear_password(t, device)?;
        let s = after.security();
        if s.locked || s.enabled {
            return Err(Refusal::Failed(format!(
                "{device} has an ATA security password the agent does not know (it is {}): \
                 unlock it with its password (`hdparm --user-master u --security-disable \
                 PASSWORD {device}`) or the master password, then restart cleaning",
                if s.locked {
                    "locked"
                } else {
                    "unlocked, password enabled"
                }
            )));
        }
        after
    } else {
        id
    };
    let sec = id.security();
    let enhanced = sec.enhanced_erase;
    let time = if enhanced {
        sec.enhanced_erase_time
    } else {
        sec.normal_erase_time
    };
    Ok(Plan {
        identify: id,
        enhanced,
        timeout: time.timeout(),
    })
}

/// Unlocks (SEC4 -> SEC5) and disables the password (SEC5 -> SEC1) with each known password
/// until one works; returns IDENTIFY data read afterwards.
fn clear_password(t: &dyn ScsiTransport, device: &str) -> Result<Identify, Refusal> {
    let reread = |t: &dyn ScsiTransport| {
        identify(t).map_err(|e| Refusal::Failed(format!("IDENTIFY DEVICE failed: {e}")))
    };
    let mut id = reread(t)?;
    for password in KNOWN_PASSWORDS {
        let sec = id.security();
        if !sec.locked && !sec.enabled {
            break;
        }
        let block = password_block(Identifier::User, false, password);
        if sec.locked {
            if let Err(e) = security_command(t, SECURITY_UNLOCK, &block, SHORT_TIMEOUT) {
                tracing::info!(device, error = %e, "security unlock refused");
                id = reread(t)?;
                continue;
            }
        }
        if let Err(e) = security_command(t, SECURITY_DISABLE_PASSWORD, &block, SHORT_TIMEOUT) {
            tracing::info!(device, error = %e, "security disable password refused");
        }
        id = reread(t)?;
    }
    Ok(id)
}

/// Runs the erase of `plan`; returns the report fields.
pub fn run(t: &dyn ScsiTransport, device: &str, plan: &Plan) -> Result<Map<String, Value>, String> {
    let started = Instant::now();
    let ours = password_block(Identifier::User, false, TEMP_PASSWORD);
    security_command(t, SECURITY_SET_PASSWORD, &ours, SHORT_TIMEOUT)
        .map_err(|e| format!("setting a temporary user password failed: {e}"))?;
    let after_set = identify(t).map_err(|e| {
        recover(t, device);
        format!("IDENTIFY DEVICE after setting the password failed: {e}")
    })?;
    if !after_set.security().enabled {
        return Err("the drive accepted SECURITY SET PASSWORD but security is not enabled".into());
    }
    tracing::info!(
        device,
        method = plan.method(),
        timeout_s = plan.timeout.as_secs(),
        "issuing SECURITY ERASE UNIT"
    );
    let erase = password_block(Identifier::User, plan.enhanced, TEMP_PASSWORD);
    let result = t
        .execute(
            &cdb(SECURITY_ERASE_PREPARE, Protocol::NonData),
            DataDir::None,
            SHORT_TIMEOUT,
        )
        .and_then(|()| security_command(t, SECURITY_ERASE_UNIT, &erase, plan.timeout));
    if let Err(e) = result {
        let state = recover(t, device);
        return Err(format!("SECURITY ERASE UNIT failed: {e}; {state}"));
    }
    let after = identify(t).map_err(|e| format!("IDENTIFY DEVICE after the erase failed: {e}"))?;
    if after.security().enabled {
        let state = recover(t, device);
        return Err(format!(
            "the drive still has a security password after SECURITY ERASE UNIT; {state}"
        ));
    }
    let sec = plan.identify.security();
    let mut report = Map::new();
    report.insert("method".into(), json!(plan.method()));
    report.insert("model".into(), json!(plan.identify.model()));
    report.insert(
        "estimated_minutes".into(),
        if plan.enhanced {
            sec.enhanced_erase_time.to_json()
        } else {
            sec.normal_erase_time.to_json()
        },
    );
    report.insert(
        "seconds".into(),
        json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0),
    );
    Ok(report)
}

/// After a failure: unlock the drive and disable our password, so that it is usable (by the
/// fallback and after a reboot). Returns a sentence saying in which state it was left.
fn recover(t: &dyn ScsiTransport, device: &str) -> String {
    match clear_password(t, device) {
        Ok(id) if !id.security().locked && !id.security().enabled => {
            "the drive was unlocked and its temporary password removed".into()
        }
        Ok(id) => format!(
            "the drive could not be unlocked (security status word 0x{:04x}); its temporary \
             user password is \"{}\"",
            id.words[128],
            String::from_utf8_lossy(TEMP_PASSWORD)
        ),
        Err(Refusal::Failed(e) | Refusal::Unsupported(e)) => format!(
            "the drive's state is unknown ({e}); its temporary user password is \"{}\"",
            String::from_utf8_lossy(TEMP_PASSWORD)
        ),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::cell::RefCell;

    /// IDENTIFY DEVICE of QEMU 7.2's ide-hd (captured in the erase VM test from
    /// `-device ide-hd` on AHCI), as hex.
    pub(crate) const QEMU_IDE_HD: &str = include_str!("fixtures/qemu-7.2-ide-hd.identify.hex");

    pub(crate) fn qemu_identify() -> Identify {
        let hex: String = QEMU_IDE_HD.split_whitespace().collect();
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        Identify::from_bytes(&bytes.try_into().unwrap())
    }

    /// The captured data with other security words: what a drive in that state reports.
    fn with_security(w128: u16, w89: u16, w90: u16) -> Identify {
        let mut id = qemu_identify();
        id.words[82] |= 0x0002;
        id.words[128] = w128;
        id.words[89] = w89;
        id.words[90] = w90;
        id.fix_checksum();
        id
    }

    #[test]
    fn cdbs_match_sat() {
        let hex = |c: [u8; 16]| {
            c.iter()
                .map(|b| format!("{b:02x}"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        assert_eq!(
            hex(cdb(IDENTIFY_DEVICE, Protocol::PioDataIn)),
            "85 08 0e 00 00 00 01 00 00 00 00 00 00 00 ec 00"
        );
        assert_eq!(
            hex(cdb(SECURITY_SET_PASSWORD, Protocol::PioDataOut)),
            "85 0a 06 00 00 00 01 00 00 00 00 00 00 00 f1 00"
        );
        assert_eq!(
            hex(cdb(SECURITY_ERASE_PREPARE, Protocol::NonData)),
            "85 06 00 00 00 00 00 00 00 00 00 00 00 00 f3 00"
        );
        assert_eq!(
            hex(cdb(SECURITY_ERASE_UNIT, Protocol::PioDataOut)),
            "85 0a 06 00 00 00 01 00 00 00 00 00 00 00 f4 00"
        );
        assert_eq!(
            hex(cdb(SECURITY_DISABLE_PASSWORD, Protocol::PioDataOut)),
            "85 0a 06 00 00 00 01 00 00 00 00 00 00 00 f6 00"
        );
        assert_eq!(
            hex(cdb(SECURITY_UNLOCK, Protocol::PioDataOut)),
            "85 0a 06 00 00 00 01 00 00 00 00 00 00 00 f2 00"
        );
        // PROTOCOL field: bits 4:1 of byte 1.
        assert_eq!(cdb(0, Protocol::PioDataIn)[1] >> 1 & 0xf, 4);
        assert_eq!(cdb(0, Protocol::PioDataOut)[1] >> 1 & 0xf, 5);
        assert_eq!(cdb(0, Protocol::NonData)[1] >> 1 & 0xf, 3);
    }

    #[test]
    fn password_blocks() {
        let b = password_block(Identifier::User, false, TEMP_PASSWORD);
        assert_eq!(&b[0..2], &[0, 0]);
        assert_eq!(&b[2..14], b"ironic-agent");
        assert!(b[14..].iter().all(|x| *x == 0));
        let b = password_block(Identifier::User, true, b"pw");
        assert_eq!(&b[0..4], &[0x02, 0x00, b'p', b'w']);
        let b = password_block(Identifier::Master, false, &[0x41; 40]);
        assert_eq!(b[0], 0x01);
        assert_eq!(&b[2..34], &[0x41; 32], "passwords are cut at 32 bytes");
        assert_eq!(b[34], 0);
    }

    #[test]
    fn captured_qemu_identify() {
        let id = qemu_identify();
        assert_eq!(id.model(), "QEMU HARDDISK");
        assert_eq!(id.firmware(), "2.5+");
        assert_eq!(id.serial(), "erase-sata");
        // QEMU's IDE emulation implements no security feature set.
        let s = id.security();
        assert!(!s.supported && !s.frozen && !s.locked);
        assert_eq!(
            id.to_bytes(),
            Identify::from_bytes(&id.to_bytes()).to_bytes()
        );
    }

    #[test]
    fn security_states() {
        // Word 128 = 0029h (supported, frozen, enhanced erase), 89 = 2, 90 = 4: what a
        // Samsung SSD 860 EVO reports in a PC that froze it at boot.
        let id = with_security(0x0029, 0x0002, 0x0004);
        assert_eq!(id.checksum_ok(), Some(true));
        let s = id.security();
        assert!(s.supported && s.frozen && s.enhanced_erase && !s.locked && !s.enabled);
        assert_eq!(s.normal_erase_time, EraseTime::Minutes(4));
        assert_eq!(s.enhanced_erase_time, EraseTime::Minutes(8));
        // Locked (SEC4): supported, enabled, locked.
        let s = with_security(0x0007, 0, 0).security();
        assert!(s.enabled && s.locked && !s.frozen);
        assert_eq!(s.normal_erase_time, EraseTime::NotReported);
        // Extended time format, and the saturated values.
        assert_eq!(EraseTime::from_word(0x8000 | 300), EraseTime::Minutes(600));
        assert_eq!(EraseTime::from_word(0x00ff), EraseTime::MoreThan(508));
        assert_eq!(EraseTime::from_word(0xffff), EraseTime::MoreThan(65532));
        assert_eq!(
            EraseTime::Minutes(4).timeout(),
            Duration::from_secs(18 * 60)
        );
        let mut bad = with_security(0x0001, 0, 0);
        bad.words[10] ^= 1;
        assert_eq!(bad.checksum_ok(), Some(false));
    }

    /// A drive implementing the ATA security state machine, recording every command.
    pub(crate) struct FakeDrive {
        pub id: RefCell<Identify>,
        pub password: RefCell<Option<Vec<u8>>>,
        pub log: RefCell<Vec<String>>,
        /// SECURITY ERASE UNIT fails (after PREPARE) when set.
        pub erase_fails: bool,
        /// Answer every command with ILLEGAL REQUEST, as a SAS disk answers ATA_16.
        pub not_ata: bool,
    }

    impl FakeDrive {
        pub(crate) fn new(w128: u16) -> FakeDrive {
            FakeDrive {
                id: RefCell::new(with_security(w128, 0x0002, 0x0004)),
                password: RefCell::new(None),
                log: RefCell::new(Vec::new()),
                erase_fails: false,
                not_ata: false,
            }
        }

        fn set_w128(&self, f: impl FnOnce(u16) -> u16) {
            let mut id = self.id.borrow_mut();
            id.words[128] = f(id.words[128]);
            id.fix_checksum();
        }

        fn aborted() -> ScsiError {
            ScsiError::Check(super::super::sg::Sense {
                key: 0xb,
                ata: Some((0x04, 0x51)),
                ..Default::default()
            })
        }
    }

    fn trimmed(p: &[u8]) -> Vec<u8> {
        let end = p.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
        p[..end].to_vec()
    }

    impl ScsiTransport for FakeDrive {
        fn execute(
            &self,
            cdb: &[u8],
            data: DataDir<'_>,
            timeout: Duration,
        ) -> Result<(), ScsiError> {
            if self.not_ata {
                return Err(ScsiError::Check(super::super::sg::Sense {
                    key: 0x5,
                    asc: 0x20,
                    ..Default::default()
                }));
            }
            assert_eq!(cdb.len(), 16);
            assert_eq!(cdb[0], ATA_16);
            let command = cdb[14];
            let block = match &data {
                DataDir::Out(b) => Some((trimmed(&b[2..34]), b[0])),
                _ => None,
            };
            let pw = block
                .as_ref()
                .map(|(p, _)| String::from_utf8_lossy(p).into_owned());
            self.log.borrow_mut().push(match (&pw, command) {
                (_, SECURITY_ERASE_UNIT) => format!(
                    "erase-unit {} enhanced={} timeout={}",
                    pw.clone().unwrap_or_default(),
                    block.as_ref().is_some_and(|(_, c)| c & 2 != 0),
                    timeout.as_secs()
                ),
                (Some(p), c) => format!("{c:02x} {p}"),
                (None, c) => format!("{c:02x}"),
            });
            let sec = self.id.borrow().security();
            let matches = |given: &Option<(Vec<u8>, u8)>| {
                given.as_ref().map(|(p, _)| p.clone()) == *self.password.borrow()
            };
            match command {
                IDENTIFY_DEVICE => {
                    if let DataDir::In(buf) = data {
                        buf.copy_from_slice(&self.id.borrow().to_bytes());
                    }
                    Ok(())
                }
                _ if sec.frozen => Err(Self::aborted()),
                SECURITY_SET_PASSWORD if !sec.enabled => {
                    *self.password.borrow_mut() = block.map(|(p, _)| p);
                    self.set_w128(|w| w | 0x0002);
                    Ok(())
                }
                SECURITY_UNLOCK if sec.locked && matches(&block) => {
                    self.set_w128(|w| w & !0x0004);
                    Ok(())
                }
                SECURITY_DISABLE_PASSWORD if !sec.locked && sec.enabled && matches(&block) => {
                    *self.password.borrow_mut() = None;
                    self.set_w128(|w| w & !0x0002);
                    Ok(())
                }
                SECURITY_ERASE_PREPARE => Ok(()),
                SECURITY_ERASE_UNIT if sec.enabled && matches(&block) => {
                    if self.erase_fails {
                        // A failed erase leaves the drive locked (SEC4).
                        self.set_w128(|w| w | 0x0004);
                        return Err(Self::aborted());
                    }
                    *self.password.borrow_mut() = None;
                    self.set_w128(|w| w & !0x0006);
                    Ok(())
                }
                _ => Err(Self::aborted()),
            }
        }
    }

    fn log(d: &FakeDrive) -> Vec<String> {
        d.log.borrow().clone()
    }

    #[test]
    fn erase_of_a_drive_in_sec1() {
        let d = FakeDrive::new(0x0021);
        let p = plan(&d, "/dev/sda").unwrap();
        assert!(p.enhanced);
        assert_eq!(p.expect(), Expect::MarkersGone);
        assert_eq!(p.timeout, Duration::from_secs((8 * 2 + 10) * 60));
        let report = run(&d, "/dev/sda", &p).unwrap();
        assert_eq!(report["method"], "ata_security_erase_enhanced");
        assert_eq!(report["estimated_minutes"], 8);
        assert_eq!(
            log(&d),
            [
                "ec",
                "f1 ironic-agent",
                "ec",
                "f3",
                "erase-unit ironic-agent enhanced=true timeout=1560",
                "ec"
            ]
        );
        assert!(!d.id.borrow().security().enabled);
    }

    #[test]
    fn normal_erase_expects_zeros() {
        let d = FakeDrive::new(0x0001);
        let p = plan(&d, "/dev/sda").unwrap();
        assert!(!p.enhanced);
        assert_eq!(p.expect(), Expect::Zeros);
        run(&d, "/dev/sda", &p).unwrap();
        assert!(log(&d).contains(&"erase-unit ironic-agent enhanced=false timeout=1080".into()));
    }

    #[test]
    fn frozen_drive_names_the_remedy() {
        let d = FakeDrive::new(0x0029);
        match plan(&d, "/dev/sda") {
            Err(Refusal::Failed(msg)) => {
                assert!(msg.contains("frozen"), "{msg}");
                assert!(msg.contains("suspend"), "{msg}");
                assert!(msg.contains("hot-plug"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            log(&d),
            ["ec"],
            "nothing but IDENTIFY is sent to a frozen drive"
        );
    }

    #[test]
    fn not_supported_and_not_ata() {
        let d = FakeDrive::new(0x0000);
        assert!(matches!(plan(&d, "/dev/sda"), Err(Refusal::Unsupported(_))));
        let mut sas = FakeDrive::new(0x0001);
        sas.not_ata = true;
        match plan(&sas, "/dev/sdb") {
            Err(Refusal::Unsupported(why)) => assert!(why.contains("ILLEGAL REQUEST"), "{why}"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn drive_left_locked_by_an_interrupted_erase_is_unlocked_first() {
        let d = FakeDrive::new(0x0027);
        *d.password.borrow_mut() = Some(TEMP_PASSWORD.to_vec());
        let p = plan(&d, "/dev/sda").unwrap();
        assert!(!p.identify.security().enabled);
        assert_eq!(
            log(&d),
            ["ec", "ec", "f2 ironic-agent", "f6 ironic-agent", "ec"]
        );
        // A drive whose password was set with hdparm's NULL: the empty password works.
        let d = FakeDrive::new(0x0023);
        *d.password.borrow_mut() = Some(Vec::new());
        plan(&d, "/dev/sda").unwrap();
        assert_eq!(log(&d), ["ec", "ec", "f6 ironic-agent", "ec", "f6 ", "ec"]);
    }

    #[test]
    fn drive_locked_with_an_unknown_password() {
        let d = FakeDrive::new(0x0027);
        *d.password.borrow_mut() = Some(b"tenant-secret".to_vec());
        match plan(&d, "/dev/sda") {
            Err(Refusal::Failed(msg)) => {
                assert!(msg.contains("does not know"), "{msg}");
                assert!(msg.contains("locked"), "{msg}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn failed_erase_leaves_the_drive_unlocked() {
        let mut d = FakeDrive::new(0x0021);
        d.erase_fails = true;
        let p = plan(&d, "/dev/sda").unwrap();
        let err = run(&d, "/dev/sda", &p).unwrap_err();
        assert!(err.contains("SECURITY ERASE UNIT failed"), "{err}");
        assert!(err.contains("ABORTED COMMAND"), "{err}");
        assert!(
            err.contains("unlocked and its temporary password removed"),
            "{err}"
        );
        let s = d.id.borrow().security();
        assert!(!s.locked && !s.enabled, "{s:?}");
        let l = log(&d);
        assert_eq!(
            &l[l.len() - 4..],
            ["ec", "f2 ironic-agent", "f6 ironic-agent", "ec"]
        );
    }
}
