//! A raw disk image inside gzip (multi-member too), zstd (multi-frame too) or xz
//! (multi-stream too), decompressed as it streams into ~1 MiB buffers sent as `Data` ops in
//! order.
//!
//! The payload must be a raw disk: its first MiB is sniffed before anything is sent, and a
//! compressed qcow2 (or vmdk, ...) is refused. A decompression bomb is not an error here: the
//! summary's `image_size` is what was produced, and the disk writer refuses ops past the end of
//! the target as they arrive.

use std::io::Write;

use bytes::Bytes;
use flate2::write::MultiGzDecoder;
use liblzma::stream::{Action, Status, Stream, CONCATENATED};
use zstd::stream::raw::{InBuffer, Operation, OutBuffer};

use super::{DecodeError, DecodeSummary, Decoder, Limits, Out};
use crate::format::{Compression, ImageFormat, PayloadPolicy};
use crate::{RangeRead, WriteOp};

/// Size of the output buffers sent as ops.
const OUT_BUF: usize = 1 << 20;
/// Room for one more write of the gzip decoder (it produces at most 32 KiB per call).
const GZ_SLACK: usize = 64 << 10;

enum Engine {
    Gzip(Box<MultiGzDecoder<Vec<u8>>>),
    Zstd {
        ctx: zstd::stream::raw::Decoder<'static>,
        /// The last frame was complete and fully flushed (and no byte came after it).
        frame_done: bool,
    },
    Xz(Stream),
}

/// See the module doc.
pub struct CompressedDecoder {
    compression: Compression,
    engine: Engine,
    /// Output being filled (zstd, xz; gzip fills the Vec inside its decoder).
    buf: Vec<u8>,
    /// Target offset of the next op.
    offset: u64,
    policy: PayloadPolicy,
    payload: Option<ImageFormat>,
    fed: u64,
    xz_memory_limit: u64,
}

impl CompressedDecoder {
    pub fn new(
        compression: Compression,
        policy: PayloadPolicy,
        limits: &Limits,
    ) -> Result<Self, DecodeError> {
        let engine = match compression {
            Compression::Gzip => Engine::Gzip(Box::new(MultiGzDecoder::new(Vec::with_capacity(
                OUT_BUF + GZ_SLACK,
            )))),
            Compression::Zstd => Engine::Zstd {
                ctx: zstd::stream::raw::Decoder::new().map_err(|source| {
                    DecodeError::Decompress {
                        compression,
                        source,
                    }
                })?,
                frame_done: false,
            },
            Compression::Xz => Engine::Xz(
                Stream::new_stream_decoder(limits.xz_memory_limit, CONCATENATED).map_err(|e| {
                    DecodeError::Decompress {
                        compression,
                        source: e.into(),
                    }
                })?,
            ),
            Compression::Bzip2 => {
                return Err(
                    crate::format::InspectionError::UnsupportedCompression(compression).into(),
                )
            }
        };
        Ok(CompressedDecoder {
            compression,
            engine,
            buf: Vec::with_capacity(OUT_BUF),
            offset: 0,
            policy,
            payload: None,
            fed: 0,
            xz_memory_limit: limits.xz_memory_limit,
        })
    }

    fn corrupt(&self, source: std::io::Error) -> DecodeError {
        DecodeError::Decompress {
            compression: self.compression,
            source,
        }
    }

    /// Sends a buffer of payload; the first one (1 MiB, or all of a smaller payload) is
    /// checked against the policy before anything is written.
    fn emit(&mut self, buf: Vec<u8>, out: &mut Out<'_>) -> Result<(), DecodeError> {
        if buf.is_empty() {
            return Ok(());
        }
        if self.payload.is_none() {
            self.payload = Some(self.policy.check(self.compression, &buf)?);
        }
        let len = buf.len() as u64;
        out(WriteOp::Data {
            offset: self.offset,
            data: Bytes::from(buf),
        })?;
        self.offset += len;
        Ok(())
    }

    fn take_buf(&mut self) -> Vec<u8> {
        std::mem::replace(&mut self.buf, Vec::with_capacity(OUT_BUF))
    }

