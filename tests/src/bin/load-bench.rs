//! `load-bench`: a deploy under load on the agent's API (issue "hardening", Load). Real Ironic
//! (the e2e harness: Ironic on the host end of the agent's namespace, the agent in it, a
//! 5 GiB loop disk) deploys a raw GPT image of random data three times, each in a fresh
//! harness: with no load; with `--pollers` (1000) concurrent authenticated status polls; with
//! a flood of unauthenticated junk (idle connections, slow headers, oversize bodies, HTTP/2
//! stream floods). The load comes from a second namespace cabled to the agent's by a veth
//! pair of its own (nothing routes between them and the host), over TLS as the conductor
//! talks (auto-TLS). Prints, per run: the write throughput the agent logged and its drop
//! against the unloaded run, the agent's peak RSS and open fds, the accepted heartbeats and
//! their longest gap, and what the load achieved.
//!
//!   tests/load-bench.sh [--size-mib 2048] [--pollers 1000] [--poll-interval-ms 1000] [--runs 1]
//!
//! The attacker side is this binary again: `load-bench attack <kind> <addr:port> <token>
//! <threads> <stats file>`, run with `ip netns exec`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use e2e::agent::AgentOptions;
use e2e::deploy::{self, enroll_available, node_spec, set_instance_info, InstanceInfo};
use e2e::harness::Harness;
use e2e::ironic_api::Provision;
use e2e::loopdev::Fill;
use e2e::{cmd, images};

const MAC: &str = "52:54:00:4c:0a:01";
/// The agent's default API port (the harness does not change it).
const AGENT_PORT: u16 = 9999;

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("attack") {
        return attack::main(&args[2..]);
    }
    let mut size_mib = 2048u64;
    let mut pollers = 1000usize;
    let mut interval_ms = 1000u64;
    let mut runs = 1usize;
    let mut i = 1;
    while i < args.len() {
        match args[i].as_str() {
            "--size-mib" => size_mib = args.get(i + 1).context("--size-mib N")?.parse()?,
            "--pollers" => pollers = args.get(i + 1).context("--pollers N")?.parse()?,
            "--runs" => runs = args.get(i + 1).context("--runs N")?.parse()?,
            "--poll-interval-ms" => {
                interval_ms = args.get(i + 1).context("--poll-interval-ms N")?.parse()?
            }
            other => bail!(
                "unknown argument {other} (--size-mib N, --pollers N, --poll-interval-ms N, --runs N)"
            ),
        }
        i += 2;
    }
    cmd::check_prerequisites(&["nginx", "sgdisk", "losetup", "python3", "ip"])?;
    let work = e2e::testdir::TestDir::new("load-bench")?;
    let image = work.join("disk.raw");
    println!("building a {size_mib} MiB GPT image of random data");
    images::write_random(&image, size_mib << 20)?;
    cmd::run(
        Command::new("sgdisk")
            .args(["-n", "1:2048:0", "-t", "1:8300"])
            .arg(&image),
    )?;
    let digests = images::digests(&image)?;
    // The attacker (a child of this process) reads it.
    std::env::set_var("LOAD_POLL_INTERVAL_MS", interval_ms.to_string());
    let loads = [Load::None, Load::Polls(pollers), Load::Junk];
    let mut all: Vec<Vec<Row>> = loads.iter().map(|_| Vec::new()).collect();
    // Interleaved, so that a slow phase of the machine hits every kind of run alike.
    for run in 1..=runs {
        for (k, load) in loads.iter().enumerate() {
            println!("== run {run}/{runs}: deploy with {}", load.describe());
            all[k].push(run_one(*load, &image, &digests).with_context(|| load.describe())?);
        }
    }
    // The median run of each kind, by write throughput.
    let rows: Vec<Row> = all
        .into_iter()
        .map(|mut v| {
            v.sort_by(|a, b| a.mb_per_s.total_cmp(&b.mb_per_s));
            v.swap_remove(v.len() / 2)
        })
        .collect();
    let base = rows[0].mb_per_s;
    println!(
        "\n{:<56} {:>6} {:>7} {:>7} {:>9} {:>7} {:>11} {:>9} {:>9}",
        "run",
        "MB/s",
        "drop",
        "write s",
        "peak RSS",
        "max fds",
        "heartbeats",
        "agent CPU",
        "load CPU"
    );
    for r in &rows {
        println!(
            "{:<56} {:>6.0} {:>6.1}% {:>7.2} {:>5.1} MiB {:>7} {:>4} ({:>4.1}s) {:>8.0}% {:>8.0}%",
            r.load,
            r.mb_per_s,
            (1.0 - r.mb_per_s / base) * 100.0,
            r.write_seconds,
            r.peak_rss_kb as f64 / 1024.0,
            r.max_fds,
            r.heartbeats,
            r.longest_heartbeat_gap,
            r.agent_cpu_share * 100.0,
            r.attacker_cpu_share * 100.0,
        );
    }
    for r in &rows[1..] {
        println!("{}: {}", r.load, r.attack);
    }
    println!(
        "\n(drop: write throughput against the unloaded run; heartbeats: accepted during the \
         deploy, longest gap between two in parentheses; CPU: share of one core from the \
         agent's start to `active`, the agent's and the load generator's, which shares this \
         machine's {} cores; the median of {runs} run(s) by throughput; {size_mib} MiB image, \
         agent API limits at their defaults)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    Ok(())
}

