//! The generic manager's settings from the agent's configuration.

/// Settings of the generic manager that come from the agent's configuration.
#[derive(Debug, Clone)]
pub struct GenericOptions {
    /// IPA's `guard_special_filesystems`: refuse to erase shared-disk cluster filesystems.
    pub guard_special_filesystems: bool,
    /// IPA's `enable_discard_erase` (`ipa-enable-discard-erase`): erase by a verified discard
    /// when no hardware erase is available; the node's `agent_enable_discard_erase` wins.
    pub enable_discard_erase: bool,
}

impl Default for GenericOptions {
    fn default() -> Self {
        GenericOptions {
            guard_special_filesystems: true,
            enable_discard_erase: false,
        }
    }
}
