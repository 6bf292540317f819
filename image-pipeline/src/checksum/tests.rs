use serde_json::{json, Value};

use super::*;

const SHA256_ABC: &str = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
const MD5_ABC: &str = "900150983cd24fb0d6963f7d28e17f72";

fn digest(a: Algorithm, data: &[u8]) -> String {
    let mut h = a.hasher();
    // In pieces, to exercise streaming.
    for piece in data.chunks(7) {
        h.update(piece);
    }
    assert_eq!(h.bytes(), data.len() as u64);
    h.finalize_hex()
}

#[test]
fn known_digests() {
    assert_eq!(digest(Algorithm::Md5, b"abc"), MD5_ABC);
    assert_eq!(
        digest(Algorithm::Sha1, b"abc"),
        "a9993e364706816aba3e25717850c26c9cd0d89d"
    );
    assert_eq!(
        digest(Algorithm::Sha224, b"abc"),
        "23097d223405d8228642a477bda255b32aadbce4bda0b3f7e36c9da7"
    );
    assert_eq!(digest(Algorithm::Sha256, b"abc"), SHA256_ABC);
    assert_eq!(
        digest(Algorithm::Sha384, b"abc"),
        "cb00753f45a35e8bb5a03d699ac65007272c32ab0eded1631a8b605a43ff5bed\
         8086072ba1e7cc2358baeca134c825a7"
    );
    assert_eq!(
        digest(Algorithm::Sha512, b"abc"),
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a\
         2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f"
    );
    for a in Algorithm::ALL {
        assert_eq!(digest(a, b"").len(), a.hex_len(), "{a}");
        assert_eq!(Algorithm::from_name(a.name()), Some(a));
    }
    let mut h = Algorithm::Sha256.hasher();
    h.update(b"junk");
    h.reset();
    h.update(b"abc");
    assert_eq!(h.finalize_hex(), SHA256_ABC);
}

#[test]
fn algorithm_names() {
    assert_eq!(Algorithm::from_name("SHA256"), Some(Algorithm::Sha256));
    assert_eq!(Algorithm::from_name("sha-512"), Some(Algorithm::Sha512));
    assert_eq!(Algorithm::from_name("sha3_256"), None);
    assert_eq!(Algorithm::from_name("blake2b"), None);
}

#[test]
fn algorithm_by_length_follows_ipa() {
    assert_eq!(Algorithm::by_hex_len(128, false), Ok(Algorithm::Sha512));
    assert_eq!(Algorithm::by_hex_len(64, false), Ok(Algorithm::Sha256));
    assert_eq!(Algorithm::by_hex_len(32, true), Ok(Algorithm::Md5));
    assert_eq!(
        Algorithm::by_hex_len(32, false),
        Err(ChecksumError::Md5Disabled)
    );
    // sha1 is never guessed from a length (IPA does not either).
    assert!(matches!(
        Algorithm::by_hex_len(40, true),
        Err(ChecksumError::UnknownAlgorithm(_))
    ));
}

/// The spec the agent makes of an `image_info` with these checksum fields (strings; null or
/// missing is absent), for an image `img-9` at a temp URL.
fn info(fields: Value) -> ChecksumSpec {
    let text = |k: &str| fields.get(k).and_then(Value::as_str).map(str::to_string);
    ChecksumSpec {
        image_id: "img-9".into(),
        first_url: "http://127.0.0.1:1/images/disk.qcow2?temp_url_sig=s".into(),
        checksum: text("checksum"),
        os_hash_algo: text("os_hash_algo"),
        os_hash_value: text("os_hash_value"),
    }
}

fn no_fetch(url: &str) -> Result<String, ChecksumError> {
    panic!("unexpected fetch of {url}")
}

fn invalid(e: Result<(), ChecksumError>) -> String {
    match e {
        Err(ChecksumError::InvalidParams(m)) => m,
        other => panic!("expected InvalidParams, got {other:?}"),
    }
}

