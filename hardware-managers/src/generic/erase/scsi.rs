//! SCSI SANITIZE (SBC-4 5.30) through `SG_IO`, as `sg_sanitize` does it, without sg3-utils:
//! for SAS drives, which answer neither NVMe nor ATA commands.
//!
//! Which service actions the drive implements comes from REPORT SUPPORTED OPERATION CODES
//! (one command, with service action). Crypto erase is preferred, then block erase, then an
//! overwrite with a zero pattern. The command runs with IMMED set and the drive's progress is
//! polled with REQUEST SENSE (NOT READY, SANITIZE IN PROGRESS, with a progress indication)
//! until the sense no longer says in progress; SANITIZE COMMAND FAILED there fails the erase.

use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use super::sg::{DataDir, ScsiError, ScsiTransport, Sense};
use super::{Expect, Refusal};

pub const SANITIZE: u8 = 0x48;
pub const REPORT_SUPPORTED_OPERATION_CODES: u8 = 0xa3;
/// The service action of MAINTENANCE IN that is REPORT SUPPORTED OPERATION CODES.
const RSOC_SERVICE_ACTION: u8 = 0x0c;
pub const REQUEST_SENSE: u8 = 0x03;

const SHORT_TIMEOUT: Duration = Duration::from_secs(30);
const SANITIZE_LIMIT: Duration = Duration::from_secs(24 * 3600);

/// SANITIZE service actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServiceAction {
    Overwrite = 0x01,
    BlockErase = 0x02,
    CryptoErase = 0x03,
    ExitFailureMode = 0x1f,
}

impl ServiceAction {
    fn name(self) -> &'static str {
        match self {
            ServiceAction::Overwrite => "overwrite",
            ServiceAction::BlockErase => "block_erase",
            ServiceAction::CryptoErase => "crypto_erase",
            ServiceAction::ExitFailureMode => "exit_failure_mode",
        }
    }
}

/// The SANITIZE CDB: byte 1 = IMMED (bit 7) | ZNR (bit 6) | AUSE (bit 5) | SERVICE ACTION
/// (bits 4:0); bytes 7-8 the parameter list length. AUSE is set so that a failed sanitize can
/// be left with EXIT FAILURE MODE.
pub fn sanitize_cdb(action: ServiceAction, immediate: bool, parameter_len: u16) -> [u8; 10] {
    let mut c = [0u8; 10];
    c[0] = SANITIZE;
    c[1] = (action as u8) | 0x20 | if immediate { 0x80 } else { 0 };
    c[7..9].copy_from_slice(&parameter_len.to_be_bytes());
    c
}

/// The OVERWRITE parameter list: byte 0 = INVERT (bit 7) | TEST (bits 6:5) | OVERWRITE COUNT
/// (bits 4:0); bytes 2-3 the initialization pattern length; then the pattern. One pass of a
/// four-byte zero pattern, not inverted.
pub fn overwrite_parameters() -> [u8; 8] {
    [0x01, 0x00, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00]
}

/// REPORT SUPPORTED OPERATION CODES for one operation code and service action (reporting
/// options 010b), with `alloc` bytes of response.
pub fn rsoc_cdb(opcode: u8, service_action: u16, alloc: u32) -> [u8; 12] {
    let mut c = [0u8; 12];
    c[0] = REPORT_SUPPORTED_OPERATION_CODES;
    c[1] = RSOC_SERVICE_ACTION;
    c[2] = 0x02;
    c[3] = opcode;
    c[4..6].copy_from_slice(&service_action.to_be_bytes());
    c[6..10].copy_from_slice(&alloc.to_be_bytes());
    c
}

/// REQUEST SENSE with descriptor-format sense (DESC bit), 252 bytes.
pub fn request_sense_cdb() -> [u8; 6] {
    [REQUEST_SENSE, 0x01, 0, 0, 252, 0]
}

/// Whether the drive implements SANITIZE with `action` (the one-command response's SUPPORT
/// field, byte 1 bits 2:0: 011b per the standard, 101b vendor-specific).
pub fn supports(t: &dyn ScsiTransport, action: ServiceAction) -> Result<bool, ScsiError> {
    let mut buf = [0u8; 32];
    t.execute(
        &rsoc_cdb(SANITIZE, action as u16, buf.len() as u32),
        DataDir::In(&mut buf),
        SHORT_TIMEOUT,
    )?;
    Ok(matches!(buf[1] & 0x7, 0b011 | 0b101))
}

/// What the erase will do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    pub action: ServiceAction,
}

