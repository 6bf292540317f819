//! A small HTTP/1.1 server for tests, with the faults an image download meets in the field:
//! dropped connections, truncated bodies, trickling and stalling servers, error statuses,
//! servers that ignore Range, files that change under the client, servers that answer Range
//! requests with other bytes than the full download. It also answers
//! absolute-form requests, so it can stand in for a proxy.
//!
//! Binds 127.0.0.1 (or a given address) on an ephemeral port; one thread per connection; every
//! response closes its connection; stops when dropped. Every request is recorded for assertions.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// A fault applied to the first `first` requests of a path (`usize::MAX`: all of them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FirstN<T> {
    pub value: T,
    pub first: usize,
}

/// Misbehaviour of one served path. Request numbers count from 0, per path.
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Close the connection after this many body bytes of a response (Content-Length promised
    /// more).
    pub drop_after: Option<FirstN<u64>>,
    /// Send all of a response's body but its last bytes, then close (Content-Length promised
    /// them).
    pub truncate_by: Option<FirstN<u64>>,
    /// After `value.0` body bytes, send nothing for `value.1`, then go on.
    pub stall: Option<FirstN<(u64, Duration)>>,
    /// Send at most this many body bytes per second, on every request.
    pub trickle: Option<u64>,
    /// Answer with this status (and a body that echoes the request target).
    pub status: Option<FirstN<u16>>,
    /// Answer with this status from request `value.1` on (a server that goes away).
    pub status_from: Option<(u16, usize)>,
    /// Answer every Range request with the whole file (200).
    pub ignore_range: bool,
    /// From this request on, the file has another ETag and Last-Modified.
    pub change_etag_after: Option<usize>,
    /// Send neither ETag nor Last-Modified.
    pub no_validators: bool,
    /// Partial (206) responses carry this many bytes more than their Content-Range says.
    pub overlong_ranges: Option<u64>,
    /// Partial (206) responses carry `.1` at file offset `.0` instead of the file's bytes
    /// there, while full (200) responses stay genuine: a server or MITM that keeps the
    /// checksummed download intact and forges what a client fetches by Range.
    pub forge_ranges: Option<(u64, Bytes)>,
    /// Faults apply to GET requests only, and only GETs count as requests: a HEAD (Ironic's
    /// conductor checking the URL before a deploy) is answered as if there were no faults.
    pub get_only: bool,
}

impl Faults {
    pub fn none() -> Faults {
        Faults::default()
    }
    pub fn drop_after(mut self, bytes: u64, first: usize) -> Faults {
        self.drop_after = Some(FirstN {
            value: bytes,
            first,
        });
        self
    }
    pub fn truncate_by(mut self, bytes: u64, first: usize) -> Faults {
        self.truncate_by = Some(FirstN {
            value: bytes,
            first,
        });
        self
    }
    pub fn stall(mut self, after: u64, duration: Duration, first: usize) -> Faults {
        self.stall = Some(FirstN {
            value: (after, duration),
            first,
        });
        self
    }
    pub fn trickle(mut self, bytes_per_second: u64) -> Faults {
        self.trickle = Some(bytes_per_second);
        self
    }
    /// `first = usize::MAX` for always.
    pub fn status(mut self, code: u16, first: usize) -> Faults {
        self.status = Some(FirstN { value: code, first });
        self
    }
    pub fn status_from(mut self, code: u16, request: usize) -> Faults {
        self.status_from = Some((code, request));
        self
    }
    pub fn ignore_range(mut self) -> Faults {
        self.ignore_range = true;
        self
    }
    pub fn change_etag_after(mut self, request: usize) -> Faults {
        self.change_etag_after = Some(request);
        self
    }
    pub fn overlong_ranges(mut self, extra: u64) -> Faults {
        self.overlong_ranges = Some(extra);
        self
    }
    pub fn no_validators(mut self) -> Faults {
        self.no_validators = true;
        self
    }
    pub fn forge_ranges(mut self, offset: u64, bytes: impl Into<Bytes>) -> Faults {
        self.forge_ranges = Some((offset, bytes.into()));
        self
    }
    pub fn get_only(mut self) -> Faults {
        self.get_only = true;
        self
    }
}

fn active<T: Copy>(f: &Option<FirstN<T>>, request: usize) -> Option<T> {
    f.filter(|f| request < f.first).map(|f| f.value)
}

