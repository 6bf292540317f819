//! `/init` of the ironic-agent ramdisk (PID 1). See the crate documentation.
//!
//! PID 1 must never exit (the kernel panics): every failure is logged to the console and
//! the init carries on with what it has, because the agent may still reach the conductor
//! and report, and an operator watching the console must see why.

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use ironic_agent_init::config::{DhcpMode, InitConfig};
use ironic_agent_init::dhcp::{self, DhcpError, Lease};
use ironic_agent_init::modules::ModuleDb;
use ironic_agent_init::net::{self, Nic, UdpTransport};
use ironic_agent_init::{cmdline, config};
use nix::mount::{mount, MsFlags};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

use ramdisk_contract::paths::{LOCKDOWN_MARKER, RESCUED_MARKER, RESCUE_PASSWORD};
const PATH_ENV: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
const DEFAULT_HOSTNAME: &str = "ironic-agent";
/// How long the agent start waits for a lease before starting anyway (the agent retries
/// its lookup on its own; DHCP keeps trying in the background).
const NETWORK_WAIT: Duration = Duration::from_secs(90);
/// The agent's memory is logged this long after it starts (it has looked up its node and
/// heartbeated by then), 25 s later, and then every ten minutes.
const FIRST_REPORT: Duration = Duration::from_secs(5);

static BOOT: OnceLock<Instant> = OnceLock::new();

macro_rules! log {
    ($($arg:tt)*) => {
        log_line(&format!($($arg)*))
    };
}

fn log_line(msg: &str) {
    let uptime = std::fs::read_to_string("/proc/uptime")
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_string))
        .unwrap_or_else(|| {
            format!(
                "{:.2}",
                BOOT.get_or_init(Instant::now).elapsed().as_secs_f64()
            )
        });
    // One write per line so lines from threads do not interleave.
    let line = format!("ironic-agent-init[{uptime}]: {msg}\n");
    let _ = std::io::stderr().write_all(line.as_bytes());
}

fn main() {
    BOOT.get_or_init(Instant::now);
    if std::process::id() != 1 {
        eprintln!(
            "ironic-agent-init is the ramdisk's PID 1 (/init); it mounts filesystems, loads \
             kernel modules and configures the network, so it refuses to run as PID {}",
            std::process::id()
        );
        std::process::exit(2);
    }
    early_mounts();
    console_stdio();
    std::env::set_var("PATH", PATH_ENV);
    let cmdline_text = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let params = cmdline::parse(&cmdline_text);
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_default();
    log!(
        "ironic-agent-init {} starting on Linux {release}",
        env!("CARGO_PKG_VERSION")
    );
    log!(
        "kernel command line: {}",
        ramdisk_contract::cmdline::redact(cmdline_text.trim())
    );
    raise_open_files_limit();
    let config = load_config();
    set_hostname(DEFAULT_HOSTNAME);

    // Modules load while the network comes up: with BOOTIF, DHCP starts as soon as that
    // NIC's driver has registered it, and the storage drivers (libata, SCSI, RAID HBAs: the
    // slow ones to load) load meanwhile. The agent starts once both are done.
    let modules_dir = PathBuf::from("/lib/modules").join(&release);
    let modules = {
        let config = config.clone();
        std::thread::Builder::new()
            .name("modules".into())
            .spawn(move || load_modules(&modules_dir, &config))
    };
    let mut modules = match modules {
        Ok(handle) => Some(handle),
        Err(e) => {
            log!("starting the module loader thread: {e}; loading the modules first");
            None
        }
    };
    if modules.is_none() {
        load_modules(&PathBuf::from("/lib/modules").join(&release), &config);
    }

    let bootif = cmdline::get(&params, "BOOTIF").and_then(|v| {
        let mac = cmdline::bootif_mac(v);
        if mac.is_none() {
            log!("ignoring BOOTIF={v:?}: not a MAC address");
        }
        mac
    });
    let dhcp_mode = cmdline::get(&params, "ironic-agent.dhcp")
        .and_then(|v| {
            let m = DhcpMode::parse(v);
            if m.is_none() {
                log!("ignoring ironic-agent.dhcp={v:?}: use bootif, all or none");
            }
            m
        })
        .unwrap_or(config.dhcp);
    let network = Network::default();
    // Without a BOOTIF to wait for, DHCP runs on every NIC: all drivers must have loaded
    // before the NICs are listed.
    let early_dhcp = dhcp_mode == DhcpMode::Bootif && bootif.is_some();
    if !early_dhcp {
        join_modules(&mut modules);
    }
    start_network(&network, dhcp_mode, bootif.as_deref());
    join_modules(&mut modules);
    if early_dhcp && dhcp_mode != DhcpMode::None {
        // NICs whose drivers loaded after DHCP started are brought up too, as before.
        for n in net::physical_nics(Path::new("/sys")) {
            if let Err(e) = net::link_up(&n.name) {
                log!("bringing {} ({}) up: {e}", n.name, n.mac);
            }
        }
    }
    mount_efivarfs();
    supervise(&config);
}