impl Plan {
    pub fn method(&self) -> String {
        format!("scsi_sanitize_{}", self.action.name())
    }

    /// An overwrite with a zero pattern leaves zeros; block and crypto erase leave
    /// indeterminate data.
    pub fn expect(&self) -> Expect {
        if self.action == ServiceAction::Overwrite {
            Expect::Zeros
        } else {
            Expect::MarkersGone
        }
    }
}

/// Asks the drive which sanitize actions it implements; nothing is written.
pub fn plan(t: &dyn ScsiTransport) -> Result<Plan, Refusal> {
    for action in [
        ServiceAction::CryptoErase,
        ServiceAction::BlockErase,
        ServiceAction::Overwrite,
    ] {
        match supports(t, action) {
            Ok(true) => return Ok(Plan { action }),
            Ok(false) => {}
            Err(e) => {
                return Err(Refusal::Unsupported(format!(
                    "REPORT SUPPORTED OPERATION CODES failed: {e}"
                )))
            }
        }
    }
    Err(Refusal::Unsupported(
        "the drive implements no SANITIZE service action".into(),
    ))
}

/// Runs the sanitize and waits for it to end.
pub fn run(
    t: &dyn ScsiTransport,
    device: &str,
    plan: &Plan,
    poll_interval: Duration,
) -> Result<Map<String, Value>, String> {
    let started = Instant::now();
    let result = if plan.action == ServiceAction::Overwrite {
        let params = overwrite_parameters();
        t.execute(
            &sanitize_cdb(plan.action, true, params.len() as u16),
            DataDir::Out(&params),
            SHORT_TIMEOUT,
        )
    } else {
        t.execute(
            &sanitize_cdb(plan.action, true, 0),
            DataDir::None,
            SHORT_TIMEOUT,
        )
    };
    result.map_err(|e| format!("SANITIZE ({}) failed: {e}", plan.action.name()))?;
    tracing::info!(device, action = plan.action.name(), "sanitize started");
    let mut next_log = 0u32;
    loop {
        let sense = request_sense(t).map_err(|e| format!("REQUEST SENSE failed: {e}"))?;
        match sense {
            Some(s) if s.is_sanitize_in_progress() => {
                let percent = u32::from(s.progress.unwrap_or(0)) * 100 / 65536;
                if let Some(p) = blockdev::progress::current() {
                    p.set_phase("sanitizing");
                    p.set_fraction(f64::from(s.progress.unwrap_or(0)) / 65536.0);
                }
                if percent >= next_log {
                    tracing::info!(device, percent, "sanitizing");
                    next_log = percent / 10 * 10 + 10;
                }
            }
            Some(s) if s.is_sanitize_failed() => {
                let exit = t.execute(
                    &sanitize_cdb(ServiceAction::ExitFailureMode, false, 0),
                    DataDir::None,
                    SHORT_TIMEOUT,
                );
                return Err(format!(
                    "the sanitize ({}) failed: {s}; {}",
                    plan.action.name(),
                    match exit {
                        Ok(()) => "the drive left sanitize failure mode".to_string(),
                        Err(e) => format!("EXIT FAILURE MODE failed too: {e}"),
                    }
                ));
            }
            _ => break,
        }
        if started.elapsed() > SANITIZE_LIMIT {
            return Err(format!(
                "the sanitize did not finish within {} s",
                SANITIZE_LIMIT.as_secs()
            ));
        }
        std::thread::sleep(poll_interval);
    }
    let mut report = Map::new();
    report.insert("method".into(), json!(plan.method()));
    report.insert(
        "seconds".into(),
        json!((started.elapsed().as_secs_f64() * 10.0).round() / 10.0),
    );
    Ok(report)
}

