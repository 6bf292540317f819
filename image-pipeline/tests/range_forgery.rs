//! Security finding M1: an image server (or a MITM) that sends the genuine qcow2 file on the
//! download, so the whole-file checksum passes, but answers the decoder's Range request for
//! the L1 table with a forged one. The whole pipeline runs (HTTP download, hash, qcow2
//! decoder, disk writer on a temp file); the write must fail with a clear error and leave no
//! bootable head, and the genuine server must still work.

#![cfg(feature = "test-server")]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use image_pipeline::checksum::{Algorithm, ChecksumOrigin, ExpectedChecksum};
use image_pipeline::pipeline::{self, PipelineError, Report};
use image_pipeline::redact::redact_url;
use image_pipeline::sink::DiskWriter;
use image_pipeline::source::{start_download, DownloadSettings};
use image_pipeline::test_server::{Faults, TestServer};
use image_pipeline::{inspect, open_decoder, DecodeError, Limits, Opened, RangeRead};

const MIB: usize = 1 << 20;
/// What the target holds before the write: anything but zeros, so a wipe shows.
const OLD: u8 = 0xA5;
const SECRET: &str = "temp_url_sig=0123456789abcdef";

fn qemu_img(args: &[&str]) {
    let out = Command::new("qemu-img")
        .args(args)
        .output()
        .expect("running qemu-img");
    assert!(
        out.status.success(),
        "qemu-img {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Deterministic, incompressible bytes.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The default layout of `qemu-img convert`: 64 KiB clusters, the L1 table at 0x30000, past
/// the 64 KiB head the pipeline sniffs from the stream.
fn converted(dir: &Path) -> PathBuf {
    let raw = dir.join("a.raw");
    let mut disk = data(3 * MIB, 1);
    disk.resize(6 * MIB, 0);
    std::fs::write(&raw, disk).unwrap();
    let img = dir.join("a.qcow2");
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        raw.to_str().unwrap(),
        img.to_str().unwrap(),
    ]);
    img
}

/// An image grown after it was written: QEMU moves the L1 table to the end of the file, so it
/// streams past after the data, when writes (first MiB held back) are already under way.
fn resized(dir: &Path) -> PathBuf {
    let raw = dir.join("r.raw");
    std::fs::write(&raw, data(2 * MIB, 2)).unwrap();
    let img = dir.join("r.qcow2");
    let s = img.to_str().unwrap();
    // 512 B clusters: one L1 cluster maps only 2 MiB, so growing to 3 MiB relocates it.
    qemu_img(&[
        "convert",
        "-f",
        "raw",
        "-O",
        "qcow2",
        "-o",
        "cluster_size=512",
        raw.to_str().unwrap(),
        s,
    ]);
    qemu_img(&["resize", "-q", s, "3M"]);
    img
}

fn reference(dir: &Path, img: &Path) -> Vec<u8> {
    let raw = dir.join("reference.raw");
    qemu_img(&[
        "convert",
        "-f",
        "qcow2",
        "-O",
        "raw",
        img.to_str().unwrap(),
        raw.to_str().unwrap(),
    ]);
    std::fs::read(raw).unwrap()
}

fn l1_offset(file: &[u8]) -> u64 {
    u64::from_be_bytes(file[40..48].try_into().unwrap())
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

/// Serves `file` with `faults` behind a temp-URL-style query and writes it to a temp target
/// of `target_len` bytes filled with [`OLD`]; returns the outcome and the target's bytes.
fn deploy(
    file: &[u8],
    faults: Faults,
    target_len: usize,
) -> (Result<Report, PipelineError>, Vec<u8>, TestServer) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let srv = TestServer::start().unwrap();
    srv.serve("/img.qcow2", file.to_vec(), faults);
    let url = srv.url(&format!("/img.qcow2?{SECRET}"));
    let image_id = redact_url(&url);
    let mut settings = DownloadSettings::new(image_id.clone(), vec![url]);
    settings.connect_timeout = Duration::from_secs(5);
    settings.read_timeout = Duration::from_secs(5);
    let download = start_download(settings, rt.handle()).unwrap();
    let target = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(target.path(), vec![OLD; target_len]).unwrap();
    let writer = DiskWriter::open(
        blockdev::WritableDisk::open_file(target.path()).unwrap(),
        None,
    )
    .unwrap();
    let open = |head: &[u8], fetch: &mut dyn RangeRead, size: Option<u64>| {
        let permitted = image_pipeline::format::default_permitted_formats();
        let inspection = inspect(head, Some("qcow2"), &permitted, true)?;
        Ok::<Opened, PipelineError>(open_decoder(
            head,
            &inspection,
            size,
            fetch,
            &Limits::default(),
        )?)
    };
    let result = pipeline::run(
        Box::new(download),
        &image_id,
        &sha256(file),
        &open,
        writer,
        None,
    );
    (result, std::fs::read(target.path()).unwrap(), srv)
}

