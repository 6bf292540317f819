//! One end-to-end test's world: a temp dir, a network namespace, a real Ironic bound to the
//! host end of its veth, loop disks, the enrolled node and the agent. Torn down in reverse
//! order on Drop; when the test panics, a report of all logs and the node's state is printed
//! first.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};

use image_pipeline::test_server::TestServer;

use crate::agent::{Agent, AgentOptions};
use crate::diagnostics::{print_report, tail, tail_filtered, Section};
use crate::ironic::{Ironic, IronicConfig};
use crate::ironic_api::{IronicClient, Node, NodeSpec, Provision};
use crate::loopdev::{Fill, LoopDisk};
use crate::netns::NetNs;
use crate::nginx::Nginx;
use crate::testdir::TestDir;
use crate::{cmd, probe};

/// Tools the harness itself runs.
pub const REQUIRED_TOOLS: &[&str] = &[
    "ip",
    "losetup",
    "partx",
    "sgdisk",
    "mkfs.ext4",
    "wipefs",
    "blkid",
];

pub struct Harness {
    name: String,
    started: Instant,
    node: Option<String>,
    agent_starts: usize,
    // Dropped in this order: the agent first (it uses the disks, the namespace and the image
    // servers), the image servers (bound to the namespace's host address), the temp dir last.
    agent: Option<Agent>,
    nginx: Option<Nginx>,
    fault_server: Option<TestServer>,
    ironic: Ironic,
    netns: NetNs,
    disks: Vec<LoopDisk>,
    dir: TestDir,
}

impl Harness {
    /// Sets up the namespace (NIC with `mac`) and starts Ironic on its host address;
    /// `configure` may change Ironic's knobs first.
    pub fn start(
        name: &str,
        mac: &str,
        configure: impl FnOnce(&mut IronicConfig),
    ) -> Result<Harness> {
        cmd::check_prerequisites(REQUIRED_TOOLS)?;
        let started = Instant::now();
        let mut dir = TestDir::new(name)?;
        match Self::start_in(mac, started, &dir, configure) {
            Ok((netns, ironic)) => Ok(Harness {
                name: name.to_string(),
                started,
                node: None,
                agent_starts: 0,
                agent: None,
                nginx: None,
                fault_server: None,
                ironic,
                netns,
                disks: Vec::new(),
                dir,
            }),
            Err(e) => {
                eprintln!(
                    "harness setup failed; files kept in {}",
                    dir.path().display()
                );
                dir.keep();
                Err(e)
            }
        }
    }

    fn start_in(
        mac: &str,
        started: Instant,
        dir: &TestDir,
        configure: impl FnOnce(&mut IronicConfig),
    ) -> Result<(NetNs, Ironic)> {
        let netns = NetNs::create(mac)?;
        progress(
            started,
            &format!(
                "network namespace {} (eth0 {} {}), host end {}",
                netns.name(),
                netns.mac(),
                netns.ns_addr(),
                netns.host_addr()
            ),
        );
        let mut config = IronicConfig::new(netns.host_addr());
        configure(&mut config);
        progress(
            started,
            &format!(
                "starting Ironic on {} ({})",
                config.api_url(),
                crate::ironic::venv().display()
            ),
        );
        let t = Instant::now();
        let ironic_dir = dir.join("ironic");
        std::fs::create_dir_all(&ironic_dir)?;
        let ironic = Ironic::start(&ironic_dir, config)?;
        progress(
            started,
            &format!("Ironic is up ({:.1}s)", t.elapsed().as_secs_f64()),
        );
        Ok((netns, ironic))
    }

    /// Prints `[  12.3s] message` (seconds since the harness started).
    pub fn progress(&self, message: &str) {
        progress(self.started, message);
    }

    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    pub fn client(&self) -> IronicClient {
        self.ironic.client()
    }

    pub fn ironic(&self) -> &Ironic {
        &self.ironic
    }

    pub fn netns(&self) -> &NetNs {
        &self.netns
    }

    pub fn dir(&self) -> &TestDir {
        &self.dir
    }

    /// Adds a loop disk of `size` bytes; returns its index for [`Harness::disk`].
    pub fn add_disk(&mut self, size: u64, fill: Fill) -> Result<usize> {
        let name = format!("disk{}.img", self.disks.len());
        let disk = LoopDisk::create(self.dir.path(), &name, size, fill)?;
        self.progress(&format!(
            "loop disk {} ({} MiB, {fill:?})",
            disk.device().display(),
            size >> 20
        ));
        self.disks.push(disk);
        Ok(self.disks.len() - 1)
    }

    pub fn disk(&self, index: usize) -> &LoopDisk {
        &self.disks[index]
    }

    pub fn disk_mut(&mut self, index: usize) -> &mut LoopDisk {
        &mut self.disks[index]
    }

