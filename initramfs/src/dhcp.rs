//! A small DHCPv4 client (RFC 2131/2132): DISCOVER → OFFER → REQUEST → ACK, renewal at T1,
//! rebinding at T2, a fresh DISCOVER when the lease runs out.
//!
//! Packets go over a UDP socket bound to port 68 on one interface (`SO_BINDTODEVICE`) with
//! the broadcast flag set, so servers (dnsmasq, QEMU's slirp) broadcast their replies and
//! an interface without an address still receives them. The exchange is written against
//! [`Transport`] so it is tested without a network.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

pub const SERVER_PORT: u16 = 67;
pub const CLIENT_PORT: u16 = 68;
const MAGIC: [u8; 4] = [99, 130, 83, 99];

pub mod msg {
    pub const DISCOVER: u8 = 1;
    pub const OFFER: u8 = 2;
    pub const REQUEST: u8 = 3;
    pub const ACK: u8 = 5;
    pub const NAK: u8 = 6;
}

mod opt {
    pub const PAD: u8 = 0;
    pub const SUBNET_MASK: u8 = 1;
    pub const ROUTER: u8 = 3;
    pub const DNS: u8 = 6;
    pub const HOSTNAME: u8 = 12;
    pub const DOMAIN: u8 = 15;
    pub const MTU: u8 = 26;
    pub const REQUESTED_IP: u8 = 50;
    pub const LEASE_TIME: u8 = 51;
    pub const MESSAGE_TYPE: u8 = 53;
    pub const SERVER_ID: u8 = 54;
    pub const PARAMS: u8 = 55;
    pub const MAX_SIZE: u8 = 57;
    pub const T1: u8 = 58;
    pub const T2: u8 = 59;
    pub const CLIENT_ID: u8 = 61;
    pub const SEARCH: u8 = 119;
    pub const CLASSLESS_ROUTES: u8 = 121;
    pub const END: u8 = 255;
}

/// A DHCP message, only the fields a client uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub op: u8,
    pub xid: u32,
    pub secs: u16,
    pub broadcast: bool,
    pub ciaddr: Ipv4Addr,
    pub yiaddr: Ipv4Addr,
    pub siaddr: Ipv4Addr,
    pub chaddr: [u8; 6],
    /// Options in order, code and data (no PAD/END).
    pub options: Vec<(u8, Vec<u8>)>,
}

impl Packet {
    fn request(kind: u8, xid: u32, mac: [u8; 6], secs: u16) -> Packet {
        let mut client_id = vec![1u8];
        client_id.extend_from_slice(&mac);
        Packet {
            op: 1,
            xid,
            secs,
            broadcast: true,
            ciaddr: Ipv4Addr::UNSPECIFIED,
            yiaddr: Ipv4Addr::UNSPECIFIED,
            siaddr: Ipv4Addr::UNSPECIFIED,
            chaddr: mac,
            options: vec![
                (opt::MESSAGE_TYPE, vec![kind]),
                (opt::CLIENT_ID, client_id),
                (opt::MAX_SIZE, 1500u16.to_be_bytes().to_vec()),
                (
                    opt::PARAMS,
                    vec![
                        opt::SUBNET_MASK,
                        opt::ROUTER,
                        opt::DNS,
                        opt::HOSTNAME,
                        opt::DOMAIN,
                        opt::MTU,
                        opt::LEASE_TIME,
                        opt::SERVER_ID,
                        opt::T1,
                        opt::T2,
                        opt::SEARCH,
                        opt::CLASSLESS_ROUTES,
                    ],
                ),
            ],
        }
    }

    pub fn discover(xid: u32, mac: [u8; 6], secs: u16) -> Packet {
        Packet::request(msg::DISCOVER, xid, mac, secs)
    }

