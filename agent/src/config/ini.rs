//! IPA's configuration file format (oslo.config INI), so operators keep their config files.

use std::collections::BTreeMap;

/// `section -> key -> value`. Section names are kept as written (`DEFAULT`, `mdns`, ...);
/// keys are normalised so that `guard-special-filesystems` and `guard_special_filesystems`
/// are the same option, as oslo.config treats them.
pub type Sections = BTreeMap<String, BTreeMap<String, String>>;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum IniError {
    #[error("line {line}: option outside of any [section]")]
    NoSection { line: usize },
    #[error("line {line}: unterminated section header")]
    BadSection { line: usize },
    #[error("line {line}: expected `name = value`")]
    NoValue { line: usize },
    #[error("line {line}: indented continuation line without an option before it")]
    UnexpectedContinuation { line: usize },
}

/// Parses oslo.config INI text as oslo's own parser does: `[section]` headers,
/// `name = value` or `name: value` (whichever separator comes first), comment lines starting
/// with `#` or `;`, indented lines continuing the previous value (joined by newlines, ended by
/// a blank line), matching surrounding quotes removed, and a repeated option replacing the
/// earlier value.
pub fn parse(text: &str) -> Result<Sections, IniError> {
    let mut sections = Sections::new();
    let mut section: Option<String> = None;
    let mut last_key: Option<String> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let raw = raw.trim_end();
        if raw.is_empty() {
            last_key = None;
            continue;
        }
        if raw.starts_with([' ', '\t']) {
            let (Some(s), Some(k)) = (&section, &last_key) else {
                return Err(IniError::UnexpectedContinuation { line });
            };
            if let Some(v) = sections.get_mut(s).and_then(|m| m.get_mut(k)) {
                v.push('\n');
                v.push_str(raw.trim_start());
            }
            continue;
        }
        last_key = None;
        if let Some(rest) = raw.strip_prefix('[') {
            let name = rest
                .strip_suffix(']')
                .ok_or(IniError::BadSection { line })?;
            let name = name.trim().to_string();
            sections.entry(name.clone()).or_default();
            section = Some(name);
            continue;
        }
        if raw.starts_with(['#', ';']) {
            continue;
        }
        let Some(s) = &section else {
            return Err(IniError::NoSection { line });
        };
        let split = raw.find(['=', ':']).ok_or(IniError::NoValue { line })?;
        let key = normalise_key(raw[..split].trim());
        if key.is_empty() {
            return Err(IniError::NoValue { line });
        }
        let value = unquote(raw[split + 1..].trim()).to_string();
        sections
            .entry(s.clone())
            .or_default()
            .insert(key.clone(), value);
        last_key = Some(key);
    }
    Ok(sections)
}

fn unquote(v: &str) -> &str {
    for q in ['"', '\''] {
        if v.len() >= 2 && v.starts_with(q) && v.ends_with(q) {
            return &v[1..v.len() - 1];
        }
    }
    v
}

pub fn normalise_key(key: &str) -> String {
    key.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_ipa_style_file() {
        let s = parse(
            "# IPA config\n[DEFAULT]\napi_url = http://192.0.2.1:6385\n\
             debug=True\nguard-special-filesystems = false\n\n[mdns]\nuse_mdns: true\n",
        )
        .unwrap();
        assert_eq!(s["DEFAULT"]["api_url"], "http://192.0.2.1:6385");
        assert_eq!(s["DEFAULT"]["debug"], "True");
        assert_eq!(s["DEFAULT"]["guard_special_filesystems"], "false");
        assert_eq!(s["mdns"]["use_mdns"], "true");
    }

    #[test]
    fn duplicates_last_wins_and_continuations_join() {
        let s =
            parse("[DEFAULT]\na = 1\na = 2\nb = x\n  y\n  # not a comment\n; comment\n").unwrap();
        assert_eq!(s["DEFAULT"]["a"], "2");
        assert_eq!(s["DEFAULT"]["b"], "x\ny\n# not a comment");
    }

    #[test]
    fn matching_quotes_are_removed_like_oslo() {
        let s = parse("[DEFAULT]\na = \"req-1\"\nb = 'x'\nc = \"half\nd = a=b:c\n").unwrap();
        assert_eq!(s["DEFAULT"]["a"], "req-1");
        assert_eq!(s["DEFAULT"]["b"], "x");
        assert_eq!(s["DEFAULT"]["c"], "\"half");
        assert_eq!(s["DEFAULT"]["d"], "a=b:c");
    }

    #[test]
    fn malformed_lines_name_the_line() {
        assert_eq!(parse("api_url = x\n"), Err(IniError::NoSection { line: 1 }));
        assert_eq!(parse("[DEFAULT\n"), Err(IniError::BadSection { line: 1 }));
        assert_eq!(
            parse("[DEFAULT]\n\njust words\n"),
            Err(IniError::NoValue { line: 3 })
        );
        assert_eq!(
            parse("[DEFAULT]\na = 1\n\n  orphan\n"),
            Err(IniError::UnexpectedContinuation { line: 4 })
        );
    }
}
