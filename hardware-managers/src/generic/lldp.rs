//! LLDP: the switch ports our NICs are plugged into, from the frames switches multicast every
//! few seconds, captured with an `AF_PACKET` socket per interface and reported raw as IPA does
//! (`[[type, "hex value"], ...]`); Ironic's `parse-lldp` inspection hook decodes them.
//!
//! Unlike IPA, which sets `IFF_PROMISC` on each NIC for the capture (and leaves it set if it
//! dies mid-way), we join the three LLDP group addresses on the socket
//! (`PACKET_ADD_MEMBERSHIP`): the membership goes away with the socket, whatever happens.

use std::collections::BTreeMap;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::libc;

/// The LLDP ethertype.
pub const ETH_P_LLDP: u16 = 0x88cc;

/// Nearest bridge, nearest non-TPMR bridge, nearest customer bridge (IEEE 802.1AB 7.1).
const GROUP_ADDRESSES: [[u8; 6]; 3] = [
    [0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e],
    [0x01, 0x80, 0xc2, 0x00, 0x00, 0x03],
    [0x01, 0x80, 0xc2, 0x00, 0x00, 0x00],
];

/// Raw TLVs as IPA reports them: `(type, value as lower-case hex)`.
pub type RawTlvs = Vec<(u8, String)>;

/// Splits an LLDPDU (the frame after its 14-byte Ethernet header) into TLVs as IPA does:
/// every TLV up to the end of the buffer, the End TLV included; a TLV whose length runs past
/// the end keeps what there is; a trailing odd byte is dropped.
pub fn parse_tlvs(mut pdu: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut out = Vec::new();
    while pdu.len() >= 2 {
        let header = u16::from_be_bytes([pdu[0], pdu[1]]);
        let kind = (header >> 9) as u8;
        let len = usize::from(header & 0x01ff);
        let end = (2 + len).min(pdu.len());
        out.push((kind, pdu[2..end].to_vec()));
        pdu = &pdu[end..];
    }
    if !pdu.is_empty() {
        tracing::warn!(trailing = ?pdu, "trailing byte in an LLDP frame");
    }
    out
}

