//! Operators' own hardware managers, compiled in: an operator's crate depends on
//! `ironic-agent` and `hardware-managers`, and its whole `main.rs` is
//!
//! ```no_run
//! # use hardware_managers::{HardwareManager, SupportLevel};
//! # struct FlashCardManager;
//! # impl HardwareManager for FlashCardManager {
//! #     fn name(&self) -> &str { "FlashCardManager" }
//! #     fn version(&self) -> (String, String) { ("flash_card".into(), "1.0".into()) }
//! #     fn evaluate_hardware_support(&self) -> SupportLevel { SupportLevel::SERVICE_PROVIDER }
//! # }
//! fn main() -> std::process::ExitCode {
//!     ironic_agent::run_with_managers(vec![Box::new(FlashCardManager)])
//! }
//! ```
//!
//! That binary is the complete agent (same flags, same kernel parameters, same API), with the
//! operator's managers loaded next to the built-in ones and ordered by support level like
//! them. A manager that needs the agent's [`DeviceGuard`] or configuration is built by a
//! closure given to [`crate::run_with`] instead. See `example-manager/` in the repository.

use std::collections::BTreeSet;

use blockdev::DeviceGuard;
use hardware_managers::HardwareManager;

use crate::config::Config;

/// What a manager factory may use to build its managers.
pub struct ManagerContext<'a> {
    /// Destructive work on a block device must pass this guard first (outside a ramdisk only
    /// `--allow-device` devices may be touched).
    pub guard: &'a DeviceGuard,
    /// The agent's configuration, including every kernel parameter (`config.kernel_params`).
    pub config: &'a Config,
}

/// Builds an operator's managers once the agent knows its guard and configuration.
pub type ManagerFactory = Box<dyn FnOnce(&ManagerContext<'_>) -> Vec<Box<dyn HardwareManager>>>;

/// Names and version names must be unique, or step lists and `hardware_manager_version`
/// would silently merge two managers. `builtin` are the names the agent's own managers use.
pub(crate) fn check_unique(
    builtin: &[(&str, &str)],
    extra: &[Box<dyn HardwareManager>],
) -> anyhow::Result<()> {
    let mut names: BTreeSet<String> = builtin.iter().map(|(n, _)| n.to_string()).collect();
    let mut versions: BTreeSet<String> = builtin.iter().map(|(_, v)| v.to_string()).collect();
    for m in extra {
        let (version_name, _) = m.version();
        if !names.insert(m.name().to_string()) {
            anyhow::bail!(
                "two hardware managers are named {:?}: give each plug-in or external manager \
                 its own name",
                m.name()
            );
        }
        if !versions.insert(version_name.clone()) {
            anyhow::bail!(
                "two hardware managers report the version name {version_name:?}: give each \
                 plug-in or external manager its own"
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use hardware_managers::SupportLevel;

    struct M(&'static str, &'static str);
    impl HardwareManager for M {
        fn name(&self) -> &str {
            self.0
        }
        fn version(&self) -> (String, String) {
            (self.1.into(), "1".into())
        }
        fn evaluate_hardware_support(&self) -> SupportLevel {
            SupportLevel::MAINLINE
        }
    }

    #[test]
    fn duplicate_names_are_refused() {
        let builtin = [("GenericHardwareManager", "generic_hardware_manager")];
        let ok: Vec<Box<dyn HardwareManager>> = vec![Box::new(M("A", "a")), Box::new(M("B", "b"))];
        assert!(check_unique(&builtin, &ok).is_ok());
        let clash: Vec<Box<dyn HardwareManager>> = vec![Box::new(M("GenericHardwareManager", "x"))];
        assert!(check_unique(&builtin, &clash)
            .unwrap_err()
            .to_string()
            .contains("\"GenericHardwareManager\""));
        let clash: Vec<Box<dyn HardwareManager>> =
            vec![Box::new(M("A", "a")), Box::new(M("B", "a"))];
        assert!(check_unique(&builtin, &clash)
            .unwrap_err()
            .to_string()
            .contains("version name \"a\""));
    }
}