/// What is served at a path.
#[derive(Debug, Clone)]
pub enum Body {
    Bytes(Bytes),
    /// Read from disk on each request (large images).
    File(PathBuf),
}

struct Served {
    body: Body,
    len: u64,
    faults: Faults,
    hits: AtomicUsize,
}

/// One request as the server saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    /// The request target as sent (absolute form through a proxy).
    pub target: String,
    pub path: String,
    pub query: Option<String>,
    /// Lower-case names.
    pub headers: Vec<(String, String)>,
    /// `GET http://host/path` (as sent to a proxy).
    pub absolute_form: bool,
}

impl RecordedRequest {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }
    pub fn range(&self) -> Option<&str> {
        self.header("range")
    }
}

struct Inner {
    tls: Option<Arc<rustls::ServerConfig>>,
    files: Mutex<HashMap<String, Arc<Served>>>,
    log: Mutex<Vec<RecordedRequest>>,
    stop: AtomicBool,
    body_bytes: AtomicU64,
}

/// The server. See the module doc.
pub struct TestServer {
    addr: SocketAddr,
    inner: Arc<Inner>,
    accept: Option<JoinHandle<()>>,
    ca_pem: Option<String>,
}

/// How an HTTPS test server speaks TLS.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TlsMode {
    /// TLS 1.2 and 1.3.
    #[default]
    Any,
    /// TLS 1.2 only (to test a client's minimum version).
    Tls12Only,
}

impl TestServer {
    /// Starts a server on 127.0.0.1 and an ephemeral port.
    pub fn start() -> std::io::Result<TestServer> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)))
    }

    /// Starts a plain HTTP server on `addr` (port 0: an ephemeral port), e.g. the host end of
    /// a test's network namespace.
    pub fn start_on(addr: SocketAddr) -> std::io::Result<TestServer> {
        Self::start_with(addr, None, None)
    }

    /// Starts an HTTPS server whose certificate (for IP 127.0.0.1) is issued by a fresh test
    /// CA; [`TestServer::ca_pem`] returns that CA.
    pub fn start_tls(mode: TlsMode) -> std::io::Result<TestServer> {
        let (config, ca_pem) = tls_config(mode).map_err(std::io::Error::other)?;
        Self::start_with(
            SocketAddr::from(([127, 0, 0, 1], 0)),
            Some(Arc::new(config)),
            Some(ca_pem),
        )
    }

    /// The CA that issued an HTTPS server's certificate (PEM).
    pub fn ca_pem(&self) -> Option<&str> {
        self.ca_pem.as_deref()
    }

    fn start_with(
        bind: SocketAddr,
        tls: Option<Arc<rustls::ServerConfig>>,
        ca_pem: Option<String>,
    ) -> std::io::Result<TestServer> {
        let listener = TcpListener::bind(bind)?;
        let addr = listener.local_addr()?;
        let inner = Arc::new(Inner {
            tls,
            files: Mutex::new(HashMap::new()),
            log: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
            body_bytes: AtomicU64::new(0),
        });
        let accept_inner = inner.clone();
        let accept = std::thread::Builder::new()
            .name("test-server".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if accept_inner.stop.load(Ordering::SeqCst) {
                        break;
                    }
                    let Ok(conn) = conn else { continue };
                    let inner = accept_inner.clone();
                    let _ = std::thread::Builder::new()
                        .name("test-server-conn".into())
                        .spawn(move || {
                            let _ = serve_connection(&inner, conn);
                        });
                }
            })?;
        Ok(TestServer {
            addr,
            inner,
            accept: Some(accept),
            ca_pem,
        })
    }

    /// Serves `body` at `path` (which starts with `/`; any query string is accepted).
    pub fn serve(&self, path: &str, body: impl Into<Bytes>, faults: Faults) {
        let body: Bytes = body.into();
        let len = body.len() as u64;
        self.insert(path, Body::Bytes(body), len, faults);
    }

    /// Serves a file from disk at `path`.
    pub fn serve_file(
        &self,
        path: &str,
        file: impl Into<PathBuf>,
        faults: Faults,
    ) -> std::io::Result<()> {
        let file = file.into();
        let len = std::fs::metadata(&file)?.len();
        self.insert(path, Body::File(file), len, faults);
        Ok(())
    }

    fn insert(&self, path: &str, body: Body, len: u64, faults: Faults) {
        let served = Arc::new(Served {
            body,
            len,
            faults,
            hits: AtomicUsize::new(0),
        });
        lock(&self.inner.files).insert(path.to_string(), served);
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http(s)://<address>:<port>` followed by `path_and_query`.
    pub fn url(&self, path_and_query: &str) -> String {
        let scheme = if self.inner.tls.is_some() {
            "https"
        } else {
            "http"
        };
        format!("{scheme}://{}{}", self.addr, path_and_query)
    }

    /// All requests so far, in arrival order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.inner.log).clone()
    }

    /// Requests for one path.
    pub fn requests_for(&self, path: &str) -> Vec<RecordedRequest> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// Body bytes written to sockets so far (all paths).
    pub fn body_bytes_sent(&self) -> u64 {
        self.inner.body_bytes.load(Ordering::SeqCst)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        // Wake the accept loop.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(1));
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A connection, plain or TLS.
trait Conn: Read + Write {
    fn tcp(&self) -> &TcpStream;
    /// Ends the response: `clean` sends TLS close_notify first; otherwise the connection is
    /// just cut (a dropped or truncated response).
    fn finish(&mut self, clean: bool);
}

impl Conn for TcpStream {
    fn tcp(&self) -> &TcpStream {
        self
    }
    fn finish(&mut self, _clean: bool) {
        let _ = self.flush();
        let _ = self.shutdown(std::net::Shutdown::Write);
    }
}

impl Conn for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn tcp(&self) -> &TcpStream {
        &self.sock
    }
    fn finish(&mut self, clean: bool) {
        if clean {
            self.conn.send_close_notify();
        }
        let _ = self.flush();
        let _ = self.sock.shutdown(std::net::Shutdown::Write);
    }
}

