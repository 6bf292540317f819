//! The `poll` extension: the inventory on demand, and lookup data pushed by a standalone
//! (passive) Ironic setup.

use std::sync::Arc;

use ironic_protocol::{CommandError, LookupResponse};
use serde::Deserialize;
use serde_json::Value;

use crate::agent::Agent;
use crate::commands::{CommandDef, CommandValue, Mode, NoParams, Params};

pub fn commands() -> Vec<CommandDef> {
    vec![
        CommandDef::new("get_hardware_info", Mode::Sync, |agent, _: NoParams| {
            get_hardware_info(agent)
        }),
        CommandDef::new("set_node_info", Mode::Sync, set_node_info),
    ]
}

fn failed(details: String) -> CommandError {
    CommandError::execution_failed(details)
}

/// The inventory, with `boot.pxe_interface` from `BOOTIF` as IPA reports it (verbatim).
async fn get_hardware_info(agent: Arc<Agent>) -> Result<CommandValue, CommandError> {
    let managers = agent.managers();
    let request = agent.inventory_request();
    let inventory = tokio::task::spawn_blocking(move || managers.list_hardware_info(&request))
        .await
        .map_err(|e| failed(e.to_string()))?
        .map_err(|e| failed(format!("collecting the inventory: {e}")))?;
    serde_json::to_value(inventory)
        .map(CommandValue::Json)
        .map_err(|e| failed(e.to_string()))
}

#[derive(Debug, Deserialize)]
pub struct SetNodeInfo {
    node_info: Value,
}
impl Params for SetNodeInfo {}

/// Takes `{"node": .., "config": ..}` as a lookup reply would carry it.
async fn set_node_info(agent: Arc<Agent>, p: SetNodeInfo) -> Result<CommandValue, CommandError> {
    let body = serde_json::to_vec(&p.node_info).map_err(|e| failed(e.to_string()))?;
    let lookup = LookupResponse::from_json(&body).map_err(|e| failed(format!("node_info: {e}")))?;
    agent
        .apply_lookup(lookup)
        .map_err(|e| failed(e.to_string()))?;
    Ok(CommandValue::Null)
}
