//! Conductor-supplied JSON with its secrets masked, for everything the agent echoes back or
//! bundles: step results (which carry the step the conductor sent, `args` included), the
//! command history in the log bundle.
//!
//! Hazard: Ironic's `write_image` deploy step carries `image_info` (Swift temp URLs with
//! their signatures, `image_request_authorization`) and the config drive (the tenant's user
//! data, often with passwords or keys); IPA echoes all of it in the step result, which Ironic
//! logs and the log bundle stores. The conductor compares only a step's `interface` and
//! `step` (`ironic.conductor.steps.is_equivalent`), so the echo can be masked freely.
//!
//! Masked: the value of every key that names a secret ([`is_secret_key`]), whatever its type;
//! and in every other string, query strings and URL passwords ([`redact_url`]).

use image_pipeline::redact::redact_url;
use serde_json::{Map, Value};

/// What a masked value is replaced with.
pub const MASK: &str = "***";

/// Keys whose values are secrets wherever they appear: the config drive (user data), the
/// image server's authorization, passwords, tokens, signatures and keys.
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    matches!(
        k.as_str(),
        "configdrive" | "config_drive" | "user_data" | "authorization" | "auth" | "sig"
    ) || [
        "password",
        "token",
        "secret",
        "authorization",
        "_sig",
        "private_key",
        "passphrase",
    ]
    .iter()
    .any(|part| k.contains(part))
}

/// `value` with secrets masked (see the module doc).
pub fn scrub(value: &Value) -> Value {
    match value {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let v = if is_secret_key(k) && !v.is_null() {
                        Value::String(MASK.into())
                    } else {
                        scrub(v)
                    };
                    (k.clone(), v)
                })
                .collect::<Map<_, _>>(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(scrub).collect()),
        Value::String(s) if s.contains("://") || s.contains('?') => Value::String(scrub_urls(s)),
        other => other.clone(),
    }
}

/// Every whitespace-separated word of `s` that is a URL or carries a query string, redacted:
/// Ironic's image id for an HTTP `image_source` is the URL's last path segment *with* its
/// query (`image.qcow2?temp_url_sig=...`), with no scheme to recognise it by.
fn scrub_urls(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        if word.contains("://") || word.contains('?') {
            out.push_str(&redact_url(word));
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in s.chars() {
        if c.is_whitespace() {
            flush(&mut word, &mut out);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn the_write_image_step_is_echoed_without_its_secrets() {
        let step = json!({
            "interface": "deploy", "step": "write_image", "priority": 80,
            "args": {
                "image_info": {
                    "id": "img.qcow2?temp_url_sig=0ddba11&temp_url_expires=1",
                    "urls": ["https://swift/v1/AUTH_x/c/img?temp_url_sig=0ddba11&temp_url_expires=1"],
                    "image_request_authorization": "Bearer abc",
                    "checksum": "abc123",
                    "os_hash_value": "f00",
                    "image_source": "http://user:hunter2@images/x.qcow2",
                    "configdrive": "H4sIAAAAsecretuserdata",
                    "root_mb": 1024,
                },
                "configdrive": "H4sIAAAAsecretuserdata",
            },
        });
        let s = scrub(&step);
        let text = s.to_string();
        for secret in ["0ddba11", "Bearer abc", "hunter2", "secretuserdata"] {
            assert!(!text.contains(secret), "{secret} left in {text}");
        }
        assert_eq!(s["step"], "write_image");
        assert_eq!(s["interface"], "deploy");
        assert_eq!(s["args"]["configdrive"], MASK);
        assert_eq!(s["args"]["image_info"]["checksum"], "abc123");
        assert_eq!(s["args"]["image_info"]["id"], "img.qcow2?<redacted>");
        assert_eq!(s["args"]["image_info"]["root_mb"], 1024);
        assert_eq!(
            s["args"]["image_info"]["urls"][0],
            "https://swift/v1/AUTH_x/c/img?<redacted>"
        );
    }

    #[test]
    fn secret_keys_anywhere_and_urls_in_text() {
        let v = json!({"node": {"driver_info": {"ipmi_password": "pw", "agent_secret_token": "t",
            "rescue_password_hash": "h"}}, "note": "see http://h/p?sig=1 now",
            "null_token": null, "list": [{"Authorization": "x"}]});
        let s = scrub(&v);
        assert_eq!(s["node"]["driver_info"]["ipmi_password"], MASK);
        assert_eq!(s["node"]["driver_info"]["agent_secret_token"], MASK);
        assert_eq!(s["node"]["driver_info"]["rescue_password_hash"], MASK);
        assert_eq!(s["note"], "see http://h/p?<redacted> now");
        assert_eq!(s["null_token"], Value::Null);
        assert_eq!(s["list"][0]["Authorization"], MASK);
    }
}
