//! The streaming download: one task on the runtime reads the body, batches it into chunks of
//! `chunk_size` and hands them to the consumer through a bounded channel; on a dropped
//! connection, a stall or a short body it resumes with a Range request.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;

use crate::buffer_pool::{BufferPool, PoolBuf};
use reqwest::StatusCode;
use tokio::sync::{mpsc, oneshot};

use super::client::{content_range, pause, within, Deadline, Failure, Http, Validators, Wait};
use super::parallel::{self, Fetch, Piece, Windows};
use super::shared::{Entity, Shared};
use super::SourceError;
use crate::redact::{redact_url, scrub_text};

pub(crate) type Item = Result<Bytes, SourceError>;

/// How one request/response round ended.
enum Round {
    /// The whole file has been received.
    Done,
    /// The body broke off after some new bytes arrived: resume at once.
    Interrupted(String),
    /// The server no longer has the same file: start again from byte 0 at once.
    Restart,
}

pub(crate) struct Engine {
    pub http: Arc<Http>,
    pub shared: Arc<Shared>,
    pub tx: mpsc::Sender<Item>,
    pub ready: Option<oneshot::Sender<Result<(), SourceError>>>,
    pub deadline: Deadline,
    /// Bytes of the file received in order (queued + in `buf`).
    received: u64,
    /// Bytes handed to the channel.
    delivered: u64,
    /// Chunk buffers, reused once the pipeline is done with them.
    pool: BufferPool,
    buf: PoolBuf,
    /// Set once a parallel download met a server that did not serve its ranges: one
    /// connection from then on.
    single_only: bool,
}

impl Engine {
    pub fn new(
        http: Arc<Http>,
        shared: Arc<Shared>,
        tx: mpsc::Sender<Item>,
        ready: oneshot::Sender<Result<(), SourceError>>,
        deadline: Deadline,
    ) -> Engine {
        let chunk = http.settings.chunk_size;
        // Chunks live in this queue, then in the pipeline's hashing and writing queues: keep
        // enough idle buffers to cover all of them.
        let pool = BufferPool::new(chunk, http.settings.queue_depth * 4);
        let buf = pool.get();
        Engine {
            http,
            shared,
            tx,
            ready: Some(ready),
            deadline,
            received: 0,
            delivered: 0,
            pool,
            buf,
            single_only: false,
        }
    }

    pub async fn run(mut self) {
        let result = self.drive().await;
        {
            let mut st = self.shared.stats();
            st.elapsed = self.deadline.start.elapsed();
        }
        match result {
            Ok(()) => {
                self.shared
                    .complete
                    .store(true, std::sync::atomic::Ordering::SeqCst);
                let st = self.shared.stats().clone();
                tracing::info!(
                    image = %self.http.settings.image_id,
                    url = %st.url,
                    bytes = st.bytes,
                    wire_bytes = st.wire_bytes,
                    resumes = st.resumes,
                    restarts = st.restarts,
                    seconds = st.elapsed.as_secs_f64(),
                    "image download complete"
                );
                if let Some(ready) = self.ready.take() {
                    let _ = ready.send(Ok(()));
                }
            }
            Err(SourceError::Cancelled) => {}
            Err(e) => {
                tracing::error!(image = %self.http.settings.image_id, error = %e, "image download failed");
                match self.ready.take() {
                    Some(ready) => {
                        let _ = ready.send(Err(e));
                    }
                    None => {
                        let _ = self.tx.send(Err(e)).await;
                    }
                }
            }
        }
    }

