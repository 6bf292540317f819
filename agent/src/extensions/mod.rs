//! IPA's command extensions, one module per extension, one function per command.

mod clean;
mod deploy;
mod image;
pub(crate) mod log;
mod poll;
mod rescue;
mod service;
mod standby;
mod steps;
mod system;

use crate::commands::CommandDef;

/// Every extension with its commands, as the executor registers them.
pub fn all() -> Vec<(&'static str, Vec<CommandDef>)> {
    vec![
        ("clean", clean::commands()),
        ("deploy", deploy::commands()),
        ("service", service::commands()),
        ("standby", standby::commands()),
        ("image", image::commands()),
        ("log", log::commands()),
        ("system", system::commands()),
        ("rescue", rescue::commands()),
        ("poll", poll::commands()),
    ]
}
