//! The `system` extension: locking the agent down once the conductor is done with it.

use std::sync::Arc;
use std::time::Duration;

use ironic_protocol::CommandError;

use crate::agent::{AfterStop, Agent};
use crate::commands::NoParams;
use crate::commands::{CommandDef, CommandValue, Mode};

pub fn commands() -> Vec<CommandDef> {
    vec![CommandDef::new(
        "lockdown",
        Mode::Sync,
        |agent, _: NoParams| lockdown(agent),
    )]
}

/// Answers, then stops the API and heartbeats and takes the NICs down (in a ramdisk, see
/// [`crate::lockdown`]), so nothing on the network can drive the agent any more.
async fn lockdown(agent: Arc<Agent>) -> Result<CommandValue, CommandError> {
    tracing::warn!("lockdown requested: the API stops after this reply");
    tokio::spawn(async move {
        // The reply must leave before the listener goes away.
        tokio::time::sleep(Duration::from_millis(500)).await;
        agent.stop_api(AfterStop::Lockdown);
    });
    Ok(CommandValue::Null)
}
