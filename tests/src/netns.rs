//! A network namespace with a veth pair: the "machine" the agent runs on, cabled to the host.
//!
//! Layout for subnet number N (1..=254), unique per live test on this machine:
//!
//! ```text
//!   host (root namespace)                 namespace iae2e-<pid>-<k>
//!   iae2e<N>h 10.251.N.1/24  <== veth ==>  eth0 10.251.N.2/24, MAC chosen by the test; lo up
//! ```
//!
//! Ironic binds to 10.251.N.1, so it is reachable from the namespace only, never from outside.
//! Every name carries the owner's pid so a later run can remove what a killed run left.

use std::fs::OpenOptions;
use std::io::Write;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use anyhow::{bail, Context, Result};

use crate::cmd;

/// Name prefix of namespaces and interfaces the harness creates.
const PREFIX: &str = "iae2e";
/// Where subnet reservations live: one file per subnet number, holding the owner's pid.
const LOCK_DIR: &str = "/run/ironic-agent-e2e/subnets";

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct NetNs {
    name: String,
    subnet: u8,
    host_if: String,
    mac: String,
    lock: PathBuf,
}

impl NetNs {
    /// Creates the namespace and veth pair; `mac` (e.g. `52:54:00:12:34:56`) goes on the
    /// namespace end, which is named `eth0` like a real machine's first NIC.
    pub fn create(mac: &str) -> Result<NetNs> {
        reap_stale();
        let (subnet, lock) = reserve_subnet()?;
        let name = format!(
            "{PREFIX}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let host_if = format!("{PREFIX}{subnet}h");
        let ns = NetNs {
            name,
            subnet,
            host_if,
            mac: mac.to_ascii_lowercase(),
            lock,
        };
        // From here on Drop cleans up whatever part was created.
        ns.setup()
            .with_context(|| format!("setting up network namespace {}", ns.name))?;
        Ok(ns)
    }

    fn setup(&self) -> Result<()> {
        let peer = format!("{PREFIX}{}n", self.subnet);
        let ip = |args: &[&str]| cmd::run(Command::new("ip").args(args)).map(|_| ());
        ip(&["netns", "add", &self.name])?;
        ip(&[
            "link",
            "add",
            &self.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
        ])?;
        ip(&["link", "set", &peer, "netns", &self.name])?;
        let in_ns = |args: &[&str]| {
            cmd::run(Command::new("ip").args(["-n", &self.name]).args(args)).map(|_| ())
        };
        in_ns(&["link", "set", &peer, "name", "eth0"])?;
        in_ns(&["link", "set", "eth0", "address", &self.mac])?;
        in_ns(&[
            "addr",
            "add",
            &format!("{}/24", self.ns_addr()),
            "dev",
            "eth0",
        ])?;
        in_ns(&["link", "set", "lo", "up"])?;
        in_ns(&["link", "set", "eth0", "up"])?;
        ip(&[
            "addr",
            "add",
            &format!("{}/24", self.host_addr()),
            "dev",
            &self.host_if,
        ])?;
        ip(&["link", "set", &self.host_if, "up"])?;
        // The host address must be usable (not "tentative") before Ironic binds to it; IPv4
        // has no DAD, so it is as soon as the link is up.
        Ok(())
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The host end of the veth (the "switch port" the machine's eth0 is plugged into).
    pub fn host_if(&self) -> &str {
        &self.host_if
    }

    /// The namespace NIC's MAC, lower case.
    pub fn mac(&self) -> &str {
        &self.mac
    }

    /// The MAC in PXELINUX `BOOTIF` form: `01-52-54-00-12-34-56`.
    pub fn bootif(&self) -> String {
        format!("01-{}", self.mac.replace(':', "-"))
    }

    pub fn subnet(&self) -> u8 {
        self.subnet
    }

    /// 10.251.N.1, on the host end of the veth.
    pub fn host_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 251, self.subnet, 1)
    }

    /// 10.251.N.2, on `eth0` inside the namespace.
    pub fn ns_addr(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 251, self.subnet, 2)
    }

    /// `ip netns exec <ns> program`: add arguments, stdio and spawn as usual.
    pub fn command(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.name]).arg(program);
        c
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        // Deleting the namespace destroys its veth end, and with it the peer on the host.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
        let _ = Command::new("ip")
            .args(["link", "del", &self.host_if])
            .stderr(std::process::Stdio::null())
            .output();
        let _ = std::fs::remove_file(&self.lock);
    }
}

/// Reserves a subnet number no live test uses, by creating its lock file exclusively. A lock
/// whose owner pid is dead is taken over.
fn reserve_subnet() -> Result<(u8, PathBuf)> {
    std::fs::create_dir_all(LOCK_DIR).with_context(|| format!("creating {LOCK_DIR}"))?;
    let used = cmd::stdout("ip", &["-4", "-o", "addr", "show"]).unwrap_or_default();
    for n in 1..=254u8 {
        if used.contains(&format!(" 10.251.{n}.")) {
            continue;
        }
        let path = PathBuf::from(LOCK_DIR).join(n.to_string());
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                writeln!(f, "{}", std::process::id())
                    .with_context(|| format!("writing {}", path.display()))?;
                return Ok((n, path));
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                let owner = std::fs::read_to_string(&path).unwrap_or_default();
                let alive = owner.trim().parse::<u32>().is_ok_and(cmd::pid_alive);
                // An empty file is a reservation being written right now: leave it.
                if !alive && !owner.trim().is_empty() {
                    let _ = std::fs::remove_file(&path);
                }
            }
            Err(e) => return Err(e).with_context(|| format!("creating {}", path.display())),
        }
    }
    bail!("no free 10.251.N.0/24 subnet (all 254 reserved in {LOCK_DIR})")
}

/// Deletes namespaces `iae2e-<pid>-<k>` whose pid is dead: leftovers of a killed test run.
fn reap_stale() {
    reap_stale_namespaces(PREFIX);
}

/// Deletes namespaces `<prefix>-<pid>-<k>` whose pid is dead.
pub(crate) fn reap_stale_namespaces(prefix: &str) {
    let Ok(list) = cmd::stdout("ip", &["netns", "list"]) else {
        return;
    };
    for line in list.lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(rest) = name.strip_prefix(&format!("{prefix}-")) else {
            continue;
        };
        let pid = rest.split('-').next().and_then(|p| p.parse::<u32>().ok());
        if pid.is_some_and(|p| !cmd::pid_alive(p)) {
            let _ = Command::new("ip").args(["netns", "del", name]).output();
        }
    }
}
