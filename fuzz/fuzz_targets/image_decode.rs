//! What the pipeline does with the head of any image file: format sniffing and IPA's format
//! policy (`inspect`), then the decoder it picks (raw, gzip/zstd/xz around a raw disk with
//! the payload policy, or qcow2) over the whole file in arbitrary chunkings.
//!
//! Input: one byte choosing the declared `disk_format`, deep inspection and the chunking,
//! then the file. Invariants: on success the ops cover `[0, image_size)` exactly once, and
//! what the summary counts is what was sent; a raw file is written bit for bit.

#![no_main]

use bytes::Bytes;
use image_pipeline::format::{default_permitted_formats, Plan, SNIFF_LEN};
use image_pipeline::{inspect, open_decoder, Limits, SinkClosed, WriteOp};
use ironic_agent_fuzz::{chunks, tile};
use libfuzzer_sys::fuzz_target;

/// Bytes a run may emit: a few KiB of zstd can declare gigabytes of zeros, which is the
/// sink's problem (it stops the decoder), not a parser bug.
const MAX_OUTPUT: u64 = 64 << 20;

const DECLARED: [Option<&str>; 6] = [
    None,
    Some("raw"),
    Some("qcow2"),
    Some("gpt"),
    Some("unknown"),
    Some("iso"),
];

fuzz_target!(|input: &[u8]| {
    let Some((&control, file)) = input.split_first() else {
        return;
    };
    let file = Bytes::copy_from_slice(file);
    let declared = DECLARED[usize::from(control & 7) % DECLARED.len()];
    let deep = control & 8 != 0;
    let seed = control >> 4;
    let head = &file[..file.len().min(SNIFF_LEN)];
    let Ok(inspection) = inspect(head, declared, &default_permitted_formats(), deep) else {
        return;
    };
    let mut fetch: &[u8] = &file;
    let Ok(opened) = open_decoder(
        head,
        &inspection,
        Some(file.len() as u64),
        &mut fetch,
        &Limits::default(),
    ) else {
        return;
    };
    let mut decoder = opened.decoder;
    let mut ops = Vec::new();
    let mut sent = 0u64;
    let mut out = |op: WriteOp| {
        sent += op.len();
        if sent > MAX_OUTPUT {
            return Err(SinkClosed);
        }
        if let Some(size) = opened.target_size {
            assert!(
                op.end() <= size,
                "op {}..{} past {size}",
                op.offset(),
                op.end()
            );
        }
        ops.push(op);
        Ok(())
    };
    for chunk in chunks(&file, seed) {
        if decoder.feed(chunk, &mut out).is_err() {
            return;
        }
    }
    let mut fetch: &[u8] = &file;
    let Ok(summary) = decoder.finish(&mut fetch, &mut out) else {
        return;
    };
    if let Some(size) = opened.target_size {
        assert_eq!(summary.image_size, size);
    }
    if let Plan::Raw(_) = inspection.plan {
        let mut bytes = Vec::new();
        for op in &ops {
            match op {
                WriteOp::Data { offset, data } => {
                    assert_eq!(*offset, bytes.len() as u64, "raw ops out of order");
                    bytes.extend_from_slice(data);
                }
                WriteOp::Zero { .. } => panic!("a raw file became a Zero op"),
            }
        }
        assert_eq!(bytes, &file[..], "a raw file was not written bit for bit");
    }
    let data: u64 = ops
        .iter()
        .filter(|op| matches!(op, WriteOp::Data { .. }))
        .map(WriteOp::len)
        .sum();
    assert_eq!(summary.bytes_written, data, "summary {summary:?}");
    tile(ops, summary.image_size);
});