    /// REQUEST in SELECTING state (answering `offer`).
    pub fn select(xid: u32, mac: [u8; 6], secs: u16, offer: &Lease) -> Packet {
        let mut p = Packet::request(msg::REQUEST, xid, mac, secs);
        p.options
            .push((opt::REQUESTED_IP, offer.address.octets().to_vec()));
        p.options
            .push((opt::SERVER_ID, offer.server.octets().to_vec()));
        p
    }

    /// REQUEST in RENEWING/REBINDING state: `ciaddr` carries the address, no server id.
    pub fn renew(xid: u32, mac: [u8; 6], address: Ipv4Addr) -> Packet {
        let mut p = Packet::request(msg::REQUEST, xid, mac, 0);
        p.ciaddr = address;
        p
    }

    pub fn option(&self, code: u8) -> Option<&[u8]> {
        self.options
            .iter()
            .find(|(c, _)| *c == code)
            .map(|(_, d)| d.as_slice())
    }

    pub fn message_type(&self) -> Option<u8> {
        self.option(opt::MESSAGE_TYPE)
            .and_then(|d| d.first().copied())
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; 236];
        b[0] = self.op;
        b[1] = 1; // Ethernet
        b[2] = 6;
        b[4..8].copy_from_slice(&self.xid.to_be_bytes());
        b[8..10].copy_from_slice(&self.secs.to_be_bytes());
        if self.broadcast {
            b[10] = 0x80;
        }
        b[12..16].copy_from_slice(&self.ciaddr.octets());
        b[16..20].copy_from_slice(&self.yiaddr.octets());
        b[20..24].copy_from_slice(&self.siaddr.octets());
        b[28..34].copy_from_slice(&self.chaddr);
        b.extend_from_slice(&MAGIC);
        for (code, data) in &self.options {
            // A zero-length option (rapid commit, 80) is an option too; `chunks` yields none.
            if data.is_empty() {
                b.extend_from_slice(&[*code, 0]);
            }
            // Options longer than 255 bytes are split, as RFC 3396 allows.
            for chunk in data.chunks(255) {
                b.push(*code);
                b.push(chunk.len() as u8);
                b.extend_from_slice(chunk);
            }
        }
        b.push(opt::END);
        // Some old relays drop BOOTP messages shorter than 300 bytes.
        if b.len() < 300 {
            b.resize(300, 0);
        }
        b
    }

    pub fn decode(b: &[u8]) -> Option<Packet> {
        if b.len() < 240 || b[1] != 1 || b[2] != 6 || b[236..240] != MAGIC {
            return None;
        }
        let ip = |i: usize| Ipv4Addr::new(b[i], b[i + 1], b[i + 2], b[i + 3]);
        let mut chaddr = [0u8; 6];
        chaddr.copy_from_slice(&b[28..34]);
        let mut options: Vec<(u8, Vec<u8>)> = Vec::new();
        let mut i = 240;
        while i < b.len() {
            let code = b[i];
            if code == opt::END {
                break;
            }
            if code == opt::PAD {
                i += 1;
                continue;
            }
            let len = *b.get(i + 1)? as usize;
            let data = b.get(i + 2..i + 2 + len)?;
            // Split options (RFC 3396) are concatenated.
            match options.iter_mut().find(|(c, _)| *c == code) {
                Some((_, d)) => d.extend_from_slice(data),
                None => options.push((code, data.to_vec())),
            }
            i += 2 + len;
        }
        Some(Packet {
            op: b[0],
            xid: u32::from_be_bytes([b[4], b[5], b[6], b[7]]),
            secs: u16::from_be_bytes([b[8], b[9]]),
            broadcast: b[10] & 0x80 != 0,
            ciaddr: ip(12),
            yiaddr: ip(16),
            siaddr: ip(20),
            chaddr,
            options,
        })
    }
}

/// A route from the lease: `destination/prefix via gateway`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Route {
    pub destination: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
}

