//! The kernel command line as the init needs it: `BOOTIF` and the init's own knobs.
//!
//! Parameters are found by key, never by position: under UEFI iPXE puts the kernel's file
//! name first, and Ironic's templates order parameters as they like.

/// `key=value` and bare `flag` words of a kernel command line, in order. Double quotes group
/// a value with spaces (`foo="a b"`), as the kernel's own parser does.
pub fn parse(cmdline: &str) -> Vec<(String, Option<String>)> {
    ramdisk_contract::cmdline::words(cmdline)
        .into_iter()
        .map(|w| match w.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (w, None),
        })
        .collect()
}

/// The last value given for `key` (the kernel's rule: later parameters win).
pub fn get<'a>(params: &'a [(String, Option<String>)], key: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, _)| k == key)
        .and_then(|(_, v)| v.as_deref())
}

/// The boot NIC's MAC from `BOOTIF`, lower case with colons. Accepts PXELINUX's
/// `01-52-54-00-12-34-56` (hardware type 1 first) and iPXE's `${mac}` form
/// `52:54:00:12:34:56` as Ironic renders it.
pub fn bootif_mac(value: &str) -> Option<String> {
    let v = value.trim().to_ascii_lowercase();
    let parts: Vec<&str> = v.split(['-', ':']).collect();
    let octets = match parts.len() {
        7 if parts[0] == "01" => &parts[1..],
        6 => &parts[..],
        _ => return None,
    };
    if octets
        .iter()
        .all(|o| o.len() == 2 && o.chars().all(|c| c.is_ascii_hexdigit()))
    {
        Some(octets.join(":"))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_keys_flags_and_quotes() {
        let p = parse(
            "vmlinuz initrd=deploy_ramdisk  console=ttyS0 quiet a=\"x y\" BOOTIF=01-52-54-00-12-34-56 a=z\n",
        );
        assert_eq!(p[0], ("vmlinuz".into(), None));
        assert_eq!(get(&p, "console"), Some("ttyS0"));
        assert_eq!(get(&p, "quiet"), None);
        assert!(p
            .iter()
            .any(|(k, v)| k == "a" && v.as_deref() == Some("x y")));
        assert_eq!(get(&p, "a"), Some("z"), "later parameters win");
        assert_eq!(get(&p, "BOOTIF"), Some("01-52-54-00-12-34-56"));
    }

    #[test]
    fn bootif_in_both_forms() {
        assert_eq!(
            bootif_mac("01-52-54-00-12-34-AB").as_deref(),
            Some("52:54:00:12:34:ab")
        );
        assert_eq!(
            bootif_mac("52:54:00:12:34:56").as_deref(),
            Some("52:54:00:12:34:56")
        );
        assert_eq!(bootif_mac("02-52-54-00-12-34-56"), None);
        assert_eq!(bootif_mac("${mac}"), None);
        assert_eq!(bootif_mac(""), None);
    }
}
