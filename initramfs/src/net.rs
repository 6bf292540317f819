//! Network interfaces through sysfs and the classic `SIOC*` ioctls: enough to bring links
//! up and configure what DHCP gave, without netlink or `ip`.

use std::io;
use std::net::{Ipv4Addr, SocketAddrV4, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;
use std::time::Duration;

use nix::libc;
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrIn};

use crate::dhcp::{self, Route, Transport};

/// A NIC the init may configure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Nic {
    pub name: String,
    pub mac: String,
}

impl Nic {
    pub fn mac_bytes(&self) -> Option<[u8; 6]> {
        parse_mac(&self.mac)
    }
}

pub fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut out = [0u8; 6];
    let mut parts = s.trim().split(':');
    for o in out.iter_mut() {
        *o = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(out)
}

/// Physical Ethernet NICs: entries of `<sys>/class/net` backed by a device (not lo, bridges,
/// bonds or tunnels), with an Ethernet MAC. Sorted by name.
pub fn physical_nics(sys: &Path) -> Vec<Nic> {
    let mut v = Vec::new();
    let Ok(dir) = std::fs::read_dir(sys.join("class/net")) else {
        return v;
    };
    for e in dir.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let base = e.path();
        if !base.join("device").exists() {
            continue;
        }
        // ARPHRD_ETHER (1) only: InfiniBand and others need more than this client.
        let kind = std::fs::read_to_string(base.join("type")).unwrap_or_default();
        if kind.trim() != "1" {
            continue;
        }
        let mac = std::fs::read_to_string(base.join("address"))
            .unwrap_or_default()
            .trim()
            .to_ascii_lowercase();
        if parse_mac(&mac).is_some() {
            v.push(Nic { name, mac });
        }
    }
    v.sort_by(|a, b| a.name.cmp(&b.name));
    v
}

pub fn has_carrier(sys: &Path, name: &str) -> bool {
    std::fs::read_to_string(sys.join("class/net").join(name).join("carrier"))
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
}

fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    let bytes = name.as_bytes();
    if bytes.is_empty() || bytes.len() >= libc::IFNAMSIZ {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad interface name {name:?}"),
        ));
    }
    for (dst, src) in req.ifr_name.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    Ok(req)
}

fn control_socket() -> io::Result<UdpSocket> {
    UdpSocket::bind("0.0.0.0:0")
}