/// The md5-dependent half of IPA's `_validate_image_info` (the structural half, with its
/// messages, is `ironic_protocol::ImageInfo`'s parsing).
#[test]
fn validation_matches_ipa() {
    let none = invalid(info(json!({})).validate(true));
    assert!(
        none.starts_with("Image checksum is not available"),
        "{none}"
    );
    // A 32-character checksum is usable only with md5 enabled.
    assert!(info(json!({"checksum": MD5_ABC})).validate(true).is_ok());
    assert!(invalid(info(json!({"checksum": MD5_ABC})).validate(false))
        .starts_with("Image checksum is not available"));
    assert!(info(json!({"checksum": SHA256_ABC}))
        .validate(false)
        .is_ok());
    assert!(info(json!({"checksum": "http://h/SUMS"}))
        .validate(false)
        .is_ok());
    assert!(
        info(json!({"os_hash_algo": "sha256", "os_hash_value": SHA256_ABC}))
            .validate(false)
            .is_ok()
    );
    // resolve_expected validates first.
    assert!(
        invalid(resolve_expected(&info(json!({})), false, &mut no_fetch).map(drop))
            .starts_with("Image checksum is not available")
    );
    assert_eq!(
        ChecksumError::InvalidParams(String::new()).status_code(),
        400
    );
}

#[test]
fn os_hash_wins_over_checksum() {
    let i = info(
        json!({"checksum": "a".repeat(128), "os_hash_algo": "sha256", "os_hash_value": SHA256_ABC.to_uppercase()}),
    );
    let e = resolve_expected(&i, false, &mut no_fetch).expect("resolved");
    assert_eq!(e.algorithm, Algorithm::Sha256);
    assert_eq!(e.value, SHA256_ABC);
    assert_eq!(e.origin, ChecksumOrigin::OsHashValue);
    assert!(e.verify("img-9", SHA256_ABC).is_ok());
    assert!(e.verify("img-9", &SHA256_ABC.to_uppercase()).is_ok());
}

#[test]
fn checksum_algorithm_by_length() {
    let e = resolve_expected(
        &info(json!({"checksum": "B".repeat(128)})),
        false,
        &mut no_fetch,
    )
    .expect("sha512");
    assert_eq!(
        (e.algorithm, e.value.as_str()),
        (Algorithm::Sha512, "b".repeat(128).as_str())
    );
    assert_eq!(e.origin, ChecksumOrigin::Checksum);
    let e =
        resolve_expected(&info(json!({"checksum": MD5_ABC})), true, &mut no_fetch).expect("md5");
    assert_eq!(e.algorithm, Algorithm::Md5);
    let bad = resolve_expected(
        &info(json!({"checksum": "abc".repeat(20)})),
        true,
        &mut no_fetch,
    );
    assert!(
        matches!(bad, Err(ChecksumError::UnknownAlgorithm(_))),
        "{bad:?}"
    );
}

#[test]
fn md5_is_refused_unless_enabled() {
    let md5_hash = info(json!({"os_hash_algo": "md5", "os_hash_value": MD5_ABC}));
    assert_eq!(
        resolve_expected(&md5_hash, false, &mut no_fetch),
        Err(ChecksumError::Md5Disabled)
    );
    assert_eq!(
        resolve_expected(&md5_hash, true, &mut no_fetch).map(|e| e.algorithm),
        Ok(Algorithm::Md5)
    );
    // md5 found in a checksum file is refused too.
    let mut fetch = |_: &str| Ok(format!("{MD5_ABC}\n"));
    assert_eq!(
        resolve_expected(
            &info(json!({"checksum": "http://h/md5sum"})),
            false,
            &mut fetch
        ),
        Err(ChecksumError::Md5Disabled)
    );
    assert!(ChecksumError::Md5Disabled
        .to_string()
        .contains("MD5 checksums are disabled"));
}