fn serve_connection(inner: &Inner, tcp: TcpStream) -> std::io::Result<()> {
    tcp.set_read_timeout(Some(Duration::from_secs(10)))?;
    match &inner.tls {
        None => handle(inner, tcp),
        Some(config) => {
            let conn =
                rustls::ServerConnection::new(config.clone()).map_err(std::io::Error::other)?;
            handle(inner, rustls::StreamOwned::new(conn, tcp))
        }
    }
}

fn read_request(conn: &mut impl Conn) -> std::io::Result<Option<RecordedRequest>> {
    // Byte by byte up to the blank line: GET and HEAD have no body, and a TLS stream cannot
    // be cloned for a BufReader.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && !head.ends_with(b"\n\n") {
        if conn.read(&mut byte)? == 0 || head.len() > 64 * 1024 {
            return Ok(None);
        }
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.lines();
    let line = lines.next().unwrap_or("");
    let mut parts = line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return Ok(None);
    };
    let (method, target) = (method.to_string(), target.to_string());
    let mut headers = Vec::new();
    for h in lines {
        if let Some((name, value)) = h.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_string()));
        }
    }
    let absolute_form = target.starts_with("http://") || target.starts_with("https://");
    let origin_form = if absolute_form {
        let rest = target.split_once("://").map_or("", |(_, r)| r);
        rest.find('/')
            .map_or("/".to_string(), |i| rest[i..].to_string())
    } else {
        target.clone()
    };
    let (path, query) = match origin_form.split_once('?') {
        Some((p, q)) => (p.to_string(), Some(q.to_string())),
        None => (origin_form, None),
    };
    Ok(Some(RecordedRequest {
        method,
        target,
        path,
        query,
        headers,
        absolute_form,
    }))
}

fn simple(
    conn: &mut impl Conn,
    code: u16,
    reason: &str,
    body: &str,
    extra: &str,
) -> std::io::Result<()> {
    write!(
        conn,
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}Connection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.finish(true);
    Ok(())
}

