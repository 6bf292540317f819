//! The HTTP source against the fault-injecting test server.

use std::time::Duration;

use base64::Engine as _;

use super::*;
use crate::checksum::{Algorithm, ChecksumError, ChecksumSpec, Hasher};
use crate::test_server::{Faults, TestServer};
use crate::write_op::RangeRead;

const MIB: usize = 1 << 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// Deterministic, incompressible test data.
fn data(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// Short timeouts so that failure tests finish quickly.
fn settings(urls: Vec<String>) -> DownloadSettings {
    let mut s = DownloadSettings::new("img-1", urls);
    s.connect_timeout = Duration::from_secs(2);
    s.read_timeout = Duration::from_secs(2);
    s.retries = 3;
    s.retry_interval = Duration::from_millis(20);
    // One stream: the tests below pin the single connection's requests; the parallel
    // download has tests of its own.
    s.connections = 1;
    s
}

/// [`settings`] with `connections` and windows of `window` bytes.
fn parallel(urls: Vec<String>, connections: usize, window: u64) -> DownloadSettings {
    let mut s = settings(urls);
    s.connections = connections;
    s.window_size = window;
    s
}

/// The Range headers of the GETs for `path`, in arrival order (`None`: no Range).
fn ranges(srv: &TestServer, path: &str) -> Vec<Option<String>> {
    srv.requests_for(path)
        .iter()
        .filter(|r| r.method == "GET")
        .map(|r| r.range().map(str::to_string))
        .collect()
}

/// Reads the whole stream; a restart drops what was collected (as a pipeline would).
fn collect(dl: &mut Download) -> Result<(Vec<u8>, u32), SourceError> {
    let mut out = Vec::new();
    let mut restarts = 0;
    for item in dl.by_ref() {
        match item {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(e) if e.is_restart() => {
                restarts += 1;
                out.clear();
            }
            Err(e) => return Err(e),
        }
    }
    Ok((out, restarts))
}

fn sha256(b: &[u8]) -> String {
    let mut h = Hasher::new(Algorithm::Sha256);
    h.update(b);
    h.finalize_hex()
}

/// A URL on 127.0.0.1 where nothing listens.
fn dead_url(path: &str) -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = l.local_addr().expect("addr");
    drop(l);
    format!("http://{addr}{path}")
}

#[test]
fn clean_download_in_one_mib_chunks() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(3 * MIB + 12345, 1);
    srv.serve("/img.raw", body.clone(), Faults::none());
    let mut dl = start_download(settings(vec![srv.url("/img.raw")]), rt.handle()).expect("start");
    assert_eq!(dl.content_length(), Some(body.len() as u64));
    let mut sizes = Vec::new();
    let mut got = Vec::new();
    while let Some(c) = dl.next_chunk() {
        let c = c.expect("chunk");
        sizes.push(c.len());
        got.extend_from_slice(&c);
    }
    assert_eq!(sizes, vec![MIB, MIB, MIB, 12345]);
    assert_eq!(sha256(&got), sha256(&body));
    let st = dl.stats();
    assert_eq!(st.bytes, body.len() as u64);
    assert_eq!(st.wire_bytes, body.len() as u64);
    assert_eq!((st.resumes, st.restarts), (0, 0));
    assert_eq!(st.url, srv.url("/img.raw"));
    let reqs = srv.requests_for("/img.raw");
    assert_eq!(reqs.len(), 1);
    assert_eq!(reqs[0].range(), None);
    assert!(reqs[0]
        .header("user-agent")
        .is_some_and(|u| u.starts_with("ironic-agent/")));
    // After the end, still None.
    assert!(dl.next_chunk().is_none());
}

#[test]
fn dropped_connection_resumes_with_range_and_if_range() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(4 * MIB, 2);
    let cut = 3 * MIB / 2;
    srv.serve(
        "/img",
        body.clone(),
        Faults::none().drop_after(cut as u64, 1),
    );
    let mut dl = start_download(settings(vec![srv.url("/img")]), rt.handle()).expect("start");
    let (got, restarts) = collect(&mut dl).expect("download");
    assert_eq!(restarts, 0);
    assert_eq!(sha256(&got), sha256(&body));
    let reqs = srv.requests_for("/img");
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(reqs[1].range(), Some(format!("bytes={cut}-").as_str()));
    let etag = format!("\"{:x}-0\"", body.len());
    assert_eq!(reqs[1].header("if-range"), Some(etag.as_str()));
    // Nothing was fetched twice.
    assert_eq!(srv.body_bytes_sent(), body.len() as u64);
    let st = dl.stats();
    assert_eq!(st.wire_bytes, body.len() as u64);
    assert_eq!(st.resumes, 1);
}

