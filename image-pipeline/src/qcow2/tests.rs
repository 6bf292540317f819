//! qcow2 decoding against `qemu-img convert -O raw`, on images made by qemu-img and qemu-io
//! (and a few built by hand for layouts QEMU does not write), fed in random chunks; plus
//! hostile headers and tables.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use bytes::Bytes;

use super::*;
use crate::decoder::open_decoder;
use crate::decoder::testutil::{random_chunks, Rng, Target};
use crate::format::{default_permitted_formats, inspect, Plan, SNIFF_LEN};
use crate::WriteOp;

struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Self {
        Dir(tempfile::tempdir().expect("temp dir"))
    }

    fn path(&self, name: &str) -> PathBuf {
        self.0.path().join(name)
    }
}

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd}: {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn qemu_img(args: &[&str]) {
    run("qemu-img", args);
}

fn qemu_io(image: &Path, cmds: &[&str]) {
    let mut args = vec!["-f", "qcow2"];
    for c in cmds {
        args.push("-c");
        args.push(c);
    }
    args.push(image.to_str().unwrap());
    run("qemu-io", &args);
}

/// QEMU's own conversion: the reference.
fn reference(dir: &Dir, image: &Path) -> Vec<u8> {
    let raw = dir.path("reference.raw");
    qemu_img(&[
        "convert",
        "-f",
        "qcow2",
        "-O",
        "raw",
        image.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    std::fs::read(raw).unwrap()
}

/// A raw disk with random data, patterns, zeros, and a size that is not a multiple of the
/// cluster size.
fn source_raw(dir: &Dir, len: usize, seed: u64) -> PathBuf {
    let mut rng = Rng(seed);
    let mut d = vec![0u8; len];
    let mut at = 0;
    while at < len {
        let n = (rng.range(1, 3 << 20) as usize).min(len - at);
        match rng.next() % 4 {
            0 => {}
            1 => d[at..at + n].fill(rng.next() as u8),
            _ => d[at..at + n].iter_mut().for_each(|b| *b = rng.next() as u8),
        }
        at += n;
    }
    let path = dir.path("source.raw");
    std::fs::write(&path, d).unwrap();
    path
}

fn convert(dir: &Dir, src: &Path, name: &str, opts: &[&str]) -> PathBuf {
    let dst = dir.path(name);
    let mut args = vec!["convert", "-f", "raw", "-O", "qcow2"];
    args.extend_from_slice(opts);
    args.push(src.to_str().unwrap());
    args.push(dst.to_str().unwrap());
    qemu_img(&args);
    dst
}

struct Decoded {
    summary: DecodeSummary,
    target: Target,
    stats: Qcow2Stats,
}

/// Feeds `file` to a fresh decoder in `chunks`, finishes it with `finish_fetch`.
fn decode_chunks(
    file: &Bytes,
    chunks: Vec<Bytes>,
    finish_fetch: &mut dyn RangeRead,
    limits: &Limits,
) -> Result<Decoded, DecodeError> {
    let head = &file[..file.len().min(SNIFF_LEN)];
    let mut dec = Box::new(Qcow2Decoder::new(
        head,
        Some(file.len() as u64),
        &mut &file[..],
        limits,
    )?);
    let mut target = Target::new(dec.virtual_size() as usize);
    let mut out = |op: WriteOp| {
        target.apply(op);
        Ok(())
    };
    let mut peak = Qcow2Stats::default();
    for chunk in chunks {
        dec.feed(chunk, &mut out)?;
        let s = dec.stats();
        peak.heap_bytes = peak.heap_bytes.max(s.heap_bytes);
    }
    let mut stats = dec.stats();
    stats.heap_bytes = peak.heap_bytes;
    let summary = dec.finish(finish_fetch, &mut out)?;
    Ok(Decoded {
        summary,
        target,
        stats,
    })
}

/// Decodes `image` in several random chunkings and compares each result with qemu-img's.
fn check(dir: &Dir, image: &Path, rounds: usize) -> Decoded {
    let want = reference(dir, image);
    let file = Bytes::from(std::fs::read(image).unwrap());
    let mut rng = Rng(file.len() as u64 ^ 0x9e37_79b9);
    let mut last = None;
    for round in 0..rounds {
        // Round 0 in ~1 MiB chunks like the download; the others random.
        let chunks = if round == 0 {
            (0..file.len())
                .step_by(1 << 20)
                .map(|i| file.slice(i..(i + (1 << 20)).min(file.len())))
                .collect()
        } else {
            random_chunks(&file, &mut rng, 3 << 20)
        };
        let d = decode_chunks(&file, chunks, &mut &file[..], &Limits::default())
            .unwrap_or_else(|e| panic!("{} round {round}: {e}", image.display()));
        assert_eq!(d.target.bytes.len(), want.len());
        if let Some(i) = d.target.bytes.iter().zip(&want).position(|(a, b)| a != b) {
            panic!(
                "{} round {round}: first difference at byte {i:#x}",
                image.display()
            );
        }
        d.target.assert_exactly_covered();
        assert_eq!(d.summary.image_size, want.len() as u64);
        assert_eq!(
            d.summary.bytes_written + d.summary.bytes_zeroed,
            want.len() as u64
        );
        assert_eq!(d.summary.format, ImageFormat::Qcow2);
        last = Some(d);
    }
    last.unwrap()
}

const SRC_LEN: usize = (24 << 20) + 4608;

#[test]
fn convert_default_v3_64k() {
    let dir = Dir::new();
    let src = source_raw(&dir, SRC_LEN, 1);
    let d = check(&dir, &convert(&dir, &src, "a.qcow2", &[]), 6);
    assert_eq!(
        d.summary.refetched_bytes, 0,
        "qemu-img convert output needs no re-read"
    );
    assert_eq!(d.stats.refetch_entries, 0);
    assert!(d.stats.digests <= 2, "only refcount blocks: {:?}", d.stats);
    // Large ops: adjacent clusters of a 1 MiB chunk merge into one.
    let avg = d.target.data_bytes / d.target.data_ops as u64;
    assert!(avg >= 128 << 10, "average data op {avg} bytes");
}

#[test]
fn convert_compressed_zlib_and_zstd() {
    let dir = Dir::new();
    let src = source_raw(&dir, SRC_LEN, 2);
    let d = check(&dir, &convert(&dir, &src, "z.qcow2", &["-c"]), 4);
    assert!(d.stats.peak_window_bytes <= 3 * 65536, "{:?}", d.stats);
    check(
        &dir,
        &convert(
            &dir,
            &src,
            "zs.qcow2",
            &["-c", "-o", "compression_type=zstd"],
        ),
        4,
    );
    check(
        &dir,
        &convert(&dir, &src, "z512.qcow2", &["-c", "-o", "cluster_size=512"]),
        2,
    );
    check(
        &dir,
        &convert(&dir, &src, "z2m.qcow2", &["-c", "-o", "cluster_size=2M"]),
        3,
    );
    check(
        &dir,
        &convert(&dir, &src, "zv2.qcow2", &["-c", "-o", "compat=0.10"]),
        2,
    );
}

#[test]
fn convert_cluster_sizes_and_versions() {
    let dir = Dir::new();
    let src = source_raw(&dir, SRC_LEN, 3);
    check(
        &dir,
        &convert(&dir, &src, "c512.qcow2", &["-o", "cluster_size=512"]),
        3,
    );
    check(
        &dir,
        &convert(&dir, &src, "c2m.qcow2", &["-o", "cluster_size=2M"]),
        4,
    );
    check(
        &dir,
        &convert(&dir, &src, "v2.qcow2", &["-o", "compat=0.10"]),
        4,
    );
    check(
        &dir,
        &convert(&dir, &src, "pre.qcow2", &["-o", "preallocation=metadata"]),
        4,
    );
    check(
        &dir,
        &convert(
            &dir,
            &src,
            "ext.qcow2",
            &["-o", "extended_l2=on,cluster_size=128k"],
        ),
        4,
    );
}

#[test]
fn qemu_io_writes_zero_clusters_and_preallocation() {
    let dir = Dir::new();
    let img = dir.path("io.qcow2");
    let s = img.to_str().unwrap();
    qemu_img(&["create", "-q", "-f", "qcow2", s, "64M"]);
    qemu_io(
        &img,
        &[
            "write -P 0xab 1M 64k",
            "write -P 0xcd 5M 3M",
            "write -z 6M 64k",
            "write -z -u 7M 128k",
            "write -P 0x11 63M 1M",
            "write -z 63M 512k",
        ],
    );
    check(&dir, &img, 5);

    // Preallocated, zero-flagged clusters with host offsets: still zeroed for real.
    let pre = dir.path("pre.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "preallocation=metadata",
        pre.to_str().unwrap(),
        "8M",
    ]);
    qemu_io(&pre, &["write -P 0x42 1M 100k"]);
    check(&dir, &pre, 3);

    // Extended L2 entries: subclusters allocated, zeroed, unallocated.
    let ext = dir.path("ext.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "extended_l2=on",
        ext.to_str().unwrap(),
        "4M",
    ]);
    qemu_io(
        &ext,
        &[
            "write -P 1 0 4k",
            "write -z 10k 2k",
            "write -P 2 100k 1k",
            "write -P 3 3M 300k",
        ],
    );
    check(&dir, &ext, 5);
}

#[test]
fn virtual_size_not_a_multiple_of_the_cluster() {
    let dir = Dir::new();
    let img = dir.path("odd.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        img.to_str().unwrap(),
        "1000001",
    ]);
    qemu_io(&img, &["write -P 0x5a 900k 76k"]);
    let d = check(&dir, &img, 4);
    assert_eq!(d.summary.image_size, 1000448); // qemu rounds up to 512
}

