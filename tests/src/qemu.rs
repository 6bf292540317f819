//! A QEMU machine that real Ironic provisions over IPMI and iPXE, everything inside one
//! network namespace this module creates.
//!
//! ```text
//!  namespace iaeqemu-<pid>-<k>: lo up with 127.0.0.1/8 and 10.0.2.2/32, no other interface,
//!  no route out. Inside it:
//!    Ironic 0.0.0.0:6385 (ipmi hardware type, ipxe boot, direct deploy, auto-TLS)
//!    nginx  0.0.0.0:8080 (Ironic's http_root: boot.ipxe, per-node iPXE configs, the deploy
//!                         kernel/ramdisk copies; and the instance image)
//!    ipmi_sim 127.0.0.1:9001/udp (the BMC) -> qemu-chassis -> QEMU (TCG, SeaBIOS, iPXE ROM)
//!  QEMU user networking: DHCP gives the VM 10.0.2.15 and bootfile=http://10.0.2.2:8080/boot.ipxe;
//!  the VM's 10.0.2.2 is the namespace's loopback, so the VM and the conductor use the same
//!  URLs; hostfwd 10.0.2.2:9999 -> VM:9999 carries the conductor's calls to the agent.
//! ```
//!
//! 10.0.2.2 is QEMU's host alias inside the VM only; outside this namespace it is an
//! ordinary private address that is not ours. Putting it on the namespace's loopback (this
//! machine's kernel has no dummy interface driver) with no other interface means nothing
//! the conductor fetches can leave the machine.
//!
//! The harness enters the namespace with the calling thread (`setns(CLONE_NEWNET)` affects
//! one thread), so every process it starts and every connection it makes is inside.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use nix::sys::signal::Signal;

use crate::cmd;
use crate::diagnostics::tail;

/// QEMU's address for the host, as the VM sees it; here the namespace's own.
pub const HOST: &str = "10.0.2.2";
pub const IRONIC_PORT: u16 = 6385;
pub const HTTP_PORT: u16 = 8080;
pub const IPMI_PORT: u16 = 9001;
/// The agent's port in the VM and the forwarded port in the namespace.
pub const AGENT_PORT: u16 = 9999;
pub const MAC: &str = "52:54:00:12:34:56";

const PREFIX: &str = "iaeqemu";
static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Tools this module runs.
pub const REQUIRED_TOOLS: &[&str] = &["ip", "qemu-system-x86_64", "ipmi_sim", "ipmitool"];

/// The namespace; deleted on Drop (after everything in it was stopped by its owners).
pub struct QemuNetNs {
    name: String,
}

impl QemuNetNs {
    pub fn create() -> Result<QemuNetNs> {
        reap_stale();
        let name = format!(
            "{PREFIX}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        let ns = QemuNetNs { name };
        let ip = |args: &[&str]| cmd::run(Command::new("ip").args(args)).map(|_| ());
        ip(&["netns", "add", &ns.name])?;
        ip(&["-n", &ns.name, "link", "set", "lo", "up"])?;
        ip(&[
            "-n",
            &ns.name,
            "addr",
            "add",
            &format!("{HOST}/32"),
            "dev",
            "lo",
        ])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Moves the calling thread into the namespace: processes it spawns and sockets it
    /// opens from now on are inside.
    pub fn enter(&self) -> Result<()> {
        let f = File::open(format!("/run/netns/{}", self.name))
            .with_context(|| format!("opening namespace {}", self.name))?;
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET)
            .with_context(|| format!("entering namespace {}", self.name))?;
        // Sanity: no interface but lo, so nothing can leave.
        let links = cmd::stdout("ip", &["-o", "link", "show"])?;
        let others: Vec<&str> = links.lines().filter(|l| !l.contains(": lo:")).collect();
        if !others.is_empty() {
            bail!(
                "namespace {} has unexpected interfaces: {others:?}",
                self.name
            );
        }
        Ok(())
    }
}

impl Drop for QemuNetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .output();
    }
}

