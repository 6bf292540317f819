use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::http::Request;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tower::ServiceExt;

use super::connections::{Admitted, Limits, Table};

/// Binds the API socket. `::` means every address, IPv6 and IPv4; on a kernel without IPv6
/// it falls back to `0.0.0.0` as IPA does.
pub async fn bind(host: &str, port: u16) -> std::io::Result<TcpListener> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let addr: SocketAddr = match format!("{host}:{port}").parse() {
        Ok(a) => a,
        Err(_) => match host.parse::<std::net::Ipv6Addr>() {
            Ok(v6) => SocketAddr::from((v6, port)),
            Err(_) => {
                return TcpListener::bind((host, port)).await;
            }
        },
    };
    match TcpListener::bind(addr).await {
        Err(e) if host == "::" && e.raw_os_error() == Some(nix::libc::EAFNOSUPPORT) => {
            TcpListener::bind(("0.0.0.0", port)).await
        }
        other => other,
    }
}

/// Serves `router` on `listener`, over TLS when `tls` is given, until `stop` turns true; then
/// stops accepting and drops open connections, so a locked-down or rescued agent really stops
/// answering.
///
/// Connections are capped and shed, and idle ones closed, by `limits` (see
/// [`super::connections`]); each request carries its connection's
/// [`ConnectionHandle`](super::ConnectionHandle) so the token check can mark the connection
/// as the conductor's.
pub async fn serve(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    router: Router,
    limits: Limits,
    mut stop: watch::Receiver<bool>,
) {
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    let table = Table::new(limits.max_connections);
    let limits = Arc::new(limits);
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
            changed = stop.changed() => {
                if changed.is_err() || *stop.borrow() { break; }
                continue;
            }
            Some(ended) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = ended {
                    if e.is_panic() {
                        tracing::error!(error = %e, "an API connection task panicked");
                    }
                }
                continue;
            }
        };
        // Refusals are logged by the table, at a bounded rate.
        let Some(admitted) = table.admit(peer).await else {
            continue;
        };
        connections.spawn(serve_connection(
            stream,
            peer,
            acceptor.clone(),
            router.clone(),
            admitted,
            limits.clone(),
        ));
    }
    tracing::info!("API server stopped");
    connections.abort_all();
}

/// One connection: the TLS handshake, then HTTP/1.1 or HTTP/2 (sniffed) until the client
/// closes it, it is shed for a newcomer or it idles out.
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    acceptor: Option<tokio_rustls::TlsAcceptor>,
    router: Router,
    admitted: Admitted,
    limits: Arc<Limits>,
) {
    let conn = admitted.handle().clone();
    let builder = http_builder(&limits);
    let service = {
        let conn = conn.clone();
        hyper::service::service_fn(move |mut req: Request<Incoming>| {
            let guard = conn.request_started();
            req.extensions_mut().insert(conn.clone());
            let response = router.clone().oneshot(req);
            let retire = conn.clone();
            async move {
                let mut response = response.await;
                // A newcomer waits for this connection's slot (see `connections`).
                if retire.retiring() {
                    if let Ok(r) = &mut response {
                        r.headers_mut().insert(
                            hyper::header::CONNECTION,
                            hyper::header::HeaderValue::from_static("close"),
                        );
                    }
                }
                drop(guard);
                response
            }
        })
    };
    let work = async {
        match acceptor {
            Some(acceptor) => {
                match tokio::time::timeout(limits.tls_handshake, acceptor.accept(stream)).await {
                    Ok(Ok(tls)) => builder.serve_connection(TokioIo::new(tls), service).await,
                    Ok(Err(e)) => {
                        tracing::debug!(%peer, error = %e, "TLS handshake failed");
                        Ok(())
                    }
                    Err(_) => {
                        tracing::debug!(%peer, "TLS handshake timed out");
                        Ok(())
                    }
                }
            }
            None => {
                builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await
            }
        }
    };
    tokio::select! {
        result = work => if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "connection ended with an error");
        },
        why = conn.closed(&limits) => tracing::debug!(%peer, why, "closing connection"),
    }
    drop(admitted);
}

