//! Image checksums: the algorithms, a streaming hasher, and IPA's rules for finding the
//! expected value from what `image_info` says ([`ChecksumSpec`], including checksum files
//! behind a URL).
//!
//! The rules follow ironic-python-agent (`standby.py`: `_validate_image_info`,
//! `ImageDownload.__init__`, `_fetch_checksum`, `_get_algorithm_by_length`):
//!
//! 1. `os_hash_algo` + `os_hash_value` win when the algorithm is one we know.
//! 2. Otherwise `checksum`; its algorithm is chosen by its length in hex digits (128 sha512,
//!    64 sha256, 32 md5 only when md5 is enabled).
//! 3. Either value may be an `http(s)://` URL of a checksum file, which is fetched and parsed
//!    ([`parse_checksum_file`]).
//!
//! Deliberate differences from IPA, each a case where IPA would download the whole image and
//! then fail (or silently accept md5):
//! * md5 is refused unless enabled, also when named by `os_hash_algo` (IPA only gates md5
//!   chosen by length).
//! * An expected value whose length does not fit its algorithm is an error before the
//!   download (IPA logs a warning and fails at the end).
//! * The expected value is compared case-insensitively (IPA compares it verbatim against a
//!   lower-case digest, so an upper-case checksum file could never match).

mod file;

pub use file::{image_file_name, parse_checksum_file};

/// A hash algorithm an image can be verified with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Md5,
    Sha1,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Algorithm {
    pub const ALL: [Algorithm; 6] = [
        Algorithm::Md5,
        Algorithm::Sha1,
        Algorithm::Sha224,
        Algorithm::Sha256,
        Algorithm::Sha384,
        Algorithm::Sha512,
    ];

    /// The name Glance and Python's hashlib use (`os_hash_algo`).
    pub fn name(self) -> &'static str {
        match self {
            Algorithm::Md5 => "md5",
            Algorithm::Sha1 => "sha1",
            Algorithm::Sha224 => "sha224",
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha384 => "sha384",
            Algorithm::Sha512 => "sha512",
        }
    }

    /// Parses an `os_hash_algo` value (case-insensitive; `sha-256` is accepted too).
    pub fn from_name(name: &str) -> Option<Algorithm> {
        let norm: String = name
            .trim()
            .chars()
            .filter(|c| *c != '-' && *c != '_')
            .collect::<String>()
            .to_ascii_lowercase();
        Algorithm::ALL.into_iter().find(|a| a.name() == norm)
    }

    /// Length of the digest in hex digits.
    pub fn hex_len(self) -> usize {
        match self {
            Algorithm::Md5 => 32,
            Algorithm::Sha1 => 40,
            Algorithm::Sha224 => 56,
            Algorithm::Sha256 => 64,
            Algorithm::Sha384 => 96,
            Algorithm::Sha512 => 128,
        }
    }

    /// IPA's `_get_algorithm_by_length`: only SHA-2 lengths, and md5 only when enabled.
    pub fn by_hex_len(len: usize, md5_enabled: bool) -> Result<Algorithm, ChecksumError> {
        match len {
            128 => Ok(Algorithm::Sha512),
            64 => Ok(Algorithm::Sha256),
            32 if md5_enabled => Ok(Algorithm::Md5),
            32 => Err(ChecksumError::Md5Disabled),
            _ => Err(ChecksumError::UnknownAlgorithm(format!(
                "a checksum of {len} characters does not identify an algorithm (32 md5, 64 sha256, \
                 128 sha512); set os_hash_algo"
            ))),
        }
    }

    pub fn hasher(self) -> Hasher {
        Hasher::new(self)
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

enum HasherState {
    Md5(md5::Md5),
    Sha1(sha1::Sha1),
    Sha224(sha2::Sha224),
    Sha256(sha2::Sha256),
    Sha384(sha2::Sha384),
    Sha512(sha2::Sha512),
}

/// A streaming hasher. sha2 and sha1 pick SHA-NI / AVX2 code at run time (cpufeatures).
pub struct Hasher {
    state: HasherState,
    bytes: u64,
}

impl Hasher {
    pub fn new(algorithm: Algorithm) -> Hasher {
        use sha2::Digest;
        let state = match algorithm {
            Algorithm::Md5 => HasherState::Md5(md5::Md5::new()),
            Algorithm::Sha1 => HasherState::Sha1(sha1::Sha1::new()),
            Algorithm::Sha224 => HasherState::Sha224(sha2::Sha224::new()),
            Algorithm::Sha256 => HasherState::Sha256(sha2::Sha256::new()),
            Algorithm::Sha384 => HasherState::Sha384(sha2::Sha384::new()),
            Algorithm::Sha512 => HasherState::Sha512(sha2::Sha512::new()),
        };
        Hasher { state, bytes: 0 }
    }

    pub fn algorithm(&self) -> Algorithm {
        match self.state {
            HasherState::Md5(_) => Algorithm::Md5,
            HasherState::Sha1(_) => Algorithm::Sha1,
            HasherState::Sha224(_) => Algorithm::Sha224,
            HasherState::Sha256(_) => Algorithm::Sha256,
            HasherState::Sha384(_) => Algorithm::Sha384,
            HasherState::Sha512(_) => Algorithm::Sha512,
        }
    }

    pub fn update(&mut self, data: &[u8]) {
        use sha2::Digest;
        self.bytes += data.len() as u64;
        match &mut self.state {
            HasherState::Md5(h) => h.update(data),
            HasherState::Sha1(h) => h.update(data),
            HasherState::Sha224(h) => h.update(data),
            HasherState::Sha256(h) => h.update(data),
            HasherState::Sha384(h) => h.update(data),
            HasherState::Sha512(h) => h.update(data),
        }
    }

    /// Bytes hashed so far.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Starts over (after the source restarted from byte 0).
    pub fn reset(&mut self) {
        *self = Hasher::new(self.algorithm());
    }

    /// The digest as lower-case hex.
    pub fn finalize_hex(self) -> String {
        use sha2::Digest;
        match self.state {
            HasherState::Md5(h) => to_hex(&h.finalize()),
            HasherState::Sha1(h) => to_hex(&h.finalize()),
            HasherState::Sha224(h) => to_hex(&h.finalize()),
            HasherState::Sha256(h) => to_hex(&h.finalize()),
            HasherState::Sha384(h) => to_hex(&h.finalize()),
            HasherState::Sha512(h) => to_hex(&h.finalize()),
        }
    }
}

impl std::fmt::Debug for Hasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hasher")
            .field("algorithm", &self.algorithm())
            .field("bytes", &self.bytes)
            .finish()
    }
}

fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[usize::from(b >> 4)] as char);
        s.push(DIGITS[usize::from(b & 15)] as char);
    }
    s
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Where the expected value came from (for messages).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChecksumOrigin {
    /// `os_hash_value` given inline.
    OsHashValue,
    /// `checksum` given inline.
    Checksum,
    /// A checksum file; the URL is already redacted (no query string, no password).
    File { url: String },
}

/// The digest an image must have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedChecksum {
    pub algorithm: Algorithm,
    /// Lower-case hex.
    pub value: String,
    pub origin: ChecksumOrigin,
}

impl ExpectedChecksum {
    pub fn hasher(&self) -> Hasher {
        Hasher::new(self.algorithm)
    }

    /// Compares a computed digest (hex, any case) with the expected one.
    pub fn verify(&self, image_id: &str, computed_hex: &str) -> Result<(), ChecksumError> {
        let got = computed_hex.trim().to_ascii_lowercase();
        if got == self.value {
            Ok(())
        } else {
            Err(ChecksumError::Mismatch {
                image_id: image_id.to_string(),
                algorithm: self.algorithm,
                expected: self.value.clone(),
                actual: got,
            })
        }
    }
}

/// Why no expected checksum could be established, or why the image did not match it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChecksumError {
    /// `image_info` is malformed (IPA answers these with HTTP 400, InvalidCommandParamsError).
    #[error("{0}")]
    InvalidParams(String),
    /// A 32-character checksum (md5) while md5 is disabled.
    #[error(
        "MD5 checksums are disabled (agent_md5_checksum_enable / md5_enabled); provide a SHA-2 \
         checksum (os_hash_algo and os_hash_value, or a 64/128 character checksum)"
    )]
    Md5Disabled,
    /// The algorithm cannot be determined, or is not supported.
    #[error("unable to identify the checksum algorithm: {0}")]
    UnknownAlgorithm(String),
    /// No usable checksum in image_info for this image.
    #[error(
        "Unable to verify image {image_id} with available checksums. Please make sure the \
         specified 'os_hash_algo' (currently {os_hash_algo}) is supported by this ramdisk \
         (md5, sha1, sha224, sha256, sha384, sha512), or provide a checksum via the 'checksum' \
         field"
    )]
    NoUsableChecksum {
        image_id: String,
        os_hash_algo: String,
    },
    /// The expected value is not a hex digest of the chosen algorithm.
    #[error("the {field} of image {image_id} is not a {algorithm} hex digest ({len} characters, expected {expected_len} hex digits)")]
    BadValue {
        image_id: String,
        field: &'static str,
        algorithm: Algorithm,
        len: usize,
        expected_len: usize,
    },
    /// The checksum file could not be downloaded. `url` is redacted.
    #[error("Download of checksum file {url} failed: {message}")]
    Fetch { url: String, message: String },
    /// The checksum file has no usable content. `url` is redacted.
    #[error("Invalid checksum file {url}: {reason}")]
    BadFile { url: String, reason: String },
    /// The computed digest differs from the expected one.
    #[error("Image checksum mismatch for image {image_id}: expected {algorithm} {expected}, got {actual}")]
    Mismatch {
        image_id: String,
        algorithm: Algorithm,
        expected: String,
        actual: String,
    },
}

