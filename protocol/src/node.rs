use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// An Ironic node as the conductor sends it (`node.as_dict()`, about 65 keys). Kept as JSON:
/// the agent reads a handful of fields and must not lose the rest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Node(pub Map<String, Value>);

impl Node {
    pub fn uuid(&self) -> Option<&str> {
        self.0.get("uuid").and_then(Value::as_str)
    }

    fn object(&self, key: &str) -> Option<&Map<String, Value>> {
        self.0.get(key).and_then(Value::as_object)
    }

    /// `driver_internal_info`: where the conductor puts erase tunables and the like.
    pub fn driver_internal_info(&self) -> Option<&Map<String, Value>> {
        self.object("driver_internal_info")
    }

    pub fn properties(&self) -> Option<&Map<String, Value>> {
        self.object("properties")
    }

    pub fn instance_info(&self) -> Option<&Map<String, Value>> {
        self.object("instance_info")
    }

    /// A boolean from `driver_internal_info`, with IPA's default when absent. Ironic stores
    /// some as strings ("True"), so those are accepted too.
    pub fn internal_flag(&self, key: &str, default: bool) -> bool {
        match self.driver_internal_info().and_then(|d| d.get(key)) {
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) => {
                matches!(s.to_ascii_lowercase().as_str(), "1" | "true" | "yes" | "on")
            }
            Some(Value::Number(n)) => n.as_i64().is_some_and(|n| n != 0),
            _ => default,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn flags_accept_ironic_spellings() {
        let node: Node = serde_json::from_value(json!({
            "uuid": "u",
            "driver_internal_info": {"a": true, "b": "False", "c": "True", "d": 0}
        }))
        .unwrap();
        assert!(node.internal_flag("a", false));
        assert!(!node.internal_flag("b", true));
        assert!(node.internal_flag("c", false));
        assert!(!node.internal_flag("d", true));
        assert!(node.internal_flag("missing", true));
    }
}
