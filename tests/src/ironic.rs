//! A real, unmodified OpenStack Ironic (39.0.0) for one test: the all-in-one `ironic` command
//! (API + conductor in one process tree) with sqlite, no auth, fake-hardware and the direct
//! deploy interface, bound to one address the test owns.
//!
//! TLS towards the agent is left at Ironic's default (`[agent] require_tls = true`): the
//! agent under test must do auto-TLS exactly as IPA does.

use std::fs::File;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;

use crate::cmd;
use crate::diagnostics::tail;
use crate::ironic_api::IronicClient;

/// Where `tests/setup.sh` installs the Ironic virtualenv; `IRONIC_VENV` overrides it.
pub const DEFAULT_VENV: &str = "/opt/ironic-agent-test/ironic-venv";

/// The virtualenv holding `ironic` and `ironic-dbsync`.
pub fn venv() -> PathBuf {
    std::env::var_os("IRONIC_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(DEFAULT_VENV))
}

/// Knobs a test may turn; everything else is fixed by [`IronicConfig::render`].
#[derive(Debug, Clone)]
pub struct IronicConfig {
    /// `[api] host_ip`: 127.0.0.1 or the host end of a test's veth.
    pub host: Ipv4Addr,
    pub port: u16,
    /// `[conductor] automated_clean`: `provide` goes through agent cleaning.
    pub automated_clean: bool,
    /// `[deploy] erase_devices_priority`; 0 keeps the shredding step out of automated cleaning.
    pub erase_devices_priority: u32,
    /// `[deploy] erase_devices_metadata_priority`; `None` keeps the agent's own (99).
    pub erase_devices_metadata_priority: Option<u32>,
    /// `[conductor] clean_callback_timeout` and `deploy_callback_timeout`: how long Ironic
    /// waits for a silent agent before failing the node.
    pub callback_timeout: Duration,
    /// `[agent] deploy_logs_collect`: `never` (default), `on_failure` or `always`; bundles
    /// go to `<dir>/deploy-logs` ([`IronicConfig::deploy_logs_dir`]).
    pub deploy_logs_collect: &'static str,
    /// `[deploy] fast_track`: a running, recently heartbeating ramdisk is used as it is
    /// (no reboot between inspection, cleaning and deployment).
    pub fast_track: bool,
}

impl IronicConfig {
    pub fn new(host: Ipv4Addr) -> IronicConfig {
        IronicConfig {
            host,
            port: 6385,
            automated_clean: true,
            erase_devices_priority: 0,
            erase_devices_metadata_priority: None,
            // With check_provision_state_interval = 5 a dead agent fails the node ~2.5 min
            // after the provision request.
            callback_timeout: Duration::from_secs(150),
            deploy_logs_collect: "never",
            fast_track: false,
        }
    }

    /// Where Ironic stores the agents' log bundles (`<node>_<instance>_<date>.tar.gz`).
    pub fn deploy_logs_dir(dir: &Path) -> std::path::PathBuf {
        dir.join("deploy-logs")
    }

    pub fn api_url(&self) -> String {
        format!("http://{}:{}", self.host, self.port)
    }

    /// The ironic.conf text, with all state under `dir`.
    pub fn render(&self, dir: &Path) -> String {
        let d = dir.display();
        let api = self.api_url();
        let metadata_priority = self
            .erase_devices_metadata_priority
            .map(|p| format!("erase_devices_metadata_priority = {p}\n"))
            .unwrap_or_default();
        let timeout = self.callback_timeout.as_secs();
        format!(
            r#"# Written by the ironic-agent end-to-end harness.
[DEFAULT]
# API and conductor in one process (the all-in-one `ironic` command only).
rpc_transport = none
auth_strategy = noauth
host = ironic-e2e
enabled_hardware_types = fake-hardware
enabled_boot_interfaces = fake
enabled_deploy_interfaces = direct,fake
enabled_power_interfaces = fake
enabled_management_interfaces = fake
enabled_network_interfaces = noop
default_network_interface = noop
# `agent` is in-band inspection by the ramdisk (nodes opt in with inspect_interface=agent).
enabled_inspect_interfaces = no-inspect,agent
default_inspect_interface = no-inspect
enabled_console_interfaces = no-console
enabled_bios_interfaces = no-bios
enabled_raid_interfaces = no-raid,agent
enabled_rescue_interfaces = no-rescue
enabled_vendor_interfaces = no-vendor
enabled_firmware_interfaces = no-firmware
enabled_storage_interfaces = noop
debug = true
log_file = {d}/ironic.log
tempdir = {d}/tmp

[database]
connection = sqlite:///{d}/ironic.sqlite

[api]
host_ip = {host}
port = {port}
# Handed to the agent at lookup; it heartbeats every 3-6 s.
ramdisk_heartbeat_timeout = 10

[service_catalog]
# The URL the conductor passes to the ramdisk; without it a deploy asks Keystone.
endpoint_override = {api}

[dhcp]
dhcp_provider = none

[conductor]
automated_clean = {automated_clean}
graceful_shutdown_timeout = 5
check_provision_state_interval = 5
clean_callback_timeout = {timeout}
deploy_callback_timeout = {timeout}
# Fake power never changes by itself, and the sync would clear last_error.
sync_power_state_interval = -1

[deploy]
http_url = http://{host}:8088
http_root = {d}/http
erase_devices_priority = {erase_priority}
fast_track = {fast_track}
{metadata_priority}
[agent]
image_download_source = http
# Where the conductor keeps each agent's auto-TLS certificate.
certificates_path = {d}/certificates
deploy_logs_collect = {logs_collect}
deploy_logs_storage_backend = local
deploy_logs_local_path = {d}/deploy-logs
post_deploy_get_power_state_retries = 1
post_deploy_get_power_state_retry_interval = 1

[json_rpc]
auth_strategy = noauth

[inspector]
# Ironic's defaults, plus the hooks that turn the inventory into node properties and
# decode LLDP.
hooks = $default_hooks,cpus,memory,root-device,boot-mode,pci-devices,parse-lldp
# The harness boots the agent itself (fake boot interface), as a separate PXE environment
# for discovery would: unmanaged inspection.
require_managed_boot = false
"#,
            host = self.host,
            port = self.port,
            automated_clean = self.automated_clean,
            erase_priority = self.erase_devices_priority,
            logs_collect = self.deploy_logs_collect,
            fast_track = self.fast_track,
        )
    }
}

/// Creates the database of `conf` and starts `ironic` (all-in-one) with it in a session of
/// its own, logging under `dir`. The caller waits for the API.
pub(crate) fn launch(venv: &Path, conf: &Path, dir: &Path) -> Result<Child> {
    let dbsync_log = File::create(dir.join("dbsync.log"))?;
    let status = Command::new(venv.join("bin/ironic-dbsync"))
        .arg("--config-file")
        .arg(conf)
        .arg("create_schema")
        .stdin(Stdio::null())
        .stdout(dbsync_log.try_clone()?)
        .stderr(dbsync_log)
        .status()
        .context("running ironic-dbsync")?;
    if !status.success() {
        bail!(
            "ironic-dbsync create_schema failed ({status}):\n{}",
            tail(&dir.join("dbsync.log"), 30)
        );
    }
    let ironic_bin = venv.join("bin/ironic");
    let out = File::create(dir.join("ironic.stdout.log"))?;
    let mut c = Command::new(&ironic_bin);
    c.arg("--config-file")
        .arg(conf)
        .stdin(Stdio::null())
        .stdout(out.try_clone()?)
        .stderr(out);
    cmd::own_session(&mut c)
        .spawn()
        .with_context(|| format!("starting {}", ironic_bin.display()))
}

/// A running Ironic; the whole process group is killed on Drop.
pub struct Ironic {
    child: Child,
    config: IronicConfig,
    dir: PathBuf,
}

impl Ironic {
    /// Writes the config under `dir`, creates the database and starts Ironic, returning once
    /// `GET /v1` answers.
    pub fn start(dir: &Path, config: IronicConfig) -> Result<Ironic> {
        let venv = venv();
        let ironic_bin = venv.join("bin/ironic");
        if !ironic_bin.is_file() {
            bail!(
                "Ironic not found at {} (IRONIC_VENV={}): run tests/setup.sh as root, or point \
                 IRONIC_VENV at a virtualenv with ironic==39.0.0",
                ironic_bin.display(),
                venv.display()
            );
        }
        for sub in ["tmp", "http", "certificates"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let conf = dir.join("ironic.conf");
        std::fs::write(&conf, config.render(dir))
            .with_context(|| format!("writing {}", conf.display()))?;

        let child = launch(&venv, &conf, dir)?;
        let ironic = Ironic {
            child,
            config,
            dir: dir.to_path_buf(),
        };
        ironic.wait_ready(Duration::from_secs(90))?;
        Ok(ironic)
    }

    /// Polls `GET /v1` until it answers, failing fast when Ironic exited or logged a fatal
    /// error (a broken driver config kills the conductor worker but leaves the parent alive,
    /// so the API then never answers).
    fn wait_ready(&self, timeout: Duration) -> Result<()> {
        let start = Instant::now();
        let url = format!("{}/v1", self.api_url());
        loop {
            if let Ok(r) = crate::http::request("GET", &url, &[], None, Duration::from_secs(2)) {
                if r.status == 200 {
                    return Ok(());
                }
            }
            if let Some(fatal) = self.fatal_log_line() {
                bail!(
                    "Ironic failed to start: {fatal}\n--- ironic.log (tail) ---\n{}",
                    tail(&self.log_path(), 40)
                );
            }
            if !self.alive() {
                bail!(
                    "Ironic exited during startup\n--- stdout/stderr ---\n{}\n--- ironic.log (tail) ---\n{}",
                    tail(&self.dir.join("ironic.stdout.log"), 30),
                    tail(&self.log_path(), 40)
                );
            }
            if start.elapsed() > timeout {
                bail!(
                    "Ironic did not answer GET {url} within {timeout:?}\n--- ironic.log (tail) ---\n{}",
                    tail(&self.log_path(), 40)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }

    fn fatal_log_line(&self) -> Option<String> {
        let log = std::fs::read_to_string(self.log_path()).ok()?;
        log.lines().find(|l| is_fatal(l)).map(str::to_string)
    }

    /// Whether the main `ironic` process is still running (`kill(pid, 0)`; the child is only
    /// reaped in Drop).
    fn alive(&self) -> bool {
        let pid = Pid::from_raw(self.child.id() as i32);
        nix::sys::signal::kill(pid, None).is_ok() && !is_zombie(self.child.id())
    }

    pub fn api_url(&self) -> String {
        self.config.api_url()
    }

    pub fn client(&self) -> IronicClient {
        IronicClient::new(&self.api_url())
    }

    pub fn config(&self) -> &IronicConfig {
        &self.config
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("ironic.log")
    }

    /// The whole Ironic log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("ironic.conf")
    }
}

/// A startup failure in an oslo.log line `DATE TIME PID LEVEL LOGGER [REQ] message`: any
/// CRITICAL, or an ERROR from the service launcher (e.g. "Failed to register hardware types").
fn is_fatal(line: &str) -> bool {
    let mut fields = line.split_whitespace().skip(3);
    match (fields.next(), fields.next()) {
        (Some("CRITICAL"), _) => true,
        (Some("ERROR"), Some(logger)) => {
            logger.starts_with("ironic.command")
                || logger.starts_with("cotyledon")
                || line.contains("Failed to register hardware types")
        }
        _ => false,
    }
}

fn is_zombie(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true)
}

impl Drop for Ironic {
    fn drop(&mut self) {
        // A throwaway instance (its sqlite DB goes with the temp dir): one second to stop on
        // SIGTERM, then SIGKILL; a graceful conductor shutdown takes seconds more.
        stop_group(&mut self.child, Duration::from_secs(1));
    }
}

/// SIGTERM to the process group led by `child`, SIGKILL to what is left after `grace`, then
/// reap `child`.
pub(crate) fn stop_group(child: &mut Child, grace: Duration) {
    let pgid = Pid::from_raw(child.id() as i32);
    let _ = killpg(pgid, Signal::SIGTERM);
    let start = Instant::now();
    while start.elapsed() < grace {
        let _ = child.try_wait();
        // ESRCH: no process is left in the group.
        if killpg(pgid, None).is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = killpg(pgid, Signal::SIGKILL);
    let _ = child.kill();
    let _ = child.wait();
}

/// `ironic --version`, for progress lines and reports.
pub fn version() -> Option<String> {
    let out = cmd::run(Command::new(venv().join("bin/ironic")).arg("--version")).ok()?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Some(if text.is_empty() {
        String::from_utf8_lossy(&out.stderr).trim().to_string()
    } else {
        text
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_fatal_lines_only() {
        let fatal = "2026-11-25 15:01:02.345 123 ERROR ironic.command.singleprocess [-] Failed to \
                     register hardware types";
        assert!(is_fatal(fatal));
        assert!(is_fatal(
            "2026-11-25 15:01:02.345 123 CRITICAL ironic [-] Unhandled error"
        ));
        let config_dump = "2026-11-25 16:38:26.245 10706 DEBUG cotyledon.oslo_config_glue [-] \
                           rate_limit_except_level        = CRITICAL log_opt_values";
        assert!(!is_fatal(config_dump));
        assert!(!is_fatal(
            "2026-11-25 15:01:02.345 123 ERROR ironic.api.hooks [-] bad request"
        ));
    }

    #[test]
    fn config_keeps_tls_default_and_binds_given_address() {
        let c = IronicConfig::new(Ipv4Addr::new(10, 251, 7, 1));
        let text = c.render(Path::new("/tmp/x"));
        assert!(text.contains("host_ip = 10.251.7.1"));
        assert!(text.contains("endpoint_override = http://10.251.7.1:6385"));
        assert!(text.contains("certificates_path = /tmp/x/certificates"));
        assert!(!text.contains("require_tls"));
    }
}
