//! Review finding L1: each qcow2 structure had its own limit but nothing bounded them
//! together, so a hostile image could make the decoder hold hundreds of MiB. These images are
//! valid qcow2 that a decoder could stream, only wasteful; each must fail with the budget
//! error, and the heap the decoder took (measured by a counting allocator, so this file holds
//! one test: nothing else allocates meanwhile) must stay within the budget.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use image_pipeline::decoder::DEFAULT_DECODER_MEMORY;
use image_pipeline::{DecodeError, Decoder, Limits, Qcow2Decoder, Qcow2Error};

/// The system allocator, counting the bytes live now and at most.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

fn grew(by: usize) {
    let now = LIVE.fetch_add(by, Ordering::SeqCst) + by;
    PEAK.fetch_max(now, Ordering::SeqCst);
}

// SAFETY: every call is forwarded unchanged to `System`, which upholds the GlobalAlloc
// contract; the counters only observe sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: the caller's guarantees for `layout` are passed on as they are.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `System` (through `alloc`/`realloc` above) with
        // `layout`, as the caller guarantees.
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `dealloc`, and `new_size` is valid as the caller guarantees.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            // Both blocks may be live while the data moves.
            grew(new_size);
            LIVE.fetch_sub(layout.size(), Ordering::SeqCst);
        }
        p
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const CLUSTER: u64 = 512;

/// A version 3 qcow2 file with 512-byte clusters: the header in cluster 0, the L1 table from
/// cluster 1, then `l2_tables` L2 tables and one data cluster. `l1_entry(i)` and
/// `l2_entry(l2_offset, j, data_offset)` give the entries (0: unallocated).
fn build(
    virtual_size: u64,
    l1_entries: u64,
    l2_tables: u64,
    l1_entry: impl Fn(u64, u64) -> u64,
    l2_entry: impl Fn(u64, u64) -> u64,
) -> Vec<u8> {
    let l1_clusters = (l1_entries * 8).div_ceil(CLUSTER);
    let first_l2 = (1 + l1_clusters) * CLUSTER;
    let data = first_l2 + l2_tables * CLUSTER;
    let mut f = vec![0u8; (data + CLUSTER) as usize];
    let put =
        |f: &mut [u8], at: u64, v: &[u8]| f[at as usize..at as usize + v.len()].copy_from_slice(v);
    put(&mut f, 0, b"QFI\xfb");
    put(&mut f, 4, &3u32.to_be_bytes());
    put(&mut f, 20, &9u32.to_be_bytes());
    put(&mut f, 24, &virtual_size.to_be_bytes());
    put(&mut f, 36, &(l1_entries as u32).to_be_bytes());
    put(&mut f, 40, &CLUSTER.to_be_bytes());
    put(&mut f, 96, &4u32.to_be_bytes());
    put(&mut f, 100, &104u32.to_be_bytes());
    for i in 0..l1_entries {
        put(
            &mut f,
            CLUSTER + i * 8,
            &l1_entry(i, first_l2).to_be_bytes(),
        );
    }
    for t in 0..l2_tables {
        for j in 0..CLUSTER / 8 {
            put(
                &mut f,
                first_l2 + t * CLUSTER + j * 8,
                &l2_entry(j, data).to_be_bytes(),
            );
        }
    }
    f
}

/// Decodes `file` in 1 MiB chunks; returns the error and the most heap held meanwhile
/// beyond what was live before.
fn decode(file: &Bytes, limits: &Limits) -> (Option<DecodeError>, usize) {
    let base = LIVE.load(Ordering::SeqCst);
    PEAK.store(base, Ordering::SeqCst);
    let run = || -> Result<(), DecodeError> {
        let head = &file[..64 << 10];
        let mut dec = Box::new(Qcow2Decoder::new(
            head,
            Some(file.len() as u64),
            &mut &file[..],
            limits,
        )?);
        let mut out = |_: image_pipeline::WriteOp| Ok(());
        let mut at = 0;
        while at < file.len() {
            let end = (at + (1 << 20)).min(file.len());
            dec.feed(file.slice(at..end), &mut out)?;
            at = end;
        }
        dec.finish(&mut &file[..], &mut out).map(drop)
    };
    let err = run().err();
    (err, PEAK.load(Ordering::SeqCst) - base)
}

fn assert_over_budget(name: &str, file: &Bytes, what: &str) {
    let (err, peak) = decode(file, &Limits::default());
    let err = err.unwrap_or_else(|| panic!("{name}: decoded within the budget ({peak} bytes)"));
    match &err {
        DecodeError::Qcow2(Qcow2Error::MemoryBudget { what: w, budget }) => {
            assert_eq!((*w, *budget), (what, DEFAULT_DECODER_MEMORY), "{name}");
        }
        other => panic!("{name}: {other}"),
    }
    let msg = err.to_string();
    assert!(
        msg.contains("needs more than 16777216 bytes of decoder memory (max_decoder_memory)")
            && msg.contains("rewrite it with qemu-img convert"),
        "{msg}"
    );
    assert!(
        peak <= DEFAULT_DECODER_MEMORY as usize,
        "{name}: the decoder held {peak} bytes, more than its budget"
    );
}

#[test]
fn hostile_layouts_hit_the_memory_budget_not_the_allocator() {
    // A 32 GiB disk whose 1 Mi L1 entries (8 MiB) all name the same, empty, L2 table: the
    // L1 table and the list of its 1 Mi tables.
    let entries = 1 << 20;
    let file = Bytes::from(build(
        entries * 64 * CLUSTER,
        entries,
        1,
        |_, l2| l2,
        |_, _| 0,
    ));
    assert_over_budget(
        "one L2 table everywhere",
        &file,
        "the L1 table and its list of L2 tables",
    );

    // 1 Mi guest clusters (512 MiB) all mapped to the last cluster of the file, which comes
    // after every table: 1 Mi mappings ahead of the read position, none coalescible.
    let tables = 1 << 14;
    let file = Bytes::from(build(
        tables * 64 * CLUSTER,
        tables,
        tables,
        |i, l2| l2 + i * CLUSTER,
        |_, data| data,
    ));
    assert_over_budget(
        "every guest cluster on one host cluster",
        &file,
        "the clusters mapped ahead of the read position",
    );

    // The same layouts at a tenth of the size stream within the budget.
    let file = Bytes::from(build(
        (1 << 17) * 64 * CLUSTER,
        1 << 17,
        1,
        |_, l2| l2,
        |_, _| 0,
    ));
    let (err, _) = decode(&file, &Limits::default());
    assert!(err.is_none(), "{err:?}");
    let tables = 1 << 10;
    let file = Bytes::from(build(
        tables * 64 * CLUSTER,
        tables,
        tables,
        |i, l2| l2 + i * CLUSTER,
        |_, data| data,
    ));
    let (err, _) = decode(&file, &Limits::default());
    assert!(err.is_none(), "{err:?}");
}