/// What an OFFER or ACK gave us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub address: Ipv4Addr,
    pub prefix: u8,
    pub server: Ipv4Addr,
    /// Classless static routes (option 121) when given, else a default route via the first
    /// router (option 3), as RFC 3442 requires.
    pub routes: Vec<Route>,
    pub dns: Vec<Ipv4Addr>,
    pub hostname: Option<String>,
    pub domain: Option<String>,
    pub search: Vec<String>,
    pub mtu: Option<u16>,
    pub lease: Duration,
    pub t1: Duration,
    pub t2: Duration,
}

impl Lease {
    pub fn from_packet(p: &Packet) -> Option<Lease> {
        let ips = |code| -> Vec<Ipv4Addr> {
            p.option(code)
                .map(|d| {
                    d.chunks_exact(4)
                        .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
                        .collect()
                })
                .unwrap_or_default()
        };
        let secs = |code| {
            p.option(code)
                .filter(|d| d.len() == 4)
                .map(|d| u32::from_be_bytes([d[0], d[1], d[2], d[3]]))
        };
        let text = |code| {
            p.option(code)
                .map(|d| {
                    String::from_utf8_lossy(d)
                        .trim_end_matches('\0')
                        .to_string()
                })
                .filter(|s| !s.is_empty())
        };
        if p.yiaddr.is_unspecified() {
            return None;
        }
        let server = ips(opt::SERVER_ID).first().copied().unwrap_or(p.siaddr);
        let prefix = ips(opt::SUBNET_MASK)
            .first()
            .map(|m| u32::from(*m).leading_ones() as u8)
            .unwrap_or_else(|| classful_prefix(p.yiaddr));
        let routes = match p.option(opt::CLASSLESS_ROUTES).and_then(parse_classless) {
            Some(r) if !r.is_empty() => r,
            _ => ips(opt::ROUTER)
                .first()
                .map(|gw| {
                    vec![Route {
                        destination: Ipv4Addr::UNSPECIFIED,
                        prefix: 0,
                        gateway: *gw,
                    }]
                })
                .unwrap_or_default(),
        };
        // An infinite lease (0xffffffff) never needs renewing; cap the timers at a year.
        let lease_secs = secs(opt::LEASE_TIME).unwrap_or(3600).min(365 * 86400);
        let lease = Duration::from_secs(lease_secs as u64);
        let t1 = secs(opt::T1)
            .map(|s| Duration::from_secs(s as u64))
            .unwrap_or(lease / 2)
            .min(lease);
        let t2 = secs(opt::T2)
            .map(|s| Duration::from_secs(s as u64))
            .unwrap_or(lease * 7 / 8)
            .clamp(t1, lease);
        Some(Lease {
            address: p.yiaddr,
            prefix,
            server,
            routes,
            dns: ips(opt::DNS),
            hostname: text(opt::HOSTNAME).and_then(dns_name),
            domain: text(opt::DOMAIN).and_then(dns_name),
            search: p
                .option(opt::SEARCH)
                .map(parse_search)
                .unwrap_or_default()
                .into_iter()
                .filter_map(dns_name)
                .collect(),
            mtu: p
                .option(opt::MTU)
                .filter(|d| d.len() == 2)
                .map(|d| u16::from_be_bytes([d[0], d[1]])),
            lease,
            t1,
            t2,
        })
    }
}

fn classful_prefix(a: Ipv4Addr) -> u8 {
    match a.octets()[0] {
        0..=127 => 8,
        128..=191 => 16,
        _ => 24,
    }
}

/// RFC 3442: `prefix-len, significant destination octets, router`.
fn parse_classless(d: &[u8]) -> Option<Vec<Route>> {
    let mut routes = Vec::new();
    let mut i = 0;
    while i < d.len() {
        let prefix = d[i];
        if prefix > 32 {
            return None;
        }
        let n = (prefix as usize).div_ceil(8);
        let dest = d.get(i + 1..i + 1 + n)?;
        let gw = d.get(i + 1 + n..i + 5 + n)?;
        let mut octets = [0u8; 4];
        octets[..n].copy_from_slice(dest);
        routes.push(Route {
            destination: Ipv4Addr::from(octets),
            prefix,
            gateway: Ipv4Addr::new(gw[0], gw[1], gw[2], gw[3]),
        });
        i += 5 + n;
    }
    Some(routes)
}

