//! The kernel command line, as IPA reads it: `key=value` tokens.

use std::collections::BTreeMap;

/// `key -> value` for every `key=value` token of a kernel command line. Tokens without `=`
/// are ignored, the value is everything after the first `=`, and later duplicates win (as in
/// IPA). Unlike IPA, double quotes are honoured the way the kernel honours them, so
/// `ipa-global-request-id="req 1"` survives; the quotes themselves are removed.
pub fn parse(cmdline: &str) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    for token in ramdisk_contract::cmdline::words(cmdline) {
        if let Some((key, value)) = token.split_once('=') {
            if !key.is_empty() {
                params.insert(key.to_string(), value.to_string());
            }
        }
    }
    params
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipa_style_key_values() {
        let p = parse(
            "BOOT_IMAGE=/vmlinuz root=/dev/ram0 quiet ipa-api-url=http://192.0.2.1:6385 \
             BOOTIF=01-52-54-00-12-34-56 ipa-debug=1\n",
        );
        assert_eq!(p["ipa-api-url"], "http://192.0.2.1:6385");
        assert_eq!(p["BOOTIF"], "01-52-54-00-12-34-56");
        assert_eq!(p["ipa-debug"], "1");
        assert!(!p.contains_key("quiet"), "tokens without = are ignored");
    }

    #[test]
    fn value_keeps_later_equals_signs() {
        let p = parse("ipa-api-url=http://h:6385/?a=b");
        assert_eq!(p["ipa-api-url"], "http://h:6385/?a=b");
    }

    #[test]
    fn duplicates_last_one_wins() {
        let p = parse("ipa-lookup-timeout=10 ipa-lookup-timeout=20");
        assert_eq!(p["ipa-lookup-timeout"], "20");
    }

    #[test]
    fn quotes_group_and_are_removed() {
        let p = parse(r#"ipa-global-request-id="req 1" "ipa-x=a b" empty="""#);
        assert_eq!(p["ipa-global-request-id"], "req 1");
        assert_eq!(p["ipa-x"], "a b");
        assert_eq!(p["empty"], "");
    }

    #[test]
    fn keys_are_case_sensitive_and_empty_keys_ignored() {
        let p = parse("BOOTIF=a bootif=b =c");
        assert_eq!(p["BOOTIF"], "a");
        assert_eq!(p["bootif"], "b");
        assert_eq!(p.len(), 2);
    }

    #[test]
    fn uefi_ipxe_puts_the_kernel_name_first() {
        let p = parse("vmlinuz initrd=initrd ipa-api-url=http://x BOOTIF=52:54:00:12:34:56");
        assert_eq!(p["BOOTIF"], "52:54:00:12:34:56");
        assert_eq!(p["initrd"], "initrd");
    }
}