/// A data cluster written after its L2 table was allocated elsewhere: QEMU reuses a freed
/// cluster that lies before the table. The decoder must re-read it in `finish` and check it.
fn out_of_order_image(dir: &Dir) -> PathBuf {
    let img = dir.path("ooo.qcow2");
    // 4 KiB clusters: an L2 table maps 2 MiB.
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4k",
        img.to_str().unwrap(),
        "8M",
    ]);
    qemu_io(&img, &["write -P 0x11 4M 8k", "write -P 0x22 0 4k"]);
    // Frees the two clusters after the 4M region's table; a new open of the image reuses
    // them for the next writes to region 0, before region 0's table.
    qemu_io(&img, &["discard 4M 8k"]);
    qemu_io(&img, &["write -P 0x33 4k 8k", "write -P 0x44 6M 4k"]);
    img
}

#[test]
fn data_before_its_l2_table_is_refetched_and_verified() {
    let dir = Dir::new();
    let img = out_of_order_image(&dir);
    let d = check(&dir, &img, 6);
    assert_eq!(d.summary.refetched_bytes, 8192, "{:?}", d.summary);
    assert_eq!(d.stats.refetch_entries, 2, "{:?}", d.stats);
}

/// Serves the file, but with one byte changed from `from` on (the server changed the file).
struct Tampered<'a> {
    file: &'a [u8],
    reads: Vec<(u64, u64)>,
}

impl RangeRead for Tampered<'_> {
    fn read_range(&mut self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        self.reads.push((offset, len));
        let mut v = (&self.file[..]).read_range(offset, len)?;
        if let Some(b) = v.last_mut() {
            *b ^= 1;
        }
        Ok(v)
    }
}

#[test]
fn a_tampered_refetch_is_refused() {
    let dir = Dir::new();
    let img = out_of_order_image(&dir);
    let file = Bytes::from(std::fs::read(&img).unwrap());
    let chunks = vec![file.clone()];
    let mut tampered = Tampered {
        file: &file,
        reads: Vec::new(),
    };
    let err = decode_chunks(&file, chunks, &mut tampered, &Limits::default())
        .err()
        .expect("must fail");
    assert!(
        matches!(err, DecodeError::Qcow2(Qcow2Error::RefetchMismatch { .. })),
        "{err}"
    );
    assert!(err.to_string().contains("changed on the server"), "{err}");
    // Adjacent clusters were read in one request.
    assert_eq!(tampered.reads.len(), 1, "{:?}", tampered.reads);
}

/// Serves the file, but with `forgery` at `offset` (a server whose Range answers differ from
/// the stream).
struct Forged<'a> {
    file: &'a [u8],
    offset: usize,
    forgery: &'a [u8],
    reads: Vec<(u64, u64)>,
}

impl RangeRead for Forged<'_> {
    fn read_range(&mut self, offset: u64, len: u64) -> std::io::Result<Vec<u8>> {
        self.reads.push((offset, len));
        let mut file = self.file.to_vec();
        file[self.offset..self.offset + self.forgery.len()].copy_from_slice(self.forgery);
        (&file[..]).read_range(offset, len)
    }
}

