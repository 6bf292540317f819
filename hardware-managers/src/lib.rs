//! Hardware managers: the plug-in point of the agent, with ironic-python-agent's semantics.
//!
//! A [`HardwareManager`] knows how to do things on some class of hardware: list disks, erase
//! them, report inventory, run clean/deploy/service steps. Several managers are loaded at once
//! and ordered by how well each supports the machine ([`SupportLevel`]); [`Managers`] then
//! dispatches every call to the best manager that handles it, exactly as IPA's
//! `dispatch_to_managers` / `dispatch_to_all_managers` do, so a vendor manager can override
//! one step of the generic manager and inherit everything else.
//!
//! Destructive work goes through a [`blockdev::DeviceGuard`]: outside a ramdisk only devices that the
//! operator allowed explicitly may be touched, so running the agent on a workstation cannot
//! wipe the workstation.

pub mod argsinfo;
mod disk;
mod dispatch;
mod error;
pub mod external;
pub mod generic;
mod manager;

pub use disk::{Disk, DiskRegion, Partition};
pub use dispatch::Managers;
pub use error::HardwareError;
pub use manager::{Dispatch, HardwareManager, InventoryRequest, StepCall, SupportLevel};
