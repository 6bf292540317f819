//! What a download did.

use std::time::Duration;

/// Progress and history of a download.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DownloadStats {
    /// Bytes of the file received in order (since the last restart).
    pub bytes: u64,
    /// Body bytes read from the network, including any discarded on a resume.
    pub wire_bytes: u64,
    /// Range requests sent to resume a broken body.
    pub resumes: u32,
    /// Times the download started over from byte 0 because the file changed.
    pub restarts: u32,
    /// The URL in use, redacted.
    pub url: String,
    /// Time since `start_download`, or its total when finished.
    pub elapsed: Duration,
}