    async fn drive(&mut self) -> Result<(), SourceError> {
        let settings = self.http.settings.clone();
        let mut failures: Vec<String> = Vec::new();
        let mut fatal: Option<SourceError> = None;
        for (index, url) in settings.urls.iter().enumerate() {
            let shown = redact_url(url);
            tracing::info!(image = %settings.image_id, url = %shown, offset = self.received, "downloading image");
            self.shared.stats().url = shown.clone();
            let mut failed_in_a_row = 0u32;
            loop {
                let result = self.round(index, url).await;
                match result {
                    Ok(Round::Done) => return Ok(()),
                    Ok(Round::Interrupted(why)) => {
                        failed_in_a_row = 0;
                        tracing::warn!(image = %settings.image_id, url = %shown, offset = self.received,
                            "download interrupted ({why}); resuming");
                    }
                    Ok(Round::Restart) => {
                        failed_in_a_row += 1;
                        if failed_in_a_row > settings.retries {
                            failures.push(format!(
                                "URL: {shown}; time: {:.1} seconds. Error: the file kept changing on the server",
                                self.deadline.start.elapsed().as_secs_f64()
                            ));
                            break;
                        }
                    }
                    Err(Failure::Transient(why)) => {
                        failed_in_a_row += 1;
                        if failed_in_a_row > settings.retries {
                            failures.push(format!(
                                "URL: {shown}; time: {:.1} seconds. Error: {why}",
                                self.deadline.start.elapsed().as_secs_f64()
                            ));
                            break;
                        }
                        tracing::warn!(image = %settings.image_id, url = %shown,
                            attempt = failed_in_a_row, retries = settings.retries,
                            "unable to download ({why}); retrying in {:?}", settings.retry_interval);
                        if pause(self.deadline, settings.retry_interval).await.is_err() {
                            return Err(self.http.timed_out(
                                self.deadline,
                                self.received,
                                self.total(),
                            ));
                        }
                    }
                    Err(Failure::Fatal(e)) => {
                        tracing::warn!(image = %settings.image_id, error = %e, "giving up on this URL");
                        failures.push(format!(
                            "URL: {shown}; time: {:.1} seconds. Error: {e}",
                            self.deadline.start.elapsed().as_secs_f64()
                        ));
                        fatal.get_or_insert(e);
                        break;
                    }
                    Err(Failure::Abort(e)) => return Err(e),
                }
            }
        }
        if let Some(e) = fatal {
            return Err(e);
        }
        let urls: Vec<&str> = settings.urls.iter().map(String::as_str).collect();
        Err(SourceError::Failed {
            image_id: settings.image_id.clone(),
            details: failures
                .iter()
                .map(|f| scrub_text(f, &urls, 2000))
                .collect(),
            received: self.received,
            total: self.total(),
        })
    }

    fn total(&self) -> Option<u64> {
        self.shared.entity().and_then(|e| e.total)
    }

    /// One GET (with Range when resuming) and as much of its body as arrives.
    async fn round(&mut self, index: usize, url: &str) -> Result<Round, Failure> {
        let from = self.received;
        let known = self.shared.entity();
        let (range, if_range) = if from > 0 {
            // Validators belong to the server that issued them: none for a different URL.
            let if_range = known
                .as_ref()
                .filter(|e| e.url_index == index)
                .and_then(|e| e.validators.if_range().map(str::to_string));
            self.shared.stats().resumes += 1;
            (Some((from, None)), if_range)
        } else {
            (None, None)
        };
        let mut resp = self
            .http
            .get(url, range, if_range.as_deref(), self.deadline)
            .await?;
        let headers = resp.headers().clone();
        let validators = Validators::from_headers(&headers);
        let status = resp.status();

        let mut skip = 0u64;
        if status == StatusCode::PARTIAL_CONTENT {
            let Some(cr) = content_range(&headers) else {
                return Err(Failure::Transient(
                    "206 Partial Content without a valid Content-Range".into(),
                ));
            };
            if from == 0 && cr.first != 0 {
                return Err(Failure::Transient(format!(
                    "unrequested 206 Partial Content starting at byte {}",
                    cr.first
                )));
            }
            let total = known.as_ref().and_then(|e| e.total);
            let total_changed = matches!((total, cr.total), (Some(a), Some(b)) if a != b);
            if cr.first > from || total_changed {
                self.restart(&format!(
                    "the server answered the resume at byte {from} with bytes {}-{}/{}",
                    cr.first,
                    cr.last,
                    cr.total.map_or("*".to_string(), |t| t.to_string())
                ))
                .await?;
                return Ok(Round::Restart);
            }
            skip = from - cr.first;
            self.shared.set_entity(Entity {
                url_index: index,
                validators,
                total: total.or(cr.total),
            });
        } else {
            let entity = Entity {
                url_index: index,
                validators,
                total: resp.content_length(),
            };
            if from > 0 {
                let same = known.as_ref().is_some_and(|old| same_file(old, &entity));
                if same {
                    tracing::warn!(image = %self.http.settings.image_id, url = %redact_url(url),
                        "the server ignored the Range request; discarding the first {from} bytes of the new response");
                    skip = from;
                } else {
                    self.restart(&format!(
                        "the file changed on the server (ETag/Last-Modified/size differ) when resuming at byte {from}"
                    ))
                    .await?;
                }
            }
            self.shared.set_entity(entity);
        }
        if let Some(ready) = self.ready.take() {
            let _ = ready.send(Ok(()));
        }
        let s = &self.http.settings;
        if from == 0 && status == StatusCode::OK && s.connections > 1 && !self.single_only {
            let window = parallel::window_size(s.window_size, s.chunk_size);
            if parallel::usable(&resp, self.total(), window) {
                return self.stream_windows(resp, url, window).await;
            }
        }
        self.stream(&mut resp, skip).await
    }

