//! The hot path: download → (hash ‖ decode) → write, on three threads joined by bounded
//! queues, so the network, the hash and the disk all work at once and memory stays bounded
//! (a few MiB of queued chunks and ops, whatever the image size).
//!
//! ```text
//!  source ──Bytes──▶ this thread: decoder.feed ──WriteOp──▶ writer thread (DiskWriter)
//!            └──────Bytes (refcounted, no copy)──────▶ hasher thread
//! ```
//! The first MiB of the target is written last, and only once the whole file's checksum
//! matched (see [`crate::sink`]); any failure after writing began wipes it.
//!
//! A stalled disk: the writer thread may block in the kernel for ever. This thread never
//! waits on it without a deadline: queueing an op and waiting for the commit both check the
//! writer's [`IoWatch`], and once one disk request is older than the writer's stall limit
//! the run fails with [`SinkError::Stalled`], cancels the writer and leaves its thread behind
//! (a thread in uninterruptible sleep cannot be stopped; it refuses all further work if its
//! request ever returns).

use std::sync::mpsc::{sync_channel, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use blockdev::IoWatch;
use bytes::Bytes;
use crossbeam_channel as channel;

use crate::checksum::{ChecksumError, ExpectedChecksum, Hasher};
use crate::decoder::{DecodeError, DecodeSummary, Decoder, Opened};
use crate::format::InspectionError;
use crate::sink::{CapacityCheck, DiskWriter, SinkError, WriteStats};
use crate::source::{Download, SourceError};
use crate::{RangeRead, SinkClosed, WriteOp};

/// The bytes of the image file in order: the download, or a file in tests.
pub trait ChunkSource: Send {
    /// The next chunk; `None` at the end of the file. [`SourceError::Restarted`] means the
    /// chunks that follow are the file again from byte 0.
    fn next_chunk(&mut self) -> Option<Result<Bytes, SourceError>>;
    /// Random access to the same file (qcow2 tables, late clusters).
    fn range_reader(&self) -> Box<dyn RangeRead>;
    /// The file size, when known.
    fn content_length(&self) -> Option<u64>;
}

impl ChunkSource for Download {
    fn next_chunk(&mut self) -> Option<Result<Bytes, SourceError>> {
        Download::next_chunk(self)
    }
    fn range_reader(&self) -> Box<dyn RangeRead> {
        Box::new(Download::range_reader(self))
    }
    fn content_length(&self) -> Option<u64> {
        Download::content_length(self)
    }
}

/// Chooses and builds the decoder from the file's first bytes, random access (qcow2 tables)
/// and the file size when known. Called again if the download restarts from byte 0.
pub type DecoderFactory<'a> =
    &'a (dyn Fn(&[u8], &mut dyn RangeRead, Option<u64>) -> Result<Opened, PipelineError> + Sync);

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Download(#[from] SourceError),
    #[error(transparent)]
    Inspection(#[from] InspectionError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Checksum(#[from] ChecksumError),
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Preparing the target (the [`BeforeWrite`] step) failed.
    #[error(transparent)]
    Target(Box<dyn std::error::Error + Send + Sync>),
    #[error("internal error: {0}")]
    Internal(String),
}

/// What a finished write did, for logs and the command result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Report {
    /// Bytes of the image file streamed (the last attempt, if the download restarted).
    pub file_bytes: u64,
    pub written: WriteStats,
    pub format: String,
    pub compression: Option<String>,
    /// Bytes of the target the image covers (raw length, qcow2 virtual size).
    pub image_size: u64,
    pub refetched_bytes: u64,
    pub seconds: f64,
    /// Image file bytes per second, end to end, in MB/s (10^6 bytes).
    pub mb_per_s: f64,
    /// The verified digest (lower-case hex).
    pub digest: String,
}

/// Head bytes needed to recognise any supported format.
const SNIFF_BYTES: usize = 64 << 10;
/// Queue depths: chunks are ~1 MiB, ops up to a few MiB.
const HASH_QUEUE: usize = 8;
const WRITE_QUEUE: usize = 8;

/// Runs once, after the image was recognised and found to fit and before anything is
/// written: the place to lay out partitions for a partition image.
pub type BeforeWrite<'a> = Box<dyn FnOnce() -> Result<(), PipelineError> + 'a>;

/// Streams the image from `source` into `writer`, verifying it against `expected`.
pub fn run(
    mut source: Box<dyn ChunkSource>,
    image_id: &str,
    expected: &ExpectedChecksum,
    open: DecoderFactory<'_>,
    writer: DiskWriter,
    before_write: Option<BeforeWrite<'_>>,
) -> Result<Report, PipelineError> {
    let started = Instant::now();
    let progress = blockdev::progress::track(
        "write_image",
        &writer.path().display().to_string(),
        source.content_length(),
    );
    progress.set_phase("downloading");
    let fits = writer.capacity_check();
    let stall = StallCheck {
        watch: writer.watch(),
        limit: writer.stall_limit(),
        path: writer.path().to_path_buf(),
    };
    let (op_tx, op_rx) = channel::bounded::<ToWriter>(WRITE_QUEUE);
    let done = spawn_writer(writer, op_rx);
    let mut before_write = before_write;
    let job = Job {
        image_id,
        expected,
        open,
        fits: &fits,
        op_tx: &op_tx,
        stall: &stall,
        progress: &progress,
    };
    let outcome = loop {
        match stream(source.as_mut(), &job, &mut before_write) {
            Err(Attempt::Restart(why)) => {
                tracing::warn!(image = image_id, reason = %why, "the image changed on the server; streaming it again from the start");
                progress.restart();
                progress.set_total(source.content_length());
            }
            Err(Attempt::Failed(e)) => break Err(e),
            Ok(done) => break Ok(done),
        }
    };
    // A stall seen while queueing: the writer is stuck, do not wait for it.
    if let Some(e) = stall.failure() {
        return Err(e.into());
    }
    // Commit only what streamed and verified; closing the queue without it aborts.
    if outcome.is_ok() {
        progress.set_phase("syncing");
        stall.send(&op_tx, ToWriter::Commit).ok();
    }
    drop(op_tx);
    let written = stall.wait(&done)?;
    let ((summary, file_bytes, digest), written) = match (outcome, written) {
        // A writer failure is what made the decoder see a closed sink: report the writer's.
        (_, Err(e)) => return Err(e.into()),
        (Err(e), Ok(_)) => return Err(e),
        (Ok(_), Ok(None)) => {
            return Err(PipelineError::Internal(
                "the disk writer stopped before the commit".into(),
            ))
        }
        (Ok(done), Ok(Some(stats))) => (done, stats),
    };
    let seconds = started.elapsed().as_secs_f64();
    Ok(Report {
        file_bytes,
        written,
        format: summary.format.to_string(),
        compression: summary.compression.map(|c| c.to_string()),
        image_size: summary.image_size,
        refetched_bytes: summary.refetched_bytes,
        seconds,
        mb_per_s: file_bytes as f64 / seconds.max(1e-9) / 1e6,
        digest,
    })
}

enum Attempt {
    Restart(SourceError),
    Failed(PipelineError),
}

impl<E: Into<PipelineError>> From<E> for Attempt {
    fn from(e: E) -> Self {
        Attempt::Failed(e.into())
    }
}

fn next(source: &mut dyn ChunkSource) -> Result<Option<Bytes>, Attempt> {
    match source.next_chunk() {
        None => Ok(None),
        Some(Ok(c)) => Ok(Some(c)),
        Some(Err(e)) if e.is_restart() => Err(Attempt::Restart(e)),
        Some(Err(e)) => Err(e.into()),
    }
}

/// What every pass over the file shares.
struct Job<'a> {
    image_id: &'a str,
    expected: &'a ExpectedChecksum,
    open: DecoderFactory<'a>,
    fits: &'a CapacityCheck,
    op_tx: &'a channel::Sender<ToWriter>,
    stall: &'a StallCheck,
    progress: &'a blockdev::progress::Task,
}

