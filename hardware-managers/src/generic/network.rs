//! Network interfaces from sysfs and getifaddrs(3).

use std::net::{IpAddr, Ipv6Addr};
use std::path::Path;

use ironic_protocol::Interface;

use crate::HardwareError;

/// `ARPHRD_ETHER`, from `/sys/class/net/*/type`.
const ARPHRD_ETHER: u32 = 1;

/// Lists the machine's NICs as IPA does: physical devices (those with a `device` link in
/// sysfs). When there are none, which happens in containers and network namespaces, the
/// Ethernet-type virtual interfaces (veth) stand in, so lookup still has MACs to offer.
pub(crate) fn list_interfaces(sys_root: &Path) -> Result<Vec<Interface>, HardwareError> {
    let class = sys_root.join("class/net");
    let entries = std::fs::read_dir(&class)
        .map_err(|e| HardwareError::io(format!("listing {}", class.display()), e))?;
    let mut physical = Vec::new();
    let mut virtual_ether = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let dir = class.join(&name);
        let Some(mac) = read_trimmed(&dir.join("address")).filter(|m| is_usable_mac(m)) else {
            continue;
        };
        let iface = describe(&name, &dir, mac);
        if dir.join("device").exists() {
            physical.push(iface);
        } else if read_trimmed(&dir.join("type")).and_then(|t| t.parse().ok()) == Some(ARPHRD_ETHER)
            && !dir.join("bridge").exists()
            && !dir.join("bonding").exists()
        {
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
            std::os::unix::fs::symlink(dev.join("driver_dir/virtio_net"), dev.join("driver"))
                .unwrap();
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
}
