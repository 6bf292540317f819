//! The qcow2 → raw streaming decoder over arbitrary files: header, L1/L2 and refcount tables,
//! compressed clusters, and data stored out of order, fed in arbitrary chunkings, with the
//! tables read through a `RangeRead` over the same bytes.
//!
//! Input: one byte choosing the chunking and whether the file size is known, then the file.
//! Invariants: success or failure and the image written do not depend on the chunking; on
//! success the ops cover `[0, virtual_size)` exactly once.

#![no_main]

use bytes::Bytes;
use image_pipeline::{Decoder, Limits, Qcow2Decoder, WriteOp};
use ironic_agent_fuzz::{chunks, tile, Image};
use libfuzzer_sys::fuzz_target;

/// Guest bytes a run may emit before the target stops it: a 64 TiB virtual size is a few
/// Zero ops, but data is real bytes.
const MAX_DATA: u64 = 64 << 20;

fn decode(file: &Bytes, seed: u8, known_size: bool) -> Option<Image> {
    let head = &file[..file.len().min(image_pipeline::format::SNIFF_LEN)];
    let mut fetch: &[u8] = file;
    let size = known_size.then_some(file.len() as u64);
    let decoder = Qcow2Decoder::new(head, size, &mut fetch, &Limits::default()).ok()?;
    let virtual_size = decoder.virtual_size();
    let mut decoder: Box<dyn Decoder> = Box::new(decoder);
    let mut ops = Vec::new();
    let mut data = 0u64;
    let mut out = |op: WriteOp| {
        if let WriteOp::Data { data: d, .. } = &op {
            data += d.len() as u64;
            if data > MAX_DATA {
                return Err(image_pipeline::SinkClosed);
            }
        }
        assert!(
            op.end() <= virtual_size,
            "op {}..{} past the virtual size {virtual_size}",
            op.offset(),
            op.end()
        );
        ops.push(op);
        Ok(())
    };
    for chunk in chunks(file, seed) {
        decoder.feed(chunk, &mut out).ok()?;
    }
    let mut fetch: &[u8] = file;
    let summary = decoder.finish(&mut fetch, &mut out).ok()?;
    assert_eq!(summary.image_size, virtual_size);
    let image = tile(ops, virtual_size);
    assert_eq!(
        summary.bytes_written + summary.bytes_zeroed,
        virtual_size,
        "summary {summary:?}"
    );
    Some(image)
}

fuzz_target!(|input: &[u8]| {
    let Some((&control, file)) = input.split_first() else {
        return;
    };
    let file = Bytes::copy_from_slice(file);
    let known_size = control & 0x80 != 0;
    let seed = control & 0x7f;
    let whole = decode(&file, 0, known_size);
    if seed != 0 {
        let chunked = decode(&file, seed, known_size);
        assert_eq!(
            whole.is_some(),
            chunked.is_some(),
            "the chunking changed whether the image decodes"
        );
        assert_eq!(whole, chunked, "the chunking changed the image written");
    }
});
