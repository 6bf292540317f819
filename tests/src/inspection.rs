//! In-band inspection against a real Ironic: the node with the `agent` inspect interface,
//! `inspect` from `manageable`, the agent booted with `ipa-inspection-callback-url`, and a
//! "switch" on the host end of the veth sending LLDP frames while the agent listens.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use nix::libc;
use serde_json::{json, Value};

use crate::harness::Harness;

/// What the fake switch announces.
pub const SWITCH_NAME: &str = "e2e-tor-7";
pub const SWITCH_PORT: &str = "Ethernet1/7";
pub const SWITCH_CHASSIS: [u8; 6] = [0x00, 0x1c, 0x73, 0x12, 0x34, 0x00];
pub const SWITCH_VLAN: u16 = 142;

fn tlv(kind: u8, value: &[u8]) -> Vec<u8> {
    let header = (u16::from(kind) << 9) | value.len() as u16;
    let mut v = header.to_be_bytes().to_vec();
    v.extend_from_slice(value);
    v
}

/// An LLDP frame as an Arista top-of-rack switch sends it: chassis MAC, interface-name port
/// ID, TTL, system name, IPv4 management address, 802.1 port VLAN ID, 802.3 max frame size.
pub fn switch_frame() -> Vec<u8> {
    let mut f = vec![0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e];
    let mut src = SWITCH_CHASSIS;
    src[5] = 0x07;
    f.extend_from_slice(&src);
    f.extend_from_slice(&0x88ccu16.to_be_bytes());
    let mut chassis = vec![4u8];
    chassis.extend_from_slice(&SWITCH_CHASSIS);
    f.extend(tlv(1, &chassis));
    let mut port = vec![5u8];
    port.extend_from_slice(SWITCH_PORT.as_bytes());
    f.extend(tlv(2, &port));
    f.extend(tlv(3, &120u16.to_be_bytes()));
    f.extend(tlv(5, SWITCH_NAME.as_bytes()));
    f.extend(tlv(8, &[5, 1, 192, 0, 2, 7, 2, 0, 0, 0, 1, 0]));
    let mut vlan = vec![0x00, 0x80, 0xc2, 0x01];
    vlan.extend_from_slice(&SWITCH_VLAN.to_be_bytes());
    f.extend(tlv(127, &vlan));
    let mut mtu = vec![0x00, 0x12, 0x0f, 0x04];
    mtu.extend_from_slice(&9214u16.to_be_bytes());
    f.extend(tlv(127, &mtu));
    f.extend(tlv(0, &[]));
    f
}

/// Sends `frame` on `interface` every `every` until dropped.
pub struct LldpSender {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl LldpSender {
    pub fn start(interface: &str, frame: Vec<u8>, every: Duration) -> Result<LldpSender> {
        let index = nix::net::if_::if_nametoindex(interface)
            .with_context(|| format!("no interface {interface}"))?;
        // SAFETY: plain socket(2), owned right away.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            bail!("packet socket: {}", std::io::Error::last_os_error());
        }
        // SAFETY: fd is ours alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                // SAFETY: an all-zero sockaddr_ll is valid; sendto with our buffers.
                unsafe {
                    let mut addr: libc::sockaddr_ll = std::mem::zeroed();
                    addr.sll_family = libc::AF_PACKET as u16;
                    addr.sll_ifindex = index as i32;
                    addr.sll_halen = 6;
                    addr.sll_addr[..6].copy_from_slice(&frame[..6]);
                    libc::sendto(
                        fd.as_raw_fd(),
                        frame.as_ptr().cast(),
                        frame.len(),
                        0,
                        (&addr as *const libc::sockaddr_ll).cast(),
                        std::mem::size_of::<libc::sockaddr_ll>() as u32,
                    );
                }
                std::thread::sleep(every);
            }
        });
        Ok(LldpSender {
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for LldpSender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// `PUT /v1/nodes/<uuid>/states/provision {"target": "inspect"}`.
pub fn request_inspection(h: &Harness) -> Result<()> {
    h.progress("provision request: inspect");
    let (status, body) = h.client().call(
        "PUT",
        &format!("/v1/nodes/{}/states/provision", h.node_uuid()?),
        Some(&json!({"target": "inspect"})),
    )?;
    if status != 202 {
        bail!("inspect -> {status}: {body}");
    }
    Ok(())
}

/// `GET /v1/nodes/<uuid>/inventory`: `{"inventory": .., "plugin_data": ..}`.
pub fn stored_inventory(h: &Harness) -> Result<Value> {
    let (status, body) = h.client().call(
        "GET",
        &format!("/v1/nodes/{}/inventory", h.node_uuid()?),
        None,
    )?;
    if status != 200 {
        bail!("GET inventory -> {status}: {body}");
    }
    Ok(body)
}

/// The kernel command line Ironic's managed inspection gives the ramdisk (its
/// `ipa-inspection-callback-url`), plus LLDP collection and more collectors.
pub fn inspection_cmdline(api_url: &str) -> Vec<String> {
    vec![
        format!("ipa-inspection-callback-url={api_url}/v1/continue_inspection"),
        "ipa-inspection-collectors=default,logs,lldp,pci-devices,dmi-decode,numa-topology".into(),
        "ipa-collect-lldp=1".into(),
        "ipa-lldp-timeout=15".into(),
    ]
}
