//! SCSI commands through the `SG_IO` ioctl of a block device (`struct sg_io_hdr` of
//! <scsi/sg.h>), and the sense data that comes back.
//!
//! Everything that speaks SCSI (ATA PASS-THROUGH, SANITIZE) goes through [`ScsiTransport`],
//! so the command sequences can be tested against a simulated device.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::time::Duration;

/// `SG_IO` of <scsi/sg.h>.
const SG_IO: nix::libc::c_ulong = 0x2285;
const SG_DXFER_NONE: nix::libc::c_int = -1;
const SG_DXFER_TO_DEV: nix::libc::c_int = -2;
const SG_DXFER_FROM_DEV: nix::libc::c_int = -3;
const SG_INFO_OK_MASK: nix::libc::c_uint = 0x1;
/// SAM status CHECK CONDITION.
const CHECK_CONDITION: u8 = 0x02;
/// `driver_status` flag: sense data was returned.
const DRIVER_SENSE: u16 = 0x08;
const SENSE_LEN: usize = 64;

/// `struct sg_io_hdr` (x86_64 and every other LP64 Linux).
#[repr(C)]
struct SgIoHdr {
    interface_id: nix::libc::c_int,
    dxfer_direction: nix::libc::c_int,
    cmd_len: u8,
    mx_sb_len: u8,
    iovec_count: u16,
    dxfer_len: nix::libc::c_uint,
    dxferp: *mut nix::libc::c_void,
    cmdp: *const u8,
    sbp: *mut u8,
    timeout: nix::libc::c_uint,
    flags: nix::libc::c_uint,
    pack_id: nix::libc::c_int,
    usr_ptr: *mut nix::libc::c_void,
    status: u8,
    masked_status: u8,
    msg_status: u8,
    sb_len_wr: u8,
    host_status: u16,
    driver_status: u16,
    resid: nix::libc::c_int,
    duration: nix::libc::c_uint,
    info: nix::libc::c_uint,
}

nix::ioctl_readwrite_bad!(sg_io, SG_IO, SgIoHdr);

/// The data phase of a command.
pub enum DataDir<'a> {
    None,
    /// From the device into the buffer.
    In(&'a mut [u8]),
    /// From the buffer to the device.
    Out(&'a [u8]),
}

/// Something that executes SCSI commands: a disk's `SG_IO`, or a simulation in tests.
pub trait ScsiTransport {
    fn execute(&self, cdb: &[u8], data: DataDir<'_>, timeout: Duration) -> Result<(), ScsiError>;
}

/// Why a SCSI command did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ScsiError {
    /// The device does not take SCSI commands at all (`SG_IO` answered `ENOTTY`/`EINVAL`:
    /// NVMe, virtio, loop devices, regular files).
    NotScsi(String),
    /// The command ended in CHECK CONDITION with this sense data.
    Check(Sense),
    /// The host adapter or driver failed the command, or the ioctl failed otherwise.
    Transport(String),
}

impl std::fmt::Display for ScsiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ScsiError::NotScsi(why) => write!(f, "not a SCSI device ({why})"),
            ScsiError::Check(sense) => write!(f, "{sense}"),
            ScsiError::Transport(why) => f.write_str(why),
        }
    }
}

impl ScsiError {
    /// The device answered that it does not know the command (or this form of it).
    pub fn is_unsupported_command(&self) -> bool {
        match self {
            ScsiError::NotScsi(_) => true,
            ScsiError::Check(s) => s.is_invalid_opcode() || s.is_invalid_field_in_cdb(),
            ScsiError::Transport(_) => false,
        }
    }
}

/// Sense data, fixed or descriptor format, reduced to what the erase code needs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Sense {
    pub key: u8,
    pub asc: u8,
    pub ascq: u8,
    /// The sense-key specific progress indication (`SKSV` set): done / 65536.
    pub progress: Option<u16>,
    /// The ATA Status Return descriptor of an ATA PASS-THROUGH command: (error, status).
    pub ata: Option<(u8, u8)>,
}

pub const SENSE_KEY_NO_SENSE: u8 = 0x0;
pub const SENSE_KEY_RECOVERED_ERROR: u8 = 0x1;
pub const SENSE_KEY_NOT_READY: u8 = 0x2;
pub const SENSE_KEY_ILLEGAL_REQUEST: u8 = 0x5;
pub const SENSE_KEY_ABORTED_COMMAND: u8 = 0xb;