/// One pass over the file, from byte 0.
fn stream(
    source: &mut dyn ChunkSource,
    job: &Job<'_>,
    before_write: &mut Option<BeforeWrite<'_>>,
) -> Result<(DecodeSummary, u64, String), Attempt> {
    let Job {
        image_id,
        expected,
        open,
        fits,
        op_tx,
        stall,
        progress,
    } = *job;
    // Gather enough of the head to sniff; nothing is written before the decoder exists.
    let mut pending = Vec::new();
    let mut head = Vec::new();
    let mut eof = false;
    while head.len() < SNIFF_BYTES {
        match next(source)? {
            Some(chunk) => {
                head.extend_from_slice(&chunk[..chunk.len().min(SNIFF_BYTES - head.len())]);
                pending.push(chunk);
            }
            None => {
                eof = true;
                break;
            }
        }
    }
    let mut fetch = source.range_reader();
    let Opened {
        mut decoder,
        target_size,
    } = open(&head, fetch.as_mut(), source.content_length())?;
    if let Some(needed) = target_size {
        fits.ensure_fits(needed)?;
    }
    if let Some(prepare) = before_write.take() {
        prepare()?;
    }
    tracing::info!(image = image_id, target_size = ?target_size, "image format recognised; streaming");
    // Nothing was fed yet: the count and the rate's clock start here.
    progress.set_method(&match crate::format::sniff(&head) {
        crate::format::Sniffed::Compressed(c) => c.to_string(),
        crate::format::Sniffed::Image { format, .. } => format.to_string(),
        _ => "image".to_string(),
    });

    let (hash_tx, hash_rx) = sync_channel::<Bytes>(HASH_QUEUE);
    let hasher = spawn_hasher(expected.hasher(), hash_rx);
    let mut out = |op: WriteOp| stall.send(op_tx, ToWriter::Op(op));
    let mut file_bytes = 0u64;
    // Progress counts a chunk once the decoder has queued it for the disk.
    let mut feed = |chunk: Bytes, decoder: &mut Box<dyn Decoder>| -> Result<(), Attempt> {
        let len = chunk.len() as u64;
        file_bytes += len;
        hash_tx
            .send(chunk.clone())
            .map_err(|_| PipelineError::Internal("the hashing thread stopped".into()))?;
        decoder.feed(chunk, &mut out)?;
        progress.add(len);
        Ok(())
    };
    let mut result = Ok(());
    for chunk in pending {
        result = feed(chunk, &mut decoder);
        if result.is_err() {
            break;
        }
    }
    while result.is_ok() && !eof {
        result = match next(source) {
            Ok(Some(chunk)) => feed(chunk, &mut decoder),
            Ok(None) => {
                eof = true;
                Ok(())
            }
            Err(e) => Err(e),
        };
    }
    drop(hash_tx);
    let digest = hasher
        .join()
        .map_err(|_| PipelineError::Internal("the hashing thread panicked".into()))?;
    result?;
    expected.verify(image_id, &digest)?;
    tracing::info!(
        image = image_id,
        bytes = file_bytes,
        "image checksum verified"
    );
    let summary = decoder.finish(fetch.as_mut(), &mut out)?;
    Ok((summary, file_bytes, digest))
}