#[derive(Clone, Copy)]
enum Load {
    None,
    Polls(usize),
    Junk,
}

impl Load {
    fn describe(&self) -> String {
        match self {
            Load::None => "no load".into(),
            Load::Polls(n) => format!(
                "{n} authenticated pollers, one poll per {} ms each",
                std::env::var("LOAD_POLL_INTERVAL_MS").unwrap_or_else(|_| "1000".into())
            ),
            Load::Junk => "unauthenticated junk flood".into(),
        }
    }
}

struct Row {
    load: String,
    mb_per_s: f64,
    write_seconds: f64,
    peak_rss_kb: u64,
    max_fds: usize,
    heartbeats: usize,
    longest_heartbeat_gap: f64,
    attack: String,
    /// CPU time over wall time from the agent's start to `active` (1.0 = one core).
    agent_cpu_share: f64,
    attacker_cpu_share: f64,
}

fn run_one(load: Load, image: &Path, digests: &images::Digests) -> Result<Row> {
    let mut h = Harness::start("load-bench", MAC, deploy::ironic_config)?;
    h.add_disk(deploy::DISK_SIZE, Fill::Zeros)?;
    let nginx = h.start_nginx()?;
    std::fs::hard_link(image, nginx.root().join("disk.raw"))
        .or_else(|_| std::fs::copy(image, nginx.root().join("disk.raw")).map(drop))?;
    let url = nginx.url("disk.raw");
    enroll_available(&mut h, &node_spec("load-bench", None))?;
    set_instance_info(
        &h,
        &InstanceInfo::whole_disk(url, deploy::ImageChecksum::sha256(digests)),
    )?;
    let attacker = match load {
        Load::None => None,
        _ => Some(Attacker::cable(h.netns().name(), h.netns().subnet())?),
    };
    h.provision(Provision::Deploy)?;
    h.wait_for("wait call-back", Duration::from_secs(60))?;
    h.start_agent(AgentOptions::default())?;
    let agent = h.agent().context("no agent")?;
    let pid = agent.pid();
    let log = agent.log_path();
    let sampler = Sampler::start(pid);
    let agent_cpu0 = e2e::cmd::cpu_seconds(pid);
    let t0 = Instant::now();
    let db = h.dir().join("ironic/ironic.sqlite");
    let token = wait_token(&db, h.node_uuid()?)?;
    let mut attack = match (&attacker, load) {
        (Some(a), Load::Polls(n)) => Some(a.attack("polls", &token, n, h.dir().path())?),
        (Some(a), Load::Junk) => Some(a.attack("junk", &token, 0, h.dir().path())?),
        _ => None,
    };
    let verdict = h.wait_for("active", Duration::from_secs(600));
    let window = t0.elapsed().as_secs_f64();
    let agent_cpu = e2e::cmd::cpu_seconds(pid) - agent_cpu0;
    let (attack_stats, attacker_cpu) = match attack.as_mut() {
        Some(a) => {
            let cpu = e2e::cmd::cpu_seconds(a.child.id());
            (a.stop(), cpu)
        }
        None => ("-".into(), 0.0),
    };
    let (peak_rss_kb, max_fds) = sampler.stop();
    verdict?;
    let text = std::fs::read_to_string(&log)?;
    let (mb_per_s, write_seconds) = write_stats(&text).context("no 'image written' line")?;
    let (heartbeats, longest_heartbeat_gap) = heartbeat_stats(&text);
    drop(attacker);
    Ok(Row {
        load: load.describe(),
        mb_per_s,
        write_seconds,
        peak_rss_kb,
        max_fds,
        heartbeats,
        longest_heartbeat_gap,
        attack: attack_stats,
        agent_cpu_share: agent_cpu / window,
        attacker_cpu_share: attacker_cpu / window,
    })
}

