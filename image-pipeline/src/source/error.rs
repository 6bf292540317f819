//! Why the source could not deliver the image, in IPA's words.

use std::time::Duration;

/// Why the source could not deliver the image.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SourceError {
    /// Invalid settings or image_info (bad CA file, proxy URL, credentials).
    #[error("{0}")]
    Setup(String),
    /// A 4xx answer: the URL will not work by retrying (IPA's ImageDownloadFatalError).
    /// `url` is redacted.
    #[error("Download of image {image_id} failed: {message}")]
    Fatal {
        image_id: String,
        url: String,
        status: u16,
        message: String,
    },
    /// Every URL failed (connection errors, 5xx, stalls) after its retries.
    #[error("Download of image {image_id} failed after {received} bytes{}: {}", fmt_total(*total), details.join("\n "))]
    Failed {
        image_id: String,
        details: Vec<String>,
        received: u64,
        total: Option<u64>,
    },
    /// `image_download_max_duration` passed (IPA answers these with HTTP 408).
    #[error(
        "Download of image {image_id} failed: Download exceeded max allowed time ({} seconds): \
         ran for {:.1} s and received {received} bytes{}",
        fmt_secs(*limit), elapsed.as_secs_f64(), fmt_total(*total)
    )]
    TimedOut {
        image_id: String,
        limit: Duration,
        elapsed: Duration,
        received: u64,
        total: Option<u64>,
    },
    /// Not the end of the stream: the file changed on the server, and the chunks that follow
    /// are the new file from byte 0. See the module doc.
    #[error(
        "Download of image {image_id} restarted from byte 0 after {delivered} bytes had been \
         delivered: {reason} ({url})"
    )]
    Restarted {
        image_id: String,
        url: String,
        delivered: u64,
        reason: String,
    },
    /// The server sent more than the size it announced.
    #[error("Download of image {image_id} failed: {url} sent more than the {expected} bytes it announced")]
    TooLong {
        image_id: String,
        url: String,
        expected: u64,
    },
    /// The consumer went away (internal; never handed to a consumer).
    #[error("the download was cancelled")]
    Cancelled,
    #[error("{0}")]
    Internal(String),
}

fn fmt_secs(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        d.as_secs().to_string()
    } else {
        format!("{}", d.as_secs_f64())
    }
}

fn fmt_total(total: Option<u64>) -> String {
    total.map_or(String::new(), |t| format!(" of {t}"))
}

impl SourceError {
    /// The HTTP status IPA would report: 408 for the time limit, 400 for bad settings, else
    /// 500.
    pub fn status_code(&self) -> u16 {
        match self {
            SourceError::TimedOut { .. } => 408,
            SourceError::Setup(_) => 400,
            _ => 500,
        }
    }

    /// Whether retrying the whole download cannot help (IPA does not retry
    /// ImageDownloadFatalError or the time limit).
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            SourceError::Setup(_) | SourceError::Fatal { .. } | SourceError::TimedOut { .. }
        )
    }

    /// The message without IPA's "Download of image X failed: " prefix.
    pub fn detail(&self) -> String {
        match self {
            SourceError::Fatal { message, .. } => message.clone(),
            SourceError::Failed { details, .. } => details.join("\n "),
            other => other.to_string(),
        }
    }

    /// See [`SourceError::Restarted`].
    pub fn is_restart(&self) -> bool {
        matches!(self, SourceError::Restarted { .. })
    }
}