#[test]
fn many_drops_each_resume_where_the_last_stopped() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(2 * MIB + 7, 3);
    let step = 300 * 1024;
    srv.serve("/img", body.clone(), Faults::none().drop_after(step, 5));
    let mut s = settings(vec![srv.url("/img")]);
    // Progress resets the retry count: five drops with retries = 1 still succeed.
    s.retries = 1;
    let mut dl = start_download(s, rt.handle()).expect("start");
    let (got, _) = collect(&mut dl).expect("download");
    assert_eq!(got, body);
    let reqs = srv.requests_for("/img");
    assert_eq!(reqs.len(), 6);
    for (i, r) in reqs.iter().enumerate().skip(1) {
        assert_eq!(
            r.range(),
            Some(format!("bytes={}-", i as u64 * step).as_str())
        );
    }
    assert_eq!(dl.stats().resumes, 5);
    assert_eq!(srv.body_bytes_sent(), body.len() as u64);
}

#[test]
fn server_errors_are_retried() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(100_000, 4);
    srv.serve("/img", body.clone(), Faults::none().status(500, 2));
    let mut dl = start_download(settings(vec![srv.url("/img")]), rt.handle()).expect("start");
    assert_eq!(collect(&mut dl).expect("download").0, body);
    assert_eq!(srv.requests_for("/img").len(), 3);
}

#[test]
fn exhausted_retries_fail_with_the_reason() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    srv.serve(
        "/img",
        data(1000, 5),
        Faults::none().status(503, usize::MAX),
    );
    let mut s = settings(vec![srv.url("/img")]);
    s.retries = 2;
    let e = start_download(s, rt.handle()).expect_err("must fail");
    assert_eq!(srv.requests_for("/img").len(), 3);
    assert!(matches!(e, SourceError::Failed { .. }), "{e:?}");
    assert!(!e.is_fatal());
    let msg = e.to_string();
    assert!(msg.contains("Download of image img-1 failed"), "{msg}");
    assert!(msg.contains("503"), "{msg}");
}

#[test]
fn forbidden_temp_url_names_the_cause_but_not_the_signature() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    srv.serve(
        "/v1/AUTH_x/glance/img",
        data(10, 6),
        Faults::none().status(403, usize::MAX),
    );
    let url =
        srv.url("/v1/AUTH_x/glance/img?temp_url_sig=0123SECRETSIG&temp_url_expires=1700000000");
    let e = start_download(settings(vec![url]), rt.handle()).expect_err("must fail");
    // 4xx: no retry.
    assert_eq!(srv.requests().len(), 1);
    assert!(e.is_fatal());
    let msg = e.to_string();
    assert!(msg.contains("temp URL"), "{msg}");
    assert!(msg.contains("expired or its signature is wrong"), "{msg}");
    assert!(msg.contains("/v1/AUTH_x/glance/img"), "{msg}");
    assert!(msg.contains("403"), "{msg}");
    // The server echoed the full target in its body; none of it may leak.
    assert!(!msg.contains("SECRETSIG"), "{msg}");
    assert!(!msg.contains("temp_url_sig="), "{msg}");
    assert!(!format!("{e:?}").contains("SECRETSIG"));
}

#[test]
fn not_found_names_the_url() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let e = start_download(
        settings(vec![srv.url("/missing.qcow2?token=abc")]),
        rt.handle(),
    )
    .expect_err("must fail");
    let msg = e.to_string();
    assert!(matches!(e, SourceError::Fatal { status: 404, .. }), "{e:?}");
    assert!(msg.contains("/missing.qcow2"), "{msg}");
    assert!(msg.contains("404"), "{msg}");
    assert!(!msg.contains("abc"), "{msg}");
}

#[test]
fn unauthorized_with_credentials_says_they_were_rejected() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    srv.serve("/img", data(10, 7), Faults::none().status(401, usize::MAX));
    let mut s = settings(vec![srv.url("/img")]);
    s.basic_auth = Some(BasicAuth {
        user: "u".into(),
        password: "hunter2".into(),
    });
    let msg = start_download(s, rt.handle())
        .expect_err("fail")
        .to_string();
    assert!(
        msg.contains("rejected image_server_user/image_server_password"),
        "{msg}"
    );
    assert!(!msg.contains("hunter2"));
}

