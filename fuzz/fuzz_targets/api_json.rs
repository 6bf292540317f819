//! Bodies of `POST /v1/commands` (anyone who reaches the agent's port can send one; the
//! token check comes first, but the conductor's own bodies carry everything below):
//! the JSON, the command request, and `image_info` with the checks it gets when it is parsed
//! (IPA's structural `_validate_image_info`), its partition sizes and the redaction of its
//! URLs for logs.
//!
//! Invariants: a redacted URL keeps no query string (where Swift temp URL signatures are),
//! no fragment and no password.

#![no_main]

use image_pipeline::redact::{redact_url, REDACTED};
use ironic_protocol::{CommandRequest, ImageInfo};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn check_redacted(url: &str) {
    let red = redact_url(url);
    assert!(!red.contains('#'), "{red:?} keeps the fragment of {url:?}");
    match red.split_once('?') {
        Some((_, query)) => assert_eq!(query, REDACTED, "{red:?} keeps the query of {url:?}"),
        None => assert!(!url.split('#').next().unwrap_or("").contains('?')),
    }
    // A password in the authority is replaced, whatever else the URL holds.
    if let Some((_, rest)) = url.split_once("://") {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        if let Some((userinfo, _)) = authority.rsplit_once('@') {
            if let Some((_, password)) = userinfo.split_once(':') {
                let red_authority = red
                    .split_once("://")
                    .map_or("", |(_, r)| r.split(['/', '?']).next().unwrap_or(""));
                assert!(
                    password.is_empty()
                        || password == REDACTED
                        || !red_authority.contains(&format!(":{password}@")),
                    "{red:?} keeps the password of {url:?}"
                );
            }
        }
    }
}

fuzz_target!(|body: &[u8]| {
    let Ok(body) = serde_json::from_slice::<Value>(body) else {
        return;
    };
    let _ = serde_json::from_value::<CommandRequest>(body.clone());
    let Some(Value::Object(params)) = body.get("params") else {
        return;
    };
    let Some(info) = params.get("image_info") else {
        return;
    };
    let Ok(info) = serde_json::from_value::<ImageInfo>(info.clone()) else {
        return;
    };
    let _ = format!("{info:?}");
    let _ = info.partition_sizes();
    check_redacted(&info.id);
    for url in &info.urls {
        check_redacted(url);
    }
});
