//! The image source: the image file's bytes, in order, from HTTP(S).
//!
//! [`start_download`] connects (trying `urls` in order, retrying as IPA does) and returns a
//! [`Download`] whose [`Download::next_chunk`] yields the file in chunks of `chunk_size`
//! (1 MiB) from a bounded queue, so a slow consumer slows the download instead of growing
//! memory. The network side runs as one task on the tokio runtime it is given; the consumer
//! is a blocking thread.
//!
//! # Failures and resume
//!
//! * Connection errors, 5xx (and 408/429), stalls longer than `read_timeout` and bodies that
//!   end before their length are retried: `retries` failed attempts in a row per URL,
//!   `retry_interval` apart, then the next URL. A failure after new bytes arrived does not
//!   count: the download resumes at once.
//! * Beyond IPA, which starts over from byte 0, a broken body is **resumed**: `Range:
//!   bytes=<received>-` with `If-Range` (the first response's strong ETag, else its
//!   Last-Modified; on another URL none, as validators are per server). A 206 must start at
//!   or before the requested byte (earlier bytes are skipped) and keep the same total size.
//! * A 4xx is fatal for its URL (no retry; IPA's ImageDownloadFatalError); the next URL is
//!   still tried, and the 4xx is what is reported when all fail.
//! * `max_duration` bounds everything, waits for the consumer included; running out gives
//!   [`SourceError::TimedOut`] (IPA's 408).
//!
//! # Several connections
//!
//! Where the server serves byte ranges and `connections` > 1, the file is fetched in ordered
//! windows over several connections and handed on in order (see `parallel`): the consumer
//! cannot tell, except by the speed when the server caps each connection.
//!
//! # Restart from byte 0
//!
//! When a resume shows that the server ignores Range (a full 200 answer) but has the **same**
//! file (same validator, same size), the source discards the bytes it already has and goes
//! on: the consumer notices nothing but the extra traffic. When the file **changed** (a
//! different validator or size, or a 206 that does not fit), the download starts over from
//! byte 0. If chunks had already been handed out, the consumer first receives
//! [`SourceError::Restarted`]: this is not the end of the stream, the next chunks are the
//! file again from byte 0. A consumer that can start over (reset its hasher and decoder;
//! disk writes land at the same offsets again) keeps calling `next_chunk`; any other one
//! treats it as an error, whose message says what happened.

mod client;
mod error;
mod http;
mod parallel;
mod range;
mod settings;
mod shared;
mod stats;

pub use error::SourceError;
pub use range::HttpRangeReader;
pub use settings::{
    BasicAuth, DownloadSettings, Proxies, TlsMinVersion, DEFAULT_CHUNK_SIZE, DEFAULT_CONNECTIONS,
    DEFAULT_QUEUE_DEPTH, DEFAULT_WINDOW_SIZE,
};
pub use stats::DownloadStats;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use bytes::Bytes;
use tokio::runtime::Handle;
use tokio::sync::{mpsc, oneshot};

use crate::checksum::{ChecksumError, ChecksumSpec, ExpectedChecksum};
use crate::redact::redact_url;
use client::{Deadline, Failure, Http};
use http::{Engine, Item};
use shared::Shared;

/// A running download. Dropping it stops the download.
pub struct Download {
    rx: mpsc::Receiver<Item>,
    shared: Arc<Shared>,
    http: Arc<Http>,
    handle: Handle,
    deadline: Deadline,
    task: tokio::task::JoinHandle<()>,
    finished: bool,
}

/// Starts downloading `settings.urls` on `handle`'s runtime and waits for the first
/// response's headers (trying URLs and retrying as described in the module doc), so that
/// 4xx answers and unreachable servers are reported here.
///
/// Blocks: call it from a blocking thread, not from inside the runtime.
pub fn start_download(
    settings: DownloadSettings,
    handle: &Handle,
) -> Result<Download, SourceError> {
    if settings.urls.is_empty() {
        return Err(SourceError::Setup(format!(
            "image {}: no URL to download from",
            settings.image_id
        )));
    }
    if settings.chunk_size == 0 || settings.queue_depth == 0 {
        return Err(SourceError::Setup(
            "chunk_size and queue_depth must be positive".into(),
        ));
    }
    let depth = settings.queue_depth;
    let http = Arc::new(Http::new(Arc::new(settings))?);
    let shared = Arc::new(Shared::default());
    let deadline = Deadline::new(http.settings.max_duration);
    let (tx, rx) = mpsc::channel(depth);
    let (ready_tx, ready_rx) = oneshot::channel();
    let engine = Engine::new(http.clone(), shared.clone(), tx, ready_tx, deadline);
    let task = handle.spawn(engine.run());
    match ready_rx.blocking_recv() {
        Ok(Ok(())) => Ok(Download {
            rx,
            shared,
            http,
            handle: handle.clone(),
            deadline,
            task,
            finished: false,
        }),
        Ok(Err(e)) => Err(e),
        Err(_) => Err(SourceError::Internal(
            "the download task ended before the first response".into(),
        )),
    }
}