    /// The parallel download (module `parallel`): window 0 from the first response, the
    /// rest over `connections` connections, delivered in order.
    async fn stream_windows(
        &mut self,
        mut resp: reqwest::Response,
        url: &str,
        window: u64,
    ) -> Result<Round, Failure> {
        let s = self.http.settings.clone();
        let total = self.total().unwrap_or_default();
        let windows = Windows {
            http: self.http.clone(),
            shared: self.shared.clone(),
            url: url.to_string(),
            if_range: self
                .shared
                .entity()
                .and_then(|e| e.validators.if_range().map(str::to_string)),
            total,
            window,
            deadline: self.deadline,
            pool: self.pool.clone(),
        };
        tracing::info!(image = %s.image_id, connections = s.connections, window_bytes = window,
            total, "the server serves byte ranges: downloading over several connections");
        let mut queue = windows.after_first();
        let mut in_flight: VecDeque<Fetch> = VecDeque::new();
        // Window 0 streams on the first connection while the others fetch ahead.
        while in_flight.len() + 1 < s.connections {
            match queue.pop_front() {
                Some((a, b)) => in_flight.push_back(windows.start(a, b)),
                None => break,
            }
        }
        let mut broke = None;
        while self.received < window {
            match self
                .http
                .next_piece(&mut resp, self.deadline, self.received, Some(total))
                .await
            {
                Ok(Some(piece)) => {
                    self.shared.stats().wire_bytes += piece.len() as u64;
                    let take = piece.len().min((window - self.received) as usize);
                    self.accept(&piece[..take]).await?;
                }
                Ok(None) => {
                    broke = Some(format!("body ended at byte {} of {total}", self.received));
                    break;
                }
                Err(Failure::Transient(why)) => {
                    broke = Some(why);
                    break;
                }
                Err(e) => return Err(e),
            }
        }
        drop(resp);
        if let Some(why) = broke {
            // The rest of window 0 becomes a window of its own, from the last whole chunk.
            tracing::warn!(image = %s.image_id, offset = self.received,
                "download interrupted ({why}); fetching the rest of the first window by range");
            self.buf.clear();
            self.received = self.delivered;
            in_flight.push_front(windows.start(self.delivered, window));
        }
        loop {
            while in_flight.len() < s.connections {
                match queue.pop_front() {
                    Some((a, b)) => in_flight.push_back(windows.start(a, b)),
                    None => break,
                }
            }
            let Some(mut head) = in_flight.pop_front() else {
                break;
            };
            debug_assert_eq!(head.first, self.received);
            while let Some(piece) = head.rx.recv().await {
                match piece {
                    Piece::Data(chunk) => {
                        self.received += chunk.len() as u64;
                        self.deliver(Ok(chunk)).await?;
                        self.shared.stats().bytes = self.received;
                    }
                    Piece::Failed(e) => return Err(e),
                    Piece::Mismatch(why) => {
                        drop(in_flight);
                        self.single_only = true;
                        self.restart(&format!("{why}; one connection from now on"))
                            .await?;
                        return Ok(Round::Restart);
                    }
                }
            }
            if self.received != head.end {
                return Err(Failure::Transient(format!(
                    "the fetch of bytes {}-{} stopped at byte {}",
                    head.first,
                    head.end - 1,
                    self.received
                )));
            }
        }
        Ok(Round::Done)
    }