/// The agent token Ironic generated at lookup (its database holds it; the API hides it).
fn wait_token(db: &Path, node: &str) -> Result<String> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let out = Command::new("python3")
            .args([
                "-c",
                "import json,sqlite3,sys\n\
                 c=sqlite3.connect(sys.argv[1])\n\
                 r=c.execute('select driver_internal_info from nodes where uuid=?',(sys.argv[2],)).fetchone()\n\
                 print(json.loads(r[0] or '{}').get('agent_secret_token') or '')",
            ])
            .arg(db)
            .arg(node)
            .output()?;
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        if !token.is_empty() {
            return Ok(token);
        }
        if Instant::now() > deadline {
            bail!("no agent token in Ironic's database after 60 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `mb_per_s` and `seconds` of the agent's "image written and verified" line.
fn write_stats(log: &str) -> Option<(f64, f64)> {
    let line = log
        .lines()
        .find(|l| l.contains("image written and verified"))?;
    let field = |name: &str| -> Option<f64> {
        let rest = line.split(&format!("{name}=")).nth(1)?;
        rest.trim_start_matches('"')
            .split(|c: char| c == '"' || c.is_whitespace())
            .next()?
            .parse()
            .ok()
    };
    Some((field("mb_per_s")?, field("seconds")?))
}

/// Accepted heartbeats and the longest gap between two, from the agent log's timestamps.
fn heartbeat_stats(log: &str) -> (usize, f64) {
    let times: Vec<f64> = log
        .lines()
        .filter(|l| l.contains("heartbeat accepted"))
        .filter_map(|l| parse_time(l.split_whitespace().next()?))
        .collect();
    let gap = times.windows(2).map(|w| w[1] - w[0]).fold(0.0, f64::max);
    (times.len(), gap)
}

/// Seconds of the day of an RFC 3339 timestamp (`2026-12-02T07:01:02.123456Z`).
fn parse_time(ts: &str) -> Option<f64> {
    let t = ts.split('T').nth(1)?.trim_end_matches('Z');
    let mut parts = t.split(':');
    let h: f64 = parts.next()?.parse().ok()?;
    let m: f64 = parts.next()?.parse().ok()?;
    let s: f64 = parts
        .next()?
        .trim_end_matches(|c: char| !c.is_ascii_digit())
        .parse()
        .ok()?;
    Some(h * 3600.0 + m * 60.0 + s)
}

/// Samples the agent's VmHWM and open fds every 50 ms.
struct Sampler {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<(u64, usize)>,
}

impl Sampler {
    fn start(pid: u32) -> Sampler {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let (mut hwm, mut fds) = (0u64, 0usize);
            while !flag.load(Ordering::Relaxed) {
                if let Ok(s) = std::fs::read_to_string(format!("/proc/{pid}/status")) {
                    if let Some(kb) = s
                        .lines()
                        .find_map(|l| l.strip_prefix("VmHWM:"))
                        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                    {
                        hwm = hwm.max(kb);
                    }
                }
                if let Ok(d) = std::fs::read_dir(format!("/proc/{pid}/fd")) {
                    fds = fds.max(d.count());
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            (hwm, fds)
        });
        Sampler { stop, thread }
    }

    fn stop(self) -> (u64, usize) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap_or((0, 0))
    }
}

/// A namespace of its own cabled to the agent's: `eth1` 10.250.N.1/24 in the agent's
/// namespace, `eth0` 10.250.N.2/24 here. Nothing else: no route to the host or anywhere.
struct Attacker {
    name: String,
    target: SocketAddr,
}

impl Attacker {
    fn cable(agent_ns: &str, subnet: u8) -> Result<Attacker> {
        let name = format!("{agent_ns}-load");
        let ip = |args: &[&str]| cmd::run(Command::new("ip").args(args)).map(|_| ());
        ip(&["netns", "add", &name])?;
        let a = Attacker {
            name: name.clone(),
            target: format!("10.250.{subnet}.1:{AGENT_PORT}").parse()?,
        };
        ip(&[
            "-n", agent_ns, "link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns",
            &name,
        ])?;
        ip(&[
            "-n",
            agent_ns,
            "addr",
            "add",
            &format!("10.250.{subnet}.1/24"),
            "dev",
            "eth1",
        ])?;
        ip(&["-n", agent_ns, "link", "set", "eth1", "up"])?;
        ip(&[
            "-n",
            &name,
            "addr",
            "add",
            &format!("10.250.{subnet}.2/24"),
            "dev",
            "eth0",
        ])?;
        ip(&["-n", &name, "link", "set", "eth0", "up"])?;
        ip(&["-n", &name, "link", "set", "lo", "up"])?;
        Ok(a)
    }

    fn attack(&self, kind: &str, token: &str, threads: usize, dir: &Path) -> Result<Attack> {
        let stats = dir.join(format!("attack-{kind}.txt"));
        let child = Command::new("ip")
            .args(["netns", "exec", &self.name])
            .arg(std::env::current_exe()?)
            .args(["attack", kind, &self.target.to_string(), token])
            .arg(threads.to_string())
            .arg(&stats)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(
                dir.join(format!("attack-{kind}.err")),
            )?)
            .spawn()
            .context("starting the attacker")?;
        Ok(Attack { child, stats })
    }
}