fn spawn_hasher(mut hasher: Hasher, rx: Receiver<Bytes>) -> JoinHandle<String> {
    std::thread::Builder::new()
        .name("image-hash".into())
        .spawn(move || {
            for chunk in rx {
                hasher.update(&chunk);
            }
            hasher.finalize_hex()
        })
        .expect("spawning the hashing thread")
}

/// What the writer thread is told: an op, or that everything streamed and verified.
enum ToWriter {
    Op(WriteOp),
    Commit,
}

/// What the writer thread answers: the stats after a commit, `None` after an abort (the
/// queue closed without a commit), or the error that stopped it (it aborted then too).
type WriterResult = Result<Option<WriteStats>, SinkError>;

/// The writer thread owns the DiskWriter: applies ops, commits when told, aborts (wipes the
/// ends) on any failure or when the queue closes without a commit.
fn spawn_writer(mut writer: DiskWriter, rx: channel::Receiver<ToWriter>) -> Receiver<WriterResult> {
    let (tx, done) = sync_channel(1);
    std::thread::Builder::new()
        .name("image-write".into())
        .spawn(move || {
            let result = (|| {
                for msg in rx.iter() {
                    match msg {
                        ToWriter::Op(op) => writer.apply(op)?,
                        ToWriter::Commit => return writer.commit_in_place().map(Some),
                    }
                }
                Ok(None)
            })();
            if !matches!(result, Ok(Some(_))) {
                writer.abort_in_place();
            }
            let _ = tx.send(result);
        })
        .expect("spawning the disk writer thread");
    done
}

