//! The `deploy` extension: deploy steps, run through the hardware managers.

use ironic_protocol::StepKind;

use crate::commands::CommandDef;

pub fn commands() -> Vec<CommandDef> {
    super::steps::commands(StepKind::Deploy)
}
