use std::fmt;
use std::str::FromStr;

/// An Ironic API microversion such as `1.68`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApiVersion {
    pub major: u32,
    pub minor: u32,
}

impl ApiVersion {
    pub const fn new(major: u32, minor: u32) -> Self {
        ApiVersion { major, minor }
    }

    /// What the agent assumes when version discovery fails (IPA does the same).
    pub const FALLBACK: ApiVersion = ApiVersion::new(1, 31);
    /// Lookup is sent with `min(server, 1.62)`: 1.62 is where tokens appear.
    pub const LOOKUP_MAX: ApiVersion = ApiVersion::new(1, 62);
    /// Heartbeats are sent with `min(server, 1.68)`: 1.68 allows `agent_verify_ca`.
    pub const HEARTBEAT_MAX: ApiVersion = ApiVersion::new(1, 68);
    /// First version that accepts `agent_version` in a heartbeat.
    pub const AGENT_VERSION: ApiVersion = ApiVersion::new(1, 36);
    /// First version that accepts `agent_token` in a heartbeat.
    pub const AGENT_TOKEN: ApiVersion = ApiVersion::new(1, 62);
    /// First version that accepts `agent_verify_ca` in a heartbeat, and so auto-TLS.
    pub const AGENT_VERIFY_CA: ApiVersion = ApiVersion::new(1, 68);
}

impl fmt::Display for ApiVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("{0:?} is not an API version of the form X.Y")]
pub struct ParseApiVersionError(pub String);

impl FromStr for ApiVersion {
    type Err = ParseApiVersionError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseApiVersionError(s.to_string());
        let (major, minor) = s.trim().split_once('.').ok_or_else(err)?;
        Ok(ApiVersion {
            major: major.parse().map_err(|_| err())?,
            minor: minor.parse().map_err(|_| err())?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_orders_numerically() {
        let v: ApiVersion = "1.115".parse().unwrap();
        assert_eq!(v, ApiVersion::new(1, 115));
        assert!(
            v > ApiVersion::HEARTBEAT_MAX,
            "1.115 must compare above 1.68"
        );
        assert_eq!(v.min(ApiVersion::LOOKUP_MAX).to_string(), "1.62");
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "1", "1.", "a.b", "1.2.3", "-1.2"] {
            assert!(bad.parse::<ApiVersion>().is_err(), "{bad:?} accepted");
        }
    }
}
