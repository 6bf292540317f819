//! The HTTP client shared by the stream, the range reader and checksum-file fetches: one
//! reqwest client with the download's proxies, TLS settings and credentials, and the
//! classification of responses and failures into "retry", "give up on this URL" and "stop".

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::StatusCode;
use tokio::time::Instant;

use super::settings::{DownloadSettings, TlsMinVersion};
use super::SourceError;
use crate::redact::{is_swift_temp_url, redact_url, scrub_text};

/// The wall-clock budget of a download (`image_download_max_duration`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Deadline {
    pub start: Instant,
    pub limit: Option<Duration>,
}

impl Deadline {
    pub fn new(limit: Option<Duration>) -> Deadline {
        Deadline {
            start: Instant::now(),
            limit,
        }
    }

    fn at(&self) -> Option<Instant> {
        self.limit.map(|l| self.start + l)
    }
}

/// Why waiting ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wait {
    /// The per-wait timeout (connect/read stall) passed.
    Timeout,
    /// The download's total time budget is used up.
    Deadline,
}

/// Runs `fut` for at most `timeout` (if any) and never past the deadline.
pub(crate) async fn within<F: std::future::Future>(
    deadline: Deadline,
    timeout: Option<Duration>,
    fut: F,
) -> Result<F::Output, Wait> {
    let now = Instant::now();
    let stall_at = timeout.map(|t| now + t);
    let (until, kind) = match (stall_at, deadline.at()) {
        (Some(s), Some(d)) if d <= s => (Some(d), Wait::Deadline),
        (Some(s), _) => (Some(s), Wait::Timeout),
        (None, Some(d)) => (Some(d), Wait::Deadline),
        (None, None) => (None, Wait::Timeout),
    };
    match until {
        Some(until) => tokio::time::timeout_at(until, fut).await.map_err(|_| kind),
        None => Ok(fut.await),
    }
}

/// Sleeps, but not past the deadline.
pub(crate) async fn pause(deadline: Deadline, d: Duration) -> Result<(), Wait> {
    match within(deadline, Some(d), tokio::time::sleep(d)).await {
        Ok(()) | Err(Wait::Timeout) => Ok(()),
        Err(Wait::Deadline) => Err(Wait::Deadline),
    }
}

/// The result of one failed attempt.
#[derive(Debug)]
pub(crate) enum Failure {
    /// Connection error, 5xx, stall, truncation: worth another try.
    Transient(String),
    /// A 4xx: this URL will not work (IPA's ImageDownloadFatalError).
    Fatal(SourceError),
    /// Stop everything (time budget used up, consumer gone, protocol violation).
    Abort(SourceError),
}

/// The entity validators of a response, for `If-Range` and for recognising the same file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Validators {
    /// Strong ETag only: weak ones cannot be used with If-Range.
    pub etag: Option<String>,
    pub last_modified: Option<String>,
}

impl Validators {
    pub fn from_headers(h: &HeaderMap) -> Validators {
        let get = |name| {
            h.get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
                .map(str::to_string)
        };
        Validators {
            etag: get(header::ETAG).filter(|e| !e.starts_with("W/")),
            last_modified: get(header::LAST_MODIFIED),
        }
    }

    /// The value for `If-Range`.
    pub fn if_range(&self) -> Option<&str> {
        self.etag.as_deref().or(self.last_modified.as_deref())
    }

    /// `Some(true/false)` when both sides have a comparable validator, `None` otherwise.
    pub fn same_as(&self, other: &Validators) -> Option<bool> {
        if let (Some(a), Some(b)) = (&self.etag, &other.etag) {
            return Some(a == b);
        }
        if let (Some(a), Some(b)) = (&self.last_modified, &other.last_modified) {
            return Some(a == b);
        }
        None
    }
}

/// `Content-Range: bytes <first>-<last>/<total|*>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ContentRange {
    pub first: u64,
    pub last: u64,
    pub total: Option<u64>,
}

pub(crate) fn content_range(h: &HeaderMap) -> Option<ContentRange> {
    let v = h.get(header::CONTENT_RANGE)?.to_str().ok()?.trim();
    let rest = v.strip_prefix("bytes")?.trim_start();
    let (range, total) = rest.split_once('/')?;
    let (first, last) = range.trim().split_once('-')?;
    let first: u64 = first.trim().parse().ok()?;
    let last: u64 = last.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (first <= last && total.is_none_or(|t| last < t)).then_some(ContentRange { first, last, total })
}

/// One reqwest client configured from [`DownloadSettings`].
pub(crate) struct Http {
    pub client: reqwest::Client,
    pub settings: Arc<DownloadSettings>,
}

