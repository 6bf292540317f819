//! Talking to the Ironic API: version discovery, lookup, heartbeats, and finding the address
//! the conductor can call us back on.

mod advertise;
mod client;
mod heartbeat;
mod lookup;

pub use advertise::{callback_url, detect_advertise_address};
pub use client::{ClientError, IronicClient};

/// The `faultstring` of an Ironic error body, or its start.
pub fn fault_reason_text(body: &[u8]) -> String {
    client::fault_reason(body)
}
pub use heartbeat::{HeartbeatSettings, Heartbeater};
pub use lookup::{lookup_node, LookupSettings};
