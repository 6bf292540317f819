//! The BMC's LAN addresses, asked of the BMC itself through the kernel's IPMI device
//! (`/dev/ipmi0`, the `ipmi_devintf` ioctl interface) with the IPMI 2.0 command *Get LAN
//! Configuration Parameters*: what IPA gets by running `ipmitool lan print` and
//! `ipmitool lan6 print` for each channel, without ipmitool.
//!
//! IPA's answers are kept: no IPMI device means `null` (unknown); a BMC without an address
//! means `0.0.0.0` and `::/0`; the MAC is that of the first channel with an address.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Transport netfn and its Get LAN Configuration Parameters command (IPMI 2.0 23.2).
const NETFN_TRANSPORT: u8 = 0x0c;
const CMD_GET_LAN_CONFIG: u8 = 0x02;
/// App netfn and Get Device ID (IPMI 2.0 20.1): every BMC implements it.
const NETFN_APP: u8 = 0x06;
const CMD_GET_DEVICE_ID: u8 = 0x01;

/// LAN configuration parameters (IPMI 2.0 table 23-4, and the IPv6 ones of its errata).
pub const PARAM_IP_ADDRESS: u8 = 3;
pub const PARAM_MAC_ADDRESS: u8 = 5;
pub const PARAM_IP6_ENABLES: u8 = 51;
pub const PARAM_IP6_STATUS: u8 = 55;
pub const PARAM_IP6_STATIC_ADDR: u8 = 56;
pub const PARAM_IP6_DYNAMIC_ADDR: u8 = 59;

/// Channels 1..=11 are the ones that can be LAN channels (IPA scans the same).
const CHANNELS: std::ops::RangeInclusive<u8> = 1..=11;

/// Where IPMI device nodes appear, as IPA looks for them.
pub const DEVICE_PATHS: [&str; 3] = ["/dev/ipmi0", "/dev/ipmi/0", "/dev/ipmidev/0"];

/// Sends one request to the BMC and returns its response data, completion code first.
pub trait IpmiTransport {
    fn request(&mut self, netfn: u8, cmd: u8, data: &[u8]) -> std::io::Result<Vec<u8>>;
}

/// What the inventory reports about the BMC.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct BmcInfo {
    pub address: Option<String>,
    pub v6address: Option<String>,
    pub mac: Option<String>,
}

/// Asks the BMC behind the first IPMI device found. `None` when there is none (a VM, a
/// machine without `ipmi_si`/`ipmi_devintf`): the inventory then says `null`, as IPA's.
pub fn detect(dev_root: &Path) -> Option<BmcInfo> {
    let path = DEVICE_PATHS
        .iter()
        .map(|p| dev_root.join(p.trim_start_matches("/dev/")))
        .find(|p| is_char_device(p))?;
    match IpmiDevice::open(&path) {
        Ok(mut dev) => query(&mut dev),
        Err(e) => {
            tracing::warn!(device = %path.display(), error = %e, "cannot use the IPMI device");
            None
        }
    }
}

fn is_char_device(p: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(p).is_ok_and(|m| m.file_type().is_char_device())
}

/// What Get Device ID says about the BMC.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceId {
    pub device_id: u8,
    pub firmware: String,
    pub ipmi_version: String,
    pub manufacturer_id: u32,
    pub product_id: u16,
}

/// Get Device ID: whether a BMC answers at all, and which.
pub fn device_id(t: &mut dyn IpmiTransport) -> std::io::Result<DeviceId> {
    let r = t.request(NETFN_APP, CMD_GET_DEVICE_ID, &[])?;
    // [cc, device id, revision, fw major, fw minor (BCD), IPMI version (BCD), support,
    //  manufacturer (3, LE), product (2, LE), ...]
    if r.first() != Some(&0) || r.len() < 12 {
        return Err(std::io::Error::other(format!(
            "Get Device ID answered {:02x?}",
            r
        )));
    }
    Ok(DeviceId {
        device_id: r[1],
        firmware: format!("{}.{:02x}", r[3] & 0x7f, r[4]),
        ipmi_version: format!("{}.{}", r[5] & 0x0f, r[5] >> 4),
        manufacturer_id: u32::from_le_bytes([r[7], r[8], r[9], 0]) & 0x000f_ffff,
        product_id: u16::from_le_bytes([r[10], r[11]]),
    })
}