fn join_modules(modules: &mut Option<std::thread::JoinHandle<()>>) {
    if let Some(handle) = modules.take() {
        if handle.join().is_err() {
            log!("the module loader thread panicked; going on with what loaded");
        }
    }
}

/// The kernel starts PID 1 with 1024 open files (soft), which every child inherits: the agent
/// would run out of descriptors long before its API connection cap. As root the init may
/// raise the hard limit too; the agent then only checks.
fn raise_open_files_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok(l) => l,
        Err(e) => {
            log!("reading the open files limit: {e}");
            return;
        }
    };
    let (new_soft, new_hard) = ramdisk_contract::limits::open_files(soft, hard, true);
    match setrlimit(Resource::RLIMIT_NOFILE, new_soft, new_hard) {
        Ok(()) => log!("open files limit {new_soft} (hard {new_hard}), was {soft} ({hard})"),
        Err(e) => log!("raising the open files limit to {new_soft}: {e}; it stays {soft} ({hard})"),
    }
}

// --- filesystems ---------------------------------------------------------------------------

fn mount_fs(source: &str, target: &str, fstype: &str, flags: MsFlags, data: Option<&str>) {
    let _ = std::fs::create_dir_all(target);
    match mount(Some(source), target, Some(fstype), flags, data) {
        Ok(()) => {}
        // Already mounted (the kernel mounts devtmpfs itself with CONFIG_DEVTMPFS_MOUNT).
        Err(nix::errno::Errno::EBUSY) => {}
        Err(e) => log!("mounting {fstype} on {target}: {e}"),
    }
}

fn early_mounts() {
    let nodev = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mount_fs("proc", "/proc", "proc", nodev, None);
    mount_fs("sysfs", "/sys", "sysfs", nodev, None);
    mount_fs(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    );
    mount_fs(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("gid=5,mode=620,ptmxmode=000"),
    );
    mount_fs(
        "tmpfs",
        "/dev/shm",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    );
    mount_fs(
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    );
    let _ = std::fs::create_dir_all("/tmp");
    let _ = std::fs::create_dir_all("/var/log");
}

/// The kernel opens /dev/console for PID 1 when the initramfs has the node; if it had
/// none, stdio is closed: open it now that devtmpfs is mounted.
fn console_stdio() {
    // SAFETY: fcntl(F_GETFD) on a possibly closed descriptor only reports EBADF.
    let closed = (0..3).any(|fd| unsafe { nix::libc::fcntl(fd, nix::libc::F_GETFD) } < 0);
    if !closed {
        return;
    }
    if let Ok(console) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto the standard descriptors; `console` stays open until then.
            unsafe {
                nix::libc::dup2(console.as_raw_fd(), fd);
            }
        }
    }
}

fn mount_efivarfs() {
    if Path::new("/sys/firmware/efi").exists() {
        mount_fs(
            "efivarfs",
            "/sys/firmware/efi/efivars",
            "efivarfs",
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None,
        );
    }
}