#[test]
fn fails_over_to_the_next_url() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(MIB + 1, 8);
    srv.serve("/bad", data(10, 0), Faults::none().status(502, usize::MAX));
    srv.serve("/good", body.clone(), Faults::none());
    let mut s = settings(vec![dead_url("/img"), srv.url("/bad"), srv.url("/good")]);
    s.retries = 1;
    let mut dl = start_download(s, rt.handle()).expect("start");
    assert_eq!(collect(&mut dl).expect("download").0, body);
    assert_eq!(dl.stats().url, srv.url("/good"));
    assert_eq!(srv.requests_for("/bad").len(), 2);
}

#[test]
fn a_4xx_url_is_skipped_but_reported_when_all_fail() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(1000, 9);
    srv.serve("/good", body.clone(), Faults::none());
    let mut dl = start_download(
        settings(vec![srv.url("/nope"), srv.url("/good")]),
        rt.handle(),
    )
    .expect("start");
    assert_eq!(collect(&mut dl).expect("download").0, body);

    let mut s = settings(vec![srv.url("/nope"), dead_url("/x")]);
    s.retries = 0;
    let e = start_download(s, rt.handle()).expect_err("fail");
    assert!(matches!(e, SourceError::Fatal { status: 404, .. }), "{e:?}");
}

#[test]
fn failover_mid_stream_resumes_on_the_mirror() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(3 * MIB, 10);
    // The primary drops after 1.25 MiB and then refuses service.
    srv.serve(
        "/primary",
        body.clone(),
        Faults::none()
            .drop_after((5 * MIB / 4) as u64, 1)
            .status_from(503, 1),
    );
    srv.serve("/mirror", body.clone(), Faults::none());
    let mut s = settings(vec![srv.url("/primary"), srv.url("/mirror")]);
    s.retries = 1;
    let mut dl = start_download(s, rt.handle()).expect("start");
    let (got, restarts) = collect(&mut dl).expect("download");
    assert_eq!(got, body);
    assert_eq!(restarts, 0);
    let mirror = srv.requests_for("/mirror");
    assert_eq!(mirror.len(), 1);
    assert_eq!(
        mirror[0].range(),
        Some(format!("bytes={}-", 5 * MIB / 4).as_str())
    );
    // Validators are per server: no If-Range on the mirror.
    assert_eq!(mirror[0].header("if-range"), None);
}

#[test]
fn trickle_past_max_duration_is_a_408() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    srv.serve("/img", data(MIB, 11), Faults::none().trickle(200_000));
    let mut s = settings(vec![srv.url("/img")]);
    s.max_duration = Some(Duration::from_millis(400));
    let started = std::time::Instant::now();
    let mut dl = start_download(s, rt.handle()).expect("start");
    let e = collect(&mut dl).expect_err("must time out");
    assert!(started.elapsed() < Duration::from_secs(3));
    assert_eq!(e.status_code(), 408, "{e:?}");
    assert!(e.is_fatal());
    let msg = e.to_string();
    assert!(
        msg.contains("exceeded max allowed time (0 seconds)") || msg.contains("max allowed time"),
        "{msg}"
    );
    assert!(msg.contains("received"), "{msg}");
    assert!(msg.contains(&format!("of {MIB}")), "{msg}");
    let SourceError::TimedOut {
        received, elapsed, ..
    } = e
    else {
        panic!()
    };
    assert!(received > 0 && received < MIB as u64);
    assert!(elapsed >= Duration::from_millis(400));
}

#[test]
fn stall_past_read_timeout_resumes() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(2 * MIB, 12);
    srv.serve(
        "/img",
        body.clone(),
        Faults::none().stall(512 * 1024, Duration::from_secs(3), 1),
    );
    let mut s = settings(vec![srv.url("/img")]);
    s.read_timeout = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let mut dl = start_download(s, rt.handle()).expect("start");
    let (got, _) = collect(&mut dl).expect("download");
    assert_eq!(got, body);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    let reqs = srv.requests_for("/img");
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].range(), Some("bytes=524288-"));
}

