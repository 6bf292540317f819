//! Several connections at once, for servers that cap each one: Swift proxies, throttled
//! mirrors, long round trips where one TCP window cannot fill the pipe.
//!
//! When the first response (a 200 from byte 0) says `Accept-Ranges: bytes` and gives the
//! size, and `connections` > 1, the file is cut into windows of `window_size` bytes (a
//! multiple of the chunk size, so every window's chunks are whole pool buffers at the same
//! offsets a single stream would give). The first response serves window 0 and is then
//! dropped; windows 1.. are fetched with `Range: bytes=a-b` (and `If-Range`), at most
//! `connections` windows in flight. Windows are handed on strictly in order: the head window
//! streams as it arrives, the ones behind it wait in their channels, so the consumer (the
//! hash, the decoder) sees exactly the byte stream of one connection, and memory is bounded by
//! `(connections - 1) * window_size` on top of the single-stream queues.
//!
//! A window whose connection breaks resumes inside the window (`retries` failed attempts in a
//! row, `retry_interval` apart, as the single stream does). Anything that says the server
//! does not serve the ranges asked for (a 200 to a Range request, a Content-Range that does
//! not match, another total size) means the file changed or ranges cannot be trusted: the
//! download starts over from byte 0 on one connection, the consumer being told as for any
//! restart ([`super::SourceError::Restarted`]).

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use reqwest::header::ACCEPT_RANGES;
use reqwest::StatusCode;
use tokio::sync::mpsc;

use super::client::{content_range, pause, Deadline, Failure, Http};
use super::shared::Shared;
use crate::buffer_pool::BufferPool;

/// Whether a first response allows the windowed download.
pub(crate) fn usable(resp: &reqwest::Response, total: Option<u64>, window: u64) -> bool {
    let ranges = resp
        .headers()
        .get(ACCEPT_RANGES)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("bytes")));
    ranges && total.is_some_and(|t| t >= 2 * window)
}

/// The window size for `settings`: at least one chunk, a whole number of chunks.
pub(crate) fn window_size(requested: u64, chunk: usize) -> u64 {
    let chunk = chunk.max(1) as u64;
    requested.max(chunk).div_ceil(chunk) * chunk
}

/// What a window fetch sends to the engine.
pub(crate) enum Piece {
    Data(Bytes),
    /// The window could not be fetched; the whole download fails with this.
    Failed(Failure),
    /// The server did not serve the range as asked: start over on one connection.
    Mismatch(String),
}

/// One window being fetched; its task is aborted when this is dropped.
pub(crate) struct Fetch {
    pub first: u64,
    pub end: u64,
    pub rx: mpsc::Receiver<Piece>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Fetch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What every window fetch of one download shares.
#[derive(Clone)]
pub(crate) struct Windows {
    pub http: Arc<Http>,
    pub shared: Arc<Shared>,
    pub url: String,
    pub if_range: Option<String>,
    pub total: u64,
    pub window: u64,
    pub deadline: Deadline,
    pub pool: BufferPool,
}

impl Windows {
    /// The windows after window 0, as `[first, end)` ranges.
    pub fn after_first(&self) -> VecDeque<(u64, u64)> {
        let mut v = VecDeque::new();
        let mut at = self.window;
        while at < self.total {
            let end = (at + self.window).min(self.total);
            v.push_back((at, end));
            at = end;
        }
        v
    }

    /// Starts fetching `[first, end)`.
    pub fn start(&self, first: u64, end: u64) -> Fetch {
        let chunks = (end - first).div_ceil(self.pool.buf_size() as u64) as usize;
        // Room for the whole window plus the verdict: the fetch never waits for the consumer,
        // the window size bounds what it holds.
        let (tx, rx) = mpsc::channel(chunks + 1);
        let me = self.clone();
        let task = tokio::spawn(async move {
            let verdict = me.fetch(first, end, &tx).await;
            if let Some(piece) = verdict {
                let _ = tx.send(piece).await;
            }
        });
        Fetch {
            first,
            end,
            rx,
            task,
        }
    }