    fn feed_gzip(&mut self, mut input: &[u8], out: &mut Out<'_>) -> Result<(), DecodeError> {
        while !input.is_empty() {
            let Engine::Gzip(dec) = &mut self.engine else {
                unreachable!()
            };
            let n = dec.write(input).map_err(|e| DecodeError::Decompress {
                compression: Compression::Gzip,
                source: e,
            })?;
            let full = dec.get_ref().len() >= OUT_BUF;
            let next = if full {
                Some(std::mem::replace(
                    dec.get_mut(),
                    Vec::with_capacity(OUT_BUF + GZ_SLACK),
                ))
            } else {
                None
            };
            if let Some(buf) = next {
                self.emit(buf, out)?;
            }
            if n == 0 {
                return Err(self.corrupt(std::io::Error::other("the decoder made no progress")));
            }
            input = &input[n..];
        }
        Ok(())
    }

    fn feed_zstd(&mut self, input: &[u8], out: &mut Out<'_>) -> Result<(), DecodeError> {
        let mut inb = InBuffer::around(input);
        loop {
            if self.buf.len() == self.buf.capacity() {
                let b = self.take_buf();
                self.emit(b, out)?;
            }
            let Engine::Zstd { ctx, frame_done } = &mut self.engine else {
                unreachable!()
            };
            let before = (inb.pos(), self.buf.len());
            let hint = ctx.run(
                &mut inb,
                &mut OutBuffer::around_pos(&mut self.buf, before.1),
            );
            let hint = hint.map_err(|e| DecodeError::Decompress {
                compression: Compression::Zstd,
                source: e,
            })?;
            if (inb.pos(), self.buf.len()) != before {
                *frame_done = hint == 0;
            }
            let output_room = self.buf.len() < self.buf.capacity();
            if inb.pos() == input.len() && output_room {
                return Ok(());
            }
        }
    }

    fn feed_xz(
        &mut self,
        mut input: &[u8],
        action: Action,
        out: &mut Out<'_>,
    ) -> Result<Status, DecodeError> {
        loop {
            if self.buf.len() == self.buf.capacity() {
                let b = self.take_buf();
                self.emit(b, out)?;
            }
            let Engine::Xz(stream) = &mut self.engine else {
                unreachable!()
            };
            let before_in = stream.total_in();
            let status = stream
                .process_vec(input, &mut self.buf, action)
                .map_err(|e| {
                    let source = match e {
                        liblzma::stream::Error::MemLimit => std::io::Error::other(format!(
                            "decompressing it needs more than the {} MiB of memory allowed",
                            self.xz_memory_limit >> 20
                        )),
                        e => e.into(),
                    };
                    DecodeError::Decompress {
                        compression: Compression::Xz,
                        source,
                    }
                })?;
            input = &input[(stream.total_in() - before_in) as usize..];
            let output_room = self.buf.len() < self.buf.capacity();
            if status == Status::StreamEnd || (input.is_empty() && output_room) {
                return Ok(status);
            }
        }
    }
}

impl Decoder for CompressedDecoder {
    fn feed(&mut self, chunk: Bytes, out: &mut Out<'_>) -> Result<(), DecodeError> {
        self.fed += chunk.len() as u64;
        match self.engine {
            Engine::Gzip(_) => self.feed_gzip(&chunk, out),
            Engine::Zstd { .. } => self.feed_zstd(&chunk, out),
            Engine::Xz(_) => self.feed_xz(&chunk, Action::Run, out).map(drop),
        }
    }