fn ioctl(sock: &UdpSocket, request: libc::c_ulong, arg: *mut libc::c_void) -> io::Result<()> {
    // SAFETY: every caller passes a pointer to the struct type `request` expects, alive for
    // the duration of the call.
    if unsafe { libc::ioctl(sock.as_raw_fd(), request as _, arg) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Sets `IFF_UP` on `name`.
pub fn link_up(name: &str) -> io::Result<()> {
    let sock = control_socket()?;
    let mut req = ifreq(name)?;
    ioctl(&sock, libc::SIOCGIFFLAGS, &mut req as *mut _ as *mut _)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    ioctl(&sock, libc::SIOCSIFFLAGS, &mut req as *mut _ as *mut _)
}

fn sockaddr(addr: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(addr).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; the kernel reads it as AF_INET.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

pub fn prefix_mask(prefix: u8) -> Ipv4Addr {
    if prefix == 0 {
        Ipv4Addr::UNSPECIFIED
    } else {
        Ipv4Addr::from(u32::MAX << (32 - prefix.min(32) as u32))
    }
}

/// Replaces the interface's IPv4 address with `addr/prefix` (0.0.0.0 removes it).
pub fn set_address(name: &str, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
    let sock = control_socket()?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_addr = sockaddr(addr);
    ioctl(&sock, libc::SIOCSIFADDR, &mut req as *mut _ as *mut _)?;
    if addr.is_unspecified() {
        return Ok(());
    }
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_netmask = sockaddr(prefix_mask(prefix));
    ioctl(&sock, libc::SIOCSIFNETMASK, &mut req as *mut _ as *mut _)?;
    let broadcast = Ipv4Addr::from(u32::from(addr) | !u32::from(prefix_mask(prefix)));
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_broadaddr = sockaddr(broadcast);
    ioctl(&sock, libc::SIOCSIFBRDADDR, &mut req as *mut _ as *mut _)
}

pub fn set_mtu(name: &str, mtu: u16) -> io::Result<()> {
    let sock = control_socket()?;
    let mut req = ifreq(name)?;
    req.ifr_ifru.ifru_mtu = mtu as libc::c_int;
    ioctl(&sock, libc::SIOCSIFMTU, &mut req as *mut _ as *mut _)
}

/// Adds `route` through `dev` (`EEXIST` is success: the route is there).
pub fn add_route(dev: &str, route: &Route) -> io::Result<()> {
    let sock = control_socket()?;
    let mut devname: Vec<libc::c_char> = dev.bytes().map(|b| b as libc::c_char).collect();
    devname.push(0);
    // SAFETY: rtentry is plain old data; all-zero is a valid value.
    let mut rt: libc::rtentry = unsafe { std::mem::zeroed() };
    rt.rt_dst = sockaddr(route.destination);
    rt.rt_genmask = sockaddr(prefix_mask(route.prefix));
    rt.rt_flags = libc::RTF_UP;
    if route.prefix == 32 {
        rt.rt_flags |= libc::RTF_HOST;
    }
    if !route.gateway.is_unspecified() {
        rt.rt_gateway = sockaddr(route.gateway);
        rt.rt_flags |= libc::RTF_GATEWAY;
    }
    rt.rt_dev = devname.as_mut_ptr();
    match ioctl(&sock, libc::SIOCADDRT, &mut rt as *mut _ as *mut _) {
        Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
        r => r,
    }
}

/// The DHCP client's socket: UDP port 68 on one interface, broadcast allowed.
pub struct UdpTransport {
    sock: UdpSocket,
}

impl UdpTransport {
    pub fn bind(ifname: &str) -> io::Result<UdpTransport> {
        let fd: OwnedFd = socket::socket(
            AddressFamily::Inet,
            SockType::Datagram,
            SockFlag::SOCK_CLOEXEC,
            None,
        )?;
        // One socket per NIC, all on port 68.
        socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
        socket::setsockopt(&fd, sockopt::Broadcast, &true)?;
        socket::setsockopt(
            &fd,
            sockopt::BindToDevice,
            &std::ffi::OsString::from(ifname),
        )?;
        socket::bind(
            fd.as_raw_fd(),
            &SockaddrIn::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, dhcp::CLIENT_PORT)),
        )?;
        Ok(UdpTransport {
            sock: UdpSocket::from(fd),
        })
    }
}

impl Transport for UdpTransport {
    fn send(&mut self, packet: &[u8], to: Ipv4Addr) -> io::Result<()> {
        self.sock
            .send_to(packet, SocketAddrV4::new(to, dhcp::SERVER_PORT))
            .map(|_| ())
    }

    fn recv(&mut self, timeout: Duration) -> io::Result<Option<Vec<u8>>> {
        self.sock
            .set_read_timeout(Some(timeout.max(Duration::from_millis(1))))?;
        let mut buf = vec![0u8; 1500];
        match self.sock.recv_from(&mut buf) {
            Ok((n, _)) => {
                buf.truncate(n);
                Ok(Some(buf))
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_macs() {
        assert_eq!(prefix_mask(24), Ipv4Addr::new(255, 255, 255, 0));
        assert_eq!(prefix_mask(0), Ipv4Addr::UNSPECIFIED);
        assert_eq!(prefix_mask(32), Ipv4Addr::BROADCAST);
        assert_eq!(
            parse_mac("52:54:00:12:34:AB"),
            Some([0x52, 0x54, 0, 0x12, 0x34, 0xab])
        );
        assert_eq!(parse_mac("52:54:00:12:34"), None);
        assert_eq!(parse_mac("52:54:00:12:34:56:78"), None);
    }

    #[test]
    fn finds_physical_ethernet_nics_in_sysfs() {
        let sys = std::env::temp_dir().join(format!("iainit-net-{}", std::process::id()));
        let net = sys.join("class/net");
        for (name, dev, kind, mac) in [
            ("lo", false, "772", "00:00:00:00:00:00"),
            ("eth1", true, "1", "52:54:00:00:00:02"),
            ("eth0", true, "1", "52:54:00:00:00:01"),
            ("br0", false, "1", "52:54:00:00:00:03"),
            ("ib0", true, "32", "80:00:00:00"),
        ] {
            let d = net.join(name);
            std::fs::create_dir_all(&d).unwrap();
            if dev {
                std::fs::create_dir_all(d.join("device")).unwrap();
            }
            std::fs::write(d.join("type"), format!("{kind}\n")).unwrap();
            std::fs::write(d.join("address"), format!("{mac}\n")).unwrap();
        }
        let nics = physical_nics(&sys);
        std::fs::remove_dir_all(&sys).unwrap();
        let names: Vec<&str> = nics.iter().map(|n| n.name.as_str()).collect();
        assert_eq!(names, ["eth0", "eth1"]);
        assert_eq!(nics[0].mac, "52:54:00:00:00:01");
    }
}
