//! Wire types of the protocol between the Ironic conductor and its ramdisk agent, as Ironic 39
//! and ironic-python-agent 13 speak it.
//!
//! Every type here serialises to the exact JSON the other side expects; the tests round-trip
//! bodies captured from a real Ironic (`fixtures/`). Behaviour lives elsewhere: this crate only
//! says what goes over the wire.

#![forbid(unsafe_code)]

mod api_version;
mod command;
mod error_class;
mod heartbeat;
mod image_info;
mod inventory;
mod lookup;
mod node;
mod secret;
mod step;

pub use api_version::{ApiVersion, ParseApiVersionError};
pub use command::{CommandError, CommandRequest, CommandResult, CommandStatus, Fault};
pub use error_class::ErrorClass;
pub use heartbeat::HeartbeatRequest;
pub use image_info::{ImageInfo, PartitionSizes, Proxies};
pub use inventory::{
    BlockDevice, Boot, Cpu, Interface, Inventory, Memory, SystemFirmware, SystemVendor,
};
pub use lookup::{LookupConfig, LookupResponse};
pub use node::Node;
pub use secret::Secret;
pub use step::{ManagerVersions, Step, StepKind, StepLists};

/// The version of ironic-python-agent whose protocol this agent speaks; reported to the
/// conductor as `agent_version` and in `GET /v1/status`.
pub const IPA_COMPATIBLE_VERSION: &str = "13.0.0";