/// Feeds `chunks` to a decoder built with `fetch`, until the first error; returns it and how
/// many ops were emitted before it.
fn feed_until_error(
    file: &Bytes,
    head_len: usize,
    fetch: &mut dyn RangeRead,
    chunks: Vec<Bytes>,
) -> (DecodeError, usize) {
    let mut dec = Box::new(
        Qcow2Decoder::new(
            &file[..head_len],
            Some(file.len() as u64),
            fetch,
            &Limits::default(),
        )
        .expect("the forgery is not detectable before the stream"),
    );
    let mut ops = 0;
    let mut out = |_: WriteOp| {
        ops += 1;
        Ok(())
    };
    for chunk in chunks {
        if let Err(e) = dec.feed(chunk, &mut out) {
            return (e, ops);
        }
    }
    let e = dec.finish(&mut &file[..], &mut out).expect_err("must fail");
    (e, ops)
}

#[test]
fn a_forged_l1_table_from_a_range_request_is_refused() {
    let dir = Dir::new();
    let src = source_raw(&dir, 3 << 20, 11);
    let img = convert(&dir, &src, "l1.qcow2", &[]);
    let file = Bytes::from(std::fs::read(&img).unwrap());
    let l1 = l1_offset(&file);
    assert!(
        l1 >= SNIFF_LEN,
        "the L1 table must lie past the sniffed head"
    );
    // Entry 0 unallocated: without the check the whole disk would be zeroed, silently.
    let zeroed = [0u8; 8];
    let mut rng = Rng(11);
    for round in 0..4 {
        let chunks = if round == 0 {
            (0..file.len())
                .step_by(1 << 20)
                .map(|i| file.slice(i..(i + (1 << 20)).min(file.len())))
                .collect()
        } else {
            random_chunks(&file, &mut rng, 256 << 10)
        };
        let mut forged = Forged {
            file: &file,
            offset: l1,
            forgery: &zeroed,
            reads: Vec::new(),
        };
        let (err, ops) = feed_until_error(&file, SNIFF_LEN, &mut forged, chunks);
        assert_eq!(forged.reads.len(), 1, "{:?}", forged.reads);
        match err {
            DecodeError::RangeMismatch { what, offset, len } => {
                assert_eq!((what, offset, len), ("qcow2 L1 table", l1 as u64, 8));
            }
            other => panic!("round {round}: {other}"),
        }
        assert!(err.is_inconsistent_source());
        let msg = err.to_string();
        assert!(
            msg.contains("qcow2 L1 table fetched by a range request")
                && msg.contains(&format!("offset {l1:#x}"))
                && msg.contains("the image server returned inconsistent data"),
            "{msg}"
        );
        if round == 0 {
            // The chunk holding the table is checked before it is decoded.
            assert_eq!(ops, 0, "ops emitted from a forged table");
        }
    }
}

#[test]
fn a_forged_header_cluster_from_a_range_request_is_refused() {
    let dir = Dir::new();
    let src = source_raw(&dir, 1 << 20, 12);
    let img = convert(&dir, &src, "h.qcow2", &[]);
    let file = Bytes::from(std::fs::read(&img).unwrap());
    // A head shorter than 4 KiB makes the decoder fetch the rest of the header area.
    let forgery = [0xee; 4];
    let mut forged = Forged {
        file: &file,
        offset: 2000,
        forgery: &forgery,
        reads: Vec::new(),
    };
    let (err, _) = feed_until_error(&file, 512, &mut forged, vec![file.clone()]);
    assert_eq!(forged.reads[0], (0, 4096), "{:?}", forged.reads);
    assert!(
        matches!(
            err,
            DecodeError::RangeMismatch {
                what: "qcow2 header cluster",
                offset: 0,
                len: 4096
            }
        ),
        "{err}"
    );
}

#[test]
fn a_stream_that_ends_inside_a_fetched_range_is_refused() {
    let dir = Dir::new();
    let src = source_raw(&dir, 1 << 20, 13);
    let img = convert(&dir, &src, "t.qcow2", &[]);
    let file = Bytes::from(std::fs::read(&img).unwrap());
    let l1 = l1_offset(&file);
    let mut dec = Box::new(
        Qcow2Decoder::new(&file[..SNIFF_LEN], None, &mut &file[..], &Limits::default()).unwrap(),
    );
    let mut out = |_: WriteOp| Ok(());
    dec.feed(file.slice(..l1 + 4), &mut out).unwrap();
    let err = dec.finish(&mut &file[..], &mut out).expect_err("must fail");
    assert!(
        matches!(
            err,
            DecodeError::RangeMismatch {
                what: "qcow2 L1 table",
                ..
            }
        ),
        "{err}"
    );
}

