use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ErrorClass;

/// Body of `POST /v1/commands/`: `{"name": "<extension>.<command>", "params": {...}}`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct CommandRequest {
    pub name: String,
    pub params: Map<String, Value>,
}

/// `command_status` of a command result. The conductor compares these strings literally.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum CommandStatus {
    #[serde(rename = "RUNNING")]
    Running,
    #[serde(rename = "SUCCEEDED")]
    Succeeded,
    #[serde(rename = "FAILED")]
    Failed,
    /// Reported for clean, deploy and service steps alike when the hardware manager versions
    /// the conductor cached differ from ours; the conductor then restarts the step list.
    #[serde(rename = "CLEAN_VERSION_MISMATCH")]
    VersionMismatch,
}

impl CommandStatus {
    pub fn is_done(self) -> bool {
        self != CommandStatus::Running
    }
}

/// `command_error`: an IPA `RESTError` serialised. The conductor shows `details` (else
/// `message`) to the operator as `last_error`, so `details` must be actionable.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandError {
    /// The IPA error class, e.g. `CleaningError`.
    #[serde(rename = "type")]
    pub kind: ErrorClass,
    /// The class's code and message, as IPA serialises them.
    pub code: u16,
    pub message: String,
    pub details: String,
}

impl CommandError {
    /// An error of `class`, with IPA's code and message for it.
    pub fn new(class: ErrorClass, details: impl Into<String>) -> Self {
        CommandError {
            kind: class,
            code: class.code(),
            message: class.message().to_string(),
            details: details.into(),
        }
    }

    /// IPA's `CommandExecutionError`: what a command that failed for a reason without a
    /// class of its own reports.
    pub fn execution_failed(details: impl Into<String>) -> Self {
        CommandError::new(ErrorClass::CommandExecutionError, details)
    }
}

impl std::fmt::Display for CommandError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.message, self.details)
    }
}

/// One entry of `GET /v1/commands/`, also the reply to `POST /v1/commands/`.
/// The parameters are deliberately not part of it: they can carry secrets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandResult {
    pub id: String,
    /// The short name (`execute_clean_step`, not `clean.execute_clean_step`).
    pub command_name: String,
    pub command_status: CommandStatus,
    pub command_error: Option<CommandError>,
    pub command_result: Option<Value>,
}

/// Body of every HTTP error (status >= 400) of the agent API. The conductor requires
/// `faultstring` and matches substrings of it ("agent is busy", "agent_token").
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub faultcode: String,
    pub faultstring: String,
}

impl Fault {
    pub fn new(status: u16, faultstring: impl Into<String>) -> Self {
        Fault {
            faultcode: if status >= 500 { "Server" } else { "Client" }.to_string(),
            faultstring: faultstring.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn result_serialises_like_ipa() {
        let r = CommandResult {
            id: "5f8c".into(),
            command_name: "execute_clean_step".into(),
            command_status: CommandStatus::Failed,
            command_error: Some(CommandError::new(ErrorClass::CleaningError, "disk on fire")),
            command_result: None,
        };
        assert_eq!(
            serde_json::to_value(&r).unwrap(),
            json!({"id": "5f8c", "command_name": "execute_clean_step",
                   "command_status": "FAILED",
                   "command_error": {"type": "CleaningError", "code": 500,
                                     "message": "Clean step failed", "details": "disk on fire"},
                   "command_result": null})
        );
    }

    #[test]
    fn version_mismatch_uses_the_clean_spelling() {
        assert_eq!(
            serde_json::to_value(CommandStatus::VersionMismatch).unwrap(),
            json!("CLEAN_VERSION_MISMATCH")
        );
    }

    #[test]
    fn fault_code_follows_status() {
        assert_eq!(Fault::new(409, "x").faultcode, "Client");
        assert_eq!(Fault::new(500, "x").faultcode, "Server");
    }
}
