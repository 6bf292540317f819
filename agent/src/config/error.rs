//! What can be wrong with the agent's configuration, naming where the bad value came from.

use std::path::PathBuf;

use super::ini;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid value for {option}: {message}")]
    Invalid { option: String, message: String },
    #[error("reading {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {source}", path.display())]
    Ini {
        path: PathBuf,
        #[source]
        source: ini::IniError,
    },
    #[error("{0}")]
    Usage(String),
}