/// The forged L1 makes entry 0 unallocated: without the check the first guest range would
/// be written as zeros and the write would succeed.
fn assert_forgery_refused(file: &[u8]) -> Vec<u8> {
    let l1 = l1_offset(file);
    assert!(
        l1 >= 64 << 10,
        "the L1 table must lie past the sniffed head"
    );
    let target_len = 8 * MIB;
    let (result, after, srv) = deploy(
        file,
        Faults::none().forge_ranges(l1, vec![0u8; 8]),
        target_len,
    );
    let ranged: Vec<_> = srv
        .requests_for("/img.qcow2")
        .into_iter()
        .filter_map(|r| r.range().map(str::to_owned))
        .collect();
    assert!(
        ranged
            .iter()
            .any(|r| r.starts_with(&format!("bytes={l1}-"))),
        "the L1 table was fetched by range: {ranged:?}"
    );
    let err = match result {
        Ok(report) => panic!("a forged L1 table was written as a verified image: {report:?}"),
        Err(e) => e,
    };
    let PipelineError::Decode(decode) = &err else {
        panic!("not a decode error: {err}");
    };
    assert!(decode.is_inconsistent_source(), "{err}");
    let DecodeError::RangeMismatch { what, offset, len } = *decode else {
        panic!("not a range mismatch: {err}");
    };
    assert_eq!((what, offset), ("qcow2 L1 table", l1), "{err}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!(
            "qcow2 L1 table fetched by a range request ({len} bytes at offset {l1:#x}) does not \
             match the image stream"
        )) && msg.contains("the image server returned inconsistent data"),
        "{msg}"
    );
    assert!(!msg.contains("temp_url_sig"), "{msg}");
    // Not the image's head: a leftover boot sector or partition table would make a disk
    // that does not match the verified image look bootable.
    let head = &after[..MIB];
    assert!(
        head.iter().all(|b| *b == 0) || head.iter().all(|b| *b == OLD),
        "the first MiB is neither wiped nor untouched"
    );
    after
}

#[test]
fn forged_l1_on_range_request_fails_before_writing_default_layout() {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::read(converted(dir.path())).unwrap();
    let after = assert_forgery_refused(&file);
    // The L1 table streams past within the first chunk, checked before anything is decoded:
    // the disk was not touched at all.
    assert!(after.iter().all(|b| *b == OLD), "the target was written to");
}

#[test]
fn forged_l1_on_range_request_after_writes_began_wipes_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let file = std::fs::read(resized(dir.path())).unwrap();
    assert!(
        l1_offset(&file) > (file.len() as u64) / 2,
        "the resize moved the L1 table behind the data"
    );
    let after = assert_forgery_refused(&file);
    // Zeros, not the old bytes: writing had begun (a sink that never started leaves the
    // target untouched), and the abort wiped both ends.
    assert!(
        after[..MIB].iter().all(|b| *b == 0),
        "the first MiB was not wiped"
    );
    assert!(
        after[after.len() - MIB..].iter().all(|b| *b == 0),
        "the last MiB was not wiped"
    );
}

#[test]
fn genuine_range_answers_still_deploy() {
    let dir = tempfile::tempdir().unwrap();
    for img in [converted(dir.path()), resized(dir.path())] {
        let file = std::fs::read(&img).unwrap();
        let want = reference(dir.path(), &img);
        let (result, after, srv) = deploy(&file, Faults::none(), 8 * MIB);
        let report = result.unwrap_or_else(|e| panic!("{}: {e}", img.display()));
        assert_eq!(report.format, "qcow2");
        assert!(
            srv.requests_for("/img.qcow2")
                .iter()
                .any(|r| r.range().is_some()),
            "the L1 table was fetched by range"
        );
        assert_eq!(&after[..want.len()], &want[..], "{}", img.display());
    }
}