impl ChecksumError {
    /// IPA reports parameter problems as 400 and everything else as 500.
    pub fn status_code(&self) -> u16 {
        match self {
            ChecksumError::InvalidParams(_) => 400,
            _ => 500,
        }
    }
}

/// True when a checksum value is really the URL of a checksum file.
pub fn is_checksum_url(value: &str) -> bool {
    value.starts_with("http://") || value.starts_with("https://")
}

/// What the conductor said about an image's checksum: `image_info`'s `checksum`,
/// `os_hash_algo` and `os_hash_value`, which the agent parsed (present values are non-empty,
/// and the `os_hash` pair comes both or neither), with the image's id and first URL for
/// messages and checksum files.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChecksumSpec {
    /// `image_info.id`, already redacted for messages.
    pub image_id: String,
    /// The first of `image_info.urls`: its file name finds the image's line in a checksum
    /// file.
    pub first_url: String,
    pub checksum: Option<String>,
    pub os_hash_algo: Option<String>,
    pub os_hash_value: Option<String>,
}

impl ChecksumSpec {
    /// The md5-dependent half of IPA's `_validate_image_info`: some checksum must be usable,
    /// or the command fails with [`ChecksumError::InvalidParams`] (HTTP 400 in IPA) before
    /// anything is downloaded. A 32-character `checksum` is usable only with md5 enabled.
    pub fn validate(&self, md5_enabled: bool) -> Result<(), ChecksumError> {
        let checksum_usable = self
            .checksum
            .as_deref()
            .is_some_and(|c| is_checksum_url(c) || c.len() > 32 || md5_enabled);
        let os_hash = self.os_hash_algo.is_some() && self.os_hash_value.is_some();
        if checksum_usable || os_hash {
            Ok(())
        } else {
            Err(ChecksumError::InvalidParams(
                "Image checksum is not available, either the 'checksum' field or the \
                 'os_hash_algo' and 'os_hash_value' fields pair must be set for image \
                 verification."
                    .into(),
            ))
        }
    }
}

/// Resolves the expected checksum of an image (IPA's rules, see the module doc). `fetch`
/// downloads a checksum file given its URL and returns its text, or an error message that
/// names no secret; it is called only for URL values.
pub fn resolve_expected(
    spec: &ChecksumSpec,
    md5_enabled: bool,
    fetch: &mut dyn FnMut(&str) -> Result<String, ChecksumError>,
) -> Result<ExpectedChecksum, ChecksumError> {
    spec.validate(md5_enabled)?;
    let image_id = spec.image_id.clone();
    let file_name = image_file_name(&spec.first_url);
    let checksum = spec.checksum.as_deref();
    let os_algo_name = spec.os_hash_algo.as_deref();
    let os_value = spec.os_hash_value.as_deref();

    let mut lookup = |value: &str| -> Result<(String, ChecksumOrigin), ChecksumError> {
        if is_checksum_url(value) {
            let url = crate::redact::redact_url(value);
            let text = fetch(value)?;
            let hex = parse_checksum_file(&text, &file_name).map_err(|reason| {
                ChecksumError::BadFile {
                    url: url.clone(),
                    reason,
                }
            })?;
            Ok((hex, ChecksumOrigin::File { url }))
        } else {
            Ok((value.trim().to_string(), ChecksumOrigin::Checksum))
        }
    };

    let os_algo = os_algo_name.and_then(Algorithm::from_name);
    let (algorithm, value, origin, field) = match (os_algo, os_value) {
        (Some(algorithm), Some(value)) => {
            if algorithm == Algorithm::Md5 && !md5_enabled {
                return Err(ChecksumError::Md5Disabled);
            }
            let (hex, origin) = lookup(value)?;
            let origin = match origin {
                ChecksumOrigin::Checksum => ChecksumOrigin::OsHashValue,
                o => o,
            };
            (algorithm, hex, origin, "os_hash_value")
        }
        _ => match checksum {
            Some(c) => {
                let (hex, origin) = lookup(c)?;
                let algorithm = Algorithm::by_hex_len(hex.len(), md5_enabled)?;
                (algorithm, hex, origin, "checksum")
            }
            None => {
                return Err(ChecksumError::NoUsableChecksum {
                    image_id,
                    os_hash_algo: os_algo_name.unwrap_or("None").to_string(),
                })
            }
        },
    };
    if value.len() != algorithm.hex_len() || !is_hex(&value) {
        return Err(ChecksumError::BadValue {
            image_id,
            field,
            algorithm,
            len: value.len(),
            expected_len: algorithm.hex_len(),
        });
    }
    Ok(ExpectedChecksum {
        algorithm,
        value: value.to_ascii_lowercase(),
        origin,
    })
}

#[cfg(test)]
mod tests;