    /// Copies received bytes into chunk buffers, handing on each full one.
    async fn accept(&mut self, mut data: &[u8]) -> Result<(), Failure> {
        while !data.is_empty() {
            let n = self.buf.extend_from_slice(data);
            data = &data[n..];
            self.received += n as u64;
            if self.buf.is_full() {
                let full = std::mem::replace(&mut self.buf, self.pool.get());
                self.deliver(Ok(full.freeze())).await?;
            }
        }
        self.shared.stats().bytes = self.received;
        Ok(())
    }

    /// Reads the body into chunks until it ends or breaks.
    async fn stream(
        &mut self,
        resp: &mut reqwest::Response,
        mut skip: u64,
    ) -> Result<Round, Failure> {
        let start = self.received;
        let total = self.total();
        loop {
            let piece = match self
                .http
                .next_piece(resp, self.deadline, self.received, total)
                .await
            {
                Ok(p) => p,
                Err(Failure::Transient(why)) if self.received > start => {
                    return Ok(Round::Interrupted(why))
                }
                Err(e) => return Err(e),
            };
            let Some(mut piece) = piece else {
                return match total {
                    Some(t) if self.received < t => {
                        let why =
                            format!("body ended at byte {} of {t} (truncated)", self.received);
                        if self.received > start {
                            Ok(Round::Interrupted(why))
                        } else {
                            Err(Failure::Transient(why))
                        }
                    }
                    _ => {
                        self.flush_partial().await?;
                        Ok(Round::Done)
                    }
                };
            };
            self.shared.stats().wire_bytes += piece.len() as u64;
            if skip > 0 {
                let n = skip.min(piece.len() as u64);
                let _ = piece.split_to(n as usize);
                skip -= n;
            }
            if piece.is_empty() {
                continue;
            }
            if let Some(t) = total {
                if self.received + piece.len() as u64 > t {
                    return Err(Failure::Abort(SourceError::TooLong {
                        image_id: self.http.settings.image_id.clone(),
                        url: self.shared.stats().url.clone(),
                        expected: t,
                    }));
                }
            }
            // One copy: network pieces into chunk-sized, page-aligned pool buffers.
            self.accept(&piece).await?;
        }
    }

    async fn flush_partial(&mut self) -> Result<(), Failure> {
        if !self.buf.is_empty() {
            let rest = std::mem::replace(&mut self.buf, self.pool.get());
            self.deliver(Ok(rest.freeze())).await?;
        }
        self.shared.stats().bytes = self.received;
        Ok(())
    }

    async fn deliver(&mut self, item: Item) -> Result<(), Failure> {
        let len = item.as_ref().map_or(0, |b| b.len() as u64);
        match within(self.deadline, None, self.tx.send(item)).await {
            Ok(Ok(())) => {
                self.delivered += len;
                Ok(())
            }
            Ok(Err(_)) => Err(Failure::Abort(SourceError::Cancelled)),
            Err(Wait::Deadline | Wait::Timeout) => Err(Failure::Abort(self.http.timed_out(
                self.deadline,
                self.received,
                self.total(),
            ))),
        }
    }

    /// Forgets what was received; tells the consumer if it had already been given bytes.
    async fn restart(&mut self, why: &str) -> Result<(), Failure> {
        tracing::warn!(image = %self.http.settings.image_id, "{why}; restarting the download from byte 0");
        let delivered = self.delivered;
        self.received = 0;
        self.delivered = 0;
        self.buf.clear();
        {
            let mut st = self.shared.stats();
            st.bytes = 0;
            st.restarts += 1;
        }
        if delivered > 0 {
            let e = SourceError::Restarted {
                image_id: self.http.settings.image_id.clone(),
                url: self.shared.stats().url.clone(),
                delivered,
                reason: why.to_string(),
            };
            self.deliver(Err(e)).await?;
        }
        Ok(())
    }
}

/// Is a full (200) answer to a resume the same file as before? Validators decide when both
/// responses have them; otherwise the sizes, and for another URL (a mirror, whose validators
/// are its own) only the sizes. The image checksum is the final guard either way.
fn same_file(old: &Entity, new: &Entity) -> bool {
    let sizes = match (old.total, new.total) {
        (Some(a), Some(b)) => Some(a == b),
        _ => None,
    };
    if sizes == Some(false) {
        return false;
    }
    if old.url_index == new.url_index {
        old.validators.same_as(&new.validators).unwrap_or(true)
    } else {
        sizes == Some(true)
    }
}
