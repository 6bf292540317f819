//! The ironic-agent: looks its node up in Ironic, heartbeats, and runs what the conductor
//! asks through IPA's command API.

pub mod config;