#[test]
fn server_ignoring_range_with_the_same_file_is_skipped_ahead() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(3 * MIB, 13);
    let cut = (2 * MIB + 100) as u64;
    srv.serve(
        "/img",
        body.clone(),
        Faults::none().drop_after(cut, 1).ignore_range(),
    );
    let mut dl = start_download(settings(vec![srv.url("/img")]), rt.handle()).expect("start");
    let (got, restarts) = collect(&mut dl).expect("download");
    // The consumer never noticed: no restart, same bytes.
    assert_eq!(restarts, 0);
    assert_eq!(got, body);
    let st = dl.stats();
    assert_eq!(st.restarts, 0);
    assert_eq!(st.wire_bytes, cut + body.len() as u64);
}

#[test]
fn changed_file_restarts_from_zero_and_tells_the_consumer() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(3 * MIB, 14);
    let cut = (2 * MIB + 100) as u64;
    srv.serve(
        "/img",
        body.clone(),
        Faults::none().drop_after(cut, 1).change_etag_after(1),
    );
    let mut dl = start_download(settings(vec![srv.url("/img")]), rt.handle()).expect("start");
    let mut seen = Vec::new();
    let mut got = Vec::new();
    for item in dl.by_ref() {
        match item {
            Ok(c) => got.extend_from_slice(&c),
            Err(e) => {
                assert!(e.is_restart(), "{e:?}");
                let msg = e.to_string();
                assert!(msg.contains("restarted from byte 0"), "{msg}");
                assert!(msg.contains(&format!("after {} bytes", 2 * MIB)), "{msg}");
                seen.push(got.len());
                got.clear();
            }
        }
    }
    assert_eq!(seen, vec![2 * MIB]);
    assert_eq!(got, body);
    assert_eq!(dl.stats().restarts, 1);
    let reqs = srv.requests_for("/img");
    assert_eq!(reqs.len(), 2);
    assert_eq!(reqs[1].range(), Some(format!("bytes={cut}-").as_str()));
}

#[test]
fn changed_file_before_any_chunk_was_handed_out_restarts_silently() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(2 * MIB, 15);
    srv.serve(
        "/img",
        body.clone(),
        Faults::none().drop_after(1000, 1).change_etag_after(1),
    );
    let mut dl = start_download(settings(vec![srv.url("/img")]), rt.handle()).expect("start");
    let (got, restarts) = collect(&mut dl).expect("download");
    assert_eq!(restarts, 0);
    assert_eq!(got, body);
    assert_eq!(dl.stats().restarts, 1);
}

#[test]
fn truncated_body_resumes() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(MIB + 5000, 16);
    srv.serve("/img", body.clone(), Faults::none().truncate_by(1000, 1));
    let mut dl = start_download(settings(vec![srv.url("/img")]), rt.handle()).expect("start");
    assert_eq!(collect(&mut dl).expect("download").0, body);
    let reqs = srv.requests_for("/img");
    assert_eq!(reqs.len(), 2);
    assert_eq!(
        reqs[1].range(),
        Some(format!("bytes={}-", body.len() - 1000).as_str())
    );
}

#[test]
fn no_validators_still_resume_by_size() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(MIB, 17);
    srv.serve(
        "/img",
        body.clone(),
        Faults::none().drop_after(5000, 1).no_validators(),
    );
    let mut dl = start_download(settings(vec![srv.url("/img")]), rt.handle()).expect("start");
    assert_eq!(collect(&mut dl).expect("download").0, body);
    let reqs = srv.requests_for("/img");
    assert_eq!(reqs[1].header("if-range"), None);
    assert_eq!(reqs[1].range(), Some("bytes=5000-"));
}

#[test]
fn basic_auth_is_sent() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    srv.serve("/img", data(10, 18), Faults::none());
    let mut s = DownloadSettings::new("img-1", vec![srv.url("/img")]);
    s.basic_auth = Some(
        BasicAuth::checked("img-1", Some("alice".into()), Some("s3cret".into())).expect("auth"),
    );
    let mut dl = start_download(s, rt.handle()).expect("start");
    collect(&mut dl).expect("download");
    let expected = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode("alice:s3cret")
    );
    assert_eq!(
        srv.requests()[0].header("authorization"),
        Some(expected.as_str())
    );
    assert!(!format!("{:?}", dl.settings()).contains("s3cret"));
}

#[test]
fn missing_basic_auth_fields_are_rejected_like_ipa() {
    let e = BasicAuth::checked("img-1", Some("alice".into()), None).expect_err("must fail");
    assert!(
        e.to_string()
            .contains("Missing ['password'] fields from HTTP(S) basic auth config"),
        "{e}"
    );
}