#[test]
fn the_full_path_through_inspect_and_open_decoder() {
    let dir = Dir::new();
    let src = source_raw(&dir, 3 << 20, 4);
    let img = convert(&dir, &src, "full.qcow2", &["-c"]);
    let file = Bytes::from(std::fs::read(&img).unwrap());
    let head = &file[..SNIFF_LEN.min(file.len())];
    let insp = inspect(head, Some("qcow2"), &default_permitted_formats(), true).unwrap();
    assert_eq!(insp.plan, Plan::Qcow2);
    let opened = open_decoder(
        head,
        &insp,
        Some(file.len() as u64),
        &mut &file[..],
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(opened.target_size, Some(3 << 20));
    let (summary, target) = crate::decoder::testutil::run_decoder(
        opened.decoder,
        vec![file.clone()],
        &mut &file[..],
        3 << 20,
    )
    .unwrap();
    assert_eq!(target.bytes, std::fs::read(&src).unwrap());
    assert_eq!(summary.format.to_string(), "qcow2");
}

/// Ops must cover [0, len) exactly once; returns the data ops' (offset, bytes).
fn check_coverage(ops: &mut [(u64, u64)], len: u64) {
    ops.sort_unstable();
    let mut at = 0;
    for &(o, l) in ops.iter() {
        assert_eq!(o, at, "gap or overlap at {at:#x}");
        at = o + l;
    }
    assert_eq!(at, len);
}

#[test]
fn an_8_gib_sparse_disk_streams_in_kilobytes() {
    let dir = Dir::new();
    let img = dir.path("sparse.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "8G"]);
    qemu_io(
        &img,
        &[
            "write -P 0x01 0 1M",
            "write -P 0x02 4G 1M",
            "write -P 0x03 8388544k 64k",
        ],
    );
    let file = Bytes::from(std::fs::read(&img).unwrap());
    assert!(file.len() < 8 << 20);
    let mut rng = Rng(8);
    let chunks = random_chunks(&file, &mut rng, 3 << 20);
    let head = &file[..SNIFF_LEN];
    let mut dec = Box::new(
        Qcow2Decoder::new(
            head,
            Some(file.len() as u64),
            &mut &file[..],
            &Limits::default(),
        )
        .unwrap(),
    );
    let mut spans = Vec::new();
    let mut zeroed = 0u64;
    let mut out = |op: WriteOp| {
        match &op {
            WriteOp::Data { offset, data } => {
                let want = match offset >> 30 {
                    0 => 1,
                    4 => 2,
                    _ => 3,
                };
                assert!(data.iter().all(|b| *b == want), "data at {offset:#x}");
            }
            WriteOp::Zero { len, .. } => zeroed += len,
        }
        spans.push((op.offset(), op.len()));
        Ok(())
    };
    let mut peak_heap = 0;
    for c in chunks {
        dec.feed(c, &mut out).unwrap();
        peak_heap = peak_heap.max(dec.stats().heap_bytes);
    }
    let stats = dec.stats();
    let summary = dec.finish(&mut &file[..], &mut out).unwrap();
    assert!(peak_heap < 512 << 10, "heap {peak_heap} bytes: {stats:?}");
    assert!(stats.peak_ahead_runs <= 4, "{stats:?}");
    assert!(stats.digests <= 16, "{stats:?}");
    assert_eq!(zeroed, (8 << 30) - (2 << 20) - (64 << 10));
    assert!(spans.len() < 64, "{} ops", spans.len());
    check_coverage(&mut spans, 8 << 30);
    assert_eq!(summary.image_size, 8 << 30);
    assert_eq!(summary.bytes_zeroed, zeroed);
}

// ---------------------------------------------------------------------------------------
// Images built by hand: layouts QEMU does not write, and hostile tables.

/// What goes into each cluster of a hand-built image, after the fixed ones (header, L1,
/// refcount table, refcount block).
#[derive(Clone)]
enum Slot {
    /// The L2 table of this L1 index.
    L2(u64),
    /// Guest cluster, stored uncompressed.
    Data(u64),
    /// Guest clusters compressed (raw deflate) back to back, byte-packed; may span clusters.
    Compressed(Vec<u64>),
}

const FIXED: u64 = 4;

/// A v3 qcow2 with `cluster_bits`, `guest` as content and the given layout. Guest clusters
/// in no slot are unallocated: they are zeroed in `guest`.
fn build(cluster_bits: u32, guest: &mut [u8], layout: &[Slot]) -> Vec<u8> {
    let cs = 1usize << cluster_bits;
    let mut mapped = vec![false; guest.len().div_ceil(cs)];
    for slot in layout {
        match slot {
            Slot::Data(g) => mapped[*g as usize] = true,
            Slot::Compressed(gs) => gs.iter().for_each(|g| mapped[*g as usize] = true),
            Slot::L2(_) => {}
        }
    }
    for (g, m) in mapped.iter().enumerate() {
        if !m {
            let end = ((g + 1) * cs).min(guest.len());
            guest[g * cs..end].fill(0);
        }
    }
    let guest = &*guest;
    let cs = 1u64 << cluster_bits;
    let vsize = guest.len() as u64;
    let l2_entries = cs / 8;
    let guest_clusters = vsize.div_ceil(cs);
    let l1_size = guest_clusters.div_ceil(l2_entries);
    assert!(l1_size * 8 <= cs);
    let cluster = |g: u64| {
        let mut c = vec![0u8; cs as usize];
        let s = (g * cs) as usize;
        let e = (s + cs as usize).min(guest.len());
        c[..e - s].copy_from_slice(&guest[s..e]);
        c
    };
    // Place slots.
    let mut file_clusters: Vec<Vec<u8>> = vec![vec![0; cs as usize]; FIXED as usize];
    let mut l1 = vec![0u64; l1_size as usize];
    let mut l2: Vec<(u64, Vec<u64>)> = Vec::new(); // (host cluster, entries) per L1 index
    let mut entries = vec![0u64; (l1_size * l2_entries) as usize];
    for slot in layout {
        let host = file_clusters.len() as u64;
        match slot {
            Slot::L2(i) => {
                l1[*i as usize] = (host * cs) | COPIED;
                l2.push((host, vec![*i]));
                file_clusters.push(vec![0; cs as usize]);
            }
            Slot::Data(g) => {
                entries[*g as usize] = (host * cs) | COPIED;
                file_clusters.push(cluster(*g));
            }
            Slot::Compressed(gs) => {
                let mut packed = Vec::new();
                let x = 62 - (cluster_bits - 8);
                for g in gs {
                    let off = host * cs + packed.len() as u64;
                    let mut enc = flate2::write::DeflateEncoder::new(
                        Vec::new(),
                        flate2::Compression::default(),
                    );
                    enc.write_all(&cluster(*g)).unwrap();
                    let c = enc.finish().unwrap();
                    let end = off + c.len() as u64;
                    let sectors = (end - 1) / 512 - off / 512;
                    entries[*g as usize] = COMPRESSED | (sectors << x) | off;
                    packed.extend(c);
                }
                packed.resize(packed.len().next_multiple_of(cs as usize), 0);
                for c in packed.chunks(cs as usize) {
                    file_clusters.push(c.to_vec());
                }
            }
        }
    }
    for (host, is) in &l2 {
        let i = is[0] as usize;
        let table = &mut file_clusters[*host as usize];
        for j in 0..l2_entries as usize {
            table[j * 8..j * 8 + 8]
                .copy_from_slice(&entries[i * l2_entries as usize + j].to_be_bytes());
        }
    }
    let total = file_clusters.len() as u64;
    // Header.
    let h = &mut file_clusters[0];
    h[..4].copy_from_slice(b"QFI\xfb");
    h[4..8].copy_from_slice(&3u32.to_be_bytes());
    h[20..24].copy_from_slice(&cluster_bits.to_be_bytes());
    h[24..32].copy_from_slice(&vsize.to_be_bytes());
    h[36..40].copy_from_slice(&(l1_size as u32).to_be_bytes());
    h[40..48].copy_from_slice(&cs.to_be_bytes());
    h[48..56].copy_from_slice(&(2 * cs).to_be_bytes());
    h[56..60].copy_from_slice(&1u32.to_be_bytes());
    h[96..100].copy_from_slice(&4u32.to_be_bytes());
    h[100..104].copy_from_slice(&104u32.to_be_bytes());
    // L1.
    for (i, e) in l1.iter().enumerate() {
        file_clusters[1][i * 8..i * 8 + 8].copy_from_slice(&e.to_be_bytes());
    }
    // Refcounts: one block. Metadata, tables and data clusters are used once; a cluster
    // holding compressed data once per compressed cluster touching it (by sectors).
    file_clusters[2][..8].copy_from_slice(&(3 * cs).to_be_bytes());
    assert!(total <= cs / 2);
    let mut refcounts = vec![0u16; total as usize];
    for r in refcounts.iter_mut().take(FIXED as usize) {
        *r = 1;
    }
    for (host, _) in &l2 {
        refcounts[*host as usize] += 1;
    }
    let x = 62 - (cluster_bits - 8);
    for e in &entries {
        if e & COMPRESSED != 0 {
            let off = e & ((1 << x) - 1);
            let sectors = (e >> x) & ((1 << (cluster_bits - 8)) - 1);
            let end = (off / 512 + sectors + 1) * 512;
            for c in off / cs..=(end - 1) / cs {
                refcounts[c as usize] += 1;
            }
        } else if e & OFFSET_MASK != 0 {
            refcounts[((e & OFFSET_MASK) / cs) as usize] += 1;
        }
    }
    for (c, r) in refcounts.iter().enumerate() {
        file_clusters[3][c * 2..c * 2 + 2].copy_from_slice(&r.to_be_bytes());
    }
    file_clusters.concat()
}

fn guest_content(len: usize, seed: u64) -> Vec<u8> {
    let mut rng = Rng(seed);
    (0..len)
        .map(|i| {
            if (i / 700) % 3 == 0 {
                0
            } else {
                (rng.next() % 7) as u8
            }
        })
        .collect()
}

fn check_built(dir: &Dir, name: &str, bytes: &[u8], guest: &[u8], rounds: usize) -> Decoded {
    let path = dir.path(name);
    std::fs::write(&path, bytes).unwrap();
    qemu_img(&["check", "-q", path.to_str().unwrap()]);
    // QEMU ignores a partial last sector of the virtual size, and so does the decoder.
    let guest = &guest[..guest.len() / 512 * 512];
    let qemu = reference(dir, &path);
    assert_eq!(qemu.len(), guest.len(), "{name}: virtual size");
    if let Some(i) = qemu.iter().zip(guest).position(|(a, b)| a != b) {
        panic!("{name}: the hand-built image itself is wrong from byte {i:#x}");
    }
    check(dir, &path, rounds)
}

#[test]
fn hand_built_data_and_compressed_clusters_before_their_table() {
    let dir = Dir::new();
    let mut guest = guest_content(8 * 4096 + 1000, 11);
    // 4 KiB clusters, one L2 table for everything, written last.
    let layout = [
        Slot::Data(3),
        Slot::Compressed(vec![0, 1, 5]),
        Slot::Data(4),
        Slot::Data(7),
        Slot::Data(8),
        Slot::L2(0),
        Slot::Data(2),
    ];
    let bytes = build(12, &mut guest, &layout);
    let d = check_built(&dir, "behind.qcow2", &bytes, &guest, 8);
    assert!(d.summary.refetched_bytes > 0);
    // 3, 4 in one read (+ compressed cluster run), 7, 8 adjacent too.
    assert!(d.stats.refetch_entries == 7, "{:?}", d.stats);

    // The same with small clusters, where compressed data spans several clusters.
    let mut guest = guest_content(40 * 512, 12);
    let layout = [
        Slot::Compressed(vec![0, 1, 2, 3, 9]),
        Slot::L2(0),
        Slot::Compressed(vec![4, 5]),
        Slot::Data(6),
    ];
    let bytes = build(9, &mut guest, &layout);
    check_built(&dir, "behind512.qcow2", &bytes, &guest, 12);
}

#[test]
fn hand_built_interleaved_tables() {
    let dir = Dir::new();
    // 512 B clusters: 64 entries per L2 table, so several tables.
    let mut guest = guest_content(300 * 512 + 100, 13);
    let mut layout = vec![Slot::L2(4), Slot::Data(299), Slot::Data(0), Slot::L2(0)];
    layout.extend((1..40).map(Slot::Data));
    layout.push(Slot::L2(1));
    layout.push(Slot::Compressed((64..90).collect()));
    layout.extend((100..110).map(Slot::Data));
    layout.push(Slot::L2(3));
    layout.extend((200..230).rev().map(Slot::Data));
    let bytes = build(9, &mut guest, &layout);
    check_built(&dir, "interleaved.qcow2", &bytes, &guest, 10);
}

#[test]
fn a_host_cluster_mapped_twice_is_written_twice() {
    let dir = Dir::new();
    let mut guest = guest_content(16 * 4096, 14);
    let mut bytes = build(12, &mut guest, &[Slot::L2(0), Slot::Data(1)]);
    // Map guest cluster 9 to the same host cluster as guest cluster 1.
    let l2 = 4 * 4096;
    let e1: [u8; 8] = bytes[l2 + 8..l2 + 16].try_into().unwrap();
    bytes[l2 + 72..l2 + 80].copy_from_slice(&e1);
    let path = dir.path("twice.qcow2");
    std::fs::write(&path, &bytes).unwrap();
    let d = check(&dir, &path, 4);
    assert_eq!(&d.target.bytes[9 * 4096..10 * 4096], &guest[4096..8192]);
}

// ---------------------------------------------------------------------------------------
// Hostile headers and tables.

/// A small valid image to patch: 1 MiB virtual, 64 KiB clusters, some data.
fn small_image(dir: &Dir) -> Vec<u8> {
    let img = dir.path("small.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", img.to_str().unwrap(), "1M"]);
    qemu_io(&img, &["write -P 0x77 0 64k", "write -P 0x78 512k 64k"]);
    std::fs::read(img).unwrap()
}

/// A name, a damaged image, and the error it must give.
type Case = (&'static str, Vec<u8>, fn(&Qcow2Error) -> bool);

fn open(bytes: &[u8]) -> Result<Qcow2Decoder, DecodeError> {
    Qcow2Decoder::new(
        &bytes[..bytes.len().min(SNIFF_LEN)],
        Some(bytes.len() as u64),
        &mut &bytes[..],
        &Limits::default(),
    )
}

/// Opens and streams the whole image.
fn decode_all(bytes: &[u8]) -> Result<DecodeSummary, DecodeError> {
    let file = Bytes::copy_from_slice(bytes);
    let mut dec = Box::new(open(bytes)?);
    let mut out = |_op: WriteOp| Ok(());
    dec.feed(file.clone(), &mut out)?;
    dec.finish(&mut &file[..], &mut out)
}

fn qerr(r: Result<impl Sized, DecodeError>) -> Qcow2Error {
    match r {
        Err(DecodeError::Qcow2(e)) => e,
        Err(e) => panic!("not a qcow2 error: {e}"),
        Ok(_) => panic!("accepted"),
    }
}

fn patched(base: &[u8], at: usize, value: &[u8]) -> Vec<u8> {
    let mut b = base.to_vec();
    b[at..at + value.len()].copy_from_slice(value);
    b
}

fn l1_offset(b: &[u8]) -> usize {
    be64(b, 40) as usize
}

#[test]
fn hostile_headers() {
    let dir = Dir::new();
    let base = small_image(&dir);
    assert!(decode_all(&base).is_ok());
    let be32 = |v: u32| v.to_be_bytes().to_vec();
    let be64v = |v: u64| v.to_be_bytes().to_vec();
    let cases: Vec<Case> = vec![
        ("bad magic", patched(&base, 0, b"QFI\0"), |e| {
            matches!(e, Qcow2Error::BadMagic)
        }),
        ("version 1", patched(&base, 4, &be32(1)), |e| {
            matches!(e, Qcow2Error::UnsupportedVersion(1))
        }),
        ("version 4", patched(&base, 4, &be32(4)), |e| {
            matches!(e, Qcow2Error::UnsupportedVersion(4))
        }),
        ("backing file", patched(&base, 8, &be64v(0x200)), |e| {
            matches!(e, Qcow2Error::BackingFile { .. })
        }),
        ("backing size", patched(&base, 16, &be32(5)), |e| {
            matches!(e, Qcow2Error::BackingFile { .. })
        }),
        ("cluster_bits 8", patched(&base, 20, &be32(8)), |e| {
            matches!(e, Qcow2Error::ClusterBits(8))
        }),
        ("cluster_bits 22", patched(&base, 20, &be32(22)), |e| {
            matches!(e, Qcow2Error::ClusterBits(22))
        }),
        ("cluster_bits huge", patched(&base, 20, &be32(63)), |e| {
            matches!(e, Qcow2Error::ClusterBits(63))
        }),
        ("virtual size 0", patched(&base, 24, &be64v(0)), |e| {
            matches!(e, Qcow2Error::VirtualSizeZero)
        }),
        (
            "virtual size absurd",
            patched(&base, 24, &be64v(u64::MAX)),
            |e| matches!(e, Qcow2Error::VirtualSizeTooLarge { .. }),
        ),
        (
            "virtual size 65 TiB",
            patched(&base, 24, &be64v(65 << 40)),
            |e| matches!(e, Qcow2Error::VirtualSizeTooLarge { .. }),
        ),
        ("encryption aes", patched(&base, 32, &be32(1)), |e| {
            matches!(e, Qcow2Error::Encrypted { method: 1 })
        }),
        ("encryption luks", patched(&base, 32, &be32(2)), |e| {
            matches!(e, Qcow2Error::Encrypted { method: 2 })
        }),
        (
            "huge L1",
            patched(&base, 36, &be32(1 << 30)),
            |e| matches!(e, Qcow2Error::HugeL1 { entries, .. } if *entries == 1 << 30),
        ),
        ("L1 too small", patched(&base, 24, &be64v(1 << 40)), |e| {
            matches!(e, Qcow2Error::L1TooSmall { .. })
        }),
        ("L1 misaligned", patched(&base, 40, &be64v(0x30200)), |e| {
            matches!(e, Qcow2Error::Misaligned { .. })
        }),
        ("L1 at 0", patched(&base, 40, &be64v(0)), |e| {
            matches!(e, Qcow2Error::Misaligned { .. })
        }),
        ("L1 past EOF", patched(&base, 40, &be64v(1 << 40)), |e| {
            matches!(e, Qcow2Error::PastEnd { .. })
        }),
        (
            "refcount table misaligned",
            patched(&base, 48, &be64v(0x10008)),
            |e| matches!(e, Qcow2Error::Misaligned { .. }),
        ),
        (
            "snapshots misaligned",
            patched(&patched(&base, 60, &be32(1)), 64, &be64v(0x123)),
            |e| matches!(e, Qcow2Error::Misaligned { .. }),
        ),
        ("corrupt bit", patched(&base, 72, &be64v(2)), |e| {
            matches!(e, Qcow2Error::Corrupt)
        }),
        ("data-file bit", patched(&base, 72, &be64v(4)), |e| {
            matches!(e, Qcow2Error::ExternalDataFile)
        }),
        (
            "unknown incompatible bit",
            patched(&base, 72, &be64v(1 << 5)),
            |e| matches!(e, Qcow2Error::UnknownFeatures(0x20)),
        ),
        (
            "unknown high bit",
            patched(&base, 72, &be64v(1 << 63)),
            |e| matches!(e, Qcow2Error::UnknownFeatures(_)),
        ),
        (
            "zstd bit without type",
            patched(&base, 72, &be64v(8)),
            |e| matches!(e, Qcow2Error::CompressionType(0)),
        ),
        ("refcount order 7", patched(&base, 96, &be32(7)), |e| {
            matches!(e, Qcow2Error::RefcountOrder(7))
        }),
        ("header_length 100", patched(&base, 100, &be32(100)), |e| {
            matches!(e, Qcow2Error::HeaderLength(100))
        }),
        ("header_length odd", patched(&base, 100, &be32(113)), |e| {
            matches!(e, Qcow2Error::HeaderLength(113))
        }),
        (
            "header_length huge",
            patched(&base, 100, &be32(u32::MAX - 7)),
            |e| matches!(e, Qcow2Error::HeaderLength(_)),
        ),
        (
            "compression type 2",
            patched(&patched(&base, 72, &be64v(8)), 104, &[2]),
            |e| matches!(e, Qcow2Error::CompressionType(2)),
        ),
        (
            "data-file extension",
            patched(
                &base,
                112,
                &[0x44, 0x41, 0x54, 0x41, 0, 0, 0, 4, b'x', b'.', b'r', b'w'],
            ),
            |e| matches!(e, Qcow2Error::ExternalDataFile),
        ),
        (
            "crypto extension",
            patched(&base, 112, &[0x05, 0x37, 0xbe, 0x77, 0, 0, 0, 16]),
            |e| matches!(e, Qcow2Error::Encrypted { .. }),
        ),
        (
            "extension overrun",
            patched(
                &base,
                112,
                &[0x12, 0x34, 0x56, 0x78, 0x7f, 0xff, 0xff, 0xff],
            ),
            |e| matches!(e, Qcow2Error::HeaderExtension { .. }),
        ),
        ("truncated", base[..50].to_vec(), |e| {
            matches!(e, Qcow2Error::HeaderTruncated { .. })
        }),
    ];
    for (name, bytes, want) in cases {
        let e = qerr(open(&bytes));
        assert!(want(&e), "{name}: got {e:?}");
        // Every message names what is wrong.
        assert!(!e.to_string().is_empty());
    }
    let e = qerr(open(&patched(&base, 8, &be64v(0x200))));
    assert!(
        e.to_string().starts_with("qcow2 image has a backing file"),
        "{e}"
    );
    let e = qerr(open(&patched(&base, 36, &be32(1 << 30))));
    assert!(e.to_string().contains("huge L1 table"), "{e}");
}

#[test]
fn real_images_with_backing_file_data_file_and_encryption() {
    let dir = Dir::new();
    let base = dir.path("base.qcow2");
    qemu_img(&["create", "-q", "-f", "qcow2", base.to_str().unwrap(), "1M"]);
    let top = dir.path("top.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-b",
        base.to_str().unwrap(),
        "-F",
        "qcow2",
        top.to_str().unwrap(),
    ]);
    assert!(matches!(
        qerr(open(&std::fs::read(&top).unwrap())),
        Qcow2Error::BackingFile { .. }
    ));

    let data = dir.path("ext.qcow2");
    let raw = dir.path("ext.raw");
    let opt = format!("data_file={}", raw.display());
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        &opt,
        data.to_str().unwrap(),
        "1M",
    ]);
    assert!(matches!(
        qerr(open(&std::fs::read(&data).unwrap())),
        Qcow2Error::ExternalDataFile
    ));

    let enc = dir.path("enc.qcow2");
    let create = [
        "create",
        "-q",
        "-f",
        "qcow2",
        "--object",
        "secret,id=sec0,data=123456",
        "-o",
        "encrypt.format=luks,encrypt.key-secret=sec0,encrypt.iter-time=10",
        enc.to_str().unwrap(),
        "1M",
    ];
    // QEMU 7.2 times its PBKDF2 calibration with getrusage and gives up ("Unable to get
    // accurate CPU usage") when a calibration round takes less than one accounting tick,
    // which on this machine happens more often than not under load. A flaw of the tool, not
    // of what is tested: a few tries, then the encrypted case is left to the patched-header
    // test (`encryption luks` above), the backing and data file cases having run.
    let mut created = false;
    for _ in 0..10 {
        let out = Command::new("qemu-img")
            .args(create)
            .output()
            .expect("qemu-img");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if out.status.success() {
            created = true;
            break;
        }
        assert!(
            stderr.contains("Unable to get accurate CPU usage"),
            "qemu-img {create:?} failed: {stderr}"
        );
    }
    if !created {
        eprintln!("qemu-img could not calibrate LUKS here; the encrypted image was not made");
        return;
    }
    assert!(matches!(
        qerr(open(&std::fs::read(&enc).unwrap())),
        Qcow2Error::Encrypted { .. }
    ));
}

