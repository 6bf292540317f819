//! A minimal blocking HTTP/1.1 client over `std::net::TcpStream` (plain `http://`, IPv4).
//!
//! The harness only ever talks plain HTTP to the Ironic it started itself, on a veth or
//! loopback address; a client this small keeps the test crate free of an HTTP stack and
//! makes every request easy to reason about (one connection, `Connection: close`).

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context, Result};

/// A parsed `http://host:port/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    pub host: String,
    pub port: u16,
    /// Path plus query, always starting with `/`.
    pub path: String,
}

impl Url {
    pub fn parse(url: &str) -> Result<Url> {
        let rest = url
            .strip_prefix("http://")
            .with_context(|| format!("only http:// URLs are supported, got {url:?}"))?;
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        // IPv4 addresses and names only: the harness never needs an IPv6 literal.
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (
                h,
                p.parse::<u16>()
                    .with_context(|| format!("bad port in URL {url:?}"))?,
            ),
            None => (authority, 80),
        };
        if host.is_empty() {
            bail!("no host in URL {url:?}");
        }
        Ok(Url {
            host: host.to_string(),
            port,
            path: path.to_string(),
        })
    }
}

/// A complete response: status, headers (names lower-cased) and the de-chunked body.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Sends one request and reads the whole response. `timeout` bounds connecting and each
/// read/write.
pub fn request(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout: Duration,
) -> Result<Response> {
    let u = Url::parse(url)?;
    let addr: SocketAddr = (u.host.as_str(), u.port)
        .to_socket_addrs()
        .with_context(|| format!("resolving {}", u.host))?
        .next()
        .with_context(|| format!("no address for {}", u.host))?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout)
        .with_context(|| format!("connecting to {addr} for {method} {url}"))?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;

    let host_header = format!("{}:{}", u.host, u.port);
    let mut head = format!(
        "{method} {} HTTP/1.1\r\nHost: {host_header}\r\nConnection: close\r\nAccept: application/json\r\n",
        u.path
    );
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        head.push_str(&format!("Content-Length: {}\r\n", b.len()));
    } else if matches!(method, "POST" | "PUT" | "PATCH") {
        head.push_str("Content-Length: 0\r\n");
    }
    head.push_str("\r\n");
    stream
        .write_all(head.as_bytes())
        .and_then(|_| stream.write_all(body.unwrap_or_default()))
        .with_context(|| format!("sending {method} {url}"))?;

    read_response(BufReader::new(stream))
        .with_context(|| format!("reading reply to {method} {url}"))
}

fn read_response<R: BufRead>(mut r: R) -> Result<Response> {
    let mut status_line = String::new();
    r.read_line(&mut status_line)?;
    let mut parts = status_line.split_whitespace();
    let (Some(version), Some(code)) = (parts.next(), parts.next()) else {
        bail!("malformed status line {status_line:?}");
    };
    if !version.starts_with("HTTP/1.") {
        bail!("unexpected protocol in status line {status_line:?}");
    }
    let status: u16 = code
        .parse()
        .with_context(|| format!("bad status code in {status_line:?}"))?;

    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if r.read_line(&mut line)? == 0 {
            bail!("connection closed inside the response headers");
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let find = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    };

    let mut body = Vec::new();
    if find("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            let mut size_line = String::new();
            r.read_line(&mut size_line)?;
            let size_hex = size_line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_hex, 16)
                .with_context(|| format!("bad chunk size {size_line:?}"))?;
            if size == 0 {
                break;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..])?;
            let mut crlf = String::new();
            r.read_line(&mut crlf)?;
        }
    } else if let Some(len) = find("content-length") {
        let len: usize = len.parse().context("bad Content-Length")?;
        body.resize(len, 0);
        r.read_exact(&mut body)?;
    } else if status != 204 && status != 304 {
        r.read_to_end(&mut body)?;
    }
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// The `Content-Length` of an HTTP/1.1 head (0 when absent or unparsable).
pub fn content_length(head: &str) -> usize {
    head.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse().ok())?
        })
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls() {
        let u = Url::parse("http://10.251.3.1:6385/v1/lookup?addresses=a").unwrap();
        assert_eq!(u.host, "10.251.3.1");
        assert_eq!(u.port, 6385);
        assert_eq!(u.path, "/v1/lookup?addresses=a");
        let u = Url::parse("http://127.0.0.1").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        assert!(Url::parse("https://x/").is_err());
    }

    #[test]
    fn reads_chunked_and_sized_bodies() {
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nabcd\r\n2\r\nef\r\n0\r\n\r\n";
        let r = read_response(&raw[..]).unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.body, b"abcdef");
        let raw = b"HTTP/1.1 202 Accepted\r\nContent-Length: 2\r\nX-A: b\r\n\r\n{}trailing";
        let r = read_response(&raw[..]).unwrap();
        assert_eq!((r.status, r.text().as_str()), (202, "{}"));
        assert_eq!(r.header("X-A"), Some("b"));
    }
}