#[test]
fn supplied_authorization_is_sent_verbatim_and_wins() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    srv.serve("/img", data(10, 19), Faults::none().drop_after(5, 1));
    let header = "Bearer gAAAAA.token-value==";
    let mut s = DownloadSettings::new("img-1", vec![srv.url("/img")]);
    s.authorization = Some(header.into());
    s.basic_auth = Some(
        BasicAuth::checked("img-1", Some("alice".into()), Some("s3cret".into())).expect("auth"),
    );
    assert!(!format!("{s:?}").contains("token-value"));
    let mut dl = start_download(s, rt.handle()).expect("start");
    collect(&mut dl).expect("download");
    let reqs = srv.requests();
    assert_eq!(reqs.len(), 2);
    for r in &reqs {
        assert_eq!(r.header("authorization"), Some(header));
    }
}

#[test]
fn http_proxy_is_used_for_http_urls() {
    let rt = runtime();
    let proxy = TestServer::start().expect("server");
    let body = data(200_000, 20);
    // The image "lives" where nothing listens; only the proxy can serve it.
    let image_url = dead_url("/images/img.raw");
    proxy.serve("/images/img.raw", body.clone(), Faults::none());
    let mut s = DownloadSettings::new("img-1", vec![image_url.clone()]);
    s.proxies = Some(Proxies {
        http: Some(proxy.url("")),
        https: None,
    });
    s.no_proxy = Some("example.invalid".into());
    let mut dl = start_download(s, rt.handle()).expect("start");
    assert_eq!(collect(&mut dl).expect("download").0, body);
    let reqs = proxy.requests();
    assert_eq!(reqs.len(), 1);
    assert!(reqs[0].absolute_form);
    assert_eq!(reqs[0].target, image_url);
}

#[test]
fn no_proxy_bypasses_the_proxy() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(1000, 21);
    srv.serve("/img", body.clone(), Faults::none());
    let mut s = settings(vec![srv.url("/img")]);
    s.proxies = Some(Proxies {
        http: Some(dead_url("")),
        https: None,
    });
    s.no_proxy = Some("localhost,127.0.0.1".into());
    s.retries = 0;
    let mut dl = start_download(s, rt.handle()).expect("start");
    assert_eq!(collect(&mut dl).expect("download").0, body);
    assert!(!srv.requests()[0].absolute_form);
}

#[test]
fn range_reader_reads_the_same_file() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(3 * MIB, 22);
    srv.serve("/img", body.clone(), Faults::none());
    let dl = start_download(settings(vec![srv.url("/img")]), rt.handle()).expect("start");
    let mut rr = dl.range_reader();
    assert_eq!(rr.read_range(0, 512).expect("head"), &body[..512]);
    assert_eq!(
        rr.read_range(2 * MIB as u64 + 3, 70_000).expect("mid"),
        &body[2 * MIB + 3..2 * MIB + 3 + 70_000]
    );
    assert_eq!(rr.read_range(5, 0).expect("empty"), Vec::<u8>::new());
    let past = rr
        .read_range(3 * MIB as u64 - 10, 20)
        .expect_err("past the end");
    assert_eq!(past.kind(), std::io::ErrorKind::UnexpectedEof);
    let etag = format!("\"{:x}-0\"", body.len());
    let ranged: Vec<_> = srv.requests().into_iter().skip(1).collect();
    assert_eq!(ranged.len(), 2);
    assert_eq!(ranged[0].range(), Some("bytes=0-511"));
    assert_eq!(ranged[0].header("if-range"), Some(etag.as_str()));
    drop(dl);
}

#[test]
fn range_reader_survives_drops_and_servers_without_ranges() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(MIB, 23);
    // Request 0 is the stream; requests 1-2 (range reads) are cut short.
    srv.serve("/a", body.clone(), Faults::none().drop_after(1000, 3));
    let dl = start_download(settings(vec![srv.url("/a")]), rt.handle()).expect("start");
    let mut rr = dl.range_reader();
    assert_eq!(
        rr.read_range(100_000, 5000).expect("read"),
        &body[100_000..105_000]
    );
    drop(dl);

    srv.serve("/b", body.clone(), Faults::none().ignore_range());
    let dl = start_download(settings(vec![srv.url("/b")]), rt.handle()).expect("start");
    let mut rr = dl.range_reader();
    assert_eq!(
        rr.read_range(300_000, 10).expect("read"),
        &body[300_000..300_010]
    );
}