#[test]
fn hostile_tables() {
    let dir = Dir::new();
    let base = small_image(&dir);
    let l1 = l1_offset(&base);
    let l2 = be64(&base, l1) as usize & OFFSET_MASK as usize;
    let size = base.len() as u64;
    let cases: Vec<Case> = vec![
        (
            "L1 entry past EOF",
            patched(&base, l1, &(COPIED | (1 << 40)).to_be_bytes()),
            |e| matches!(e, Qcow2Error::PastEnd { .. }),
        ),
        (
            "L1 entry misaligned",
            patched(&base, l1, &(COPIED | (l2 as u64 + 512)).to_be_bytes()),
            |e| matches!(e, Qcow2Error::Misaligned { .. }),
        ),
        (
            "L1 entry reserved bit",
            patched(&base, l1, &(COPIED | 2 | l2 as u64).to_be_bytes()),
            |e| matches!(e, Qcow2Error::ReservedBits { .. }),
        ),
        (
            "L2 entry past EOF",
            patched(
                &base,
                l2,
                &(COPIED | (size + 0x10000).next_multiple_of(0x10000)).to_be_bytes(),
            ),
            |e| matches!(e, Qcow2Error::PastEnd { .. }),
        ),
        (
            "L2 entry misaligned",
            patched(&base, l2, &(COPIED | 0x50200).to_be_bytes()),
            |e| matches!(e, Qcow2Error::Misaligned { .. }),
        ),
        (
            "L2 entry reserved bits",
            patched(&base, l2, &(COPIED | (1 << 57) | 0x50000).to_be_bytes()),
            |e| matches!(e, Qcow2Error::ReservedBits { .. }),
        ),
        (
            "compressed entry with copied flag",
            patched(&base, l2, &(COPIED | COMPRESSED | 0x50000).to_be_bytes()),
            |e| matches!(e, Qcow2Error::ReservedBits { .. }),
        ),
        (
            "compressed entry past EOF",
            patched(&base, l2, &(COMPRESSED | (size + 1)).to_be_bytes()),
            |e| matches!(e, Qcow2Error::PastEnd { .. }),
        ),
        (
            "compressed garbage",
            patched(&base, l2, &(COMPRESSED | 0x1).to_be_bytes()),
            |e| {
                matches!(
                    e,
                    Qcow2Error::BadCompressedCluster { .. } | Qcow2Error::SharedCluster { .. }
                )
            },
        ),
    ];
    for (name, bytes, want) in cases {
        let e = qerr(decode_all(&bytes));
        assert!(want(&e), "{name}: got {e:?}");
    }
    let e = qerr(decode_all(&patched(
        &base,
        l2,
        &(COPIED | (1 << 40)).to_be_bytes(),
    )));
    assert!(
        e.to_string()
            .starts_with("cluster offset past the end of the image"),
        "{e}"
    );
}

