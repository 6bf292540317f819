//! URLs as they may appear in logs and error messages.
//!
//! A Swift temp URL carries its credential in the query string (`temp_url_sig`), other image
//! servers put tokens there too, and a URL may carry `user:password@`. Every log line and
//! error message that names a URL goes through [`redact_url`]; server-supplied text goes
//! through [`scrub_text`].

/// What replaces a removed query string or password.
pub const REDACTED: &str = "<redacted>";

/// The URL without its query string, fragment and password: `scheme://user@host/path`,
/// followed by `?<redacted>` when there was a query. Safe to log.
pub fn redact_url(url: &str) -> String {
    let (before_fragment, _) = url.split_once('#').unwrap_or((url, ""));
    let (base, query) = match before_fragment.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (before_fragment, None),
    };
    let mut out = strip_password(base);
    if query.is_some() {
        out.push('?');
        out.push_str(REDACTED);
    }
    out
}

fn strip_password(base: &str) -> String {
    let Some(scheme_end) = base.find("://") else {
        return base.to_string();
    };
    let authority_start = scheme_end + 3;
    let rest = &base[authority_start..];
    let authority_end = rest.find('/').unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match authority.rfind('@') {
        Some(at) => {
            let userinfo = &authority[..at];
            let user = userinfo.split(':').next().unwrap_or("");
            let password = if userinfo.contains(':') {
                format!(":{REDACTED}")
            } else {
                String::new()
            };
            format!(
                "{}{user}{password}@{}{}",
                &base[..authority_start],
                &authority[at + 1..],
                &rest[authority_end..]
            )
        }
        None => base.to_string(),
    }
}

/// True for a Swift temp URL (its query names `temp_url_sig` or `temp_url_expires`).
pub fn is_swift_temp_url(url: &str) -> bool {
    let before_fragment = url.split('#').next().unwrap_or(url);
    before_fragment.split_once('?').is_some_and(|(_, query)| {
        query.split('&').any(|kv| {
            let key = kv.split('=').next().unwrap_or("");
            key.eq_ignore_ascii_case("temp_url_sig") || key.eq_ignore_ascii_case("temp_url_expires")
        })
    })
}

/// Server-supplied text (an error body) with anything that looks like a URL credential
/// removed: the query strings of `secret_urls` wherever they appear, and the value of any
/// `sig`/`signature`/`token`/`password`-like query parameter. Also shortened to `max` chars.
pub fn scrub_text(text: &str, secret_urls: &[&str], max: usize) -> String {
    let mut s: String = text.chars().take(max.saturating_mul(2)).collect();
    for url in secret_urls {
        if let Some((_, q)) = url.split('#').next().unwrap_or(url).split_once('?') {
            if !q.is_empty() {
                s = s.replace(q, REDACTED);
            }
        }
    }
    // `name=value` where name looks like a credential: drop the value.
    let mut out = String::with_capacity(s.len());
    let mut rest = s.as_str();
    while let Some(eq) = rest.find('=') {
        let head = &rest[..eq];
        let key_start = head
            .rfind(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            .map_or(0, |i| i + 1);
        let key = head[key_start..].to_ascii_lowercase();
        out.push_str(head);
        out.push('=');
        rest = &rest[eq + 1..];
        if [
            "sig",
            "signature",
            "token",
            "password",
            "secret",
            "key",
            "auth",
        ]
        .iter()
        .any(|k| key.contains(k))
        {
            let end = rest
                .find(|c: char| c == '&' || c == '"' || c == '\'' || c == '<' || c.is_whitespace())
                .unwrap_or(rest.len());
            out.push_str(REDACTED);
            rest = &rest[end..];
        }
    }
    out.push_str(rest);
    let out = out.replace(['\r', '\n'], " ");
    if out.chars().count() > max {
        let mut t: String = out.chars().take(max).collect();
        t.push('…');
        t
    } else {
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_and_fragment_are_removed() {
        let u = "https://swift.example:8080/v1/AUTH_a/glance/img?temp_url_sig=deadbeef&temp_url_expires=1700000000#frag";
        let r = redact_url(u);
        assert_eq!(
            r,
            "https://swift.example:8080/v1/AUTH_a/glance/img?<redacted>"
        );
        assert!(!r.contains("deadbeef"));
        assert!(!r.contains("temp_url_sig"));
    }

    #[test]
    fn password_is_removed_but_user_kept() {
        assert_eq!(
            redact_url("http://alice:s3cret@host/img.raw"),
            "http://alice:<redacted>@host/img.raw"
        );
        assert_eq!(
            redact_url("http://alice@host/img.raw"),
            "http://alice@host/img.raw"
        );
        assert_eq!(
            redact_url("http://proxy-user:pw@127.0.0.1:3128"),
            "http://proxy-user:<redacted>@127.0.0.1:3128"
        );
        // An '@' in the path is not userinfo.
        assert_eq!(redact_url("http://host/a@b"), "http://host/a@b");
    }

    #[test]
    fn plain_urls_are_unchanged() {
        for u in [
            "http://127.0.0.1:1234/img.qcow2",
            "https://[::1]/x",
            "not a url",
        ] {
            assert_eq!(redact_url(u), u);
        }
    }

    #[test]
    fn swift_temp_urls_are_recognised() {
        assert!(is_swift_temp_url(
            "http://h/v1/a/c/o?temp_url_sig=x&temp_url_expires=1"
        ));
        assert!(is_swift_temp_url(
            "http://h/o?filename=a&TEMP_URL_EXPIRES=1"
        ));
        assert!(!is_swift_temp_url("http://h/o?sig=x"));
        assert!(!is_swift_temp_url("http://h/temp_url_sig"));
    }

    #[test]
    fn server_text_is_scrubbed() {
        let url = "http://h/o?temp_url_sig=abc123&temp_url_expires=99";
        let body = "<html>401 Unauthorized: GET /o?temp_url_sig=abc123&temp_url_expires=99 \
                    token=xyz other=ok</html>";
        let s = scrub_text(body, &[url], 500);
        assert!(!s.contains("abc123"), "{s}");
        assert!(!s.contains("xyz"), "{s}");
        assert!(s.contains("other=ok"), "{s}");
        let sig_only = scrub_text("see ?temp_url_sig=zzz&x=1", &[], 100);
        assert!(!sig_only.contains("zzz"), "{sig_only}");
        assert_eq!(scrub_text("abcdef", &[], 3), "abc…");
    }
}