impl Drop for Attacker {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

struct Attack {
    child: Child,
    stats: PathBuf,
}

impl Attack {
    /// Stops the attacker; its last stats line.
    fn stop(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        std::fs::read_to_string(&self.stats)
            .unwrap_or_default()
            .trim()
            .to_string()
    }
}

/// The attacker: threads that hammer the agent until killed, writing their counters to the
/// stats file every second.
mod attack {
    use super::*;
    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{
        ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme, StreamOwned,
    };

    #[derive(Default)]
    struct Counters {
        ok: AtomicU64,
        refused: AtomicU64,
        errors: AtomicU64,
        connections: AtomicU64,
    }

    pub fn main(args: &[String]) -> Result<()> {
        let [kind, target, token, threads, stats] = args else {
            bail!("attack <polls|junk> <addr:port> <token> <threads> <stats file>");
        };
        let target: SocketAddr = target.parse()?;
        let threads: usize = threads.parse()?;
        let interval = Duration::from_millis(
            std::env::var("LOAD_POLL_INTERVAL_MS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(1000),
        );
        let c = Arc::new(Counters::default());
        let started = Instant::now();
        let spawn = |f: Box<dyn Fn(&Counters) + Send>| {
            let c = c.clone();
            std::thread::Builder::new()
                .stack_size(256 << 10)
                .spawn(move || loop {
                    f(&c)
                })
        };
        match kind.as_str() {
            "polls" => {
                // `threads` pollers, each waiting for its answer before asking again, served
                // by POOL kept-alive connections, as a client library's pool serves threads.
                let (tx, rx) =
                    std::sync::mpsc::sync_channel::<std::sync::mpsc::SyncSender<()>>(threads);
                let rx = Arc::new(std::sync::Mutex::new(rx));
                for _ in 0..POOL {
                    let (token, rx) = (token.clone(), rx.clone());
                    spawn(Box::new(move |c| poll(target, &token, &rx, c)))?;
                }
                for _ in 0..threads {
                    let tx = tx.clone();
                    std::thread::Builder::new()
                        .stack_size(64 << 10)
                        .spawn(move || loop {
                            let (done_tx, done_rx) = std::sync::mpsc::sync_channel(1);
                            if tx.send(done_tx).is_err() {
                                return;
                            }
                            // An error: its connection failed; ask again.
                            let _ = done_rx.recv();
                            std::thread::sleep(interval);
                        })?;
                }
            }
            "junk" => {
                for _ in 0..300 {
                    spawn(Box::new(move |c| idle(target, c)))?;
                }
                for _ in 0..100 {
                    spawn(Box::new(move |c| slow_headers(target, c)))?;
                }
                for _ in 0..20 {
                    spawn(Box::new(move |c| oversize(target, c)))?;
                }
                for _ in 0..20 {
                    spawn(Box::new(move |c| h2_flood(target, c)))?;
                }
            }
            other => bail!("unknown attack {other}"),
        }
        loop {
            std::thread::sleep(Duration::from_secs(1));
            let secs = started.elapsed().as_secs_f64();
            let ok = c.ok.load(Ordering::Relaxed);
            let line = format!(
                "{kind}: {ok} answered ({:.0}/s), {} refused or closed, {} errors, {} connections in {secs:.0} s",
                ok as f64 / secs,
                c.refused.load(Ordering::Relaxed),
                c.errors.load(Ordering::Relaxed),
                c.connections.load(Ordering::Relaxed),
            );
            let tmp = format!("{stats}.tmp");
            std::fs::write(&tmp, line + "\n")?;
            std::fs::rename(&tmp, stats)?;
        }
    }

    #[derive(Debug)]
    struct AnyCert;

    impl ServerCertVerifier for AnyCert {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, rustls::Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn verify_tls13_signature(
            &self,
            _: &[u8],
            _: &CertificateDer<'_>,
            _: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, rustls::Error> {
            Ok(HandshakeSignatureValid::assertion())
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .supported_schemes()
        }
    }

    fn tls_config(alpn: &[u8]) -> Arc<ClientConfig> {
        let mut cfg =
            ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("TLS versions")
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(AnyCert))
                .with_no_client_auth();
        cfg.alpn_protocols = vec![alpn.to_vec()];
        Arc::new(cfg)
    }

    type Tls = StreamOwned<ClientConnection, TcpStream>;

    fn connect(target: SocketAddr, alpn: &[u8], c: &Counters) -> Option<Tls> {
        thread_local! {
            static H1: Arc<ClientConfig> = tls_config(b"http/1.1");
            static H2: Arc<ClientConfig> = tls_config(b"h2");
        }
        let cfg = if alpn == b"h2" {
            H2.with(Arc::clone)
        } else {
            H1.with(Arc::clone)
        };
        let tcp = match TcpStream::connect_timeout(&target, Duration::from_secs(5)) {
            Ok(t) => t,
            Err(_) => {
                c.refused.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
                return None;
            }
        };
        c.connections.fetch_add(1, Ordering::Relaxed);
        tcp.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let name = ServerName::try_from("ironic-agent").expect("name");
        let conn = ClientConnection::new(cfg, name).ok()?;
        let mut tls = StreamOwned::new(conn, tcp);
        // Finish the handshake now, so a refusal shows here.
        while tls.conn.is_handshaking() {
            if tls.conn.complete_io(&mut tls.sock).is_err() {
                c.refused.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(100));
                return None;
            }
        }
        Some(tls)
    }

