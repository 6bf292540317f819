//! Network interfaces from sysfs and getifaddrs(3).

use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

use ironic_protocol::Interface;

use crate::HardwareError;

/// `ARPHRD_ETHER`, from `/sys/class/net/*/type`.
const ARPHRD_ETHER: u32 = 1;
/// `ARPHRD_INFINIBAND`.
const ARPHRD_INFINIBAND: u32 = 32;

/// Lists the machine's NICs as IPA does: physical devices (those with a `device` link in
/// sysfs), bonds, and VLAN interfaces (`<nic>.<vid>`). When there are none, which happens in
/// containers and network namespaces, the Ethernet-type virtual interfaces (veth) stand in, so
/// lookup still has MACs to offer.
///
/// The MAC is the permanent one (`ETHTOOL_GPERMADDR`) when the driver knows it, as IPA
/// reports it: a bond member's current MAC is the bond's. A locally administered MAC
/// beginning with `fa:` (IPA's rule: BMC-provided USB NICs use them) is left out.
pub(crate) fn list_interfaces(sys_root: &Path) -> Result<Vec<Interface>, HardwareError> {
    let class = sys_root.join("class/net");
    let entries = std::fs::read_dir(&class)
        .map_err(|e| HardwareError::io(format!("listing {}", class.display()), e))?;
    // Ask the kernel for permanent addresses only when looking at the real sysfs.
    let live = sys_root == Path::new("/sys");
    let mut physical = Vec::new();
    let mut virtual_ether = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = class.join(&name);
        let kind = read_trimmed(&dir.join("type")).and_then(|t| t.parse::<u32>().ok());
        let Some(current) = read_trimmed(&dir.join("address")) else {
            continue;
        };
        let (mac, client_id) = if kind == Some(ARPHRD_INFINIBAND) {
            match infiniband_ids(&current) {
                Some(ids) => ids,
                None => continue,
            }
        } else {
            let permanent = if live { permanent_mac(&name) } else { None };
            (permanent.unwrap_or(current), None)
        };
        if !is_usable_mac(&mac) {
            continue;
        }
        if mac.to_ascii_lowercase().starts_with("fa:") {
            tracing::warn!(interface = %name, %mac,
                "ignoring a locally assigned MAC address starting with fa: (as IPA does)");
            continue;
        }
        let mut iface = describe(&name, &dir, mac);
        iface.client_id = client_id;
        if dir.join("device").exists() || dir.join("bonding").exists() || is_vlan(&name) {
            physical.push(iface);
        } else if kind == Some(ARPHRD_ETHER) && !dir.join("bridge").exists() {
            virtual_ether.push(iface);
        }
    }
    let mut list = if physical.is_empty() {
        virtual_ether
    } else {
        physical
    };
    list.sort_by(|a, b| a.name.cmp(&b.name));
    add_addresses(&mut list);
    Ok(list)
}

fn describe(name: &str, dir: &Path, mac: String) -> Interface {
    let device = dir.join("device");
    let link_name = |p: &Path| {
        std::fs::read_link(p)
            .ok()
            .and_then(|t| t.file_name().map(|n| n.to_string_lossy().into_owned()))
    };
    let pci_address = link_name(&device).filter(|a| looks_like_pci_address(a));
    Interface {
        name: name.to_string(),
        mac_address: Some(mac.to_ascii_lowercase()),
        has_carrier: read_trimmed(&dir.join("carrier")).as_deref() == Some("1"),
        vendor: read_trimmed(&device.join("vendor")),
        product: read_trimmed(&device.join("device")),
        speed_mbps: read_trimmed(&dir.join("speed"))
            .and_then(|s| s.parse::<i64>().ok())
            .and_then(|s| u64::try_from(s).ok()),
        pci_address,
        driver: link_name(&device.join("driver")),
        ..Interface::default()
    }
}

