//! The kernel command line (`/proc/cmdline`, which Ironic builds from the node's
//! `kernel_append_params` and the operator's settings) as both the init and the agent split
//! it, and its redaction before it reaches a log or a collected log file.
//!
//! Invariants, per line: redaction keeps every word but the values of secret parameters, and
//! leaves no secret value: each `ipa-agent-token=...` word reads `ipa-agent-token=***`
//! afterwards, however the value was quoted.

#![no_main]

use libfuzzer_sys::fuzz_target;
use ramdisk_contract::cmdline::{redact, words, SECRET_PARAMS};

fn secret(word: &str) -> Option<&'static str> {
    SECRET_PARAMS.into_iter().find(|key| {
        word.strip_prefix(key)
            .is_some_and(|rest| rest.starts_with('='))
    })
}

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let _ = words(text);
    let redacted = redact(text);
    let before: Vec<&str> = text.split('\n').collect();
    let after: Vec<&str> = redacted.split('\n').collect();
    assert_eq!(before.len(), after.len(), "redaction changed the lines");
    for (line, red) in before.iter().zip(&after) {
        let (w, r) = (words(line), words(red));
        assert_eq!(
            w.len(),
            r.len(),
            "redaction changed the words of {line:?}: {red:?}"
        );
        for (word, red_word) in w.iter().zip(&r) {
            match secret(word) {
                Some(key) => assert_eq!(
                    red_word,
                    &format!("{key}=***"),
                    "secret left in {red:?} (from {line:?})"
                ),
                None => assert_eq!(word, red_word, "redaction changed {line:?} into {red:?}"),
            }
        }
    }
});