/// IPA's three answers from one BMC; `None` when the device does not answer Get Device ID
/// (then nothing it says can be trusted, and the inventory says "unknown").
pub fn query(t: &mut dyn IpmiTransport) -> Option<BmcInfo> {
    match device_id(t) {
        Ok(id) => tracing::info!(device_id = id.device_id, firmware = %id.firmware,
            ipmi = %id.ipmi_version, manufacturer = id.manufacturer_id, product = id.product_id,
            "BMC answered Get Device ID"),
        Err(e) => {
            tracing::warn!(error = %e, "the IPMI device does not answer; BMC unknown");
            return None;
        }
    }
    Some(lan_addresses(t))
}

fn lan_addresses(t: &mut dyn IpmiTransport) -> BmcInfo {
    let mut address = None;
    let mut mac = None;
    let mut v6 = None;
    for channel in CHANNELS {
        let Some(ip) = get(t, channel, PARAM_IP_ADDRESS, 0)
            .filter(|d| d.len() >= 4)
            .map(|d| Ipv4Addr::new(d[0], d[1], d[2], d[3]))
        else {
            continue; // not a LAN channel
        };
        let ip6 = ipv6_address(t, channel);
        if address.is_none() && !ip.is_unspecified() {
            address = Some(ip.to_string());
        }
        if v6.is_none() {
            v6 = ip6.map(|a| a.to_string());
        }
        if mac.is_none() && (!ip.is_unspecified() || ip6.is_some_and(|a| !is_link_local(a))) {
            mac = get(t, channel, PARAM_MAC_ADDRESS, 0)
                .filter(|d| d.len() >= 6 && d[..6].iter().any(|b| *b != 0))
                .map(|d| {
                    d[..6]
                        .iter()
                        .map(|b| format!("{b:02x}"))
                        .collect::<Vec<_>>()
                        .join(":")
                });
        }
        if address.is_some() && v6.is_some() && mac.is_some() {
            break;
        }
    }
    BmcInfo {
        address: Some(address.unwrap_or_else(|| "0.0.0.0".into())),
        v6address: Some(v6.unwrap_or_else(|| "::/0".into())),
        mac,
    }
}

/// The channel's active IPv6 address when IPv6 is enabled on it: a SLAAC or DHCPv6 one
/// first, else an enabled static one (IPA's order).
fn ipv6_address(t: &mut dyn IpmiTransport, channel: u8) -> Option<Ipv6Addr> {
    let enables = *get(t, channel, PARAM_IP6_ENABLES, 0)?.first()?;
    if !matches!(enables, 1 | 2) {
        return None; // IPv4 only
    }
    // How many addresses of each kind the BMC holds; one of each when it does not say.
    let (static_max, dynamic_max) = get(t, channel, PARAM_IP6_STATUS, 0)
        .filter(|d| d.len() >= 2)
        .map(|d| (d[0], d[1]))
        .unwrap_or((1, 1));
    let usable = |d: &[u8], dynamic: bool| -> Option<Ipv6Addr> {
        // [set selector, source/type, address (16), prefix length, status]
        if d.len() < 20 {
            return None;
        }
        let source = d[1];
        let enabled = if dynamic {
            matches!(source & 0x0f, 1 | 2) // SLAAC, DHCPv6
        } else {
            source & 0x80 != 0
        };
        let addr = Ipv6Addr::from(<[u8; 16]>::try_from(&d[2..18]).ok()?);
        (enabled && d[19] == 0 && !addr.is_unspecified()).then_some(addr)
    };
    (0..dynamic_max)
        .find_map(|set| usable(&get(t, channel, PARAM_IP6_DYNAMIC_ADDR, set)?, true))
        .or_else(|| {
            (0..static_max)
                .find_map(|set| usable(&get(t, channel, PARAM_IP6_STATIC_ADDR, set)?, false))
        })
}

fn is_link_local(a: Ipv6Addr) -> bool {
    (a.segments()[0] & 0xffc0) == 0xfe80
}

/// One Get LAN Configuration Parameters: the parameter's data (after the completion code and
/// the parameter revision), or `None` on any error (an invalid channel answers 0xCC or 0xC9).
fn get(t: &mut dyn IpmiTransport, channel: u8, param: u8, set: u8) -> Option<Vec<u8>> {
    let data = [channel & 0x0f, param, set, 0];
    match t.request(NETFN_TRANSPORT, CMD_GET_LAN_CONFIG, &data) {
        Ok(r) if r.first() == Some(&0) && r.len() >= 2 => Some(r[2..].to_vec()),
        Ok(r) => {
            tracing::debug!(channel, param, completion = ?r.first(), "BMC refused a LAN parameter");
            None
        }
        Err(e) => {
            tracing::debug!(channel, param, error = %e, "IPMI request failed");
            None
        }
    }
}