    /// Starts nginx on the namespace's host address (a free port), serving `<dir>/www`; see
    /// [`Nginx::root`] and [`Nginx::url`].
    pub fn start_nginx(&mut self) -> Result<&Nginx> {
        let addr = self.netns.host_addr();
        let dir = self.dir.join("image-server");
        let mut last = None;
        // The port is free when chosen, but another test may take it before nginx binds it.
        for _ in 0..5 {
            let port = free_port(addr)?;
            match Nginx::start(&dir, addr, port) {
                Ok(n) => {
                    self.progress(&format!(
                        "nginx serving {} on {addr}:{port}",
                        n.root().display()
                    ));
                    return Ok(self.nginx.insert(n));
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| anyhow::anyhow!("nginx did not start")))
    }

    pub fn nginx(&self) -> Result<&Nginx> {
        self.nginx.as_ref().context("nginx was not started")
    }

    /// Starts the fault-injecting image server of `image_pipeline` on the namespace's host
    /// address. The harness owns it so that it stops before the address goes away.
    pub fn start_fault_server(&mut self) -> Result<&TestServer> {
        let addr = std::net::SocketAddr::from((self.netns.host_addr(), 0));
        let server = TestServer::start_on(addr)
            .with_context(|| format!("starting the fault-injecting image server on {addr}"))?;
        self.progress(&format!(
            "fault-injecting image server on {}",
            server.addr()
        ));
        Ok(self.fault_server.insert(server))
    }

    pub fn fault_server(&self) -> Result<&TestServer> {
        self.fault_server
            .as_ref()
            .context("the fault-injecting server was not started")
    }

    /// Creates the node and a port with the namespace NIC's MAC.
    pub fn enroll_node(&mut self, spec: &NodeSpec) -> Result<Node> {
        let client = self.client();
        let node = client.create_node(spec)?;
        client.create_port(&node.uuid, self.netns.mac())?;
        self.progress(&format!(
            "enrolled node {} with port {}",
            node.uuid,
            self.netns.mac()
        ));
        self.node = Some(node.uuid.clone());
        Ok(node)
    }

    pub fn node_uuid(&self) -> Result<&str> {
        self.node.as_deref().context("no node enrolled yet")
    }

    pub fn node(&self) -> Result<Node> {
        self.client().get_node(self.node_uuid()?)
    }

    /// Requests a provision state change of the enrolled node.
    pub fn provision(&self, target: Provision) -> Result<()> {
        self.progress(&format!("provision request: {target:?}"));
        self.client()
            .set_provision_state(self.node_uuid()?, &target)
    }

    /// Waits for the node to reach `state`, printing transitions. Fails at once if the agent
    /// process died (non-zero exit) instead of waiting for Ironic's callback timeout.
    pub fn wait_for(&mut self, state: &str, timeout: Duration) -> Result<Node> {
        let t = Instant::now();
        let client = self.client();
        let uuid = self.node_uuid()?.to_string();
        let agent = &mut self.agent;
        let node = client.wait_for_provision_state_with(
            &uuid,
            state,
            timeout,
            self.started,
            &mut |_| match agent.as_mut().and_then(|a| a.exited()) {
                Some(status) if !status.success() => {
                    anyhow::bail!("the agent process exited ({status}) while the node waits for it")
                }
                _ => Ok(()),
            },
        )?;
        self.progress(&format!(
            "node is {state} after {:.1}s",
            t.elapsed().as_secs_f64()
        ));
        Ok(node)
    }

    /// Boots the "ramdisk": starts the agent in the namespace. Unless `opts` names devices,
    /// all of the harness's loop disks are allowed.
    pub fn start_agent(&mut self, mut opts: AgentOptions) -> Result<()> {
        self.stop_agent();
        if opts.allow_devices.is_empty() {
            opts.allow_devices = self
                .disks
                .iter()
                .map(|d| d.device().to_path_buf())
                .collect();
        }
        self.agent_starts += 1;
        let dir = self.dir.join(&format!("agent-{}", self.agent_starts));
        let agent = Agent::start(&dir, &self.netns, &self.ironic.api_url(), &opts)?;
        self.progress(&format!(
            "agent started in {} (logs in {})",
            self.netns.name(),
            dir.display()
        ));
        self.agent = Some(agent);
        Ok(())
    }

    /// How many times an agent was started ("the machine booted the ramdisk").
    pub fn agent_starts(&self) -> usize {
        self.agent_starts
    }

    /// Stops the agent, as a reboot or power-off of the machine would.
    pub fn stop_agent(&mut self) {
        if self.agent.take().is_some() {
            self.progress("agent stopped");
        }
    }

    pub fn agent(&mut self) -> Option<&mut Agent> {
        self.agent.as_mut()
    }

    /// Logs of every agent started so far, oldest first.
    pub fn agent_logs(&self) -> String {
        let mut s = String::new();
        for n in 1..=self.agent_starts {
            let dir = self.dir.join(&format!("agent-{n}"));
            for f in ["agent.log", "agent.stdout.log"] {
                s.push_str(&std::fs::read_to_string(dir.join(f)).unwrap_or_default());
            }
        }
        s
    }

    pub fn ironic_log(&self) -> String {
        self.ironic.log()
    }

    /// Prints everything useful about the current state: node, agent, Ironic, namespace,
    /// disks. Called automatically when a test panics; keeps the temp dir.
    pub fn report(&mut self, heading: &str) {
        self.dir.keep();
        let mut sections = Vec::new();
        sections.push(Section::new(
            "summary",
            format!(
                "test {}, {:.1}s in, files in {}\nIronic {} (config {})",
                self.name,
                self.started.elapsed().as_secs_f64(),
                self.dir.path().display(),
                self.ironic.api_url(),
                self.ironic.config_path().display()
            ),
        ));
        if let Some(uuid) = &self.node {
            let body = match self.client().get_node_json(uuid) {
                Ok(v) => {
                    let pick =
                        |k: &str| format!("{k}: {}", v.get(k).unwrap_or(&serde_json::Value::Null));
                    [
                        "provision_state",
                        "target_provision_state",
                        "last_error",
                        "power_state",
                        "clean_step",
                        "deploy_step",
                        "driver_internal_info",
                    ]
                    .iter()
                    .map(|k| pick(k))
                    .collect::<Vec<_>>()
                    .join("\n")
                }
                Err(e) => format!("could not read the node: {e:#}"),
            };
            sections.push(Section::new(format!("node {uuid}"), body));
        }
        let agent_status = match self.agent.as_mut().map(|a| a.exited()) {
            None => "not started (or stopped)".to_string(),
            Some(None) => "running".to_string(),
            Some(Some(status)) => format!("exited: {status}"),
        };
        for n in 1..=self.agent_starts {
            let dir = self.dir.join(&format!("agent-{n}"));
            let title = if n == self.agent_starts {
                format!("agent #{n} ({agent_status}) command")
            } else {
                format!("agent #{n} command")
            };
            sections.push(Section::file_tail(&title, &dir.join("command"), 5));
            sections.push(Section::file_tail(
                &format!("agent #{n} log"),
                &dir.join("agent.log"),
                80,
            ));
            sections.push(Section::file_tail(
                &format!("agent #{n} stdout/stderr"),
                &dir.join("agent.stdout.log"),
                40,
            ));
        }
        // Without the harness's own node polling and the periodic-task chatter.
        let ironic_log = self.ironic.log_path();
        sections.push(Section::new(
            format!("Ironic log ({})", ironic_log.display()),
            tail_filtered(
                &ironic_log,
                80,
                &["futurist.periodics", "- GET /v1/nodes/", "oslo_config_glue"],
            ),
        ));
        if let Some(n) = &self.nginx {
            sections.push(Section::new("nginx access log", n.access_log()));
            sections.push(Section::new("nginx error log", n.error_log()));
        }
        if let Some(server) = &self.fault_server {
            let lines: Vec<String> = server
                .requests()
                .iter()
                .map(|r| format!("{} {} range={}", r.method, r.path, r.range().unwrap_or("-")))
                .collect();
            sections.push(Section::new(
                "fault-injecting server requests (query strings left out)",
                lines.join("\n"),
            ));
        }
        sections.push(Section::new(
            format!("namespace {}", self.netns.name()),
            cmd::stdout("ip", &["-n", self.netns.name(), "-br", "addr"])
                .unwrap_or_else(|e| format!("{e:#}")),
        ));
        for d in &self.disks {
            let dev = d.device();
            let sigs = probe::wipefs_signatures(dev)
                .map(|s| format!("{s:?}"))
                .unwrap_or_else(|e| format!("{e:#}"));
            sections.push(Section::new(
                format!("disk {}", dev.display()),
                format!("wipefs: {sigs}"),
            ));
        }
        print_report(heading, &sections);
    }

    /// Paths of the main logs, for a final summary.
    pub fn log_paths(&self) -> Vec<PathBuf> {
        let mut v = vec![self.ironic.log_path()];
        for n in 1..=self.agent_starts {
            v.push(self.dir.join(&format!("agent-{n}")).join("agent.log"));
        }
        v
    }

    /// The tail of the Ironic log.
    pub fn ironic_log_tail(&self, lines: usize) -> String {
        tail(&self.ironic.log_path(), lines)
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let heading = format!("FAILED: {}", self.name);
            self.report(&heading);
        }
    }
}

/// A TCP port on `addr` that nobody listens on right now.
fn free_port(addr: std::net::Ipv4Addr) -> Result<u16> {
    let l = std::net::TcpListener::bind((addr, 0))
        .with_context(|| format!("finding a free port on {addr}"))?;
    Ok(l.local_addr()?.port())
}

fn progress(started: Instant, message: &str) {
    println!("[{:6.1}s] {message}", started.elapsed().as_secs_f64());
}
