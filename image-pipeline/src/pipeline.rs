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

use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

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
    let fits = writer.capacity_check();
    let (op_tx, op_rx) = sync_channel::<WriteOp>(WRITE_QUEUE);
    let writer_thread = spawn_writer(writer, op_rx);
    let mut before_write = before_write;
    let job = Job {
        image_id,
        expected,
        open,
        fits: &fits,
        op_tx: &op_tx,
        started,
    };
    let outcome = loop {
        match stream(source.as_mut(), &job, &mut before_write) {
            Err(Attempt::Restart(why)) => {
                tracing::warn!(image = image_id, reason = %why, "the image changed on the server; streaming it again from the start");
            }
            Err(Attempt::Failed(e)) => break Err(e),
            Ok(done) => break Ok(done),
        }
    };
    drop(op_tx);
    let (writer, write_result) = writer_thread
        .join()
        .map_err(|_| PipelineError::Internal("the disk writer thread panicked".into()))?;
    let (summary, file_bytes, digest) = match (outcome, write_result) {
        // A writer failure is what made the decoder see a closed sink: report the writer's.
        (_, Err(e)) => {
            writer.abort();
            return Err(e.into());
        }
        (Err(e), Ok(())) => {
            writer.abort();
            return Err(e);
        }
        (Ok(done), Ok(())) => done,
    };
    let written = writer.commit()?;
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
    op_tx: &'a SyncSender<WriteOp>,
    started: Instant,
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
        started,
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

    let (hash_tx, hash_rx) = sync_channel::<Bytes>(HASH_QUEUE);
    let hasher = spawn_hasher(expected.hasher(), hash_rx);
    let mut out = |op: WriteOp| op_tx.send(op).map_err(|_| SinkClosed);
    let mut file_bytes = 0u64;
    let mut last_progress = Instant::now();
    let mut feed = |chunk: Bytes, decoder: &mut Box<dyn Decoder>| -> Result<(), Attempt> {
        file_bytes += chunk.len() as u64;
        hash_tx
            .send(chunk.clone())
            .map_err(|_| PipelineError::Internal("the hashing thread stopped".into()))?;
        decoder.feed(chunk, &mut out)?;
        if last_progress.elapsed() >= Duration::from_secs(10) {
            last_progress = Instant::now();
            let secs = started.elapsed().as_secs_f64();
            tracing::info!(
                image = image_id,
                bytes = file_bytes,
                mb_per_s = format!("{:.0}", file_bytes as f64 / secs / 1e6),
                "image transfer in progress"
            );
        }
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

/// The writer thread owns the DiskWriter and hands it back for commit or abort.
fn spawn_writer(
    mut writer: DiskWriter,
    rx: Receiver<WriteOp>,
) -> JoinHandle<(DiskWriter, Result<(), SinkError>)> {
    std::thread::Builder::new()
        .name("image-write".into())
        .spawn(move || {
            for op in rx {
                if let Err(e) = writer.apply(op) {
                    return (writer, Err(e));
                }
            }
            (writer, Ok(()))
        })
        .expect("spawning the disk writer thread")
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
        let src = Box::new(Memory {
            data: img.clone(),
            chunk: 100_003,
            at: 0,
        });
        let open = factory(Some("raw"));
        let writer = DiskWriter::open(
            blockdev::WritableDisk::open_file(target.path()).unwrap(),
            None,
        )
        .unwrap();
        let report = run(src, "img", &sha256(&img), &open, writer, None).unwrap();
        assert_eq!(report.file_bytes, img.len() as u64);
        let after = std::fs::read(target.path()).unwrap();
        assert_eq!(&after[..img.len()], &img[..]);
        assert_eq!(report.digest, sha256(&img).value);
    }

    #[test]
    fn checksum_mismatch_leaves_no_bootable_head() {
        let img = image(3 << 20);
        let target = disk(4 << 20);
        let src = Box::new(Memory {
            data: img.clone(),
            chunk: 65536,
            at: 0,
        });
        let mut wrong = sha256(&img);
        wrong.value = "0".repeat(64);
        let open = factory(Some("raw"));
        let writer = DiskWriter::open(
            blockdev::WritableDisk::open_file(target.path()).unwrap(),
            None,
        )
        .unwrap();
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
        let src = Box::new(Memory {
            data: img.clone(),
            chunk: 1 << 20,
            at: 0,
        });
        let open = factory(Some("raw"));
        let writer = DiskWriter::open(
            blockdev::WritableDisk::open_file(target.path()).unwrap(),
            None,
        )
        .unwrap();
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
        let src = Box::new(Memory {
            data: file.clone(),
            chunk: 77_777,
            at: 0,
        });
        let open = factory(Some("qcow2"));
        let writer = DiskWriter::open(
            blockdev::WritableDisk::open_file(target.path()).unwrap(),
            None,
        )
        .unwrap();
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
