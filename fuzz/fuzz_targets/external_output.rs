//! What an external hardware manager's step prints (`hardware-managers/src/external.rs`):
//! stdout parsed as the step's JSON result, or, on failure, its `{"error": ...}`, the tail of
//! stderr and a preview of output that is not JSON turned into the step error Ironic shows.
//!
//! Input: one byte (bit 0: the command failed), then stdout and stderr separated by the first
//! NUL. Invariants: a success is JSON that serialises to JSON of the same kind (or null for
//! blank output); a failure message starts with the exit status and, when stdout is
//! not JSON, previews at most 200 bytes of it; the stderr tail is at most 4 KiB and never
//! starts in the middle of a cut line.

#![no_main]

use hardware_managers::external::{step_outcome, stderr_tail};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let failed = flags & 1 == 1;
    let (stdout, stderr) = match rest.iter().position(|&b| b == 0) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &[][..]),
    };
    let tail = stderr_tail(stderr);
    assert!(tail.len() <= 3 * 4096, "stderr tail of {} bytes", tail.len());
    let exit = failed.then_some("exited with status 3");
    match step_outcome(exit, stdout, &tail) {
        Ok(value) => {
            assert!(!failed, "a failed command gave a result");
            if stdout.iter().all(u8::is_ascii_whitespace) {
                assert!(value.is_null());
            } else {
                // What goes to Ironic serialises to JSON that parses again. (Not to the same
                // value: serde_json's default float parsing is not exact to the last bit.)
                let text = serde_json::to_vec(&value).unwrap();
                let again: serde_json::Value = serde_json::from_slice(&text).unwrap();
                assert_eq!(
                    std::mem::discriminant(&again),
                    std::mem::discriminant(&value)
                );
            }
        }
        Err(msg) => {
            if failed {
                assert!(msg.starts_with("exited with status 3: "), "{msg}");
            } else {
                assert!(msg.starts_with("exited 0 but its stdout is not JSON"), "{msg}");
                // The preview is the Debug form of at most 200 bytes (lossy UTF-8, trimmed),
                // escapes at most 10x, plus the serde message.
                assert!(msg.len() < 200 * 10 + 400, "message of {} bytes", msg.len());
            }
        }
    }
});