#[test]
fn unknown_file_size_still_catches_offsets_past_the_end() {
    let dir = Dir::new();
    let base = small_image(&dir);
    let l2 = be64(&base, l1_offset(&base)) as usize & OFFSET_MASK as usize;
    let past = (base.len() as u64).next_multiple_of(0x10000) + 0x10000;
    let bad = patched(&base, l2 + 8, &(COPIED | past).to_be_bytes());
    let file = Bytes::from(bad);
    let mut dec = Box::new(
        Qcow2Decoder::new(&file[..SNIFF_LEN], None, &mut &file[..], &Limits::default()).unwrap(),
    );
    dec.feed(file.clone(), &mut |_| Ok(())).unwrap();
    let e = qerr(dec.finish(&mut &file[..], &mut |_| Ok(())));
    assert!(matches!(e, Qcow2Error::PastEnd { .. }), "{e:?}");
}

#[test]
fn a_truncated_stream_is_an_error() {
    let dir = Dir::new();
    let base = small_image(&dir);
    let file = Bytes::from(base);
    let mut dec = Box::new(open(&file).unwrap());
    dec.feed(file.slice(..file.len() - 1), &mut |_| Ok(()))
        .unwrap();
    let e = dec.finish(&mut &file[..], &mut |_| Ok(())).unwrap_err();
    assert!(matches!(e, DecodeError::ShortFile { .. }), "{e}");
}