    /// Reads one HTTP/1.1 response (headers and a Content-Length body); its status.
    fn response(tls: &mut Tls) -> Option<u16> {
        let mut buf = Vec::with_capacity(4096);
        let mut byte = [0u8; 4096];
        let head_end = loop {
            let n = tls.read(&mut byte).ok()?;
            if n == 0 {
                return None;
            }
            buf.extend_from_slice(&byte[..n]);
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
        let status = head.split_whitespace().nth(1)?.parse().ok()?;
        let len = e2e::http::content_length(&head);
        let mut have = buf.len() - head_end;
        while have < len {
            let n = tls.read(&mut byte).ok()?;
            if n == 0 {
                return None;
            }
            have += n;
        }
        Some(status)
    }

    /// Kept-alive connections the pollers share: under the agent's cap of 64, with room for
    /// the conductor. (Token holders beyond the cap shed one another and the conductor's new
    /// connections with them; see `agent/src/api/connections.rs`.)
    const POOL: usize = 48;

    type Waiters =
        Arc<std::sync::Mutex<std::sync::mpsc::Receiver<std::sync::mpsc::SyncSender<()>>>>;

    /// The conductor's poll (`GET /v1/commands/`), authenticated, on a kept-alive connection,
    /// for whichever poller waits next.
    fn poll(target: SocketAddr, token: &str, waiters: &Waiters, c: &Counters) {
        let Some(mut tls) = connect(target, b"http/1.1", c) else {
            return;
        };
        let req = format!(
            "GET /v1/commands/?agent_token={token} HTTP/1.1\r\nHost: agent\r\nAccept: application/json\r\n\r\n"
        );
        loop {
            let Ok(waiter) = waiters.lock().map(|rx| rx.recv()) else {
                return;
            };
            let Ok(waiter) = waiter else {
                std::thread::sleep(Duration::from_secs(1));
                return;
            };
            if tls.write_all(req.as_bytes()).is_err() {
                c.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            match response(&mut tls) {
                Some(200) => c.ok.fetch_add(1, Ordering::Relaxed),
                Some(_) => c.errors.fetch_add(1, Ordering::Relaxed),
                None => {
                    c.refused.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            };
            let _ = waiter.send(());
        }
    }

    /// A TCP connection that never starts TLS, held until the agent closes it; then the next
    /// after a pause (`LOAD_JUNK_PAUSE_MS`, default 10 ms: a thread reconnecting in a tight
    /// loop measures this machine's CPU, which it shares with the agent, more than the agent).
    fn idle(target: SocketAddr, c: &Counters) {
        pause();
        let Ok(mut tcp) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
            c.refused.fetch_add(1, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
            return;
        };
        c.connections.fetch_add(1, Ordering::Relaxed);
        tcp.set_read_timeout(Some(Duration::from_secs(60))).ok();
        let _ = tcp.read(&mut [0u8; 64]);
        c.refused.fetch_add(1, Ordering::Relaxed);
    }

    fn pause() {
        thread_local! {
            static PAUSE: Duration = Duration::from_millis(
                std::env::var("LOAD_JUNK_PAUSE_MS").ok().and_then(|v| v.parse().ok()).unwrap_or(10),
            );
        }
        std::thread::sleep(PAUSE.with(|p| *p));
    }

    /// TLS, then a request head one byte every 500 ms.
    fn slow_headers(target: SocketAddr, c: &Counters) {
        pause();
        let Some(mut tls) = connect(target, b"http/1.1", c) else {
            return;
        };
        for b in b"GET /v1/commands/ HTTP/1.1\r\nHost: agent\r\nX-Padding: "
            .iter()
            .chain(std::iter::repeat(&b'a'))
        {
            if tls.write_all(&[*b]).and_then(|_| tls.flush()).is_err() {
                c.refused.fetch_add(1, Ordering::Relaxed);
                return;
            }
            std::thread::sleep(Duration::from_millis(500));
        }
    }

    /// An unauthenticated POST announcing 200 MiB, its body sent as fast as the agent takes it.
    fn oversize(target: SocketAddr, c: &Counters) {
        pause();
        let Some(mut tls) = connect(target, b"http/1.1", c) else {
            return;
        };
        let head = "POST /v1/commands/ HTTP/1.1\r\nHost: agent\r\nContent-Type: application/json\r\nContent-Length: 209715200\r\n\r\n";
        if tls.write_all(head.as_bytes()).is_err() {
            c.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        let junk = vec![b'{'; 64 << 10];
        for _ in 0..3200 {
            if tls.write_all(&junk).is_err() {
                break;
            }
        }
        match response(&mut tls) {
            Some(401) | Some(413) | None => c.refused.fetch_add(1, Ordering::Relaxed),
            Some(_) => c.errors.fetch_add(1, Ordering::Relaxed),
        };
    }

    /// HTTP/2: the preface, empty SETTINGS, then HEADERS frames for 1000 streams at once
    /// (`GET https /` from HPACK's static table), without reading the answers.
    fn h2_flood(target: SocketAddr, c: &Counters) {
        pause();
        let Some(mut tls) = connect(target, b"h2", c) else {
            return;
        };
        let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        out.extend_from_slice(&[0, 0, 0, 0x4, 0, 0, 0, 0, 0]);
        for i in 0..1000u32 {
            let id = 2 * i + 1;
            out.extend_from_slice(&[0, 0, 3, 0x1, 0x5]);
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&[0x82, 0x87, 0x84]);
        }
        if tls.write_all(&out).and_then(|_| tls.flush()).is_err() {
            c.refused.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Hold the connection (unread answers) until the agent drops it.
        let mut sink = [0u8; 16384];
        let t = Instant::now();
        while t.elapsed() < Duration::from_secs(60) {
            match tls.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
        c.refused.fetch_add(1, Ordering::Relaxed);
    }
}