/// How often a blocked send or wait looks at the writer's requests.
const STALL_POLL: Duration = Duration::from_millis(250);

/// The deadline on everything this thread waits for from the writer.
struct StallCheck {
    watch: IoWatch,
    limit: Option<Duration>,
    path: std::path::PathBuf,
}

impl StallCheck {
    /// The stall, once seen (the watch was cancelled for it).
    fn failure(&self) -> Option<SinkError> {
        let limit = self.limit?;
        if !self.watch.is_cancelled() {
            return None;
        }
        let what = self.watch.stalled(limit).map_or("writing to", |s| s.what);
        Some(SinkError::Stalled {
            what,
            path: self.path.clone(),
            seconds: limit.as_secs(),
        })
    }

    /// Whether a request is past the limit; if so, cancels the writer.
    fn check(&self) -> Option<SinkError> {
        let limit = self.limit?;
        let stall = self.watch.stalled(limit)?;
        self.watch.cancel();
        tracing::error!(
            device = %self.path.display(), request = stall.what,
            seconds = stall.for_.as_secs(), "disk request stalled; abandoning the write"
        );
        Some(SinkError::Stalled {
            what: stall.what,
            path: self.path.clone(),
            seconds: limit.as_secs(),
        })
    }

    /// Queues `msg`, waiting while the writer makes progress.
    fn send(&self, tx: &channel::Sender<ToWriter>, msg: ToWriter) -> Result<(), SinkClosed> {
        if self.limit.is_none() {
            return tx.send(msg).map_err(|_| SinkClosed);
        }
        let mut msg = msg;
        loop {
            match tx.send_timeout(msg, STALL_POLL) {
                Ok(()) => return Ok(()),
                Err(channel::SendTimeoutError::Disconnected(_)) => return Err(SinkClosed),
                Err(channel::SendTimeoutError::Timeout(m)) => {
                    if self.watch.is_cancelled() || self.check().is_some() {
                        return Err(SinkClosed);
                    }
                    msg = m;
                }
            }
        }
    }