#[test]
fn limits_bound_what_a_hostile_layout_can_hold() {
    let dir = Dir::new();
    // Every data cluster after the table, in reverse order: one run per cluster.
    let mut guest = guest_content(64 * 512, 15);
    let mut layout = vec![Slot::L2(0)];
    layout.extend((0..64).rev().map(Slot::Data));
    let bytes = build(9, &mut guest, &layout);
    let limits = Limits {
        max_ahead_mappings: 10,
        ..Limits::default()
    };
    let file = Bytes::from(bytes.clone());
    let e = decode_chunks(&file, vec![file.clone()], &mut &file[..], &limits)
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            DecodeError::Qcow2(Qcow2Error::TooFragmented { limit: 10 })
        ),
        "{e}"
    );

    // Data before the table: every cluster remembered.
    let mut layout: Vec<Slot> = (0..64).map(Slot::Data).collect();
    layout.push(Slot::L2(0));
    let bytes = build(9, &mut guest, &layout);
    let limits = Limits {
        max_unordered_clusters: 10,
        ..Limits::default()
    };
    let file = Bytes::from(bytes);
    let e = decode_chunks(&file, vec![file.clone()], &mut &file[..], &limits)
        .err()
        .unwrap();
    assert!(
        matches!(
            e,
            DecodeError::Qcow2(Qcow2Error::TooManyUnordered { limit: 10 })
        ),
        "{e}"
    );
    assert!(
        check_built(&dir, "reversed.qcow2", &file, &guest, 3)
            .summary
            .refetched_bytes
            >= 64 * 512
    );
}

