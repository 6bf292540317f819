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
pub(crate) mod system;

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

/// A hardware-manager error as IPA reports it: its own class when it has one, else
/// `fallback_kind` with `fallback_message`.
pub(crate) fn hardware_error(
    e: hardware_managers::HardwareError,
    fallback_kind: &str,
    fallback_message: &str,
) -> ironic_protocol::CommandError {
    let details = e.to_string();
    match (e.ipa_type(), e.ipa_message()) {
        (Some(t), Some(m)) => ironic_protocol::CommandError::new(t, e.ipa_code(), m, details),
        _ => ironic_protocol::CommandError::new(fallback_kind, 500, fallback_message, details),
    }
}