    /// Fetches the window, resuming inside it; returns the failure to report, if any.
    async fn fetch(&self, first: u64, end: u64, tx: &mpsc::Sender<Piece>) -> Option<Piece> {
        let s = &self.http.settings;
        let mut at = first;
        let mut buf = self.pool.get();
        let mut failed_in_a_row = 0u32;
        let mut last_failure = String::new();
        loop {
            if at == end {
                if !buf.is_empty() {
                    let _ = tx.send(Piece::Data(buf.freeze())).await;
                }
                return None;
            }
            if failed_in_a_row > 0 {
                if failed_in_a_row > s.retries {
                    return Some(Piece::Failed(Failure::Transient(format!(
                        "bytes {first}-{} (one of {} parallel windows): {last_failure}",
                        end - 1,
                        s.connections
                    ))));
                }
                tracing::warn!(image = %s.image_id, window_first = first, offset = at,
                    attempt = failed_in_a_row, retries = s.retries,
                    "window download failed ({last_failure}); retrying in {:?}", s.retry_interval);
                if pause(self.deadline, s.retry_interval).await.is_err() {
                    return Some(Piece::Failed(Failure::Abort(self.http.timed_out(
                        self.deadline,
                        at,
                        Some(self.total),
                    ))));
                }
            }
            if at > first {
                self.shared.stats().resumes += 1;
            }
            let mut resp = match self
                .http
                .get(
                    &self.url,
                    Some((at, Some(end - 1))),
                    self.if_range.as_deref(),
                    self.deadline,
                )
                .await
            {
                Ok(r) => r,
                Err(Failure::Transient(why)) => {
                    failed_in_a_row += 1;
                    last_failure = why;
                    continue;
                }
                Err(e) => return Some(Piece::Failed(e)),
            };
            if resp.status() != StatusCode::PARTIAL_CONTENT {
                return Some(Piece::Mismatch(format!(
                    "the server answered the request for bytes {at}-{} with {} instead of 206 \
                     (it ignored the range, or the file changed: If-Range)",
                    end - 1,
                    resp.status().as_u16()
                )));
            }
            match content_range(resp.headers()) {
                Some(cr)
                    if cr.first == at && cr.last == end - 1 && cr.total == Some(self.total) => {}
                other => {
                    return Some(Piece::Mismatch(format!(
                        "the server answered the request for bytes {at}-{}/{} with {}",
                        end - 1,
                        self.total,
                        other.map_or("no valid Content-Range".to_string(), |cr| format!(
                            "bytes {}-{}/{}",
                            cr.first,
                            cr.last,
                            cr.total.map_or("*".to_string(), |t| t.to_string())
                        ))
                    )))
                }
            }
            let started_at = at;
            let outcome = loop {
                match self
                    .http
                    .next_piece(&mut resp, self.deadline, at, Some(self.total))
                    .await
                {
                    Ok(Some(piece)) => {
                        self.shared.stats().wire_bytes += piece.len() as u64;
                        if at + piece.len() as u64 > end {
                            break Err(Failure::Transient(format!(
                                "the window's body ran past byte {}",
                                end - 1
                            )));
                        }
                        let mut data = &piece[..];
                        while !data.is_empty() {
                            let n = buf.extend_from_slice(data);
                            data = &data[n..];
                            at += n as u64;
                            if buf.is_full() {
                                let full = std::mem::replace(&mut buf, self.pool.get());
                                if tx.send(Piece::Data(full.freeze())).await.is_err() {
                                    return None;
                                }
                            }
                        }
                    }
                    Ok(None) if at == end => break Ok(()),
                    Ok(None) => {
                        break Err(Failure::Transient(format!(
                            "the window's body ended at byte {at} of {end}"
                        )))
                    }
                    Err(e) => break Err(e),
                }
            };
            match outcome {
                Ok(()) => {}
                Err(Failure::Transient(why)) => {
                    // The bytes already in `buf` stay: the resume starts at `at`. After
                    // progress it starts at once, as the single stream's does.
                    if at > started_at {
                        failed_in_a_row = 0;
                        tracing::warn!(image = %s.image_id, window_first = first, offset = at,
                            "window download interrupted ({why}); resuming");
                    } else {
                        failed_in_a_row += 1;
                    }
                    last_failure = why;
                }
                Err(e) => return Some(Piece::Failed(e)),
            }
        }
    }
}