#[test]
fn range_reader_refuses_a_changed_file() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(MIB, 24);
    srv.serve("/img", body, Faults::none().change_etag_after(1));
    let dl = start_download(settings(vec![srv.url("/img")]), rt.handle()).expect("start");
    let e = dl.range_reader().read_range(10, 10).expect_err("changed");
    assert!(e.to_string().contains("changed on the server"), "{e}");
}

#[test]
fn dropping_the_download_stops_it() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    srv.serve("/img", data(4 * MIB, 25), Faults::none().trickle(1_000_000));
    let mut dl = start_download(settings(vec![srv.url("/img")]), rt.handle()).expect("start");
    dl.next_chunk().expect("one").expect("chunk");
    drop(dl);
    // The server notices the closed connection; the runtime shuts down without waiting.
    rt.shutdown_timeout(Duration::from_secs(1));
}

#[test]
fn checksum_files_are_fetched_with_the_download_settings() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(1000, 26);
    let digest = sha256(&body);
    srv.serve(
        "/SHA256SUMS",
        format!(
            "# checksums\n{} *other.img\n{digest} *img.raw\n",
            "ab".repeat(32)
        ),
        Faults::none().status(500, 1),
    );
    let mut spec = ChecksumSpec {
        image_id: "img-1".into(),
        first_url: srv.url("/img.raw?temp_url_sig=x"),
        checksum: Some(srv.url("/SHA256SUMS")),
        ..ChecksumSpec::default()
    };
    let mut s2 = settings(vec![srv.url("/img.raw?temp_url_sig=x")]);
    s2.basic_auth =
        Some(BasicAuth::checked("img-1", Some("alice".into()), Some("pw".into())).expect("auth"));
    let expected = resolve_expected_checksum(&spec, false, &s2, rt.handle()).expect("resolved");
    assert_eq!(expected.algorithm, Algorithm::Sha256);
    assert_eq!(expected.value, digest);
    let reqs = srv.requests_for("/SHA256SUMS");
    assert_eq!(reqs.len(), 2);
    assert!(reqs[1]
        .header("authorization")
        .is_some_and(|a| a.starts_with("Basic ")));

    // A checksum file that is not there.
    spec.checksum = Some(srv.url("/MISSING?sig=zzz"));
    let e = resolve_expected_checksum(&spec, false, &s2, rt.handle()).expect_err("missing");
    let msg = e.to_string();
    assert!(matches!(e, ChecksumError::Fetch { .. }), "{e:?}");
    assert!(msg.contains("404") && msg.contains("/MISSING"), "{msg}");
    assert!(!msg.contains("zzz"), "{msg}");
}

#[test]
fn oversized_checksum_file_is_refused() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    srv.serve("/big", vec![b'a'; 5000], Faults::none());
    let s = settings(vec![srv.url("/img")]);
    let e = fetch_text(&s, &srv.url("/big"), 4096, rt.handle()).expect_err("too big");
    assert!(e.to_string().contains("larger than 4096 bytes"), "{e}");
}

#[test]
fn settings_debug_hides_secrets() {
    let mut s = DownloadSettings::new(
        "i",
        vec!["http://h/o?temp_url_sig=SIG1&temp_url_expires=2".into()],
    );
    s.basic_auth = Some(BasicAuth {
        user: "u".into(),
        password: "PASS1".into(),
    });
    s.authorization = Some("Bearer TOK1".into());
    s.proxies = Some(Proxies {
        http: Some("http://pu:PPASS@127.0.0.1:3128".into()),
        https: None,
    });
    let d = format!("{s:?}");
    for secret in ["SIG1", "PASS1", "TOK1", "PPASS", "temp_url_sig"] {
        assert!(!d.contains(secret), "{secret} in {d}");
    }
}

/// Localhost throughput of the source alone (consumer discards). Run with
/// `cargo test --release -p image-pipeline --all-features download_throughput -- --ignored --nocapture`.
#[test]
#[ignore]
fn download_throughput() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let size = 1usize << 30;
    srv.serve("/big", vec![7u8; size], Faults::none());
    for _ in 0..3 {
        let t = std::time::Instant::now();
        let mut dl = start_download(settings(vec![srv.url("/big")]), rt.handle()).expect("start");
        let mut n = 0usize;
        while let Some(c) = dl.next_chunk() {
            n += c.expect("chunk").len();
        }
        assert_eq!(n, size);
        let secs = t.elapsed().as_secs_f64();
        println!("source: {:.0} MB/s", size as f64 / secs / 1e6);
    }
}

