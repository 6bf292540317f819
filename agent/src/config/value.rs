//! Typed option values and how each is spelled in text (kernel command line, INI, flags).

use ironic_protocol::ApiVersion;

/// A value an option can hold, parsed from its text form. Errors say what was expected; the
/// caller adds which option and which source it came from.
pub trait OptionValue: Sized {
    fn parse_value(text: &str) -> Result<Self, String>;
}

impl OptionValue for String {
    fn parse_value(text: &str) -> Result<Self, String> {
        Ok(text.to_string())
    }
}

/// oslo.config's boolean spellings.
impl OptionValue for bool {
    fn parse_value(text: &str) -> Result<Self, String> {
        match text.trim().to_ascii_lowercase().as_str() {
            "1" | "true" | "yes" | "on" => Ok(true),
            "0" | "false" | "no" | "off" => Ok(false),
            _ => Err(format!(
                "{text:?} is not a boolean (true/false, yes/no, on/off, 1/0)"
            )),
        }
    }
}

macro_rules! integer_value {
    ($($t:ty),*) => {$(
        impl OptionValue for $t {
            fn parse_value(text: &str) -> Result<Self, String> {
                text.trim().parse().map_err(|_| {
                    format!("{text:?} is not an integer in {}..={}", <$t>::MIN, <$t>::MAX)
                })
            }
        }
    )*};
}
integer_value!(u16, u32, u64);

impl OptionValue for f64 {
    fn parse_value(text: &str) -> Result<Self, String> {
        text.trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| format!("{text:?} is not a non-negative number"))
    }
}

/// Empty text means "not set".
impl<T: OptionValue> OptionValue for Option<T> {
    fn parse_value(text: &str) -> Result<Self, String> {
        if text.trim().is_empty() {
            Ok(None)
        } else {
            T::parse_value(text).map(Some)
        }
    }
}

/// A comma-separated list; blanks around items and empty items are dropped.
impl OptionValue for Vec<String> {
    fn parse_value(text: &str) -> Result<Self, String> {
        Ok(text
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect())
    }
}

impl OptionValue for ApiVersion {
    fn parse_value(text: &str) -> Result<Self, String> {
        text.parse()
            .map_err(|e: ironic_protocol::ParseApiVersionError| e.to_string())
    }
}

/// Ironic API URLs: `http(s)://...`, trailing `/` removed.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ApiUrls(pub Vec<String>);

impl OptionValue for ApiUrls {
    fn parse_value(text: &str) -> Result<Self, String> {
        let mut urls = Vec::new();
        for url in Vec::<String>::parse_value(text)? {
            if url == "mdns" {
                return Err(
                    "mDNS discovery of the Ironic API (\"mdns\") is not supported by \
                            this agent; give the API URL"
                        .into(),
                );
            }
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(format!("{url:?} is not an http:// or https:// URL"));
            }
            urls.push(url.trim_end_matches('/').to_string());
        }
        Ok(ApiUrls(urls))
    }
}

/// Declares a closed set of spellings as an enum that parses from them.
macro_rules! choice {
    ($(#[$m:meta])* $name:ident { $($variant:ident = $text:literal),+ $(,)? }) => {
        $(#[$m])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum $name { $($variant),+ }

        impl $name {
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }

        impl OptionValue for $name {
            fn parse_value(text: &str) -> Result<Self, String> {
                match text.trim() {
                    $($text => Ok($name::$variant),)+
                    _ => Err(format!(
                        "{text:?} is not one of: {}",
                        [$($text),+].join(", ")
                    )),
                }
            }
        }
    };
}

choice!(
    /// Scheme of the callback URL.
    Protocol { Http = "http", Https = "https" }
);
choice!(
    /// Minimum TLS version for the API server and for outgoing connections.
    TlsVersion { V1_2 = "1.2", V1_3 = "1.3" }
);
choice!(
    /// Curve of the auto-TLS key.
    Curve { P256 = "p256", P384 = "p384", P521 = "p521" }
);
choice!(
    /// IPA's `image_server_auth_strategy`.
    AuthStrategy { NoAuth = "noauth", HttpBasic = "http_basic" }
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn booleans_like_oslo() {
        for t in ["1", "true", "True", "YES", "on"] {
            assert!(bool::parse_value(t).unwrap(), "{t}");
        }
        for f in ["0", "false", "No", "off"] {
            assert!(!bool::parse_value(f).unwrap(), "{f}");
        }
        assert!(bool::parse_value("maybe").is_err());
        assert!(bool::parse_value("").is_err());
    }

    #[test]
    fn integers_reject_garbage_and_negatives() {
        assert_eq!(u64::parse_value(" 600 ").unwrap(), 600);
        assert!(u64::parse_value("10s").is_err());
        assert!(u64::parse_value("-1").is_err());
        assert!(u16::parse_value("70000").is_err());
        assert!(f64::parse_value("nan").is_err());
    }

    #[test]
    fn api_urls() {
        let u = ApiUrls::parse_value("http://a:6385/, https://b:6385").unwrap();
        assert_eq!(u.0, ["http://a:6385", "https://b:6385"]);
        assert!(ApiUrls::parse_value("a:6385")
            .unwrap_err()
            .contains("http://"));
        assert!(ApiUrls::parse_value("mdns").unwrap_err().contains("mDNS"));
    }

    #[test]
    fn choices_list_alternatives() {
        assert_eq!(TlsVersion::parse_value("1.3").unwrap(), TlsVersion::V1_3);
        let e = Curve::parse_value("p999").unwrap_err();
        assert!(e.contains("p256, p384, p521"), "{e}");
        assert_eq!(Option::<Curve>::parse_value("").unwrap(), None);
    }
}