/// `name` if it is a plausible DNS name (letters, digits, `-`, `_`, `.`; at most 253
/// bytes). The names go verbatim into `/etc/resolv.conf` and the hostname, so anything else
/// a DHCP server on the shared provisioning network sends (a newline and a `nameserver`
/// line, spaces adding search domains) is dropped.
fn dns_name(name: String) -> Option<String> {
    let ok = !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then_some(name)
}

/// RFC 1035 names, with RFC 3397's compression pointers (within the option).
fn parse_search(d: &[u8]) -> Vec<String> {
    fn name_at(d: &[u8], mut i: usize, depth: u8) -> Option<(String, usize)> {
        let mut labels: Vec<String> = Vec::new();
        let mut end = None;
        loop {
            let len = *d.get(i)? as usize;
            if len == 0 {
                end.get_or_insert(i + 1);
                break;
            }
            if len & 0xc0 == 0xc0 {
                if depth > 4 {
                    return None;
                }
                let ptr = ((len & 0x3f) << 8) | *d.get(i + 1)? as usize;
                end.get_or_insert(i + 2);
                let (rest, _) = name_at(d, ptr, depth + 1)?;
                if !rest.is_empty() {
                    labels.push(rest);
                }
                break;
            }
            labels.push(String::from_utf8_lossy(d.get(i + 1..i + 1 + len)?).into_owned());
            i += 1 + len;
        }
        Some((labels.join("."), end?))
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < d.len() {
        match name_at(d, i, 0) {
            Some((name, next)) => {
                if !name.is_empty() {
                    out.push(name);
                }
                i = next;
            }
            None => break,
        }
    }
    out
}

/// How packets leave and arrive; the real one is a UDP socket on one interface.
pub trait Transport {
    fn send(&mut self, packet: &[u8], to: Ipv4Addr) -> std::io::Result<()>;
    /// One datagram, or `None` when `timeout` passed without one.
    fn recv(&mut self, timeout: Duration) -> std::io::Result<Option<Vec<u8>>>;
}

/// Why an exchange gave no lease.
#[derive(Debug, PartialEq, Eq)]
pub enum DhcpError {
    /// No usable answer within the attempts.
    NoAnswer,
    /// The server refused our REQUEST.
    Nak,
    Io(String),
}

impl std::fmt::Display for DhcpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DhcpError::NoAnswer => f.write_str("no DHCP answer"),
            DhcpError::Nak => f.write_str("DHCP server answered NAK"),
            DhcpError::Io(e) => write!(f, "DHCP socket error: {e}"),
        }
    }
}

impl From<std::io::Error> for DhcpError {
    fn from(e: std::io::Error) -> Self {
        DhcpError::Io(e.to_string())
    }
}

/// Retransmission timeouts: RFC 2131's 4, 8, 16... s would make a lost first packet cost
/// four seconds; a ramdisk on a provisioning network wants its lease fast, so start at 1 s
/// and double up to `max`.
pub fn backoff(attempt: u32, max: Duration) -> Duration {
    Duration::from_secs(1u64 << attempt.min(6)).min(max)
}

/// How long [`acquire`] waits for the first answer before it retransmits; it doubles per
/// attempt up to 16 s. A provisioning network's DHCP server answers in milliseconds: a
/// DISCOVER lost on a link that just came up then costs a quarter of a second, not one
/// (RFC 2131's 4 s would cost four).
pub const FIRST_RETRANSMIT: Duration = Duration::from_millis(250);

/// `first`, doubled per attempt, at most 16 s.
fn retransmit_timeout(first: Duration, attempt: u32) -> Duration {
    (first * (1u32 << attempt.min(16))).min(Duration::from_secs(16))
}