impl Http {
    pub fn new(settings: Arc<DownloadSettings>) -> Result<Http, SourceError> {
        let s = &settings;
        let mut b = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(s.connect_timeout)
            .user_agent(s.user_agent.clone())
            .min_tls_version(match s.tls_min_version {
                TlsMinVersion::V1_2 => reqwest::tls::Version::TLS_1_2,
                TlsMinVersion::V1_3 => reqwest::tls::Version::TLS_1_3,
            })
            .danger_accept_invalid_certs(s.insecure)
            .tcp_nodelay(true);
        if let Some(path) = &s.ca_file {
            let pem = std::fs::read(path).map_err(|e| {
                SourceError::Setup(format!("reading CA file {}: {e}", path.display()))
            })?;
            let certs = reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| {
                SourceError::Setup(format!("CA file {}: {}", path.display(), describe(&e)))
            })?;
            for cert in certs {
                b = b.add_root_certificate(cert);
            }
        }
        for proxy in proxies(s)? {
            b = b.proxy(proxy);
        }
        let client = b
            .build()
            .map_err(|e| SourceError::Setup(format!("HTTP client: {}", describe(&e))))?;
        Ok(Http {
            client,
            settings: settings.clone(),
        })
    }

    /// Sends a GET and waits for the response headers. `range` is `(first, Some(last))` or
    /// `(first, None)` for "to the end". Returns only 200 and 206 responses.
    pub async fn get(
        &self,
        url: &str,
        range: Option<(u64, Option<u64>)>,
        if_range: Option<&str>,
        deadline: Deadline,
    ) -> Result<reqwest::Response, Failure> {
        let s = &self.settings;
        let mut req = self.client.get(url);
        if let Some(auth) = &s.authorization {
            let mut v = HeaderValue::from_str(auth).map_err(|_| {
                Failure::Abort(SourceError::Setup(format!(
                    "image {}: the supplied Authorization value is not a valid header value",
                    s.image_id
                )))
            })?;
            v.set_sensitive(true);
            req = req.header(header::AUTHORIZATION, v);
        } else if let Some(basic) = &s.basic_auth {
            req = req.basic_auth(&basic.user, Some(&basic.password));
        }
        if let Some((first, last)) = range {
            let spec = match last {
                Some(last) => format!("bytes={first}-{last}"),
                None => format!("bytes={first}-"),
            };
            req = req.header(header::RANGE, spec);
            if let Some(v) = if_range.and_then(|v| HeaderValue::from_str(v).ok()) {
                req = req.header(header::IF_RANGE, v);
            }
        }
        // Response headers must come within connect + read timeout (IPA's requests timeout
        // covers both).
        let wait = s.connect_timeout + s.read_timeout;
        let resp = match within(deadline, Some(wait), req.send()).await {
            Err(Wait::Deadline) => return Err(Failure::Abort(self.timed_out(deadline, 0, None))),
            Err(Wait::Timeout) => {
                return Err(Failure::Transient(format!(
                    "no response within {} s",
                    wait.as_secs_f64()
                )))
            }
            Ok(Err(e)) => return Err(Failure::Transient(describe(&e))),
            Ok(Ok(r)) => r,
        };
        let status = resp.status();
        if status == StatusCode::OK || status == StatusCode::PARTIAL_CONTENT {
            return Ok(resp);
        }
        let body = error_body(resp, deadline).await;
        let body = scrub_text(&body, &[url], 200);
        let body = if body.trim().is_empty() {
            String::new()
        } else {
            format!(" Response body: {}", body.trim())
        };
        let shown = redact_url(url);
        let code = status.as_u16();
        let reason = status.canonical_reason().unwrap_or("");
        if status.is_server_error()
            || status == StatusCode::REQUEST_TIMEOUT
            || status == StatusCode::TOO_MANY_REQUESTS
        {
            return Err(Failure::Transient(format!(
                "Received status code {code} {reason} from {shown}, expected 200.{body}"
            )));
        }
        let message = match code {
            401 | 403 if is_swift_temp_url(url) => format!(
                "the Swift temp URL {shown} was refused with {code} {reason}: the temp URL has \
                 expired or its signature is wrong (the conductor issues a new one when the \
                 deployment is retried; check that the agent's and Swift's clocks agree).{body}"
            ),
            401 | 403 => {
                let creds = if s.authorization.is_some() {
                    "the supplied image_request_authorization was rejected"
                } else if s.basic_auth.is_some() {
                    "the image server rejected image_server_user/image_server_password"
                } else {
                    "the image server requires credentials and none were configured"
                };
                format!("{shown} answered {code} {reason}: {creds}.{body}")
            }
            404 => format!("{shown} answered 404 Not Found: there is no file at that URL.{body}"),
            416 => format!("{shown} answered 416 Range Not Satisfiable.{body}"),
            _ => format!("Received status code {code} {reason} from {shown}, expected 200.{body}"),
        };
        Err(Failure::Fatal(SourceError::Fatal {
            image_id: s.image_id.clone(),
            url: shown,
            status: code,
            message,
        }))
    }

    /// The next piece of a body, waiting at most `read_timeout` (a stall) and never past the
    /// deadline. `Ok(None)` is the end of the body.
    pub async fn next_piece(
        &self,
        resp: &mut reqwest::Response,
        deadline: Deadline,
        received: u64,
        total: Option<u64>,
    ) -> Result<Option<Bytes>, Failure> {
        let stall = self.settings.read_timeout;
        match within(deadline, Some(stall), resp.chunk()).await {
            Ok(Ok(piece)) => Ok(piece),
            Ok(Err(e)) => Err(Failure::Transient(format!(
                "connection lost after {received} bytes: {}",
                describe(&e)
            ))),
            Err(Wait::Timeout) => Err(Failure::Transient(format!(
                "no data for {} s after {received} bytes (stalled)",
                stall.as_secs_f64()
            ))),
            Err(Wait::Deadline) => Err(Failure::Abort(self.timed_out(deadline, received, total))),
        }
    }

    /// The 408-style error of a download that ran out of time.
    pub fn timed_out(&self, deadline: Deadline, received: u64, total: Option<u64>) -> SourceError {
        SourceError::TimedOut {
            image_id: self.settings.image_id.clone(),
            limit: deadline.limit.unwrap_or_default(),
            elapsed: deadline.start.elapsed(),
            received,
            total,
        }
    }
}

