//! Checksum files fetched from the `checksum` URL (`SHA256SUMS`, `CHECKSUM`, a bare digest)
//! and the file name the image URL gives, then the whole of IPA's resolution of the expected
//! checksum from `image_info`.
//!
//! Input: the image URL, a newline, the checksum file's text. Invariants: a found digest is
//! a 32, 64 or 128 character hex string taken from the file; the file name has no path,
//! query or fragment in it; a resolved checksum is lower-case hex of its algorithm's length.

#![no_main]

use image_pipeline::checksum::{
    image_file_name, parse_checksum_file, resolve_expected, ChecksumSpec,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let Ok(text) = std::str::from_utf8(input) else {
        return;
    };
    let (url, file) = text.split_once('\n').unwrap_or((text, ""));
    let name = image_file_name(url);
    assert!(
        !name.contains(['/', '?', '#']),
        "file name {name:?} from {url:?}"
    );
    if let Ok(digest) = parse_checksum_file(file, &name) {
        assert!([32, 64, 128].contains(&digest.len()), "digest {digest:?}");
        assert!(digest.bytes().all(|b| b.is_ascii_hexdigit()), "{digest:?}");
        assert!(file.contains(&digest));
    }
    for md5 in [false, true] {
        let spec = ChecksumSpec {
            image_id: "image".into(),
            first_url: url.into(),
            checksum: Some("https://checksums.example/SHA256SUMS".into()),
            os_hash_algo: None,
            os_hash_value: None,
        };
        let mut fetch = |_: &str| Ok(file.to_string());
        if let Ok(expected) = resolve_expected(&spec, md5, &mut fetch) {
            assert_eq!(expected.value.len(), expected.algorithm.hex_len());
            assert!(expected
                .value
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
        }
    }
});
