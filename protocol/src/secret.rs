//! A secret on the wire (the agent token): sent and received as the plain string it is, but
//! never printed. `Debug` and `Display` show `***`, so a struct that holds one can derive
//! `Debug` and be logged without leaking it; reading the value takes [`Secret::expose`].

use serde::{Deserialize, Serialize};

#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The value, for the one place that must send or compare it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn printed_masked_sent_plain() {
        let s = Secret::new("t0ken-value");
        assert_eq!(format!("{s:?} {s}"), "*** ***");
        assert_eq!(format!("{:?}", Some(&s)), "Some(***)");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"t0ken-value\"");
        let back: Secret = serde_json::from_str("\"t0ken-value\"").unwrap();
        assert_eq!(back.expose(), "t0ken-value");
    }
}
