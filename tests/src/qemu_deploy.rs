//! The seed's job end to end on a QEMU machine: build the ramdisk, start Ironic, enroll the
//! VM with its IPMI BMC, let Ironic clean it (automated cleaning, metadata erase) and deploy
//! a raw whole-disk image to `active`, all through iPXE network boots of the ramdisk; then
//! check the VM's disk file on the host. Shared by the test, the demo and the bench.

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, ensure, Context, Result};
use serde_json::{json, Value};

use crate::diagnostics::{print_report, tail, tail_filtered, Section};
use crate::gpt::{self, Table};
use crate::images::{self, WholeDiskImage};
use crate::ironic_api::{IronicClient, Node};
use crate::nginx::Nginx;
use crate::qemu::{self, Bmc, DiskFaults, QemuIronic, QemuNetNs, SerialLog, VmSpec};
use crate::ramdisk::{self, Ramdisk};
use crate::testdir::TestDir;

const SECTOR: u64 = 512;
/// The VM's disk: the agent picks the smallest disk of at least 4 GiB without hints.
pub const DISK_SIZE: u64 = 5 << 30;
/// Hard bound for each provisioning phase (each includes one TCG network boot).
pub const PHASE_TIMEOUT: Duration = Duration::from_secs(420);

#[derive(Debug, Clone)]
pub struct Options {
    /// Temp dir name part.
    pub name: String,
    /// Run automated cleaning (a first boot) before the deploy.
    pub clean: bool,
    /// `-m` of the VM.
    pub memory_mib: u32,
    /// Print the ramdisk's console lines (init and agent) as progress.
    pub echo_console: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            name: "qemu-deploy".into(),
            clean: true,
            memory_mib: 512,
            echo_console: false,
        }
    }
}

/// One boot of the ramdisk, measured.
#[derive(Debug, Clone, Default)]
pub struct Boot {
    pub phase: String,
    /// IPMI power-on (QEMU start) to the first heartbeat Ironic accepted.
    pub power_on_to_heartbeat: Option<f64>,
    /// The agent's memory, from the init's report on the console (kB).
    pub agent_rss_kb: Option<u64>,
    pub agent_hwm_kb: Option<u64>,
    /// Seconds from QEMU start to the init's first line, and to the DHCP lease.
    pub power_on_to_init: Option<f64>,
}

#[derive(Debug, Clone, Default)]
pub struct Outcome {
    pub kernel_bytes: u64,
    pub initramfs_bytes: u64,
    pub agent_bytes: u64,
    pub modules: usize,
    pub build_seconds: f64,
    pub boots: Vec<Boot>,
    pub provide_seconds: Option<f64>,
    pub deploy_seconds: f64,
    pub total_seconds: f64,
}

/// Everything the run started, stopped in this order on Drop (VM and BMC, Ironic, nginx,
/// namespace, temp dir).
struct World {
    started: Instant,
    bmc: Option<Bmc>,
    ironic: Option<QemuIronic>,
    nginx: Option<Nginx>,
    ns: Option<QemuNetNs>,
    dir: TestDir,
    serial: PathBuf,
    echo: bool,
    console: SerialLog,
    /// Console lines seen so far (for measurements).
    lines: Vec<(f64, String)>,
}

impl World {
    /// Nothing started yet; the VM's console goes to `serial.log` in `dir`.
    fn new(dir: TestDir, echo: bool) -> World {
        let serial = dir.join("serial.log");
        World {
            started: Instant::now(),
            bmc: None,
            ironic: None,
            nginx: None,
            ns: None,
            dir,
            console: SerialLog::new(&serial),
            serial,
            echo,
            lines: Vec::new(),
        }
    }

    fn progress(&self, msg: &str) {
        println!("[{:6.1}s] {msg}", self.started.elapsed().as_secs_f64());
    }

    /// Reads new console lines; echoes the init's and the agent's important ones; fails
    /// on a kernel panic.
    fn poll_console(&mut self) -> Result<()> {
        let now = unix_now();
        for line in self.console.new_lines() {
            let interesting = line.starts_with("ironic-agent-init[")
                || line.contains("iPXE initialising")
                || line.contains(" ERROR ")
                || line.contains("heartbeat") && (line.contains("ERROR") || line.contains("WARN"));
            if line.contains("Kernel panic") {
                bail!("the VM's kernel panicked: {line}");
            }
            if self.echo || (interesting && line.starts_with("ironic-agent-init[")) {
                println!(
                    "[{:6.1}s]   vm| {line}",
                    self.started.elapsed().as_secs_f64()
                );
            }
            self.lines.push((now, line));
        }
        Ok(())
    }

    fn client(&self) -> Result<IronicClient> {
        Ok(self.ironic.as_ref().context("Ironic not started")?.client())
    }

