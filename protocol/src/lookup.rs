use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::Node;

/// Reply to `GET /v1/lookup`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LookupResponse {
    pub node: Node,
    pub config: LookupConfig,
}

impl LookupResponse {
    /// Parses a lookup reply the way IPA accepts it: `node.uuid` is required, and a reply
    /// without `config` (very old Ironic) has its top-level `heartbeat_timeout` moved into it.
    pub fn from_json(body: &[u8]) -> Result<Self, String> {
        let mut value: Value =
            serde_json::from_slice(body).map_err(|e| format!("lookup reply is not JSON: {e}"))?;
        let obj = value
            .as_object_mut()
            .ok_or("lookup reply is not a JSON object")?;
        if !obj.contains_key("config") {
            let mut config = Map::new();
            if let Some(t) = obj.remove("heartbeat_timeout") {
                config.insert("heartbeat_timeout".into(), t);
            }
            obj.insert("config".into(), Value::Object(config));
        }
        let reply: LookupResponse = serde_json::from_value(value)
            .map_err(|e| format!("lookup reply has an unexpected shape: {e}"))?;
        if reply.node.uuid().is_none() {
            return Err("lookup reply has no node.uuid".into());
        }
        Ok(reply)
    }
}

/// `config` of the lookup reply: settings the conductor pushes to the agent. Unknown keys are
/// kept in `extra` so nothing the conductor sends is lost.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LookupConfig {
    /// Seconds; IPA heartbeats every `heartbeat_timeout * U(0.3, 0.6)`. Kept as the JSON
    /// number Ironic sent (an integer in practice) so the reply round-trips unchanged.
    #[serde(default = "default_heartbeat_timeout")]
    pub heartbeat_timeout: serde_json::Number,
    /// A fresh token (>= 32 characters), or `"******"` when one was already issued.
    #[serde(default)]
    pub agent_token: Option<crate::Secret>,
    #[serde(default)]
    pub agent_token_required: Option<bool>,
    #[serde(default)]
    pub agent_md5_checksum_enable: Option<bool>,
    #[serde(default)]
    pub disable_deep_image_inspection: Option<bool>,
    #[serde(default)]
    pub permitted_image_formats: Option<Vec<String>>,
    #[serde(default)]
    pub agent_skip_bmc_detect: Option<bool>,
    #[serde(default)]
    pub enable_bios_bootloader_install: Option<bool>,
    #[serde(default)]
    pub tls_min_version: Option<String>,
    #[serde(default)]
    pub tls_cipher_suites: Option<Value>,
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

fn default_heartbeat_timeout() -> serde_json::Number {
    300.into()
}

impl LookupConfig {
    pub fn heartbeat_timeout_secs(&self) -> f64 {
        self.heartbeat_timeout
            .as_f64()
            .filter(|t| t.is_finite() && *t > 0.0)
            .unwrap_or(300.0)
    }

    /// The token marker Ironic sends when it already handed the token out.
    pub const TOKEN_ALREADY_ISSUED: &'static str = "******";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_captured_ironic_39_reply() {
        let reply = LookupResponse::from_json(include_bytes!("../fixtures/lookup-reply.json"))
            .expect("captured reply parses");
        assert_eq!(
            reply.node.uuid(),
            Some("5b1d2bd6-1a0a-4d2c-8f8b-4e1e6f0b9c11")
        );
        assert_eq!(reply.config.heartbeat_timeout_secs(), 10.0);
        assert!(reply.config.agent_token.as_ref().unwrap().expose().len() >= 32);
        assert_eq!(reply.config.tls_min_version.as_deref(), Some("1.3"));
        // Round trip keeps every key Ironic sent.
        let again: Value = serde_json::to_value(&reply).unwrap();
        let orig: Value =
            serde_json::from_slice(include_bytes!("../fixtures/lookup-reply.json")).unwrap();
        assert_eq!(again, orig);
    }

    #[test]
    fn old_style_reply_gets_config() {
        let r = LookupResponse::from_json(br#"{"node": {"uuid": "u1"}, "heartbeat_timeout": 42}"#)
            .unwrap();
        assert_eq!(r.config.heartbeat_timeout_secs(), 42.0);
    }

    #[test]
    fn reply_without_uuid_is_rejected() {
        let e = LookupResponse::from_json(br#"{"node": {}, "config": {}}"#).unwrap_err();
        assert!(e.contains("node.uuid"), "{e}");
        assert!(LookupResponse::from_json(b"<html>").is_err());
    }
}
