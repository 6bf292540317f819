//! How to download an image: URLs, timeouts, retries, proxies, credentials, TLS.

use super::SourceError;
use crate::redact::redact_url;
use std::path::PathBuf;
use std::time::Duration;

/// Proxy URLs by scheme of the target (`image_info.proxies`).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Proxies {
    pub http: Option<String>,
    pub https: Option<String>,
}

impl std::fmt::Debug for Proxies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxies")
            .field("http", &self.http.as_deref().map(redact_url))
            .field("https", &self.https.as_deref().map(redact_url))
            .finish()
    }
}

/// HTTP basic credentials (`image_server_auth_strategy = http_basic`).
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    pub user: String,
    pub password: String,
}

impl std::fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BasicAuth")
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// Lowest TLS version accepted from image servers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsMinVersion {
    #[default]
    V1_2,
    V1_3,
}

/// Everything the HTTP source needs. [`DownloadSettings::new`] gives IPA's defaults; the
/// agent fills in what the conductor's `image_info` and its own configuration say.
#[derive(Clone)]
pub struct DownloadSettings {
    /// For messages only (`image_info.id`).
    pub image_id: String,
    /// Tried in order; the next one is used when one fails (`image_info.urls`).
    pub urls: Vec<String>,
    /// TCP + TLS connect timeout (`image_download_connection_timeout`, 60 s).
    pub connect_timeout: Duration,
    /// Longest silence while waiting for response headers or the next bytes of a body
    /// (`image_download_connection_timeout`, 60 s). A stall resumes the download.
    pub read_timeout: Duration,
    /// Failed attempts in a row (without progress) allowed per URL before moving on
    /// (`image_download_connection_retries`, 9).
    pub retries: u32,
    /// Pause between such attempts (`image_download_connection_retry_interval`, 10 s).
    pub retry_interval: Duration,
    /// Wall-clock limit for the whole download (`image_download_max_duration`; `None` = no
    /// limit, which is what IPA's 0 means).
    pub max_duration: Option<Duration>,
    /// Explicit proxies (`image_info.proxies`). `None`: the `http_proxy`/`https_proxy`
    /// environment variables apply, as they do for IPA's `requests`.
    pub proxies: Option<Proxies>,
    /// Hosts that bypass the proxies (`image_info.no_proxy`, comma separated).
    pub no_proxy: Option<String>,
    pub basic_auth: Option<BasicAuth>,
    /// A complete `Authorization` header value, sent verbatim; wins over `basic_auth`
    /// (decoded `image_info.image_request_authorization`).
    pub authorization: Option<String>,
    /// Do not verify server certificates.
    pub insecure: bool,
    /// Extra trusted CA certificates (PEM), on top of the system's and webpki's roots.
    pub ca_file: Option<PathBuf>,
    pub tls_min_version: TlsMinVersion,
    pub user_agent: String,
    /// Size of the chunks handed to the consumer (1 MiB).
    pub chunk_size: usize,
    /// Chunks buffered between the network and the consumer.
    pub queue_depth: usize,
    /// Connections to download with when the server serves byte ranges (1: one stream, as
    /// IPA). See `source::parallel`.
    pub connections: usize,
    /// Bytes per window of a parallel download (rounded up to whole chunks).
    pub window_size: u64,
}

impl std::fmt::Debug for DownloadSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DownloadSettings")
            .field("image_id", &self.image_id)
            .field(
                "urls",
                &self.urls.iter().map(|u| redact_url(u)).collect::<Vec<_>>(),
            )
            .field("connect_timeout", &self.connect_timeout)
            .field("read_timeout", &self.read_timeout)
            .field("retries", &self.retries)
            .field("retry_interval", &self.retry_interval)
            .field("max_duration", &self.max_duration)
            .field("proxies", &self.proxies)
            .field("no_proxy", &self.no_proxy)
            .field("basic_auth", &self.basic_auth)
            .field(
                "authorization",
                &self.authorization.as_ref().map(|_| "<redacted>"),
            )
            .field("insecure", &self.insecure)
            .field("ca_file", &self.ca_file)
            .field("tls_min_version", &self.tls_min_version)
            .field("user_agent", &self.user_agent)
            .field("chunk_size", &self.chunk_size)
            .field("queue_depth", &self.queue_depth)
            .field("connections", &self.connections)
            .field("window_size", &self.window_size)
            .finish()
    }
}

pub const DEFAULT_CHUNK_SIZE: usize = 1 << 20;
pub const DEFAULT_QUEUE_DEPTH: usize = 8;
/// Parallel download: connections, and bytes per window (README, "Beyond one TCP stream").
/// Each connection beyond the first costs about 6 MiB of peak RSS here (its window behind the
/// head, its buffers; `tests/bench.sh --agent-arg ipa-image-download-connections=N`, zstd
/// path: 51 MiB with 1, 57 with 2, 66 with 4): 2 doubles what a per-connection cap allows and
/// keeps every path under the agent's 64 MiB; operators whose servers cap each connection
/// (Swift proxies, throttled mirrors) and who have the memory raise it.
pub const DEFAULT_CONNECTIONS: usize = 2;
pub const DEFAULT_WINDOW_SIZE: u64 = 2 << 20;

impl DownloadSettings {
    /// IPA's defaults for one image.
    pub fn new(image_id: impl Into<String>, urls: Vec<String>) -> DownloadSettings {
        DownloadSettings {
            image_id: image_id.into(),
            urls,
            connect_timeout: Duration::from_secs(60),
            read_timeout: Duration::from_secs(60),
            retries: 9,
            retry_interval: Duration::from_secs(10),
            max_duration: None,
            proxies: None,
            no_proxy: None,
            basic_auth: None,
            authorization: None,
            insecure: false,
            ca_file: None,
            tls_min_version: TlsMinVersion::V1_2,
            user_agent: concat!("ironic-agent/", env!("CARGO_PKG_VERSION")).to_string(),
            chunk_size: DEFAULT_CHUNK_SIZE,
            queue_depth: DEFAULT_QUEUE_DEPTH,
            connections: DEFAULT_CONNECTIONS,
            window_size: DEFAULT_WINDOW_SIZE,
        }
    }

    /// `image_download_max_duration` in seconds, 0 meaning no limit.
    pub fn with_max_duration_secs(mut self, secs: u64) -> DownloadSettings {
        self.max_duration = (secs > 0).then(|| Duration::from_secs(secs));
        self
    }
}

impl BasicAuth {
    /// Both fields must be present and non-empty (IPA's `_verify_basic_auth_creds`); the agent
    /// uses this for credentials from its own configuration too.
    pub fn checked(
        image_id: &str,
        user: Option<String>,
        password: Option<String>,
    ) -> Result<BasicAuth, SourceError> {
        let mut missing = Vec::new();
        if user.as_deref().is_none_or(str::is_empty) {
            missing.push("'user'");
        }
        if password.as_deref().is_none_or(str::is_empty) {
            missing.push("'password'");
        }
        match (user, password) {
            (Some(user), Some(password)) if missing.is_empty() => Ok(BasicAuth { user, password }),
            _ => Err(SourceError::Setup(format!(
                "Download of image {image_id} failed: Missing [{}] fields from HTTP(S) basic auth config",
                missing.join(", ")
            ))),
        }
    }
}
