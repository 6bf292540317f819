//! What one erase method on one device comes to.

use serde_json::{Map, Value};

/// Why a method will not be used on a device, decided while planning (nothing written yet).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The device does not implement it; the next method is tried.
    Unsupported(String),
    /// It is implemented but cannot be used now (a frozen drive, a locked one); the erase
    /// fails unless the node allows falling back.
    Failed(String),
}

/// The outcome of one method on one device.
#[derive(Debug, Clone, PartialEq)]
pub enum Attempt {
    /// Erased and verified: the report.
    Done(Map<String, Value>),
    /// The device does not implement the method; nothing was written.
    Unsupported(String),
    /// The method applies but did not erase the device.
    Failed(EraseError),
}

impl Attempt {
    /// Why the device was not erased (`None` when it was), as the operator reads it.
    pub fn reason(&self) -> Option<String> {
        match self {
            Attempt::Done(_) => None,
            Attempt::Unsupported(why) => Some(why.clone()),
            Attempt::Failed(e) => Some(e.to_string()),
        }
    }
}

/// The step of a verified erase (plan, flush, plant markers, run, flush, check the markers,
/// make the kernel forget the partitions) at which a method stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Before anything was written: the device refused (a frozen or locked drive), or an
    /// identify command failed.
    Plan,
    /// Writing back and dropping the page cache of the disk or a partition.
    Flush,
    /// Writing or reading back the markers that prove the erase.
    Markers,
    /// The erase itself (the command, the tool, the discard).
    Run,
    /// The markers after the erase: the data is still there.
    Verify,
    /// Re-reading the partition table afterwards.
    Rescan,
}

/// Why a method that applies to a device did not erase it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{reason}", if *.stage == Stage::Markers { "writing the verification markers: " } else { "" })]
pub struct EraseError {
    pub stage: Stage,
    /// What went wrong, naming the device, command or field.
    pub reason: String,
}

impl EraseError {
    pub fn at(stage: Stage, reason: impl Into<String>) -> Self {
        EraseError {
            stage,
            reason: reason.into(),
        }
    }
}