/// `struct ipmi_msg` of `<linux/ipmi.h>`.
#[repr(C)]
pub struct IpmiMsg {
    pub netfn: u8,
    pub cmd: u8,
    pub data_len: u16,
    pub data: *mut u8,
}

/// `struct ipmi_req`.
#[repr(C)]
pub struct IpmiReq {
    pub addr: *mut u8,
    pub addr_len: u32,
    pub msgid: std::ffi::c_long,
    pub msg: IpmiMsg,
}

/// `struct ipmi_recv`.
#[repr(C)]
pub struct IpmiRecv {
    pub recv_type: i32,
    pub addr: *mut u8,
    pub addr_len: u32,
    pub msgid: std::ffi::c_long,
    pub msg: IpmiMsg,
}

/// `struct ipmi_system_interface_addr`: the local BMC.
#[repr(C)]
pub struct IpmiSystemInterfaceAddr {
    pub addr_type: i32,
    pub channel: i16,
    pub lun: u8,
}

const IPMI_SYSTEM_INTERFACE_ADDR_TYPE: i32 = 0x0c;
const IPMI_BMC_CHANNEL: i16 = 0x0f;
const IPMI_RESPONSE_RECV_TYPE: i32 = 1;

nix::ioctl_read!(ipmictl_send_command, b'i', 13, IpmiReq);
nix::ioctl_readwrite!(ipmictl_receive_msg_trunc, b'i', 11, IpmiRecv);

/// The kernel's IPMI character device.
pub struct IpmiDevice {
    file: std::fs::File,
    path: PathBuf,
    next_id: std::ffi::c_long,
    timeout: Duration,
}

impl IpmiDevice {
    pub fn open(path: &Path) -> std::io::Result<Self> {
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)?;
        Ok(IpmiDevice {
            file,
            path: path.to_path_buf(),
            next_id: 1,
            timeout: Duration::from_secs(5),
        })
    }
}