impl Sense {
    /// Parses response codes 70h/71h (fixed) and 72h/73h (descriptor).
    pub fn parse(b: &[u8]) -> Option<Sense> {
        let code = *b.first()? & 0x7f;
        match code {
            0x70 | 0x71 => {
                let mut s = Sense {
                    key: b.get(2)? & 0x0f,
                    asc: b.get(12).copied().unwrap_or(0),
                    ascq: b.get(13).copied().unwrap_or(0),
                    ..Sense::default()
                };
                let progress_key = matches!(s.key, SENSE_KEY_NOT_READY | SENSE_KEY_NO_SENSE);
                if b.len() >= 18 && b[15] & 0x80 != 0 && progress_key {
                    s.progress = Some(u16::from_be_bytes([b[16], b[17]]));
                }
                Some(s)
            }
            0x72 | 0x73 => {
                let mut s = Sense {
                    key: b.get(1)? & 0x0f,
                    asc: b.get(2).copied().unwrap_or(0),
                    ascq: b.get(3).copied().unwrap_or(0),
                    ..Sense::default()
                };
                let total = 8 + usize::from(b.get(7).copied().unwrap_or(0));
                let mut pos = 8;
                while pos + 2 <= b.len().min(total) {
                    let (kind, len) = (b[pos], usize::from(b[pos + 1]));
                    let d = &b[pos..b.len().min(pos + 2 + len)];
                    match kind {
                        // Sense key specific.
                        0x02 if d.len() >= 7 && d[4] & 0x80 != 0 => {
                            s.progress = Some(u16::from_be_bytes([d[5], d[6]]));
                        }
                        // ATA Status Return.
                        0x09 if d.len() >= 14 => s.ata = Some((d[3], d[13])),
                        _ => {}
                    }
                    pos += 2 + len;
                }
                Some(s)
            }
            _ => None,
        }
    }

    /// ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE.
    pub fn is_invalid_opcode(&self) -> bool {
        self.key == SENSE_KEY_ILLEGAL_REQUEST && self.asc == 0x20
    }

    /// ILLEGAL REQUEST, INVALID FIELD IN CDB.
    pub fn is_invalid_field_in_cdb(&self) -> bool {
        self.key == SENSE_KEY_ILLEGAL_REQUEST && self.asc == 0x24
    }

    /// NOT READY, SANITIZE IN PROGRESS.
    pub fn is_sanitize_in_progress(&self) -> bool {
        self.key == SENSE_KEY_NOT_READY && self.asc == 0x04 && self.ascq == 0x1b
    }

    /// SANITIZE COMMAND FAILED (any sense key).
    pub fn is_sanitize_failed(&self) -> bool {
        self.asc == 0x31 && self.ascq == 0x03
    }

    /// Sense that reports success or information only.
    pub fn is_benign(&self) -> bool {
        matches!(self.key, SENSE_KEY_NO_SENSE | SENSE_KEY_RECOVERED_ERROR)
    }
}

impl std::fmt::Display for Sense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let key = match self.key {
            0x0 => "NO SENSE",
            0x1 => "RECOVERED ERROR",
            0x2 => "NOT READY",
            0x3 => "MEDIUM ERROR",
            0x4 => "HARDWARE ERROR",
            0x5 => "ILLEGAL REQUEST",
            0x6 => "UNIT ATTENTION",
            0x7 => "DATA PROTECT",
            0xb => "ABORTED COMMAND",
            _ => "sense key",
        };
        write!(
            f,
            "{key} (key 0x{:x}, ASC/ASCQ 0x{:02x}/0x{:02x})",
            self.key, self.asc, self.ascq
        )?;
        if let Some((error, status)) = self.ata {
            write!(f, ", ATA status 0x{status:02x} error 0x{error:02x}")?;
        }
        Ok(())
    }
}

/// `SG_IO` on an open block device.
pub struct SgDevice<'a> {
    file: &'a File,
}

impl<'a> SgDevice<'a> {
    pub fn new(file: &'a File) -> Self {
        SgDevice { file }
    }
}