    /// The writer's answer, or the stall that keeps it from coming.
    fn wait(&self, done: &Receiver<WriterResult>) -> Result<WriterResult, PipelineError> {
        let panicked = || PipelineError::Internal("the disk writer thread panicked".into());
        if self.limit.is_none() {
            return done.recv().map_err(|_| panicked());
        }
        loop {
            match done.recv_timeout(STALL_POLL) {
                Ok(r) => return Ok(r),
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return Err(panicked()),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(e) = self.failure().or_else(|| self.check()) {
                        return Err(e.into());
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checksum::{Algorithm, ChecksumOrigin};
    use crate::decoder::open_decoder;
    use crate::format::inspect;
    use crate::Limits;

    /// The file in memory, served in chunks of `chunk` bytes.
    struct Memory {
        data: Bytes,
        chunk: usize,
        at: usize,
    }

    impl ChunkSource for Memory {
        fn next_chunk(&mut self) -> Option<Result<Bytes, SourceError>> {
            (self.at < self.data.len()).then(|| {
                let end = (self.at + self.chunk).min(self.data.len());
                let c = self.data.slice(self.at..end);
                self.at = end;
                Ok(c)
            })
        }
        fn range_reader(&self) -> Box<dyn RangeRead> {
            Box::new(MemoryRange(self.data.clone()))
        }
        fn content_length(&self) -> Option<u64> {
            Some(self.data.len() as u64)
        }
    }

    struct MemoryRange(Bytes);
    impl RangeRead for MemoryRange {
        fn read_range(&mut self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
            (&self.0[..]).read_range(offset, len)
        }
    }

    fn sha256(data: &[u8]) -> ExpectedChecksum {
        let mut h = Algorithm::Sha256.hasher();
        h.update(data);
        ExpectedChecksum {
            algorithm: Algorithm::Sha256,
            value: h.finalize_hex(),
            origin: ChecksumOrigin::OsHashValue,
        }
    }

    fn factory(
        declared: Option<&'static str>,
    ) -> impl Fn(&[u8], &mut dyn RangeRead, Option<u64>) -> Result<Opened, PipelineError> + Sync
    {
        move |head, fetch, size| {
            let permitted = crate::format::default_permitted_formats();
            let inspection = inspect(head, declared, &permitted, true)?;
            Ok(open_decoder(
                head,
                &inspection,
                size,
                fetch,
                &Limits::default(),
            )?)
        }
    }

    fn writer_for(target: &tempfile::NamedTempFile) -> DiskWriter {
        DiskWriter::open(
            blockdev::WritableDisk::open_file(target.path()).unwrap(),
            None,
        )
        .unwrap()
    }

    fn memory(data: &Bytes, chunk: usize) -> Box<Memory> {
        Box::new(Memory {
            data: data.clone(),
            chunk,
            at: 0,
        })
    }

    fn disk(size: usize) -> tempfile::NamedTempFile {
        let f = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(f.path(), vec![0xA5u8; size]).unwrap();
        f
    }

    fn image(len: usize) -> Bytes {
        let mut v = vec![0u8; len];
        let mut x = 0x1234_5678u32;
        for b in v.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *b = x as u8;
        }
        Bytes::from(v)
    }

    #[test]
    fn raw_image_lands_verified() {
        let img = image(5 * 1024 * 1024 + 333);
        let target = disk(8 << 20);
        let src = memory(&img, 100_003);
        let open = factory(Some("raw"));
        let writer = writer_for(&target);
        let report = run(src, "img", &sha256(&img), &open, writer, None).unwrap();
        assert_eq!(report.file_bytes, img.len() as u64);
        let after = std::fs::read(target.path()).unwrap();
        assert_eq!(&after[..img.len()], &img[..]);
        assert_eq!(report.digest, sha256(&img).value);
    }

    /// A write that hangs past the stall limit fails the run at once with the device and
    /// the limit; the writer, once its request returns, writes nothing more (the head stays
    /// wiped, the rest of the image never lands).
    #[test]
    fn a_stalled_write_fails_the_run_instead_of_hanging_it() {
        let img = image(6 << 20);
        let target = disk(8 << 20);
        let src = memory(&img, 1 << 20);
        let open = factory(Some("raw"));
        let mut writer = writer_for(&target);
        writer.set_stall_limit(Some(Duration::from_millis(300)));
        writer.hang_at = Some((3 << 20, Duration::from_secs(2)));
        let t = Instant::now();
        let err = run(src, "img", &sha256(&img), &open, writer, None).unwrap_err();
        let took = t.elapsed();
        let msg = err.to_string();
        assert!(
            matches!(err, PipelineError::Sink(SinkError::Stalled { .. })),
            "{msg}"
        );
        assert!(msg.contains(&target.path().display().to_string()), "{msg}");
        assert!(
            msg.contains("did not complete in 0 s") || msg.contains("stopped answering"),
            "{msg}"
        );
        assert!(
            took < Duration::from_millis(1500),
            "waited for the hung write: {took:?}"
        );
        // Let the hung request return; the cancelled writer must not go on.
        std::thread::sleep(Duration::from_millis(2500));
        let after = std::fs::read(target.path()).unwrap();
        assert!(
            after[..1 << 20].iter().all(|b| *b == 0),
            "first MiB stays wiped"
        );
        assert_ne!(
            &after[4 << 20..6 << 20],
            &img[4 << 20..6 << 20],
            "writes went on"
        );
    }

    /// Without a limit (the option set to 0) the same hang only delays the write.
    #[test]
    fn without_a_stall_limit_a_slow_write_just_finishes() {
        let img = image(3 << 20);
        let target = disk(4 << 20);
        let src = memory(&img, 1 << 20);
        let open = factory(Some("raw"));
        let mut writer = writer_for(&target);
        writer.hang_at = Some((2 << 20, Duration::from_millis(400)));
        run(src, "img", &sha256(&img), &open, writer, None).unwrap();
        let after = std::fs::read(target.path()).unwrap();
        assert_eq!(&after[..img.len()], &img[..]);
    }

    #[test]
    fn checksum_mismatch_leaves_no_bootable_head() {
        let img = image(3 << 20);
        let target = disk(4 << 20);
        let src = memory(&img, 65536);
        let mut wrong = sha256(&img);
        wrong.value = "0".repeat(64);
        let open = factory(Some("raw"));
        let writer = writer_for(&target);
        let err = run(src, "img", &wrong, &open, writer, None).unwrap_err();
        assert!(matches!(err, PipelineError::Checksum(_)), "{err}");
        let after = std::fs::read(target.path()).unwrap();
        assert!(after[..1 << 20].iter().all(|b| *b == 0), "first MiB wiped");
        assert!(after[3 << 20..].iter().all(|b| *b == 0), "last MiB wiped");
    }

    #[test]
    fn too_small_target_is_untouched() {
        let img = image(3 << 20);
        let target = disk(2 << 20);
        let src = memory(&img, 1 << 20);
        let open = factory(Some("raw"));
        let writer = writer_for(&target);
        let err = run(src, "img", &sha256(&img), &open, writer, None).unwrap_err();
        assert!(err.to_string().contains("needs at least"), "{err}");
        assert!(std::fs::read(target.path())
            .unwrap()
            .iter()
            .all(|b| *b == 0xA5));
    }

    #[test]
    fn qcow2_converts_while_streaming() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("a.raw");
        let img = image(3 << 20);
        let mut sparse = vec![0u8; 6 << 20];
        sparse[..img.len()].copy_from_slice(&img);
        std::fs::write(&raw, &sparse).unwrap();
        let q = dir.path().join("a.qcow2");
        let st = std::process::Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "qcow2"])
            .arg(&raw)
            .arg(&q)
            .status()
            .unwrap();
        assert!(st.success());
        let file = Bytes::from(std::fs::read(&q).unwrap());
        let target = disk(8 << 20);
        let src = memory(&file, 77_777);
        let open = factory(Some("qcow2"));
        let writer = writer_for(&target);
        let report = run(src, "img", &sha256(&file), &open, writer, None).unwrap();
        assert_eq!(report.format, "qcow2");
        assert_eq!(report.image_size, 6 << 20);
        let after = std::fs::read(target.path()).unwrap();
        assert_eq!(
            &after[..6 << 20],
            &sparse[..],
            "zero clusters written as zeros over 0xA5"
        );
    }
}
