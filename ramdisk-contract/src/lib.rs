//! The contract between the ramdisk's three programs: the builder (`ironic-agent-build`),
//! which lays the ramdisk out; its PID 1 (`ironic-agent-init`), which starts and supervises
//! the agent; and the agent. Each constant is a place one of them writes and another reads,
//! so a change here is a change for all three at once.
//!
//! No dependencies and no `unsafe`: the init links it into a small static binary.

#![forbid(unsafe_code)]

/// Files and directories of the ramdisk.
pub mod paths {
    /// The agent binary: installed by the builder, started by the init.
    pub const AGENT: &str = "/usr/bin/ironic-agent";
    /// The init's configuration, written by the builder (`ironic-agent-init`'s `config`).
    pub const INIT_CONFIG: &str = "/etc/ironic-agent/init.conf";
    /// The agent's INI configuration (IPA's second default path), where the builder installs
    /// the operator's file.
    pub const AGENT_CONFIG: &str = "/etc/ironic-python-agent.conf";
    /// Manifests of external hardware managers: filled by the builder, read by the agent.
    pub const MANAGERS_DIR: &str = "/etc/ironic-agent/managers.d";
    /// What the builder records about the build (versions, inputs).
    pub const BUILD_INFO: &str = "/etc/ironic-agent/build-info";
    /// IPA's marker of a finalised rescue, left by the agent: the init then starts the rescue
    /// service and never restarts the agent; a restarted agent does not serve again.
    pub const RESCUED_MARKER: &str = "/etc/.rescued";
    /// The rescue user's password hash, written by the agent (`rescue.finalize_rescue`) and
    /// given to the rescue user by the init.
    pub const RESCUE_PASSWORD: &str = "/etc/ipa-rescue-config/ipa-rescue-password";
    /// Left by the agent after `system.lockdown`: the init never restarts an agent then, so a
    /// locked-down machine stays unreachable.
    pub const LOCKDOWN_MARKER: &str = "/run/ironic-agent/lockdown";
}

/// The kernel command line, split as the kernel splits it.
pub mod cmdline {
    /// The words of a kernel command line, in order: split on whitespace outside double
    /// quotes, the quotes removed, as the kernel's `next_arg` does (`a="x y"` is one word,
    /// `a=x y`). Both the init and the agent read `/proc/cmdline` through this, so they
    /// always agree on what a parameter's value is.
    pub fn words(cmdline: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut current = String::new();
        let mut in_quotes = false;
        let mut started = false;
        for c in cmdline.chars() {
            match c {
                '"' => {
                    in_quotes = !in_quotes;
                    started = true;
                }
                c if c.is_whitespace() && !in_quotes => {
                    if started {
                        out.push(std::mem::take(&mut current));
                        started = false;
                    }
                }
                c => {
                    current.push(c);
                    started = true;
                }
            }
        }
        if started {
            out.push(current);
        }
        out
    }

    #[cfg(test)]
    mod tests {
        use super::words;

        #[test]
        fn whitespace_splits_quotes_group_and_vanish() {
            assert_eq!(
                words("vmlinuz  a=\"x y\"\tb=1 \"c=d e\" empty=\"\" flag\n"),
                ["vmlinuz", "a=x y", "b=1", "c=d e", "empty=", "flag"]
            );
            assert!(words("  \n").is_empty());
            // An empty quoted word is still a word, as the kernel sees it.
            assert_eq!(words("\"\""), [""]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::paths;

    /// The paths live where the other side looks: absolute, and the markers outside the
    /// directories the builder fills (which an operator's files could overwrite).
    #[test]
    fn paths_are_absolute_and_distinct() {
        let all = [
            paths::AGENT,
            paths::INIT_CONFIG,
            paths::AGENT_CONFIG,
            paths::MANAGERS_DIR,
            paths::BUILD_INFO,
            paths::RESCUED_MARKER,
            paths::RESCUE_PASSWORD,
            paths::LOCKDOWN_MARKER,
        ];
        for p in all {
            assert!(p.starts_with('/'), "{p}");
        }
        let mut unique = all.to_vec();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), all.len());
        assert!(!paths::LOCKDOWN_MARKER.starts_with(paths::MANAGERS_DIR));
    }
}
