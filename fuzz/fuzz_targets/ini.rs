//! The agent's INI configuration (oslo.config format, IPA's `/etc/ironic-python-agent.conf`),
//! which a ramdisk builder or an image copies in.
//!
//! Invariants: every key is normalised (no `-`), every option sits in a section named in the
//! text, and parsing the same text twice gives the same result.

#![no_main]

use libfuzzer_sys::fuzz_target;

// The parser's own file, compiled here: it depends on nothing of the agent, and depending on
// the agent crate would build its HTTP server and client into every fuzz build.
#[path = "../../agent/src/config/ini.rs"]
#[allow(dead_code)]
mod ini;

use ini::{normalise_key, parse};

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let Ok(sections) = parse(text) else {
        return;
    };
    for (name, options) in &sections {
        assert!(
            text.contains(name.as_str()),
            "section {name:?} not in the text"
        );
        for key in options.keys() {
            assert_eq!(&normalise_key(key), key);
        }
    }
    assert_eq!(parse(text).ok(), Some(sections));
});