/// The TLVs of an Ethernet frame carrying LLDP, hex-encoded; `None` for a runt frame.
pub fn frame_tlvs(frame: &[u8]) -> Option<RawTlvs> {
    if frame.len() < 14 {
        return None;
    }
    Some(
        parse_tlvs(&frame[14..])
            .into_iter()
            .map(|(t, v)| (t, hex(&v)))
            .collect(),
    )
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Listens on each interface for up to `timeout` in total and returns the TLVs of the first
/// LLDP frame seen on each; interfaces that saw none (or could not be listened on) get an
/// empty list, as in IPA.
pub fn collect(interfaces: &[String], timeout: Duration) -> BTreeMap<String, RawTlvs> {
    let names: Vec<String> = interfaces
        .iter()
        .filter(|n| n.as_str() != "lo")
        .cloned()
        .collect();
    capture(&names, timeout)
}

fn capture(interfaces: &[String], timeout: Duration) -> BTreeMap<String, RawTlvs> {
    let mut result: BTreeMap<String, RawTlvs> = BTreeMap::new();
    let mut sockets: Vec<(String, OwnedFd)> = Vec::new();
    for name in interfaces {
        result.insert(name.clone(), Vec::new());
        match open(name) {
            Ok(fd) => sockets.push((name.clone(), fd)),
            Err(e) => {
                tracing::warn!(interface = %name, error = %e, "cannot listen for LLDP frames")
            }
        }
    }
    if sockets.is_empty() {
        return result;
    }
    tracing::info!(interfaces = %sockets.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(","),
        timeout_s = timeout.as_secs_f64(), "waiting for LLDP frames");
    let deadline = Instant::now() + timeout;
    let mut buf = vec![0u8; 1600];
    while !sockets.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        let mut fds: Vec<libc::pollfd> = sockets
            .iter()
            .map(|(_, fd)| libc::pollfd {
                fd: fd.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = left.as_millis().clamp(1, 60_000) as i32;
        // SAFETY: poll(2) over an array we own, of its length.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == std::io::ErrorKind::Interrupted {
                continue;
            }
            tracing::warn!(error = %e, "polling LLDP sockets failed");
            break;
        }
        let ready: Vec<usize> = fds
            .iter()
            .enumerate()
            .filter(|(_, f)| f.revents != 0)
            .map(|(i, _)| i)
            .collect();
        let mut done = Vec::new();
        for i in ready {
            let (name, fd) = &sockets[i];
            // SAFETY: recv into a buffer we own, of its length.
            let n = unsafe {
                libc::recv(
                    fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                if e.kind() != std::io::ErrorKind::WouldBlock {
                    tracing::warn!(interface = %name, error = %e, "reading an LLDP frame failed");
                    done.push(i);
                }
                continue;
            }
            if let Some(tlvs) = frame_tlvs(&buf[..n as usize]) {
                tracing::info!(interface = %name, tlvs = tlvs.len(), "LLDP frame received");
                result.insert(name.clone(), tlvs);
                done.push(i);
            }
        }
        done.sort_unstable();
        for i in done.into_iter().rev() {
            sockets.remove(i);
        }
    }
    if !sockets.is_empty() {
        tracing::warn!(interfaces = %sockets.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(","),
            "no LLDP frame before the timeout");
    }
    result
}

/// A packet socket receiving LLDP frames of one interface.
fn open(interface: &str) -> std::io::Result<OwnedFd> {
    let index = nix::net::if_::if_nametoindex(interface)
        .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
    let proto = ETH_P_LLDP.to_be();
    // SAFETY: plain socket(2); the descriptor is owned right away.
    let fd = unsafe {
        libc::socket(
            libc::AF_PACKET,
            libc::SOCK_RAW | libc::SOCK_CLOEXEC,
            i32::from(proto),
        )
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: an all-zero sockaddr_ll is valid; we fill the fields bind(2) reads.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index as i32;
    // SAFETY: addr is a valid sockaddr_ll of the size we pass.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    for group in GROUP_ADDRESSES {
        // SAFETY: an all-zero packet_mreq is valid.
        let mut mreq: libc::packet_mreq = unsafe { std::mem::zeroed() };
        mreq.mr_ifindex = index as i32;
        mreq.mr_type = libc::PACKET_MR_MULTICAST as u16;
        mreq.mr_alen = 6;
        mreq.mr_address[..6].copy_from_slice(&group);
        // SAFETY: setsockopt with a packet_mreq of its size.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                libc::PACKET_ADD_MEMBERSHIP,
                (&mreq as *const libc::packet_mreq).cast(),
                std::mem::size_of::<libc::packet_mreq>() as u32,
            )
        };
        if rc < 0 {
            // Some virtual devices have no multicast filter; they pass the frames anyway.
            tracing::debug!(interface, error = %std::io::Error::last_os_error(),
                "cannot join an LLDP group address");
        }
    }
    Ok(fd)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Byte-exact LLDP frames as switches of several vendors send them (layouts from IEEE
    /// 802.1AB-2016 and each vendor's documented TLV sets; MACs and names invented).
    pub struct Tlv;

    impl Tlv {
        pub fn raw(kind: u8, value: &[u8]) -> Vec<u8> {
            let header = (u16::from(kind) << 9) | value.len() as u16;
            let mut v = header.to_be_bytes().to_vec();
            v.extend_from_slice(value);
            v
        }
        pub fn chassis_mac(mac: [u8; 6]) -> Vec<u8> {
            let mut v = vec![4u8];
            v.extend_from_slice(&mac);
            Self::raw(1, &v)
        }
        pub fn port(subtype: u8, id: &[u8]) -> Vec<u8> {
            let mut v = vec![subtype];
            v.extend_from_slice(id);
            Self::raw(2, &v)
        }
        pub fn ttl(s: u16) -> Vec<u8> {
            Self::raw(3, &s.to_be_bytes())
        }
        pub fn text(kind: u8, s: &str) -> Vec<u8> {
            Self::raw(kind, s.as_bytes())
        }
        pub fn capabilities(sys: u16, enabled: u16) -> Vec<u8> {
            let mut v = sys.to_be_bytes().to_vec();
            v.extend_from_slice(&enabled.to_be_bytes());
            Self::raw(7, &v)
        }
        /// Management address: IANA family 1 (IPv4) or 2 (IPv6), ifIndex numbering.
        pub fn mgmt(family: u8, addr: &[u8], ifindex: u32) -> Vec<u8> {
            let mut v = vec![(addr.len() + 1) as u8, family];
            v.extend_from_slice(addr);
            v.push(2); // ifIndex
            v.extend_from_slice(&ifindex.to_be_bytes());
            v.push(0); // no OID
            Self::raw(8, &v)
        }
        pub fn org(oui: [u8; 3], subtype: u8, info: &[u8]) -> Vec<u8> {
            let mut v = oui.to_vec();
            v.push(subtype);
            v.extend_from_slice(info);
            Self::raw(127, &v)
        }
        pub fn end() -> Vec<u8> {
            Self::raw(0, &[])
        }
    }

    pub const DOT1: [u8; 3] = [0x00, 0x80, 0xc2];
    pub const DOT3: [u8; 3] = [0x00, 0x12, 0x0f];

    pub fn frame(src: [u8; 6], tlvs: &[Vec<u8>]) -> Vec<u8> {
        let mut f = vec![0x01, 0x80, 0xc2, 0x00, 0x00, 0x0e];
        f.extend_from_slice(&src);
        f.extend_from_slice(&ETH_P_LLDP.to_be_bytes());
        for t in tlvs {
            f.extend_from_slice(t);
        }
        f
    }

    /// Juniper EX: ifName port ID, port VLAN and VLAN name (802.1), MAC/PHY (802.3), a
    /// Juniper-specific TLV (OUI 00:90:69).
    pub fn juniper() -> Vec<u8> {
        let mut vlan_name = 100u16.to_be_bytes().to_vec();
        vlan_name.push(12);
        vlan_name.extend_from_slice(b"provisioning");
        frame(
            [0x3c, 0x8a, 0xb0, 0x11, 0x22, 0x01],
            &[
                Tlv::chassis_mac([0x3c, 0x8a, 0xb0, 0x11, 0x22, 0x00]),
                Tlv::port(7, b"ge-0/0/1"),
                Tlv::ttl(120),
                Tlv::text(4, "server-17 nic 1"),
                Tlv::text(5, "ex4300-rack12"),
                Tlv::text(6, "Juniper Networks, Inc. ex4300-48t, version 21.4R3"),
                Tlv::capabilities(0x0014, 0x0014),
                Tlv::mgmt(1, &[10, 20, 0, 12], 33),
                Tlv::org(DOT1, 1, &100u16.to_be_bytes()),
                Tlv::org(DOT1, 3, &vlan_name),
                Tlv::org(DOT3, 1, &[0x03, 0x6c, 0x03, 0x00, 0x1e]),
                Tlv::org([0x00, 0x90, 0x69], 1, b"CW0216AF0123"),
                Tlv::end(),
            ],
        )
    }

    /// Cisco Nexus: interface-name port ID, IPv4 management address, a Cisco TLV (00:01:42).
    pub fn cisco() -> Vec<u8> {
        frame(
            [0x00, 0x2a, 0x6a, 0x5b, 0x4c, 0x85],
            &[
                Tlv::chassis_mac([0x00, 0x2a, 0x6a, 0x5b, 0x4c, 0x80]),
                Tlv::port(5, b"Ethernet1/5"),
                Tlv::ttl(120),
                Tlv::text(5, "n9k-leaf-3"),
                Tlv::capabilities(0x0014, 0x0004),
                Tlv::mgmt(1, &[192, 0, 2, 33], 83886080),
                Tlv::org(DOT1, 1, &201u16.to_be_bytes()),
                Tlv::org([0x00, 0x01, 0x42], 1, &[0x01]),
                Tlv::end(),
            ],
        )
    }

    /// Arista: locally assigned port ID, link aggregation and max frame size (802.3).
    pub fn arista() -> Vec<u8> {
        frame(
            [0x28, 0x99, 0x3a, 0x01, 0x02, 0x0c],
            &[
                Tlv::chassis_mac([0x28, 0x99, 0x3a, 0x01, 0x02, 0x00]),
                Tlv::port(7, b"Ethernet12"),
                Tlv::ttl(120),
                Tlv::text(5, "arista-tor-b"),
                Tlv::org(DOT1, 1, &300u16.to_be_bytes()),
                Tlv::org(DOT3, 3, &[0x03, 0x00, 0x00, 0x03, 0xe9]),
                Tlv::org(DOT3, 4, &9236u16.to_be_bytes()),
                Tlv::end(),
            ],
        )
    }

    /// Cumulus/Mellanox: ifName port ID, IPv6 management address, no VLAN TLV.
    pub fn cumulus() -> Vec<u8> {
        let v6 = [
            0x20, 0x01, 0x0d, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x17,
        ];
        frame(
            [0x0c, 0x42, 0xa1, 0x00, 0x00, 0x03],
            &[
                Tlv::chassis_mac([0x0c, 0x42, 0xa1, 0x00, 0x00, 0x00]),
                Tlv::port(5, b"swp3"),
                Tlv::ttl(120),
                Tlv::text(5, "spine01"),
                Tlv::mgmt(2, &v6, 2),
                Tlv::end(),
            ],
        )
    }

    fn find(tlvs: &RawTlvs, kind: u8) -> Vec<&str> {
        tlvs.iter()
            .filter(|(t, _)| *t == kind)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    #[test]
    fn juniper_frame() {
        let t = frame_tlvs(&juniper()).unwrap();
        assert_eq!(t.len(), 13);
        assert_eq!(t[0], (1, "043c8ab0112200".to_string()));
        assert_eq!(t[1], (2, format!("07{}", hex(b"ge-0/0/1"))));
        assert_eq!(t[2], (3, "0078".to_string()));
        assert_eq!(find(&t, 5), [hex(b"ex4300-rack12").as_str()]);
        assert_eq!(find(&t, 8), ["05010a14000c020000002100"]);
        let org = find(&t, 127);
        assert_eq!(org[0], "0080c2010064", "port VLAN 100");
        assert_eq!(org[1], format!("0080c20300640c{}", hex(b"provisioning")));
        assert_eq!(org[2], "00120f01036c03001e");
        assert_eq!(org[3], format!("00906901{}", hex(b"CW0216AF0123")));
        assert_eq!(t.last(), Some(&(0, String::new())), "End TLV kept, as IPA");
    }

    #[test]
    fn cisco_arista_cumulus_frames() {
        let c = frame_tlvs(&cisco()).unwrap();
        assert_eq!(find(&c, 2), [format!("05{}", hex(b"Ethernet1/5"))]);
        assert_eq!(find(&c, 8), ["0501c0000221020500000000"]);
        assert_eq!(find(&c, 127), ["0080c20100c9", "0001420101"]);

        let a = frame_tlvs(&arista()).unwrap();
        assert_eq!(find(&a, 5), [hex(b"arista-tor-b")]);
        assert_eq!(
            find(&a, 127),
            ["0080c201012c", "00120f0303000003e9", "00120f042414"]
        );

        let m = frame_tlvs(&cumulus()).unwrap();
        assert_eq!(
            find(&m, 8),
            ["110220010db8000000000000000000000017020000000200"]
        );
        assert!(find(&m, 127).is_empty());
    }

    #[test]
    fn malformed_frames() {
        assert_eq!(frame_tlvs(&[0u8; 13]), None, "runt");
        // A TLV announcing more than the frame holds keeps what there is.
        let mut f = frame([0; 6], &[Tlv::text(5, "sw")]);
        f.extend_from_slice(&[0x0c, 0x10, b'a', b'b']);
        let t = frame_tlvs(&f).unwrap();
        assert_eq!(t, [(5, hex(b"sw")), (6, hex(b"ab"))]);
        // A trailing odd byte is dropped.
        let mut f = frame([0; 6], &[Tlv::ttl(5)]);
        f.push(0x02);
        assert_eq!(frame_tlvs(&f).unwrap(), [(3, "0005".to_string())]);
        // A 511-byte value (the maximum) survives.
        let long = vec![b'x'; 511];
        let f = frame([0; 6], &[Tlv::raw(6, &long)]);
        assert_eq!(frame_tlvs(&f).unwrap()[0].1.len(), 1022);
    }

    /// Sends `frame` on `interface` through a packet socket (as a switch's frame arrives).
    pub fn send_frame(interface: &str, frame: &[u8]) -> std::io::Result<()> {
        let index = nix::net::if_::if_nametoindex(interface)
            .map_err(|e| std::io::Error::from_raw_os_error(e as i32))?;
        // SAFETY: plain socket(2), owned right away.
        let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is ours alone.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an all-zero sockaddr_ll is valid.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        addr.sll_family = libc::AF_PACKET as u16;
        addr.sll_ifindex = index as i32;
        addr.sll_halen = 6;
        addr.sll_addr[..6].copy_from_slice(&frame[..6]);
        // SAFETY: sendto with a buffer and address we own, of their sizes.
        let n = unsafe {
            libc::sendto(
                fd.as_raw_fd(),
                frame.as_ptr().cast(),
                frame.len(),
                0,
                (&addr as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as u32,
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    #[test]
    fn a_frame_sent_on_loopback_is_captured() {
        // Needs CAP_NET_RAW (the test suite runs as root); loopback is the only interface a
        // unit test may use. `collect` leaves lo out, as IPA does; `capture` does not.
        // SAFETY: geteuid(2) cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return;
        }
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let sender = std::thread::spawn(move || {
            let mut sent = 0;
            while !s.load(std::sync::atomic::Ordering::Relaxed) && sent < 100 {
                send_frame("lo", &cisco()).unwrap();
                sent += 1;
                std::thread::sleep(Duration::from_millis(30));
            }
        });
        let r = capture(&["lo".to_string()], Duration::from_secs(5));
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        sender.join().unwrap();
        assert_eq!(r["lo"], frame_tlvs(&cisco()).unwrap());
    }

    #[test]
    fn collecting_on_missing_interfaces_times_out_empty() {
        let t = Instant::now();
        let r = collect(
            &["lo".to_string(), "no-such-nic0".to_string()],
            Duration::from_millis(300),
        );
        assert_eq!(r.len(), 1);
        assert_eq!(r["no-such-nic0"], RawTlvs::new());
        assert!(t.elapsed() < Duration::from_secs(2));
    }
}
