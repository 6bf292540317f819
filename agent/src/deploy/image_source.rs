//! What `image_info` means for the image pipeline: where and how to download the image (the
//! conductor's URLs, proxies and credentials with the agent's timeouts, retries and TLS) and
//! what its checksum must be. The pipeline receives these typed settings, never JSON.

use std::path::PathBuf;
use std::time::Duration;

use base64::Engine as _;
use image_pipeline::checksum::ChecksumSpec;
use image_pipeline::source::{BasicAuth, DownloadSettings, Proxies, SourceError, TlsMinVersion};
use ironic_protocol::ImageInfo;

use crate::config::{AuthStrategy, Options, TlsVersion};

/// The download of `info`'s image, named `image_id` (redacted) in messages.
pub fn download_settings(
    info: &ImageInfo,
    image_id: &str,
    opts: &Options,
) -> Result<DownloadSettings, SourceError> {
    let mut s = DownloadSettings::new(image_id, info.urls.clone());
    if info.proxies.http.is_some() || info.proxies.https.is_some() {
        s.proxies = Some(Proxies {
            http: info.proxies.http.clone(),
            https: info.proxies.https.clone(),
        });
    }
    s.no_proxy = info.no_proxy.clone();
    if let Some(encoded) = &info.image_request_authorization {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(encoded.trim())
            .map_err(|e| {
                SourceError::Setup(format!(
                    "image {image_id}: image_request_authorization is not valid base64: {e}"
                ))
            })?;
        let header = String::from_utf8(raw).map_err(|_| {
            SourceError::Setup(format!(
                "image {image_id}: image_request_authorization is not UTF-8 text"
            ))
        })?;
        s.authorization = Some(header);
    }
    if info.image_server_auth_strategy.as_deref() == Some("http_basic") {
        s.basic_auth = Some(BasicAuth::checked(
            image_id,
            info.image_server_user.clone(),
            info.image_server_password.clone(),
        )?);
    }

    let timeout = Duration::from_secs(opts.image_download_connection_timeout.max(1));
    s.connect_timeout = timeout;
    s.read_timeout = timeout;
    s.retries = opts.image_download_connection_retries;
    s.retry_interval = Duration::from_secs(opts.image_download_connection_retry_interval);
    s = s.with_max_duration_secs(opts.image_download_max_duration);
    s.connections = opts.image_download_connections.clamp(1, 16) as usize;
    s.window_size = u64::from(opts.image_download_window_mib.clamp(1, 64)) << 20;
    s.insecure = opts.insecure;
    s.ca_file = opts.cafile.as_ref().map(PathBuf::from);
    s.tls_min_version = match opts.tls_min_version {
        TlsVersion::V1_2 => TlsMinVersion::V1_2,
        TlsVersion::V1_3 => TlsMinVersion::V1_3,
    };
    // The agent's own image-server credentials, where the conductor sent none.
    if s.basic_auth.is_none()
        && s.authorization.is_none()
        && opts.image_server_auth_strategy == AuthStrategy::HttpBasic
    {
        s.basic_auth = Some(BasicAuth::checked(
            image_id,
            opts.image_server_user.clone(),
            opts.image_server_password.as_ref().map(|p| p.0.clone()),
        )?);
    }
    Ok(s)
}

/// What `info` says the image's checksum is, for `image_id` (redacted) in messages.
pub fn checksum_spec(info: &ImageInfo, image_id: &str) -> ChecksumSpec {
    ChecksumSpec {
        image_id: image_id.to_string(),
        first_url: info.urls.first().cloned().unwrap_or_default(),
        checksum: info.checksum.clone(),
        os_hash_algo: info.os_hash_algo.clone(),
        os_hash_value: info.os_hash_value.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn opts() -> Options {
        crate::config::Config::from_args(["ironic-agent", "--cmdline-file", "/dev/null"])
            .unwrap()
            .options
    }

    fn info(v: serde_json::Value) -> ImageInfo {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn credentials_proxies_and_authorization_from_image_info() {
        let header = "Bearer gAAAAA.token-value==";
        let i = info(json!({
            "id": "img-1", "urls": ["http://h/img"],
            "image_request_authorization": base64::engine::general_purpose::STANDARD.encode(header),
            "image_server_auth_strategy": "http_basic",
            "image_server_user": "alice", "image_server_password": "s3cret",
            "proxies": {"http": "http://proxy:3128", "https": ""},
            "no_proxy": "example.invalid",
        }));
        let s = download_settings(&i, "img-1", &opts()).unwrap();
        assert_eq!(s.authorization.as_deref(), Some(header));
        let auth = s.basic_auth.as_ref().unwrap();
        assert_eq!(
            (auth.user.as_str(), auth.password.as_str()),
            ("alice", "s3cret")
        );
        let proxies = s.proxies.as_ref().unwrap();
        assert_eq!(proxies.http.as_deref(), Some("http://proxy:3128"));
        assert_eq!(proxies.https, None);
        assert_eq!(s.no_proxy.as_deref(), Some("example.invalid"));
        let debug = format!("{s:?}");
        assert!(
            !debug.contains("token-value") && !debug.contains("s3cret"),
            "{debug}"
        );
    }

    #[test]
    fn bad_credentials_are_refused_like_ipa() {
        let e = download_settings(
            &info(json!({
                "id": "img-1", "urls": ["http://h/x"],
                "image_server_auth_strategy": "http_basic", "image_server_user": "alice",
            })),
            "img-1",
            &opts(),
        )
        .unwrap_err();
        assert!(
            e.to_string()
                .contains("Missing ['password'] fields from HTTP(S) basic auth config"),
            "{e}"
        );
        assert!(matches!(e, SourceError::Setup(_)));
        let e = download_settings(
            &info(json!({
                "id": "img-1", "urls": ["http://h/x"], "image_request_authorization": "%%%",
            })),
            "img-1",
            &opts(),
        )
        .unwrap_err();
        assert!(e.to_string().contains("is not valid base64"), "{e}");
    }

    #[test]
    fn the_checksum_spec_names_the_redacted_image() {
        let i = info(json!({
            "id": "img?temp_url_sig=x", "urls": ["http://h/disk.img?temp_url_sig=x"],
            "os_hash_algo": "sha256", "os_hash_value": "ab",
        }));
        let spec = checksum_spec(&i, "img?<redacted>");
        assert_eq!(spec.image_id, "img?<redacted>");
        assert_eq!(spec.first_url, "http://h/disk.img?temp_url_sig=x");
        assert_eq!(spec.os_hash_algo.as_deref(), Some("sha256"));
        assert_eq!(spec.checksum, None);
    }
}