/// hyper's connection settings. Without a timer hyper silently drops its timeouts, so one is
/// always given.
///
/// HTTP/1.1: hyper's header read timeout runs from the moment it waits for a request head,
/// which on a keep-alive connection is the end of the previous response: it is also an idle
/// limit, so it is the authenticated idle time; unauthenticated connections are closed
/// sooner by `ConnectionHandle::closed`. Heads are small (a path, a query with the token,
/// a few headers): a 64 KiB buffer.
///
/// HTTP/2 (the conductor's requests library speaks only HTTP/1.1, but the server offers h2 by
/// ALPN and prior knowledge): few streams, and windows that bound what a connection can make
/// the agent buffer to ~1 MiB; keep-alive pings find dead peers under a long `wait=true`.
fn http_builder(limits: &Limits) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.idle)
        .max_buf_size(64 << 10);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .initial_stream_window_size(256 << 10)
        .initial_connection_window_size(1 << 20)
        .max_send_buf_size(64 << 10)
        .max_header_list_size(16 << 10)
        .keep_alive_interval(Duration::from_secs(30))
        .keep_alive_timeout(Duration::from_secs(10));
    builder
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lifecycle::Service;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    const TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789a";

    fn service() -> Service {
        let config =
            crate::config::Config::from_args(["ironic-agent", "--cmdline-file", "/dev/null"])
                .unwrap();
        let s = Service::new(config, crate::logging::LogBuffer::new(1024)).unwrap();
        s.agent.set_token(TOKEN);
        s
    }

    struct Running {
        addr: SocketAddr,
        _stop: watch::Sender<bool>,
    }

    async fn start(
        router: Router,
        tls: Option<Arc<rustls::ServerConfig>>,
        limits: Limits,
    ) -> Running {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopping) = watch::channel(false);
        tokio::spawn(serve(listener, tls, router, limits, stopping));
        Running { addr, _stop: stop }
    }

    /// One HTTP/1.1 GET on `stream` (kept alive); the status, or `None` when the server
    /// closed the connection instead of answering.
    async fn get(stream: &mut TcpStream, path: &str) -> Option<u16> {
        send(
            stream,
            &format!("GET {path} HTTP/1.1\r\nHost: agent\r\n\r\n"),
        )
        .await
    }

    /// Writes `request` as is and reads one response.
    async fn send(stream: &mut TcpStream, request: &str) -> Option<u16> {
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = Vec::new();
        while !head.ends_with(b"\r\n\r\n") {
            let mut byte = [0u8; 1];
            match stream.read(&mut byte).await {
                Ok(1) => head.push(byte[0]),
                _ => return None,
            }
        }
        let head = String::from_utf8(head).unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| {
                let (name, value) = l.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().unwrap())
            })
            .unwrap_or(0);
        let mut body = vec![0u8; length];
        stream.read_exact(&mut body).await.ok()?;
        head.split(' ').nth(1)?.parse().ok()
    }

    fn commands() -> String {
        format!("/v1/commands/?agent_token={TOKEN}")
    }

    /// Whether the server closes `stream` within `within`.
    async fn closed_by_server(stream: &mut TcpStream, within: Duration) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(within, stream.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    /// Sockets this process holds on the server side of `port` (their local port), from
    /// /proc: the test's own client sockets and other tests' servers are not counted.
    fn server_side_sockets(port: u16) -> usize {
        let mut inodes = std::collections::HashSet::new();
        for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
            let Ok(text) = std::fs::read_to_string(table) else {
                continue;
            };
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                let local_port = f[1].rsplit(':').next().unwrap();
                // 0A is LISTEN: the listener itself.
                if u16::from_str_radix(local_port, 16) == Ok(port) && f[3] != "0A" {
                    inodes.insert(format!("socket:[{}]", f[9]));
                }
            }
        }
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
            .filter(|target| inodes.contains(target.to_string_lossy().as_ref()))
            .count()
    }

    #[tokio::test]
    async fn an_idle_flood_beyond_the_cap_neither_locks_out_the_conductor_nor_piles_up_fds() {
        let cap = 8;
        let limits = Limits {
            max_connections: cap,
            // Long enough that only the cap, not the idle limit, acts during the test.
            unauthenticated_idle: Duration::from_secs(60),
            ..Limits::default()
        };
        let server = start(service().router(), None, limits).await;
        let mut conductor = TcpStream::connect(server.addr).await.unwrap();
        assert_eq!(get(&mut conductor, &commands()).await, Some(200));

        let mut flood = Vec::new();
        for _ in 0..(cap * 6) {
            flood.push(TcpStream::connect(server.addr).await.unwrap());
        }
        // Let the server accept (and shed) them all.
        let mut held = usize::MAX;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            held = server_side_sockets(server.addr.port());
            if held <= cap + 1 {
                break;
            }
        }
        assert!(
            held <= cap + 1,
            "the server holds {held} sockets, cap {cap}"
        );

        assert_eq!(
            get(&mut conductor, &commands()).await,
            Some(200),
            "the conductor's keep-alive connection survives"
        );
        let mut fresh = TcpStream::connect(server.addr).await.unwrap();
        assert_eq!(
            get(&mut fresh, &commands()).await,
            Some(200),
            "and it can open a new one"
        );
        assert!(server_side_sockets(server.addr.port()) <= cap + 1);
    }

    #[tokio::test]
    async fn a_post_without_the_token_is_answered_without_waiting_for_its_body() {
        let server = start(service().router(), None, Limits::default()).await;
        let mut stranger = TcpStream::connect(server.addr).await.unwrap();
        let head = "POST /v1/commands/?agent_token=wrong HTTP/1.1\r\nHost: agent\r\n\
            Content-Type: application/json\r\nContent-Length: 1000000\r\n\r\n";
        let answer = tokio::time::timeout(Duration::from_secs(2), send(&mut stranger, head))
            .await
            .expect("answered while the body is still owed");
        assert_eq!(answer, Some(401));
    }

    #[tokio::test]
    async fn silent_and_half_header_clients_are_disconnected() {
        let limits = Limits {
            unauthenticated_idle: Duration::from_millis(300),
            ..Limits::default()
        };
        let server = start(service().router(), None, limits).await;
        let mut silent = TcpStream::connect(server.addr).await.unwrap();
        let mut half = TcpStream::connect(server.addr).await.unwrap();
        half.write_all(b"GET /v1/commands/ HTTP/1.1\r\nHost: a")
            .await
            .unwrap();
        let mut after_one = TcpStream::connect(server.addr).await.unwrap();
        assert_eq!(get(&mut after_one, "/v1/status").await, Some(200));
        for (name, stream) in [
            ("silent", &mut silent),
            ("half a header", &mut half),
            ("idle after an unauthenticated request", &mut after_one),
        ] {
            assert!(
                closed_by_server(stream, Duration::from_secs(5)).await,
                "{name}: not disconnected"
            );
        }
    }

    #[tokio::test]
    async fn a_stalled_tls_handshake_is_disconnected() {
        let dir = tempfile::tempdir().unwrap();
        let identity = crate::tls::auto_tls(
            "127.0.0.1",
            crate::config::Curve::P256,
            0,
            dir.path(),
            crate::config::TlsVersion::V1_2,
            None,
        )
        .unwrap();
        let limits = Limits {
            tls_handshake: Duration::from_millis(300),
            // Isolates the handshake timeout from the idle one.
            unauthenticated_idle: Duration::from_secs(60),
            ..Limits::default()
        };
        let server = start(service().router(), Some(identity.config), limits).await;
        let mut stalled = TcpStream::connect(server.addr).await.unwrap();
        // Half a TLS record header: the handshake never completes.
        stalled.write_all(&[0x16, 0x03]).await.unwrap();
        assert!(closed_by_server(&mut stalled, Duration::from_secs(5)).await);
    }

    #[tokio::test]
    async fn the_conductors_polls_keep_its_connection_and_idle_closes_it() {
        let limits = Limits {
            unauthenticated_idle: Duration::from_millis(200),
            idle: Duration::from_millis(1500),
            ..Limits::default()
        };
        let server = start(service().router(), None, limits).await;
        let mut conductor = TcpStream::connect(server.addr).await.unwrap();
        // Polls further apart than the unauthenticated limit, all on one connection.
        for poll in 0..4 {
            assert_eq!(
                get(&mut conductor, &commands()).await,
                Some(200),
                "poll {poll}"
            );
            tokio::time::sleep(Duration::from_millis(400)).await;
        }
        assert!(
            closed_by_server(&mut conductor, Duration::from_secs(5)).await,
            "idle past the keep-alive limit"
        );
    }

    #[tokio::test]
    async fn h2_streams_per_connection_are_capped() {
        let active = Arc::new(AtomicUsize::new(0));
        let release = Arc::new(tokio::sync::Semaphore::new(0));
        let router = {
            let (active, release) = (active.clone(), release.clone());
            Router::new().route(
                "/slow",
                axum::routing::get(move || {
                    let (active, release) = (active.clone(), release.clone());
                    async move {
                        active.fetch_add(1, Ordering::SeqCst);
                        release.acquire().await.unwrap().forget();
                        "done"
                    }
                }),
            )
        };
        let limits = Limits::default();
        let max = limits.h2_max_concurrent_streams as usize;
        let server = start(router, None, limits).await;
        let stream = TcpStream::connect(server.addr).await.unwrap();
        // h2c with prior knowledge, as the server's protocol sniffing allows.
        let (sender, connection) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
                .await
                .unwrap();
        tokio::spawn(connection);
        // Let the server's SETTINGS arrive, so the client queues what it may not send.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let requests: Vec<_> = (0..max * 3)
            .map(|_| {
                let mut sender = sender.clone();
                tokio::spawn(async move {
                    let req = Request::get(format!("http://{}/slow", "agent"))
                        .body(http_body_util::Empty::<axum::body::Bytes>::new())
                        .unwrap();
                    sender.send_request(req).await.map(|r| r.status().as_u16())
                })
            })
            .collect();
        for _ in 0..100 {
            if active.load(Ordering::SeqCst) >= max {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Time for any stream beyond the limit to reach the handler too.
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(active.load(Ordering::SeqCst), max, "streams served at once");
        release.add_permits(max * 3);
        let mut served = 0;
        for r in requests {
            match r.await.unwrap() {
                Ok(status) => {
                    assert_eq!(status, 200);
                    served += 1;
                }
                // A client that sends more streams than allowed gets them refused.
                Err(e) => assert!(format!("{e:?}").contains("REFUSED_STREAM"), "{e:?}"),
            }
        }
        assert!(served >= max, "{served} requests served");
    }

    #[test]
    fn the_default_cap_is_the_options_default() {
        let config =
            crate::config::Config::from_args(["ironic-agent", "--cmdline-file", "/dev/null"])
                .unwrap();
        assert_eq!(
            config.options.api_max_connections as usize,
            Limits::DEFAULT_MAX_CONNECTIONS
        );
    }
}