/// Kills VMs of killed runs: QEMU runs in its own session (the BMC's chassis program exits
/// at once), so nothing else stops it when a test process dies. A VM is recognised by its
/// `-name` and belongs to the run whose pid is in its serial log's temp dir
/// (`/tmp/iae2e-<pid>-...`).
fn reap_stale_vms() {
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(p.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmdline
            .split(|&b| b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        if !args.iter().any(|a| a == "ironic-agent-e2e-node") {
            continue;
        }
        let owner = args
            .iter()
            .find_map(|a| a.split(crate::testdir::PREFIX).nth(1))
            .and_then(|rest| rest.split('-').next())
            .and_then(|n| n.parse::<u32>().ok());
        if owner.is_some_and(|o| !cmd::pid_alive(o)) {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
    }
}

/// Deletes namespaces `iaeqemu-<pid>-<k>` left by a killed run (dead pid), and its VMs.
fn reap_stale() {
    reap_stale_vms();
    crate::netns::reap_stale_namespaces(PREFIX);
}

/// The VM's hardware.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub memory_mib: u32,
    pub disk: PathBuf,
    pub serial_log: PathBuf,
    /// Disk faults: QEMU's `blkdebug` rules file layered over the disk, and `-drive`
    /// options (`throttling.bps-write=...`) to slow it down.
    pub faults: DiskFaults,
}

/// How the VM's disk misbehaves (read by QEMU at each power-on).
#[derive(Debug, Clone, Default)]
pub struct DiskFaults {
    pub blkdebug_rules: Option<PathBuf>,
    pub drive_options: String,
}

impl VmSpec {
    pub fn new(memory_mib: u32, disk: PathBuf, serial_log: PathBuf) -> Self {
        VmSpec {
            memory_mib,
            disk,
            serial_log,
            faults: DiskFaults::default(),
        }
    }

    fn drive(&self) -> String {
        let file = match &self.faults.blkdebug_rules {
            Some(rules) => format!("blkdebug:{}:{}", rules.display(), self.disk.display()),
            None => self.disk.display().to_string(),
        };
        format!(
            "file={file},if=virtio,format=raw{}",
            self.faults.drive_options
        )
    }
}

impl VmSpec {
    /// QEMU's program and arguments, without `-boot` (the chassis program adds the IPMI
    /// boot device as the boot order).
    pub fn args(&self) -> Vec<String> {
        vec![
            "qemu-system-x86_64".into(),
            // KVM is present but broken in this nested setup: always software emulation.
            "-accel".into(),
            "tcg".into(),
            "-m".into(),
            self.memory_mib.to_string(),
            "-smp".into(),
            "1".into(),
            "-display".into(),
            "none".into(),
            "-name".into(),
            "ironic-agent-e2e-node".into(),
            "-chardev".into(),
            format!("file,id=ser0,path={},append=on", self.serial_log.display()),
            "-serial".into(),
            "chardev:ser0".into(),
            "-drive".into(),
            self.drive(),
            "-netdev".into(),
            format!(
                "user,id=n0,bootfile=http://{HOST}:{HTTP_PORT}/boot.ipxe,\
                 hostfwd=tcp:{HOST}:{AGENT_PORT}-:{AGENT_PORT}"
            ),
            "-device".into(),
            format!("virtio-net-pci,netdev=n0,mac={MAC}"),
        ]
    }
}

fn write_args(dir: &Path, vm: &VmSpec) -> Result<()> {
    std::fs::write(dir.join("qemu.args"), vm.args().join("\n") + "\n")?;
    Ok(())
}

/// OpenIPMI's `ipmi_sim` as the VM's BMC, with `qemu-chassis` as its chassis control.
pub struct Bmc {
    dir: PathBuf,
    child: Child,
}

impl Bmc {
    /// Starts the BMC (in the current thread's namespace); the VM stays off until Ironic
    /// powers it on.
    pub fn start(dir: &Path, chassis_bin: &Path, vm: &VmSpec) -> Result<Bmc> {
        std::fs::create_dir_all(dir.join("state"))?;
        write_args(dir, vm)?;
        std::fs::write(dir.join("bootdev"), "default\n")?;
        let wrapper = dir.join("chassis-control");
        std::fs::write(
            &wrapper,
            format!(
                "#!/bin/sh\n# ipmi_sim runs this for every power and boot-device request.\n\
                 exec '{}' '{}' \"$@\"\n",
                chassis_bin.display(),
                dir.display()
            ),
        )?;
        std::fs::set_permissions(
            &wrapper,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )?;
        std::fs::write(
            dir.join("lan.conf"),
            format!(
                "# ipmi_sim: one BMC at 0x20, IPMI over LAN on 127.0.0.1:{IPMI_PORT} (RMCP and RMCP+);\n\
                 # power and boot device through the chassis control program.\n\
                 name \"ironic-agent-e2e\"\n\
                 set_working_mc 0x20\n\
                 \x20 startlan 1\n\
                 \x20   addr 127.0.0.1 {IPMI_PORT}\n\
                 \x20   priv_limit admin\n\
                 \x20   allowed_auths_callback none md2 md5 straight\n\
                 \x20   allowed_auths_user none md2 md5 straight\n\
                 \x20   allowed_auths_operator none md2 md5 straight\n\
                 \x20   allowed_auths_admin none md2 md5 straight\n\
                 \x20   guid a123456789abcdefa123456789abcdef\n\
                 \x20 endlan\n\
                 \x20 chassis_control \"{}\"\n\
                 \x20 user 1 true \"\" \"test\" user 10 none md2 md5 straight\n\
                 \x20 user 2 true \"admin\" \"password\" admin 10 none md2 md5 straight\n",
                wrapper.display()
            ),
        )?;
        std::fs::write(
            dir.join("bmc.emu"),
            "mc_setbmc 0x20\n\
             mc_add 0x20 0 no-device-sdrs 0x23 9 8 0x9f 0x1291 0xf02 persist_sdr\n\
             sel_enable 0x20 1000 0x0a\n\
             mc_enable 0x20\n",
        )?;
        let out = File::create(dir.join("ipmi_sim.log"))?;
        let mut c = Command::new("ipmi_sim");
        c.arg("-c")
            .arg(dir.join("lan.conf"))
            .arg("-f")
            .arg(dir.join("bmc.emu"))
            .arg("-s")
            .arg(dir.join("state"))
            .arg("-n")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out);
        cmd::own_session(&mut c);
        let child = c
            .spawn()
            .context("starting ipmi_sim (Debian package openipmi)")?;
        let bmc = Bmc {
            dir: dir.to_path_buf(),
            child,
        };
        let t = Instant::now();
        loop {
            let ok = Command::new("ipmitool")
                .args(bmc.ipmitool_args())
                .args(["chassis", "power", "status"])
                .output()
                .map(|o| o.status.success())
                .unwrap_or(false);
            if ok {
                return Ok(bmc);
            }
            if t.elapsed() > Duration::from_secs(15) {
                bail!(
                    "ipmi_sim did not answer on 127.0.0.1:{IPMI_PORT}:\n{}",
                    tail(&dir.join("ipmi_sim.log"), 20)
                );
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// `ipmitool` arguments for this BMC (`-C 3`: without it every call waits 10 s for a
    /// cipher suite list ipmi_sim never sends).
    pub fn ipmitool_args(&self) -> Vec<String> {
        [
            "-I",
            "lanplus",
            "-C",
            "3",
            "-H",
            "127.0.0.1",
            "-p",
            &IPMI_PORT.to_string(),
            "-U",
            "admin",
            "-P",
            "password",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    }

    /// Ironic's `driver_info` for this BMC.
    pub fn driver_info(&self) -> serde_json::Value {
        serde_json::json!({
            "ipmi_address": "127.0.0.1",
            "ipmi_port": IPMI_PORT,
            "ipmi_username": "admin",
            "ipmi_password": "password",
            "ipmi_cipher_suite": 3,
            "ipmi_protocol_version": "2.0",
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The hardware of the VM's next power-on (the chassis reads it then).
    pub fn set_vm(&self, vm: &VmSpec) -> Result<()> {
        write_args(&self.dir, vm)
    }

    /// The running QEMU's pid, if the VM is on.
    pub fn qemu_pid(&self) -> Option<i32> {
        let pid: i32 = std::fs::read_to_string(self.dir.join("qemu.pid"))
            .ok()?
            .trim()
            .parse()
            .ok()?;
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let state = stat
            .rsplit_once(')')?
            .1
            .split_whitespace()
            .next()?
            .to_string();
        (state != "Z").then_some(pid)
    }

    /// Unix times of the VM's power-ons, from the chassis log.
    pub fn power_ons(&self) -> Vec<f64> {
        self.chassis_log()
            .lines()
            .filter(|l| l.contains(" power on: "))
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    }

    pub fn chassis_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("chassis.log")).unwrap_or_default()
    }
}

impl Drop for Bmc {
    fn drop(&mut self) {
        // The server first: SIGKILL the VM, then the BMC.
        if let Some(pid) = self.qemu_pid() {
            let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), Signal::SIGKILL);
        }
        crate::ironic::stop_group(&mut self.child, Duration::from_secs(1));
    }
}

/// Follows the VM's serial console log.
pub struct SerialLog {
    path: PathBuf,
    offset: usize,
    partial: String,
}

impl SerialLog {
    pub fn new(path: &Path) -> SerialLog {
        SerialLog {
            path: path.to_path_buf(),
            offset: 0,
            partial: String::new(),
        }
    }

    /// Complete lines written since the last call, without ANSI escapes and carriage returns.
    pub fn new_lines(&mut self) -> Vec<String> {
        let Ok(bytes) = std::fs::read(&self.path) else {
            return vec![];
        };
        if bytes.len() <= self.offset {
            return vec![];
        }
        let text = String::from_utf8_lossy(&bytes[self.offset..]).into_owned();
        self.offset = bytes.len();
        self.partial.push_str(&text);
        let mut lines = Vec::new();
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            lines.push(strip_ansi(line.trim_end()));
        }
        lines
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            out.push(c);
        }
    }
    out
}

/// Ironic for the QEMU machine: the `ipmi` hardware type (ipmitool power and management),
/// Ironic's own `ipxe` boot interface, the direct deploy interface, and `[agent] require_tls`
/// at its default (true).
pub struct QemuIronic {
    child: Child,
    dir: PathBuf,
}

impl QemuIronic {
    pub fn api_url() -> String {
        format!("http://{HOST}:{IRONIC_PORT}")
    }

    pub fn render(dir: &Path, http_root: &Path) -> String {
        let d = dir.display();
        format!(
            r#"# Written by the ironic-agent QEMU end-to-end harness.
[DEFAULT]
rpc_transport = none
auth_strategy = noauth
host = ironic-qemu-e2e
enabled_hardware_types = ipmi
enabled_boot_interfaces = ipxe
enabled_deploy_interfaces = direct
enabled_power_interfaces = ipmitool
enabled_management_interfaces = ipmitool
enabled_network_interfaces = noop
default_network_interface = noop
enabled_inspect_interfaces = no-inspect
enabled_console_interfaces = no-console
enabled_bios_interfaces = no-bios
enabled_raid_interfaces = no-raid,agent
enabled_rescue_interfaces = no-rescue
enabled_vendor_interfaces = no-vendor,ipmitool
enabled_firmware_interfaces = no-firmware
enabled_storage_interfaces = noop
debug = true
log_file = {d}/ironic.log
tempdir = {d}/tmp

[database]
connection = sqlite:///{d}/ironic.sqlite

[api]
# All addresses of the namespace: the VM reaches 10.0.2.2 as the namespace's 127.0.0.1.
host_ip = 0.0.0.0
port = {IRONIC_PORT}
ramdisk_heartbeat_timeout = 10

[service_catalog]
# Becomes ipa-api-url on the ramdisk's command line: the VM's view.
endpoint_override = http://{HOST}:{IRONIC_PORT}

[dhcp]
# QEMU's user networking is the DHCP server; its bootfile is Ironic's boot.ipxe.
dhcp_provider = none

[conductor]
automated_clean = true
graceful_shutdown_timeout = 5
check_provision_state_interval = 5
# A TCG boot takes ~15 s; leave room on a loaded CI machine.
clean_callback_timeout = 300
deploy_callback_timeout = 300
sync_power_state_interval = -1
power_state_change_timeout = 60

[deploy]
http_url = http://{HOST}:{HTTP_PORT}
http_root = {http_root}
default_boot_mode = bios
erase_devices_priority = 0

[pxe]
tftp_root = {d}/tftp
tftp_master_path = {d}/tftp/master_images
images_path = {d}/images
instance_master_path = {d}/master_images
kernel_append_params = console=ttyS0
ipxe_timeout = 60

[ipmi]
command_retry_timeout = 30
# 1 is the lowest: 0 makes Ironic's ipmitool driver divide by zero.
min_command_interval = 1

[agent]
image_download_source = http
certificates_path = {d}/certificates
deploy_logs_collect = never
post_deploy_get_power_state_retries = 15
post_deploy_get_power_state_retry_interval = 1

[json_rpc]
auth_strategy = noauth
"#,
            http_root = http_root.display(),
        )
    }

    /// Starts Ironic in the current thread's namespace; returns once `GET /v1` answers.
    pub fn start(dir: &Path, http_root: &Path) -> Result<QemuIronic> {
        Self::start_with(dir, http_root, "")
    }

    /// [`Self::start`] with `extra` appended to ironic.conf (oslo.config merges a section
    /// given twice, later values winning).
    pub fn start_with(dir: &Path, http_root: &Path, extra: &str) -> Result<QemuIronic> {
        let venv = crate::ironic::venv();
        let ironic_bin = venv.join("bin/ironic");
        if !ironic_bin.is_file() {
            bail!(
                "Ironic not found at {} (IRONIC_VENV): run tests/setup.sh as root",
                ironic_bin.display()
            );
        }
        for sub in ["tmp", "certificates", "tftp", "images", "master_images"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let conf = dir.join("ironic.conf");
        std::fs::write(&conf, Self::render(dir, http_root) + extra)?;
        let mut child = crate::ironic::launch(&venv, &conf, dir)?;
        let url = format!("{}/v1", Self::api_url());
        let t = Instant::now();
        loop {
            if let Ok(r) = crate::http::request("GET", &url, &[], None, Duration::from_secs(2)) {
                if r.status == 200 {
                    break;
                }
            }
            if let Ok(Some(status)) = child.try_wait() {
                bail!(
                    "Ironic exited during startup ({status}):\n{}\n{}",
                    tail(&dir.join("ironic.stdout.log"), 20),
                    tail(&dir.join("ironic.log"), 30)
                );
            }
            if t.elapsed() > Duration::from_secs(90) {
                crate::ironic::stop_group(&mut child, Duration::from_secs(1));
                bail!(
                    "Ironic did not answer {url} within 90 s:\n{}",
                    tail(&dir.join("ironic.log"), 30)
                );
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        Ok(QemuIronic {
            child,
            dir: dir.to_path_buf(),
        })
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.join("ironic.log")
    }

    pub fn client(&self) -> crate::ironic_api::IronicClient {
        crate::ironic_api::IronicClient::new(&Self::api_url())
    }
}

impl Drop for QemuIronic {
    fn drop(&mut self) {
        crate::ironic::stop_group(&mut self.child, Duration::from_secs(1));
    }
}

/// Seconds since the Unix epoch of a UTC ISO 8601 time as Ironic writes it
/// (`2026-11-25T19:01:02.345678`, optionally with `+00:00`).
pub fn parse_utc(s: &str) -> Option<f64> {
    let s = s.trim().trim_end_matches("+00:00").trim_end_matches('Z');
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|x| x.parse::<i64>());
    let (y, m, day) = (d.next()?.ok()?, d.next()?.ok()?, d.next()?.ok()?);
    let mut t = time.split(':');
    let (hh, mm) = (
        t.next()?.parse::<i64>().ok()?,
        t.next()?.parse::<i64>().ok()?,
    );
    let ss: f64 = t.next()?.parse().ok()?;
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146097 + doe - 719468;
    Some((days * 86400 + hh * 3600 + mm * 60) as f64 + ss)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ironic_times() {
        assert_eq!(parse_utc("1970-01-01T00:00:00"), Some(0.0));
        assert_eq!(parse_utc("2026-11-25T19:01:02.5"), Some(1795633262.5));
        assert_eq!(parse_utc("2000-03-01T00:00:00+00:00"), Some(951868800.0));
        assert_eq!(parse_utc("garbage"), None);
    }

    #[test]
    fn strips_console_escapes() {
        assert_eq!(strip_ansi("\x1b[2J\x1b[01;01HBdsDxe: x\r"), "BdsDxe: x");
    }

    #[test]
    fn vm_args_never_use_kvm() {
        let mut v = VmSpec::new(512, "/tmp/d.img".into(), "/tmp/s.log".into());
        let a = v.args();
        assert!(a.contains(&"file=/tmp/d.img,if=virtio,format=raw".to_string()));
        v.faults.blkdebug_rules = Some("/tmp/r.conf".into());
        v.faults.drive_options = ",throttling.bps-write=4096".into();
        assert!(v.args().contains(
            &"file=blkdebug:/tmp/r.conf:/tmp/d.img,if=virtio,format=raw,throttling.bps-write=4096"
                .to_string()
        ));
        let i = a.iter().position(|x| x == "-accel").unwrap();
        assert_eq!(a[i + 1], "tcg");
        assert!(!a.iter().any(|x| x.contains("kvm")));
        assert!(!a.iter().any(|x| x == "-boot"));
    }
}