/// Sends `packet` and waits for a reply with our `xid` and MAC of one of `kinds`,
/// retransmitting `attempts` times.
fn exchange(
    t: &mut dyn Transport,
    make: &mut dyn FnMut(u16) -> Packet,
    to: Ipv4Addr,
    kinds: &[u8],
    attempts: u32,
    first: Duration,
    started: Instant,
) -> Result<Packet, DhcpError> {
    for attempt in 0..attempts {
        let secs = started.elapsed().as_secs().min(u16::MAX as u64) as u16;
        let packet = make(secs);
        t.send(&packet.encode(), to)?;
        let deadline = Instant::now() + retransmit_timeout(first, attempt);
        loop {
            let now = Instant::now();
            if now >= deadline {
                break;
            }
            let Some(bytes) = t.recv(deadline - now)? else {
                break;
            };
            let Some(reply) = Packet::decode(&bytes) else {
                continue;
            };
            if reply.op != 2 || reply.xid != packet.xid || reply.chaddr != packet.chaddr {
                continue;
            }
            match reply.message_type() {
                Some(k) if kinds.contains(&k) => return Ok(reply),
                _ => continue,
            }
        }
    }
    Err(DhcpError::NoAnswer)
}

/// DISCOVER → OFFER → REQUEST → ACK. `xid` should be random per exchange.
pub fn acquire(
    t: &mut dyn Transport,
    mac: [u8; 6],
    xid: u32,
    attempts: u32,
) -> Result<Lease, DhcpError> {
    let started = Instant::now();
    let offer = exchange(
        t,
        &mut |secs| Packet::discover(xid, mac, secs),
        Ipv4Addr::BROADCAST,
        &[msg::OFFER],
        attempts,
        FIRST_RETRANSMIT,
        started,
    )?;
    let offered = Lease::from_packet(&offer).ok_or(DhcpError::NoAnswer)?;
    let ack = exchange(
        t,
        &mut |secs| Packet::select(xid, mac, secs, &offered),
        Ipv4Addr::BROADCAST,
        &[msg::ACK, msg::NAK],
        attempts,
        FIRST_RETRANSMIT,
        started,
    )?;
    if ack.message_type() == Some(msg::NAK) {
        return Err(DhcpError::Nak);
    }
    Lease::from_packet(&ack).ok_or(DhcpError::NoAnswer)
}

/// RENEWING (unicast to the server) or REBINDING (broadcast) for the lease we hold.
pub fn renew(
    t: &mut dyn Transport,
    mac: [u8; 6],
    xid: u32,
    lease: &Lease,
    rebinding: bool,
) -> Result<Lease, DhcpError> {
    let to = if rebinding {
        Ipv4Addr::BROADCAST
    } else {
        lease.server
    };
    let ack = exchange(
        t,
        &mut |_| Packet::renew(xid, mac, lease.address),
        to,
        &[msg::ACK, msg::NAK],
        3,
        Duration::from_secs(1),
        Instant::now(),
    )?;
    if ack.message_type() == Some(msg::NAK) {
        return Err(DhcpError::Nak);
    }
    Lease::from_packet(&ack).ok_or(DhcpError::NoAnswer)
}

#[cfg(test)]
mod tests {
    /// Found by fuzz/fuzz_targets/dhcp.rs: a reply with an empty option 84 lost it on
    /// re-encoding.
    #[test]
    fn zero_length_options_survive_a_round_trip() {
        let mut p = Packet::discover(0x3903_f326, [0x52, 0x54, 0, 0x12, 0x34, 0x56], 0);
        p.options.insert(1, (84, Vec::new()));
        p.options.push((80, Vec::new()));
        assert_eq!(Packet::decode(&p.encode()), Some(p));
    }

    use super::*;
    use std::collections::VecDeque;

    const MAC: [u8; 6] = [0x52, 0x54, 0, 0x12, 0x34, 0x56];