fn request_sense(t: &dyn ScsiTransport) -> Result<Option<Sense>, ScsiError> {
    let mut buf = [0u8; 252];
    match t.execute(&request_sense_cdb(), DataDir::In(&mut buf), SHORT_TIMEOUT) {
        Ok(()) => Ok(Sense::parse(&buf)),
        // Some drives fail REQUEST SENSE itself with the sanitize's state.
        Err(ScsiError::Check(s)) => Ok(Some(s)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    #[test]
    fn cdbs() {
        assert_eq!(
            sanitize_cdb(ServiceAction::CryptoErase, true, 0),
            [0x48, 0xa3, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            sanitize_cdb(ServiceAction::BlockErase, true, 0),
            [0x48, 0xa2, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        assert_eq!(
            sanitize_cdb(ServiceAction::Overwrite, true, 8),
            [0x48, 0xa1, 0, 0, 0, 0, 0, 0, 8, 0]
        );
        assert_eq!(
            sanitize_cdb(ServiceAction::ExitFailureMode, false, 0),
            [0x48, 0x3f, 0, 0, 0, 0, 0, 0, 0, 0]
        );
        // One pass, pattern length 4, pattern 00000000h.
        assert_eq!(overwrite_parameters(), [1, 0, 0, 4, 0, 0, 0, 0]);
        assert_eq!(
            rsoc_cdb(SANITIZE, 3, 32),
            [0xa3, 0x0c, 0x02, 0x48, 0x00, 0x03, 0, 0, 0, 32, 0, 0]
        );
        assert_eq!(request_sense_cdb(), [0x03, 0x01, 0, 0, 0xfc, 0]);
    }

    /// A SAS drive: supports the listed actions, reports progress for `polls` requests.
    struct FakeSas {
        supported: Vec<u8>,
        polls: RefCell<u32>,
        fail: bool,
        log: RefCell<Vec<Vec<u8>>>,
    }

    impl ScsiTransport for FakeSas {
        fn execute(&self, cdb: &[u8], data: DataDir<'_>, _: Duration) -> Result<(), ScsiError> {
            self.log.borrow_mut().push(cdb.to_vec());
            match (cdb[0], data) {
                (REPORT_SUPPORTED_OPERATION_CODES, DataDir::In(buf)) => {
                    buf.fill(0);
                    buf[1] = if self.supported.contains(&cdb[5]) {
                        0b011
                    } else {
                        0b001
                    };
                    Ok(())
                }
                (SANITIZE, _) => Ok(()),
                (REQUEST_SENSE, DataDir::In(buf)) => {
                    buf.fill(0);
                    buf[0] = 0x72;
                    let mut polls = self.polls.borrow_mut();
                    if *polls > 0 {
                        *polls -= 1;
                        buf[1] = 0x2;
                        buf[2] = 0x04;
                        buf[3] = 0x1b;
                        buf[7] = 8;
                        buf[8..16].copy_from_slice(&[0x02, 0x06, 0, 0, 0x80, 0x80, 0x00, 0]);
                    } else if self.fail {
                        buf[1] = 0x3;
                        buf[2] = 0x31;
                        buf[3] = 0x03;
                    }
                    Ok(())
                }
                _ => Err(ScsiError::Transport("unexpected".into())),
            }
        }
    }

    fn sas(supported: &[u8]) -> FakeSas {
        FakeSas {
            supported: supported.to_vec(),
            polls: RefCell::new(2),
            fail: false,
            log: RefCell::new(Vec::new()),
        }
    }

    #[test]
    fn crypto_erase_preferred_and_polled() {
        let d = sas(&[2, 3]);
        let p = plan(&d).unwrap();
        assert_eq!(p.action, ServiceAction::CryptoErase);
        assert_eq!(p.expect(), Expect::MarkersGone);
        let r = run(&d, "/dev/sdb", &p, Duration::ZERO).unwrap();
        assert_eq!(r["method"], "scsi_sanitize_crypto_erase");
        let ops: Vec<u8> = d.log.borrow().iter().map(|c| c[0]).collect();
        assert_eq!(ops, [0xa3, 0x48, 0x03, 0x03, 0x03]);
    }

    #[test]
    fn overwrite_sends_a_zero_pattern() {
        let d = sas(&[1]);
        let p = plan(&d).unwrap();
        assert_eq!(p.action, ServiceAction::Overwrite);
        assert_eq!(p.expect(), Expect::Zeros);
        run(&d, "/dev/sdb", &p, Duration::ZERO).unwrap();
        assert!(d
            .log
            .borrow()
            .contains(&vec![0x48, 0xa1, 0, 0, 0, 0, 0, 0, 8, 0]));
    }

    #[test]
    fn unsupported_and_failed() {
        assert!(matches!(plan(&sas(&[])), Err(Refusal::Unsupported(_))));
        let mut d = sas(&[2]);
        d.fail = true;
        let p = plan(&d).unwrap();
        let err = run(&d, "/dev/sdb", &p, Duration::ZERO).unwrap_err();
        assert!(err.contains("failed: MEDIUM ERROR"), "{err}");
        assert!(err.contains("left sanitize failure mode"), "{err}");
        assert_eq!(d.log.borrow().last().unwrap()[..2], [0x48, 0x3f]);
    }
}
