use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use ironic_protocol::CommandError;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::agent::Agent;

/// Whether a command completes before its POST is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Runs inside the request; the reply carries the final result.
    Sync,
    /// Starts, answers `RUNNING`, completes in the background (and forces a heartbeat).
    Async,
}

/// What a command returns on success.
#[derive(Debug, Clone, PartialEq)]
pub enum CommandValue {
    /// `command_result: null`.
    Null,
    /// Any JSON object or value, stored as `command_result`.
    Json(Value),
    /// A bare message; IPA wraps it as `{"result": "<text>"}` (async: `"<name>: <text>"`).
    Text(String),
}

/// Typed command parameters. `validate` runs before the command is recorded: a failure is an
/// HTTP 400 "Invalid command parameters", as IPA's validators give.
pub trait Params: DeserializeOwned + Send + 'static {
    fn validate(&self, agent: &Agent) -> Result<(), String> {
        let _ = agent;
        Ok(())
    }
}

/// Parameters of commands that take none. Extra keys are tolerated.
#[derive(Debug, serde::Deserialize)]
pub struct NoParams {}
impl Params for NoParams {}

pub type CommandFuture = Pin<Box<dyn Future<Output = Result<CommandValue, CommandError>> + Send>>;
type Prepare =
    dyn Fn(Arc<Agent>, Map<String, Value>) -> Result<CommandFuture, String> + Send + Sync;

/// One command of an extension.
pub struct CommandDef {
    pub name: &'static str,
    pub mode: Mode,
    /// Whether the end of this (asynchronous) command is announced by an early heartbeat
    /// ([`super::Delivery`]). Not for the commands that end the ramdisk (power off, reboot
    /// into the instance): the conductor holds the node's lock while it waits for the power
    /// state and then drops the agent's token, so a heartbeat then is skipped as "locked" or
    /// refused with 400, and nothing waits for it.
    pub announce_end: bool,
    prepare: Box<Prepare>,
}

impl CommandDef {
    /// A command whose parameters deserialize into `P` and whose body is `run`.
    pub fn new<P, F, Fut>(name: &'static str, mode: Mode, run: F) -> Self
    where
        P: Params,
        F: Fn(Arc<Agent>, P) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<CommandValue, CommandError>> + Send + 'static,
    {
        let run = Arc::new(run);
        CommandDef {
            name,
            mode,
            announce_end: true,
            prepare: Box::new(move |agent, params| {
                let p: P =
                    serde_json::from_value(Value::Object(params)).map_err(|e| e.to_string())?;
                p.validate(&agent)?;
                let run = run.clone();
                Ok(Box::pin(async move { run(agent, p).await }))
            }),
        }
    }

    /// See [`CommandDef::announce_end`].
    pub fn ends_the_ramdisk(mut self) -> Self {
        self.announce_end = false;
        self
    }

    /// Parses and validates the parameters, giving the future that runs the command.
    pub fn prepare(
        &self,
        agent: Arc<Agent>,
        params: Map<String, Value>,
    ) -> Result<CommandFuture, String> {
        (self.prepare)(agent, params)
    }
}

impl std::fmt::Debug for CommandDef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}({:?})", self.name, self.mode)
    }
}