    /// Answers like QEMU's slirp: 10.0.2.15/24 from 10.0.2.2, DNS 10.0.2.3.
    struct FakeServer {
        sent: Vec<(Packet, Ipv4Addr)>,
        queue: VecDeque<Vec<u8>>,
        drop_first: usize,
        nak: bool,
    }

    impl FakeServer {
        fn reply(&self, req: &Packet, kind: u8) -> Vec<u8> {
            let mut p = req.clone();
            p.op = 2;
            p.yiaddr = Ipv4Addr::new(10, 0, 2, 15);
            p.options = vec![
                (opt::MESSAGE_TYPE, vec![kind]),
                (opt::SERVER_ID, vec![10, 0, 2, 2]),
                (opt::SUBNET_MASK, vec![255, 255, 255, 0]),
                (opt::ROUTER, vec![10, 0, 2, 2]),
                (opt::DNS, vec![10, 0, 2, 3]),
                (opt::LEASE_TIME, 86400u32.to_be_bytes().to_vec()),
                (opt::HOSTNAME, b"node-0".to_vec()),
            ];
            p.encode()
        }
    }

    impl Transport for FakeServer {
        fn send(&mut self, packet: &[u8], to: Ipv4Addr) -> std::io::Result<()> {
            let p = Packet::decode(packet).expect("we send valid packets");
            self.sent.push((p.clone(), to));
            if self.drop_first > 0 {
                self.drop_first -= 1;
                return Ok(());
            }
            // Noise first: another client's reply must be ignored.
            let mut other = p.clone();
            other.xid ^= 1;
            self.queue.push_back(self.reply(&other, msg::OFFER));
            let kind = match p.message_type() {
                Some(msg::DISCOVER) => msg::OFFER,
                _ if self.nak => msg::NAK,
                _ => msg::ACK,
            };
            self.queue.push_back(self.reply(&p, kind));
            Ok(())
        }
        fn recv(&mut self, _: Duration) -> std::io::Result<Option<Vec<u8>>> {
            Ok(self.queue.pop_front())
        }
    }

    fn server() -> FakeServer {
        FakeServer {
            sent: vec![],
            queue: VecDeque::new(),
            drop_first: 0,
            nak: false,
        }
    }