    fn report(&mut self, heading: &str, node: Option<&str>) {
        self.dir.keep();
        let mut s = vec![Section::new(
            "summary",
            format!(
                "{:.1}s in, files in {}",
                self.started.elapsed().as_secs_f64(),
                self.dir.path().display()
            ),
        )];
        if let (Some(uuid), Ok(client)) = (node, self.client()) {
            let body = match client.get_node_json(uuid) {
                Ok(v) => [
                    "provision_state",
                    "target_provision_state",
                    "power_state",
                    "last_error",
                    "driver_internal_info",
                ]
                .iter()
                .map(|k| format!("{k}: {}", v.get(*k).unwrap_or(&Value::Null)))
                .collect::<Vec<_>>()
                .join("\n"),
                Err(e) => format!("{e:#}"),
            };
            s.push(Section::new(format!("node {uuid}"), body));
        }
        s.push(Section::file_tail("VM serial console", &self.serial, 120));
        if let Some(b) = &self.bmc {
            s.push(Section::new("chassis (IPMI power) log", b.chassis_log()));
            s.push(Section::file_tail(
                "QEMU stderr",
                &b.dir().join("qemu.out"),
                20,
            ));
            s.push(Section::file_tail(
                "ipmi_sim",
                &b.dir().join("ipmi_sim.log"),
                20,
            ));
        }
        if let Some(i) = &self.ironic {
            s.push(Section::new(
                format!("Ironic log ({})", i.log_path().display()),
                tail_filtered(
                    &i.log_path(),
                    100,
                    &["futurist.periodics", "- GET /v1/nodes/", "oslo_config_glue"],
                ),
            ));
        }
        if let Some(n) = &self.nginx {
            s.push(Section::new("nginx access log", n.access_log()));
        }
        print_report(heading, &s);
    }
}