fn reason(code: u16) -> &'static str {
    match code {
        200 => "OK",
        206 => "Partial Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        416 => "Range Not Satisfiable",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

/// `bytes=a-b` / `bytes=a-` / `bytes=-n` against a file of `len` bytes: `Ok(Some((first,
/// last)))`, `Ok(None)` (ignore: malformed), `Err(())` (not satisfiable).
#[allow(clippy::result_unit_err)]
pub fn parse_range(spec: &str, len: u64) -> Result<Option<(u64, u64)>, ()> {
    let Some(r) = spec.trim().strip_prefix("bytes=") else {
        return Ok(None);
    };
    if r.contains(',') {
        return Ok(None);
    }
    let Some((a, b)) = r.split_once('-') else {
        return Ok(None);
    };
    let (a, b) = (a.trim(), b.trim());
    if a.is_empty() {
        let Ok(n) = b.parse::<u64>() else {
            return Ok(None);
        };
        if n == 0 || len == 0 {
            return Err(());
        }
        return Ok(Some((len.saturating_sub(n), len - 1)));
    }
    let Ok(first) = a.parse::<u64>() else {
        return Ok(None);
    };
    let last = if b.is_empty() {
        len.saturating_sub(1)
    } else {
        match b.parse::<u64>() {
            Ok(l) if l >= first => l.min(len.saturating_sub(1)),
            _ => return Ok(None),
        }
    };
    if first >= len {
        return Err(());
    }
    Ok(Some((first, last)))
}

fn handle(inner: &Inner, mut conn: impl Conn) -> std::io::Result<()> {
    let Some(req) = read_request(&mut conn)? else {
        return Ok(());
    };
    if inner.stop.load(Ordering::SeqCst) {
        return Ok(());
    }
    lock(&inner.log).push(req.clone());
    let served = lock(&inner.files).get(&req.path).cloned();
    let Some(served) = served else {
        return simple(&mut conn, 404, "Not Found", "not found\n", "");
    };
    let no_faults = Faults::none();
    let (n, f) = if served.faults.get_only && req.method == "HEAD" {
        (0, &no_faults)
    } else {
        (served.hits.fetch_add(1, Ordering::SeqCst), &served.faults)
    };
    let late = f.status_from.filter(|(_, k)| n >= *k).map(|(c, _)| c);
    if let Some(code) = active(&f.status, n).or(late) {
        // Echo the target: a careless client would copy it into its error message.
        let body = format!("{code} {} for {}\n", reason(code), req.target);
        return simple(&mut conn, code, reason(code), &body, "");
    }
    if req.method != "GET" && req.method != "HEAD" {
        return simple(&mut conn, 405, "Method Not Allowed", "", "");
    }
    let generation = match f.change_etag_after {
        Some(k) if n >= k => 1,
        _ => 0,
    };
    let etag = format!("\"{:x}-{generation}\"", served.len);
    let last_modified = format!("Mon, 0{} Jan 2024 00:00:00 GMT", generation + 1);
    let validators = if f.no_validators {
        String::new()
    } else {
        format!("ETag: {etag}\r\nLast-Modified: {last_modified}\r\n")
    };
    let len = served.len;
    let mut range = None;
    if let Some(spec) = req.range().filter(|_| !f.ignore_range) {
        let if_range_ok = req
            .header("if-range")
            .is_none_or(|v| !f.no_validators && (v == etag || v == last_modified));
        if if_range_ok {
            match parse_range(spec, len) {
                Ok(r) => range = r,
                Err(()) => {
                    return simple(
                        &mut conn,
                        416,
                        "Range Not Satisfiable",
                        "",
                        &format!("Content-Range: bytes */{len}\r\n"),
                    )
                }
            }
        }
    }
    let (first, last) = range.unwrap_or((0, len.saturating_sub(1)));
    let count = if len == 0 { 0 } else { last - first + 1 };
    let head = match range {
        Some(_) => {
            format!("HTTP/1.1 206 Partial Content\r\nContent-Range: bytes {first}-{last}/{len}\r\n")
        }
        None => "HTTP/1.1 200 OK\r\n".to_string(),
    };
    let extra = range.and(f.overlong_ranges).unwrap_or(0);
    write!(
        conn,
        "{head}Content-Type: application/octet-stream\r\nContent-Length: {}\r\nAccept-Ranges: {}\r\n{validators}Connection: close\r\n\r\n",
        count + extra,
        if f.ignore_range { "none" } else { "bytes" }
    )?;
    if req.method == "HEAD" || count == 0 {
        conn.finish(true);
        return Ok(());
    }
    let mut limit = count;
    if let Some(d) = active(&f.drop_after, n) {
        limit = limit.min(d);
    }
    if let Some(t) = active(&f.truncate_by, n) {
        limit = limit.min(count.saturating_sub(t));
    }
    let stall = active(&f.stall, n);
    let mut file = match &served.body {
        Body::File(p) => Some(std::fs::File::open(p)?),
        Body::Bytes(_) => None,
    };
    // Trickle: small pieces, each written when it is due, so that every connection is held
    // to the rate from its first byte (no burst: short ranged requests are paced too).
    let piece_max: u64 = match f.trickle {
        Some(bps) => (bps / 20).clamp(1, 64 * 1024),
        None => 256 * 1024,
    };
    let mut buf = vec![0u8; piece_max as usize];
    let mut sent = 0u64;
    let started = Instant::now();
    let mut stalled = false;
    while sent < limit {
        if inner.stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        if let Some((after, duration)) = stall {
            if !stalled && sent >= after {
                stalled = true;
                let until = Instant::now() + duration;
                while Instant::now() < until && !inner.stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
        let mut want = piece_max.min(limit - sent);
        if let Some((after, _)) = stall {
            if !stalled && after > sent {
                want = want.min(after - sent);
            }
        }
        let want = want as usize;
        if let Some(bps) = f.trickle {
            let due = Duration::from_secs_f64((sent + want as u64) as f64 / bps as f64);
            let elapsed = started.elapsed();
            if due > elapsed {
                std::thread::sleep(due - elapsed);
            }
        }
        let at = first + sent;
        let piece: &[u8] = match (&served.body, &mut file) {
            (Body::Bytes(b), _) => &b[at as usize..at as usize + want],
            (Body::File(_), Some(fh)) => {
                use std::os::unix::fs::FileExt;
                fh.read_exact_at(&mut buf[..want], at)?;
                &buf[..want]
            }
            (Body::File(_), None) => return Ok(()),
        };
        let forged = range
            .and(f.forge_ranges.as_ref())
            .and_then(|(offset, bytes)| forge(piece, at, *offset, bytes));
        let piece = forged.as_deref().unwrap_or(piece);
        conn.write_all(piece)?;
        sent += want as u64;
        inner.body_bytes.fetch_add(want as u64, Ordering::SeqCst);
    }
    if extra > 0 && sent == count {
        conn.write_all(&vec![0u8; extra as usize])?;
        inner.body_bytes.fetch_add(extra, Ordering::SeqCst);
    }
    conn.finish(sent == count);
    // Drain anything the client still sends so that closing does not reset the connection
    // before the client has read the response.
    let mut tcp = conn.tcp();
    let _ = tcp.set_read_timeout(Some(Duration::from_millis(200)));
    let mut sink = [0u8; 1024];
    let _ = tcp.read(&mut sink);
    Ok(())
}

/// `piece` (file offset `at`) with the bytes of `forgery` (file offset `offset`) laid over
/// it, or `None` when they do not overlap.
fn forge(piece: &[u8], at: u64, offset: u64, forgery: &[u8]) -> Option<Vec<u8>> {
    let start = offset.max(at);
    let end = (offset + forgery.len() as u64).min(at + piece.len() as u64);
    if start >= end {
        return None;
    }
    let mut out = piece.to_vec();
    out[(start - at) as usize..(end - at) as usize]
        .copy_from_slice(&forgery[(start - offset) as usize..(end - offset) as usize]);
    Some(out)
}

/// A test CA and a server certificate for 127.0.0.1 issued by it.
fn tls_config(mode: TlsMode) -> Result<(rustls::ServerConfig, String), String> {
    let e = |e: rcgen::Error| e.to_string();
    let ca_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(e)?;
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).map_err(e)?;
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "image-pipeline test CA");
    let ca_cert = ca.self_signed(&ca_key).map_err(e)?;
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(e)?;
    let mut leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()]).map_err(e)?;
    leaf.subject_alt_names
        .push(rcgen::SanType::IpAddress(std::net::IpAddr::from([
            127, 0, 0, 1,
        ])));
    let leaf_cert = leaf.signed_by(&key, &ca_cert, &ca_key).map_err(e)?;
    let versions: &[&'static rustls::SupportedProtocolVersion] = match mode {
        TlsMode::Any => &[&rustls::version::TLS13, &rustls::version::TLS12],
        TlsMode::Tls12Only => &[&rustls::version::TLS12],
    };
    let key_der = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(versions)
    .map_err(|e| e.to_string())?
    .with_no_client_auth()
    .with_single_cert(vec![leaf_cert.der().clone()], key_der)
    .map_err(|e| e.to_string())?;
    Ok((config, ca_cert.pem()))
}