    #[test]
    fn acquires_a_lease() {
        let mut s = server();
        let lease = acquire(&mut s, MAC, 0x1234, 3).unwrap();
        assert_eq!(lease.address, Ipv4Addr::new(10, 0, 2, 15));
        assert_eq!(lease.prefix, 24);
        assert_eq!(lease.server, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(lease.routes[0].gateway, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(lease.dns, vec![Ipv4Addr::new(10, 0, 2, 3)]);
        assert_eq!(lease.hostname.as_deref(), Some("node-0"));
        assert_eq!(lease.t1, Duration::from_secs(43200));
        assert_eq!(lease.t2, Duration::from_secs(75600));
        let (req, to) = &s.sent[1];
        assert_eq!(*to, Ipv4Addr::BROADCAST);
        assert_eq!(req.message_type(), Some(msg::REQUEST));
        assert_eq!(req.option(opt::REQUESTED_IP), Some(&[10, 0, 2, 15][..]));
        assert_eq!(req.option(opt::SERVER_ID), Some(&[10, 0, 2, 2][..]));
        assert!(req.broadcast);
    }

    #[test]
    fn retransmits_and_handles_nak() {
        let mut s = server();
        s.drop_first = 1;
        // The fake never blocks, so a dropped DISCOVER costs no real time here.
        assert!(acquire(&mut s, MAC, 7, 3).is_ok());
        assert_eq!(s.sent[0].0.message_type(), s.sent[1].0.message_type());
        let mut s = server();
        s.nak = true;
        assert_eq!(acquire(&mut s, MAC, 7, 3), Err(DhcpError::Nak));
        let mut s = server();
        s.drop_first = 10;
        assert_eq!(acquire(&mut s, MAC, 7, 2), Err(DhcpError::NoAnswer));
    }

    #[test]
    fn renewal_is_unicast_with_ciaddr() {
        let mut s = server();
        let lease = acquire(&mut s, MAC, 1, 2).unwrap();
        let again = renew(&mut s, MAC, 2, &lease, false).unwrap();
        assert_eq!(again.address, lease.address);
        let (req, to) = s.sent.last().unwrap();
        assert_eq!(*to, Ipv4Addr::new(10, 0, 2, 2));
        assert_eq!(req.ciaddr, lease.address);
        assert_eq!(req.option(opt::REQUESTED_IP), None);
    }

    #[test]
    fn packets_round_trip_and_long_options_split() {
        let mut p = Packet::discover(0xdeadbeef, MAC, 3);
        p.options.push((opt::SEARCH, vec![7u8; 300]));
        let bytes = p.encode();
        assert_eq!(&bytes[236..240], &MAGIC);
        assert_eq!(Packet::decode(&bytes).unwrap(), p);
        assert!(Packet::decode(&bytes[..200]).is_none());
    }

    #[test]
    fn classless_routes_win_over_the_router_option() {
        let mut p = Packet::discover(1, MAC, 0);
        p.op = 2;
        p.yiaddr = Ipv4Addr::new(192, 168, 5, 9);
        p.options = vec![
            (opt::ROUTER, vec![192, 168, 5, 1]),
            // 10.0.0.0/8 via 192.168.5.254, default via 192.168.5.2
            (
                opt::CLASSLESS_ROUTES,
                vec![8, 10, 192, 168, 5, 254, 0, 192, 168, 5, 2],
            ),
            (
                opt::SEARCH,
                vec![
                    7, b'e', b'x', b'a', b'm', b'p', b'l', b'e', 3, b'c', b'o', b'm', 0, 3, b'l',
                    b'a', b'b', 0xc0, 0,
                ],
            ),
        ];
        let l = Lease::from_packet(&p).unwrap();
        assert_eq!(l.prefix, 24, "classful default without option 1");
        assert_eq!(
            l.routes,
            vec![
                Route {
                    destination: Ipv4Addr::new(10, 0, 0, 0),
                    prefix: 8,
                    gateway: Ipv4Addr::new(192, 168, 5, 254)
                },
                Route {
                    destination: Ipv4Addr::UNSPECIFIED,
                    prefix: 0,
                    gateway: Ipv4Addr::new(192, 168, 5, 2)
                },
            ]
        );
        assert_eq!(l.search, vec!["example.com", "lab.example.com"]);
    }

    #[test]
    fn names_that_would_inject_into_resolv_conf_are_dropped() {
        let mut p = Packet::discover(1, MAC, 0);
        p.op = 2;
        p.yiaddr = Ipv4Addr::new(192, 168, 5, 9);
        p.options = vec![
            (
                opt::DOMAIN,
                b"lab.example\nnameserver 203.0.113.66".to_vec(),
            ),
            (opt::HOSTNAME, b"node 1".to_vec()),
            (
                opt::SEARCH,
                vec![
                    3, b'o', b'k', b'a', 0, 4, b'b', b'\n', b'a', b'd', 3, b'c', b'o', b'm', 0,
                ],
            ),
        ];
        let l = Lease::from_packet(&p).unwrap();
        assert_eq!(l.domain, None);
        assert_eq!(l.hostname, None);
        assert_eq!(l.search, vec!["oka"]);
        p.options = vec![
            (opt::DOMAIN, b"lab.example.com".to_vec()),
            (opt::HOSTNAME, b"node-1_a".to_vec()),
        ];
        let l = Lease::from_packet(&p).unwrap();
        assert_eq!(l.domain.as_deref(), Some("lab.example.com"));
        assert_eq!(l.hostname.as_deref(), Some("node-1_a"));
    }
}