fn ca_file(srv: &TestServer) -> tempfile::NamedTempFile {
    let mut f = tempfile::NamedTempFile::new().expect("tmp");
    std::io::Write::write_all(&mut f, srv.ca_pem().expect("ca").as_bytes()).expect("write");
    f
}

#[test]
fn https_with_a_ca_file() {
    use crate::test_server::TlsMode;
    let rt = runtime();
    let srv = TestServer::start_tls(TlsMode::Any).expect("server");
    let body = data(2 * MIB + 3, 27);
    srv.serve(
        "/img",
        body.clone(),
        Faults::none().drop_after(MIB as u64 / 2, 1),
    );
    let ca = ca_file(&srv);
    let mut s = settings(vec![srv.url("/img")]);
    assert!(s.urls[0].starts_with("https://127.0.0.1:"));
    s.ca_file = Some(ca.path().to_path_buf());
    s.tls_min_version = TlsMinVersion::V1_3;
    let mut dl = start_download(s, rt.handle()).expect("start");
    assert_eq!(collect(&mut dl).expect("download").0, body);
    assert_eq!(dl.stats().resumes, 1);
    let mut rr = dl.range_reader();
    assert_eq!(rr.read_range(7, 9).expect("range"), &body[7..16]);
}

#[test]
fn https_certificate_is_verified_unless_insecure() {
    use crate::test_server::TlsMode;
    let rt = runtime();
    let srv = TestServer::start_tls(TlsMode::Any).expect("server");
    let body = data(1000, 28);
    srv.serve("/img", body.clone(), Faults::none());
    let mut s = settings(vec![srv.url("/img")]);
    s.retries = 0;
    let e = start_download(s.clone(), rt.handle()).expect_err("untrusted");
    let msg = e.to_string();
    assert!(msg.to_lowercase().contains("certificate"), "{msg}");
    assert!(srv.requests().is_empty());

    s.insecure = true;
    let mut dl = start_download(s, rt.handle()).expect("insecure");
    assert_eq!(collect(&mut dl).expect("download").0, body);
}

#[test]
fn tls_minimum_version_is_enforced() {
    use crate::test_server::TlsMode;
    let rt = runtime();
    let srv = TestServer::start_tls(TlsMode::Tls12Only).expect("server");
    srv.serve("/img", data(1000, 29), Faults::none());
    let ca = ca_file(&srv);
    let mut s = settings(vec![srv.url("/img")]);
    s.retries = 0;
    s.ca_file = Some(ca.path().to_path_buf());
    let mut dl = start_download(s.clone(), rt.handle()).expect("TLS 1.2 accepted by default");
    collect(&mut dl).expect("download");
    s.tls_min_version = TlsMinVersion::V1_3;
    let e = start_download(s, rt.handle()).expect_err("TLS 1.2 refused");
    assert!(matches!(e, SourceError::Failed { .. }), "{e:?}");
}

#[test]
fn a_bad_ca_file_is_a_setup_error() {
    let rt = runtime();
    let mut s = settings(vec!["https://127.0.0.1:1/x".into()]);
    s.ca_file = Some("/nonexistent/ca.pem".into());
    let e = start_download(s, rt.handle()).expect_err("setup");
    assert!(matches!(e, SourceError::Setup(_)), "{e:?}");
    assert!(e.to_string().contains("/nonexistent/ca.pem"), "{e}");
}

#[test]
fn a_body_longer_than_announced_is_an_error() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(MIB + 10, 30);
    srv.serve(
        "/img",
        body,
        Faults::none().drop_after(1000, 1).overlong_ranges(10),
    );
    let mut dl = start_download(settings(vec![srv.url("/img")]), rt.handle()).expect("start");
    let e = collect(&mut dl).expect_err("too long");
    assert!(matches!(e, SourceError::TooLong { .. }), "{e:?}");
    let msg = e.to_string();
    assert!(
        msg.contains(&format!(
            "sent more than the {} bytes it announced",
            MIB + 10
        )),
        "{msg}"
    );
}