/// Random damage to the metadata never panics, and whatever is accepted is fully covered.
#[test]
fn damaged_metadata_never_panics() {
    let dir = Dir::new();
    let img = dir.path("fuzz.qcow2");
    qemu_img(&[
        "create",
        "-q",
        "-f",
        "qcow2",
        "-o",
        "cluster_size=4k",
        img.to_str().unwrap(),
        "2M",
    ]);
    qemu_io(
        &img,
        &[
            "write -P 0x61 0 64k",
            "write -c -P 0x62 1M 64k",
            "write -z 100k 8k",
        ],
    );
    let base = std::fs::read(&img).unwrap();
    let l1 = l1_offset(&base);
    let l2s: Vec<usize> = (0..2)
        .map(|i| be64(&base, l1 + i * 8) as usize & OFFSET_MASK as usize)
        .filter(|o| *o != 0)
        .collect();
    let mut rng = Rng(0xf00d);
    let mut accepted = 0;
    for _ in 0..600 {
        let mut b = base.clone();
        for _ in 0..rng.range(1, 4) {
            let region = match rng.next() % 3 {
                0 => 0..112,
                1 => l1..l1 + 16,
                _ => {
                    let t = l2s[(rng.next() % l2s.len() as u64) as usize];
                    t..t + 4096
                }
            };
            let at = rng.range(region.start as u64, region.end as u64 - 1) as usize;
            b[at] ^= 1 << (rng.next() % 8);
        }
        let file = Bytes::from(b);
        let result = (|| {
            let mut dec = Box::new(open(&file)?);
            let mut target = Target::new(dec.virtual_size().min(64 << 20) as usize);
            let vsize = dec.virtual_size();
            let mut out = |op: WriteOp| {
                if vsize <= 64 << 20 {
                    target.apply(op);
                }
                Ok(())
            };
            for c in random_chunks(&file, &mut rng, 1 << 20) {
                dec.feed(c, &mut out)?;
            }
            dec.finish(&mut &file[..], &mut out)?;
            if vsize <= 64 << 20 {
                target.assert_exactly_covered();
            }
            Ok::<_, DecodeError>(())
        })();
        accepted += result.is_ok() as usize;
    }
    assert!(accepted > 0);
}

/// Throughput on a 512 MiB image of random data, in ~1 MiB chunks, without a disk:
/// `cargo test --release -p image-pipeline bench_qcow2 -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_qcow2_decode() {
    let dir = Dir::new();
    let raw = dir.path("bench.raw");
    run(
        "sh",
        &[
            "-c",
            &format!("head -c 512M /dev/urandom > {}", raw.display()),
        ],
    );
    let mixed = source_raw(&dir, 512 << 20, 77);
    for (name, src, opts) in [
        ("plain", &raw, &[][..]),
        ("compressed", &mixed, &["-c"][..]),
    ] {
        let img = convert(&dir, src, "bench.qcow2", opts);
        let file = Bytes::from(std::fs::read(&img).unwrap());
        let chunks: Vec<Bytes> = (0..file.len())
            .step_by(1 << 20)
            .map(|i| file.slice(i..(i + (1 << 20)).min(file.len())))
            .collect();
        let started = std::time::Instant::now();
        let mut dec = Box::new(open(&file).unwrap());
        let mut sum = 0u64;
        let mut out = |op: WriteOp| {
            sum += op.len();
            Ok(())
        };
        for c in chunks {
            dec.feed(c, &mut out).unwrap();
        }
        dec.finish(&mut &file[..], &mut out).unwrap();
        let secs = started.elapsed().as_secs_f64();
        eprintln!(
            "{name}: {} bytes in {secs:.3} s: {:.0} MB/s of file, {:.0} MB/s of disk",
            file.len(),
            file.len() as f64 / secs / 1e6,
            sum as f64 / secs / 1e6
        );
    }
}