/// Fills `ipv4_address`/`ipv6_address` from the kernel's address list. IPv6 prefers a global
/// address; a link-local one is reported IPA-style with its `%interface` scope.
fn add_addresses(list: &mut [Interface]) {
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return;
    };
    for a in addrs {
        let Some(iface) = list.iter_mut().find(|i| i.name == a.interface_name) else {
            continue;
        };
        let Some(addr) = a.address else { continue };
        if let Some(sin) = addr.as_sockaddr_in() {
            if iface.ipv4_address.is_none() {
                iface.ipv4_address = Some(sin.ip().to_string());
            }
        } else if let Some(sin6) = addr.as_sockaddr_in6() {
            let ip: Ipv6Addr = sin6.ip();
            let text = if is_link_local(&IpAddr::V6(ip)) {
                format!("{ip}%{}", iface.name)
            } else {
                ip.to_string()
            };
            let have_global = iface
                .ipv6_address
                .as_deref()
                .is_some_and(|a| !a.contains('%'));
            if !have_global {
                iface.ipv6_address = Some(text);
            }
        }
    }
}

/// IPA's VLAN naming: `<interface>.<vlan id>`.
fn is_vlan(name: &str) -> bool {
    name.split_once('.')
        .is_some_and(|(_, vid)| !vid.is_empty() && vid.bytes().all(|b| b.is_ascii_digit()))
}

/// An InfiniBand interface's Ethernet-style MAC and DHCP client identifier (RFC 4390), from
/// its 20-byte hardware address (QPN and GID; the port GUID is the last 8 bytes): the MAC is
/// the GUID without its middle two bytes, the client id the fixed prefix IPA uses plus the
/// GUID.
fn infiniband_ids(address: &str) -> Option<(String, Option<String>)> {
    let bytes: Vec<&str> = address.split(':').collect();
    if bytes.len() != 20 || bytes.iter().any(|b| b.len() != 2) {
        return None;
    }
    let guid = &bytes[12..];
    let mac = [guid[0], guid[1], guid[2], guid[5], guid[6], guid[7]].join(":");
    let client_id = format!("ff:00:00:00:00:00:02:00:00:02:c9:00:{}", guid.join(":"));
    Some((
        mac.to_ascii_lowercase(),
        Some(client_id.to_ascii_lowercase()),
    ))
}

/// The permanent MAC of `name` (`SIOCETHTOOL` `ETHTOOL_GPERMADDR`); `None` when the driver
/// does not know one (veth, bridges report zeros).
fn permanent_mac(name: &str) -> Option<String> {
    use nix::libc;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

    const SIOCETHTOOL: libc::c_ulong = 0x8946;
    const ETHTOOL_GPERMADDR: u32 = 0x20;
    #[repr(C)]
    struct PermAddr {
        cmd: u32,
        size: u32,
        data: [u8; 32],
    }
    #[repr(C)]
    struct IfReq {
        name: [u8; 16],
        data: *mut PermAddr,
        _pad: [u8; 16],
    }
    if name.len() >= 16 {
        return None;
    }
    // SAFETY: plain socket(2), owned right away.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd is ours alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let mut perm = PermAddr {
        cmd: ETHTOOL_GPERMADDR,
        size: 32,
        data: [0; 32],
    };
    let mut req = IfReq {
        name: [0; 16],
        data: &mut perm,
        _pad: [0; 16],
    };
    req.name[..name.len()].copy_from_slice(name.as_bytes());
    // SAFETY: req is a valid ifreq whose data points at perm, alive for the call.
    let rc = unsafe { libc::ioctl(fd.as_raw_fd(), SIOCETHTOOL as _, &mut req) };
    let len = (perm.size as usize).min(32);
    if rc < 0 || len != 6 || perm.data[..len].iter().all(|b| *b == 0) {
        return None;
    }
    Some(
        perm.data[..len]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":"),
    )
}

pub(crate) fn is_link_local(ip: &IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => v4.is_link_local(),
        IpAddr::V6(v6) => (v6.segments()[0] & 0xffc0) == 0xfe80,
    }
}

fn is_usable_mac(mac: &str) -> bool {
    mac.len() == 17 && mac != "00:00:00:00:00:00"
}

fn looks_like_pci_address(s: &str) -> bool {
    // dddd:bb:dd.f
    let b = s.as_bytes();
    b.len() == 12 && b[4] == b':' && b[7] == b':' && b[10] == b'.'
}

