//! LLDP frames any switch or host on the link can send during inspection: the Ethernet
//! header, then TLVs, reported raw to Ironic as IPA does.
//!
//! Invariants: the TLVs account for every byte of the LLDPDU but a trailing odd one, in
//! order; a value is at most 511 bytes; the hex is lower-case, two digits a byte.

#![no_main]

use hardware_managers::generic::lldp::{frame_tlvs, hex, parse_tlvs};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|frame: &[u8]| {
    let Some(raw) = frame_tlvs(frame) else {
        assert!(frame.len() < 14);
        return;
    };
    let pdu = &frame[14..];
    let tlvs = parse_tlvs(pdu);
    assert_eq!(raw.len(), tlvs.len());
    let mut rebuilt = Vec::with_capacity(pdu.len());
    for ((kind, value), (raw_kind, raw_hex)) in tlvs.iter().zip(&raw) {
        assert_eq!(kind, raw_kind);
        assert!(*kind < 128 && value.len() <= 511);
        assert_eq!(raw_hex, &hex(value));
        assert!(raw_hex.bytes().all(|b| b"0123456789abcdef".contains(&b)));
        rebuilt.push(kind << 1);
        rebuilt.push(0);
        rebuilt.extend_from_slice(value);
    }
    assert!(pdu.len() - rebuilt.len() <= 1, "bytes lost between TLVs");
    // The type bits of each header and every value byte are where they were in the frame.
    let mut at = 0;
    for (kind, value) in &tlvs {
        assert_eq!(pdu[at] >> 1, *kind);
        assert_eq!(&pdu[at + 2..at + 2 + value.len()], value.as_slice());
        at += 2 + value.len();
    }
});