/// At most a few KiB of an error response, for the message (never waits long).
async fn error_body(resp: reqwest::Response, deadline: Deadline) -> String {
    let mut resp = resp;
    let mut body = Vec::new();
    while body.len() < 4096 {
        match within(deadline, Some(Duration::from_secs(2)), resp.chunk()).await {
            Ok(Ok(Some(piece))) => body.extend_from_slice(&piece),
            _ => break,
        }
    }
    body.truncate(4096);
    String::from_utf8_lossy(&body).into_owned()
}

/// The proxies to install on the client. With explicit proxies, `no_proxy` applies to them;
/// without, the environment's proxies apply (reqwest reads them) unless `no_proxy` is given,
/// in which case they are read here so that the given `no_proxy` wins (IPA sets the
/// `no_proxy` environment variable for the same effect).
fn proxies(s: &DownloadSettings) -> Result<Vec<reqwest::Proxy>, SourceError> {
    let env = |names: [&str; 2]| {
        names
            .iter()
            .find_map(|n| std::env::var(n).ok().filter(|v| !v.is_empty()))
    };
    let (http, https) = match (&s.proxies, &s.no_proxy) {
        (Some(p), _) => (p.http.clone(), p.https.clone()),
        (None, Some(_)) => (
            env(["http_proxy", "HTTP_PROXY"]),
            env(["https_proxy", "HTTPS_PROXY"]),
        ),
        (None, None) => return Ok(Vec::new()),
    };
    let no_proxy = s
        .no_proxy
        .as_deref()
        .and_then(reqwest::NoProxy::from_string);
    let mut out = Vec::new();
    for (scheme, url) in [("http", http), ("https", https)] {
        let Some(url) = url else { continue };
        let p = match scheme {
            "http" => reqwest::Proxy::http(&url),
            _ => reqwest::Proxy::https(&url),
        }
        .map_err(|e| {
            SourceError::Setup(format!(
                "invalid {scheme} proxy {}: {}",
                redact_url(&url),
                describe(&e)
            ))
        })?;
        out.push(p.no_proxy(no_proxy.clone()));
    }
    Ok(out)
}

/// A reqwest error as text, without the request URL (its query may hold a signature).
pub(crate) fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else if e.is_body() || e.is_decode() {
        "error reading the response body"
    } else if e.is_redirect() {
        "redirect failed"
    } else if e.is_builder() {
        "invalid request"
    } else {
        "request failed"
    };
    let mut msg = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let text = s.to_string();
        if !msg.ends_with(&text) {
            msg = format!("{msg}: {text}");
        }
        source = s.source();
    }
    msg
}
