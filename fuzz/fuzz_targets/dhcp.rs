//! What any host on the provisioning network can send the init's DHCP client: replies to
//! DISCOVER and REQUEST, decoded, matched and turned into the lease that configures the
//! interface, routes, `/etc/resolv.conf` and the hostname.
//!
//! Input: datagrams, each a 2-byte big-endian length then the bytes, delivered in order to
//! `dhcp::acquire` (xid 0x3903f326, MAC 52:54:00:12:34:56, as the seeds use). Invariants: a
//! decoded packet survives an encode/decode round trip; a lease has a prefix of at most 32,
//! timers with T1 ≤ T2 ≤ lease, and only plausible DNS names (they go verbatim into
//! resolv.conf).

#![no_main]

use std::collections::VecDeque;
use std::net::Ipv4Addr;
use std::time::Duration;

use ironic_agent_init::dhcp::{acquire, Lease, Packet, Transport};
use libfuzzer_sys::fuzz_target;

const XID: u32 = 0x3903_f326;
const MAC: [u8; 6] = [0x52, 0x54, 0x00, 0x12, 0x34, 0x56];

struct Replay(VecDeque<Vec<u8>>);

impl Transport for Replay {
    fn send(&mut self, packet: &[u8], _to: Ipv4Addr) -> std::io::Result<()> {
        let sent = Packet::decode(packet).expect("the client's own packet decodes");
        assert_eq!(sent.xid, XID);
        Ok(())
    }

    fn recv(&mut self, _timeout: Duration) -> std::io::Result<Option<Vec<u8>>> {
        Ok(self.0.pop_front())
    }
}

fn dns_name(name: &str) {
    assert!(
        !name.is_empty()
            && name.len() <= 253
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b)),
        "{name:?} would go into resolv.conf"
    );
}

fn check(lease: &Lease) {
    assert!(lease.prefix <= 32);
    assert!(lease.routes.iter().all(|r| r.prefix <= 32));
    assert!(lease.t1 <= lease.t2 && lease.t2 <= lease.lease, "{lease:?}");
    lease.hostname.iter().for_each(|n| dns_name(n));
    lease.domain.iter().for_each(|n| dns_name(n));
    lease.search.iter().for_each(|n| dns_name(n));
}

fuzz_target!(|input: &[u8]| {
    let mut datagrams = VecDeque::new();
    let mut rest = input;
    while let [hi, lo, tail @ ..] = rest {
        let len = usize::from(u16::from_be_bytes([*hi, *lo])).min(tail.len());
        datagrams.push_back(tail[..len].to_vec());
        rest = &tail[len..];
    }
    for d in &datagrams {
        let Some(packet) = Packet::decode(d) else {
            continue;
        };
        let again = Packet::decode(&packet.encode()).expect("an encoded packet decodes");
        assert_eq!(again, packet, "encode/decode round trip");
        if let Some(lease) = Lease::from_packet(&packet) {
            check(&lease);
        }
    }
    if let Ok(lease) = acquire(&mut Replay(datagrams), MAC, XID, 1) {
        check(&lease);
    }
});