#[test]
fn unknown_os_hash_algo_falls_back_to_checksum() {
    let i =
        info(json!({"os_hash_algo": "sha3_512", "os_hash_value": "ab", "checksum": SHA256_ABC}));
    let e = resolve_expected(&i, false, &mut no_fetch).expect("fallback");
    assert_eq!(e.algorithm, Algorithm::Sha256);
    let i = info(json!({"os_hash_algo": "sha3_512", "os_hash_value": "ab"}));
    let err = resolve_expected(&i, false, &mut no_fetch).expect_err("nothing usable");
    let msg = err.to_string();
    assert!(
        msg.starts_with("Unable to verify image img-9 with available checksums"),
        "{msg}"
    );
    assert!(msg.contains("(currently sha3_512)"), "{msg}");
}

#[test]
fn a_value_that_cannot_match_fails_before_the_download() {
    let i = info(json!({"os_hash_algo": "sha512", "os_hash_value": SHA256_ABC}));
    let msg = resolve_expected(&i, false, &mut no_fetch)
        .expect_err("bad")
        .to_string();
    assert!(
        msg.contains("os_hash_value of image img-9 is not a sha512 hex digest"),
        "{msg}"
    );
    let i = info(json!({"os_hash_algo": "sha256", "os_hash_value": "z".repeat(64)}));
    assert!(matches!(
        resolve_expected(&i, false, &mut no_fetch),
        Err(ChecksumError::BadValue { .. })
    ));
}

#[test]
fn checksum_urls_are_fetched_and_parsed() {
    let sums = format!(
        "# SHA256 sums\n{}  other.qcow2\n{SHA256_ABC} *disk.qcow2\n",
        "c".repeat(64)
    );
    let mut calls = Vec::new();
    let mut fetch = |url: &str| {
        calls.push(url.to_string());
        Ok(sums.clone())
    };
    let i = info(json!({"checksum": "https://h/SHA256SUMS?token=t0k"}));
    let e = resolve_expected(&i, false, &mut fetch).expect("resolved");
    assert_eq!(e.value, SHA256_ABC);
    assert_eq!(
        e.origin,
        ChecksumOrigin::File {
            url: "https://h/SHA256SUMS?<redacted>".into()
        }
    );
    assert_eq!(calls, vec!["https://h/SHA256SUMS?token=t0k".to_string()]);

    // os_hash_value may be a URL too; its algorithm comes from os_hash_algo.
    let bsd = format!("SHA512 (disk.qcow2) = {}\n", "d".repeat(128));
    let mut fetch = |_: &str| Ok(bsd.clone());
    let i = info(json!({"os_hash_algo": "sha512", "os_hash_value": "http://h/CHECKSUM"}));
    let e = resolve_expected(&i, false, &mut fetch).expect("resolved");
    assert_eq!((e.algorithm, e.value), (Algorithm::Sha512, "d".repeat(128)));

    // Entry missing: the error names the file it looked for, not the query string.
    let mut fetch = |_: &str| Ok(format!("{SHA256_ABC}  other.img\n"));
    let err = resolve_expected(
        &info(json!({"checksum": "http://h/S?sig=SECRET"})),
        false,
        &mut fetch,
    )
    .expect_err("missing");
    let msg = err.to_string();
    assert!(msg.contains("does not contain name disk.qcow2"), "{msg}");
    assert!(!msg.contains("SECRET"), "{msg}");

    // Fetch failures pass through.
    let mut fetch = |u: &str| {
        Err(ChecksumError::Fetch {
            url: crate::redact::redact_url(u),
            message: "boom".into(),
        })
    };
    assert!(matches!(
        resolve_expected(&info(json!({"checksum": "http://h/S"})), false, &mut fetch),
        Err(ChecksumError::Fetch { .. })
    ));
}

