use std::sync::Mutex;
use std::time::Duration;

use ironic_protocol::{ApiVersion, HeartbeatRequest, LookupResponse};
use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::config::{Options, TlsVersion};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// No API URL could be reached (connection refused, timeout, TLS failure...).
    #[error("no Ironic API reachable: {0}")]
    Unreachable(String),
    /// The API answered with an error status.
    #[error("HTTP {status}: {reason}")]
    Status { status: u16, reason: String },
    /// The API answered 2xx with a body we cannot use.
    #[error("unusable reply: {0}")]
    BadReply(String),
    #[error("cannot set up the HTTP client: {0}")]
    Setup(String),
}

impl ClientError {
    pub fn status(&self) -> Option<u16> {
        match self {
            ClientError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// A client of the Ironic API with IPA's behaviour: several URLs tried in order (the first
/// one that answers moves to the front), the API version discovered once, and
/// `X-OpenStack-Request-ID` on every call when configured.
pub struct IronicClient {
    http: reqwest::Client,
    urls: Mutex<Vec<String>>,
    request_id: Option<String>,
    version: tokio::sync::OnceCell<ApiVersion>,
}

impl IronicClient {
    pub fn new(options: &Options) -> Result<Self, ClientError> {
        Self::with_urls(options, options.api_url.0.clone())
    }

    /// A client with the API's TLS and request-id settings for other URLs (the inspection
    /// callback).
    pub fn with_urls(options: &Options, urls: Vec<String>) -> Result<Self, ClientError> {
        let timeout = Duration::from_secs(options.http_request_timeout.max(1));
        let mut builder = reqwest::Client::builder()
            .use_rustls_tls()
            .connect_timeout(timeout)
            .timeout(timeout)
            .user_agent(concat!("ironic-agent/", env!("CARGO_PKG_VERSION")))
            .min_tls_version(match options.tls_min_version {
                TlsVersion::V1_2 => reqwest::tls::Version::TLS_1_2,
                TlsVersion::V1_3 => reqwest::tls::Version::TLS_1_3,
            })
            .danger_accept_invalid_certs(options.insecure);
        if let Some(cafile) = &options.cafile {
            let pem = std::fs::read(cafile)
                .map_err(|e| ClientError::Setup(format!("reading cafile {cafile}: {e}")))?;
            for cert in reqwest::Certificate::from_pem_bundle(&pem)
                .map_err(|e| ClientError::Setup(format!("cafile {cafile}: {e}")))?
            {
                builder = builder.add_root_certificate(cert);
            }
        }
        if let (Some(cert), Some(key)) = (&options.certfile, &options.keyfile) {
            let mut pem = std::fs::read(cert)
                .map_err(|e| ClientError::Setup(format!("reading certfile {cert}: {e}")))?;
            pem.extend(
                std::fs::read(key)
                    .map_err(|e| ClientError::Setup(format!("reading keyfile {key}: {e}")))?,
            );
            builder = builder.identity(
                reqwest::Identity::from_pem(&pem)
                    .map_err(|e| ClientError::Setup(format!("client certificate: {e}")))?,
            );
        }
        let client = IronicClient {
            http: builder
                .build()
                .map_err(|e| ClientError::Setup(e.to_string()))?,
            urls: Mutex::new(urls),
            request_id: options.global_request_id.clone(),
            version: tokio::sync::OnceCell::new(),
        };
        if let Some(v) = options.ironic_api_version {
            let _ = client.version.set(v);
        }
        Ok(client)
    }

    /// The API URLs, the one that last answered first.
    pub fn urls(&self) -> Vec<String> {
        self.urls.lock().expect("urls lock").clone()
    }

    /// Sends one request, failing over across the API URLs on connection errors.
    async fn send(
        &self,
        method: Method,
        path_and_query: &str,
        version: Option<ApiVersion>,
        body: Option<&Value>,
    ) -> Result<(StatusCode, Vec<u8>), ClientError> {
        let urls = self.urls();
        let mut failures = Vec::new();
        for url in &urls {
            let mut req = self
                .http
                .request(method.clone(), format!("{url}{path_and_query}"))
                .header("Accept", "application/json");
            if let Some(v) = version {
                req = req.header("X-OpenStack-Ironic-API-Version", v.to_string());
            }
            if let Some(id) = &self.request_id {
                req = req.header("X-OpenStack-Request-ID", id);
            }
            if let Some(b) = body {
                req = req.json(b);
            } else {
                req = req.header("Content-Type", "application/json");
            }
            match req.send().await {
                Ok(resp) => {
                    self.promote(url);
                    let status = resp.status();
                    let bytes = resp.bytes().await.map_err(|e| {
                        ClientError::Unreachable(format!("{url}: reading reply: {e}"))
                    })?;
                    return Ok((status, bytes.to_vec()));
                }
                Err(e) => failures.push(format!("{url}: {}", describe(&e))),
            }
        }
        Err(ClientError::Unreachable(failures.join("; ")))
    }

    fn promote(&self, url: &str) {
        let mut urls = self.urls.lock().expect("urls lock");
        if let Some(i) = urls.iter().position(|u| u == url) {
            let u = urls.remove(i);
            urls.insert(0, u);
        }
    }

    /// The API's maximum version, discovered once from `GET /`; IPA's fallback 1.31 when
    /// discovery fails.
    pub async fn api_version(&self) -> ApiVersion {
        *self
            .version
            .get_or_init(|| async {
                match self.discover_version().await {
                    Ok(v) => {
                        tracing::info!(version = %v, "Ironic API version discovered");
                        v
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, fallback = %ApiVersion::FALLBACK,
                            "Ironic API version discovery failed");
                        ApiVersion::FALLBACK
                    }
                }
            })
            .await
    }

    async fn discover_version(&self) -> Result<ApiVersion, ClientError> {
        let (status, body) = self.send(Method::GET, "/", None, None).await?;
        if !status.is_success() {
            return Err(status_error(status, &body));
        }
        let doc: Value =
            serde_json::from_slice(&body).map_err(|e| ClientError::BadReply(e.to_string()))?;
        doc.pointer("/default_version/version")
            .and_then(Value::as_str)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| ClientError::BadReply("no default_version.version in GET /".into()))
    }

    /// POSTs `body` to the client's URLs themselves (failing over on connection errors) with
    /// no API version header; the status and body of the first answer.
    pub async fn post_to_urls(&self, body: &Value) -> Result<(u16, Vec<u8>), ClientError> {
        let (status, reply) = self.send(Method::POST, "", None, Some(body)).await?;
        Ok((status.as_u16(), reply))
    }

    /// One lookup attempt: `GET /v1/lookup?addresses=..[&node_uuid=..]`.
    pub async fn lookup(
        &self,
        macs: &[String],
        node_uuid: Option<&str>,
    ) -> Result<LookupResponse, ClientError> {
        let version = self.api_version().await.min(ApiVersion::LOOKUP_MAX);
        let mut query = format!("/v1/lookup?addresses={}", macs.join(","));
        if let Some(u) = node_uuid {
            query.push_str(&format!("&node_uuid={u}"));
        }
        let (status, body) = self.send(Method::GET, &query, Some(version), None).await?;
        if status != StatusCode::OK {
            return Err(status_error(status, &body));
        }
        LookupResponse::from_json(&body).map_err(ClientError::BadReply)
    }

    /// One heartbeat: `POST /v1/heartbeat/{node}`; Ironic answers 202.
    pub async fn heartbeat(
        &self,
        node_uuid: &str,
        request: &HeartbeatRequest,
    ) -> Result<(), ClientError> {
        let version = self.api_version().await.min(ApiVersion::HEARTBEAT_MAX);
        let body =
            serde_json::to_value(request).map_err(|e| ClientError::BadReply(e.to_string()))?;
        let (status, reply) = self
            .send(
                Method::POST,
                &format!("/v1/heartbeat/{node_uuid}"),
                Some(version),
                Some(&body),
            )
            .await?;
        if status == StatusCode::ACCEPTED || status.is_success() {
            Ok(())
        } else {
            Err(status_error(status, &reply))
        }
    }
}

/// The reason Ironic gives in an error reply. Ironic wraps it twice:
/// `{"error_message": "{\"faultstring\": \"...\"}"}`.
pub(crate) fn fault_reason(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    let outer: Option<Value> = serde_json::from_slice(body).ok();
    let inner = outer
        .as_ref()
        .and_then(|v| v.get("error_message"))
        .and_then(|m| match m {
            Value::String(s) => serde_json::from_str::<Value>(s).ok(),
            other => Some(other.clone()),
        });
    inner
        .as_ref()
        .or(outer.as_ref())
        .and_then(|v| v.get("faultstring"))
        .and_then(Value::as_str)
        .map(str::to_string)
        .unwrap_or_else(|| text.chars().take(300).collect())
}

fn status_error(status: StatusCode, body: &[u8]) -> ClientError {
    ClientError::Status {
        status: status.as_u16(),
        reason: fault_reason(body),
    }
}

/// A reqwest error without the URL's query string (which could hold a token).
fn describe(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    };
    let mut msg = kind.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg = format!("{msg}: {s}");
        source = s.source();
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fault_reason_unwraps_ironic_errors() {
        let body = br#"{"error_message": "{\"faultcode\": \"Client\", \"faultstring\": \"TLS is required by configuration\", \"debuginfo\": null}"}"#;
        assert_eq!(fault_reason(body), "TLS is required by configuration");
        assert_eq!(fault_reason(br#"{"faultstring": "x"}"#), "x");
        assert_eq!(fault_reason(b"plain text"), "plain text");
    }
}