#[test]
fn parallel_download_is_the_file_in_order() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(10 * MIB + 777, 31);
    srv.serve("/img", body.clone(), Faults::none());
    let mut dl =
        start_download(parallel(vec![srv.url("/img")], 4, MIB as u64), rt.handle()).expect("start");
    let mut sizes = Vec::new();
    let mut got = Vec::new();
    while let Some(c) = dl.next_chunk() {
        let c = c.expect("chunk");
        sizes.push(c.len());
        got.extend_from_slice(&c);
    }
    assert_eq!(sha256(&got), sha256(&body));
    // The same chunks a single stream gives: whole MiBs, then the tail.
    let mut want = vec![MIB; 10];
    want.push(777);
    assert_eq!(sizes, want);
    // The first GET serves window 0, then one ranged GET per window, with If-Range.
    let mut expected = vec![None];
    for k in 1..=10u64 {
        let first = k * MIB as u64;
        let last = ((k + 1) * MIB as u64).min(body.len() as u64) - 1;
        expected.push(Some(format!("bytes={first}-{last}")));
    }
    let mut seen = ranges(&srv, "/img");
    seen[1..].sort_by_key(|r| {
        r.as_deref()
            .and_then(|r| r.strip_prefix("bytes="))
            .and_then(|r| r.split('-').next())
            .and_then(|n| n.parse::<u64>().ok())
    });
    assert_eq!(seen, expected);
    assert!(srv.requests_for("/img")[1..]
        .iter()
        .all(|r| r.header("if-range").is_some()));
    let st = dl.stats();
    assert_eq!((st.bytes, st.restarts), (body.len() as u64, 0));
}

#[test]
fn parallel_windows_resume_inside_the_window() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(8 * MIB, 32);
    // The first three GETs (window 0's and two windows') break after 300 KiB.
    srv.serve(
        "/img",
        body.clone(),
        Faults::none().drop_after(300 << 10, 3),
    );
    let mut dl =
        start_download(parallel(vec![srv.url("/img")], 3, MIB as u64), rt.handle()).expect("start");
    let (got, restarts) = collect(&mut dl).expect("download");
    assert_eq!(restarts, 0);
    assert_eq!(sha256(&got), sha256(&body));
    // Resumes start inside windows, not at their first byte.
    let inside: Vec<String> = ranges(&srv, "/img")
        .into_iter()
        .flatten()
        .filter(|r| {
            let first: u64 = r["bytes=".len()..]
                .split('-')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            !first.is_multiple_of(MIB as u64)
        })
        .collect();
    assert!(
        !inside.is_empty(),
        "no resume inside a window: {:?}",
        ranges(&srv, "/img")
    );
    assert!(dl.stats().resumes >= 2, "{:?}", dl.stats());
}

#[test]
fn parallel_download_falls_back_to_one_stream_when_ranges_are_not_served() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(6 * MIB, 33);
    // From the third request on, another ETag: If-Range fails, the server answers 200.
    srv.serve("/img", body.clone(), Faults::none().change_etag_after(2));
    let mut dl =
        start_download(parallel(vec![srv.url("/img")], 2, MIB as u64), rt.handle()).expect("start");
    let (got, _restarts) = collect(&mut dl).expect("download");
    assert_eq!(sha256(&got), sha256(&body));
    assert_eq!(dl.stats().restarts, 1);
    // After the fallback: one plain GET of the whole file.
    assert_eq!(ranges(&srv, "/img").last(), Some(&None));
}

#[test]
fn no_parallel_download_without_accept_ranges_or_below_two_windows() {
    let rt = runtime();
    let srv = TestServer::start().expect("server");
    let body = data(6 * MIB, 34);
    srv.serve("/noranges", body.clone(), Faults::none().ignore_range());
    srv.serve("/small", body.clone(), Faults::none());
    for (path, window) in [("/noranges", MIB as u64), ("/small", 4 * MIB as u64)] {
        let mut dl =
            start_download(parallel(vec![srv.url(path)], 4, window), rt.handle()).expect("start");
        let (got, _) = collect(&mut dl).expect("download");
        assert_eq!(sha256(&got), sha256(&body));
        assert_eq!(ranges(&srv, path), vec![None], "{path}");
    }
}

#[test]
fn window_sizes_are_whole_chunks() {
    assert_eq!(parallel::window_size(1, MIB), MIB as u64);
    assert_eq!(parallel::window_size(MIB as u64 + 1, MIB), 2 * MIB as u64);
    assert_eq!(parallel::window_size(8 * MIB as u64, MIB), 8 * MIB as u64);
}