    fn finish(
        mut self: Box<Self>,
        _fetch: &mut dyn RangeRead,
        out: &mut Out<'_>,
    ) -> Result<DecodeSummary, DecodeError> {
        if self.fed == 0 {
            return Err(DecodeError::Empty);
        }
        let truncated = DecodeError::TruncatedStream {
            compression: self.compression,
        };
        match &mut self.engine {
            Engine::Gzip(dec) => {
                // Flushes what is buffered and checks the last member's CRC and length; a
                // member cut short fails here.
                dec.try_finish().map_err(|e| DecodeError::Decompress {
                    compression: Compression::Gzip,
                    source: e,
                })?;
                let rest = std::mem::take(dec.get_mut());
                self.emit(rest, out)?;
            }
            Engine::Zstd { .. } => {
                // Drain what the context still holds.
                self.feed_zstd(&[], out)?;
                let Engine::Zstd { frame_done, .. } = self.engine else {
                    unreachable!()
                };
                if !frame_done {
                    return Err(truncated);
                }
                let rest = self.take_buf();
                self.emit(rest, out)?;
            }
            Engine::Xz(_) => {
                // A stream cut short makes no progress (LZMA_BUF_ERROR) instead of ending.
                if self.feed_xz(&[], Action::Finish, out)? != Status::StreamEnd {
                    return Err(truncated);
                }
                let rest = self.take_buf();
                self.emit(rest, out)?;
            }
        }
        if self.offset == 0 {
            return Err(DecodeError::EmptyPayload {
                compression: self.compression,
            });
        }
        Ok(DecodeSummary {
            format: self.payload.unwrap_or(ImageFormat::Raw),
            compression: Some(self.compression),
            image_size: self.offset,
            bytes_written: self.offset,
            bytes_zeroed: 0,
            refetched_bytes: 0,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::process::Command;

    use super::super::testutil::*;
    use super::*;
    use crate::format::{default_permitted_formats, inspect, Plan};

    /// A raw "disk": an MBR, then mixed compressible and incompressible data.
    fn payload(len: usize, seed: u64) -> Vec<u8> {
        let mut rng = Rng(seed);
        let mut d = vec![0u8; len];
        for (i, b) in d.iter_mut().enumerate() {
            *b = match (i >> 16) % 3 {
                0 => 0,
                1 => (i % 251) as u8,
                _ => rng.next() as u8,
            };
        }
        if len >= 512 {
            d[446 + 4] = 0x83;
            d[446 + 8] = 1;
            d[510] = 0x55;
            d[511] = 0xaa;
        }
        d
    }

    fn tool(cmd: &str, args: &[&str], input: &[u8]) -> Vec<u8> {
        use std::io::Write as _;
        let mut child = Command::new(cmd)
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
        let mut stdin = child.stdin.take().unwrap();
        let input = input.to_vec();
        let writer = std::thread::spawn(move || stdin.write_all(&input));
        let output = child.wait_with_output().unwrap();
        writer.join().unwrap().unwrap();
        assert!(output.status.success(), "{cmd} failed");
        output.stdout
    }

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    /// With a content checksum, as the zstd tool writes by default.
    fn zstd(data: &[u8]) -> Vec<u8> {
        let mut e = zstd::stream::Encoder::new(Vec::new(), 3).unwrap();
        e.include_checksum(true).unwrap();
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn xz(data: &[u8]) -> Vec<u8> {
        let mut e = liblzma::write::XzEncoder::new(Vec::new(), 1);
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    fn decoder(file: &[u8], declared: Option<&str>) -> Box<dyn Decoder> {
        let insp = inspect(file, declared, &default_permitted_formats(), true).unwrap();
        let Plan::Decompress(c) = insp.plan else {
            panic!("not compressed: {:?}", insp.plan)
        };
        Box::new(CompressedDecoder::new(c, insp.payload_policy, &Limits::default()).unwrap())
    }

    fn decode(
        file: &[u8],
        rng: &mut Rng,
        target_len: usize,
    ) -> Result<(DecodeSummary, Target), DecodeError> {
        let file = Bytes::copy_from_slice(file);
        let chunks = random_chunks(&file, rng, 3 << 20);
        run_decoder(decoder(&file, None), chunks, &mut &file[..], target_len)
    }

    fn roundtrip(name: &str, compress: fn(&[u8]) -> Vec<u8>, members: usize) {
        let mut rng = Rng(0x5eed ^ name.len() as u64);
        for round in 0..6 {
            let len = [0usize, 1, 511, 70_000, 1 << 20, 3_500_000][round];
            let mut original = payload(len, round as u64);
            if len == 0 {
                original.clear();
            }
            // Several members / frames / streams, split at a random point.
            let mut file = Vec::new();
            let mut parts = vec![0, original.len()];
            for _ in 1..members {
                parts.push(rng.range(0, original.len() as u64) as usize);
            }
            parts.sort();
            for w in parts.windows(2) {
                file.extend(compress(&original[w[0]..w[1]]));
            }
            if original.is_empty() {
                let err = decode(&file, &mut rng, 0).unwrap_err();
                assert!(matches!(err, DecodeError::EmptyPayload { .. }), "{err}");
                continue;
            }
            let (summary, target) = decode(&file, &mut rng, original.len()).unwrap();
            assert_eq!(target.bytes, original, "{name} round {round}");
            target.assert_exactly_covered();
            assert_eq!(summary.image_size, original.len() as u64);
            assert_eq!(summary.compression.map(|c| c.name()), Some(name));
            let want = if len >= 512 {
                ImageFormat::Gpt
            } else {
                ImageFormat::Raw
            };
            assert_eq!(summary.format, want);
            assert!(
                target.data_ops <= original.len() / OUT_BUF + 2,
                "{} ops",
                target.data_ops
            );
        }
    }

    #[test]
    fn gzip_random_chunking() {
        roundtrip("gzip", gzip, 1);
        roundtrip("gzip", gzip, 3);
    }

    #[test]
    fn zstd_random_chunking() {
        roundtrip("zstd", zstd, 1);
        roundtrip("zstd", zstd, 3);
    }

    #[test]
    fn xz_random_chunking() {
        roundtrip("xz", xz, 1);
        roundtrip("xz", xz, 3);
    }

    #[test]
    fn files_from_the_real_tools() {
        let original = payload(2_000_000, 9);
        let mut rng = Rng(99);
        for (cmd, args) in [
            ("gzip", &["-c"][..]),
            ("zstd", &["-c", "-q"][..]),
            ("xz", &["-c", "-T1"][..]),
        ] {
            if Command::new(cmd).arg("--version").output().is_err() {
                eprintln!("{cmd} not installed; skipped");
                continue;
            }
            let file = tool(cmd, args, &original);
            let (_, target) = decode(&file, &mut rng, original.len()).unwrap();
            assert_eq!(target.bytes, original, "{cmd}");
        }
    }

    #[test]
    fn truncated_streams_are_errors() {
        let original = payload(300_000, 1);
        for (name, file) in [
            ("gzip", gzip(&original)),
            ("zstd", zstd(&original)),
            ("xz", xz(&original)),
        ] {
            for cut in [file.len() - 1, file.len() / 2, 12] {
                let mut rng = Rng(cut as u64);
                let err = decode(&file[..cut], &mut rng, original.len()).unwrap_err();
                let msg = err.to_string();
                assert!(msg.contains(name), "{name} cut at {cut}: {msg}");
                assert!(
                    matches!(
                        err,
                        DecodeError::TruncatedStream { .. } | DecodeError::Decompress { .. }
                    ),
                    "{name} cut at {cut}: {msg}"
                );
            }
        }
    }

    #[test]
    fn corrupt_streams_are_errors() {
        let original = payload(300_000, 2);
        for file in [gzip(&original), zstd(&original), xz(&original)] {
            let mut bad = file.clone();
            let mid = bad.len() / 2;
            bad[mid] ^= 0x55;
            bad[mid + 1] ^= 0xaa;
            let mut rng = Rng(5);
            assert!(decode(&bad, &mut rng, original.len()).is_err());
        }
        // Garbage after the last gzip member.
        let mut file = gzip(&original);
        file.extend_from_slice(b"garbage!garbage!");
        let mut rng = Rng(6);
        assert!(decode(&file, &mut rng, original.len()).is_err());
    }

    #[test]
    fn compressed_qcow2_is_refused_before_anything_is_written() {
        let mut qcow2 = vec![0u8; 2 << 20];
        qcow2[..4].copy_from_slice(b"QFI\xfb");
        qcow2[4..8].copy_from_slice(&3u32.to_be_bytes());
        for file in [gzip(&qcow2), zstd(&qcow2), xz(&qcow2)] {
            let file = Bytes::from(file);
            let mut ops = 0;
            let mut dec = decoder(&file, None);
            let err = dec.feed(file.clone(), &mut |_| {
                ops += 1;
                Ok(())
            });
            let err = match err {
                Err(e) => e,
                Ok(()) => dec.finish(&mut &file[..], &mut |_| Ok(())).unwrap_err(),
            };
            assert_eq!(ops, 0);
            assert!(err.to_string().contains("-compressed qcow2 image"), "{err}");
        }
    }

    #[test]
    fn bombs_report_what_they_produced() {
        // 64 MiB of zeros in a few KiB: not an error here; the disk writer bounds it.
        let zeros = vec![0u8; 64 << 20];
        let file = Bytes::from(zstd(&zeros));
        assert!(file.len() < 64 << 10);
        let mut dec = decoder(&file, None);
        let mut max_op = 0;
        let mut total = 0;
        let mut out = |op: WriteOp| {
            max_op = max_op.max(op.len());
            total += op.len();
            Ok(())
        };
        dec.feed(file.clone(), &mut out).unwrap();
        let summary = dec.finish(&mut &file[..], &mut out).unwrap();
        assert_eq!(summary.image_size, 64 << 20);
        assert_eq!(total, 64 << 20);
        assert!(max_op <= OUT_BUF as u64 + GZ_SLACK as u64);
    }
}