impl IpmiTransport for IpmiDevice {
    fn request(&mut self, netfn: u8, cmd: u8, data: &[u8]) -> std::io::Result<Vec<u8>> {
        let fd = self.file.as_raw_fd();
        let mut addr = IpmiSystemInterfaceAddr {
            addr_type: IPMI_SYSTEM_INTERFACE_ADDR_TYPE,
            channel: IPMI_BMC_CHANNEL,
            lun: 0,
        };
        let mut payload = data.to_vec();
        let msgid = self.next_id;
        self.next_id += 1;
        let mut req = IpmiReq {
            addr: (&mut addr as *mut IpmiSystemInterfaceAddr).cast(),
            addr_len: std::mem::size_of::<IpmiSystemInterfaceAddr>() as u32,
            msgid,
            msg: IpmiMsg {
                netfn,
                cmd,
                data_len: payload.len() as u16,
                data: payload.as_mut_ptr(),
            },
        };
        // SAFETY: req points at addr and payload, both alive for the call.
        unsafe { ipmictl_send_command(fd, &mut req) }.map_err(std::io::Error::from)?;
        loop {
            let mut pfd = nix::libc::pollfd {
                fd,
                events: nix::libc::POLLIN,
                revents: 0,
            };
            let ms = self.timeout.as_millis().min(i32::MAX as u128) as i32;
            // SAFETY: poll(2) on one pollfd we own.
            match unsafe { nix::libc::poll(&mut pfd, 1, ms) } {
                0 => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        format!("no answer from the BMC on {}", self.path.display()),
                    ))
                }
                n if n < 0 => {
                    let e = std::io::Error::last_os_error();
                    if e.kind() == std::io::ErrorKind::Interrupted {
                        continue;
                    }
                    return Err(e);
                }
                _ => {}
            }
            let mut raddr = IpmiSystemInterfaceAddr {
                addr_type: 0,
                channel: 0,
                lun: 0,
            };
            let mut buf = vec![0u8; 256];
            let mut recv = IpmiRecv {
                recv_type: 0,
                addr: (&mut raddr as *mut IpmiSystemInterfaceAddr).cast(),
                addr_len: std::mem::size_of::<IpmiSystemInterfaceAddr>() as u32,
                msgid: 0,
                msg: IpmiMsg {
                    netfn: 0,
                    cmd: 0,
                    data_len: buf.len() as u16,
                    data: buf.as_mut_ptr(),
                },
            };
            // SAFETY: recv points at raddr and buf, both alive and of the sizes given.
            unsafe { ipmictl_receive_msg_trunc(fd, &mut recv) }.map_err(std::io::Error::from)?;
            // Anything else (an event, another request's answer) is not ours.
            if recv.recv_type == IPMI_RESPONSE_RECV_TYPE && recv.msgid == msgid {
                buf.truncate(usize::from(recv.msg.data_len).min(256));
                return Ok(buf);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// A BMC answering from a table of (channel, parameter, set) -> response bytes;
    /// anything else gets 0xCC (invalid data field), which is how BMCs refuse a channel that
    /// is not a LAN channel.
    struct FakeBmc {
        device_id: Option<Vec<u8>>,
        answers: HashMap<(u8, u8, u8), Vec<u8>>,
        asked: Vec<Vec<u8>>,
    }

    impl IpmiTransport for FakeBmc {
        fn request(&mut self, netfn: u8, cmd: u8, data: &[u8]) -> std::io::Result<Vec<u8>> {
            if (netfn, cmd) == (0x06, 0x01) {
                // None: the device does not answer at all.
                return match &self.device_id {
                    Some(r) => Ok(r.clone()),
                    None => Err(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "no answer",
                    )),
                };
            }
            assert_eq!((netfn, cmd), (0x0c, 0x02));
            assert_eq!(data.len(), 4);
            self.asked.push(data.to_vec());
            Ok(self
                .answers
                .get(&(data[0], data[1], data[2]))
                .cloned()
                .unwrap_or_else(|| vec![0xcc]))
        }
    }

    /// (channel, parameter, set selector) and the BMC's response bytes.
    type Answer = ((u8, u8, u8), Vec<u8>);

    fn bmc(answers: &[Answer]) -> FakeBmc {
        FakeBmc {
            // A Dell iDRAC 9: device 0x20, firmware 6.10, IPMI 2.0, manufacturer 674 (Dell).
            device_id: Some(vec![
                0x00, 0x20, 0x81, 0x06, 0x10, 0x02, 0xdf, 0xa2, 0x02, 0x00, 0x00, 0x01,
            ]),
            answers: answers.iter().cloned().collect(),
            asked: Vec::new(),
        }
    }

    /// completion code 0, parameter revision 0x11, data.
    fn ok(data: &[u8]) -> Vec<u8> {
        let mut v = vec![0x00, 0x11];
        v.extend_from_slice(data);
        v
    }

    fn v6(source: u8, addr: &str, status: u8) -> Vec<u8> {
        let a: Ipv6Addr = addr.parse().unwrap();
        let mut d = vec![0u8, source];
        d.extend_from_slice(&a.octets());
        d.push(64);
        d.push(status);
        ok(&d)
    }

    #[test]
    fn dell_idrac_on_channel_1() {
        // iDRAC: LAN channel 1, IPv4 and IPv6 (SLAAC) both enabled.
        let mut b = bmc(&[
            ((1, 3, 0), ok(&[10, 0, 0, 5])),
            ((1, 5, 0), ok(&[0xd0, 0x94, 0x66, 0x1a, 0x2b, 0x3c])),
            ((1, 51, 0), ok(&[2])),
            ((1, 55, 0), ok(&[2, 1, 0x03])),
            ((1, 59, 0), v6(0x01, "2001:db8::d294:66ff:fe1a:2b3c", 0)),
        ]);
        let info = query(&mut b).unwrap();
        assert_eq!(
            info,
            BmcInfo {
                address: Some("10.0.0.5".into()),
                v6address: Some("2001:db8::d294:66ff:fe1a:2b3c".into()),
                mac: Some("d0:94:66:1a:2b:3c".into()),
            }
        );
        // Stops at the first channel that told everything.
        assert!(b.asked.iter().all(|r| r[0] == 1), "{:?}", b.asked);
    }

    #[test]
    fn supermicro_on_channel_2_with_static_ipv6() {
        // Channel 1 is not LAN (0xCC); channel 2 is: IPv4 unset, a static IPv6 address, the
        // dynamic slot disabled.
        let mut b = bmc(&[
            ((2, 3, 0), ok(&[0, 0, 0, 0])),
            ((2, 5, 0), ok(&[0x3c, 0xec, 0xef, 0x01, 0x02, 0x03])),
            ((2, 51, 0), ok(&[1])),
            ((2, 55, 0), ok(&[1, 1, 0x03])),
            ((2, 59, 0), v6(0x00, "::", 1)),
            ((2, 56, 0), v6(0x80, "fd00:10::20", 0)),
        ]);
        let info = query(&mut b).unwrap();
        assert_eq!(info.address.as_deref(), Some("0.0.0.0"));
        assert_eq!(info.v6address.as_deref(), Some("fd00:10::20"));
        assert_eq!(info.mac.as_deref(), Some("3c:ec:ef:01:02:03"));
    }

    #[test]
    fn unconfigured_bmc() {
        // HPE iLO factory state: channel 2 with no address, IPv4 only; a disabled static
        // IPv6 entry is ignored.
        let mut b = bmc(&[
            ((2, 3, 0), ok(&[0, 0, 0, 0])),
            ((2, 5, 0), ok(&[0x94, 0x40, 0xc9, 0, 0, 1])),
            ((2, 51, 0), ok(&[0])),
            ((2, 56, 0), v6(0x00, "fd00::1", 0)),
        ]);
        assert_eq!(
            query(&mut b).unwrap(),
            BmcInfo {
                address: Some("0.0.0.0".into()),
                v6address: Some("::/0".into()),
                mac: None,
            }
        );
        // A BMC answering nothing at all.
        assert_eq!(
            query(&mut bmc(&[])).unwrap(),
            BmcInfo {
                address: Some("0.0.0.0".into()),
                v6address: Some("::/0".into()),
                mac: None,
            }
        );
    }

    #[test]
    fn inactive_or_truncated_answers_are_skipped() {
        let mut b = bmc(&[
            ((1, 3, 0), ok(&[192, 168])), // truncated: not usable
            ((3, 3, 0), ok(&[192, 168, 1, 9])),
            ((3, 51, 0), ok(&[2])),
            ((3, 59, 0), v6(0x02, "2001:db8::9", 2)), // DHCPv6, but pending
            ((3, 56, 0), v6(0x80, "2001:db8::99", 0)),
            ((3, 5, 0), vec![0xc1]), // command not supported
        ]);
        let info = query(&mut b).unwrap();
        assert_eq!(info.address.as_deref(), Some("192.168.1.9"));
        assert_eq!(info.v6address.as_deref(), Some("2001:db8::99"));
        assert_eq!(info.mac, None);
    }

    #[test]
    fn a_silent_device_is_unknown() {
        let mut b = bmc(&[((1, 3, 0), ok(&[10, 0, 0, 5]))]);
        b.device_id = None;
        assert_eq!(query(&mut b), None);
        assert!(b.asked.is_empty(), "no LAN parameter asked of a silent BMC");
        b.device_id = Some(vec![0xc1]);
        assert_eq!(query(&mut b), None);
    }

    #[test]
    fn device_id_fields() {
        let mut b = bmc(&[]);
        let id = device_id(&mut b).unwrap();
        assert_eq!(
            id,
            DeviceId {
                device_id: 0x20,
                firmware: "6.10".into(),
                ipmi_version: "2.0".into(),
                manufacturer_id: 674,
                product_id: 0x0100,
            }
        );
    }

    #[test]
    fn ioctl_interface_matches_linux_ipmi_h() {
        // <linux/ipmi.h> on 64-bit: ipmi_req is 40 bytes, ipmi_recv 48.
        #[cfg(target_pointer_width = "64")]
        {
            assert_eq!(std::mem::size_of::<IpmiReq>(), 40);
            assert_eq!(std::mem::size_of::<IpmiRecv>(), 48);
            assert_eq!(
                nix::request_code_read!(b'i', 13, std::mem::size_of::<IpmiReq>()),
                0x8028_690d
            );
            assert_eq!(
                nix::request_code_readwrite!(b'i', 11, std::mem::size_of::<IpmiRecv>()),
                0xc030_690b
            );
        }
        assert_eq!(std::mem::size_of::<IpmiSystemInterfaceAddr>(), 8);
    }

    #[test]
    fn no_device_means_unknown() {
        let d = tempfile::tempdir().unwrap();
        // A regular file is not an IPMI device.
        std::fs::write(d.path().join("ipmi0"), b"").unwrap();
        assert_eq!(detect(d.path()), None);
    }
}
