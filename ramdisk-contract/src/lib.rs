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

    /// Kernel parameters whose values must never be logged or copied around: the agent
    /// token Ironic pre-shares when it builds the kernel command line (virtual media).
    pub const SECRET_PARAMS: [&str; 1] = ["ipa-agent-token"];

    /// Whether the value of parameter `key` is a secret.
    pub fn is_secret_param(key: &str) -> bool {
        SECRET_PARAMS.contains(&key)
    }

    /// `text` (a command line, or a log holding one, such as the kernel's "Kernel command
    /// line: ..." line) with the value of every secret parameter replaced by `***`. The
    /// value is what [`words`] gives, quotes and all: `ipa-agent-token="a b"` and
    /// `"ipa-agent-token=a b"` hide `a b`, not just `a`. Quotes are counted per line (a
    /// command line is one line; a stray quote in an earlier log line must not hide a word
    /// from the check). Everything else is kept byte for byte, and every line keeps its
    /// words.
    pub fn redact(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        for (i, line) in text.split('\n').enumerate() {
            if i > 0 {
                out.push('\n');
            }
            redact_line(line, &mut out);
        }
        out
    }

    fn redact_line(line: &str, out: &mut String) {
        let mut copied = 0;
        let mut chars = line.char_indices().peekable();
        loop {
            while chars.next_if(|(_, c)| c.is_whitespace()).is_some() {}
            let Some(&(_, _)) = chars.peek() else { break };
            // One word as the kernel's `next_arg` reads it: unquoted text, and where the
            // first `=` outside the word's quotes ends (the key), in raw byte positions.
            let mut unquoted = String::new();
            let mut eq = None;
            let mut in_quotes = false;
            let mut end = line.len();
            while let Some(&(at, c)) = chars.peek() {
                if c.is_whitespace() && !in_quotes {
                    end = at;
                    break;
                }
                chars.next();
                if c == '"' {
                    in_quotes = !in_quotes;
                    continue;
                }
                if c == '=' && eq.is_none() {
                    eq = Some((unquoted.clone(), at + 1));
                }
                unquoted.push(c);
            }
            let Some((key, value)) = eq else { continue };
            if !is_secret_param(&key) {
                continue;
            }
            out.push_str(&line[copied..value]);
            out.push_str("***");
            // An odd number of quotes in the hidden part: keep one, so that the words after
            // this one read as before.
            if line[value..end].matches('"').count() % 2 == 1 {
                out.push('"');
            }
            copied = end;
        }
        out.push_str(&line[copied..]);
    }

    #[cfg(test)]
    mod tests {
        use super::{redact, words};

        #[test]
        fn secret_values_are_redacted_wherever_the_command_line_appears() {
            assert_eq!(
                redact("quiet ipa-agent-token=abc ipa-api-url=http://x\n"),
                "quiet ipa-agent-token=*** ipa-api-url=http://x\n"
            );
            assert_eq!(
                redact("[0.000] Kernel command line: BOOT_IMAGE=v ipa-agent-token=s3cr3t\n[0.1] x"),
                "[0.000] Kernel command line: BOOT_IMAGE=v ipa-agent-token=***\n[0.1] x"
            );
            assert_eq!(
                redact("\"ipa-agent-token=a b\" ipa-agent-token=c"),
                "\"ipa-agent-token=***\" ipa-agent-token=***"
            );
            // Only the parameter itself, not a longer name that ends like it.
            assert_eq!(
                redact("x-ipa-agent-token=keep ipa-agent-tokens=keep ipa-agent-token=s"),
                "x-ipa-agent-token=keep ipa-agent-tokens=keep ipa-agent-token=***"
            );
            assert_eq!(redact(""), "");
        }

        /// Found by fuzz/fuzz_targets/cmdline.rs: a quoted value was cut at its opening
        /// quote, so `a b` stayed in the log. `x="ipa-agent-token=c d"` is parameter `x`,
        /// not the token, and is kept.
        #[test]
        fn quoted_secret_values_are_redacted_whole() {
            let line =
                "[0.000000] Kernel command line: ipa-agent-token=\"a b\" x=\"ipa-agent-token=c d\"";
            assert_eq!(
                redact(line),
                "[0.000000] Kernel command line: ipa-agent-token=*** x=\"ipa-agent-token=c d\""
            );
            assert_eq!(
                redact("ipa-agent-token=a\"b c\"d e"),
                "ipa-agent-token=*** e"
            );
            assert_eq!(redact("\"ipa-agent-token=a b"), "\"ipa-agent-token=***");
            assert_eq!(
                redact("ipa-\"agent\"-token=s k"),
                "ipa-\"agent\"-token=*** k"
            );
            for text in ["ipa-agent-token=\"a b\" y", "\"ipa-agent-token=a b\" y=1"] {
                let w = words(&redact(text));
                assert_eq!(w.len(), words(text).len(), "{text}");
                assert_eq!(w[0], "ipa-agent-token=***", "{text}");
            }
        }

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

/// Process limits the init sets for the agent and the agent makes sure of.
pub mod limits {
    /// The open-files limit (`RLIMIT_NOFILE`) the agent runs with. The kernel starts PID 1 at
    /// 1024 (soft) / 4096 (hard); the agent needs a descriptor per API connection (at most
    /// `api_max_connections`), per image download and disk, per external manager's pipes, and
    /// its runtime's own. 65536 is far above that, and low enough for tools that walk every
    /// possible descriptor (a `close_fds` without `close_range`) to stay fast.
    pub const OPEN_FILES: u64 = 65_536;

    /// The `(soft, hard)` open-files limit to ask for, given the current one: the soft limit
    /// raised to [`OPEN_FILES`], the hard one too when the caller may raise it (root, with
    /// `CAP_SYS_RESOURCE`), else the soft one only up to the hard one. Never lowers either.
    pub fn open_files(soft: u64, hard: u64, may_raise_hard: bool) -> (u64, u64) {
        let hard = if may_raise_hard {
            hard.max(OPEN_FILES)
        } else {
            hard
        };
        (soft.max(OPEN_FILES.min(hard)), hard)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn raises_to_the_target_within_what_may_be_raised_and_never_lowers() {
            assert_eq!(open_files(1024, 4096, true), (OPEN_FILES, OPEN_FILES));
            assert_eq!(open_files(1024, 4096, false), (4096, 4096));
            assert_eq!(open_files(1024, 1 << 20, false), (OPEN_FILES, 1 << 20));
            assert_eq!(open_files(1 << 19, 1 << 20, true), (1 << 19, 1 << 20));
            assert_eq!(open_files(1024, u64::MAX, false), (OPEN_FILES, u64::MAX));
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