#[test]
fn checksum_file_forms() {
    let h64 = SHA256_ABC;
    // A bare digest, with surrounding blank lines.
    assert_eq!(
        parse_checksum_file(&format!("\n  {h64}  \n\n"), "x"),
        Ok(h64.to_string())
    );
    assert_eq!(parse_checksum_file(MD5_ABC, "x"), Ok(MD5_ABC.to_string()));
    // A single token that is not a digest.
    assert!(parse_checksum_file("nothex", "x").is_err());
    assert!(parse_checksum_file(&"a".repeat(40), "x").is_err());
    // Empty.
    assert!(parse_checksum_file(" \n\n", "x")
        .expect_err("empty")
        .contains("empty"));
    // GNU text and binary mode, one line.
    assert_eq!(
        parse_checksum_file(&format!("{h64}  img.raw\n"), "img.raw"),
        Ok(h64.into())
    );
    assert_eq!(
        parse_checksum_file(&format!("{h64} *img.raw"), "img.raw"),
        Ok(h64.into())
    );
    // Several files; the one asked for; names that only end alike do not count.
    let many = format!(
        "{}  my-img.raw\n{}  img.raw.sig\n{h64}  img.raw\n",
        "a".repeat(64),
        "b".repeat(64)
    );
    assert_eq!(parse_checksum_file(&many, "img.raw"), Ok(h64.into()));
    // BSD / CentOS style, with comments and PGP armour around it.
    let centos = format!(
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA256\n\n# CentOS-Stream-GenericCloud-9.qcow2: 1 bytes\n\
         SHA256 (CentOS-Stream-GenericCloud-9.qcow2) = {h64}\n-----BEGIN PGP SIGNATURE-----\n"
    );
    assert_eq!(
        parse_checksum_file(&centos, "CentOS-Stream-GenericCloud-9.qcow2"),
        Ok(h64.into())
    );
    // A commented-out entry does not count.
    let commented = format!("# {h64}  img.raw\n{}  other\n", "a".repeat(64));
    assert!(parse_checksum_file(&commented, "img.raw")
        .expect_err("commented")
        .contains("does not contain name img.raw"));
    // Wrong file name.
    assert!(parse_checksum_file(&format!("{h64}  a.img\n{h64}  b.img"), "c.img").is_err());
    // The line names the file but has no digest: keep looking.
    let two = format!("size 12  img.raw\n{h64}  img.raw\n");
    assert_eq!(parse_checksum_file(&two, "img.raw"), Ok(h64.into()));
    // File names escaped in the URL.
    assert_eq!(
        parse_checksum_file(&format!("{h64}  my disk.img\nx y"), "my%20disk.img"),
        Ok(h64.into())
    );
}

#[test]
fn image_file_names() {
    assert_eq!(
        image_file_name("http://h:8080/a/b/disk.qcow2?x=1#f"),
        "disk.qcow2"
    );
    assert_eq!(
        image_file_name("https://swift/v1/AUTH_a/glance/5f1e?temp_url_sig=a&temp_url_expires=1"),
        "5f1e"
    );
    assert_eq!(image_file_name("http://h"), "");
    assert_eq!(image_file_name("http://h/"), "");
}

#[test]
fn mismatch_message() {
    let e = ExpectedChecksum {
        algorithm: Algorithm::Sha256,
        value: SHA256_ABC.into(),
        origin: ChecksumOrigin::Checksum,
    };
    let err = e.verify("img-9", &"0".repeat(64)).expect_err("mismatch");
    assert_eq!(
        err.to_string(),
        format!(
            "Image checksum mismatch for image img-9: expected sha256 {SHA256_ABC}, got {}",
            "0".repeat(64)
        )
    );
}

/// Throughput of each algorithm on one core. Run with
/// `cargo test --release -p image-pipeline hash_throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn hash_throughput() {
    let buf = vec![0x5au8; 1 << 20];
    for a in Algorithm::ALL {
        let mut best = 0f64;
        for _ in 0..3 {
            let mut h = a.hasher();
            let t = std::time::Instant::now();
            for _ in 0..512 {
                h.update(&buf);
            }
            let _ = h.finalize_hex();
            best = best.max(512.0 * buf.len() as f64 / t.elapsed().as_secs_f64() / 1e6);
        }
        println!("{a}: {best:.0} MB/s");
    }
}
