use serde::{Deserialize, Serialize};

/// Body of `POST /v1/heartbeat/{node}`. Which optional fields may be sent depends on the
/// negotiated API version (see [`crate::ApiVersion`]); sending one too early is a 400.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HeartbeatRequest {
    /// `scheme://host:port`, IPv6 in brackets, no path and no trailing slash; Ironic rejects
    /// any change of it while the node keeps its `agent_url`.
    pub callback_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_token: Option<Option<crate::Secret>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_version: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent_verify_ca: Option<String>,
}

impl std::fmt::Display for HeartbeatRequest {
    /// For logs: never shows the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "callback_url={}", self.callback_url)
    }
}
