use std::collections::BTreeMap;
use std::sync::Arc;

use ironic_protocol::{CommandError, CommandStatus, ErrorClass};
use serde_json::{json, Map, Value};

use super::{CommandDef, CommandRecord, CommandValue, Mode};
use crate::agent::Agent;

/// Errors answered at the HTTP level (the command is not recorded), with IPA's status codes
/// and `faultstring` texts, which the conductor matches on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("Agent is busy: executing command {0}")]
    Busy(String),
    #[error("Invalid command: {0}")]
    InvalidCommand(String),
    #[error("Invalid command parameters: {0}")]
    InvalidParams(String),
    #[error("Invalid request body: {0}")]
    InvalidBody(String),
    #[error("Not found: {0}")]
    NotFound(String),
    #[error("401 Unauthorized: Token invalid.")]
    Unauthorized,
    #[error("Method not allowed")]
    MethodNotAllowed,
}

impl ApiError {
    pub fn status(&self) -> u16 {
        match self {
            ApiError::Busy(_) => 409,
            ApiError::InvalidCommand(_) | ApiError::InvalidParams(_) | ApiError::InvalidBody(_) => {
                400
            }
            ApiError::NotFound(_) => 404,
            ApiError::Unauthorized => 401,
            ApiError::MethodNotAllowed => 405,
        }
    }
}

/// Runs commands: resolves `extension.command`, enforces one running command at a time,
/// records results in order in the agent's history and runs asynchronous ones in the
/// background.
pub struct Executor {
    extensions: BTreeMap<&'static str, BTreeMap<&'static str, CommandDef>>,
    /// Serialises command starts (and sync commands), as IPA's command lock does.
    lock: tokio::sync::Mutex<()>,
}

impl Executor {
    pub fn new(extensions: Vec<(&'static str, Vec<CommandDef>)>) -> Self {
        Executor {
            extensions: extensions
                .into_iter()
                .map(|(ext, cmds)| (ext, cmds.into_iter().map(|c| (c.name, c)).collect()))
                .collect(),
            lock: tokio::sync::Mutex::new(()),
        }
    }

    /// Names of every `extension.command`, for logs and tests.
    pub fn command_names(&self) -> Vec<String> {
        self.extensions
            .iter()
            .flat_map(|(e, cmds)| cmds.keys().map(move |c| format!("{e}.{c}")))
            .collect()
    }

    /// Starts `name` with `params`. Sync commands are complete on return; async ones are
    /// `RUNNING` and finish in the background, calling `agent.command_finished()`.
    pub async fn execute(
        &self,
        agent: &Arc<Agent>,
        name: &str,
        params: Map<String, Value>,
    ) -> Result<Arc<CommandRecord>, ApiError> {
        let (ext, short) = name.split_once('.').ok_or_else(|| {
            ApiError::InvalidCommand("Command name must be of the form <extension>.<name>".into())
        })?;
        let _guard = self.lock.lock().await;
        let history = agent.history();
        if let Some(running) = history.busy_with() {
            tracing::warn!(command = name, running, "refusing command: agent is busy");
            return Err(ApiError::Busy(running));
        }
        let def = self
            .extensions
            .get(ext)
            .ok_or_else(|| ApiError::NotFound(format!("Extension with id {ext} not found.")))?
            .get(short)
            .ok_or_else(|| ApiError::InvalidCommand(format!("Unknown command: {short}")))?;
        let future = def
            .prepare(agent.clone(), params)
            .map_err(ApiError::InvalidParams)?;
        let record = CommandRecord::new(def.name);
        tracing::info!(command = name, id = record.id(), mode = ?def.mode, "executing command");
        match def.mode {
            Mode::Sync => {
                let outcome = future.await;
                finish(&record, outcome, false);
                history
                    .push_unless_busy(record.clone())
                    .map_err(ApiError::Busy)?;
            }
            Mode::Async => {
                history
                    .push_unless_busy(record.clone())
                    .map_err(ApiError::Busy)?;
                let announce = def.announce_end;
                if announce {
                    agent.delivery().started();
                }
                tokio::spawn(super::progress::report(
                    record.clone(),
                    std::time::Instant::now(),
                ));
                let (rec, agent) = (record.clone(), agent.clone());
                tokio::spawn(async move {
                    // A panic inside the command becomes a failed command, not a dead agent.
                    let outcome = match tokio::spawn(future).await {
                        Ok(outcome) => outcome,
                        Err(join) => Err(CommandError::execution_failed(format!(
                            "internal error in {}: {join}",
                            rec.name()
                        ))),
                    };
                    finish(&rec, outcome, true);
                    tracing::debug!(command = rec.name(), "async command finished");
                    if announce {
                        agent.delivery().finished(tokio::time::Instant::now());
                    }
                });
            }
        }
        Ok(record)
    }
}

fn finish(record: &CommandRecord, outcome: Result<CommandValue, CommandError>, is_async: bool) {
    match outcome {
        Ok(value) => {
            let result = match value {
                CommandValue::Null => None,
                CommandValue::Json(v) => Some(v),
                CommandValue::Text(t) if is_async => {
                    Some(json!({"result": format!("{}: {t}", record.name())}))
                }
                CommandValue::Text(t) => Some(json!({"result": t})),
            };
            tracing::info!(
                command = record.name(),
                id = record.id(),
                "command succeeded"
            );
            record.finish(CommandStatus::Succeeded, result, None);
        }
        Err(error) => {
            let status = if error.kind == ErrorClass::VersionMismatch {
                CommandStatus::VersionMismatch
            } else {
                CommandStatus::Failed
            };
            tracing::error!(command = record.name(), id = record.id(), error = %error, "command failed");
            record.finish(status, None, Some(error));
        }
    }
}
