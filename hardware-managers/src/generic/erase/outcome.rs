//! What one erase method on one device comes to.

use serde_json::{Map, Value};

/// Why a method will not be used on a device.
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
    Unsupported(String),
    Failed(String),
}