fn load_config() -> InitConfig {
    match std::fs::read_to_string(config::PATH) {
        Ok(text) => {
            let (c, warnings) = InitConfig::parse(&text);
            for w in warnings {
                log!("{w}");
            }
            c
        }
        Err(e) => {
            log!("{}: {e}; using defaults", config::PATH);
            InitConfig::default()
        }
    }
}

fn set_hostname(name: &str) {
    if let Err(e) = nix::unistd::sethostname(name) {
        log!("setting the hostname to {name}: {e}");
    }
}

// --- kernel modules --------------------------------------------------------------------------

fn load_modules(dir: &Path, config: &InitConfig) {
    let read = |f: &str| std::fs::read_to_string(dir.join(f)).unwrap_or_default();
    let dep = read("modules.dep");
    if dep.is_empty() {
        log!(
            "no {}/modules.dep: this ramdisk has no modules for the running kernel (built for \
             another kernel version?); only built-in drivers are available",
            dir.display()
        );
        return;
    }
    let db = ModuleDb::parse(&dep, &read("modules.alias"), &read("modules.softdep"));
    let started = Instant::now();
    let mut loader = Loader {
        dir: dir.to_path_buf(),
        db,
        loaded: BTreeSet::new(),
        failed: BTreeSet::new(),
    };
    for m in &config.load_modules {
        if !loader.db.contains(m) {
            log!("load_module {m}: not in this ramdisk");
        }
        loader.load(m);
    }
    // Coldplug: load what the present devices' modaliases ask for, until loading stops
    // revealing new devices (a PCI driver creates virtio or SCSI devices, which need their
    // own drivers in turn).
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut quiet_rounds = 0;
    while quiet_rounds < 4 && started.elapsed() < Duration::from_secs(30) {
        let mut new = false;
        for alias in device_modaliases(Path::new("/sys")) {
            if !seen.insert(alias.clone()) {
                continue;
            }
            new = true;
            for name in loader.db.matching(&alias) {
                loader.load(&name);
            }
        }
        if new {
            quiet_rounds = 0;
        } else {
            quiet_rounds += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    log!(
        "loaded {} kernel modules in {:.2}s: {}",
        loader.loaded.len(),
        started.elapsed().as_secs_f64(),
        loader
            .loaded
            .iter()
            .map(|p| ironic_agent_init::modules::name_of_path(p))
            .collect::<Vec<_>>()
            .join(" ")
    );
}

struct Loader {
    dir: PathBuf,
    db: ModuleDb,
    loaded: BTreeSet<String>,
    failed: BTreeSet<String>,
}

impl Loader {
    fn load(&mut self, name: &str) {
        for path in self.db.load_order(name) {
            if self.loaded.contains(&path) || self.failed.contains(&path) {
                continue;
            }
            match finit_module(&self.dir.join(&path)) {
                Ok(()) => {
                    self.loaded.insert(path);
                }
                Err(e) => {
                    log!("loading {path}: {e}");
                    self.failed.insert(path);
                }
            }
        }
    }
}

fn finit_module(path: &Path) -> std::io::Result<()> {
    let f = File::open(path)?;
    match nix::kmod::finit_module(&f, c"", nix::kmod::ModuleInitFlags::empty()) {
        // Built in, or loaded already.
        Ok(()) | Err(nix::errno::Errno::EEXIST) => Ok(()),
        // No such device: the driver loaded, found nothing and backed out; not an error.
        Err(nix::errno::Errno::ENODEV) => Ok(()),
        Err(e) => Err(std::io::Error::from(e)),
    }
}

/// Every `modalias` under `/sys/devices` (through the bus device lists, which link there).
fn device_modaliases(sys: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let Ok(buses) = std::fs::read_dir(sys.join("bus")) else {
        return out;
    };
    for bus in buses.flatten() {
        let Ok(devices) = std::fs::read_dir(bus.path().join("devices")) else {
            continue;
        };
        for dev in devices.flatten() {
            if let Ok(alias) = std::fs::read_to_string(dev.path().join("modalias")) {
                let alias = alias.trim();
                if !alias.is_empty() {
                    out.push(alias.to_string());
                }
            }
        }
    }
    out.sort();
    out
}

// --- network ---------------------------------------------------------------------------------

/// Shared by the DHCP threads: which NIC owns the default route, DNS and hostname.
#[derive(Default, Clone)]
struct Network {
    owner: Arc<Mutex<Option<String>>>,
    leases: Arc<Mutex<Vec<(String, Ipv4Addr)>>>,
}

fn start_network(network: &Network, mode: DhcpMode, bootif: Option<&str>) {
    if let Err(e) = net::link_up("lo") {
        log!("bringing lo up: {e}");
    }
    if mode == DhcpMode::None {
        log!("DHCP disabled (dhcp = none); the network is the operator's");
        return;
    }
    let sys = Path::new("/sys");
    // NIC drivers may register their interfaces after the module load returned.
    let deadline = Instant::now() + Duration::from_secs(20);
    let nics = loop {
        let nics = net::physical_nics(sys);
        let found_bootif = bootif.is_none_or(|mac| nics.iter().any(|n| n.mac == mac));
        if (found_bootif && !nics.is_empty()) || Instant::now() > deadline {
            break nics;
        }
        std::thread::sleep(Duration::from_millis(25));
    };
    if nics.is_empty() {
        log!("no Ethernet NIC found: the agent will not reach the conductor (missing driver?)");
        return;
    }
    for n in &nics {
        if let Err(e) = net::link_up(&n.name) {
            log!("bringing {} ({}) up: {e}", n.name, n.mac);
        }
    }
    let selected: Vec<Nic> = match (mode, bootif) {
        (DhcpMode::Bootif, Some(mac)) => {
            let v: Vec<Nic> = nics.iter().filter(|n| n.mac == mac).cloned().collect();
            if v.is_empty() {
                log!(
                    "BOOTIF {mac} matches none of {}; running DHCP on all NICs",
                    nics.iter()
                        .map(|n| format!("{} ({})", n.name, n.mac))
                        .collect::<Vec<_>>()
                        .join(", ")
                );
                nics.clone()
            } else {
                v
            }
        }
        _ => nics.clone(),
    };
    // The BOOTIF NIC gets the default route when it has a lease; otherwise the first NIC
    // to get one.
    let preferred = bootif
        .and_then(|mac| selected.iter().find(|n| n.mac == mac))
        .map(|n| n.name.clone());
    log!(
        "DHCP on {}",
        selected
            .iter()
            .map(|n| format!("{} ({})", n.name, n.mac))
            .collect::<Vec<_>>()
            .join(", ")
    );
    for nic in selected {
        let network = network.clone();
        let preferred = preferred.clone();
        let _ = std::thread::Builder::new()
            .name(format!("dhcp-{}", nic.name))
            .spawn(move || dhcp_loop(&network, &nic, preferred.as_deref()));
    }
    let started = Instant::now();
    while started.elapsed() < NETWORK_WAIT {
        let leases = network.leases.lock().map(|l| l.clone()).unwrap_or_default();
        let have_preferred = match &preferred {
            Some(p) => leases.iter().any(|(n, _)| n == p),
            None => !leases.is_empty(),
        };
        if have_preferred {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    log!(
        "no DHCP lease after {}s; starting the agent anyway (DHCP keeps trying)",
        NETWORK_WAIT.as_secs()
    );
}

/// A DHCP transaction id: unpredictable enough to tell our exchanges apart, nothing more.
/// `GRND_INSECURE`, because /dev/urandom blocks until the kernel's CRNG is seeded: on a
/// machine without RDRAND or a virtio-rng (QEMU's default TCG CPU) that held the first
/// DISCOVER for ~1 s of every boot.
fn xid(mac: [u8; 6]) -> u32 {
    let mut b = [0u8; 4];
    // SAFETY: getrandom(2) writes at most b.len() bytes into b.
    let _ = unsafe {
        nix::libc::getrandom(
            b.as_mut_ptr().cast(),
            b.len(),
            nix::libc::GRND_INSECURE | nix::libc::GRND_NONBLOCK,
        )
    };
    let t = BOOT.get_or_init(Instant::now).elapsed().as_nanos() as u32;
    u32::from_ne_bytes(b) ^ t ^ u32::from_be_bytes([mac[2], mac[3], mac[4], mac[5]])
}

/// One NIC's DHCP for the life of the ramdisk: acquire, configure, renew at T1, rebind at
/// T2, start over when the lease is lost.
fn dhcp_loop(network: &Network, nic: &Nic, preferred: Option<&str>) {
    let Some(mac) = nic.mac_bytes() else { return };
    let sys = Path::new("/sys");
    // Links take a moment to come up after IFF_UP (autonegotiation). Carrier, not
    // `operstate`: the kernel reports the latter up to a second late (its link watch is
    // rate-limited), while the NIC transmits as soon as it has carrier.
    let t = Instant::now();
    while !net::has_carrier(sys, &nic.name) && t.elapsed() < Duration::from_secs(15) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut failures = 0u32;
    let mut next_log = 0u32;
    loop {
        let mut transport = match UdpTransport::bind(&nic.name) {
            Ok(t) => t,
            Err(e) => {
                log!("{}: DHCP socket: {e}", nic.name);
                std::thread::sleep(Duration::from_secs(5));
                continue;
            }
        };
        let asked = Instant::now();
        // Eight attempts: 0.25 s doubling to 16 s, about 48 s per exchange.
        let lease = match dhcp::acquire(&mut transport, mac, xid(mac), 8) {
            Ok(l) => {
                if asked.elapsed() >= dhcp::FIRST_RETRANSMIT {
                    log!(
                        "{}: DHCP answered after {:.2}s (retransmitted)",
                        nic.name,
                        asked.elapsed().as_secs_f64()
                    );
                }
                l
            }
            Err(e) => {
                failures += 1;
                // The first failure, then every tenth: a NIC on an unused network must not
                // flood the console.
                if failures == 1 || failures == next_log {
                    log!("{}: {e} (attempt {failures}); retrying", nic.name);
                    next_log = failures + 10;
                }
                std::thread::sleep(dhcp::backoff(failures, Duration::from_secs(30)));
                continue;
            }
        };
        failures = 0;
        apply_lease(network, nic, &lease, preferred);
        let mut lease = lease;
        let mut got = Instant::now();
        // Renew at T1 (unicast), rebind at T2 (broadcast), give up at the lease's end.
        loop {
            let elapsed = got.elapsed();
            let (wait, rebinding) = if elapsed < lease.t1 {
                (lease.t1 - elapsed, false)
            } else if elapsed < lease.t2 {
                (Duration::from_secs(30).min(lease.t2 - elapsed), false)
            } else if elapsed < lease.lease {
                (Duration::from_secs(10).min(lease.lease - elapsed), true)
            } else {
                log!(
                    "{}: lease on {} expired; starting over",
                    nic.name,
                    lease.address
                );
                let _ = net::set_address(&nic.name, Ipv4Addr::UNSPECIFIED, 0);
                if let Ok(mut l) = network.leases.lock() {
                    l.retain(|(n, _)| n != &nic.name);
                }
                break;
            };
            std::thread::sleep(wait);
            if got.elapsed() < lease.t1 {
                continue;
            }
            match dhcp::renew(&mut transport, mac, xid(mac), &lease, rebinding) {
                Ok(new) => {
                    if new.address != lease.address {
                        apply_lease(network, nic, &new, preferred);
                    }
                    lease = new;
                    got = Instant::now();
                }
                Err(DhcpError::Nak) => {
                    log!("{}: renewal refused (NAK); starting over", nic.name);
                    let _ = net::set_address(&nic.name, Ipv4Addr::UNSPECIFIED, 0);
                    break;
                }
                Err(_) => {}
            }
        }
    }
}

fn apply_lease(network: &Network, nic: &Nic, lease: &Lease, preferred: Option<&str>) {
    if let Some(mtu) = lease.mtu.filter(|m| *m >= 576) {
        if let Err(e) = net::set_mtu(&nic.name, mtu) {
            log!("{}: MTU {mtu}: {e}", nic.name);
        }
    }
    if let Err(e) = net::set_address(&nic.name, lease.address, lease.prefix) {
        log!(
            "{}: setting {}/{}: {e}",
            nic.name,
            lease.address,
            lease.prefix
        );
        return;
    }
    log!(
        "{}: DHCP lease {}/{} from {} for {}s{}",
        nic.name,
        lease.address,
        lease.prefix,
        lease.server,
        lease.lease.as_secs(),
        lease
            .hostname
            .as_deref()
            .map(|h| format!(", hostname {h}"))
            .unwrap_or_default()
    );
    if let Ok(mut l) = network.leases.lock() {
        l.retain(|(n, _)| n != &nic.name);
        l.push((nic.name.clone(), lease.address));
    }
    let owns = {
        let Ok(mut owner) = network.owner.lock() else {
            return;
        };
        let mine = match (owner.as_deref(), preferred) {
            (Some(o), _) => o == nic.name,
            (None, Some(p)) => p == nic.name,
            (None, None) => true,
        };
        if mine {
            *owner = Some(nic.name.clone());
        }
        mine
    };
    if !owns {
        return;
    }
    for r in &lease.routes {
        if let Err(e) = net::add_route(&nic.name, r) {
            log!(
                "{}: route {}/{} via {}: {e}",
                nic.name,
                r.destination,
                r.prefix,
                r.gateway
            );
        }
    }
    let mut resolv = String::from("# written by ironic-agent-init from the DHCP lease\n");
    if let Some(d) = &lease.domain {
        resolv.push_str(&format!("domain {d}\n"));
    }
    if !lease.search.is_empty() {
        resolv.push_str(&format!("search {}\n", lease.search.join(" ")));
    }
    for d in &lease.dns {
        resolv.push_str(&format!("nameserver {d}\n"));
    }
    if let Err(e) = std::fs::write("/etc/resolv.conf", resolv) {
        log!("writing /etc/resolv.conf: {e}");
    }
    if let Some(h) = &lease.hostname {
        set_hostname(h);
    }
}

// --- the agent ---------------------------------------------------------------------------------

fn spawn_agent(config: &InitConfig) -> Option<Child> {
    let mut c = Command::new(&config.agent);
    c.args(&config.agent_args)
        .env("PATH", PATH_ENV)
        .env("HOME", "/root")
        .stdin(Stdio::null())
        .process_group(0);
    match c.spawn() {
        Ok(child) => {
            log!("started {} (pid {})", config.agent, child.id());
            Some(child)
        }
        Err(e) => {
            log!("starting {}: {e}", config.agent);
            None
        }
    }
}

fn memory_line(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .unwrap_or("?")
            .to_string()
    };
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let available = meminfo
        .lines()
        .find(|l| l.starts_with("MemAvailable:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or("?");
    format!(
        "VmRSS {} kB, VmHWM {} kB, MemAvailable {available} kB",
        field("VmRSS:"),
        field("VmHWM:")
    )
}

/// Starts the agent and never returns: reaps every child (orphans are re-parented to
/// PID 1), restarts the agent when it exits (with a back-off), and hands the machine to
/// the rescue service once rescue is finalised.
fn supervise(config: &InitConfig) -> ! {
    let mut agent = spawn_agent(config);
    let mut agent_started = Instant::now();
    let mut restart_at: Option<Instant> = None;
    let mut backoff = Duration::from_secs(2);
    let mut next_report = Instant::now() + FIRST_REPORT;
    let mut rescue_started = false;
    loop {
        // Reap everything that exited.
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(status) => {
                    let pid = status.pid().map(|p| p.as_raw() as u32);
                    if pid.is_some() && pid == agent.as_ref().map(|c| c.id()) {
                        agent = None;
                        let ran = agent_started.elapsed();
                        log!(
                            "the agent exited after {:.0}s: {status:?}",
                            ran.as_secs_f64()
                        );
                        if ran > Duration::from_secs(120) {
                            backoff = Duration::from_secs(2);
                        }
                        restart_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                }
            }
        }
        let rescued = Path::new(RESCUED_MARKER).exists();
        if rescued && !rescue_started {
            rescue_started = true;
            start_rescue(config);
        }
        if agent.is_none() {
            if let Some(at) = restart_at {
                if rescued {
                    restart_at = None;
                    log!("rescue is finalised ({RESCUED_MARKER}): not restarting the agent");
                } else if Path::new(LOCKDOWN_MARKER).exists() {
                    restart_at = None;
                    log!("the agent was locked down ({LOCKDOWN_MARKER}): not restarting it");
                } else if Instant::now() >= at {
                    restart_at = None;
                    agent = spawn_agent(config);
                    agent_started = Instant::now();
                    if agent.is_none() {
                        restart_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(Duration::from_secs(30));
                    }
                    next_report = Instant::now() + FIRST_REPORT;
                }
            }
        }
        if let Some(a) = &agent {
            if Instant::now() >= next_report {
                log!(
                    "agent pid {} up {:.0}s: {}",
                    a.id(),
                    agent_started.elapsed().as_secs_f64(),
                    memory_line(a.id())
                );
                let since = agent_started.elapsed();
                next_report = Instant::now()
                    + if since < Duration::from_secs(60) {
                        Duration::from_secs(25)
                    } else {
                        Duration::from_secs(600)
                    };
            }
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// IPA's rescue: a `rescue` user whose password hash the agent wrote, then the operator's
/// rescue service (an SSH server or a console login they put into the ramdisk).
fn start_rescue(config: &InitConfig) {
    match std::fs::read_to_string(RESCUE_PASSWORD) {
        Ok(hash) => {
            let hash = hash.trim();
            let add = |file: &str, line: String| {
                let existing = std::fs::read_to_string(file).unwrap_or_default();
                let kept: String = existing
                    .lines()
                    .filter(|l| !l.starts_with("rescue:"))
                    .map(|l| format!("{l}\n"))
                    .collect();
                std::fs::write(file, format!("{kept}{line}\n"))
            };
            let _ = std::fs::create_dir_all("/home/rescue");
            let results = [
                add(
                    "/etc/passwd",
                    "rescue:x:1000:1000:rescue user:/home/rescue:/bin/sh".into(),
                ),
                add("/etc/group", "rescue:x:1000:".into()),
                add("/etc/shadow", format!("rescue:{hash}:1::::::")),
            ];
            let _ = nix::unistd::chown(
                "/home/rescue",
                Some(nix::unistd::Uid::from_raw(1000)),
                Some(nix::unistd::Gid::from_raw(1000)),
            );
            match results.iter().find_map(|r| r.as_ref().err()) {
                Some(e) => log!("rescue: writing the rescue user: {e}"),
                None => log!("rescue: user `rescue` configured with the password Ironic sent"),
            }
        }
        Err(e) => log!("rescue: {RESCUE_PASSWORD}: {e}"),
    }
    if config.rescue_command.is_empty() {
        log!(
            "rescue: this ramdisk has no rescue service (set rescue_command in the build \
             config and add e.g. an SSH server as extra files)"
        );
        return;
    }
    let mut c = Command::new(&config.rescue_command[0]);
    c.args(&config.rescue_command[1..])
        .env("PATH", PATH_ENV)
        .stdin(Stdio::null())
        .process_group(0);
    match c.spawn() {
        Ok(child) => log!(
            "rescue: started {} (pid {})",
            config.rescue_command.join(" "),
            child.id()
        ),
        Err(e) => log!("rescue: starting {}: {e}", config.rescue_command[0]),
    }
}
