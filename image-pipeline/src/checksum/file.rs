//! Checksum files (`SHA256SUMS`, `CHECKSUM`, `image.qcow2.sha256`), parsed like IPA's
//! `_fetch_checksum`.

/// Hex lengths IPA recognises in a checksum file: md5, sha256, sha512.
const DIGEST_LENS: [usize; 3] = [32, 64, 128];

fn is_digest(token: &str) -> bool {
    DIGEST_LENS.contains(&token.len()) && token.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The name a checksum file lists the image under: the last segment of the image URL's path,
/// without query string or fragment (a Swift temp URL ends in the object name).
pub fn image_file_name(url: &str) -> String {
    let without_query = url.split(['?', '#']).next().unwrap_or(url);
    let path = match without_query.find("://") {
        Some(i) => {
            let rest = &without_query[i + 3..];
            rest.find('/').map(|j| &rest[j..]).unwrap_or("")
        }
        None => without_query,
    };
    path.rsplit('/').next().unwrap_or("").to_string()
}

/// `%XX` decoding, for file names that are escaped in the URL but not in the checksum file.
fn percent_decode(s: &str) -> Option<String> {
    if !s.contains('%') {
        return None;
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// Does this line name `file`? Either `<hash> [*]<file>` (GNU coreutils, text or binary mode)
/// or `ALGO (<file>) = <hash>` (BSD, CentOS `CHECKSUM` files).
fn names_file(line: &str, file: &str) -> bool {
    if file.is_empty() {
        return false;
    }
    if let Some(head) = line.strip_suffix(file) {
        let head = head.strip_suffix('*').unwrap_or(head);
        if head.ends_with(char::is_whitespace) {
            return true;
        }
    }
    let bsd = format!("({file})");
    line.match_indices(&bsd).any(|(i, m)| {
        line[..i].ends_with(char::is_whitespace)
            && line[i + m.len()..].starts_with(char::is_whitespace)
    })
}

/// The digest on a line: the first token when the line starts with one, else the last.
fn digest_on_line(line: &str) -> Option<&str> {
    let mut tokens = line.split_whitespace();
    let first = tokens.next()?;
    if is_digest(first) && line.len() > first.len() {
        return Some(first);
    }
    let last = line.split_whitespace().next_back()?;
    (is_digest(last) && line.len() > last.len()).then_some(last)
}

/// Finds the digest of `file_name` in the text of a checksum file. A file with a single
/// token is a bare digest; otherwise the line naming the file wins (`#` lines are comments).
/// Returns the digest as written (callers lower-case it), or why none was found.
pub fn parse_checksum_file(text: &str, file_name: &str) -> Result<String, String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect();
    match lines.as_slice() {
        [] => return Err("the checksum file is empty".to_string()),
        [only] if !only.contains(char::is_whitespace) => {
            return if is_digest(only) {
                Ok(only.to_string())
            } else {
                Err("no valid checksum found (a single line that is not a 32, 64 or 128 character hex digest)"
                    .to_string())
            };
        }
        _ => {}
    }
    let decoded = percent_decode(file_name);
    let names: Vec<&str> = std::iter::once(file_name)
        .chain(decoded.as_deref())
        .collect();
    for line in &lines {
        if line.starts_with('#') {
            continue;
        }
        if !names.iter().any(|n| names_file(line, n)) {
            continue;
        }
        if let Some(digest) = digest_on_line(line) {
            return Ok(digest.to_string());
        }
    }
    Err(format!(
        "the checksum file does not contain name {file_name}"
    ))
}