impl Download {
    /// The next chunk of the file; `None` once the whole file has been delivered. Errors end
    /// the stream, except [`SourceError::Restarted`]. Blocks; not for use inside the runtime.
    pub fn next_chunk(&mut self) -> Option<Result<Bytes, SourceError>> {
        if self.finished {
            return None;
        }
        match self.rx.blocking_recv() {
            Some(Ok(chunk)) => Some(Ok(chunk)),
            Some(Err(e)) => {
                self.finished = !e.is_restart();
                Some(Err(e))
            }
            None => {
                self.finished = true;
                if self.shared.complete.load(Ordering::SeqCst) {
                    None
                } else {
                    Some(Err(SourceError::Internal(format!(
                        "the download of image {} ended unexpectedly",
                        self.http.settings.image_id
                    ))))
                }
            }
        }
    }

    /// The size of the file, when the server said (Content-Length / Content-Range).
    pub fn content_length(&self) -> Option<u64> {
        self.shared.entity().and_then(|e| e.total)
    }

    /// Random access to the same file: the URL that served the stream, with the same
    /// credentials, proxies, TLS, retries and time budget. Independent of the stream; can be
    /// used from another thread.
    pub fn range_reader(&self) -> HttpRangeReader {
        HttpRangeReader::new(
            self.http.clone(),
            self.handle.clone(),
            self.shared.entity(),
            self.deadline,
        )
    }

    pub fn stats(&self) -> DownloadStats {
        let mut st = self.shared.stats().clone();
        if !self.task.is_finished() {
            st.elapsed = self.deadline.start.elapsed();
        }
        st
    }

    /// The settings in use (with secrets; their `Debug` redacts them).
    pub fn settings(&self) -> &DownloadSettings {
        &self.http.settings
    }
}

impl Iterator for Download {
    type Item = Result<Bytes, SourceError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_chunk()
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("image_id", &self.http.settings.image_id)
            .field("stats", &self.stats())
            .finish()
    }
}

/// Largest checksum file accepted (CentOS `CHECKSUM` files list many images; still small).
pub const CHECKSUM_FILE_MAX: usize = 4 << 20;

/// Downloads a small text file (a checksum file) with the download's proxies, credentials,
/// TLS settings and retries (IPA uses the same session for both). At most `max_len` bytes.
/// Blocks; not for use inside the runtime.
pub fn fetch_text(
    settings: &DownloadSettings,
    url: &str,
    max_len: usize,
    handle: &Handle,
) -> Result<String, SourceError> {
    let mut s = settings.clone();
    s.image_id = format!("checksum file of image {}", settings.image_id);
    s.urls = vec![url.to_string()];
    let http = Arc::new(Http::new(Arc::new(s))?);
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    handle.spawn(async move {
        let _ = tx.send(fetch_text_async(&http, max_len).await);
    });
    rx.recv().map_err(|_| {
        SourceError::Internal("the runtime stopped during a checksum file download".into())
    })?
}

async fn fetch_text_async(http: &Http, max_len: usize) -> Result<String, SourceError> {
    let s = &http.settings;
    let url = &s.urls[0];
    let deadline = Deadline::new(s.max_duration);
    let mut failed = 0u32;
    let mut last = String::new();
    while failed <= s.retries {
        if failed > 0 && client::pause(deadline, s.retry_interval).await.is_err() {
            return Err(http.timed_out(deadline, 0, None));
        }
        let attempt = async {
            let mut resp = http.get(url, None, None, deadline).await?;
            let mut body = Vec::new();
            while let Some(piece) = http
                .next_piece(&mut resp, deadline, body.len() as u64, None)
                .await?
            {
                body.extend_from_slice(&piece);
                if body.len() > max_len {
                    return Err(Failure::Fatal(SourceError::Fatal {
                        image_id: s.image_id.clone(),
                        url: redact_url(url),
                        status: 200,
                        message: format!(
                            "{} is larger than {max_len} bytes; not a checksum file",
                            redact_url(url)
                        ),
                    }));
                }
            }
            Ok(body)
        };
        match attempt.await {
            Ok(body) => return Ok(String::from_utf8_lossy(&body).into_owned()),
            Err(Failure::Transient(why)) => {
                tracing::warn!(url = %redact_url(url), "checksum file download failed ({why}); retrying");
                last = why;
                failed += 1;
            }
            Err(Failure::Fatal(e) | Failure::Abort(e)) => return Err(e),
        }
    }
    Err(SourceError::Failed {
        image_id: s.image_id.clone(),
        details: vec![format!("URL: {}; Error: {last}", redact_url(url))],
        received: 0,
        total: None,
    })
}

/// [`crate::checksum::resolve_expected`] with checksum files fetched over HTTP with the
/// image's download settings. Blocks; not for use inside the runtime.
pub fn resolve_expected_checksum(
    spec: &ChecksumSpec,
    md5_enabled: bool,
    settings: &DownloadSettings,
    handle: &Handle,
) -> Result<ExpectedChecksum, ChecksumError> {
    let mut fetch = |url: &str| {
        fetch_text(settings, url, CHECKSUM_FILE_MAX, handle).map_err(|e| ChecksumError::Fetch {
            url: redact_url(url),
            message: e.detail(),
        })
    };
    crate::checksum::resolve_expected(spec, md5_enabled, &mut fetch)
}

#[cfg(test)]
mod tests;