impl ScsiTransport for SgDevice<'_> {
    fn execute(&self, cdb: &[u8], data: DataDir<'_>, timeout: Duration) -> Result<(), ScsiError> {
        let mut sense = [0u8; SENSE_LEN];
        let (direction, ptr, len) = match data {
            DataDir::None => (SG_DXFER_NONE, std::ptr::null_mut(), 0),
            DataDir::In(buf) => (
                SG_DXFER_FROM_DEV,
                buf.as_mut_ptr().cast::<nix::libc::c_void>(),
                buf.len(),
            ),
            DataDir::Out(buf) => (
                SG_DXFER_TO_DEV,
                buf.as_ptr().cast_mut().cast::<nix::libc::c_void>(),
                buf.len(),
            ),
        };
        let mut hdr = SgIoHdr {
            interface_id: i32::from(b'S'),
            dxfer_direction: direction,
            cmd_len: cdb.len() as u8,
            mx_sb_len: SENSE_LEN as u8,
            iovec_count: 0,
            dxfer_len: len as nix::libc::c_uint,
            dxferp: ptr,
            cmdp: cdb.as_ptr(),
            sbp: sense.as_mut_ptr(),
            timeout: timeout.as_millis().min(u128::from(u32::MAX)) as nix::libc::c_uint,
            flags: 0,
            pack_id: 0,
            usr_ptr: std::ptr::null_mut(),
            status: 0,
            masked_status: 0,
            msg_status: 0,
            sb_len_wr: 0,
            host_status: 0,
            driver_status: 0,
            resid: 0,
            duration: 0,
            info: 0,
        };
        // SAFETY: every pointer in `hdr` (CDB, data buffer, sense buffer) points at memory
        // that lives on this frame or is borrowed for the whole call, with the lengths given;
        // the layout matches <scsi/sg.h>.
        match unsafe { sg_io(self.file.as_raw_fd(), &mut hdr) } {
            Ok(_) => {}
            Err(e @ (nix::errno::Errno::ENOTTY | nix::errno::Errno::EINVAL)) => {
                return Err(ScsiError::NotScsi(format!("SG_IO: {e}")))
            }
            Err(e) => return Err(ScsiError::Transport(format!("SG_IO: {e}"))),
        }
        if hdr.info & SG_INFO_OK_MASK == 0 {
            return Ok(());
        }
        let written = usize::from(hdr.sb_len_wr).min(SENSE_LEN);
        if hdr.status == CHECK_CONDITION || hdr.driver_status & DRIVER_SENSE != 0 {
            if let Some(s) = Sense::parse(&sense[..written]) {
                return if s.is_benign() {
                    Ok(())
                } else {
                    Err(ScsiError::Check(s))
                };
            }
        }
        Err(ScsiError::Transport(format!(
            "SCSI status 0x{:02x}, host status 0x{:04x}, driver status 0x{:04x}",
            hdr.status, hdr.host_status, hdr.driver_status
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sg_io_hdr_has_the_kernel_layout() {
        assert_eq!(std::mem::size_of::<SgIoHdr>(), 88);
        assert_eq!(std::mem::offset_of!(SgIoHdr, dxfer_len), 12);
        assert_eq!(std::mem::offset_of!(SgIoHdr, cmdp), 24);
        assert_eq!(std::mem::offset_of!(SgIoHdr, timeout), 40);
        assert_eq!(std::mem::offset_of!(SgIoHdr, status), 64);
        assert_eq!(std::mem::offset_of!(SgIoHdr, host_status), 68);
        assert_eq!(std::mem::offset_of!(SgIoHdr, info), 80);
    }

    #[test]
    fn fixed_sense_with_progress() {
        // NOT READY, LOGICAL UNIT NOT READY, SANITIZE IN PROGRESS, 25% done (SKSV set).
        let mut b = [0u8; 18];
        b[0] = 0x70;
        b[2] = 0x02;
        b[7] = 10;
        b[12] = 0x04;
        b[13] = 0x1b;
        b[15] = 0x80;
        b[16] = 0x40;
        let s = Sense::parse(&b).unwrap();
        assert!(s.is_sanitize_in_progress());
        assert_eq!(s.progress, Some(0x4000));
        assert_eq!(s.to_string(), "NOT READY (key 0x2, ASC/ASCQ 0x04/0x1b)");
    }

    #[test]
    fn descriptor_sense_with_ata_status() {
        // ABORTED COMMAND with an ATA Status Return descriptor: ERR set, error ABRT (0x04).
        let mut b = vec![0x72, 0x0b, 0x00, 0x00, 0, 0, 0, 14];
        let mut d = [0u8; 14];
        d[0] = 0x09;
        d[1] = 12;
        d[3] = 0x04;
        d[13] = 0x51;
        b.extend_from_slice(&d);
        let s = Sense::parse(&b).unwrap();
        assert_eq!(s.key, SENSE_KEY_ABORTED_COMMAND);
        assert_eq!(s.ata, Some((0x04, 0x51)));
        assert!(!s.is_benign());
        assert!(s.to_string().contains("ATA status 0x51 error 0x04"));
        // ILLEGAL REQUEST, INVALID COMMAND OPERATION CODE: not supported.
        let s = Sense::parse(&[0x72, 0x05, 0x20, 0x00, 0, 0, 0, 0]).unwrap();
        assert!(ScsiError::Check(s).is_unsupported_command());
        assert!(Sense::parse(&[0x00, 0x05]).is_none());
    }
}