fn read_trimmed(path: &Path) -> Option<String> {
    let s = std::fs::read_to_string(path).ok()?;
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nic(root: &Path, name: &str, mac: &str, kind: u32, physical: bool) {
        let dir = root.join("class/net").join(name);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("address"), format!("{mac}\n")).unwrap();
        std::fs::write(dir.join("type"), format!("{kind}\n")).unwrap();
        std::fs::write(dir.join("carrier"), "1\n").unwrap();
        if physical {
            let dev = root.join("devices/pci0000:00/0000:00:03.0");
            std::fs::create_dir_all(dev.join("driver_dir/virtio_net")).unwrap();
            std::fs::write(dev.join("vendor"), "0x1af4\n").unwrap();
            std::fs::write(dev.join("device"), "0x1000\n").unwrap();
            if !dev.join("driver").exists() {
                std::os::unix::fs::symlink(dev.join("driver_dir/virtio_net"), dev.join("driver"))
                    .unwrap();
            }
            std::os::unix::fs::symlink(&dev, dir.join("device")).unwrap();
        }
    }

    #[test]
    fn physical_nics_win_over_virtual_ones() {
        let root = tempfile::tempdir().unwrap();
        nic(root.path(), "lo", "00:00:00:00:00:00", 772, false);
        nic(root.path(), "veth0", "aa:bb:cc:dd:ee:01", 1, false);
        nic(root.path(), "ens3", "52:54:00:12:34:56", 1, true);
        let list = list_interfaces(root.path()).unwrap();
        assert_eq!(list.len(), 1);
        let i = &list[0];
        assert_eq!(i.name, "ens3");
        assert_eq!(i.mac_address.as_deref(), Some("52:54:00:12:34:56"));
        assert_eq!(i.vendor.as_deref(), Some("0x1af4"));
        assert_eq!(i.product.as_deref(), Some("0x1000"));
        assert_eq!(i.pci_address.as_deref(), Some("0000:00:03.0"));
        assert_eq!(i.driver.as_deref(), Some("virtio_net"));
        assert!(i.has_carrier);
    }

    #[test]
    fn veth_stands_in_when_nothing_is_physical() {
        let root = tempfile::tempdir().unwrap();
        nic(root.path(), "lo", "00:00:00:00:00:00", 772, false);
        nic(root.path(), "veth0", "AA:BB:CC:DD:EE:01", 1, false);
        nic(root.path(), "tun0", "aa:bb:cc:dd:ee:02", 65534, false);
        let list = list_interfaces(root.path()).unwrap();
        let names: Vec<_> = list.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["veth0"]);
        assert_eq!(list[0].mac_address.as_deref(), Some("aa:bb:cc:dd:ee:01"));
    }

    #[test]
    fn bonds_vlans_and_infiniband_are_listed() {
        let root = tempfile::tempdir().unwrap();
        nic(root.path(), "ens3", "52:54:00:12:34:56", 1, true);
        nic(root.path(), "bond0", "52:54:00:12:34:56", 1, false);
        std::fs::create_dir_all(root.path().join("class/net/bond0/bonding")).unwrap();
        nic(root.path(), "ens3.100", "52:54:00:12:34:56", 1, false);
        nic(root.path(), "br0", "52:54:00:aa:bb:cc", 1, false);
        nic(root.path(), "usb0", "fa:16:3e:00:00:01", 1, true);
        // An InfiniBand port: QPN, then the GID whose last 8 bytes are the port GUID.
        nic(
            root.path(),
            "ib0",
            "80:00:02:08:fe:80:00:00:00:00:00:00:7c:fe:90:03:00:29:26:55",
            32,
            true,
        );
        let list = list_interfaces(root.path()).unwrap();
        let names: Vec<_> = list.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(
            names,
            ["bond0", "ens3", "ens3.100", "ib0"],
            "usb0 (fa:) and br0 left out"
        );
        let ib = &list[3];
        assert_eq!(ib.mac_address.as_deref(), Some("7c:fe:90:29:26:55"));
        assert_eq!(
            ib.client_id.as_deref(),
            Some("ff:00:00:00:00:00:02:00:00:02:c9:00:7c:fe:90:03:00:29:26:55")
        );
        assert_eq!(list[1].client_id, None);
        assert!(is_vlan("eth0.42") && !is_vlan("eth0") && !is_vlan("eth0.x") && !is_vlan("a."));
    }

    #[test]
    fn permanent_mac_of_loopback_is_unknown() {
        // lo has no permanent address; a name that does not exist neither.
        assert_eq!(permanent_mac("lo"), None);
        assert_eq!(permanent_mac("no-such-nic0"), None);
        assert_eq!(permanent_mac("a-name-longer-than-ifnamsiz"), None);
    }
}
