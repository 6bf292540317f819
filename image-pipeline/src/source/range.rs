//! Random access to the image file over HTTP Range requests, for the few reads a qcow2
//! decoder cannot do from the stream.

use std::sync::Arc;

use reqwest::StatusCode;
use tokio::runtime::Handle;

use super::client::{content_range, pause, Deadline, Failure, Http, Validators};
use super::shared::Entity;
use crate::redact::redact_url;
use crate::write_op::RangeRead;

/// Reads byte ranges of the image from the URL that served the stream, with the stream's
/// credentials, proxies, TLS settings, retries, stall timeout and time budget. Refuses to mix
/// files: `If-Range` carries the stream's validator, and a full answer with a different
/// validator or size is an error.
///
/// `read_range` blocks: call it from a blocking thread, not from inside the runtime.
pub struct HttpRangeReader {
    http: Arc<Http>,
    handle: Handle,
    url: String,
    entity: Option<Entity>,
    deadline: Deadline,
}

impl HttpRangeReader {
    pub(crate) fn new(
        http: Arc<Http>,
        handle: Handle,
        entity: Option<Entity>,
        deadline: Deadline,
    ) -> HttpRangeReader {
        let index = entity.as_ref().map_or(0, |e| e.url_index);
        let url = http.settings.urls.get(index).cloned().unwrap_or_default();
        HttpRangeReader {
            http,
            handle,
            url,
            entity,
            deadline,
        }
    }

    /// The URL ranges are read from, redacted.
    pub fn url(&self) -> String {
        redact_url(&self.url)
    }

    async fn read(
        http: Arc<Http>,
        url: String,
        entity: Option<Entity>,
        deadline: Deadline,
        offset: u64,
        len: u64,
    ) -> std::io::Result<Vec<u8>> {
        use std::io::{Error, ErrorKind};
        let cap = usize::try_from(len).map_err(Error::other)?;
        let end = offset
            .checked_add(len)
            .ok_or_else(|| Error::new(ErrorKind::InvalidInput, "range overflows"))?;
        if let Some(total) = entity.as_ref().and_then(|e| e.total) {
            if end > total {
                return Err(Error::new(
                    ErrorKind::UnexpectedEof,
                    format!("range {offset}+{len} is past the end of the image ({total} bytes)"),
                ));
            }
        }
        let mut out: Vec<u8> = Vec::with_capacity(cap);
        let settings = http.settings.clone();
        let validator = entity
            .as_ref()
            .and_then(|e| e.validators.if_range().map(str::to_string));
        let mut failed_in_a_row = 0u32;
        let abort = |e: super::SourceError| Error::other(e.to_string());
        while (out.len() as u64) < len {
            let from = offset + out.len() as u64;
            let before = out.len();
            let result = Self::round(
                &http,
                &url,
                &entity,
                validator.as_deref(),
                deadline,
                from,
                end,
                &mut out,
            )
            .await;
            match result {
                Ok(()) => {}
                Err(Failure::Transient(why)) => {
                    if out.len() > before {
                        failed_in_a_row = 0;
                        continue;
                    }
                    failed_in_a_row += 1;
                    if failed_in_a_row > settings.retries {
                        return Err(Error::other(format!(
                            "reading bytes {from}-{} of image {} from {}: {why}",
                            end - 1,
                            settings.image_id,
                            redact_url(&url)
                        )));
                    }
                    tracing::warn!(image = %settings.image_id, url = %redact_url(&url), "range read failed ({why}); retrying");
                    if pause(deadline, settings.retry_interval).await.is_err() {
                        return Err(abort(http.timed_out(deadline, from, None)));
                    }
                }
                Err(Failure::Fatal(e)) | Err(Failure::Abort(e)) => {
                    let kind = match &e {
                        super::SourceError::Fatal { status: 416, .. } => ErrorKind::UnexpectedEof,
                        _ => ErrorKind::Other,
                    };
                    return Err(Error::new(kind, e.to_string()));
                }
            }
        }
        Ok(out)
    }

    /// One request for `[from, end)`; appends what arrives to `out`.
    #[allow(clippy::too_many_arguments)]
    async fn round(
        http: &Http,
        url: &str,
        entity: &Option<Entity>,
        validator: Option<&str>,
        deadline: Deadline,
        from: u64,
        end: u64,
        out: &mut Vec<u8>,
    ) -> Result<(), Failure> {
        let image_id = &http.settings.image_id;
        let mut resp = http
            .get(url, Some((from, Some(end - 1))), validator, deadline)
            .await?;
        let changed = |why: String| {
            Failure::Abort(super::SourceError::Internal(format!(
                "image {image_id} changed on the server while it was being read: {why}"
            )))
        };
        let mut skip = if resp.status() == StatusCode::PARTIAL_CONTENT {
            let cr = content_range(resp.headers()).ok_or_else(|| {
                Failure::Transient("206 Partial Content without a valid Content-Range".into())
            })?;
            if cr.first > from {
                return Err(changed(format!(
                    "asked for byte {from}, got bytes from {}",
                    cr.first
                )));
            }
            if let (Some(a), Some(b)) = (entity.as_ref().and_then(|e| e.total), cr.total) {
                if a != b {
                    return Err(changed(format!("size {a} became {b}")));
                }
            }
            from - cr.first
        } else {
            // A full answer: either the server ignores Range or the file is not the same.
            let now = Validators::from_headers(resp.headers());
            if let Some(e) = entity {
                if e.validators.same_as(&now) == Some(false) {
                    return Err(changed("its ETag/Last-Modified changed".into()));
                }
                if let (Some(a), Some(b)) = (e.total, resp.content_length()) {
                    if a != b {
                        return Err(changed(format!("size {a} became {b}")));
                    }
                }
            }
            from
        };
        let want = end - from;
        let mut got = 0u64;
        while got < want {
            let piece = http
                .next_piece(&mut resp, deadline, from + got, None)
                .await?;
            let Some(mut piece) = piece else {
                return Err(Failure::Transient(format!(
                    "range response ended after {got} of {want} bytes"
                )));
            };
            if skip > 0 {
                let n = skip.min(piece.len() as u64);
                let _ = piece.split_to(n as usize);
                skip -= n;
            }
            let n = (want - got).min(piece.len() as u64) as usize;
            out.extend_from_slice(&piece[..n]);
            got += n as u64;
        }
        // Dropping `resp` closes the connection of an over-long (200) answer.
        Ok(())
    }
}

impl RangeRead for HttpRangeReader {
    fn read_range(&mut self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        if len == 0 {
            return Ok(Vec::new());
        }
        let fut = Self::read(
            self.http.clone(),
            self.url.clone(),
            self.entity.clone(),
            self.deadline,
            offset,
            len,
        );
        // Spawned rather than `block_on`, so that it works on any runtime flavour whose
        // driver is running elsewhere.
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.handle.spawn(async move {
            let _ = tx.send(fut.await);
        });
        rx.recv()
            .map_err(|_| std::io::Error::other("the runtime stopped during a range read"))?
    }
}