impl Drop for World {
    fn drop(&mut self) {
        self.bmc.take();
        self.ironic.take();
        self.nginx.take();
        self.ns.take();
    }
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Where the chassis program is: next to the running binary (a demo or bench binary), or
/// one level up (an integration test runs from `target/<profile>/deps/`).
pub fn chassis_binary() -> Result<PathBuf> {
    if let Some(p) = option_env!("CARGO_BIN_EXE_qemu-chassis") {
        if Path::new(p).is_file() {
            return Ok(PathBuf::from(p));
        }
    }
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .context("no parent of the current executable")?;
    for candidate in [dir.join("qemu-chassis"), dir.join("../qemu-chassis")] {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "qemu-chassis not found next to {} (build it with `cargo build -p e2e --bins`)",
        exe.display()
    )
}

/// Runs the whole job; on failure prints every log and keeps the temp dir.
pub fn run(opts: &Options) -> Result<Outcome> {
    scenario(&opts.name, opts.echo_console, |w, chassis, node| {
        run_in(w, opts, chassis, node)
    })
}

/// Runs one scenario in a fresh world; on failure prints the report (console, node, logs)
/// and keeps the temp dir.
fn scenario<T>(
    name: &str,
    echo_console: bool,
    body: impl FnOnce(&mut World, &Path, &mut Option<String>) -> Result<T>,
) -> Result<T> {
    crate::cmd::check_prerequisites(qemu::REQUIRED_TOOLS)?;
    let chassis = chassis_binary()?;
    let mut w = World::new(TestDir::new(name)?, echo_console);
    let mut node: Option<String> = None;
    match body(&mut w, &chassis, &mut node) {
        Ok(o) => Ok(o),
        Err(e) => {
            let _ = w.poll_console();
            w.report(&format!("FAILED: {name} ({e:#})"), node.as_deref());
            Err(e)
        }
    }
}

/// What a scenario changes in the common set-up.
#[derive(Default)]
struct Setup {
    faults: DiskFaults,
    /// Appended to the ramdisk's kernel command line.
    kernel_extra: String,
    /// Appended to ironic.conf.
    ironic_extra: String,
}

/// The enrolled, manageable node and where things are.
struct Started {
    uuid: String,
    www: PathBuf,
    disk: PathBuf,
    vm: VmSpec,
}

fn run_in(
    w: &mut World,
    opts: &Options,
    chassis: &Path,
    node_out: &mut Option<String>,
) -> Result<Outcome> {
    let mut out = Outcome::default();
    let Started {
        uuid, www, disk, ..
    } = start_world(w, opts, chassis, node_out, &mut out, &Setup::default())?;
    let client = w.client()?;

    // 5. Cleaning: the first network boot.
    if opts.clean {
        let t = Instant::now();
        let ons = power_on_count(w);
        provision(&client, &uuid, json!({"target": "provide"}))?;
        w.progress("provide: automated cleaning through the ramdisk");
        let hb = wait_heartbeat(w, &client, &uuid, "cleaning", ons)?;
        out.boots.push(hb);
        wait(w, &client, &uuid, "available", PHASE_TIMEOUT)?;
        out.provide_seconds = Some(t.elapsed().as_secs_f64());
        w.progress(&format!(
            "node available after cleaning ({:.1}s): erase_devices_metadata ran on the VM's disk",
            t.elapsed().as_secs_f64()
        ));
        wait_power_off(w)?;
    } else {
        client.patch_node(&uuid, &[("/automated_clean", json!(false))])?;
        provision(&client, &uuid, json!({"target": "provide"}))?;
        wait(w, &client, &uuid, "available", Duration::from_secs(60))?;
    }

    // 6. Deploy: the second network boot.
    let (image, url, patches) = serve_image(w, &www)?;
    client.patch_node(&uuid, &patches)?;
    w.progress(&format!(
        "deploy: {} MiB raw GPT image (ESP + root) from {url}",
        image.len >> 20
    ));
    let t = Instant::now();
    let ons = power_on_count(w);
    provision(&client, &uuid, json!({"target": "active"}))?;
    let hb = wait_heartbeat(w, &client, &uuid, "deploying", ons)?;
    out.boots.push(hb);
    let node = wait(w, &client, &uuid, "active", PHASE_TIMEOUT)?;
    out.deploy_seconds = t.elapsed().as_secs_f64();
    w.progress(&format!(
        "node {} is active after {:.1}s (power {})",
        uuid,
        out.deploy_seconds,
        node.power_state.as_deref().unwrap_or("?")
    ));
    verify_deploy_log(w)?;

    // 7. Power the instance off over IPMI and check its disk.
    provision_power_off(&client, &uuid)?;
    wait_power_off(w)?;
    verify_disk(&disk, &image.path)?;
    w.progress(&format!(
        "VM disk checked: the image's {} bytes are on it (GPT moved to the disk's end by the agent), zeros after",
        image.len
    ));
    out.total_seconds = w.started.elapsed().as_secs_f64();
    Ok(out)
}

/// Steps 1-4 of every scenario: the ramdisk, the namespace, nginx, Ironic, the BMC, and the
/// node enrolled and manageable.
fn start_world(
    w: &mut World,
    opts: &Options,
    chassis: &Path,
    node_out: &mut Option<String>,
    out: &mut Outcome,
    setup: &Setup,
) -> Result<Started> {
    // 1. The ramdisk.
    w.progress("building the ramdisk (release musl agent + init, ironic-agent-build)");
    let www = w.dir.join("image-server/www");
    std::fs::create_dir_all(www.join("ramdisk"))?;
    std::fs::create_dir_all(www.join("images"))?;
    let rd: Ramdisk = ramdisk::build(&www.join("ramdisk"), &[])?;
    out.kernel_bytes = std::fs::metadata(&rd.kernel)?.len();
    out.initramfs_bytes = rd.initramfs_size();
    out.agent_bytes = std::fs::metadata(&ramdisk::binaries()?.agent)?.len();
    out.modules = rd.manifest["modules"].as_array().map_or(0, |a| a.len());
    out.build_seconds = rd.build_seconds;
    w.progress(&format!(
        "ramdisk built in {:.1}s: kernel {} ({:.1} MiB), initramfs {:.1} MiB with {} modules, agent {:.1} MiB",
        rd.build_seconds,
        rd.manifest["kernel"]["version"].as_str().unwrap_or("?"),
        mib(out.kernel_bytes),
        mib(out.initramfs_bytes),
        out.modules,
        mib(out.agent_bytes)
    ));

    // 2. The namespace, entered by this thread: everything below runs inside it.
    let ns = QemuNetNs::create()?;
    ns.enter()?;
    w.progress(&format!(
        "network namespace {}: lo with 127.0.0.1 and {}, nothing else (no route out)",
        ns.name(),
        qemu::HOST
    ));
    w.ns = Some(ns);

    // 3. nginx (Ironic's http_root and the image), Ironic, the BMC.
    let nginx = Nginx::start(
        &w.dir.join("image-server"),
        std::net::Ipv4Addr::UNSPECIFIED,
        qemu::HTTP_PORT,
    )?;
    w.nginx = Some(nginx);
    w.progress(&format!(
        "nginx on {}:{} serving {}",
        qemu::HOST,
        qemu::HTTP_PORT,
        www.display()
    ));
    let t = Instant::now();
    let ironic_dir = w.dir.join("ironic");
    std::fs::create_dir_all(&ironic_dir)?;
    w.ironic = Some(QemuIronic::start_with(
        &ironic_dir,
        &www,
        &setup.ironic_extra,
    )?);
    w.progress(&format!(
        "Ironic ({}) up on {} in {:.1}s: ipmi hardware type, ipxe boot, direct deploy, require_tls on",
        crate::ironic::version().unwrap_or_else(|| "?".into()),
        QemuIronic::api_url(),
        t.elapsed().as_secs_f64()
    ));
    let disk = w.dir.join("vm-disk.img");
    std::fs::File::create(&disk)?.set_len(DISK_SIZE)?;
    let mut vm = VmSpec::new(opts.memory_mib, disk.clone(), w.serial.clone());
    vm.faults = setup.faults.clone();
    let bmc = Bmc::start(&w.dir.join("bmc"), chassis, &vm)?;
    w.progress(&format!(
        "BMC: ipmi_sim on 127.0.0.1:{} (power and boot device drive QEMU: TCG, -m {}, 5 GiB virtio disk, virtio NIC {})",
        qemu::IPMI_PORT,
        opts.memory_mib,
        qemu::MAC
    ));
    let mut driver_info = bmc.driver_info();
    w.bmc = Some(bmc);

    // 4. Enroll.
    let client = w.client()?;
    let rd_url = |f: &Path| {
        format!(
            "http://{}:{}/ramdisk/{}",
            qemu::HOST,
            qemu::HTTP_PORT,
            f.file_name().unwrap_or_default().to_string_lossy()
        )
    };
    driver_info["deploy_kernel"] = json!(rd_url(&rd.kernel));
    driver_info["deploy_ramdisk"] = json!(rd_url(&rd.initramfs));
    // The conductor reaches the agent through QEMU's port forward on 10.0.2.2.
    driver_info["kernel_append_params"] = json!(format!(
        "console=ttyS0 ipa-advertise-host={} ipa-advertise-port={} ipa-debug=1{}",
        qemu::HOST,
        qemu::AGENT_PORT,
        setup.kernel_extra
    ));
    let (status, created) = client.call(
        "POST",
        "/v1/nodes",
        Some(&json!({
            "name": "qemu-node-0",
            "driver": "ipmi",
            "boot_interface": "ipxe",
            "deploy_interface": "direct",
            "power_interface": "ipmitool",
            "management_interface": "ipmitool",
            "network_interface": "noop",
            "driver_info": driver_info,
            "properties": {"memory_mb": opts.memory_mib, "cpus": 1, "local_gb": 4,
                           "cpu_arch": "x86_64", "capabilities": "boot_mode:bios"},
        })),
    )?;
    ensure!(status == 201, "creating the node: {status} {created}");
    let uuid = created["uuid"]
        .as_str()
        .context("no node uuid")?
        .to_string();
    *node_out = Some(uuid.clone());
    let (status, port) = client.call(
        "POST",
        "/v1/ports",
        Some(&json!({"node_uuid": uuid, "address": qemu::MAC, "pxe_enabled": true})),
    )?;
    ensure!(status == 201, "creating the port: {status} {port}");
    w.progress(&format!(
        "enrolled node {uuid} (driver ipmi) with port {}",
        qemu::MAC
    ));

    provision(&client, &uuid, json!({"target": "manage"}))?;
    wait(w, &client, &uuid, "manageable", Duration::from_secs(60))?;
    Ok(Started {
        uuid,
        www,
        disk,
        vm,
    })
}

/// What the fast-track scenario saw.
#[derive(Debug, Clone, Default)]
pub struct FastTrackOutcome {
    /// IPMI power-ons before the deploy was requested (the cleaning boot), and at `active`
    /// (Ironic powers the machine on once more to boot the instance from its disk).
    pub power_ons_before_deploy: usize,
    pub power_ons_at_active: usize,
    /// Ramdisk starts seen on the console (the init's first line).
    pub ramdisk_starts: usize,
    /// `provide` → `available` (cleaning), and `active` requested → `active`.
    pub provide_seconds: f64,
    pub deploy_seconds: f64,
    pub boot: Boot,
}

/// Ironic's `[deploy] fast_track = true` in QEMU: automated cleaning boots the ramdisk,
/// the node stays powered on in `available` with the agent heartbeating, and the deploy
/// that follows runs on that same ramdisk: one power-on and one ramdisk start for both,
/// then the image on the VM's disk.
pub fn run_fast_track(name: &str) -> Result<FastTrackOutcome> {
    scenario(name, false, |w, chassis, node| {
        fast_track_in(w, name, chassis, node)
    })
}

fn fast_track_in(
    w: &mut World,
    name: &str,
    chassis: &Path,
    node_out: &mut Option<String>,
) -> Result<FastTrackOutcome> {
    let setup = Setup {
        ironic_extra: "\n[deploy]\nfast_track = true\n".into(),
        ..Setup::default()
    };
    let opts = Options {
        name: name.into(),
        ..Options::default()
    };
    let mut out = Outcome::default();
    let Started {
        uuid, www, disk, ..
    } = start_world(w, &opts, chassis, node_out, &mut out, &setup)?;
    let client = w.client()?;
    let mut fo = FastTrackOutcome::default();

    let t = Instant::now();
    provision(&client, &uuid, json!({"target": "provide"}))?;
    w.progress("provide (fast track): automated cleaning through the ramdisk");
    let ons = power_on_count(w);
    fo.boot = wait_heartbeat(w, &client, &uuid, "cleaning", ons)?;
    wait(w, &client, &uuid, "available", PHASE_TIMEOUT)?;
    fo.provide_seconds = t.elapsed().as_secs_f64();
    // Fast track: Ironic leaves the machine on and the agent keeps heartbeating.
    let last = client.get_node_json(&uuid)?["driver_internal_info"]["agent_last_heartbeat"].clone();
    let t_wait = Instant::now();
    loop {
        w.poll_console()?;
        let v = client.get_node_json(&uuid)?;
        if v["driver_internal_info"]["agent_last_heartbeat"] != last {
            break;
        }
        ensure!(
            w.bmc.as_ref().and_then(|b| b.qemu_pid()).is_some(),
            "fast track: the VM was powered off after cleaning"
        );
        ensure!(
            t_wait.elapsed() < Duration::from_secs(120),
            "fast track: no heartbeat in available within 120 s (last {last})"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    w.progress(&format!(
        "available after cleaning ({:.1}s), the VM still on and the agent heartbeating",
        fo.provide_seconds
    ));

    let (image, url, patches) = serve_image(w, &www)?;
    client.patch_node(&uuid, &patches)?;
    w.progress(&format!(
        "deploy on the running ramdisk: {} MiB raw GPT image from {url}",
        image.len >> 20
    ));
    let t = Instant::now();
    fo.power_ons_before_deploy = power_on_count(w);
    provision(&client, &uuid, json!({"target": "active"}))?;
    wait(w, &client, &uuid, "active", PHASE_TIMEOUT)?;
    fo.deploy_seconds = t.elapsed().as_secs_f64();
    w.progress(&format!("active after {:.1}s", fo.deploy_seconds));
    verify_deploy_log(w)?;
    fo.power_ons_at_active = power_on_count(w);
    let console = std::fs::read_to_string(&w.serial).unwrap_or_default();
    fo.ramdisk_starts = console
        .lines()
        .filter(|l| l.contains("ironic-agent-init") && l.contains(" starting on Linux "))
        .count();

    provision_power_off(&client, &uuid)?;
    wait_power_off(w)?;
    verify_disk(&disk, &image.path)?;
    w.progress("VM disk checked: the image is on it");
    Ok(fo)
}

/// The agent's disk stall limit in the fault scenario (`ipa-disk-stall-timeout`).
pub const STALL_TIMEOUT_S: u64 = 20;
/// The sector (512 bytes) whose writes fail with EIO: 8 MiB into the disk, past the first
/// MiB the image writer holds back, inside the test image and the first erase pass.
pub const EIO_SECTOR: u64 = 16384;

/// What the disk-fault scenario saw.
#[derive(Debug, Clone, Default)]
pub struct FaultOutcome {
    /// Ironic's `last_error` after each fault.
    pub erase_error: String,
    pub write_error: String,
    pub stall_error: String,
    /// `deploy` to `deploy failed` for the stalled disk.
    pub stall_seconds: f64,
    /// Manual cleaning (`erase_devices`) of the stalled disk: `last_error`, and `clean` to
    /// `clean failed`.
    pub erase_stall_error: String,
    pub erase_stall_seconds: f64,
    /// The agent's API answered after the failed deploy (HTTP status).
    pub agent_status_after_failure: u16,
    pub total_seconds: f64,
}

/// Disk faults under real Ironic, in QEMU: `blkdebug` makes every write to sector
/// [`EIO_SECTOR`] fail with EIO, then QEMU's write throttling makes the disk all but stop.
/// 1. manual cleaning with `erase_devices` → `clean failed`, naming the disk and the errno;
/// 2. a deploy → `deploy failed` with the device and the errno, the agent still serving,
///    the disk's first MiB no partition table;
/// 3. the stalled disk: a deploy → `deploy failed` within the agent's stall limit
///    ([`STALL_TIMEOUT_S`]), not a hang (Ironic itself would wait for ever: heartbeats keep
///    coming);
/// 4. the stalled disk again: manual cleaning with `erase_devices` → `clean failed` within
///    the same limit, naming the disk.
pub fn run_disk_faults(name: &str) -> Result<FaultOutcome> {
    scenario(name, false, faults_in)
}

fn faults_in(w: &mut World, chassis: &Path, node_out: &mut Option<String>) -> Result<FaultOutcome> {
    let mut fo = FaultOutcome::default();
    let rules = w.dir.join("blkdebug.conf");
    std::fs::write(
        &rules,
        format!(
            "# Every write touching sector {EIO_SECTOR} fails with EIO (5).\n\
             [inject-error]\nevent = \"none\"\niotype = \"write\"\nerrno = \"5\"\n\
             sector = \"{EIO_SECTOR}\"\nonce = \"off\"\n"
        ),
    )?;
    let setup = Setup {
        faults: DiskFaults {
            blkdebug_rules: Some(rules),
            drive_options: String::new(),
        },
        kernel_extra: format!(" ipa-disk-stall-timeout={STALL_TIMEOUT_S}"),
        // Keep the ramdisk up after a failed deploy, to see that the agent still serves.
        ironic_extra: "\n[deploy]\npower_off_after_deploy_failure = false\n".into(),
    };
    let opts = Options {
        name: "qemu-disk-faults".into(),
        ..Options::default()
    };
    let mut out = Outcome::default();
    let Started {
        uuid,
        www,
        disk,
        mut vm,
    } = start_world(w, &opts, chassis, node_out, &mut out, &setup)?;
    let client = w.client()?;

    // 1. erase_devices on a disk that fails writes.
    w.progress(&format!(
        "manual cleaning, erase_devices: writes to sector {EIO_SECTOR} of the VM's disk fail with EIO"
    ));
    let erase = json!({"target": "clean", "clean_steps": [{"interface": "deploy", "step": "erase_devices"}]});
    fo.erase_error = expect_failure(
        w,
        &client,
        &uuid,
        erase.clone(),
        "clean failed",
        &["/dev/vda"],
        true,
    )?
    .0;
    let (status, v) = client.call("DELETE", &format!("/v1/nodes/{uuid}/maintenance"), None)?;
    ensure!(status == 202, "leaving maintenance: {status} {v}");
    provision(&client, &uuid, json!({"target": "manage"}))?;
    wait(w, &client, &uuid, "manageable", Duration::from_secs(60))?;
    provision_power_off(&client, &uuid)?;
    wait_power_off(w)?;
    client.patch_node(&uuid, &[("/automated_clean", json!(false))])?;
    provision(&client, &uuid, json!({"target": "provide"}))?;
    wait(w, &client, &uuid, "available", Duration::from_secs(60))?;

    // 2. write_image on the same disk.
    let (_, _, patches) = serve_image(w, &www)?;
    // Undeploying clears instance_info: set it before each deploy.
    let set_image = || client.patch_node(&uuid, &patches);
    set_image()?;
    w.progress("deploy onto the failing disk");
    let active = json!({"target": "active"});
    fo.write_error = expect_failure(
        w,
        &client,
        &uuid,
        active.clone(),
        "deploy failed",
        &["/dev/vda"],
        true,
    )?
    .0;
    fo.agent_status_after_failure = agent_status()?;
    ensure!(
        fo.agent_status_after_failure == 200,
        "the agent's API answered {} after the failed write",
        fo.agent_status_after_failure
    );
    w.progress("the agent still answers on its API after the failed write");
    let mut head = vec![0u8; 1 << 20];
    std::fs::File::open(&disk)?.read_exact_at(&mut head, 0)?;
    ensure!(
        head[510..512] != [0x55, 0xAA] && &head[512..520] != b"EFI PART",
        "the failed write left a partition table in the disk's first MiB"
    );
    ensure!(
        head.iter().all(|&b| b == 0),
        "the failed write left data in the disk's first MiB"
    );

    // 3. The disk stalls: writes at 4 KiB/s, so a 1 MiB request takes minutes.
    provision(&client, &uuid, json!({"target": "deleted"}))?;
    wait(w, &client, &uuid, "available", PHASE_TIMEOUT)?;
    wait_power_off(w)?;
    vm.faults = DiskFaults {
        blkdebug_rules: None,
        drive_options: ",throttling.bps-write=4096".into(),
    };
    w.bmc.as_ref().context("no BMC")?.set_vm(&vm)?;
    set_image()?;
    w.progress("deploy onto a disk that writes 4 KiB/s (stalled)");
    let limit = format!("did not complete in {STALL_TIMEOUT_S} s");
    (fo.stall_error, fo.stall_seconds) = expect_failure(
        w,
        &client,
        &uuid,
        active,
        "deploy failed",
        &["/dev/vda", &limit],
        false,
    )?;

    // 4. erase_devices on the stalled disk.
    provision(&client, &uuid, json!({"target": "deleted"}))?;
    wait(w, &client, &uuid, "available", PHASE_TIMEOUT)?;
    wait_power_off(w)?;
    provision(&client, &uuid, json!({"target": "manage"}))?;
    wait(w, &client, &uuid, "manageable", Duration::from_secs(60))?;
    w.progress("manual cleaning, erase_devices, on the disk that writes 4 KiB/s");
    (fo.erase_stall_error, fo.erase_stall_seconds) = expect_failure(
        w,
        &client,
        &uuid,
        erase,
        "clean failed",
        &["/dev/vda", &limit],
        false,
    )?;
    provision_power_off(&client, &uuid)?;
    wait_power_off(w)?;
    fo.total_seconds = w.started.elapsed().as_secs_f64();
    Ok(fo)
}

/// The HTTP status of the agent's API root, through QEMU's port forward (auto-TLS: https,
/// with the agent's self-signed certificate).
fn agent_status() -> Result<u16> {
    let out = std::process::Command::new("curl")
        .args([
            "-sk",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--max-time",
            "10",
        ])
        .arg(format!("https://{}:{}/", qemu::HOST, qemu::AGENT_PORT))
        .output()
        .context("running curl")?;
    Ok(String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .unwrap_or(0))
}

/// `instance_info` patches.
type Patches = Vec<(&'static str, Value)>;

/// Requests `body`, waits for the failed state `state`; `last_error` and the seconds it took,
/// once `last_error` contains every one of `needles` and, with `errno`, errno 5 (EIO).
fn expect_failure(
    w: &mut World,
    client: &IronicClient,
    uuid: &str,
    body: Value,
    state: &str,
    needles: &[&str],
    errno: bool,
) -> Result<(String, f64)> {
    let t = Instant::now();
    provision(client, uuid, body)?;
    let n = wait(w, client, uuid, state, PHASE_TIMEOUT)?;
    let seconds = t.elapsed().as_secs_f64();
    let error = n.last_error.unwrap_or_default();
    w.progress(&format!("{state} after {seconds:.1}s: {error}"));
    ensure!(
        needles.iter().all(|n| error.contains(n))
            && (!errno || error.contains("Input/output error") || error.contains("os error 5")),
        "last_error lacks {needles:?}{}: {error}",
        if errno { " or errno 5" } else { "" }
    );
    Ok((error, seconds))
}

/// The deploy's image (a 34 MiB GPT disk: ESP + root) published by nginx; its URL and the
/// node's `instance_info` for it.
fn serve_image(w: &World, www: &Path) -> Result<(WholeDiskImage, String, Patches)> {
    let image = WholeDiskImage::build(&w.dir.join("image-server"), "disk.raw", 16, 16)?;
    std::fs::copy(&image.path, www.join("images/disk.raw"))?;
    let digests = images::digests(&image.path)?;
    let url = format!("http://{}:{}/images/disk.raw", qemu::HOST, qemu::HTTP_PORT);
    let patches = vec![
        ("/instance_info/image_source", json!(url)),
        ("/instance_info/image_os_hash_algo", json!("sha256")),
        ("/instance_info/image_os_hash_value", json!(digests.sha256)),
        ("/instance_info/image_type", json!("whole-disk")),
        ("/instance_info/root_gb", json!("1")),
    ];
    Ok((image, url, patches))
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn provision(client: &IronicClient, uuid: &str, body: Value) -> Result<()> {
    let (status, v) = client.call(
        "PUT",
        &format!("/v1/nodes/{uuid}/states/provision"),
        Some(&body),
    )?;
    ensure!(status == 202, "provision {body}: {status} {v}");
    Ok(())
}

fn provision_power_off(client: &IronicClient, uuid: &str) -> Result<()> {
    let (status, v) = client.call(
        "PUT",
        &format!("/v1/nodes/{uuid}/states/power"),
        Some(&json!({"target": "power off"})),
    )?;
    ensure!(status == 202, "power off: {status} {v}");
    Ok(())
}

/// Waits for `state`, echoing transitions and console lines.
fn wait(
    w: &mut World,
    client: &IronicClient,
    uuid: &str,
    state: &str,
    timeout: Duration,
) -> Result<Node> {
    let started = w.started;
    client.wait_for_provision_state_with(uuid, state, timeout, started, &mut |_| w.poll_console())
}

fn power_on_count(w: &World) -> usize {
    w.bmc.as_ref().map_or(0, |b| b.power_ons().len())
}

/// Waits until Ironic accepted a heartbeat of the ramdisk booted for `phase` (after the
/// `ons_before + 1`th power-on), and measures the boot from that power-on.
fn wait_heartbeat(
    w: &mut World,
    client: &IronicClient,
    uuid: &str,
    phase: &str,
    ons_before: usize,
) -> Result<Boot> {
    let t = Instant::now();
    let mut seen_state = String::new();
    loop {
        w.poll_console()?;
        let v = client.get_node_json(uuid)?;
        let state = v["provision_state"].as_str().unwrap_or("").to_string();
        if state != seen_state {
            w.progress(&format!("node {state}"));
            seen_state = state.clone();
        }
        if state.ends_with("failed") {
            bail!(
                "node {state} while waiting for the ramdisk: {}",
                v["last_error"]
            );
        }
        let hb = v["driver_internal_info"]["agent_last_heartbeat"]
            .as_str()
            .and_then(qemu::parse_utc);
        let power_on = w
            .bmc
            .as_ref()
            .and_then(|b| b.power_ons().get(ons_before).copied());
        if let (Some(hb), Some(on)) = (hb, power_on) {
            if hb > on {
                let mut boot = Boot {
                    phase: phase.to_string(),
                    power_on_to_heartbeat: Some(hb - on),
                    ..Boot::default()
                };
                boot.power_on_to_init = w
                    .lines
                    .iter()
                    .find(|(at, l)| *at >= on && l.starts_with("ironic-agent-init["))
                    .map(|(at, _)| at - on);
                w.progress(&format!(
                    "first heartbeat accepted by Ironic {:.1}s after IPMI power-on (console: init at +{})",
                    hb - on,
                    boot.power_on_to_init
                        .map(|s| format!("{s:.1}s"))
                        .unwrap_or_else(|| "?".into())
                ));
                // The init reports the agent's memory 5 s after starting it.
                let deadline = Instant::now() + Duration::from_secs(30);
                while Instant::now() < deadline {
                    w.poll_console()?;
                    if let Some((rss, hwm)) = agent_memory(&w.lines, on) {
                        boot.agent_rss_kb = Some(rss);
                        boot.agent_hwm_kb = Some(hwm);
                        break;
                    }
                    let st = client.get_node(uuid)?.provision_state;
                    if st == "available" || st == "active" || st.ends_with("failed") {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(500));
                }
                return Ok(boot);
            }
        }
        if t.elapsed() > PHASE_TIMEOUT {
            bail!("no heartbeat from the ramdisk within {PHASE_TIMEOUT:?} ({phase})");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `agent pid N up 15s: VmRSS X kB, VmHWM Y kB` after `since`.
fn agent_memory(lines: &[(f64, String)], since: f64) -> Option<(u64, u64)> {
    lines
        .iter()
        .filter(|(at, _)| *at >= since)
        .find_map(|(_, l)| {
            let rest = l.split("VmRSS ").nth(1)?;
            let rss = rest.split_whitespace().next()?.parse().ok()?;
            let hwm = l
                .split("VmHWM ")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse()
                .ok()?;
            Some((rss, hwm))
        })
}

fn wait_power_off(w: &mut World) -> Result<()> {
    let t = Instant::now();
    while w.bmc.as_ref().and_then(|b| b.qemu_pid()).is_some() {
        w.poll_console()?;
        if t.elapsed() > Duration::from_secs(60) {
            bail!("the VM is still running 60 s after Ironic powered it off");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    Ok(())
}

/// The conductor drove the real agent: the deploy steps in Ironic's log.
fn verify_deploy_log(w: &World) -> Result<()> {
    let log = std::fs::read_to_string(w.ironic.as_ref().context("no Ironic")?.log_path())?;
    for needle in ["write_image", "get_partition_uuids", "power_off"] {
        ensure!(
            log.contains(needle),
            "Ironic's log never mentions {needle}:\n{}",
            tail(&w.ironic.as_ref().unwrap().log_path(), 40)
        );
    }
    Ok(())
}

/// The disk holds the image except what moving the backup GPT to the disk's end changes,
/// has a valid backup GPT at its end, passes `sgdisk -v`, and is zero after the image.
pub fn verify_disk(disk: &Path, image: &Path) -> Result<()> {
    let img = std::fs::read(image)?;
    let f = std::fs::File::open(disk)?;
    let disk_len = f.metadata()?.len();
    let mut on_disk = vec![0u8; img.len()];
    f.read_exact_at(&mut on_disk, 0)?;
    let len = img.len() as u64;
    let allowed: Vec<std::ops::Range<u64>> = vec![
        gpt::PMBR_SIZE_FIELD.start as u64..gpt::PMBR_SIZE_FIELD.end as u64,
        SECTOR + gpt::field::HEADER_CRC.start as u64..SECTOR + gpt::field::HEADER_CRC.end as u64,
        SECTOR + gpt::field::ALTERNATE_LBA.start as u64
            ..SECTOR + gpt::field::ALTERNATE_LBA.end as u64,
        SECTOR + gpt::field::LAST_USABLE.start as u64..SECTOR + gpt::field::LAST_USABLE.end as u64,
        len - 33 * SECTOR..len,
    ];
    let mut bad = Vec::new();
    for (i, (a, b)) in img.iter().zip(&on_disk).enumerate() {
        if a != b && !allowed.iter().any(|r| r.contains(&(i as u64))) {
            bad.push(i);
            if bad.len() > 8 {
                break;
            }
        }
    }
    ensure!(
        bad.is_empty(),
        "the VM's disk differs from the image at byte offsets {bad:?}"
    );
    let image_table = Table::from_head(&img[..34 * SECTOR as usize])?;
    let disk_table = Table::from_head(&on_disk[..34 * SECTOR as usize])?;
    ensure!(
        disk_table.entries == image_table.entries,
        "partition entries differ"
    );
    let sectors = disk_len / SECTOR;
    ensure!(
        disk_table.header.alternate_lba == sectors - 1,
        "the backup GPT is not at the disk's end: {:?}",
        disk_table.header
    );
    let mut last = vec![0u8; SECTOR as usize];
    f.read_exact_at(&mut last, disk_len - SECTOR)?;
    let backup = gpt::Header::parse(&last).context("no backup GPT header in the last sector")?;
    ensure!(backup.my_lba == sectors - 1 && backup.alternate_lba == 1);
    images::verify_gpt(disk)?;
    // Zeros between the image and the backup GPT (sampled every MiB, plus the first MiB).
    let mut buf = vec![0u8; 1 << 20];
    let end = disk_len - 33 * SECTOR;
    let mut off = len;
    while off < end {
        let n = buf.len().min((end - off) as usize);
        f.read_exact_at(&mut buf[..n], off)?;
        ensure!(
            buf[..n].iter().all(|&b| b == 0),
            "non-zero bytes after the image near offset {off}"
        );
        off += 256 << 20;
    }
    Ok(())
}

/// A one-paragraph summary for the demo and the bench.
pub fn summary(o: &Outcome) -> String {
    let mut s = format!(
        "ramdisk: kernel {:.1} MiB, initramfs {:.1} MiB ({} modules), agent {:.1} MiB static; built in {:.1}s\n",
        mib(o.kernel_bytes),
        mib(o.initramfs_bytes),
        o.modules,
        mib(o.agent_bytes),
        o.build_seconds
    );
    for b in &o.boots {
        s.push_str(&format!(
            "boot for {}: IPMI power-on -> init {}, -> first accepted heartbeat {}; agent RSS {} (peak {})\n",
            b.phase,
            fmt_s(b.power_on_to_init),
            fmt_s(b.power_on_to_heartbeat),
            fmt_kb(b.agent_rss_kb),
            fmt_kb(b.agent_hwm_kb)
        ));
    }
    if let Some(p) = o.provide_seconds {
        s.push_str(&format!("provide -> available (cleaning): {p:.1}s\n"));
    }
    s.push_str(&format!(
        "deploy -> active: {:.1}s; whole run {:.1}s\n",
        o.deploy_seconds, o.total_seconds
    ));
    s
}

fn fmt_s(v: Option<f64>) -> String {
    v.map(|s| format!("{s:.1}s")).unwrap_or_else(|| "?".into())
}

fn fmt_kb(v: Option<u64>) -> String {
    v.map(|k| format!("{:.1} MiB", k as f64 / 1024.0))
        .unwrap_or_else(|| "?".into())
}

/// Boots the builder's own `boot.ipxe` (no Ironic): QEMU's DHCP hands iPXE
/// `http://10.0.2.2:8080/boot.ipxe`, which fetches the kernel and initramfs by relative URL
/// with `BOOTIF=${mac}`; returns the console once the agent is trying to reach the
/// `ipa-api-url` the script passed (nothing listens there) and the seconds from QEMU's start.
pub fn boot_builder_ipxe_script(name: &str) -> Result<(String, f64)> {
    crate::cmd::check_prerequisites(qemu::REQUIRED_TOOLS)?;
    let mut dir = TestDir::new(name)?;
    let result = (|| -> Result<(String, f64)> {
        let www = dir.join("image-server/www");
        let api = format!("http://{}:{}", qemu::HOST, qemu::IRONIC_PORT);
        ramdisk::build(
            &www,
            &["--api-url", &api, "--kernel-param", "console=ttyS0"],
        )?;
        let ns = QemuNetNs::create()?;
        ns.enter()?;
        let nginx = Nginx::start(
            &dir.join("image-server"),
            std::net::Ipv4Addr::UNSPECIFIED,
            qemu::HTTP_PORT,
        )?;
        let disk = dir.join("vm-disk.img");
        std::fs::File::create(&disk)?.set_len(DISK_SIZE)?;
        let serial = dir.join("serial.log");
        let vm = VmSpec::new(512, disk, serial.clone());
        let args = vm.args();
        let mut child = std::process::Command::new(&args[0])
            .args(&args[1..])
            .args(["-boot", "order=n"])
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("qemu.out"))?)
            .spawn()
            .context("starting QEMU")?;
        let started = Instant::now();
        let mut console = SerialLog::new(&serial);
        let mut text = String::new();
        let outcome = loop {
            for l in console.new_lines() {
                text.push_str(&l);
                text.push('\n');
            }
            if text.contains("Kernel panic") {
                break Err(anyhow::anyhow!("kernel panic"));
            }
            if text.contains("started /usr/bin/ironic-agent") && text.contains(&api) {
                // The agent's first lookup attempt names the URL from the script.
                if text
                    .lines()
                    .any(|l| l.contains("lookup") && l.contains(&api))
                {
                    break Ok(started.elapsed().as_secs_f64());
                }
            }
            if started.elapsed() > Duration::from_secs(180) {
                break Err(anyhow::anyhow!(
                    "the ramdisk did not start the agent within 180 s"
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        let _ = child.kill();
        let _ = child.wait();
        let access = nginx.access_log();
        drop(nginx);
        drop(ns);
        match outcome {
            Ok(s) => Ok((format!("{text}\n--- nginx ---\n{access}"), s)),
            Err(e) => bail!("{e}\n--- console ---\n{text}\n--- nginx ---\n{access}"),
        }
    })();
    if result.is_err() {
        dir.keep();
    }
    result
}
